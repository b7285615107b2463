#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "core/json.h"

namespace liger {

namespace {

// Element size of every dtype the format defines; 0 for unknown.
size_t st_elem_size(const std::string& s) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
      {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},   {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(s);
  return it == sizes.end() ? 0 : it->second;
}

bool st_to_dtype(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::F32;
  else if (s == "BF16") *out = DType::BF16;
  else if (s == "F16") *out = DType::F16;
  else if (s == "I32") *out = DType::I32;
  else if (s == "I64") *out = DType::I64;
  else if (s == "F64") *out = DType::F64;
  else return false;
  return true;
}

const char* dtype_to_st(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F64: return "F64";
  }
  return "?";
}

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

}  // namespace

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LIGER_CHECK(fd >= 0, "%s: cannot open (%s)", path.c_str(), std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LIGER_FAIL("%s: not a regular file", path.c_str());
  }
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      LIGER_FAIL("%s: mmap failed (%s)", path.c_str(), std::strerror(errno));
    }
    f->map_ = m;
    f->base_ = static_cast<const char*>(m);
  }
  ::close(fd);
  f->self_ = f;
  f->parse(path);
  return f;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::string bytes, const std::string& what) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = what;
  f->owned_ = std::move(bytes);
  f->base_ = f->owned_.data();
  f->size_ = f->owned_.size();
  f->self_ = f;
  f->parse(what);
  return f;
}

