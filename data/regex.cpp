#include "data/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "core/check.h"

namespace liger {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// The Unicode White_Space property (as Rust regex and Oniguruma define \s), for use inside [...].
const char* const kWhiteSpace =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Rewrites \s and \S as White_Space (see regex.h). Copies \Q...\E, other escapes and POSIX classes ([:alpha:])
// unchanged.
std::string with_white_space(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char n = p[++i];
      if (n == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (n == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else if (n == 'Q') {  // literal text up to \E
        size_t e = p.find("\\E", i + 1);
        size_t stop = e == std::string::npos ? p.size() : e + 2;
        out.append(p, i - 1, stop - (i - 1));
        i = stop - 1;
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a ']' first in a class is literal
    } else if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t e = p.find(":]", i + 2);
      if (e != std::string::npos) {
        out.append(p, i + 1, e + 2 - (i + 1));
        i = e + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

// Per-thread match state: match data, and a JIT stack large enough for long runs of whitespace or letters.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(16, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& what) : what_(what) {
  std::string p = with_white_space(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  LIGER_CHECK(code != nullptr, "%s: bad regex '%s': %s at offset %zu", what.c_str(), pattern.c_str(),
              pcre2_message(error).c_str(), static_cast<size_t>(offset));
  code_ = std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
  // Without JIT support (some platforms) pcre2_match falls back to the interpreter: slower, same results.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
}

bool Regex::find(std::string_view text, size_t start, size_t* begin, size_t* end) const {
  thread_local MatchScratch scratch;
  auto* code = static_cast<const pcre2_code*>(code_.get());
  while (start <= text.size()) {
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, 0, scratch.data,
                         scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    // rc == 0 means the ovector was too small for all capture groups; the whole match is still there.
    LIGER_CHECK(rc >= 0, "%s: regex match failed: %s", what_.c_str(), pcre2_message(rc).c_str());
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.data);
    if (ov[1] > ov[0]) {
      *begin = ov[0];
      *end = ov[1];
      return true;
    }
    // An empty match: look again from the next character.
    start = ov[0] + 1;
    while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
  }
  return false;
}

void Regex::split(std::string_view text, std::vector<std::string_view>* out) const {
  size_t pos = 0, b = 0, e = 0;
  while (pos < text.size() && find(text, pos, &b, &e)) {
    if (b > pos) out->push_back(text.substr(pos, b - pos));
    out->push_back(text.substr(b, e - b));
    pos = e;
  }
  if (pos < text.size()) out->push_back(text.substr(pos));
}

std::string Regex::escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += strfmt("\\x{%x}", u);
    } else if (u < 0x80 && !std::isalnum(u)) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace liger
