// model/llama.h — the Llama-family decoder (llama, mistral, qwen2, qwen3): weights, KV cache, batched forward to
// logits, and the activation table that sizes its memory.
//
// Written in terms of the local slice of a tensor-parallel rank (ModelConfig::local_heads(), local_kv_heads(),
// local_ff(), local_vocab()): Megatron's layout, with q, k, v, gate, up column-parallel, o and down row-parallel
// followed by a sum over the group, the embedding and LM head split by vocabulary. Storage dtype: f32 on the CPU (the reference path), bf16 (or f32) on the GPU;
// logits are always f32.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/context.h"
#include "dist/communicator.h"
#include "model/config.h"
#include "model/liger_attention.h"

namespace liger {

struct LayerWeights {
  Tensor attn_norm;                    // (D)
  Tensor wq, wk, wv, wo;               // (H*HS, D), (HKV*HS, D), (HKV*HS, D), (D, H*HS)
  Tensor bq, bk, bv, bo;               // (H*HS), (HKV*HS), (HKV*HS), (D) — only with qkv_bias / o_bias
  Tensor q_norm, k_norm;               // (HS) — only with qk_norm (qwen3)
  Tensor mlp_norm;                     // (D)
  Tensor w_gate, w_up, w_down;         // (F, D), (F, D), (D, F)
};

struct ModelWeights {
  Tensor embed;                        // (V, D)
  std::vector<LayerWeights> layers;    // L
  Tensor final_norm;                   // (D)
  Tensor lm_head;                      // (V, D); the same memory as embed when tied
};

// How a weight splits over the ranks of a tensor-parallel group (DESIGN.md §5).
enum class Shard {
  Replicated,  // every rank holds all of it (norms, the o/down biases)
  Rows,        // dim 0 in tp equal blocks (column-parallel q, k, v, gate, up and their biases)
  Cols,        // dim 1 in tp equal blocks (row-parallel o, down)
  Vocab,       // dim 0 by vocabulary blocks of local_vocab() rows, the last one zero-padded (embedding, LM head)
};

// One row of the weight table: the HF tensor name, this rank's shape for this config, where it goes, and how it is cut
// from the full tensor of shape `full` in the checkpoint.
struct WeightDesc {
  std::string name;
  Shape shape;
  Tensor* slot;
  bool is_norm;  // RMSNorm gain (random init: ones)
  Shard shard = Shard::Replicated;
  Shape full;    // the whole tensor (= shape at tp = 1)
};
// This rank's slice of `full_tensor` (a host tensor, e.g. a view of a mapped safetensors file), copied into `dst`
// (converting the dtype): only the slice's bytes are read.
void load_weight_slice(Tensor dst, const Tensor& full_tensor, const WeightDesc& d, const ModelConfig& cfg);
std::vector<WeightDesc> weight_table(const ModelConfig& cfg, ModelWeights* w);

// One row of the activation table: what a forward of B sequences of T tokens allocates.
struct ActDesc {
  std::string name;
  Shape shape;
  DType dtype;
};
std::vector<ActDesc> activation_table(const ModelConfig& cfg, int64_t B, int64_t T, DType dtype, bool last_only);

// What decoding carries from one forward to the next, for B sequences: per softmax-attention layer its keys and values
// (B, S, HKV, HS) for up to S = capacity positions; per Liger layer its recurrent state and window ring buffer, whose
// size does not grow with the sequence. A pure Liger model has no capacity limit.
struct KVCache {
  std::vector<Tensor> k, v;            // L entries; undefined for Liger layers
  std::vector<LigerLayerState> liger;  // L entries; empty for softmax layers
  int64_t length = 0;                  // positions filled (the same for every sequence of the batch)
  int64_t capacity = 0;                // positions the softmax layers can hold
  int64_t batch = 0;
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of an HF model directory; weights are converted to `dtype` on
  // ctx's device. Errors name the file and the tensor.
  // With a tensor-parallel communicator `tp` of several ranks, this rank loads only its slices (model/config.h).
  static std::unique_ptr<LlamaModel> load(const std::string& dir, Context& ctx, DType dtype,
                                          dist::Communicator* tp = nullptr);
  // Random weights (normal, std 0.02; norms 1), for benchmarks. cfg's tp_size / tp_rank must match `tp`.
  static std::unique_ptr<LlamaModel> random(const ModelConfig& cfg, Context& ctx, DType dtype, uint64_t seed,
                                            dist::Communicator* tp = nullptr);

  const ModelConfig& config() const { return cfg_; }
  DType dtype() const { return dtype_; }
  Context& context() { return ctx_; }
  Device device() const { return ctx_.device(); }
  size_t weight_bytes() const { return weights_arena_.used(); }
  const ModelWeights& weights() const { return w_; }
  ModelWeights& mutable_weights() { return w_; }  // for merging adapters
  const Tensor& inv_freq() const { return inv_freq_; }
  // The tensor-parallel group (null or one rank: no tensor parallelism).
  dist::Communicator* tp() const { return tp_; }
  bool tensor_parallel() const { return tp_ && tp_->size() > 1; }
  // Sum over the tensor-parallel group, in place (a no-op without tensor parallelism).
  void tp_all_reduce(Tensor t) const;

  // A cache for `batch` sequences of up to `capacity` positions (ignored by Liger layers).
  KVCache make_cache(int64_t batch, int64_t capacity) const;
  // Which layers of a Liger model run softmax attention (liger select-layers): Liger adds no parameters, so any layer
  // can run its base model's softmax attention instead, without reloading; every layer listed gives the base model.
  // Layers must exist. A KV cache made before does not fit the new layout (make another).
  void set_softmax_layers(std::vector<int64_t> layers);
  // Whether layer l runs Liger attention (a Liger model, and l not kept as softmax attention).
  bool is_liger_layer(int64_t l) const { return cfg_.is_liger && !cfg_.liger.is_softmax_layer(l); }

  // logits = forward of ids (B, T) i32 (host tensor) at positions cache->length .. +T-1; the keys/values are
  // appended to the cache (cache->length advances by T). Without a cache: positions 0..T-1, nothing kept.
  // logits: f32 on ctx's device, (B, T, V), or (B, 1, V) with last_only (only each sequence's last position).
  void forward(const Tensor& ids, KVCache* cache, Tensor logits, bool last_only);

  // Peak bytes of the activation arena so far.
  size_t activation_bytes() const { return acts_.capacity(); }

 private:
  LlamaModel(const ModelConfig& cfg, Context& ctx, DType dtype);
  void allocate_weights();
  void ensure_activations(int64_t B, int64_t T, bool last_only);

  ModelConfig cfg_;
  Context& ctx_;
  DType dtype_;
  Arena weights_arena_;
  ModelWeights w_;
  Tensor inv_freq_;  // (HS/2) f32 on the device
  dist::Communicator* tp_ = nullptr;
  Arena acts_;
  int64_t acts_B_ = 0, acts_T_ = 0;
  bool acts_last_only_ = false;
};

}  // namespace liger
