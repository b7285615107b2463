#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"

namespace liger {

std::vector<WeightDesc> weight_table(const ModelConfig& c, ModelWeights* w) {
  const int64_t D = c.d_model, HS = c.head_dim, QD = c.q_dim(), KVD = c.kv_dim(), F = c.local_ff();
  const int64_t V = c.vocab_size, Vs = c.local_vocab(), FQD = c.n_heads * HS, FKVD = c.n_kv_heads * HS, FF = c.d_ff;
  std::vector<WeightDesc> t;
  w->layers.resize(static_cast<size_t>(c.n_layers));
  t.push_back({"model.embed_tokens.weight", {Vs, D}, &w->embed, false, Shard::Vocab, {V, D}});
  for (int64_t l = 0; l < c.n_layers; l++) {
    LayerWeights& L = w->layers[static_cast<size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {D}, &L.attn_norm, true, Shard::Replicated, {D}});
    t.push_back({p + "self_attn.q_proj.weight", {QD, D}, &L.wq, false, Shard::Rows, {FQD, D}});
    t.push_back({p + "self_attn.k_proj.weight", {KVD, D}, &L.wk, false, Shard::Rows, {FKVD, D}});
    t.push_back({p + "self_attn.v_proj.weight", {KVD, D}, &L.wv, false, Shard::Rows, {FKVD, D}});
    t.push_back({p + "self_attn.o_proj.weight", {D, QD}, &L.wo, false, Shard::Cols, {D, FQD}});
    if (c.qkv_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {QD}, &L.bq, false, Shard::Rows, {FQD}});
      t.push_back({p + "self_attn.k_proj.bias", {KVD}, &L.bk, false, Shard::Rows, {FKVD}});
      t.push_back({p + "self_attn.v_proj.bias", {KVD}, &L.bv, false, Shard::Rows, {FKVD}});
    }
    if (c.o_bias) t.push_back({p + "self_attn.o_proj.bias", {D}, &L.bo, false, Shard::Replicated, {D}});
    if (c.qk_norm) {
      t.push_back({p + "self_attn.q_norm.weight", {HS}, &L.q_norm, true, Shard::Replicated, {HS}});
      t.push_back({p + "self_attn.k_norm.weight", {HS}, &L.k_norm, true, Shard::Replicated, {HS}});
    }
    t.push_back({p + "post_attention_layernorm.weight", {D}, &L.mlp_norm, true, Shard::Replicated, {D}});
    t.push_back({p + "mlp.gate_proj.weight", {F, D}, &L.w_gate, false, Shard::Rows, {FF, D}});
    t.push_back({p + "mlp.up_proj.weight", {F, D}, &L.w_up, false, Shard::Rows, {FF, D}});
    t.push_back({p + "mlp.down_proj.weight", {D, F}, &L.w_down, false, Shard::Cols, {D, FF}});
  }
  t.push_back({"model.norm.weight", {D}, &w->final_norm, true, Shard::Replicated, {D}});
  if (!c.tie_embeddings) t.push_back({"lm_head.weight", {Vs, D}, &w->lm_head, false, Shard::Vocab, {V, D}});
  return t;
}

void load_weight_slice(Tensor dst, const Tensor& src, const WeightDesc& d, const ModelConfig& c) {
  LIGER_ASSERT(src.device() == Device::CPU && src.shape() == d.full);
  const int64_t r = c.tp_rank;
  switch (d.shard) {
    case Shard::Replicated:
      copy(dst, src);
      return;
    case Shard::Rows:  // a contiguous block of rows (1-D biases: a block of elements)
      copy(dst, src.slice(r * d.shape[0], d.shape[0]));
      return;
    case Shard::Cols:  // every row's block of columns, gathered on the host, then one copy to dst's device
      copy(dst, column_block(src, r * d.shape[1], d.shape[1]));
      return;
    case Shard::Vocab: {  // rows [v0, v0 + valid), then zero rows up to local_vocab()
      const int64_t valid = c.vocab_valid();
      if (valid < d.shape[0]) copy(dst, Tensor::zeros(d.shape, dst.dtype(), Device::CPU));
      if (valid > 0) copy(dst.slice(0, valid), src.slice(c.vocab_start(), valid));
      return;
    }
  }
}

