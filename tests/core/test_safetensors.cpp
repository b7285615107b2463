// tests/core/test_safetensors.cpp — safetensors write/read round trips, sharded checkpoints, and every kind of bad
// input, each of which must be a liger::Error naming the file (and the tensor, where there is one).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "core/json.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "tests/common/test_util.h"

namespace fs = std::filesystem;

namespace liger {
namespace {

using test::round_to_format;
using test::throws_error;

using test::TempDir;  // a fresh directory under the system temp dir, removed at the end of the test

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// u64 little-endian header length, the header, the data.
std::string image(const std::string& header, const std::string& data, uint64_t declared_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[static_cast<size_t>(i)] = static_cast<char>((declared_len >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string image(const std::string& header, const std::string& data) { return image(header, data, header.size()); }


Tensor random_f32(Shape s, Rng& rng) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = rng.normal();
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// ---- round trips --------------------------------------------------------------------------------------------------

TEST(Safetensors, RoundTripAllDtypesScalarEmptyMetadata) {
  TempDir dir("st");
  Rng rng(11);
  Tensor f32 = random_f32({2, 3}, rng);
  Tensor bf16 = random_f32({4}, rng).to(Device::CPU, DType::BF16);
  Tensor f16 = random_f32({3, 1}, rng).to(Device::CPU, DType::F16);
  Tensor i32 = Tensor::from_i32({3}, {-1, 0, 2147483647});
  Tensor i64 = Tensor::from_i32({2}, {7, -8}).to(Device::CPU, DType::I64);
  i64.ptr<int64_t>()[1] = -(1ll << 40);
  Tensor scalar = Tensor::from_f32(Shape(), {3.25f});  // 0-dim: shape [], one element
  Tensor empty = Tensor::empty({0, 5}, DType::F32, Device::CPU);
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"model.w", f32}, {"b.bf16", bf16}, {"h", f16}, {"ids", i32}, {"big", i64}, {"scale", scalar}, {"nothing", empty}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "12"}};
  const std::string path = dir.file("x.safetensors");
  write_safetensors(path, tensors, meta);

  // Atomic write: the temporary is gone, only the file is left.
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(dir.path())), fs::directory_iterator()), 1);

  // The data section starts 8-byte aligned and is exactly the concatenated tensor bytes.
  std::string raw = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  size_t data_bytes = 0;
  for (const auto& kv : tensors) data_bytes += kv.second.nbytes();
  EXPECT_EQ(raw.size(), 8 + n + data_bytes);

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->entries().size(), tensors.size());
  EXPECT_EQ(f->metadata(), meta);
  for (const auto& [name, t] : tensors) {
    const SafetensorsEntry* e = f->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_TRUE(e->supported);
    EXPECT_EQ(e->dtype, t.dtype()) << name;
    EXPECT_EQ(e->end - e->begin, t.nbytes()) << name;
    // Data is ordered by decreasing element size, so every tensor is aligned to its element size in the file and
    // the zero-copy view is an aligned pointer.
    EXPECT_EQ(e->begin % dtype_size(e->dtype), 0u) << name;
    Tensor r = f->tensor(name);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data()) % dtype_size(r.dtype()), 0u) << name;
    EXPECT_TRUE(same_bytes(r, t)) << name << ": " << r.str() << " vs " << t.str();
    EXPECT_EQ(r.device(), Device::CPU);
  }
  EXPECT_EQ(f->find("scale")->dtype_str, "F32");
  EXPECT_TRUE(f->find("scale")->shape.empty());
  EXPECT_EQ(f->tensor("scale").ndim(), 0);
  EXPECT_EQ(f->tensor("scale").ptr<float>()[0], 3.25f);
  EXPECT_EQ(f->find("b.bf16")->dtype_str, "BF16");
  EXPECT_EQ(f->find("big")->dtype_str, "I64");
  EXPECT_EQ(f->tensor("big").to_i64_vector()[1], -(1ll << 40));
  EXPECT_EQ(f->tensor("nothing").numel(), 0);
  EXPECT_EQ(f->find("absent"), nullptr);
  EXPECT_TRUE(throws_error([&] { f->tensor("absent"); }, {path, "absent"}));

  // A tensor keeps its file mapped after the SafetensorsFile handle is dropped.
  Tensor kept = SafetensorsFile::open(path)->tensor("model.w");
  EXPECT_TRUE(same_bytes(kept, f32));

  // Rewriting the same path replaces the file (rename over it), again leaving no temporary.
  write_safetensors(path, {{"only", scalar}});
  auto g = SafetensorsFile::open(path);
  EXPECT_EQ(g->entries().size(), 1u);
  EXPECT_TRUE(g->metadata().empty());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_TRUE(same_bytes(kept, f32));  // the old mapping is still intact

  // from_bytes on the same image parses the same way.
  auto m = SafetensorsFile::from_bytes(read_file(path), "in-memory");
  EXPECT_EQ(m->path(), "in-memory");
  EXPECT_EQ(m->tensor("only").ptr<float>()[0], 3.25f);
}

