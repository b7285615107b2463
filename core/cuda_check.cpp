#include "core/cuda_check.h"

namespace liger::detail {

void cuda_fail(cudaError_t e, const char* stmt, const char* file, int line) {
  int dev = -1;
  cudaGetDevice(&dev);
  cudaGetLastError();
  fail(file, line, strfmt("CUDA error %s (%s) in %s at %s:%d on device %d", cudaGetErrorName(e),
                          cudaGetErrorString(e), stmt, file, line, dev));
}

void cublas_fail(cublasStatus_t s, const char* stmt, const char* file, int line) {
  fail(file, line, strfmt("cuBLAS error %d in %s at %s:%d", static_cast<int>(s), stmt, file, line));
}

}  // namespace liger::detail
