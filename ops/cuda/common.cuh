// ops/cuda/common.cuh — what every CUDA op shares: the stream of a Context, dtype dispatch over the floating storage
// types (float, __nv_bfloat16, __half), load-as-float / store-from-float, 16-byte vectors, warp and block reductions.
// Every kernel computes in fp32 whatever the storage type and rounds once when it stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/check.h"
#include "core/context.h"
#include "core/cuda_check.h"
#include "core/tensor.h"

namespace liger::ops::cuda {

inline cudaStream_t stream_of(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream()); }

// ---- dtype dispatch ------------------------------------------------------------------------------------------------

// A type carried as a value: `[&](auto tag) { using T = typename decltype(tag)::type; ... }`.
template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with the storage type of `dt` (F32, BF16 or F16); any other dtype is an Error naming `op`.
template <class F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::BF16: f(Tag<__nv_bfloat16>{}); return;
    case DType::F16: f(Tag<__half>{}); return;
    default: LIGER_FAIL("%s: dtype %s is not supported on the GPU (f32, bf16 or f16)", op, dtype_name(dt));
  }
}

// ---- scalar conversions (round to nearest even) --------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// ---- 16-byte vectors -----------------------------------------------------------------------------------------------

// N elements of T loaded or stored as one access (N * sizeof(T) = 16 bytes for the fast path, N = 1 for the fallback).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};
// Elements of T in 16 bytes.
template <class T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- launch geometry -----------------------------------------------------------------------------------------------

// Blocks for a grid-stride loop over n items (capped; the kernels loop over the rest).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

// ---- reductions ----------------------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Folds value x into a running (max m, sum s of exp(. - m)) pair (online softmax); -inf adds nothing.
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
  if (x == -INFINITY) return;
  if (x > m) {
    s = s * expf(m - x) + 1.0f;
    m = x;
  } else {
    s += expf(x - m);
  }
}

// Reduces v over the block (blockDim.x a multiple of 32, at most 1024) with `warp_op`; every thread gets the result.
// `scratch` is 32 values of shared memory; the call ends with a barrier, so it can be reused at once.
template <class T, class WarpOp>
__device__ __forceinline__ T block_reduce(T v, T identity, WarpOp warp_op, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_op(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : identity;
  v = warp_op(v);
  __syncthreads();
  return v;
}
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_reduce(v, 0.0f, [](float x) { return warp_sum(x); }, scratch);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce(v, -INFINITY, [](float x) { return warp_max(x); }, scratch);
}

// ---- element-wise launch -------------------------------------------------------------------------------------------

// out (n) = op(a (n), b (n)) in fp32, VEC elements per access (the tail, n % VEC, element by element).
// out may alias a or b.
template <class T, int VEC, class Op>
__global__ void binary_kernel(T* out, const T* a, const T* b, int64_t n, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nv = n / VEC;
  for (int64_t i = first; i < nv; i += stride) {
    const Vec<T, VEC> x = reinterpret_cast<const Vec<T, VEC>*>(a)[i];
    const Vec<T, VEC> y = reinterpret_cast<const Vec<T, VEC>*>(b)[i];
    Vec<T, VEC> o;
#pragma unroll
    for (int k = 0; k < VEC; k++) o.v[k] = from_f32<T>(op(to_f32(x.v[k]), to_f32(y.v[k])));
    reinterpret_cast<Vec<T, VEC>*>(out)[i] = o;
  }
  for (int64_t i = nv * VEC + first; i < n; i += stride) out[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
}

// Launches binary_kernel over same-shape, same-dtype tensors on ctx's stream, 16-byte accesses when aligned.
template <class Op>
void launch_binary(const Context& ctx, const char* name, Tensor out, const Tensor& a, const Tensor& b, Op op) {
  const int64_t n = a.numel();
  if (n == 0) return;
  dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 256;
    T* o = out.ptr<T>();
    const T* pa = a.ptr<T>();
    const T* pb = b.ptr<T>();
    if (aligned16(o) && aligned16(pa) && aligned16(pb)) {
      constexpr int V = kVec16<T>;
      binary_kernel<T, V><<<grid_for(n / V + 1, kThreads), kThreads, 0, stream_of(ctx)>>>(o, pa, pb, n, op);
    } else {
      binary_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, stream_of(ctx)>>>(o, pa, pb, n, op);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
