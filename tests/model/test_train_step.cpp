// Whole-model LoRA gradients against central finite differences in fp64, for the softmax-attention architectures and
// for every Liger variant: the explicit backward of every layer (RMSNorm, SwiGLU, RoPE, attention or the Liger
// branches, feature maps, gates, mixing, LoRA, the fused LM head + cross-entropy) composed end to end.
#include <cstring>
#include <filesystem>

#include "core/rng.h"
#include "model/convert.h"
#include "model/train_step.h"
#include "tests/common/model_cases.h"
#include "tests/model/golden_cases.h"

namespace liger::test {
namespace {

// Loss = sum of per-token losses (grad_scale 1). Returns the relative error over a fixed sample of LoRA elements.
double lora_fd_error(const std::string& dir, uint64_t seed) {
  Context ctx = Context::cpu();
  auto model = LlamaModel::load(dir, ctx, DType::F64);
  const ModelConfig& cfg = model->config();
  LoraConfig lc;
  lc.rank = 2;
  lc.alpha = 3.0;
  lc.seed = seed;
  lc.targets = LoraConfig::parse_targets("q,k,v,o,gate,up,down");
  LoraAdapters lora = LoraAdapters::init(cfg, lc, Device::CPU, DType::F64);
  Rng rng(seed + 1);
  for (auto& [name, p] : lora.parameters())  // B = 0 at init would make every dA vanish: use random B
    for (int64_t i = 0; i < p.numel(); i++) p.ptr<double>()[i] = 0.3 * rng.normal();
  HfGolden g = read_hf_golden(source_path("tests/golden/llama3_gqa_tied"));
  const int64_t T = 9;
  std::vector<int32_t> ids, targets;
  for (int64_t t = 0; t < T; t++) {
    ids.push_back(g.ids.ptr<int32_t>()[t] % static_cast<int32_t>(cfg.vocab_size));
    targets.push_back(t % 4 == 1 ? -100 : g.ids.ptr<int32_t>()[t + 1] % static_cast<int32_t>(cfg.vocab_size));
  }
  const Tensor tid = Tensor::from_i32({1, T}, ids), ttg = Tensor::from_i32({1, T}, targets);
  lora.zero_grad();
  train_step(*model, lora, tid, ttg, 1.0f);
  auto params = lora.parameters();
  auto grads = lora.gradients();
  double num = 0, den = 0;
  const double h = 1e-5;
  for (size_t p = 0; p < params.size(); p++) {
    Tensor P = params[p].second, G = grads[p].second;
    for (int64_t i = static_cast<int64_t>(p % 3); i < P.numel(); i += 5) {  // a fixed sample of every tensor
      const double x0 = P.ptr<double>()[i];
      P.ptr<double>()[i] = x0 + h;
      const double lp = eval_step(*model, &lora, tid, ttg).loss_sum;
      P.ptr<double>()[i] = x0 - h;
      const double lm = eval_step(*model, &lora, tid, ttg).loss_sum;
      P.ptr<double>()[i] = x0;
      const double fd = (lp - lm) / (2 * h), d = G.ptr<double>()[i] - fd;
      num += d * d;
      den += fd * fd;
    }
  }
  return std::sqrt(num) / std::sqrt(den);
}

TEST(TrainStep, WholeModelLoraGradientsMatchFiniteDifferences) {
  TempDir tmp("grad");
  // The window slides and chunks are partial over T = 9.
  const std::vector<ModelCase> cases = training_cases({{"window", 3}, {"chunk", 4}});
  uint64_t seed = 100;
  int i = 0;
  for (const ModelCase& c : cases) {
    const std::string dir = case_model_dir(tmp, c, "m" + std::to_string(i++));
    const double e = lora_fd_error(dir, seed++);
    std::printf("  %-42s LoRA gradient rel error %.3g\n", c.label, e);
    EXPECT_LE(e, 1e-6) << c.label;
  }
}

}  // namespace
}  // namespace liger::test

