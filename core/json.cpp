#include "core/json.h"

#include <fstream>
#include <sstream>

#include "core/check.h"

namespace liger {

Json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LIGER_CHECK(f.good(), "%s: cannot open file", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_json(ss.str(), path);
}

namespace {

// Deeper documents are rejected before parsing: copying, comparing or dumping a Json recurses once per level, so a
// few thousand nested brackets (a few KB of input) would overflow the stack. Real configs, headers and tokenizer files
// nest fewer than 10 levels.
constexpr int kMaxJsonDepth = 512;

// Nesting depth of a JSON text, counting brackets outside string literals (exact for valid JSON; for invalid JSON the
// parser reports the error anyway). Returns the byte offset where kMaxJsonDepth is exceeded, or npos.
size_t too_deep_at(const std::string& text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); i++) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return i;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return std::string::npos;
}

// A short rendering of a value for error messages. Containers are summarized, not dumped (a dump would be as large
// as the value, and recursive).
std::string brief(const Json& v) {
  if (v.is_array()) return strfmt("an array of %zu elements", v.size());
  if (v.is_object()) return strfmt("an object of %zu keys", v.size());
  return v.dump(-1, ' ', false, Json::error_handler_t::replace).substr(0, 60);
}

}  // namespace

Json parse_json(const std::string& text, const std::string& what) {
  const size_t deep = too_deep_at(text);
  LIGER_CHECK(deep == std::string::npos, "%s: invalid JSON: nested deeper than %d levels at byte %zu", what.c_str(),
              kMaxJsonDepth, deep);
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    std::string msg = e.what();
    // nlohmann messages start with "[json.exception.parse_error.101] "; keep the readable part.
    size_t p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
    LIGER_FAIL("%s: invalid JSON: %s", what.c_str(), msg.c_str());
  }
}

bool json_has(const Json& obj, const std::string& key) {
  return obj.is_object() && obj.contains(key) && !obj.at(key).is_null();
}

const Json& json_field(const Json& obj, const std::string& key, const std::string& file) {
  LIGER_CHECK(obj.is_object(), "%s: expected a JSON object", file.c_str());
  LIGER_CHECK(json_has(obj, key), "%s: missing key '%s'", file.c_str(), key.c_str());
  return obj.at(key);
}

int64_t json_int(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_number_integer(), "%s: key '%s' must be an integer, got %s", file.c_str(), key.c_str(),
              brief(v).c_str());
  return v.get<int64_t>();
}

double json_number(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_number(), "%s: key '%s' must be a number, got %s", file.c_str(), key.c_str(),
              brief(v).c_str());
  return v.get<double>();
}

std::string json_string(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_string(), "%s: key '%s' must be a string, got %s", file.c_str(), key.c_str(),
              brief(v).c_str());
  return v.get<std::string>();
}

bool json_bool(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_boolean(), "%s: key '%s' must be true or false, got %s", file.c_str(), key.c_str(),
              brief(v).c_str());
  return v.get<bool>();
}

}  // namespace liger
