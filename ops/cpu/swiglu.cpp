#include "ops/swiglu.h"

#include <cmath>

namespace liger::ops::cpu {

void swiglu(Tensor out, const Tensor& gate, const Tensor& up) {
  by_dtype(gate.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = gate.numel();
    const T* g = gate.ptr<T>();
    const T* u = up.ptr<T>();
    T* o = out.ptr<T>();
    for (int64_t i = 0; i < n; i++) o[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
  });
}

void swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  by_dtype(gate.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = gate.numel();
    const T* g = gate.ptr<T>();
    const T* u = up.ptr<T>();
    const T* dy = dout.ptr<T>();
    T* dg = dgate.ptr<T>();
    T* du = dup.ptr<T>();
    for (int64_t i = 0; i < n; i++) {
      const T gi = g[i], ui = u[i], dyi = dy[i];
      const T s = T(1) / (T(1) + std::exp(-gi));  // exp overflows to inf for g << 0: s = 0, no NaN
      dg[i] = dyi * ui * s * (T(1) + gi * (T(1) - s));
      du[i] = dyi * gi * s;
    }
  });
}

}  // namespace liger::ops::cpu
