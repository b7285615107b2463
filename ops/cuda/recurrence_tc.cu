// ops/cuda/recurrence_tc.cu — linear_recurrence (ops/recurrence.h) forward and backward on the tensor cores, for bf16
// storage: every product of a chunk is an mma.sync m16n8k16 (bf16 operands, fp32 accumulation); the running log-gate
// sums, the decays, the states and the adjoints stay fp32.
//
// Notation as in ops/cuda/recurrence.cu: per (batch b, KV head j) a state S (K x Vd); a chunk of L <= 64 tokens from
// t0; G_i = g_0 + ... + g_i the chunk's running log-gate sums (fp32, token order); S0 the state before the chunk, E the
// cotangent carried into it from the later chunks.
//
// Decays on the tensor cores. Within a chunk exp(G_i - G_s) (s <= i) = exp(G_i - rho) exp(rho - G_s) with rho =
// (G_0 + G_{L-1}) / 2 per channel, so the decayed scores are one product of rescaled operands:
//     A[i, s] = sum_c q^_i[c] k^_s[c],   q^ = fq o exp(G - rho),  k^ = fk o exp(rho - G)      (masked to s <= i)
// Each factor is at most exp((G_0 - G_{L-1}) / 2). A chunk where some channel's decay range G_0 - G_{L-1} exceeds
// 2 kMaxExp (gates far beyond GLA's, e.g. HGRN2-strength gates on a long chunk) computes the decayed products exactly
// with an exponential per term instead (the fallback, the arithmetic of recurrence.cu), so no input overflows.
// The other decays are <= 1: exp(G_i) (the state carried in), exp(G_{L-1} - G_s) (to the chunk's end).
//
// Forward: the state before every chunk from
//     S <- Diag(exp G_{L-1}) S + (fk o exp(G_{L-1} - G))^T v
// in two passes: every chunk's product (tc_chunk_delta_kernel, parallel over chunks; the decayed keys split into three
// bf16 terms, hi + mid + lo ~ 24 bits, v exact in bf16, so the state keeps fp32 accuracy), then the recurrence over the
// chunks element by element in fp32 (tc_chunk_carry_kernel). tc_forward_kernel then takes one (chunk, KV head) per
// block, stages the keys, values and state once for the GQA group and per query head h computes
//     out = (fq o exp(G)) S0 + tril(A) v.
// Backward (from state0, the final state's cotangent zero): the states (as above), the adjoints by the same scan in
// reverse, E <- Diag(exp G_{L-1}) E + sum_h (fq_h o exp(G))^T dout_h, then tc_backward_kernel per (chunk, KV head):
//     dA_h    = tril(dout_h v^T)
//     dfq_h   = exp(G) o (dout_h S0^T) + exp(G - rho) o (dA_h k^)
//     dfk     = exp(G_{L-1} - G) o (v E^T) + sum_h exp(rho - G) o (dA_h^T q^_h)
// with k^ and q^ in two bf16 terms (hi + lo) in these two products: dg below is a difference of fq o dfq and fk o dfk
// that cancels, and one rounding of the rescaled operands put it at ~1e-2 against the fp32 reference (an emulation
// with HGRN2-strength gates; 2.6e-3 with the two terms);
//     dv      = (fk o exp(G_{L-1} - G)) E + sum_h A_h^T dout_h
//     dg_t    = sum_{r >= t in the chunk} (sum_h fq_h o dfq_h - fk o dfk)_r + rowsum(E o S_next)
// (the identity of recurrence.cu's header; fq o dfq and fk o dfk from the fp32 accumulators).
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/recurrence_tc.cuh"

namespace liger::ops::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kRows = 64;         // chunk rows in shared memory (a chunk is at most 64 tokens)
constexpr int kAP = kRows + 8;    // pitch of the (64 x 64) score tiles, bf16 (+8: conflict-free fragments)
constexpr int kTcThreads = 256;   // chunk kernels: 8 warps, warp w owns rows 16 (w % 4) and half w / 4 of N
constexpr int kScanThreads = 64;  // scan kernels: 2 warps over a 32 x 32 state tile
constexpr int kScanTile = 32;
constexpr int kSP = kScanTile + 8;  // pitch of the scan's bf16 tiles
constexpr int kGP = kScanTile + 1;  // pitch of the scan's fp32 log-gate tile
constexpr float kMaxExp = 50.0f;    // the largest exponent a rescaled operand may carry (e^50 ~ 5e21)

// Sizes shared by every kernel of one call.
struct TcRec {
  int64_t T;
  int HKV, G;   // KV heads; query heads per KV head
  int K, Vd;    // state rows and columns
  int KP, VP;   // K and Vd rounded up to 16
  int LC, nch;  // chunk length (a multiple of 16, <= 64); chunks
};

__device__ __forceinline__ int64_t row_at(int64_t T, int64_t heads, int64_t dim, int64_t b, int64_t t, int64_t head) {
  return ((b * T + t) * heads + head) * dim;
}

__host__ __device__ constexpr size_t align16(size_t bytes) {
  return (bytes + 15) / 16 * 16;
}

template <class U>
__device__ __forceinline__ U* carve(char*& p, size_t n) {
  U* r = reinterpret_cast<U*>(p);
  p += align16(n * sizeof(U));
  return r;
}

// ---- mma fragments --------------------------------------------------------------------------------------------------
// m16n8k16, lane = 4 gid + tig: A (16 x 16) a0 (gid, 2tig..+1), a1 (gid+8, 2tig..), a2 (gid, 2tig+8..), a3 (gid+8,
// 2tig+8..); B (16 x 8) b0 (k 2tig..+1, n gid), b1 (k 2tig+8..+9, n gid); C (16 x 8) c0,c1 (gid, 2tig..+1), c2,c3
// (gid+8, 2tig..+1). A pair holds the lower k in its low half.

