// Llama-3 tokenizer.model (Meta's original checkpoints): tiktoken byte-level BPE.
//
// The file holds one line "base64(token bytes) rank" per token; the rank is the id and the merge priority. The 256
// special tokens follow the file's tokens, named as in meta-llama/llama3 llama/tokenizer.py.
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "data/bpe.h"
#include "data/regex.h"
#include "data/tokenizer.h"

namespace liger {

namespace {

// meta-llama/llama3 llama/tokenizer.py: pat_str.
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr int kNumSpecialTokens = 256;

// Special token names in id order (ids n_base .. n_base + 255), as in Meta's tokenizer.py.
std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> names = {
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>",
      "<|reserved_special_token_2|>",
      "<|reserved_special_token_3|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|reserved_special_token_4|>",
      "<|eot_id|>",
  };
  for (int i = 5; names.size() < kNumSpecialTokens; ++i) names.push_back(strfmt("<|reserved_special_token_%d|>", i));
  return names;
}

// Strict base64 (RFC 4648 alphabet, '=' padding); false on any other character or a bad length.
bool base64_decode(std::string_view in, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out->clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int pad = 0;
    uint32_t bits = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = in[i + k];
      int v = 0;
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
      } else if (pad > 0 || (v = value(c)) < 0) {
        return false;
      }
      bits = (bits << 6) | static_cast<uint32_t>(v);
    }
    *out += static_cast<char>(bits >> 16);
    if (pad < 2) *out += static_cast<char>((bits >> 8) & 0xFF);
    if (pad < 1) *out += static_cast<char>(bits & 0xFF);
  }
  return true;
}

class TiktokenTokenizer : public Tokenizer {
 public:
  explicit TiktokenTokenizer(const std::string& path)
      : path_(path), regex_(kLlama3Pattern, path), encoder_(BytePairEncoder::Options{true, -1, false}) {
    std::ifstream f(path, std::ios::binary);
    LIGER_CHECK(f.good(), "%s: cannot open file", path.c_str());
    std::string line, bytes;
    size_t line_no = 0;
    while (std::getline(f, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      size_t space = line.find(' ');
      bool ok = space != std::string::npos && base64_decode(std::string_view(line).substr(0, space), &bytes);
      long long rank = -1;
      if (ok) {
        std::string r = line.substr(space + 1);
        ok = !r.empty() && r.size() < 10 && r.find_first_not_of("0123456789") == std::string::npos;
        if (ok) rank = std::stoll(r);
      }
      LIGER_CHECK(ok, "%s:%zu: not a tiktoken line 'base64 rank': '%s'", path.c_str(), line_no,
                  line.substr(0, 60).c_str());
      LIGER_CHECK(rank == static_cast<long long>(id_bytes_.size()),
                  "%s:%zu: rank %lld out of order (expected %zu: ranks must be 0, 1, 2, ...)", path.c_str(), line_no,
                  rank, id_bytes_.size());
      LIGER_CHECK(encoder_.find(bytes) < 0, "%s:%zu: token of rank %lld repeats an earlier token", path.c_str(),
                  line_no, rank);
      encoder_.add_token(bytes, static_cast<int32_t>(rank));
      id_bytes_.push_back(bytes);
    }
    LIGER_CHECK(!id_bytes_.empty(), "%s: empty tiktoken file", path.c_str());
    for (int b = 0; b < 256; ++b) {
      LIGER_CHECK(encoder_.find(std::string(1, static_cast<char>(b))) >= 0,
                  "%s: no token for byte 0x%02x, so some text cannot be encoded", path.c_str(), b);
    }
    // Every way of splitting a token into two tokens is a merge at the token's rank (see bpe.h).
    for (size_t id = 0; id < id_bytes_.size(); ++id) {
      const std::string& t = id_bytes_[id];
      for (size_t k = 1; k < t.size(); ++k) {
        int32_t left = encoder_.find(std::string_view(t).substr(0, k));
        int32_t right = left < 0 ? -1 : encoder_.find(std::string_view(t).substr(k));
        if (right >= 0) encoder_.add_merge(left, right, static_cast<int32_t>(id), static_cast<int32_t>(id));
      }
    }
    n_base_ = static_cast<int32_t>(id_bytes_.size());
    std::vector<std::pair<std::string, int32_t>> specials;
    for (const std::string& name : llama3_special_tokens()) {
      specials.emplace_back(name, static_cast<int32_t>(id_bytes_.size()));
      id_bytes_.push_back(name);
    }
    specials_ = SpecialTokenMatcher(specials, path);
    set_special_ids(n_base_, {n_base_ + 1, n_base_ + 9});  // <|begin_of_text|>; <|end_of_text|>, <|eot_id|>
  }

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    std::vector<std::string_view> pieces;
    specials_.split(text, &ids, [&](std::string_view plain) {
      pieces.clear();
      regex_.split(plain, &pieces);
      for (std::string_view p : pieces) encoder_.encode(p, &ids);
    });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (int32_t id : ids) text += token_bytes(id);
    return text;
  }

  std::string decode_piece(int32_t /*prev_id*/, int32_t id) const override { return token_bytes(id); }

  int32_t token_to_id(const std::string& token) const override {
    for (int32_t id = n_base_; id < static_cast<int32_t>(id_bytes_.size()); ++id) {
      if (id_bytes_[static_cast<size_t>(id)] == token) return id;
    }
    return encoder_.find(token);
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_bytes_.size()); }
  std::string kind() const override { return "tiktoken"; }

 private:
  const std::string& token_bytes(int32_t id) const {
    LIGER_CHECK(id >= 0 && id < static_cast<int32_t>(id_bytes_.size()),
                "%s: token id %d is outside the vocabulary (%zu ids)", path_.c_str(), id, id_bytes_.size());
    return id_bytes_[static_cast<size_t>(id)];
  }

  std::string path_;
  Regex regex_;
  BytePairEncoder encoder_;
  SpecialTokenMatcher specials_;
  std::vector<std::string> id_bytes_;  // (V) the bytes of each token; special tokens: their name
  int32_t n_base_ = 0;                 // number of BPE tokens; special tokens follow
};

}  // namespace

std::unique_ptr<Tokenizer> load_tiktoken_tokenizer(const std::string& path) {
  return std::make_unique<TiktokenTokenizer>(path);
}

}  // namespace liger
