#include "ops/softmax.h"

#include <algorithm>
#include <cmath>

namespace liger::ops::cpu {

namespace {

// The sum of exponentials and the log in fp64 on both paths; T = float rounds the result to fp32.
template <class T>
void softmax_t(Tensor out, const Tensor& x, bool log) {
  const int64_t N = x.dim(0), V = x.dim(1);
  for (int64_t n = 0; n < N; n++) {
    const T* xr = x.ptr<T>() + n * V;
    T* o = out.ptr<T>() + n * V;
    T mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = std::max(mx, xr[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) sum += std::exp(static_cast<double>(xr[i] - mx));
    const double lse = std::log(sum);
    for (int64_t i = 0; i < V; i++) {
      const double l = static_cast<double>(xr[i] - mx) - lse;
      o[i] = static_cast<T>(log ? l : std::exp(l));
    }
  }
}

template <class T>
void softmax_backward_t(Tensor dx, const Tensor& dy, const Tensor& y) {
  const int64_t N = y.dim(0), V = y.dim(1);
  for (int64_t n = 0; n < N; n++) {
    const T* yr = y.ptr<T>() + n * V;
    const T* dyr = dy.ptr<T>() + n * V;
    T* dxr = dx.ptr<T>() + n * V;
    double dot = 0.0;
    for (int64_t i = 0; i < V; i++) dot += static_cast<double>(dyr[i]) * yr[i];
    const T d = static_cast<T>(dot);
    for (int64_t i = 0; i < V; i++) dxr[i] = yr[i] * (dyr[i] - d);
  }
}

}  // namespace

void softmax(Tensor out, const Tensor& x, bool log) {
  by_dtype(x.dtype(), [&](auto zero) { softmax_t<decltype(zero)>(out, x, log); });
}

void softmax_backward(Tensor dx, const Tensor& dy, const Tensor& y) {
  by_dtype(y.dtype(), [&](auto zero) { softmax_backward_t<decltype(zero)>(dx, dy, y); });
}

}  // namespace liger::ops::cpu