__device__ __forceinline__ uint32_t pack2(bf16 lo, bf16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) | (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}
__device__ __forceinline__ uint32_t ld32(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// A[m][k] = p[m * ld + k].
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* p, int ld, int m0, int k0, int gid, int tig) {
  const bf16* r0 = p + (m0 + gid) * ld + k0 + 2 * tig;
  const bf16* r1 = r0 + 8 * ld;
  a[0] = ld32(r0);
  a[1] = ld32(r1);
  a[2] = ld32(r0 + 8);
  a[3] = ld32(r1 + 8);
}
// A[m][k] = p[k * ld + m] (stored transposed).
__device__ __forceinline__ void load_a_t(uint32_t (&a)[4], const bf16* p, int ld, int m0, int k0, int gid, int tig) {
  const bf16* c0 = p + (k0 + 2 * tig) * ld + m0 + gid;
  a[0] = pack2(c0[0], c0[ld]);
  a[1] = pack2(c0[8], c0[ld + 8]);
  a[2] = pack2(c0[8 * ld], c0[9 * ld]);
  a[3] = pack2(c0[8 * ld + 8], c0[9 * ld + 8]);
}
// B[k][n] = p[n * ld + k].
__device__ __forceinline__ void load_b(uint32_t (&b)[2], const bf16* p, int ld, int n0, int k0, int gid, int tig) {
  const bf16* r = p + (n0 + gid) * ld + k0 + 2 * tig;
  b[0] = ld32(r);
  b[1] = ld32(r + 8);
}
// B[k][n] = p[k * ld + n].
__device__ __forceinline__ void load_b_t(uint32_t (&b)[2], const bf16* p, int ld, int n0, int k0, int gid, int tig) {
  const bf16* c = p + (k0 + 2 * tig) * ld + n0 + gid;
  b[0] = pack2(c[0], c[ld]);
  b[1] = pack2(c[8 * ld], c[9 * ld]);
}

__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// acc[nt] (16 x 8 at rows m0, columns n0 + 8 nt, nt < nts) += A[m0.., k] B[k, n0..] over k in [k_begin, k_end) (a
// multiple of 16). kAT / kBT: the operand is stored transposed (load_a_t / load_b_t).
template <int kNT, bool kAT, bool kBT>
__device__ __forceinline__ void warp_gemm(float (&acc)[kNT][4], int nts, const bf16* A, int lda, int m0, const bf16* Bm,
                                          int ldb, int n0, int k_begin, int k_end, int gid, int tig) {
  for (int k0 = k_begin; k0 < k_end; k0 += 16) {
    uint32_t a[4];
    if constexpr (kAT)
      load_a_t(a, A, lda, m0, k0, gid, tig);
    else
      load_a(a, A, lda, m0, k0, gid, tig);
#pragma unroll
    for (int nt = 0; nt < kNT; nt++) {
      if (nt < nts) {
        uint32_t b[2];
        if constexpr (kBT)
          load_b_t(b, Bm, ldb, n0 + 8 * nt, k0, gid, tig);
        else
          load_b(b, Bm, ldb, n0 + 8 * nt, k0, gid, tig);
        mma(acc[nt], a, b);
      }
    }
  }
}

template <int kNT>
__device__ __forceinline__ void zero(float (&acc)[kNT][4]) {
#pragma unroll
  for (int nt = 0; nt < kNT; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++) acc[nt][r] = 0.0f;
}

// Row and column of accumulator element r of n-tile nt.
__device__ __forceinline__ int frag_row(int m0, int gid, int r) {
  return m0 + gid + 8 * (r >> 1);
}
__device__ __forceinline__ int frag_col(int n0, int nt, int tig, int r) {
  return n0 + 8 * nt + 2 * tig + (r & 1);
}

__device__ __forceinline__ float bf(bf16 x) {
  return __bfloat162float(x);
}

// ---- chunk staging ----

// *hi = x rounded to bf16, *lo = the rest rounded to bf16 (hi + lo carries ~16 bits).
__device__ __forceinline__ void split2(bf16* hi, bf16* lo, float x) {
  const bf16 h = __float2bfloat16_rn(x);
  *hi = h;
  *lo = __float2bfloat16_rn(x - __bfloat162float(h));
}

// Where the block of a chunk kernel works: chunk n = blockIdx.x of (b, j) = blockIdx.y, tokens [t0, t0 + L); the
// pitches of a token row of the (B, T, HKV, K) and (B, T, HKV, Vd) tensors.
struct ChunkAt {
  int n, L;
  int64_t bj, b, j, H, t0, kvp, vvp;
};
__device__ __forceinline__ ChunkAt chunk_at(const TcRec& p) {
  ChunkAt a;
  a.n = blockIdx.x;
  a.bj = blockIdx.y;
  a.b = a.bj / p.HKV;
  a.j = a.bj % p.HKV;
  a.H = static_cast<int64_t>(p.HKV) * p.G;
  a.t0 = static_cast<int64_t>(a.n) * p.LC;
  a.L = static_cast<int>(p.T - a.t0 < p.LC ? p.T - a.t0 : p.LC);
  a.kvp = static_cast<int64_t>(p.HKV) * p.K;
  a.vvp = static_cast<int64_t>(p.HKV) * p.Vd;
  return a;
}

// Gs[s * KP + c] = G_s[c] for s < L, c < K (0 elsewhere, rows up to 64); rho[c] = (G_0 + G_{L-1}) / 2. g points at
// (b, t0, j, 0), pitch elements per token. Returns whether every channel's range G_0 - G_{L-1} <= 2 kMaxExp (the
// rescaled products are safe); block-uniform.
__device__ bool stage_gates(float* Gs, float* rho, int* flag, const bf16* g, int64_t pitch, int K, int KP, int L) {
  if (threadIdx.x == 0) *flag = 1;
  for (int idx = threadIdx.x; idx < kRows * KP; idx += blockDim.x) {
    const int s = idx / KP, c = idx - s * KP;
    Gs[idx] = s < L && c < K ? bf(g[s * pitch + c]) : 0.0f;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < KP; c += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < L; s++) {
      acc = Gs[s * KP + c] + acc;
      Gs[s * KP + c] = acc;
    }
    const float first = Gs[c], last = Gs[(L - 1) * KP + c];
    rho[c] = 0.5f * (first + last);
    if (!(first - last <= 2.0f * kMaxExp)) *flag = 0;
  }
  __syncthreads();
  return *flag != 0;
}

