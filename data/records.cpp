// Reading dataset files: Alpaca records (JSON array or JSONL), plain-text and JSONL {"text"} corpora, with bad records
// counted, warned about and skipped (or an Error in strict mode). See data/dataset.h for the rules.
//
// A JSON array is not handed to the JSON parser whole: a byte scanner finds each element's extent (strings, escapes and
// bracket depth; no UTF-8 decoding), and each element is validated and parsed on its own. That keeps one record in
// memory at a time, and lets a record with invalid UTF-8 be skipped (nlohmann rejects the whole text otherwise).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"
#include "data/dataset.h"

namespace liger {

size_t utf8_invalid_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    // Lead byte -> sequence length and the allowed range of the second byte (Unicode Table 3-7), which excludes
    // overlong forms (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code points above U+10FFFF (F4 90..BF).
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;  // 80..C1 (continuation or overlong 2-byte lead) or F5..FF
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; k++) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string::npos;
}

namespace {

namespace fs = std::filesystem;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string read_all(const std::string& path) {
  std::error_code ec;
  LIGER_CHECK(fs::exists(path, ec), "%s: no such file (give the dataset file in 'path')", path.c_str());
  LIGER_CHECK(!fs::is_directory(path, ec), "%s: is a directory, not a dataset file", path.c_str());
  std::ifstream f(path, std::ios::binary);
  LIGER_CHECK(f.good(), "%s: cannot open file", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Offset just past a UTF-8 byte-order mark.
size_t skip_bom(std::string_view text) { return text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0; }

std::string extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// Bookkeeping of one file's records: skip (warn, or throw under strict) and the closing summary.
class Records {
 public:
  Records(const std::string& path, const std::string& format, bool strict) : strict_(strict) {
    report_.path = path;
    report_.format = format;
  }
  void used() {
    report_.records++;
    report_.used++;
  }
  void skip(int64_t index, int64_t line, const std::string& reason) {
    report_.records++;
    const std::string where = strfmt("%s: record %lld (line %lld)", report_.path.c_str(), static_cast<long long>(index),
                                     static_cast<long long>(line));
    if (strict_) {
      LIGER_FAIL("%s: %s (strict mode: fix the record, or set strict = false to skip bad records)", where.c_str(),
                 reason.c_str());
    }
    LOG_WARN("%s: skipped: %s", where.c_str(), reason.c_str());
    report_.skipped.push_back({index, line, reason});
  }
  LoadReport finish() {
    const char* path = report_.path.c_str();
    const auto records = static_cast<long long>(report_.records);
    LIGER_CHECK(report_.records > 0, "%s: no records (the file holds no %s data)", path, report_.format.c_str());
    LIGER_CHECK(report_.used > 0, "%s: no usable records (all %lld were skipped; see the warnings above)", path,
                records);
    if (!report_.skipped.empty()) {
      LOG_WARN("%s: skipped %zu of %lld records (bad records are listed above); using %lld", path,
               report_.skipped.size(), records, static_cast<long long>(report_.used));
    } else {
      LOG_DEBUG("%s: %lld records", path, records);
    }
    return std::move(report_);
  }

 private:
  bool strict_;
  LoadReport report_;
};

// End of the JSON value starting at text[pos] (not whitespace): one past a closing bracket or quote, or, for a
// scalar, the first ',', ']', '}' or whitespace. npos when the text ends inside a string or an open bracket.
size_t value_end(std::string_view text, size_t pos) {
  const char c0 = text[pos];
  if (c0 != '{' && c0 != '[' && c0 != '"') {
    size_t i = pos;
    while (i < text.size() && text[i] != ',' && text[i] != ']' && text[i] != '}' && !is_space(text[i])) i++;
    return i;
  }
  int depth = 0;
  bool in_string = false;
  for (size_t i = pos; i < text.size(); i++) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        i++;
      } else if (c == '"') {
        in_string = false;
        if (depth == 0) return i + 1;  // a top-level string value
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string::npos;
}

// The top-level key of the JSON object text `obj` whose value (or key) holds byte `at`; "" when not inside one.
std::string key_holding(std::string_view obj, size_t at) {
  int depth = 0;
  bool in_string = false;
  size_t string_begin = 0;
  std::string last_string, key;
  for (size_t i = 0; i < at && i < obj.size(); i++) {
    const char c = obj[i];
    if (in_string) {
      if (c == '\\') {
        i++;
      } else if (c == '"') {
        in_string = false;
        if (depth == 1) last_string = std::string(obj.substr(string_begin + 1, i - string_begin - 1));
      }
    } else if (c == '"') {
      in_string = true;
      string_begin = i;
    } else if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ':' && depth == 1) {
      key = last_string;
    } else if (c == ',' && depth == 1) {
      key.clear();
    }
  }
  return key;
}

std::string invalid_utf8_reason(std::string_view record, size_t at) {
  const std::string key = key_holding(record, at);
  const unsigned byte = static_cast<unsigned char>(record[at]);
  if (key.empty()) return strfmt("invalid UTF-8 (byte 0x%02X)", byte);
  return strfmt("invalid UTF-8 in '%s' (byte 0x%02X)", key.c_str(), byte);
}

// Parses one record's JSON text. Returns false with *reason set for a record-level problem (invalid UTF-8, a lone
// surrogate escape, and when `syntax_is_bad_record`, any syntax error); a syntax error otherwise is an Error naming
// `where` (the file is not JSON).
bool parse_record(std::string_view text, const std::string& where, bool syntax_is_bad_record, Json* out,
                  std::string* reason) {
  const size_t bad = utf8_invalid_at(text);
  if (bad != std::string::npos) {
    *reason = invalid_utf8_reason(text, bad);
    return false;
  }
  try {
    *out = parse_json(std::string(text), where);
    return true;
  } catch (const Error& e) {
    std::string msg = e.what();
    const size_t p = msg.find("invalid JSON: ");
    if (p != std::string::npos) msg = msg.substr(p + 14);
    if (msg.find("surrogate") != std::string::npos) {
      *reason = "invalid \\u escape (a lone UTF-16 surrogate): " + msg;
      return false;
    }
    if (syntax_is_bad_record) {
      *reason = "not valid JSON: " + msg;
      return false;
    }
    throw;
  }
}

// A string field of a record: "" when absent or null (allowed only when !required). Returns a reason or "".
std::string string_field(const Json& obj, const char* key, bool required, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    out->clear();
    return required ? strfmt("missing '%s'", key) : std::string();
  }
  if (!it->is_string()) return strfmt("'%s' must be a string, got %s", key, it->type_name());
  *out = it->get<std::string>();
  const size_t bad = utf8_invalid_at(*out);
  if (bad != std::string::npos) return strfmt("invalid UTF-8 in '%s' (byte 0x%02X)", key, (*out)[bad] & 0xFF);
  return std::string();
}

std::string alpaca_from_json(const Json& j, AlpacaRecord* r) {
  if (!j.is_object()) return strfmt("not a JSON object (%s)", j.type_name());
  std::string why = string_field(j, "instruction", true, &r->instruction);
  if (why.empty()) why = string_field(j, "input", false, &r->input);
  if (why.empty()) why = string_field(j, "output", true, &r->output);
  if (why.empty() && r->output.empty()) why = "empty 'output' (nothing to train on)";
  return why;
}

std::string text_from_json(const Json& j, std::string* text) {
  if (!j.is_object()) return strfmt("not a JSON object (%s)", j.type_name());
  std::string why = string_field(j, "text", true, text);
  if (why.empty() && text->empty()) why = "empty 'text'";
  return why;
}

// Calls fn(index, line, text) for each non-blank line of a JSONL file (CR of CRLF removed).
void for_each_jsonl_line(const std::string& path,
                         const std::function<void(int64_t index, int64_t line, const std::string& text)>& fn) {
  std::error_code ec;
  LIGER_CHECK(fs::exists(path, ec), "%s: no such file (give the dataset file in 'path')", path.c_str());
  LIGER_CHECK(!fs::is_directory(path, ec), "%s: is a directory, not a dataset file", path.c_str());
  std::ifstream f(path, std::ios::binary);
  LIGER_CHECK(f.good(), "%s: cannot open file", path.c_str());
  std::string s;
  int64_t line = 0, index = 0;
  while (std::getline(f, s)) {
    line++;
    if (line == 1) s.erase(0, skip_bom(s));
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (std::all_of(s.begin(), s.end(), is_space)) continue;
    fn(index++, line, s);
  }
}

// Alpaca JSON array: every element of the top-level array is a record.
void read_alpaca_array(const std::string& path, const std::string& text, size_t pos, Records* recs,
                       const std::function<void(int64_t, const AlpacaRecord&)>& fn) {
  int64_t line = 1;
  size_t counted = 0;  // newlines before `counted` are in `line`
  auto line_at = [&](size_t p) {
    line += std::count(text.begin() + counted, text.begin() + p, '\n');
    counted = p;
    return line;
  };
  auto skip_ws = [&](size_t p) {
    while (p < text.size() && is_space(text[p])) p++;
    return p;
  };
  pos = skip_ws(pos + 1);  // past '['
  int64_t index = 0;
  if (pos < text.size() && text[pos] == ']') {
    pos++;
  } else {
    AlpacaRecord record;
    while (true) {
      LIGER_CHECK(pos < text.size(), "%s: invalid JSON: the array is not closed (expected ']' at the end of the file)",
                  path.c_str());
      const int64_t rec_line = line_at(pos);
      const size_t end = value_end(text, pos);
      LIGER_CHECK(end != std::string::npos && end > pos,
                  "%s: invalid JSON: record %lld (line %lld) is not closed before the end of the file", path.c_str(),
                  static_cast<long long>(index), static_cast<long long>(rec_line));
      const std::string where =
          strfmt("%s: record %lld (line %lld)", path.c_str(), static_cast<long long>(index), static_cast<long long>(rec_line));
      Json j;
      std::string why;
      if (parse_record(std::string_view(text).substr(pos, end - pos), where, false, &j, &why)) {
        why = alpaca_from_json(j, &record);
      }
      if (why.empty()) {
        recs->used();
        fn(index, record);
      } else {
        recs->skip(index, rec_line, why);
      }
      index++;
      pos = skip_ws(end);
      LIGER_CHECK(pos < text.size(), "%s: invalid JSON: the array is not closed (expected ']' at the end of the file)",
                  path.c_str());
      if (text[pos] == ']') {
        pos++;
        break;
      }
      LIGER_CHECK(text[pos] == ',', "%s: invalid JSON: expected ',' or ']' after record %lld, at line %lld",
                  path.c_str(), static_cast<long long>(index - 1), static_cast<long long>(line_at(pos)));
      pos = skip_ws(pos + 1);
      LIGER_CHECK(pos >= text.size() || text[pos] != ']', "%s: invalid JSON: a ',' before ']' at line %lld",
                  path.c_str(), static_cast<long long>(line_at(pos)));
    }
  }
  pos = skip_ws(pos);
  LIGER_CHECK(pos == text.size(), "%s: invalid JSON: unexpected text after the array, at line %lld", path.c_str(),
              static_cast<long long>(line_at(pos)));
}

}  // namespace

