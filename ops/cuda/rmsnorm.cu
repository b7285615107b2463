// ops/cuda/rmsnorm.cu — RMSNorm on the GPU: fp32 sum of squares, one rounding on the store.
#include "ops/cuda/common.cuh"
#include "ops/rmsnorm.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 256;
// Rows of at most this width get one warp each (kThreads / 32 rows per block); wider rows get the whole block.
constexpr int64_t kWarpRowMax = 1024;

// out (N, D) = x (N, D) * rstd * w (D), rstd = 1 / sqrt(mean(x^2) + eps). `row_threads` is 32 (a warp per row) or
// blockDim.x (a block per row). out may alias x: each thread reads its elements before it writes them.
template <class TX, class TW, class TO>
__global__ void rmsnorm_kernel(TO* out, const TX* x, const TW* w, int64_t N, int64_t D, float eps, int row_threads) {
  __shared__ float scratch[32];
  const int64_t rows_per_block = blockDim.x / row_threads;
  const int t = threadIdx.x % row_threads;
  // Every thread of the block runs the same number of iterations (block_sum needs them all).
  for (int64_t group = blockIdx.x; group * rows_per_block < N; group += gridDim.x) {
    const int64_t n = group * rows_per_block + threadIdx.x / row_threads;
    const bool live = n < N;
    const TX* xr = x + (live ? n : 0) * D;
    float ss = 0.0f;
    if (live)
      for (int64_t i = t; i < D; i += row_threads) {
        const float v = to_f32(xr[i]);
        ss = fmaf(v, v, ss);
      }
    ss = row_threads == 32 ? warp_sum(ss) : block_sum(ss, scratch);
    if (!live) continue;
    const float rstd = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
    TO* orow = out + n * D;
    for (int64_t i = t; i < D; i += row_threads) orow[i] = from_f32<TO>(to_f32(xr[i]) * rstd * to_f32(w[i]));
  }
}

}  // namespace

void rmsnorm(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.dim(0), D = x.dim(1);
  if (N == 0 || D == 0) return;
  const int row_threads = D <= kWarpRowMax ? 32 : kThreads;
  const int64_t rows_per_block = kThreads / row_threads;
  const int64_t blocks = (N + rows_per_block - 1) / rows_per_block;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  dispatch_float(x.dtype(), "rmsnorm", [&](auto xt) {
    dispatch_float(w.dtype(), "rmsnorm", [&](auto wt) {
      dispatch_float(out.dtype(), "rmsnorm", [&](auto ot) {
        using TX = typename decltype(xt)::type;
        using TW = typename decltype(wt)::type;
        using TO = typename decltype(ot)::type;
        rmsnorm_kernel<TX, TW, TO><<<grid, kThreads, 0, stream_of(ctx)>>>(out.ptr<TO>(), x.ptr<TX>(), w.ptr<TW>(), N,
                                                                          D, eps, row_threads);
        CUDA_CHECK_LAUNCH();
      });
    });
  });
}

}  // namespace liger::ops::cuda
