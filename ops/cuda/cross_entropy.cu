// ops/cuda/cross_entropy.cu — the fused LM head + cross-entropy on the GPU (ops/cross_entropy.h).
//
// For each block of `block_rows` rows:
//   1. logits (nb, V) f32 = h (nb, D) · w (V, D)^T             cuda::matmul (fp32 accumulation, f32 out)
//   2. cross_entropy_rows_kernel, one CUDA block per row: the row's max and log-sum-exp, its loss, and when dh is
//      wanted dlogits (nb, V) = grad_scale * (softmax - onehot(target)) in the dtype of w
//   3. dh (nb, D) = dlogits (nb, V) · w (V, D)                  cuda::matmul_backward_input
// The f32 logits buffer is allocated once per call and reused by every block; for f32 the dlogits overwrite it in
// place, for bf16 they go into a second (block_rows, V) bf16 buffer. The targets are copied to the host and checked
// once, before anything is launched, so a bad one leaves the outputs untouched (as on the CPU).
#include <algorithm>
#include <vector>

#include "ops/cross_entropy.h"
#include "ops/cuda/common.cuh"
#include "ops/matmul.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 1024;

// For each row r of one block of rows (a CUDA block per row, grid-stride over rows), with t = targets[r]:
//   losses (nb) f32  = lse(logits[r]) - logits[r, t]                                  (0 where t = -100)
//   dlogits (nb, V)  = grad_scale * (softmax(logits[r]) - onehot(t)), rounded to TD    (0 rows where t = -100)
// logits (nb, V) f32; targets (nb) i32, already checked to be -100 or in [0, V); dlogits null for the forward alone.
// dlogits may be logits itself (TD = float, hence no __restrict__): every element is read and written by one thread,
// and the only other read of the row, the target's logit, comes before the reductions' barriers, so before any write.
// The log-sum-exp is accumulated in fp32: each thread folds its ceil(V / 1024) logits into an online (max, sum of
// exp(l - max)) pair, the block merges the pairs by a tree. Each partial sum has at most ~126 terms in (0, 1] for
// V = 128256, so the sum's relative rounding is below 1e-5 in the worst case (~1e-7 typically) and moves the loss
// (about log V) far less than that, relative: within the fp32 tolerance without fp64 on the GPU.
template <class TD>
__global__ void cross_entropy_rows_kernel(float* losses, TD* dlogits, const float* logits, const int32_t* targets,
                                          int64_t nb, int64_t V, float grad_scale) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < nb; r += gridDim.x) {
    const int32_t t = targets[r];
    const float* l = logits + r * V;
    TD* dl = dlogits ? dlogits + r * V : nullptr;
    if (t == kIgnoreTarget) {  // the same for the whole block: no barrier is skipped by part of it
      if (threadIdx.x == 0) losses[r] = 0.0f;
      if (dl)
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) dl[i] = from_f32<TD>(0.0f);
      continue;
    }
    const float lt = l[t];  // before any write to the row
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) online_add(m, s, l[i]);
    const float row_max = block_max(m, scratch);
    const float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - row_max), scratch);
    const float lse = logf(sum);  // log-sum-exp of (l - row_max)
    if (threadIdx.x == 0) losses[r] = lse - (lt - row_max);
    if (!dl) continue;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float p = expf(l[i] - row_max - lse);
      dl[i] = from_f32<TD>(grad_scale * (i == t ? p - 1.0f : p));
    }
  }
}

}  // namespace

void lm_head_cross_entropy(Context& ctx, Tensor losses, Tensor dh, const Tensor& h, const Tensor& w,
                           const Tensor& targets, float grad_scale, int64_t block_rows) {
  const char* op = "lm_head_cross_entropy";
  const int64_t N = h.dim(0), V = w.dim(0);
  if (N == 0) return;
  const cudaStream_t stream = stream_of(ctx);

  // Every target first, on the host (N i32 values and one wait for the stream, which may still be writing them).
  std::vector<int32_t> tgt(static_cast<size_t>(N));
  CUDA_CHECK(cudaMemcpyAsync(tgt.data(), targets.data(), tgt.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int64_t n = 0; n < N; n++) {
    const int32_t t = tgt[static_cast<size_t>(n)];
    LIGER_CHECK(t == kIgnoreTarget || (t >= 0 && t < V),
                "%s: target %d of row %lld is outside the vocabulary [0, %lld) (%d marks an ignored token)", op, t,
                static_cast<long long>(n), static_cast<long long>(V), kIgnoreTarget);
  }

  const int64_t block = std::min(block_rows, N);
  Tensor logits = Tensor::empty({block, V}, DType::F32, Device::CUDA);  // (block, V) f32, reused by every block
  Tensor dlogits;  // (block, V) in the dtype of w: the logits buffer itself for f32
  if (dh.defined()) dlogits = w.dtype() == DType::F32 ? logits : Tensor::empty({block, V}, w.dtype(), Device::CUDA);

  dispatch_float(w.dtype(), op, [&](auto tag) {
    using TD = typename decltype(tag)::type;
    for (int64_t r0 = 0; r0 < N; r0 += block) {
      const int64_t nb = std::min(block, N - r0);
      Tensor lb = logits.slice(0, nb);
      matmul(ctx, lb, h.slice(r0, nb), w, nullptr, false);  // (nb, V) f32 = h (nb, D) · w (V, D)^T
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(nb, 65535));
      cross_entropy_rows_kernel<TD><<<blocks, kThreads, 0, stream>>>(
          losses.ptr<float>() + r0, dh.defined() ? dlogits.ptr<TD>() : nullptr, lb.ptr<float>(),
          targets.ptr<int32_t>() + r0, nb, V, grad_scale);
      CUDA_CHECK_LAUNCH();
      // (nb, D) = dlogits (nb, V) · w (V, D); the next block's matmul overwrites the buffers only after this, in
      // stream order.
      if (dh.defined()) matmul_backward_input(ctx, dh.slice(r0, nb), dlogits.slice(0, nb), w, false);
    }
  });
}

