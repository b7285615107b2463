// ops/swiglu.h — the SwiGLU activation of the Llama MLP.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void swiglu(Tensor out, const Tensor& gate, const Tensor& up);
}
namespace cuda {
void swiglu(Context& ctx, Tensor out, const Tensor& gate, const Tensor& up);
}

// out (N, F) = silu(gate (N, F)) * up (N, F), silu(g) = g / (1 + exp(-g)). out may alias gate or up.
inline void swiglu(Context& ctx, Tensor out, const Tensor& gate, const Tensor& up) {
  check_device(ctx, "swiglu", {&out, &gate, &up});
  check_shape("swiglu", "up", up, gate.shape());
  check_shape("swiglu", "out", out, gate.shape());
  LIGER_CHECK(out.dtype() == gate.dtype() && up.dtype() == gate.dtype(), "swiglu: dtypes differ");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::swiglu(ctx, out, gate, up);
#endif
  check_cpu_f32("swiglu", {&out, &gate, &up});
  cpu::swiglu(out, gate, up);
}

}  // namespace liger::ops
