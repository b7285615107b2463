#include "model/convert.h"

#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"
#include "core/safetensors.h"

namespace liger {

namespace fs = std::filesystem;

namespace {

void link_or_copy(const fs::path& from, const fs::path& to, bool copy) {
  std::error_code ec;
  if (!copy) {
    fs::create_hard_link(from, to, ec);
    if (!ec) return;
  }
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  LIGER_CHECK(!ec, "%s: cannot copy to %s (%s)", from.c_str(), to.c_str(), ec.message().c_str());
}

}  // namespace

const std::vector<std::string>& model_side_files() {
  static const std::vector<std::string> files = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                                 "special_tokens_map.json", "generation_config.json"};
  return files;
}

void convert_to_liger(const std::string& src_dir, const std::string& out_dir, const LigerConfig& lc,
                      const ConvertOptions& opt) {
  const fs::path src(src_dir), out(out_dir);
  LIGER_CHECK(fs::is_directory(src), "%s: model directory does not exist", src_dir.c_str());
  const std::string cfg_path = (src / "config.json").string();
  LIGER_CHECK(fs::exists(cfg_path), "%s: missing config.json", src_dir.c_str());
  Json j = read_json_file(cfg_path);
  ModelConfig base = load_model_config(cfg_path);  // validates the architecture
  LIGER_CHECK(!base.is_liger, "%s: already a Liger model (it has a 'liger' section); convert the original HF model",
              cfg_path.c_str());
  // The Liger settings against this model's shapes (e.g. gsa_slots must divide head_dim).
  LigerConfig checked = parse_liger_config(liger_config_to_json(lc), cfg_path + " + convert options", base);
  Checkpoint ckpt = Checkpoint::open_dir(src_dir);  // validates every safetensors header
  if (fs::exists(out)) {
    LIGER_CHECK(fs::is_directory(out), "%s: exists and is not a directory", out_dir.c_str());
    LIGER_CHECK(opt.force || fs::is_empty(out), "%s: directory is not empty (use --force to overwrite)",
                out_dir.c_str());
  }
  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  j["liger"] = liger_config_to_json(checked);
  {
    std::ofstream f(tmp / "config.json");
    f << j.dump(2) << "\n";
    LIGER_CHECK(f.good(), "%s: write failed", (tmp / "config.json").c_str());
  }
  size_t linked = 0;
  for (const auto& e : fs::directory_iterator(src)) {
    const std::string name = e.path().filename().string();
    const bool weights = name == "model.safetensors.index.json" ||
                         (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0);
    bool side = false;
    for (const std::string& s : model_side_files()) side = side || name == s;
    if (!weights && !side) continue;
    link_or_copy(e.path(), tmp / name, opt.copy_weights || side);
    linked++;
  }
  if (fs::exists(out)) fs::remove_all(out);
  fs::rename(tmp, out);
  // The result must load as a Liger model.
  ModelConfig done = load_model_config((out / "config.json").string());
  LIGER_ASSERT(done.is_liger);
  LOG_INFO("converted %s -> %s: %s (%zu files)", src_dir.c_str(), out_dir.c_str(), done.summary().c_str(), linked);
}

}  // namespace liger
