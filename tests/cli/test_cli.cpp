// The `liger` program on bad input: each case must end with exit code 1 (not a signal), print exactly one line on
// stderr, and name the file (and tensor or key) at fault. Runs the real binary on real (damaged) model directories.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/json.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "model/lora.h"
#include "tests/common/test_util.h"

namespace liger::test {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

RunResult run_liger(const std::string& args, const TempDir& tmp) {
  const std::string out = tmp.file("stdout.txt"), err = tmp.file("stderr.txt");
  const std::string cmd = liger_binary() + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int status = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A copy of the bundled model directory that a test may damage.
std::string copy_model(const TempDir& tmp) {
  const std::string dir = tmp.file("model");
  fs::copy(source_path("assets/stories260K/hf"), dir, fs::copy_options::recursive);
  return dir;
}

void expect_one_line_error(const RunResult& r, std::initializer_list<std::string> needles) {
  EXPECT_EQ(r.exit_code, 1) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "expected exactly one line, got: " << r.err;
  EXPECT_EQ(r.err.rfind("liger: error: ", 0), 0u) << r.err;
  for (const std::string& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

// Rewrites a safetensors file with its header passed through `edit` (the data section is kept as it is).
void edit_safetensors_header(const std::string& path, const std::function<void(Json&)>& edit) {
  std::string bytes = slurp(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  Json h = Json::parse(bytes.substr(8, n));
  edit(h);
  std::string hs = h.dump();
  uint64_t m = hs.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  out += hs;
  out += bytes.substr(8 + n);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << out;
}

TEST(Cli, GoodRunGeneratesText) {
  TempDir tmp("cli");
  RunResult r = run_liger("generate --model " + source_path("assets/stories260K/hf") +
                              " --prompt 'Once upon a time' --max-new-tokens 20 --quiet",
                          tmp);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
  EXPECT_GT(r.out.size(), std::string("Once upon a time").size() + 20);
}

TEST(Cli, BenchForwardRunsOnTheCpu) {
  TempDir tmp("cli");
  RunResult r = run_liger("bench forward --shape stories260k --device cpu --seq 64 --warmup 0 --iters 1", tmp);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("peak memory"), std::string::npos) << r.out;
}

TEST(Cli, ConvertThenGenerateThroughTheRecurrentDecode) {
  TempDir tmp("cli");
  const std::string out = tmp.file("liger_gla");
  RunResult r = run_liger("convert --model " + source_path("assets/stories260K/hf") + " --out " + out +
                              " --variant gla --window 16",
                          tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.model"));
  Json c = read_json_file(out + "/config.json");
  EXPECT_EQ(c["liger"]["variant"], "gla");
  EXPECT_EQ(c["liger"]["window"], 16);
  r = run_liger("generate --model " + out + " --prompt 'Once upon a time' --max-new-tokens 30 --quiet", tmp);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
  // Past the base model's max_position_embeddings (512): the Liger model decodes on with a warning (its state does not
  // grow); the softmax model refuses in one line.
  r = run_liger("generate --model " + out + " --max-new-tokens 600 --ignore-eos --quiet", tmp);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_position_embeddings 512"), std::string::npos) << r.err;
  expect_one_line_error(run_liger("generate --model " + source_path("assets/stories260K/hf") +
                                      " --max-new-tokens 600 --ignore-eos --quiet",
                                  tmp),
                        {"max_position_embeddings 512"});
  // Bad settings are one-line errors.
  expect_one_line_error(run_liger("convert --model " + source_path("assets/stories260K/hf") + " --out " +
                                      tmp.file("x") + " --variant mamba",
                                  tmp),
                        {"variant", "mamba"});
  expect_one_line_error(run_liger("convert --model " + source_path("assets/stories260K/hf") + " --out " +
                                      tmp.file("y") + " --variant gsa --gsa-slots 3",
                                  tmp),
                        {"gsa_slots", "head_dim"});
}

// liger select-layers on stories260K converted to Liger-GLA (window 16, chunks of 128 tokens of continuous text): a
// ranking of the 5 layers by the KL left when each alone is restored to softmax attention, the K best written as the
// softmax_layers list, which liger convert takes.
TEST(Cli, SelectLayersRanksTheLayersAndConvertTakesTheList) {
  TempDir tmp("cli");
  const std::string base = source_path("assets/stories260K/hf"), gla = tmp.file("gla");
  RunResult r = run_liger("convert --model " + base + " --out " + gla + " --variant gla --window 16", tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string text = source_path("assets/text/tinystories_valid_head.txt");
  r = run_liger("select-layers --model " + gla + " --data " + text + " --keep 2 --chunk-length 128 --max-chunks 3 " +
                    "--json " + tmp.file("sel.json"),
                tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json j = read_json_file(tmp.file("sel.json"));
  const double kl_model = j["kl_model"].get<double>();
  EXPECT_GT(kl_model, 0.0);
  const Json& rank = j["ranking"];
  ASSERT_EQ(rank.size(), 5u);
  std::vector<int64_t> seen;
  for (size_t i = 0; i < rank.size(); i++) {
    const double kl = rank[i]["kl_restored"].get<double>();
    EXPECT_GE(kl, 0.0);
    EXPECT_NEAR(rank[i]["drop"].get<double>(), kl_model - kl, 1e-12);
    if (i > 0) {
      EXPECT_LE(rank[i - 1]["kl_restored"].get<double>(), kl);  // the largest drop first
    }
    seen.push_back(rank[i]["layer"].get<int64_t>());
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  std::vector<int64_t> want = {rank[0]["layer"].get<int64_t>(), rank[1]["layer"].get<int64_t>()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(j["softmax_layers"].get<std::vector<int64_t>>(), want);
  const std::string list = std::to_string(want[0]) + "," + std::to_string(want[1]);
  EXPECT_NE(r.out.find("softmax_layers: " + list), std::string::npos) << r.out;
  r = run_liger("convert --model " + base + " --out " + tmp.file("hybrid") + " --variant gla --window 16 " +
                    "--softmax-layers " + list,
                tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json_file(tmp.file("hybrid") + "/config.json")["liger"]["softmax_layers"].get<std::vector<int64_t>>(),
            want);
  // Bad settings are one-line errors.
  expect_one_line_error(run_liger("select-layers --model " + gla + " --data " + text + " --keep 6", tmp),
                        {"--keep 6", "5 Liger layers"});
  expect_one_line_error(run_liger("select-layers --model " + base + " --data " + text + " --keep 1", tmp),
                        {base, "not a Liger model"});
}

TEST(Cli, HelpOnEverySubcommand) {
  TempDir tmp("cli");
  for (const char* sub : {"convert --help", "generate --help", "bench --help", "bench forward --help", "eval --help",
                          "select-layers --help", "bench decode --help",
                          "export --help", "--help"}) {
    RunResult r = run_liger(sub, tmp);
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.err;
    EXPECT_NE(r.out.find("usage: liger"), std::string::npos) << sub;
  }
}

TEST(Cli, UnknownOptionIsAUsageError) {
  TempDir tmp("cli");
  RunResult r = run_liger("generate --model x --frobnicate 3", tmp);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos) << r.err;
}

TEST(Cli, MissingDirectory) {
  TempDir tmp("cli");
  const std::string dir = tmp.file("no_such_model");
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir});
}

TEST(Cli, UnknownModelType) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  Json c = read_json_file(dir + "/config.json");
  c["model_type"] = "gpt2";
  std::ofstream(dir + "/config.json") << c.dump(2);
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir + "/config.json", "model_type", "gpt2"});
}

TEST(Cli, MissingConfigKey) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  Json c = read_json_file(dir + "/config.json");
  c.erase("num_hidden_layers");
  std::ofstream(dir + "/config.json") << c.dump(2);
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir + "/config.json", "num_hidden_layers"});
}

