// ops/cuda/backward.cu — the backward passes of rmsnorm, swiglu, rope, softmax and attention on the GPU.
//
// Every kernel computes in fp32 whatever the storage type and rounds once when it stores. None uses atomics: each
// output element is written by one thread, from sums taken in a fixed order, so results are deterministic.
//
// attention_backward is FlashAttention-2 shaped, one warp per row, scores recomputed (no (T, T) matrix is stored):
//   attention_dq_kernel, a warp per query row (b, t, h): pass 1 over the keys it sees keeps the online softmax (running
//     max m, sum l) and the output o = sum_s p_s v_s; it stores (m, 1/l, delta = dout . o) for kernel 2; pass 2
//     recomputes p_s and accumulates dq = scale sum_s p_s (dout . v_s - delta) k_s.
//   attention_dkv_kernel, a warp per key row (b, s, KV head j): walks the queries t that see s, for each query head of
//     the group, and accumulates dk_s = scale sum ds q_t and dv_s = sum p dout_t.
// In both, lane l owns the head dimensions l, l + 32, l + 64, ... (DPL of them, HS <= 32 * DPL).
// bf16 / f16 with HS 64 or 128 (16-byte aligned tensors) take the tensor-core kernels of ops/cuda/attention_bwd_mma.cu
// instead, same split and same statistics; these FMA kernels serve every other case (f32, other head sizes).
#include <algorithm>
#include <initializer_list>

#include "ops/attention.h"
#include "ops/cuda/common.cuh"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"

