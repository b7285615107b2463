// core/tensor.h — a contiguous, typed, device-tagged block of memory with a shape.
//
// A Tensor is a view: {data pointer, shape, dtype, device} plus an optional shared owner that keeps the memory
// alive. Views made by view()/slice()/row() share the owner. All tensors are contiguous (row-major); there are no
// strides, so every op can treat a tensor as a flat array with known extents.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace liger {

constexpr int kMaxDims = 6;

struct Shape {
  std::array<int64_t, kMaxDims> d{};
  int n = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);
  int64_t operator[](int i) const { return d[static_cast<size_t>(i < 0 ? i + n : i)]; }
  int ndim() const { return n; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "(2, 3, 4)"
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(void* data, Shape shape, DType dtype, Device device, std::shared_ptr<void> owner = {})
      : data_(data), shape_(shape), dtype_(dtype), device_(device), owner_(std::move(owner)) {}

  // A fresh owning allocation (uninitialized). CUDA memory comes from cudaMalloc on the current device.
  static Tensor empty(Shape shape, DType dtype, Device device);
  static Tensor zeros(Shape shape, DType dtype, Device device);
  // CPU tensors from host values.
  static Tensor from_f32(Shape shape, const std::vector<float>& values);
  static Tensor from_i32(Shape shape, const std::vector<int32_t>& values);

  bool defined() const { return data_ != nullptr || shape_.n > 0; }
  void* data() const { return data_; }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data_); }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int ndim() const { return shape_.n; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::CUDA; }

  // Same memory, new shape with the same number of elements.
  Tensor view(Shape shape) const;
  // Rows [start, start + len) along dim 0.
  Tensor slice(int64_t start, int64_t len) const;
  // Row i along dim 0, with dim 0 removed.
  Tensor row(int64_t i) const;

  // A copy on another device and/or in another dtype (floating types convert; integers only copy).
  Tensor to(Device device) const;
  Tensor to(Device device, DType dtype) const;
  // Host values as float (any floating dtype) / int64 (any integer dtype).
  std::vector<float> to_f32_vector() const;
  std::vector<int64_t> to_i64_vector() const;

  std::string str() const;  // "bf16 cuda (2, 3)"

 private:
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  std::shared_ptr<void> owner_;
};

// Columns [c0, c0 + n) of a 2-D host tensor as a new (rows, n) host tensor of its dtype (the tensor-parallel slices
// of a matrix split by columns).
Tensor column_block(const Tensor& host, int64_t c0, int64_t n);

// t = 0 (all bytes zero), in place; stream-ordered on the GPU (no host wait).
void set_zero(Tensor t);

// dst = src, for equal shapes (or equal numel); converts dtype and crosses devices as needed.
void copy(Tensor dst, const Tensor& src);

// Byte accounting per device: current and peak bytes held by liger allocations (Tensor::empty, arenas).
struct MemStats {
  size_t current = 0;
  size_t peak = 0;
};
MemStats mem_stats(Device device);
void reset_peak(Device device);

bool cuda_available();
int cuda_device_count();  // visible CUDA devices (0 without CUDA)  // true when built with CUDA and a device is present

}  // namespace liger
