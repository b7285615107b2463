// ops/cuda/recurrence_tc.cuh — the tensor-core form of linear_recurrence (forward and backward) for bf16 storage,
// used by ops/cuda/recurrence.cu when the state fits (K, Vd <= kTcMaxDim); ops/cuda/recurrence_tc.cu has the math.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/context.h"

namespace liger::ops::cuda {

constexpr int64_t kTcMaxDim = 128;  // K and Vd at most (padded to multiples of 16 inside)

// True when the tensor-core kernels take this shape (bf16 storage is the caller's check).
inline bool tc_recurrence_fits(int64_t K, int64_t Vd) {
  return K >= 1 && Vd >= 1 && K <= kTcMaxDim && Vd <= kTcMaxDim;
}

// linear_recurrence's chunked forward: out (B, T, H, Vd) =, from fq (B, T, H, K), fk and g (B, T, HKV, K), v (B, T,
// HKV, Vd); state (B, HKV, K, Vd) f32 in and out. chunk: the caller's chunk (the kernels use a multiple of 16 in
// [16, 64]).
void tc_linear_recurrence(const Context& ctx, __nv_bfloat16* out, const __nv_bfloat16* fq, const __nv_bfloat16* fk,
                          const __nv_bfloat16* v, const __nv_bfloat16* g, float* state, int64_t B, int64_t T, int64_t H,
                          int64_t HKV, int64_t K, int64_t Vd, int64_t chunk);

// linear_recurrence_backward: dfq (B, T, H, K), dfk and dg (B, T, HKV, K), dv (B, T, HKV, Vd) =, from dout (B, T, H,
// Vd) and the forward's inputs, state0 (B, HKV, K, Vd) f32.
void tc_linear_recurrence_backward(const Context& ctx, __nv_bfloat16* dfq, __nv_bfloat16* dfk, __nv_bfloat16* dv,
                                   __nv_bfloat16* dg, const __nv_bfloat16* dout, const __nv_bfloat16* fq,
                                   const __nv_bfloat16* fk, const __nv_bfloat16* v, const __nv_bfloat16* g,
                                   const float* state0, int64_t B, int64_t T, int64_t H, int64_t HKV, int64_t K,
                                   int64_t Vd);

}  // namespace liger::ops::cuda