namespace liger::ops::cuda {

// ops/cuda/attention_bwd_mma.cu: the tensor-core attention backward; false (nothing launched) when the tensors do not
// qualify (dtype, head size, alignment). stats: (B, T, H) x 4 floats of scratch, 16-byte aligned.
bool attention_backward_mma(const Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                            const Tensor& k, const Tensor& v, float scale, int64_t window, float* stats);

namespace {

constexpr int kThreads = 256;
// Rows of at most this width get one warp each (kThreads / 32 rows per block); wider rows get the whole block.
constexpr int64_t kWarpRowMax = 1024;

// The GPU backward kernels take one storage type for all their tensors.
void check_one_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  const DType first = (*ts.begin())->dtype();
  for (const Tensor* t : ts) {
    LIGER_CHECK(t->dtype() == first, "%s: tensors mix %s and %s; on the GPU all must share one dtype", op,
                dtype_name(first), dtype_name(t->dtype()));
  }
}

// Launch geometry of a row op over (N, D): a warp per row for D <= kWarpRowMax, else a block per row.
struct RowLaunch {
  int row_threads;
  unsigned grid;
};
RowLaunch row_launch(int64_t N, int64_t D) {
  const int row_threads = D <= kWarpRowMax ? 32 : kThreads;
  const int64_t rows_per_block = kThreads / row_threads;
  const int64_t blocks = (N + rows_per_block - 1) / rows_per_block;
  return {row_threads, static_cast<unsigned>(blocks < 65535 ? blocks : 65535)};
}

// ---- rmsnorm -------------------------------------------------------------------------------------------------------

// dx (N, D) += r w dout - x r^3 / D sum_j(dout_j w_j x_j), r = 1 / sqrt(mean(x^2) + eps), per row of x (N, D),
// dout (N, D), w (D). `row_threads` is 32 (a warp per row) or blockDim.x (a block per row).
template <class T>
__global__ void rmsnorm_backward_kernel(T* dx, const T* dout, const T* x, const T* w, int64_t N, int64_t D, float eps,
                                        int row_threads) {
  __shared__ float scratch[32];
  const int64_t rows_per_block = blockDim.x / row_threads;
  const int t = threadIdx.x % row_threads;
  // Every thread of the block runs the same number of iterations (block_sum needs them all).
  for (int64_t group = blockIdx.x; group * rows_per_block < N; group += gridDim.x) {
    const int64_t n = group * rows_per_block + threadIdx.x / row_threads;
    const bool live = n < N;
    const int64_t off = (live ? n : 0) * D;
    float ss = 0.0f, dot = 0.0f;  // sum x^2, sum dout w x
    if (live)
      for (int64_t i = t; i < D; i += row_threads) {
        const float xv = to_f32(x[off + i]);
        ss = fmaf(xv, xv, ss);
        dot = fmaf(to_f32(dout[off + i]) * to_f32(w[i]), xv, dot);
      }
    if (row_threads == 32) {
      ss = warp_sum(ss);
      dot = warp_sum(dot);
    } else {
      ss = block_sum(ss, scratch);
      dot = block_sum(dot, scratch);
    }
    if (!live) continue;
    const float r = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
    const float c = r * r * r * dot / static_cast<float>(D);
    for (int64_t i = t; i < D; i += row_threads) {
      const float g = r * to_f32(w[i]) * to_f32(dout[off + i]) - to_f32(x[off + i]) * c;
      dx[off + i] = from_f32<T>(to_f32(dx[off + i]) + g);
    }
  }
}

// ---- softmax -------------------------------------------------------------------------------------------------------

// dx (N, V) = y (dy - sum_j(dy_j y_j)) per row of dy, y (N, V). dx may alias dy: a thread reads exactly the elements
// it later writes, and reads them all before the row's sum is known.
template <class T>
__global__ void softmax_backward_kernel(T* dx, const T* dy, const T* y, int64_t N, int64_t V, int row_threads) {
  __shared__ float scratch[32];
  const int64_t rows_per_block = blockDim.x / row_threads;
  const int t = threadIdx.x % row_threads;
  for (int64_t group = blockIdx.x; group * rows_per_block < N; group += gridDim.x) {
    const int64_t n = group * rows_per_block + threadIdx.x / row_threads;
    const bool live = n < N;
    const int64_t off = (live ? n : 0) * V;
    float dot = 0.0f;
    if (live)
      for (int64_t i = t; i < V; i += row_threads) dot = fmaf(to_f32(dy[off + i]), to_f32(y[off + i]), dot);
    dot = row_threads == 32 ? warp_sum(dot) : block_sum(dot, scratch);
    if (!live) continue;
    for (int64_t i = t; i < V; i += row_threads) {
      const float yv = to_f32(y[off + i]);
      dx[off + i] = from_f32<T>(yv * (to_f32(dy[off + i]) - dot));
    }
  }
}

// ---- swiglu --------------------------------------------------------------------------------------------------------

// s = sigmoid(g): dgate = dy u s (1 + g (1 - s)), dup = dy silu(g) = dy g s, in the CPU twin's order of operations.
// exp(-g) overflows to inf for g << 0: s = 0, no NaN.
__device__ __forceinline__ void swiglu_grad(float g, float u, float dy, float& dg, float& du) {
  const float s = 1.0f / (1.0f + expf(-g));
  dg = dy * u * s * (1.0f + g * (1.0f - s));
  du = dy * g * s;
}

// dgate, dup (n) from dout, gate, up (n), VEC elements per access (the tail, n % VEC, element by element). All inputs
// of an element are loaded before its outputs are stored: dgate may alias gate or dout, dup may alias up or dout.
template <class T, int VEC>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nv = n / VEC;
  for (int64_t i = first; i < nv; i += stride) {
    const Vec<T, VEC> g = reinterpret_cast<const Vec<T, VEC>*>(gate)[i];
    const Vec<T, VEC> u = reinterpret_cast<const Vec<T, VEC>*>(up)[i];
    const Vec<T, VEC> dy = reinterpret_cast<const Vec<T, VEC>*>(dout)[i];
    Vec<T, VEC> dg, du;
#pragma unroll
    for (int e = 0; e < VEC; e++) {
      float a, b;
      swiglu_grad(to_f32(g.v[e]), to_f32(u.v[e]), to_f32(dy.v[e]), a, b);
      dg.v[e] = from_f32<T>(a);
      du.v[e] = from_f32<T>(b);
    }
    reinterpret_cast<Vec<T, VEC>*>(dgate)[i] = dg;
    reinterpret_cast<Vec<T, VEC>*>(dup)[i] = du;
  }
  for (int64_t i = nv * VEC + first; i < n; i += stride) {
    float a, b;
    swiglu_grad(to_f32(gate[i]), to_f32(up[i]), to_f32(dout[i]), a, b);
    dgate[i] = from_f32<T>(a);
    dup[i] = from_f32<T>(b);
  }
}

