#include "model/liger_attention.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <optional>

#include "core/check.h"
#include "core/timer.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/liger_gates.h"
#include "ops/recurrence.h"
#include "ops/rope.h"
#include "ops/softmax.h"

namespace liger {

namespace {

using Variant = LigerConfig::Variant;

// The dtype a Liger layer computes in: the CPU path in the tensors' own f32 (or f64 for the gradient checks); the GPU
// path in the model's storage dtype (bf16: the feature maps, gates, rotated q/k and the window attention stored in
// bf16 with fp32 arithmetic, the recurrence on the tensor cores), the recurrent states in fp32 always. On the 20-step
// GPU curve of the bundled recipe this moves the losses by at most 1.5e-3 relative from the CPU's (1.1e-3 with the
// internals widened to f32; docs/PERFORMANCE.md). LIGER_GPU_LIGER_F32=1 widens them to f32 as before (for
// comparisons): 1.8x slower on the 8B shape.
DType compute_dtype_on(Device device, DType storage) {
  static const bool widen = [] {
    const char* e = std::getenv("LIGER_GPU_LIGER_F32");
    return e && e[0] == '1';
  }();
  if (device != Device::CUDA) return storage;
  return storage == DType::BF16 && !widen ? DType::BF16 : DType::F32;
}
DType compute_dtype(const Context& ctx, DType storage) {
  return compute_dtype_on(ctx.device(), storage);
}
// Recurrent states are fp32 whatever the storage (f64 in the gradient checks).
Tensor state_zeros(const Tensor& like_t, Shape s) {
  return Tensor::zeros(s, like_t.dtype() == DType::F64 ? DType::F64 : DType::F32, like_t.device());
}

Tensor like(const Tensor& t, Shape s) {
  return Tensor::empty(s, t.dtype(), t.device());
}
Tensor zeros_like(const Tensor& t, Shape s) {
  return Tensor::zeros(s, t.dtype(), t.device());
}
Tensor copy_of(const Tensor& t) {
  Tensor c = like(t, t.shape());
  copy(c, t);
  return c;
}
// Rows [src_row, src_row + n) of src (rows, cols) into rows [dst_row, ...) of dst: one copy, on either device.
void copy_rows(Tensor dst, int64_t dst_row, const Tensor& src, int64_t src_row, int64_t n) {
  if (n > 0) copy(dst.slice(dst_row, n), src.slice(src_row, n));
}

// Everything the recurrent and window branches compute from q, k, v (kept for the backward).
struct Branches {
  Tensor src;       // (N, HKV, HS) gate pre-activation
  Tensor g;         // (B, T, HKV, K) log-gates (K = HS, or M for gsa)
  Tensor fq;        // (B, T, H, K) read vectors: softmax(q) (gla/hgrn2) or p = softmax(z) (gsa)
  Tensor fk;        // (B, T, HKV, K) write vectors: softmax(k) (gla), 1 - alpha (hgrn2, gsa)
  Tensor rec, swa;  // (B, T, H, HS)
  Tensor qr, kr;    // (N, H, HS), (N, HKV, HS) rotated for the window branch
};

// One layer's computation for B sequences of T tokens; q, k, v in the compute dtype.
struct Liger {
  Context& ctx;
  const ModelConfig& cfg;
  const LigerConfig& lc;
  int64_t B, T_, H, HKV, HS, N, M;

  Liger(Context& c, const ModelConfig& m, int64_t b, int64_t t)
      : ctx(c),
        cfg(m),
        lc(m.liger),
        B(b),
        T_(t),
        H(m.local_heads()),
        HKV(m.local_kv_heads()),
        HS(m.head_dim),
        N(b * t),
        M(m.liger.gsa_slots) {}

  int64_t K() const { return lc.variant == Variant::Gsa ? M : HS; }
  // log alpha = logsigmoid(.) / norm: 16 for gla and gsa (spec §2.1, §2.3), none for hgrn2 (§2.2).
  float gate_norm() const { return lc.variant == Variant::Hgrn2 ? 1.0f : 16.0f; }

