// Merging adapters and exporting the merged model (model/export.h), perplexity (`liger eval`) against eval_step, and
// the Liger diagnostics (model/diagnostics.h) against cases whose answer is known.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "core/safetensors.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "model/convert.h"
#include "model/diagnostics.h"
#include "model/export.h"
#include "model/train_step.h"
#include "tests/common/test_util.h"

namespace liger::test {
namespace {

namespace fs = std::filesystem;

const std::string kStories = "assets/stories260K/hf";
const std::string kText = "assets/text/tinystories_valid_head.txt";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Adapters for `cfg` on `targets` with A from init and B random normal * b_std (b_std = 0: PEFT's B = 0), saved as a
// PEFT adapter directory.
void make_adapter(const ModelConfig& cfg, const std::string& dir, const std::string& targets, double b_std,
                  uint64_t seed) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 6.0;  // scale 1.5: not 1, so a missing scale would show
  lc.seed = seed;
  lc.targets = LoraConfig::parse_targets(targets);
  LoraAdapters a = LoraAdapters::init(cfg, lc, Device::CPU);
  Rng rng(seed + 100);
  for (int64_t l = 0; l < cfg.n_layers; l++)
    for (LoraTarget t : lc.targets) {
      Tensor B = a.get(l, t)->B;
      for (int64_t i = 0; i < B.numel(); i++) B.ptr<float>()[i] = static_cast<float>(b_std * rng.normal());
    }
  a.save(dir, "test");
}

// The first T + 1 tokens of the bundled text: ids (B, T) and their next-token targets, one row per offset.
struct Batch {
  Tensor ids, targets;
};
Batch text_batch(int64_t B, int64_t T) {
  std::unique_ptr<Tokenizer> tok = load_tokenizer(source_path(kStories));
  const std::vector<int32_t> all = tok->encode(slurp(source_path(kText)).substr(0, 20000), true);
  std::vector<int32_t> ids, targets;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      ids.push_back(all[static_cast<size_t>(b * 500 + t)]);
      targets.push_back(all[static_cast<size_t>(b * 500 + t + 1)]);
    }
  return {Tensor::from_i32({B, T}, ids), Tensor::from_i32({B, T}, targets)};
}

std::vector<float> model_logits(LlamaModel& m, const Tensor& ids) {
  Tensor logits = Tensor::empty({ids.dim(0), ids.dim(1), m.config().vocab_size}, DType::F32, Device::CPU);
  m.forward(ids, nullptr, logits, false);
  return logits.to_f32_vector();
}

std::vector<float> layered_logits(LlamaModel& m, const LoraAdapters* lora, const Tensor& ids,
                                  LigerDiagnostics* diag = nullptr) {
  Tensor logits = Tensor::empty({ids.dim(0), ids.dim(1), m.config().vocab_size}, DType::F32, Device::CPU);
  forward_with_diagnostics(m, lora, ids, logits, diag);
  return logits.to_f32_vector();
}

// A Liger conversion of the bundled model into dir.
std::string convert(const TempDir& tmp, const std::string& name, const LigerConfig& lc) {
  const std::string dir = tmp.file(name);
  convert_to_liger(source_path(kStories), dir, lc, ConvertOptions{});
  return dir;
}

// ---- export --------------------------------------------------------------------------------------------------------

// Export, load back, compare with the base model + the adapters applied unmerged.
void check_round_trip(const std::string& model_dir, const TempDir& tmp) {
  Context ctx = Context::cpu();
  auto base = LlamaModel::load(model_dir, ctx, DType::F32);
  const std::string adir = tmp.file("adapter"), out = tmp.file("merged");
  make_adapter(base->config(), adir, "q,k,v,o,gate,up,down", 0.05, 7);
  export_merged_model(model_dir, adir, out, ExportOptions{});

  EXPECT_FALSE(fs::exists(out + ".tmp"));
  EXPECT_EQ(slurp(out + "/config.json"), slurp(model_dir + "/config.json"));  // a "liger" section stays
  EXPECT_EQ(slurp(out + "/tokenizer.model"), slurp(model_dir + "/tokenizer.model"));
  for (const SafetensorsEntry& e : SafetensorsFile::open(out + "/model.safetensors")->entries())
    EXPECT_EQ(e.dtype_str, "F32") << e.name;  // stories260K is an f32 checkpoint

  const LoraAdapters lora = LoraAdapters::load(adir, base->config(), Device::CPU);
  auto merged = LlamaModel::load(out, ctx, DType::F32);
  EXPECT_EQ(merged->config().is_liger, base->config().is_liger);
  const Batch b = text_batch(2, 40);
  const StepStats plain = eval_step(*base, nullptr, b.ids, b.targets);
  const StepStats with = eval_step(*base, &lora, b.ids, b.targets);
  const StepStats exported = eval_step(*merged, nullptr, b.ids, b.targets);
  // The adapter must matter, or the comparison below proves nothing.
  EXPECT_GT(std::fabs(with.loss_sum - plain.loss_sum), 1e-2 * plain.loss_sum);
  // f32 rounding of W + dW against x W^T + s (x A^T) B^T, through 5 layers: a few 1e-7 relative.
  EXPECT_NEAR(exported.loss_sum, with.loss_sum, 1e-6 * std::fabs(with.loss_sum));
  EXPECT_EQ(exported.tokens, with.tokens);
  size_t worst = 0;
  const std::vector<float> ref = layered_logits(*base, &lora, b.ids), got = model_logits(*merged, b.ids);
  const double err = rel_error(got, ref, &worst);
  EXPECT_LE(err, 1e-5) << "worst element " << worst << ": " << got[worst] << " vs " << ref[worst];
}

TEST(Export, MergedModelEqualsModelWithAdapters) {
  TempDir tmp("export");
  check_round_trip(source_path(kStories), tmp);
}

TEST(Export, MergedLigerModelEqualsLigerModelWithAdapters) {
  TempDir tmp("export");
  LigerConfig lc;
  lc.window = 16;  // shorter than the sequences: both branches matter
  const std::string dir = convert(tmp, "liger", lc);
  check_round_trip(dir, tmp);
  EXPECT_EQ(read_json_file(tmp.file("merged") + "/config.json")["liger"]["window"], 16);
}

TEST(Export, Bf16SourceStaysBf16) {
  TempDir tmp("export");
  // A bf16 copy of the bundled model.
  const std::string src = tmp.file("bf16");
  fs::create_directories(src);
  fs::copy_file(source_path(kStories) + "/config.json", src + "/config.json");
  fs::copy_file(source_path(kStories) + "/tokenizer.model", src + "/tokenizer.model");
  const Checkpoint ck = Checkpoint::open_dir(source_path(kStories));
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : ck.names()) tensors.push_back({n, ck.tensor(n).to(Device::CPU, DType::BF16)});
  write_safetensors(src + "/model.safetensors", tensors);

