#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/check.h"
#include "core/log.h"
#include "core/safetensors.h"

namespace liger {

namespace fs = std::filesystem;

// ---- SHA-256 (FIPS 180-4 §4.2.2 constants, §5.3.3 initial value, §6.2.2 computation) --------------------------------

namespace {

constexpr uint32_t kSha256K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

}  // namespace

Sha256::Sha256() {
  const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(h_, h0, sizeof(h_));
}

void Sha256::block(const uint8_t* p) {
  uint32_t w[64];
  for (int t = 0; t < 16; t++) {
    w[t] = (static_cast<uint32_t>(p[4 * t]) << 24) | (static_cast<uint32_t>(p[4 * t + 1]) << 16) |
           (static_cast<uint32_t>(p[4 * t + 2]) << 8) | static_cast<uint32_t>(p[4 * t + 3]);
  }
  for (int t = 16; t < 64; t++) {
    const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int t = 0; t < 64; t++) {
    const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const uint32_t ch = (e & f) ^ (~e & g);
    const uint32_t t1 = h + S1 + ch + kSha256K[t] + w[t];
    const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const uint32_t t2 = S0 + maj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a;
  h_[1] += b;
  h_[2] += c;
  h_[3] += d;
  h_[4] += e;
  h_[5] += f;
  h_[6] += g;
  h_[7] += h;
}

void Sha256::update(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_ += n;
  if (buf_len_ > 0) {
    const size_t k = std::min(n, sizeof(buf_) - buf_len_);
    std::memcpy(buf_ + buf_len_, p, k);
    buf_len_ += k;
    p += k;
    n -= k;
    if (buf_len_ < sizeof(buf_)) return;
    block(buf_);
    buf_len_ = 0;
  }
  for (; n >= 64; p += 64, n -= 64) block(p);
  std::memcpy(buf_, p, n);
  buf_len_ = n;
}

std::array<uint8_t, 32> Sha256::finish() {
  // Padding (§5.1.1): a 1 bit, zeros up to 56 mod 64 bytes, the message length in bits as a big-endian u64.
  const uint64_t bits = total_ * 8;
  const uint8_t one = 0x80, zero = 0x00;
  update(&one, 1);
  while (buf_len_ != 56) update(&zero, 1);
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  update(len, 8);
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 8; i++) {
    for (int j = 0; j < 4; j++) out[static_cast<size_t>(4 * i + j)] = static_cast<uint8_t>(h_[i] >> (24 - 8 * j));
  }
  return out;
}

std::string Sha256::hex(const std::array<uint8_t, 32>& digest) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : digest) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return Sha256::hex(h.finish());
}

std::string sha256_file(const std::string& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LIGER_CHECK(fd >= 0, "%s: cannot open (%s)", path.c_str(), std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t k = ::read(fd, buf.data(), buf.size());
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      const int err = errno;
      ::close(fd);
      LIGER_FAIL("%s: read failed (%s)", path.c_str(), std::strerror(err));
    }
    if (k == 0) break;
    h.update(buf.data(), static_cast<size_t>(k));
    total += static_cast<uint64_t>(k);
  }
  ::close(fd);
  if (size) *size = total;
  return Sha256::hex(h.finish());
}

// ---- helpers --------------------------------------------------------------------------------------------------------

namespace {

constexpr const char* kManifest = "MANIFEST.json";
constexpr const char* kFormat = "liger-checkpoint";

// A file stem a checkpoint may hold: [A-Za-z0-9_.-]+, not starting with '.', at most 128 characters.
bool valid_stem(const std::string& s) {
  if (s.empty() || s.size() > 128 || s[0] == '.') return false;
  for (char c : s) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string step_name(int64_t step) {
  return strfmt("step_%08lld", static_cast<long long>(step));
}

// "step_<N>" in its canonical spelling -> N; else -1.
int64_t parse_step_name(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step_") != 0 || name.size() > 5 + 18) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); i++) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step_name(step) == name ? step : -1;
}

// A leftover of an unfinished write: a directory step_*.tmp.
bool is_stale_tmp(const fs::directory_entry& e) {
  const std::string name = e.path().filename().string();
  std::error_code ec;
  return name.compare(0, 5, "step_") == 0 && ends_with(name, ".tmp") && e.is_directory(ec);
}

void write_file_synced(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LIGER_CHECK(fd >= 0, "%s: cannot create (%s)", path.c_str(), std::strerror(errno));
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    ssize_t k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      const int err = errno;
      ::close(fd);
      LIGER_FAIL("%s: write failed (%s)", path.c_str(), std::strerror(err));
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    LIGER_FAIL("%s: fsync failed (%s)", path.c_str(), std::strerror(err));
  }
  LIGER_CHECK(::close(fd) == 0, "%s: close failed (%s)", path.c_str(), std::strerror(errno));
}

// Makes the entries of a directory (creations, renames) durable.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  LIGER_CHECK(fd >= 0, "%s: cannot open directory (%s)", dir.c_str(), std::strerror(errno));
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    LIGER_FAIL("%s: fsync of the directory failed (%s)", dir.c_str(), std::strerror(err));
  }
  ::close(fd);
}

