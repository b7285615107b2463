// ops/softmax.h — row-wise softmax and log-softmax over the last dimension, in fp32.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void softmax(Tensor out, const Tensor& x, bool log);
}
namespace cuda {
void softmax(Context& ctx, Tensor out, const Tensor& x, bool log);
}

// out (N, V) f32 = softmax(x (N, V)) (log = false) or log_softmax(x) (log = true); max subtracted first.
// x may be f32 or bf16 on the GPU.
inline void softmax(Context& ctx, Tensor out, const Tensor& x, bool log = false) {
  check_device(ctx, "softmax", {&out, &x});
  LIGER_CHECK(x.ndim() == 2, "softmax: x must be (N, V), got %s", x.shape().str().c_str());
  check_shape("softmax", "out", out, x.shape());
  LIGER_CHECK(out.dtype() == DType::F32, "softmax: out must be f32");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::softmax(ctx, out, x, log);
#endif
  check_cpu_f32("softmax", {&x});
  cpu::softmax(out, x, log);
}
inline void log_softmax(Context& ctx, Tensor out, const Tensor& x) { softmax(ctx, out, x, true); }

}  // namespace liger::ops
