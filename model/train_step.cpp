#include "model/train_step.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "core/check.h"
#include "core/timer.h"
#include "model/liger_attention.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"

namespace liger {

namespace {

// What the backward of one layer needs from its forward.
struct Saved {
  Tensor x_in;           // (N, D) residual stream entering the layer
  Tensor xn1;            // (N, D) attention norm output
  Tensor q, k, v;        // (N, H*HS), (N, HKV*HS) x2: after q/k norm, before RoPE
  Tensor q_pre, k_pre;   // before q/k norm (qwen3)
  Tensor qr, kr;         // rotated q, k (softmax layers)
  Tensor att;            // (N, H*HS) attention output before W_O
  Tensor x_mid;          // (N, D) residual after the attention block
  Tensor xn2;            // (N, D) MLP norm output
  Tensor gate, up, act;  // (N, F)
};

Tensor empty_like(const Tensor& t) {
  return Tensor::empty(t.shape(), t.dtype(), t.device());
}
Tensor clone(const Tensor& t) {
  Tensor c = empty_like(t);
  copy(c, t);
  return c;
}

// y = x W^T (+ b) + LoRA(x).
void project(Context& ctx, const LoraAdapters* lora, int64_t l, LoraTarget t, Tensor y, const Tensor& x,
             const Tensor& w, const Tensor* bias, bool accumulate = false) {
  ops::matmul(ctx, y, x, w, bias, accumulate);
  if (lora) lora->forward(ctx, l, t, y, x);
}

// dx (+)= dy W, and the LoRA gradients of this projection.
void project_backward(Context& ctx, LoraAdapters* lora, int64_t l, LoraTarget t, Tensor dx, const Tensor& dy,
                      const Tensor& x, const Tensor& w, bool accumulate) {
  ops::matmul_backward_input(ctx, dx, dy, w, accumulate);
  if (lora) lora->backward(ctx, l, t, dx, dy, x);
}

struct Runner {
  LlamaModel& model;
  const ModelConfig& c;
  Context& ctx;
  int64_t B, T, N, H, HKV, HS;
  Tensor positions;  // (N) i32
  float eps;
  float scale;
  bool tp;       // tensor parallel: this rank holds a slice of the heads, the MLP width and the vocabulary
  bool tp_root;  // the rank that adds the replicated residual and biases before a row-parallel sum (rank 0)

  // Documents packed in the sequence: (start, length) of each; one segment covering everything when not given.
  std::vector<std::pair<int64_t, int64_t>> segments;

  Runner(LlamaModel& m, int64_t b, int64_t t, const std::vector<int32_t>* doc_starts)
      : model(m),
        c(m.config()),
        ctx(m.context()),
        B(b),
        T(t),
        N(b * t),
        H(c.local_heads()),
        HKV(c.local_kv_heads()),
        HS(c.head_dim),
        eps(static_cast<float>(c.rms_eps)),
        scale(1.0f / std::sqrt(static_cast<float>(c.head_dim))),
        tp(m.tensor_parallel()),
        tp_root(!tp || m.tp()->rank() == 0) {
    std::vector<int32_t> starts = doc_starts && !doc_starts->empty() ? *doc_starts : std::vector<int32_t>{0};
    LIGER_CHECK(starts[0] == 0 && std::is_sorted(starts.begin(), starts.end()) && starts.back() < T,
                "train_step: document starts must begin with 0, increase and stay below T = %lld",
                static_cast<long long>(T));
    LIGER_CHECK(starts.size() == 1 || B == 1, "train_step: document boundaries need one sequence per call (B = 1)");
    for (size_t i = 0; i < starts.size(); i++) {
      const int64_t end = i + 1 < starts.size() ? starts[i + 1] : T;
      if (end > starts[i]) segments.push_back({starts[i], end - starts[i]});
    }
    // Positions restart with every document, so a packed document sees exactly what it would see alone.
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int64_t b = 0; b < B; b++)
      for (const auto& [s0, len] : segments)
        for (int64_t t = 0; t < len; t++) pos[static_cast<size_t>(b * T + s0 + t)] = static_cast<int32_t>(t);
    positions = Tensor::from_i32({N}, pos).to(m.device());
  }

