// tests/model/golden_cases.h — the real-model and HF-transformers golden checks, shared by the CPU suite
// (test_golden.cpp) and the GPU suite (test_golden_gpu.cpp), which run them with different devices and tolerances.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/safetensors.h"
#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/llama.h"
#include "tests/common/test_util.h"

namespace liger::test {

inline std::string stories_dir() { return source_path("assets/stories260K/hf"); }
inline Json stories_reference() { return read_json_file(source_path("assets/stories260K/reference_outputs.json")); }

inline std::vector<int32_t> to_i32(const Json& a) {
  std::vector<int32_t> v;
  for (const Json& x : a) v.push_back(x.get<int32_t>());
  return v;
}

// Logits (positions 0..3) of the BOS rollout [BOS, g0, g1, g2] against reference_outputs.json.
inline double stories_rollout_max_abs(Context& ctx, DType dt) {
  Json ref = stories_reference()["bos_only_256"];
  std::vector<int32_t> gen = to_i32(ref["greedy_generated_ids"]);
  const Json& want = ref["logits_first_positions"];
  const int64_t T = static_cast<int64_t>(want.size());
  std::vector<int32_t> ids = {1};
  for (int64_t i = 0; i + 1 < T; i++) ids.push_back(gen[static_cast<size_t>(i)]);
  auto model = LlamaModel::load(stories_dir(), ctx, dt);
  const int64_t V = model->config().vocab_size;
  Tensor logits = Tensor::empty({1, T, V}, DType::F32, ctx.device());
  model->forward(Tensor::from_i32({1, T}, ids), nullptr, logits, false);
  std::vector<float> got = logits.to_f32_vector(), exp;
  for (const Json& row : want)
    for (const Json& x : row) exp.push_back(x.get<float>());
  return max_abs_error(got, exp);
}

// Greedy generation of `case_name` ("bos_only_256" or "prompt_dog_60"): returns {generated, reference} ids.
inline std::pair<std::vector<int32_t>, std::vector<int32_t>> stories_greedy(Context& ctx, DType dt,
                                                                            const std::string& case_name,
                                                                            int64_t max_tokens = -1) {
  Json ref = stories_reference()[case_name];
  std::vector<int32_t> want = to_i32(ref["greedy_generated_ids"]);
  std::vector<int32_t> prompt = to_i32(ref["prompt_ids_with_bos"]);
  auto model = LlamaModel::load(stories_dir(), ctx, dt);
  SamplingConfig sc;
  sc.max_new_tokens = max_tokens < 0 ? static_cast<int64_t>(want.size()) : max_tokens;
  sc.temperature = 0.0f;
  sc.stop_at_eos = false;  // the reference runs a fixed number of steps
  std::vector<int32_t> got = generate(*model, prompt, sc);
  if (max_tokens >= 0 && static_cast<int64_t>(want.size()) > max_tokens) want.resize(static_cast<size_t>(max_tokens));
  return {got, want};
}

// The HF golden directories under tests/golden/ (made by tools/golden/make_hf_golden.py with transformers).
inline std::vector<std::string> hf_golden_dirs() {
  std::vector<std::string> dirs;
  for (const auto& e : std::filesystem::directory_iterator(source_path("tests/golden")))
    if (e.is_directory() && std::filesystem::exists(e.path() / "golden.safetensors")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

struct HfGolden {
  Tensor ids;     // (B, T) i32, host
  Tensor logits;  // (B, T, V) f32, host
};

inline HfGolden read_hf_golden(const std::string& dir) {
  auto f = SafetensorsFile::open(dir + "/golden.safetensors");
  HfGolden g;
  Tensor ids64 = f->tensor("input_ids");
  g.ids = Tensor::empty(ids64.shape(), DType::I32, Device::CPU);
  copy(g.ids, ids64);
  g.logits = f->tensor("logits");
  return g;
}

// Relative error of the full forward's logits against transformers'.
inline double hf_forward_rel_error(const std::string& dir, Context& ctx, DType dt) {
  HfGolden g = read_hf_golden(dir);
  auto model = LlamaModel::load(dir, ctx, dt);
  Tensor logits = Tensor::empty(g.logits.shape(), DType::F32, ctx.device());
  model->forward(g.ids, nullptr, logits, false);
  size_t worst = 0;
  double e = rel_error(logits.to_f32_vector(), g.logits.to_f32_vector(), &worst);
  std::printf("  %s: forward rel error %.3g (worst element %zu)\n", std::filesystem::path(dir).filename().c_str(), e,
              worst);
  return e;
}

// The same logits through the KV cache: prefill the first P tokens of each sequence, then decode one token per
// step; every step's logits are compared with transformers' logits at that position.
inline double hf_cached_rel_error(const std::string& dir, Context& ctx, DType dt, int64_t P) {
  HfGolden g = read_hf_golden(dir);
  auto model = LlamaModel::load(dir, ctx, dt);
  const int64_t B = g.ids.dim(0), T = g.ids.dim(1), V = g.logits.dim(2);
  KVCache cache = model->make_cache(B, T);
  std::vector<float> got(static_cast<size_t>(B * T * V));
  auto run = [&](int64_t t0, int64_t n) {
    std::vector<int32_t> step;
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = t0; t < t0 + n; t++) step.push_back(g.ids.ptr<int32_t>()[b * T + t]);
    Tensor logits = Tensor::empty({B, n, V}, DType::F32, ctx.device());
    model->forward(Tensor::from_i32({B, n}, step), &cache, logits, false);
    std::vector<float> l = logits.to_f32_vector();
    for (int64_t b = 0; b < B; b++)
      std::copy(l.begin() + b * n * V, l.begin() + (b + 1) * n * V, got.begin() + (b * T + t0) * V);
  };
  run(0, P);
  for (int64_t t = P; t < T; t++) run(t, 1);
  EXPECT_EQ(cache.length, T);
  double e = rel_error(got, g.logits.to_f32_vector());
  std::printf("  %s: cached decode rel error %.3g\n", std::filesystem::path(dir).filename().c_str(), e);
  return e;
}

}  // namespace liger::test