// The exact decayed scores for the fallback: acc[nt] at rows m0 (i), columns n0 + 8 nt (s) = sum_c x[i][c] y[s][c]
// exp(G_i[c] - G_s[c]) for s <= i < L (0 above the diagonal and in the padding rows i >= L, whose G_i is 0, not a
// running sum: exp(0 - G_s) overflows there with strong gates, and 0 * inf would put NaN into A^T dout), x and y
// unscaled.
__device__ void exact_scores(float (&acc)[4][4], const bf16* x, const bf16* y, int ld, const float* Gs, int KP, int L,
                             int m0, int n0, int gid, int tig) {
#pragma unroll
  for (int nt = 0; nt < 4; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int i = frag_row(m0, gid, r), s = frag_col(n0, nt, tig, r);
      float sum = 0.0f;
      if (s <= i && i < L)
        for (int c = 0; c < KP; c++)
          sum = fmaf(bf(x[i * ld + c]) * bf(y[s * ld + c]), expf(Gs[i * KP + c] - Gs[s * KP + c]), sum);
      acc[nt][r] = sum;
    }
}

// Stores a 64 x 64 score tile masked to s <= i as bf16 (this warp's rows m0, columns n0..n0+31).
__device__ __forceinline__ void store_tril(bf16* dst, const float (&acc)[4][4], int m0, int n0, int gid, int tig) {
#pragma unroll
  for (int nt = 0; nt < 4; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int i = frag_row(m0, gid, r), s = frag_col(n0, nt, tig, r);
      dst[i * kAP + s] = __float2bfloat16_rn(s <= i ? acc[nt][r] : 0.0f);
    }
}

// tril(A) of the chunk into Ab (bf16, 64 x 64), A[i, s] = sum_c q[i][c] k[s][c] exp(G_i[c] - G_s[c]): from the
// rescaled q^, k^ on the tensor cores when `safe`, else exactly from the unscaled q, k. This warp: rows m0, columns
// 32 half .. + 31 (a tile above the diagonal is stored as zeros).
__device__ __forceinline__ void decayed_scores(bf16* Ab, const bf16* qh, const bf16* kh, int KQ, const float* Gs,
                                               int KP, int L, bool safe, int m0, int half, int gid, int tig) {
  const int n0 = 32 * half;
  float acc[4][4];
  zero(acc);
  if (n0 <= m0 + 15) {
    if (safe)
      warp_gemm<4, false, false>(acc, 4, qh, KQ, m0, kh, KQ, n0, 0, KP, gid, tig);
    else
      exact_scores(acc, qh, kh, KQ, Gs, KP, L, m0, n0, gid, tig);
  }
  store_tril(Ab, acc, m0, n0, gid, tig);
}

// dst[s * ld + e] = src[s * pitch + e] for s < L, e < W; zero for the rest of the (64, WP) tile.
__device__ __forceinline__ void stage_rows(bf16* dst, int ld, const bf16* src, int64_t pitch, int L, int W, int WP) {
  for (int idx = threadIdx.x; idx < kRows * WP; idx += blockDim.x) {
    const int s = idx / WP, e = idx - s * WP;
    dst[s * ld + e] = s < L && e < W ? src[s * pitch + e] : __float2bfloat16_rn(0.0f);
  }
}

// ---- the state scans ------------------------------------------------------------------------------------------------

