#include "model/diagnostics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "model/liger_attention.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"

namespace liger {

double LayerDiagnostics::rel_error() const {
  return ref_sq > 0 ? std::sqrt(err_sq / ref_sq) : NAN;
}
double LayerDiagnostics::mean_gate() const {
  return gate_count > 0 ? gate_sum / static_cast<double>(gate_count) : NAN;
}
double LayerDiagnostics::memory_length() const {
  return gate_count > 0 ? memory_sum / static_cast<double>(gate_count) : NAN;
}
double LayerDiagnostics::state_norm() const {
  return state_count > 0 ? state_norm_sum / static_cast<double>(state_count) : NAN;
}

namespace {

// Element i of an f32 or f64 CPU tensor.
inline double at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F64 ? t.ptr<double>()[i] : static_cast<double>(t.ptr<float>()[i]);
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy(c, t);
  return c;
}

// y = x W^T (+ b) (+)= LoRA(x), as the training forward projects.
void project(Context& ctx, const LoraAdapters* lora, int64_t l, LoraTarget t, Tensor y, const Tensor& x,
             const Tensor& w, const Tensor* bias, bool accumulate = false) {
  ops::matmul(ctx, y, x, w, bias, accumulate);
  if (lora) lora->forward(ctx, l, t, y, x);
}

// Adds one layer's figures: att (N, H*HS) the Liger output, ref (N, H*HS) the softmax attention, and the gates and
// final state of the recurrent branch.
void accumulate(LayerDiagnostics* d, const Tensor& att, const Tensor& ref, const LigerIntermediates& in) {
  for (int64_t i = 0; i < att.numel(); i++) {
    const double r = at(ref, i), e = at(att, i) - r;
    d->err_sq += e * e;
    d->ref_sq += r * r;
  }
  for (int64_t i = 0; i < in.g.numel(); i++) {
    const double g = at(in.g, i);
    d->gate_sum += std::exp(g);
    // 1 / (1 - exp(g)) with 1 - exp(g) = -expm1(g), exact near g = 0; g = 0 (no decay) is an infinite horizon.
    const double one_minus = -std::expm1(g);
    d->memory_sum += one_minus > 0 ? 1.0 / one_minus : std::numeric_limits<double>::infinity();
  }
  d->gate_count += in.g.numel();
  const int64_t states = in.state.dim(0) * in.state.dim(1), per = in.state.dim(2) * in.state.dim(3);
  for (int64_t s = 0; s < states; s++) {
    double sq = 0.0;
    for (int64_t i = 0; i < per; i++) sq += at(in.state, s * per + i) * at(in.state, s * per + i);
    d->state_norm_sum += std::sqrt(sq);
  }
  d->state_count += states;
}

// The forward of whole sequences ids (B, T) from position 0 (the inputs checked by the caller).
void forward_sequences(LlamaModel& model, const LoraAdapters* lora, const Tensor& ids, Tensor logits,
                       LigerDiagnostics* diag) {
  Context& ctx = model.context();
  const ModelConfig& c = model.config();
  const int64_t B = ids.dim(0), T = ids.dim(1), N = B * T;
  const int64_t H = c.local_heads(), HKV = c.local_kv_heads(), HS = c.head_dim, V = c.vocab_size;
  const DType dt = model.dtype();
  auto act = [&](int64_t cols) { return Tensor::empty({N, cols}, dt, Device::CPU); };
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; i++) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i % T);
  const Tensor positions = Tensor::from_i32({N}, pos);
  const float eps = static_cast<float>(c.rms_eps), scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const ModelWeights& w = model.weights();

  Tensor x = act(c.d_model), xn = act(c.d_model);
  Tensor q = act(c.q_dim()), k = act(c.kv_dim()), v = act(c.kv_dim()), att = act(c.q_dim());
  Tensor gate = act(c.local_ff()), up = act(c.local_ff());
  ops::embedding(ctx, x, ids.view({N}), w.embed);
  size_t next_diag = 0;
  for (int64_t l = 0; l < c.n_layers; l++) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    ops::rmsnorm(ctx, xn, x, L.attn_norm, eps);
    project(ctx, lora, l, LoraTarget::Q, q, xn, L.wq, c.qkv_bias ? &L.bq : nullptr);
    project(ctx, lora, l, LoraTarget::K, k, xn, L.wk, c.qkv_bias ? &L.bk : nullptr);
    project(ctx, lora, l, LoraTarget::V, v, xn, L.wv, c.qkv_bias ? &L.bv : nullptr);
    if (c.qk_norm) {
      ops::rmsnorm(ctx, q.view({N * H, HS}), clone(q).view({N * H, HS}), L.q_norm, eps);
      ops::rmsnorm(ctx, k.view({N * HKV, HS}), clone(k).view({N * HKV, HS}), L.k_norm, eps);
    }
    // The softmax attention of the base model on these q, k, v: the output of a softmax layer, and the reference of a
    // Liger layer (only computed when measured).
    const bool liger = model.is_liger_layer(l);
    Tensor ref;
    if (!liger || diag) {
      Tensor qr = clone(q), kr = clone(k);
      ops::rope(ctx, qr.view({N, H, HS}), positions, model.inv_freq());
      ops::rope(ctx, kr.view({N, HKV, HS}), positions, model.inv_freq());
      ref = liger ? act(c.q_dim()) : att;
      ops::attention(ctx, ref.view({B, T, H, HS}), qr.view({B, T, H, HS}), kr.view({B, T, HKV, HS}),
                     v.view({B, T, HKV, HS}), 0, T, scale, c.sliding_window);
    }
    if (liger) {
      if (diag) {
        LigerIntermediates in = liger_attention_intermediates(ctx, c, att, q, k, v, positions, model.inv_freq(), B, T);
        LayerDiagnostics* d = &diag->layers[next_diag++];
        LIGER_ASSERT(d->layer == l);
        accumulate(d, att, ref, in);
      } else {
        liger_attention(ctx, c, att, q, k, v, positions, model.inv_freq(), B, T, 0, nullptr);
      }
    }
    project(ctx, lora, l, LoraTarget::O, x, att, L.wo, c.o_bias ? &L.bo : nullptr, /*accumulate=*/true);
    ops::rmsnorm(ctx, xn, x, L.mlp_norm, eps);
    project(ctx, lora, l, LoraTarget::Gate, gate, xn, L.w_gate, nullptr);
    project(ctx, lora, l, LoraTarget::Up, up, xn, L.w_up, nullptr);
    ops::swiglu(ctx, gate, gate, up);
    project(ctx, lora, l, LoraTarget::Down, x, gate, L.w_down, nullptr, /*accumulate=*/true);
  }
  if (!logits.defined()) return;
  ops::rmsnorm(ctx, xn, x, w.final_norm, eps);
  if (dt == DType::F32) {
    ops::matmul(ctx, logits.view({N, V}), xn, w.lm_head);
  } else {
    Tensor l64 = Tensor::empty({N, V}, dt, Device::CPU);
    ops::matmul(ctx, l64, xn, w.lm_head);
    copy(logits.view({N, V}), l64);
  }
}

}  // namespace

