// ops/cross_entropy.cpp — the vocab-parallel cross-entropy composite (ops/cross_entropy.h): the LM head matmul, the
// three row passes and their all-reduces, on either device (the passes dispatch to ops/cpu or ops/cuda).
#include <algorithm>

#include "ops/cross_entropy.h"
#include "ops/matmul.h"

namespace liger::ops {

void vocab_parallel_cross_entropy(Context& ctx, Tensor losses, Tensor dh, const Tensor& h, const Tensor& w,
                                  const Tensor& targets, int64_t v0, int64_t valid, float grad_scale,
                                  const ShardAllReduce& all_reduce, int64_t block_rows) {
  const char* op = "vocab_parallel_cross_entropy";
  check_device(ctx, op, {&losses, &h, &w, &targets});
  LIGER_CHECK(h.ndim() == 2 && w.ndim() == 2 && h.dim(1) == w.dim(1), "%s: h %s and w %s do not fit", op,
              h.shape().str().c_str(), w.shape().str().c_str());
  LIGER_CHECK(block_rows >= 1, "%s: block_rows must be >= 1", op);
  const int64_t N = h.dim(0), Vs = w.dim(0);
  if (N == 0) return;
  const int64_t block = std::min(block_rows, N);
  const DType lt = ctx.is_cuda() ? DType::F32 : h.dtype();  // logits and row statistics
  const Device dev = ctx.device();
  Tensor logits = Tensor::empty({block, Vs}, lt, dev);
  Tensor rowmax = Tensor::empty({block}, lt, dev);
  Tensor sums = Tensor::empty({2, block}, lt, dev);
  Tensor dlogits;  // the logits buffer itself unless the GPU wants them in bf16
  if (dh.defined()) dlogits = w.dtype() == lt ? logits : Tensor::empty({block, Vs}, w.dtype(), dev);
  // Losses in the statistics' dtype for the CPU twin (f32 or f64), f32 on the GPU: the caller's tensor.
  for (int64_t r0 = 0; r0 < N; r0 += block) {
    const int64_t nb = std::min(block, N - r0);
    Tensor lb = logits.slice(0, nb), mb = rowmax.slice(0, nb);
    Tensor sb = nb == block ? sums : Tensor::empty({2, nb}, lt, dev);
    matmul(ctx, lb, h.slice(r0, nb), w, nullptr, false);  // (nb, Vs) = h (nb, D) · w (Vs, D)^T
    vocab_shard_max(ctx, mb, lb, valid);
    all_reduce(mb, /*is_max=*/true);
    const Tensor tb = targets.slice(r0, nb);
    vocab_shard_sums(ctx, sb, lb, mb, tb, v0, valid);
    all_reduce(sb, /*is_max=*/false);
    Tensor db = dh.defined() ? dlogits.slice(0, nb) : Tensor();
    vocab_shard_finish(ctx, losses.slice(r0, nb), db, lb, mb, sb, tb, v0, valid, grad_scale);
    if (dh.defined()) matmul_backward_input(ctx, dh.slice(r0, nb), db, w, false);  // partial: this rank's columns
  }
  if (dh.defined()) all_reduce(dh, /*is_max=*/false);
}

}  // namespace liger::ops
