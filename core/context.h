// core/context.h — where ops run: the device, and on CUDA the stream, the cuBLASLt handle and its workspace.
// Passed explicitly to every op; never a global. Creating a CUDA context selects the device.
#pragma once

#include <cstddef>

#include "core/dtype.h"

namespace liger {

class Context {
 public:
  static Context cpu() { return Context(); }
  // Selects CUDA device `device`, creates a stream, a cuBLASLt handle and a 32 MiB workspace.
  static Context cuda(int device = 0);

  Context() = default;
  Context(Context&& o) noexcept;
  Context& operator=(Context&& o) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::CUDA; }
  int cuda_device() const { return cuda_device_; }
  // CUDA handles as opaque pointers so this header needs no CUDA include (cast in ops/cuda).
  void* stream() const { return stream_; }            // cudaStream_t
  void* cublaslt() const { return cublaslt_; }        // cublasLtHandle_t
  // Scratch shared by every op on this stream: cuBLASLt's workspace, sampling probabilities, split-key attention
  // partials. Ops are ordered on the one stream, so one op's use ends before the next begins; nothing may keep data
  // in it across op calls.
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  // Waits for all work queued on the stream (no-op on the CPU).
  void synchronize() const;
  // Device name for reports ("cpu" or the CUDA device name).
  const char* device_label() const;

 private:
  Device device_ = Device::CPU;
  int cuda_device_ = -1;
  void* stream_ = nullptr;
  void* cublaslt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  char label_[256] = "cpu";  // cudaDeviceProp::name is 256 bytes
};

}  // namespace liger
