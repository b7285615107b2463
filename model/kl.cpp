#include "model/kl.h"

#include <cmath>
#include <vector>

#include "core/check.h"

namespace liger {

namespace {

// out[v] = x[v] - logsumexp(x), in fp64.
void log_softmax_row(const float* x, int64_t V, std::vector<double>& out) {
  double m = -INFINITY;
  for (int64_t v = 0; v < V; v++) m = std::max(m, static_cast<double>(x[v]));
  double s = 0.0;
  for (int64_t v = 0; v < V; v++) s += std::exp(static_cast<double>(x[v]) - m);
  const double lse = m + std::log(s);
  for (int64_t v = 0; v < V; v++) out[static_cast<size_t>(v)] = static_cast<double>(x[v]) - lse;
}

}  // namespace

double kl_divergence_sum(const Tensor& p_logits, const Tensor& q_logits) {
  LIGER_CHECK(p_logits.ndim() == 2 && p_logits.shape() == q_logits.shape() && p_logits.dtype() == DType::F32 &&
                  q_logits.dtype() == DType::F32,
              "kl_divergence_sum: logits %s and %s must be f32 (N, V) of one shape", p_logits.str().c_str(),
              q_logits.str().c_str());
  const int64_t N = p_logits.dim(0), V = p_logits.dim(1);
  const Tensor p = p_logits.to(Device::CPU), q = q_logits.to(Device::CPU);
  std::vector<double> lp(static_cast<size_t>(V)), lq(static_cast<size_t>(V));
  double sum = 0.0;
  for (int64_t n = 0; n < N; n++) {
    log_softmax_row(p.ptr<float>() + n * V, V, lp);
    log_softmax_row(q.ptr<float>() + n * V, V, lq);
    double kl = 0.0;
    for (size_t v = 0; v < lp.size(); v++) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
    sum += kl;
  }
  return sum;
}

}  // namespace liger
