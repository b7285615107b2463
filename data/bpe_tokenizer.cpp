// Hugging Face tokenizer.json, byte-level BPE (SmolLM2, Llama-3 HF, Qwen2, GPT-2 style), following the `tokenizers`
// library step by step:
//   1. added_tokens are cut out of the text, matched literally (longest first), and become their ids;
//   2. each stretch in between is normalized (null or NFC) and pre-tokenized: Split(regex), Digits and
//      ByteLevel(add_prefix_space, GPT-2 regex), in the order of the pre_tokenizer Sequence;
//   3. each pre-token is merged by the BPE model (data/bpe.h), with ignore_merges honoured.
// Decoding maps each token back through the GPT-2 byte map (decoder ByteLevel). Anything else in the file (another
// model type, normalizer, pre_tokenizer or decoder, byte_fallback, BPE dropout, ...) is an Error, never a guess.
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <deque>

#include "core/check.h"
#include "core/json.h"
#include "data/bpe.h"
#include "data/regex.h"
#include "data/tokenizer.h"

namespace liger {

namespace {

// ByteLevel's use_regex pattern (GPT-2).
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string type_of(const Json& j) {
  if (j.is_object() && j.contains("type") && j.at("type").is_string()) return j.at("type").get<std::string>();
  return j.dump().substr(0, 60);
}

bool bool_or(const Json& obj, const std::string& key, bool fallback, const std::string& file) {
  return json_has(obj, key) ? json_bool(obj, key, file) : fallback;
}

std::string nfc(std::string_view text) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(err);
  LIGER_CHECK(U_SUCCESS(err), "cannot load ICU's NFC normalizer: %s", u_errorName(err));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  // Most text is already NFC: keep its bytes as they are.
  if (normalizer->quickCheck(u, err) == UNORM_YES && U_SUCCESS(err)) return std::string(text);
  err = U_ZERO_ERROR;
  icu::UnicodeString normalized = normalizer->normalize(u, err);
  LIGER_CHECK(U_SUCCESS(err), "NFC normalization failed: %s", u_errorName(err));
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

class HfBpeTokenizer : public Tokenizer {
 public:
  explicit HfBpeTokenizer(const std::string& path) : path_(path) {
    Json j = read_json_file(path);
    try {
      parse(j);
    } catch (const Json::exception& e) {  // a field of an unexpected JSON type
      LIGER_FAIL("%s: malformed tokenizer.json: %s", path.c_str(), e.what());
    }
  }

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    added_.split(text, &ids, [&](std::string_view plain) { encode_plain(plain, &ids); });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (int32_t id : ids) text += token_bytes(id);
    return text;
  }

  std::string decode_piece(int32_t /*prev_id*/, int32_t id) const override { return token_bytes(id); }

  int32_t token_to_id(const std::string& token) const override {
    auto it = token_ids_.find(token);
    return it == token_ids_.end() ? -1 : it->second;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_bytes_.size()); }
  std::string kind() const override { return "hf-bpe"; }

 private:
  // One pre-tokenizer step: optionally prefix each piece with a space, then split it by `regex` (if any).
  struct Step {
    std::unique_ptr<Regex> regex;
    bool add_prefix_space = false;
  };

  [[noreturn]] void unsupported(const std::string& what, const std::string& type) const {
    LIGER_FAIL("%s: unsupported %s '%s' (liger reads byte-level BPE tokenizer.json files only)", path_.c_str(),
               what.c_str(), type.c_str());
  }

  void parse(const Json& j) {
    LIGER_CHECK(j.is_object() && j.contains("model") && j.at("model").is_object(),
                "%s: not a Hugging Face tokenizer.json (no 'model' object)", path_.c_str());
    const Json& model = j.at("model");
    std::string type = model.contains("type") ? type_of(model) : (model.contains("merges") ? "BPE" : "(none)");
    if (type != "BPE") unsupported("model type", type);
    if (bool_or(model, "byte_fallback", false, path_)) unsupported("BPE option", "byte_fallback: true");
    if (json_has(model, "dropout") && model.at("dropout").get<double>() != 0.0) unsupported("BPE option", "dropout");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (json_has(model, key) && !model.at(key).get<std::string>().empty()) {
        unsupported("BPE option", std::string(key) + ": " + model.at(key).get<std::string>());
      }
    }

    parse_normalizer(j.contains("normalizer") ? j.at("normalizer") : Json());
    parse_pre_tokenizer(j.contains("pre_tokenizer") ? j.at("pre_tokenizer") : Json());
    LIGER_CHECK(byte_level_,
                "%s: unsupported pre_tokenizer: it has no ByteLevel step (liger reads byte-level BPE "
                "tokenizer.json files only)",
                path_.c_str());
    const Json& decoder = j.contains("decoder") ? j.at("decoder") : Json();
    if (decoder.is_null()) unsupported("decoder", "null");
    if (type_of(decoder) != "ByteLevel") unsupported("decoder", type_of(decoder));

