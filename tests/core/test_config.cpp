// tests/core/test_config.cpp — model/config.h on real HF config.json files (transformers 5.17 outputs under
// tests/golden/*/ and the bundled stories260K), on transformers-4 style rope keys, and on bad configs: each bad input is
// a liger::Error naming the file and the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/json.h"
#include "model/config.h"
#include "tests/common/test_util.h"

namespace fs = std::filesystem;

namespace liger {
namespace {

using test::round_to_format;
using test::throws_error;

using Rope = ops::RopeConfig;


Json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return Json::parse(f);
}

std::string write_config(const test::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream f(path, std::ios::trunc);
  f << text;
  EXPECT_TRUE(f.good()) << path;
  return path;
}
std::string write_config(const test::TempDir& dir, const std::string& name, const Json& j) {
  return write_config(dir, name, j.dump(2));
}

std::string golden_config(const std::string& name) { return test::source_path("tests/golden/" + name + "/config.json"); }
std::string stories_config() { return test::source_path("assets/stories260K/hf/config.json"); }

// The fields that are read directly from keys of the JSON, compared against the JSON itself.
void expect_matches_json(const ModelConfig& c, const Json& j, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(c.model_type, j["model_type"].get<std::string>());
  EXPECT_EQ(c.n_layers, j["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(c.d_model, j["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.n_heads, j["num_attention_heads"].get<int64_t>());
  EXPECT_EQ(c.n_kv_heads, j["num_key_value_heads"].get<int64_t>());
  if (j.contains("head_dim")) {
    EXPECT_EQ(c.head_dim, j["head_dim"].get<int64_t>());
  } else {
    EXPECT_EQ(c.head_dim, j["hidden_size"].get<int64_t>() / j["num_attention_heads"].get<int64_t>());
  }
  EXPECT_EQ(c.rope.head_dim, c.head_dim);
  EXPECT_EQ(c.d_ff, j["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.vocab_size, j["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.max_position, j["max_position_embeddings"].get<int64_t>());
  EXPECT_EQ(c.rms_eps, j["rms_norm_eps"].get<double>());
  EXPECT_EQ(c.tie_embeddings, j["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(c.bos_id, j["bos_token_id"].get<int32_t>());
  EXPECT_EQ(c.eos_id, j["eos_token_id"].get<int32_t>());
  const double theta =
      j.contains("rope_parameters") ? j["rope_parameters"]["rope_theta"].get<double>() : j["rope_theta"].get<double>();
  EXPECT_EQ(c.rope.theta, theta);
  EXPECT_EQ(c.tp_size, 1);
  EXPECT_EQ(c.q_dim(), c.n_heads * c.head_dim);
  EXPECT_EQ(c.kv_dim(), c.n_kv_heads * c.head_dim);
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.d_model, b.d_model);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.d_ff, b.d_ff);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position, b.max_position);
  EXPECT_EQ(a.rms_eps, b.rms_eps);
  EXPECT_EQ(a.rope.head_dim, b.rope.head_dim);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_EQ(a.rope.factor, b.rope.factor);
  EXPECT_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position, b.rope.original_max_position);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
}

// ---- real configs -------------------------------------------------------------------------------------------------

TEST(ModelConfig, EveryGoldenConfigMatchesItsJson) {
  const fs::path root = test::source_path("tests/golden");
  ASSERT_TRUE(fs::is_directory(root)) << root;
  std::vector<std::string> seen;
  for (const auto& d : fs::directory_iterator(root)) {
    const fs::path cfg = d.path() / "config.json";
    if (!fs::exists(cfg)) continue;
    ModelConfig c = load_model_config(cfg.string());
    expect_matches_json(c, read_json(cfg.string()), cfg.string());
    seen.push_back(d.path().filename().string());
  }
  std::sort(seen.begin(), seen.end());
  // All five model families of the golden set were found (a missing directory must not pass silently).
  EXPECT_EQ(seen, (std::vector<std::string>{"llama2_mha_untied", "llama3_gqa_tied", "mistral_swa_untied",
                                            "qwen2_bias_tied", "qwen3_qknorm_untied"}));
}

TEST(ModelConfig, Llama2) {
  ModelConfig c = load_model_config(golden_config("llama2_mha_untied"));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 4);  // MHA
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope.type, Rope::Type::Default);
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.rms_eps, 1e-5);
}

TEST(ModelConfig, Llama3RopeScaling) {
  ModelConfig c = load_model_config(golden_config("llama3_gqa_tied"));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.rope.type, Rope::Type::Llama3);
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position, 64);
  EXPECT_EQ(c.rope.head_dim, 16);
}

TEST(ModelConfig, MistralSlidingWindow) {
  ModelConfig c = load_model_config(golden_config("mistral_swa_untied"));
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.sliding_window, 7);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.tie_embeddings);
}

TEST(ModelConfig, Qwen2Bias) {
  ModelConfig c = load_model_config(golden_config("qwen2_bias_tied"));
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.qkv_bias);   // qwen2 always has q/k/v biases
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 16);  // no head_dim key: hidden_size / num_attention_heads = 64 / 4
  EXPECT_EQ(c.sliding_window, 0);  // "sliding_window": null with use_sliding_window false
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.rope.theta, 1e6);
}

