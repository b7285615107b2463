// model/diagnostics.h — how far a Liger model's attention is from the softmax attention it replaced, and what its
// gates remember, measured layer by layer on real text (`liger eval --diagnostics`).
//
// forward_with_diagnostics runs the model's forward layer by layer (the training form: positions 0 .. T-1, no cache),
// with LoRA adapters applied unmerged when given, and for every Liger layer l measures, on the hidden states that
// enter l in this same forward and from the same q, k, v (after the adapted projections and the q/k norms):
//
//   rel error      ||att_liger - att_softmax|| / ||att_softmax||, where att_* is the attention output before W_O
//                  (B, T, H, HS) and att_softmax is the ORIGINAL attention of the base model on these q, k, v: RoPE
//                  on q and k, causal softmax, scale 1/sqrt(HS), the base model's sliding_window (0: every earlier
//                  token). Over several calls: sqrt(sum of squared errors) / sqrt(sum of squared references).
//   mean gate      the mean of alpha = exp(g) over tokens, KV heads and gate channels (K = HS; M slots for gsa).
//   memory length  the mean over the same elements of 1 / (1 - alpha). A channel with decay alpha weighs what was
//                  written s tokens ago by alpha^s, and sum_{s >= 0} alpha^s = 1 / (1 - alpha): the number of recent
//                  tokens the channel effectively sums over, its decay horizon in tokens (1 = only the current token;
//                  +inf without a gate, alpha = 1). It is the mean of the horizons, not the horizon of the mean gate,
//                  so a few slow channels can dominate it; it is >= 1 / (1 - mean gate) (Jensen).
//   state norm     the Frobenius norm of the recurrent state after the last token, per sequence and KV head,
//                  averaged (K x HS per KV head; the value-slot state for gsa).
//
// Softmax layers (not Liger, or kept by the inter-layer hybrid) get no entry. CPU path (f32, or f64), like the
// Liger layers themselves.
#pragma once

#include <vector>

#include "model/llama.h"
#include "model/lora.h"

namespace liger {

// The figures of one Liger layer, accumulated over calls.
struct LayerDiagnostics {
  int64_t layer = 0;            // index among all layers
  double err_sq = 0.0;          // sum of (att_liger - att_softmax)^2
  double ref_sq = 0.0;          // sum of att_softmax^2
  double gate_sum = 0.0;        // sum of alpha
  double memory_sum = 0.0;      // sum of 1 / (1 - alpha) (+inf as soon as one alpha is 1)
  int64_t gate_count = 0;       // alphas summed
  double state_norm_sum = 0.0;  // sum of ||S||_F over (sequence, KV head)
  int64_t state_count = 0;      // states summed

  double rel_error() const;      // sqrt(err_sq / ref_sq)
  double mean_gate() const;      // gate_sum / gate_count
  double memory_length() const;  // memory_sum / gate_count
  double state_norm() const;     // state_norm_sum / state_count
};

// One entry per Liger layer of the model, in layer order (filled on the first call).
struct LigerDiagnostics {
  std::vector<LayerDiagnostics> layers;
};

// logits (B, T, V) f32 = the forward of ids (B, T) i32 (a host tensor) at positions 0 .. T-1, with `lora` applied
// unmerged (null: none), computed layer by layer; an undefined `logits` skips the LM head. When `diag` is not null
// the Liger layers' figures of this batch are added to it. doc_starts (optional, B = 1) as for eval_step: every
// packed document runs as if alone (its own positions from 0, window and state restarting), so each is measured as
// a sequence of its own (and its final state is one of the states averaged). The model must be on the CPU.
void forward_with_diagnostics(LlamaModel& model, const LoraAdapters* lora, const Tensor& ids, Tensor logits,
                              LigerDiagnostics* diag, const std::vector<int32_t>* doc_starts = nullptr);

}  // namespace liger