void SafetensorsFile::parse(const std::string& what) {
  const char* w = what.c_str();
  LIGER_CHECK(size_ >= 8, "%s: truncated safetensors file (%zu bytes, need at least 8 for the header length)", w,
              size_);
  uint64_t n = 0;
  std::memcpy(&n, base_, 8);  // little-endian hosts only (x86-64, aarch64)
  LIGER_CHECK(n <= kMaxHeader, "%s: header length %llu is larger than the 100 MB limit (not a safetensors file?)",
              w, static_cast<unsigned long long>(n));
  LIGER_CHECK(8 + n <= size_, "%s: truncated safetensors file: header needs %llu bytes, file has %zu", w,
              static_cast<unsigned long long>(8 + n), size_);
  std::string header(base_ + 8, static_cast<size_t>(n));
  data_ = base_ + 8 + n;
  size_t data_size = size_ - 8 - static_cast<size_t>(n);
  Json j = parse_json(header, what + " (safetensors header)");
  LIGER_CHECK(j.is_object(), "%s: safetensors header is not a JSON object", w);

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      LIGER_CHECK(v.is_object(), "%s: __metadata__ must be an object of strings", w);
      for (auto m = v.begin(); m != v.end(); ++m) {
        LIGER_CHECK(m.value().is_string(), "%s: __metadata__ key '%s' is not a string", w, m.key().c_str());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const char* nm = name.c_str();
    LIGER_CHECK(v.is_object(), "%s: tensor '%s': entry is not an object", w, nm);
    LIGER_CHECK(v.contains("dtype") && v["dtype"].is_string(), "%s: tensor '%s': missing or bad 'dtype'", w, nm);
    LIGER_CHECK(v.contains("shape") && v["shape"].is_array(), "%s: tensor '%s': missing or bad 'shape'", w, nm);
    LIGER_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
                "%s: tensor '%s': missing or bad 'data_offsets'", w, nm);
    SafetensorsEntry e;
    e.name = name;
    e.dtype_str = v["dtype"].get<std::string>();
    size_t esize = st_elem_size(e.dtype_str);
    LIGER_CHECK(esize != 0, "%s: tensor '%s': unknown dtype '%s'", w, nm, e.dtype_str.c_str());
    e.supported = st_to_dtype(e.dtype_str, &e.dtype);
    LIGER_CHECK(v["shape"].size() <= static_cast<size_t>(kMaxDims), "%s: tensor '%s': rank %zu is above %d", w, nm,
                v["shape"].size(), kMaxDims);
    unsigned __int128 numel = 1;
    for (const Json& d : v["shape"]) {
      LIGER_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                  "%s: tensor '%s': shape entries must be non-negative integers", w, nm);
      uint64_t x = d.get<uint64_t>();
      LIGER_CHECK(x < (1ull << 48), "%s: tensor '%s': dimension %llu is too large", w, nm,
                  static_cast<unsigned long long>(x));
      e.shape.push_back(static_cast<int64_t>(x));
      numel *= x;
      LIGER_CHECK(numel < (static_cast<unsigned __int128>(1) << 62), "%s: tensor '%s': too many elements", w, nm);
    }
    const Json& off = v["data_offsets"];
    LIGER_CHECK(off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                "%s: tensor '%s': data_offsets must be non-negative integers", w, nm);
    uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    LIGER_CHECK(b <= en, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", w, nm,
                static_cast<unsigned long long>(b), static_cast<unsigned long long>(en));
    LIGER_CHECK(en <= data_size, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%zu bytes)",
                w, nm, static_cast<unsigned long long>(b), static_cast<unsigned long long>(en), data_size);
    unsigned __int128 want = numel * esize;
    LIGER_CHECK(want == en - b, "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets span %llu", w,
                nm, e.dtype_str.c_str(), static_cast<unsigned long long>(want),
                static_cast<unsigned long long>(en - b));
    e.begin = static_cast<size_t>(b);
    e.end = static_cast<size_t>(en);
    index_[name] = entries_.size();
    entries_.push_back(std::move(e));
  }
  // Overlap: sorted by begin, each non-empty tensor must start at or after the end of every earlier one.
  std::vector<const SafetensorsEntry*> order;
  for (const auto& e : entries_)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); i++) {
    LIGER_CHECK(order[i]->begin >= order[i - 1]->end,
                "%s: tensors '%s' and '%s' overlap (bytes [%zu, %zu) and [%zu, %zu))", w,
                order[i - 1]->name.c_str(), order[i]->name.c_str(), order[i - 1]->begin, order[i - 1]->end,
                order[i]->begin, order[i]->end);
  }
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  LIGER_CHECK(e != nullptr, "%s: no tensor '%s'", path_.c_str(), name.c_str());
  LIGER_CHECK(e->supported, "%s: tensor '%s' has dtype %s, which liger does not load", path_.c_str(), name.c_str(),
              e->dtype_str.c_str());
  const char* p = data_ + e->begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e->dtype) != 0) {
    // The format does not promise aligned offsets (other writers may pack a bf16 tensor of odd length before an f32
    // one); typed loads from a misaligned pointer are undefined behaviour, so such a tensor is copied.
    Tensor t = Tensor::empty(Shape(e->shape), e->dtype, Device::CPU);
    std::memcpy(t.data(), p, t.nbytes());
    return t;
  }
  std::shared_ptr<const SafetensorsFile> keep = self_.lock();
  std::shared_ptr<void> owner(const_cast<SafetensorsFile*>(this), [keep](void*) {});
  return Tensor(const_cast<char*>(p), Shape(e->shape), e->dtype, Device::CPU, owner);
}

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  LIGER_CHECK(fs::is_directory(dir), "%s: model directory does not exist", dir.c_str());
  Checkpoint c;
  c.dir_ = dir;
  std::string single = (fs::path(dir) / "model.safetensors").string();
  std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> wanted;  // tensor -> shard file, from the index
  if (fs::exists(index)) {
    Json j = read_json_file(index);
    const Json& wm = json_field(j, "weight_map", index);
    LIGER_CHECK(wm.is_object(), "%s: 'weight_map' must be an object", index.c_str());
    for (auto it = wm.begin(); it != wm.end(); ++it) {
      LIGER_CHECK(it.value().is_string(), "%s: weight_map entry '%s' is not a file name", index.c_str(),
                  it.key().c_str());
      std::string file = it.value().get<std::string>();
      LIGER_CHECK(file.find('/') == std::string::npos && file != ".." && !file.empty(),
                  "%s: weight_map entry '%s' names '%s', which is not a file in the directory", index.c_str(),
                  it.key().c_str(), file.c_str());
      wanted[it.key()] = file;
      if (std::find(shard_names.begin(), shard_names.end(), file) == shard_names.end()) shard_names.push_back(file);
    }
  } else if (fs::exists(single)) {
    shard_names.push_back("model.safetensors");
  } else {
    LIGER_FAIL("%s: no model.safetensors or model.safetensors.index.json", dir.c_str());
  }
  std::map<std::string, size_t> seen;  // every tensor of every shard -> file index, listed in the index or not
  for (const std::string& s : shard_names) {
    std::string p = (fs::path(dir) / s).string();
    LIGER_CHECK(fs::exists(p), "%s: shard listed in the index does not exist", p.c_str());
    c.files_.push_back(SafetensorsFile::open(p));
    size_t fi = c.files_.size() - 1;
    for (const auto& e : c.files_.back()->entries()) {
      auto it = seen.find(e.name);
      LIGER_CHECK(it == seen.end(), "%s: tensor '%s' also appears in %s", p.c_str(), e.name.c_str(),
                  c.files_[it->second]->path().c_str());
      seen[e.name] = fi;
      if (!wanted.empty()) {
        auto w = wanted.find(e.name);
        if (w == wanted.end() || w->second != s) continue;  // not mapped to this shard by the index
      }
      c.where_[e.name] = {fi, &e};
    }
  }
  for (const auto& [name, file] : wanted) {
    LIGER_CHECK(c.where_.count(name), "%s: tensor '%s' is listed in the index but missing from %s", dir.c_str(),
                name.c_str(), file.c_str());
  }
  return c;
}

