// dist/nccl_comm.cpp — the NCCL backend: device tensors over an NCCL communicator on the compute stream (host tensors
// staged through the device, with a synchronize). Every NCCL call is checked; a failure is a liger::Error naming the
// call and NCCL's message.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

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
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  Backend backend() const override { return Backend::Nccl; }

  void all_reduce(Tensor t, ReduceOp op) override { all_reduce_on(t, op, stream_); }
  void all_reduce_async(Tensor t, ReduceOp op, void* stream) override {
    LIGER_CHECK(t.device() == Device::CUDA, "all_reduce_async: a device tensor is needed, got %s", t.str().c_str());
    all_reduce_on(t, op, static_cast<cudaStream_t>(stream));
  }
  void group_start() override { NCCL_CHECK(ncclGroupStart()); }
  void group_end() override { NCCL_CHECK(ncclGroupEnd()); }

  void all_gather(Tensor out, const Tensor& in) override {
    check_collective_tensor("all_gather", in);
    LIGER_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
                "all_gather: out %s does not hold %d x in %s", out.str().c_str(), size_, in.str().c_str());
    Tensor di = on_device(in), dout = out.is_cuda() ? out : Tensor::empty(out.shape(), out.dtype(), Device::CUDA);
    NCCL_CHECK(
        ncclAllGather(di.data(), dout.data(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()), comm_, stream_));
    finish(out, dout);
  }
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_collective_tensor("reduce_scatter", in);
    LIGER_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
                "reduce_scatter: in %s is not %d x out %s", in.str().c_str(), size_, out.str().c_str());
    Tensor di = on_device(in), dout = out.is_cuda() ? out : Tensor::empty(out.shape(), out.dtype(), Device::CUDA);
    NCCL_CHECK(ncclReduceScatter(di.data(), dout.data(), static_cast<size_t>(out.numel()), nccl_type(in.dtype()),
                                 nccl_op(op), comm_, stream_));
    finish(out, dout);
  }
  void broadcast(Tensor t, int root) override {
    check_collective_tensor("broadcast", t);
    Tensor d = on_device(t);
    NCCL_CHECK(
        ncclBroadcast(d.data(), d.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root, comm_, stream_));
    finish(t, d);
  }
  void barrier() override {
    Tensor one = Tensor::zeros({1}, DType::I32, Device::CUDA);
    all_reduce(one, ReduceOp::Sum);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
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
    NCCL_CHECK(ncclAllReduce(d.data(), d.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                             comm_, stream));
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
  NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  return std::make_unique<NcclCommunicator>(comm, static_cast<cudaStream_t>(stream));
}

}  // namespace liger::dist
