// ops/rope.h — rotary position embedding in the HF rotate-half layout, with llama3 frequency scaling.
#pragma once

#include <vector>

#include "ops/common.h"

namespace liger::ops {

struct RopeConfig {
  int64_t head_dim = 0;        // HS (rotary dimension = whole head)
  double theta = 10000.0;      // base
  enum class Type { Default, Llama3 } type = Type::Default;
  // llama3 scaling (Llama-3.1/3.2): low-frequency bands divided by `factor`, a smooth blend in between.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// inv_freq (HS/2): theta^(-2i/HS), rescaled for llama3 as transformers' _compute_llama3_parameters does.
std::vector<float> rope_inv_freq(const RopeConfig& cfg);

namespace cpu {
void rope(Tensor x, const Tensor& positions, const Tensor& inv_freq);
void rope_backward(Tensor dx, const Tensor& positions, const Tensor& inv_freq);
}  // namespace cpu
namespace cuda {
void rope(Context& ctx, Tensor x, const Tensor& positions, const Tensor& inv_freq);
void rope_backward(Context& ctx, Tensor dx, const Tensor& positions, const Tensor& inv_freq);
}  // namespace cuda

// x (N, NH, HS) rotated in place: for i < HS/2, with a = pos * inv_freq[i] computed in fp32,
//   x[i]        = x[i] cos a - x[i + HS/2] sin a
//   x[i + HS/2] = x[i + HS/2] cos a + x[i] sin a
// positions (N) i32 are absolute token positions; inv_freq (HS/2) f32. CPU: x f32 (or f64 for the gradient checks:
// the same fp32 angle, its cos and sin in fp64).
inline void check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  LIGER_CHECK(x.ndim() == 3 && x.dim(2) % 2 == 0, "%s: x must be (N, NH, HS) with even HS, got %s", op,
              x.shape().str().c_str());
  LIGER_CHECK(positions.dtype() == DType::I32, "%s: positions must be i32", op);
  check_shape(op, "positions", positions, {x.dim(0)});
  LIGER_CHECK(inv_freq.dtype() == DType::F32, "%s: inv_freq must be f32", op);
  check_shape(op, "inv_freq", inv_freq, {x.dim(2) / 2});
}

inline void rope(Context& ctx, Tensor x, const Tensor& positions, const Tensor& inv_freq) {
  check_device(ctx, "rope", {&x, &positions, &inv_freq});
  check_rope("rope", x, positions, inv_freq);
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::rope(ctx, x, positions, inv_freq);
#endif
  check_cpu_float("rope", {&x});
  cpu::rope(x, positions, inv_freq);
}

// Backward of rope, in place: dx (N, NH, HS) = R(a)^T dx, the rotation by the angle -a (rope is orthogonal, so its
// transpose is its inverse):
//   dx[i]        = dx[i] cos a + dx[i + HS/2] sin a
//   dx[i + HS/2] = dx[i + HS/2] cos a - dx[i] sin a
// `=` (in place). positions and inv_freq as for rope.
inline void rope_backward(Context& ctx, Tensor dx, const Tensor& positions, const Tensor& inv_freq) {
  const char* op = "rope_backward";
  check_device(ctx, op, {&dx, &positions, &inv_freq});
  check_rope(op, dx, positions, inv_freq);
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::rope_backward(ctx, dx, positions, inv_freq);
#endif
  check_cpu_float(op, {&dx});
  cpu::rope_backward(dx, positions, inv_freq);
}

}  // namespace liger::ops
