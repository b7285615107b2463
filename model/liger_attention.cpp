#include "model/liger_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "ops/attention.h"
#include "ops/recurrence.h"
#include "ops/rope.h"

namespace liger {

namespace {

using Variant = LigerConfig::Variant;

// log(sigmoid(x)) without overflow: min(x, 0) - log1p(exp(-|x|)).
inline float logsigmoid(float x) {
  return std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x)));
}

// Softmax over the last dimension of a (rows, n) block, in place.
void softmax_rows(float* x, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    float* p = x + r * n;
    const float mx = *std::max_element(p, p + n);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += (p[i] = std::exp(p[i] - mx));
    for (int64_t i = 0; i < n; i++) p[i] /= sum;
  }
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy(c, t);
  return c;
}

// The gate pre-activation per KV head (B*T, HKV, HS): k or v as they are, q averaged over each GQA group.
Tensor gate_source(const ModelConfig& cfg, const Tensor& q, const Tensor& k, const Tensor& v, int64_t N) {
  const int64_t H = cfg.local_heads(), HKV = cfg.local_kv_heads(), HS = cfg.head_dim, G = H / HKV;
  switch (cfg.liger.gate_source) {
    case LigerConfig::GateSource::K:
      return k.view({N, HKV, HS});
    case LigerConfig::GateSource::V:
      return v.view({N, HKV, HS});
    case LigerConfig::GateSource::Q:
      break;
  }
  Tensor src = Tensor::zeros({N, HKV, HS}, DType::F32, Device::CPU);
  for (int64_t n = 0; n < N; n++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t c = 0; c < HS; c++)
        src.ptr<float>()[(n * HKV + h / G) * HS + c] += q.ptr<float>()[(n * H + h) * HS + c] / static_cast<float>(G);
  return src;
}