// ---- rope ----------------------------------------------------------------------------------------------------------

// dx (N, NH, HS) rotated in place by -a; one thread per (token n, frequency i < HS/2), looping over the NH heads. The
// angle exactly as rope_kernel (ops/cuda/rope.cu) computes it: a = pos * inv_freq[i] in fp32, full-precision sincosf.
template <class T>
__global__ void rope_backward_kernel(T* dx, const int32_t* positions, const float* inv_freq, int64_t N, int64_t NH,
                                     int64_t half) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < N * half; g += stride) {
    const int64_t n = g / half, i = g % half;
    const float a = static_cast<float>(positions[n]) * inv_freq[i];
    float s, c;
    sincosf(a, &s, &c);
    T* p = dx + n * NH * 2 * half + i;
    for (int64_t h = 0; h < NH; h++, p += 2 * half) {
      const float x1 = to_f32(p[0]), x2 = to_f32(p[half]);
      p[0] = from_f32<T>(x1 * c + x2 * s);
      p[half] = from_f32<T>(x2 * c - x1 * s);
    }
  }
}

// ---- attention -----------------------------------------------------------------------------------------------------

struct AttnBwdParams {
  int64_t B, T, H, HKV, HS, G;  // q, dout, dq (B, T, H, HS); k, v, dk, dv (B, T, HKV, HS); G = H / HKV
  int64_t window;               // 0 = unlimited
  float scale;
};

// What attention_dq_kernel leaves for attention_dkv_kernel, per query row (b, t, h): the row's max score m, the
// inverse of its softmax sum 1 / l (so p_s = exp(scale q . k_s - m) / l), and delta = dout . o = sum_s p_s dp_s.
struct alignas(16) RowStats {
  float m, inv_l, delta, unused;
};

// x[c] for the dimensions c = lane + 32 i (i < DPL) this lane owns; 0 beyond HS.
template <int DPL, class T>
__device__ __forceinline__ void load_row(float (&r)[DPL], const T* x, int lane, int64_t HS) {
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    const int64_t c = lane + 32 * i;
    r[i] = c < HS ? to_f32(x[c]) : 0.0f;
  }
}
template <int DPL, class T>
__device__ __forceinline__ void store_row(T* x, const float (&r)[DPL], float mul, int lane, int64_t HS) {
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    const int64_t c = lane + 32 * i;
    if (c < HS) x[c] = from_f32<T>(r[i] * mul);
  }
}
// a . b over the warp: this lane's share in a fixed order, then the butterfly sum (the same value in every lane).
template <int DPL>
__device__ __forceinline__ float warp_dot(const float (&a)[DPL], const float (&b)[DPL]) {
  float d = 0.0f;
#pragma unroll
  for (int i = 0; i < DPL; i++) d = fmaf(a[i], b[i], d);
  return warp_sum(d);
}
// scale * q . k; __fmul_rn is never fused with a later add, so each pass and both kernels get the same score bit for
// bit (the row max m of pass 1 bounds every recomputed score: p <= 1 / l).
template <int DPL>
__device__ __forceinline__ float score(const float (&q)[DPL], const float (&k)[DPL], float scale) {
  return __fmul_rn(warp_dot(q, k), scale);
}