  // Rows [s0, s0 + len) of an (N, cols) activation as (1, len, heads, HS) — B = 1 whenever there are several segments;
  // with one segment, the whole (B, T, heads, HS).
  Tensor seg(const Tensor& x, int64_t s0, int64_t len, int64_t heads) const {
    if (segments.size() == 1) return x.view({B, T, heads, HS});
    return x.slice(s0, len).view({1, len, heads, HS});
  }
  int64_t seg_batch() const { return segments.size() == 1 ? B : 1; }
  int64_t seg_len(int64_t len) const { return segments.size() == 1 ? T : len; }

  Tensor act(int64_t cols) const { return Tensor::empty({N, cols}, model.dtype(), model.device()); }
  Tensor zeros(int64_t cols) const { return Tensor::zeros({N, cols}, model.dtype(), model.device()); }

  // The training forward; returns the final residual stream and fills `saved` when given: every layer's Saved, or
  // with `recompute` only each layer's input x_in (the backward then runs the layer's forward again, layer_forward).
  Tensor forward(const Tensor& ids, const LoraAdapters* lora, std::vector<Saved>* saved, bool recompute = false) {
    const ModelWeights& w = model.weights();
    Tensor x = act(c.d_model);
    if (tp) {
      ops::embedding_shard(ctx, x, ids.to(model.device()).view({N}), w.embed, c.vocab_start());
      model.tp_all_reduce(x);
    } else {
      ops::embedding(ctx, x, ids.to(model.device()).view({N}), w.embed);
    }
    for (int64_t l = 0; l < c.n_layers; l++) {
      Saved s;
      layer_forward(l, x, lora, s);
      if (!saved) continue;
      if (recompute) {
        Saved kept;
        kept.x_in = s.x_in;  // the rest of s is freed here: one layer's activations alive at a time
        saved->push_back(std::move(kept));
      } else {
        saved->push_back(std::move(s));
      }
    }
    return x;
  }

