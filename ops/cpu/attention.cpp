#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace liger::ops::cpu {

namespace {

// The first key position that query position `pos` sees.
inline int64_t first_key(int64_t pos, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
}

// p[s - s_lo] = softmax over s in [s_lo, pos] of scale * q . k_s (unnormalized: exp(score - max)); returns the sum
// of p, accumulated in fp64. T = float is the model's path (scores and exponentials in fp32), T = double the gradient
// checks' twin.
template <class T>
double softmax_row(const T* qr, const Tensor& k, int64_t b, int64_t j, int64_t s_lo, int64_t pos, float scale,
                   std::vector<T>* p) {
  const int64_t S = k.dim(1), HKV = k.dim(2), HS = k.dim(3);
  p->assign(static_cast<size_t>(pos - s_lo + 1), T(0));
  T mx = -INFINITY;
  for (int64_t s = s_lo; s <= pos; s++) {
    const T* kr = k.ptr<T>() + ((b * S + s) * HKV + j) * HS;
    T dot = T(0);
    for (int64_t i = 0; i < HS; i++) dot += qr[i] * kr[i];
    (*p)[static_cast<size_t>(s - s_lo)] = dot * scale;
    mx = std::max<T>(mx, dot * scale);
  }
  double sum = 0.0;
  for (T& e : *p) {
    e = std::exp(e - mx);
    sum += e;
  }
  return sum;
}

template <class T>
void attention_t(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, float scale,
                 int64_t window) {
  const int64_t B = q.dim(0), TT = q.dim(1), H = q.dim(2), HS = q.dim(3), S = k.dim(1), HKV = k.dim(2);
  const int64_t G = H / HKV;
  std::vector<T> p;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < TT; t++) {
      const int64_t pos = pos0 + t;
      const int64_t s_lo = first_key(pos, window);
      for (int64_t h = 0; h < H; h++) {
        const int64_t j = h / G;
        const T* qr = q.ptr<T>() + ((b * TT + t) * H + h) * HS;
        const double sum = softmax_row<T>(qr, k, b, j, s_lo, pos, scale, &p);
        T* o = out.ptr<T>() + ((b * TT + t) * H + h) * HS;
        std::fill(o, o + HS, T(0));
        for (int64_t s = s_lo; s <= pos; s++) {
          const T w = static_cast<T>(p[static_cast<size_t>(s - s_lo)] / sum);
          const T* vr = v.ptr<T>() + ((b * S + s) * HKV + j) * HS;
          for (int64_t i = 0; i < HS; i++) o[i] += w * vr[i];
        }
      }
    }
  }
}

// Per query row (b, t, h) with probabilities P_s over its keys: dP_s = dout . v_s, D = sum_s P_s dP_s,
// dS_s = P_s (dP_s - D); dq = scale sum_s dS_s k_s; dk_s += scale dS_s q; dv_s += P_s dout.
template <class T>
void attention_backward_t(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                          const Tensor& v, float scale, int64_t window) {
  const int64_t B = q.dim(0), TT = q.dim(1), H = q.dim(2), HS = q.dim(3), HKV = k.dim(2);
  const int64_t G = H / HKV;
  std::fill(dk.ptr<T>(), dk.ptr<T>() + dk.numel(), T(0));
  std::fill(dv.ptr<T>(), dv.ptr<T>() + dv.numel(), T(0));
  std::vector<T> p, dp;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < TT; t++) {
      const int64_t s_lo = first_key(t, window);
      for (int64_t h = 0; h < H; h++) {
        const int64_t j = h / G;
        const size_t row = static_cast<size_t>(((b * TT + t) * H + h) * HS);
        const T* qr = q.ptr<T>() + row;
        const T* dor = dout.ptr<T>() + row;
        T* dqr = dq.ptr<T>() + row;
        const double sum = softmax_row<T>(qr, k, b, j, s_lo, t, scale, &p);
        dp.assign(p.size(), T(0));
        T D = T(0);
        for (int64_t s = s_lo; s <= t; s++) {
          const size_t si = static_cast<size_t>(s - s_lo);
          p[si] = static_cast<T>(p[si] / sum);
          const T* vr = v.ptr<T>() + ((b * TT + s) * HKV + j) * HS;
          T acc = T(0);
          for (int64_t i = 0; i < HS; i++) acc += dor[i] * vr[i];
          dp[si] = acc;
          D += p[si] * acc;
        }
        std::fill(dqr, dqr + HS, T(0));
        for (int64_t s = s_lo; s <= t; s++) {
          const size_t si = static_cast<size_t>(s - s_lo);
          const T ds = p[si] * (dp[si] - D) * scale;
          const size_t kv = static_cast<size_t>(((b * TT + s) * HKV + j) * HS);
          const T* kr = k.ptr<T>() + kv;
          T* dkr = dk.ptr<T>() + kv;
          T* dvr = dv.ptr<T>() + kv;
          for (int64_t i = 0; i < HS; i++) {
            dqr[i] += ds * kr[i];
            dkr[i] += ds * qr[i];
            dvr[i] += p[si] * dor[i];
          }
        }
      }
    }
  }
}

}  // namespace

void attention(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, int64_t kv_len,
               float scale, int64_t window) {
  (void)kv_len;  // keys beyond the last query's position are masked anyway
  by_dtype(q.dtype(), [&](auto zero) { attention_t<decltype(zero)>(out, q, k, v, pos0, scale, window); });
}

void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, float scale, int64_t window) {
  by_dtype(q.dtype(),
           [&](auto zero) { attention_backward_t<decltype(zero)>(dq, dk, dv, dout, q, k, v, scale, window); });
}

void kv_write(Tensor cache, const Tensor& src, int64_t pos0) {
  const int64_t B = src.dim(0), T = src.dim(1), S = cache.dim(1);
  const size_t row = static_cast<size_t>(src.dim(2) * src.dim(3)) * dtype_size(src.dtype());
  for (int64_t b = 0; b < B; b++) {
    std::memcpy(static_cast<char*>(cache.data()) + static_cast<size_t>(b * S + pos0) * row,
                static_cast<const char*>(src.data()) + static_cast<size_t>(b * T) * row, static_cast<size_t>(T) * row);
  }
}

}  // namespace liger::ops::cpu
