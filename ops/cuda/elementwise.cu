// ops/cuda/elementwise.cu — add, dtype conversion and counter-based normal fills on the GPU.
#include "core/rng.h"
#include "ops/cuda/common.cuh"
#include "ops/elementwise.h"

namespace liger::ops::cuda {
namespace {

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct ScaleOp {
  float alpha;
  __device__ float operator()(float a, float) const { return alpha * a; }
};
struct AddScaledOp {  // a + alpha * b, the product rounded first (no FMA contraction), as the CPU twin
  float alpha;
  __device__ float operator()(float a, float b) const { return __fadd_rn(a, __fmul_rn(alpha, b)); }
};

// out (n) = in (n) converted from TI to TO (through fp32, which holds every bf16 and f16 value exactly).
template <class TI, class TO, int VEC>
__global__ void convert_kernel(TO* out, const TI* in, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nv = n / VEC;
  for (int64_t i = first; i < nv; i += stride) {
    const Vec<TI, VEC> x = reinterpret_cast<const Vec<TI, VEC>*>(in)[i];
    Vec<TO, VEC> o;
#pragma unroll
    for (int k = 0; k < VEC; k++) o.v[k] = from_f32<TO>(to_f32(x.v[k]));
    reinterpret_cast<Vec<TO, VEC>*>(out)[i] = o;
  }
  for (int64_t i = nv * VEC + first; i < n; i += stride) out[i] = from_f32<TO>(to_f32(in[i]));
}

// t (n) = mean + std * hash_normal(seed, i), with the multiply and the add rounded separately (no FMA contraction),
// as the host computes it, so f32 values match the CPU twin bit for bit.
template <class T>
__global__ void fill_normal_kernel(T* t, int64_t n, uint64_t seed, float mean, float std) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float z = hash_normal(seed, static_cast<uint64_t>(i));
    t[i] = from_f32<T>(__fadd_rn(mean, __fmul_rn(std, z)));
  }
}

constexpr int kThreads = 256;

}  // namespace

void add(Context& ctx, Tensor out, const Tensor& a, const Tensor& b) {
  launch_binary(ctx, "add", out, a, b, AddOp{});
}

void scale(Context& ctx, Tensor out, const Tensor& x, float alpha) {
  launch_binary(ctx, "scale", out, x, x, ScaleOp{alpha});
}

void add_scaled(Context& ctx, Tensor out, const Tensor& x, float alpha) {
  launch_binary(ctx, "add_scaled", out, out, x, AddScaledOp{alpha});
}

void convert(Context& ctx, Tensor out, const Tensor& in) {
  const int64_t n = in.numel();
  if (n == 0) return;
  if (out.dtype() == in.dtype()) {
    CUDA_CHECK(cudaMemcpyAsync(out.data(), in.data(), in.nbytes(), cudaMemcpyDeviceToDevice, stream_of(ctx)));
    return;
  }
  dispatch_float(in.dtype(), "convert", [&](auto in_tag) {
    dispatch_float(out.dtype(), "convert", [&](auto out_tag) {
      using TI = typename decltype(in_tag)::type;
      using TO = typename decltype(out_tag)::type;
      constexpr int V = 4;
      if (aligned16(out.data()) && aligned16(in.data())) {
        convert_kernel<TI, TO, V>
            <<<grid_for(n / V + 1, kThreads), kThreads, 0, stream_of(ctx)>>>(out.ptr<TO>(), in.ptr<TI>(), n);
      } else {
        convert_kernel<TI, TO, 1>
            <<<grid_for(n, kThreads), kThreads, 0, stream_of(ctx)>>>(out.ptr<TO>(), in.ptr<TI>(), n);
      }
      CUDA_CHECK_LAUNCH();
    });
  });
}

void fill_normal(Context& ctx, Tensor t, uint64_t seed, float mean, float std) {
  const int64_t n = t.numel();
  if (n == 0) return;
  dispatch_float(t.dtype(), "fill_normal", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_normal_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream_of(ctx)>>>(t.ptr<T>(), n, seed, mean, std);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace liger::ops::cuda
