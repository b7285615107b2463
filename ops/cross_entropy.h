// ops/cross_entropy.h — the fused LM head + cross-entropy: per-token losses (and the hidden states' gradient) without
// ever holding the whole (tokens x vocabulary) logits, only one block of rows of them at a time.
#pragma once

#include <cstdint>
#include <functional>

#include "ops/common.h"

namespace liger::ops {

// A target equal to this is not supervised (a prompt token, padding): loss 0 and no gradient (as torch's ignore_index).
constexpr int32_t kIgnoreTarget = -100;

namespace cpu {
void vocab_shard_max(Tensor rowmax, const Tensor& logits, int64_t valid);
void vocab_shard_sums(Tensor sums, const Tensor& logits, const Tensor& rowmax, const Tensor& targets, int64_t v0,
                      int64_t valid);
void vocab_shard_finish(Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax, const Tensor& sums,
                        const Tensor& targets, int64_t v0, int64_t valid, float grad_scale);
void lm_head_cross_entropy(Tensor losses, Tensor dh, const Tensor& h, const Tensor& w, const Tensor& targets,
                           float grad_scale, int64_t block_rows);
}  // namespace cpu
namespace cuda {
void vocab_shard_max(Context& ctx, Tensor rowmax, const Tensor& logits, int64_t valid);
void vocab_shard_sums(Context& ctx, Tensor sums, const Tensor& logits, const Tensor& rowmax, const Tensor& targets,
                      int64_t v0, int64_t valid);
void vocab_shard_finish(Context& ctx, Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax,
                        const Tensor& sums, const Tensor& targets, int64_t v0, int64_t valid, float grad_scale);
void lm_head_cross_entropy(Context& ctx, Tensor losses, Tensor dh, const Tensor& h, const Tensor& w,
                           const Tensor& targets, float grad_scale, int64_t block_rows);
}  // namespace cuda

// With logits = h (N, D) · w (V, D)^T (h the final-normed hidden states, w the LM head) and p = softmax(logits) per
// row, for every row n:
//   losses (N) = -log p[n, targets[n]]                                           `=`  (0 where targets[n] = -100)
//   dh (N, D)  = grad_scale * (p[n] - onehot(targets[n])) · w                   `=`  (0 where targets[n] = -100)
// so dh is the gradient of grad_scale * sum(losses) (grad_scale = 1 / the number of supervised tokens for a mean).
// dh is optional: pass an undefined Tensor() for the forward alone (evaluation). targets (N) i32, each in [0, V) or
// -100; any other value is an Error naming its row, raised before anything is written. Rows are processed
// `block_rows` at a time: the logits of one block, (block_rows, V), are the only vocabulary-sized buffer (on the GPU
// with, for bf16, a second one of bf16 dlogits).
// CPU: f32 (or f64 for the gradient checks), losses, dh, h and w of one dtype; the log-sum-exp is accumulated in fp64
// on both instantiations. CUDA: h and w of one dtype (bf16 or f32), losses f32, dh the dtype of h; fp32 logits
// (cuBLASLt, fp32 accumulation), fp32 log-sum-exp. dh must not alias h or w.
inline void lm_head_cross_entropy(Context& ctx, Tensor losses, Tensor dh, const Tensor& h, const Tensor& w,
                                  const Tensor& targets, float grad_scale, int64_t block_rows = 256) {
  const char* op = "lm_head_cross_entropy";
  check_device(ctx, op, {&losses, &h, &w, &targets});
  if (dh.defined()) check_device(ctx, op, {&dh});
  LIGER_CHECK(h.ndim() == 2 && w.ndim() == 2 && h.dim(1) == w.dim(1) && h.dim(1) > 0 && w.dim(0) > 0,
              "%s: h %s and w %s do not fit (h (N, D), w (V, D))", op, h.shape().str().c_str(),
              w.shape().str().c_str());
  LIGER_CHECK(targets.dtype() == DType::I32, "%s: targets must be i32, got %s", op, dtype_name(targets.dtype()));
  check_shape(op, "targets", targets, {h.dim(0)});
  check_shape(op, "losses", losses, {h.dim(0)});
  if (dh.defined()) check_shape(op, "dh", dh, h.shape());
  LIGER_CHECK(block_rows >= 1, "%s: block_rows must be >= 1, got %lld", op, static_cast<long long>(block_rows));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    LIGER_CHECK(h.dtype() == w.dtype() && (h.dtype() == DType::BF16 || h.dtype() == DType::F32),
                "%s: on the GPU h and w must both be bf16 or both f32, got h %s and w %s", op, dtype_name(h.dtype()),
                dtype_name(w.dtype()));
    LIGER_CHECK(losses.dtype() == DType::F32, "%s: on the GPU losses must be f32, got %s", op,
                dtype_name(losses.dtype()));
    LIGER_CHECK(!dh.defined() || dh.dtype() == h.dtype(), "%s: dh must have the dtype of h (%s), got %s", op,
                dtype_name(h.dtype()), dtype_name(dh.dtype()));
    return cuda::lm_head_cross_entropy(ctx, losses, dh, h, w, targets, grad_scale, block_rows);
  }
#endif
  check_cpu_float(op, {&losses, &h, &w});
  if (dh.defined()) check_cpu_float(op, {&losses, &dh});
  cpu::lm_head_cross_entropy(losses, dh, h, w, targets, grad_scale, block_rows);
}

