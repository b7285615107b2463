// `liger bench decode`: batched autoregressive decoding of a Liger or softmax model on random weights: a prefill of B
// prompts of P tokens, then one token per sequence per step (greedy, sampled on the device) for the largest of the
// --new lengths; prints the decode throughput over each length and the device memory held after the prefill and at
// each length (a Liger model's must not grow: its recurrent state and window ring buffer are fixed in size; a
// softmax model's KV cache is allocated for the whole length up front).
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "model/llama.h"
#include "ops/sampling.h"

namespace liger::cli {

int bench_decode(const std::vector<std::string>& args) {
  std::string shape, device, dtype, variant, news;
  int64_t batch = 16, prompt = 128, window = 64;
  po::options_description desc("bench decode options");
  desc.add_options()("shape", po::value(&shape)->default_value("llama3-8b"),
                     "model shape: llama3-8b, llama3.2-1b, llama3.2-3b, mistral-7b, qwen2.5-7b, stories260k")(
      "variant", po::value(&variant)->default_value("gla"), "gla, hgrn2, gsa, or softmax (our own KV-cache decode)")(
      "window", po::value(&window)->default_value(64), "Liger sliding window (previous tokens)")(
      "batch", po::value(&batch)->default_value(16), "sequences decoded together B")(
      "prompt", po::value(&prompt)->default_value(128), "prompt tokens per sequence P")(
      "new", po::value(&news)->default_value("1024"),
      "new tokens per sequence: one length or a comma list (decodes to the largest, reporting each)")(
      "device", po::value(&device)->default_value("cuda"), "cpu or cuda")("dtype", po::value(&dtype)->default_value(""),
                                                                          "f32 (cpu default) or bf16 (cuda default)");
  po::variables_map vm;
  if (!parse_options("bench decode", args, desc, &vm, "[--shape NAME] [--batch B] [--prompt P] [--new N[,N...]]"))
    return 0;
  std::vector<int64_t> lengths;
  {
    std::stringstream ss(news);
    for (std::string item; std::getline(ss, item, ',');) {
      char* end = nullptr;
      const long long v = std::strtoll(item.c_str(), &end, 10);
      LIGER_CHECK(!item.empty() && end && *end == '\0' && v > 0,
                  "--new %s: expected positive token counts, e.g. "
                  "1024,4096",
                  news.c_str());
      lengths.push_back(v);
    }
  }
  std::sort(lengths.begin(), lengths.end());
  LIGER_CHECK(batch > 0 && prompt > 0, "--batch and --prompt must be positive");
  const Device dev = parse_device(device);
  const DType dt = dtype.empty() ? (dev == Device::CPU ? DType::F32 : DType::BF16) : parse_dtype(dtype);
  ModelConfig cfg = bench_model_config(shape, variant, window);
  const int64_t total = lengths.back(), capacity = prompt + total;
  Context ctx = dev == Device::CUDA ? Context::cuda(0) : Context::cpu();
  LOG_INFO("bench decode: %s, B=%lld, prompt %lld, %lld new tokens, %s %s", cfg.summary().c_str(),
           static_cast<long long>(batch), static_cast<long long>(prompt), static_cast<long long>(total),
           ctx.device_label(), dtype_name(dt));
  std::unique_ptr<LlamaModel> model = LlamaModel::random(cfg, ctx, dt, /*seed=*/1234);
  KVCache cache = model->make_cache(batch, capacity);
  // What the decode keeps per sequence: a KV cache of every position (softmax layers; allocated for prompt + the
  // largest --new up front), or the recurrent state and the window's ring buffer (Liger layers; fixed).
  size_t cache_bytes = 0;
  for (const Tensor& t : cache.k) cache_bytes += t.defined() ? t.nbytes() : 0;
  for (const Tensor& t : cache.v) cache_bytes += t.defined() ? t.nbytes() : 0;
  for (const LigerLayerState& st : cache.liger)
    for (const Tensor* t : {&st.ring_k, &st.ring_v, &st.state, &st.slot_state})
      cache_bytes += t->defined() ? t->nbytes() : 0;
  const int64_t V = cfg.vocab_size;
  Tensor logits = Tensor::empty({batch, 1, V}, DType::F32, dev);
  Tensor ids_dev = Tensor::empty({batch}, DType::I32, dev);
  Tensor uniforms = Tensor::zeros({batch}, DType::F32, dev);  // greedy: unused
  std::vector<int32_t> p(static_cast<size_t>(batch * prompt));
  for (size_t i = 0; i < p.size(); i++) p[i] = static_cast<int32_t>((i * 7919 + 13) % V);

  ctx.synchronize();
  Timer pre;
  model->forward(Tensor::from_i32({batch, prompt}, p), &cache, logits, /*last_only=*/true);
  ctx.synchronize();
  const double prefill_s = pre.seconds();
  const double after_prefill = static_cast<double>(mem_stats(dev).current);
  std::printf("bench decode shape=%s variant=%s B=%lld prompt=%lld device=%s dtype=%s\n", shape.c_str(),
              variant.c_str(), static_cast<long long>(batch), static_cast<long long>(prompt), ctx.device_label(),
              dtype_name(dt));
  std::printf("  decode cache for %lld positions: %.1f MiB (%s)\n", static_cast<long long>(capacity),
              cache_bytes / 1048576.0,
              cfg.is_liger && cfg.liger.softmax_layers.empty() ? "recurrent states and window ring buffers: fixed"
                                                               : "KV cache: grows with the positions");
  std::printf(
      "  prefill %lld x %lld tokens: %.2f ms = %.0f tokens/s; memory held after it %.1f MiB (weights %.1f "
      "MiB)\n",
      static_cast<long long>(batch), static_cast<long long>(prompt), prefill_s * 1e3,
      static_cast<double>(batch * prompt) / prefill_s, after_prefill / 1048576.0, model->weight_bytes() / 1048576.0);
  std::fflush(stdout);
  Timer clock;
  size_t next = 0;
  for (int64_t n = 1; n <= total; n++) {
    ops::sample(ctx, ids_dev, logits.view({batch, V}), 0.0f, 1.0f, uniforms);
    const std::vector<int64_t> ids = ids_dev.to_i64_vector();  // the host feeds the next step, as generate does
    std::vector<int32_t> step(ids.begin(), ids.end());
    model->forward(Tensor::from_i32({batch, 1}, step), &cache, logits, /*last_only=*/true);
    if (next < lengths.size() && n == lengths[next]) {
      ctx.synchronize();
      const double s = clock.seconds();
      const double held = static_cast<double>(mem_stats(dev).current);
      std::printf(
          "  %6lld new tokens: %.2f s = %.0f tokens/s (%.2f ms per step); memory held %.1f MiB (%+.1f MiB "
          "since the prefill)\n",
          static_cast<long long>(n), s, static_cast<double>(batch * n) / s, s * 1e3 / static_cast<double>(n),
          held / 1048576.0, (held - after_prefill) / 1048576.0);
      std::fflush(stdout);
      next++;
    }
  }
  return 0;
}

}  // namespace liger::cli
