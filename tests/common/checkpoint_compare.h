// tests/common/checkpoint_compare.h — two checkpoints hold the same bytes: the adapters and the optimizer state.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "train/checkpoint.h"

namespace liger::test {

// Reads the checkpoints in directories a and b (both of step `step`) and expects every tensor of the adapters and of
// the AdamW state to be byte-identical, in the same order under the same names.
inline void expect_same_checkpoint(const std::string& a, const std::string& b, int64_t step) {
  int64_t sa = 0, sb = 0;
  CheckpointData ca = read_checkpoint(a, &sa), cb = read_checkpoint(b, &sb);
  EXPECT_EQ(sa, step);
  EXPECT_EQ(sb, step);
  for (const char* group : {"adapter_model", "optimizer"}) {
    const auto& ta = ca.tensors.at(group).tensors;
    const auto& tb = cb.tensors.at(group).tensors;
    ASSERT_EQ(ta.size(), tb.size()) << group;
    for (size_t i = 0; i < ta.size(); i++) {
      ASSERT_EQ(ta[i].first, tb[i].first);
      ASSERT_EQ(ta[i].second.nbytes(), tb[i].second.nbytes()) << ta[i].first;
      EXPECT_EQ(std::memcmp(ta[i].second.data(), tb[i].second.data(), ta[i].second.nbytes()), 0) << ta[i].first;
    }
  }
}

}  // namespace liger::test