namespace liger::test {
namespace {

// Document-aware packing: three documents packed in one sequence give, token for token, the losses (and the LoRA
// gradients) of the three documents run one by one; treated as one stream (pack_across_documents) they do not.
TEST(TrainStep, PackedDocumentsTrainAsIfAlone) {
  TempDir tmp("pack");
  Context ctx = Context::cpu();
  ModelConfig base = load_model_config(source_path("assets/stories260K/hf/config.json"));
  for (const char* variant : {"softmax", "gla", "gsa"}) {
    SCOPED_TRACE(variant);
    std::string dir = source_path("assets/stories260K/hf");
    if (std::string(variant) != "softmax") {
      dir = tmp.file(variant);
      convert_to_liger(
          source_path("assets/stories260K/hf"), dir,
          parse_liger_config({{"variant", variant}, {"window", 5}, {"chunk", 4}, {"gsa_slots", 4}}, "test", base),
          ConvertOptions{});
    }
    auto model = LlamaModel::load(dir, ctx, DType::F32);
    LoraConfig lc;
    lc.seed = 3;
    LoraAdapters lora = LoraAdapters::init(model->config(), lc, Device::CPU);
    Rng rng(9);
    for (auto& [name, p] : lora.parameters())
      for (int64_t i = 0; i < p.numel(); i++) p.ptr<float>()[i] = 0.1f * rng.normal();
    // Three documents of 7, 12 and 9 tokens; targets are the next token within the document (none at its end).
    const std::vector<int64_t> lens = {7, 12, 9};
    std::vector<int32_t> ids, targets, starts;
    std::vector<std::vector<int32_t>> doc_ids, doc_targets;
    for (int64_t d = 0; d < 3; d++) {
      starts.push_back(static_cast<int32_t>(ids.size()));
      std::vector<int32_t> di, dt;
      for (int64_t t = 0; t < lens[static_cast<size_t>(d)]; t++)
        di.push_back(1 + static_cast<int32_t>(rng.next_u64() % 500));
      for (int64_t t = 0; t < lens[static_cast<size_t>(d)]; t++)
        dt.push_back(t + 1 < lens[static_cast<size_t>(d)] ? di[static_cast<size_t>(t + 1)] : -100);
      ids.insert(ids.end(), di.begin(), di.end());
      targets.insert(targets.end(), dt.begin(), dt.end());
      doc_ids.push_back(di);
      doc_targets.push_back(dt);
    }
    const int64_t T = static_cast<int64_t>(ids.size());
    lora.zero_grad();
    StepStats packed =
        train_step(*model, lora, Tensor::from_i32({1, T}, ids), Tensor::from_i32({1, T}, targets), 1.0f, &starts);
    std::vector<float> g_packed;
    for (auto& [n, g] : lora.gradients()) {
      auto v = g.to_f32_vector();
      g_packed.insert(g_packed.end(), v.begin(), v.end());
    }
    lora.zero_grad();
    std::vector<double> alone;
    for (size_t d = 0; d < 3; d++) {
      const int64_t L = static_cast<int64_t>(doc_ids[d].size());
      StepStats s = train_step(*model, lora, Tensor::from_i32({1, L}, doc_ids[d]),
                               Tensor::from_i32({1, L}, doc_targets[d]), 1.0f);
      alone.insert(alone.end(), s.token_losses.begin(), s.token_losses.end());
    }
    std::vector<float> g_alone;
    for (auto& [n, g] : lora.gradients()) {
      auto v = g.to_f32_vector();
      g_alone.insert(g_alone.end(), v.begin(), v.end());
    }
    ASSERT_EQ(packed.token_losses.size(), alone.size());
    double worst = 0;
    for (size_t i = 0; i < alone.size(); i++) worst = std::max(worst, std::fabs(packed.token_losses[i] - alone[i]));
    const double ge = rel_error(g_packed, g_alone);
    std::printf("  %s: per-token |packed - alone| <= %.3g, LoRA gradient rel error %.3g\n", variant, worst, ge);
    // The same fp32 computation on other row counts (BLAS blocks differently): ~1e-7 relative on losses near 6.
    std::vector<float> pl(packed.token_losses.begin(), packed.token_losses.end()), al(alone.begin(), alone.end());
    EXPECT_LE(rel_error(pl, al), 1e-5);
    EXPECT_LE(ge, 1e-5);
    // One stream: the later documents see the earlier ones, so their losses move.
    StepStats stream = eval_step(*model, &lora, Tensor::from_i32({1, T}, ids), Tensor::from_i32({1, T}, targets));
    double moved = 0;
    for (size_t i = static_cast<size_t>(lens[0]); i < alone.size(); i++)
      moved = std::max(moved, std::fabs(stream.token_losses[i] - alone[i]));
    EXPECT_GT(moved, 1e-2);
  }
}

}  // namespace
}  // namespace liger::test

