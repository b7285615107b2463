// ops/cuda/matmul.cu — the linear layer and its two gradients on the GPU through cuBLASLt.
//
// cuBLASLt is column-major: it computes D (m, n) = op(A) (m, k) · op(B) (k, n) [+ C]. A row-major (R, C) matrix with
// leading dimension C is, read column-major, its transpose: a (C, R) matrix with ld C. So each row-major product is
// computed as its transpose, with the operands swapped:
//
//   matmul                 out (M, N) = x (M, K) · w (N, K)^T      as  out^T (N, M) = w · x^T
//     A = w    stored (K, N), ld K, TRANSA = T   -> op(A) = w    (N, K)       m = N
//     B = x    stored (K, M), ld K, TRANSB = N   -> op(B) = x^T  (K, M)       n = M, k = K
//     D = out  stored (N, M), ld N
//   matmul_backward_input  dx (M, K) = dout (M, N) · w (N, K)      as  dx^T (K, M) = w^T · dout^T
//     A = w    stored (K, N), ld K, TRANSA = N   -> op(A) = w^T  (K, N)       m = K
//     B = dout stored (N, M), ld N, TRANSB = N   -> op(B) = dout^T (N, M)     n = M, k = N
//     D = dx   stored (K, M), ld K
//   matmul_weight_grad     dw (N, K) = dout (M, N)^T · x (M, K)    as  dw^T (K, N) = x^T · dout
//     A = x    stored (K, M), ld K, TRANSA = N   -> op(A) = x^T  (K, M)       m = K
//     B = dout stored (N, M), ld N, TRANSB = T   -> op(B) = dout (M, N)       n = N, k = M
//     D = dw   stored (K, N), ld K
//
// In general A is stored (k, m) when transposed and (m, k) when not, B (n, k) when transposed and (k, n) when not, D
// (m, n); every leading dimension is the stored row count (the matrices are contiguous). fp32 compute
// (CUBLAS_COMPUTE_32F: no tf32 for f32 inputs), fp32 scale. The descriptors, layouts and the heuristic's algorithm
// are built once per (m, n, k), transposes, dtypes, alignments and handle and kept in one small cache shared by the
// three ops.
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

// The dtype combinations the GPU takes: both inputs of one dtype; f32 -> f32, bf16 -> bf16 or f32, f16 -> f16 or f32.
void check_dtypes(const char* op, const char* inputs, DType a, DType b, DType out) {
  LIGER_CHECK(a == b, "%s: %s must share one dtype, got %s and %s", op, inputs, dtype_name(a), dtype_name(b));
  LIGER_CHECK((a == DType::F32 && out == DType::F32) ||
                  ((a == DType::BF16 || a == DType::F16) && (out == a || out == DType::F32)),
              "%s: %s %s with output %s is not supported on the GPU (f32 -> f32, bf16 -> bf16/f32, f16 -> f16/f32)",
              op, inputs, dtype_name(a), dtype_name(out));
}

// The largest power of two (at most 256) that divides the address: cuBLASLt picks kernels by operand alignment.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// One column-major GEMM D (m, n) = op(A) (m, k) · op(B) (k, n) [+ D] [+ bias (m) per column], as cuBLASLt sees it.
struct PlanKey {
  void* handle;
  int64_t m, n, k;
  bool trans_a, trans_b;
  DType in_dtype, out_dtype;  // A and B share in_dtype
  bool accumulate, bias_epilogue;
  uint32_t align_a, align_b, align_out, align_bias;
  size_t workspace_bytes;
  auto tie() const {
    return std::tie(handle, m, n, k, trans_a, trans_b, in_dtype, out_dtype, accumulate, bias_epilogue, align_a,
                    align_b, align_out, align_bias, workspace_bytes);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// Everything cublasLtMatmul needs besides the pointers.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (out) cublasLtMatrixLayoutDestroy(out);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// `name` is the op that asked, for the error message.
std::unique_ptr<Plan> make_plan(const PlanKey& k, cublasLtHandle_t handle, const char* name) {
  auto plan = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t trans_b = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  if (k.bias_epilogue) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = cuda_type(k.out_dtype);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  const cudaDataType_t it = cuda_type(k.in_dtype), ot = cuda_type(k.out_dtype);
  const auto m = static_cast<uint64_t>(k.m), n = static_cast<uint64_t>(k.n), kk = static_cast<uint64_t>(k.k);
  // Stored (rows, cols) column-major with ld = rows: A (k, m) or (m, k), B (n, k) or (k, n), D (m, n).
  const uint64_t a_rows = k.trans_a ? kk : m, a_cols = k.trans_a ? m : kk;
  const uint64_t b_rows = k.trans_b ? n : kk, b_cols = k.trans_b ? kk : n;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, it, a_rows, a_cols, static_cast<int64_t>(a_rows)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, it, b_rows, b_cols, static_cast<int64_t>(b_rows)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->out, ot, m, n, k.m));

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, decltype(&cublasLtMatmulPreferenceDestroy)> guard(
      pref, &cublasLtMatmulPreferenceDestroy);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &k.workspace_bytes, sizeof(k.workspace_bytes)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k.align_a,
                                                    sizeof(k.align_a)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k.align_b,
                                                    sizeof(k.align_b)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k.align_out,
                                                    sizeof(k.align_out)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k.align_out,
                                                    sizeof(k.align_out)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->a, plan->b, plan->out, plan->out, pref, 1,
                                              &result, &found));
  LIGER_CHECK(found > 0,
              "%s: cuBLASLt has no algorithm for the column-major GEMM (%lld, %lld) = op(A) (%lld, %lld)%s · op(B) "
              "(%lld, %lld)%s with %s inputs and %s output",
              name, static_cast<long long>(k.m), static_cast<long long>(k.n), static_cast<long long>(k.m),
              static_cast<long long>(k.k), k.trans_a ? " transposed" : "", static_cast<long long>(k.k),
              static_cast<long long>(k.n), k.trans_b ? " transposed" : "", dtype_name(k.in_dtype),
              dtype_name(k.out_dtype));
  plan->algo = result.algo;
  return plan;
}

