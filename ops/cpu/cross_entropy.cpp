#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "ops/matmul.h"

namespace liger::ops::cpu {

namespace {

template <class T>
void lm_head_cross_entropy_t(Tensor losses, Tensor dh, const Tensor& h, const Tensor& w, const Tensor& targets,
                             float grad_scale, int64_t block_rows) {
  const int64_t N = h.dim(0), V = w.dim(0);
  const int32_t* tgt = targets.ptr<int32_t>();
  const int64_t block = std::min(block_rows, N);
  if (block == 0) return;
  Tensor logits = Tensor::empty({block, V}, h.dtype(), Device::CPU);  // (block, V): one block's logits, then dlogits
  for (int64_t r0 = 0; r0 < N; r0 += block) {
    const int64_t nb = std::min(block, N - r0);
    Tensor lb = logits.slice(0, nb);
    matmul(lb, h.slice(r0, nb), w, nullptr, false);  // (nb, V) = h (nb, D) · w (V, D)^T
    for (int64_t i = 0; i < nb; i++) {
      T* l = lb.ptr<T>() + i * V;
      const int32_t t = tgt[r0 + i];
      if (t == kIgnoreTarget) {
        losses.ptr<T>()[r0 + i] = T(0);
        std::fill(l, l + V, T(0));  // no gradient from this row
        continue;
      }
      T mx = -INFINITY;
      for (int64_t c = 0; c < V; c++) mx = std::max(mx, l[c]);
      double sum = 0.0;
      for (int64_t c = 0; c < V; c++) sum += std::exp(static_cast<double>(l[c] - mx));
      const double lse = std::log(sum);  // log-sum-exp of (l - mx)
      losses.ptr<T>()[r0 + i] = static_cast<T>(lse - static_cast<double>(l[t] - mx));
      if (!dh.defined()) continue;
      // dlogits = grad_scale * (softmax - onehot(t)), in place.
      for (int64_t c = 0; c < V; c++)
        l[c] = static_cast<T>(grad_scale * std::exp(static_cast<double>(l[c] - mx) - lse));
      l[t] -= static_cast<T>(grad_scale);
    }
    if (dh.defined()) matmul_backward_input(dh.slice(r0, nb), lb, w, false);  // (nb, D) = dlogits (nb, V) · w (V, D)
  }
}

}  // namespace

void lm_head_cross_entropy(Tensor losses, Tensor dh, const Tensor& h, const Tensor& w, const Tensor& targets,
                           float grad_scale, int64_t block_rows) {
  const int64_t N = h.dim(0), V = w.dim(0);
  const int32_t* tgt = targets.ptr<int32_t>();
  for (int64_t n = 0; n < N; n++) {  // every target first, so that a bad one leaves the outputs untouched
    LIGER_CHECK(tgt[n] == kIgnoreTarget || (tgt[n] >= 0 && tgt[n] < V),
                "lm_head_cross_entropy: target %d of row %lld is outside the vocabulary [0, %lld) (%d marks an "
                "ignored token)",
                tgt[n], static_cast<long long>(n), static_cast<long long>(V), kIgnoreTarget);
  }
  by_dtype(h.dtype(), [&](auto zero) {
    lm_head_cross_entropy_t<decltype(zero)>(losses, dh, h, w, targets, grad_scale, block_rows);
  });
}

namespace {

template <class T>
void shard_max_t(Tensor rowmax, const Tensor& logits, int64_t valid) {
  const int64_t n = logits.dim(0), Vs = logits.dim(1);
  for (int64_t r = 0; r < n; r++) {
    const T* l = logits.ptr<T>() + r * Vs;
    T m = -INFINITY;
    for (int64_t c = 0; c < valid; c++) m = std::max(m, l[c]);
    rowmax.ptr<T>()[r] = m;
  }
}

template <class T>
void shard_sums_t(Tensor sums, const Tensor& logits, const Tensor& rowmax, const Tensor& targets, int64_t v0,
                  int64_t valid) {
  const int64_t n = logits.dim(0), Vs = logits.dim(1);
  for (int64_t r = 0; r < n; r++) {
    const T* l = logits.ptr<T>() + r * Vs;
    const T m = rowmax.ptr<T>()[r];
    double s = 0.0;
    for (int64_t c = 0; c < valid; c++) s += std::exp(static_cast<double>(l[c] - m));
    const int64_t t = static_cast<int64_t>(targets.ptr<int32_t>()[r]) - v0;
    sums.ptr<T>()[r] = static_cast<T>(s);
    sums.ptr<T>()[n + r] = t >= 0 && t < valid ? l[t] - m : T(0);
  }
}

template <class T>
void shard_finish_t(Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax, const Tensor& sums,
                    const Tensor& targets, int64_t v0, int64_t valid, float grad_scale) {
  const int64_t n = logits.dim(0), Vs = logits.dim(1);
  for (int64_t r = 0; r < n; r++) {
    const int32_t tg = targets.ptr<int32_t>()[r];
    const double lse = std::log(static_cast<double>(sums.ptr<T>()[r]));
    losses.ptr<T>()[r] = tg == kIgnoreTarget ? T(0) : static_cast<T>(lse - static_cast<double>(sums.ptr<T>()[n + r]));
    if (!dlogits.defined()) continue;
    const T* l = logits.ptr<T>() + r * Vs;
    T* d = dlogits.ptr<T>() + r * Vs;
    const T m = rowmax.ptr<T>()[r];
    const int64_t t = static_cast<int64_t>(tg) - v0;
    for (int64_t c = 0; c < Vs; c++) {
      if (tg == kIgnoreTarget || c >= valid) {
        d[c] = T(0);
        continue;
      }
      const double p = std::exp(static_cast<double>(l[c] - m) - lse);
      d[c] = static_cast<T>(grad_scale * p - (c == t ? static_cast<double>(grad_scale) : 0.0));
    }
  }
}

}  // namespace

void vocab_shard_max(Tensor rowmax, const Tensor& logits, int64_t valid) {
  by_dtype(logits.dtype(), [&](auto zero) { shard_max_t<decltype(zero)>(rowmax, logits, valid); });
}
void vocab_shard_sums(Tensor sums, const Tensor& logits, const Tensor& rowmax, const Tensor& targets, int64_t v0,
                      int64_t valid) {
  by_dtype(logits.dtype(), [&](auto zero) { shard_sums_t<decltype(zero)>(sums, logits, rowmax, targets, v0, valid); });
}
void vocab_shard_finish(Tensor losses, Tensor dlogits, const Tensor& logits, const Tensor& rowmax, const Tensor& sums,
                        const Tensor& targets, int64_t v0, int64_t valid, float grad_scale) {
  by_dtype(logits.dtype(), [&](auto zero) {
    shard_finish_t<decltype(zero)>(losses, dlogits, logits, rowmax, sums, targets, v0, valid, grad_scale);
  });
}

}  // namespace liger::ops::cpu
