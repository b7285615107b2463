#include "model/config.h"

#include <cmath>

#include "core/check.h"
#include "core/json.h"

namespace liger {

namespace {

void read_rope(const Json& j, const std::string& file, ModelConfig* c) {
  c->rope.head_dim = c->head_dim;
  // transformers >= 5 writes {"rope_parameters": {"rope_theta", "rope_type", ...}}; 4.x writes rope_theta and an
  // optional rope_scaling object {"rope_type" | "type", ...}.
  Json params;
  if (json_has(j, "rope_parameters")) {
    params = j.at("rope_parameters");
    LIGER_CHECK(params.is_object(), "%s: key 'rope_parameters' must be an object", file.c_str());
    c->rope.theta = json_number(params, "rope_theta", file + " (rope_parameters)");
  } else {
    LIGER_CHECK(json_has(j, "rope_theta"), "%s: missing key 'rope_theta' (or 'rope_parameters')", file.c_str());
    c->rope.theta = json_number(j, "rope_theta", file);
    if (json_has(j, "rope_scaling")) params = j.at("rope_scaling");
  }
  LIGER_CHECK(c->rope.theta > 0, "%s: rope_theta must be positive", file.c_str());
  if (params.is_null()) return;
  LIGER_CHECK(params.is_object(), "%s: rope scaling must be an object", file.c_str());
  std::string type = json_has(params, "rope_type") ? json_string(params, "rope_type", file)
                     : json_has(params, "type")    ? json_string(params, "type", file)
                                                   : "default";
  if (type == "default") return;
  if (type == "llama3") {
    const std::string where = file + " (rope llama3)";
    c->rope.type = ops::RopeConfig::Type::Llama3;
    c->rope.factor = json_number(params, "factor", where);
    c->rope.low_freq_factor = json_number(params, "low_freq_factor", where);
    c->rope.high_freq_factor = json_number(params, "high_freq_factor", where);
    c->rope.original_max_position = json_int(params, "original_max_position_embeddings", where);
    LIGER_CHECK(c->rope.factor > 0 && c->rope.low_freq_factor > 0 &&
                    c->rope.high_freq_factor > c->rope.low_freq_factor && c->rope.original_max_position > 0,
                "%s: rope llama3 parameters are out of range", file.c_str());
    return;
  }
  LIGER_FAIL("%s: key 'rope_type' = '%s' is not supported (supported: default, llama3)", file.c_str(), type.c_str());
}

int32_t first_token_id(const Json& j, const std::string& key, const std::string& file) {
  if (!json_has(j, key)) return -1;
  const Json& v = j.at(key);
  if (v.is_array()) {
    LIGER_CHECK(!v.empty() && v[0].is_number_integer(), "%s: key '%s' must hold integer token ids", file.c_str(),
                key.c_str());
    return v[0].get<int32_t>();
  }
  LIGER_CHECK(v.is_number_integer(), "%s: key '%s' must be a token id", file.c_str(), key.c_str());
  return v.get<int32_t>();
}

void validate(const ModelConfig& c, const std::string& file) {
  auto positive = [&](int64_t v, const char* key) {
    LIGER_CHECK(v > 0, "%s: key '%s' must be positive, got %lld", file.c_str(), key, static_cast<long long>(v));
  };
  positive(c.n_layers, "num_hidden_layers");
  positive(c.d_model, "hidden_size");
  positive(c.n_heads, "num_attention_heads");
  positive(c.n_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.d_ff, "intermediate_size");
  positive(c.vocab_size, "vocab_size");
  // Upper bounds far above any real model keep every size product (parameter counts, tensor shapes) inside int64.
  auto at_most = [&](int64_t v, int64_t hi, const char* key) {
    LIGER_CHECK(v <= hi, "%s: key '%s' = %lld is larger than liger supports (%lld)", file.c_str(), key,
                static_cast<long long>(v), static_cast<long long>(hi));
  };
  at_most(c.n_layers, 1 << 12, "num_hidden_layers");
  at_most(c.d_model, 1 << 18, "hidden_size");
  at_most(c.n_heads, 1 << 12, "num_attention_heads");
  at_most(c.head_dim, 1 << 12, "head_dim");
  at_most(c.d_ff, 1 << 20, "intermediate_size");
  at_most(c.vocab_size, 1 << 24, "vocab_size");
  LIGER_CHECK(c.n_heads % c.n_kv_heads == 0, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
              file.c_str(), static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads));
  LIGER_CHECK(c.head_dim % 2 == 0, "%s: head_dim %lld must be even for RoPE", file.c_str(),
              static_cast<long long>(c.head_dim));
  LIGER_CHECK(c.rms_eps > 0, "%s: rms_norm_eps must be positive", file.c_str());
}

}  // namespace