std::vector<ActDesc> activation_table(const ModelConfig& c, int64_t B, int64_t T, DType dt, bool last_only) {
  const int64_t N = B * T;
  std::vector<ActDesc> t = {
      {"ids", {N}, DType::I32},                 // token ids on the device
      {"positions", {N}, DType::I32},           // absolute positions
      {"x", {N, c.d_model}, dt},                // residual stream
      {"xn", {N, c.d_model}, dt},               // normalized input of a sub-layer
      {"q", {N, c.q_dim()}, dt},                // (B, T, H, HS)
      {"k", {N, c.kv_dim()}, dt},               // (B, T, HKV, HS)
      {"v", {N, c.kv_dim()}, dt},               // (B, T, HKV, HS)
      {"att", {N, c.q_dim()}, dt},              // attention output (B, T, H, HS)
      {"gate", {N, c.local_ff()}, dt},          // MLP gate, then silu(gate) * up
      {"up", {N, c.local_ff()}, dt},            // MLP up
  };
  if (last_only && T > 1) t.push_back({"last", {B, c.d_model}, dt});  // the last position of each sequence
  return t;
}

LlamaModel::LlamaModel(const ModelConfig& cfg, Context& ctx, DType dtype) : cfg_(cfg), ctx_(ctx), dtype_(dtype) {
  LIGER_CHECK(ctx.is_cuda() ? dtype != DType::F64 : (dtype == DType::F32 || dtype == DType::F64),
              "the CPU path runs in f32 (f64 for gradient checks), the GPU path in bf16 or f32 (asked for %s on %s)",
              dtype_name(dtype), device_name(ctx.device()));
  std::vector<float> inv = ops::rope_inv_freq(cfg_.rope);
  inv_freq_ = Tensor::from_f32({static_cast<int64_t>(inv.size())}, inv).to(ctx.device());
}

void LlamaModel::allocate_weights() {
  std::vector<WeightDesc> table = weight_table(cfg_, &w_);
  size_t bytes = 0;
  for (const WeightDesc& d : table) bytes += Arena::footprint(d.shape, dtype_);
  weights_arena_ = Arena("weights", ctx_.device(), bytes);
  for (const WeightDesc& d : table) *d.slot = weights_arena_.alloc(d.shape, dtype_);
  if (cfg_.tie_embeddings) w_.lm_head = w_.embed;
}

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& dir, Context& ctx, DType dtype,
                                             dist::Communicator* tp) {
  namespace fs = std::filesystem;
  LIGER_CHECK(fs::is_directory(dir), "%s: model directory does not exist", dir.c_str());
  const std::string config_path = (fs::path(dir) / "config.json").string();
  LIGER_CHECK(fs::exists(config_path), "%s: missing config.json", dir.c_str());
  ModelConfig cfg = load_model_config(config_path);
  if (tp) cfg.set_tensor_parallel(tp->size(), tp->rank());
  std::unique_ptr<LlamaModel> m(new LlamaModel(cfg, ctx, dtype));
  m->tp_ = tp;
  Checkpoint ckpt = Checkpoint::open_dir(dir);
  m->allocate_weights();
  for (const WeightDesc& d : weight_table(m->cfg_, &m->w_)) {
    LIGER_CHECK(ckpt.has(d.name), "%s: checkpoint has no tensor '%s' (needed by %s)", dir.c_str(), d.name.c_str(),
                cfg.model_type.c_str());
    auto [file, entry] = ckpt.find(d.name);
    Shape got(entry->shape);
    LIGER_CHECK(got == d.full, "%s: tensor '%s' has shape %s but config.json implies %s", file->path().c_str(),
                d.name.c_str(), got.str().c_str(), d.full.str().c_str());
    load_weight_slice(*d.slot, file->tensor(d.name), d, m->cfg_);  // only this rank's slice is read from the mapping
  }
  if (cfg.tie_embeddings) m->w_.lm_head = m->w_.embed;
  LOG_DEBUG("loaded %s from %s (%.1f MiB of weights)", cfg.summary().c_str(), dir.c_str(),
            m->weights_arena_.used() / 1048576.0);
  return m;
}