void forward_with_diagnostics(LlamaModel& model, const LoraAdapters* lora, const Tensor& ids, Tensor logits,
                              LigerDiagnostics* diag, const std::vector<int32_t>* doc_starts) {
  const ModelConfig& c = model.config();
  LIGER_CHECK(!model.context().is_cuda(), "diagnostics run on the CPU in this version (load the model on the cpu)");
  LIGER_CHECK(ids.device() == Device::CPU && ids.dtype() == DType::I32 && ids.ndim() == 2,
              "forward_with_diagnostics: ids must be a host i32 (B, T) tensor, got %s", ids.str().c_str());
  LIGER_CHECK(!model.tensor_parallel(),
              "--diagnostics runs at --tp 1 (the per-layer figures need every head on one rank); perplexity alone "
              "runs at any --tp");
  const int64_t B = ids.dim(0), T = ids.dim(1), V = c.vocab_size;
  LIGER_CHECK(B > 0 && T > 0, "forward_with_diagnostics: empty batch");
  for (int64_t i = 0; i < B * T; i++) {
    const int32_t id = ids.ptr<int32_t>()[i];
    LIGER_CHECK(id >= 0 && id < V, "forward_with_diagnostics: token id %d is outside the vocabulary [0, %lld)", id,
                static_cast<long long>(V));
  }
  if (logits.defined()) {
    LIGER_CHECK(logits.dtype() == DType::F32 && logits.device() == Device::CPU && logits.shape() == Shape({B, T, V}),
                "forward_with_diagnostics: logits must be f32 (%lld, %lld, %lld) on the CPU, got %s",
                static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(V), logits.str().c_str());
  }
  if (diag && diag->layers.empty()) {
    for (int64_t l = 0; l < c.n_layers; l++)
      if (model.is_liger_layer(l)) diag->layers.push_back(LayerDiagnostics{l});
  }
  const std::vector<int32_t> st = doc_starts && !doc_starts->empty() ? *doc_starts : std::vector<int32_t>{0};
  LIGER_CHECK(st[0] == 0 && std::is_sorted(st.begin(), st.end()) && st.back() < T,
              "forward_with_diagnostics: document starts must begin with 0, increase and stay below T = %lld",
              static_cast<long long>(T));
  if (st.size() == 1) return forward_sequences(model, lora, ids, logits, diag);
  LIGER_CHECK(B == 1, "forward_with_diagnostics: document boundaries need one sequence per call (B = 1)");
  // Every document as a sequence of its own: what the document-aware forward of eval_step computes, since nothing
  // but the attention and the recurrence mixes positions.
  for (size_t i = 0; i < st.size(); i++) {
    const int64_t s0 = st[i], len = (i + 1 < st.size() ? st[i + 1] : T) - s0;
    if (len == 0) continue;
    const Tensor seg_ids = ids.view({T}).slice(s0, len).view({1, len});
    const Tensor seg_logits = logits.defined() ? logits.view({T, V}).slice(s0, len).view({1, len, V}) : Tensor();
    forward_sequences(model, lora, seg_ids, seg_logits, diag);
  }
}

}  // namespace liger
