// ops/cuda/softmax.cu — row-wise softmax / log-softmax on the GPU, fp32 out.
#include "ops/cuda/common.cuh"
#include "ops/softmax.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 1024;

// out (N, V) f32 = softmax(x (N, V)) or log_softmax(x); one block per row (grid-stride over rows).
// Pass 1: each thread keeps an online (max, sum); the block merges them. Pass 2: writes.
template <class T>
__global__ void softmax_kernel(float* out, const T* x, int64_t N, int64_t V, bool log) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * V;
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) online_add(m, s, to_f32(xr[i]));
    const float row_max = block_max(m, scratch);
    const float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - row_max), scratch);
    const float log_sum = logf(sum);
    const float inv_sum = 1.0f / sum;
    float* o = out + n * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float d = to_f32(xr[i]) - row_max;
      o[i] = log ? d - log_sum : expf(d) * inv_sum;
    }
  }
}

}  // namespace

void softmax(Context& ctx, Tensor out, const Tensor& x, bool log) {
  const int64_t N = x.dim(0), V = x.dim(1);
  if (N == 0 || V == 0) return;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const unsigned blocks = static_cast<unsigned>(N < 65535 ? N : 65535);
    softmax_kernel<T><<<blocks, kThreads, 0, stream_of(ctx)>>>(out.ptr<float>(), x.ptr<T>(), N, V, log);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