  Context ctx = Context::cpu();
  auto base = LlamaModel::load(src, ctx, DType::F32);
  const std::string adir = tmp.file("adapter"), out = tmp.file("merged");
  make_adapter(base->config(), adir, "q,v", 0.05, 3);
  export_merged_model(src, adir, out, ExportOptions{});

  const auto in = SafetensorsFile::open(src + "/model.safetensors");
  const auto ex = SafetensorsFile::open(out + "/model.safetensors");
  const LoraAdapters lora = LoraAdapters::load(adir, base->config(), Device::CPU);
  const double s = lora.config().scale();
  for (const SafetensorsEntry& e : ex->entries()) {
    EXPECT_EQ(e.dtype_str, "BF16") << e.name;
    const bool q = e.name.find("q_proj") != std::string::npos, v = e.name.find("v_proj") != std::string::npos;
    const std::vector<float> got = ex->tensor(e.name).to_f32_vector(), src_w = in->tensor(e.name).to_f32_vector();
    if (!q && !v) {  // not adapted: bf16 -> f32 -> bf16 is exact
      EXPECT_EQ(got, src_w) << e.name;
      continue;
    }
    // Adapted: round_bf16(W + s B A), with W + s B A computed here in double.
    const int64_t layer = std::stoll(e.name.substr(std::string("model.layers.").size()));
    const LoraPair* p = lora.get(layer, q ? LoraTarget::Q : LoraTarget::V);
    const int64_t R = p->A.dim(0), in_dim = p->A.dim(1), out_dim = p->B.dim(0);
    int64_t changed = 0, off = 0;
    for (int64_t o = 0; o < out_dim; o++)
      for (int64_t i = 0; i < in_dim; i++) {
        double d = 0;
        for (int64_t r = 0; r < R; r++)
          d += static_cast<double>(p->B.ptr<float>()[o * R + r]) * p->A.ptr<float>()[r * in_dim + i];
        const size_t k = static_cast<size_t>(o * in_dim + i);
        const double want = round_to_format(src_w[k] + s * d, 7, -126);
        // One bf16 rounding of a value that may sit within f32 rounding of a tie: at most one bf16 step apart.
        off += std::fabs(got[k] - want) > std::ldexp(std::fabs(want), -7);
        changed += got[k] != src_w[k];
      }
    EXPECT_EQ(off, 0) << e.name << ": elements more than one bf16 step from round_bf16(W + s B A)";
    EXPECT_GT(changed, out_dim * in_dim / 2) << e.name << ": the merge changed too few elements";
  }
}