std::string resolve_data_format(const std::string& path, const std::string& format) {
  if (format != "auto") {
    LIGER_CHECK(format == "alpaca" || format == "text" || format == "jsonl",
                "data: format = '%s' is not one of auto, alpaca, text, jsonl", format.c_str());
    return format;
  }
  const std::string ext = extension(path);
  if (ext == ".txt") return "text";
  if (ext == ".json") return "alpaca";
  LIGER_CHECK(ext == ".jsonl",
              "%s: cannot tell the data format from the extension '%s' (name the file .json, .jsonl or .txt, or set "
              "format = alpaca, text or jsonl)",
              path.c_str(), ext.c_str());
  // JSONL: Alpaca records or {"text"} documents, told by the first record.
  std::string result;
  for_each_jsonl_line(path, [&](int64_t index, int64_t line, const std::string& s) {
    if (index > 0) return;
    Json j;
    std::string why;
    const std::string where = strfmt("%s: line %lld", path.c_str(), static_cast<long long>(line));
    if (parse_record(s, where, true, &j, &why) && j.is_object()) {
      if (j.contains("instruction")) result = "alpaca";
      else if (j.contains("text")) result = "jsonl";
    }
  });
  LIGER_CHECK(!result.empty(),
              "%s: cannot tell the data format: the first record has neither 'instruction' (Alpaca) nor 'text' (set "
              "format = alpaca or jsonl)",
              path.c_str());
  return result;
}