    // Vocabulary: the token strings are in the byte map's characters.
    const Json& vocab = json_field(model, "vocab", path_);
    LIGER_CHECK(vocab.is_object() && !vocab.empty(), "%s: model.vocab must be a non-empty object", path_.c_str());
    auto register_id = [&](int64_t id, const std::string& token) {
      LIGER_CHECK(id >= 0 && id < (int64_t{1} << 30), "%s: token '%s' has a bad id %lld", path_.c_str(), token.c_str(),
                  static_cast<long long>(id));
      if (id >= static_cast<int64_t>(id_bytes_.size())) id_bytes_.resize(static_cast<size_t>(id) + 1);
      if (!unicode_to_bytes(token, &id_bytes_[static_cast<size_t>(id)])) id_bytes_[static_cast<size_t>(id)] = token;
      token_ids_[token] = static_cast<int32_t>(id);
    };
    for (const auto& [token, id] : vocab.items()) register_id(id.get<int64_t>(), token);

    BytePairEncoder::Options options;
    options.whole_piece_lookup = bool_or(model, "ignore_merges", false, path_);
    options.fuse_unk = bool_or(model, "fuse_unk", false, path_);
    if (json_has(model, "unk_token")) {
      std::string unk = json_string(model, "unk_token", path_);
      LIGER_CHECK(token_ids_.count(unk), "%s: unk_token '%s' is not in the vocabulary", path_.c_str(), unk.c_str());
      options.unk_id = token_ids_.at(unk);
    }
    encoder_ = std::make_unique<BytePairEncoder>(options);
    std::string bytes;
    for (const auto& [token, id] : vocab.items()) {
      // A token outside the byte map (none in a byte-level vocabulary) can never come out of pre-tokenization.
      if (unicode_to_bytes(token, &bytes)) encoder_->add_token(bytes, id.get<int32_t>());
    }

