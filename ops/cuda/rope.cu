// ops/cuda/rope.cu — rotary position embedding (rotate-half layout) on the GPU, in place.
#include "ops/cuda/common.cuh"
#include "ops/rope.h"

namespace liger::ops::cuda {
namespace {

// x (N, NH, HS) rotated in place; one thread per (token n, frequency i < HS/2), looping over the NH heads so that
// cos/sin are computed once per pair. a = pos * inv_freq[i] in fp32, then the full-precision sincosf (positions reach
// 128K, far outside the range of the fast intrinsics).
template <class T>
__global__ void rope_kernel(T* x, const int32_t* positions, const float* inv_freq, int64_t N, int64_t NH,
                            int64_t half) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < N * half; g += stride) {
    const int64_t n = g / half, i = g % half;
    const float a = static_cast<float>(positions[n]) * inv_freq[i];
    float s, c;
    sincosf(a, &s, &c);
    T* p = x + n * NH * 2 * half + i;
    for (int64_t h = 0; h < NH; h++, p += 2 * half) {
      const float x1 = to_f32(p[0]), x2 = to_f32(p[half]);
      p[0] = from_f32<T>(x1 * c - x2 * s);
      p[half] = from_f32<T>(x2 * c + x1 * s);
    }
  }
}

}  // namespace

void rope(Context& ctx, Tensor x, const Tensor& positions, const Tensor& inv_freq) {
  const int64_t N = x.dim(0), NH = x.dim(1), half = x.dim(2) / 2;
  if (N == 0 || NH == 0 || half == 0) return;
  dispatch_float(x.dtype(), "rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 256;
    rope_kernel<T><<<grid_for(N * half, kThreads), kThreads, 0, stream_of(ctx)>>>(
        x.ptr<T>(), positions.ptr<int32_t>(), inv_freq.ptr<float>(), N, NH, half);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
