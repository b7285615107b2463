// train/checkpoint.h — crash-safe training checkpoints: write, find the newest complete one, read, prune.
//
// A checkpoint of step N is the directory <run_dir>/step_<N, 8 digits> (e.g. step_00001200) holding what the caller
// hands over: named groups of tensors, each written as <group>.safetensors (e.g. "adapter_model", "optimizer"), and
// named JSON documents, each written as <name>.json (e.g. "adapter_config", "trainer_state"), plus MANIFEST.json:
//   {"format": "liger-checkpoint", "version": 1, "step": N,
//    "files": [{"name": "adapter_model.safetensors", "bytes": 1234, "sha256": "<64 hex>"}, ...]}
//
// Writing (DESIGN.md §6): everything goes to <run_dir>/step_<N>.tmp first; every file is fsynced, then the manifest
// (written last, so its presence means every listed file was complete), then the directory is fsynced and renamed
// to step_<N>, and run_dir is fsynced so the rename itself survives a crash. A crash at any point leaves either a
// .tmp directory (never taken for a checkpoint) or a complete step_<N>.
//
// A checkpoint is complete when its MANIFEST.json parses, names this step, and every file it lists exists with the
// listed size and SHA-256. Anything else is "torn" (a crash on a file system that reorders writes, a copy that
// stopped half-way, a disk error) and is never resumed from.
//
// One writer per run directory (rank 0); prune_checkpoints must not run while a write is in progress.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <exception>
#include <optional>
#include <string>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"

namespace liger {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// One safetensors file of a checkpoint.
struct TensorFile {
  NamedTensors tensors;                         // written in this order; read back in the file's order
  std::map<std::string, std::string> metadata;  // the file's "__metadata__" (e.g. PEFT's {"format": "pt"})
};

// The contents of a checkpoint. Names are file stems: letters, digits, '_', '-', '.', not starting with '.';
// "MANIFEST" is reserved.
struct CheckpointData {
  std::map<std::string, TensorFile> tensors;  // group name -> <group>.safetensors
  std::map<std::string, Json> json;           // document name -> <name>.json
};

// Where a checkpoint lives.
struct CheckpointInfo {
  int64_t step = 0;
  std::string dir;  // <run_dir>/step_<N>
};

constexpr int kCheckpointFormatVersion = 1;

// "<run_dir>/step_<N>" with N zero-padded to 8 digits (more digits when N >= 10^8).
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// Writes the checkpoint of `step` (>= 0) as described above, creating run_dir if needed, and returns its directory.
// A leftover step_<N>.tmp is replaced; an existing step_<N> is replaced atomically (renameat2 RENAME_EXCHANGE, or on
// file systems without it: old aside, new in place, old removed). Tensors on any device are copied to the host.
// Errors (bad names, I/O failures) name the path; the .tmp directory is removed on failure.
std::string write_checkpoint(const std::string& run_dir, int64_t step, const CheckpointData& data);

// Host copies of (name, tensor) pairs, safe to hand to the writer thread while the originals go on changing.
NamedTensors host_copies(const NamedTensors& tensors);

// Writes checkpoints on a thread of its own, one at a time, then prunes to keep_last (DESIGN.md §6): the training
// steps go on while the files are written and fsynced. The data handed over must be host copies that nothing else
// changes (AdamW::export_state makes them; copy the parameters).
//   submit(step, data, wait_for_previous = false): when a write is in flight, the new checkpoint waits its turn in a
//     one-place queue, replacing a queued one that has not started (it is older): the caller never waits for the
//     disk, and checkpoints are written as often as the storage allows, the newest state first;
//   submit(..., wait_for_previous = true): the caller waits until the writer is free, so every submitted checkpoint
//     is written (--save-wait).
// wait() blocks until nothing is in flight or queued and returns the last directory written. An error of a write is
// raised by the next submit() or wait().
class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter(std::string run_dir, int keep_last);
  ~AsyncCheckpointWriter();  // waits; an error then is logged
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;
  void submit(int64_t step, CheckpointData data, bool wait_for_previous = false);
  std::string wait();
  int64_t superseded() const;  // queued checkpoints replaced by a newer one before they started
  bool busy() const;           // a write in flight or queued: a caller that can wait a step need not copy its state now

 private:
  void work();
  std::string run_dir_;
  int keep_last_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false, stop_ = false, has_pending_ = false;
  int64_t pending_step_ = 0, superseded_ = 0;
  CheckpointData pending_;
  std::string last_;
  std::exception_ptr error_;
  std::thread thread_;  // last: started after the members it uses
};

// The directories named step_<digits> in run_dir (no verification; .tmp directories excluded), oldest first. An
// absent run_dir gives an empty list.
std::vector<CheckpointInfo> list_checkpoints(const std::string& run_dir);

// Verifies the checkpoint in `dir` (manifest, sizes, SHA-256 of every file). Returns "" when it is complete, else
// the reason, which starts with the name of the file at fault ("MANIFEST.json: missing (the write did not finish)",
// "optimizer.safetensors: 100 bytes, the manifest says 4096 (truncated)", ...).
std::string verify_checkpoint(const std::string& dir);

// The newest complete checkpoint of run_dir, or nullopt when there is none (an absent run_dir included). Every
// newer torn checkpoint and every newer step_<N>.tmp is skipped with a LOG_WARN naming the directory and the reason.
// This is `--resume auto`.
std::optional<CheckpointInfo> find_latest_complete(const std::string& run_dir);

// Verifies and reads the checkpoint in `dir` (`--resume DIR`): an Error names the damaged file and the reason.
// Tensors are zero-copy views of the mapped files (they keep the mappings alive); every tensor of every file is read,
// and the files' metadata. `step` gets the manifest's step when not null.
CheckpointData read_checkpoint(const std::string& dir, int64_t* step = nullptr);

// Keeps the newest `keep_last` (>= 1) complete checkpoints and everything newer than them (torn newer ones are left
// for inspection, with a warning from find_latest_complete); removes every step_<N> directory older than the
// keep_last-th newest complete one, complete or not, and every stale step_*.tmp directory. Returns the removed
// directories. With fewer than keep_last complete checkpoints only .tmp directories are removed.
std::vector<std::string> prune_checkpoints(const std::string& run_dir, int keep_last);

// ---- SHA-256 (FIPS 180-4), used for the manifest --------------------------------------------------------------------

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> finish();  // the digest; the object must not be updated afterwards
  static std::string hex(const std::array<uint8_t, 32>& digest);  // 64 lowercase hex digits

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes
};

std::string sha256_hex(const std::string& bytes);
// SHA-256 of a file's contents; *size gets its length. Error naming the file if it cannot be read.
std::string sha256_file(const std::string& path, uint64_t* size = nullptr);

}  // namespace liger
