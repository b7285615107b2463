#include "dist/communicator.h"

#include <cstring>

#include "core/check.h"

namespace liger::dist {

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::Local:
      return "local";
    case Backend::Mpi:
      return "mpi";
    case Backend::Nccl:
      return "nccl";
  }
  return "?";
}

void check_collective_tensor(const char* op, const Tensor& t) {
  LIGER_CHECK(t.defined(), "%s: undefined tensor", op);
  const DType d = t.dtype();
  LIGER_CHECK(d == DType::F32 || d == DType::F64 || d == DType::I32 || d == DType::I64 || d == DType::BF16,
              "%s: dtype %s cannot travel through a collective", op, dtype_name(d));
}

double Communicator::all_reduce_value(double v, ReduceOp op) {
  Tensor t = Tensor::empty({1}, DType::F64, Device::CPU);
  t.ptr<double>()[0] = v;
  all_reduce(t, op);
  return t.ptr<double>()[0];
}

int64_t Communicator::all_reduce_value(int64_t v, ReduceOp op) {
  Tensor t = Tensor::empty({1}, DType::I64, Device::CPU);
  t.ptr<int64_t>()[0] = v;
  all_reduce(t, op);
  return t.ptr<int64_t>()[0];
}

std::vector<double> Communicator::all_gather_values(const std::vector<double>& mine) {
  const int64_t n = static_cast<int64_t>(mine.size());
  Tensor in = Tensor::empty({n}, DType::F64, Device::CPU);
  if (n) std::memcpy(in.data(), mine.data(), static_cast<size_t>(n) * sizeof(double));
  Tensor out = Tensor::empty({n * size()}, DType::F64, Device::CPU);
  if (n) all_gather(out, in);
  return std::vector<double>(out.ptr<double>(), out.ptr<double>() + n * size());
}

namespace {

// One process: every reduction is the identity, a gather a copy.
class LocalCommunicator final : public Communicator {
 public:
  Backend backend() const override { return Backend::Local; }
  void all_reduce(Tensor t, ReduceOp) override { check_collective_tensor("all_reduce", t); }
  void all_gather(Tensor out, const Tensor& in) override {
    check_collective_tensor("all_gather", in);
    LIGER_CHECK(out.numel() == in.numel() && out.dtype() == in.dtype(), "all_gather: out %s does not fit in %s",
                out.str().c_str(), in.str().c_str());
    if (out.data() != in.data()) copy(out, in.view(out.shape()));
  }
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp) override {
    LIGER_CHECK(out.numel() == in.numel() && out.dtype() == in.dtype(), "reduce_scatter: out %s does not fit in %s",
                out.str().c_str(), in.str().c_str());
    if (out.data() != in.data()) copy(out, in.view(out.shape()));
  }
  void broadcast(Tensor t, int root) override {
    check_collective_tensor("broadcast", t);
    LIGER_CHECK(root == 0, "broadcast: root %d outside a one-rank communicator", root);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace liger::dist
