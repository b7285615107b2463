// ops/cuda/swiglu.cu — out = silu(gate) * up on the GPU, element-wise in fp32.
#include "ops/cuda/common.cuh"
#include "ops/swiglu.h"

namespace liger::ops::cuda {
namespace {

// silu(g) * u = g / (1 + exp(-g)) * u, in the CPU twin's order of operations.
struct SwigluOp {
  __device__ float operator()(float g, float u) const { return g / (1.0f + expf(-g)) * u; }
};

}  // namespace

void swiglu(Context& ctx, Tensor out, const Tensor& gate, const Tensor& up) {
  launch_binary(ctx, "swiglu", out, gate, up, SwigluOp{});
}

}  // namespace liger::ops::cuda