TEST(Cli, TruncatedSafetensors) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  const std::string st = dir + "/model.safetensors";
  fs::resize_file(st, fs::file_size(st) / 2);
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {st});
}

TEST(Cli, SafetensorsOffsetsOverlap) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  const std::string st = dir + "/model.safetensors";
  edit_safetensors_header(st, [](Json& h) {
    // Move the final norm's bytes onto the start of another tensor's span.
    auto& e = h["model.norm.weight"];
    const uint64_t len = e["data_offsets"][1].get<uint64_t>() - e["data_offsets"][0].get<uint64_t>();
    const uint64_t start = h["model.layers.0.self_attn.q_proj.weight"]["data_offsets"][0].get<uint64_t>();
    e["data_offsets"] = {start, start + len};
  });
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {st, "overlap", "model.norm.weight"});
}

TEST(Cli, SafetensorsOffsetsPastEnd) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  const std::string st = dir + "/model.safetensors";
  edit_safetensors_header(st, [](Json& h) {
    auto& e = h["model.norm.weight"];
    const uint64_t len = e["data_offsets"][1].get<uint64_t>() - e["data_offsets"][0].get<uint64_t>();
    e["data_offsets"] = {uint64_t{2000000}, 2000000 + len};
  });
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {st, "model.norm.weight", "past the end"});
}

