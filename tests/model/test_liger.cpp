// Liger models on the CPU: `convert` writes a loadable Liger directory, and for every variant and ablation the
// training form (whole sequences, chunked recurrence) and the decode form (prefill + one token at a time through the
// recurrent state and the window ring buffer) give the same logits — the exactness the reference code lacks.
#include <cmath>
#include <filesystem>

#include "model/convert.h"
#include "model/kl.h"
#include "tests/model/golden_cases.h"

namespace liger::test {
namespace {

namespace fs = std::filesystem;

// A Liger directory converted from one of the HF golden models (GQA, llama3 rope) with the given "liger" section.
std::string convert_golden(const TempDir& tmp, const std::string& name, const Json& section, int index) {
  const std::string src = source_path("tests/golden/" + name);
  ModelConfig base = load_model_config(src + "/config.json");
  LigerConfig lc = parse_liger_config(section, "test", base);
  const std::string out = tmp.file(name + "_liger_" + std::to_string(index));
  convert_to_liger(src, out, lc, ConvertOptions{});
  return out;
}

struct Case {
  const char* label;
  Json section;
};

std::vector<Case> cases() {
  // Window 4 and chunk 5 on 19-token sequences: the window slides and the ring buffer wraps; chunks are partial.
  const Json base = {{"window", 4}, {"chunk", 5}};
  auto with = [&](Json extra) {
    Json j = base;
    for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    return j;
  };
  return {
      {"gla", with({{"variant", "gla"}})},
      {"hgrn2", with({{"variant", "hgrn2"}})},
      {"gsa M=4", with({{"variant", "gsa"}, {"gsa_slots", 4}})},
      {"gsa M=16", with({{"variant", "gsa"}, {"gsa_slots", 16}})},
      {"gla no gate", with({{"variant", "gla"}, {"gate", false}})},
      {"gla gate from q", with({{"variant", "gla"}, {"gate_source", "q"}})},
      {"gla gate from v", with({{"variant", "gla"}, {"gate_source", "v"}})},
      {"no-swa", with({{"variant", "gla"}, {"mix_swa", 0.0}, {"mix_recurrent", 1.0}})},
      {"swa-only", with({{"variant", "gla"}, {"mix_swa", 1.0}, {"mix_recurrent", 0.0}})},
      {"hybrid layer 1 softmax", with({{"variant", "gla"}, {"softmax_layers", {1}}})},
      {"window 64 (default), chunk 64", {{"variant", "gla"}}},
      {"window 0 (current token only)", with({{"variant", "gla"}, {"window", 0}})},
  };
}

TEST(Liger, DecodeEqualsTrainingForm) {
  TempDir tmp("liger");
  Context ctx = Context::cpu();
  HfGolden g = read_hf_golden(source_path("tests/golden/llama3_gqa_tied"));
  const int64_t B = g.ids.dim(0), T = g.ids.dim(1);
  const std::vector<Case> all = cases();
  for (size_t i = 0; i < all.size(); i++) {
    const Case& c = all[i];
    SCOPED_TRACE(c.label);
    const std::string dir = convert_golden(tmp, "llama3_gqa_tied", c.section, static_cast<int>(i));
    auto model = LlamaModel::load(dir, ctx, DType::F32);
    const int64_t V = model->config().vocab_size;
    ASSERT_TRUE(model->config().is_liger);
    Tensor full = Tensor::empty({B, T, V}, DType::F32, Device::CPU);
    model->forward(g.ids, nullptr, full, false);
    const std::vector<float> want = full.to_f32_vector();
    for (int64_t P : {int64_t{1}, int64_t{7}}) {
      KVCache cache = model->make_cache(B, T);
      std::vector<float> got(static_cast<size_t>(B * T * V));
      for (int64_t t0 = 0; t0 < T;) {
        const int64_t n = t0 == 0 ? P : 1;
        std::vector<int32_t> step;
        for (int64_t b = 0; b < B; b++)
          for (int64_t t = t0; t < t0 + n; t++) step.push_back(g.ids.ptr<int32_t>()[b * T + t]);
        Tensor logits = Tensor::empty({B, n, V}, DType::F32, Device::CPU);
        model->forward(Tensor::from_i32({B, n}, step), &cache, logits, false);
        std::vector<float> l = logits.to_f32_vector();
        for (int64_t b = 0; b < B; b++)
          std::copy(l.begin() + b * n * V, l.begin() + (b + 1) * n * V, got.begin() + (b * T + t0) * V);
        t0 += n;
      }
      const double e = rel_error(got, want);
      std::printf("  %-32s prefill %lld + decode: rel error %.3g\n", c.label, static_cast<long long>(P), e);
      // Both forms are fp32 evaluations of the same sums in different orders: ~1e-7 relative; 1e-5 is the bound.
      EXPECT_LE(e, 1e-5);
    }
  }
}

}  // namespace
}  // namespace liger::test