ModelConfig load_model_config(const std::string& path) {
  Json j = read_json_file(path);
  LIGER_CHECK(j.is_object(), "%s: expected a JSON object", path.c_str());
  ModelConfig c;
  c.model_type = json_string(j, "model_type", path);
  const std::string& mt = c.model_type;
  LIGER_CHECK(mt == "llama" || mt == "mistral" || mt == "qwen2" || mt == "qwen3",
              "%s: unknown model_type '%s' (supported: llama, mistral, qwen2, qwen3)", path.c_str(), mt.c_str());
  c.n_layers = json_int(j, "num_hidden_layers", path);
  c.d_model = json_int(j, "hidden_size", path);
  c.n_heads = json_int(j, "num_attention_heads", path);
  c.n_kv_heads = json_has(j, "num_key_value_heads") ? json_int(j, "num_key_value_heads", path) : c.n_heads;
  c.d_ff = json_int(j, "intermediate_size", path);
  c.vocab_size = json_int(j, "vocab_size", path);
  c.rms_eps = json_number(j, "rms_norm_eps", path);
  c.max_position = json_has(j, "max_position_embeddings") ? json_int(j, "max_position_embeddings", path) : 0;
  c.head_dim = json_has(j, "head_dim") ? json_int(j, "head_dim", path) : 0;
  if (c.head_dim == 0) {
    LIGER_CHECK(c.n_heads > 0 && c.d_model % c.n_heads == 0,
                "%s: hidden_size is not a multiple of num_attention_heads and no head_dim is given", path.c_str());
    c.head_dim = c.d_model / c.n_heads;
  }
  if (json_has(j, "hidden_act")) {
    std::string act = json_string(j, "hidden_act", path);
    LIGER_CHECK(act == "silu" || act == "swish", "%s: hidden_act '%s' is not supported (only silu)", path.c_str(),
                act.c_str());
  }
  if (json_has(j, "mlp_bias")) {
    LIGER_CHECK(!json_bool(j, "mlp_bias", path), "%s: mlp_bias = true is not supported", path.c_str());
  }
  // Embedding tying: transformers' default is true in PretrainedConfig, but every supported model class writes the key;
  // a config without it is ambiguous, so it is required.
  c.tie_embeddings = json_bool(j, "tie_word_embeddings", path);
  if (mt == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases (no config key)
  } else if (mt == "llama" || mt == "qwen3") {
    bool b = json_has(j, "attention_bias") && json_bool(j, "attention_bias", path);
    c.qkv_bias = b;
    c.o_bias = b;
  }
  c.qk_norm = mt == "qwen3";
  // Sliding-window attention: mistral honours `sliding_window` when set; qwen2/qwen3 only with use_sliding_window.
  if (mt == "mistral" && json_has(j, "sliding_window")) {
    c.sliding_window = json_int(j, "sliding_window", path);
  } else if ((mt == "qwen2" || mt == "qwen3") && json_has(j, "use_sliding_window") &&
             json_bool(j, "use_sliding_window", path)) {
    LIGER_FAIL("%s: use_sliding_window = true (per-layer sliding windows) is not supported", path.c_str());
  }
  LIGER_CHECK(c.sliding_window >= 0, "%s: sliding_window must be >= 0", path.c_str());
  c.bos_id = first_token_id(j, "bos_token_id", path);
  c.eos_id = first_token_id(j, "eos_token_id", path);
  read_rope(j, path, &c);
  validate(c, path);
  if (j.contains("liger")) {
    c.is_liger = true;
    c.liger = parse_liger_config(j.at("liger"), path, c);
  }
  return c;
}

