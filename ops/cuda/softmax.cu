// ops/cuda/softmax.cu — row-wise softmax / log-softmax on the GPU, fp32 or bf16 out (fp32 arithmetic). Rows of up to
// 256 (the Liger feature maps: softmax over a head) take one warp each; longer rows one block each.
#include "ops/cuda/common.cuh"
#include "ops/softmax.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 1024;

// out (N, V) f32 = softmax(x (N, V)) or log_softmax(x); one block per row (grid-stride over rows).
// Pass 1: each thread keeps an online (max, sum); the block merges them. Pass 2: writes.
template <class T, class O>
__global__ void softmax_kernel(O* out, const T* x, int64_t N, int64_t V, bool log) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * V;
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) online_add(m, s, to_f32(xr[i]));
    const float row_max = block_max(m, scratch);
    const float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - row_max), scratch);
    const float log_sum = logf(sum);
    const float inv_sum = 1.0f / sum;
    O* o = out + n * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float d = to_f32(xr[i]) - row_max;
      o[i] = from_f32<O>(log ? d - log_sum : expf(d) * inv_sum);
    }
  }
}

constexpr int kWarpRowMax = 256;  // rows up to this long: one warp per row, 8 values per lane at most
constexpr int kRowsPerBlock = 8;

template <class T, class O>
__global__ void softmax_warp_kernel(O* out, const T* x, int64_t N, int V, bool log) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const T* xr = x + n * V;
  float v[kWarpRowMax / 32];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kWarpRowMax / 32; k++) {
    const int i = lane + 32 * k;
    v[k] = i < V ? to_f32(xr[i]) : -INFINITY;
    m = fmaxf(m, v[k]);
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kWarpRowMax / 32; k++)
    if (lane + 32 * k < V) sum += expf(v[k] - m);
  sum = warp_sum(sum);
  const float log_sum = logf(sum), inv_sum = 1.0f / sum;
  O* o = out + n * V;
#pragma unroll
  for (int k = 0; k < kWarpRowMax / 32; k++) {
    const int i = lane + 32 * k;
    if (i < V) {
      const float d = v[k] - m;
      o[i] = from_f32<O>(log ? d - log_sum : expf(d) * inv_sum);
    }
  }
}

}  // namespace

void softmax(Context& ctx, Tensor out, const Tensor& x, bool log) {
  const int64_t N = x.dim(0), V = x.dim(1);
  if (N == 0 || V == 0) return;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_float(out.dtype(), "softmax", [&](auto otag) {
      using O = typename decltype(otag)::type;
      if (V <= kWarpRowMax) {
        const int64_t blocks = (N + kRowsPerBlock - 1) / kRowsPerBlock;
        LIGER_CHECK(blocks <= 0x7fffffff, "softmax: %lld rows", static_cast<long long>(N));
        softmax_warp_kernel<T, O><<<static_cast<unsigned>(blocks), 32 * kRowsPerBlock, 0, stream_of(ctx)>>>(
            out.ptr<O>(), x.ptr<T>(), N, static_cast<int>(V), log);
      } else {
        const unsigned blocks = static_cast<unsigned>(N < 65535 ? N : 65535);
        softmax_kernel<T, O><<<blocks, kThreads, 0, stream_of(ctx)>>>(out.ptr<O>(), x.ptr<T>(), N, V, log);
      }
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace liger::ops::cuda