TEST(Safetensors, WriteRejectsReservedAndDuplicateNames) {
  TempDir dir("st");
  Tensor t = Tensor::from_f32({1}, {1});
  const std::string path = dir.file("bad.safetensors");
  EXPECT_TRUE(throws_error([&] { write_safetensors(path, {{"__metadata__", t}}); }, {path, "__metadata__"}));
  EXPECT_TRUE(throws_error([&] { write_safetensors(path, {{"a", t}, {"a", t}}); }, {path, "'a'"}));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_TRUE(throws_error([&] { write_safetensors(dir.file("no/such/dir/x.safetensors"), {{"a", t}}); },
                           {"no/such/dir/x.safetensors"}));
}

TEST(Safetensors, UnsupportedDtypeOpensButTensorIsError) {
  // BOOL and U8 are valid safetensors dtypes that liger does not load: the file opens, tensor() names the tensor.
  // (F64 is loaded, for fp64 references.)
  std::string hdr =
      R"({"dbl": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},)"
      R"( "flag": {"dtype": "BOOL", "shape": [2], "data_offsets": [16, 18]},)"
      R"( "u8": {"dtype": "U8", "shape": [3], "data_offsets": [18, 21]}})";
  auto f = SafetensorsFile::from_bytes(image(hdr, std::string(21, '\x01')), "weights-mixed.safetensors");
  ASSERT_NE(f->find("dbl"), nullptr);
  EXPECT_TRUE(f->find("dbl")->supported);
  EXPECT_EQ(f->tensor("dbl").dtype(), DType::F64);
  EXPECT_FALSE(f->find("flag")->supported);
  EXPECT_EQ(f->find("flag")->dtype_str, "BOOL");
  EXPECT_TRUE(throws_error([&] { f->tensor("flag"); }, {"weights-mixed.safetensors", "'flag'", "BOOL"}));
  EXPECT_TRUE(throws_error([&] { f->tensor("u8"); }, {"weights-mixed.safetensors", "'u8'", "U8"}));
}

TEST(Safetensors, MisalignedOffsetsAreReadThroughACopy) {
  // Another writer may pack an f16 scalar before an f32 pair: "f" starts at data offset 2, which is not a multiple of
  // 4. tensor() must still hand out an aligned f32 tensor with the right values (typed loads from a misaligned
  // pointer are undefined behaviour), while the aligned "h" stays a zero-copy view.
  std::string hdr = R"({"h": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},)"
                    R"( "f": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}})";
  while ((8 + hdr.size()) % 8 != 0) hdr += ' ';
  std::string data(10, '\0');
  const uint16_t one = 0x3C00;  // f16 1.0
  const float vals[2] = {1.5f, -2.25f};
  std::memcpy(&data[0], &one, 2);
  std::memcpy(&data[2], vals, 8);
  TempDir dir("st");
  const std::string path = dir.file("packed.safetensors");
  write_file(path, image(hdr, data));
  for (int from_file = 0; from_file < 2; from_file++) {
    SCOPED_TRACE(from_file ? "open" : "from_bytes");
    auto f = from_file ? SafetensorsFile::open(path) : SafetensorsFile::from_bytes(image(hdr, data), "packed");
    Tensor t = f->tensor("f");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 4, 0u);
    EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{1.5f, -2.25f}));
    Tensor h = f->tensor("h");
    EXPECT_EQ(h.data(), f->bytes(*f->find("h")));  // aligned: a view into the file
    EXPECT_EQ(h.to_f32_vector(), (std::vector<float>{1.0f}));
  }
}

