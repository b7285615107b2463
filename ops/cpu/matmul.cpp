#include "ops/matmul.h"

#include <cblas.h>

namespace liger::ops::cpu {

void matmul(Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  if (M == 0 || N == 0) return;
  float* o = out.ptr<float>();
  if (bias) {
    // Bias first so the GEMM can accumulate on top of it.
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) o[m * N + n] = (accumulate ? o[m * N + n] : 0.0f) + bias->ptr<float>()[n];
    accumulate = true;
  }
  // Row-major: out (M, N) = x (M, K) * w (N, K)^T.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
              1.0f, x.ptr<float>(), static_cast<int>(K), w.ptr<float>(), static_cast<int>(K), accumulate ? 1.0f : 0.0f,
              o, static_cast<int>(N));
}

}  // namespace liger::ops::cpu
