// model/liger_attention.h — one Liger attention layer (liger-spec.md §2-§3, §6): from the projections q, k, v it
// computes  mix_swa * SWA(RoPE(q), RoPE(k), v) + mix_recurrent * Recurrent(q, k, v).
//
// Two forms, equal to rounding (tests/model/test_liger.cpp):
//  - no state: the training / evaluation form over whole sequences from position 0 (chunked recurrence, windowed
//    attention over the sequence);
//  - with a LigerLayerState: prefill or decode continuing from `pos0`; the recurrence starts from the carried state and
//    the window reads the last `window` rotated keys/values kept in a ring buffer — so decoding is exact, unlike the
//    reference Python code, which keeps no window cache (spec §6.3). Memory is constant in the sequence length.
// CPU: f32 (and f64 for the gradient checks). GPU: f32 or bf16 storage; the layer computes in f32 inside.
#pragma once

#include "core/context.h"
#include "model/config.h"

namespace liger {

// The decode state of one Liger layer for B sequences.
struct LigerLayerState {
  Tensor ring_k, ring_v;  // (B, W, HKV, HS): rotated keys and values of the last W positions, slot = position % W
  Tensor state;           // (B, HKV, K, HS) f32: the recurrent state (K = HS for gla/hgrn2, M slots for gsa)
  Tensor slot_state;      // (B, HKV, M, HS) f32: gsa's first-pass state (keys into slots); empty otherwise
};

LigerLayerState make_liger_state(const ModelConfig& cfg, int64_t batch, DType dtype, Device device);

// att (B*T, H*HS) = the layer's attention output before W_O, from q (B*T, H*HS), k and v (B*T, HKV*HS) — the
// projections before RoPE — at positions pos0 .. pos0+T-1 (positions (B*T) i32 holds them). With st == nullptr,
// pos0 must be 0. inv_freq (HS/2) f32 is the model's RoPE table.
void liger_attention(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q, const Tensor& k,
                     const Tensor& v, const Tensor& positions, const Tensor& inv_freq, int64_t B, int64_t T,
                     int64_t pos0, LigerLayerState* st);

// The training form of liger_attention (no state, positions 0 .. T-1) that also hands back what the recurrent branch
// computed on the way, for model/diagnostics.h: att (B*T, H*HS) is the same output as liger_attention's (=), and
//   g      (B, T, HKV, K): the log-gates log(alpha) <= 0 (K = HS for gla/hgrn2, M slots for gsa),
//   state  (B, HKV, K, HS): the recurrent state after the last token (the value-slot state for gsa).
// The recurrent branch runs here even when mix_recurrent = 0 (the SWA-only ablation), so the gates always exist.
struct LigerIntermediates {
  Tensor g;      // (B, T, HKV, K)
  Tensor state;  // (B, HKV, K, HS)
};
LigerIntermediates liger_attention_intermediates(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q,
                                                 const Tensor& k, const Tensor& v, const Tensor& positions,
                                                 const Tensor& inv_freq, int64_t B, int64_t T);

// The training form's backward: dq (B*T, H*HS), dk and dv (B*T, HKV*HS) = the gradients of the projections before
// RoPE, from datt (B*T, H*HS), the gradient of liger_attention's output (no state, positions 0 .. T-1).
void liger_attention_backward(Context& ctx, const ModelConfig& cfg, const Tensor& datt, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& inv_freq,
                              int64_t B, int64_t T, Tensor dq, Tensor dk, Tensor dv);

}  // namespace liger