struct ManifestEntry {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;
};

// Parses and checks dir/MANIFEST.json and every file it lists. Returns "" when complete (filling *entries and
// *step), else the reason starting with the file at fault.
std::string check_dir(const std::string& dir, std::vector<ManifestEntry>* entries, int64_t* step) {
  const std::string mpath = dir + "/" + kManifest;
  std::error_code ec;
  if (!fs::exists(mpath, ec)) return strfmt("%s: missing (the write did not finish)", kManifest);
  std::vector<ManifestEntry> out;
  int64_t mstep = -1;
  try {
    Json m;
    {
      std::FILE* f = std::fopen(mpath.c_str(), "rb");
      LIGER_CHECK(f != nullptr, "%s: cannot open (%s)", kManifest, std::strerror(errno));
      std::string text;
      char buf[4096];
      size_t k;
      while ((k = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, k);
      std::fclose(f);
      m = parse_json(text, kManifest);
    }
    LIGER_CHECK(m.is_object(), "%s: expected a JSON object", kManifest);
    const std::string format = json_string(m, "format", kManifest);
    LIGER_CHECK(format == kFormat, "%s: format is '%s', expected '%s'", kManifest, format.c_str(), kFormat);
    const int64_t version = json_int(m, "version", kManifest);
    LIGER_CHECK(version >= 1 && version <= kCheckpointFormatVersion,
                "%s: format version %lld, this liger reads version %d (written by a newer liger?)", kManifest,
                static_cast<long long>(version), kCheckpointFormatVersion);
    mstep = json_int(m, "step", kManifest);
    const int64_t dir_step = parse_step_name(fs::path(dir).filename().string());
    LIGER_CHECK(dir_step < 0 || dir_step == mstep, "%s: step %lld does not match the directory name", kManifest,
                static_cast<long long>(mstep));
    const Json& files = json_field(m, "files", kManifest);
    LIGER_CHECK(files.is_array(), "%s: key 'files' must be an array", kManifest);
    std::set<std::string> seen;
    for (const Json& f : files) {
      ManifestEntry e;
      e.name = json_string(f, "name", kManifest);
      const bool known_kind = ends_with(e.name, ".safetensors") || ends_with(e.name, ".json");
      LIGER_CHECK(valid_stem(e.name) && known_kind && e.name != kManifest && seen.insert(e.name).second,
                  "%s: bad or duplicate file name '%s'", kManifest, e.name.c_str());
      const Json& b = json_field(f, "bytes", kManifest);
      LIGER_CHECK(b.is_number_unsigned() || (b.is_number_integer() && b.get<int64_t>() >= 0),
                  "%s: 'bytes' of '%s' must be a non-negative integer", kManifest, e.name.c_str());
      e.bytes = b.get<uint64_t>();
      e.sha256 = json_string(f, "sha256", kManifest);
      LIGER_CHECK(e.sha256.size() == 64 && e.sha256.find_first_not_of("0123456789abcdef") == std::string::npos,
                  "%s: 'sha256' of '%s' is not 64 lowercase hex digits", kManifest, e.name.c_str());
      out.push_back(e);
    }
  } catch (const Error& e) {
    return e.what();
  }
  for (const ManifestEntry& e : out) {
    const std::string path = dir + "/" + e.name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return strfmt("%s: missing", e.name.c_str());
    if (!S_ISREG(st.st_mode)) return strfmt("%s: not a regular file", e.name.c_str());
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size != e.bytes) {
      return strfmt("%s: %llu bytes, the manifest says %llu (%s)", e.name.c_str(),
                    static_cast<unsigned long long>(size), static_cast<unsigned long long>(e.bytes),
                    size < e.bytes ? "truncated" : "grown");
    }
    std::string sha;
    try {
      sha = sha256_file(path);
    } catch (const Error& err) {
      return strfmt("%s: %s", e.name.c_str(), err.what());
    }
    if (sha != e.sha256) {
      return strfmt("%s: SHA-256 mismatch (file %.12s..., manifest %.12s...; the contents changed after writing)",
                    e.name.c_str(), sha.c_str(), e.sha256.c_str());
    }
  }
  if (entries) *entries = std::move(out);
  if (step) *step = mstep;
  return "";
}

}  // namespace

