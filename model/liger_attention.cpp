#include "model/liger_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "ops/attention.h"
#include "ops/recurrence.h"
#include "ops/rope.h"
#include "ops/softmax.h"

namespace liger {

namespace {

using Variant = LigerConfig::Variant;

// log(sigmoid(x)) without overflow: min(x, 0) - log1p(exp(-|x|)); its derivative is sigmoid(-x).
template <class T>
inline T logsigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::fabs(x)));
}
template <class T>
inline T sigmoid(T x) {
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
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

// Everything the recurrent and window branches compute from q, k, v (kept for the backward).
struct Branches {
  Tensor src;       // (N, HKV, HS) gate pre-activation
  Tensor g;         // (B, T, HKV, K) log-gates (K = HS, or M for gsa)
  Tensor fq;        // (B, T, H, K) read vectors: softmax(q) (gla/hgrn2) or p = softmax(z) (gsa)
  Tensor fk;        // (B, T, HKV, K) write vectors: softmax(k) (gla), 1 - alpha (hgrn2, gsa)
  Tensor rec, swa;  // (B, T, H, HS)
  Tensor qr, kr;    // (N, H, HS), (N, HKV, HS) rotated for the window branch
};

template <class T>
void softmax_rows(T* x, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    T* p = x + r * n;
    const T mx = *std::max_element(p, p + n);
    T sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (p[i] = std::exp(p[i] - mx));
    for (int64_t i = 0; i < n; i++) p[i] /= sum;
  }
}