LoadReport read_alpaca(const std::string& path, bool strict,
                       const std::function<void(int64_t index, const AlpacaRecord& record)>& fn) {
  Records recs(path, "alpaca", strict);
  const bool jsonl_name = extension(path) == ".jsonl";
  if (!jsonl_name) {
    const std::string text = read_all(path);
    size_t pos = skip_bom(text);
    while (pos < text.size() && is_space(text[pos])) pos++;
    LIGER_CHECK(pos < text.size(), "%s: empty file (expected a JSON array of Alpaca records)", path.c_str());
    if (text[pos] == '[') {
      read_alpaca_array(path, text, pos, &recs, fn);
      return recs.finish();
    }
    LIGER_CHECK(text[pos] == '{',
                "%s: not JSON: expected a JSON array of {instruction, input, output} records or JSONL (one object per "
                "line), found '%c' at the start",
                path.c_str(), text[pos]);
    // One object spanning the whole file is JSON but not an array; otherwise the lines are JSONL.
    const size_t end = value_end(text, pos);
    size_t after = end == std::string::npos ? text.size() : end;
    while (after < text.size() && is_space(text[after])) after++;
    LIGER_CHECK(end == std::string::npos || after < text.size(),
                "%s: not a JSON array: the file is one JSON object (Alpaca data is a JSON array of records, or JSONL "
                "with one record per line)",
                path.c_str());
  }
  AlpacaRecord record;
  for_each_jsonl_line(path, [&](int64_t index, int64_t line, const std::string& s) {
    Json j;
    std::string why;
    const std::string where =
        strfmt("%s: record %lld (line %lld)", path.c_str(), static_cast<long long>(index), static_cast<long long>(line));
    if (parse_record(s, where, true, &j, &why)) why = alpaca_from_json(j, &record);
    if (why.empty()) {
      recs.used();
      fn(index, record);
    } else {
      recs.skip(index, line, why);
    }
  });
  return recs.finish();
}