// Two passes. tc_chunk_delta_kernel: every chunk's own contribution, in parallel over chunks (a 32 x 32 tile of it
// per block: rows c0 = blockIdx.y * 32 of K, columns e0 of Vd, chunk n, from blockIdx.x = n * tiles + e0 / 32;
// (b, j) = blockIdx.z):
//   forward (kReverse false): X = fk, Y = v (HKV heads), D_n = sum_s (X_s o exp(G_{L-1} - G_s)) (x) Y_s, stored where
//     the carry pass wants it: ws[n + 1] (the state slot after the chunk), or `last` for the last chunk (not stored
//     when `last` is null); dec (B, HKV, nch, K) = exp(G_{L-1}) of every chunk (blocks of column tile 0 write it);
//   reverse: X = fq, Y = dout (H heads, the G of the group summed), D_n = sum_h sum_s (X_s o exp(G_s)) (x) Y_s into
//     ws[n - 1] (nothing for chunk 0).
// The rescaled X is split into kSplit bf16 terms (kSplit 3: fp32-exact products with a bf16 Y).
// tc_chunk_carry_kernel then runs the recurrence over the chunks element by element (fp32):
//   forward: ws[0] = init, ws[n + 1] = Diag(dec_n) ws[n] + D_n, final_state = Diag(dec_last) ws[nch - 1] + last;
//   reverse: ws[nch - 1] = 0, ws[n - 1] = Diag(dec_n) ws[n] + D_n (the cotangent carried into each chunk).
template <bool kReverse, int kSplit>
__global__ void __launch_bounds__(kScanThreads)
    tc_chunk_delta_kernel(float* ws, float* dec, float* last, const bf16* X, const bf16* Y, const bf16* g, TcRec p) {
  __shared__ float Gs[kRows * kGP];
  __shared__ __align__(16) bf16 Xs[kSplit][kRows * kSP];
  __shared__ __align__(16) bf16 Ys[kRows * kSP];
  const int K = p.K, Vd = p.Vd, tv = (Vd + kScanTile - 1) / kScanTile;
  const int n = blockIdx.x / tv, e0 = (blockIdx.x - n * tv) * kScanTile, c0 = blockIdx.y * kScanTile;
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV, H = static_cast<int64_t>(p.HKV) * p.G;
  const int64_t heads = kReverse ? H : p.HKV;
  const int nheads = kReverse ? p.G : 1;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3, rb = 16 * w;
  const int64_t t0 = static_cast<int64_t>(n) * p.LC;
  const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC), LP16 = (L + 15) / 16 * 16;
  float* dst = nullptr;
  if (kReverse)
    dst = n > 0 ? ws + (bj * p.nch + n - 1) * K * Vd : nullptr;
  else
    dst = n + 1 < p.nch ? ws + (bj * p.nch + n + 1) * K * Vd : (last ? last + bj * K * Vd : nullptr);
  if (!dst && (kReverse || e0 > 0)) return;  // block-uniform

  const bf16* gj = g + row_at(p.T, p.HKV, K, b, t0, j) + c0;
  const int64_t gp = static_cast<int64_t>(p.HKV) * K;
  for (int idx = threadIdx.x; idx < kRows * kScanTile; idx += blockDim.x) {
    const int s = idx / kScanTile, cc = idx - s * kScanTile;
    Gs[s * kGP + cc] = s < L && c0 + cc < K ? bf(gj[s * gp + cc]) : 0.0f;
  }
  __syncthreads();
  if (threadIdx.x < kScanTile) {
    float run = 0.0f;
    for (int s = 0; s < L; s++) {
      run = Gs[s * kGP + threadIdx.x] + run;
      Gs[s * kGP + threadIdx.x] = run;
    }
    if (!kReverse && e0 == 0 && c0 + static_cast<int>(threadIdx.x) < K)
      dec[(bj * p.nch + n) * K + c0 + threadIdx.x] = expf(run);
  }
  if (!dst) return;  // block-uniform: the forward's last chunk without `last` only writes dec
  __syncthreads();
  float acc[4][4];
  zero(acc);
  for (int hh = 0; hh < nheads; hh++) {
    const int64_t head = kReverse ? j * p.G + hh : j;
    if (hh > 0) __syncthreads();
    const bf16* xs = X + row_at(p.T, heads, K, b, t0, head) + c0;
    const bf16* ys = Y + row_at(p.T, heads, Vd, b, t0, head) + e0;
    const int64_t xp = heads * K, yp = heads * Vd;
    for (int idx = threadIdx.x; idx < LP16 * kScanTile; idx += blockDim.x) {
      const int s = idx / kScanTile, cc = idx - s * kScanTile;
      float x = 0.0f;
      if (s < L && c0 + cc < K) {
        const float G = Gs[s * kGP + cc];
        x = bf(xs[s * xp + cc]) * expf(kReverse ? G : Gs[(L - 1) * kGP + cc] - G);
      }
#pragma unroll
      for (int sp = 0; sp < kSplit; sp++) {
        const bf16 part = __float2bfloat16_rn(x);
        Xs[sp][s * kSP + cc] = part;
        x -= bf(part);
      }
      Ys[s * kSP + cc] = s < L && e0 + cc < Vd ? ys[s * yp + cc] : __float2bfloat16_rn(0.0f);
    }
    __syncthreads();
    for (int k0 = 0; k0 < LP16; k0 += 16) {
      uint32_t bfr[4][2];
#pragma unroll
      for (int nt = 0; nt < 4; nt++) load_b_t(bfr[nt], Ys, kSP, 8 * nt, k0, gid, tig);
#pragma unroll
      for (int sp = 0; sp < kSplit; sp++) {
        uint32_t a[4];
        load_a_t(a, Xs[sp], kSP, rb, k0, gid, tig);
#pragma unroll
        for (int nt = 0; nt < 4; nt++) mma(acc[nt], a, bfr[nt]);
      }
    }
  }
#pragma unroll
  for (int nt = 0; nt < 4; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int c = c0 + frag_row(rb, gid, r), e = e0 + frag_col(0, nt, tig, r);
      if (c < K && e < Vd) dst[static_cast<int64_t>(c) * Vd + e] = acc[nt][r];
    }
}

// One thread per state element (b, j, c, e) of `total` = B HKV K Vd; see tc_chunk_delta_kernel. The loads of the
// next kAhead chunks are issued before the dependent updates.
template <bool kReverse>
__global__ void __launch_bounds__(256)
    tc_chunk_carry_kernel(float* ws, const float* dec, const float* init, float* final_state, const float* last,
                          TcRec p, int64_t total) {
  constexpr int kAhead = 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t per = static_cast<int64_t>(p.K) * p.Vd, bj = idx / per, ce = idx - bj * per, c = ce / p.Vd;
  float* slot = ws + bj * p.nch * per + ce;      // slot[n * per]
  const float* dc = dec + bj * p.nch * p.K + c;  // dc[n * K]
  const int nch = p.nch;
  if (!kReverse) {
    float S = init ? init[idx] : 0.0f;
    slot[0] = S;
    for (int n0 = 0; n0 + 1 < nch; n0 += kAhead) {
      float d[kAhead], a[kAhead];
#pragma unroll
      for (int k = 0; k < kAhead; k++) {
        const int n = n0 + k;
        d[k] = n + 1 < nch ? dc[static_cast<int64_t>(n) * p.K] : 0.0f;
        a[k] = n + 1 < nch ? slot[static_cast<int64_t>(n + 1) * per] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kAhead; k++) {
        const int n = n0 + k;
        if (n + 1 < nch) {
          S = fmaf(d[k], S, a[k]);
          slot[static_cast<int64_t>(n + 1) * per] = S;
        }
      }
    }
    if (final_state) final_state[idx] = fmaf(dc[static_cast<int64_t>(nch - 1) * p.K], S, last[idx]);
  } else {
    float E = 0.0f;
    slot[static_cast<int64_t>(nch - 1) * per] = E;
    for (int n0 = nch - 1; n0 >= 1; n0 -= kAhead) {
      float d[kAhead], a[kAhead];
#pragma unroll
      for (int k = 0; k < kAhead; k++) {
        const int n = n0 - k;
        d[k] = n >= 1 ? dc[static_cast<int64_t>(n) * p.K] : 0.0f;
        a[k] = n >= 1 ? slot[static_cast<int64_t>(n - 1) * per] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kAhead; k++) {
        const int n = n0 - k;
        if (n >= 1) {
          E = fmaf(d[k], E, a[k]);
          slot[static_cast<int64_t>(n - 1) * per] = E;
        }
      }
    }
  }
}

