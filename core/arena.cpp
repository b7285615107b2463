#include "core/arena.h"

#include "core/check.h"

namespace liger {

Arena::Arena(std::string name, Device device, size_t capacity_bytes)
    : name_(std::move(name)), device_(device), capacity_(capacity_bytes) {
  int64_t words = static_cast<int64_t>((capacity_bytes + 3) / 4);
  block_ = Tensor::empty({words}, DType::F32, device);
}

size_t Arena::footprint(Shape shape, DType dtype) {
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  return (bytes + kAlign - 1) / kAlign * kAlign;
}

Tensor Arena::alloc(Shape shape, DType dtype) {
  size_t bytes = footprint(shape, dtype);
  LIGER_CHECK(used_ + bytes <= capacity_,
              "arena '%s' is full: %s %s needs %.2f MiB, %.2f of %.2f MiB used", name_.c_str(),
              dtype_name(dtype), shape.str().c_str(), bytes / 1048576.0, used_ / 1048576.0, capacity_ / 1048576.0);
  void* p = static_cast<char*>(block_.data()) + used_;
  used_ += bytes;
  if (used_ > peak_) peak_ = used_;
  return Tensor(p, shape, dtype, device_);
}

}  // namespace liger