// ---- vocab-parallel row passes (ops/cross_entropy.h), one CUDA block per row, grid-stride over rows -------------

namespace {

constexpr int kShardThreads = 512;

__global__ void shard_max_kernel(float* rowmax, const float* logits, int64_t n, int64_t Vs, int64_t valid) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* l = logits + r * Vs;
    float m = -INFINITY;
    for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) m = fmaxf(m, l[c]);
    m = block_max(m, scratch);
    if (threadIdx.x == 0) rowmax[r] = m;
  }
}

__global__ void shard_sums_kernel(float* sums, const float* logits, const float* rowmax, const int32_t* targets,
                                  int64_t n, int64_t Vs, int64_t v0, int64_t valid) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* l = logits + r * Vs;
    const float m = rowmax[r];
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) s += expf(l[c] - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      sums[r] = s;
      sums[n + r] = t >= 0 && t < valid ? l[t] - m : 0.0f;
    }
  }
}

// dlogits may alias logits (TD = float): each element is read, then written, by one thread.
template <class TD>
__global__ void shard_finish_kernel(float* losses, TD* dlogits, const float* logits, const float* rowmax,
                                    const float* sums, const int32_t* targets, int64_t n, int64_t Vs, int64_t v0,
                                    int64_t valid, float grad_scale) {
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int32_t tg = targets[r];
    const float lse = logf(sums[r]);
    if (threadIdx.x == 0) losses[r] = tg == kIgnoreTarget ? 0.0f : lse - sums[n + r];
    if (!dlogits) continue;
    const float* l = logits + r * Vs;
    TD* d = dlogits + r * Vs;
    const float m = rowmax[r];
    const int64_t t = static_cast<int64_t>(tg) - v0;
    for (int64_t c = threadIdx.x; c < Vs; c += blockDim.x) {
      float g = 0.0f;
      if (tg != kIgnoreTarget && c < valid) {
        const float p = expf(l[c] - m - lse);
        g = grad_scale * (c == t ? p - 1.0f : p);
      }
      d[c] = from_f32<TD>(g);
    }
  }
}

unsigned row_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(n, 1), 65535));
}

void check_f32(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    LIGER_CHECK(t->dtype() == DType::F32, "%s: the GPU path takes f32 logits and statistics, got %s", op,
                dtype_name(t->dtype()));
}

}  // namespace

void vocab_shard_max(Context& ctx, Tensor rowmax, const Tensor& logits, int64_t valid) {
  check_f32("vocab_shard_max", {&rowmax, &logits});
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  shard_max_kernel<<<row_blocks(n), kShardThreads, 0, stream_of(ctx)>>>(rowmax.ptr<float>(), logits.ptr<float>(), n,
                                                                        logits.dim(1), valid);
  CUDA_CHECK_LAUNCH();
}

void vocab_shard_sums(Context& ctx, Tensor sums, const Tensor& logits, const Tensor& rowmax, const Tensor& targets,
                      int64_t v0, int64_t valid) {
  check_f32("vocab_shard_sums", {&sums, &logits, &rowmax});
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  shard_sums_kernel<<<row_blocks(n), kShardThreads, 0, stream_of(ctx)>>>(
      sums.ptr<float>(), logits.ptr<float>(), rowmax.ptr<float>(), targets.ptr<int32_t>(), n, logits.dim(1), v0, valid);
  CUDA_CHECK_LAUNCH();
}

void vocab_shard_finish(Context& ctx, Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax,
                        const Tensor& sums, const Tensor& targets, int64_t v0, int64_t valid, float grad_scale) {
  check_f32("vocab_shard_finish", {&losses, &logits, &rowmax, &sums});
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  auto launch = [&](auto* d) {
    shard_finish_kernel<<<row_blocks(n), kShardThreads, 0, stream_of(ctx)>>>(
        losses.ptr<float>(), d, logits.ptr<float>(), rowmax.ptr<float>(), sums.ptr<float>(), targets.ptr<int32_t>(), n,
        logits.dim(1), v0, valid, grad_scale);
    CUDA_CHECK_LAUNCH();
  };
  if (!dlogits.defined()) return launch(static_cast<float*>(nullptr));
  dispatch_float(dlogits.dtype(), "vocab_shard_finish", [&](auto tag) {
    using TD = typename decltype(tag)::type;
    launch(dlogits.ptr<TD>());
  });
}

}  // namespace liger::ops::cuda
