// ops/cuda/recurrence.cu — the gated linear recurrences of ops/recurrence.h on the GPU: linear_recurrence (GLA,
// HGRN2, GSA's second pass) and slot_scores (GSA's first pass), chunked and one-step forms, and both backwards.
//
// Both ops are one recurrence per (batch b, KV head j): a state S (R x C) whose ROWS are gated,
//     S_t = Diag(exp g_t) S_{t-1} + a_t (x) b_t          (g_t, a_t in R^R; b_t in R^C)
// read out once per query head h of the group of j, either along the rows or along the columns:
//     row readout     o_t[h] = S_t^T x_t[h]  (x in R^R, o in R^C)
//         linear_recurrence: R = K, C = Vd, (x, a, b) = (fq, fk, v)
//     column readout  z_t[h] = S_t y_t[h]    (y in R^C, z in R^R)
//         slot_scores: R = M, C = d, (y, a, b) = (q, s, k)
// Everything is fp32 inside (running log-gate sums, scores, states); inputs are f32 or bf16 and each output is rounded
// once when it is stored.
//
// Chunks. The sequence is cut in chunks of LC tokens. slot_scores' forward walks them in order, the state in shared
// memory; linear_recurrence's forward and both backwards first scan the chunks for the state before each (and, in the
// backward, the adjoint carried into each), then process every chunk in parallel from those boundaries.
// Within a chunk, G_i = g_0 + ... + g_i is the running sum of the log-gates (fp32, in token order like the CPU twin),
// and every decay factor is the exponential of a difference of running sums that is <= 0 (exp(G_i - G_s) for s <= i,
// exp(G_last - G_s), exp(G_i)): never a ratio of exponentials, so nothing overflows whatever the gates. Per chunk and
// query head (S0 = the state before the chunk):
//     row readout     o_i = sum_c x_i[c] exp(G_i[c]) S0[c, :] + sum_{s<=i} M[i, s] b_s,
//                     M[i, s] = sum_c x_i[c] a_s[c] exp(G_i[c] - G_s[c])
//     column readout  z_i[c] = exp(G_i[c]) (S0 y_i)[c] + sum_{s<=i} a_s[c] exp(G_i[c] - G_s[c]) (b_s . y_i)
//     state           S <- Diag(exp G_last) S + sum_s (a_s o exp(G_last - G_s)) (x) b_s
// A row readout needs every row of the state and splits the columns over blocks (tiles of kTile columns); a column
// readout needs every column and splits the rows. The chunk is the `chunk` argument capped at kMaxChunk tokens and at
// what fits in shared memory (any chunk gives the same result up to rounding).
//
// Backward (the training form: from state0, the final state's cotangent zero). With the readout cotangent
// Q_t = sum_h u_t[h] (x) w_t[h] (linear_recurrence: u = fq, w = dout; slot_scores: u = dz, w = q), the adjoint
//     D_t = Q_t + Diag(exp g_{t+1}) D_{t+1}
// gives da_t = D_t b_t, db_t = D_t^T a_t, and the readout input's gradient is a readout of S_t (linear_recurrence:
// dfq_t[h] = S_t dout_t[h], a column readout; slot_scores: dq_t[h] = S_t^T dz_t[h], a row readout). The log-gate
// gradient uses dL/dG_t[c] = sum_h u_t[h][c] (S_t w_t[h])[c] - a_t[c] da_t[c] (the gate scales row c of S_t, and
// enters a_s as exp(-G_s) in every later state), summed over r >= t:
//     dg_t[c] = sum_{r >= t in the chunk} (sum_h u_r[h][c] P_r[h][c] - a_r[c] da_r[c]) + sum_e E[c, e] S_next[c, e],
// P_r[h] = S_r w_r[h], E = Diag(exp g_next) D_next the cotangent carried in from the later chunks, S_next the state
// after the chunk. The same identity as the CPU twin's dg_t = exp(g_t) rowsum(D_t o S_{t-1}), evaluated per chunk.
// Kernels:
//   chunk_states_kernel    the state before every chunk, into a workspace (B, HKV, chunks, R, C) f32 (and the final
//                          state: linear_recurrence's forward);
//   row_chunk_forward_kernel  linear_recurrence's output, a block per (chunk, query head, column tile);
//   chunk_adjoints_kernel  the cotangent E carried into every chunk from the later ones (a reverse scan), (B, HKV,
//                          chunks, R, C) f32;
//   col_backward_kernel    a block per (chunk, tile of rows) with the adjoint tile E (rows x C): P (dfq, or slot_scores'
//                          z for dg only), da, dg;
//   row_backward_kernel    a block per (chunk, tile of columns) with E (R x columns): db, and for slot_scores the row
//                          readout dq.
// The chunk-parallel kernels repeat the serial walk's arithmetic in the same order, so the results are unchanged.
// Within a chunk, D_i = sum_{r>=i} exp(G_r - G_i) Q_r + exp(G_last - G_i) E, and the carry to the previous chunk is
// E <- Diag(exp G_last) E + sum_r exp(G_r) o Q_r.
//
// One-step forms (decode): row_step_kernel / col_step_kernel, a block per (b, j, tile of 32 columns or rows).
//
// These kernels are plain fp32 FMA code (no tensor cores). linear_recurrence with bf16 storage and states up to
// 128 x 128 runs on the tensor cores instead (ops/cuda/recurrence_tc.cu; use_tensor_cores below).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>

#include "ops/cuda/common.cuh"
#include "ops/cuda/recurrence_tc.cuh"
#include "ops/recurrence.h"

namespace liger::ops::cuda {
namespace {

constexpr int kThreads = 256;  // every kernel
constexpr int kMaxChunk = 64;  // tokens per chunk at most
constexpr int kTile = 32;      // width of the split dimension of a state tile (columns or rows)
constexpr int kChunkThreads = 512;  // the chunk-parallel kernels (one chunk per block; large shared tiles, 1 block/SM)

// Sizes shared by every kernel of one call.
struct Rec {
  int64_t T;    // tokens
  int HKV, G;   // KV heads; query heads per KV head (H = HKV * G)
  int R, C;     // state rows (gated: K of linear_recurrence, M of slot_scores) and columns (Vd, d)
  int LC, LP;   // chunk length; row pitch of the channel-major chunk tiles (LC + 1: odd pitches spread the banks)
  int tile;     // width of the block's tile of columns (row kernels) or rows (column kernels)
  int nchunks;  // ceil(T / LC)
};

__device__ __forceinline__ int imin(int a, int b) {
  return a < b ? a : b;
}

// Element offset of (b, t, head, 0) in a (B, T, heads, dim) tensor.
__device__ __forceinline__ int64_t row_at(int64_t T, int64_t heads, int64_t dim, int64_t b, int64_t t, int64_t head) {
  return ((b * T + t) * heads + head) * dim;
}

// ---- chunk tiles in shared memory -----------------------------------------------------------------------------------

// dst[c * LP + i] = src[i * pitch + c] in fp32 for channels c < W and tokens i < L: a chunk of per-token rows stored
// channel-major (the token index contiguous). Consecutive threads read consecutive channels.
template <class T>
__device__ __forceinline__ void stage_cm(float* dst, int LP, const T* src, int64_t pitch, int W, int L) {
  for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
    const int i = idx / W, c = idx - i * W;
    dst[c * LP + i] = to_f32(src[i * pitch + c]);
  }
}

// dst[i * ld + c] = src[i * pitch + c] in fp32 for c < W, i < L (token-major).
template <class T>
__device__ __forceinline__ void stage_tm(float* dst, int ld, const T* src, int64_t pitch, int W, int L) {
  for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
    const int i = idx / W, c = idx - i * W;
    dst[i * ld + c] = to_f32(src[i * pitch + c]);
  }
}