TEST(ModelConfig, Qwen3QkNorm) {
  ModelConfig c = load_model_config(golden_config("qwen3_qknorm_untied"));
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);  // attention_bias false
  EXPECT_EQ(c.head_dim, 32);  // head_dim given explicitly: H * HS = 128 != hidden_size 64
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.kv_dim(), 64);
  EXPECT_FALSE(c.tie_embeddings);
}

TEST(ModelConfig, Stories260K) {
  // The values documented in shared/data/README.md: dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4,
  // head_size 8, vocab 512, seq_len 512, tied classifier, RMSNorm eps 1e-5, RoPE theta 1e4, no biases.
  ModelConfig c = load_model_config(stories_config());
  expect_matches_json(c, read_json(stories_config()), "stories260K");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.d_ff, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position, 512);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.rms_eps, 1e-5);
  EXPECT_EQ(c.rope.theta, 1e4);
  EXPECT_EQ(c.rope.type, Rope::Type::Default);  // "rope_scaling": null
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  // 260,032 real parameters (README): embeddings 512*64 (tied) + final norm 64 + 5 layers of
  // (q 64*64, k 64*32, v 64*32, o 64*64, 3 * 64*172 MLP, 2 * 64 norms).
  EXPECT_EQ(c.n_params(), 260032);
  // The built-in stories260k shape agrees with the file.
  expect_same_config(model_config_for_shape("stories260k"), c);
}

// ---- transformers 4.x keys ----------------------------------------------------------------------------------------

TEST(ModelConfig, Transformers4RopeKeysParseTheSame) {
  test::TempDir dir("cfg");
  const ModelConfig v5 = load_model_config(golden_config("llama3_gqa_tied"));
  Json j = read_json(golden_config("llama3_gqa_tied"));
  Json params = j["rope_parameters"];
  j.erase("rope_parameters");
  j["rope_theta"] = params["rope_theta"];
  Json scaling = params;
  scaling.erase("rope_theta");  // {"rope_type": "llama3", "factor": 8.0, ...}
  j["rope_scaling"] = scaling;
  {
    SCOPED_TRACE("rope_scaling with rope_type");
    expect_same_config(load_model_config(write_config(dir, "v4.json", j)), v5);
  }
  // The older spelling {"type": "llama3", ...}.
  scaling.erase("rope_type");
  scaling["type"] = "llama3";
  j["rope_scaling"] = scaling;
  {
    SCOPED_TRACE("rope_scaling with type");
    expect_same_config(load_model_config(write_config(dir, "v4_old.json", j)), v5);
  }
  // rope_theta alone (no rope_scaling key) and rope_scaling null are the default rope.
  j.erase("rope_scaling");
  ModelConfig plain = load_model_config(write_config(dir, "v4_plain.json", j));
  EXPECT_EQ(plain.rope.type, Rope::Type::Default);
  EXPECT_EQ(plain.rope.theta, 500000.0);
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(load_model_config(write_config(dir, "v4_null.json", j)).rope.type, Rope::Type::Default);
  // {"rope_type": "default"} inside rope_scaling too.
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(load_model_config(write_config(dir, "v4_default.json", j)).rope.type, Rope::Type::Default);
}

TEST(ModelConfig, OptionalKeysAndDefaults) {
  test::TempDir dir("cfg");
  Json j = read_json(golden_config("llama2_mha_untied"));
  // num_key_value_heads absent = num_attention_heads; head_dim absent = hidden_size / heads; eos as a list.
  j.erase("num_key_value_heads");
  j.erase("head_dim");
  j["eos_token_id"] = {5, 6};
  j["bos_token_id"] = nullptr;
  j["attention_bias"] = true;
  ModelConfig c = load_model_config(write_config(dir, "opt.json", j));
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.eos_id, 5);
  EXPECT_EQ(c.bos_id, -1);
  EXPECT_TRUE(c.qkv_bias);  // llama attention_bias: q, k, v and o biases
  EXPECT_TRUE(c.o_bias);
  // Keys that only matter to other software are ignored.
  j["architectures"] = {"SomethingElse"};
  j["some_future_key"] = {{"nested", 1}};
  EXPECT_NO_THROW(load_model_config(write_config(dir, "extra.json", j)));
}

// ---- bad input ----------------------------------------------------------------------------------------------------