// ---- API ------------------------------------------------------------------------------------------------------------

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return run_dir + "/" + step_name(step);
}

namespace {

// Test hook (tests/train/test_faults.cpp): with LIGER_TEST_KILL_IN_CHECKPOINT=N in the environment, the process kills
// itself with SIGKILL at the N-th point (1-based, counted over every checkpoint this process writes) of the sequence
// below, so a test can stop a write at every point of it. Without the variable nothing happens.
void kill_point() {
  static const long target = [] {
    const char* e = std::getenv("LIGER_TEST_KILL_IN_CHECKPOINT");
    return e ? std::atol(e) : 0L;
  }();
  static long reached = 0;
  if (target > 0 && ++reached == target) ::raise(SIGKILL);
}

}  // namespace

std::string write_checkpoint(const std::string& run_dir, int64_t step, const CheckpointData& data) {
  LIGER_CHECK(step >= 0, "%s: cannot write a checkpoint of negative step %lld", run_dir.c_str(),
              static_cast<long long>(step));
  LIGER_CHECK(!data.tensors.empty() || !data.json.empty(), "%s: checkpoint of step %lld has no files", run_dir.c_str(),
              static_cast<long long>(step));
  for (const auto& kv : data.tensors) {
    LIGER_CHECK(valid_stem(kv.first) && kv.first != "MANIFEST",
                "%s: bad checkpoint file name '%s' (letters, digits, '_', '-', '.'; not starting with '.')",
                run_dir.c_str(), kv.first.c_str());
  }
  for (const auto& kv : data.json) {
    LIGER_CHECK(valid_stem(kv.first) && kv.first != "MANIFEST",
                "%s: bad checkpoint file name '%s' (letters, digits, '_', '-', '.'; not starting with '.')",
                run_dir.c_str(), kv.first.c_str());
  }

  std::error_code ec;
  fs::create_directories(run_dir, ec);
  LIGER_CHECK(!ec && fs::is_directory(run_dir), "%s: cannot create the run directory (%s)", run_dir.c_str(),
              ec ? ec.message().c_str() : "not a directory");
  const std::string final_dir = checkpoint_dir(run_dir, step);
  const std::string tmp = final_dir + ".tmp";
  fs::remove_all(tmp, ec);
  LIGER_CHECK(!ec, "%s: cannot remove a leftover of an unfinished write (%s)", tmp.c_str(), ec.message().c_str());
  LIGER_CHECK(fs::create_directory(tmp, ec) && !ec, "%s: cannot create (%s)", tmp.c_str(),
              ec ? ec.message().c_str() : "exists");
  kill_point();  // 1: an empty .tmp directory

  try {
    std::vector<std::string> names;
    for (const auto& [group, tf] : data.tensors) {
      const std::string name = group + ".safetensors";
      write_safetensors(tmp + "/" + name, tf.tensors, tf.metadata);  // written as name.tmp, fsynced, renamed
      names.push_back(name);
      kill_point();  // after each tensor file
    }
    for (const auto& [doc, j] : data.json) {
      const std::string name = doc + ".json";
      write_file_synced(tmp + "/" + name, j.dump(2) + "\n");
      names.push_back(name);
      kill_point();  // after each JSON file
    }
    std::sort(names.begin(), names.end());
    Json files = Json::array();
    for (const std::string& name : names) {
      uint64_t size = 0;
      const std::string sha = sha256_file(tmp + "/" + name, &size);  // what is on disk, read back
      files.push_back({{"name", name}, {"bytes", size}, {"sha256", sha}});
    }
    Json manifest = {{"format", kFormat}, {"version", kCheckpointFormatVersion}, {"step", step}, {"files", files}};
    write_file_synced(tmp + "/" + kManifest, manifest.dump(2) + "\n");
    kill_point();  // the manifest written, the directory not yet synced
    fsync_dir(tmp);
    kill_point();  // complete under its .tmp name

    if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      const int err = errno;
      LIGER_CHECK(err == ENOTEMPTY || err == EEXIST, "%s: rename to %s failed (%s)", tmp.c_str(), final_dir.c_str(),
                  std::strerror(err));
      // step_<N> exists (a checkpoint of the same step, e.g. saved again right after a resume): swap atomically,
      // then remove the old one, which now sits at the .tmp name.
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
        const int err2 = errno;
        LIGER_CHECK(err2 == EINVAL || err2 == ENOSYS || err2 == EOPNOTSUPP, "%s: exchange with %s failed (%s)",
                    tmp.c_str(), final_dir.c_str(), std::strerror(err2));
        // No RENAME_EXCHANGE on this file system (NFS, ...): old aside, new in place. A crash in between leaves no
        // step_<N>; find_latest_complete then takes the previous checkpoint.
        const std::string aside = final_dir + ".old.tmp";
        fs::remove_all(aside, ec);
        LIGER_CHECK(std::rename(final_dir.c_str(), aside.c_str()) == 0, "%s: rename to %s failed (%s)",
                    final_dir.c_str(), aside.c_str(), std::strerror(errno));
        LIGER_CHECK(std::rename(tmp.c_str(), final_dir.c_str()) == 0, "%s: rename to %s failed (%s)", tmp.c_str(),
                    final_dir.c_str(), std::strerror(errno));
        fsync_dir(run_dir);
        fs::remove_all(aside, ec);
      } else {
        fsync_dir(run_dir);
        fs::remove_all(tmp, ec);  // the replaced checkpoint
      }
      if (ec) LOG_WARN("%s: could not remove the replaced checkpoint (%s)", run_dir.c_str(), ec.message().c_str());
    }
    kill_point();  // renamed, the run directory not yet synced
    fsync_dir(run_dir);
    kill_point();  // done
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir;
}

