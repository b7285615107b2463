// model/config.h — ModelConfig: the architecture of a Llama-family decoder, read from an HF config.json.
//
// Supported model_type values: llama (Llama-2, Llama-3, Llama-3.1/3.2 with rope type llama3), mistral, qwen2
// (q/k/v biases), qwen3 (per-head q/k RMSNorm). Both the transformers 4.x keys (rope_theta, rope_scaling) and the
// 5.x key (rope_parameters) are read. A required key that is missing, a value liger does not implement (another
// hidden_act, rope type, ...) or an unknown model_type is an Error naming the file and the key; keys that only
// matter to other software (architectures, transformers_version, ...) are ignored.
#pragma once

#include <string>
#include <vector>

#include "core/json.h"

#include "ops/rope.h"

namespace liger {

// The Liger conversion of a model (liger-spec.md §2-§3), stored as the "liger" section of a Liger model directory's
// config.json. Liger adds no parameters: every attention layer not listed in softmax_layers computes
//   out = mix_swa * SWA(RoPE(q), RoPE(k), v) + mix_recurrent * Recurrent(q, k, v)
// from the same (LoRA-adapted) q, k, v projections, then W_O as before.
struct LigerConfig {
  enum class Variant { Gla, Hgrn2, Gsa };
  enum class GateSource { Q, K, V };
  Variant variant = Variant::Gla;   // gla (default): logsigmoid(k)/16 gate, softmax feature maps; hgrn2; gsa
  int64_t window = 64;              // SWA: previous tokens seen besides the current one (65 keys, spec §3.1)
  double mix_swa = 0.5;             // weight of the sliding-window branch (0: the no-SWA ablation)
  double mix_recurrent = 0.5;       // weight of the recurrent branch (0: the SWA-only ablation)
  bool gate = true;                 // false: no decay (pure linear attention; GLA only)
  GateSource gate_source = GateSource::K;  // projection the gate is pooled from (q is averaged over its GQA group)
  int64_t gsa_slots = 64;           // GSA: slots per head M (must divide head_dim)
  std::vector<int64_t> softmax_layers;     // layers kept as softmax attention (the inter-layer hybrid)
  int64_t chunk = 64;               // chunk length of the chunked recurrence (any value gives the same result)

  bool is_softmax_layer(int64_t layer) const;
  const char* variant_name() const;
};

struct ModelConfig {
  std::string model_type;        // llama | mistral | qwen2 | qwen3
  int64_t n_layers = 0;          // L
  int64_t d_model = 0;           // D  (hidden_size)
  int64_t n_heads = 0;           // H  (num_attention_heads)
  int64_t n_kv_heads = 0;        // HKV (num_key_value_heads; = H when absent, as in transformers)
  int64_t head_dim = 0;          // HS (head_dim; = D / H when absent)
  int64_t d_ff = 0;              // F  (intermediate_size)
  int64_t vocab_size = 0;        // V
  int64_t max_position = 0;      // max_position_embeddings (informative: generation may not go past it)
  double rms_eps = 1e-6;         // rms_norm_eps
  ops::RopeConfig rope;          // theta and scaling
  bool tie_embeddings = false;   // LM head = embedding matrix
  bool qkv_bias = false;         // q/k/v projections carry biases (qwen2; llama/qwen3 with attention_bias)
  bool o_bias = false;           // o_proj bias (llama attention_bias)
  bool qk_norm = false;          // qwen3: RMSNorm over each head of q and k, before RoPE
  int64_t sliding_window = 0;    // attention sees the last `sliding_window` keys incl. the current one; 0 = all
  int32_t bos_id = -1;           // bos_token_id (-1 when null)
  int32_t eos_id = -1;           // first eos_token_id (-1 when null)
  bool is_liger = false;         // config.json has a "liger" section
  LigerConfig liger;             // valid when is_liger

  // Tensor-parallel slice of this rank (DESIGN.md §5): tp_size ranks split the query heads, the KV heads (a KV head
  // and its GQA group on one rank), the MLP width and the vocabulary (padded to a multiple of tp_size); rank
  // tp_rank holds the block tp_rank of each. set_tensor_parallel checks that the shapes divide.
  int64_t tp_size = 1;
  int64_t tp_rank = 0;
  int64_t local_heads() const { return n_heads / tp_size; }
  int64_t local_kv_heads() const { return n_kv_heads / tp_size; }
  int64_t local_ff() const { return d_ff / tp_size; }
  int64_t q_dim() const { return local_heads() * head_dim; }     // H * HS
  int64_t kv_dim() const { return local_kv_heads() * head_dim; } // HKV * HS
  int64_t local_vocab() const { return (vocab_size + tp_size - 1) / tp_size; }  // Vs: rows of the embedding / LM head
  int64_t vocab_start() const { return tp_rank * local_vocab(); }               // v0: the first of them
  int64_t vocab_valid() const {  // how many of the Vs rows are real vocabulary entries (the rest: zero padding)
    const int64_t left = vocab_size - vocab_start();
    return left < 0 ? 0 : (left < local_vocab() ? left : local_vocab());
  }
  // Sets tp_size / tp_rank; an Error names the dimension that `tp` does not divide (heads, KV heads, MLP width).
  void set_tensor_parallel(int64_t tp, int64_t rank);

  int64_t n_params() const;  // total parameters of the whole model
  std::string summary() const;  // one line for logs
};

// Reads `path` (an HF config.json, with or without a "liger" section). Errors name the file and the key.
ModelConfig load_model_config(const std::string& path);
// The "liger" section: parse (errors name `file` and the key) and write.
// With `base`, the settings are also checked against the model's shapes (softmax_layers exist, gsa_slots divides
// head_dim); without, only their syntax and ranges (command-line options before a model is at hand).
LigerConfig parse_liger_config(const Json& section, const std::string& file, const ModelConfig& base);
LigerConfig parse_liger_config(const Json& section, const std::string& file);
Json liger_config_to_json(const LigerConfig& lc);

// Built-in shapes for benchmarks (random weights): "llama3-8b", "llama3.2-1b", "llama3.2-3b", "mistral-7b",
// "qwen2.5-7b", "stories260k".
ModelConfig model_config_for_shape(const std::string& name);

}  // namespace liger
