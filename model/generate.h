// model/generate.h — autoregressive generation through the KV cache: prefill the prompt, then one token per step.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama.h"

namespace liger {

struct SamplingConfig {
  int64_t max_new_tokens = 256;  // tokens generated after the prompt
  float temperature = 0.0f;      // <= 0: greedy (argmax)
  float top_p = 1.0f;            // nucleus mass kept, in (0, 1]
  uint64_t seed = 0;             // seeds the uniforms of the sampler
  bool stop_at_eos = true;       // stop after the model's EOS token (which is returned)
};

// Generates from one prompt (ids with BOS already added if wanted). `on_token(prev, id)` is called for every new token
// (for streaming output). Returns the new tokens only.
std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, const SamplingConfig& sc,
                              const std::function<void(int32_t prev, int32_t id)>& on_token = {});

}  // namespace liger