// In place over a channel-major (W, LP) tile of log-gates: G[c][i] = g_0[c] + ... + g_i[c], summed in token order.
__device__ __forceinline__ void running_sums(float* G, int LP, int W, int L) {
  for (int c = threadIdx.x; c < W; c += blockDim.x) {
    float* Gc = G + c * LP;
    float acc = 0.0f;
    for (int i = 0; i < L; i++) {
      acc = Gc[i] + acc;
      Gc[i] = acc;
    }
  }
}

// X[c][i] *= exp(G[c][i]) over a channel-major (W, LP) tile.
__device__ __forceinline__ void scale_by_exp(float* X, const float* G, int LP, int W, int L) {
  for (int idx = threadIdx.x; idx < W * L; idx += blockDim.x) {
    const int c = idx / L, i = idx - c * L;
    X[c * LP + i] *= expf(G[c * LP + i]);
  }
}

// X[c][i] *= exp(G[c][L-1] - G[c][i]): the decay from token i to the chunk's last token.
__device__ __forceinline__ void decay_to_last(float* X, const float* G, int LP, int W, int L) {
  for (int idx = threadIdx.x; idx < W * L; idx += blockDim.x) {
    const int c = idx / L, i = idx - c * L;
    X[c * LP + i] *= expf(G[c * LP + L - 1] - G[c * LP + i]);
  }
}

// Lower-triangular scores of a chunk, M[i * LP + s] for s <= i < L:
//   kDecay:  sum_{c < W} X[c][i] Y[c][s] exp(G[c][i] - G[c][s])     (the exponent is <= 0: G never increases)
//   !kDecay: sum_{c < W} X[c][i] Y[c][s]
// X, Y, G channel-major with pitch LP. A thread computes a 2 x 2 block of (i, s); entries with s > i are not written.
template <bool kDecay>
__device__ __forceinline__ void tri_scores(float* M, const float* X, const float* Y, const float* G, int W, int L,
                                           int LP) {
  const int nb = (L + 1) / 2, blocks = nb * (nb + 1) / 2;
  for (int p = threadIdx.x; p < blocks; p += blockDim.x) {
    int bi = static_cast<int>((sqrtf(8.0f * static_cast<float>(p) + 1.0f) - 1.0f) * 0.5f);
    while (bi * (bi + 1) / 2 > p) bi--;
    while ((bi + 1) * (bi + 2) / 2 <= p) bi++;
    const int bs = p - bi * (bi + 1) / 2;
    // Rows i0, i0 + 1 and columns s0, s0 + 1 (an index past the chunk reads a valid one; its entry is not stored).
    const int i0 = 2 * bi, i1 = imin(i0 + 1, L - 1), s0 = 2 * bs, s1 = imin(s0 + 1, L - 1);
    float m00 = 0.0f, m01 = 0.0f, m10 = 0.0f, m11 = 0.0f;
    for (int c = 0; c < W; c++) {
      const float* Xc = X + c * LP;
      const float* Yc = Y + c * LP;
      const float x0 = Xc[i0], x1 = Xc[i1], y0 = Yc[s0], y1 = Yc[s1];
      if constexpr (kDecay) {
        const float* Gc = G + c * LP;
        const float gi0 = Gc[i0], gi1 = Gc[i1], gs0 = Gc[s0], gs1 = Gc[s1];
        m00 = fmaf(x0 * y0, expf(gi0 - gs0), m00);
        m01 = fmaf(x0 * y1, expf(gi0 - gs1), m01);
        m10 = fmaf(x1 * y0, expf(gi1 - gs0), m10);
        m11 = fmaf(x1 * y1, expf(gi1 - gs1), m11);
      } else {
        m00 = fmaf(x0, y0, m00);
        m01 = fmaf(x0, y1, m01);
        m10 = fmaf(x1, y0, m10);
        m11 = fmaf(x1, y1, m11);
      }
    }
    M[i0 * LP + s0] = m00;  // s0 <= i0 always
    if (s0 + 1 <= i0) M[i0 * LP + s0 + 1] = m01;
    if (i0 + 1 < L) {
      M[(i0 + 1) * LP + s0] = m10;
      M[(i0 + 1) * LP + s0 + 1] = m11;  // s0 + 1 <= i0 + 1
    }
  }
}

// ---- forward: row readout (linear_recurrence) -----------------------------------------------------------------------

// Shared memory of row_chunk_forward_kernel, in floats.
size_t row_forward_floats(int R, int LC, int VT) {
  const size_t LP = static_cast<size_t>(LC) + 1;
  return 3 * R * LP + LC * LP + static_cast<size_t>(LC) * VT + static_cast<size_t>(R) * VT;
}

// ---- forward: column readout (slot_scores) --------------------------------------------------------------------------

size_t col_forward_floats(int RT, int C, int LC) {
  const size_t LP = static_cast<size_t>(LC) + 1;
  return 2 * RT * LP + 2 * C * LP + LC * LP + static_cast<size_t>(RT) * (C + 1);
}

// z (B, T, H, R) =, z_t[h] = S_t y_t[h]; y (B, T, H, C), a and g (B, T, HKV, R), bv (B, T, HKV, C); state (B, HKV, R,
// C) f32 in and out. Block: rows [blockIdx.x * RT, + RT) of KV head blockIdx.y, batch blockIdx.z.
template <class T>
__global__ void __launch_bounds__(kThreads)
    col_forward_kernel(T* z, const T* y, const T* a, const T* bv, const T* g, float* state, Rec p) {
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C, RT = p.tile, SP = C + 1;
  float* Gs = reinterpret_cast<float*>(smem4);  // (RT, LP) running log-gate sums of this block's rows
  float* As = Gs + RT * LP;                     // (RT, LP) a, then a * exp(G_last - G)
  float* Bs = As + RT * LP;                     // (C, LP) b, channel-major
  float* Ys = Bs + C * LP;                      // (C, LP) y of one query head, channel-major
  float* Ms = Ys + C * LP;                      // (LC, LP) y_i . b_s
  float* Ss = Ms + p.LC * LP;                   // (RT, C + 1) the state tile
  const int c0 = blockIdx.x * RT, W = imin(RT, R - c0), j = blockIdx.y;
  const int64_t b = blockIdx.z, H = static_cast<int64_t>(p.HKV) * p.G;
  float* St = state + ((b * p.HKV + j) * R + c0) * C;

  for (int idx = threadIdx.x; idx < W * C; idx += blockDim.x) {
    const int c = idx / C, e = idx - c * C;
    Ss[c * SP + e] = St[idx];
  }
  for (int64_t t0 = 0; t0 < p.T; t0 += p.LC) {
    const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
    __syncthreads();
    const int64_t kv = row_at(p.T, p.HKV, R, b, t0, j) + c0;
    stage_cm(Gs, LP, g + kv, static_cast<int64_t>(p.HKV) * R, W, L);
    stage_cm(As, LP, a + kv, static_cast<int64_t>(p.HKV) * R, W, L);
    stage_cm(Bs, LP, bv + row_at(p.T, p.HKV, C, b, t0, j), static_cast<int64_t>(p.HKV) * C, C, L);
    __syncthreads();
    running_sums(Gs, LP, W, L);
    for (int64_t h = static_cast<int64_t>(j) * p.G; h < static_cast<int64_t>(j + 1) * p.G; h++) {
      __syncthreads();
      stage_cm(Ys, LP, y + row_at(p.T, H, C, b, t0, h), H * C, C, L);
      __syncthreads();
      tri_scores<false>(Ms, Ys, Bs, nullptr, C, L, LP);
      __syncthreads();
      T* zo = z + row_at(p.T, H, R, b, t0, h) + c0;
      for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
        const int i = idx / W, c = idx - i * W;
        const float* Gc = Gs + c * LP;
        const float* Ac = As + c * LP;
        const float Gi = Gc[i];
        float dot = 0.0f;
        for (int e = 0; e < C; e++) dot = fmaf(Ss[c * SP + e], Ys[e * LP + i], dot);
        float acc = expf(Gi) * dot;
        for (int s = 0; s <= i; s++) acc = fmaf(expf(Gi - Gc[s]) * Ac[s], Ms[i * LP + s], acc);
        zo[static_cast<int64_t>(i) * H * R + c] = from_f32<T>(acc);
      }
    }
    __syncthreads();
    decay_to_last(As, Gs, LP, W, L);
    __syncthreads();
    for (int idx = threadIdx.x; idx < W * C; idx += blockDim.x) {
      const int c = idx / C, e = idx - c * C;
      float acc = Ss[c * SP + e] * expf(Gs[c * LP + L - 1]);
      for (int s = 0; s < L; s++) acc = fmaf(As[c * LP + s], Bs[e * LP + s], acc);
      Ss[c * SP + e] = acc;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < W * C; idx += blockDim.x) {
    const int c = idx / C, e = idx - c * C;
    St[idx] = Ss[c * SP + e];
  }
}

