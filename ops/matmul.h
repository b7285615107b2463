// ops/matmul.h — the linear layer: a GEMM against a weight stored [out, in] (HF layout), and its two gradients.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void matmul(Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate);
void matmul_backward_input(Tensor dx, const Tensor& dout, const Tensor& w, bool accumulate);
void matmul_weight_grad(Tensor dw, const Tensor& dout, const Tensor& x, bool accumulate);
}  // namespace cpu
namespace cuda {
void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate);
void matmul_backward_input(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& w, bool accumulate);
void matmul_weight_grad(Context& ctx, Tensor dw, const Tensor& dout, const Tensor& x, bool accumulate);
}  // namespace cuda

// out (M, N) = x (M, K) · w (N, K)^T [+ bias (N)]        (accumulate = false)
// out (M, N) += x (M, K) · w (N, K)^T [+ bias (N)]       (accumulate = true: the residual add of o_proj / down_proj)
// CPU: BLAS, f32 (or f64 for the gradient checks), every tensor of one dtype. CUDA: cuBLASLt, x and w of one dtype
// (bf16 or f32), fp32 accumulation (no tf32), out bf16 or f32.
inline void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias = nullptr,
                   bool accumulate = false) {
  check_device(ctx, "matmul", {&out, &x, &w});
  LIGER_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1), "matmul: x %s and w %s do not fit",
              x.shape().str().c_str(), w.shape().str().c_str());
  check_shape("matmul", "out", out, {x.dim(0), w.dim(0)});
  LIGER_CHECK(x.dtype() == w.dtype(), "matmul: x is %s but w is %s", dtype_name(x.dtype()), dtype_name(w.dtype()));
  if (bias) {
    check_device(ctx, "matmul", {bias});
    check_shape("matmul", "bias", *bias, {w.dim(0)});
  }
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::matmul(ctx, out, x, w, bias, accumulate);
#endif
  check_cpu_float("matmul", {&out, &x, &w});
  if (bias) check_cpu_float("matmul", {&out, bias});
  cpu::matmul(out, x, w, bias, accumulate);
}

// The input gradient of out = x w^T (the frozen base linear and LoRA's two factors):
//   dx (M, K) = dout (M, N) · w (N, K)         (accumulate = false)
//   dx (M, K) += dout (M, N) · w (N, K)        (accumulate = true: several branches feed one input)
// dx must not alias dout or w. CPU: BLAS, every tensor f32 (or f64). CUDA: cuBLASLt, dout and w of one dtype (bf16 or
// f32), fp32 accumulation (no tf32), dx of their dtype or f32.
inline void matmul_backward_input(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& w, bool accumulate) {
  const char* op = "matmul_backward_input";
  check_device(ctx, op, {&dx, &dout, &w});
  LIGER_CHECK(dout.ndim() == 2 && w.ndim() == 2 && dout.dim(1) == w.dim(0), "%s: dout %s and w %s do not fit", op,
              dout.shape().str().c_str(), w.shape().str().c_str());
  check_shape(op, "dx", dx, {dout.dim(0), w.dim(1)});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::matmul_backward_input(ctx, dx, dout, w, accumulate);
#endif
  check_cpu_float(op, {&dx, &dout, &w});
  cpu::matmul_backward_input(dx, dout, w, accumulate);
}

// The weight gradient of out = x w^T (used for the LoRA matrices A and B; frozen weights get none):
//   dw (N, K) = dout (M, N)^T · x (M, K)       (accumulate = false)
//   dw (N, K) += dout (M, N)^T · x (M, K)      (accumulate = true: gradient accumulation over micro-batches)
// dw must not alias dout or x. CPU: BLAS, every tensor f32 (or f64). CUDA: cuBLASLt, dout and x of one dtype (bf16 or
// f32), fp32 accumulation (no tf32), dw of their dtype or f32 (the f32 LoRA gradients of bf16 activations).
inline void matmul_weight_grad(Context& ctx, Tensor dw, const Tensor& dout, const Tensor& x, bool accumulate) {
  const char* op = "matmul_weight_grad";
  check_device(ctx, op, {&dw, &dout, &x});
  LIGER_CHECK(dout.ndim() == 2 && x.ndim() == 2 && dout.dim(0) == x.dim(0), "%s: dout %s and x %s do not fit", op,
              dout.shape().str().c_str(), x.shape().str().c_str());
  check_shape(op, "dw", dw, {dout.dim(1), x.dim(1)});
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::matmul_weight_grad(ctx, dw, dout, x, accumulate);
#endif
  check_cpu_float(op, {&dw, &dout, &x});
  cpu::matmul_weight_grad(dw, dout, x, accumulate);
}

}  // namespace liger::ops
