// ops/cuda/matmul.cu — the linear layer on the GPU through cuBLASLt.
//
// Row-major out (M, N) = x (M, K) · w (N, K)^T is, read column-major, out^T (N, M) = w · x^T: A = w as a (K, N)
// column-major matrix with ld K, transposed; B = x as (K, M) with ld K, not transposed; C = D = out as (N, M) with
// ld N. fp32 compute (CUBLAS_COMPUTE_32F: no tf32 for f32 inputs), fp32 scale. The descriptors, layouts and the
// heuristic's algorithm are built once per shape, dtypes, alignment and handle and kept in a small cache.
#include <cublasLt.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "ops/cuda/common.cuh"
#include "ops/matmul.h"

namespace liger::ops::cuda {
namespace {

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: LIGER_FAIL("matmul: dtype %s is not supported on the GPU", dtype_name(dt));
  }
}

// The largest power of two (at most 256) that divides the address: cuBLASLt picks kernels by operand alignment.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

struct PlanKey {
  void* handle;
  int64_t M, N, K;
  DType x_dtype, out_dtype;
  bool accumulate, bias_epilogue;
  uint32_t align_w, align_x, align_out, align_bias;
  size_t workspace_bytes;
  auto tie() const {
    return std::tie(handle, M, N, K, x_dtype, out_dtype, accumulate, bias_epilogue, align_w, align_x, align_out,
                    align_bias, workspace_bytes);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// Everything cublasLtMatmul needs besides the pointers.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (out) cublasLtMatrixLayoutDestroy(out);
    if (x) cublasLtMatrixLayoutDestroy(x);
    if (w) cublasLtMatrixLayoutDestroy(w);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

std::unique_ptr<Plan> make_plan(const PlanKey& k, cublasLtHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x, sizeof(trans_x)));
  if (k.bias_epilogue) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = cuda_type(k.out_dtype);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  const cudaDataType_t xt = cuda_type(k.x_dtype), ot = cuda_type(k.out_dtype);
  const auto K = static_cast<uint64_t>(k.K), N = static_cast<uint64_t>(k.N), M = static_cast<uint64_t>(k.M);
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->w, xt, K, N, k.K));    // w (N, K) row-major
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->x, xt, K, M, k.K));    // x (M, K) row-major
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->out, ot, N, M, k.N));  // out (M, N) row-major

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, decltype(&cublasLtMatmulPreferenceDestroy)> guard(
      pref, &cublasLtMatmulPreferenceDestroy);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &k.workspace_bytes, sizeof(k.workspace_bytes)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k.align_w,
                                                    sizeof(k.align_w)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k.align_x,
                                                    sizeof(k.align_x)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k.align_out,
                                                    sizeof(k.align_out)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k.align_out,
                                                    sizeof(k.align_out)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->w, plan->x, plan->out, plan->out, pref, 1,
                                              &result, &found));
  LIGER_CHECK(found > 0, "matmul: cuBLASLt has no algorithm for x (%lld, %lld) %s, w (%lld, %lld), out %s",
              static_cast<long long>(k.M), static_cast<long long>(k.K), dtype_name(k.x_dtype),
              static_cast<long long>(k.N), static_cast<long long>(k.K), dtype_name(k.out_dtype));
  plan->algo = result.algo;
  return plan;
}

// out (M, N) += bias (N) on every row, in fp32, rounded once.
template <class TO, class TB>
__global__ void add_bias_kernel(TO* out, const TB* bias, int64_t M, int64_t N) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N; i += stride)
    out[i] = from_f32<TO>(to_f32(out[i]) + to_f32(bias[i % N]));
}

std::mutex g_plans_mutex;
std::map<PlanKey, std::unique_ptr<Plan>> g_plans;  // guarded by g_plans_mutex

}  // namespace

void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const DType xt = x.dtype(), ot = out.dtype();
  LIGER_CHECK((xt == DType::F32 && ot == DType::F32) ||
                  ((xt == DType::BF16 || xt == DType::F16) && (ot == xt || ot == DType::F32)),
              "matmul: x/w %s with out %s is not supported on the GPU (f32 -> f32, bf16 -> bf16/f32, f16 -> f16/f32)",
              dtype_name(xt), dtype_name(ot));
  LIGER_CHECK(!bias || is_float_dtype(bias->dtype()), "matmul: bias must be f32, bf16 or f16");
  if (M == 0 || N == 0) return;
  LIGER_CHECK(K > 0, "matmul: inner dimension K = 0");
  const bool bias_epilogue = bias && bias->dtype() == ot;
  auto handle = static_cast<cublasLtHandle_t>(ctx.cublaslt());
  const PlanKey key{ctx.cublaslt(),
                    M,
                    N,
                    K,
                    xt,
                    ot,
                    accumulate,
                    bias_epilogue,
                    alignment_of(w.data()),
                    alignment_of(x.data()),
                    alignment_of(out.data()),
                    bias_epilogue ? alignment_of(bias->data()) : 0u,
                    ctx.workspace_bytes()};
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  {
    std::lock_guard<std::mutex> lock(g_plans_mutex);
    auto it = g_plans.find(key);
    if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(key, handle)).first;
    const Plan& plan = *it->second;
    if (bias_epilogue) {
      const void* bias_ptr = bias->data();
      CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr)));
    }
    CUBLAS_CHECK(cublasLtMatmul(handle, plan.op, &alpha, w.data(), plan.w, x.data(), plan.x, &beta, out.data(),
                                plan.out, out.data(), plan.out, &plan.algo, ctx.workspace(), ctx.workspace_bytes(),
                                stream_of(ctx)));
  }
  if (bias && !bias_epilogue) {
    dispatch_float(ot, "matmul", [&](auto otag) {
      dispatch_float(bias->dtype(), "matmul bias", [&](auto btag) {
        using TO = typename decltype(otag)::type;
        using TB = typename decltype(btag)::type;
        constexpr int kThreads = 256;
        add_bias_kernel<TO, TB><<<grid_for(M * N, kThreads), kThreads, 0, stream_of(ctx)>>>(
            out.ptr<TO>(), bias->ptr<TB>(), M, N);
        CUDA_CHECK_LAUNCH();
      });
    });
  }
}

}  // namespace liger::ops::cuda
