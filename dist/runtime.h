// dist/runtime.h — where this process stands in a job, and the process grid world = dp x tp (DESIGN.md §5).
//
// Rank discovery, in this order (one place, Megatron's _rank_utils / llm.c's zero.cuh):
//   1. an MPI launcher is present (OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK in the environment): MPI_Init, and
//      rank / size from MPI_COMM_WORLD; the local rank from OMPI_COMM_WORLD_LOCAL_RANK (or SLURM_LOCALID, or a split
//      by shared memory);
//   2. SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (srun without PMI): no MPI; NCCL ranks meet through
//      --rendezvous tcp:HOST:PORT or file:PATH (CPU ranks need MPI: a clear error otherwise);
//   3. one process.
// The grid puts tp innermost: tp_rank = rank % tp, dp_rank = rank / tp, so the ranks of one tensor-parallel group are
// consecutive (one node under the usual block placement). The GPU is chosen by the local rank.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "dist/communicator.h"

namespace liger::dist {

// The `dist` options of liger train / generate / eval / bench.
struct DistConfig {
  int64_t tp = 1;                // --tp: tensor-parallel size (dp = world size / tp)
  int64_t dp = 0;                // --dp: data-parallel size; 0 = world size / tp (given: must equal it)
  std::string backend = "auto";  // --dist-backend: auto (nccl on cuda, mpi on cpu, local for one process) | mpi |
                                 //   nccl | local
  std::string rendezvous;        // --rendezvous: "" (through MPI), tcp:HOST:PORT (rank 0 listens) or file:PATH (a
                                 //   file on a shared filesystem): how NCCL ranks exchange their unique id without MPI
  double rendezvous_timeout_s = 300;  // how long a rank waits for the rendezvous before giving up with an error
  void validate() const;
};

// Rank, size and local rank of this process, before any communicator exists.
struct WorldInfo {
  int rank = 0, size = 1, local_rank = 0;
  std::string source = "single process";  // "mpi", "slurm", "single process"
  bool mpi = false;                       // MPI_Init was called (MPI is usable)
};
// Discovers (and initializes MPI when a launcher is present; see above). Idempotent.
WorldInfo discover_world();

class Runtime {
 public:
  // Builds the world, the grid and its communicators for `device` (NCCL needs the CUDA device chosen first: the
  // caller creates its Context on cuda_device() before calling this with Device::CUDA). Errors (a world size that
  // is not dp x tp, a backend that cannot run here) are raised identically on every rank, before any collective.
  static std::unique_ptr<Runtime> create(const DistConfig& cfg, Device device, void* stream = nullptr);
  // One process, Local backend.
  static std::unique_ptr<Runtime> single();
  ~Runtime();

  int rank() const { return info_.rank; }
  int size() const { return info_.size; }
  int local_rank() const { return info_.local_rank; }
  int dp() const { return dp_; }
  int tp() const { return tp_; }
  int dp_rank() const { return info_.rank / tp_; }
  int tp_rank() const { return info_.rank % tp_; }
  bool is_root() const { return info_.rank == 0; }
  Backend backend() const { return world_->backend(); }
  std::string describe() const;  // "world 4 = dp 2 x tp 2 (mpi, ranks from mpi)"

  Communicator& world() { return *world_; }
  Communicator& tp_comm() { return *tp_comm_; }
  Communicator& dp_comm() { return *dp_comm_; }

 private:
  Runtime() = default;
  WorldInfo info_;
  int dp_ = 1, tp_ = 1;
  std::unique_ptr<Communicator> world_, tp_comm_, dp_comm_;
};

// The CUDA device a rank should use: local_rank modulo the visible devices (discover_world first).
int cuda_device_for(const WorldInfo& w, int device_count);

// Runs `setup` on every rank and agrees on its outcome: when it threw liger::Error on any rank, the lowest such rank
// prints its message (prefixed with its rank when it is not 0) and every rank throws QuietError; so an error that
// every rank meets (a bad layout, a missing file) is one line from rank 0, and one that a single rank meets still
// stops them all, with no rank left waiting in a collective. In a one-rank world the Error itself propagates.
void agree(Communicator& world, const std::function<void()>& setup);

// An error that every rank meets identically (the same data, the same reduced values): rank 0 prints it, every rank
// throws QuietError (exit 1, no abort, nobody waiting). In a one-rank world: a liger::Error with the message.
[[noreturn]] void fail_on_every_rank(Communicator& world, const std::string& message);

// An error already reported by another path (agree); main() exits 1 without printing it again.
struct QuietError : std::exception {
  const char* what() const noexcept override { return "error reported above"; }
};

// The fatal path under several ranks: MPI_Abort when MPI is up (the launcher kills every rank), else _exit.
[[noreturn]] void abort_job(int code);
// Whether this process is one rank of several (for main's error path).
bool multi_rank();
int world_rank();

// ---- rendezvous (NCCL's unique id without MPI) -------------------------------------------------------------------
// Rank 0's `payload` reaches every rank (returned; rank 0 gets its own). spec: "tcp:HOST:PORT" (rank 0 listens on
// PORT, the others connect to HOST:PORT, retrying until the timeout) or "file:PATH" (rank 0 writes PATH atomically
// with a job key, the others poll for it). Errors name the spec and what failed (timeout, bad spec, I/O).
std::vector<uint8_t> rendezvous_share(const std::string& spec, int rank, int size, const std::vector<uint8_t>& payload,
                                      double timeout_s);

}  // namespace liger::dist
