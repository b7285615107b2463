// ops/cuda/attention_bwd_mma.cu — the tensor-core attention backward (bf16 / f16, HS 64 or 128), FlashAttention-2
// shaped; attention_backward (ops/cuda/backward.cu) calls it when the tensors qualify and keeps its fp32 FMA kernels
// for every other case. The contract is ops/attention.h's; the forward's tensor-core kernel (ops/cuda/attention.cu) has
// the same tiling.
//
// Rows of a (batch b, KV head j) are r = t * G + g over (query time t, head g of the KV group), G = H / HKV, as in the
// forward: the G query heads that read KV head j are adjacent rows, so one staged K/V tile serves all of them and one
// key tile of the dK/dV kernel sums over the whole group. Scores are in base-2 units (x = scale log2(e) q . k, so
// exp(scale q . k - m) = exp2(x - m2)), and every product is mma.sync m16n8k16 with fp32 accumulation; P and dS are
// rounded to the storage type only as mma operands, the outputs once on store.
//
//   attention_bwd_dq_mma_kernel: a block (4 warps x 16 rows) owns 64 rows, walks the key tiles of 64 they can see
//     twice, K/V double-buffered with cp.async. Pass 1: S = Q K^T, dP = dO V^T, the online softmax (max m, sum l) and
//     sum_s p_s dp_s; it stores the row statistics (m, 1/l, delta = sum_s p_s dp_s) for the dK/dV kernel. Pass 2:
//     P = exp2(S - m) / l, dS = P o (dP - delta), dQ += dS K; dq = scale dQ.
//   attention_bwd_dkv_mma_kernel, launched after it: a block (8 warps) owns 64 keys, walks the 64-row tiles that can
//     see them (the queries t in [s, s + window - 1] of each of the G heads), Q, dO and the statistics
//     double-buffered. Warp (kw, rh) owns keys 16 kw .. 16 kw + 15 and the rows 32 rh .. 32 rh + 31 of each tile:
//     S^T = K Q^T, dP^T = V dO^T, P^T and dS^T from the statistics, dV += P^T dO, dK += dS^T Q. The two row halves are
//     summed through shared memory at the end (rh 0 + rh 1, a fixed order); dk = scale dK.
// Deterministic, no atomics: each output element is written by one thread, from sums taken in a fixed order. Key
// tiles wholly outside the window or the causal range are never visited; boundary tiles are masked element by element
// with the forward's rule.
#include <climits>
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"

