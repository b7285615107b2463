// ops/adamw.h — the element work of the AdamW optimizer (train/optimizer.h): the update of one parameter and its two
// moments, and the sum of squares of the gradients (the global norm), on the CPU and on the GPU.
//
// The GPU twin computes the CPU loop's operations in the same order with correctly rounded fp32 intrinsics (no fused
// multiply-add, IEEE sqrt and division), so an update on the GPU has the same bits as the CPU's. The sums of squares
// are fp64 on both; their order differs (the CPU adds in index order, the GPU in a fixed tree), so the norms agree to
// fp64 rounding and each is reproducible run to run.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/common.h"

namespace liger::ops {

// The fp32 scalars of one AdamW step, shared by every element (computed once per step by AdamW::step).
struct AdamWScalars {
  float beta1 = 0.0f, beta2 = 0.0f;    // decays
  float one_minus_beta1 = 0.0f;        // (float)(1 - beta1), rounded from fp64 (not 1 - (float)beta1)
  float one_minus_beta2 = 0.0f;        // (float)(1 - beta2)
  float decay = 0.0f;                  // (float)(lr * weight_decay): p -= decay * p
  float step_size = 0.0f;              // (float)(lr / (1 - beta1^t))
  float bias_correction2_sqrt = 1.0f;  // (float)sqrt(1 - beta2^t)
  float eps = 0.0f;
  float grad_scale = 1.0f;  // gradient multiplier (global-norm clipping); 1 = unchanged
};

// One parameter tensor of an update: n fp32 values each of p, g (read only), m and v, on one device.
struct AdamWTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
};

namespace cpu {
// One AdamW update of n elements, in place on p, m, v:
//   gs = g * grad_scale;  p -= decay * p;  m = beta1 * m + (1 - beta1) * gs;  v = beta2 * v + (1 - beta2) * gs * gs;
//   p -= step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s);
// Sum of squares of n fp32 values, accumulated in fp64 in index order.
double sum_squares(const float* x, int64_t n);
}  // namespace cpu

#ifdef LIGER_CUDA
namespace cuda {
// The update of every tensor of `list` (`count` entries in device memory; `max_n` the largest n) in one launch.
void adamw_update(Context& ctx, const AdamWTensor* list, int count, int64_t max_n, const AdamWScalars& s);
// out[i] (fp64, device) = the sum of squares of list[i].g, for i < count, in one launch (one block per tensor, a
// fixed order of additions).
void sum_squares(Context& ctx, const AdamWTensor* list, int count, double* out);
}  // namespace cuda
#endif

}  // namespace liger::ops
