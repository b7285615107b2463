// ops/cuda/sampling.cu — next-token choice on the GPU: greedy argmax, or temperature + top-p by the rule of
// ops/sampling.h. One block per row; the probabilities of a row are written once to scratch memory (the context's
// workspace) and re-read by the ~30 passes of the threshold search.
#include <climits>

#include "ops/cuda/common.cuh"
#include "ops/sampling.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr uint32_t kOneBits = 0x3f800000u;  // bit pattern of 1.0f, the largest probability

__device__ __forceinline__ int warp_min_int(int v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_max_int(int v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Exclusive prefix sum of v over the block in thread order; *total gets the block's sum. `scratch`: 32 floats.
__device__ float block_exclusive_scan(float v, float* scratch, float* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  float incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const float up = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += up;
  }
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    float w = lane < nwarps ? scratch[lane] : 0.0f;
    for (int o = 1; o < 32; o <<= 1) {
      const float up = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += up;
    }
    scratch[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const float excl = (warp > 0 ? scratch[warp - 1] : 0.0f) + (incl - v);
  *total = scratch[nwarps - 1];
  __syncthreads();
  return excl;
}

// ids (N) = argmax of each row of logits (N, V), the lowest index among ties. One block per row.
__global__ void argmax_kernel(int32_t* ids, const float* logits, int64_t V) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * V;
  float v = -INFINITY;
  int idx = INT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    if (l[i] > v || idx == INT_MAX) {  // strict: a thread keeps its first maximum
      v = l[i];
      idx = static_cast<int>(i);
    }
  }
  // Larger value wins; the lower index among equal values.
  auto merge = [&](float ov, int oi) {
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  };
  for (int o = 16; o > 0; o >>= 1) merge(__shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_v[warp] = v;
    best_i[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? best_v[lane] : -INFINITY;
    idx = lane < static_cast<int>(blockDim.x >> 5) ? best_i[lane] : INT_MAX;
    for (int o = 16; o > 0; o >>= 1) merge(__shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (lane == 0) ids[blockIdx.x] = idx;
  }
}

// Sums the probabilities p >= t of a row (VP4 float4s of scratch) over the block.
__device__ float mass_at_least(const float4* p4, int64_t VP4, float t, float* scratch) {
  float m = 0.0f;
  for (int64_t j = threadIdx.x; j < VP4; j += blockDim.x) {
    const float4 q = p4[j];
    m += (q.x >= t ? q.x : 0.0f) + (q.y >= t ? q.y : 0.0f) + (q.z >= t ? q.z : 0.0f) + (q.w >= t ? q.w : 0.0f);
  }
  return block_sum(m, scratch);
}

// ids (N) = a token per row of logits (N, V) by temperature + top-p (ops/sampling.h), u = uniforms (N).
// probs (N, VP) f32 scratch, VP = V rounded up to a multiple of 4 (the padding holds zeros). One block per row.
__global__ void top_p_kernel(int32_t* ids, const float* logits, float* probs, const float* uniforms, int64_t V,
                             int64_t VP, float temperature, float top_p) {
  __shared__ float scratch[32];
  __shared__ int iscratch[32];
  const int64_t n = blockIdx.x;
  const float* l = logits + n * V;
  float* p = probs + n * VP;
  const float4* p4 = reinterpret_cast<const float4*>(p);
  const int64_t VP4 = VP / 4;

  // p = softmax(l / temperature), in the CPU twin's order: exp((l - max) / temperature), then / sum.
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, l[i]);
  mx = block_max(mx, scratch);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < VP; i += blockDim.x) {
    const float e = i < V ? expf((l[i] - mx) / temperature) : 0.0f;
    p[i] = e;
    s += e;
  }
  const float sum = block_sum(s, scratch);
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) p[i] = p[i] / sum;  // each thread its own elements
  __syncthreads();

  // tau = the largest float t with mass{p >= t} >= top_p: set its bits from the top (positive floats order like
  // their bit patterns, and the mass only falls as t grows). top_p >= 1 keeps every token (tau = 0).
  uint32_t tau_bits = 0;
  if (top_p < 1.0f) {
    for (int bit = 29; bit >= 0; bit--) {
      const uint32_t cand = tau_bits | (1u << bit);
      if (cand > kOneBits) continue;
      if (mass_at_least(p4, VP4, __uint_as_float(cand), scratch) >= top_p) tau_bits = cand;
    }
  }
  const float tau = __uint_as_float(tau_bits);
  const float target = uniforms[n] * mass_at_least(p4, VP4, tau, scratch);

  // The first nucleus index, in index order, whose running sum exceeds target; else the last nucleus index.
  // Each thread takes 4 consecutive elements of a chunk of 4 * blockDim.x.
  float carry = 0.0f;
  int last = -1;
  for (int64_t j0 = 0; j0 < VP4; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const float4 q = j < VP4 ? p4[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float qs[4] = {q.x, q.y, q.z, q.w};
    float mine = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++)
      if (4 * j + k < V && qs[k] >= tau) mine += qs[k];
    float total;
    float run = carry + block_exclusive_scan(mine, scratch, &total);
    int found = INT_MAX, mine_last = -1;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int64_t i = 4 * j + k;
      if (i < V && qs[k] >= tau) {
        run += qs[k];
        mine_last = static_cast<int>(i);
        if (run > target && found == INT_MAX) found = static_cast<int>(i);
      }
    }
    found = block_reduce(found, INT_MAX, [](int x) { return warp_min_int(x); }, iscratch);
    last = max(last, block_reduce(mine_last, -1, [](int x) { return warp_max_int(x); }, iscratch));
    if (found != INT_MAX) {
      if (threadIdx.x == 0) ids[n] = found;
      return;
    }
    carry += total;
  }
  if (threadIdx.x == 0) ids[n] = last;
}

}  // namespace

void sample(Context& ctx, Tensor ids, const Tensor& logits, float temperature, float top_p, const Tensor& uniforms) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  LIGER_CHECK(V > 0 && V < INT_MAX, "sample: vocabulary of %lld entries", static_cast<long long>(V));
  if (N == 0) return;
  if (temperature <= 0.0f) {
    for (int64_t n0 = 0; n0 < N; n0 += 65535) {
      const int64_t rows = N - n0 < 65535 ? N - n0 : 65535;
      argmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream_of(ctx)>>>(ids.ptr<int32_t>() + n0,
                                                                                   logits.ptr<float>() + n0 * V, V);
      CUDA_CHECK_LAUNCH();
    }
    return;
  }
  // Rows go in groups whose probabilities fit the workspace; launches on one stream run in order.
  const int64_t VP = (V + 3) / 4 * 4;
  const int64_t row_bytes = VP * static_cast<int64_t>(sizeof(float));
  int64_t group = static_cast<int64_t>(ctx.workspace_bytes()) / row_bytes;
  LIGER_CHECK(group > 0, "sample: a row of %lld probabilities does not fit the %zu-byte workspace",
              static_cast<long long>(V), ctx.workspace_bytes());
  if (group > 65535) group = 65535;
  for (int64_t n0 = 0; n0 < N; n0 += group) {
    const int64_t rows = N - n0 < group ? N - n0 : group;
    top_p_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream_of(ctx)>>>(
        ids.ptr<int32_t>() + n0, logits.ptr<float>() + n0 * V, static_cast<float*>(ctx.workspace()),
        uniforms.ptr<float>() + n0, V, VP, temperature, top_p);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace liger::ops::cuda