// dq (B, T, H, HS) and stats (B, T, H) from dout, q (B, T, H, HS), k, v (B, T, HKV, HS); a warp per query row, rows in
// reverse order (the rows of late queries see the most keys and start first).
template <class T, int DPL>
__global__ void attention_dq_kernel(T* dq, RowStats* stats, const T* dout, const T* q, const T* k, const T* v,
                                    AttnBwdParams a) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = a.B * a.T * a.H;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (w >= rows) return;  // the whole warp
  // Query row (b T + t) H + h, the last first.
  const int64_t row = rows - 1 - w;
  const int64_t h = row % a.H, t = (row / a.H) % a.T, b = row / (a.H * a.T);
  const int64_t j = h / a.G;
  const int64_t s_lo = a.window > 0 && t - a.window + 1 > 0 ? t - a.window + 1 : 0;
  const T* kb = k + ((b * a.T) * a.HKV + j) * a.HS;  // key s at kb + s * HKV * HS
  const T* vb = v + ((b * a.T) * a.HKV + j) * a.HS;
  const int64_t kstride = a.HKV * a.HS;

  float qr[DPL], dor[DPL], kr[DPL], vr[DPL], acc[DPL];
  load_row(qr, q + row * a.HS, lane, a.HS);
  load_row(dor, dout + row * a.HS, lane, a.HS);

  // Pass 1: online softmax and o = sum_s p_s v_s (unnormalized in acc).
  float m = -INFINITY, l = 0.0f;
#pragma unroll
  for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
  for (int64_t s = s_lo; s <= t; s++) {
    load_row(kr, kb + s * kstride, lane, a.HS);
    load_row(vr, vb + s * kstride, lane, a.HS);
    const float sc = score(qr, kr, a.scale);
    if (sc > m) {
      const float alpha = expf(m - sc);  // 0 on the first key (m = -inf)
      l *= alpha;
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[i] *= alpha;
      m = sc;
    }
    const float e = expf(sc - m);
    l += e;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = fmaf(e, vr[i], acc[i]);
  }
  // Every row sees at least its own key (s = t), so l >= 1.
  const float inv_l = 1.0f / l;
#pragma unroll
  for (int i = 0; i < DPL; i++) acc[i] *= inv_l;
  const float delta = warp_dot(dor, acc);
  if (lane == 0) stats[row] = RowStats{m, inv_l, delta, 0.0f};

  // Pass 2: dq = scale sum_s p_s (dout . v_s - delta) k_s.
  for (float& e : acc) e = 0.0f;
  for (int64_t s = s_lo; s <= t; s++) {
    load_row(kr, kb + s * kstride, lane, a.HS);
    load_row(vr, vb + s * kstride, lane, a.HS);
    const float sc = score(qr, kr, a.scale);
    const float dp = warp_dot(dor, vr);
    const float ds = expf(sc - m) * inv_l * (dp - delta);
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = fmaf(ds, kr[i], acc[i]);
  }
  store_row(dq + row * a.HS, acc, a.scale, lane, a.HS);
}

// dk, dv (B, T, HKV, HS) from dout, q (B, T, H, HS), k, v and the stats of attention_dq_kernel; a warp per key row
// (b, s, j), summing over the queries t in [s, s + window - 1] (or [s, T - 1]) and the G query heads of KV head j.
template <class T, int DPL>
__global__ void attention_dkv_kernel(T* dk, T* dv, const RowStats* stats, const T* dout, const T* q, const T* k,
                                     const T* v, AttnBwdParams a) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = a.B * a.T * a.HKV;
  // Key row (b T + s) HKV + j.
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp
  const int64_t j = row % a.HKV, s = (row / a.HKV) % a.T, b = row / (a.HKV * a.T);
  const int64_t t_hi = a.window > 0 && s + a.window - 1 < a.T - 1 ? s + a.window - 1 : a.T - 1;

  float kr[DPL], vr[DPL], qr[DPL], dor[DPL], dk_acc[DPL], dv_acc[DPL];
  load_row(kr, k + row * a.HS, lane, a.HS);
  load_row(vr, v + row * a.HS, lane, a.HS);
