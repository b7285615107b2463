// Whole-model LoRA gradients against central finite differences in fp64, for the softmax-attention architectures and
// for every Liger variant: the explicit backward of every layer (RMSNorm, SwiGLU, RoPE, attention or the Liger
// branches, feature maps, gates, mixing, LoRA, the fused LM head + cross-entropy) composed end to end.
#include <filesystem>

#include "core/rng.h"
#include "model/convert.h"
#include "model/train_step.h"
#include "tests/model/golden_cases.h"

namespace liger::test {
namespace {

struct GradCase {
  const char* label;
  const char* golden;  // tests/golden/<name>
  Json liger;          // null: keep softmax attention
};

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
  const Json small = {{"window", 3}, {"chunk", 4}};  // the window slides and chunks are partial over T = 9
  auto with = [&](Json extra) {
    Json j = small;
    for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    return j;
  };
  const std::vector<GradCase> cases = {
      {"llama3 softmax (GQA, llama3 rope, tied)", "llama3_gqa_tied", nullptr},
      {"mistral softmax (sliding window 7)", "mistral_swa_untied", nullptr},
      {"qwen2 softmax (q/k/v biases)", "qwen2_bias_tied", nullptr},
      {"qwen3 softmax (q/k norms)", "qwen3_qknorm_untied", nullptr},
      {"liger gla", "llama3_gqa_tied", with({{"variant", "gla"}})},
      {"liger hgrn2", "llama3_gqa_tied", with({{"variant", "hgrn2"}})},
      {"liger gsa (M=4)", "llama3_gqa_tied", with({{"variant", "gsa"}, {"gsa_slots", 4}})},
      {"liger gla, gate from q", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate_source", "q"}})},
      {"liger gla, gate from v", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate_source", "v"}})},
      {"liger gla no gate", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate", false}})},
      {"liger no-swa", "llama3_gqa_tied", with({{"variant", "gla"}, {"mix_swa", 0.0}, {"mix_recurrent", 1.0}})},
      {"liger hybrid (layer 0 softmax)", "llama3_gqa_tied", with({{"variant", "gla"}, {"softmax_layers", {0}}})},
      {"liger gla on qwen3 (q/k norms)", "qwen3_qknorm_untied", with({{"variant", "gla"}})},
  };
  uint64_t seed = 100;
  int i = 0;
  for (const GradCase& c : cases) {
    std::string dir = source_path(std::string("tests/golden/") + c.golden);
    if (!c.liger.is_null()) {
      ModelConfig base = load_model_config(dir + "/config.json");
      const std::string out = tmp.file("m" + std::to_string(i++));
      convert_to_liger(dir, out, parse_liger_config(c.liger, "test", base), ConvertOptions{});
      dir = out;
    }
    const double e = lora_fd_error(dir, seed++);
    std::printf("  %-42s LoRA gradient rel error %.3g\n", c.label, e);
    EXPECT_LE(e, 1e-6) << c.label;
  }
}

}  // namespace
}  // namespace liger::test
