#include "ops/swiglu.h"

#include <cmath>

namespace liger::ops::cpu {

void swiglu(Tensor out, const Tensor& gate, const Tensor& up) {
  const int64_t n = gate.numel();
  const float* g = gate.ptr<float>();
  const float* u = up.ptr<float>();
  float* o = out.ptr<float>();
  for (int64_t i = 0; i < n; i++) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace liger::ops::cpu
