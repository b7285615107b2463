// tests/common/model_cases.h — the architectures and Liger variants the training tests run (the whole-model gradient
// check on the CPU, the GPU-vs-CPU training step): a label, the golden HF model they start from, and the "liger"
// settings of the conversion (null: softmax attention kept).
#pragma once

#include <string>
#include <vector>

#include "core/json.h"
#include "model/convert.h"
#include "tests/common/test_util.h"

namespace liger::test {

struct ModelCase {
  const char* label;
  const char* golden;  // tests/golden/<name>
  Json liger;          // null: keep softmax attention
};

// Every architecture with softmax attention, then every Liger variant and ablation; `small` (window, chunk) is merged
// into each Liger setting so the window slides and the last chunk is partial at the tests' lengths.
inline std::vector<ModelCase> training_cases(const Json& small) {
  auto with = [&](Json extra) {
    Json j = small;
    for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    return j;
  };
  return {
      {"llama3 softmax (GQA, llama3 rope, tied)", "llama3_gqa_tied", nullptr},
      {"llama2 softmax (MHA, untied)", "llama2_mha_untied", nullptr},
      {"mistral softmax (sliding window 7)", "mistral_swa_untied", nullptr},
      {"qwen2 softmax (q/k/v biases)", "qwen2_bias_tied", nullptr},
      {"qwen3 softmax (q/k norms)", "qwen3_qknorm_untied", nullptr},
      {"liger gla", "llama3_gqa_tied", with({{"variant", "gla"}})},
      {"liger hgrn2", "llama3_gqa_tied", with({{"variant", "hgrn2"}})},
      {"liger gsa (M=4)", "llama3_gqa_tied", with({{"variant", "gsa"}, {"gsa_slots", 4}})},
      {"liger gla, gate from q", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate_source", "q"}})},
      {"liger gla, gate from v", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate_source", "v"}})},
      {"liger gla no gate", "llama3_gqa_tied", with({{"variant", "gla"}, {"gate", false}})},
      {"liger no-swa", "llama3_gqa_tied", with({{"variant", "gla"}, {"mix_swa", 0.0}, {"mix_recurrent", 1.0}})},
      {"liger swa-only", "llama3_gqa_tied", with({{"variant", "gla"}, {"mix_swa", 1.0}, {"mix_recurrent", 0.0}})},
      {"liger hybrid (layer 0 softmax)", "llama3_gqa_tied", with({{"variant", "gla"}, {"softmax_layers", {0}}})},
      {"liger gla on qwen3 (q/k norms)", "qwen3_qknorm_untied", with({{"variant", "gla"}})},
      {"liger gla on llama2 (MHA)", "llama2_mha_untied", with({{"variant", "gla"}})},
  };
}

// The model directory of a case: the golden HF directory, or its conversion into tmp/<name>.
inline std::string case_model_dir(const TempDir& tmp, const ModelCase& c, const std::string& name) {
  const std::string dir = source_path(std::string("tests/golden/") + c.golden);
  if (c.liger.is_null()) return dir;
  const ModelConfig base = load_model_config(dir + "/config.json");
  const std::string out = tmp.file(name);
  convert_to_liger(dir, out, parse_liger_config(c.liger, "test", base), ConvertOptions{});
  return out;
}

}  // namespace liger::test
