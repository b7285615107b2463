// dist/nccl_comm.cpp — the NCCL backend: device tensors over an NCCL communicator on the compute stream (host tensors
// staged through the device, with a synchronize). Every NCCL call is checked; a failure is a liger::Error naming the
// call and NCCL's message.
//
// The communicators are non-blocking (ncclConfig_t::blocking = 0): a call that answers ncclInProgress is waited for by
// polling ncclCommGetAsyncError, and every live communicator is listed here, so the watchdog thread (dist/watchdog.h)
// can poll them for an asynchronous error — a peer that died, a broken connection — and abort them (ncclCommAbort),
// which ends NCCL kernels that would otherwise wait forever for the dead peer.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "core/check.h"
#include "core/cuda_check.h"
#include "dist/comm_backends.h"

#define NCCL_CHECK(stmt)                                                                             \
  do {                                                                                               \
    ncclResult_t r_ = (stmt);                                                                        \
    if (r_ != ncclSuccess)                                                                           \
      ::liger::detail::fail(__FILE__, __LINE__,                                                      \
                            ::liger::strfmt("NCCL error in %s: %s", #stmt, ncclGetErrorString(r_))); \
  } while (0)

namespace liger::dist {

namespace {

// Every live communicator of this process (for the watchdog's polling and abort).
std::mutex g_comms_mutex;
std::set<ncclComm_t> g_comms;
bool g_aborted = false;

void register_comm(ncclComm_t c) {
  std::lock_guard<std::mutex> lock(g_comms_mutex);
  g_comms.insert(c);
}

// A communicator being created without blocking (ncclCommInitRankConfig, ncclCommSplit): NCCL may store it into
// *slot only when its background job finishes, so this waits for the slot to be set and the communicator to leave
// ncclInProgress; `parent` (the communicator split, or null) reports a failure of the job meanwhile.
ncclComm_t wait_created(ncclComm_t* slot, ncclComm_t parent, ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress) LIGER_FAIL("NCCL error in %s: %s", what, ncclGetErrorString(r));
  for (;;) {
    ncclComm_t c = *static_cast<ncclComm_t volatile*>(slot);
    ncclResult_t st = ncclInProgress;
    if (c) {
      if (ncclCommGetAsyncError(c, &st) != ncclSuccess) st = ncclInternalError;
      if (st == ncclSuccess) return c;
      if (st != ncclInProgress)
        LIGER_FAIL("NCCL error in %s: %s (%s)", what, ncclGetErrorString(st),
                   ncclGetLastError(c) ? ncclGetLastError(c) : "no detail");
    } else if (parent) {
      if (ncclCommGetAsyncError(parent, &st) != ncclSuccess) st = ncclInternalError;
      if (st != ncclSuccess && st != ncclInProgress)
        LIGER_FAIL("NCCL error in %s: %s (%s)", what, ncclGetErrorString(st),
                   ncclGetLastError(parent) ? ncclGetLastError(parent) : "no detail");
    } else if (r == ncclSuccess) {
      LIGER_FAIL("NCCL error in %s: no communicator was made", what);
    }
    std::this_thread::yield();
  }
}

// Waits until `comm` finished what the last call (result r, named `what` in the error) started: ncclInProgress is
// polled until the communicator is ready again.
void wait_ready(ncclComm_t comm, ncclResult_t r, const char* what) {
  wait_created(&comm, nullptr, r, what);
}

#define NCCL_CALL(comm, stmt) wait_ready((comm), (stmt), #stmt)

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::F32:
      return ncclFloat32;
    case DType::F64:
      return ncclFloat64;
    case DType::BF16:
      return ncclBfloat16;
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
    default:
      LIGER_FAIL("NCCL cannot carry %s tensors", dtype_name(d));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
    NCCL_CHECK(ncclCommCount(comm_, &size_));
    register_comm(comm_);
  }
  ~NcclCommunicator() override {
    std::lock_guard<std::mutex> lock(g_comms_mutex);
    g_comms.erase(comm_);
    if (g_aborted) return;  // ncclCommAbort freed it
    // Flush what is in flight, then free it; a communicator in an error state is aborted instead.
    ncclResult_t r = ncclCommFinalize(comm_);
    while (r == ncclInProgress) {
      std::this_thread::yield();
      if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
    }
    if (r == ncclSuccess)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  Backend backend() const override { return Backend::Nccl; }

  void all_reduce(Tensor t, ReduceOp op) override { all_reduce_on(t, op, stream_); }
  void all_reduce_async(Tensor t, ReduceOp op, void* stream) override {
    LIGER_CHECK(t.device() == Device::CUDA, "all_reduce_async: a device tensor is needed, got %s", t.str().c_str());
    all_reduce_on(t, op, static_cast<cudaStream_t>(stream));
  }
  void group_start() override { NCCL_CHECK(ncclGroupStart()); }
  void group_end() override { NCCL_CALL(comm_, ncclGroupEnd()); }

  void all_gather(Tensor out, const Tensor& in) override {
    check_collective_tensor("all_gather", in);
    LIGER_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
                "all_gather: out %s does not hold %d x in %s", out.str().c_str(), size_, in.str().c_str());
    Tensor di = on_device(in), dout = out.is_cuda() ? out : Tensor::empty(out.shape(), out.dtype(), Device::CUDA);
    NCCL_CALL(comm_, ncclAllGather(di.data(), dout.data(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()),
                                   comm_, stream_));
    finish(out, dout);
  }
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_collective_tensor("reduce_scatter", in);
    LIGER_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
                "reduce_scatter: in %s is not %d x out %s", in.str().c_str(), size_, out.str().c_str());
    Tensor di = on_device(in), dout = out.is_cuda() ? out : Tensor::empty(out.shape(), out.dtype(), Device::CUDA);
    NCCL_CALL(comm_, ncclReduceScatter(di.data(), dout.data(), static_cast<size_t>(out.numel()),
                                       nccl_type(in.dtype()), nccl_op(op), comm_, stream_));
    finish(out, dout);
  }
  void broadcast(Tensor t, int root) override {
    check_collective_tensor("broadcast", t);
    Tensor d = on_device(t);
    NCCL_CALL(comm_, ncclBroadcast(d.data(), d.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                                   comm_, stream_));
    finish(t, d);
  }
  void barrier() override {
    Tensor one = Tensor::zeros({1}, DType::I32, Device::CUDA);
    all_reduce(one, ReduceOp::Sum);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    ncclConfig_t config = nonblocking_config();
    const ncclResult_t r = ncclCommSplit(comm_, color, key, &sub, &config);
    sub = wait_created(&sub, comm_, r, "ncclCommSplit");
    return std::make_unique<NcclCommunicator>(sub, stream_);
  }

 private:
  Tensor on_device(const Tensor& t) const { return t.is_cuda() ? t : t.to(Device::CUDA); }
  // Brings a staged result back to a host tensor (after the stream has produced it).
  void finish(Tensor dst, const Tensor& staged) {
    if (dst.data() == staged.data()) return;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    copy(dst, staged);
  }
  void all_reduce_on(Tensor t, ReduceOp op, cudaStream_t stream) {
    check_collective_tensor("all_reduce", t);
    Tensor d = on_device(t);
    NCCL_CALL(comm_, ncclAllReduce(d.data(), d.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                   nccl_op(op), comm_, stream));
    finish(t, d);
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
};

}  // namespace