namespace liger::test {
namespace {

// Per-layer recompute (activation checkpointing) changes what is kept, not what is computed: on every architecture and
// Liger variant, with B = 2 and with packed documents, the per-token losses and every LoRA gradient are bitwise those
// of the step without it.
TEST(TrainStep, RecomputeIsBitwiseIdentical) {
  TempDir tmp("recompute");
  Context ctx = Context::cpu();
  const std::vector<ModelCase> cases = training_cases({{"window", 3}, {"chunk", 4}});
  int i = 0;
  for (const ModelCase& c : cases) {
    auto model = LlamaModel::load(case_model_dir(tmp, c, "m" + std::to_string(i++)), ctx, DType::F32);
    const ModelConfig& cfg = model->config();
    LoraConfig lc;
    lc.targets = LoraConfig::parse_targets("q,k,v,o,gate,up,down");
    LoraAdapters lora = LoraAdapters::init(cfg, lc, Device::CPU);
    Rng rng(7);
    for (auto& [name, p] : lora.parameters())
      for (int64_t e = 0; e < p.numel(); e++) p.ptr<float>()[e] = 0.1f * rng.normal();
    const int64_t T = 11;
    std::vector<int32_t> ids, targets;
    for (int64_t t = 0; t < 2 * T; t++) ids.push_back(static_cast<int32_t>(rng.next_u64() % cfg.vocab_size));
    for (int64_t t = 0; t < 2 * T; t++) targets.push_back(t % 5 == 2 ? -100 : ids[static_cast<size_t>((t + 1) % (2 * T))]);
    const std::vector<int32_t> starts = {0, 4, 9, 15};
    for (bool packed : {false, true}) {
      const Tensor tid = packed ? Tensor::from_i32({1, 2 * T}, ids) : Tensor::from_i32({2, T}, ids);
      const Tensor ttg = packed ? Tensor::from_i32({1, 2 * T}, targets) : Tensor::from_i32({2, T}, targets);
      std::vector<double> losses[2];
      std::vector<float> grads[2];
      for (int rc = 0; rc < 2; rc++) {
        lora.zero_grad();
        StepStats st = train_step(*model, lora, tid, ttg, 0.5f, packed ? &starts : nullptr, {}, rc == 1);
        losses[rc] = st.token_losses;
        grads[rc] = lora.grad_buffer().to_f32_vector();
      }
      EXPECT_EQ(losses[1], losses[0]) << c.label << (packed ? ", packed" : ", B = 2");
      ASSERT_EQ(grads[1].size(), grads[0].size());
      EXPECT_EQ(std::memcmp(grads[1].data(), grads[0].data(), grads[0].size() * sizeof(float)), 0)
          << c.label << (packed ? ", packed" : ", B = 2") << ": gradients differ";
    }
  }
}

}  // namespace
}  // namespace liger::test
