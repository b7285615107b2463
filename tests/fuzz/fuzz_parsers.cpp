// tests/fuzz/fuzz_parsers.cpp — a deterministic random-input loop over the parsers of untrusted bytes: the safetensors
// header (SafetensorsFile::from_bytes), JSON (liger::parse_json) and HF config.json (load_model_config).
//
//   fuzz_parsers --seed S --iterations N [--only I] [--verbose]
//
// Every call must either succeed or throw liger::Error; any other exception fails the run (exit 1) after printing
// the iteration and its input. Memory errors and undefined behaviour are caught by AddressSanitizer + UBSan: build
// with -DLIGER_SANITIZE=address,undefined and run with UBSAN_OPTIONS=halt_on_error=1 (scripts/fuzz.sh does both).
// Iteration i draws from its own stream seeded by (S, i), so `--only i` replays one input alone.
//
// Inputs: valid seeds (safetensors images written by write_safetensors and by hand; real config.json files from the
// repository plus built-in ones), then 1-4 mutations each: byte flips, truncation, inserted/deleted/duplicated chunks,
// spliced header lengths, changed digits, huge or negative numbers, swapped JSON tokens, deep nesting, structural
// edits of parsed configs (a key deleted, or set to a value of another type); and pure random bytes.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/json.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "model/config.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

namespace fs = std::filesystem;
using liger::Json;
using liger::Rng;

namespace {

// ---- seeds ------------------------------------------------------------------------------------------------------------

struct StSeed {
  std::string header;  // the JSON text
  std::string data;    // the data section
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Splits a safetensors image into header and data (for seeds written by write_safetensors).
StSeed split_image(const std::string& img) {
  uint64_t n = 0;
  std::memcpy(&n, img.data(), 8);
  return {img.substr(8, static_cast<size_t>(n)), img.substr(8 + static_cast<size_t>(n))};
}

std::vector<StSeed> safetensors_seeds(const fs::path& tmp) {
  std::vector<StSeed> seeds;
  using liger::DType;
  using liger::Device;
  using liger::Tensor;
  Tensor f = Tensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor s = Tensor::from_f32(liger::Shape(), {7});
  Tensor e = Tensor::empty({0, 4}, DType::F32, Device::CPU);
  Tensor b = f.to(Device::CPU, DType::BF16);
  Tensor h = f.to(Device::CPU, DType::F16);
  Tensor i32 = Tensor::from_i32({3}, {1, -2, 3});
  Tensor i64 = i32.to(Device::CPU, DType::I64);
  const std::string p = (tmp / "seed.safetensors").string();
  liger::write_safetensors(p, {{"model.embed_tokens.weight", f}, {"scale", s}, {"empty", e}, {"b", b}, {"h", h},
                               {"ids", i32}, {"pos", i64}},
                           {{"format", "pt"}, {"step", "3"}});
  seeds.push_back(split_image(read_file(p)));
  liger::write_safetensors(p, {{"w", f}});
  seeds.push_back(split_image(read_file(p)));
  liger::write_safetensors(p, {});
  seeds.push_back(split_image(read_file(p)));
  // Dtypes liger does not load, a 6-dim tensor, a gap between tensors, trailing data.
  seeds.push_back({R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"u":{"dtype":"U8","shape":[3],)"
                   R"("data_offsets":[16,19]},"k":{"dtype":"BOOL","shape":[1,1,1,1,1,1],"data_offsets":[24,25]},)"
                   R"("q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[25,29]},"__metadata__":{"a":"b"}})",
                   std::string(40, '\x3f')});
  return seeds;
}

const char* kConfigLlama3 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 160,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "hidden_act": "silu", "attention_bias": false,
  "mlp_bias": false, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 64, "rope_theta": 500000.0, "rope_type": "llama3"}})";
const char* kConfigV4 = R"({
  "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 160, "rms_norm_eps": 1e-06,
  "hidden_act": "silu", "tie_word_embeddings": false, "rope_theta": 10000.0,
  "rope_scaling": {"type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192}, "use_sliding_window": false, "sliding_window": null,
  "bos_token_id": null, "eos_token_id": 151643})";
const char* kConfigMistral = R"({"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 160,
  "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "sliding_window": 7, "rope_theta": 10000.0})";

