#include "ops/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace liger::ops::cpu {

void sample(Tensor ids, const Tensor& logits, float temperature, float top_p, const Tensor& uniforms) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  std::vector<float> p(static_cast<size_t>(V));
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits.ptr<float>() + n * V;
    if (temperature <= 0.0f) {
      ids.ptr<int32_t>()[n] = static_cast<int32_t>(std::max_element(l, l + V) - l);  // first maximum
      continue;
    }
    float mx = *std::max_element(l, l + V);
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) {
      p[static_cast<size_t>(i)] = std::exp((l[i] - mx) / temperature);
      sum += p[static_cast<size_t>(i)];
    }
    for (float& e : p) e = static_cast<float>(e / sum);
    // tau: walk the probabilities from the largest down until the kept mass reaches top_p; ties at tau all stay in.
    float tau = 0.0f;
    if (top_p < 1.0f) {
      std::vector<float> sorted(p);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      double mass = 0.0;
      for (float e : sorted) {
        mass += e;
        tau = e;
        if (mass >= top_p) break;
      }
    }
    double nucleus = 0.0;
    for (float e : p)
      if (e >= tau) nucleus += e;
    const double target = static_cast<double>(uniforms.ptr<float>()[n]) * nucleus;
    double run = 0.0;
    int32_t choice = -1;
    for (int64_t i = 0; i < V; i++) {
      if (p[static_cast<size_t>(i)] < tau) continue;
      choice = static_cast<int32_t>(i);
      run += p[static_cast<size_t>(i)];
      if (run > target) break;
    }
    ids.ptr<int32_t>()[n] = choice;
  }
}

}  // namespace liger::ops::cpu