TEST(Cli, TensorShapeDisagreesWithConfig) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  const std::string st = dir + "/model.safetensors";
  // Same bytes (64 x 64 = 32 x 128 floats), another shape: only the config check can catch it.
  edit_safetensors_header(st, [](Json& h) { h["model.layers.2.self_attn.q_proj.weight"]["shape"] = {32, 128}; });
  expect_one_line_error(run_liger("generate --model " + dir, tmp),
                        {st, "model.layers.2.self_attn.q_proj.weight", "(32, 128)", "(64, 64)"});
}

TEST(Cli, MissingTensor) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  edit_safetensors_header(dir + "/model.safetensors", [](Json& h) { h.erase("model.layers.4.mlp.up_proj.weight"); });
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir, "model.layers.4.mlp.up_proj.weight"});
}

TEST(Cli, TokenizerOfTheWrongKind) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  // A safetensors file where the tokenizer should be.
  fs::copy_file(dir + "/model.safetensors", dir + "/tokenizer.model", fs::copy_options::overwrite_existing);
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir + "/tokenizer.model"});
}

TEST(Cli, TokenizerJsonThatIsNotATokenizer) {
  TempDir tmp("cli");
  const std::string dir = copy_model(tmp);
  std::ofstream(dir + "/tokenizer.json") << "{\"version\": \"1.0\", \"model\": {\"type\": \"WordPiece\"}}";
  expect_one_line_error(run_liger("generate --model " + dir, tmp), {dir + "/tokenizer.json"});
}

TEST(Cli, BadOptionValues) {
  TempDir tmp("cli");
  const std::string dir = source_path("assets/stories260K/hf");
  expect_one_line_error(run_liger("generate --model " + dir + " --top-p 1.5", tmp), {"--top-p"});
  expect_one_line_error(run_liger("generate --model " + dir + " --device tpu", tmp), {"tpu"});
  expect_one_line_error(run_liger("bench forward --shape gpt5 --device cpu", tmp), {"gpt5"});
}

// ---- eval, export, generate --adapter ----------------------------------------------------------------------------

const char* kPeftAdapter = "tests/golden/peft_stories260k/step1";  // written by HF PEFT after one training step

// LoRA adapters for the model of `config_json` (rank 4, random B: not a no-op), saved as a PEFT directory.
std::string make_adapter(const TempDir& tmp, const std::string& name, const std::string& config_json,
                         const std::string& targets) {
  LoraConfig lc;
  lc.rank = 4;
  lc.targets = LoraConfig::parse_targets(targets);
  LoraAdapters a = LoraAdapters::init(load_model_config(config_json), lc, Device::CPU);
  Rng rng(3);
  for (auto& [n, p] : a.parameters())
    if (n.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); i++) p.ptr<float>()[i] = 0.05f * rng.normal();
  const std::string dir = tmp.file(name);
  a.save(dir, "test");
  return dir;
}