std::vector<std::string> json_seeds(const std::vector<StSeed>& st) {
  std::vector<std::string> seeds = {kConfigLlama3, kConfigV4, kConfigMistral};
#ifdef LIGER_SOURCE_DIR
  // The real transformers outputs of the repository, when the source tree is there.
  const fs::path root = fs::path(LIGER_SOURCE_DIR);
  std::error_code ec;
  for (const char* rel : {"assets/stories260K/hf/config.json"}) {
    if (fs::exists(root / rel, ec)) seeds.push_back(read_file((root / rel).string()));
  }
  if (fs::is_directory(root / "tests/golden", ec)) {
    for (const auto& d : fs::directory_iterator(root / "tests/golden", ec)) {
      const fs::path cfg = d.path() / "config.json";
      if (fs::exists(cfg, ec)) seeds.push_back(read_file(cfg.string()));
    }
  }
#endif
  for (const StSeed& s : st) seeds.push_back(s.header);  // safetensors headers are JSON too
  return seeds;
}

// ---- mutations --------------------------------------------------------------------------------------------------------

size_t pick(Rng& r, size_t n) { return n == 0 ? 0 : static_cast<size_t>(r.next_u64() % n); }

std::string random_bytes(Rng& r, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(r.next_u64() & 0xff);
  return s;
}

const char* const kNumbers[] = {"0",  "-1", "1", "-0", "2.5", "1e308", "1e400", "-1e400", "1e-400", "4294967296",
                                "9223372036854775807", "9223372036854775808", "-9223372036854775809",
                                "18446744073709551615", "18446744073709551616", "281474976710656",
                                "99999999999999999999999999999", "0x10", "01", "1.", ".5", "NaN", "Infinity"};
const char* const kTokens[] = {"null", "true", "false", "[]", "{}", "\"\"", "[0]", "[0,0]", "[-1]", "{\"a\":1}",
                               "\"F32\"", "\"BF16\"", "\"F64\"", "\"I64\"", "\"BOOL\"", "\"X\"", "\"llama\"",
                               "\"qwen3\"", "\"llama3\"", "\"yarn\"", "\"default\"", "\"silu\"", "\"gelu\"",
                               "\"__metadata__\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"\\u0000\"",
                               "\"\\ud800\"", "\"\xc3\x28\"", ",", ":", "[", "]", "{", "}", "\""};

// Positions of the starts of numbers in s.
std::vector<size_t> number_starts(const std::string& s) {
  std::vector<size_t> v;
  for (size_t i = 0; i < s.size(); i++) {
    const bool digit = s[i] >= '0' && s[i] <= '9';
    const bool prev_digit = i > 0 && ((s[i - 1] >= '0' && s[i - 1] <= '9') || s[i - 1] == '-' || s[i - 1] == '.');
    if (digit && !prev_digit) v.push_back(i);
  }
  return v;
}
size_t number_end(const std::string& s, size_t i) {
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                          s[i] == 'E' || s[i] == '-' || s[i] == '+'))
    i++;
  return i;
}

// Boundaries of JSON tokens (strings, numbers, literals) in s, roughly: a random token's [begin, end).
std::pair<size_t, size_t> random_token(Rng& r, const std::string& s) {
  if (s.empty()) return {0, 0};
  size_t i = pick(r, s.size());
  // Extend to a string literal if inside one, else to a run of word characters.
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; };
  size_t b = i, e = i + 1;
  if (s[i] == '"') {
    e = s.find('"', i + 1);
    e = e == std::string::npos ? s.size() : e + 1;
  } else if (word(s[i])) {
    while (b > 0 && word(s[b - 1])) b--;
    while (e < s.size() && word(s[e])) e++;
  }
  return {b, e};
}

