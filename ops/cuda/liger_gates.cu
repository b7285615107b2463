// ops/cuda/liger_gates.cu — the Liger gates and the GQA group mean on the GPU (ops/liger_gates.h), fp32 math.
#include "ops/cuda/common.cuh"
#include "ops/liger_gates.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float logsigmoid_f(float x) {
  return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
}
__device__ __forceinline__ float sigmoid_f(float x) {
  return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

template <class T>
__device__ __forceinline__ float pooled(const T* s, int64_t r, int64_t m, int64_t HS, int64_t per) {
  if (per == 1) return to_f32(s[r * HS + m]);
  float acc = 0.0f;
  for (int64_t c = 0; c < per; c++) acc += to_f32(s[r * HS + m * per + c]);
  return acc / static_cast<float>(per);
}

// One thread per gate (row r, group m).
template <class T>
__global__ void gates_kernel(T* g, T* fk, const T* s, int64_t rows, int64_t HS, int64_t K, float norm) {
  const int64_t per = HS / K, n = rows * K, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float gi = logsigmoid_f(pooled(s, i / K, i % K, HS, per)) / norm;
    g[i] = from_f32<T>(gi);
    if (fk) fk[i] = from_f32<T>(-expm1f(gi));
  }
}

template <class T>
__global__ void gates_backward_kernel(T* ds, const T* dg, const T* dfk, const T* s, const T* g, int64_t rows,
                                      int64_t HS, int64_t K, float norm) {
  const int64_t per = HS / K, n = rows * K, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / K, m = i % K;
    float dgi = to_f32(dg[i]);
    if (dfk) dgi -= to_f32(dfk[i]) * expf(to_f32(g[i]));
    float d = dgi / norm * sigmoid_f(-pooled(s, r, m, HS, per));
    if (per != 1) d /= static_cast<float>(per);
    for (int64_t c = 0; c < per; c++) ds[r * HS + m * per + c] = from_f32<T>(d);
  }
}

// One thread per output element (n, j, c).
template <class T>
__global__ void group_mean_kernel(T* out, const T* x, int64_t N, int64_t H, int64_t HKV, int64_t HS) {
  const int64_t G = H / HKV, total = N * HKV * HS, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t c = i % HS, j = (i / HS) % HKV, n = i / (HS * HKV);
    float acc = 0.0f;
    for (int64_t h = j * G; h < (j + 1) * G; h++) acc += to_f32(x[(n * H + h) * HS + c]) / static_cast<float>(G);
    out[i] = from_f32<T>(acc);
  }
}

template <class T>
__global__ void group_mean_backward_kernel(T* dx, const T* dout, int64_t N, int64_t H, int64_t HKV, int64_t HS) {
  const int64_t G = H / HKV, total = N * H * HS, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t c = i % HS, h = (i / HS) % H, n = i / (HS * H);
    dx[i] = from_f32<T>(to_f32(dx[i]) + to_f32(dout[(n * HKV + h / G) * HS + c]) / static_cast<float>(G));
  }
}

}  // namespace

void liger_gates(Context& ctx, Tensor g, Tensor fk, const Tensor& s, float norm) {
  const int64_t rows = s.dim(0) * s.dim(1), HS = s.dim(2), K = g.dim(2);
  if (rows == 0) return;
  dispatch_float(s.dtype(), "liger_gates", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gates_kernel<T><<<grid_for(rows * K, kThreads), kThreads, 0, stream_of(ctx)>>>(
        g.ptr<T>(), fk.defined() ? fk.ptr<T>() : nullptr, s.ptr<T>(), rows, HS, K, norm);
    CUDA_CHECK_LAUNCH();
  });
}

void liger_gates_backward(Context& ctx, Tensor ds, const Tensor& dg, const Tensor& dfk, const Tensor& s,
                          const Tensor& g, float norm) {
  const int64_t rows = s.dim(0) * s.dim(1), HS = s.dim(2), K = g.dim(2);
  if (rows == 0) return;
  dispatch_float(s.dtype(), "liger_gates_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gates_backward_kernel<T><<<grid_for(rows * K, kThreads), kThreads, 0, stream_of(ctx)>>>(
        ds.ptr<T>(), dg.ptr<T>(), dfk.defined() ? dfk.ptr<T>() : nullptr, s.ptr<T>(), g.ptr<T>(), rows, HS, K, norm);
    CUDA_CHECK_LAUNCH();
  });
}

void group_mean(Context& ctx, Tensor out, const Tensor& x) {
  const int64_t N = x.dim(0), H = x.dim(1), HS = x.dim(2), HKV = out.dim(1);
  if (N * HKV * HS == 0) return;
  dispatch_float(x.dtype(), "group_mean", [&](auto tag) {
    using T = typename decltype(tag)::type;
    group_mean_kernel<T>
        <<<grid_for(N * HKV * HS, kThreads), kThreads, 0, stream_of(ctx)>>>(out.ptr<T>(), x.ptr<T>(), N, H, HKV, HS);
    CUDA_CHECK_LAUNCH();
  });
}

void group_mean_backward(Context& ctx, Tensor dx, const Tensor& dout) {
  const int64_t N = dx.dim(0), H = dx.dim(1), HS = dx.dim(2), HKV = dout.dim(1);
  if (N * H * HS == 0) return;
  dispatch_float(dx.dtype(), "group_mean_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    group_mean_backward_kernel<T>
        <<<grid_for(N * H * HS, kThreads), kThreads, 0, stream_of(ctx)>>>(dx.ptr<T>(), dout.ptr<T>(), N, H, HKV, HS);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