// ---- one-step forms -------------------------------------------------------------------------------------------------

// out (B, 1, H, C) = S^T x[h] after S = Diag(exp g) S + a (x) b. Block: columns [blockIdx.x * kTile, + kTile) of KV
// head blockIdx.y, batch blockIdx.z. Shared memory: Ss (R, kTile), Xs (G, R).
template <class T>
__global__ void __launch_bounds__(kThreads)
    row_step_kernel(T* out, const T* x, const T* a, const T* bv, const T* g, float* state, Rec p) {
  extern __shared__ float4 smem4[];
  const int R = p.R, C = p.C;
  float* Ss = reinterpret_cast<float*>(smem4);
  float* Xs = Ss + R * kTile;
  const int e0 = blockIdx.x * kTile, W = imin(kTile, C - e0), j = blockIdx.y;
  const int64_t b = blockIdx.z, H = static_cast<int64_t>(p.HKV) * p.G, bj = b * p.HKV + j;
  float* St = state + bj * R * C + e0;
  const T* gj = g + bj * R;
  const T* aj = a + bj * R;
  const T* bjv = bv + bj * C + e0;
  for (int idx = threadIdx.x; idx < R * kTile; idx += blockDim.x) {
    const int c = idx / kTile, e = idx - c * kTile;
    if (e >= W) continue;
    const float s = expf(to_f32(gj[c])) * St[static_cast<int64_t>(c) * C + e] + to_f32(aj[c]) * to_f32(bjv[e]);
    St[static_cast<int64_t>(c) * C + e] = s;
    Ss[idx] = s;
  }
  const T* xj = x + (b * H + static_cast<int64_t>(j) * p.G) * R;  // the group's G heads, contiguous
  for (int idx = threadIdx.x; idx < p.G * R; idx += blockDim.x) Xs[idx] = to_f32(xj[idx]);
  __syncthreads();
  T* oj = out + (b * H + static_cast<int64_t>(j) * p.G) * C + e0;
  for (int idx = threadIdx.x; idx < p.G * kTile; idx += blockDim.x) {
    const int hh = idx / kTile, e = idx - hh * kTile;
    if (e >= W) continue;
    float acc = 0.0f;
    for (int c = 0; c < R; c++) acc = fmaf(Xs[hh * R + c], Ss[c * kTile + e], acc);
    oj[static_cast<int64_t>(hh) * C + e] = from_f32<T>(acc);
  }
}

// z (B, 1, H, R) = S y[h] after the same update. Block: rows [blockIdx.x * kTile, + kTile). Shared memory: Ss
// (kTile, C + 1), Ys (G, C).
template <class T>
__global__ void __launch_bounds__(kThreads)
    col_step_kernel(T* z, const T* y, const T* a, const T* bv, const T* g, float* state, Rec p) {
  extern __shared__ float4 smem4[];
  const int R = p.R, C = p.C, SP = C + 1;
  float* Ss = reinterpret_cast<float*>(smem4);
  float* Ys = Ss + kTile * SP;
  const int c0 = blockIdx.x * kTile, W = imin(kTile, R - c0), j = blockIdx.y;
  const int64_t b = blockIdx.z, H = static_cast<int64_t>(p.HKV) * p.G, bj = b * p.HKV + j;
  float* St = state + (bj * R + c0) * C;
  const T* gj = g + bj * R + c0;
  const T* aj = a + bj * R + c0;
  const T* bjv = bv + bj * C;
  for (int idx = threadIdx.x; idx < W * C; idx += blockDim.x) {
    const int c = idx / C, e = idx - c * C;
    const float s = expf(to_f32(gj[c])) * St[idx] + to_f32(aj[c]) * to_f32(bjv[e]);
    St[idx] = s;
    Ss[c * SP + e] = s;
  }
  const T* yj = y + (b * H + static_cast<int64_t>(j) * p.G) * C;
  for (int idx = threadIdx.x; idx < p.G * C; idx += blockDim.x) Ys[idx] = to_f32(yj[idx]);
  __syncthreads();
  T* zj = z + (b * H + static_cast<int64_t>(j) * p.G) * R + c0;
  for (int idx = threadIdx.x; idx < p.G * kTile; idx += blockDim.x) {
    const int hh = idx / kTile, c = idx - hh * kTile;
    if (c >= W) continue;
    float acc = 0.0f;
    for (int e = 0; e < C; e++) acc = fmaf(Ss[c * SP + e], Ys[hh * C + e], acc);
    zj[static_cast<int64_t>(hh) * R + c] = from_f32<T>(acc);
  }
}

// ---- backward -------------------------------------------------------------------------------------------------------

size_t states_floats(int LC) {
  return 2 * kTile * (static_cast<size_t>(LC) + 1) + static_cast<size_t>(LC) * kTile;
}