  // Layer l's forward: x (N, D), the residual stream, in place from the layer's input to its output; s gets everything
  // the layer's backward needs (x_in included). The same inputs give the same bits, so the backward's recompute
  // reproduces the forward exactly.
  void layer_forward(int64_t l, Tensor x, const LoraAdapters* lora, Saved& s) {
    const LayerWeights& L = model.weights().layers[static_cast<size_t>(l)];
    s.x_in = clone(x);
    s.xn1 = act(c.d_model);
    ops::rmsnorm(ctx, s.xn1, x, L.attn_norm, eps);
    s.q = act(c.q_dim()), s.k = act(c.kv_dim()), s.v = act(c.kv_dim());
    std::optional<ProfileScope> prof(std::in_place, ctx, "fwd q/k/v (+LoRA)");
    project(ctx, lora, l, LoraTarget::Q, s.q, s.xn1, L.wq, c.qkv_bias ? &L.bq : nullptr);
    project(ctx, lora, l, LoraTarget::K, s.k, s.xn1, L.wk, c.qkv_bias ? &L.bk : nullptr);
    project(ctx, lora, l, LoraTarget::V, s.v, s.xn1, L.wv, c.qkv_bias ? &L.bv : nullptr);
    if (c.qk_norm) {
      s.q_pre = clone(s.q), s.k_pre = clone(s.k);
      ops::rmsnorm(ctx, s.q.view({N * H, HS}), s.q_pre.view({N * H, HS}), L.q_norm, eps);
      ops::rmsnorm(ctx, s.k.view({N * HKV, HS}), s.k_pre.view({N * HKV, HS}), L.k_norm, eps);
    }
    s.att = act(c.q_dim());
    prof.emplace(ctx, "fwd attention / liger");
    if (model.is_liger_layer(l)) {
      for (const auto& [s0, len] : segments) {
        const int64_t rows = segments.size() == 1 ? N : len;
        const int64_t r0 = segments.size() == 1 ? 0 : s0;
        liger_attention(ctx, c, s.att.slice(r0, rows), s.q.slice(r0, rows), s.k.slice(r0, rows), s.v.slice(r0, rows),
                        positions.slice(r0, rows), model.inv_freq(), seg_batch(), seg_len(len), 0, nullptr);
      }
    } else {
      s.qr = clone(s.q), s.kr = clone(s.k);
      ops::rope(ctx, s.qr.view({N, H, HS}), positions, model.inv_freq());
      ops::rope(ctx, s.kr.view({N, HKV, HS}), positions, model.inv_freq());
      for (const auto& [s0, len] : segments) {
        ops::attention(ctx, seg(s.att, s0, len, H), seg(s.qr, s0, len, H), seg(s.kr, s0, len, HKV),
                       seg(s.v, s0, len, HKV), 0, seg_len(len), scale, c.sliding_window);
      }
    }
    prof.emplace(ctx, "fwd o + MLP (+LoRA)");
    // Row-parallel W_O (and its LoRA, A split by columns): partial products summed over the group; rank 0 adds the
    // residual and the bias (model/llama.cpp).
    project(ctx, lora, l, LoraTarget::O, x, s.att, L.wo, c.o_bias && tp_root ? &L.bo : nullptr, tp_root);
    model.tp_all_reduce(x);
    s.x_mid = clone(x);
    s.xn2 = act(c.d_model);
    ops::rmsnorm(ctx, s.xn2, x, L.mlp_norm, eps);
    s.gate = act(c.local_ff()), s.up = act(c.local_ff()), s.act = act(c.local_ff());
    project(ctx, lora, l, LoraTarget::Gate, s.gate, s.xn2, L.w_gate, nullptr);
    project(ctx, lora, l, LoraTarget::Up, s.up, s.xn2, L.w_up, nullptr);
    ops::swiglu(ctx, s.act, s.gate, s.up);
    project(ctx, lora, l, LoraTarget::Down, x, s.act, L.w_down, nullptr, tp_root);
    model.tp_all_reduce(x);
  }

