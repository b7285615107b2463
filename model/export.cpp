#include "model/export.h"

#include <filesystem>

#include "core/check.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "model/convert.h"

namespace liger {

namespace fs = std::filesystem;

Tensor lora_target_weight(ModelWeights& w, int64_t layer, LoraTarget t) {
  LIGER_CHECK(layer >= 0 && layer < static_cast<int64_t>(w.layers.size()), "lora: layer %lld outside the model",
              static_cast<long long>(layer));
  LayerWeights& L = w.layers[static_cast<size_t>(layer)];
  switch (t) {
    case LoraTarget::Q:
      return L.wq;
    case LoraTarget::K:
      return L.wk;
    case LoraTarget::V:
      return L.wv;
    case LoraTarget::O:
      return L.wo;
    case LoraTarget::Gate:
      return L.w_gate;
    case LoraTarget::Up:
      return L.w_up;
    case LoraTarget::Down:
      return L.w_down;
  }
  LIGER_FAIL("lora: unknown target %d", static_cast<int>(t));
}

void merge_adapters(LlamaModel& model, const LoraAdapters& lora, double sign) {
  LIGER_CHECK(!model.context().is_cuda() && model.dtype() == DType::F32,
              "merging adapters needs the f32 CPU weights (the model is %s on %s): merge with liger export first",
              dtype_name(model.dtype()), device_name(model.context().device()));
  ModelWeights& w = model.mutable_weights();
  lora.merge([&](int64_t l, LoraTarget t) { return lora_target_weight(w, l, t); }, sign);
}

namespace {

bool same_path(const fs::path& a, const fs::path& b) {
  std::error_code ec1, ec2;
  const fs::path ca = fs::weakly_canonical(a, ec1), cb = fs::weakly_canonical(b, ec2);
  return !ec1 && !ec2 && ca == cb;
}

void copy_file_to(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  LIGER_CHECK(!ec, "%s: cannot copy to %s (%s)", from.c_str(), to.c_str(), ec.message().c_str());
  fs::permissions(to, fs::perms::owner_write, fs::perm_options::add, ec);  // the source may be read-only
}

}  // namespace

void export_merged_model(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                         const ExportOptions& opt) {
  const fs::path src(model_dir), out(out_dir);
  LIGER_CHECK(!out_dir.empty(), "export: empty output directory");
  LIGER_CHECK(!same_path(out, src), "%s: the output directory is the model directory (export elsewhere)",
              out_dir.c_str());
  LIGER_CHECK(!same_path(out, adapter_dir), "%s: the output directory is the adapter directory (export elsewhere)",
              out_dir.c_str());
  if (fs::exists(out)) {
    LIGER_CHECK(fs::is_directory(out), "%s: exists and is not a directory", out_dir.c_str());
    LIGER_CHECK(opt.force || fs::is_empty(out), "%s: directory is not empty (use --force to overwrite)",
                out_dir.c_str());
  }
  // Load and merge first: every input error comes before anything is written.
  Context ctx = Context::cpu();
  std::unique_ptr<LlamaModel> model = LlamaModel::load(model_dir, ctx, DType::F32);
  const LoraAdapters lora = LoraAdapters::load(adapter_dir, model->config(), Device::CPU);
  merge_adapters(*model, lora);

  const Checkpoint ckpt = Checkpoint::open_dir(model_dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  size_t converted = 0;
  for (const WeightDesc& d : weight_table(model->config(), &model->mutable_weights())) {
    const DType dt = ckpt.find(d.name).second->dtype;  // load() checked that it is present and readable
    tensors.push_back({d.name, dt == DType::F32 ? *d.slot : d.slot->to(Device::CPU, dt)});
    converted += dt != DType::F32;
  }

  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    copy_file_to(src / "config.json", tmp / "config.json");
    for (const std::string& name : model_side_files())
      if (fs::exists(src / name)) copy_file_to(src / name, tmp / name);
    write_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  if (fs::exists(out)) fs::remove_all(out);
  fs::rename(tmp, out);
  LOG_INFO(
      "exported %s + adapters %s (r %lld, %zu tensors) -> %s: %zu tensors, %zu of them stored in the source's "
      "non-f32 dtype",
      model_dir.c_str(), adapter_dir.c_str(), static_cast<long long>(lora.config().rank), lora.parameters().size(),
      out_dir.c_str(), tensors.size(), converted);
}

}  // namespace liger
