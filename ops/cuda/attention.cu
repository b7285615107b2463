// ops/cuda/attention.cu — causal grouped-query softmax attention over a KV cache, and the cache write, on the GPU.
//
// Both kernels are flash-attention style: a block owns a tile of query rows of one (batch b, KV head j), walks the
// key tiles its rows can see (tiles wholly outside the causal window are never visited), stages each K/V tile in
// shared memory, and keeps an online softmax (running max m, running sum l) and the output accumulators in fp32.
//
// Query rows of a block: row r = t * G + g over (query time t, head g of the KV group), G = H / HKV. The G query heads
// that read KV head j are adjacent rows, so one staged K/V tile serves all of them (decode, T = 1, is G rows).
//
//   attention_mma_kernel: bf16/f16, HS in {64, 128}, at least 64 rows: tensor cores (mma.sync m16n8k16, fp32
//     accumulate) for S = Q K^T and O += P V; 64 rows x 64 keys per step, K/V double-buffered with cp.async.
//   attention_fma_kernel: every other case (f32, any HS <= 256, decode): fp32 FMAs; a lane owns a key for the scores
//     and HS / 32 output dimensions for P V. For a few rows (decode, at most 8) the warps of a block split the keys
//     instead of the rows, and the keys are also split over several blocks (flash-decoding) whose partial softmax
//     states (kept in the context's workspace) attention_combine_kernel merges.
#include <algorithm>
#include <type_traits>

#include "ops/attention.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"