// ws (B, HKV, nchunks, R, C) f32 = the state before each chunk, from state0 (B, HKV, R, C). Block: a kTile x kTile tile
// (columns blockIdx.x, rows blockIdx.y) of (b, j) = blockIdx.z; thread: column threadIdx.x % 32 of rows
// threadIdx.x / 32 + 8 k, the four entries in registers.
template <class T>
__global__ void __launch_bounds__(kThreads)
    chunk_states_kernel(float* ws, const T* a, const T* bv, const T* g, const float* state0, float* final_state,
                        Rec p) {
  static_assert(kThreads == 8 * kTile, "a thread holds rows r, r + 8, r + 16, r + 24 of one column");
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C;
  float* Gs = reinterpret_cast<float*>(smem4);  // (kTile, LP)
  float* As = Gs + kTile * LP;                  // (kTile, LP)
  float* Bs = As + kTile * LP;                  // (LC, kTile)
  const int e0 = blockIdx.x * kTile, c0 = blockIdx.y * kTile, WC = imin(kTile, C - e0), WR = imin(kTile, R - c0);
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV;
  const int e = threadIdx.x % kTile, cr = threadIdx.x / kTile;
  float S[4];
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const int c = cr + 8 * k;
    S[k] = c < WR && e < WC ? state0[(bj * R + c0 + c) * C + e0 + e] : 0.0f;
  }
  for (int n = 0; n < p.nchunks; n++) {
    const int64_t t0 = static_cast<int64_t>(n) * p.LC;
    const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
    float* Wn = ws + ((bj * p.nchunks + n) * R + c0) * C + e0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int c = cr + 8 * k;
      if (c < WR && e < WC) Wn[static_cast<int64_t>(c) * C + e] = S[k];
    }
    __syncthreads();  // the previous chunk's tiles are consumed
    const int64_t kv = row_at(p.T, p.HKV, R, b, t0, j) + c0;
    stage_cm(Gs, LP, g + kv, static_cast<int64_t>(p.HKV) * R, WR, L);
    stage_cm(As, LP, a + kv, static_cast<int64_t>(p.HKV) * R, WR, L);
    stage_tm(Bs, kTile, bv + row_at(p.T, p.HKV, C, b, t0, j) + e0, static_cast<int64_t>(p.HKV) * C, WC, L);
    __syncthreads();
    running_sums(Gs, LP, WR, L);
    __syncthreads();
    decay_to_last(As, Gs, LP, WR, L);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int c = cr + 8 * k;
      if (c >= WR || e >= WC) continue;
      float acc = S[k] * expf(Gs[c * LP + L - 1]);
      for (int s = 0; s < L; s++) acc = fmaf(As[c * LP + s], Bs[s * kTile + e], acc);
      S[k] = acc;
    }
  }
  if (final_state) {  // the state after the last chunk (may be state0 itself: this block read its tile already)
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int c = cr + 8 * k;
      if (c < WR && e < WC) final_state[(bj * R + c0 + c) * C + e0 + e] = S[k];
    }
  }
}

// ews (B, HKV, nchunks, R, C) f32 = the cotangent carried into each chunk from the later ones (zero for the last):
// E_{n-1} = Diag(exp G_last) E_n + sum_h sum_r (exp(G_r) o u_r[h]) (x) w_r[h], in the order the per-chunk backward
// kernels used to accumulate it. Block and thread layout as chunk_states_kernel.
template <class T>
__global__ void __launch_bounds__(kThreads)
    chunk_adjoints_kernel(float* ews, const T* u, const T* w, const T* g, Rec p) {
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C;
  float* Gs = reinterpret_cast<float*>(smem4);  // (kTile, LP)
  float* Us = Gs + kTile * LP;                  // (kTile, LP) u of one head, then u * exp(G)
  float* Ws = Us + kTile * LP;                  // (LC, kTile) w of one head
  const int e0 = blockIdx.x * kTile, c0 = blockIdx.y * kTile, WC = imin(kTile, C - e0), WR = imin(kTile, R - c0);
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV, H = static_cast<int64_t>(p.HKV) * p.G;
  const int e = threadIdx.x % kTile, cr = threadIdx.x / kTile;
  float E[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int n = p.nchunks - 1; n >= 0; n--) {
    const int64_t t0 = static_cast<int64_t>(n) * p.LC;
    const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
    float* En = ews + ((bj * p.nchunks + n) * R + c0) * C + e0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int c = cr + 8 * k;
      if (c < WR && e < WC) En[static_cast<int64_t>(c) * C + e] = E[k];
    }
    if (n == 0) break;
    __syncthreads();  // the previous chunk's tiles are consumed
    stage_cm(Gs, LP, g + row_at(p.T, p.HKV, R, b, t0, j) + c0, static_cast<int64_t>(p.HKV) * R, WR, L);
    __syncthreads();
    running_sums(Gs, LP, WR, L);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int c = cr + 8 * k;
      if (c < WR) E[k] *= expf(Gs[c * LP + L - 1]);
    }
    for (int64_t h = j * p.G; h < (j + 1) * p.G; h++) {
      __syncthreads();
      stage_cm(Us, LP, u + row_at(p.T, H, R, b, t0, h) + c0, H * R, WR, L);
      stage_tm(Ws, kTile, w + row_at(p.T, H, C, b, t0, h) + e0, H * C, WC, L);
      __syncthreads();
      scale_by_exp(Us, Gs, LP, WR, L);
      __syncthreads();
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const int c = cr + 8 * k;
        if (c >= WR || e >= WC) continue;
        float acc = E[k];
        for (int r = 0; r < L; r++) acc = fmaf(Us[c * LP + r], Ws[r * kTile + e], acc);
        E[k] = acc;
      }
    }
  }
}

// The chunk-parallel row readout: out (B, T, H, C) for one chunk from the state before it (ws, from
// chunk_states_kernel). Block: column tile blockIdx.x % tiles of chunk blockIdx.x / tiles, query head blockIdx.y of
// the group of (b, j) = blockIdx.z. Shared memory row_forward_floats.
template <class T>
__global__ void __launch_bounds__(kChunkThreads)
    row_chunk_forward_kernel(T* out, const T* x, const T* a, const T* bv, const T* g, const float* ws, Rec p) {
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C, VT = p.tile;
  float* Gs = reinterpret_cast<float*>(smem4);  // (R, LP) running log-gate sums
  float* As = Gs + R * LP;                      // (R, LP) a
  float* Xs = As + R * LP;                      // (R, LP) x of the query head, then x * exp(G)
  float* Ms = Xs + R * LP;                      // (LC, LP) scores
  float* Bs = Ms + p.LC * LP;                   // (LC, VT) b, this block's columns
  float* Ss = Bs + p.LC * VT;                   // (R, VT) the state tile before the chunk
  const int ntiles = (C + VT - 1) / VT, n = blockIdx.x / ntiles, e0 = (blockIdx.x - n * ntiles) * VT;
  const int W = imin(VT, C - e0);
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV, H = static_cast<int64_t>(p.HKV) * p.G;
  const int64_t h = j * p.G + blockIdx.y, t0 = static_cast<int64_t>(n) * p.LC;
  const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
  const float* Sn = ws + (bj * p.nchunks + n) * R * C + e0;
  for (int idx = threadIdx.x; idx < R * VT; idx += blockDim.x) {
    const int c = idx / VT, e = idx - c * VT;
    Ss[idx] = e < W ? Sn[static_cast<int64_t>(c) * C + e] : 0.0f;
  }
  const int64_t kv = row_at(p.T, p.HKV, R, b, t0, j);
  stage_cm(Gs, LP, g + kv, static_cast<int64_t>(p.HKV) * R, R, L);
  stage_cm(As, LP, a + kv, static_cast<int64_t>(p.HKV) * R, R, L);
  stage_cm(Xs, LP, x + row_at(p.T, H, R, b, t0, h), H * R, R, L);
  stage_tm(Bs, VT, bv + row_at(p.T, p.HKV, C, b, t0, j) + e0, static_cast<int64_t>(p.HKV) * C, W, L);
  __syncthreads();
  running_sums(Gs, LP, R, L);
  __syncthreads();
  tri_scores<true>(Ms, Xs, As, Gs, R, L, LP);
  __syncthreads();
  scale_by_exp(Xs, Gs, LP, R, L);
  __syncthreads();
  T* o = out + row_at(p.T, H, C, b, t0, h) + e0;
  for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
    const int i = idx / W, e = idx - i * W;
    float acc = 0.0f;
    for (int c = 0; c < R; c++) acc = fmaf(Xs[c * LP + i], Ss[c * VT + e], acc);   // the state carried in
    for (int s = 0; s <= i; s++) acc = fmaf(Ms[i * LP + s], Bs[s * VT + e], acc);  // this chunk up to i
    o[static_cast<int64_t>(i) * H * C + e] = from_f32<T>(acc);
  }
}

