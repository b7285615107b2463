// tests/train/test_checkpoint.cpp — checkpoint directories: write/read round trip, newest-complete selection past
// every kind of torn checkpoint, damaged checkpoints as Errors naming the file, pruning, SHA-256 known answers, and
// an optimizer resume through a checkpoint that continues bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "core/json.h"
#include "core/rng.h"
#include "tests/common/test_util.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;

namespace liger {
namespace {

using test::TempDir;
using test::throws_error;

Tensor random_f32(Shape s, Rng& rng) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = rng.normal();
  return t;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), Device::CPU);
  std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// What a trainer stores: the adapter (PEFT names, fp32), the optimizer state, the adapter config and trainer state.
CheckpointData sample_data(uint64_t seed, int64_t step) {
  Rng rng(seed);
  CheckpointData d;
  TensorFile& adapter = d.tensors["adapter_model"];
  adapter.metadata = {{"format", "pt"}};
  adapter.tensors = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", random_f32(Shape{8, 64}, rng)},
                     {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", random_f32(Shape{64, 8}, rng)}};
  TensorFile& opt = d.tensors["optimizer"];
  opt.tensors = {{"a.exp_avg", random_f32(Shape{8, 64}, rng)}, {"a.exp_avg_sq", random_f32(Shape{8, 64}, rng)}};
  Tensor st = Tensor::empty(Shape{1}, DType::I64, Device::CPU);
  st.ptr<int64_t>()[0] = step;
  opt.tensors.emplace_back("step", st);
  Tensor bf = Tensor::empty(Shape{3}, DType::BF16, Device::CPU);
  for (int i = 0; i < 3; i++) bf.ptr<uint16_t>()[i] = f32_to_bf16(rng.normal());
  opt.tensors.emplace_back("odd_bf16", bf);
  d.json["adapter_config"] = {
      {"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 8}, {"target_modules", {"q_proj", "k_proj", "v_proj"}}};
  d.json["trainer_state"] = {{"step", step},
                             {"samples_consumed", step * 8},
                             {"loss", 2.718281828459045},
                             {"rng", {0xfedcba9876543210ull, 1ull, 2ull, 3ull}},
                             {"config_hash", "abc123"}};
  return d;
}

const Tensor* find_tensor(const NamedTensors& ts, const std::string& name) {
  for (const auto& kv : ts)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

void expect_same(const CheckpointData& a, const CheckpointData& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [group, tf] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(group)) << group;
    const TensorFile& other = b.tensors.at(group);
    EXPECT_EQ(tf.metadata, other.metadata) << group;
    ASSERT_EQ(tf.tensors.size(), other.tensors.size()) << group;
    for (const auto& [name, t] : tf.tensors) {
      const Tensor* u = find_tensor(other.tensors, name);
      ASSERT_NE(u, nullptr) << group << "/" << name;
      EXPECT_TRUE(same_bytes(t, *u)) << group << "/" << name;
    }
  }
  EXPECT_EQ(a.json, b.json);
}

// ---- SHA-256 known answers ------------------------------------------------------------------------------------------

// NIST test vectors for SHA-256: FIPS 180-2 Appendix B.1 ("abc"), B.2 (the 448-bit message) and B.3 (one million
// 'a'), also in NIST CSRC "Cryptographic Standards and Guidelines: Examples with Intermediate Values", SHA256.pdf;
// the empty message from NIST CAVP SHAVS (SHA256ShortMsg.rsp, Len = 0).
TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotAcrossBlockBoundaries) {
  // Message lengths around the padding edge (55/56 bytes fit or do not fit the length field) and the block size.
  Rng rng(9);
  for (size_t len : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000}) {
    std::string msg(len, '\0');
    for (char& c : msg) c = static_cast<char>(rng.next_u64());
    const std::string whole = sha256_hex(msg);
    for (size_t piece : {1, 3, 63, 64, 65}) {
      Sha256 h;
      for (size_t i = 0; i < len; i += piece) h.update(msg.data() + i, std::min(piece, len - i));
      EXPECT_EQ(Sha256::hex(h.finish()), whole) << "len " << len << " piece " << piece;
    }
  }
  TempDir dir("sha");
  write_file(dir.file("a"), std::string(1000000, 'a'));
  uint64_t size = 0;
  EXPECT_EQ(sha256_file(dir.file("a"), &size), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(size, 1000000u);
  EXPECT_TRUE(throws_error([&] { sha256_file(dir.file("nope")); }, {dir.file("nope")}));
}

// ---- round trip -----------------------------------------------------------------------------------------------------

TEST(Checkpoint, WriteReadRoundTrip) {
  TempDir run("ck_rt");
  const CheckpointData d = sample_data(1, 42);
  const std::string dir = write_checkpoint(run.path() + "/run", 42, d);  // creates the run directory
  EXPECT_EQ(dir, run.path() + "/run/step_00000042");
  EXPECT_EQ(dir, checkpoint_dir(run.path() + "/run", 42));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"MANIFEST.json", "adapter_config.json", "adapter_model.safetensors",
                                             "optimizer.safetensors", "trainer_state.json"}));
  EXPECT_FALSE(fs::exists(dir + ".tmp"));

  const Json m = read_json_file(dir + "/MANIFEST.json");
  EXPECT_EQ(m["format"], "liger-checkpoint");
  EXPECT_EQ(m["version"], kCheckpointFormatVersion);
  EXPECT_EQ(m["step"], 42);
  ASSERT_EQ(m["files"].size(), 4u);
  for (const Json& f : m["files"]) {
    const std::string path = dir + "/" + f["name"].get<std::string>();
    EXPECT_EQ(f["bytes"].get<uint64_t>(), fs::file_size(path));
    EXPECT_EQ(f["sha256"], sha256_hex(read_file(path)));
  }

  EXPECT_EQ(verify_checkpoint(dir), "");
  int64_t step = -1;
  const CheckpointData back = read_checkpoint(dir, &step);
  EXPECT_EQ(step, 42);
  expect_same(d, back);
}

