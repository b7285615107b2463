// `liger convert`: an HF model directory -> a Liger model directory (config.json with a "liger" section, the weights
// hard-linked, the tokenizer copied).
#include "model/convert.h"

#include <sstream>

#include "core/check.h"
#include "launcher/commands.h"
#include "launcher/options.h"

namespace liger::cli {

int cmd_convert(const std::vector<std::string>& args) {
  std::string model_dir, out_dir, variant, gate_source, softmax_layers, ablation;
  LigerConfig lc;
  ConvertOptions opt;
  bool no_gate = false;
  po::options_description desc("convert options");
  desc.add_options()("model", po::value(&model_dir)->required(), "HF model directory to convert")(
      "out", po::value(&out_dir)->required(), "Liger model directory to write")(
      "variant", po::value(&variant)->default_value("gla"), "recurrent branch: gla, hgrn2 or gsa")(
      "window", po::value(&lc.window)->default_value(64), "SWA: previous tokens seen besides the current one")(
      "mix-swa", po::value(&lc.mix_swa)->default_value(0.5), "weight of the sliding-window branch")(
      "mix-recurrent", po::value(&lc.mix_recurrent)->default_value(0.5), "weight of the recurrent branch")(
      "ablation", po::value(&ablation)->default_value(""),
      "preset mixes: no-swa (recurrent 1, swa 0) or swa-only (swa 1, recurrent 0)")(
      "no-gate", po::bool_switch(&no_gate), "gla without decay: pure linear attention")(
      "gate-source", po::value(&gate_source)->default_value("k"), "projection the gate comes from: q, k or v")(
      "gsa-slots", po::value(&lc.gsa_slots)->default_value(64), "GSA slots per head (divides head_dim)")(
      "softmax-layers", po::value(&softmax_layers)->default_value(""),
      "comma-separated layers kept as softmax attention (inter-layer hybrid), e.g. 7,15,23,31")(
      "chunk", po::value(&lc.chunk)->default_value(64), "chunk length of the chunked recurrence")(
      "copy", po::bool_switch(&opt.copy_weights), "copy the weights instead of hard-linking them")(
      "force", po::bool_switch(&opt.force), "overwrite a non-empty output directory");
  po::variables_map vm;
  if (!parse_options("convert", args, desc, &vm, "--model HF_DIR --out DIR [--variant gla|hgrn2|gsa] [options]"))
    return 0;
  Json j = {{"variant", variant},        {"window", lc.window},
            {"mix_swa", lc.mix_swa},     {"mix_recurrent", lc.mix_recurrent},
            {"gate", !no_gate},          {"gate_source", gate_source},
            {"gsa_slots", lc.gsa_slots}, {"chunk", lc.chunk}};
  if (ablation == "no-swa") {
    j["mix_swa"] = 0.0, j["mix_recurrent"] = 1.0;
  } else if (ablation == "swa-only") {
    j["mix_swa"] = 1.0, j["mix_recurrent"] = 0.0;
  } else {
    LIGER_CHECK(ablation.empty(), "--ablation: '%s' (use no-swa or swa-only)", ablation.c_str());
  }
  std::vector<int64_t> layers;
  std::stringstream ss(softmax_layers);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    size_t used = 0;
    long long l = -1;
    try {
      l = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LIGER_CHECK(used == item.size(), "--softmax-layers: '%s' is not a layer index", item.c_str());
    layers.push_back(l);
  }
  j["softmax_layers"] = layers;
  // Validated against the model's shapes inside convert_to_liger; here only the option syntax.
  lc = parse_liger_config(j, "convert options");
  convert_to_liger(model_dir, out_dir, lc, opt);
  return 0;
}

}  // namespace liger::cli