// ---- bad input: each case is checked in memory (from_bytes) and as a real file (open) -------------------------------

struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> parts;  // besides the file name
};

std::vector<BadCase> bad_cases() {
  const std::string d16(16, '\0');
  auto entry = [](const std::string& name, const std::string& body) { return "{\"" + name + "\": " + body + "}"; };
  std::vector<BadCase> c;
  c.push_back({"shorter than 8 bytes", std::string("\x05\x00\x00", 3), {"truncated", "3 bytes"}});
  c.push_back({"empty file", std::string(), {"truncated", "0 bytes"}});
  c.push_back({"header length beyond the file", image("{}", "", 100), {"truncated", "108"}});
  c.push_back({"header length above 100 MB", image("{}", "", 200ull << 20), {"100 MB"}});
  c.push_back({"header length 2^64-1", image("{}", "", ~0ull), {"100 MB"}});
  c.push_back({"header not JSON", image("{\"a\": {\"dtype\": ", ""), {"invalid JSON"}});
  c.push_back({"header not UTF-8 JSON", image("\xff\xfe", ""), {"invalid JSON"}});
  c.push_back({"header is an array", image("[1, 2]", ""), {"not a JSON object"}});
  c.push_back({"header is a number", image("7", ""), {"not a JSON object"}});
  c.push_back({"entry is not an object", image(entry("w", "[1]"), d16), {"'w'", "not an object"}});
  c.push_back({"no dtype", image(entry("w.q", R"({"shape": [4], "data_offsets": [0, 16]})"), d16),
               {"'w.q'", "dtype"}});
  c.push_back({"dtype not a string", image(entry("w.q", R"({"dtype": 4, "shape": [4], "data_offsets": [0, 16]})"), d16),
               {"'w.q'", "dtype"}});
  c.push_back({"no shape", image(entry("w.k", R"({"dtype": "F32", "data_offsets": [0, 16]})"), d16), {"'w.k'", "shape"}});
  c.push_back({"no data_offsets", image(entry("w.v", R"({"dtype": "F32", "shape": [4]})"), d16),
               {"'w.v'", "data_offsets"}});
  c.push_back({"three data_offsets", image(entry("w.v", R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]})"), d16),
               {"'w.v'", "data_offsets"}});
  c.push_back({"unknown dtype", image(entry("emb", R"({"dtype": "F17", "shape": [4], "data_offsets": [0, 16]})"), d16),
               {"'emb'", "unknown dtype", "F17"}});
  c.push_back({"negative shape", image(entry("emb", R"({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]})"), d16),
               {"'emb'", "shape"}});
  c.push_back({"fractional shape", image(entry("emb", R"({"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]})"), d16),
               {"'emb'", "shape"}});
  c.push_back({"string shape", image(entry("emb", R"({"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]})"), d16),
               {"'emb'", "shape"}});
  c.push_back({"huge shape", image(entry("emb", R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]})"), d16),
               {"'emb'"}});
  c.push_back({"rank 7", image(entry("emb", R"({"dtype": "F32", "shape": [1,1,1,1,1,1,4], "data_offsets": [0, 16]})"), d16),
               {"'emb'", "rank 7"}});
  c.push_back({"reversed offsets", image(entry("lm_head", R"({"dtype": "F32", "shape": [1], "data_offsets": [8, 4]})"), d16),
               {"'lm_head'", "reversed"}});
  c.push_back({"negative offset", image(entry("lm_head", R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})"), d16),
               {"'lm_head'", "data_offsets"}});
  c.push_back({"offsets past the data", image(entry("lm_head", R"({"dtype": "F32", "shape": [4], "data_offsets": [4, 20]})"), d16),
               {"'lm_head'", "past the end", "16 bytes"}});
  c.push_back({"size != span", image(entry("norm", R"({"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]})"), d16),
               {"'norm'", "need 6 bytes", "span 8"}});
  c.push_back({"overlap", image(R"({"first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                R"( "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", d16),
               {"'first'", "'second'", "overlap"}});
  c.push_back({"same range twice", image(R"({"p": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]},)"
                                         R"( "q": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", d16),
               {"'p'", "'q'", "overlap"}});
  c.push_back({"metadata not strings", image(R"({"__metadata__": {"step": 12}})", ""), {"__metadata__", "step"}});
  return c;
}

