// dist/comm_backends.h — constructors of the MPI and NCCL communicators (dist/communicator.h), for dist/runtime.cpp.
#pragma once

#include <memory>
#include <string>

#include "dist/communicator.h"

namespace liger::dist {

// The MPI communicator over MPI_COMM_WORLD (MPI must be initialized; errors are returned, never fatal inside MPI).
std::unique_ptr<Communicator> make_mpi_world();

#ifdef LIGER_CUDA
// An NCCL communicator of `size` ranks from the 128-byte unique id that rank 0 made (nccl_unique_id) and every rank
// received; collectives run on `stream` (cudaStream_t) on the current CUDA device.
std::vector<uint8_t> nccl_unique_id();
std::unique_ptr<Communicator> make_nccl(const std::vector<uint8_t>& id, int rank, int size, void* stream);
// The first asynchronous error of a live NCCL communicator of this process (ncclCommGetAsyncError: a peer died, a
// connection broke), as NCCL's message; "" when there is none. Safe to call from another thread (the watchdog).
std::string nccl_async_error();
// Aborts every live NCCL communicator (ncclCommAbort): kernels waiting for a dead peer end. For the watchdog, just
// before it ends the job.
void nccl_abort_all();
#endif

}  // namespace liger::dist