  // The gate pre-activation per KV head: k or v as they are, q averaged over each GQA group.
  Tensor gate_source(const Tensor& q, const Tensor& k, const Tensor& v) const {
    switch (lc.gate_source) {
      case LigerConfig::GateSource::K:
        return k.view({N, HKV, HS});
      case LigerConfig::GateSource::V:
        return v.view({N, HKV, HS});
      case LigerConfig::GateSource::Q:
        break;
    }
    Tensor src = like(q, {N, HKV, HS});
    ops::group_mean(ctx, src, q.view({N, H, HS}));
    return src;
  }

  // The recurrent branch into br->rec; `st` carries the state (decode/prefill), else it starts from zero.
  void recurrent(const Tensor& q, const Tensor& k, const Tensor& v, LigerLayerState* st, Branches* br) const {
    ProfileScope prof(ctx, "liger recurrent branch (fwd)");
    br->src = gate_source(q, k, v);
    const Tensor v4 = v.view({B, T_, HKV, HS});
    const bool step = st != nullptr && T_ == 1;
    const int64_t K = this->K();
    br->g = like(q, {B, T_, HKV, K});
    br->fk = like(q, {B, T_, HKV, K});
    const Tensor g3 = br->g.view({N, HKV, K}), fk3 = br->fk.view({N, HKV, K});
    if (lc.variant == Variant::Gla) {
      // log alpha = logsigmoid(gate source) / 16 (spec §2.1), or 0 without a gate; fk = softmax(k); fq = softmax(q).
      if (lc.gate)
        ops::liger_gates(ctx, g3, Tensor(), br->src, gate_norm());
      else
        br->g = zeros_like(q, {B, T_, HKV, K});  // no gate: log alpha = 0 (alpha = 1)
      ops::softmax(ctx, br->fk.view({N * HKV, HS}), k.view({N * HKV, HS}));
    } else {
      // hgrn2: log alpha = logsigmoid(f), the key slot 1 - alpha (spec §2.2). gsa (§2.3): lambda = the mean of each
      // group of HS/M channels, log alpha = logsigmoid(lambda)/16, s = 1 - alpha.
      ops::liger_gates(ctx, g3, fk3, br->src, gate_norm());
    }
    if (lc.variant == Variant::Gsa) {
      // z = slot scores of raw q against raw k; fq = p = softmax(z) over the slots.
      br->fq = like(q, {B, T_, H, M});
      Tensor slot_state = st ? st->slot_state : state_zeros(q, {B, HKV, M, HS});
      const Tensor q4 = q.view({B, T_, H, HS}), k4 = k.view({B, T_, HKV, HS});
      if (step)
        ops::slot_scores_step(ctx, br->fq, q4, k4, br->fk, br->g, slot_state);
      else
        ops::slot_scores(ctx, br->fq, q4, k4, br->fk, br->g, slot_state, lc.chunk);
      ops::softmax(ctx, br->fq.view({N * H, M}), br->fq.view({N * H, M}));
    } else {
      br->fq = like(q, {B, T_, H, HS});
      ops::softmax(ctx, br->fq.view({N * H, HS}), q.view({N * H, HS}));
    }
    br->rec = like(q, {B, T_, H, HS});
    Tensor state = st ? st->state : state_zeros(q, {B, HKV, K, HS});
    if (step)
      ops::linear_recurrence_step(ctx, br->rec, br->fq, br->fk, v4, br->g, state);
    else
      ops::linear_recurrence(ctx, br->rec, br->fq, br->fk, v4, br->g, state, lc.chunk);
  }

