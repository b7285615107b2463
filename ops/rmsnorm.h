// ops/rmsnorm.h — RMSNorm, computed in fp32 whatever the storage type.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void rmsnorm(Tensor out, const Tensor& x, const Tensor& w, float eps);
void rmsnorm_backward(Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w, float eps);
}  // namespace cpu
namespace cuda {
void rmsnorm(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, float eps);
void rmsnorm_backward(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w, float eps);
}  // namespace cuda

// out (N, D) = x (N, D) / sqrt(mean(x^2) + eps) * w (D). out may alias x. Also used per head for Qwen3's q/k norm
// with x viewed as (N*H, HS). CPU: f32 (or f64 for the gradient checks), every tensor of one dtype.
inline void rmsnorm(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, float eps) {
  check_device(ctx, "rmsnorm", {&out, &x, &w});
  LIGER_CHECK(x.ndim() == 2 && w.ndim() == 1 && w.dim(0) == x.dim(1), "rmsnorm: x %s and w %s do not fit",
              x.shape().str().c_str(), w.shape().str().c_str());
  check_shape("rmsnorm", "out", out, x.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::rmsnorm(ctx, out, x, w, eps);
#endif
  check_cpu_float("rmsnorm", {&out, &x, &w});
  cpu::rmsnorm(out, x, w, eps);
}

// Backward of rmsnorm with respect to x (the weight w is frozen: no weight gradient). Per row, with
// r = 1 / sqrt(mean(x^2) + eps):
//   dx (N, D) += r * w * dout - x * r^3 / D * sum_j(dout_j w_j x_j)
// `+=`: dx accumulates, because it is the residual stream's gradient (the caller zeroes it when it must start
// from 0). dout (N, D), x (N, D) the forward's input, w (D). dx must not alias dout or x. GPU: f32 or bf16, every
// tensor of one dtype (sums in fp32).
inline void rmsnorm_backward(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w,
                             float eps) {
  const char* op = "rmsnorm_backward";
  check_device(ctx, op, {&dx, &dout, &x, &w});
  LIGER_CHECK(x.ndim() == 2 && w.ndim() == 1 && w.dim(0) == x.dim(1), "%s: x %s and w %s do not fit", op,
              x.shape().str().c_str(), w.shape().str().c_str());
  check_shape(op, "dout", dout, x.shape());
  check_shape(op, "dx", dx, x.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::rmsnorm_backward(ctx, dx, dout, x, w, eps);
#endif
  check_cpu_float(op, {&dx, &dout, &x, &w});
  cpu::rmsnorm_backward(dx, dout, x, w, eps);
}

}  // namespace liger::ops