// "loss X  ppl Y  tokens N  chunks C" -> {X, Y}; fails the test when stdout is not exactly that line.
std::pair<double, double> parse_eval_line(const std::string& out) {
  double loss = NAN, ppl = NAN;
  long long tokens = 0, chunks = 0;
  EXPECT_EQ(std::sscanf(out.c_str(), "loss %lf  ppl %lf  tokens %lld  chunks %lld", &loss, &ppl, &tokens, &chunks), 4)
      << out;
  EXPECT_GT(tokens, 0);
  EXPECT_GT(chunks, 0);
  return {loss, ppl};
}

TEST(Cli, EvalPrintsLossAndPerplexity) {
  TempDir tmp("cli");
  const std::string model = source_path("assets/stories260K/hf");
  const std::string text = source_path("assets/text/tinystories_valid_head.txt");
  RunResult r = run_liger("eval --model " + model + " --text " + text + " --chunk-length 64 --max-chunks 2", tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "stdout must be the one result line: " << r.out;
  auto [loss, ppl] = parse_eval_line(r.out);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(ppl, std::exp(loss), 1e-3 * ppl);  // printed with 6 and 4 decimals
  EXPECT_NE(r.out.find("chunks 2"), std::string::npos) << r.out;

  // The validation split of an Alpaca file, with the training keys.
  const std::string alpaca = tmp.file("alpaca.json");
  {
    Json recs = Json::array();
    for (int i = 0; i < 40; i++)
      recs.push_back({{"instruction", "Tell a story about a cat number " + std::to_string(i) + "."},
                      {"input", i % 2 ? "" : "The cat is happy."},
                      {"output", "Once upon a time, there was a cat. The cat liked to play in the sun all day."}});
    std::ofstream(alpaca) << recs.dump();
  }
  r = run_liger("eval --model " + model + " --data " + alpaca + " --validation-count 8 --chunk-length 32 --json " +
                    tmp.file("a.json"),
                tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  parse_eval_line(r.out);
  const Json j = read_json_file(tmp.file("a.json"));
  EXPECT_EQ(j["split"], "validation");
  EXPECT_GT(j["tokens"].get<int64_t>(), 0);

  // Bad combinations are one-line errors.
  expect_one_line_error(run_liger("eval --model " + model, tmp), {"--text", "--data"});
  expect_one_line_error(run_liger("eval --model " + model + " --text " + text + " --validation-count 3", tmp),
                        {"--validation-count", "--data"});
  expect_one_line_error(run_liger("eval --model " + model + " --text " + text + " --diagnostics", tmp),
                        {model, "Liger"});
  expect_one_line_error(run_liger("eval --model " + model + " --text " + tmp.file("none.txt"), tmp),
                        {tmp.file("none.txt")});
  expect_one_line_error(run_liger("eval --model " + model + " --text " + text + " --dtype bf16", tmp),
                        {"--dtype bf16", "--device cuda"});
  expect_one_line_error(run_liger("eval --model " + model + " --text " + text + " --device tpu", tmp),
                        {"--device tpu"});
  expect_one_line_error(
      run_liger("eval --model " + model + " --text " + text + " --device cuda --diagnostics", tmp),
      {"--diagnostics", "CPU"});
}

// `liger eval --device cuda` on a Liger model (stories260K converted to Liger-GLA, 8 chunks of 256 tokens of
// continuous text, by position): the loss and every position bucket against the CPU's. f32 on the GPU: the same
// arithmetic up to summation order, 1e-4 relative (the GPU op standard, tests/train/test_train_gpu.cpp). bf16 (the
// GPU default: bf16 weights and Liger internals, fp32 states): 1e-2 relative, the bf16 bound of a mean loss there.
TEST(Cli, EvalOnTheGpuMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the GPU evaluation is checked on the GPU machine";
  TempDir tmp("cli_eval_gpu");
  const std::string model = tmp.file("gla");
  RunResult r = run_liger("convert --model " + source_path("assets/stories260K/hf") + " --out " + model +
                              " --variant gla",
                          tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string common = "eval --model " + model + " --text " +
                             source_path("assets/text/tinystories_valid_head.txt") +
                             " --chunk-length 256 --pack-across-documents true --max-chunks 8 --by-position";
  auto eval = [&](const std::string& extra, const std::string& name) {
    RunResult e = run_liger(common + " " + extra + " --json " + tmp.file(name), tmp);
    EXPECT_EQ(e.exit_code, 0) << e.err;
    return read_json_file(tmp.file(name));
  };
  const Json cpu = eval("", "cpu.json");
  for (const auto& [extra, tol] : {std::pair<std::string, double>{"--device cuda --dtype f32", 1e-4},
                                   std::pair<std::string, double>{"--device cuda", 1e-2}}) {
    const Json gpu = eval(extra, "gpu.json");
    const double lc = cpu["loss"].get<double>(), lg = gpu["loss"].get<double>();
    std::printf("  %-26s loss %.6f (cpu %.6f, rel %.2e, bound %.0e)\n", extra.c_str(), lg, lc,
                std::fabs(lg - lc) / lc, tol);
    EXPECT_LE(std::fabs(lg - lc), tol * lc) << extra;
    EXPECT_EQ(gpu["tokens"], cpu["tokens"]);
    const Json& bc = cpu["by_position"];
    const Json& bg = gpu["by_position"];
    ASSERT_EQ(bc.size(), bg.size());
    for (size_t b = 0; b < bc.size(); b++) {
      const double mc = bc[b]["loss"].get<double>(), mg = bg[b]["loss"].get<double>();
      EXPECT_LE(std::fabs(mg - mc), tol * mc) << extra << " bucket " << b;
    }
  }
}

TEST(Cli, EvalDiagnosticsTableOnALigerModel) {
  TempDir tmp("cli");
  const std::string out = tmp.file("liger_gla");
  RunResult r = run_liger("convert --model " + source_path("assets/stories260K/hf") + " --out " + out, tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_liger("eval --model " + out + " --text " + source_path("assets/text/tinystories_valid_head.txt") +
                    " --chunk-length 64 --max-chunks 2 --diagnostics --json " + tmp.file("d.json"),
                tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  parse_eval_line(r.out);
  EXPECT_NE(r.out.find("rel_err"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1 + 1 + 5) << r.out;  // result, header, 5 layers
  const Json j = read_json_file(tmp.file("d.json"));
  ASSERT_EQ(j["diagnostics"].size(), 5u);
  for (const Json& row : j["diagnostics"]) {
    EXPECT_GT(row["rel_error"].get<double>(), 0.0);
    EXPECT_GT(row["mean_gate"].get<double>(), 0.0);
    EXPECT_LT(row["mean_gate"].get<double>(), 1.0);
    EXPECT_GE(row["memory_length"].get<double>(), 1.0);
  }
}

TEST(Cli, GenerateWithAdapterAndExportThenGenerate) {
  TempDir tmp("cli");
  const std::string model = source_path("assets/stories260K/hf"), adapter = source_path(kPeftAdapter);
  const std::string gen = " --prompt 'Once upon a time' --max-new-tokens 40 --quiet";
  RunResult merged = run_liger("generate --model " + model + " --adapter " + adapter + gen, tmp);
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_EQ(merged.out.rfind("Once upon a time", 0), 0u) << merged.out;

  // A random adapter on every projection changes the greedy continuation; the PEFT one (one step of lr 1e-3) may not.
  const std::string strong = make_adapter(tmp, "strong", model + "/config.json", "q,k,v,o,gate,up,down");
  RunResult plain = run_liger("generate --model " + model + gen, tmp);
  RunResult changed = run_liger("generate --model " + model + " --adapter " + strong + gen, tmp);
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_NE(changed.out, plain.out);

  // Export, then the exported directory generates what generate --adapter generated (the same f32 merge).
  const std::string out = tmp.file("exported");
  RunResult r = run_liger("export --model " + model + " --adapter " + strong + " --out " + out, tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  RunResult again = run_liger("generate --model " + out + gen, tmp);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, changed.out);

  // And eval of the export equals eval of the model with the adapters (unmerged) to f32 rounding.
  const std::string text =
      " --text " + source_path("assets/text/tinystories_valid_head.txt") + " --chunk-length 64 --max-chunks 2";
  RunResult e1 = run_liger("eval --model " + out + text, tmp);
  RunResult e2 = run_liger("eval --model " + model + " --adapter " + strong + text, tmp);
  ASSERT_EQ(e1.exit_code, 0) << e1.err;
  ASSERT_EQ(e2.exit_code, 0) << e2.err;
  EXPECT_NEAR(parse_eval_line(e1.out).first, parse_eval_line(e2.out).first, 2e-6);  // 6 printed decimals

  // The output exists: --force replaces it, else a one-line error.
  expect_one_line_error(run_liger("export --model " + model + " --adapter " + strong + " --out " + out, tmp),
                        {out, "--force"});
  r = run_liger("export --model " + model + " --adapter " + adapter + " --out " + out + " --force", tmp);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Cli, EvalOfATrainingCheckpointIsTheTrainersValidationLoss) {
  TempDir tmp("cli");
  const std::string model = source_path("assets/stories260K/hf"), run = tmp.file("run");
  const std::string data = " --data " + source_path("assets/text/tinystories_valid_head.txt") +
                           " --data-format text --chunk-length 64 --validation-fraction 0.1";
  RunResult r = run_liger(
      "train --model " + model + " --out " + run + data + " --max-steps 2 --grad-accum 1 --eval-chunks 3 --lr 1e-2",
      tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  double val = NAN;
  char ckpt[4096] = {0};
  ASSERT_EQ(std::sscanf(r.out.c_str(), "trained %*d steps; final validation loss %lf; checkpoint %4095s", &val, ckpt),
            2)
      << r.out;
  // The checkpoint directory is a PEFT adapter directory; eval on the same split and chunks gives the same loss.
  r = run_liger("eval --model " + model + " --adapter " + ckpt + data + " --max-chunks 3", tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(parse_eval_line(r.out).first, val, 1e-4);  // printed with 4 decimals by train
}

TEST(Cli, AdapterForAnotherModelIsAOneLineError) {
  TempDir tmp("cli");
  const std::string model = source_path("assets/stories260K/hf");
  // Made for llama3_gqa_tied: q, k, v happen to have stories260K's shapes, its MLP is 96 wide instead of 172.
  const std::string other =
      make_adapter(tmp, "other", source_path("tests/golden/llama3_gqa_tied/config.json"), "q,k,v,gate");
  const std::string file = other + "/adapter_model.safetensors";
  const std::string tensor = "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight";
  expect_one_line_error(run_liger("generate --model " + model + " --adapter " + other + " --max-new-tokens 2", tmp),
                        {file, tensor, "(96, 4)", "(172, 4)"});
  expect_one_line_error(run_liger("eval --model " + model + " --adapter " + other + " --text " +
                                      source_path("assets/text/tinystories_valid_head.txt"),
                                  tmp),
                        {file, tensor});
  expect_one_line_error(run_liger("export --model " + model + " --adapter " + other + " --out " + tmp.file("x"), tmp),
                        {file, tensor});
  EXPECT_FALSE(fs::exists(tmp.file("x")));
  // A missing adapter directory is named.
  const std::string none = tmp.file("no_such_adapter");
  expect_one_line_error(run_liger("generate --model " + model + " --adapter " + none, tmp), {none});
  expect_one_line_error(run_liger("export --model " + model + " --adapter " + none + " --out " + tmp.file("y"), tmp),
                        {none});
  // A directory without adapter_config.json is not an adapter.
  expect_one_line_error(run_liger("generate --model " + model + " --adapter " + model, tmp),
                        {model, "adapter_config.json"});
}

TEST(Cli, CudaWithoutGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present: nothing to check";
  TempDir tmp("cli");
  expect_one_line_error(run_liger("generate --model " + source_path("assets/stories260K/hf") + " --device cuda", tmp),
                        {"cuda"});
}

}  // namespace
}  // namespace liger::test