bool LigerConfig::is_softmax_layer(int64_t layer) const {
  for (int64_t l : softmax_layers)
    if (l == layer) return true;
  return false;
}

const char* LigerConfig::variant_name() const {
  switch (variant) {
    case Variant::Gla: return "gla";
    case Variant::Hgrn2: return "hgrn2";
    case Variant::Gsa: return "gsa";
  }
  return "?";
}

LigerConfig parse_liger_config(const Json& s, const std::string& file) {
  const std::string where = file + " (liger)";
  LIGER_CHECK(s.is_object(), "%s: key 'liger' must be an object", file.c_str());
  static const char* known[] = {"variant", "window", "mix_swa", "mix_recurrent", "gate", "gate_source",
                                "gsa_slots", "softmax_layers", "chunk"};
  for (auto it = s.begin(); it != s.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    LIGER_CHECK(ok, "%s: unknown key '%s'", where.c_str(), it.key().c_str());
  }
  LigerConfig lc;
  const std::string variant = json_string(s, "variant", where);
  if (variant == "gla") lc.variant = LigerConfig::Variant::Gla;
  else if (variant == "hgrn2") lc.variant = LigerConfig::Variant::Hgrn2;
  else if (variant == "gsa") lc.variant = LigerConfig::Variant::Gsa;
  else LIGER_FAIL("%s: key 'variant' = '%s' (use gla, hgrn2 or gsa)", where.c_str(), variant.c_str());
  if (json_has(s, "window")) lc.window = json_int(s, "window", where);
  if (json_has(s, "mix_swa")) lc.mix_swa = json_number(s, "mix_swa", where);
  if (json_has(s, "mix_recurrent")) lc.mix_recurrent = json_number(s, "mix_recurrent", where);
  if (json_has(s, "gate")) lc.gate = json_bool(s, "gate", where);
  if (json_has(s, "gate_source")) {
    const std::string g = json_string(s, "gate_source", where);
    if (g == "q") lc.gate_source = LigerConfig::GateSource::Q;
    else if (g == "k") lc.gate_source = LigerConfig::GateSource::K;
    else if (g == "v") lc.gate_source = LigerConfig::GateSource::V;
    else LIGER_FAIL("%s: key 'gate_source' = '%s' (use q, k or v)", where.c_str(), g.c_str());
  }
  if (json_has(s, "gsa_slots")) lc.gsa_slots = json_int(s, "gsa_slots", where);
  if (json_has(s, "chunk")) lc.chunk = json_int(s, "chunk", where);
  if (json_has(s, "softmax_layers")) {
    const Json& a = s.at("softmax_layers");
    LIGER_CHECK(a.is_array(), "%s: key 'softmax_layers' must be a list of layer indices", where.c_str());
    for (const Json& x : a) {
      LIGER_CHECK(x.is_number_integer(), "%s: key 'softmax_layers' must hold integers", where.c_str());
      lc.softmax_layers.push_back(x.get<int64_t>());
    }
  }
  LIGER_CHECK(lc.window >= 0, "%s: key 'window' must be >= 0", where.c_str());
  LIGER_CHECK(lc.mix_swa >= 0 && lc.mix_recurrent >= 0 && lc.mix_swa + lc.mix_recurrent > 0,
              "%s: keys 'mix_swa' and 'mix_recurrent' must be >= 0 and not both 0", where.c_str());
  LIGER_CHECK(lc.chunk >= 1 && lc.chunk <= 4096, "%s: key 'chunk' must be in [1, 4096]", where.c_str());
  LIGER_CHECK(lc.gate || lc.variant == LigerConfig::Variant::Gla,
              "%s: key 'gate' = false is only meaningful for the gla variant (hgrn2 and gsa write with 1 - gate)",
              where.c_str());
  LIGER_CHECK(lc.gsa_slots >= 1, "%s: key 'gsa_slots' must be >= 1", where.c_str());
  return lc;
}