std::vector<AlpacaRecord> read_alpaca_file(const std::string& path, bool strict, LoadReport* report) {
  std::vector<AlpacaRecord> records;
  LoadReport r = read_alpaca(path, strict, [&](int64_t, const AlpacaRecord& rec) { records.push_back(rec); });
  if (report) *report = std::move(r);
  return records;
}

LoadReport read_text_corpus(const std::string& path, const std::string& format, bool strict,
                            const std::function<void(int64_t index, const std::string& text)>& fn) {
  LIGER_CHECK(format == "text" || format == "jsonl", "%s: read_text_corpus: format '%s' is not text or jsonl",
              path.c_str(), format.c_str());
  Records recs(path, format, strict);
  if (format == "jsonl") {
    std::string text;
    for_each_jsonl_line(path, [&](int64_t index, int64_t line, const std::string& s) {
      Json j;
      std::string why;
      const std::string where = strfmt("%s: record %lld (line %lld)", path.c_str(), static_cast<long long>(index),
                                       static_cast<long long>(line));
      if (parse_record(s, where, true, &j, &why)) why = text_from_json(j, &text);
      if (why.empty()) {
        recs.used();
        fn(index, text);
      } else {
        recs.skip(index, line, why);
      }
    });
    return recs.finish();
  }

  // Plain text: paragraphs (runs of non-blank lines) are documents.
  const std::string text = read_all(path);
  size_t pos = skip_bom(text);
  int64_t line = 1, index = 0;
  size_t par_begin = std::string::npos, par_end = 0;
  int64_t par_line = 0;
  auto flush = [&]() {
    if (par_begin == std::string::npos) return;
    std::string_view doc = std::string_view(text).substr(par_begin, par_end - par_begin);
    if (!doc.empty() && doc.back() == '\r') doc.remove_suffix(1);
    const size_t bad = utf8_invalid_at(doc);
    if (bad == std::string::npos) {
      recs.used();
      fn(index, std::string(doc));
    } else {
      const int64_t bad_line = par_line + std::count(doc.begin(), doc.begin() + bad, '\n');
      recs.skip(index, par_line,
                strfmt("invalid UTF-8 (byte 0x%02X at line %lld)", doc[bad] & 0xFF, static_cast<long long>(bad_line)));
    }
    index++;
    par_begin = std::string::npos;
  };
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const bool blank = std::all_of(text.begin() + pos, text.begin() + eol, is_space);
    if (blank) {
      flush();
    } else {
      if (par_begin == std::string::npos) {
        par_begin = pos;
        par_line = line;
      }
      par_end = eol;
    }
    pos = eol + 1;
    line++;
  }
  flush();
  return recs.finish();
}

}  // namespace liger