// ---- forward --------------------------------------------------------------------------------------------------------

size_t tc_forward_bytes(int KP, int VP) {
  const size_t KQ = KP + 8;
  return align16(sizeof(float) * kRows * KP) + align16(sizeof(float) * KP) + 16 +
         align16(sizeof(bf16) * kRows * KQ) * 3 + align16(sizeof(bf16) * VP * kAP) + align16(sizeof(bf16) * VP * KQ) +
         align16(sizeof(bf16) * kRows * kAP);
}

// out (B, T, H, Vd) for chunk blockIdx.x of (b, j) = blockIdx.y, every query head of the group, from the state before
// the chunk (ws, from launch_scan).
__global__ void __launch_bounds__(kTcThreads, 1)
    tc_forward_kernel(bf16* out, const bf16* fq, const bf16* fk, const bf16* v, const bf16* g, const float* ws,
                      TcRec p) {
  extern __shared__ float4 smem4[];
  const int KP = p.KP, VP = p.VP, K = p.K, Vd = p.Vd, KQ = KP + 8;
  char* sp = reinterpret_cast<char*>(smem4);
  float* Gs = carve<float>(sp, kRows * KP);  // (64, KP) running log-gate sums
  float* rho = carve<float>(sp, KP);         // (KP) the rescaling reference
  int* flag = carve<int>(sp, 4);
  bf16* kh = carve<bf16>(sp, kRows * KQ);   // (64, KP) fk o exp(rho - G) (fk in the fallback)
  bf16* qh = carve<bf16>(sp, kRows * KQ);   // (64, KP) fq o exp(G - rho) of one head (fq in the fallback)
  bf16* qe = carve<bf16>(sp, kRows * KQ);   // (64, KP) fq o exp(G) of one head
  bf16* vT = carve<bf16>(sp, VP * kAP);     // (VP, 64) v transposed
  bf16* S0T = carve<bf16>(sp, VP * KQ);     // (VP, KP) the state before the chunk, transposed
  bf16* Ab = carve<bf16>(sp, kRows * kAP);  // (64, 64) tril(A) of one head
  const ChunkAt at = chunk_at(p);
  const int n = at.n, L = at.L;
  const int64_t bj = at.bj, b = at.b, j = at.j, H = at.H, t0 = at.t0, kvp = at.kvp, vvp = at.vvp;
  const bool safe = stage_gates(Gs, rho, flag, g + row_at(p.T, p.HKV, K, b, t0, j), kvp, K, KP, L);
  {
    const bf16* fkj = fk + row_at(p.T, p.HKV, K, b, t0, j);
    for (int idx = threadIdx.x; idx < kRows * KP; idx += blockDim.x) {
      const int s = idx / KP, c = idx - s * KP;
      float x = s < L && c < K ? bf(fkj[s * kvp + c]) : 0.0f;
      if (safe) x *= expf(rho[c] - Gs[idx]);
      kh[s * KQ + c] = __float2bfloat16_rn(x);
    }
    const bf16* vj = v + row_at(p.T, p.HKV, Vd, b, t0, j);
    for (int idx = threadIdx.x; idx < kRows * VP; idx += blockDim.x) {
      const int s = idx / VP, e = idx - s * VP;
      vT[e * kAP + s] = s < L && e < Vd ? vj[s * vvp + e] : __float2bfloat16_rn(0.0f);
    }
    const float* Sn = ws + (bj * p.nch + n) * K * Vd;
    for (int idx = threadIdx.x; idx < KP * VP; idx += blockDim.x) {
      const int c = idx / VP, e = idx - c * VP;
      S0T[e * KQ + c] = __float2bfloat16_rn(c < K && e < Vd ? Sn[c * Vd + e] : 0.0f);
    }
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
  const int m0 = 16 * (w & 3), half = w >> 2;
  const int64_t qp = H * K, op = H * Vd;
  for (int hh = 0; hh < p.G; hh++) {
    const int64_t h = j * p.G + hh;
    __syncthreads();  // staging done; the previous head's tiles consumed
    const bf16* fqh = fq + row_at(p.T, H, K, b, t0, h);
    for (int idx = threadIdx.x; idx < kRows * KP; idx += blockDim.x) {
      const int s = idx / KP, c = idx - s * KP;
      const float x = s < L && c < K ? bf(fqh[s * qp + c]) : 0.0f, G = Gs[idx];
      qe[s * KQ + c] = __float2bfloat16_rn(x * expf(G));
      qh[s * KQ + c] = __float2bfloat16_rn(safe ? x * expf(G - rho[c]) : x);
    }
    __syncthreads();
    decayed_scores(Ab, qh, kh, KQ, Gs, KP, L, safe, m0, half, gid, tig);
    __syncthreads();
    {
      const int nts = VP / 16, nb = half * (VP / 2);
      float acc[8][4];
      zero(acc);
      warp_gemm<8, false, false>(acc, nts, qe, KQ, m0, S0T, KQ, nb, 0, KP, gid, tig);
      warp_gemm<8, false, false>(acc, nts, Ab, kAP, m0, vT, kAP, nb, 0, m0 + 16, gid, tig);
      bf16* o = out + row_at(p.T, H, Vd, b, t0, h);
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          const int i = frag_row(m0, gid, r), e = frag_col(nb, nt, tig, r);
          if (nt < nts && i < L && e < Vd) o[i * op + e] = __float2bfloat16_rn(acc[nt][r]);
        }
    }
  }
}

// ---- backward -------------------------------------------------------------------------------------------------------

