// Choosing the tokenizer format of a model directory or file, and reading BOS/EOS from the model's JSON files.
#include "data/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/json.h"

namespace liger {

bool Tokenizer::is_eos(int32_t id) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
}

void Tokenizer::set_special_ids(int32_t bos_id, std::vector<int32_t> eos_ids) {
  LIGER_CHECK(bos_id >= -1 && bos_id < vocab_size(), "BOS id %d is outside the vocabulary (%lld ids)", bos_id,
              static_cast<long long>(vocab_size()));
  for (int32_t id : eos_ids) {
    LIGER_CHECK(id >= 0 && id < vocab_size(), "EOS id %d is outside the vocabulary (%lld ids)", id,
                static_cast<long long>(vocab_size()));
  }
  bos_id_ = bos_id;
  eos_ids_ = std::move(eos_ids);
}

namespace {

namespace fs = std::filesystem;

// A tiktoken file starts with a line "<base64> <rank>"; a SentencePiece model is binary protobuf.
bool looks_like_tiktoken(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LIGER_CHECK(f.good(), "%s: cannot open file", path.c_str());
  std::string line;
  std::getline(f, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  size_t space = line.find(' ');
  if (space == 0 || space == std::string::npos || space + 1 == line.size()) return false;
  for (size_t i = 0; i < line.size(); ++i) {
    auto c = static_cast<unsigned char>(line[i]);
    bool ok = i < space ? (std::isalnum(c) || c == '+' || c == '/' || c == '=') : (i == space || std::isdigit(c));
    if (!ok) return false;
  }
  return true;
}

std::unique_ptr<Tokenizer> load_tokenizer_model(const std::string& path) {
  if (looks_like_tiktoken(path)) return load_tiktoken_tokenizer(path);
  try {
    return load_sentencepiece_tokenizer(path);
  } catch (const Error& e) {
    LIGER_FAIL("%s; nor is it a tiktoken file (lines of 'base64 rank')", e.what());
  }
}

// An id given as `key` in `file`: an integer in the vocabulary.
int32_t id_value(const Json& v, const Tokenizer& tok, const std::string& file, const std::string& key) {
  LIGER_CHECK(v.is_number_integer(), "%s: '%s' must be a token id, got %s", file.c_str(), key.c_str(),
              v.dump().substr(0, 60).c_str());
  int64_t id = v.get<int64_t>();
  LIGER_CHECK(id >= 0 && id < tok.vocab_size(), "%s: '%s' = %lld is outside the tokenizer's vocabulary (%lld ids)",
              file.c_str(), key.c_str(), static_cast<long long>(id), static_cast<long long>(tok.vocab_size()));
  return static_cast<int32_t>(id);
}

// A token given by its text in tokenizer_config.json: "<|eot_id|>" or {"content": "<|eot_id|>", ...}.
int32_t named_token(const Json& v, const Tokenizer& tok, const std::string& file, const std::string& key) {
  const Json& text = v.is_object() && v.contains("content") ? v.at("content") : v;
  LIGER_CHECK(text.is_string(), "%s: '%s' must be a token text, got %s", file.c_str(), key.c_str(),
              v.dump().substr(0, 60).c_str());
  int32_t id = tok.token_to_id(text.get<std::string>());
  LIGER_CHECK(id >= 0, "%s: '%s' is '%s', which is not a token of the tokenizer", file.c_str(), key.c_str(),
              text.get<std::string>().c_str());
  return id;
}

void add_unique(std::vector<int32_t>* ids, int32_t id) {
  if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
}

// Reads BOS/EOS from the model directory (see load_tokenizer in tokenizer.h for the rules).
void apply_model_config(Tokenizer& tok, const fs::path& dir) {
  int32_t bos = -1;
  bool adds_bos = tok.bos_id() >= 0;  // the format's own answer: SentencePiece/tiktoken yes, HF per post_processor
  std::vector<int32_t> eos;

  auto eos_field = [&](const Json& j, const std::string& file) {
    if (!json_has(j, "eos_token_id")) return;
    const Json& v = j.at("eos_token_id");
    if (v.is_array()) {
      for (const Json& e : v) add_unique(&eos, id_value(e, tok, file, "eos_token_id"));
    } else {
      add_unique(&eos, id_value(v, tok, file, "eos_token_id"));
    }
  };
  if (fs::exists(dir / "config.json")) {
    std::string file = (dir / "config.json").string();
    Json j = read_json_file(file);
    if (json_has(j, "bos_token_id")) bos = id_value(j.at("bos_token_id"), tok, file, "bos_token_id");
    eos_field(j, file);
  }
  if (fs::exists(dir / "generation_config.json")) {
    std::string file = (dir / "generation_config.json").string();
    eos_field(read_json_file(file), file);
  }
  if (fs::exists(dir / "tokenizer_config.json")) {
    std::string file = (dir / "tokenizer_config.json").string();
    Json j = read_json_file(file);
    if (bos < 0 && json_has(j, "bos_token")) bos = named_token(j.at("bos_token"), tok, file, "bos_token");
    if (json_has(j, "eos_token")) add_unique(&eos, named_token(j.at("eos_token"), tok, file, "eos_token"));
    if (json_has(j, "add_bos_token")) adds_bos = json_bool(j, "add_bos_token", file);
  }
  // The format's own stop tokens stay stop tokens (tiktoken: <|end_of_text|> and <|eot_id|>).
  for (int32_t id : tok.eos_ids()) add_unique(&eos, id);
  if (!adds_bos) {
    bos = -1;
  } else if (bos < 0) {
    bos = tok.bos_id();
  }
  tok.set_special_ids(bos, std::move(eos));
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  fs::path dir(model_dir);
  LIGER_CHECK(fs::is_directory(dir), "%s: not a directory (expected a model directory with a tokenizer)",
              model_dir.c_str());
  std::unique_ptr<Tokenizer> tok;
  if (fs::exists(dir / "tokenizer.json")) {
    tok = load_hf_bpe_tokenizer((dir / "tokenizer.json").string());
  } else if (fs::exists(dir / "tokenizer.model")) {
    tok = load_tokenizer_model((dir / "tokenizer.model").string());
  } else {
    LIGER_FAIL("%s: no tokenizer.json or tokenizer.model in this directory", model_dir.c_str());
  }
  apply_model_config(*tok, dir);
  return tok;
}

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path) {
  LIGER_CHECK(fs::is_regular_file(path), "%s: no such file", path.c_str());
  if (fs::path(path).extension() == ".json") return load_hf_bpe_tokenizer(path);
  return load_tokenizer_model(path);
}

}  // namespace liger