  // dx: the gradient of the final residual stream (N, D); walks the layers back, accumulating LoRA gradients.
  // With `recompute`, saved[l] holds x_in alone and the layer's forward runs again first.
  void backward(Tensor dx, LoraAdapters& lora, const std::vector<Saved>& saved,
                const std::function<void(int64_t)>& after_layer, bool recompute = false) {
    const ModelWeights& w = model.weights();
    for (int64_t l = c.n_layers - 1; l >= 0; l--) {
      const LayerWeights& L = w.layers[static_cast<size_t>(l)];
      Saved again;
      if (recompute) {
        ProfileScope prof(ctx, "bwd: recompute the layer's forward");
        layer_forward(l, clone(saved[static_cast<size_t>(l)].x_in), &lora, again);
      }
      const Saved& s = recompute ? again : saved[static_cast<size_t>(l)];
      // MLP block: x_out = x_mid + down(silu(gate) * up).
      std::optional<ProfileScope> prof(std::in_place, ctx, "bwd MLP + o (+LoRA)");
      Tensor dact = act(c.local_ff()), dgate = act(c.local_ff()), dup = act(c.local_ff());
      project_backward(ctx, &lora, l, LoraTarget::Down, dact, dx, s.act, L.w_down, false);
      ops::swiglu_backward(ctx, dgate, dup, dact, s.gate, s.up);
      Tensor dxn2 = act(c.d_model);
      project_backward(ctx, &lora, l, LoraTarget::Gate, dxn2, dgate, s.xn2, L.w_gate, false);
      project_backward(ctx, &lora, l, LoraTarget::Up, dxn2, dup, s.xn2, L.w_up, true);
      model.tp_all_reduce(dxn2);  // column-parallel gate/up: each rank's input gradient is a partial sum
      ops::rmsnorm_backward(ctx, dx, dxn2, s.x_mid, L.mlp_norm, eps);  // dx: now d x_mid
      // Attention block: x_mid = x_in + o_proj(att).
      Tensor datt = act(c.q_dim());
      project_backward(ctx, &lora, l, LoraTarget::O, datt, dx, s.att, L.wo, false);
      Tensor dq = act(c.q_dim()), dk = act(c.kv_dim()), dv = act(c.kv_dim());
      prof.emplace(ctx, "bwd attention / liger");
      if (model.is_liger_layer(l)) {
        for (const auto& [s0, len] : segments) {
          const int64_t rows = segments.size() == 1 ? N : len;
          const int64_t r0 = segments.size() == 1 ? 0 : s0;
          liger_attention_backward(ctx, c, datt.slice(r0, rows), s.q.slice(r0, rows), s.k.slice(r0, rows),
                                   s.v.slice(r0, rows), positions.slice(r0, rows), model.inv_freq(), seg_batch(),
                                   seg_len(len), dq.slice(r0, rows), dk.slice(r0, rows), dv.slice(r0, rows));
        }
      } else {
        for (const auto& [s0, len] : segments) {
          ops::attention_backward(ctx, seg(dq, s0, len, H), seg(dk, s0, len, HKV), seg(dv, s0, len, HKV),
                                  seg(datt, s0, len, H), seg(s.qr, s0, len, H), seg(s.kr, s0, len, HKV),
                                  seg(s.v, s0, len, HKV), scale, c.sliding_window);
        }
        ops::rope_backward(ctx, dq.view({N, H, HS}), positions, model.inv_freq());
        ops::rope_backward(ctx, dk.view({N, HKV, HS}), positions, model.inv_freq());
      }
      if (c.qk_norm) {
        Tensor dq_pre = zeros(c.q_dim()), dk_pre = zeros(c.kv_dim());
        ops::rmsnorm_backward(ctx, dq_pre.view({N * H, HS}), dq.view({N * H, HS}), s.q_pre.view({N * H, HS}), L.q_norm,
                              eps);
        ops::rmsnorm_backward(ctx, dk_pre.view({N * HKV, HS}), dk.view({N * HKV, HS}), s.k_pre.view({N * HKV, HS}),
                              L.k_norm, eps);
        dq = dq_pre, dk = dk_pre;
      }
      prof.emplace(ctx, "bwd q/k/v (+LoRA) + norms");
      Tensor dxn1 = act(c.d_model);
      project_backward(ctx, &lora, l, LoraTarget::Q, dxn1, dq, s.xn1, L.wq, false);
      project_backward(ctx, &lora, l, LoraTarget::K, dxn1, dk, s.xn1, L.wk, true);
      project_backward(ctx, &lora, l, LoraTarget::V, dxn1, dv, s.xn1, L.wv, true);
      model.tp_all_reduce(dxn1);  // column-parallel q/k/v
      ops::rmsnorm_backward(ctx, dx, dxn1, s.x_in, L.attn_norm, eps);  // dx: now d x_in
      if (after_layer) after_layer(l);
    }
  }
};

void check_batch(const LlamaModel& model, const Tensor& ids, const Tensor& targets) {
  LIGER_CHECK(ids.device() == Device::CPU && ids.dtype() == DType::I32 && ids.ndim() == 2,
              "train_step: ids must be a host i32 (B, T) tensor");
  LIGER_CHECK(targets.shape() == ids.shape() && targets.dtype() == DType::I32, "train_step: targets must match ids");
  const int64_t V = model.config().vocab_size;
  for (int64_t i = 0; i < ids.numel(); i++) {
    LIGER_CHECK(ids.ptr<int32_t>()[i] >= 0 && ids.ptr<int32_t>()[i] < V, "train_step: token id %d outside [0, %lld)",
                ids.ptr<int32_t>()[i], static_cast<long long>(V));
  }
}

// The per-token losses in fp32 on the GPU, in the model's dtype (f32, or f64 for the gradient checks) on the CPU.
Tensor make_losses(const Runner& r) {
  return Tensor::empty({r.N}, r.ctx.is_cuda() ? DType::F32 : r.model.dtype(), r.model.device());
}

// The fused LM head + cross-entropy; vocab-parallel under tensor parallelism (no rank holds whole rows of logits).
void lm_head_loss(LlamaModel& model, Tensor losses, Tensor dh, const Tensor& hn, const Tensor& targets,
                  float grad_scale) {
  const ModelConfig& c = model.config();
  if (!model.tensor_parallel()) {
    ops::lm_head_cross_entropy(model.context(), losses, dh, hn, model.weights().lm_head, targets, grad_scale);
    return;
  }
  dist::Communicator* tp = model.tp();
  ops::vocab_parallel_cross_entropy(model.context(), losses, dh, hn, model.weights().lm_head, targets, c.vocab_start(),
                                    c.vocab_valid(), grad_scale, [tp](Tensor t, bool is_max) {
                                      tp->all_reduce(t, is_max ? dist::ReduceOp::Max : dist::ReduceOp::Sum);
                                    });
}

StepStats sum_losses(const Tensor& device_losses, const Tensor& targets) {
  const Tensor losses = device_losses.to(Device::CPU);
  StepStats st;
  st.token_losses.assign(static_cast<size_t>(targets.numel()), 0.0);
  for (int64_t i = 0; i < targets.numel(); i++) {
    if (targets.ptr<int32_t>()[i] == -100) continue;
    const double l = losses.dtype() == DType::F64 ? losses.ptr<double>()[i] : losses.ptr<float>()[i];
    st.token_losses[static_cast<size_t>(i)] = l;
    st.loss_sum += l;
    st.tokens++;
  }
  return st;
}

}  // namespace