LigerConfig parse_liger_config(const Json& s, const std::string& file, const ModelConfig& base) {
  LigerConfig lc = parse_liger_config(s, file);
  const std::string where = file + " (liger)";
  for (int64_t l : lc.softmax_layers) {
    LIGER_CHECK(l >= 0 && l < base.n_layers, "%s: key 'softmax_layers': layer %lld does not exist (%lld layers)",
                where.c_str(), static_cast<long long>(l), static_cast<long long>(base.n_layers));
  }
  if (lc.variant == LigerConfig::Variant::Gsa) {
    LIGER_CHECK(lc.gsa_slots >= 1 && base.head_dim % lc.gsa_slots == 0,
                "%s: key 'gsa_slots' = %lld must divide head_dim %lld", where.c_str(),
                static_cast<long long>(lc.gsa_slots), static_cast<long long>(base.head_dim));
  }
  return lc;
}

Json liger_config_to_json(const LigerConfig& lc) {
  const char* gs = lc.gate_source == LigerConfig::GateSource::Q ? "q"
                   : lc.gate_source == LigerConfig::GateSource::K ? "k" : "v";
  Json j = {{"variant", lc.variant_name()}, {"window", lc.window},     {"mix_swa", lc.mix_swa},
            {"mix_recurrent", lc.mix_recurrent}, {"gate", lc.gate}, {"gate_source", gs},
            {"softmax_layers", lc.softmax_layers}, {"chunk", lc.chunk}};
  if (lc.variant == LigerConfig::Variant::Gsa) j["gsa_slots"] = lc.gsa_slots;
  return j;
}

int64_t ModelConfig::n_params() const {
  const int64_t attn = d_model * n_heads * head_dim * 2 + d_model * n_kv_heads * head_dim * 2 +
                       (qkv_bias ? (n_heads + 2 * n_kv_heads) * head_dim : 0) + (o_bias ? d_model : 0);
  const int64_t mlp = 3 * d_model * d_ff;
  const int64_t norms = 2 * d_model + (qk_norm ? 2 * head_dim : 0);
  return vocab_size * d_model * (tie_embeddings ? 1 : 2) + d_model + n_layers * (attn + mlp + norms);
}

std::string ModelConfig::summary() const {
  const double p = static_cast<double>(n_params());
  const std::string params = p >= 1e9 ? strfmt("%.2fB", p / 1e9) : strfmt("%.2fM", p / 1e6);
  std::string s = strfmt("%s: L=%lld D=%lld H=%lld HKV=%lld HS=%lld F=%lld V=%lld, %s params%s%s%s", model_type.c_str(),
                static_cast<long long>(n_layers), static_cast<long long>(d_model), static_cast<long long>(n_heads),
                static_cast<long long>(n_kv_heads), static_cast<long long>(head_dim), static_cast<long long>(d_ff),
                static_cast<long long>(vocab_size), params.c_str(), tie_embeddings ? ", tied" : "",
                qkv_bias ? ", qkv bias" : "", qk_norm ? ", qk norm" : "");
  if (tp_size > 1) s += strfmt(", tensor-parallel rank %lld of %lld", static_cast<long long>(tp_rank),
                               static_cast<long long>(tp_size));
  if (is_liger) {
    s += strfmt(", liger %s (window %lld, mix swa %.2f / recurrent %.2f%s, %zu softmax layers)", liger.variant_name(),
                static_cast<long long>(liger.window), liger.mix_swa, liger.mix_recurrent, liger.gate ? "" : ", no gate",
                liger.softmax_layers.size());
  }
  return s;
}

