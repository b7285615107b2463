// data/regex.h — the PCRE2 patterns that split text before byte-level BPE (tiktoken, HF pre_tokenizers).
//
// Patterns are compiled with PCRE2_UTF | PCRE2_UCP (\p{L}, \w, \d are Unicode) and JIT-compiled.
// PCRE2_MATCH_INVALID_UTF lets text that is not valid UTF-8 through: invalid bytes never match and end up in the
// gaps between matches, so no byte is ever lost.
//
// One difference from the engines the patterns were written for (Rust regex in tiktoken, Oniguruma in HF
// tokenizers) is corrected: there \s is exactly the Unicode White_Space property, while PCRE2's UCP \s also matches
// U+180E (MONGOLIAN VOWEL SEPARATOR). The pattern is rewritten so that \s and \S (outside a class) and \s (inside
// [...]) name White_Space explicitly; \S inside [...] keeps PCRE2's meaning.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace liger {

class Regex {
 public:
  // Compiles `pattern`; a syntax error is an Error "<what>: bad regex ...".
  Regex(const std::string& pattern, const std::string& what);

  // Leftmost match in text[start:]: true and [*begin, *end) on success. Empty matches are skipped.
  bool find(std::string_view text, size_t start, size_t* begin, size_t* end) const;
  // HF's "Isolated" split: each match is a piece, and so is each non-empty gap between matches; the pieces
  // concatenate to `text`. Appends to `out`.
  void split(std::string_view text, std::vector<std::string_view>* out) const;

  // `s` with every regex metacharacter escaped, so that it matches itself literally.
  static std::string escape(const std::string& s);

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8, freed with pcre2_code_free_8
  std::string what_;
};

}  // namespace liger
