// core/arena.h — a bump allocator over one allocation, for memory whose lifetime is one purpose (weights,
// activations, KV cache, scratch). Sized up front; alloc() never touches the system allocator; peak use is
// reported so the program can print MiB per arena at start-up.
#pragma once

#include <string>

#include "core/tensor.h"

namespace liger {

class Arena {
 public:
  Arena() = default;
  Arena(std::string name, Device device, size_t capacity_bytes);

  // A tensor carved from the arena, 256-byte aligned. Throws (naming the arena) when it does not fit.
  Tensor alloc(Shape shape, DType dtype);
  // Forget every allocation (the memory stays reserved); tensors handed out before must not be used after.
  void reset() { used_ = 0; }

  const std::string& name() const { return name_; }
  Device device() const { return device_; }
  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }

  static constexpr size_t kAlign = 256;
  // Bytes an allocation of this shape/dtype takes, alignment included (for sizing arenas from tables).
  static size_t footprint(Shape shape, DType dtype);

 private:
  std::string name_;
  Device device_ = Device::CPU;
  size_t capacity_ = 0;
  size_t used_ = 0;
  size_t peak_ = 0;
  Tensor block_;
};

}  // namespace liger
