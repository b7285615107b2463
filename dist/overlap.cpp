#include "dist/overlap.h"

#ifdef LIGER_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace liger::dist {

OverlappedSum::OverlappedSum(Communicator& comm, void* compute_stream) : comm_(comm), compute_stream_(compute_stream) {
#ifdef LIGER_CUDA
  if (comm.backend() == Backend::Nccl && comm.size() > 1 && compute_stream) {
    // Non-blocking: the legacy default stream (stream-ordered allocations, copies) must not wait for the sums.
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreateWithFlags(&a, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&b, cudaEventDisableTiming));
    comm_stream_ = s, ready_ = a, done_ = b;
  }
#endif
}

OverlappedSum::~OverlappedSum() {
#ifdef LIGER_CUDA
  if (comm_stream_) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(comm_stream_));
    cudaEventDestroy(static_cast<cudaEvent_t>(ready_));
    cudaEventDestroy(static_cast<cudaEvent_t>(done_));
    cudaStreamDestroy(static_cast<cudaStream_t>(comm_stream_));
  }
#endif
}

void OverlappedSum::start(Tensor slice) {
  if (!overlaps() || slice.numel() == 0) return;
#ifdef LIGER_CUDA
  auto compute = static_cast<cudaStream_t>(compute_stream_), comm = static_cast<cudaStream_t>(comm_stream_);
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ready_), compute));
  CUDA_CHECK(cudaStreamWaitEvent(comm, static_cast<cudaEvent_t>(ready_), 0));
  comm_.all_reduce_async(slice, ReduceOp::Sum, comm);
  started_ = true;
#endif
}

void OverlappedSum::finish(Tensor whole) {
  if (!overlaps()) {
    if (comm_.size() > 1) comm_.all_reduce(whole, ReduceOp::Sum);
    return;
  }
#ifdef LIGER_CUDA
  if (!started_) comm_.all_reduce(whole, ReduceOp::Sum);  // nothing was started: sum it on the compute stream
  auto compute = static_cast<cudaStream_t>(compute_stream_), comm = static_cast<cudaStream_t>(comm_stream_);
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(done_), comm));
  CUDA_CHECK(cudaStreamWaitEvent(compute, static_cast<cudaEvent_t>(done_), 0));
  started_ = false;
#endif
}

}  // namespace liger::dist
