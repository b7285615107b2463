// ops/matmul.h — the linear layer: a GEMM against a weight stored [out, in] (HF layout).
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void matmul(Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate);
}
namespace cuda {
void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate);
}

// out (M, N) = x (M, K) · w (N, K)^T [+ bias (N)]        (accumulate = false)
// out (M, N) += x (M, K) · w (N, K)^T [+ bias (N)]       (accumulate = true: the residual add of o_proj / down_proj)
// CPU: fp32 BLAS. CUDA: cuBLASLt, x and w of one dtype (bf16 or f32), fp32 accumulation (no tf32), out bf16 or f32.
inline void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias = nullptr,
                   bool accumulate = false) {
  check_device(ctx, "matmul", {&out, &x, &w});
  LIGER_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1), "matmul: x %s and w %s do not fit",
              x.shape().str().c_str(), w.shape().str().c_str());
  check_shape("matmul", "out", out, {x.dim(0), w.dim(0)});
  LIGER_CHECK(x.dtype() == w.dtype(), "matmul: x is %s but w is %s", dtype_name(x.dtype()), dtype_name(w.dtype()));
  if (bias) {
    check_device(ctx, "matmul", {bias});
    check_shape("matmul", "bias", *bias, {w.dim(0)});
  }
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::matmul(ctx, out, x, w, bias, accumulate);
#endif
  check_cpu_f32("matmul", {&out, &x, &w});
  if (bias) check_cpu_f32("matmul", {bias});
  cpu::matmul(out, x, w, bias, accumulate);
}

}  // namespace liger::ops