TEST(Checkpoint, RngStateRoundTripsThroughTrainerState) {
  Rng a(1234);
  for (int i = 0; i < 17; i++) a.next_u64();
  CheckpointData d;
  const std::array<uint64_t, 4> s = a.state();
  d.json["trainer_state"] = {{"rng", s}};
  TempDir run("ck_rng");
  const std::string dir = write_checkpoint(run.path(), 3, d);
  const CheckpointData back = read_checkpoint(dir);
  Rng b(0);
  b.set_state(back.json.at("trainer_state").at("rng").get<std::array<uint64_t, 4>>());
  for (int i = 0; i < 100; i++) ASSERT_EQ(a.next_u64(), b.next_u64()) << i;
  EXPECT_TRUE(throws_error([&] { b.set_state({0, 0, 0, 0}); }, {"all-zero"}));
}

TEST(Checkpoint, RewritingAStepReplacesIt) {
  TempDir run("ck_rewrite");
  write_checkpoint(run.path(), 5, sample_data(1, 5));
  // A leftover .tmp of the same step (a crash during an earlier write) is replaced too.
  fs::create_directories(checkpoint_dir(run.path(), 5) + ".tmp/junk");
  const CheckpointData second = sample_data(2, 5);
  const std::string dir = write_checkpoint(run.path(), 5, second);
  expect_same(second, read_checkpoint(dir));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run.path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"step_00000005"});
}

TEST(Checkpoint, BadArgumentsAreErrors) {
  TempDir run("ck_bad");
  CheckpointData d = sample_data(1, 1);
  EXPECT_TRUE(throws_error([&] { write_checkpoint(run.path(), -1, d); }, {"negative step"}));
  EXPECT_TRUE(throws_error([&] { write_checkpoint(run.path(), 1, CheckpointData{}); }, {"no files"}));
  for (const char* bad : {"../evil", "a/b", ".hidden", "", "MANIFEST", "sp ace"}) {
    CheckpointData e;
    e.json[bad] = Json::object();
    EXPECT_TRUE(throws_error([&] { write_checkpoint(run.path(), 1, e); }, {"bad checkpoint file name"})) << bad;
    CheckpointData t;
    t.tensors[bad] = TensorFile{};
    EXPECT_TRUE(throws_error([&] { write_checkpoint(run.path(), 1, t); }, {"bad checkpoint file name"})) << bad;
  }
  EXPECT_TRUE(list_checkpoints(run.path()).empty()) << "a failed write leaves nothing behind";
  EXPECT_TRUE(fs::is_empty(run.path()));
  EXPECT_TRUE(throws_error([&] { read_checkpoint(run.file("step_00000001")); }, {"step_00000001", "no such"}));
  EXPECT_TRUE(throws_error([&] { prune_checkpoints(run.path(), 0); }, {"keep_last = 0"}));
}

