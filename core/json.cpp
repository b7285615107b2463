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

Json parse_json(const std::string& text, const std::string& what) {
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
              v.dump().substr(0, 60).c_str());
  return v.get<int64_t>();
}

double json_number(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_number(), "%s: key '%s' must be a number, got %s", file.c_str(), key.c_str(),
              v.dump().substr(0, 60).c_str());
  return v.get<double>();
}

std::string json_string(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_string(), "%s: key '%s' must be a string, got %s", file.c_str(), key.c_str(),
              v.dump().substr(0, 60).c_str());
  return v.get<std::string>();
}

bool json_bool(const Json& obj, const std::string& key, const std::string& file) {
  const Json& v = json_field(obj, key, file);
  LIGER_CHECK(v.is_boolean(), "%s: key '%s' must be true or false, got %s", file.c_str(), key.c_str(),
              v.dump().substr(0, 60).c_str());
  return v.get<bool>();
}

}  // namespace liger