std::mutex g_plans_mutex;
std::map<PlanKey, std::unique_ptr<Plan>> g_plans;  // guarded by g_plans_mutex

// D (m, n) (+)= op(A) · op(B) [+ bias (m) per column] on ctx's stream through the cached plan (the mapping at the
// top of this file). bias, when given, has out_dtype and goes into the cuBLASLt epilogue. m, n, k >= 1.
void gemm(Context& ctx, const char* name, int64_t m, int64_t n, int64_t k, bool trans_a, const void* a, bool trans_b,
          const void* b, DType in_dtype, void* out, DType out_dtype, bool accumulate, const void* bias) {
  auto handle = static_cast<cublasLtHandle_t>(ctx.cublaslt());
  const PlanKey key{ctx.cublaslt(),
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    in_dtype,
                    out_dtype,
                    accumulate,
                    bias != nullptr,
                    alignment_of(a),
                    alignment_of(b),
                    alignment_of(out),
                    bias ? alignment_of(bias) : 0u,
                    ctx.workspace_bytes()};
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  std::lock_guard<std::mutex> lock(g_plans_mutex);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(key, handle, name)).first;
  const Plan& plan = *it->second;
  if (bias) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  CUBLAS_CHECK(cublasLtMatmul(handle, plan.op, &alpha, a, plan.a, b, plan.b, &beta, out, plan.out, out, plan.out,
                              &plan.algo, ctx.workspace(), ctx.workspace_bytes(), stream_of(ctx)));
}

// out (M, N) += bias (N) on every row, in fp32, rounded once.
template <class TO, class TB>
__global__ void add_bias_kernel(TO* out, const TB* bias, int64_t M, int64_t N) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N; i += stride)
    out[i] = from_f32<TO>(to_f32(out[i]) + to_f32(bias[i % N]));
}

}  // namespace

void matmul(Context& ctx, Tensor out, const Tensor& x, const Tensor& w, const Tensor* bias, bool accumulate) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const DType xt = x.dtype(), ot = out.dtype();
  check_dtypes("matmul", "x/w", xt, w.dtype(), ot);
  LIGER_CHECK(!bias || is_float_dtype(bias->dtype()), "matmul: bias must be f32, bf16 or f16");
  if (M == 0 || N == 0) return;
  LIGER_CHECK(K > 0, "matmul: inner dimension K = 0");
  const bool bias_epilogue = bias && bias->dtype() == ot;
  // out^T (N, M) = w · x^T: A = w transposed, B = x.
  gemm(ctx, "matmul", N, M, K, /*trans_a=*/true, w.data(), /*trans_b=*/false, x.data(), xt, out.data(), ot, accumulate,
       bias_epilogue ? bias->data() : nullptr);
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

void matmul_backward_input(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& w, bool accumulate) {
  const char* name = "matmul_backward_input";
  const int64_t M = dout.dim(0), N = dout.dim(1), K = w.dim(1);
  check_dtypes(name, "dout/w", dout.dtype(), w.dtype(), dx.dtype());
  if (M == 0 || K == 0) return;
  if (N == 0) {  // an empty sum: dx = 0, or dx unchanged (0 bytes are +0 in f32, bf16 and f16)
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(dx.data(), 0, dx.nbytes(), stream_of(ctx)));
    return;
  }
  // dx^T (K, M) = w^T · dout^T: A = w, B = dout, neither transposed.
  gemm(ctx, name, K, M, N, /*trans_a=*/false, w.data(), /*trans_b=*/false, dout.data(), dout.dtype(), dx.data(),
       dx.dtype(), accumulate, nullptr);
}

void matmul_weight_grad(Context& ctx, Tensor dw, const Tensor& dout, const Tensor& x, bool accumulate) {
  const char* name = "matmul_weight_grad";
  const int64_t M = dout.dim(0), N = dout.dim(1), K = x.dim(1);
  check_dtypes(name, "dout/x", dout.dtype(), x.dtype(), dw.dtype());
  if (N == 0 || K == 0) return;
  if (M == 0) {  // no rows: dw = 0, or dw unchanged
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(dw.data(), 0, dw.nbytes(), stream_of(ctx)));
    return;
  }
  // dw^T (K, N) = x^T · dout: A = x, B = dout transposed.
  gemm(ctx, name, K, N, M, /*trans_a=*/false, x.data(), /*trans_b=*/true, dout.data(), dout.dtype(), dw.data(),
       dw.dtype(), accumulate, nullptr);
}

}  // namespace liger::ops::cuda
