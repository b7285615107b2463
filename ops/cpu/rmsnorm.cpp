#include "ops/rmsnorm.h"

#include <cmath>

namespace liger::ops::cpu {

namespace {

// 1 / sqrt(mean(x^2) + eps) of one row, the sum of squares in fp64 (the f32 path rounds the result to fp32).
template <class T>
double inv_rms(const T* xr, int64_t D, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < D; i++) ss += static_cast<double>(xr[i]) * xr[i];
  return 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
}

template <class T>
void rmsnorm_t(Tensor out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.dim(0), D = x.dim(1);
  const T* wr = w.ptr<T>();
  for (int64_t n = 0; n < N; n++) {
    const T* xr = x.ptr<T>() + n * D;
    T* orow = out.ptr<T>() + n * D;
    const T rstd = static_cast<T>(inv_rms(xr, D, eps));
    for (int64_t i = 0; i < D; i++) orow[i] = xr[i] * rstd * wr[i];
  }
}

// y_i = x_i r w_i with r = (sum_j x_j^2 / D + eps)^(-1/2), dr/dx_j = -r^3 x_j / D:
//   dx_i = r w_i dy_i - x_i r^3 / D * sum_j dy_j w_j x_j.
template <class T>
void rmsnorm_backward_t(Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.dim(0), D = x.dim(1);
  const T* wr = w.ptr<T>();
  for (int64_t n = 0; n < N; n++) {
    const T* xr = x.ptr<T>() + n * D;
    const T* dy = dout.ptr<T>() + n * D;
    T* dxr = dx.ptr<T>() + n * D;
    const double r = inv_rms(xr, D, eps);
    double dot = 0.0;  // sum_j dy_j w_j x_j
    for (int64_t i = 0; i < D; i++) dot += static_cast<double>(dy[i]) * wr[i] * xr[i];
    const T a = static_cast<T>(r), c = static_cast<T>(r * r * r * dot / static_cast<double>(D));
    for (int64_t i = 0; i < D; i++) dxr[i] += a * wr[i] * dy[i] - xr[i] * c;
  }
}

}  // namespace

void rmsnorm(Tensor out, const Tensor& x, const Tensor& w, float eps) {
  by_dtype(x.dtype(), [&](auto zero) { rmsnorm_t<decltype(zero)>(out, x, w, eps); });
}

void rmsnorm_backward(Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w, float eps) {
  by_dtype(x.dtype(), [&](auto zero) { rmsnorm_backward_t<decltype(zero)>(dx, dout, x, w, eps); });
}

}  // namespace liger::ops::cpu