size_t tc_backward_bytes(int KP, int VP) {
  const size_t KQ = KP + 8, VQ = VP + 8;
  const size_t fixed = align16(sizeof(float) * kRows * KP) + 2 * align16(sizeof(float) * KP) + 16 +
                       2 * align16(sizeof(bf16) * kRows * KQ) + align16(sizeof(bf16) * kRows * VQ) +
                       align16(sizeof(bf16) * KP * VQ);
  const size_t pre = align16(sizeof(bf16) * kRows * KQ) + align16(sizeof(bf16) * KP * VQ);
  const size_t heads = 2 * align16(sizeof(bf16) * kRows * KQ) + align16(sizeof(bf16) * kRows * VQ) +
                       2 * align16(sizeof(bf16) * kRows * kAP);
  const size_t qt = align16(sizeof(float) * kRows * (KP + 1));
  return fixed + std::max({pre, heads, qt});
}

// dfq (B, T, H, K), dfk and dg (B, T, HKV, K), dv (B, T, HKV, Vd) for chunk blockIdx.x of (b, j) = blockIdx.y, from the
// states before every chunk (ws) and the cotangents carried into them (ews).
__global__ void __launch_bounds__(kTcThreads, 1)
    tc_backward_kernel(bf16* dfq, bf16* dfk, bf16* dv, bf16* dg, const bf16* dout, const bf16* fq, const bf16* fk,
                       const bf16* v, const bf16* g, const float* ws, const float* ews, TcRec p) {
  extern __shared__ float4 smem4[];
  const int KP = p.KP, VP = p.VP, K = p.K, Vd = p.Vd, KQ = KP + 8, VQ = VP + 8;
  char* sp = reinterpret_cast<char*>(smem4);
  float* Gs = carve<float>(sp, kRows * KP);  // (64, KP) running log-gate sums
  float* rho = carve<float>(sp, KP);
  float* carry = carve<float>(sp, KP);  // (KP) rowsum(E o S_next): dg's share from the later chunks
  int* flag = carve<int>(sp, 4);
  bf16* kh = carve<bf16>(sp, kRows * KQ);   // (64, KP) fk o exp(rho - G) (fk in the fallback), rounded to bf16
  bf16* khl = carve<bf16>(sp, kRows * KQ);  // (64, KP) what that rounding lost, in bf16 (0 in the fallback)
  bf16* vb = carve<bf16>(sp, kRows * VQ);   // (64, VP) v
  bf16* S0 = carve<bf16>(sp, KP * VQ);      // (KP, VP) the state before the chunk
  char* un = sp;                            // the union: before the heads, per head, after the heads
  bf16* kl = carve<bf16>(sp, kRows * KQ);   // (64, KP) fk o exp(G_{L-1} - G)
  bf16* Eb = carve<bf16>(sp, KP * VQ);      // (KP, VP) the cotangent carried in
  sp = un;
  bf16* qh = carve<bf16>(sp, kRows * KQ);     // (64, KP) fq o exp(G - rho) of one head (fq in the fallback)
  bf16* qhl = carve<bf16>(sp, kRows * KQ);    // (64, KP) what its rounding lost (0 in the fallback)
  bf16* dob = carve<bf16>(sp, kRows * VQ);    // (64, VP) dout of one head
  bf16* Ab = carve<bf16>(sp, kRows * kAP);    // (64, 64) tril(A)
  bf16* dAb = carve<bf16>(sp, kRows * kAP);   // (64, 64) tril(dout v^T)
  float* QTs = reinterpret_cast<float*>(un);  // (64, KP + 1) sum_h fq o dfq - fk o dfk
  const ChunkAt at = chunk_at(p);
  const int n = at.n, L = at.L;
  const int64_t bj = at.bj, b = at.b, j = at.j, H = at.H, t0 = at.t0, kvp = at.kvp, vvp = at.vvp;
  const bool safe = stage_gates(Gs, rho, flag, g + row_at(p.T, p.HKV, K, b, t0, j), kvp, K, KP, L);
  const bf16* fkj = fk + row_at(p.T, p.HKV, K, b, t0, j);
  {
    for (int idx = threadIdx.x; idx < kRows * KP; idx += blockDim.x) {
      const int s = idx / KP, c = idx - s * KP;
      const float x = s < L && c < K ? bf(fkj[s * kvp + c]) : 0.0f, G = Gs[idx];
      split2(kh + s * KQ + c, khl + s * KQ + c, safe ? x * expf(rho[c] - G) : x);
      kl[s * KQ + c] = __float2bfloat16_rn(x * expf(Gs[(L - 1) * KP + c] - G));
    }
    stage_rows(vb, VQ, v + row_at(p.T, p.HKV, Vd, b, t0, j), vvp, L, Vd, VP);
    const float* Sn = ws + (bj * p.nch + n) * K * Vd;
    const float* En = ews + (bj * p.nch + n) * K * Vd;
    for (int idx = threadIdx.x; idx < KP * VP; idx += blockDim.x) {
      const int c = idx / VP, e = idx - c * VP;
      const bool in = c < K && e < Vd;
      S0[c * VQ + e] = __float2bfloat16_rn(in ? Sn[c * Vd + e] : 0.0f);
      Eb[c * VQ + e] = __float2bfloat16_rn(in ? En[c * Vd + e] : 0.0f);
    }
    // carry[c] = sum_e E[c, e] S_next[c, e] (E is zero in the last chunk).
    const float* Sx = n + 1 < p.nch ? ws + (bj * p.nch + n + 1) * K * Vd : nullptr;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int c = w; c < KP; c += kTcThreads / 32) {
      float acc = 0.0f;
      if (Sx && c < K)
        for (int e = lane; e < Vd; e += 32) acc = fmaf(En[c * Vd + e], Sx[c * Vd + e], acc);
      acc = warp_sum(acc);
      if (lane == 0) carry[c] = acc;
    }
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
  const int m0 = 16 * (w & 3), half = w >> 2;
  const int ntk = KP / 16, ntv = VP / 16, cbk = half * (KP / 2), cbv = half * (VP / 2);
  const float* Glast = Gs + (L - 1) * KP;
  float dfk_acc[8][4], dv_acc[8][4], qt[8][4];
  zero(dfk_acc);
  zero(dv_acc);
  zero(qt);
  // The carried cotangent's shares: dfk = exp(G_{L-1} - G) o (v E^T), dv = kl E.
  warp_gemm<8, false, false>(dfk_acc, ntk, vb, VQ, m0, Eb, VQ, cbk, 0, VP, gid, tig);
#pragma unroll
  for (int nt = 0; nt < 8; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int s = frag_row(m0, gid, r), c = frag_col(cbk, nt, tig, r);
      if (nt < ntk) dfk_acc[nt][r] *= expf(Glast[c] - Gs[s * KP + c]);
    }
  warp_gemm<8, false, true>(dv_acc, ntv, kl, KQ, m0, Eb, VQ, cbv, 0, KP, gid, tig);
  const int64_t qp = H * K, op = H * Vd;
  for (int hh = 0; hh < p.G; hh++) {
    const int64_t h = j * p.G + hh;
    __syncthreads();  // the union's previous contents consumed
    const bf16* fqh = fq + row_at(p.T, H, K, b, t0, h);
    const bf16* doh = dout + row_at(p.T, H, Vd, b, t0, h);
    for (int idx = threadIdx.x; idx < kRows * KP; idx += blockDim.x) {
      const int s = idx / KP, c = idx - s * KP;
      const float x = s < L && c < K ? bf(fqh[s * qp + c]) : 0.0f;
      split2(qh + s * KQ + c, qhl + s * KQ + c, safe ? x * expf(Gs[idx] - rho[c]) : x);
    }
    stage_rows(dob, VQ, doh, op, L, Vd, VP);
    __syncthreads();
    decayed_scores(Ab, qh, kh, KQ, Gs, KP, L, safe, m0, half, gid, tig);
    {  // tril(dout v^T)
      const int n0 = 32 * half;
      float acc[4][4];
      zero(acc);
      if (n0 <= m0 + 15) warp_gemm<4, false, false>(acc, 4, dob, VQ, m0, vb, VQ, n0, 0, VP, gid, tig);
      store_tril(dAb, acc, m0, n0, gid, tig);
    }
    __syncthreads();
    {  // dfq_h = exp(G) o (dout S0^T) + exp(G - rho) o (dA k^)
      float t1[8][4], t2[8][4];
      zero(t1);
      zero(t2);
      warp_gemm<8, false, false>(t1, ntk, dob, VQ, m0, S0, VQ, cbk, 0, VP, gid, tig);
      if (safe) {
        warp_gemm<8, false, true>(t2, ntk, dAb, kAP, m0, kh, KQ, cbk, 0, m0 + 16, gid, tig);
        warp_gemm<8, false, true>(t2, ntk, dAb, kAP, m0, khl, KQ, cbk, 0, m0 + 16, gid, tig);
      }
      bf16* dq = dfq + row_at(p.T, H, K, b, t0, h);
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          const int i = frag_row(m0, gid, r), c = frag_col(cbk, nt, tig, r);
          if (nt >= ntk || i >= L || c >= K) continue;
          const float Gi = Gs[i * KP + c];
          float intra = 0.0f;
          if (safe) {
            intra = t2[nt][r] * expf(Gi - rho[c]);
          } else {
            for (int s = 0; s <= i; s++)
              intra = fmaf(bf(dAb[i * kAP + s]) * bf(kh[s * KQ + c]), expf(Gi - Gs[s * KP + c]), intra);
          }
          const float val = fmaf(t1[nt][r], expf(Gi), intra);
          dq[i * qp + c] = __float2bfloat16_rn(val);
          qt[nt][r] = fmaf(bf(fqh[i * qp + c]), val, qt[nt][r]);
        }
    }
    {  // dfk += exp(rho - G) o (dA^T q^)
      float t2[8][4];
      zero(t2);
      if (safe) {
        warp_gemm<8, true, true>(t2, ntk, dAb, kAP, m0, qh, KQ, cbk, m0, kRows, gid, tig);
        warp_gemm<8, true, true>(t2, ntk, dAb, kAP, m0, qhl, KQ, cbk, m0, kRows, gid, tig);
      }
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          const int s = frag_row(m0, gid, r), c = frag_col(cbk, nt, tig, r);
          if (nt >= ntk || s >= L || c >= K) continue;
          const float Gsc = Gs[s * KP + c];
          if (safe) {
            dfk_acc[nt][r] = fmaf(t2[nt][r], expf(rho[c] - Gsc), dfk_acc[nt][r]);
          } else {
            float sum = 0.0f;
            for (int i = s; i < L; i++)
              sum = fmaf(bf(dAb[i * kAP + s]) * bf(qh[i * KQ + c]), expf(Gs[i * KP + c] - Gsc), sum);
            dfk_acc[nt][r] += sum;
          }
        }
    }
    // dv += A^T dout
    warp_gemm<8, true, true>(dv_acc, ntv, Ab, kAP, m0, dob, VQ, cbv, m0, kRows, gid, tig);
  }
  {
    bf16* dk = dfk + row_at(p.T, p.HKV, K, b, t0, j);
    bf16* dvo = dv + row_at(p.T, p.HKV, Vd, b, t0, j);
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int s = frag_row(m0, gid, r), c = frag_col(cbk, nt, tig, r), e = frag_col(cbv, nt, tig, r);
        if (nt < ntk && s < L && c < K) {
          dk[s * kvp + c] = __float2bfloat16_rn(dfk_acc[nt][r]);
          qt[nt][r] = fmaf(-bf(fkj[s * kvp + c]), dfk_acc[nt][r], qt[nt][r]);
        }
        if (nt < ntv && s < L && e < Vd) dvo[s * vvp + e] = __float2bfloat16_rn(dv_acc[nt][r]);
      }
  }
  __syncthreads();  // the union becomes QTs
  const int QP = KP + 1;
