// ops/cuda/embedding.cu — token embedding lookup on the GPU.
#include "ops/cuda/common.cuh"
#include "ops/embedding.h"

namespace liger::ops::cuda {
namespace {

// out (N, D) = table (V, D)[ids (N) - v0]; an id outside [v0, v0 + V) gives a row of zeros. One block per row (grid-stride over
// rows), VEC elements per access.
template <class T, int VEC>
__global__ void embedding_kernel(T* out, const int32_t* ids, const T* table, int64_t N, int64_t V, int64_t D,
                                 int64_t v0) {
  using Pack = Vec<T, VEC>;
  const int64_t dv = D / VEC;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int64_t id = ids[n] - v0;
    Pack* o = reinterpret_cast<Pack*>(out + n * D);
    if (id < 0 || id >= V) {
      Pack zero;
#pragma unroll
      for (int k = 0; k < VEC; k++) zero.v[k] = from_f32<T>(0.0f);
      for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) o[i] = zero;
    } else {
      const Pack* src = reinterpret_cast<const Pack*>(table + static_cast<int64_t>(id) * D);
      for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) o[i] = src[i];
    }
  }
}

}  // namespace

void embedding(Context& ctx, Tensor out, const Tensor& ids, const Tensor& table, int64_t v0) {
  const int64_t N = ids.dim(0), V = table.dim(0), D = table.dim(1);
  if (N == 0 || D == 0) return;
  dispatch_float(table.dtype(), "embedding", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 128;
    const unsigned blocks = static_cast<unsigned>(N < 65535 ? N : 65535);
    constexpr int V16 = kVec16<T>;
    if (D % V16 == 0 && aligned16(out.data()) && aligned16(table.data())) {
      embedding_kernel<T, V16><<<blocks, kThreads, 0, stream_of(ctx)>>>(out.ptr<T>(), ids.ptr<int32_t>(),
                                                                         table.ptr<T>(), N, V, D, v0);
    } else {
      embedding_kernel<T, 1><<<blocks, kThreads, 0, stream_of(ctx)>>>(out.ptr<T>(), ids.ptr<int32_t>(),
                                                                       table.ptr<T>(), N, V, D, v0);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