namespace liger::ops::cuda {

// Declared again in ops/cuda/backward.cu, its only caller.
bool attention_backward_mma(const Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                            const Tensor& k, const Tensor& v, float scale, int64_t window, float* stats);

namespace {

struct BwdMmaParams {
  int T, H, HKV, G;  // q, dout, dq (B, T, H, HS); k, v, dk, dv (B, T, HKV, HS); G = H / HKV; T * H < 2^31
  int window;        // 0 = unlimited (a window of T or more is passed as 0: it hides nothing)
  float scale;       // of the scores
  float scale_log2;  // scale * log2(e)
};

// Element offset of row r (= t G + g) of batch b, KV head j, in q, dout or dq (B, T, H, HS); also the index of its
// statistics (B, T, H) times HS.
__device__ __forceinline__ int64_t row_index(const BwdMmaParams& a, int b, int j, int r) {
  const int t = r / a.G, g = r - t * a.G;
  return (static_cast<int64_t>(b) * a.T + t) * a.H + j * a.G + g;
}
// Element offset of key s of batch b, KV head j, in k, v, dk or dv (B, T, HKV, HS), over HS.
__device__ __forceinline__ int64_t key_index(const BwdMmaParams& a, int b, int j, int s) {
  return (static_cast<int64_t>(b) * a.T + s) * a.HKV + j;
}

// The mask of ops/attention.h: position p sees key s iff s <= p and (window == 0 or s > p - window).
__device__ __forceinline__ bool visible(int s, int p, int window) {
  return s <= p && (window == 0 || s > p - window);
}

// Stages rows 0 .. N - 1 of two (., HS) tensors into (N, LD) shared tiles with cp.async; row i starts at element
// offset(i) of both sources, or is zeros where offset(i) < 0.
template <int HS, int LD, int N, class T, class Offset>
__device__ __forceinline__ void stage_rows(T* dst1, T* dst2, const T* src1, const T* src2, Offset&& offset) {
  constexpr int CH = HS / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < N * CH; c += blockDim.x) {
    const int i = c / CH, cc = c % CH;
    const int64_t off = offset(i);
    const bool live = off >= 0;
    const int64_t src = live ? off + cc * 8 : 0;
    cp_async_16(smem_u32(dst1 + i * LD + cc * 8), src1 + src, live);
    cp_async_16(smem_u32(dst2 + i * LD + cc * 8), src2 + src, live);
  }
}

// Double buffering: issues the next step's loads (`load`, when there is a next step), waits for this step's and
// synchronizes the block.
template <class Load>
__device__ __forceinline__ void prefetch_and_wait(bool has_next, Load&& load) {
  if (has_next) {
    load();
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// The A fragment of k-step kk (16 columns) from the accumulators of n-tiles 2 kk and 2 kk + 1 (16 rows x 8 columns
// each): the mma.m16n8 accumulator layout is the A layout of the next product.
template <class T, int N>
__device__ __forceinline__ void acc_to_a(uint32_t (&f)[4], const float (&x)[N][4], int kk) {
  f[0] = pack2<T>(x[2 * kk][0], x[2 * kk][1]);
  f[1] = pack2<T>(x[2 * kk][2], x[2 * kk][3]);
  f[2] = pack2<T>(x[2 * kk + 1][0], x[2 * kk + 1][1]);
  f[3] = pack2<T>(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

// Shared-memory address for the A fragment (16 rows x 16 columns at row0, col0) of a row-major (rows, LD) tile: lane i
// points at row i % 16, column half i / 16.
template <int LD, class T>
__device__ __forceinline__ uint32_t a_addr(const T* base, int row0, int col0, int lane) {
  return smem_u32(base + (row0 + lane % 16) * LD + col0 + (lane / 16) * 8);
}
// Address for the B fragments of two n-tiles (rows row0 .. row0 + 15 of the tile are the n index, columns col0 ..
// col0 + 15 the k index): ldmatrix (no transpose) gives b0, b1 of n-tile row0 / 8 and b0, b1 of the next.
template <int LD, class T>
__device__ __forceinline__ uint32_t bt_addr(const T* base, int row0, int col0, int lane) {
  return smem_u32(base + (row0 + lane % 8 + (lane / 16) * 8) * LD + col0 + ((lane / 8) % 2) * 8);
}
// Address for the B fragments of two n-tiles when the tile's rows row0 .. row0 + 15 are the k index and columns
// col0 .. col0 + 15 the n index (ldmatrix .trans).
template <int LD, class T>
__device__ __forceinline__ uint32_t b_addr(const T* base, int row0, int col0, int lane) {
  return smem_u32(base + (row0 + lane % 8 + ((lane / 8) % 2) * 8) * LD + col0 + (lane / 16) * 8);
}

// x (16, N) = A1 B1^T and y (16, N) = A2 B2^T over the HS columns of row-major (., LD) tiles: rows a0 .. a0 + 15 of A1
// and A2 (the m index), rows b0 .. b0 + N - 1 of B1 and B2 (the n index: n-tile nt holds rows b0 + 8 nt +
// 2 (lane % 4) + {0, 1}). The two products share the k loop, so each A fragment is loaded once.
template <class T, int HS, int LD, int N>
__device__ __forceinline__ void two_products_abt(float (&x)[N / 8][4], float (&y)[N / 8][4], const T* A1, const T* A2,
                                                 int a0, const T* B1, const T* B2, int b0, int lane) {
#pragma unroll
  for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) x[nt][e] = y[nt][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HS / 16; kk++) {
    uint32_t a1[4], a2[4];
    ldmatrix_x4(a1, a_addr<LD>(A1, a0, kk * 16, lane));
    ldmatrix_x4(a2, a_addr<LD>(A2, a0, kk * 16, lane));
#pragma unroll
    for (int nt2 = 0; nt2 < N / 16; nt2++) {
      uint32_t b1[4], b2[4];
      ldmatrix_x4(b1, bt_addr<LD>(B1, b0 + nt2 * 16, kk * 16, lane));
      ldmatrix_x4(b2, bt_addr<LD>(B2, b0 + nt2 * 16, kk * 16, lane));
      mma_16816<T>(x[2 * nt2], a1, b1[0], b1[1]);
      mma_16816<T>(x[2 * nt2 + 1], a1, b1[2], b1[3]);
      mma_16816<T>(y[2 * nt2], a2, b2[0], b2[1]);
      mma_16816<T>(y[2 * nt2 + 1], a2, b2[2], b2[3]);
    }
  }
}

constexpr int kRowTile = 64;  // query rows per tile (the dQ block; a step of the dK/dV block)
constexpr int kKeyTile = 64;  // keys per tile (a step of the dQ block; the dK/dV block)

template <int HS>
constexpr size_t dq_smem_bytes() {
  return static_cast<size_t>(2 * kRowTile + 4 * kKeyTile) * (HS + 8) * 2;  // Q, dO, 2 x K, 2 x V; 2-byte elements
}
template <int HS>
constexpr size_t dkv_smem_bytes() {  // K, V, 2 x Q, 2 x dO, 2 x the row statistics
  return static_cast<size_t>(2 * kKeyTile + 4 * kRowTile) * (HS + 8) * 2 + 2 * kRowTile * sizeof(float4);
}

// dq (B, T, H, HS) and stats (B, T, H) x (m2, 1/l, delta, unused) from dout, q (B, T, H, HS), k, v (B, T, HKV, HS), for
// the 64 rows of tile blockIdx.x (the longest first), KV head blockIdx.y, batch blockIdx.z. Warp w owns rows
// 16 w .. 16 w + 15; a lane holds rows lane / 4 and lane / 4 + 8 of them (the mma.m16n8 layout). m2 is the row's max
// score in base-2 units: p_s = exp2(x_s - m2) / l.
template <class T, int HS>
__global__ void __launch_bounds__(128) attention_bwd_dq_mma_kernel(T* dq, float4* stats, const T* dout, const T* q,
                                                                   const T* k, const T* v, BwdMmaParams a) {
  constexpr int BQ = kRowTile, BK = kKeyTile;
  constexpr int LD = HS + 8;  // shared row stride in elements: +16 bytes keeps ldmatrix conflict-free
  constexpr int DT = HS / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // (BQ, LD)
  T* Ds = Qs + BQ * LD;                    // (BQ, LD) dO
  T* Ks = Ds + BQ * LD;                    // 2 buffers of (BK, LD)
  T* Vs = Ks + 2 * BK * LD;                // 2 buffers of (BK, LD)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, j = blockIdx.y, rows = a.T * a.G;
  const int r0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * BQ;
  const int p_first = r0 / a.G, p_last = (min(r0 + BQ, rows) - 1) / a.G;
  const int s_begin = a.window > 0 ? max(0, p_first - a.window + 1) : 0, s_end = p_last + 1;
  const int n_tiles = (s_end - s_begin + BK - 1) / BK, n_steps = 2 * n_tiles;  // pass 1, then pass 2

  // Zeros beyond the last row (never written) and the last key (no garbage, NaN, can reach the products).
  stage_rows<HS, LD, BQ>(Qs, Ds, q, dout,
                         [&](int i) -> int64_t { return r0 + i < rows ? row_index(a, b, j, r0 + i) * HS : -1; });
  auto load_kv = [&](int tile, int buf) {
    const int s0 = s_begin + tile * BK;
    stage_rows<HS, LD, BK>(Ks + buf * BK * LD, Vs + buf * BK * LD, k, v,
                           [&](int i) -> int64_t { return s0 + i < s_end ? key_index(a, b, j, s0 + i) * HS : -1; });
  };
  load_kv(0, 0);
  cp_async_commit();

  // This thread's two rows and their positions (rows beyond the last are computed on zeros and never written).
  const int row_a = r0 + warp * 16 + lane / 4, row_b = row_a + 8;
  const int pos_a = row_a / a.G, pos_b = row_b / a.G;
  // Pass 1: running max, this lane's share of sum p and of sum p dp. After pass 1: m = the base of exp2 (0 for a row
  // that sees nothing), l = 1 / l, d = delta.
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f, d_a = 0.0f, d_b = 0.0f;
  float acc[DT][4];  // dQ (16, HS) of the warp: column tile dt holds dims 8 dt + 2 (lane % 4) + {0, 1}
#pragma unroll
  for (int dt = 0; dt < DT; dt++) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;

  for (int step = 0; step < n_steps; step++) {
    const int buf = step & 1;
    const bool pass2 = step >= n_tiles;
    const int tile = pass2 ? step - n_tiles : step;
    prefetch_and_wait(step + 1 < n_steps, [&] { load_kv((step + 1) % n_tiles, buf ^ 1); });

    // S (16, BK) = Q K^T and dP (16, BK) = dO V^T: n-tile nt holds keys 8 nt + 2 (lane % 4) + {0, 1}.
    const T* Kb = Ks + buf * BK * LD;
    const T* Vb = Vs + buf * BK * LD;
    float s[BK / 8][4], dp[BK / 8][4];
    two_products_abt<T, HS, LD, BK>(s, dp, Qs, Ds, warp * 16, Kb, Vb, 0, lane);

    // Scale and mask (the per-element test is skipped when every row of the block sees every key of the tile).
    const int s0 = s_begin + tile * BK;
    const bool all_visible = s0 + BK <= s_end && s0 + BK - 1 <= p_first && (a.window == 0 || s0 > p_last - a.window);
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = s0 + nt * 8 + 2 * (lane % 4) + (e & 1);
        const bool vis = all_visible || visible(key, e < 2 ? pos_a : pos_b, a.window);
        s[nt][e] = vis ? s[nt][e] * a.scale_log2 : -INFINITY;
      }
    }

    if (!pass2) {
      // Online softmax on rows a and b: the 4 lanes of a quad hold one row's BK scores.
      float mx_a, mx_b;
      quad_row_max(s, mx_a, mx_b);
      const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
      const float base_a = new_a == -INFINITY ? 0.0f : new_a;  // a row with nothing visible yet stays at zero
      const float base_b = new_b == -INFINITY ? 0.0f : new_b;
      const float alpha_a = exp2f(m_a - base_a), alpha_b = exp2f(m_b - base_b);
      m_a = new_a;
      m_b = new_b;
      float sum_a = 0.0f, sum_b = 0.0f, dsum_a = 0.0f, dsum_b = 0.0f;
#pragma unroll
      for (int nt = 0; nt < BK / 8; nt++) {
        const float p0 = exp2f(s[nt][0] - base_a), p1 = exp2f(s[nt][1] - base_a);
        const float p2 = exp2f(s[nt][2] - base_b), p3 = exp2f(s[nt][3] - base_b);
        sum_a += p0 + p1;
        sum_b += p2 + p3;
        dsum_a = fmaf(p1, dp[nt][1], fmaf(p0, dp[nt][0], dsum_a));
        dsum_b = fmaf(p3, dp[nt][3], fmaf(p2, dp[nt][2], dsum_b));
      }
      l_a = l_a * alpha_a + sum_a;  // this lane's share; the quad is summed after the last tile
      l_b = l_b * alpha_b + sum_b;
      d_a = d_a * alpha_a + dsum_a;
      d_b = d_b * alpha_b + dsum_b;

      if (step == n_tiles - 1) {
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
          l_a += __shfl_xor_sync(0xffffffffu, l_a, o2);
          l_b += __shfl_xor_sync(0xffffffffu, l_b, o2);
          d_a += __shfl_xor_sync(0xffffffffu, d_a, o2);
          d_b += __shfl_xor_sync(0xffffffffu, d_b, o2);
        }
        // Every live row sees its own key, so l >= 1 there; the guards keep rows beyond the last finite.
        m_a = m_a == -INFINITY ? 0.0f : m_a;
        m_b = m_b == -INFINITY ? 0.0f : m_b;
        l_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;
        l_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
        d_a *= l_a;
        d_b *= l_b;
        if (lane % 4 == 0) {
          if (row_a < rows) stats[row_index(a, b, j, row_a)] = make_float4(m_a, l_a, d_a, 0.0f);
          if (row_b < rows) stats[row_index(a, b, j, row_b)] = make_float4(m_b, l_b, d_b, 0.0f);
        }
      }
    } else {
      // dS = P o (dP - delta), kept in s; dQ (16, HS) += dS (16, BK) K (BK, HS).
#pragma unroll
      for (int nt = 0; nt < BK / 8; nt++) {
        s[nt][0] = exp2f(s[nt][0] - m_a) * l_a * (dp[nt][0] - d_a);
        s[nt][1] = exp2f(s[nt][1] - m_a) * l_a * (dp[nt][1] - d_a);
        s[nt][2] = exp2f(s[nt][2] - m_b) * l_b * (dp[nt][2] - d_b);
        s[nt][3] = exp2f(s[nt][3] - m_b) * l_b * (dp[nt][3] - d_b);
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) {
        uint32_t sf[4];
        acc_to_a<T>(sf, s, kk);
#pragma unroll
        for (int dt2 = 0; dt2 < HS / 16; dt2++) {
          uint32_t kf[4];
          ldmatrix_x4_trans(kf, b_addr<LD>(Kb, kk * 16, dt2 * 16, lane));
          mma_16816<T>(acc[2 * dt2], sf, kf[0], kf[1]);
          mma_16816<T>(acc[2 * dt2 + 1], sf, kf[2], kf[3]);
        }
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the next step's load
  }

  const int d0 = 2 * (lane % 4);
  if (row_a < rows) {
    T* dst = dq + row_index(a, b, j, row_a) * HS + d0;
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack2<T>(acc[dt][0] * a.scale, acc[dt][1] * a.scale);
  }
  if (row_b < rows) {
    T* dst = dq + row_index(a, b, j, row_b) * HS + d0;
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack2<T>(acc[dt][2] * a.scale, acc[dt][3] * a.scale);
  }
}

// dk, dv (B, T, HKV, HS) for the 64 keys of tile blockIdx.x, KV head blockIdx.y, batch blockIdx.z, from dout, q
// (B, T, H, HS), k, v and the stats of attention_bwd_dq_mma_kernel. 8 warps: warp w = 4 rh + kw owns keys
// 16 kw .. 16 kw + 15 (a lane holds keys lane / 4 and lane / 4 + 8 of them) and rows 32 rh .. 32 rh + 31 of each row
// tile.
template <class T, int HS>
__global__ void __launch_bounds__(256)
    attention_bwd_dkv_mma_kernel(T* dk, T* dv, const float4* stats, const T* dout, const T* q, const T* k, const T* v,
                                 BwdMmaParams a) {
  constexpr int BK = kKeyTile, BR = kRowTile;
  constexpr int LD = HS + 8, DT = HS / 8;
  constexpr int RH = BR / 2;  // rows of a tile per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);                    // (BK, LD)
  T* Vs = Ks + BK * LD;                                      // (BK, LD)
  T* Qs = Vs + BK * LD;                                      // 2 buffers of (BR, LD)
  T* Ds = Qs + 2 * BR * LD;                                  // 2 buffers of (BR, LD) dO
  float4* Ss = reinterpret_cast<float4*>(Ds + 2 * BR * LD);  // 2 buffers of BR statistics

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, kw = warp & 3, rh = warp >> 2;
  const int b = blockIdx.z, j = blockIdx.y;
  const int s0 = static_cast<int>(blockIdx.x) * BK, s1 = min(s0 + BK, a.T);
  // Queries that see a key of [s0, s1): positions s0 .. t_hi, rows [r_begin, r_end).
  const int t_hi = a.window > 0 ? min(a.T - 1, s1 - 1 + a.window - 1) : a.T - 1;
  const int r_begin = s0 * a.G, r_end = (t_hi + 1) * a.G;
  const int n_steps = (r_end - r_begin + BR - 1) / BR;

  // Keys beyond the last come as zeros (never written).
  stage_rows<HS, LD, BK>(Ks, Vs, k, v,
                         [&](int i) -> int64_t { return s0 + i < a.T ? key_index(a, b, j, s0 + i) * HS : -1; });
  // Rows beyond r_end come as zeros: q = dO = 0 and statistics (0, 0, 0), so p = exp2(0) * 0 = 0.
  auto load_rows = [&](int step, int buf) {
    const int r0 = r_begin + step * BR;
    stage_rows<HS, LD, BR>(Qs + buf * BR * LD, Ds + buf * BR * LD, q, dout,
                           [&](int i) -> int64_t { return r0 + i < r_end ? row_index(a, b, j, r0 + i) * HS : -1; });
    for (int rr = tid; rr < BR; rr += blockDim.x) {
      const bool live = r0 + rr < r_end;
      cp_async_16(smem_u32(Ss + buf * BR + rr), stats + (live ? row_index(a, b, j, r0 + rr) : 0), live);
    }
  };
  load_rows(0, 0);
  cp_async_commit();

  const int key_a = s0 + kw * 16 + lane / 4, key_b = key_a + 8;  // this thread's two keys
  float dk_acc[DT][4],
      dv_acc[DT][4];  // (16 keys, HS) of the warp: column tile dt holds dims 8 dt + 2 (lane % 4) + {0, 1}
#pragma unroll
  for (int dt = 0; dt < DT; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk_acc[dt][e] = dv_acc[dt][e] = 0.0f;

  for (int step = 0; step < n_steps; step++) {
    const int buf = step & 1;
    prefetch_and_wait(step + 1 < n_steps, [&] { load_rows(step + 1, buf ^ 1); });
    const T* Qb = Qs + buf * BR * LD;
    const T* Db = Ds + buf * BR * LD;
    const float4* Sb = Ss + buf * BR;
    const int r0 = r_begin + step * BR;

    // S^T (16 keys, RH rows) = K Q^T and dP^T = V dO^T: n-tile nt holds rows 32 rh + 8 nt + 2 (lane % 4) + {0, 1}.
    float s[RH / 8][4], dp[RH / 8][4];
    two_products_abt<T, HS, LD, RH>(s, dp, Ks, Vs, kw * 16, Qb, Db, rh * RH, lane);

    // P^T (in s) and dS^T = P^T o (dP^T - delta) (in dp); masked elements 0. The per-element test is skipped when
    // every live row of the tile sees every key of the block.
    const int p_lo = r0 / a.G, p_hi = (min(r0 + BR, r_end) - 1) / a.G;
    const bool all_visible = s0 + BK <= a.T && s0 + BK - 1 <= p_lo && (a.window == 0 || s0 > p_hi - a.window);
#pragma unroll
    for (int nt = 0; nt < RH / 8; nt++) {
#pragma unroll
      for (int c = 0; c < 2; c++) {
        const int rl = rh * RH + nt * 8 + 2 * (lane % 4) + c;  // the row of elements c and c + 2
        const float4 st = Sb[rl];
        const int pos = (r0 + rl) / a.G;
        const bool vis_a = all_visible || visible(key_a, pos, a.window);
        const bool vis_b = all_visible || visible(key_b, pos, a.window);
        const float pa = vis_a ? exp2f(s[nt][c] * a.scale_log2 - st.x) * st.y : 0.0f;
        const float pb = vis_b ? exp2f(s[nt][c + 2] * a.scale_log2 - st.x) * st.y : 0.0f;
        s[nt][c] = pa;
        s[nt][c + 2] = pb;
        dp[nt][c] = pa * (dp[nt][c] - st.z);
        dp[nt][c + 2] = pb * (dp[nt][c + 2] - st.z);
      }
    }

    // dV (16, HS) += P^T (16, RH) dO (RH, HS); dK (16, HS) += dS^T (16, RH) Q (RH, HS).
#pragma unroll
    for (int kk = 0; kk < RH / 16; kk++) {
      uint32_t pf[4], sf[4];
      acc_to_a<T>(pf, s, kk);
      acc_to_a<T>(sf, dp, kk);
#pragma unroll
      for (int dt2 = 0; dt2 < HS / 16; dt2++) {
        uint32_t of[4], qf[4];
        ldmatrix_x4_trans(of, b_addr<LD>(Db, rh * RH + kk * 16, dt2 * 16, lane));
        ldmatrix_x4_trans(qf, b_addr<LD>(Qb, rh * RH + kk * 16, dt2 * 16, lane));
        mma_16816<T>(dv_acc[2 * dt2], pf, of[0], of[1]);
        mma_16816<T>(dv_acc[2 * dt2 + 1], pf, of[2], of[3]);
        mma_16816<T>(dk_acc[2 * dt2], sf, qf[0], qf[1]);
        mma_16816<T>(dk_acc[2 * dt2 + 1], sf, qf[2], qf[3]);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the next step's load
  }

  // Sum the two row halves: warps rh = 1 leave theirs in shared memory (free now: every load has landed and been
  // consumed), warps rh = 0 add them to their own and store. Per-lane layout: conflict-free.
  constexpr int NR = 2 * DT * 4;  // accumulators per lane
  static_assert(4 * NR * 32 * sizeof(float) <= dkv_smem_bytes<HS>(), "reduction area exceeds shared memory");
  float* red = reinterpret_cast<float*>(smem_raw) + kw * NR * 32 + lane;
  if (rh == 1) {
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        red[((dt * 4 + e) * 2) * 32] = dk_acc[dt][e];
        red[((dt * 4 + e) * 2 + 1) * 32] = dv_acc[dt][e];
      }
  }
  __syncthreads();
  if (rh == 1) return;
#pragma unroll
  for (int dt = 0; dt < DT; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      dk_acc[dt][e] = (dk_acc[dt][e] + red[((dt * 4 + e) * 2) * 32]) * a.scale;
      dv_acc[dt][e] += red[((dt * 4 + e) * 2 + 1) * 32];
    }
  const int d0 = 2 * (lane % 4);
  if (key_a < a.T) {
    const int64_t off = key_index(a, b, j, key_a) * HS + d0;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      *reinterpret_cast<uint32_t*>(dk + off + dt * 8) = pack2<T>(dk_acc[dt][0], dk_acc[dt][1]);
      *reinterpret_cast<uint32_t*>(dv + off + dt * 8) = pack2<T>(dv_acc[dt][0], dv_acc[dt][1]);
    }
  }
  if (key_b < a.T) {
    const int64_t off = key_index(a, b, j, key_b) * HS + d0;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      *reinterpret_cast<uint32_t*>(dk + off + dt * 8) = pack2<T>(dk_acc[dt][2], dk_acc[dt][3]);
      *reinterpret_cast<uint32_t*>(dv + off + dt * 8) = pack2<T>(dv_acc[dt][2], dv_acc[dt][3]);
    }
  }
}

template <class T, int HS>
void launch_bwd_mma(const Context& ctx, T* dq, T* dk, T* dv, float4* stats, const T* dout, const T* q, const T* k,
                    const T* v, const BwdMmaParams& a, int B) {
  auto dq_kernel = attention_bwd_dq_mma_kernel<T, HS>;
  auto dkv_kernel = attention_bwd_dkv_mma_kernel<T, HS>;
  constexpr size_t dq_smem = dq_smem_bytes<HS>(), dkv_smem = dkv_smem_bytes<HS>();
  CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dq_smem)));
  CUDA_CHECK(cudaFuncSetAttribute(dkv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dkv_smem)));
  const int64_t row_tiles = (static_cast<int64_t>(a.T) * a.G + kRowTile - 1) / kRowTile;
  const int64_t key_tiles = (static_cast<int64_t>(a.T) + kKeyTile - 1) / kKeyTile;
  dq_kernel<<<dim3(static_cast<unsigned>(row_tiles), static_cast<unsigned>(a.HKV), static_cast<unsigned>(B)), 128,
              dq_smem, stream_of(ctx)>>>(dq, stats, dout, q, k, v, a);
  CUDA_CHECK_LAUNCH();
  dkv_kernel<<<dim3(static_cast<unsigned>(key_tiles), static_cast<unsigned>(a.HKV), static_cast<unsigned>(B)), 256,
               dkv_smem, stream_of(ctx)>>>(dk, dv, stats, dout, q, k, v, a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool attention_backward_mma(const Context& ctx, Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                            const Tensor& k, const Tensor& v, float scale, int64_t window, float* stats) {
  const DType dt = q.dtype();
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), HKV = k.dim(2);
  if (dt != DType::BF16 && dt != DType::F16) return false;
  if (HS != 64 && HS != 128) return false;
  if (T * H > INT_MAX / 2 || B > 65535 || HKV > 65535) return false;
  const void* ptrs[] = {dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), stats};
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  const int w = window >= T ? 0 : static_cast<int>(window);  // a window of T or more hides nothing
  const BwdMmaParams a{
      static_cast<int>(T),        static_cast<int>(H), static_cast<int>(HKV), static_cast<int>(H / HKV), w, scale,
      scale * 1.4426950408889634f};
  float4* st = reinterpret_cast<float4*>(stats);
  dispatch_float(dt, "attention_backward", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T_, float>) {
      if (HS == 64) {
        launch_bwd_mma<T_, 64>(ctx, dq.ptr<T_>(), dk.ptr<T_>(), dv.ptr<T_>(), st, dout.ptr<T_>(), q.ptr<T_>(),
                               k.ptr<T_>(), v.ptr<T_>(), a, static_cast<int>(B));
      } else {
        launch_bwd_mma<T_, 128>(ctx, dq.ptr<T_>(), dk.ptr<T_>(), dv.ptr<T_>(), st, dout.ptr<T_>(), q.ptr<T_>(),
                                k.ptr<T_>(), v.ptr<T_>(), a, static_cast<int>(B));
      }
    }
  });
  return true;
}

}  // namespace liger::ops::cuda