#pragma unroll
  for (int nt = 0; nt < 8; nt++)
#pragma unroll
    for (int r = 0; r < 4; r++)
      if (nt < ntk) QTs[frag_row(m0, gid, r) * QP + frag_col(cbk, nt, tig, r)] = qt[nt][r];
  __syncthreads();
  bf16* dgo = dg + row_at(p.T, p.HKV, K, b, t0, j);
  for (int c = threadIdx.x; c < K; c += blockDim.x) {
    float acc = carry[c];
    for (int i = L - 1; i >= 0; i--) {
      acc += QTs[i * QP + c];
      dgo[i * kvp + c] = __float2bfloat16_rn(acc);
    }
  }
}

// ---- launchers ------------------------------------------------------------------------------------------------------

TcRec make_tc(int64_t T, int64_t H, int64_t HKV, int64_t K, int64_t Vd, int64_t chunk) {
  TcRec p{};
  p.T = T;
  p.HKV = static_cast<int>(HKV);
  p.G = static_cast<int>(H / HKV);
  p.K = static_cast<int>(K);
  p.Vd = static_cast<int>(Vd);
  p.KP = static_cast<int>((K + 15) / 16 * 16);
  p.VP = static_cast<int>((Vd + 15) / 16 * 16);
  p.LC = static_cast<int>(std::max<int64_t>(16, std::min<int64_t>(chunk, kRows) / 16 * 16));
  p.nch = static_cast<int>((T + p.LC - 1) / p.LC);
  return p;
}

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// The states (forward: from init, the final one into final_state when not null) or the cotangents (reverse) at every
// chunk boundary into ws; dec (B, HKV, nch, K) is written by the forward and read by both. last: B HKV K Vd floats of
// scratch when final_state is wanted.
template <bool kReverse, int kSplit>
void launch_scan(cudaStream_t stream, float* ws, float* dec, float* last, const bf16* X, const bf16* Y, const bf16* g,
                 const float* init, float* final_state, const TcRec& p, int64_t B) {
  const unsigned tv = static_cast<unsigned>((p.Vd + kScanTile - 1) / kScanTile);
  const dim3 grid(tv * static_cast<unsigned>(p.nch), (p.K + kScanTile - 1) / kScanTile,
                  static_cast<unsigned>(B * p.HKV));
  tc_chunk_delta_kernel<kReverse, kSplit>
      <<<grid, kScanThreads, 0, stream>>>(ws, dec, final_state ? last : nullptr, X, Y, g, p);
  CUDA_CHECK_LAUNCH();
  const int64_t total = B * p.HKV * static_cast<int64_t>(p.K) * p.Vd;
  tc_chunk_carry_kernel<kReverse>
      <<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(ws, dec, init, final_state, last, p, total);
  CUDA_CHECK_LAUNCH();
}