  // The window branch into br->swa: RoPE on q and k, softmax attention over the current token and the `window`
  // before it, scale 1/sqrt(HS). With a state, the earlier positions come from the ring buffer.
  void window(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& inv_freq,
              int64_t pos0, LigerLayerState* st, Branches* br) const {
    ProfileScope prof(ctx, "liger window branch (fwd)");
    const int64_t W = lc.window;
    const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
    br->qr = copy_of(q).view({N, H, HS});
    br->kr = copy_of(k).view({N, HKV, HS});
    ops::rope(ctx, br->qr, positions, inv_freq);
    ops::rope(ctx, br->kr, positions, inv_freq);
    br->swa = like(q, {B, T_, H, HS});
    const Tensor kr4 = br->kr.view({B, T_, HKV, HS}), v4 = v.view({B, T_, HKV, HS});
    if (!st) {
      ops::attention(ctx, br->swa, br->qr.view({B, T_, H, HS}), kr4, v4, 0, T_, scale, W + 1);
      return;
    }
    // Keys of positions pos0 - P .. pos0 + T - 1 laid out contiguously: P from the ring, then this call's T. Ring
    // slots are position % W, so the P earlier positions are at most two runs of consecutive slots per sequence.
    const int64_t P = std::min(pos0, W), row = HKV * HS;
    Tensor kk = like(q, {B, P + T_, HKV, HS}), vv = like(q, {B, P + T_, HKV, HS});
    const int64_t Wr = st->ring_k.dim(1);  // W, or 1 when W = 0 (a ring that is never read)
    const Tensor ring_k = st->ring_k.view({B * Wr, row}), ring_v = st->ring_v.view({B * Wr, row});
    const Tensor kk2 = kk.view({B * (P + T_), row}), vv2 = vv.view({B * (P + T_), row});
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < P;) {
        const int64_t slot = (pos0 - P + i) % W, run = std::min(P - i, W - slot);
        copy_rows(kk2, b * (P + T_) + i, ring_k, b * W + slot, run);
        copy_rows(vv2, b * (P + T_) + i, ring_v, b * W + slot, run);
        i += run;
      }
    ops::kv_write(ctx, kk, kr4, P);
    ops::kv_write(ctx, vv, v4, P);
    ops::attention(ctx, br->swa, br->qr.view({B, T_, H, HS}), kk, vv, P, P + T_, scale, W + 1);
    if (W == 0) return;
    const Tensor kr2 = br->kr.view({N, row}), v2 = v.view({N, row});
    for (int64_t b = 0; b < B; b++)  // the ring keeps the last W positions
      for (int64_t t = std::max<int64_t>(0, T_ - W); t < T_;) {
        const int64_t slot = (pos0 + t) % W, run = std::min(T_ - t, W - slot);
        copy_rows(ring_k, b * W + slot, kr2, b * T_ + t, run);
        copy_rows(ring_v, b * W + slot, v2, b * T_ + t, run);
        t += run;
      }
  }

  // att = mix_swa * swa + mix_recurrent * rec (a branch with weight 0 is not read).
  void mix(Tensor att, const Branches& br) const {
    if (lc.mix_swa != 0.0) {
      ops::scale(ctx, att, br.swa, lc.mix_swa);
      if (lc.mix_recurrent != 0.0) ops::add_scaled(ctx, att, br.rec, lc.mix_recurrent);
    } else {
      ops::scale(ctx, att, br.rec, lc.mix_recurrent);
    }
  }

