#include "ops/liger_gates.h"

#include <algorithm>
#include <cmath>

namespace liger::ops::cpu {

namespace {

template <class T>
inline T logsigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::fabs(x)));
}
template <class T>
inline T sigmoid(T x) {
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
}

// The mean of the `per` channels of group m of row r (per = 1: the channel itself, exactly).
template <class T>
inline T pooled(const T* s, int64_t r, int64_t m, int64_t HS, int64_t per) {
  if (per == 1) return s[r * HS + m];
  T acc = 0;
  for (int64_t c = 0; c < per; c++) acc += s[r * HS + m * per + c];
  return acc / static_cast<T>(per);
}

}  // namespace

void liger_gates(Tensor g, Tensor fk, const Tensor& s, float norm) {
  by_dtype(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = s.dim(0) * s.dim(1), HS = s.dim(2), K = g.dim(2), per = HS / K;
    const T nrm = static_cast<T>(norm);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t m = 0; m < K; m++) {
        const T gi = logsigmoid(pooled(s.ptr<T>(), r, m, HS, per)) / nrm;
        g.ptr<T>()[r * K + m] = gi;
        if (fk.defined()) fk.ptr<T>()[r * K + m] = -std::expm1(gi);
      }
  });
}

void liger_gates_backward(Tensor ds, const Tensor& dg, const Tensor& dfk, const Tensor& s, const Tensor& g,
                          float norm) {
  by_dtype(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = s.dim(0) * s.dim(1), HS = s.dim(2), K = g.dim(2), per = HS / K;
    const T nrm = static_cast<T>(norm);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t m = 0; m < K; m++) {
        const int64_t i = r * K + m;
        T dgi = dg.ptr<T>()[i];
        if (dfk.defined()) dgi -= dfk.ptr<T>()[i] * std::exp(g.ptr<T>()[i]);
        const T lambda = pooled(s.ptr<T>(), r, m, HS, per);
        T d = dgi / nrm * sigmoid(-lambda);
        if (per != 1) d /= static_cast<T>(per);
        for (int64_t c = 0; c < per; c++) ds.ptr<T>()[r * HS + m * per + c] = d;
      }
  });
}

void group_mean(Tensor out, const Tensor& x) {
  by_dtype(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = x.dim(0), H = x.dim(1), HS = x.dim(2), HKV = out.dim(1), G = H / HKV;
    for (int64_t n = 0; n < N; n++)
      for (int64_t j = 0; j < HKV; j++)
        for (int64_t c = 0; c < HS; c++) {
          T acc = 0;
          for (int64_t h = j * G; h < (j + 1) * G; h++) acc += x.ptr<T>()[(n * H + h) * HS + c] / static_cast<T>(G);
          out.ptr<T>()[(n * HKV + j) * HS + c] = acc;
        }
  });
}

void group_mean_backward(Tensor dx, const Tensor& dout) {
  by_dtype(dx.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = dx.dim(0), H = dx.dim(1), HS = dx.dim(2), HKV = dout.dim(1), G = H / HKV;
    for (int64_t n = 0; n < N; n++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t c = 0; c < HS; c++)
          dx.ptr<T>()[(n * H + h) * HS + c] += dout.ptr<T>()[(n * HKV + h / G) * HS + c] / static_cast<T>(G);
  });
}

}  // namespace liger::ops::cpu