NamedTensors host_copies(const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [name, t] : tensors) {
    Tensor c = Tensor::empty(t.shape(), t.dtype(), Device::CPU);
    copy(c, t);
    out.push_back({name, c});
  }
  return out;
}

AsyncCheckpointWriter::AsyncCheckpointWriter(std::string run_dir, int keep_last)
    : run_dir_(std::move(run_dir)), keep_last_(keep_last), thread_([this] { work(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  try {
    wait();
  } catch (const std::exception& e) {
    LOG_WARN("%s: checkpoint write failed: %s", run_dir_.c_str(), e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AsyncCheckpointWriter::work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || has_pending_; });
    if (!has_pending_) return;  // stop_ and nothing queued
    const int64_t step = pending_step_;
    CheckpointData data = std::move(pending_);
    has_pending_ = false;
    busy_ = true;
    lock.unlock();
    std::string dir;
    std::exception_ptr err;
    try {
      dir = write_checkpoint(run_dir_, step, data);
      prune_checkpoints(run_dir_, keep_last_);
    } catch (...) {
      err = std::current_exception();
    }
    data = CheckpointData();  // the host copies go before the lock is taken again
    lock.lock();
    busy_ = false;
    if (err) error_ = err;
    else last_ = dir;
    cv_.notify_all();
  }
}

void AsyncCheckpointWriter::submit(int64_t step, CheckpointData data, bool wait_for_previous) {
  std::unique_lock<std::mutex> lock(mu_);
  if (wait_for_previous) cv_.wait(lock, [this] { return !busy_ && !has_pending_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
  if (has_pending_) {
    superseded_++;
    LOG_DEBUG("%s: the checkpoint of step %lld is superseded by that of step %lld before it started", run_dir_.c_str(),
              static_cast<long long>(pending_step_), static_cast<long long>(step));
  }
  pending_ = std::move(data);
  pending_step_ = step;
  has_pending_ = true;
  cv_.notify_all();
}

std::string AsyncCheckpointWriter::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !busy_ && !has_pending_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
  return last_;
}

bool AsyncCheckpointWriter::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_ || has_pending_;
}

int64_t AsyncCheckpointWriter::superseded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return superseded_;
}