size_t col_backward_floats(int RT, int C, int LC) {
  const size_t LP = static_cast<size_t>(LC) + 1;
  return 5 * RT * LP + 2 * C * LP + LC * LP + 2 * static_cast<size_t>(RT) * (C + 1) + RT;
}

// Rows [blockIdx.x * RT, + RT) of KV head blockIdx.y, batch blockIdx.z, chunks from the last to the first:
//   pout (B, T, H, R) = P_t[h] = S_t w_t[h] (when not null), da (B, T, HKV, R) = D_t b_t, dg (B, T, HKV, R).
// u (B, T, H, R), w (B, T, H, C): the readout cotangent Q_t = sum_h u_t[h] (x) w_t[h]; a, g (B, T, HKV, R); bv
// (B, T, HKV, C); ws the states before each chunk.
template <class T>
__global__ void __launch_bounds__(kChunkThreads)
    col_backward_kernel(T* pout, T* da, T* dg, const T* u, const T* w, const T* a, const T* bv, const T* g,
                        const float* ws, const float* ews, Rec p) {
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C, RT = p.tile, SP = C + 1;
  float* Gs = reinterpret_cast<float*>(smem4);  // (RT, LP) running log-gate sums
  float* As = Gs + RT * LP;                     // (RT, LP) a
  float* Us = As + RT * LP;                     // (RT, LP) u of one query head, then u * exp(G)
  float* DAs = Us + RT * LP;                    // (RT, LP) da accumulated over the heads
  float* QTs = DAs + RT * LP;                   // (RT, LP) sum_h u o P accumulated over the heads
  float* Bs = QTs + RT * LP;                    // (C, LP) b, channel-major
  float* Ws = Bs + C * LP;                      // (C, LP) w of one query head, channel-major
  float* Ms = Ws + C * LP;                      // (LC, LP) w_i . b_s
  float* Es = Ms + p.LC * LP;                   // (RT, C + 1) the cotangent carried in from the later chunks
  float* S0s = Es + RT * SP;                    // (RT, C + 1) the state before the chunk
  float* Cr = S0s + RT * SP;                    // (RT) dg's share from the later chunks
  const int c0 = blockIdx.x * RT, W = imin(RT, R - c0), n = blockIdx.y;
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV, H = static_cast<int64_t>(p.HKV) * p.G;

  {  // E = the carry from the later chunks (ews), S0s = the state after this chunk (zero after the last: E is zero)
    const float* En = ews + ((bj * p.nchunks + n) * R + c0) * C;
    const float* Sx = n + 1 < p.nchunks ? ws + ((bj * p.nchunks + n + 1) * R + c0) * C : nullptr;
    for (int idx = threadIdx.x; idx < RT * SP; idx += blockDim.x) {
      const int c = idx / SP, e = idx - c * SP;
      const bool in = c < W && e < C;
      Es[idx] = in ? En[c * C + e] : 0.0f;
      S0s[idx] = in && Sx ? Sx[c * C + e] : 0.0f;
    }
  }
  {
    const int64_t t0 = static_cast<int64_t>(n) * p.LC;
    const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
    __syncthreads();
    for (int c = threadIdx.x; c < W; c += blockDim.x) {
      float acc = 0.0f;
      for (int e = 0; e < C; e++) acc = fmaf(Es[c * SP + e], S0s[c * SP + e], acc);
      Cr[c] = acc;
    }
    __syncthreads();
    const float* Sn = ws + ((bj * p.nchunks + n) * R + c0) * C;
    for (int idx = threadIdx.x; idx < W * C; idx += blockDim.x) {
      const int c = idx / C, e = idx - c * C;
      S0s[c * SP + e] = Sn[idx];
    }
    const int64_t kv = row_at(p.T, p.HKV, R, b, t0, j) + c0;
    stage_cm(Gs, LP, g + kv, static_cast<int64_t>(p.HKV) * R, W, L);
    stage_cm(As, LP, a + kv, static_cast<int64_t>(p.HKV) * R, W, L);
    stage_cm(Bs, LP, bv + row_at(p.T, p.HKV, C, b, t0, j), static_cast<int64_t>(p.HKV) * C, C, L);
    __syncthreads();
    running_sums(Gs, LP, W, L);
    __syncthreads();
    // The carried cotangent's share of da: exp(G_last - G_i) (E b_i).
    for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
      const int i = idx / W, c = idx - i * W;
      float acc = 0.0f;
      for (int e = 0; e < C; e++) acc = fmaf(Es[c * SP + e], Bs[e * LP + i], acc);
      DAs[c * LP + i] = expf(Gs[c * LP + L - 1] - Gs[c * LP + i]) * acc;
      QTs[c * LP + i] = 0.0f;
    }
    for (int64_t h = j * p.G; h < (j + 1) * p.G; h++) {
      __syncthreads();
      stage_cm(Us, LP, u + row_at(p.T, H, R, b, t0, h) + c0, H * R, W, L);
      stage_cm(Ws, LP, w + row_at(p.T, H, C, b, t0, h), H * C, C, L);
      __syncthreads();
      tri_scores<false>(Ms, Ws, Bs, nullptr, C, L, LP);
      __syncthreads();
      T* po = pout ? pout + row_at(p.T, H, R, b, t0, h) + c0 : nullptr;
      for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
        const int i = idx / W, c = idx - i * W;
        const float* Gc = Gs + c * LP;
        const float* Ac = As + c * LP;
        const float* Uc = Us + c * LP;
        const float Gi = Gc[i];
        float dot = 0.0f;
        for (int e = 0; e < C; e++) dot = fmaf(S0s[c * SP + e], Ws[e * LP + i], dot);
        float pv = expf(Gi) * dot;  // P_i = S_i w_i
        for (int s = 0; s <= i; s++) pv = fmaf(expf(Gi - Gc[s]) * Ac[s], Ms[i * LP + s], pv);
        if (po) po[static_cast<int64_t>(i) * H * R + c] = from_f32<T>(pv);
        float d = 0.0f;  // this chunk's share of (D_i b_i)[c] from head h
        for (int r = i; r < L; r++) d = fmaf(expf(Gc[r] - Gi) * Uc[r], Ms[r * LP + i], d);
        QTs[c * LP + i] = fmaf(Uc[i], pv, QTs[c * LP + i]);
        DAs[c * LP + i] += d;
      }
    }
    __syncthreads();
    T* dao = da + kv;
    T* dgo = dg + kv;
    const int64_t pitch = static_cast<int64_t>(p.HKV) * R;
    for (int idx = threadIdx.x; idx < L * W; idx += blockDim.x) {
      const int i = idx / W, c = idx - i * W;
      dao[i * pitch + c] = from_f32<T>(DAs[c * LP + i]);
    }
    for (int c = threadIdx.x; c < W; c += blockDim.x) {
      float acc = Cr[c];
      for (int i = L - 1; i >= 0; i--) {
        acc += QTs[c * LP + i] - As[c * LP + i] * DAs[c * LP + i];
        dgo[i * pitch + c] = from_f32<T>(acc);
      }
    }
  }
}

size_t row_backward_floats(int R, int VT, int LC) {
  const size_t LP = static_cast<size_t>(LC) + 1;
  return 3 * R * LP + LC * LP + 3 * static_cast<size_t>(LC) * VT + 2 * static_cast<size_t>(R) * VT;
}