TEST(Export, BadInputsAreErrorsNamingWhatIsWrong) {
  TempDir tmp("export");
  const std::string model = source_path(kStories);
  Context ctx = Context::cpu();
  const ModelConfig cfg = LlamaModel::load(model, ctx, DType::F32)->config();
  const std::string adir = tmp.file("adapter");
  make_adapter(cfg, adir, "q,k,v", 0.05, 1);
  // An existing non-empty output needs force; then it is replaced.
  const std::string out = tmp.file("out");
  fs::create_directories(out);
  std::ofstream(out + "/stale.txt") << "x";
  EXPECT_TRUE(throws_error([&] { export_merged_model(model, adir, out, ExportOptions{}); }, {out, "--force"}));
  export_merged_model(model, adir, out, ExportOptions{true});
  EXPECT_FALSE(fs::exists(out + "/stale.txt"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  // Never over the inputs.
  EXPECT_TRUE(
      throws_error([&] { export_merged_model(out, adir, out, ExportOptions{true}); }, {out, "model directory"}));
  EXPECT_TRUE(throws_error([&] { export_merged_model(model, adir, adir, ExportOptions{true}); }, {adir, "adapter"}));
  // A missing adapter directory, and adapters made for another model (llama3_gqa_tied: its MLP is 96 wide, not 172).
  EXPECT_TRUE(throws_error([&] { export_merged_model(model, tmp.file("none"), tmp.file("o2"), ExportOptions{}); },
                           {tmp.file("none"), "does not exist"}));
  const std::string other = tmp.file("other_adapter");
  make_adapter(load_model_config(source_path("tests/golden/llama3_gqa_tied/config.json")), other, "q,k,v,gate", 0.0, 1);
  EXPECT_TRUE(throws_error([&] { export_merged_model(model, other, tmp.file("o3"), ExportOptions{}); },
                           {other + "/adapter_model.safetensors",
                            "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight", "(96, 4)", "(172, 4)"}));
  EXPECT_FALSE(fs::exists(tmp.file("o3")));
  EXPECT_FALSE(fs::exists(tmp.file("o3.tmp")));
}

TEST(Export, MergeThenUnmergeRestoresTheWeights) {
  TempDir tmp("export");
  Context ctx = Context::cpu();
  auto m = LlamaModel::load(source_path(kStories), ctx, DType::F32);
  const std::vector<float> before = m->weights().layers[1].w_down.to_f32_vector();
  make_adapter(m->config(), tmp.file("a"), "down", 0.05, 5);
  const LoraAdapters lora = LoraAdapters::load(tmp.file("a"), m->config(), Device::CPU);
  merge_adapters(*m, lora);
  EXPECT_GT(rel_error(m->weights().layers[1].w_down.to_f32_vector(), before), 1e-3);
  merge_adapters(*m, lora, -1.0);
  EXPECT_LE(rel_error(m->weights().layers[1].w_down.to_f32_vector(), before), 1e-6);
}

// ---- eval ----------------------------------------------------------------------------------------------------------

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

RunResult run_liger(const std::string& args, const TempDir& tmp) {
  const std::string out = tmp.file("stdout.txt"), err = tmp.file("stderr.txt");
  const int status = std::system((liger_binary() + " " + args + " >" + out + " 2>" + err + " </dev/null").c_str());
  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

TEST(Eval, PerplexityIsExpOfTheMeanEvalStepLoss) {
  TempDir tmp("eval");
  const std::string model = source_path(kStories), text = source_path(kText), json = tmp.file("eval.json");
  RunResult r =
      run_liger("eval --model " + model + " --text " + text + " --chunk-length 128 --max-chunks 3 --json " + json, tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json j = read_json_file(json);

  // The same chunks by hand: the text's documents, no split, chunks of 128 in stream order.
  std::unique_ptr<Tokenizer> tok = load_tokenizer(model);
  DataConfig dc;
  dc.path = text;
  dc.format = "text";
  dc.chunk_length = 128;
  dc.validation_fraction = 0.0;
  DataLoader data(dc, *tok);
  Context ctx = Context::cpu();
  auto m = LlamaModel::load(model, ctx, DType::F32);
  double sum = 0;
  int64_t tokens = 0;
  for (int64_t i = 0; i < 3; i++) {
    const Chunk c = data.train().chunk(i);
    const StepStats s = eval_step(*m, nullptr, Tensor::from_i32({1, 128}, c.input_ids),
                                  Tensor::from_i32({1, 128}, c.targets), &c.doc_starts);  // as training validates
    sum += s.loss_sum;
    tokens += s.tokens;
  }
  ASSERT_GT(tokens, 300);
  ASSERT_GT(data.train().chunk(0).doc_starts.size(), 1u);  // packed paragraphs: document-aware evaluation matters
  const double loss = sum / static_cast<double>(tokens);
  EXPECT_EQ(j["tokens"].get<int64_t>(), tokens);
  EXPECT_EQ(j["chunks"].get<int64_t>(), 3);
  EXPECT_NEAR(j["loss"].get<double>(), loss, 1e-12 * loss);
  EXPECT_TRUE(std::isfinite(j["ppl"].get<double>()));
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(loss), 1e-12 * std::exp(loss));
  // A trained model predicts TinyStories well: far below the uniform 512.
  EXPECT_LT(j["ppl"].get<double>(), 20.0);
  EXPECT_NE(r.out.find(strfmt("tokens %lld  chunks 3", static_cast<long long>(tokens))), std::string::npos) << r.out;

  // Adapters with B = 0 (PEFT's initialization) change nothing, exactly: y + 0 = y.
  make_adapter(m->config(), tmp.file("zero"), "q,k,v,o,gate,up,down", 0.0, 9);
  const LoraAdapters zero = LoraAdapters::load(tmp.file("zero"), m->config(), Device::CPU);
  const Batch b = text_batch(1, 64);
  EXPECT_EQ(eval_step(*m, &zero, b.ids, b.targets).loss_sum, eval_step(*m, nullptr, b.ids, b.targets).loss_sum);
  r = run_liger("eval --model " + model + " --adapter " + tmp.file("zero") + " --text " + text +
                    " --chunk-length 128 --max-chunks 3 --json " + tmp.file("zero.json"),
                tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json_file(tmp.file("zero.json"))["loss"].get<double>(), j["loss"].get<double>());
}

// ---- diagnostics ---------------------------------------------------------------------------------------------------

// The forward layer by layer is the model's forward.
void expect_same_forward(LlamaModel& m, const Tensor& ids, LigerDiagnostics* diag) {
  size_t worst = 0;
  const std::vector<float> got = layered_logits(m, nullptr, ids, diag), ref = model_logits(m, ids);
  EXPECT_LE(rel_error(got, ref, &worst), 1e-6) << "worst " << worst << ": " << got[worst] << " vs " << ref[worst];
}

void expect_sane_gates(const LigerDiagnostics& d) {
  for (const LayerDiagnostics& l : d.layers) {
    EXPECT_GT(l.mean_gate(), 0.0) << l.layer;
    EXPECT_LT(l.mean_gate(), 1.0) << l.layer;
    EXPECT_GE(l.memory_length(), 1.0) << l.layer;
    EXPECT_GE(l.memory_length(), 1.0 / (1.0 - l.mean_gate()) * (1 - 1e-9)) << l.layer;  // Jensen
    EXPECT_GT(l.state_norm(), 0.0) << l.layer;
    EXPECT_TRUE(std::isfinite(l.state_norm())) << l.layer;
  }
}

// --by-position: the buckets partition the supervised tokens (their token-weighted mean is the overall loss), positions
// count from the start of each document, or of the chunk when the text is one stream; edges double from 64.
TEST(Eval, ByPositionBucketsAddUpToTheLoss) {
  TempDir tmp("eval_pos");
  const std::string model = source_path(kStories), text = source_path(kText);
  for (const char* packed : {"false", "true"}) {
    const std::string json = tmp.file(std::string("pos_") + packed + ".json");
    RunResult r = run_liger("eval --model " + model + " --text " + text + " --chunk-length 300 --max-chunks 4 " +
                                "--by-position --pack-across-documents " + packed + " --json " + json,
                            tmp);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json j = read_json_file(json);
    const Json& b = j["by_position"];
    ASSERT_EQ(b.size(), 4u);  // 0-64, 64-128, 128-256, 256-300
    EXPECT_EQ(b[3]["from"].get<int64_t>(), 256);
    EXPECT_EQ(b[3]["to"].get<int64_t>(), 300);
    double sum = 0;
    int64_t tokens = 0;
    for (const Json& e : b) {
      if (e["tokens"].get<int64_t>() == 0) continue;
      sum += e["loss"].get<double>() * static_cast<double>(e["tokens"].get<int64_t>());
      tokens += e["tokens"].get<int64_t>();
    }
    EXPECT_EQ(tokens, j["tokens"].get<int64_t>()) << packed;
    EXPECT_NEAR(sum / static_cast<double>(tokens), j["loss"].get<double>(), 1e-9) << packed;
    EXPECT_NE(r.out.find("  256-300"), std::string::npos) << r.out;
    // Paragraph documents are mostly shorter than 128 tokens: per document, the far buckets hold few tokens; as one
    // stream, each chunk fills every bucket.
    if (std::string(packed) == "true") EXPECT_EQ(b[3]["tokens"].get<int64_t>(), 4 * 43) << "positions 256..298";
    else EXPECT_LT(b[3]["tokens"].get<int64_t>(), b[0]["tokens"].get<int64_t>() / 4);
  }
}

TEST(Diagnostics, SwaOnlyWithAWindowLongerThanTheTextIsSoftmaxAttention) {
  TempDir tmp("diag");
  LigerConfig lc;
  lc.mix_swa = 1.0, lc.mix_recurrent = 0.0, lc.window = 200;
  Context ctx = Context::cpu();
  auto m = LlamaModel::load(convert(tmp, "swa", lc), ctx, DType::F32);
  const Batch b = text_batch(2, 96);
  LigerDiagnostics d;
  expect_same_forward(*m, b.ids, &d);
  ASSERT_EQ(d.layers.size(), 5u);
  for (const LayerDiagnostics& l : d.layers) {
    EXPECT_LE(l.rel_error(), 1e-5) << "layer " << l.layer;
    EXPECT_GT(l.ref_sq, 0.0);
    EXPECT_EQ(l.gate_count, 2 * 96 * 4 * 8);  // B T HKV HS
    EXPECT_EQ(l.state_count, 2 * 4);          // B HKV
  }
  expect_sane_gates(d);

  // The same ablation with a window shorter than the text is not softmax attention any more: the comparison sees it.
  lc.window = 8;
  auto m8 = LlamaModel::load(convert(tmp, "swa8", lc), ctx, DType::F32);
  LigerDiagnostics d8;
  forward_with_diagnostics(*m8, nullptr, b.ids, Tensor(), &d8);
  for (const LayerDiagnostics& l : d8.layers) EXPECT_GT(l.rel_error(), 1e-2) << "layer " << l.layer;
}

TEST(Diagnostics, GlaConversionDiffersFromSoftmaxAndItsGatesAreTheFormula) {
  TempDir tmp("diag");
  Context ctx = Context::cpu();
  auto m = LlamaModel::load(convert(tmp, "gla", LigerConfig{}), ctx, DType::F32);
  const int64_t T = 96;
  const Batch b = text_batch(1, T);
  LigerDiagnostics d;
  expect_same_forward(*m, b.ids, &d);
  ASSERT_EQ(d.layers.size(), 5u);
  for (const LayerDiagnostics& l : d.layers) EXPECT_GT(l.rel_error(), 0.1) << "layer " << l.layer;
  expect_sane_gates(d);

  // Layer 0 by hand in double: k = rmsnorm(embedding) W_K^T; alpha = sigmoid(k)^(1/16); the state
  // S = Diag(alpha_t) S + softmax(k_t) (x) v_t per KV head.
  const ModelConfig& c = m->config();
  const LayerWeights& L = m->weights().layers[0];
  const int64_t D = c.d_model, HKV = c.n_kv_heads, HS = c.head_dim;
  double gate_sum = 0, mem_sum = 0, norm_sum = 0;
  std::vector<double> S(static_cast<size_t>(HKV * HS * HS), 0.0);
  for (int64_t t = 0; t < T; t++) {
    const float* e = m->weights().embed.ptr<float>() + b.ids.ptr<int32_t>()[t] * D;
    double ms = 0;
    for (int64_t i = 0; i < D; i++) ms += static_cast<double>(e[i]) * e[i];
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(D) + c.rms_eps);
    std::vector<double> k(static_cast<size_t>(HKV * HS)), v(static_cast<size_t>(HKV * HS));
    for (int64_t o = 0; o < HKV * HS; o++) {
      double sk = 0, sv = 0;
      for (int64_t i = 0; i < D; i++) {
        const double xn = e[i] * inv * L.attn_norm.ptr<float>()[i];
        sk += xn * L.wk.ptr<float>()[o * D + i];
        sv += xn * L.wv.ptr<float>()[o * D + i];
      }
      k[static_cast<size_t>(o)] = sk, v[static_cast<size_t>(o)] = sv;
    }
    for (int64_t j = 0; j < HKV; j++) {
      double mx = -1e300, z = 0;
      for (int64_t ch = 0; ch < HS; ch++) mx = std::max(mx, k[static_cast<size_t>(j * HS + ch)]);
      for (int64_t ch = 0; ch < HS; ch++) z += std::exp(k[static_cast<size_t>(j * HS + ch)] - mx);
      for (int64_t ch = 0; ch < HS; ch++) {
        const double kc = k[static_cast<size_t>(j * HS + ch)];
        const double alpha = std::pow(1.0 / (1.0 + std::exp(-kc)), 1.0 / 16.0);
        gate_sum += alpha;
        mem_sum += 1.0 / (1.0 - alpha);
        const double fk = std::exp(kc - mx) / z;
        for (int64_t ev = 0; ev < HS; ev++) {
          double& s = S[static_cast<size_t>((j * HS + ch) * HS + ev)];
          s = alpha * s + fk * v[static_cast<size_t>(j * HS + ev)];
        }
      }
    }
  }
  for (int64_t j = 0; j < HKV; j++) {
    double sq = 0;
    for (int64_t i = 0; i < HS * HS; i++) {
      const double x = S[static_cast<size_t>(j * HS * HS + i)];
      sq += x * x;
    }
    norm_sum += std::sqrt(sq);
  }
  const double n = static_cast<double>(T * HKV * HS);
  EXPECT_NEAR(d.layers[0].mean_gate(), gate_sum / n, 1e-6 * gate_sum / n);
  EXPECT_NEAR(d.layers[0].memory_length(), mem_sum / n, 1e-4 * mem_sum / n);  // 1/(1-alpha) magnifies f32 rounding
  EXPECT_NEAR(d.layers[0].state_norm(), norm_sum / HKV, 1e-5 * norm_sum / HKV);
}

// Cross-entropy summed over the positions with a target, from logits (T, V), in double.
double summed_loss(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t V) {
  double sum = 0;
  for (size_t t = 0; t < targets.size(); t++) {
    if (targets[t] < 0) continue;
    const float* row = logits.data() + t * static_cast<size_t>(V);
    double mx = -1e300, z = 0;
    for (int64_t i = 0; i < V; i++) mx = std::max(mx, static_cast<double>(row[i]));
    for (int64_t i = 0; i < V; i++) z += std::exp(row[i] - mx);
    sum += mx + std::log(z) - row[targets[t]];
  }
  return sum;
}

TEST(Diagnostics, DocumentAwareForwardIsEvalStepsForward) {
  TempDir tmp("diag");
  Context ctx = Context::cpu();
  LigerConfig lc;
  lc.window = 8;
  auto m = LlamaModel::load(convert(tmp, "gla", lc), ctx, DType::F32);
  make_adapter(m->config(), tmp.file("a"), "q,k,v,o", 0.05, 11);
  const LoraAdapters lora = LoraAdapters::load(tmp.file("a"), m->config(), Device::CPU);
  std::unique_ptr<Tokenizer> tok = load_tokenizer(source_path(kStories));
  DataConfig dc;
  dc.path = source_path(kText);
  dc.format = "text";
  dc.chunk_length = 96;
  dc.validation_fraction = 0.0;
  const Chunk c = DataLoader(dc, *tok).train().chunk(1);
  ASSERT_GT(c.doc_starts.size(), 1u);
  const Tensor ids = Tensor::from_i32({1, 96}, c.input_ids), targets = Tensor::from_i32({1, 96}, c.targets);
  const int64_t V = m->config().vocab_size;
  LigerDiagnostics d;
  Tensor logits = Tensor::empty({1, 96, V}, DType::F32, Device::CPU);
  forward_with_diagnostics(*m, &lora, ids, logits, &d, &c.doc_starts);
  const double ref = eval_step(*m, &lora, ids, targets, &c.doc_starts).loss_sum;
  EXPECT_NEAR(summed_loss(logits.to_f32_vector(), c.targets, V), ref, 1e-5 * ref);
  // One final state per document and KV head.
  EXPECT_EQ(d.layers[0].state_count, static_cast<int64_t>(c.doc_starts.size()) * m->config().n_kv_heads);
  // Without the boundaries it is another computation (the documents see each other).
  forward_with_diagnostics(*m, &lora, ids, logits, nullptr);
  EXPECT_GT(std::fabs(summed_loss(logits.to_f32_vector(), c.targets, V) - ref), 1e-3 * ref);
}

TEST(Diagnostics, HybridAndUngatedModels) {
  TempDir tmp("diag");
  Context ctx = Context::cpu();
  const Batch b = text_batch(1, 32);
  // Inter-layer hybrid: softmax layers get no entry, and the forward is still the model's.
  LigerConfig hy;
  hy.softmax_layers = {1, 3};
  auto mh = LlamaModel::load(convert(tmp, "hybrid", hy), ctx, DType::F32);
  LigerDiagnostics dh;
  expect_same_forward(*mh, b.ids, &dh);
  ASSERT_EQ(dh.layers.size(), 3u);
  EXPECT_EQ(dh.layers[0].layer, 0);
  EXPECT_EQ(dh.layers[1].layer, 2);
  EXPECT_EQ(dh.layers[2].layer, 4);
  // No gate (pure linear attention): alpha = 1, an infinite horizon.
  LigerConfig ng;
  ng.gate = false;
  auto mn = LlamaModel::load(convert(tmp, "nogate", ng), ctx, DType::F32);
  LigerDiagnostics dn;
  forward_with_diagnostics(*mn, nullptr, b.ids, Tensor(), &dn);
  ASSERT_EQ(dn.layers.size(), 5u);
  EXPECT_EQ(dn.layers[0].mean_gate(), 1.0);
  EXPECT_TRUE(std::isinf(dn.layers[0].memory_length()));
  // A softmax model has no Liger layer to measure; its layer-by-layer forward is still its forward, with adapters
  // too (checked against the merged model in the Export tests).
  auto ms = LlamaModel::load(source_path(kStories), ctx, DType::F32);
  LigerDiagnostics ds;
  expect_same_forward(*ms, b.ids, &ds);
  EXPECT_TRUE(ds.layers.empty());
}

}  // namespace
}  // namespace liger::test