// rec (B, T, H, HS) = the recurrent branch.
void recurrent_branch(Context& ctx, const ModelConfig& cfg, Tensor rec, const Tensor& q, const Tensor& k,
                      const Tensor& v, int64_t B, int64_t T, LigerLayerState* st) {
  const LigerConfig& lc = cfg.liger;
  const int64_t H = cfg.local_heads(), HKV = cfg.local_kv_heads(), HS = cfg.head_dim, N = B * T;
  const Tensor src = gate_source(cfg, q, k, v, N);
  const Tensor v4 = v.view({B, T, HKV, HS});
  const bool step = st != nullptr && T == 1;
  auto run = [&](Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& g, const Shape& state_shape) {
    Tensor state = st ? st->state : Tensor::zeros(state_shape, DType::F32, Device::CPU);
    if (step)
      ops::linear_recurrence_step(ctx, out, fq, fk, v4, g, state);
    else
      ops::linear_recurrence(ctx, out, fq, fk, v4, g, state, lc.chunk);
  };

  if (lc.variant == Variant::Gla || lc.variant == Variant::Hgrn2) {
    // fq = softmax over the head dimension of q (both variants).
    Tensor fq = copy_of(q).view({B, T, H, HS});
    softmax_rows(fq.ptr<float>(), N * H, HS);
    Tensor g = Tensor::empty({B, T, HKV, HS}, DType::F32, Device::CPU);
    Tensor fk = Tensor::empty({B, T, HKV, HS}, DType::F32, Device::CPU);
    const float* s = src.ptr<float>();
    if (lc.variant == Variant::Gla) {
      // log alpha = logsigmoid(gate source) / 16 (spec §2.1); fk = softmax(k).
      for (int64_t i = 0; i < N * HKV * HS; i++) g.ptr<float>()[i] = lc.gate ? logsigmoid(s[i]) / 16.0f : 0.0f;
      copy(fk, k.view({B, T, HKV, HS}));
      softmax_rows(fk.ptr<float>(), N * HKV, HS);
    } else {
      // HGRN2: log alpha = logsigmoid(f) without the normalizer; the key slot is 1 - alpha (spec §2.2).
      for (int64_t i = 0; i < N * HKV * HS; i++) {
        g.ptr<float>()[i] = logsigmoid(s[i]);
        fk.ptr<float>()[i] = -std::expm1(g.ptr<float>()[i]);
      }
    }
    run(rec, fq, fk, g, {B, HKV, HS, HS});
    return;
  }

  // GSA (spec §2.3): M slots; lambda = mean of each group of HS/M channels of the gate source;
  // log alpha = logsigmoid(lambda)/16, s = 1 - alpha; z = slot scores of raw q against raw k; p = softmax(z) over the
  // slots; the output is the gated recurrence of values written with s and read with p.
  const int64_t M = lc.gsa_slots, per = HS / M;
  Tensor g = Tensor::empty({B, T, HKV, M}, DType::F32, Device::CPU);
  Tensor sw = Tensor::empty({B, T, HKV, M}, DType::F32, Device::CPU);
  for (int64_t r = 0; r < N * HKV; r++) {
    for (int64_t m = 0; m < M; m++) {
      float lambda = 0.0f;
      for (int64_t c = 0; c < per; c++) lambda += src.ptr<float>()[r * HS + m * per + c];
      lambda /= static_cast<float>(per);
      const float lg = logsigmoid(lambda) / 16.0f;
      g.ptr<float>()[r * M + m] = lg;
      sw.ptr<float>()[r * M + m] = -std::expm1(lg);
    }
  }
  Tensor z = Tensor::empty({B, T, H, M}, DType::F32, Device::CPU);
  Tensor slot_state = st ? st->slot_state : Tensor::zeros({B, HKV, M, HS}, DType::F32, Device::CPU);
  const Tensor q4 = q.view({B, T, H, HS}), k4 = k.view({B, T, HKV, HS});
  if (step)
    ops::slot_scores_step(ctx, z, q4, k4, sw, g, slot_state);
  else
    ops::slot_scores(ctx, z, q4, k4, sw, g, slot_state, lc.chunk);
  softmax_rows(z.ptr<float>(), N * H, M);
  run(rec, z, sw, g, {B, HKV, M, HS});
}

// swa (B, T, H, HS) = the sliding-window branch: RoPE on q and k, softmax attention over the current token and the
// `window` before it, scale 1/sqrt(HS). With a state, the earlier positions come from the ring buffer.
void swa_branch(Context& ctx, const ModelConfig& cfg, Tensor swa, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& positions, const Tensor& inv_freq, int64_t B, int64_t T, int64_t pos0,
                LigerLayerState* st) {
  const int64_t H = cfg.local_heads(), HKV = cfg.local_kv_heads(), HS = cfg.head_dim, N = B * T;
  const int64_t W = cfg.liger.window;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  Tensor qr = copy_of(q).view({N, H, HS}), kr = copy_of(k).view({N, HKV, HS});
  ops::rope(ctx, qr, positions, inv_freq);
  ops::rope(ctx, kr, positions, inv_freq);
  const Tensor kr4 = kr.view({B, T, HKV, HS}), v4 = v.view({B, T, HKV, HS});
  if (!st) {
    ops::attention(ctx, swa, qr.view({B, T, H, HS}), kr4, v4, 0, T, scale, W + 1);
    return;
  }
  // Keys of positions pos0 - P .. pos0 + T - 1 laid out contiguously: P from the ring, then this call's T.
  const int64_t P = std::min(pos0, W);
  const size_t row = static_cast<size_t>(HKV * HS) * sizeof(float);
  Tensor kk = Tensor::empty({B, P + T, HKV, HS}, DType::F32, Device::CPU);
  Tensor vv = Tensor::empty({B, P + T, HKV, HS}, DType::F32, Device::CPU);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t i = 0; i < P; i++) {
      const int64_t slot = (pos0 - P + i) % W;
      std::memcpy(kk.ptr<float>() + (b * (P + T) + i) * HKV * HS, st->ring_k.ptr<float>() + (b * W + slot) * HKV * HS,
                  row);
      std::memcpy(vv.ptr<float>() + (b * (P + T) + i) * HKV * HS, st->ring_v.ptr<float>() + (b * W + slot) * HKV * HS,
                  row);
    }
  }
  ops::kv_write(ctx, kk, kr4, P);
  ops::kv_write(ctx, vv, v4, P);
  ops::attention(ctx, swa, qr.view({B, T, H, HS}), kk, vv, P, P + T, scale, W + 1);
  // The ring keeps the last W positions.
  if (W == 0) return;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = std::max<int64_t>(0, T - W); t < T; t++) {
      const int64_t slot = (pos0 + t) % W;
      std::memcpy(st->ring_k.ptr<float>() + (b * W + slot) * HKV * HS, kr.ptr<float>() + (b * T + t) * HKV * HS, row);
      std::memcpy(st->ring_v.ptr<float>() + (b * W + slot) * HKV * HS, v.ptr<float>() + (b * T + t) * HKV * HS, row);
    }
  }
}

}  // namespace

