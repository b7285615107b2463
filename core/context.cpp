#include "core/context.h"

#include <cstdio>
#include <cstring>
#include <utility>

#include "core/check.h"
#ifdef LIGER_CUDA
#include "core/cuda_check.h"
#endif

namespace liger {

Context::Context(Context&& o) noexcept { *this = std::move(o); }

Context& Context::operator=(Context&& o) noexcept {
  std::swap(device_, o.device_);
  std::swap(cuda_device_, o.cuda_device_);
  std::swap(stream_, o.stream_);
  std::swap(cublaslt_, o.cublaslt_);
  std::swap(workspace_, o.workspace_);
  std::swap(workspace_bytes_, o.workspace_bytes_);
  char tmp[sizeof(label_)];
  std::memcpy(tmp, label_, sizeof(label_));
  std::memcpy(label_, o.label_, sizeof(label_));
  std::memcpy(o.label_, tmp, sizeof(label_));
  return *this;
}

Context Context::cuda(int device) {
#ifdef LIGER_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    LIGER_FAIL("--device cuda: no CUDA device is available (%s); use --device cpu",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
  }
  LIGER_CHECK(device >= 0 && device < n, "CUDA device %d does not exist (%d present)", device, n);
  Context c;
  c.device_ = Device::CUDA;
  c.cuda_device_ = device;
  CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s;
  // A blocking stream: plain cudaMemcpy on the legacy default stream (tensor copies) stays ordered with it.
  CUDA_CHECK(cudaStreamCreate(&s));
  c.stream_ = s;
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  c.cublaslt_ = lt;
  c.workspace_bytes_ = 32u << 20;
  CUDA_CHECK(cudaMalloc(&c.workspace_, c.workspace_bytes_));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::snprintf(c.label_, sizeof(c.label_), "%s", prop.name);
  return c;
#else
  (void)device;
  LIGER_FAIL("--device cuda: this liger was built without CUDA (rebuild with -DLIGER_CUDA=ON)");
#endif
}

Context::~Context() {
#ifdef LIGER_CUDA
  if (device_ == Device::CUDA) {
    if (stream_) cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    if (workspace_) cudaFree(workspace_);
    if (cublaslt_) cublasLtDestroy(static_cast<cublasLtHandle_t>(cublaslt_));
    if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }
#endif
}

void Context::synchronize() const {
#ifdef LIGER_CUDA
  if (device_ == Device::CUDA) CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
#endif
}

const char* Context::device_label() const { return label_; }

}  // namespace liger