TEST(ModelConfig, BadConfigsNameFileAndKey) {
  test::TempDir dir("cfg");
  const Json base = read_json(golden_config("llama2_mha_untied"));
  struct Case {
    const char* name;
    Json j;
    std::vector<std::string> parts;  // besides the file path
  };
  std::vector<Case> cases;
  auto with = [&](const char* key, const Json& v) {
    Json j = base;
    j[key] = v;
    return j;
  };
  auto without = [&](const char* key) {
    Json j = base;
    j.erase(key);
    return j;
  };
  Json yarn = base;
  yarn["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "yarn"}, {"factor", 4.0}};
  Json kv3 = with("num_key_value_heads", 3);
  Json odd = with("head_dim", 15);
  Json llama3_missing = base;
  llama3_missing["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                                       {"low_freq_factor", 1.0}, {"original_max_position_embeddings", 64}};
  Json no_theta = base;
  no_theta["rope_parameters"] = {{"rope_type", "default"}};
  Json v4_no_theta = without("rope_parameters");
  Json qwen_swa = read_json(golden_config("qwen2_bias_tied"));
  qwen_swa["use_sliding_window"] = true;
  Json rope_not_object = with("rope_parameters", "default");

  cases.push_back({"unknown model_type", with("model_type", "gpt2"), {"model_type", "gpt2"}});
  cases.push_back({"missing model_type", without("model_type"), {"model_type"}});
  cases.push_back({"missing hidden_size", without("hidden_size"), {"hidden_size"}});
  cases.push_back({"hidden_size a string", with("hidden_size", "64"), {"hidden_size"}});
  cases.push_back({"hidden_size a float", with("hidden_size", 64.5), {"hidden_size"}});
  cases.push_back({"rope type yarn", yarn, {"rope", "yarn"}});
  cases.push_back({"hidden_act gelu", with("hidden_act", "gelu"), {"hidden_act", "gelu"}});
  cases.push_back({"heads not divisible by kv heads", kv3, {"num_attention_heads", "num_key_value_heads"}});
  cases.push_back({"odd head_dim", odd, {"head_dim", "15"}});
  cases.push_back({"zero heads", with("num_attention_heads", 0), {"num_attention_heads"}});
  cases.push_back({"negative layers", with("num_hidden_layers", -2), {"num_hidden_layers"}});
  cases.push_back({"zero vocab", with("vocab_size", 0), {"vocab_size"}});
  cases.push_back({"rms_norm_eps a string", with("rms_norm_eps", "1e-5"), {"rms_norm_eps"}});
  cases.push_back({"negative rms_norm_eps", with("rms_norm_eps", -1e-5), {"rms_norm_eps"}});
  cases.push_back({"missing tie_word_embeddings", without("tie_word_embeddings"), {"tie_word_embeddings"}});
  cases.push_back({"mlp_bias true", with("mlp_bias", true), {"mlp_bias"}});
  cases.push_back({"llama3 rope without high_freq_factor", llama3_missing, {"high_freq_factor"}});
  cases.push_back({"rope_parameters without rope_theta", no_theta, {"rope_theta"}});
  cases.push_back({"neither rope_theta nor rope_parameters", v4_no_theta, {"rope_theta"}});
  cases.push_back({"rope_parameters not an object", rope_not_object, {"rope_parameters"}});
  cases.push_back({"qwen2 use_sliding_window", qwen_swa, {"use_sliding_window"}});
  cases.push_back({"eos_token_id a string", with("eos_token_id", "2"), {"eos_token_id"}});
  cases.push_back({"top level is an array", Json::array({base}), {"JSON object"}});
  int i = 0;
  for (const Case& c : cases) {
    const std::string path = write_config(dir, strfmt("bad_%02d.json", i++), c.j);
    std::vector<std::string> parts = c.parts;
    parts.push_back(path);
    EXPECT_TRUE(throws_error([&] { load_model_config(path); }, parts)) << c.name;
  }
}

TEST(ModelConfig, MissingFileAndNotJson) {
  test::TempDir dir("cfg");
  const std::string missing = dir.file("no_such_config.json");
  EXPECT_TRUE(throws_error([&] { load_model_config(missing); }, {missing, "cannot open"}));
  const std::string garbage = write_config(dir, "garbage.json", std::string("model_type = llama\n"));
  EXPECT_TRUE(throws_error([&] { load_model_config(garbage); }, {garbage, "invalid JSON"}));
  const std::string truncated = write_config(dir, "truncated.json", std::string("{\"model_type\": \"llama\", "));
  EXPECT_TRUE(throws_error([&] { load_model_config(truncated); }, {truncated, "invalid JSON"}));
  const std::string empty = write_config(dir, "empty.json", std::string());
  EXPECT_TRUE(throws_error([&] { load_model_config(empty); }, {empty, "invalid JSON"}));
  EXPECT_TRUE(throws_error([&] { load_model_config(dir.path()); }, {dir.path()}));  // a directory
}

TEST(ModelConfig, UnknownShapeIsError) {
  EXPECT_TRUE(throws_error([] { model_config_for_shape("gpt2-xl"); }, {"--shape", "gpt2-xl"}));
  for (const char* s : {"llama3-8b", "llama3.2-1b", "llama3.2-3b", "mistral-7b", "qwen2.5-7b"}) {
    ModelConfig c = model_config_for_shape(s);
    EXPECT_EQ(c.rope.head_dim, c.head_dim) << s;
    EXPECT_EQ(c.n_heads % c.n_kv_heads, 0) << s;
  }
  // Llama-3-8B: 8.03B parameters (Meta's model card).
  EXPECT_NEAR(model_config_for_shape("llama3-8b").n_params() / 1e9, 8.03, 0.005);
}

}  // namespace
}  // namespace liger
