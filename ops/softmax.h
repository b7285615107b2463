// ops/softmax.h — row-wise softmax and log-softmax over the last dimension, in fp32, and the softmax's backward.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void softmax(Tensor out, const Tensor& x, bool log);
void softmax_backward(Tensor dx, const Tensor& dy, const Tensor& y);
}  // namespace cpu
namespace cuda {
void softmax(Context& ctx, Tensor out, const Tensor& x, bool log);
void softmax_backward(Context& ctx, Tensor dx, const Tensor& dy, const Tensor& y);
}  // namespace cuda

// out (N, V) = softmax(x (N, V)) (log = false) or log_softmax(x) (log = true); max subtracted first, fp32 arithmetic.
// GPU: x and out each f32 or bf16 (out rounded once). On the CPU, x and out are both f32, or both f64 (for the
// gradient checks).
inline void softmax(Context& ctx, Tensor out, const Tensor& x, bool log = false) {
  check_device(ctx, "softmax", {&out, &x});
  LIGER_CHECK(x.ndim() == 2, "softmax: x must be (N, V), got %s", x.shape().str().c_str());
  check_shape("softmax", "out", out, x.shape());
  LIGER_CHECK(out.dtype() == DType::F32 || (out.dtype() == DType::BF16 && ctx.is_cuda()) ||
                  (out.dtype() == DType::F64 && !ctx.is_cuda()),
              "softmax: out must be f32 (bf16 also on the GPU, f64 with an f64 x on the CPU), got %s",
              dtype_name(out.dtype()));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::softmax(ctx, out, x, log);
#endif
  check_cpu_float("softmax", {&out, &x});
  cpu::softmax(out, x, log);
}
inline void log_softmax(Context& ctx, Tensor out, const Tensor& x) { softmax(ctx, out, x, true); }

// Backward of softmax (not log_softmax) over rows of (N, V), from its output y:
//   dx (N, V) = y * (dy - sum_j(dy_j y_j))          `=`; dx may alias dy (each row's sum is taken first).
// Used for the Liger feature maps (softmax over the head dimension). GPU: f32 or bf16, every tensor of one dtype.
inline void softmax_backward(Context& ctx, Tensor dx, const Tensor& dy, const Tensor& y) {
  const char* op = "softmax_backward";
  check_device(ctx, op, {&dx, &dy, &y});
  LIGER_CHECK(y.ndim() == 2, "%s: y must be (N, V), got %s", op, y.shape().str().c_str());
  check_shape(op, "dy", dy, y.shape());
  check_shape(op, "dx", dx, y.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::softmax_backward(ctx, dx, dy, y);
#endif
  check_cpu_float(op, {&dx, &dy, &y});
  cpu::softmax_backward(dx, dy, y);
}

}  // namespace liger::ops
