// core/json.h — reading JSON files with errors that name the file and the key.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace liger {

using Json = nlohmann::json;

// Parses `path`; a missing file or a syntax error is a liger::Error naming the file (and the byte offset).
Json read_json_file(const std::string& path);
// Parses text that came from `what` (a file name or "header of X"), with the same error style.
Json parse_json(const std::string& text, const std::string& what);

// Typed field access: a missing key or a wrong type is an Error "<file>: key '<key>' ...".
const Json& json_field(const Json& obj, const std::string& key, const std::string& file);
int64_t json_int(const Json& obj, const std::string& key, const std::string& file);
double json_number(const Json& obj, const std::string& key, const std::string& file);
std::string json_string(const Json& obj, const std::string& key, const std::string& file);
bool json_bool(const Json& obj, const std::string& key, const std::string& file);
// Present and not null?
bool json_has(const Json& obj, const std::string& key);

}  // namespace liger
