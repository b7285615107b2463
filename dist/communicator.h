// dist/communicator.h — collectives on Tensors behind one interface (DESIGN.md §5), with three backends:
//   Local: one process (every collective is the identity, all-gather a copy);
//   MPI:   host tensors over an MPI communicator (CPU ranks: every distributed code path runs in CI);
//   NCCL:  device tensors over an NCCL communicator, on the context's stream (GPU ranks).
// Each backend takes tensors on either device: MPI stages device tensors through the host, NCCL stages host tensors
// through the device, so host-side reductions (losses, the deterministic gradient gather) work under every backend.
// The element count and the datatype always come from the Tensor: nothing outside dist/ calls MPI or NCCL directly.
//
// Every rank of the communicator must make the same calls in the same order with the same shapes (the usual
// collective contract); a mismatch is a bug in the caller, and a dead or hung peer is left to the backend's timeouts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace liger::dist {

enum class Backend { Local, Mpi, Nccl };
const char* backend_name(Backend b);  // "local" | "mpi" | "nccl"

enum class ReduceOp { Sum, Max, Min };

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual Backend backend() const = 0;

  // t (any shape) = op over the ranks of t, in place. f32, f64, i32, i64 (and bf16 sums on NCCL).
  virtual void all_reduce(Tensor t, ReduceOp op = ReduceOp::Sum) = 0;
  // out (size * n elements, rank r's `in` at rows [r * in.dim(0), ...)) = the concatenation of every rank's `in`.
  virtual void all_gather(Tensor out, const Tensor& in) = 0;
  // out (in.numel() / size elements) = rank r's block r of the op over the ranks of `in`.
  virtual void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op = ReduceOp::Sum) = 0;
  // t = root's t.
  virtual void broadcast(Tensor t, int root) = 0;
  virtual void barrier() = 0;
  // A sub-communicator of the ranks that pass the same `color`, ordered by `key` (MPI_Comm_split / ncclCommSplit).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // NCCL only: collectives issued through all_reduce_async run on `stream` (a cudaStream_t) instead of the
  // communicator's own; the caller orders it against compute with events. Other backends run synchronously.
  virtual void all_reduce_async(Tensor t, ReduceOp op, void* stream) { (void)stream, all_reduce(t, op); }
  // NCCL only: the calls between group_start and group_end are launched together (one bucket).
  virtual void group_start() {}
  virtual void group_end() {}

  // Host conveniences (values of every rank, or the op over the ranks), through the tensor calls above.
  double all_reduce_value(double v, ReduceOp op = ReduceOp::Sum);
  int64_t all_reduce_value(int64_t v, ReduceOp op = ReduceOp::Sum);
  std::vector<double> all_gather_values(const std::vector<double>& mine);

 protected:
  int rank_ = 0, size_ = 1;
};

// One process.
std::unique_ptr<Communicator> make_local_communicator();

// Checks that `t` can travel through a collective: defined, contiguous by construction, a supported dtype.
void check_collective_tensor(const char* op, const Tensor& t);

}  // namespace liger::dist
