// model/position_losses.h — the mean loss by position in the sequence (issue 12): what the recurrent branch of a Liger
// model does shows beyond the sliding window, and a mean over whole chunks hides it.
//
// The position of a predicted token is the number of tokens of context the model had for it: position t of the
// chunk predicts the token at t + 1 from t + 1 tokens, counted from the start of its document when documents restart
// inside the chunk (document-aware packing), from the start of the chunk when the text is one stream
// (pack_across_documents). Buckets: [0, 64), [64, 128), [128, 256), [256, 512), ... doubling up to the chunk length.
#pragma once

#include <cstdint>
#include <vector>

#include "core/json.h"
#include "model/train_step.h"

namespace liger {

class PositionLosses {
 public:
  explicit PositionLosses(int64_t max_len);
  // Adds the losses of one evaluated sequence: stats from eval_step on (1, T) targets, doc_starts as given to it
  // ({0} or empty: one stream).
  void add(const StepStats& stats, const std::vector<int32_t>& targets, const std::vector<int32_t>& doc_starts);
  // Merges the sums and counts of another instance with the same buckets (ranks of a data-parallel evaluation).
  void merge(const std::vector<double>& sums, const std::vector<double>& counts);

  size_t buckets() const { return edges_.size() - 1; }
  int64_t from(size_t b) const { return edges_[b]; }
  int64_t to(size_t b) const { return edges_[b + 1]; }
  double sum(size_t b) const { return sum_[b]; }
  int64_t count(size_t b) const { return static_cast<int64_t>(count_[b]); }
  double mean(size_t b) const;  // NaN for an empty bucket
  const std::vector<double>& sums() const { return sum_; }
  const std::vector<double>& counts() const { return count_; }
  Json to_json() const;  // [{"from", "to", "loss", "tokens"}, ...]

 private:
  std::vector<int64_t> edges_;
  std::vector<double> sum_, count_;
};

}  // namespace liger