  // Gradients of q, k, v (=) from datt, through both branches of the training form (recomputed here).
  void backward(const Tensor& datt, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                const Tensor& inv_freq, Tensor dq, Tensor dk, Tensor dv) const {
    Branches br;
    if (lc.mix_recurrent != 0.0) recurrent(q, k, v, nullptr, &br);
    if (lc.mix_swa != 0.0) window(q, k, v, positions, inv_freq, 0, nullptr, &br);
    const Tensor datt4 = datt.view({B, T_, H, HS});
    auto scaled = [&](double w) {
      Tensor d = like(datt, {B, T_, H, HS});
      ops::scale(ctx, d, datt4, w);
      return d;
    };
    auto add_into = [&](Tensor dst, const Tensor& src) { ops::add(ctx, dst, dst, src.view(dst.shape())); };
    std::optional<ProfileScope> prof(std::in_place, ctx, "liger bwd: window attention + rope");
    if (lc.mix_swa != 0.0) {  // window branch: attention, then the transposed rotation
      ops::attention_backward(ctx, dq.view({B, T_, H, HS}), dk.view({B, T_, HKV, HS}), dv.view({B, T_, HKV, HS}),
                              scaled(lc.mix_swa), br.qr.view({B, T_, H, HS}), br.kr.view({B, T_, HKV, HS}),
                              v.view({B, T_, HKV, HS}), 1.0f / std::sqrt(static_cast<float>(HS)), lc.window + 1);
      ops::rope_backward(ctx, dq.view({N, H, HS}), positions, inv_freq);
      ops::rope_backward(ctx, dk.view({N, HKV, HS}), positions, inv_freq);
    } else {
      for (Tensor t : {dq, dk, dv}) copy(t, Tensor::zeros(t.shape(), t.dtype(), t.device()));
    }
    if (lc.mix_recurrent == 0.0) return;
    const int64_t K = this->K();
    Tensor dfq = like(q, br.fq.shape()), dfk = like(q, br.fk.shape()), dvr = like(q, {B, T_, HKV, HS});
    Tensor dg = like(q, br.g.shape());
    prof.emplace(ctx, "liger bwd: linear_recurrence_backward");
    ops::linear_recurrence_backward(ctx, dfq, dfk, dvr, dg, scaled(lc.mix_recurrent), br.fq, br.fk,
                                    v.view({B, T_, HKV, HS}), br.g, state_zeros(q, {B, HKV, K, HS}));
    prof.emplace(ctx, "liger bwd: feature maps + gates");
    add_into(dv, dvr);
    Tensor dsrc = like(q, {N, HKV, HS});
    const Tensor g3 = br.g.view({N, HKV, K});
    if (lc.variant == Variant::Gla) {
      Tensor dfq_in = like(q, {N * H, HS}), dfk_in = like(q, {N * HKV, HS});
      ops::softmax_backward(ctx, dfq_in, dfq.view({N * H, HS}), br.fq.view({N * H, HS}));
      ops::softmax_backward(ctx, dfk_in, dfk.view({N * HKV, HS}), br.fk.view({N * HKV, HS}));
      add_into(dq, dfq_in);
      add_into(dk, dfk_in);
      if (lc.gate)
        ops::liger_gates_backward(ctx, dsrc, dg.view({N, HKV, K}), Tensor(), br.src, g3, gate_norm());
      else
        dsrc = Tensor();  // no gate: the source gets no gradient
    } else if (lc.variant == Variant::Hgrn2) {
      Tensor dfq_in = like(q, {N * H, HS});
      ops::softmax_backward(ctx, dfq_in, dfq.view({N * H, HS}), br.fq.view({N * H, HS}));
      add_into(dq, dfq_in);
      ops::liger_gates_backward(ctx, dsrc, dg.view({N, HKV, K}), dfk.view({N, HKV, K}), br.src, g3, gate_norm());
    } else {
      // p = softmax(z): dz from dp; then the slot-score pass back to q, k, s, g; both passes' s and g gradients
      // summed before the gates' backward (s = 1 - exp(g), g from lambda).
      Tensor dz = like(q, {N * H, M});
      ops::softmax_backward(ctx, dz, dfq.view({N * H, M}), br.fq.view({N * H, M}));
      Tensor dq2 = like(q, {B, T_, H, HS}), dk2 = like(q, {B, T_, HKV, HS}), ds2 = like(q, br.fk.shape());
      Tensor dg2 = like(q, br.g.shape());
      ops::slot_scores_backward(ctx, dq2, dk2, ds2, dg2, dz.view({B, T_, H, M}), q.view({B, T_, H, HS}),
                                k.view({B, T_, HKV, HS}), br.fk, br.g, state_zeros(q, {B, HKV, M, HS}));
      add_into(dq, dq2);
      add_into(dk, dk2);
      add_into(dg, dg2);
      add_into(dfk, ds2);
      ops::liger_gates_backward(ctx, dsrc, dg.view({N, HKV, K}), dfk.view({N, HKV, K}), br.src, g3, gate_norm());
    }
    if (!dsrc.defined()) return;
    // The gate source's gradient goes back to the projection it came from.
    switch (lc.gate_source) {
      case LigerConfig::GateSource::K:
        add_into(dk, dsrc);
        break;
      case LigerConfig::GateSource::V:
        add_into(dv, dsrc);
        break;
      case LigerConfig::GateSource::Q:
        ops::group_mean_backward(ctx, dq.view({N, H, HS}), dsrc);
        break;
    }
  }
};

}  // namespace

