// ops/cuda/adamw.cu — AdamW over a list of tensors in one launch (grid.y = the tensor), and the per-tensor sums of
// squares. The update spells out every rounding (__fmul_rn etc. are never contracted into a fused multiply-add), in
// the order of the CPU loop, so the bits match it.
#include "ops/adamw.h"
#include "ops/cuda/common.cuh"

namespace liger::ops::cuda {
namespace {

__global__ void adamw_kernel(const AdamWTensor* list, AdamWScalars s) {
  const AdamWTensor t = list[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < t.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gs = __fmul_rn(t.g[i], s.grad_scale);
    float p = t.p[i];
    p = __fsub_rn(p, __fmul_rn(s.decay, p));
    const float m = __fadd_rn(__fmul_rn(s.beta1, t.m[i]), __fmul_rn(s.one_minus_beta1, gs));
    const float v = __fadd_rn(__fmul_rn(s.beta2, t.v[i]), __fmul_rn(__fmul_rn(s.one_minus_beta2, gs), gs));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias_correction2_sqrt), s.eps);
    p = __fsub_rn(p, __fmul_rn(s.step_size, __fdiv_rn(m, denom)));
    t.p[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}

constexpr int kSumThreads = 512;

__global__ void sum_squares_kernel(const AdamWTensor* list, double* out) {
  const AdamWTensor t = list[blockIdx.x];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < t.n; i += kSumThreads) {
    const double x = static_cast<double>(t.g[i]);
    acc = __dadd_rn(acc, __dmul_rn(x, x));
  }
  for (int o = 16; o > 0; o >>= 1) acc = __dadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, o));
  __shared__ double warps[kSumThreads / 32];
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kSumThreads / 32; w++) total = __dadd_rn(total, warps[w]);
    out[blockIdx.x] = total;
  }
}

}  // namespace

void adamw_update(Context& ctx, const AdamWTensor* list, int count, int64_t max_n, const AdamWScalars& s) {
  if (count == 0 || max_n == 0) return;
  LIGER_CHECK(count <= 65535, "adamw_update: %d tensors in one launch (at most 65535)", count);
  constexpr int threads = 256;
  const dim3 grid(std::min(grid_for(max_n, threads), 1024u), static_cast<unsigned>(count));
  adamw_kernel<<<grid, threads, 0, stream_of(ctx)>>>(list, s);
  CUDA_CHECK(cudaGetLastError());
}

void sum_squares(Context& ctx, const AdamWTensor* list, int count, double* out) {
  if (count == 0) return;
  sum_squares_kernel<<<count, kSumThreads, 0, stream_of(ctx)>>>(list, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace liger::ops::cuda
