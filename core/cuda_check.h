// core/cuda_check.h — CUDA_CHECK / CUBLAS_CHECK: turn a failed CUDA or cuBLAS call into liger::Error with the
// failing statement, file:line and device. Include only from CUDA-enabled translation units.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/check.h"

namespace liger::detail {
[[noreturn]] void cuda_fail(cudaError_t e, const char* stmt, const char* file, int line);
[[noreturn]] void cublas_fail(cublasStatus_t s, const char* stmt, const char* file, int line);
}  // namespace liger::detail

#define CUDA_CHECK(stmt)                                                                   \
  do {                                                                                     \
    cudaError_t e_ = (stmt);                                                               \
    if (e_ != cudaSuccess) ::liger::detail::cuda_fail(e_, #stmt, __FILE__, __LINE__);      \
  } while (0)

#define CUBLAS_CHECK(stmt)                                                                 \
  do {                                                                                     \
    cublasStatus_t s_ = (stmt);                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS) ::liger::detail::cublas_fail(s_, #stmt, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: report a bad launch configuration at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
