// ops/swiglu.h — the SwiGLU activation of the Llama MLP.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void swiglu(Tensor out, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up);
}  // namespace cpu
namespace cuda {
void swiglu(Context& ctx, Tensor out, const Tensor& gate, const Tensor& up);
void swiglu_backward(Context& ctx, Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up);
}  // namespace cuda

// out (N, F) = silu(gate (N, F)) * up (N, F), silu(g) = g / (1 + exp(-g)). out may alias gate or up.
// CPU: f32 (or f64 for the gradient checks).
inline void swiglu(Context& ctx, Tensor out, const Tensor& gate, const Tensor& up) {
  check_device(ctx, "swiglu", {&out, &gate, &up});
  check_shape("swiglu", "up", up, gate.shape());
  check_shape("swiglu", "out", out, gate.shape());
  LIGER_CHECK(out.dtype() == gate.dtype() && up.dtype() == gate.dtype(), "swiglu: dtypes differ");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::swiglu(ctx, out, gate, up);
#endif
  check_cpu_float("swiglu", {&out, &gate, &up});
  cpu::swiglu(out, gate, up);
}

// Backward of swiglu, with s = sigmoid(g) and silu'(g) = s (1 + g (1 - s)):
//   dgate (N, F) = dout * up * silu'(gate)
//   dup (N, F)   = dout * silu(gate)
// Both `=`. Element-wise, every input of an element read before its outputs are written: dgate may alias gate (or
// dout) and dup may alias up (or dout), but dgate and dup must be distinct. GPU: f32 or bf16, every tensor of one
// dtype.
inline void swiglu_backward(Context& ctx, Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate,
                            const Tensor& up) {
  const char* op = "swiglu_backward";
  check_device(ctx, op, {&dgate, &dup, &dout, &gate, &up});
  check_shape(op, "up", up, gate.shape());
  check_shape(op, "dout", dout, gate.shape());
  check_shape(op, "dgate", dgate, gate.shape());
  check_shape(op, "dup", dup, gate.shape());
  LIGER_CHECK(dgate.data() != dup.data() || gate.numel() == 0, "%s: dgate and dup are the same memory", op);
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::swiglu_backward(ctx, dgate, dup, dout, gate, up);
#endif
  check_cpu_float(op, {&dgate, &dup, &dout, &gate, &up});
  cpu::swiglu_backward(dgate, dup, dout, gate, up);
}

}  // namespace liger::ops
