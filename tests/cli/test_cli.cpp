// The `liger` program on bad input: each case must end with exit code 1 (not a signal), print exactly one line on
// stderr, and name the file (and tensor or key) at fault. Runs the real binary on real (damaged) model directories.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/json.h"
#include "core/tensor.h"
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

TEST(Cli, HelpOnEverySubcommand) {
  TempDir tmp("cli");
  for (const char* sub : {"convert --help", "generate --help", "bench --help", "bench forward --help", "--help"}) {
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

TEST(Cli, CudaWithoutGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present: nothing to check";
  TempDir tmp("cli");
  expect_one_line_error(run_liger("generate --model " + source_path("assets/stories260K/hf") + " --device cuda", tmp),
                        {"cuda"});
}

}  // namespace
}  // namespace liger::test
