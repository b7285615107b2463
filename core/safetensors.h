// core/safetensors.h — reading and writing HF safetensors files.
//
// Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]},
// "__metadata__": {str: str}}, then the data. Every field is validated on open: header length against the file
// size, the JSON, known dtypes, non-negative shapes whose byte size equals e - b, offsets inside the data and
// not overlapping. A violation is a liger::Error naming the file and the tensor.
//
// Files are mmapped; tensor() returns a zero-copy CPU view that keeps the mapping alive (or, for a tensor whose offset
// is not a multiple of its element size, an aligned copy). write_safetensors orders the data by decreasing element
// size, so the files it writes are always aligned.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace liger {

struct SafetensorsEntry {
  std::string name;
  std::string dtype_str;  // as in the file: "F32", "BF16", "F64", "U8", ...
  bool supported = false; // dtype maps to a liger DType
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets relative to the start of the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Validates an in-memory image (the same checks; used by open() and by the fuzz test). `what` names it.
  static std::shared_ptr<SafetensorsFile> from_bytes(std::string bytes, const std::string& what);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const SafetensorsEntry* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Zero-copy CPU view of a tensor; Error if missing or of an unsupported dtype.
  Tensor tensor(const std::string& name) const;
  const void* bytes(const SafetensorsEntry& e) const { return data_ + e.begin; }

 private:
  SafetensorsFile() = default;
  void parse(const std::string& what);

  std::string path_;
  const char* base_ = nullptr;  // whole file
  size_t size_ = 0;
  const char* data_ = nullptr;  // data section
  void* map_ = nullptr;         // mmap region (nullptr for from_bytes)
  std::string owned_;           // bytes for from_bytes
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafetensorsFile> self_;
  friend struct SafetensorsAccess;
};

// The weights of a model directory: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` ({"weight_map": {tensor: file}}). Each shard is opened once.
class Checkpoint {
 public:
  static Checkpoint open_dir(const std::string& dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // The file and entry of a tensor; Error naming the directory if absent.
  std::pair<const SafetensorsFile*, const SafetensorsEntry*> find(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const SafetensorsEntry*>> where_;
};

// Writes tensors (any device; copied to the host) to `path` atomically: `path.tmp`, fsync, rename.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace liger