// One textual mutation (JSON-aware where it helps, but any result is a valid test input).
void mutate_text(Rng& r, std::string& s) {
  switch (pick(r, 11)) {
    case 0: {  // flip 1-4 bytes
      for (size_t k = 1 + pick(r, 4); k > 0 && !s.empty(); k--) s[pick(r, s.size())] ^= static_cast<char>(1 + pick(r, 255));
      break;
    }
    case 1:  // truncate
      s.resize(pick(r, s.size() + 1));
      break;
    case 2: {  // change one digit
      std::vector<size_t> d = number_starts(s);
      if (!d.empty()) s[d[pick(r, d.size())]] = static_cast<char>('0' + pick(r, 10));
      break;
    }
    case 3: {  // replace a number with a huge / negative / odd one
      std::vector<size_t> d = number_starts(s);
      if (d.empty()) break;
      size_t b = d[pick(r, d.size())];
      if (b > 0 && s[b - 1] == '-') b--;
      s.replace(b, number_end(s, b) - b, kNumbers[pick(r, sizeof(kNumbers) / sizeof(kNumbers[0]))]);
      break;
    }
    case 4: {  // append digits to a number, or put a minus sign before it
      std::vector<size_t> d = number_starts(s);
      if (d.empty()) break;
      size_t b = d[pick(r, d.size())];
      if (r.uniform() < 0.5f) s.insert(b, "-");
      else s.insert(number_end(s, b), std::string(1 + pick(r, 25), static_cast<char>('0' + pick(r, 10))));
      break;
    }
    case 5: {  // swap a token for another
      auto [b, e] = random_token(r, s);
      s.replace(b, e - b, kTokens[pick(r, sizeof(kTokens) / sizeof(kTokens[0]))]);
      break;
    }
    case 6: {  // insert random bytes
      s.insert(pick(r, s.size() + 1), random_bytes(r, 1 + pick(r, 8)));
      break;
    }
    case 7: {  // delete a chunk
      if (s.empty()) break;
      size_t b = pick(r, s.size());
      s.erase(b, 1 + pick(r, std::min<size_t>(s.size() - b, 40)));
      break;
    }
    case 8: {  // duplicate a chunk elsewhere
      if (s.empty()) break;
      size_t b = pick(r, s.size());
      std::string chunk = s.substr(b, 1 + pick(r, 60));
      s.insert(pick(r, s.size() + 1), chunk);
      break;
    }
    case 9: {  // deep nesting in place of a token
      auto [b, e] = random_token(r, s);
      // Around parse_json's limit of 512 levels, or far beyond it.
      const size_t depth = r.uniform() < 0.7f ? 1 + pick(r, 600) : 1 + pick(r, 200000);
      const bool arr = r.uniform() < 0.5f;
      std::string open, close;
      for (size_t k = 0; k < depth; k++) open += arr ? "[" : "{\"k\":", close += arr ? "]" : "}";
      s.replace(b, e - b, open + "1" + (r.uniform() < 0.8f ? close : ""));
      break;
    }
    default: {  // insert a structural token
      s.insert(pick(r, s.size() + 1), kTokens[pick(r, sizeof(kTokens) / sizeof(kTokens[0]))]);
      break;
    }
  }
}

// A random JSON value of any type (for structural edits of parsed configs).
Json random_value(Rng& r) {
  switch (pick(r, 12)) {
    case 0: return nullptr;
    case 1: return r.uniform() < 0.5f;
    case 2: return static_cast<int64_t>(r.next_u64());  // any int64, negative half the time
    case 3: return static_cast<int64_t>(pick(r, 5)) - 1;
    case 4: return r.next_u64();  // unsigned, often above INT64_MAX
    case 5: return (r.uniform_f64() - 0.5) * std::pow(10.0, static_cast<double>(pick(r, 40)));
    case 6: return "64";
    case 7: return kTokens[pick(r, sizeof(kTokens) / sizeof(kTokens[0]))];
    case 8: return Json::array({1, 2});
    case 9: return Json::array();
    case 10: return Json::object({{"rope_type", pick(r, 2) ? "llama3" : "default"}, {"factor", -1}});
    default: return Json::object();
  }
}

// Structural edit of a parsed object: a key deleted, a value replaced (at the top level or one level down).
void mutate_structure(Rng& r, Json& j) {
  if (!j.is_object() || j.empty()) return;
  for (size_t k = 1 + pick(r, 3); k > 0; k--) {
    Json* obj = &j;
    auto it = obj->begin();
    std::advance(it, static_cast<long>(pick(r, obj->size())));
    if (it.value().is_object() && !it.value().empty() && r.uniform() < 0.4f) {
      obj = &it.value();
      it = obj->begin();
      std::advance(it, static_cast<long>(pick(r, obj->size())));
    }
    const std::string key = it.key();
    if (r.uniform() < 0.3f) obj->erase(key);
    else (*obj)[key] = random_value(r);
    if (obj->empty()) return;
  }
}

