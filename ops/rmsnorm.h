// ops/rmsnorm.h — RMSNorm, computed in fp32 whatever the storage type.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void rmsnorm(Tensor out, const Tensor& x, const Tensor& w, float eps);
}
namespace cuda {
void rmsnorm(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, float eps);
}

// out (N, D) = x (N, D) / sqrt(mean(x^2) + eps) * w (D). out may alias x. Also used per head for Qwen3's q/k norm
// with x viewed as (N*H, HS).
inline void rmsnorm(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, float eps) {
  check_device(ctx, "rmsnorm", {&out, &x, &w});
  LIGER_CHECK(x.ndim() == 2 && w.ndim() == 1 && w.dim(0) == x.dim(1), "rmsnorm: x %s and w %s do not fit",
              x.shape().str().c_str(), w.shape().str().c_str());
  check_shape("rmsnorm", "out", out, x.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::rmsnorm(ctx, out, x, w, eps);
#endif
  check_cpu_f32("rmsnorm", {&out, &x, &w});
  cpu::rmsnorm(out, x, w, eps);
}

}  // namespace liger::ops