// Columns [blockIdx.x * VT, + VT) of KV head blockIdx.y, batch blockIdx.z, chunks from the last to the first:
//   db (B, T, HKV, C) = D_t^T a_t, and rout (B, T, H, C) = S_t^T u_t[h] when not null (then bv and ws are read).
template <class T>
__global__ void __launch_bounds__(kChunkThreads)
    row_backward_kernel(T* db, T* rout, const T* u, const T* w, const T* a, const T* bv, const T* g, const float* ws,
                        const float* ews, Rec p) {
  extern __shared__ float4 smem4[];
  const int LP = p.LP, R = p.R, C = p.C, VT = p.tile;
  float* Gs = reinterpret_cast<float*>(smem4);  // (R, LP) running log-gate sums
  float* As = Gs + R * LP;                      // (R, LP) a
  float* Us = As + R * LP;                      // (R, LP) a * exp(G_last - G); then u of one head, then u * exp(G)
  float* Ms = Us + R * LP;                      // (LC, LP) decayed scores u_i . a_s
  float* Ws = Ms + p.LC * LP;                   // (LC, VT) w of one head, this block's columns
  float* Bs = Ws + p.LC * VT;                   // (LC, VT) b (row readout only)
  float* DBs = Bs + p.LC * VT;                  // (LC, VT) db accumulated over the heads
  float* Es = DBs + p.LC * VT;                  // (R, VT) the cotangent carried in from the later chunks
  float* S0s = Es + R * VT;                     // (R, VT) the state before the chunk (row readout only)
  const int e0 = blockIdx.x * VT, W = imin(VT, C - e0), n = blockIdx.y;
  const int64_t bj = blockIdx.z, b = bj / p.HKV, j = bj % p.HKV, H = static_cast<int64_t>(p.HKV) * p.G;

  {  // E = the carry from the later chunks
    const float* En = ews + (bj * p.nchunks + n) * R * C + e0;
    for (int idx = threadIdx.x; idx < R * VT; idx += blockDim.x) {
      const int c = idx / VT, e = idx - c * VT;
      Es[idx] = e < W ? En[static_cast<int64_t>(c) * C + e] : 0.0f;
    }
  }
  {
    const int64_t t0 = static_cast<int64_t>(n) * p.LC;
    const int L = static_cast<int>(p.T - t0 < p.LC ? p.T - t0 : p.LC);
    const int64_t kv = row_at(p.T, p.HKV, R, b, t0, j);
    stage_cm(Gs, LP, g + kv, static_cast<int64_t>(p.HKV) * R, R, L);
    stage_cm(As, LP, a + kv, static_cast<int64_t>(p.HKV) * R, R, L);
    if (rout) {
      stage_tm(Bs, VT, bv + row_at(p.T, p.HKV, C, b, t0, j) + e0, static_cast<int64_t>(p.HKV) * C, W, L);
      const float* Sn = ws + (bj * p.nchunks + n) * R * C + e0;
      for (int idx = threadIdx.x; idx < R * VT; idx += blockDim.x) {
        const int c = idx / VT, e = idx - c * VT;
        S0s[idx] = e < W ? Sn[static_cast<int64_t>(c) * C + e] : 0.0f;
      }
    }
    __syncthreads();
    running_sums(Gs, LP, R, L);
    __syncthreads();
    // The carried cotangent's share of db: sum_c a_i[c] exp(G_last[c] - G_i[c]) E[c, :].
    for (int idx = threadIdx.x; idx < R * L; idx += blockDim.x) {
      const int c = idx / L, i = idx - c * L;
      Us[c * LP + i] = As[c * LP + i] * expf(Gs[c * LP + L - 1] - Gs[c * LP + i]);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < L * VT; idx += blockDim.x) {
      const int i = idx / VT, e = idx - i * VT;
      float acc = 0.0f;
      for (int c = 0; c < R; c++) acc = fmaf(Us[c * LP + i], Es[c * VT + e], acc);
      DBs[idx] = acc;
    }
    for (int64_t h = j * p.G; h < (j + 1) * p.G; h++) {
      __syncthreads();
      stage_cm(Us, LP, u + row_at(p.T, H, R, b, t0, h), H * R, R, L);
      stage_tm(Ws, VT, w + row_at(p.T, H, C, b, t0, h) + e0, H * C, W, L);
      __syncthreads();
      tri_scores<true>(Ms, Us, As, Gs, R, L, LP);
      __syncthreads();
      scale_by_exp(Us, Gs, LP, R, L);
      __syncthreads();
      T* ro = rout ? rout + row_at(p.T, H, C, b, t0, h) + e0 : nullptr;
      for (int idx = threadIdx.x; idx < L * VT; idx += blockDim.x) {
        const int i = idx / VT, e = idx - i * VT;
        if (e >= W) continue;
        float d = 0.0f;
        for (int r = i; r < L; r++) d = fmaf(Ms[r * LP + i], Ws[r * VT + e], d);
        DBs[idx] += d;
        if (ro) {
          float o = 0.0f;
          for (int c = 0; c < R; c++) o = fmaf(Us[c * LP + i], S0s[c * VT + e], o);
          for (int s = 0; s <= i; s++) o = fmaf(Ms[i * LP + s], Bs[s * VT + e], o);
          ro[static_cast<int64_t>(i) * H * C + e] = from_f32<T>(o);
        }
      }
    }
    __syncthreads();
    T* dbo = db + row_at(p.T, p.HKV, C, b, t0, j) + e0;
    for (int idx = threadIdx.x; idx < L * VT; idx += blockDim.x) {
      const int i = idx / VT, e = idx - i * VT;
      if (e < W) dbo[static_cast<int64_t>(i) * p.HKV * C + e] = from_f32<T>(DBs[idx]);
    }
  }
}

// ---- launchers ------------------------------------------------------------------------------------------------------

// f32 or bf16 storage (the dispatchers in ops/recurrence.h have checked the dtypes).
template <class F>
void dispatch_storage(DType dt, const char* op, F&& f) {
  if (dt == DType::F32) return f(Tag<float>{});
  if (dt == DType::BF16) return f(Tag<__nv_bfloat16>{});
  LIGER_FAIL("%s: dtype %s is not supported on the GPU (f32 or bf16)", op, dtype_name(dt));
}

size_t smem_limit(const Context& ctx) {
  int v = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx.cuda_device()));
  return static_cast<size_t>(v);
}

// The largest chunk <= want whose shared memory (floats(LC) floats) fits the device; an Error naming op if none does.
template <class Floats>
int fit_chunk(const Context& ctx, const char* op, int64_t want, Floats floats) {
  const size_t limit = smem_limit(ctx);
  int LC = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, kMaxChunk)));
  while (LC > 1 && floats(LC) * sizeof(float) > limit) LC /= 2;
  LIGER_CHECK(floats(LC) * sizeof(float) <= limit,
              "%s: the state is too large for one block's shared memory (%zu bytes needed, %zu available)", op,
              floats(LC) * sizeof(float), limit);
  return LC;
}

template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// The sizes of a (B, T, H, R)-read-out recurrence over `rows` x `cols` states.
Rec make_rec(const char* op, int64_t B, int64_t T, int64_t H, int64_t HKV, int64_t rows, int64_t cols) {
  LIGER_CHECK(B <= 65535 && HKV <= 65535 && B * HKV <= 65535, "%s: batch %lld x KV heads %lld beyond the grid limit",
              op, static_cast<long long>(B), static_cast<long long>(HKV));
  LIGER_CHECK(rows <= 4096 && cols <= 4096 && H / HKV <= 4096, "%s: state %lld x %lld or group %lld too large", op,
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(H / HKV));
  Rec p{};
  p.T = T;
  p.HKV = static_cast<int>(HKV);
  p.G = static_cast<int>(H / HKV);
  p.R = static_cast<int>(rows);
  p.C = static_cast<int>(cols);
  return p;
}