TEST(Safetensors, BadImagesInMemory) {
  for (const BadCase& c : bad_cases()) {
    std::vector<std::string> parts = c.parts;
    parts.push_back("mem/model.safetensors");
    EXPECT_TRUE(throws_error([&] { SafetensorsFile::from_bytes(c.bytes, "mem/model.safetensors"); }, parts)) << c.what;
  }
}

TEST(Safetensors, BadImagesAsFiles) {
  TempDir dir("st");
  int i = 0;
  for (const BadCase& c : bad_cases()) {
    const std::string path = dir.file(strfmt("bad_%02d.safetensors", i++));
    write_file(path, c.bytes);
    std::vector<std::string> parts = c.parts;
    parts.push_back(path);
    EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(path); }, parts)) << c.what;
  }
  EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(dir.file("missing.safetensors")); },
                           {dir.file("missing.safetensors"), "cannot open"}));
  EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(dir.path()); }, {dir.path(), "not a regular file"}));
}

TEST(Safetensors, EdgeImagesThatAreValid) {
  // No tensors at all; a zero-size tensor anywhere (even sharing an offset with another); data after the last tensor.
  EXPECT_EQ(SafetensorsFile::from_bytes(image("{}", ""), "e")->entries().size(), 0u);
  auto f = SafetensorsFile::from_bytes(
      image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
            R"( "z": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]}})",
            std::string(12, '\0')),
      "e");
  EXPECT_EQ(f->tensor("z").numel(), 0);
  EXPECT_EQ(f->tensor("a").numel(), 2);
}

// ---- Checkpoint directories -------------------------------------------------------------------------------------------

// Writes model.safetensors.index.json with the given weight map.
void write_index(const TempDir& dir, const std::map<std::string, std::string>& weight_map) {
  Json j = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_file(dir.file("model.safetensors.index.json"), j.dump(2));
}

const char* kShard1 = "model-00001-of-00002.safetensors";
const char* kShard2 = "model-00002-of-00002.safetensors";

TEST(Checkpoint, SingleFile) {
  TempDir dir("st");
  Rng rng(12);
  Tensor a = random_f32({3, 4}, rng), b = random_f32({5}, rng);
  write_safetensors(dir.file("model.safetensors"), {{"model.embed_tokens.weight", a}, {"model.norm.weight", b}});
  Checkpoint c = Checkpoint::open_dir(dir.path());
  EXPECT_EQ(c.dir(), dir.path());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"model.embed_tokens.weight", "model.norm.weight"}));
  EXPECT_TRUE(c.has("model.norm.weight"));
  EXPECT_FALSE(c.has("lm_head.weight"));
  EXPECT_TRUE(same_bytes(c.tensor("model.embed_tokens.weight"), a));
  EXPECT_TRUE(same_bytes(c.tensor("model.norm.weight"), b));
  EXPECT_EQ(c.find("model.norm.weight").first->path(), dir.file("model.safetensors"));
  EXPECT_TRUE(throws_error([&] { c.find("lm_head.weight"); }, {dir.path(), "'lm_head.weight'"}));
  EXPECT_TRUE(throws_error([&] { c.tensor("lm_head.weight"); }, {dir.path(), "'lm_head.weight'"}));
}

