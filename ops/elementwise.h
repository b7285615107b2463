// ops/elementwise.h — small element-wise ops: add, dtype conversion, counter-based random fills.
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void add(Tensor out, const Tensor& a, const Tensor& b);
void convert(Tensor out, const Tensor& in);
void fill_normal(Tensor t, uint64_t seed, float mean, float std);
}  // namespace cpu
namespace cuda {
void add(Context& ctx, Tensor out, const Tensor& a, const Tensor& b);
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