std::vector<uint8_t> nccl_unique_id() {
  ncclUniqueId id;
  NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<uint8_t> v(sizeof(id));
  std::memcpy(v.data(), &id, sizeof(id));
  return v;
}

std::unique_ptr<Communicator> make_nccl(const std::vector<uint8_t>& idv, int rank, int size, void* stream) {
  ncclUniqueId id;
  LIGER_CHECK(idv.size() == sizeof(id), "NCCL: the unique id has %zu bytes, expected %zu", idv.size(), sizeof(id));
  std::memcpy(&id, idv.data(), sizeof(id));
  ncclComm_t comm = nullptr;
  ncclConfig_t config = nonblocking_config();
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  comm = wait_created(&comm, nullptr, r, "ncclCommInitRankConfig");
  return std::make_unique<NcclCommunicator>(comm, static_cast<cudaStream_t>(stream));
}

std::string nccl_async_error() {
  std::lock_guard<std::mutex> lock(g_comms_mutex);
  if (g_aborted) return "";
  for (ncclComm_t c : g_comms) {
    ncclResult_t st = ncclSuccess;
    if (ncclCommGetAsyncError(c, &st) != ncclSuccess) continue;
    if (st == ncclSuccess || st == ncclInProgress) continue;
    const char* detail = ncclGetLastError(c);
    return strfmt("%s%s%s", ncclGetErrorString(st), detail && *detail ? ": " : "", detail ? detail : "");
  }
  return "";
}

void nccl_abort_all() {
  std::lock_guard<std::mutex> lock(g_comms_mutex);
  if (g_aborted) return;
  g_aborted = true;
  for (ncclComm_t c : g_comms) ncclCommAbort(c);
}

}  // namespace liger::dist
