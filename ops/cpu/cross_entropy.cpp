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

}  // namespace liger::ops::cpu