// Structural edit of a parsed safetensors header: offsets nudged, shapes and dtypes changed, entries copied over
// others (overlaps), deleted, or given values of the wrong type.
void mutate_header_structure(Rng& r, Json& h) {
  if (!h.is_object()) return;
  static const char* const kDtypes[] = {"F32", "BF16", "F16", "I32", "I64", "F64", "U8", "I8", "BOOL", "U64",
                                        "F8_E5M2", "f32", "F31", ""};
  for (size_t k = 1 + pick(r, 3); k > 0; k--) {
    std::vector<std::string> names;
    for (auto it = h.begin(); it != h.end(); ++it)
      if (it.key() != "__metadata__" && it.value().is_object()) names.push_back(it.key());
    if (names.empty()) {
      h["t" + std::to_string(pick(r, 100))] = {{"dtype", "F32"}, {"shape", {pick(r, 4)}},
                                               {"data_offsets", {pick(r, 16), pick(r, 32)}}};
      continue;
    }
    Json& e = h[names[pick(r, names.size())]];
    auto nudge = [&](Json& v) {
      const int64_t base = v.is_number_integer() ? v.get<int64_t>() : 0;
      const int64_t d = static_cast<int64_t>(pick(r, 17)) - 8;
      v = r.uniform() < 0.8f ? Json(base + d) : random_value(r);
    };
    switch (pick(r, 8)) {
      case 0:
      case 1:
        if (e.contains("data_offsets") && e["data_offsets"].is_array() && !e["data_offsets"].empty())
          nudge(e["data_offsets"][pick(r, e["data_offsets"].size())]);
        break;
      case 2:
        if (e.contains("shape") && e["shape"].is_array()) {
          Json& sh = e["shape"];
          const size_t m = pick(r, 3);
          if (m == 0 && !sh.empty()) nudge(sh[pick(r, sh.size())]);
          else if (m == 1) sh.push_back(pick(r, 3) == 0 ? Json(1ull << 47) : Json(pick(r, 4)));
          else if (!sh.empty()) sh.erase(sh.size() - 1);
        }
        break;
      case 3:
        e["dtype"] = kDtypes[pick(r, sizeof(kDtypes) / sizeof(kDtypes[0]))];
        break;
      case 4: {  // a copy of this entry under another name (same bytes: an overlap unless empty)
        Json copy = e;
        h["copy" + std::to_string(pick(r, 1000))] = copy;
        break;
      }
      case 5:
        h.erase(names[pick(r, names.size())]);
        break;
      case 6: {
        static const char* const kFields[] = {"dtype", "shape", "data_offsets", "extra"};
        e[kFields[pick(r, 4)]] = random_value(r);
        break;
      }
      default:
        h["__metadata__"] = r.uniform() < 0.5f ? random_value(r) : Json({{"k", random_value(r)}});
        break;
    }
  }
}

// ---- checks on what parsed ------------------------------------------------------------------------------------------

bool g_verbose = false;
uint64_t g_seed = 0, g_iter = 0;  // the input being run, for the sanitizers' death report

// Called by ASan/UBSan before they abort: says which input to replay.
[[maybe_unused]] void on_sanitizer_death() {
  std::fprintf(stderr, "fuzz_parsers: sanitizer report in iteration %llu; replay it with: fuzz_parsers --seed %llu --only %llu\n",
               static_cast<unsigned long long>(g_iter), static_cast<unsigned long long>(g_seed),
               static_cast<unsigned long long>(g_iter));
}

[[noreturn]] void fail(uint64_t iter, const char* what, const std::string& input, const std::string& why) {
  std::fprintf(stderr, "fuzz_parsers: iteration %llu (%s): %s\n", static_cast<unsigned long long>(iter), what,
               why.c_str());
  std::fprintf(stderr, "input (%zu bytes, first 400 shown escaped):\n", input.size());
  for (size_t i = 0; i < input.size() && i < 400; i++) {
    unsigned char c = static_cast<unsigned char>(input[i]);
    if (c >= 32 && c < 127 && c != '\\') std::fputc(c, stderr);
    else std::fprintf(stderr, "\\x%02x", c);
  }
  std::fputc('\n', stderr);
  std::exit(1);
}

volatile uint64_t g_sink = 0;

