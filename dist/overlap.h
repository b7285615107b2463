// dist/overlap.h — a sum over a communicator that overlaps with compute (the data-parallel gradient all-reduce,
// DESIGN.md §5; Megatron's param_and_grad_buffer, llm.c's multi_gpu_async_reduce_gradient).
//
// On NCCL, start(slice) sums one slice of a device buffer (a bucket: one layer's LoRA gradients) on a stream of its
// own, as soon as the compute stream has produced it (an event), while the backward goes on; finish() makes the
// compute stream wait for every started sum. On MPI and Local, start() does nothing and finish() sums the whole
// buffer at once (host collectives cannot overlap with host compute here).
#pragma once

#include "dist/communicator.h"

namespace liger::dist {

class OverlappedSum {
 public:
  // compute_stream: the cudaStream_t the slices are produced on (null on the CPU).
  OverlappedSum(Communicator& comm, void* compute_stream);
  ~OverlappedSum();
  OverlappedSum(const OverlappedSum&) = delete;
  OverlappedSum& operator=(const OverlappedSum&) = delete;

  bool overlaps() const { return comm_stream_ != nullptr; }
  // Starts the sum of `slice` (a part of the buffer later passed to finish) once the compute stream reaches here.
  void start(Tensor slice);
  // Every started slice summed (the compute stream waits for them), or, without overlap, `whole` summed now.
  void finish(Tensor whole);

 private:
  Communicator& comm_;
  void* compute_stream_ = nullptr;
  void* comm_stream_ = nullptr;  // cudaStream_t, non-blocking, NCCL only
  void* ready_ = nullptr;        // cudaEvent_t: the compute stream produced a slice
  void* done_ = nullptr;         // cudaEvent_t: the comm stream finished its sums
  bool started_ = false;
};

}  // namespace liger::dist