namespace liger::ops::cuda {
namespace {

struct AttnParams {
  int64_t T, H, HKV, HS, S, G;  // q (B, T, H, HS), k/v (B, S, HKV, HS), G = H / HKV
  int64_t pos0, window;         // first query position; window (0 = unlimited)
  float scale;
  bool kv_vec16;             // k and v rows can be read 16 bytes at a time (aligned, HS a multiple of 16 bytes)
  int n_splits = 1;          // fma kernel: blocks sharing the keys of one row tile (> 1 only with one row tile)
  float* partial = nullptr;  // n_splits > 1: (B, HKV, n_splits, BQ, 2 + HP) partial states (m, l, unnormalized o)
};

// Element offset of query row r (= t * G + g) of batch b, KV head j, in q or out (B, T, H, HS).
__device__ __forceinline__ int64_t query_offset(const AttnParams& a, int64_t b, int64_t j, int64_t r) {
  const int64_t t = r / a.G, g = r % a.G;
  return ((b * a.T + t) * a.H + j * a.G + g) * a.HS;
}
// Element offset of key s of batch b, KV head j, in k or v (B, S, HKV, HS).
__device__ __forceinline__ int64_t key_offset(const AttnParams& a, int64_t b, int64_t j, int64_t s) {
  return ((b * a.S + s) * a.HKV + j) * a.HS;
}

// The rows [r0, r0 + BQ) of a block see the keys [s_begin, s_end).
struct KeyRange {
  int64_t p_first, p_last;  // positions of the first and last live row
  int64_t s_begin, s_end;
};
__device__ __forceinline__ KeyRange key_range(const AttnParams& a, int64_t r0, int64_t BQ) {
  const int64_t rows = a.T * a.G;
  const int64_t r_last = (r0 + BQ < rows ? r0 + BQ : rows) - 1;
  KeyRange k;
  k.p_first = a.pos0 + r0 / a.G;
  k.p_last = a.pos0 + r_last / a.G;
  k.s_begin = a.window > 0 && k.p_first - a.window + 1 > 0 ? k.p_first - a.window + 1 : 0;
  k.s_end = k.p_last + 1;
  return k;
}

// The mask of ops/attention.h: position p sees key s iff s <= p and (window == 0 or s > p - window).
__device__ __forceinline__ bool visible(int64_t s, int64_t p, int64_t window) {
  return s <= p && (window == 0 || s > p - window);
}

// Head size rounded up to a multiple of 4 (float4 reads of the scores loop; the padding holds zeros).
__host__ __device__ constexpr int64_t pad4(int64_t hs) { return (hs + 3) / 4 * 4; }

// Stages keys [s0, s0 + KT) of k and v (keys at or beyond s_stop as zeros) into fp32 shared memory: Ks (KT, HSP + 1)
// and Vs (KT, HP), with zeros in the columns from HS on. VEC elements per global load (HS % VEC == 0, so VEC > 1
// means HSP == HS); each thread has kUnroll loads of k and of v in flight before its first store.
template <class T, int VEC, int KT, int HP>
__device__ __forceinline__ void stage_kv(float* Ks, float* Vs, const T* k, const T* v, const AttnParams& a, int64_t b,
                                         int64_t j, int64_t s0, int64_t s_stop) {
  constexpr int kUnroll = 4;
  const int HS = static_cast<int>(a.HS), HSP = static_cast<int>(pad4(a.HS));
  const int CH = HSP / VEC, total = KT * CH;  // CH: loads per key
  for (int c0 = threadIdx.x; c0 < total; c0 += kUnroll * blockDim.x) {
    Vec<T, VEC> kr[kUnroll], vr[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int c = c0 + u * blockDim.x, kk = c / CH, d = (c - kk * CH) * VEC;
      if (c < total && s0 + kk < s_stop && d < HS) {
        const int64_t off = key_offset(a, b, j, s0 + kk) + d;
        kr[u] = *reinterpret_cast<const Vec<T, VEC>*>(k + off);
        vr[u] = *reinterpret_cast<const Vec<T, VEC>*>(v + off);
      } else {
        kr[u] = vr[u] = Vec<T, VEC>{};  // zeros
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int c = c0 + u * blockDim.x, kk = c / CH, d = (c - kk * CH) * VEC;
      if (c < total) {
#pragma unroll
        for (int e = 0; e < VEC; e++) {
          Ks[kk * (HSP + 1) + d + e] = to_f32(kr[u].v[e]);
          Vs[kk * HP + d + e] = to_f32(vr[u].v[e]);
        }
      }
    }
  }
}

// ---- fp32 FMA kernel -----------------------------------------------------------------------------------------------

// Shared memory of attention_fma_kernel: Qs (BQ, HSP), Ks (KT, HSP + 1), Vs (KT, HP) floats.
inline size_t fma_smem_bytes(int64_t HS, int BQ, int KT, int HP) {
  return static_cast<size_t>(BQ * pad4(HS) + KT * (pad4(HS) + 1) + KT * HP) * sizeof(float);
}

// out (B, T, H, HS) for row tile blockIdx.x / n_splits (tiles in reverse order: the longest rows start first), key
// split blockIdx.x % n_splits, KV head blockIdx.y, batch blockIdx.z. WR x WK warps: warp (wr, wk) owns rows
// [wr * RW, wr * RW + RW) of the tile and keys [wk * 32, wk * 32 + 32) of each staged tile of KT = 32 * WK keys.
// DPL = output dimensions per lane (HS <= 32 * DPL). With n_splits > 1 the block writes its partial state instead.
template <class T, int DPL, int RW, int WR, int WK>
__global__ void __launch_bounds__(32 * WR * WK, 1)
    attention_fma_kernel(T* out, const T* q, const T* k, const T* v, AttnParams a) {
  constexpr int BQ = RW * WR, KT = 32 * WK, HP = 32 * DPL, NW = WR * WK;
  const int HS = static_cast<int>(a.HS), HSP = static_cast<int>(pad4(a.HS));
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // (BQ, HSP)
  float* Ks = Qs + BQ * HSP;                    // (KT, HSP + 1): the +1 makes the lane-per-key reads conflict-free
  float* Vs = Ks + KT * (HSP + 1);              // (KT, HP)

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wr = warp % WR, wk = warp / WR;
  const int64_t b = blockIdx.z, j = blockIdx.y, rows = a.T * a.G;
  const int64_t tiles = gridDim.x / a.n_splits, split = blockIdx.x % a.n_splits;
  const int64_t r0 = (tiles - 1 - blockIdx.x / a.n_splits) * BQ;
  const KeyRange kr = key_range(a, r0, BQ);
  // This block's keys [s_first, s_stop): split `split` of [s_begin, s_end), in whole staged tiles.
  const int64_t chunk = ((kr.s_end - kr.s_begin + a.n_splits - 1) / a.n_splits + KT - 1) / KT * KT;
  const int64_t s_first = kr.s_begin + split * chunk;
  const int64_t s_stop = s_first + chunk < kr.s_end ? s_first + chunk : kr.s_end;

  for (int rr = warp; rr < BQ; rr += NW) {
    const bool live = r0 + rr < rows;
    const T* src = q + (live ? query_offset(a, b, j, r0 + rr) : 0);
    for (int d = lane; d < HSP; d += 32) Qs[rr * HSP + d] = live && d < HS ? to_f32(src[d]) : 0.0f;
  }

  int64_t pos[RW];  // position of each of this warp's rows (beyond the last row: never visible, never written)
  float m[RW], l[RW], acc[RW][DPL];  // running max, this lane's share of the running sum, output dims lane + 32 c
#pragma unroll
  for (int i = 0; i < RW; i++) {
    const int64_t r = r0 + wr * RW + i;
    pos[i] = r < rows ? a.pos0 + r / a.G : -1;
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DPL; c++) acc[i][c] = 0.0f;
  }

  for (int64_t s0 = s_first; s0 < s_stop; s0 += KT) {
    __syncthreads();  // the previous tile is consumed (and Qs is written, on the first pass)
    if (a.kv_vec16) {
      stage_kv<T, kVec16<T>, KT, HP>(Ks, Vs, k, v, a, b, j, s0, s_stop);
    } else {
      stage_kv<T, 1, KT, HP>(Ks, Vs, k, v, a, b, j, s0, s_stop);
    }
    __syncthreads();
    if (s0 + wk * 32 >= s_stop) continue;  // this warp's keys are all beyond the block's range (warp-uniform)

    // Scores of this lane's key against the warp's rows.
    const int64_t s = s0 + wk * 32 + lane;
    const float* krow = Ks + (wk * 32 + lane) * (HSP + 1);
    float sc[RW];
#pragma unroll
    for (int i = 0; i < RW; i++) sc[i] = 0.0f;
    for (int d = 0; d < HSP; d += 4) {
      const float k0 = krow[d], k1 = krow[d + 1], k2 = krow[d + 2], k3 = krow[d + 3];
#pragma unroll
      for (int i = 0; i < RW; i++) {
        const float4 qd = *reinterpret_cast<const float4*>(Qs + (wr * RW + i) * HSP + d);
        sc[i] = fmaf(qd.w, k3, fmaf(qd.z, k2, fmaf(qd.y, k1, fmaf(qd.x, k0, sc[i]))));
      }
    }
    // Online softmax: sc becomes p = exp(score - m) (0 where masked).
#pragma unroll
    for (int i = 0; i < RW; i++) {
      const float x = s < s_stop && visible(s, pos[i], a.window) ? sc[i] * a.scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(x));
      if (m_new == -INFINITY) {  // nothing visible yet for this row (warp-uniform)
        sc[i] = 0.0f;
        continue;
      }
      const float alpha = expf(m[i] - m_new);
      sc[i] = expf(x - m_new);
      l[i] = l[i] * alpha + sc[i];
#pragma unroll
      for (int c = 0; c < DPL; c++) acc[i][c] *= alpha;
      m[i] = m_new;
    }
    // acc += p V: key kk's probability comes from lane kk.
    for (int kk = 0; kk < 32; kk++) {
      const float* vrow = Vs + (wk * 32 + kk) * HP + lane;
      float vd[DPL];
#pragma unroll
      for (int c = 0; c < DPL; c++) vd[c] = vrow[32 * c];
#pragma unroll
      for (int i = 0; i < RW; i++) {
        const float p = __shfl_sync(0xffffffffu, sc[i], kk);
#pragma unroll
        for (int c = 0; c < DPL; c++) acc[i][c] = fmaf(p, vd[c], acc[i][c]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < RW; i++) l[i] = warp_sum(l[i]);

  if constexpr (WK > 1) {
    // Merge the WK partial states of each row through shared memory (the K/V tile area is free now).
    __syncthreads();
    float* Ms = Ks;            // (WK, BQ)
    float* Ls = Ms + WK * BQ;  // (WK, BQ)
    float* Os = Ls + WK * BQ;  // (WK, BQ, HP)
#pragma unroll
    for (int i = 0; i < RW; i++) {
      const int row = wr * RW + i;
      if (lane == 0) {
        Ms[wk * BQ + row] = m[i];
        Ls[wk * BQ + row] = l[i];
      }
#pragma unroll
      for (int c = 0; c < DPL; c++) Os[(wk * BQ + row) * HP + lane + 32 * c] = acc[i][c];
    }
    __syncthreads();
    if (wk != 0) return;
#pragma unroll
    for (int i = 0; i < RW; i++) {
      const int row = wr * RW + i;
      float mx = -INFINITY;
      for (int w = 0; w < WK; w++) mx = fmaxf(mx, Ms[w * BQ + row]);
      l[i] = 0.0f;
#pragma unroll
      for (int c = 0; c < DPL; c++) acc[i][c] = 0.0f;
      for (int w = 0; w < WK; w++) {
        const float mw = Ms[w * BQ + row];
        const float f = mw == -INFINITY ? 0.0f : expf(mw - mx);
        l[i] += f * Ls[w * BQ + row];
#pragma unroll
        for (int c = 0; c < DPL; c++) acc[i][c] += f * Os[(w * BQ + row) * HP + lane + 32 * c];
      }
      m[i] = mx;
    }
  }

#pragma unroll
  for (int i = 0; i < RW; i++) {
    const int64_t r = r0 + wr * RW + i;
    if (r >= rows) continue;
    if (a.n_splits > 1) {
      float* part = a.partial + (((b * a.HKV + j) * a.n_splits + split) * BQ + wr * RW + i) * (2 + HP);
      if (lane == 0) {
        part[0] = m[i];
        part[1] = l[i];
      }
#pragma unroll
      for (int c = 0; c < DPL; c++) part[2 + lane + 32 * c] = acc[i][c];
      continue;
    }
    T* dst = out + query_offset(a, b, j, r);
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int c = 0; c < DPL; c++) {
      const int d = lane + 32 * c;
      if (d < HS) dst[d] = from_f32<T>(acc[i][c] * inv);
    }
  }
}

// out (B, T, H, HS) from the n_splits partial states of attention_fma_kernel: one warp per row blockIdx.x of the
// single row tile (BQ rows), KV head blockIdx.y, batch blockIdx.z.
template <class T, int HP, int BQ>
__global__ void attention_combine_kernel(T* out, AttnParams a) {
  const int64_t row = blockIdx.x, b = blockIdx.z, j = blockIdx.y;
  if (row >= a.T * a.G) return;
  const float* part = a.partial + ((b * a.HKV + j) * a.n_splits * BQ + row) * (2 + HP);
  const int64_t stride = BQ * (2 + HP);  // from one split to the next
  float mx = -INFINITY, l = 0.0f;
  for (int sp = 0; sp < a.n_splits; sp++) mx = fmaxf(mx, part[sp * stride]);
  for (int sp = 0; sp < a.n_splits; sp++) {
    const float ms = part[sp * stride];
    if (ms != -INFINITY) l += expf(ms - mx) * part[sp * stride + 1];
  }
  T* dst = out + query_offset(a, b, j, row);
  for (int d = threadIdx.x; d < a.HS; d += blockDim.x) {
    float o = 0.0f;
    for (int sp = 0; sp < a.n_splits; sp++) {
      const float ms = part[sp * stride];
      if (ms != -INFINITY) o += expf(ms - mx) * part[sp * stride + 2 + d];
    }
    dst[d] = from_f32<T>(o / l);
  }
}

// ---- tensor-core kernel (bf16 / f16, HS = 64 or 128) ---------------------------------------------------------------

constexpr int kMmaRows = 64;  // query rows per block: 4 warps x 16
constexpr int kMmaKeys = 64;  // keys per step

template <int HS>
constexpr size_t mma_smem_bytes() {
  return static_cast<size_t>(kMmaRows + 4 * kMmaKeys) * (HS + 8) * 2;  // Q + 2 x K + 2 x V, 2-byte elements
}

// out (B, T, H, HS) for 64 rows (blockIdx.x, longest first), KV head blockIdx.y, batch blockIdx.z; 4 warps, each
// owning 16 rows. In a warp, lane holds rows lane / 4 and lane / 4 + 8 of the fragments (the mma.m16n8 layout).
template <class T, int HS>
__global__ void __launch_bounds__(128) attention_mma_kernel(T* out, const T* q, const T* k, const T* v, AttnParams a) {
  constexpr int BQ = kMmaRows, BK = kMmaKeys;
  constexpr int LD = HS + 8;   // shared row stride in elements: +16 bytes keeps ldmatrix conflict-free
  constexpr int CH = HS / 8;   // 16-byte chunks per row
  constexpr int KS = HS / 16;  // k-steps over the head dimension
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // (BQ, LD)
  T* Ks = Qs + BQ * LD;                    // 2 buffers of (BK, LD)
  T* Vs = Ks + 2 * BK * LD;                // 2 buffers of (BK, LD)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t b = blockIdx.z, j = blockIdx.y, rows = a.T * a.G;
  const int64_t r0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * BQ;
  const KeyRange kr = key_range(a, r0, BQ);
  const int n_steps = static_cast<int>((kr.s_end - kr.s_begin + BK - 1) / BK);

  for (int c = tid; c < BQ * CH; c += blockDim.x) {
    const int rr = c / CH, cc = c % CH;
    const bool live = r0 + rr < rows;
    cp_async_16(smem_u32(Qs + rr * LD + cc * 8), q + (live ? query_offset(a, b, j, r0 + rr) + cc * 8 : 0), live);
  }
  auto load_kv = [&](int step, int buf) {
    const int64_t s0 = kr.s_begin + static_cast<int64_t>(step) * BK;
    for (int c = tid; c < BK * CH; c += blockDim.x) {
      const int kk = c / CH, cc = c % CH;
      const bool live = s0 + kk < kr.s_end;  // zeros beyond: no garbage (NaN) can reach P V
      const int64_t off = live ? key_offset(a, b, j, s0 + kk) + cc * 8 : 0;
      cp_async_16(smem_u32(Ks + (buf * BK + kk) * LD + cc * 8), k + off, live);
      cp_async_16(smem_u32(Vs + (buf * BK + kk) * LD + cc * 8), v + off, live);
    }
  };
  load_kv(0, 0);
  cp_async_commit();

  // This thread's two rows and their positions (rows beyond the last are computed on zeros and never written).
  const int64_t row_a = r0 + warp * 16 + lane / 4, row_b = row_a + 8;
  const int64_t pos_a = a.pos0 + row_a / a.G, pos_b = a.pos0 + row_b / a.G;
  const float scale_log2 = a.scale * 1.4426950408889634f;  // scores in base-2 units: exp(x) = exp2(x log2 e)
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
  float o[HS / 8][4];  // O (16, HS) of the warp: column tile dt holds dims 8 dt + 2 (lane % 4) + {0, 1}
#pragma unroll
  for (int dt = 0; dt < HS / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  uint32_t qf[KS][4];  // the warp's 16 Q rows as A fragments, loaded once

  for (int step = 0; step < n_steps; step++) {
    const int buf = step & 1;
    if (step + 1 < n_steps) {
      load_kv(step + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (step == 0) {
#pragma unroll
      for (int kk = 0; kk < KS; kk++)
        ldmatrix_x4(qf[kk], smem_u32(Qs + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8));
    }

    // S (16, BK) = Q K^T: n-tile nt holds keys 8 nt + 2 (lane % 4) + {0, 1}.
    const T* Kb = Ks + buf * BK * LD;
    float s[BK / 8][4];
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int nt2 = 0; nt2 < BK / 16; nt2++) {
#pragma unroll
      for (int kk = 0; kk < KS; kk++) {
        uint32_t kf[4];
        ldmatrix_x4(kf, smem_u32(Kb + (nt2 * 16 + lane % 8 + (lane / 16) * 8) * LD + kk * 16 + ((lane / 8) % 2) * 8));
        mma_16816<T>(s[2 * nt2], qf[kk], kf[0], kf[1]);
        mma_16816<T>(s[2 * nt2 + 1], qf[kk], kf[2], kf[3]);
      }
    }

    // Scale and mask (the per-element test is skipped when every row of the block sees every key of the step).
    const int64_t s0 = kr.s_begin + static_cast<int64_t>(step) * BK;
    const bool all_visible = s0 + BK <= kr.s_end && s0 + BK - 1 <= kr.p_first &&
                             (a.window == 0 || s0 > kr.p_last - a.window);
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int64_t key = s0 + nt * 8 + 2 * (lane % 4) + (e & 1);
        const bool vis = all_visible || visible(key, e < 2 ? pos_a : pos_b, a.window);
        s[nt][e] = vis ? s[nt][e] * scale_log2 : -INFINITY;
      }
    }

    // Online softmax on rows a and b: the 4 lanes of a quad hold one row's BK scores.
    float mx_a, mx_b;
    quad_row_max(s, mx_a, mx_b);
    const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
    const float base_a = new_a == -INFINITY ? 0.0f : new_a;  // a row with nothing visible yet stays at zero
    const float base_b = new_b == -INFINITY ? 0.0f : new_b;
    const float alpha_a = exp2f(m_a - base_a), alpha_b = exp2f(m_b - base_b);
    m_a = new_a;
    m_b = new_b;
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) {
      s[nt][0] = exp2f(s[nt][0] - base_a);
      s[nt][1] = exp2f(s[nt][1] - base_a);
      s[nt][2] = exp2f(s[nt][2] - base_b);
      s[nt][3] = exp2f(s[nt][3] - base_b);
      sum_a += s[nt][0] + s[nt][1];
      sum_b += s[nt][2] + s[nt][3];
    }
    l_a = l_a * alpha_a + sum_a;  // this lane's share; the quad is summed at the end
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int dt = 0; dt < HS / 8; dt++) {
      o[dt][0] *= alpha_a;
      o[dt][1] *= alpha_a;
      o[dt][2] *= alpha_b;
      o[dt][3] *= alpha_b;
    }

    // O (16, HS) += P (16, BK) V (BK, HS): the S accumulators of n-tiles 2 kk, 2 kk + 1 are the A fragment of k-step kk.
    const T* Vb = Vs + buf * BK * LD;
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      const uint32_t pf[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dt2 = 0; dt2 < HS / 16; dt2++) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf,
                          smem_u32(Vb + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * LD + dt2 * 16 + (lane / 16) * 8));
        mma_16816<T>(o[2 * dt2], pf, vf[0], vf[1]);
        mma_16816<T>(o[2 * dt2 + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the next step's load
  }

#pragma unroll
  for (int o2 = 1; o2 < 4; o2 <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o2);
  }
  const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
  const int d0 = 2 * (lane % 4);
  if (row_a < rows) {
    T* dst = out + query_offset(a, b, j, row_a) + d0;
#pragma unroll
    for (int dt = 0; dt < HS / 8; dt++)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack2<T>(o[dt][0] * inv_a, o[dt][1] * inv_a);
  }
  if (row_b < rows) {
    T* dst = out + query_offset(a, b, j, row_b) + d0;
#pragma unroll
    for (int dt = 0; dt < HS / 8; dt++)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack2<T>(o[dt][2] * inv_b, o[dt][3] * inv_b);
  }
}

// ---- launchers -----------------------------------------------------------------------------------------------------

template <class T, int HS>
void launch_mma(const Context& ctx, T* out, const T* q, const T* k, const T* v, const AttnParams& a, int64_t B) {
  auto kernel = attention_mma_kernel<T, HS>;
  constexpr size_t smem = mma_smem_bytes<HS>();
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((a.T * a.G + kMmaRows - 1) / kMmaRows), static_cast<unsigned>(a.HKV),
                  static_cast<unsigned>(B));
  kernel<<<grid, 128, smem, stream_of(ctx)>>>(out, q, k, v, a);
  CUDA_CHECK_LAUNCH();
}