#pragma unroll
  for (int i = 0; i < DPL; i++) dk_acc[i] = dv_acc[i] = 0.0f;
  for (int64_t t = s; t <= t_hi; t++) {
    const int64_t row0 = (b * a.T + t) * a.H + j * a.G;  // query row of head g: row0 + g
    for (int64_t g = 0; g < a.G; g++) {
      const int64_t qrow = row0 + g;
      load_row(qr, q + qrow * a.HS, lane, a.HS);
      load_row(dor, dout + qrow * a.HS, lane, a.HS);
      const RowStats st = stats[qrow];
      const float sc = score(qr, kr, a.scale);
      const float dp = warp_dot(dor, vr);
      const float p = expf(sc - st.m) * st.inv_l;
      const float ds = p * (dp - st.delta);
#pragma unroll
      for (int i = 0; i < DPL; i++) {
        dk_acc[i] = fmaf(ds, qr[i], dk_acc[i]);
        dv_acc[i] = fmaf(p, dor[i], dv_acc[i]);
      }
    }
  }
  store_row(dk + row * a.HS, dk_acc, a.scale, lane, a.HS);
  store_row(dv + row * a.HS, dv_acc, 1.0f, lane, a.HS);
}

constexpr int kAttnWarps = 4;  // warps (rows) per block of the attention backward kernels
// Whether qualifying bf16 / f16 calls take the tensor-core kernels (ops/cuda/attention_bwd_mma.cu).
constexpr bool kAttnBwdMma = true;

// Blocks of kAttnWarps warps for `rows` rows.
unsigned attn_blocks(const char* op, int64_t rows) {
  const int64_t blocks = (rows + kAttnWarps - 1) / kAttnWarps;
  LIGER_CHECK(blocks <= 0x7fffffff, "%s: %lld rows exceed the grid limit", op, static_cast<long long>(rows));
  return static_cast<unsigned>(blocks);
}

// st: (B, T, H) RowStats of scratch.
template <class T, int DPL>
void launch_attention_backward(const Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                               const Tensor& k, const Tensor& v, const AttnBwdParams& a, RowStats* st) {
  const char* op = "attention_backward";
  const int64_t q_rows = a.B * a.T * a.H, kv_rows = a.B * a.T * a.HKV;
  attention_dq_kernel<T, DPL><<<attn_blocks(op, q_rows), 32 * kAttnWarps, 0, stream_of(ctx)>>>(
      dq.ptr<T>(), st, dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), a);
  CUDA_CHECK_LAUNCH();
  attention_dkv_kernel<T, DPL><<<attn_blocks(op, kv_rows), 32 * kAttnWarps, 0, stream_of(ctx)>>>(
      dk.ptr<T>(), dv.ptr<T>(), st, dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm_backward(Context& ctx, Tensor dx, const Tensor& dout, const Tensor& x, const Tensor& w, float eps) {
  check_one_dtype("rmsnorm_backward", {&dx, &dout, &x, &w});
  const int64_t N = x.dim(0), D = x.dim(1);
  if (N == 0 || D == 0) return;
  const RowLaunch rl = row_launch(N, D);
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    rmsnorm_backward_kernel<T><<<rl.grid, kThreads, 0, stream_of(ctx)>>>(dx.ptr<T>(), dout.ptr<T>(), x.ptr<T>(),
                                                                         w.ptr<T>(), N, D, eps, rl.row_threads);
    CUDA_CHECK_LAUNCH();
  });
}

