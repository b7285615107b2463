// ops/sampling.h — choosing the next token from logits: greedy, temperature, top-p (nucleus).
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void sample(Tensor ids, const Tensor& logits, float temperature, float top_p, const Tensor& uniforms);
}
namespace cuda {
void sample(Context& ctx, Tensor ids, const Tensor& logits, float temperature, float top_p, const Tensor& uniforms);
}

// ids (N) i32 = one token per row of logits (N, V) f32. The same rule on both paths, so given the same uniforms the
// CPU and the GPU choose the same token (up to fp32 summation order at a boundary):
//   temperature <= 0: argmax, the lowest index among ties (uniforms unused);
//   otherwise p = softmax(logits / temperature); tau = the largest p_j such that the mass of {i : p_i >= tau} is
//   >= top_p (top_p >= 1 keeps every token); the nucleus is {i : p_i >= tau} with mass M; the token is the first i of
//   the nucleus, in index order, whose running sum of p exceeds u * M, with u = uniforms[row] in [0, 1).
inline void sample(Context& ctx, Tensor ids, const Tensor& logits, float temperature, float top_p,
                   const Tensor& uniforms) {
  check_device(ctx, "sample", {&ids, &logits, &uniforms});
  LIGER_CHECK(logits.ndim() == 2 && logits.dtype() == DType::F32, "sample: logits must be f32 (N, V), got %s",
              logits.str().c_str());
  LIGER_CHECK(ids.dtype() == DType::I32, "sample: ids must be i32");
  check_shape("sample", "ids", ids, {logits.dim(0)});
  LIGER_CHECK(uniforms.dtype() == DType::F32, "sample: uniforms must be f32");
  check_shape("sample", "uniforms", uniforms, {logits.dim(0)});
  LIGER_CHECK(top_p > 0.0f, "sample: top_p must be > 0, got %g", top_p);
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::sample(ctx, ids, logits, temperature, top_p, uniforms);
#endif
  cpu::sample(ids, logits, temperature, top_p, uniforms);
}

}  // namespace liger::ops
