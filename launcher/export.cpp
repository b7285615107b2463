// `liger export`: a model directory with LoRA adapters merged into its weights (model/export.h), which `liger
// generate` and `liger eval` load like any other model directory.
#include "model/export.h"

#include "launcher/commands.h"
#include "launcher/options.h"

namespace liger::cli {

int cmd_export(const std::vector<std::string>& args) {
  std::string model_dir, adapter_dir, out_dir;
  ExportOptions opt;
  po::options_description desc("export options");
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "model directory the adapters were trained on (HF or Liger)")
      ("adapter", po::value(&adapter_dir)->required(), "a PEFT adapter directory or a training checkpoint")
      ("out", po::value(&out_dir)->required(), "merged model directory to write (config, weights, tokenizer)")
      ("force", po::bool_switch(&opt.force), "overwrite a non-empty output directory");
  po::variables_map vm;
  if (!parse_options("export", args, desc, &vm, "--model DIR --adapter DIR --out DIR [--force]")) return 0;
  export_merged_model(model_dir, adapter_dir, out_dir, opt);
  return 0;
}

}  // namespace liger::cli