std::unique_ptr<LlamaModel> LlamaModel::random(const ModelConfig& cfg, Context& ctx, DType dtype, uint64_t seed,
                                               dist::Communicator* tp) {
  LIGER_CHECK(tp ? (cfg.tp_size == tp->size() && cfg.tp_rank == tp->rank()) : cfg.tp_size == 1,
              "LlamaModel::random: the config's tensor-parallel slice does not match the communicator");
  std::unique_ptr<LlamaModel> m(new LlamaModel(cfg, ctx, dtype));
  m->tp_ = tp;
  m->allocate_weights();
  uint64_t i = 0;
  for (const WeightDesc& d : weight_table(m->cfg_, &m->w_)) {
    if (d.is_norm) ops::fill_normal(ctx, *d.slot, seed + i++, 1.0f, 0.0f);
    else ops::fill_normal(ctx, *d.slot, seed + i++, 0.0f, 0.02f);
  }
  if (cfg.tie_embeddings) m->w_.lm_head = m->w_.embed;
  return m;
}

void LlamaModel::set_softmax_layers(std::vector<int64_t> layers) {
  LIGER_CHECK(cfg_.is_liger, "set_softmax_layers: not a Liger model");
  for (int64_t l : layers)
    LIGER_CHECK(l >= 0 && l < cfg_.n_layers, "set_softmax_layers: layer %lld of a %lld-layer model",
                static_cast<long long>(l), static_cast<long long>(cfg_.n_layers));
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  cfg_.liger.softmax_layers = std::move(layers);
}

void LlamaModel::tp_all_reduce(Tensor t) const {
  if (tensor_parallel()) tp_->all_reduce(t, dist::ReduceOp::Sum);
}

KVCache LlamaModel::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.batch = batch;
  c.capacity = capacity;
  c.k.resize(static_cast<size_t>(cfg_.n_layers));
  c.v.resize(static_cast<size_t>(cfg_.n_layers));
  c.liger.resize(static_cast<size_t>(cfg_.n_layers));
  bool any_softmax = false;
  for (int64_t l = 0; l < cfg_.n_layers; l++) {
    if (is_liger_layer(l)) {
      c.liger[static_cast<size_t>(l)] = make_liger_state(cfg_, batch, dtype_, ctx_.device());
      continue;
    }
    any_softmax = true;
    Shape s{batch, capacity, cfg_.local_kv_heads(), cfg_.head_dim};
    c.k[static_cast<size_t>(l)] = Tensor::empty(s, dtype_, ctx_.device());
    c.v[static_cast<size_t>(l)] = Tensor::empty(s, dtype_, ctx_.device());
  }
  if (!any_softmax) c.capacity = INT64_MAX;  // constant memory: nothing grows with the sequence
  return c;
}

void LlamaModel::ensure_activations(int64_t B, int64_t T, bool last_only) {
  if (acts_.capacity() > 0 && B == acts_B_ && T == acts_T_ && last_only == acts_last_only_) return;
  size_t bytes = 0;
  for (const ActDesc& a : activation_table(cfg_, B, T, dtype_, last_only)) bytes += Arena::footprint(a.shape, a.dtype);
  if (bytes > acts_.capacity()) acts_ = Arena("activations", ctx_.device(), bytes);
  acts_B_ = B, acts_T_ = T, acts_last_only_ = last_only;
}