std::pair<const SafetensorsFile*, const SafetensorsEntry*> Checkpoint::find(const std::string& name) const {
  auto it = where_.find(name);
  LIGER_CHECK(it != where_.end(), "%s: checkpoint has no tensor '%s'", dir_.c_str(), name.c_str());
  return {files_[it->second.first].get(), it->second.second};
}

Tensor Checkpoint::tensor(const std::string& name) const {
  auto [f, e] = find(name);
  return f->tensor(e->name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> v;
  for (const auto& kv : where_) v.push_back(kv.first);
  return v;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Data in order of decreasing element size (stable), as the reference serializer does: every offset is then a
  // multiple of its tensor's element size, so readers get aligned zero-copy views.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  size_t off = 0;
  std::vector<Tensor> host;
  for (size_t i : order) {
    const std::string& name = tensors[i].first;
    const Tensor& t = tensors[i].second;
    LIGER_CHECK(name != "__metadata__" && !header.contains(name), "%s: duplicate or reserved tensor name '%s'",
                path.c_str(), name.c_str());
    Tensor h = t.device() == Device::CPU ? t : t.to(Device::CPU);
    std::vector<int64_t> shape(h.shape().d.begin(), h.shape().d.begin() + h.ndim());
    header[name] = {{"dtype", dtype_to_st(h.dtype())}, {"shape", shape}, {"data_offsets", {off, off + h.nbytes()}}};
    off += h.nbytes();
    host.push_back(h);
  }
  std::string hs = header.dump();
  while ((8 + hs.size()) % 8 != 0) hs.push_back(' ');  // align the data section to 8 bytes
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LIGER_CHECK(fd >= 0, "%s: cannot create (%s)", tmp.c_str(), std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t k = ::write(fd, c, n);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        LIGER_FAIL("%s: write failed (%s)", tmp.c_str(), std::strerror(err));
      }
      c += k;
      n -= static_cast<size_t>(k);
    }
  };
  uint64_t n = hs.size();
  write_all(&n, 8);
  write_all(hs.data(), hs.size());
  for (const Tensor& h : host) write_all(h.data(), h.nbytes());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    LIGER_FAIL("%s: fsync/close failed (%s)", tmp.c_str(), std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    LIGER_FAIL("%s: rename to %s failed (%s)", tmp.c_str(), path.c_str(), std::strerror(err));
  }
}

}  // namespace liger
