// ops/attention.h — causal softmax attention with grouped KV heads, over a KV cache.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void attention(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, int64_t kv_len,
               float scale, int64_t window);
void kv_write(Tensor cache, const Tensor& src, int64_t pos0);
void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, float scale, int64_t window);
}  // namespace cpu
namespace cuda {
void attention(Context& ctx, Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0,
               int64_t kv_len, float scale, int64_t window);
void kv_write(Context& ctx, Tensor cache, const Tensor& src, int64_t pos0);
void attention_backward(Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, float scale, int64_t window);
}  // namespace cuda

// out (B, T, H, HS) = softmax(scale * q k^T + mask) v, where
//   q (B, T, H, HS): the queries of absolute positions pos0 .. pos0+T-1,
//   k, v (B, S, HKV, HS): keys/values of positions 0 .. kv_len-1 (S >= kv_len >= pos0 + T; the rest is unused),
//   query head h reads KV head h / (H / HKV),
//   mask: query at position p sees key s iff s <= p and (window == 0 or s > p - window).
// Prefill without a cache is pos0 = 0, kv_len = T, k/v = this call's keys; decode is T = 1 against the cache.
// Softmax in fp32 on both paths (CPU: f32, or f64 throughout for the gradient checks).
inline void attention(Context& ctx, Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0,
                      int64_t kv_len, float scale, int64_t window = 0) {
  check_device(ctx, "attention", {&out, &q, &k, &v});
  LIGER_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.shape() == k.shape(), "attention: q %s, k %s, v %s do not fit",
              q.shape().str().c_str(), k.shape().str().c_str(), v.shape().str().c_str());
  int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), S = k.dim(1), HKV = k.dim(2);
  LIGER_CHECK(k.dim(0) == B && k.dim(3) == HS && HKV > 0 && H % HKV == 0,
              "attention: q %s and k %s disagree (batch, head size or head grouping)", q.shape().str().c_str(),
              k.shape().str().c_str());
  LIGER_CHECK(pos0 >= 0 && kv_len >= pos0 + T && kv_len <= S, "attention: pos0 %lld + T %lld, kv_len %lld, cache %lld",
              static_cast<long long>(pos0), static_cast<long long>(T), static_cast<long long>(kv_len),
              static_cast<long long>(S));
  LIGER_CHECK(window >= 0, "attention: negative window");
  check_shape("attention", "out", out, q.shape());
  LIGER_CHECK(q.dtype() == k.dtype() && k.dtype() == v.dtype() && out.dtype() == q.dtype(),
              "attention: q, k, v and out must share a dtype");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::attention(ctx, out, q, k, v, pos0, kv_len, scale, window);
#endif
  check_cpu_float("attention", {&out, &q, &k, &v});
  cpu::attention(out, q, k, v, pos0, kv_len, scale, window);
}

// Backward of attention in the training form (pos0 = 0, kv_len = T, k/v this call's keys and values), with
// P = softmax(scale * q k^T + mask) recomputed row by row (fp32 accumulation like the forward on the f32 path, fp64 in
// the f64 instantiation), dP = dout v^T, dS = P o (dP - rowsum(dP o P)):
//   dq (B, T, H, HS) = scale * dS k
//   dk (B, T, HKV, HS) = scale * sum over the query heads of each KV group of dS^T q
//   dv (B, T, HKV, HS) = sum over the query heads of each KV group of P^T dout
// All three `=`. dout (B, T, H, HS), q (B, T, H, HS), k and v (B, T, HKV, HS); scale and window as for attention.
// The outputs must not alias the inputs. GPU: f32, bf16 or f16, every tensor of one dtype, HS <= 256; deterministic
// (no atomics). bf16/f16 with HS 64 or 128 run on the tensor cores (ops/cuda/attention_bwd_mma.cu), the rest on fp32
// FMA kernels (ops/cuda/backward.cu).
inline void attention_backward(Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                               const Tensor& k, const Tensor& v, float scale, int64_t window = 0) {
  const char* op = "attention_backward";
  check_device(ctx, op, {&dq, &dk, &dv, &dout, &q, &k, &v});
  LIGER_CHECK(q.ndim() == 4 && k.ndim() == 4, "%s: q %s and k %s must be (B, T, heads, HS)", op,
              q.shape().str().c_str(), k.shape().str().c_str());
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), HKV = k.dim(2);
  LIGER_CHECK(HKV > 0 && H % HKV == 0, "%s: %lld query heads do not group over %lld KV heads", op,
              static_cast<long long>(H), static_cast<long long>(HKV));
  check_shape(op, "k", k, {B, T, HKV, HS});
  check_shape(op, "v", v, k.shape());
  check_shape(op, "dout", dout, q.shape());
  check_shape(op, "dq", dq, q.shape());
  check_shape(op, "dk", dk, k.shape());
  check_shape(op, "dv", dv, k.shape());
  LIGER_CHECK(window >= 0, "%s: negative window", op);
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::attention_backward(ctx, dq, dk, dv, dout, q, k, v, scale, window);
#endif
  check_cpu_float(op, {&dq, &dk, &dv, &dout, &q, &k, &v});
  cpu::attention_backward(dq, dk, dv, dout, q, k, v, scale, window);
}

// cache (B, S, HKV, HS)[:, pos0 : pos0 + T] = src (B, T, HKV, HS).
inline void kv_write(Context& ctx, Tensor cache, const Tensor& src, int64_t pos0) {
  check_device(ctx, "kv_write", {&cache, &src});
  LIGER_CHECK(cache.ndim() == 4 && src.ndim() == 4 && cache.dim(0) == src.dim(0) && cache.dim(2) == src.dim(2) &&
                  cache.dim(3) == src.dim(3) && cache.dtype() == src.dtype(),
              "kv_write: cache %s and src %s do not fit", cache.str().c_str(), src.str().c_str());
  LIGER_CHECK(pos0 >= 0 && pos0 + src.dim(1) <= cache.dim(1), "kv_write: positions %lld..%lld beyond cache length %lld",
              static_cast<long long>(pos0), static_cast<long long>(pos0 + src.dim(1)),
              static_cast<long long>(cache.dim(1)));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::kv_write(ctx, cache, src, pos0);
#endif
  cpu::kv_write(cache, src, pos0);
}

}  // namespace liger::ops