TEST(Checkpoint, ShardedWithIndex) {
  TempDir dir("st");
  Rng rng(13);
  Tensor a = random_f32({2, 2}, rng), b = random_f32({3}, rng), c3 = random_f32({4, 1}, rng);
  Tensor extra = random_f32({1}, rng);
  write_safetensors(dir.file(kShard1), {{"a", a}, {"b", b}});
  write_safetensors(dir.file(kShard2), {{"c", c3}, {"unlisted", extra}});
  write_index(dir, {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}});
  Checkpoint ck = Checkpoint::open_dir(dir.path());
  // Only the tensors the index lists are part of the checkpoint.
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(same_bytes(ck.tensor("a"), a));
  EXPECT_TRUE(same_bytes(ck.tensor("b"), b));
  EXPECT_TRUE(same_bytes(ck.tensor("c"), c3));
  EXPECT_EQ(ck.find("a").first->path(), dir.file(kShard1));
  EXPECT_EQ(ck.find("c").first->path(), dir.file(kShard2));
  EXPECT_EQ(ck.find("c").second->name, "c");
  EXPECT_FALSE(ck.has("unlisted"));
  // The index wins over a model.safetensors beside it.
  write_safetensors(dir.file("model.safetensors"), {{"other", extra}});
  EXPECT_EQ(Checkpoint::open_dir(dir.path()).names(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Checkpoint, IndexNamesMissingShard) {
  TempDir dir("st");
  write_safetensors(dir.file(kShard1), {{"a", Tensor::from_f32({1}, {1})}});
  write_index(dir, {{"a", kShard1}, {"b", kShard2}});
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {dir.file(kShard2), "does not exist"}));
}

TEST(Checkpoint, IndexNamesTensorAbsentFromShard) {
  TempDir dir("st");
  write_safetensors(dir.file(kShard1), {{"a", Tensor::from_f32({1}, {1})}});
  write_safetensors(dir.file(kShard2), {{"c", Tensor::from_f32({1}, {2})}});
  write_index(dir, {{"a", kShard1}, {"b.missing", kShard1}, {"c", kShard2}});
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {dir.path(), "'b.missing'", kShard1}));
}

TEST(Checkpoint, TensorInTwoShards) {
  // "dup" is stored in both shards. Whichever shard the index assigns it to, and whichever shard is opened first,
  // the checkpoint is ambiguous and must be rejected, naming the tensor and both files.
  for (const char* owner : {kShard1, kShard2}) {
    TempDir dir("st");
    write_safetensors(dir.file(kShard1), {{"a", Tensor::from_f32({1}, {1})}, {"dup", Tensor::from_f32({1}, {2})}});
    write_safetensors(dir.file(kShard2), {{"c", Tensor::from_f32({1}, {3})}, {"dup", Tensor::from_f32({1}, {4})}});
    write_index(dir, {{"a", kShard1}, {"c", kShard2}, {"dup", owner}});
    EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {"'dup'", kShard1, kShard2}))
        << "index assigns dup to " << owner;
  }
}

TEST(Checkpoint, BadIndexFiles) {
  TempDir dir("st");
  write_safetensors(dir.file(kShard1), {{"a", Tensor::from_f32({1}, {1})}});
  const std::string index = dir.file("model.safetensors.index.json");
  write_file(index, "{\"weight_map\": {\"a\": ");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {index, "invalid JSON"}));
  write_file(index, R"({"metadata": {}})");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {index, "weight_map"}));
  write_file(index, R"({"weight_map": ["a"]})");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {index, "weight_map"}));
  write_file(index, R"({"weight_map": {"a": 3}})");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {index, "'a'"}));
  write_file(index, R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {index, "'a'", "../model"}));
  // A broken shard is reported with the shard's own path.
  write_file(dir.file(kShard2), "garbage");
  write_index(dir, {{"a", kShard1}, {"b", kShard2}});
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {dir.file(kShard2), "truncated"}));
}

TEST(Checkpoint, MissingOrEmptyDirectory) {
  TempDir dir("st");
  const std::string missing = dir.file("no_such_model");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(missing); }, {missing, "does not exist"}));
  // A directory with other files but no safetensors.
  write_file(dir.file("config.json"), "{}");
  write_file(dir.file("pytorch_model.bin"), "xx");
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.path()); }, {dir.path(), "model.safetensors"}));
  // A file given where a directory is expected.
  EXPECT_TRUE(throws_error([&] { Checkpoint::open_dir(dir.file("config.json")); }, {dir.file("config.json")}));
}

}  // namespace
}  // namespace liger