// Blocks sharing the keys of a single row tile: enough blocks for ~4 per multiprocessor, at least two staged tiles of
// keys each, at most 64, and partial states that fit the workspace.
int decode_splits(const Context& ctx, const AttnParams& a, int64_t B, int BQ, int KT, int HP) {
  const int64_t s_begin = a.window > 0 && a.pos0 - a.window + 1 > 0 ? a.pos0 - a.window + 1 : 0;
  const int64_t keys = a.pos0 + a.T - s_begin;
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, ctx.cuda_device()));
  const int64_t per_split = B * a.HKV * BQ * (2 + HP) * static_cast<int64_t>(sizeof(float));
  int64_t n = (4 * sms + B * a.HKV - 1) / (B * a.HKV);
  n = std::min<int64_t>({n, (keys + 2 * KT - 1) / (2 * KT), 64,
                         static_cast<int64_t>(ctx.workspace_bytes()) / per_split});
  return static_cast<int>(std::max<int64_t>(n, 1));
}

template <class T, int DPL, int RW, int WR, int WK>
void launch_fma(const Context& ctx, T* out, const T* q, const T* k, const T* v, AttnParams a, int64_t B) {
  constexpr int BQ = RW * WR, KT = 32 * WK, HP = 32 * DPL;
  const int64_t tiles = (a.T * a.G + BQ - 1) / BQ;
  if (tiles == 1) {
    a.n_splits = decode_splits(ctx, a, B, BQ, KT, HP);
    a.partial = static_cast<float*>(ctx.workspace());
  }
  auto kernel = attention_fma_kernel<T, DPL, RW, WR, WK>;
  const size_t smem = fma_smem_bytes(a.HS, BQ, KT, HP);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(tiles * a.n_splits), static_cast<unsigned>(a.HKV), static_cast<unsigned>(B));
  kernel<<<grid, 32 * WR * WK, smem, stream_of(ctx)>>>(out, q, k, v, a);
  CUDA_CHECK_LAUNCH();
  if (a.n_splits > 1) {
    attention_combine_kernel<T, HP, BQ>
        <<<dim3(BQ, static_cast<unsigned>(a.HKV), static_cast<unsigned>(B)), 32, 0, stream_of(ctx)>>>(out, a);
    CUDA_CHECK_LAUNCH();
  }
}