    // Merges: "a b" strings or ["a", "b"] pairs; rank = position.
    const Json& merges = json_field(model, "merges", path_);
    LIGER_CHECK(merges.is_array(), "%s: model.merges must be a list", path_.c_str());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t space = s.find(' ');
        LIGER_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos,
                    "%s: merge #%zu '%s' is not two tokens separated by one space", path_.c_str(), rank, s.c_str());
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else {
        LIGER_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                    "%s: merge #%zu must be \"a b\" or [\"a\", \"b\"], got %s", path_.c_str(), rank,
                    m.dump().substr(0, 60).c_str());
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      }
      auto ia = token_ids_.find(a), ib = token_ids_.find(b), iab = token_ids_.find(a + b);
      LIGER_CHECK(ia != token_ids_.end() && ib != token_ids_.end() && iab != token_ids_.end(),
                  "%s: merge #%zu '%s %s' uses a token that is not in the vocabulary", path_.c_str(), rank, a.c_str(),
                  b.c_str());
      encoder_->add_merge(ia->second, ib->second, static_cast<int32_t>(rank), iab->second);
    }

    // Added tokens: cut out of the text before anything else. Their text decodes through the byte map when it can
    // (HF's ByteLevel decoder does the same), else as it is.
    std::vector<std::pair<std::string, int32_t>> added;
    if (json_has(j, "added_tokens")) {
      for (const Json& t : j.at("added_tokens")) {
        std::string content = json_string(t, "content", path_);
        for (const char* option : {"lstrip", "rstrip", "single_word"}) {
          if (bool_or(t, option, false, path_)) {
            unsupported("added token option", strfmt("%s on %s", option, content.c_str()));
          }
        }
        int64_t id = json_int(t, "id", path_);
        register_id(id, content);
        added.emplace_back(content, static_cast<int32_t>(id));
      }
    }
    added_ = SpecialTokenMatcher(added, path_);
    has_id_.assign(id_bytes_.size(), false);
    for (const auto& [token, id] : token_ids_) has_id_[static_cast<size_t>(id)] = true;

    // BOS: what the post_processor puts first, if anything (load_tokenizer may change it from the model's files).
    set_special_ids(template_bos(j.contains("post_processor") ? j.at("post_processor") : Json()), {});
  }

  void parse_normalizer(const Json& n) {
    if (n.is_null()) return;
    std::string type = type_of(n);
    if (type == "NFC") {
      nfc_ = true;
    } else if (type == "Sequence") {
      for (const Json& sub : json_field(n, "normalizers", path_)) parse_normalizer(sub);
    } else {
      unsupported("normalizer", type);
    }
  }

  void parse_pre_tokenizer(const Json& p) {
    if (p.is_null()) return;
    std::string type = type_of(p);
    if (type == "Sequence") {
      for (const Json& sub : json_field(p, "pretokenizers", path_)) parse_pre_tokenizer(sub);
      return;
    }
    // After ByteLevel the text is in the byte map's characters; a later split would see those, not the text.
    if (byte_level_) unsupported("pre_tokenizer", type + " after ByteLevel");
    Step step;
    if (type == "ByteLevel") {
      byte_level_ = true;
      step.add_prefix_space = bool_or(p, "add_prefix_space", true, path_);
      if (bool_or(p, "use_regex", true, path_)) step.regex = std::make_unique<Regex>(kGpt2Pattern, path_);
    } else if (type == "Split") {
      const Json& pattern = json_field(p, "pattern", path_);
      std::string behavior = json_string(p, "behavior", path_);
      if (behavior != "Isolated") unsupported("Split behavior", behavior);
      if (bool_or(p, "invert", false, path_)) unsupported("Split option", "invert: true");
      if (json_has(pattern, "Regex")) {
        step.regex = std::make_unique<Regex>(json_string(pattern, "Regex", path_), path_);
      } else {
        step.regex = std::make_unique<Regex>(Regex::escape(json_string(pattern, "String", path_)), path_);
      }
    } else if (type == "Digits") {
      // Rust's char::is_numeric is \p{N}; individual digits are isolated one by one, else in runs.
      step.regex =
          std::make_unique<Regex>(bool_or(p, "individual_digits", false, path_) ? R"(\p{N})" : R"(\p{N}+)", path_);
    } else {
      unsupported("pre_tokenizer", type);
    }
    steps_.push_back(std::move(step));
  }

  // The id of the special token that TemplateProcessing's "single" template puts first, or -1.
  static int32_t template_bos(const Json& pp) {
    if (!pp.is_object()) return -1;
    std::string type = type_of(pp);
    if (type == "Sequence" && pp.contains("processors")) {
      for (const Json& sub : pp.at("processors")) {
        int32_t bos = template_bos(sub);
        if (bos >= 0) return bos;
      }
    }
    if (type != "TemplateProcessing" || !pp.contains("single") || pp.at("single").empty()) return -1;
    const Json& first = pp.at("single")[0];
    if (!first.contains("SpecialToken")) return -1;
    const Json& ids = pp.at("special_tokens").at(first.at("SpecialToken").at("id").get<std::string>()).at("ids");
    return ids.empty() ? -1 : ids[0].get<int32_t>();
  }

  void encode_plain(std::string_view text, std::vector<int32_t>* ids) const {
    std::string normalized;
    if (nfc_) {
      normalized = nfc(text);
      text = normalized;
    }
    std::vector<std::string_view> pieces = {text}, next;
    std::deque<std::string> prefixed;  // pieces with an added space (a deque: the views stay valid)
    for (const Step& step : steps_) {
      next.clear();
      for (std::string_view piece : pieces) {
        if (step.add_prefix_space && piece[0] != ' ') piece = prefixed.emplace_back(" " + std::string(piece));
        if (step.regex) {
          step.regex->split(piece, &next);
        } else {
          next.push_back(piece);
        }
      }
      pieces.swap(next);
    }
    for (std::string_view piece : pieces) encoder_->encode(piece, ids);
  }

  const std::string& token_bytes(int32_t id) const {
    LIGER_CHECK(id >= 0 && id < static_cast<int32_t>(id_bytes_.size()) && has_id_[static_cast<size_t>(id)],
                "%s: token id %d is not in the vocabulary (%zu ids)", path_.c_str(), id, id_bytes_.size());
    return id_bytes_[static_cast<size_t>(id)];
  }

  std::string path_;
  bool nfc_ = false;         // normalizer NFC
  bool byte_level_ = false;  // the pre_tokenizer has its ByteLevel step
  std::vector<Step> steps_;  // pre_tokenizer steps in order
  std::unique_ptr<BytePairEncoder> encoder_;
  SpecialTokenMatcher added_;
  std::vector<std::string> id_bytes_;                   // (V) bytes each id decodes to
  std::vector<bool> has_id_;                            // (V) false for ids that the file does not use
  std::unordered_map<std::string, int32_t> token_ids_;  // token string (vocab form or added text) -> id
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_bpe_tokenizer(const std::string& path) {
  return std::make_unique<HfBpeTokenizer>(path);
}

}  // namespace liger