void set_chunk(Rec* p, int LC) {
  p->LC = LC;
  p->LP = LC + 1;
  p->nchunks = static_cast<int>((p->T + LC - 1) / LC);
}

unsigned tiles(int n, int tile) {
  return static_cast<unsigned>((n + tile - 1) / tile);
}

// A float scratch of `bytes` on the stream: the context's workspace when it is large enough, else allocated
// (stream-ordered; release_scratch frees it after the kernels queued before).
float* take_scratch(const Context& ctx, size_t bytes, bool* own) {
  float* ws = static_cast<float*>(ctx.workspace());
  *own = bytes > ctx.workspace_bytes();
  if (*own) CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ws), bytes, stream_of(ctx)));
  return ws;
}

void release_scratch(const Context& ctx, float* ws, bool own) {
  if (own) CUDA_CHECK(cudaFreeAsync(ws, stream_of(ctx)));
}

// ws (B, HKV, nchunks, R, C) = the state before each chunk, from state0; the final state into final_state if not null.
template <class T>
void launch_chunk_states(cudaStream_t stream, float* ws, const T* a, const T* bv, const T* g, const float* state0,
                         float* final_state, const Rec& p, int64_t B) {
  const size_t smem = states_floats(p.LC) * sizeof(float);
  auto kernel = chunk_states_kernel<T>;
  allow_smem(kernel, smem);
  kernel<<<dim3(tiles(p.C, kTile), tiles(p.R, kTile), static_cast<unsigned>(B * p.HKV)), kThreads, smem, stream>>>(
      ws, a, bv, g, state0, final_state, p);
  CUDA_CHECK_LAUNCH();
}

// Row readout, chunked: out = S_t^T x_t[h] (linear_recurrence). The states before every chunk first (a scan over the
// chunks per 32 x 32 state tile), then every (chunk, query head, column tile) in parallel.
template <class T>
void launch_row_forward(const Context& ctx, const char* op, T* out, const T* x, const T* a, const T* bv, const T* g,
                        float* state, Rec p, int64_t chunk, int64_t B) {
  // The widest column tile (<= 128) whose shared memory fits at the requested chunk: each block recomputes the chunk's
  // scores, so fewer tiles means fewer exponentials (any tile gives the same results, bit for bit).
  const int want = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({chunk, p.T, kMaxChunk})));
  p.tile = std::min(kTile, p.C);
  for (int vt = std::min(4 * kTile, p.C); vt > p.tile; vt = std::max(p.tile, vt / 2))
    if (row_forward_floats(p.R, want, vt) * sizeof(float) <= smem_limit(ctx)) {
      p.tile = vt;
      break;
    }
  set_chunk(&p, fit_chunk(ctx, op, std::min<int64_t>(chunk, p.T), [&](int LC) {
    return std::max(row_forward_floats(p.R, LC, p.tile), states_floats(LC));
  }));
  const cudaStream_t stream = stream_of(ctx);
  bool own = false;
  float* ws = take_scratch(ctx, static_cast<size_t>(B) * p.HKV * p.nchunks * p.R * p.C * sizeof(float), &own);
  launch_chunk_states<T>(stream, ws, a, bv, g, state, state, p, B);
  const size_t smem = row_forward_floats(p.R, p.LC, p.tile) * sizeof(float);
  auto kernel = row_chunk_forward_kernel<T>;
  allow_smem(kernel, smem);
  kernel<<<dim3(tiles(p.C, p.tile) * p.nchunks, p.G, static_cast<unsigned>(B * p.HKV)), kChunkThreads, smem,
           stream>>>(out, x, a, bv, g, ws, p);
  CUDA_CHECK_LAUNCH();
  release_scratch(ctx, ws, own);
}

// Column readout, chunked: z = S_t y_t[h] (slot_scores).
template <class T>
void launch_col_forward(const Context& ctx, const char* op, T* z, const T* y, const T* a, const T* bv, const T* g,
                        float* state, Rec p, int64_t chunk, int64_t B) {
  p.tile = std::min(kTile, p.R);
  set_chunk(&p, fit_chunk(ctx, op, std::min<int64_t>(chunk, p.T),
                          [&](int LC) { return col_forward_floats(p.tile, p.C, LC); }));
  const size_t smem = col_forward_floats(p.tile, p.C, p.LC) * sizeof(float);
  auto kernel = col_forward_kernel<T>;
  allow_smem(kernel, smem);
  kernel<<<dim3(tiles(p.R, p.tile), p.HKV, static_cast<unsigned>(B)), kThreads, smem, stream_of(ctx)>>>(z, y, a, bv, g,
                                                                                                        state, p);
  CUDA_CHECK_LAUNCH();
}

// The backward of either op: the chunk states, then the column kernel (pout, da, dg) and the row kernel (db, rout).
template <class T>
void launch_backward(const Context& ctx, const char* op, T* pout, T* da, T* dg, T* db, T* rout, const T* u, const T* w,
                     const T* a, const T* bv, const T* g, const float* state0, Rec p, int64_t B) {
  const int RT = std::min(kTile, p.R), VT = std::min(kTile, p.C);
  // One chunk for all three kernels (the states are the column and row kernels' boundaries).
  set_chunk(&p, fit_chunk(ctx, op, std::min<int64_t>(kMaxChunk, p.T), [&](int LC) {
    return std::max({col_backward_floats(RT, p.C, LC), row_backward_floats(p.R, VT, LC), states_floats(LC)});
  }));
  const cudaStream_t stream = stream_of(ctx);
  const size_t per = static_cast<size_t>(B) * p.HKV * p.nchunks * p.R * p.C;  // floats of one (B, HKV, chunks, R, C)
  bool own = false;
  float* ws = take_scratch(ctx, 2 * per * sizeof(float), &own);
  float* ews = ws + per;

  launch_chunk_states<T>(stream, ws, a, bv, g, state0, nullptr, p, B);
  {
    const size_t smem = states_floats(p.LC) * sizeof(float);
    auto kernel = chunk_adjoints_kernel<T>;
    allow_smem(kernel, smem);
    kernel<<<dim3(tiles(p.C, kTile), tiles(p.R, kTile), static_cast<unsigned>(B * p.HKV)), kThreads, smem, stream>>>(
        ews, u, w, g, p);
    CUDA_CHECK_LAUNCH();
  }
  {
    Rec q = p;
    q.tile = RT;
    const size_t smem = col_backward_floats(RT, p.C, p.LC) * sizeof(float);
    auto kernel = col_backward_kernel<T>;
    allow_smem(kernel, smem);
    kernel<<<dim3(tiles(p.R, RT), p.nchunks, static_cast<unsigned>(B * p.HKV)), kChunkThreads, smem, stream>>>(
        pout, da, dg, u, w, a, bv, g, ws, ews, q);
    CUDA_CHECK_LAUNCH();
  }
  {
    Rec q = p;
    q.tile = VT;
    const size_t smem = row_backward_floats(p.R, VT, p.LC) * sizeof(float);
    auto kernel = row_backward_kernel<T>;
    allow_smem(kernel, smem);
    kernel<<<dim3(tiles(p.C, VT), p.nchunks, static_cast<unsigned>(B * p.HKV)), kChunkThreads, smem, stream>>>(
        db, rout, u, w, a, bv, g, ws, ews, q);
    CUDA_CHECK_LAUNCH();
  }
  release_scratch(ctx, ws, own);  // stream-ordered: after the kernels that read it
}

