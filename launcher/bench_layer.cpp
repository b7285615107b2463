// `liger bench layer`: one Liger attention layer (model/liger_attention.h) forward and backward on random bf16 q, k, v
// of a model shape, and the recurrence alone (ops::linear_recurrence and its backward, ops/recurrence.h) on inputs of
// the same sizes, in bf16 and in f32 storage. Each part is timed with CUDA events around it on the context's stream;
// the median of the timed iterations after the warm-up is printed in ms.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "model/config.h"
#include "model/liger_attention.h"
#include "ops/recurrence.h"
#include "ops/rope.h"

#ifdef LIGER_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace liger::cli {

#ifdef LIGER_CUDA
namespace {

// A device tensor of `shape` in dtype dt holding f(normal value, index) of a counter-based stream (never zeros).
Tensor random_tensor(Shape shape, DType dt, uint64_t seed, const std::function<float(float)>& f) {
  Tensor h = Tensor::empty(shape, DType::F32, Device::CPU);
  for (int64_t i = 0; i < h.numel(); i++) h.ptr<float>()[i] = f(hash_normal(seed, static_cast<uint64_t>(i)));
  return h.to(Device::CUDA, dt);
}

// Median ms of `iters` runs of fn after `warmup` untimed ones, timed with events on ctx's stream.
double median_ms(Context& ctx, int warmup, int iters, const std::function<void()>& fn) {
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream());
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; i++) fn();
  std::vector<double> ms;
  for (int i = 0; i < iters; i++) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The recurrence alone in storage dtype dt: fq (B, T, H, K), fk and g (B, T, HKV, K), v (B, T, HKV, Vd), the GLA
// feature maps' magnitudes (positive, summing to ~1 over K) and GLA gates logsigmoid(x) / 16. Returns {forward,
// backward} ms.
std::pair<double, double> time_recurrence(Context& ctx, DType dt, int64_t B, int64_t T, int64_t H, int64_t HKV,
                                          int64_t K, int64_t Vd, int64_t chunk, int warmup, int iters) {
  const float inv_k = 1.0f / static_cast<float>(K);
  auto feature = [inv_k](float x) { return inv_k * std::exp(0.5f * x - 0.125f); };
  auto gate = [](float x) { return (std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x)))) / 16.0f; };
  auto ident = [](float x) { return x; };
  const Tensor fq = random_tensor({B, T, H, K}, dt, 11, feature), fk = random_tensor({B, T, HKV, K}, dt, 12, feature);
  const Tensor v = random_tensor({B, T, HKV, Vd}, dt, 13, ident), g = random_tensor({B, T, HKV, K}, dt, 14, gate);
  const Tensor dout = random_tensor({B, T, H, Vd}, dt, 15, ident);
  const Tensor state0 = random_tensor({B, HKV, K, Vd}, DType::F32, 16, ident);
  // The forward leaves the final state in `state` and the next run starts from it (the gates keep it bounded).
  Tensor state = random_tensor({B, HKV, K, Vd}, DType::F32, 16, ident);
  Tensor out = Tensor::empty({B, T, H, Vd}, dt, Device::CUDA);
  Tensor dfq = Tensor::empty(fq.shape(), dt, Device::CUDA), dfk = Tensor::empty(fk.shape(), dt, Device::CUDA);
  Tensor dv = Tensor::empty(v.shape(), dt, Device::CUDA), dg = Tensor::empty(g.shape(), dt, Device::CUDA);
  const double fwd =
      median_ms(ctx, warmup, iters, [&] { ops::linear_recurrence(ctx, out, fq, fk, v, g, state, chunk); });
  const double bwd = median_ms(
      ctx, warmup, iters, [&] { ops::linear_recurrence_backward(ctx, dfq, dfk, dv, dg, dout, fq, fk, v, g, state0); });
  return {fwd, bwd};
}

}  // namespace
#endif