ModelConfig model_config_for_shape(const std::string& name) {
  ModelConfig c;
  c.model_type = "llama";
  c.rms_eps = 1e-5;
  c.bos_id = 128000;
  c.eos_id = 128001;
  auto llama3 = [&](int64_t L, int64_t D, int64_t H, int64_t HKV, int64_t F, bool tied, bool scaled) {
    c.n_layers = L, c.d_model = D, c.n_heads = H, c.n_kv_heads = HKV, c.head_dim = D / H, c.d_ff = F;
    c.vocab_size = 128256, c.max_position = scaled ? 131072 : 8192, c.tie_embeddings = tied;
    c.rope.theta = 500000.0;
    if (scaled) {
      c.rope.type = ops::RopeConfig::Type::Llama3;
      c.rope.factor = 32.0, c.rope.low_freq_factor = 1.0, c.rope.high_freq_factor = 4.0;
      c.rope.original_max_position = 8192;
    }
  };
  if (name == "llama3-8b") {
    llama3(32, 4096, 32, 8, 14336, false, false);
  } else if (name == "llama3.2-1b") {
    llama3(16, 2048, 32, 8, 8192, true, true);
  } else if (name == "llama3.2-3b") {
    llama3(28, 3072, 24, 8, 8192, true, true);
  } else if (name == "mistral-7b") {
    c.model_type = "mistral";
    c.n_layers = 32, c.d_model = 4096, c.n_heads = 32, c.n_kv_heads = 8, c.head_dim = 128, c.d_ff = 14336;
    c.vocab_size = 32000, c.max_position = 32768, c.rope.theta = 10000.0, c.bos_id = 1, c.eos_id = 2;
  } else if (name == "qwen2.5-7b") {
    c.model_type = "qwen2";
    c.n_layers = 28, c.d_model = 3584, c.n_heads = 28, c.n_kv_heads = 4, c.head_dim = 128, c.d_ff = 18944;
    c.vocab_size = 152064, c.max_position = 32768, c.rope.theta = 1000000.0, c.qkv_bias = true, c.rms_eps = 1e-6;
    c.bos_id = 151643, c.eos_id = 151643;
  } else if (name == "stories260k") {
    c.n_layers = 5, c.d_model = 64, c.n_heads = 8, c.n_kv_heads = 4, c.head_dim = 8, c.d_ff = 172;
    c.vocab_size = 512, c.max_position = 512, c.rope.theta = 10000.0, c.tie_embeddings = true;
    c.bos_id = 1, c.eos_id = 2;
  } else {
    LIGER_FAIL("--shape: unknown shape '%s' (llama3-8b, llama3.2-1b, llama3.2-3b, mistral-7b, qwen2.5-7b, stories260k)",
               name.c_str());
  }
  c.rope.head_dim = c.head_dim;
  return c;
}

void ModelConfig::set_tensor_parallel(int64_t tp, int64_t rank) {
  LIGER_CHECK(tp >= 1 && rank >= 0 && rank < tp, "tensor parallel: rank %lld of %lld", static_cast<long long>(rank),
              static_cast<long long>(tp));
  auto check = [&](int64_t n, const char* what, const char* key) {
    LIGER_CHECK(n % tp == 0,
                "--tp %lld does not divide the %s (%s = %lld): use a tensor-parallel size that divides it", 
                static_cast<long long>(tp), what, key, static_cast<long long>(n));
  };
  check(n_heads, "attention heads", "num_attention_heads");
  check(n_kv_heads, "KV heads (a KV head and its query group stay on one rank)", "num_key_value_heads");
  check(d_ff, "MLP width", "intermediate_size");
  LIGER_CHECK(vocab_size >= tp, "--tp %lld exceeds the vocabulary (%lld entries)", static_cast<long long>(tp),
              static_cast<long long>(vocab_size));
  tp_size = tp;
  tp_rank = rank;
}

}  // namespace liger