namespace liger::test {
namespace {

Tensor full_logits(const std::string& dir, const HfGolden& g) {
  Context ctx = Context::cpu();
  auto model = LlamaModel::load(dir, ctx, DType::F32);
  Tensor logits = Tensor::empty(g.logits.shape(), DType::F32, Device::CPU);
  model->forward(g.ids, nullptr, logits, false);
  return logits;
}

// SWA-only with a window longer than the sequence is softmax attention: the logits are transformers' own. This ties
// the Liger path (its RoPE, mask, mixing) to an independent reference.
TEST(Liger, SwaOnlyWithALongWindowIsTheBaseModel) {
  TempDir tmp("liger");
  HfGolden g = read_hf_golden(source_path("tests/golden/llama3_gqa_tied"));
  const Json s = {{"variant", "gla"}, {"mix_swa", 1.0}, {"mix_recurrent", 0.0}, {"window", 64}};
  Tensor l = full_logits(convert_golden(tmp, "llama3_gqa_tied", s, 0), g);
  const double e = rel_error(l.to_f32_vector(), g.logits.to_f32_vector());
  std::printf("  swa-only, window 64 > T: rel error against transformers %.3g\n", e);
  EXPECT_LE(e, 1e-5);
}

// Liger adds no parameters: a converted model with every layer switched back to softmax attention
// (LlamaModel::set_softmax_layers, what liger select-layers scores against) is the base model, logits as transformers'.
TEST(Liger, EveryLayerRestoredToSoftmaxIsTheBaseModel) {
  TempDir tmp("liger");
  HfGolden g = read_hf_golden(source_path("tests/golden/llama3_gqa_tied"));
  Context ctx = Context::cpu();
  auto model = LlamaModel::load(convert_golden(tmp, "llama3_gqa_tied", {{"variant", "gla"}}, 0), ctx, DType::F32);
  Tensor logits = Tensor::empty(g.logits.shape(), DType::F32, Device::CPU);
  model->forward(g.ids, nullptr, logits, false);
  EXPECT_GT(rel_error(logits.to_f32_vector(), g.logits.to_f32_vector()), 1e-2);  // converted: another function
  std::vector<int64_t> all;
  for (int64_t l = 0; l < model->config().n_layers; l++) all.push_back(l);
  model->set_softmax_layers(all);
  model->forward(g.ids, nullptr, logits, false);
  const double e = rel_error(logits.to_f32_vector(), g.logits.to_f32_vector());
  std::printf("  gla with every layer restored to softmax: rel error against transformers %.3g\n", e);
  EXPECT_LE(e, 1e-5);
  EXPECT_THROW(model->set_softmax_layers({model->config().n_layers}), Error);
}

// KL(P || Q) of two rows of logits against the closed form: logits (0, ln 3) give P = (1/4, 3/4), logits (0, 0) give
// Q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2); a row against itself is 0; the sum runs over rows.
TEST(Liger, KlDivergenceOfLogitRows) {
  const Tensor p = Tensor::from_f32({2, 2}, {0.0f, std::log(3.0f), 5.0f, -1.0f});
  const Tensor q = Tensor::from_f32({2, 2}, {0.0f, 0.0f, 5.0f, -1.0f});
  const double want = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  EXPECT_NEAR(kl_divergence_sum(p, q), want, 1e-7);
  EXPECT_EQ(kl_divergence_sum(q, q), 0.0);
}

// The converted model is a different function: its logits move far from the base model's (for every variant), and a
// window shorter than the sequence changes the SWA-only output.
TEST(Liger, ConversionChangesTheFunction) {
  TempDir tmp("liger");
  HfGolden g = read_hf_golden(source_path("tests/golden/llama3_gqa_tied"));
  int i = 0;
  for (const char* v : {"gla", "hgrn2", "gsa"}) {
    Json s = {{"variant", v}, {"gsa_slots", 4}};
    const double e = rel_error(full_logits(convert_golden(tmp, "llama3_gqa_tied", s, i++), g).to_f32_vector(),
                               g.logits.to_f32_vector());
    std::printf("  %s: rel distance from the base model %.3g\n", v, e);
    EXPECT_GT(e, 1e-2) << v;
  }
  const Json s = {{"variant", "gla"}, {"mix_swa", 1.0}, {"mix_recurrent", 0.0}, {"window", 4}};
  EXPECT_GT(rel_error(full_logits(convert_golden(tmp, "llama3_gqa_tied", s, i++), g).to_f32_vector(),
                      g.logits.to_f32_vector()),
            1e-2);
}

TEST(Liger, ConvertRejectsBadSettings) {
  TempDir tmp("liger");
  const std::string src = source_path("tests/golden/llama3_gqa_tied");
  ModelConfig base = load_model_config(src + "/config.json");
  EXPECT_TRUE(throws_error(
      [&] {
        parse_liger_config({{"variant", "mamba"}}, "cfg", base);
      },
      {"cfg", "variant", "mamba"}));
  EXPECT_TRUE(throws_error(
      [&] {
        parse_liger_config({{"variant", "gsa"}, {"gsa_slots", 5}}, "cfg", base);
      },
      {"gsa_slots", "head_dim"}));
  EXPECT_TRUE(throws_error(
      [&] {
        parse_liger_config({{"variant", "gla"}, {"softmax_layers", {2}}}, "cfg", base);
      },
      {"softmax_layers", "layer 2"}));
  EXPECT_TRUE(throws_error(
      [&] {
        parse_liger_config({{"variant", "gla"}, {"windw", 3}}, "cfg", base);
      },
      {"unknown key", "windw"}));
  EXPECT_TRUE(throws_error(
      [&] {
        parse_liger_config({{"variant", "hgrn2"}, {"gate", false}}, "cfg", base);
      },
      {"gate"}));
  // Converting a Liger directory again, and writing over a non-empty directory, are errors.
  const std::string once = convert_golden(tmp, "llama3_gqa_tied", {{"variant", "gla"}}, 0);
  EXPECT_TRUE(throws_error([&] { convert_to_liger(once, tmp.file("again"), LigerConfig{}, ConvertOptions{}); },
                           {once, "already a Liger model"}));
  EXPECT_TRUE(throws_error([&] { convert_to_liger(src, once, LigerConfig{}, ConvertOptions{}); }, {once, "not empty"}));
}

}  // namespace
}  // namespace liger::test