std::vector<CheckpointInfo> list_checkpoints(const std::string& run_dir) {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir, ec)) {
    const int64_t step = parse_step_name(e.path().filename().string());
    std::error_code ec2;
    if (step >= 0 && e.is_directory(ec2)) out.push_back({step, checkpoint_dir(run_dir, step)});
  }
  LIGER_CHECK(!ec, "%s: cannot list the run directory (%s)", run_dir.c_str(), ec.message().c_str());
  std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

std::string verify_checkpoint(const std::string& dir) {
  return check_dir(dir, nullptr, nullptr);
}

std::optional<CheckpointInfo> find_latest_complete(const std::string& run_dir) {
  const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
  std::optional<CheckpointInfo> found;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string reason = verify_checkpoint(it->dir);
    if (reason.empty()) {
      found = *it;
      break;
    }
    LOG_WARN("%s: skipped, not a complete checkpoint: %s", it->dir.c_str(), reason.c_str());
  }
  // Unfinished writes newer than the one taken.
  std::error_code ec;
  if (fs::is_directory(run_dir, ec)) {
    std::vector<std::string> stale;
    for (const fs::directory_entry& e : fs::directory_iterator(run_dir, ec)) {
      if (!is_stale_tmp(e)) continue;
      const std::string name = e.path().filename().string();
      const int64_t step = parse_step_name(name.substr(0, name.find('.')));
      if (!found || step < 0 || step > found->step) stale.push_back(e.path().string());
    }
    std::sort(stale.begin(), stale.end());
    for (const std::string& s : stale)
      LOG_WARN("%s: skipped, an unfinished checkpoint write (removed by the next prune)", s.c_str());
  }
  return found;
}

CheckpointData read_checkpoint(const std::string& dir, int64_t* step) {
  std::error_code ec;
  LIGER_CHECK(fs::is_directory(dir, ec), "%s: no such checkpoint directory", dir.c_str());
  std::vector<ManifestEntry> entries;
  int64_t mstep = 0;
  const std::string reason = check_dir(dir, &entries, &mstep);
  LIGER_CHECK(reason.empty(), "%s/%s (the checkpoint is damaged: resume from another one, e.g. --resume auto)",
              dir.c_str(), reason.c_str());
  CheckpointData out;
  for (const ManifestEntry& e : entries) {
    const std::string path = dir + "/" + e.name;
    if (ends_with(e.name, ".safetensors")) {
      std::shared_ptr<SafetensorsFile> f = SafetensorsFile::open(path);
      TensorFile& tf = out.tensors[e.name.substr(0, e.name.size() - std::strlen(".safetensors"))];
      for (const SafetensorsEntry& se : f->entries()) tf.tensors.emplace_back(se.name, f->tensor(se.name));
      tf.metadata = f->metadata();
    } else {
      out.json[e.name.substr(0, e.name.size() - std::strlen(".json"))] = read_json_file(path);
    }
  }
  if (step) *step = mstep;
  return out;
}

std::vector<std::string> prune_checkpoints(const std::string& run_dir, int keep_last) {
  LIGER_CHECK(keep_last >= 1, "%s: keep_last = %d, must keep at least 1 checkpoint", run_dir.c_str(), keep_last);
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return removed;
  const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
  int complete = 0;
  size_t cut = 0;  // all[0, cut) are removed
  for (size_t i = all.size(); i-- > 0;) {
    if (verify_checkpoint(all[i].dir).empty() && ++complete == keep_last) {
      cut = i;
      break;
    }
  }
  std::vector<std::string> doomed;
  for (size_t i = 0; i < cut; i++) doomed.push_back(all[i].dir);
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir, ec)) {
    if (is_stale_tmp(e)) doomed.push_back(e.path().string());
  }
  LIGER_CHECK(!ec, "%s: cannot list the run directory (%s)", run_dir.c_str(), ec.message().c_str());
  for (const std::string& d : doomed) {
    fs::remove_all(d, ec);
    LIGER_CHECK(!ec, "%s: cannot remove (%s)", d.c_str(), ec.message().c_str());
    removed.push_back(d);
  }
  if (!removed.empty()) fsync_dir(run_dir);
  return removed;
}

}  // namespace liger