// Up to 8 rows per (b, j) (decode): one tile of 1, 4 or 8 rows, 2 warps splitting the keys, and the keys split over
// blocks. More rows: tiles of 4 warps x 4 rows.
template <class T, int DPL>
void launch_fma_rows(const Context& ctx, T* out, const T* q, const T* k, const T* v, const AttnParams& a, int64_t B) {
  const int64_t rows = a.T * a.G;
  if (rows == 1) return launch_fma<T, DPL, 1, 1, 2>(ctx, out, q, k, v, a, B);
  if (rows <= 4) return launch_fma<T, DPL, 4, 1, 2>(ctx, out, q, k, v, a, B);
  if (rows <= 8) return launch_fma<T, DPL, 8, 1, 2>(ctx, out, q, k, v, a, B);
  launch_fma<T, DPL, 4, 4, 1>(ctx, out, q, k, v, a, B);
}

}  // namespace

void attention(Context& ctx, Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0,
               int64_t kv_len, float scale, int64_t window) {
  (void)kv_len;  // keys beyond the last query's position are never visible
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), S = k.dim(1), HKV = k.dim(2);
  if (B == 0 || T == 0 || H == 0 || HS == 0) return;
  LIGER_CHECK(HS <= 256, "attention: head size %lld above 256 is not supported on the GPU", static_cast<long long>(HS));
  LIGER_CHECK(B <= 65535 && HKV <= 65535, "attention: batch %lld or KV heads %lld beyond the grid limit",
              static_cast<long long>(B), static_cast<long long>(HKV));
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    const bool kv_vec16 = HS % kVec16<T_> == 0 && aligned16(k.data()) && aligned16(v.data());
    const AttnParams a{T, H, HKV, HS, S, H / HKV, pos0, window, scale, kv_vec16};
    T_* o = out.ptr<T_>();
    const T_* pq = q.ptr<T_>();
    const T_* pk = k.ptr<T_>();
    const T_* pv = v.ptr<T_>();
    if constexpr (!std::is_same_v<T_, float>) {
      const bool aligned = aligned16(o) && aligned16(pq) && aligned16(pk) && aligned16(pv);
      if (aligned && T * a.G >= kMmaRows && HS == 64) return launch_mma<T_, 64>(ctx, o, pq, pk, pv, a, B);
      if (aligned && T * a.G >= kMmaRows && HS == 128) return launch_mma<T_, 128>(ctx, o, pq, pk, pv, a, B);
    }
    if (HS <= 32) return launch_fma_rows<T_, 1>(ctx, o, pq, pk, pv, a, B);
    if (HS <= 64) return launch_fma_rows<T_, 2>(ctx, o, pq, pk, pv, a, B);
    if (HS <= 128) return launch_fma_rows<T_, 4>(ctx, o, pq, pk, pv, a, B);
    launch_fma_rows<T_, 8>(ctx, o, pq, pk, pv, a, B);
  });
}

void kv_write(Context& ctx, Tensor cache, const Tensor& src, int64_t pos0) {
  const int64_t B = src.dim(0), T = src.dim(1), S = cache.dim(1);
  if (B == 0 || T == 0) return;
  const size_t row = static_cast<size_t>(src.dim(2) * src.dim(3)) * dtype_size(src.dtype());  // one position
  // B rows of T positions each, from pitch T into pitch S at offset pos0.
  CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(cache.data()) + static_cast<size_t>(pos0) * row,
                               static_cast<size_t>(S) * row, src.data(), static_cast<size_t>(T) * row,
                               static_cast<size_t>(T) * row, static_cast<size_t>(B), cudaMemcpyDeviceToDevice,
                               stream_of(ctx)));
}

}  // namespace liger::ops::cuda
