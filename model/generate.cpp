#include "model/generate.h"

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "ops/sampling.h"

namespace liger {

std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, const SamplingConfig& sc,
                              const std::function<void(int32_t, int32_t)>& on_token) {
  const ModelConfig& cfg = model.config();
  LIGER_CHECK(!prompt.empty(), "generate: the prompt is empty (no BOS and no text)");
  LIGER_CHECK(sc.max_new_tokens >= 0, "generate: --max-new-tokens must be >= 0");
  LIGER_CHECK(sc.top_p > 0.0f && sc.top_p <= 1.0f, "generate: --top-p must be in (0, 1], got %g", sc.top_p);
  const int64_t P = static_cast<int64_t>(prompt.size());
  const int64_t capacity = P + sc.max_new_tokens;
  // Softmax layers cannot go past the trained context; a pure Liger model decodes in constant memory at any length.
  const bool pure_liger = cfg.is_liger && cfg.liger.softmax_layers.empty();
  if (pure_liger && cfg.max_position > 0 && capacity > cfg.max_position) {
    LOG_WARN("generate: prompt (%lld tokens) + %lld new tokens go past the base model's max_position_embeddings %lld: "
             "a Liger model decodes on (its state does not grow; the window uses RoPE at absolute positions), but the "
             "base model never saw positions that far",
             static_cast<long long>(P), static_cast<long long>(sc.max_new_tokens),
             static_cast<long long>(cfg.max_position));
  }
  if (!pure_liger && cfg.max_position > 0 && capacity > cfg.max_position) {
    LIGER_FAIL("generate: prompt (%lld tokens) + --max-new-tokens %lld exceed the model's max_position_embeddings %lld",
               static_cast<long long>(P), static_cast<long long>(sc.max_new_tokens),
               static_cast<long long>(cfg.max_position));
  }
  Context& ctx = model.context();
  const Device dev = ctx.device();
  KVCache cache = model.make_cache(1, capacity);
  Tensor logits = Tensor::empty({1, 1, cfg.vocab_size}, DType::F32, dev);
  Tensor ids_dev = Tensor::empty({1}, DType::I32, dev);
  Tensor uniform = Tensor::empty({1}, DType::F32, Device::CPU);
  Tensor uniform_dev = dev == Device::CPU ? uniform : Tensor::empty({1}, DType::F32, dev);
  Rng rng(sc.seed);

  std::vector<int32_t> out;
  Tensor step = Tensor::from_i32({1, P}, prompt);
  int32_t prev = prompt.back();
  for (int64_t i = 0; i < sc.max_new_tokens; i++) {
    model.forward(step, &cache, logits, /*last_only=*/true);
    uniform.ptr<float>()[0] = rng.uniform();
    if (dev != Device::CPU) copy(uniform_dev, uniform);
    ops::sample(ctx, ids_dev, logits.view({1, cfg.vocab_size}), sc.temperature, sc.top_p, uniform_dev);
    const int32_t id = static_cast<int32_t>(ids_dev.to_i64_vector()[0]);
    out.push_back(id);
    if (on_token) on_token(prev, id);
    prev = id;
    if (sc.stop_at_eos && id == cfg.eos_id) break;
    step = Tensor::from_i32({1, 1}, {id});
  }
  return out;
}

}  // namespace liger