// A successfully parsed image must be self-consistent, and every byte of every tensor readable (ASan checks).
void check_image(uint64_t iter, const std::string& img, const liger::SafetensorsFile& f) {
  uint64_t hdr = 0;
  std::memcpy(&hdr, img.data(), 8);
  const size_t data_size = img.size() - 8 - static_cast<size_t>(hdr);
  for (const liger::SafetensorsEntry& e : f.entries()) {
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    if (e.begin > e.end || e.end > data_size) fail(iter, "safetensors", img, "accepted offsets outside the data: " + e.name);
    if (e.supported) {
      liger::Tensor t = f.tensor(e.name);
      if (t.nbytes() != e.end - e.begin || t.numel() != numel)
        fail(iter, "safetensors", img, "tensor size disagrees with its offsets: " + e.name);
      const unsigned char* p = static_cast<const unsigned char*>(t.data());
      uint64_t sum = 0;
      for (size_t i = 0; i < t.nbytes(); i++) sum += p[i];
      g_sink = g_sink + sum;
      // Typed loads too (UBSan flags a misaligned pointer).
      if (t.dtype() == liger::DType::I32 || t.dtype() == liger::DType::I64) g_sink = g_sink + t.to_i64_vector().size();
      else g_sink = g_sink + t.to_f32_vector().size();
    } else {
      try {
        f.tensor(e.name);
        fail(iter, "safetensors", img, "tensor() of an unsupported dtype succeeded: " + e.name);
      } catch (const liger::Error&) {
      }
    }
  }
  for (const auto& [k, v] : f.metadata()) g_sink = g_sink + k.size() + v.size();
}

// Runs fn; liger::Error is an accepted outcome, any other exception ends the run.
template <typename Fn>
bool run_one(uint64_t iter, const char* what, const std::string& input, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const liger::Error& e) {
    if (g_verbose) std::fprintf(stderr, "  %llu %s: %s\n", static_cast<unsigned long long>(iter), what, e.what());
    return false;
  } catch (const std::exception& e) {
    fail(iter, what, input, std::string("threw a non-liger exception: ") + e.what());
  } catch (...) {
    fail(iter, what, input, "threw a non-std exception");
  }
}

struct Counts {
  uint64_t st = 0, st_ok = 0, json = 0, json_ok = 0, cfg = 0, cfg_ok = 0;
};

// ---- one iteration --------------------------------------------------------------------------------------------------

void iteration(uint64_t seed, uint64_t iter, const std::vector<StSeed>& st, const std::vector<std::string>& js,
               const std::string& cfg_path, Counts* n) {
  g_seed = seed, g_iter = iter;
  Rng r(liger::splitmix64(seed ^ liger::splitmix64(iter + 0x51ed2701u)));
  const size_t mode = pick(r, 10);
  if (mode < 5) {
    // safetensors image
    std::string img;
    const float kind = r.uniform();
    if (kind < 0.08f) {
      img = random_bytes(r, pick(r, 300));  // pure random bytes
    } else if (kind < 0.16f) {
      std::string body = random_bytes(r, pick(r, 200));  // random bytes behind a plausible length
      img = le64(pick(r, body.size() + 4)) + body;
    } else {
      StSeed s = st[pick(r, st.size())];
      if (kind < 0.5f) {
        // Structural edit of the parsed header (the JSON stays valid, so the entry checks are exercised).
        Json h = Json::parse(s.header);
        mutate_header_structure(r, h);
        s.header = h.dump(-1, ' ', false, Json::error_handler_t::replace);
        if (r.uniform() < 0.2f) s.data.resize(pick(r, s.data.size() + 64), '\x55');
        img = le64(s.header.size()) + s.header + s.data;
      } else if (kind < 0.8f) {
        // Mutate the header text and/or the data size, then write the true header length so that parsing gets past
        // the length checks and into the JSON.
        for (size_t k = 1 + pick(r, 3); k > 0; k--) mutate_text(r, s.header);
        if (r.uniform() < 0.3f) s.data.resize(pick(r, s.data.size() + 64), '\x55');
        img = le64(s.header.size()) + s.header + s.data;
      } else {
        // Mutate the assembled bytes: flips, truncation, a spliced header length.
        img = le64(s.header.size()) + s.header + s.data;
        for (size_t k = 1 + pick(r, 3); k > 0; k--) {
          const size_t m = pick(r, 3);
          if (m == 0) {
            mutate_text(r, img);
          } else if (m == 1) {
            const uint64_t choices[] = {0, 1, 7, 8, img.size() - 8, img.size() - 7, img.size(), 100ull << 20,
                                        (100ull << 20) + 1, 1ull << 63, ~0ull, ~0ull - 7, r.next_u64(),
                                        s.header.size() + pick(r, 17) - 8};
            img.replace(0, std::min<size_t>(8, img.size()), le64(choices[pick(r, sizeof(choices) / 8)]));
          } else {
            img.resize(pick(r, img.size() + 1));
          }
        }
      }
    }
    n->st++;
    n->st_ok += run_one(iter, "safetensors", img, [&] {
      auto f = liger::SafetensorsFile::from_bytes(img, "fuzz.safetensors");
      check_image(iter, img, *f);
    });
    return;
  }
  // JSON text, and as a config.json
  std::string text;
  const float kind = r.uniform();
  if (kind < 0.08f) {
    text = random_bytes(r, pick(r, 200));
  } else if (kind < 0.45f) {
    // Structural edit of a parsed config (keeps the JSON valid, so the config checks themselves are exercised).
    Json j = Json::parse(js[pick(r, 3)]);
    mutate_structure(r, j);
    text = j.dump(-1, ' ', false, Json::error_handler_t::replace);  // tokens may hold invalid UTF-8
    if (r.uniform() < 0.2f) mutate_text(r, text);
  } else {
    text = js[pick(r, js.size())];
    for (size_t k = 1 + pick(r, 4); k > 0; k--) mutate_text(r, text);
  }
  n->json++;
  n->json_ok += run_one(iter, "parse_json", text, [&] {
    Json j = liger::parse_json(text, "fuzz.json");
    g_sink = g_sink + j.size();
  });
  // Through load_model_config: most inputs; the write to a temp file is the slow part.
  if (kind < 0.45f || r.uniform() < 0.5f) {
    {
      std::ofstream f(cfg_path, std::ios::binary | std::ios::trunc);
      f.write(text.data(), static_cast<std::streamsize>(text.size()));
      if (!f.good()) fail(iter, "config", text, "cannot write " + cfg_path);
    }
    n->cfg++;
    n->cfg_ok += run_one(iter, "load_model_config", text, [&] {
      liger::ModelConfig c = liger::load_model_config(cfg_path);
      // What validation promises to the model code.
      const bool ok = c.n_layers > 0 && c.d_model > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
                      c.n_heads % c.n_kv_heads == 0 && c.head_dim > 0 && c.head_dim % 2 == 0 && c.d_ff > 0 &&
                      c.vocab_size > 0 && c.rms_eps > 0 && c.rope.theta > 0 && c.rope.head_dim == c.head_dim &&
                      c.sliding_window >= 0;
      if (!ok) fail(iter, "load_model_config", text, "accepted a config that breaks its invariants");
    });
  }
}