// bf16 linear_recurrence on the tensor cores (recurrence_tc.cu) when the state fits. Checked on an H100 against the
// CPU twin (test_recurrence_gpu TensorCorePathMatchesCpu; compute-sanitizer memcheck clean): 3.6x faster than the
// fp32 FMA kernels below on the 8B layer at T = 1024. LIGER_RECURRENCE_TC=0 takes the FMA kernels instead (for
// comparisons).
bool use_tensor_cores(DType dt, int64_t K, int64_t Vd) {
  static const bool enabled = [] {
    const char* e = std::getenv("LIGER_RECURRENCE_TC");
    return !(e && e[0] == '0');
  }();
  return enabled && dt == DType::BF16 && tc_recurrence_fits(K, Vd);
}

}  // namespace

void linear_recurrence(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                       Tensor state, int64_t chunk) {
  const char* op = "linear_recurrence";
  const int64_t B = fq.dim(0), T = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  if (B == 0 || T == 0 || H == 0 || K == 0 || Vd == 0) return;
  const Rec p = make_rec(op, B, T, H, HKV, K, Vd);
  if (use_tensor_cores(fq.dtype(), K, Vd)) {
    return tc_linear_recurrence(ctx, out.ptr<__nv_bfloat16>(), fq.ptr<__nv_bfloat16>(), fk.ptr<__nv_bfloat16>(),
                                v.ptr<__nv_bfloat16>(), g.ptr<__nv_bfloat16>(), state.ptr<float>(), B, T, H, HKV, K, Vd,
                                chunk);
  }
  dispatch_storage(fq.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    launch_row_forward<T_>(ctx, op, out.ptr<T_>(), fq.ptr<T_>(), fk.ptr<T_>(), v.ptr<T_>(), g.ptr<T_>(),
                           state.ptr<float>(), p, chunk, B);
  });
}

void slot_scores(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                 Tensor state, int64_t chunk) {
  const char* op = "slot_scores";
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  if (B == 0 || T == 0 || H == 0 || d == 0 || M == 0) return;
  const Rec p = make_rec(op, B, T, H, HKV, M, d);
  dispatch_storage(q.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    launch_col_forward<T_>(ctx, op, z.ptr<T_>(), q.ptr<T_>(), s.ptr<T_>(), k.ptr<T_>(), g.ptr<T_>(), state.ptr<float>(),
                           p, chunk, B);
  });
}

void linear_recurrence_step(Context& ctx, Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v,
                            const Tensor& g, Tensor state) {
  const char* op = "linear_recurrence_step";
  const int64_t B = fq.dim(0), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  if (B == 0 || H == 0 || K == 0 || Vd == 0) return;
  const Rec p = make_rec(op, B, 1, H, HKV, K, Vd);
  const size_t smem = (static_cast<size_t>(K) * kTile + static_cast<size_t>(p.G) * K) * sizeof(float);
  LIGER_CHECK(smem <= smem_limit(ctx),
              "%s: %lld x %lld state with %d query heads per KV head needs %zu bytes of shared "
              "memory",
              op, static_cast<long long>(K), static_cast<long long>(Vd), p.G, smem);
  dispatch_storage(fq.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    auto kernel = row_step_kernel<T_>;
    allow_smem(kernel, smem);
    kernel<<<dim3(tiles(p.C, kTile), p.HKV, static_cast<unsigned>(B)), kThreads, smem, stream_of(ctx)>>>(
        out.ptr<T_>(), fq.ptr<T_>(), fk.ptr<T_>(), v.ptr<T_>(), g.ptr<T_>(), state.ptr<float>(), p);
    CUDA_CHECK_LAUNCH();
  });
}

void slot_scores_step(Context& ctx, Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g,
                      Tensor state) {
  const char* op = "slot_scores_step";
  const int64_t B = q.dim(0), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  if (B == 0 || H == 0 || d == 0 || M == 0) return;
  const Rec p = make_rec(op, B, 1, H, HKV, M, d);
  const size_t smem = (static_cast<size_t>(kTile) * (d + 1) + static_cast<size_t>(p.G) * d) * sizeof(float);
  LIGER_CHECK(smem <= smem_limit(ctx),
              "%s: %lld x %lld state with %d query heads per KV head needs %zu bytes of shared "
              "memory",
              op, static_cast<long long>(M), static_cast<long long>(d), p.G, smem);
  dispatch_storage(q.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    auto kernel = col_step_kernel<T_>;
    allow_smem(kernel, smem);
    kernel<<<dim3(tiles(p.R, kTile), p.HKV, static_cast<unsigned>(B)), kThreads, smem, stream_of(ctx)>>>(
        z.ptr<T_>(), q.ptr<T_>(), s.ptr<T_>(), k.ptr<T_>(), g.ptr<T_>(), state.ptr<float>(), p);
    CUDA_CHECK_LAUNCH();
  });
}

void linear_recurrence_backward(Context& ctx, Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout,
                                const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                                const Tensor& state0) {
  const char* op = "linear_recurrence_backward";
  const int64_t B = fq.dim(0), T = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  if (B == 0 || T == 0 || H == 0 || K == 0 || Vd == 0) return;
  const Rec p = make_rec(op, B, T, H, HKV, K, Vd);
  if (use_tensor_cores(fq.dtype(), K, Vd)) {
    return tc_linear_recurrence_backward(ctx, dfq.ptr<__nv_bfloat16>(), dfk.ptr<__nv_bfloat16>(),
                                         dv.ptr<__nv_bfloat16>(), dg.ptr<__nv_bfloat16>(), dout.ptr<__nv_bfloat16>(),
                                         fq.ptr<__nv_bfloat16>(), fk.ptr<__nv_bfloat16>(), v.ptr<__nv_bfloat16>(),
                                         g.ptr<__nv_bfloat16>(), state0.ptr<float>(), B, T, H, HKV, K, Vd);
  }
  // Q_t = sum_h fq_t[h] (x) dout_t[h]: u = fq, w = dout; dfq = S_t dout (a column readout), dfk = da, dv = db.
  dispatch_storage(fq.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    launch_backward<T_>(ctx, op, dfq.ptr<T_>(), dfk.ptr<T_>(), dg.ptr<T_>(), dv.ptr<T_>(), nullptr, fq.ptr<T_>(),
                        dout.ptr<T_>(), fk.ptr<T_>(), v.ptr<T_>(), g.ptr<T_>(), state0.ptr<float>(), p, B);
  });
}

void slot_scores_backward(Context& ctx, Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz, const Tensor& q,
                          const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& state0) {
  const char* op = "slot_scores_backward";
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  if (B == 0 || T == 0 || H == 0 || d == 0 || M == 0) return;
  const Rec p = make_rec(op, B, T, H, HKV, M, d);
  // Q_t = sum_h dz_t[h] (x) q_t[h]: u = dz, w = q; ds = da, dk = db, dq = S_t^T dz (a row readout); the column
  // readout P = S_t q = z only enters dg.
  dispatch_storage(q.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    launch_backward<T_>(ctx, op, nullptr, ds.ptr<T_>(), dg.ptr<T_>(), dk.ptr<T_>(), dq.ptr<T_>(), dz.ptr<T_>(),
                        q.ptr<T_>(), s.ptr<T_>(), k.ptr<T_>(), g.ptr<T_>(), state0.ptr<float>(), p, B);
  });
}

}  // namespace liger::ops::cuda
