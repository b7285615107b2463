// dist/mpi_comm.cpp — the MPI backend: host tensors through an MPI communicator (device tensors staged through the
// host). MPI_ERRORS_RETURN is set on every communicator, and every call is checked: a failure is a liger::Error
// naming the call and MPI's message, never an abort deep inside MPI.
#include <mpi.h>

#include "core/check.h"
#include "dist/comm_backends.h"

#define MPI_CHECK(stmt)                                                                               \
  do {                                                                                                \
    int rc_ = (stmt);                                                                                 \
    if (rc_ != MPI_SUCCESS) {                                                                         \
      char msg_[MPI_MAX_ERROR_STRING];                                                                \
      int len_ = 0;                                                                                   \
      MPI_Error_string(rc_, msg_, &len_);                                                             \
      ::liger::detail::fail(__FILE__, __LINE__, ::liger::strfmt("MPI error in %s: %s", #stmt, msg_)); \
    }                                                                                                 \
  } while (0)

namespace liger::dist {

namespace {

MPI_Datatype mpi_type(DType d, const char* op) {
  switch (d) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I32:
      return MPI_INT32_T;
    case DType::I64:
      return MPI_INT64_T;
    default:
      LIGER_FAIL("%s: the MPI backend carries f32, f64, i32 and i64 tensors, not %s", op, dtype_name(d));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return MPI_SUM;
    case ReduceOp::Max:
      return MPI_MAX;
    case ReduceOp::Min:
      return MPI_MIN;
  }
  return MPI_SUM;
}

int count_of(const Tensor& t, const char* op) {
  LIGER_CHECK(t.numel() <= INT32_MAX, "%s: %lld elements exceed one MPI call", op, static_cast<long long>(t.numel()));
  return static_cast<int>(t.numel());
}

// A host tensor with t's contents (t itself when it already is one).
Tensor on_host(const Tensor& t) {
  return t.device() == Device::CPU ? t : t.to(Device::CPU);
}
void back_to(Tensor dst, const Tensor& host) {
  if (dst.data() != host.data()) copy(dst, host);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  Backend backend() const override { return Backend::Mpi; }

  void all_reduce(Tensor t, ReduceOp op) override {
    check_collective_tensor("all_reduce", t);
    Tensor h = on_host(t);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, h.data(), count_of(h, "all_reduce"), mpi_type(h.dtype(), "all_reduce"),
                            mpi_op(op), comm_));
    back_to(t, h);
  }
  void all_gather(Tensor out, const Tensor& in) override {
    check_collective_tensor("all_gather", in);
    LIGER_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
                "all_gather: out %s does not hold %d x in %s", out.str().c_str(), size_, in.str().c_str());
    Tensor hi = on_host(in),
           ho = out.device() == Device::CPU ? out : Tensor::empty(out.shape(), out.dtype(), Device::CPU);
    const MPI_Datatype ty = mpi_type(in.dtype(), "all_gather");
    MPI_CHECK(
        MPI_Allgather(hi.data(), count_of(hi, "all_gather"), ty, ho.data(), count_of(hi, "all_gather"), ty, comm_));
    back_to(out, ho);
  }
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_collective_tensor("reduce_scatter", in);
    LIGER_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
                "reduce_scatter: in %s is not %d x out %s", in.str().c_str(), size_, out.str().c_str());
    Tensor hi = on_host(in),
           ho = out.device() == Device::CPU ? out : Tensor::empty(out.shape(), out.dtype(), Device::CPU);
    MPI_CHECK(MPI_Reduce_scatter_block(hi.data(), ho.data(), count_of(ho, "reduce_scatter"),
                                       mpi_type(in.dtype(), "reduce_scatter"), mpi_op(op), comm_));
    back_to(out, ho);
  }
  void broadcast(Tensor t, int root) override {
    check_collective_tensor("broadcast", t);
    Tensor h = on_host(t);
    MPI_CHECK(MPI_Bcast(h.data(), count_of(h, "broadcast"), mpi_type(h.dtype(), "broadcast"), root, comm_));
    back_to(t, h);
  }
  void barrier() override { MPI_CHECK(MPI_Barrier(comm_)); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    return std::make_unique<MpiCommunicator>(sub, true);
  }

 private:
  MPI_Comm comm_;
  bool owned_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, false);
}

}  // namespace liger::dist
