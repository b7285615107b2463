#include "ops/rope.h"

#include <cmath>

namespace liger::ops {

std::vector<float> rope_inv_freq(const RopeConfig& cfg) {
  LIGER_CHECK(cfg.head_dim > 0 && cfg.head_dim % 2 == 0, "rope: head_dim %lld must be even",
              static_cast<long long>(cfg.head_dim));
  const int64_t half = cfg.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; i++) {
    double f = 1.0 / std::pow(cfg.theta, static_cast<double>(2 * i) / static_cast<double>(cfg.head_dim));
    if (cfg.type == RopeConfig::Type::Llama3) {
      // transformers _compute_llama3_parameters: wavelengths longer than old_len / low_freq_factor are divided by
      // factor, shorter than old_len / high_freq_factor kept, the band between blended linearly in
      // smooth = (old_len / wavelen - low) / (high - low).
      const double old_len = static_cast<double>(cfg.original_max_position);
      const double low_wavelen = old_len / cfg.low_freq_factor;
      const double high_wavelen = old_len / cfg.high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / cfg.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (old_len / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
        f = (1.0 - smooth) * f / cfg.factor + smooth * f;
      }
    }
    inv[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return inv;
}

namespace cpu {

namespace {

// Rotates every head of every row by +a (sign = 1, the forward) or -a (sign = -1, the backward), a = pos * inv_freq
// computed in fp32 in both instantiations (as transformers computes freqs); cos and sin in T.
template <class T>
void rotate(Tensor x, const Tensor& positions, const Tensor& inv_freq, T sign) {
  const int64_t N = x.dim(0), NH = x.dim(1), HS = x.dim(2), half = HS / 2;
  for (int64_t n = 0; n < N; n++) {
    const float pos = static_cast<float>(positions.ptr<int32_t>()[n]);
    for (int64_t i = 0; i < half; i++) {
      const float a = pos * inv_freq.ptr<float>()[i];
      const T c = std::cos(static_cast<T>(a)), s = sign * std::sin(static_cast<T>(a));
      for (int64_t h = 0; h < NH; h++) {
        T* p = x.ptr<T>() + (n * NH + h) * HS;
        const T x1 = p[i], x2 = p[i + half];
        p[i] = x1 * c - x2 * s;
        p[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace

void rope(Tensor x, const Tensor& positions, const Tensor& inv_freq) {
  by_dtype(x.dtype(), [&](auto zero) { rotate<decltype(zero)>(x, positions, inv_freq, 1); });
}

void rope_backward(Tensor dx, const Tensor& positions, const Tensor& inv_freq) {
  by_dtype(dx.dtype(), [&](auto zero) { rotate<decltype(zero)>(dx, positions, inv_freq, -1); });
}

}  // namespace cpu
}  // namespace liger::ops