uint64_t parse_u64(const char* flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  unsigned long long x = std::strtoull(v, &end, 10);
  if (!v[0] || *end || errno) {
    std::fprintf(stderr, "fuzz_parsers: %s needs a non-negative integer, got '%s'\n", flag, v);
    std::exit(2);
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1, iterations = 1000, only = ~0ull;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--verbose") {
      g_verbose = true;
    } else if ((a == "--seed" || a == "--iterations" || a == "--only") && i + 1 < argc) {
      const uint64_t v = parse_u64(argv[i], argv[i + 1]);
      (a == "--seed" ? seed : a == "--iterations" ? iterations : only) = v;
      i++;
    } else {
      std::fprintf(stderr, "usage: fuzz_parsers --seed S --iterations N [--only I] [--verbose]\n");
      return 2;
    }
  }
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_set_death_callback(on_sanitizer_death);
#endif
  const fs::path tmp = fs::temp_directory_path() / ("liger_fuzz_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const std::string cfg_path = (tmp / "config.json").string();
  const auto t0 = std::chrono::steady_clock::now();
  Counts n;
  int rc = 0;
  try {
    const std::vector<StSeed> st = safetensors_seeds(tmp);
    const std::vector<std::string> js = json_seeds(st);
    // The seeds themselves must parse (otherwise the mutations start from nothing useful).
    for (const StSeed& s : st) liger::SafetensorsFile::from_bytes(le64(s.header.size()) + s.header + s.data, "seed");
    for (size_t i = 0; i < 3; i++) liger::parse_json(js[i], "seed");
    if (only != ~0ull) {
      iteration(seed, only, st, js, cfg_path, &n);
    } else {
      for (uint64_t it = 0; it < iterations; it++) iteration(seed, it, st, js, cfg_path, &n);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_parsers: setup failed: %s\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "fuzz_parsers: seed %llu, %llu iterations in %.1f s: safetensors %llu (%llu accepted), json %llu (%llu "
      "accepted), config %llu (%llu accepted)\n",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(only != ~0ull ? 1 : iterations), secs,
      static_cast<unsigned long long>(n.st), static_cast<unsigned long long>(n.st_ok),
      static_cast<unsigned long long>(n.json), static_cast<unsigned long long>(n.json_ok),
      static_cast<unsigned long long>(n.cfg), static_cast<unsigned long long>(n.cfg_ok));
  return rc;
}