template <class T>
struct Liger {
  Context& ctx;
  const ModelConfig& cfg;
  const LigerConfig& lc;
  int64_t B, T_, H, HKV, HS, N, M, per;

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
        M(m.liger.gsa_slots),
        per(m.head_dim / m.liger.gsa_slots) {}

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
    const int64_t G = H / HKV;
    Tensor src = zeros_like(q, {N, HKV, HS});
    for (int64_t n = 0; n < N; n++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t c = 0; c < HS; c++)
          src.ptr<T>()[(n * HKV + h / G) * HS + c] += q.ptr<T>()[(n * H + h) * HS + c] / static_cast<T>(G);
    return src;
  }

  // The recurrent branch into br->rec; `st` carries the state (decode/prefill), else it starts from zero.
  void recurrent(const Tensor& q, const Tensor& k, const Tensor& v, LigerLayerState* st, Branches* br) const {
    br->src = gate_source(q, k, v);
    const T* s = br->src.ptr<T>();
    const Tensor v4 = v.view({B, T_, HKV, HS});
    const bool step = st != nullptr && T_ == 1;
    const int64_t K = lc.variant == Variant::Gsa ? M : HS;
    br->g = like(q, {B, T_, HKV, K});
    br->fk = like(q, {B, T_, HKV, K});
    T* g = br->g.ptr<T>();
    T* fk = br->fk.ptr<T>();
    if (lc.variant == Variant::Gla) {
      // log alpha = logsigmoid(gate source) / 16 (spec §2.1); fk = softmax(k); fq = softmax(q).
      for (int64_t i = 0; i < N * HKV * HS; i++) g[i] = lc.gate ? logsigmoid(s[i]) / T(16) : T(0);
      copy(br->fk, k.view({B, T_, HKV, HS}));
      softmax_rows(fk, N * HKV, HS);
    } else if (lc.variant == Variant::Hgrn2) {
      // log alpha = logsigmoid(f) without the normalizer; the key slot is 1 - alpha (spec §2.2).
      for (int64_t i = 0; i < N * HKV * HS; i++) {
        g[i] = logsigmoid(s[i]);
        fk[i] = -std::expm1(g[i]);
      }
    } else {
      // GSA (spec §2.3): lambda = mean of each group of HS/M channels; log alpha = logsigmoid(lambda)/16,
      // s = 1 - alpha; z = slot scores of raw q against raw k; fq = p = softmax(z) over the slots.
      for (int64_t r = 0; r < N * HKV; r++)
        for (int64_t m = 0; m < M; m++) {
          T lambda = 0;
          for (int64_t c = 0; c < per; c++) lambda += s[r * HS + m * per + c];
          g[r * M + m] = logsigmoid(lambda / static_cast<T>(per)) / T(16);
          fk[r * M + m] = -std::expm1(g[r * M + m]);
        }
      br->fq = like(q, {B, T_, H, M});
      Tensor slot_state = st ? st->slot_state : zeros_like(q, {B, HKV, M, HS});
      const Tensor q4 = q.view({B, T_, H, HS}), k4 = k.view({B, T_, HKV, HS});
      if (step)
        ops::slot_scores_step(ctx, br->fq, q4, k4, br->fk, br->g, slot_state);
      else
        ops::slot_scores(ctx, br->fq, q4, k4, br->fk, br->g, slot_state, lc.chunk);
      softmax_rows(br->fq.ptr<T>(), N * H, M);
    }
    if (lc.variant != Variant::Gsa) {
      br->fq = copy_of(q).view({B, T_, H, HS});
      softmax_rows(br->fq.ptr<T>(), N * H, HS);
    }
    br->rec = like(q, {B, T_, H, HS});
    Tensor state = st ? st->state : zeros_like(q, {B, HKV, K, HS});
    if (step)
      ops::linear_recurrence_step(ctx, br->rec, br->fq, br->fk, v4, br->g, state);
    else
      ops::linear_recurrence(ctx, br->rec, br->fq, br->fk, v4, br->g, state, lc.chunk);
  }

  // The window branch into br->swa: RoPE on q and k, softmax attention over the current token and the `window`
  // before it, scale 1/sqrt(HS). With a state, the earlier positions come from the ring buffer.
  void window(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& inv_freq,
              int64_t pos0, LigerLayerState* st, Branches* br) const {
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
    // Keys of positions pos0 - P .. pos0 + T - 1 laid out contiguously: P from the ring, then this call's T.
    const int64_t P = std::min(pos0, W), row = HKV * HS;
    Tensor kk = like(q, {B, P + T_, HKV, HS}), vv = like(q, {B, P + T_, HKV, HS});
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < P; i++) {
        const int64_t slot = (pos0 - P + i) % W;
        std::copy_n(st->ring_k.ptr<T>() + (b * W + slot) * row, row, kk.ptr<T>() + (b * (P + T_) + i) * row);
        std::copy_n(st->ring_v.ptr<T>() + (b * W + slot) * row, row, vv.ptr<T>() + (b * (P + T_) + i) * row);
      }
    ops::kv_write(ctx, kk, kr4, P);
    ops::kv_write(ctx, vv, v4, P);
    ops::attention(ctx, br->swa, br->qr.view({B, T_, H, HS}), kk, vv, P, P + T_, scale, W + 1);
    if (W == 0) return;
    for (int64_t b = 0; b < B; b++)  // the ring keeps the last W positions
      for (int64_t t = std::max<int64_t>(0, T_ - W); t < T_; t++) {
        const int64_t slot = (pos0 + t) % W;
        std::copy_n(br->kr.ptr<T>() + (b * T_ + t) * row, row, st->ring_k.ptr<T>() + (b * W + slot) * row);
        std::copy_n(v.ptr<T>() + (b * T_ + t) * row, row, st->ring_v.ptr<T>() + (b * W + slot) * row);
      }
  }

  void mix(Tensor att, const Branches& br) const {
    const T a = static_cast<T>(lc.mix_swa), b = static_cast<T>(lc.mix_recurrent);
    T* out = att.ptr<T>();
    for (int64_t i = 0; i < N * H * HS; i++) {
      const T s = a != T(0) ? a * br.swa.ptr<T>()[i] : T(0);
      const T r = b != T(0) ? b * br.rec.ptr<T>()[i] : T(0);
      out[i] = s + r;
    }
  }

  // Gradients of q, k, v (=) from datt, through both branches of the training form (recomputed here).
  void backward(const Tensor& datt, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                const Tensor& inv_freq, Tensor dq, Tensor dk, Tensor dv) const {
    Branches br;
    recurrent(q, k, v, nullptr, &br);
    window(q, k, v, positions, inv_freq, 0, nullptr, &br);
    std::fill(dq.ptr<T>(), dq.ptr<T>() + dq.numel(), T(0));
    std::fill(dk.ptr<T>(), dk.ptr<T>() + dk.numel(), T(0));
    std::fill(dv.ptr<T>(), dv.ptr<T>() + dv.numel(), T(0));
    auto scaled = [&](double w) {
      Tensor d = like(datt, {B, T_, H, HS});
      for (int64_t i = 0; i < d.numel(); i++) d.ptr<T>()[i] = static_cast<T>(w) * datt.ptr<T>()[i];
      return d;
    };
    auto add_into = [](Tensor dst, const Tensor& src) {
      for (int64_t i = 0; i < dst.numel(); i++) dst.ptr<T>()[i] += src.ptr<T>()[i];
    };
    if (lc.mix_swa != 0.0) {  // window branch: attention, then the transposed rotation
      Tensor dqr = like(q, {B, T_, H, HS}), dkr = like(q, {B, T_, HKV, HS}), dvv = like(q, {B, T_, HKV, HS});
      ops::attention_backward(ctx, dqr, dkr, dvv, scaled(lc.mix_swa), br.qr.view({B, T_, H, HS}),
                              br.kr.view({B, T_, HKV, HS}), v.view({B, T_, HKV, HS}),
                              1.0f / std::sqrt(static_cast<float>(HS)), lc.window + 1);
      ops::rope_backward(ctx, dqr.view({N, H, HS}), positions, inv_freq);
      ops::rope_backward(ctx, dkr.view({N, HKV, HS}), positions, inv_freq);
      add_into(dq, dqr);
      add_into(dk, dkr);
      add_into(dv, dvv);
    }
    if (lc.mix_recurrent == 0.0) return;
    const int64_t K = lc.variant == Variant::Gsa ? M : HS;
    Tensor dfq = like(q, br.fq.shape()), dfk = like(q, br.fk.shape()), dvr = like(q, {B, T_, HKV, HS});
    Tensor dg = like(q, br.g.shape());
    ops::linear_recurrence_backward(ctx, dfq, dfk, dvr, dg, scaled(lc.mix_recurrent), br.fq, br.fk,
                                    v.view({B, T_, HKV, HS}), br.g, zeros_like(q, {B, HKV, K, HS}));
    add_into(dv, dvr);
    Tensor dsrc = zeros_like(q, {N, HKV, HS});
    T* ds = dsrc.ptr<T>();
    const T* s = br.src.ptr<T>();
    if (lc.variant == Variant::Gla) {
      Tensor dfq_in = like(q, {N * H, HS}), dfk_in = like(q, {N * HKV, HS});
      ops::softmax_backward(ctx, dfq_in, dfq.view({N * H, HS}), br.fq.view({N * H, HS}));
      ops::softmax_backward(ctx, dfk_in, dfk.view({N * HKV, HS}), br.fk.view({N * HKV, HS}));
      add_into(dq, dfq_in.view(dq.shape()));
      add_into(dk, dfk_in.view(dk.shape()));
      if (lc.gate)
        for (int64_t i = 0; i < N * HKV * HS; i++) ds[i] = dg.ptr<T>()[i] / T(16) * sigmoid(-s[i]);
    } else if (lc.variant == Variant::Hgrn2) {
      Tensor dfq_in = like(q, {N * H, HS});
      ops::softmax_backward(ctx, dfq_in, dfq.view({N * H, HS}), br.fq.view({N * H, HS}));
      add_into(dq, dfq_in.view(dq.shape()));
      for (int64_t i = 0; i < N * HKV * HS; i++) {
        const T gi = br.g.ptr<T>()[i];
        const T dgi = dg.ptr<T>()[i] - dfk.ptr<T>()[i] * std::exp(gi);  // fk = 1 - exp(g)
        ds[i] = dgi * sigmoid(-s[i]);
      }
    } else {
      // p = softmax(z): dz from dp; then the slot-score pass back to q, k, s, g; s = 1 - exp(g); g from lambda.
      Tensor dz = like(q, {N * H, M});
      ops::softmax_backward(ctx, dz, dfq.view({N * H, M}), br.fq.view({N * H, M}));
      Tensor dq2 = like(q, {B, T_, H, HS}), dk2 = like(q, {B, T_, HKV, HS}), ds2 = like(q, br.fk.shape());
      Tensor dg2 = like(q, br.g.shape());
      ops::slot_scores_backward(ctx, dq2, dk2, ds2, dg2, dz.view({B, T_, H, M}), q.view({B, T_, H, HS}),
                                k.view({B, T_, HKV, HS}), br.fk, br.g, zeros_like(q, {B, HKV, M, HS}));
      add_into(dq, dq2);
      add_into(dk, dk2);
      for (int64_t r = 0; r < N * HKV; r++)
        for (int64_t m = 0; m < M; m++) {
          const int64_t i = r * M + m;
          const T gi = br.g.ptr<T>()[i];
          const T dgi = dg.ptr<T>()[i] + dg2.ptr<T>()[i] - (dfk.ptr<T>()[i] + ds2.ptr<T>()[i]) * std::exp(gi);
          T lambda = 0;
          for (int64_t c = 0; c < per; c++) lambda += s[r * HS + m * per + c];
          lambda /= static_cast<T>(per);
          const T dlambda = dgi / T(16) * sigmoid(-lambda);
          for (int64_t c = 0; c < per; c++) ds[r * HS + m * per + c] = dlambda / static_cast<T>(per);
        }
    }
    // The gate source's gradient goes back to the projection it came from.
    switch (lc.gate_source) {
      case LigerConfig::GateSource::K:
        add_into(dk, dsrc.view(dk.shape()));
        break;
      case LigerConfig::GateSource::V:
        add_into(dv, dsrc.view(dv.shape()));
        break;
      case LigerConfig::GateSource::Q: {
        const int64_t G = H / HKV;
        for (int64_t n = 0; n < N; n++)
          for (int64_t h = 0; h < H; h++)
            for (int64_t c = 0; c < HS; c++)
              dq.ptr<T>()[(n * H + h) * HS + c] += ds[(n * HKV + h / G) * HS + c] / static_cast<T>(G);
        break;
      }
    }
  }
};

