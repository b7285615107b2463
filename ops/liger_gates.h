// ops/liger_gates.h — the element-wise pieces of a Liger layer (liger-spec.md §2): the gates made from the key
// projection (or q, or v) and their write weights, and the GQA group mean used when the gate comes from q.
//
// liger_gates, from the gate source s (N, HKV, HS) with K = g's last dimension dividing HS (per = HS / K channels
// pooled into each gate; per = 1 for GLA and HGRN2, HS / M for GSA's M slots):
//     lambda = mean of s over each group of `per` channels              (N, HKV, K)
//     g      = logsigmoid(lambda) / norm                                (N, HKV, K) log-gates <= 0      `=`
//     fk     = 1 - exp(g) = -expm1(g)        only when fk is given      (N, HKV, K) write weights      `=`
// GLA: norm 16, no fk (its write vector is softmax(k)); HGRN2: norm 1 with fk; GSA: norm 16, per = HS / M, with fk.
// logsigmoid(x) = min(x, 0) - log1p(exp(-|x|)) (no overflow).
//
// liger_gates_backward, from dg (and dfk when fk was produced), with sigmoid(-lambda) = d logsigmoid / d lambda:
//     dg'    = dg - dfk * exp(g)               (dg when there is no fk)
//     ds     = dg' / norm * sigmoid(-lambda) / per      on every channel of the group               `=`
//
// group_mean: out (N, HKV, HS) = the mean of x (N, H, HS) over the H / HKV query heads of each KV group (`=`);
// group_mean_backward: dx (N, H, HS) += dout (N, HKV, HS) / (H / HKV) on every head of the group.
//
// CPU: f32 (or f64 for the gradient checks), every tensor of one dtype. CUDA: f32 or bf16, one dtype; fp32 math.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void liger_gates(Tensor g, Tensor fk, const Tensor& s, float norm);
void liger_gates_backward(Tensor ds, const Tensor& dg, const Tensor& dfk, const Tensor& s, const Tensor& g, float norm);
void group_mean(Tensor out, const Tensor& x);
void group_mean_backward(Tensor dx, const Tensor& dout);
}  // namespace cpu
namespace cuda {
void liger_gates(Context& ctx, Tensor g, Tensor fk, const Tensor& s, float norm);
void liger_gates_backward(Context& ctx, Tensor ds, const Tensor& dg, const Tensor& dfk, const Tensor& s,
                          const Tensor& g, float norm);
void group_mean(Context& ctx, Tensor out, const Tensor& x);
void group_mean_backward(Context& ctx, Tensor dx, const Tensor& dout);
}  // namespace cuda

inline void check_gates(const char* op, const Tensor& g, const Tensor& s, float norm) {
  LIGER_CHECK(s.ndim() == 3 && g.ndim() == 3 && g.dim(0) == s.dim(0) && g.dim(1) == s.dim(1) && g.dim(2) > 0 &&
                  s.dim(2) % g.dim(2) == 0,
              "%s: gate source %s and gates %s do not fit ((N, HKV, HS) and (N, HKV, K), K dividing HS)", op,
              s.shape().str().c_str(), g.shape().str().c_str());
  LIGER_CHECK(norm > 0, "%s: the gate normalizer must be > 0", op);
}

inline void check_float_dtypes(const Context& ctx, const char* op, std::initializer_list<const Tensor*> ts) {
  if (!ctx.is_cuda()) return check_cpu_float(op, ts);
  const DType first = (*ts.begin())->dtype();
  LIGER_CHECK(first == DType::F32 || first == DType::BF16, "%s: the GPU path takes f32 or bf16 tensors, got %s", op,
              dtype_name(first));
  for (const Tensor* t : ts)
    LIGER_CHECK(t->dtype() == first, "%s: tensors mix %s and %s", op, dtype_name(first), dtype_name(t->dtype()));
}

// fk: pass an undefined Tensor() for GLA.
inline void liger_gates(Context& ctx, Tensor g, Tensor fk, const Tensor& s, float norm) {
  const char* op = "liger_gates";
  check_device(ctx, op, {&g, &s});
  check_gates(op, g, s, norm);
  if (fk.defined()) {
    check_device(ctx, op, {&fk});
    check_shape(op, "fk", fk, g.shape());
    check_float_dtypes(ctx, op, {&g, &fk, &s});
  } else {
    check_float_dtypes(ctx, op, {&g, &s});
  }
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::liger_gates(ctx, g, fk, s, norm);
#endif
  cpu::liger_gates(g, fk, s, norm);
}

// dfk: undefined exactly when the forward had no fk. ds must not alias the inputs.
inline void liger_gates_backward(Context& ctx, Tensor ds, const Tensor& dg, const Tensor& dfk, const Tensor& s,
                                 const Tensor& g, float norm) {
  const char* op = "liger_gates_backward";
  check_device(ctx, op, {&ds, &dg, &s, &g});
  check_gates(op, g, s, norm);
  check_shape(op, "ds", ds, s.shape());
  check_shape(op, "dg", dg, g.shape());
  if (dfk.defined()) {
    check_device(ctx, op, {&dfk});
    check_shape(op, "dfk", dfk, g.shape());
    check_float_dtypes(ctx, op, {&ds, &dg, &dfk, &s, &g});
  } else {
    check_float_dtypes(ctx, op, {&ds, &dg, &s, &g});
  }
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::liger_gates_backward(ctx, ds, dg, dfk, s, g, norm);
#endif
  cpu::liger_gates_backward(ds, dg, dfk, s, g, norm);
}

inline void check_group(const char* op, const Tensor& grouped, const Tensor& heads) {
  LIGER_CHECK(grouped.ndim() == 3 && heads.ndim() == 3 && grouped.dim(0) == heads.dim(0) &&
                  grouped.dim(2) == heads.dim(2) && grouped.dim(1) > 0 && heads.dim(1) % grouped.dim(1) == 0,
              "%s: %s does not group %s ((N, HKV, HS) over (N, H, HS))", op, grouped.shape().str().c_str(),
              heads.shape().str().c_str());
}

inline void group_mean(Context& ctx, Tensor out, const Tensor& x) {
  check_device(ctx, "group_mean", {&out, &x});
  check_group("group_mean", out, x);
  check_float_dtypes(ctx, "group_mean", {&out, &x});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::group_mean(ctx, out, x);
#endif
  cpu::group_mean(out, x);
}

inline void group_mean_backward(Context& ctx, Tensor dx, const Tensor& dout) {
  check_device(ctx, "group_mean_backward", {&dx, &dout});
  check_group("group_mean_backward", dout, dx);
  check_float_dtypes(ctx, "group_mean_backward", {&dx, &dout});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::group_mean_backward(ctx, dx, dout);
#endif
  cpu::group_mean_backward(dx, dout);
}

}  // namespace liger::ops
