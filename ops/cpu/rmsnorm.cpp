#include "ops/rmsnorm.h"

#include <cmath>

namespace liger::ops::cpu {

void rmsnorm(Tensor out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.dim(0), D = x.dim(1);
  for (int64_t n = 0; n < N; n++) {
    const float* xr = x.ptr<float>() + n * D;
    float* orow = out.ptr<float>() + n * D;
    double ss = 0.0;
    for (int64_t i = 0; i < D; i++) ss += static_cast<double>(xr[i]) * xr[i];
    float rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + eps));
    for (int64_t i = 0; i < D; i++) orow[i] = xr[i] * rstd * w.ptr<float>()[i];
  }
}

}  // namespace liger::ops::cpu