template <class F>
void by_dtype(DType dt, F&& f) {
  LIGER_CHECK(dt == DType::F32 || dt == DType::F64, "Liger layers run on the CPU in f32 (or f64) in this version");
  if (dt == DType::F64)
    f(double{});
  else
    f(float{});
}

}  // namespace

LigerLayerState make_liger_state(const ModelConfig& cfg, int64_t batch, DType dtype, Device device) {
  LIGER_CHECK(device == Device::CPU && (dtype == DType::F32 || dtype == DType::F64),
              "Liger layers run on the CPU in f32 in this version (the CUDA kernels come with the training issue)");
  const LigerConfig& lc = cfg.liger;
  const int64_t HKV = cfg.local_kv_heads(), HS = cfg.head_dim;
  LigerLayerState s;
  s.ring_k = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, dtype, device);
  s.ring_v = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, dtype, device);
  const int64_t K = lc.variant == Variant::Gsa ? lc.gsa_slots : HS;
  s.state = Tensor::zeros({batch, HKV, K, HS}, dtype, device);
  if (lc.variant == Variant::Gsa) s.slot_state = Tensor::zeros({batch, HKV, lc.gsa_slots, HS}, dtype, device);
  return s;
}

void liger_attention(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q, const Tensor& k,
                     const Tensor& v, const Tensor& positions, const Tensor& inv_freq, int64_t B, int64_t T,
                     int64_t pos0, LigerLayerState* st) {
  LIGER_CHECK(!ctx.is_cuda(), "Liger layers run on the CPU in this version (use --device cpu)");
  LIGER_CHECK(st != nullptr || pos0 == 0, "liger_attention: without a state the sequence starts at position 0");
  by_dtype(att.dtype(), [&](auto zero) {
    Liger<decltype(zero)> L(ctx, cfg, B, T);
    Branches br;
    // Both branches always run with a state, so the carried state stays right whatever the mix weights.
    if (cfg.liger.mix_recurrent != 0.0 || st) L.recurrent(q, k, v, st, &br);
    if (cfg.liger.mix_swa != 0.0 || st) L.window(q, k, v, positions, inv_freq, pos0, st, &br);
    L.mix(att.view({B, T, cfg.local_heads(), cfg.head_dim}), br);
  });
}