LigerLayerState make_liger_state(const ModelConfig& cfg, int64_t batch, DType dtype, Device device) {
  // The recurrent states are f32 on the GPU whatever the model's storage; the window's ring buffers hold keys and
  // values in the layer's compute dtype.
  const DType dt = device == Device::CUDA ? DType::F32 : dtype;
  LIGER_CHECK(dt == DType::F32 || dt == DType::F64, "Liger layers on the CPU compute in f32 (or f64), not %s",
              dtype_name(dt));
  const DType ring = compute_dtype_on(device, dtype);
  const LigerConfig& lc = cfg.liger;
  const int64_t HKV = cfg.local_kv_heads(), HS = cfg.head_dim;
  LigerLayerState s;
  s.ring_k = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, ring, device);
  s.ring_v = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, ring, device);
  const int64_t K = lc.variant == Variant::Gsa ? lc.gsa_slots : HS;
  s.state = Tensor::zeros({batch, HKV, K, HS}, dt, device);
  if (lc.variant == Variant::Gsa) s.slot_state = Tensor::zeros({batch, HKV, lc.gsa_slots, HS}, dt, device);
  return s;
}

namespace {

// The layer's output in the compute dtype: att itself, or a buffer converted into att by finish().
struct Output {
  Tensor att, out;
  Output(Context& ctx, Tensor a) : att(a), out(a.dtype() == compute_dtype(ctx, a.dtype()) ? a : Tensor()) {
    if (!out.defined()) out = Tensor::empty(a.shape(), compute_dtype(ctx, a.dtype()), a.device());
  }
  void finish(Context& ctx) const {
    if (out.data() != att.data()) ops::convert(ctx, att, out);
  }
};

}  // namespace

void liger_attention(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q, const Tensor& k,
                     const Tensor& v, const Tensor& positions, const Tensor& inv_freq, int64_t B, int64_t T,
                     int64_t pos0, LigerLayerState* st) {
  LIGER_CHECK(st != nullptr || pos0 == 0, "liger_attention: without a state the sequence starts at position 0");
  const DType cd = compute_dtype(ctx, att.dtype());
  const Tensor q_ = ops::converted(ctx, q, cd), k_ = ops::converted(ctx, k, cd), v_ = ops::converted(ctx, v, cd);
  Output o(ctx, att);
  Liger L(ctx, cfg, B, T);
  Branches br;
  // Both branches always run with a state, so the carried state stays right whatever the mix weights.
  if (cfg.liger.mix_recurrent != 0.0 || st) L.recurrent(q_, k_, v_, st, &br);
  if (cfg.liger.mix_swa != 0.0 || st) L.window(q_, k_, v_, positions, inv_freq, pos0, st, &br);
  L.mix(o.out.view({B, T, cfg.local_heads(), cfg.head_dim}), br);
  o.finish(ctx);
}

LigerIntermediates liger_attention_intermediates(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q,
                                                 const Tensor& k, const Tensor& v, const Tensor& positions,
                                                 const Tensor& inv_freq, int64_t B, int64_t T) {
  const DType cd = compute_dtype(ctx, att.dtype());
  const Tensor q_ = ops::converted(ctx, q, cd), k_ = ops::converted(ctx, k, cd), v_ = ops::converted(ctx, v, cd);
  Output o(ctx, att);
  Liger L(ctx, cfg, B, T);
  Branches br;
  // A fresh (zero) state: the chunked recurrence from zero, as without a state, but the final state is kept.
  LigerLayerState st = make_liger_state(cfg, B, cd, att.device());
  L.recurrent(q_, k_, v_, &st, &br);
  if (cfg.liger.mix_swa != 0.0) L.window(q_, k_, v_, positions, inv_freq, 0, nullptr, &br);
  L.mix(o.out.view({B, T, cfg.local_heads(), cfg.head_dim}), br);
  o.finish(ctx);
  LigerIntermediates out;
  out.g = br.g;
  out.state = st.state;
  return out;
}

void liger_attention_backward(Context& ctx, const ModelConfig& cfg, const Tensor& datt, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& inv_freq,
                              int64_t B, int64_t T, Tensor dq, Tensor dk, Tensor dv) {
  const DType cd = compute_dtype(ctx, datt.dtype());
  const Tensor q_ = ops::converted(ctx, q, cd), k_ = ops::converted(ctx, k, cd), v_ = ops::converted(ctx, v, cd);
  Output oq(ctx, dq), ok(ctx, dk), ov(ctx, dv);
  Liger(ctx, cfg, B, T)
      .backward(ops::converted(ctx, datt, cd), q_, k_, v_, positions, inv_freq, oq.out, ok.out, ov.out);
  oq.finish(ctx);
  ok.finish(ctx);
  ov.finish(ctx);
}

}  // namespace liger
