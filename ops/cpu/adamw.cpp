#include "ops/adamw.h"

#include <cmath>

namespace liger::ops::cpu {

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
  for (int64_t i = 0; i < n; i++) {
    const float gs = g[i] * s.grad_scale;
    float pi = p[i];
    pi -= s.decay * pi;
    const float mi = s.beta1 * m[i] + s.one_minus_beta1 * gs;
    const float vi = s.beta2 * v[i] + s.one_minus_beta2 * gs * gs;
    const float denom = std::sqrt(vi) / s.bias_correction2_sqrt + s.eps;
    pi -= s.step_size * (mi / denom);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

double sum_squares(const float* x, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; i++) acc += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return acc;
}

}  // namespace liger::ops::cpu