TEST(Checkpoint, ListTakesOnlyCanonicalStepDirectories) {
  TempDir run("ck_list");
  EXPECT_TRUE(list_checkpoints(run.file("absent")).empty());
  EXPECT_FALSE(find_latest_complete(run.file("absent")).has_value());
  write_checkpoint(run.path(), 100000000, sample_data(1, 100000000));  // 9 digits
  write_checkpoint(run.path(), 7, sample_data(1, 7));
  write_checkpoint(run.path(), 30, sample_data(1, 30));
  fs::create_directories(run.file("step_1"));  // not the canonical spelling
  fs::create_directories(run.file("step_00000009.tmp"));
  fs::create_directories(run.file("step_0000000x"));
  fs::create_directories(run.file("other"));
  write_file(run.file("step_00000050"), "a file, not a directory");
  const std::vector<CheckpointInfo> l = list_checkpoints(run.path());
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].step, 7);
  EXPECT_EQ(l[1].step, 30);
  EXPECT_EQ(l[2].step, 100000000);
  EXPECT_EQ(l[2].dir, run.path() + "/step_100000000");
}

// ---- torn checkpoints -----------------------------------------------------------------------------------------------

struct Torn {
  const char* what;
  std::function<void(const std::string& run, const std::string& dir)> damage;  // dir: the complete step_300
  std::vector<std::string> reason;  // in verify_checkpoint's reason and read_checkpoint's Error
  bool leaves_final_dir;            // false: the damage removes step_300 (only a .tmp remains)
};

std::vector<Torn> torn_cases() {
  return {
      {"no manifest",
       [](const std::string&, const std::string& dir) { fs::remove(dir + "/MANIFEST.json"); },
       {"MANIFEST.json", "missing"},
       true},
      {"truncated manifest",
       [](const std::string&, const std::string& dir) {
         const std::string m = read_file(dir + "/MANIFEST.json");
         write_file(dir + "/MANIFEST.json", m.substr(0, m.size() / 2));
       },
       {"MANIFEST.json", "invalid JSON"},
       true},
      {".tmp left",
       [](const std::string&, const std::string& dir) {
         fs::remove(dir + "/MANIFEST.json");
         fs::rename(dir, dir + ".tmp");
       },
       {},
       false},
      {"file missing",
       [](const std::string&, const std::string& dir) { fs::remove(dir + "/optimizer.safetensors"); },
       {"optimizer.safetensors", "missing"},
       true},
      {"truncated tensor file",
       [](const std::string&, const std::string& dir) {
         const std::string p = dir + "/adapter_model.safetensors";
         fs::resize_file(p, fs::file_size(p) - 100);
       },
       {"adapter_model.safetensors", "truncated"},
       true},
      {"flipped byte",
       [](const std::string&, const std::string& dir) {
         const std::string p = dir + "/optimizer.safetensors";
         std::string b = read_file(p);
         b[b.size() - 10] ^= 0x01;  // inside the tensor data: the file still parses, only the checksum catches it
         write_file(p, b);
       },
       {"optimizer.safetensors", "SHA-256 mismatch"},
       true},
      {"manifest of another step",
       [](const std::string& run, const std::string& dir) {
         fs::remove_all(dir);
         fs::copy(checkpoint_dir(run, 200), dir);
       },
       {"MANIFEST.json", "step 200", "directory name"},
       true},
      {"manifest naming a file outside",
       [](const std::string&, const std::string& dir) {
         Json m = read_json_file(dir + "/MANIFEST.json");
         m["files"][0]["name"] = "../step_00000200/trainer_state.json";
         write_file(dir + "/MANIFEST.json", m.dump());
       },
       {"MANIFEST.json", "bad or duplicate file name"},
       true},
  };
}

