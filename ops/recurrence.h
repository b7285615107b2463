// ops/recurrence.h — the gated linear recurrences behind Liger attention (liger-spec.md §2).
//
// linear_recurrence: the gated-linear-attention form shared by GLA, HGRN2 and GSA's second pass. Per KV head j, with
// a state S (K x Vd) that starts from `state` and is left there at the end:
//     S_t = Diag(exp(g_t)) S_{t-1} + fk_t (x) v_t          (decay first, then the current token is added)
//     out_t[h] = S_t^T fq_t[h]                              for every query head h of the group of j (scale 1)
// In the parallel form: out_t = sum_{s<=t} sum_c fq_t[c] fk_s[c] exp(G_t[c] - G_s[c]) v_s with G the running sum of
// the log-gates g <= 0 — computed chunk by chunk (within a chunk the exponents G_i - G_j, j <= i, are <= 0 and never
// overflow), never as products of gates.
//
// slot_scores: GSA's first pass (keys into M slots). Per KV head, a state Kt (M x d):
//     Kt_t = Diag(exp(g_t)) Kt_{t-1} + s_t (x) k_t ;   z_t[h] = Kt_t q_t[h]      (z in R^M)
//
// Both come as the chunked form (training and prefill) and the one-step form (decode); they agree to rounding.
//
// Dtypes: the CPU path takes every tensor f32 (or every tensor f64, for the finite-difference checks). The CUDA path
// (ops/cuda/recurrence.cu) takes the state tensors f32 and every other tensor f32 or bf16, all alike; it computes in
// fp32 (running log-gate sums, scores and the state) and rounds once when it stores an output.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void linear_recurrence(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g, Tensor state,
                       int64_t chunk);
void linear_recurrence_step(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                            Tensor state);
void slot_scores(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state,
                 int64_t chunk);
void slot_scores_step(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state);
void linear_recurrence_backward(Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout, const Tensor& fq,
                                const Tensor& fk, const Tensor& v, const Tensor& g, const Tensor& state0);
void slot_scores_backward(Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz, const Tensor& q,
                          const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& state0);
}  // namespace cpu
namespace cuda {
void linear_recurrence(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                       Tensor state, int64_t chunk);
void linear_recurrence_step(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v,
                            const Tensor& g, Tensor state);
void slot_scores(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                 Tensor state, int64_t chunk);
void slot_scores_step(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                      Tensor state);
void linear_recurrence_backward(Context& ctx, Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout,
                                const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                                const Tensor& state0);
void slot_scores_backward(Context& ctx, Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz, const Tensor& q,
                          const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& state0);
}  // namespace cuda

// The CUDA path's dtypes: `states` f32; every tensor of `ts` f32 or bf16, all alike.
inline void check_cuda_recurrence(const char* op, std::initializer_list<const Tensor*> states,
                                  std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : states)
    LIGER_CHECK(t->dtype() == DType::F32, "%s: the state must be f32 on the GPU, got %s", op, dtype_name(t->dtype()));
  const DType first = (*ts.begin())->dtype();
  LIGER_CHECK(first == DType::F32 || first == DType::BF16, "%s: the GPU path takes f32 or bf16 tensors, got %s", op,
              dtype_name(first));
  for (const Tensor* t : ts)
    LIGER_CHECK(t->dtype() == first, "%s: tensors mix %s and %s", op, dtype_name(first), dtype_name(t->dtype()));
}

// Shapes: fq (B, T, H, K), fk (B, T, HKV, K), v (B, T, HKV, Vd), g (B, T, HKV, K) log-gates (<= 0),
// state (B, HKV, K, Vd) f32 (in: the state before the first token; out: after the last), out (B, T, H, Vd) =.
inline void check_recurrence(const char* op, const Tensor& out, const Tensor& fq, const Tensor& fk, const Tensor& v,
                             const Tensor& g, const Tensor& state) {
  LIGER_CHECK(fq.ndim() == 4 && fk.ndim() == 4 && v.ndim() == 4, "%s: inputs must be (B, T, heads, dim)", op);
  const int64_t B = fq.dim(0), T = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  LIGER_CHECK(HKV > 0 && H % HKV == 0, "%s: %lld query heads do not group over %lld KV heads", op,
              static_cast<long long>(H), static_cast<long long>(HKV));
  check_shape(op, "fk", fk, {B, T, HKV, K});
  check_shape(op, "v", v, {B, T, HKV, Vd});
  check_shape(op, "g", g, {B, T, HKV, K});
  check_shape(op, "state", state, {B, HKV, K, Vd});
  check_shape(op, "out", out, {B, T, H, Vd});
}

inline void linear_recurrence(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v,
                              const Tensor& g, Tensor state, int64_t chunk = 64) {
  check_device(ctx, "linear_recurrence", {&out, &fq, &fk, &v, &g, &state});
  check_recurrence("linear_recurrence", out, fq, fk, v, g, state);
  LIGER_CHECK(chunk >= 1, "linear_recurrence: chunk must be >= 1");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence("linear_recurrence", {&state}, {&out, &fq, &fk, &v, &g});
    return cuda::linear_recurrence(ctx, out, fq, fk, v, g, state, chunk);
  }
#endif
  check_cpu_float("linear_recurrence", {&out, &fq, &fk, &v, &g, &state});
  cpu::linear_recurrence(out, fq, fk, v, g, state, chunk);
}

// The one-step form: T must be 1.
inline void linear_recurrence_step(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v,
                                   const Tensor& g, Tensor state) {
  check_device(ctx, "linear_recurrence_step", {&out, &fq, &fk, &v, &g, &state});
  check_recurrence("linear_recurrence_step", out, fq, fk, v, g, state);
  LIGER_CHECK(fq.dim(1) == 1, "linear_recurrence_step: one token at a time (T = %lld)",
              static_cast<long long>(fq.dim(1)));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence("linear_recurrence_step", {&state}, {&out, &fq, &fk, &v, &g});
    return cuda::linear_recurrence_step(ctx, out, fq, fk, v, g, state);
  }
