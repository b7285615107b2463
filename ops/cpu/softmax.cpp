#include "ops/softmax.h"

#include <algorithm>
#include <cmath>

namespace liger::ops::cpu {

void softmax(Tensor out, const Tensor& x, bool log) {
  const int64_t N = x.dim(0), V = x.dim(1);
  for (int64_t n = 0; n < N; n++) {
    const float* xr = x.ptr<float>() + n * V;
    float* o = out.ptr<float>() + n * V;
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = std::max(mx, xr[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) sum += std::exp(static_cast<double>(xr[i] - mx));
    const double lse = std::log(sum);
    for (int64_t i = 0; i < V; i++) {
      const double l = static_cast<double>(xr[i] - mx) - lse;
      o[i] = static_cast<float>(log ? l : std::exp(l));
    }
  }
}

}  // namespace liger::ops::cpu