// A float scratch of n floats on the stream: the context's workspace when large enough, else allocated.
float* scratch(const Context& ctx, size_t n, bool* own) {
  float* ws = static_cast<float*>(ctx.workspace());
  *own = n * sizeof(float) > ctx.workspace_bytes();
  if (*own) CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ws), n * sizeof(float), stream_of(ctx)));
  return ws;
}

}  // namespace

void tc_linear_recurrence(const Context& ctx, bf16* out, const bf16* fq, const bf16* fk, const bf16* v, const bf16* g,
                          float* state, int64_t B, int64_t T, int64_t H, int64_t HKV, int64_t K, int64_t Vd,
                          int64_t chunk) {
  const TcRec p = make_tc(T, H, HKV, K, Vd, chunk);
  const cudaStream_t stream = stream_of(ctx);
  const size_t per = static_cast<size_t>(B) * p.HKV * K * Vd;  // floats of one (B, HKV, K, Vd)
  bool own = false;
  float* ws = scratch(ctx, (p.nch + 1) * per + static_cast<size_t>(B) * p.HKV * p.nch * K, &own);
  float* last = ws + p.nch * per;
  float* dec = last + per;
  launch_scan<false, 3>(stream, ws, dec, last, fk, v, g, state, state, p, B);
  const size_t smem = tc_forward_bytes(p.KP, p.VP);
  set_smem(tc_forward_kernel, smem);
  tc_forward_kernel<<<dim3(p.nch, static_cast<unsigned>(B * p.HKV)), kTcThreads, smem, stream>>>(out, fq, fk, v, g, ws,
                                                                                                 p);
  CUDA_CHECK_LAUNCH();
  if (own) CUDA_CHECK(cudaFreeAsync(ws, stream));
}

void tc_linear_recurrence_backward(const Context& ctx, bf16* dfq, bf16* dfk, bf16* dv, bf16* dg, const bf16* dout,
                                   const bf16* fq, const bf16* fk, const bf16* v, const bf16* g, const float* state0,
                                   int64_t B, int64_t T, int64_t H, int64_t HKV, int64_t K, int64_t Vd) {
  const TcRec p = make_tc(T, H, HKV, K, Vd, kRows);
  const cudaStream_t stream = stream_of(ctx);
  const size_t per = static_cast<size_t>(B) * p.HKV * p.nch * K * Vd;  // floats of one (B, HKV, nch, K, Vd)
  bool own = false;
  float* ws = scratch(ctx, 2 * per + static_cast<size_t>(B) * p.HKV * p.nch * K, &own);
  float* ews = ws + per;
  float* dec = ews + per;
  launch_scan<false, 3>(stream, ws, dec, nullptr, fk, v, g, state0, nullptr, p, B);
  launch_scan<true, 2>(stream, ews, dec, nullptr, fq, dout, g, nullptr, nullptr, p, B);
  const size_t smem = tc_backward_bytes(p.KP, p.VP);
  set_smem(tc_backward_kernel, smem);
  tc_backward_kernel<<<dim3(p.nch, static_cast<unsigned>(B * p.HKV)), kTcThreads, smem, stream>>>(
      dfq, dfk, dv, dg, dout, fq, fk, v, g, ws, ews, p);
  CUDA_CHECK_LAUNCH();
  if (own) CUDA_CHECK(cudaFreeAsync(ws, stream));
}

}  // namespace liger::ops::cuda
