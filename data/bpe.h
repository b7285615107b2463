// data/bpe.h — byte-level BPE: the parts shared by the tiktoken and the HF tokenizer.json tokenizers (the byte
// map, the merge routine, the matcher that cuts special tokens out of the text).
//
// A pre-token (a piece of text cut out by the pre-tokenizer regex) is turned into one symbol per byte, each the id
// of that one-byte token; then, repeatedly, the adjacent pair with the lowest merge rank is replaced by its merged
// token (ties: leftmost first) until no adjacent pair has a merge. The two formats differ only in where the merges
// come from:
//   HF tokenizer.json: the "merges" list; rank = position in the list.
//   tiktoken: no list; two adjacent tokens merge when their concatenation is a token, at that token's rank (= id).
//     The loader adds one merge per way of splitting each token into two tokens, which is the same thing.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/regex.h"

namespace liger {

// GPT-2's reversible map from bytes to printable characters, used by byte-level vocabularies (tokenizer.json) so
// that every token is a printable string: the printable Latin-1 bytes stand for themselves and the others (space,
// control bytes, ...) for U+0100 onwards (space = U+0120 'Ġ', '\n' = U+010A 'Ċ').
// The UTF-8 encoding of the character standing for byte b:
const std::string& byte_to_unicode(uint8_t b);
// The bytes that a string of such characters stands for; false if `s` holds a character outside the map.
bool unicode_to_bytes(std::string_view s, std::string* out);

class BytePairEncoder {
 public:
  struct Options {
    // Emit a pre-token that is itself a token directly, without merging (tiktoken always does; HF when the model
    // has "ignore_merges": true, as Llama-3's tokenizer.json). This can give another result than merging would.
    bool whole_piece_lookup = false;
    // A byte without a one-byte token becomes unk_id (HF "unk_token"), or is dropped when unk_id < 0 (HF without
    // unk_token does this too). With fuse_unk, a run of such bytes gives one unk_id.
    int32_t unk_id = -1;
    bool fuse_unk = false;
  };

  explicit BytePairEncoder(Options options);

  // Adds a token of the vocabulary: its bytes and its id.
  void add_token(const std::string& bytes, int32_t id);
  // Adds a merge: adjacent tokens `left`, `right` become `merged`; lower ranks merge first. A second merge of the
  // same pair replaces the first (as in HF tokenizers).
  void add_merge(int32_t left, int32_t right, int32_t rank, int32_t merged);
  // The id of the token with these bytes, or -1.
  int32_t find(std::string_view bytes) const;

  // Appends the ids of one pre-token to `out`.
  void encode(std::string_view piece, std::vector<int32_t>* out) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* find_merge(int32_t left, int32_t right) const;
  void merge(std::string_view piece, std::vector<int32_t>* out) const;

  Options options_;
  std::unordered_map<std::string, int32_t> tokens_;  // bytes -> id
  std::array<int32_t, 256> byte_ids_;                // id of each one-byte token, -1 if none
  std::unordered_map<uint64_t, Merge> merges_;       // (left, right) -> merge

  // Ids of short pre-tokens already seen: words repeat, so most of a long text is looked up, not merged.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Special tokens written literally in the text ("<|eot_id|>", "<|im_start|>") are cut out before pre-tokenizing and
// encoded as their ids. Where several start at the same place, the longest wins (HF added tokens do the same).
class SpecialTokenMatcher {
 public:
  SpecialTokenMatcher() = default;  // matches nothing
  // tokens: (text, id); `what` names the tokenizer file for errors.
  SpecialTokenMatcher(const std::vector<std::pair<std::string, int32_t>>& tokens, const std::string& what);

  // Calls plain(segment) for each stretch of text between special tokens and appends the id of each special
  // token to `out`, in text order.
  template <typename PlainFn>
  void split(std::string_view text, std::vector<int32_t>* out, PlainFn plain) const {
    size_t pos = 0, b = 0, e = 0;
    while (regex_ && pos < text.size() && regex_->find(text, pos, &b, &e)) {
      if (b > pos) plain(text.substr(pos, b - pos));
      out->push_back(ids_.at(std::string(text.substr(b, e - b))));
      pos = e;
    }
    if (pos < text.size()) plain(text.substr(pos));
  }

 private:
  std::unique_ptr<Regex> regex_;  // null when there are no special tokens
  std::unordered_map<std::string, int32_t> ids_;
};

}  // namespace liger