void LlamaModel::forward(const Tensor& ids, KVCache* cache, Tensor logits, bool last_only) {
  const ModelConfig& c = cfg_;
  LIGER_CHECK(ids.device() == Device::CPU && ids.dtype() == DType::I32 && ids.ndim() == 2,
              "forward: ids must be a host i32 (B, T) tensor, got %s", ids.str().c_str());
  const int64_t B = ids.dim(0), T = ids.dim(1), N = B * T;
  const int64_t H = c.local_heads(), HKV = c.local_kv_heads(), HS = c.head_dim, D = c.d_model, V = c.vocab_size;
  LIGER_CHECK(T > 0 && B > 0, "forward: empty batch");
  const int64_t pos0 = cache ? cache->length : 0;
  if (cache) {
    LIGER_CHECK(cache->batch == B, "forward: cache holds %lld sequences, batch has %lld",
                static_cast<long long>(cache->batch), static_cast<long long>(B));
    LIGER_CHECK(pos0 + T <= cache->capacity, "forward: %lld positions do not fit the cache of %lld",
                static_cast<long long>(pos0 + T), static_cast<long long>(cache->capacity));
  }
  LIGER_CHECK(logits.dtype() == DType::F32 && logits.device() == ctx_.device() &&
                  logits.shape() == Shape({B, last_only ? 1 : T, V}),
              "forward: logits must be f32 (%lld, %lld, %lld) on %s, got %s", static_cast<long long>(B),
              static_cast<long long>(last_only ? 1 : T), static_cast<long long>(V), device_name(ctx_.device()),
              logits.str().c_str());
  for (int64_t i = 0; i < N; i++) {
    int32_t id = ids.ptr<int32_t>()[i];
    LIGER_CHECK(id >= 0 && id < V, "forward: token id %d is outside the vocabulary [0, %lld)", id,
                static_cast<long long>(V));
  }

  ensure_activations(B, T, last_only);
  acts_.reset();
  Tensor d_ids = acts_.alloc({N}, DType::I32);
  Tensor positions = acts_.alloc({N}, DType::I32);
  Tensor x = acts_.alloc({N, D}, dtype_);
  Tensor xn = acts_.alloc({N, D}, dtype_);
  Tensor q = acts_.alloc({N, c.q_dim()}, dtype_);
  Tensor k = acts_.alloc({N, c.kv_dim()}, dtype_);
  Tensor v = acts_.alloc({N, c.kv_dim()}, dtype_);
  Tensor att = acts_.alloc({N, c.q_dim()}, dtype_);
  Tensor gate = acts_.alloc({N, c.local_ff()}, dtype_);
  Tensor up = acts_.alloc({N, c.local_ff()}, dtype_);

  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) pos[static_cast<size_t>(b * T + t)] = static_cast<int32_t>(pos0 + t);
  copy(positions, Tensor::from_i32({N}, pos));
  copy(d_ids, ids.view({N}));

  Context& ctx = ctx_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const bool tp = tensor_parallel();
  const bool tp_root = !tp || tp_->rank() == 0;  // the rank that adds the replicated o/down biases and residual
  if (tp) {
    ops::embedding_shard(ctx, x, d_ids, w_.embed, c.vocab_start());  // zeros for ids of other ranks' rows
    tp_all_reduce(x);
  } else {
    ops::embedding(ctx, x, d_ids, w_.embed);
  }
  for (int64_t l = 0; l < c.n_layers; l++) {
    const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
    // Attention block: x += o_proj(attention(rope(q), rope(k), v)).
    ops::rmsnorm(ctx, xn, x, L.attn_norm, static_cast<float>(c.rms_eps));
    ops::matmul(ctx, q, xn, L.wq, c.qkv_bias ? &L.bq : nullptr);
    ops::matmul(ctx, k, xn, L.wk, c.qkv_bias ? &L.bk : nullptr);
    ops::matmul(ctx, v, xn, L.wv, c.qkv_bias ? &L.bv : nullptr);
    if (c.qk_norm) {
      ops::rmsnorm(ctx, q.view({N * H, HS}), q.view({N * H, HS}), L.q_norm, static_cast<float>(c.rms_eps));
      ops::rmsnorm(ctx, k.view({N * HKV, HS}), k.view({N * HKV, HS}), L.k_norm, static_cast<float>(c.rms_eps));
    }
    if (is_liger_layer(l)) {
      liger_attention(ctx, c, att, q, k, v, positions, inv_freq_, B, T, pos0,
                      cache ? &cache->liger[static_cast<size_t>(l)] : nullptr);
    } else {
      ops::rope(ctx, q.view({N, H, HS}), positions, inv_freq_);
      ops::rope(ctx, k.view({N, HKV, HS}), positions, inv_freq_);
      Tensor kk = k.view({B, T, HKV, HS}), vv = v.view({B, T, HKV, HS});
      int64_t kv_len = T;
      if (cache) {
        kk = cache->k[static_cast<size_t>(l)];  // (B, S, HKV, HS)
        vv = cache->v[static_cast<size_t>(l)];
        ops::kv_write(ctx, kk, k.view({B, T, HKV, HS}), pos0);
        ops::kv_write(ctx, vv, v.view({B, T, HKV, HS}), pos0);
        kv_len = pos0 + T;
      }
      ops::attention(ctx, att.view({B, T, H, HS}), q.view({B, T, H, HS}), kk, vv, pos0, kv_len, scale,
                     c.sliding_window);
    }
    // Row-parallel W_O: rank 0 adds its partial product to the residual, the others replace theirs by their partial
    // product, and the sum over the group is x + o_proj(att) (the bias added once, by rank 0).
    ops::matmul(ctx, x, att, L.wo, c.o_bias && tp_root ? &L.bo : nullptr, /*accumulate=*/tp_root);
    tp_all_reduce(x);
    // MLP block: x += down(silu(gate(xn)) * up(xn)).
    ops::rmsnorm(ctx, xn, x, L.mlp_norm, static_cast<float>(c.rms_eps));
    ops::matmul(ctx, gate, xn, L.w_gate);
    ops::matmul(ctx, up, xn, L.w_up);
    ops::swiglu(ctx, gate, gate, up);
    ops::matmul(ctx, x, gate, L.w_down, nullptr, /*accumulate=*/tp_root);  // row-parallel, as W_O
    tp_all_reduce(x);
  }
  if (cache) cache->length = pos0 + T;

  Tensor h = x;
  if (last_only && T > 1) {
    Tensor last = acts_.alloc({B, D}, dtype_);
    for (int64_t b = 0; b < B; b++) copy(last.row(b), x.row(b * T + T - 1));
    h = last;
  }
  Tensor hn = xn.slice(0, h.dim(0));
  ops::rmsnorm(ctx, hn, h, w_.final_norm, static_cast<float>(c.rms_eps));
  if (!tp) {
    ops::matmul(ctx, logits.view({h.dim(0), V}), hn, w_.lm_head);
    return;
  }
  // Vocab-parallel LM head: each rank computes its block of columns; the blocks are gathered (generation and
  // benchmarks need whole rows of logits; training never does, model/train_step.cpp) and laid side by side.
  const int64_t rows = h.dim(0), Vs = c.local_vocab(), R = tp_->size();
  Tensor mine = Tensor::empty({rows, Vs}, DType::F32, ctx.device());
  ops::matmul(ctx, mine, hn, w_.lm_head);
  Tensor all = Tensor::empty({R * rows, Vs}, DType::F32, Device::CPU);
  tp_->all_gather(all, mine);
  Tensor full = Tensor::empty({rows, V}, DType::F32, Device::CPU);
  for (int64_t r = 0; r < R; r++) {
    const int64_t v0 = r * Vs, n = std::min(Vs, V - v0);
    if (n <= 0) continue;
    for (int64_t i = 0; i < rows; i++)
      std::memcpy(full.ptr<float>() + i * V + v0, all.ptr<float>() + (r * rows + i) * Vs,
                  static_cast<size_t>(n) * sizeof(float));
  }
  copy(logits.view({rows, V}), full);
}

}  // namespace liger
