#include "ops/matmul.h"

#include <cblas.h>

#include <algorithm>

namespace liger::ops::cpu {

namespace {

// Row-major C (m, n) = op(A) op(B) + beta C through BLAS: sgemm for float, dgemm for double.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb,
          float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* A, int64_t lda, const double* B, int64_t ldb,
          double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}

// C (m, n) (=|+=) op(A) op(B). An empty inner dimension (k = 0: no rows in a weight gradient) gives C = 0 or leaves C
// as it is, without calling BLAS (which rejects a leading dimension of 0).
template <class T>
void gemm_acc(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb,
              bool accumulate, T* C) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) std::fill(C, C + m * n, T(0));
    return;
  }
  gemm(ta, tb, m, n, k, A, lda, B, ldb, accumulate ? T(1) : T(0), C, n);
}

template <class T>
void matmul_t(Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  if (M == 0 || N == 0) return;
  T* o = out.ptr<T>();
  if (bias) {
    // Bias first so the GEMM can accumulate on top of it.
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) o[m * N + n] = (accumulate ? o[m * N + n] : T(0)) + bias->ptr<T>()[n];
    accumulate = true;
  }
  // Row-major: out (M, N) = x (M, K) * w (N, K)^T.
  gemm(false, true, M, N, K, x.ptr<T>(), K, w.ptr<T>(), K, accumulate ? T(1) : T(0), o, N);
}

}  // namespace

void matmul(Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate) {
  by_dtype(x.dtype(), [&](auto zero) { matmul_t<decltype(zero)>(out, x, w, bias, accumulate); });
}

// dx (M, K) = dout (M, N) * w (N, K).
void matmul_backward_input(Tensor dx, const Tensor& dout, const Tensor& w, bool accumulate) {
  by_dtype(dx.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t M = dout.dim(0), N = dout.dim(1), K = w.dim(1);
    gemm_acc<T>(false, false, M, K, N, dout.ptr<T>(), N, w.ptr<T>(), K, accumulate, dx.ptr<T>());
  });
}

// dw (N, K) = dout (M, N)^T * x (M, K).
void matmul_weight_grad(Tensor dw, const Tensor& dout, const Tensor& x, bool accumulate) {
  by_dtype(dw.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t M = dout.dim(0), N = dout.dim(1), K = x.dim(1);
    gemm_acc<T>(true, false, N, K, M, dout.ptr<T>(), N, x.ptr<T>(), K, accumulate, dw.ptr<T>());
  });
}

}  // namespace liger::ops::cpu
