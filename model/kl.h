// model/kl.h — the KL divergence of one model's next-token distribution from another's, row by row of their logits
// (liger select-layers: how far a Liger model is from its base model, and how much restoring one layer to softmax
// attention brings it back).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace liger {

// Sum over the N rows of p_logits, q_logits (N, V) f32 (any device; copied to the host) of
//   KL(P || Q) = sum_v P_v (log P_v - log Q_v),  P = softmax(p_logits row), Q = softmax(q_logits row),
// each row's log-softmax in fp64 (max subtracted first).
double kl_divergence_sum(const Tensor& p_logits, const Tensor& q_logits);

}  // namespace liger