int bench_layer(const std::vector<std::string>& args) {
  std::string shape, device, variant;
  int64_t seq = 0, batch = 1;
  int warmup = 0, iters = 0;
  po::options_description desc("bench layer options");
  desc.add_options()("shape", po::value(&shape)->default_value("llama3-8b"),
                     "model shape: llama3-8b, llama3.2-1b, llama3.2-3b, mistral-7b, qwen2.5-7b, stories260k")(
      "variant", po::value(&variant)->default_value("gla"), "Liger variant: gla, hgrn2 or gsa")(
      "seq", po::value(&seq)->default_value(1024), "sequence length T")(
      "batch", po::value(&batch)->default_value(1), "sequences B")("device", po::value(&device)->default_value("cuda"),
                                                                   "cuda (the parts are timed with CUDA events)")(
      "warmup", po::value(&warmup)->default_value(3), "untimed runs of each part first")(
      "iters", po::value(&iters)->default_value(20), "timed runs of each part (the median is reported)");
  po::variables_map vm;
  if (!parse_options("bench layer", args, desc, &vm, "[--variant gla|hgrn2|gsa] [--seq N] [--shape NAME] [options]"))
    return 0;
  LIGER_CHECK(seq > 0 && batch > 0 && iters > 0 && warmup >= 0, "--seq, --batch and --iters must be positive");
  LIGER_CHECK(parse_device(device) == Device::CUDA,
              "bench layer: --device %s is not supported; it times CUDA kernels (--device cuda)", device.c_str());
#ifdef LIGER_CUDA
  ModelConfig cfg = model_config_for_shape(shape);
  cfg.liger = parse_liger_config({{"variant", variant}}, "--variant", cfg);
  cfg.is_liger = true;
  Context ctx = Context::cuda(0);
  const int64_t B = batch, T = seq, N = B * T, H = cfg.local_heads(), HKV = cfg.local_kv_heads(), HS = cfg.head_dim;
  LOG_INFO("bench layer: %s, variant %s, B=%lld T=%lld, %s bf16", cfg.summary().c_str(), cfg.liger.variant_name(),
           static_cast<long long>(B), static_cast<long long>(T), ctx.device_label());

  // The layer: random bf16 projections (before RoPE), positions 0..T-1 per sequence.
  auto ident = [](float x) { return x; };
  const Tensor q = random_tensor({N, H * HS}, DType::BF16, 1, ident);
  const Tensor k = random_tensor({N, HKV * HS}, DType::BF16, 2, ident);
  const Tensor v = random_tensor({N, HKV * HS}, DType::BF16, 3, ident);
  const Tensor datt = random_tensor({N, H * HS}, DType::BF16, 4, ident);
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; i++) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i % T);
  const Tensor positions = Tensor::from_i32({N}, pos).to(Device::CUDA);
  const std::vector<float> inv = ops::rope_inv_freq(cfg.rope);
  const Tensor inv_freq = Tensor::from_f32({static_cast<int64_t>(inv.size())}, inv).to(Device::CUDA);
  Tensor att = Tensor::empty({N, H * HS}, DType::BF16, Device::CUDA);
  Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::CUDA),
         dk = Tensor::empty(k.shape(), DType::BF16, Device::CUDA);
  Tensor dv = Tensor::empty(v.shape(), DType::BF16, Device::CUDA);
  const double layer_fwd = median_ms(
      ctx, warmup, iters, [&] { liger_attention(ctx, cfg, att, q, k, v, positions, inv_freq, B, T, 0, nullptr); });
  const double layer_bwd = median_ms(ctx, warmup, iters, [&] {
    liger_attention_backward(ctx, cfg, datt, q, k, v, positions, inv_freq, B, T, dq, dk, dv);
  });

  // The recurrence alone, on the layer's sizes (GSA's second pass: slots x head size).
  const int64_t K = cfg.liger.variant == LigerConfig::Variant::Gsa ? cfg.liger.gsa_slots : HS;
  const auto bf16 = time_recurrence(ctx, DType::BF16, B, T, H, HKV, K, HS, cfg.liger.chunk, warmup, iters);
  const auto f32 = time_recurrence(ctx, DType::F32, B, T, H, HKV, K, HS, cfg.liger.chunk, warmup, iters);

  std::printf("bench layer shape=%s variant=%s B=%lld T=%lld H=%lld HKV=%lld HS=%lld device=%s (median of %d, ms)\n",
              shape.c_str(), cfg.liger.variant_name(), static_cast<long long>(B), static_cast<long long>(T),
              static_cast<long long>(H), static_cast<long long>(HKV), static_cast<long long>(HS), ctx.device_label(),
              iters);
  std::printf("  layer (liger_attention, bf16 in/out)   forward %8.3f  backward %8.3f  total %8.3f\n", layer_fwd,
              layer_bwd, layer_fwd + layer_bwd);
  std::printf("  linear_recurrence %lldx%lld bf16         forward %8.3f  backward %8.3f  total %8.3f\n",
              static_cast<long long>(K), static_cast<long long>(HS), bf16.first, bf16.second, bf16.first + bf16.second);
  std::printf("  linear_recurrence %lldx%lld f32          forward %8.3f  backward %8.3f  total %8.3f\n",
              static_cast<long long>(K), static_cast<long long>(HS), f32.first, f32.second, f32.first + f32.second);
  return 0;
#else
  LIGER_FAIL("bench layer: this liger was built without CUDA");
#endif
}

}  // namespace liger::cli