TEST(Checkpoint, LatestCompleteSkipsEveryKindOfTornCheckpoint) {
  for (const Torn& tc : torn_cases()) {
    SCOPED_TRACE(tc.what);
    TempDir run("ck_torn");
    write_checkpoint(run.path(), 100, sample_data(1, 100));
    write_checkpoint(run.path(), 200, sample_data(2, 200));
    const std::string dir = write_checkpoint(run.path(), 300, sample_data(3, 300));
    ASSERT_EQ(find_latest_complete(run.path())->step, 300);
    tc.damage(run.path(), dir);

    testing::internal::CaptureStderr();
    const std::optional<CheckpointInfo> latest = find_latest_complete(run.path());
    const std::string log = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(latest.has_value());
    EXPECT_EQ(latest->step, 200);
    EXPECT_EQ(latest->dir, checkpoint_dir(run.path(), 200));
    // The warning names the skipped directory and the reason.
    EXPECT_NE(log.find("warning"), std::string::npos) << log;
    EXPECT_NE(log.find(tc.leaves_final_dir ? dir : dir + ".tmp"), std::string::npos) << log;
    for (const std::string& p : tc.reason) EXPECT_NE(log.find(p), std::string::npos) << p << " in " << log;

    if (tc.leaves_final_dir) {
      const std::string reason = verify_checkpoint(dir);
      for (const std::string& p : tc.reason) EXPECT_NE(reason.find(p), std::string::npos) << reason;
      // --resume DIR on the damaged one: an Error naming the directory and the file.
      std::vector<std::string> parts = tc.reason;
      parts.push_back(dir + "/");
      EXPECT_TRUE(throws_error([&] { read_checkpoint(dir); }, parts));
    } else {
      EXPECT_EQ(list_checkpoints(run.path()).size(), 2u);
    }
    expect_same(sample_data(2, 200), read_checkpoint(latest->dir));
  }
}

TEST(Checkpoint, NoCompleteCheckpointGivesNothing) {
  TempDir run("ck_none");
  EXPECT_FALSE(find_latest_complete(run.path()).has_value());
  const std::string dir = write_checkpoint(run.path(), 1, sample_data(1, 1));
  fs::remove(dir + "/trainer_state.json");
  testing::internal::CaptureStderr();
  EXPECT_FALSE(find_latest_complete(run.path()).has_value());
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("trainer_state.json: missing"), std::string::npos) << log;
}

TEST(Checkpoint, NewerFormatVersionIsRefused) {
  TempDir run("ck_version");
  const std::string dir = write_checkpoint(run.path(), 1, sample_data(1, 1));
  Json m = read_json_file(dir + "/MANIFEST.json");
  m["version"] = kCheckpointFormatVersion + 1;
  write_file(dir + "/MANIFEST.json", m.dump());
  EXPECT_TRUE(throws_error([&] { read_checkpoint(dir); }, {dir + "/MANIFEST.json", "newer liger"}));
}

// ---- pruning --------------------------------------------------------------------------------------------------------

std::vector<int64_t> steps_of(const std::string& run) {
  std::vector<int64_t> s;
  for (const CheckpointInfo& c : list_checkpoints(run)) s.push_back(c.step);
  return s;
}

TEST(Checkpoint, PruneKeepsTheLastK) {
  TempDir run("ck_prune");
  for (int64_t s = 1; s <= 5; s++) write_checkpoint(run.path(), s * 10, sample_data(1, s * 10));
  fs::create_directories(run.file("step_00000060.tmp/x"));  // an unfinished write
  const std::string torn = write_checkpoint(run.path(), 70, sample_data(1, 70));
  fs::remove(torn + "/MANIFEST.json");  // a torn newest one: left for inspection

  std::vector<std::string> removed = prune_checkpoints(run.path(), 2);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{checkpoint_dir(run.path(), 10), checkpoint_dir(run.path(), 20),
                                               checkpoint_dir(run.path(), 30), run.file("step_00000060.tmp")}));
  EXPECT_EQ(steps_of(run.path()), (std::vector<int64_t>{40, 50, 70}));
  testing::internal::CaptureStderr();  // the warning about the torn step 70
  EXPECT_EQ(find_latest_complete(run.path())->step, 50);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("step_00000070"), std::string::npos);

  // Nothing more to do; pruning is idempotent.
  EXPECT_TRUE(prune_checkpoints(run.path(), 2).empty());
  // A torn checkpoint does not count among the K: keep 40 and 50 complete ones... then 1 keeps only 50.
  EXPECT_EQ(prune_checkpoints(run.path(), 1), std::vector<std::string>{checkpoint_dir(run.path(), 40)});
  EXPECT_EQ(steps_of(run.path()), (std::vector<int64_t>{50, 70}));
}