LigerLayerState make_liger_state(const ModelConfig& cfg, int64_t batch, DType dtype, Device device) {
  LIGER_CHECK(device == Device::CPU && dtype == DType::F32,
              "Liger layers run on the CPU in f32 in this version (the CUDA kernels come with the training issue)");
  const LigerConfig& lc = cfg.liger;
  const int64_t HKV = cfg.local_kv_heads(), HS = cfg.head_dim;
  LigerLayerState s;
  s.ring_k = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, dtype, device);
  s.ring_v = Tensor::zeros({batch, std::max<int64_t>(lc.window, 1), HKV, HS}, dtype, device);
  const int64_t K = lc.variant == Variant::Gsa ? lc.gsa_slots : HS;
  s.state = Tensor::zeros({batch, HKV, K, HS}, DType::F32, device);
  if (lc.variant == Variant::Gsa) s.slot_state = Tensor::zeros({batch, HKV, lc.gsa_slots, HS}, DType::F32, device);
  return s;
}

void liger_attention(Context& ctx, const ModelConfig& cfg, Tensor att, const Tensor& q, const Tensor& k,
                     const Tensor& v, const Tensor& positions, const Tensor& inv_freq, int64_t B, int64_t T,
                     int64_t pos0, LigerLayerState* st) {
  LIGER_CHECK(!ctx.is_cuda() && att.dtype() == DType::F32,
              "Liger layers run on the CPU in f32 in this version (use --device cpu)");
  LIGER_CHECK(st != nullptr || pos0 == 0, "liger_attention: without a state the sequence starts at position 0");
  const LigerConfig& lc = cfg.liger;
  const int64_t H = cfg.local_heads(), HS = cfg.head_dim, N = B * T;
  Tensor out = att.view({B, T, H, HS});
  Tensor rec = Tensor::empty({B, T, H, HS}, DType::F32, Device::CPU);
  Tensor swa = Tensor::empty({B, T, H, HS}, DType::F32, Device::CPU);
  // Both branches always run with a state, so the carried state stays right whatever the mix weights.
  if (lc.mix_recurrent != 0.0 || st) recurrent_branch(ctx, cfg, rec, q, k, v, B, T, st);
  if (lc.mix_swa != 0.0 || st) swa_branch(ctx, cfg, swa, q, k, v, positions, inv_freq, B, T, pos0, st);
  const float a = static_cast<float>(lc.mix_swa), b = static_cast<float>(lc.mix_recurrent);
  for (int64_t i = 0; i < N * H * HS; i++) {
    const float s = a != 0.0f ? a * swa.ptr<float>()[i] : 0.0f;
    const float r = b != 0.0f ? b * rec.ptr<float>()[i] : 0.0f;
    out.ptr<float>()[i] = s + r;
  }
}

}  // namespace liger