// ---- vocab-parallel cross-entropy (tensor parallelism, DESIGN.md §5) ----------------------------------------------
// A rank holds the columns [v0, v0 + Vs) of the logits (its rows of the LM head); the first `valid` of them are real
// vocabulary entries, the rest padding (a vocabulary that tp does not divide). Three row passes around two
// all-reduces give the same losses and gradients as lm_head_cross_entropy without any rank holding the full logits:
//   vocab_shard_max:    rowmax (n)      = max over the valid local columns                       `=`  (all-reduce max)
//   vocab_shard_sums:   sums (2, n)     = [sum_c exp(l - rowmax), l[t - v0] - rowmax or 0]        `=`  (all-reduce sum)
//   vocab_shard_finish: losses (n)      = log(sums[0]) - sums[1]                                  `=`  (0 for t = -100)
//                       dlogits (n, Vs) = grad_scale * (exp(l - rowmax) / sums[0] - onehot(t - v0)) `=` (0: padding,
//                                         ignored rows; optional; may alias logits when both are f32)
// logits (n, Vs): f32 on the GPU (dlogits f32 or bf16), f32 or f64 on the CPU (everything one dtype); rowmax and sums
// f32 on the GPU, the logits' dtype on the CPU; targets (n) i32, -100 or a global vocabulary id.
inline void vocab_shard_max(Context& ctx, Tensor rowmax, const Tensor& logits, int64_t valid) {
  check_device(ctx, "vocab_shard_max", {&rowmax, &logits});
  LIGER_CHECK(logits.ndim() == 2 && valid >= 0 && valid <= logits.dim(1), "vocab_shard_max: logits %s, valid %lld",
              logits.str().c_str(), static_cast<long long>(valid));
  check_shape("vocab_shard_max", "rowmax", rowmax, {logits.dim(0)});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::vocab_shard_max(ctx, rowmax, logits, valid);
#endif
  check_cpu_float("vocab_shard_max", {&rowmax, &logits});
  cpu::vocab_shard_max(rowmax, logits, valid);
}
inline void vocab_shard_sums(Context& ctx, Tensor sums, const Tensor& logits, const Tensor& rowmax,
                             const Tensor& targets, int64_t v0, int64_t valid) {
  check_device(ctx, "vocab_shard_sums", {&sums, &logits, &rowmax, &targets});
  LIGER_CHECK(logits.ndim() == 2 && valid >= 0 && valid <= logits.dim(1), "vocab_shard_sums: logits %s, valid %lld",
              logits.str().c_str(), static_cast<long long>(valid));
  check_shape("vocab_shard_sums", "sums", sums, {2, logits.dim(0)});
  check_shape("vocab_shard_sums", "rowmax", rowmax, {logits.dim(0)});
  check_shape("vocab_shard_sums", "targets", targets, {logits.dim(0)});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::vocab_shard_sums(ctx, sums, logits, rowmax, targets, v0, valid);
#endif
  check_cpu_float("vocab_shard_sums", {&sums, &logits, &rowmax});
  cpu::vocab_shard_sums(sums, logits, rowmax, targets, v0, valid);
}
inline void vocab_shard_finish(Context& ctx, Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax,
                               const Tensor& sums, const Tensor& targets, int64_t v0, int64_t valid,
                               float grad_scale) {
  check_device(ctx, "vocab_shard_finish", {&losses, &logits, &rowmax, &sums, &targets});
  const int64_t n = logits.dim(0);
  check_shape("vocab_shard_finish", "losses", losses, {n});
  check_shape("vocab_shard_finish", "sums", sums, {2, n});
  if (dlogits.defined()) check_shape("vocab_shard_finish", "dlogits", dlogits, logits.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda())
    return cuda::vocab_shard_finish(ctx, losses, dlogits, logits, rowmax, sums, targets, v0, valid, grad_scale);
#endif
  check_cpu_float("vocab_shard_finish", {&losses, &logits, &rowmax, &sums});
  if (dlogits.defined()) check_cpu_float("vocab_shard_finish", {&logits, &dlogits});
  cpu::vocab_shard_finish(losses, dlogits, logits, rowmax, sums, targets, v0, valid, grad_scale);
}

// How the composite below reaches the other ranks of its tensor-parallel group: t = max (is_max) or sum over them.
using ShardAllReduce = std::function<void(Tensor t, bool is_max)>;

// lm_head_cross_entropy over a vocabulary split across ranks: w (Vs, D) is this rank's rows [v0, v0 + Vs) of the LM
// head (`valid` of them real), h (N, D) the full hidden states on every rank. losses (N) `=` and dh (N, D) `=` (full,
// after the final all-reduce; optional) equal the single-rank op's to rounding. Rows go `block_rows` at a time, with
// three all-reduces per block (a row max, two row sums) and one of dh at the end.
void vocab_parallel_cross_entropy(Context& ctx, Tensor losses, Tensor dh, const Tensor& h, const Tensor& w,
                                  const Tensor& targets, int64_t v0, int64_t valid, float grad_scale,
                                  const ShardAllReduce& all_reduce, int64_t block_rows = 256);

}  // namespace liger::ops