LigerIntermediates liger_attention_intermediates(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q,
                                                 const Tensor& k, const Tensor& v, const Tensor& positions,
                                                 const Tensor& inv_freq, int64_t B, int64_t T) {
  LIGER_CHECK(!ctx.is_cuda(), "Liger layers run on the CPU in this version (use --device cpu)");
  LigerIntermediates out;
  by_dtype(att.dtype(), [&](auto zero) {
    Liger<decltype(zero)> L(ctx, cfg, B, T);
    Branches br;
    // A fresh (zero) state: the chunked recurrence from zero, as without a state, but the final state is kept.
    LigerLayerState st = make_liger_state(cfg, B, att.dtype(), Device::CPU);
    L.recurrent(q, k, v, &st, &br);
    if (cfg.liger.mix_swa != 0.0) L.window(q, k, v, positions, inv_freq, 0, nullptr, &br);
    L.mix(att.view({B, T, cfg.local_heads(), cfg.head_dim}), br);
    out.g = br.g;
    out.state = st.state;
  });
  return out;
}

void liger_attention_backward(Context& ctx, const ModelConfig& cfg, const Tensor& datt, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& inv_freq,
                              int64_t B, int64_t T, Tensor dq, Tensor dk, Tensor dv) {
  LIGER_CHECK(!ctx.is_cuda(), "Liger layers run on the CPU in this version (use --device cpu)");
  by_dtype(datt.dtype(), [&](auto zero) {
    Liger<decltype(zero)>(ctx, cfg, B, T).backward(datt, q, k, v, positions, inv_freq, dq, dk, dv);
  });
}

}  // namespace liger