StepStats train_step(LlamaModel& model, LoraAdapters& lora, const Tensor& ids, const Tensor& targets, float grad_scale,
                     const std::vector<int32_t>* doc_starts, const std::function<void(int64_t)>& after_layer,
                     bool recompute) {
  check_batch(model, ids, targets);
  const ModelConfig& c = model.config();
  Runner r(model, ids.dim(0), ids.dim(1), doc_starts);
  std::vector<Saved> saved;
  Tensor x = r.forward(ids, &lora, &saved, recompute);
  Tensor hn = r.act(c.d_model);
  ops::rmsnorm(r.ctx, hn, x, model.weights().final_norm, r.eps);
  Tensor losses = make_losses(r);
  std::optional<ProfileScope> prof(std::in_place, r.ctx, "LM head + cross-entropy (fwd+bwd)");
  Tensor dh = r.act(c.d_model);
  lm_head_loss(model, losses, dh, hn, targets.view({r.N}).to(model.device()), grad_scale);
  prof.reset();
  Tensor dx = r.zeros(c.d_model);
  ops::rmsnorm_backward(r.ctx, dx, dh, x, model.weights().final_norm, r.eps);
  r.backward(dx, lora, saved, after_layer, recompute);
  return sum_losses(losses, targets);
}

StepStats eval_step(LlamaModel& model, const LoraAdapters* lora, const Tensor& ids, const Tensor& targets,
                    const std::vector<int32_t>* doc_starts) {
  check_batch(model, ids, targets);
  const ModelConfig& c = model.config();
  Runner r(model, ids.dim(0), ids.dim(1), doc_starts);
  Tensor x = r.forward(ids, lora, nullptr);
  Tensor hn = r.act(c.d_model);
  ops::rmsnorm(r.ctx, hn, x, model.weights().final_norm, r.eps);
  Tensor losses = make_losses(r);
  lm_head_loss(model, losses, Tensor(), hn, targets.view({r.N}).to(model.device()), 0.0f);
  return sum_losses(losses, targets);
}

}  // namespace liger