TEST(Checkpoint, PruneSkipsATornCheckpointWhenCounting) {
  TempDir run("ck_prune_torn");
  for (int64_t s = 1; s <= 4; s++) write_checkpoint(run.path(), s, sample_data(1, s));
  fs::remove(checkpoint_dir(run.path(), 4) + "/optimizer.safetensors");  // step 4 torn
  // Keep 2 complete: 3 and 2; 4 is newer than the cut and stays; 1 goes.
  EXPECT_EQ(prune_checkpoints(run.path(), 2), std::vector<std::string>{checkpoint_dir(run.path(), 1)});
  EXPECT_EQ(steps_of(run.path()), (std::vector<int64_t>{2, 3, 4}));
  // Fewer complete checkpoints than asked for: nothing is removed.
  EXPECT_TRUE(prune_checkpoints(run.path(), 5).empty());
  EXPECT_EQ(steps_of(run.path()), (std::vector<int64_t>{2, 3, 4}));
}

// ---- resume through a checkpoint ------------------------------------------------------------------------------------

TEST(Checkpoint, OptimizerResumeIsBitwise) {
  OptimConfig cfg;
  cfg.clip_norm = 1.0;
  Rng rng(11);
  const std::string A = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight";
  const std::string B = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight";
  NamedTensors params = {{A, random_f32(Shape{8, 32}, rng)}, {B, random_f32(Shape{32, 8}, rng)}};
  std::vector<std::vector<Tensor>> grads;
  for (int s = 0; s < 6; s++) grads.push_back({random_f32(Shape{8, 32}, rng), random_f32(Shape{32, 8}, rng)});

  NamedTensors pa = {{A, clone(params[0].second)}, {B, clone(params[1].second)}};
  AdamW a(cfg, pa);
  for (int s = 0; s < 3; s++) a.step(grads[static_cast<size_t>(s)]);

  TempDir run("ck_resume");
  CheckpointData d;
  d.tensors["adapter_model"].tensors = a.params();
  d.tensors["optimizer"].tensors = a.export_state();
  d.json["trainer_state"] = {{"step", a.steps_done()}};
  write_checkpoint(run.path(), a.steps_done(), d);

  const std::optional<CheckpointInfo> latest = find_latest_complete(run.path());
  ASSERT_TRUE(latest.has_value());
  const CheckpointData back = read_checkpoint(latest->dir);
  // The parameters in the model's order (not the file's): the order fixes the gradient-norm summation.
  NamedTensors pb;
  for (const auto& kv : params) {
    const Tensor* t = find_tensor(back.tensors.at("adapter_model").tensors, kv.first);
    ASSERT_NE(t, nullptr) << kv.first;
    pb.emplace_back(kv.first, clone(*t));
  }
  AdamW b(cfg, pb);
  b.import_state(back.tensors.at("optimizer").tensors, latest->dir + "/optimizer.safetensors");
  EXPECT_EQ(b.steps_done(), back.json.at("trainer_state").at("step").get<int64_t>());

  for (int s = 3; s < 6; s++) {
    a.step(grads[static_cast<size_t>(s)]);
    b.step(grads[static_cast<size_t>(s)]);
  }
  for (size_t i = 0; i < 2; i++) {
    EXPECT_EQ(a.params()[i].first, b.params()[i].first);
    EXPECT_TRUE(same_bytes(a.params()[i].second, b.params()[i].second)) << a.params()[i].first;
  }
}

}  // namespace
}  // namespace liger
