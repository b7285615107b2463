#include "model/position_losses.h"

#include <cmath>

#include "core/check.h"

namespace liger {

PositionLosses::PositionLosses(int64_t max_len) {
  LIGER_CHECK(max_len >= 1, "position buckets need a length >= 1");
  edges_ = {0};
  int64_t e = 64;
  while (edges_.back() < max_len) {
    edges_.push_back(std::min(e, max_len));
    e *= 2;
  }
  sum_.assign(buckets(), 0.0);
  count_.assign(buckets(), 0.0);
}

void PositionLosses::add(const StepStats& stats, const std::vector<int32_t>& targets,
                         const std::vector<int32_t>& doc_starts) {
  LIGER_CHECK(stats.token_losses.size() == targets.size(), "PositionLosses: %zu losses for %zu targets",
              stats.token_losses.size(), targets.size());
  size_t doc = 0;
  for (size_t t = 0; t < targets.size(); t++) {
    while (doc + 1 < doc_starts.size() && static_cast<size_t>(doc_starts[doc + 1]) <= t) doc++;
    if (targets[t] == -100) continue;
    const int64_t pos = static_cast<int64_t>(t) - (doc_starts.empty() ? 0 : doc_starts[doc]);
    size_t b = 0;
    while (b + 1 < buckets() && pos >= edges_[b + 1]) b++;
    sum_[b] += stats.token_losses[t];
    count_[b] += 1;
  }
}

void PositionLosses::merge(const std::vector<double>& sums, const std::vector<double>& counts) {
  LIGER_CHECK(sums.size() == buckets() && counts.size() == buckets(), "PositionLosses: merging other buckets");
  for (size_t b = 0; b < buckets(); b++) sum_[b] += sums[b], count_[b] += counts[b];
}

double PositionLosses::mean(size_t b) const {
  return count_[b] > 0 ? sum_[b] / count_[b] : NAN;
}

Json PositionLosses::to_json() const {
  Json a = Json::array();
  for (size_t b = 0; b < buckets(); b++) {
    const double m = mean(b);
    a.push_back({{"from", from(b)}, {"to", to(b)}, {"loss", std::isfinite(m) ? Json(m) : Json(nullptr)},
                 {"tokens", count(b)}});
  }
  return a;
}

}  // namespace liger