void swiglu_backward(Context& ctx, Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  check_one_dtype("swiglu_backward", {&dgate, &dup, &dout, &gate, &up});
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_float(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* dg = dgate.ptr<T>();
    T* du = dup.ptr<T>();
    const T* dy = dout.ptr<T>();
    const T* g = gate.ptr<T>();
    const T* u = up.ptr<T>();
    if (aligned16(dg) && aligned16(du) && aligned16(dy) && aligned16(g) && aligned16(u)) {
      constexpr int V = kVec16<T>;
      swiglu_backward_kernel<T, V><<<grid_for(n / V + 1, kThreads), kThreads, 0, stream_of(ctx)>>>(dg, du, dy, g, u, n);
    } else {
      swiglu_backward_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, stream_of(ctx)>>>(dg, du, dy, g, u, n);
    }
    CUDA_CHECK_LAUNCH();
  });
}

void rope_backward(Context& ctx, Tensor dx, const Tensor& positions, const Tensor& inv_freq) {
  const int64_t N = dx.dim(0), NH = dx.dim(1), half = dx.dim(2) / 2;
  if (N == 0 || NH == 0 || half == 0) return;
  dispatch_float(dx.dtype(), "rope_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_backward_kernel<T><<<grid_for(N * half, kThreads), kThreads, 0, stream_of(ctx)>>>(
        dx.ptr<T>(), positions.ptr<int32_t>(), inv_freq.ptr<float>(), N, NH, half);
    CUDA_CHECK_LAUNCH();
  });
}

void softmax_backward(Context& ctx, Tensor dx, const Tensor& dy, const Tensor& y) {
  check_one_dtype("softmax_backward", {&dx, &dy, &y});
  const int64_t N = y.dim(0), V = y.dim(1);
  if (N == 0 || V == 0) return;
  const RowLaunch rl = row_launch(N, V);
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softmax_backward_kernel<T>
        <<<rl.grid, kThreads, 0, stream_of(ctx)>>>(dx.ptr<T>(), dy.ptr<T>(), y.ptr<T>(), N, V, rl.row_threads);
    CUDA_CHECK_LAUNCH();
  });
}

void attention_backward(Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, float scale, int64_t window) {
  const char* op = "attention_backward";
  check_one_dtype(op, {&dq, &dk, &dv, &dout, &q, &k, &v});
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), HKV = k.dim(2);
  if (B == 0 || T == 0 || H == 0 || HS == 0) return;
  LIGER_CHECK(HS <= 256, "%s: head size %lld above 256 is not supported on the GPU", op, static_cast<long long>(HS));
  const AttnBwdParams a{B, T, H, HKV, HS, H / HKV, window, scale};
  // RowStats of every query row, (B, T, H) x 4 floats: in the context's workspace when they fit (the dK/dV kernel
  // consumes them before the op returns), else a buffer of their own.
  const size_t stats_bytes = static_cast<size_t>(B * T * H) * sizeof(RowStats);
  Tensor own;
  RowStats* st = static_cast<RowStats*>(ctx.workspace());
  if (st == nullptr || stats_bytes > ctx.workspace_bytes()) {
    own = Tensor::empty({B, T, H, 4}, DType::F32, Device::CUDA);
    st = reinterpret_cast<RowStats*>(own.ptr<float>());
  }
  if (kAttnBwdMma &&
      attention_backward_mma(ctx, dq, dk, dv, dout, q, k, v, scale, window, reinterpret_cast<float*>(st)))
    return;
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    if (HS <= 32) return launch_attention_backward<T_, 1>(ctx, dq, dk, dv, dout, q, k, v, a, st);
    if (HS <= 64) return launch_attention_backward<T_, 2>(ctx, dq, dk, dv, dout, q, k, v, a, st);
    if (HS <= 128) return launch_attention_backward<T_, 4>(ctx, dq, dk, dv, dout, q, k, v, a, st);
    launch_attention_backward<T_, 8>(ctx, dq, dk, dv, dout, q, k, v, a, st);
  });
}

}  // namespace liger::ops::cuda
