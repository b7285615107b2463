// ops/elementwise.h — small element-wise ops: add, dtype conversion, counter-based random fills.
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void add(Tensor out, const Tensor& a, const Tensor& b);
void scale(Tensor out, const Tensor& x, double alpha);
void add_scaled(Tensor out, const Tensor& x, double alpha);
void convert(Tensor out, const Tensor& in);
void fill_normal(Tensor t, uint64_t seed, float mean, float std);
}  // namespace cpu
namespace cuda {
void add(Context& ctx, Tensor out, const Tensor& a, const Tensor& b);
void scale(Context& ctx, Tensor out, const Tensor& x, float alpha);
void add_scaled(Context& ctx, Tensor out, const Tensor& x, float alpha);
void convert(Context& ctx, Tensor out, const Tensor& in);
void fill_normal(Context& ctx, Tensor t, uint64_t seed, float mean, float std);
}  // namespace cuda

// out = a + b (same shape, same dtype; fp32 arithmetic; on the CPU f32, or f64 for the gradient checks). out may
// alias a or b.
inline void add(Context& ctx, Tensor out, const Tensor& a, const Tensor& b) {
  check_device(ctx, "add", {&out, &a, &b});
  check_shape("add", "b", b, a.shape());
  check_shape("add", "out", out, a.shape());
  LIGER_CHECK(out.dtype() == a.dtype() && b.dtype() == a.dtype(), "add: dtypes differ");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::add(ctx, out, a, b);
#endif
  check_cpu_float("add", {&out, &a, &b});
  cpu::add(out, a, b);
}

// out = alpha * x (same shape and dtype; out may alias x). On the CPU alpha is applied in the tensors' precision
// (f32, or f64 for the gradient checks); on the GPU in fp32 (f32 or bf16 storage).
inline void scale(Context& ctx, Tensor out, const Tensor& x, double alpha) {
  check_device(ctx, "scale", {&out, &x});
  check_shape("scale", "out", out, x.shape());
  LIGER_CHECK(out.dtype() == x.dtype(), "scale: dtypes differ");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::scale(ctx, out, x, static_cast<float>(alpha));
#endif
  check_cpu_float("scale", {&out, &x});
  cpu::scale(out, x, alpha);
}

// out += alpha * x (same shape and dtype; out must not alias x), with the product rounded before the add.
inline void add_scaled(Context& ctx, Tensor out, const Tensor& x, double alpha) {
  check_device(ctx, "add_scaled", {&out, &x});
  check_shape("add_scaled", "x", x, out.shape());
  LIGER_CHECK(out.dtype() == x.dtype(), "add_scaled: dtypes differ");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::add_scaled(ctx, out, x, static_cast<float>(alpha));
#endif
  check_cpu_float("add_scaled", {&out, &x});
  cpu::add_scaled(out, x, alpha);
}

// out = in converted between floating dtypes (f32, bf16, f16; round to nearest even), same numel, same device.
inline void convert(Context& ctx, Tensor out, const Tensor& in) {
  check_device(ctx, "convert", {&out, &in});
  LIGER_CHECK(out.numel() == in.numel(), "convert: %s into %s", in.str().c_str(), out.str().c_str());
  LIGER_CHECK(is_float_dtype(out.dtype()) && is_float_dtype(in.dtype()), "convert: floating dtypes only");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::convert(ctx, out, in);
#endif
  cpu::convert(out, in);
}

// t itself when it already has dtype dt, else a converted copy on the same device.
inline Tensor converted(Context& ctx, const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  Tensor c = Tensor::empty(t.shape(), dt, t.device());
  convert(ctx, c, t);
  return c;
}

// t[i] = mean + std * hash_normal(seed, i) (core/rng.h): the same values on the CPU and the GPU, in any dtype.
inline void fill_normal(Context& ctx, Tensor t, uint64_t seed, float mean, float std) {
  check_device(ctx, "fill_normal", {&t});
  LIGER_CHECK(is_float_dtype(t.dtype()), "fill_normal: floating dtypes only");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::fill_normal(ctx, t, seed, mean, std);
#endif
  cpu::fill_normal(t, seed, mean, std);
}

}  // namespace liger::ops