#endif
  check_cpu_float("linear_recurrence_step", {&out, &fq, &fk, &v, &g, &state});
  cpu::linear_recurrence_step(out, fq, fk, v, g, state);
}

// Shapes: q (B, T, H, d), k (B, T, HKV, d), s (B, T, HKV, M) slot write weights, g (B, T, HKV, M) log-gates,
// state (B, HKV, M, d) f32, z (B, T, H, M) =.
inline void check_slot_scores(const char* op, const Tensor& z, const Tensor& q, const Tensor& k, const Tensor& s,
                              const Tensor& g, const Tensor& state) {
  LIGER_CHECK(q.ndim() == 4 && k.ndim() == 4 && s.ndim() == 4, "%s: inputs must be (B, T, heads, dim)", op);
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  LIGER_CHECK(HKV > 0 && H % HKV == 0, "%s: %lld query heads do not group over %lld KV heads", op,
              static_cast<long long>(H), static_cast<long long>(HKV));
  check_shape(op, "k", k, {B, T, HKV, d});
  check_shape(op, "s", s, {B, T, HKV, M});
  check_shape(op, "g", g, {B, T, HKV, M});
  check_shape(op, "state", state, {B, HKV, M, d});
  check_shape(op, "z", z, {B, T, H, M});
}

inline void slot_scores(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                        Tensor state, int64_t chunk = 64) {
  check_device(ctx, "slot_scores", {&z, &q, &k, &s, &g, &state});
  check_slot_scores("slot_scores", z, q, k, s, g, state);
  LIGER_CHECK(chunk >= 1, "slot_scores: chunk must be >= 1");
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence("slot_scores", {&state}, {&z, &q, &k, &s, &g});
    return cuda::slot_scores(ctx, z, q, k, s, g, state, chunk);
  }
#endif
  check_cpu_float("slot_scores", {&z, &q, &k, &s, &g, &state});
  cpu::slot_scores(z, q, k, s, g, state, chunk);
}

inline void slot_scores_step(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                             Tensor state) {
  check_device(ctx, "slot_scores_step", {&z, &q, &k, &s, &g, &state});
  check_slot_scores("slot_scores_step", z, q, k, s, g, state);
  LIGER_CHECK(q.dim(1) == 1, "slot_scores_step: one token at a time (T = %lld)", static_cast<long long>(q.dim(1)));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence("slot_scores_step", {&state}, {&z, &q, &k, &s, &g});
    return cuda::slot_scores_step(ctx, z, q, k, s, g, state);
  }
#endif
  check_cpu_float("slot_scores_step", {&z, &q, &k, &s, &g, &state});
  cpu::slot_scores_step(z, q, k, s, g, state);
}

// Backward of linear_recurrence over whole sequences starting from state0 (the training form; the final state's
// gradient is taken as zero): dfq (B, T, H, K), dfk (B, T, HKV, K), dv (B, T, HKV, Vd), dg (B, T, HKV, K) =, from
// dout (B, T, H, Vd). The outputs must not alias the inputs.
inline void linear_recurrence_backward(Context& ctx, Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout,
                                       const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                                       const Tensor& state0) {
  const char* op = "linear_recurrence_backward";
  check_device(ctx, op, {&dfq, &dfk, &dv, &dg, &dout, &fq, &fk, &v, &g, &state0});
  check_recurrence(op, dout, fq, fk, v, g, state0);
  check_shape(op, "dfq", dfq, fq.shape());
  check_shape(op, "dfk", dfk, fk.shape());
  check_shape(op, "dv", dv, v.shape());
  check_shape(op, "dg", dg, g.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence(op, {&state0}, {&dfq, &dfk, &dv, &dg, &dout, &fq, &fk, &v, &g});
    return cuda::linear_recurrence_backward(ctx, dfq, dfk, dv, dg, dout, fq, fk, v, g, state0);
  }
#endif
  check_cpu_float(op, {&dfq, &dfk, &dv, &dg, &dout, &fq, &fk, &v, &g, &state0});
  cpu::linear_recurrence_backward(dfq, dfk, dv, dg, dout, fq, fk, v, g, state0);
}

// Backward of slot_scores from state0: dq (B, T, H, d), dk (B, T, HKV, d), ds and dg (B, T, HKV, M) =, from dz
// (B, T, H, M); the final state's gradient is taken as zero. The outputs must not alias the inputs.
inline void slot_scores_backward(Context& ctx, Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz,
                                 const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                                 const Tensor& state0) {
  const char* op = "slot_scores_backward";
  check_device(ctx, op, {&dq, &dk, &ds, &dg, &dz, &q, &k, &s, &g, &state0});
  check_slot_scores(op, dz, q, k, s, g, state0);
  check_shape(op, "dq", dq, q.shape());
  check_shape(op, "dk", dk, k.shape());
  check_shape(op, "ds", ds, s.shape());
  check_shape(op, "dg", dg, g.shape());
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) {
    check_cuda_recurrence(op, {&state0}, {&dq, &dk, &ds, &dg, &dz, &q, &k, &s, &g});
    return cuda::slot_scores_backward(ctx, dq, dk, ds, dg, dz, q, k, s, g, state0);
  }
#endif
  check_cpu_float(op, {&dq, &dk, &ds, &dg, &dz, &q, &k, &s, &g, &state0});
  cpu::slot_scores_backward(dq, dk, ds, dg, dz, q, k, s, g, state0);
}

}  // namespace liger::ops
