#include "ops/recurrence.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace liger::ops::cpu {

// Every routine is a template over the scalar type: float for the model, double for the finite-difference checks.
namespace {

// Row pointer of a (B, T, heads, dim) tensor.
template <class T>
inline T* at(const Tensor& x, int64_t b, int64_t t, int64_t head) {
  return x.ptr<T>() + ((b * x.dim(1) + t) * x.dim(2) + head) * x.dim(3);
}

// G (L x K): running sums of the log-gates of KV head j over the chunk [t0, t0 + L).
template <class T>
void chunk_cumsum(const Tensor& g, int64_t b, int64_t j, int64_t t0, int64_t L, std::vector<T>* G) {
  const int64_t K = g.dim(3);
  G->assign(static_cast<size_t>(L * K), T(0));
  for (int64_t i = 0; i < L; i++) {
    const T* gi = at<T>(g, b, t0 + i, j);
    for (int64_t c = 0; c < K; c++)
      (*G)[static_cast<size_t>(i * K + c)] = gi[c] + (i ? (*G)[static_cast<size_t>((i - 1) * K + c)] : T(0));
  }
}

// Carries the state of one (batch, KV head) over a chunk [t0, t0 + L) of S_t = Diag(exp g_t) S_{t-1} + a_t (x) b_t,
// S (K x Vd), a (K per token), b (Vd per token), with G the chunk's running log-gate sums:
//   S <- Diag(exp(G_last)) S + sum_s (a_s * exp(G_last - G_s)) (x) b_s.
template <class T>
void advance_state(T* S, int64_t K, int64_t Vd, const Tensor& a, const Tensor& bv, int64_t b, int64_t j, int64_t t0,
                   int64_t L, const std::vector<T>& G) {
  const T* Gl = &G[static_cast<size_t>((L - 1) * K)];
  for (int64_t c = 0; c < K; c++) {
    const T decay = std::exp(Gl[c]);
    for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] *= decay;
  }
  for (int64_t s = 0; s < L; s++) {
    const T* as = at<T>(a, b, t0 + s, j);
    const T* Gs = &G[static_cast<size_t>(s * K)];
    const T* bs = at<T>(bv, b, t0 + s, j);
    for (int64_t c = 0; c < K; c++) {
      const T w = as[c] * std::exp(Gl[c] - Gs[c]);
      for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] += w * bs[e];
    }
  }
}

template <class T>
void linear_recurrence_t(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g, Tensor state,
                         int64_t chunk) {
  const int64_t B = fq.dim(0), TT = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  const int64_t group = H / HKV;
  std::vector<T> G;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      T* S = state.ptr<T>() + (b * HKV + j) * K * Vd;  // (K, Vd)
      for (int64_t t0 = 0; t0 < TT; t0 += chunk) {
        const int64_t L = std::min(chunk, TT - t0);
        chunk_cumsum<T>(g, b, j, t0, L, &G);
        for (int64_t h = j * group; h < (j + 1) * group; h++) {
          for (int64_t i = 0; i < L; i++) {
            const T* q = at<T>(fq, b, t0 + i, h);
            const T* Gi = &G[static_cast<size_t>(i * K)];
            T* o = at<T>(out, b, t0 + i, h);
            std::fill(o, o + Vd, T(0));
            for (int64_t c = 0; c < K; c++) {  // the state carried in from earlier chunks
              const T w = q[c] * std::exp(Gi[c]);
              for (int64_t e = 0; e < Vd; e++) o[e] += w * S[c * Vd + e];
            }
            for (int64_t s = 0; s <= i; s++) {  // this chunk's tokens up to i
              const T* k = at<T>(fk, b, t0 + s, j);
              const T* Gs = &G[static_cast<size_t>(s * K)];
              T w = 0;
              for (int64_t c = 0; c < K; c++) w += q[c] * k[c] * std::exp(Gi[c] - Gs[c]);
              const T* vs = at<T>(v, b, t0 + s, j);
              for (int64_t e = 0; e < Vd; e++) o[e] += w * vs[e];
            }
          }
        }
        advance_state<T>(S, K, Vd, fk, v, b, j, t0, L, G);
      }
    }
  }
}

template <class T>
void slot_scores_t(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state,
                   int64_t chunk) {
  const int64_t B = q.dim(0), TT = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  const int64_t group = H / HKV;
  std::vector<T> G;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      T* Kt = state.ptr<T>() + (b * HKV + j) * M * d;  // (M, d)
      for (int64_t t0 = 0; t0 < TT; t0 += chunk) {
        const int64_t L = std::min(chunk, TT - t0);
        chunk_cumsum<T>(g, b, j, t0, L, &G);
        for (int64_t h = j * group; h < (j + 1) * group; h++) {
          for (int64_t i = 0; i < L; i++) {
            const T* qi = at<T>(q, b, t0 + i, h);
            const T* Gi = &G[static_cast<size_t>(i * M)];
            T* zi = at<T>(z, b, t0 + i, h);
            for (int64_t m = 0; m < M; m++) {
              T dot = 0;
              for (int64_t c = 0; c < d; c++) dot += Kt[m * d + c] * qi[c];
              zi[m] = std::exp(Gi[m]) * dot;
            }
            for (int64_t t = 0; t <= i; t++) {
              const T* kt = at<T>(k, b, t0 + t, j);
              T kq = 0;
              for (int64_t c = 0; c < d; c++) kq += kt[c] * qi[c];
              const T* st = at<T>(s, b, t0 + t, j);
              const T* Gt = &G[static_cast<size_t>(t * M)];
              for (int64_t m = 0; m < M; m++) zi[m] += std::exp(Gi[m] - Gt[m]) * st[m] * kq;
            }
          }
        }
        advance_state<T>(Kt, M, d, s, k, b, j, t0, L, G);
      }
    }
  }
}

// One step of S = Diag(exp g) S + a (x) b for every (batch, KV head); then `read` per query head.
template <class T, class Read>
void step_t(const Tensor& a, const Tensor& bv, const Tensor& g, Tensor state, int64_t H, Read read) {
  const int64_t B = a.dim(0), HKV = a.dim(2), K = a.dim(3), Vd = bv.dim(3), group = H / HKV;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      T* S = state.ptr<T>() + (b * HKV + j) * K * Vd;
      const T* gj = at<T>(g, b, 0, j);
      const T* aj = at<T>(a, b, 0, j);
      const T* bj = at<T>(bv, b, 0, j);
      for (int64_t c = 0; c < K; c++) {
        const T decay = std::exp(gj[c]);
        for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] = decay * S[c * Vd + e] + aj[c] * bj[e];
      }
      for (int64_t h = j * group; h < (j + 1) * group; h++) read(b, h, S);
    }
  }
}

// Backward of the gated recurrence by reverse time (exact; O(T K Vd) per head and the forward states kept per token:
// the CPU path is the reference for tests and small models).
//   Forward: S_t = Diag(alpha_t) S_{t-1} + a_t (x) b_t, alpha = exp(g), S_{-1} = state0; readouts per query head.
//   Adjoint: D_t = (readout cotangent at t) + Diag(alpha_{t+1}) D_{t+1};
//            da_t = D_t b_t, db_t = D_t^T a_t, dg_t = alpha_t * rowsum(D_t o S_{t-1}).
// `seed(b, t, S_t, D)` adds the readout cotangent of token t into D and writes the readout's input gradients;
// the final-state cotangent is zero (the training form discards the final state).
template <class T, class Seed>
void reverse_t(const Tensor& a, const Tensor& bv, const Tensor& g, const Tensor& state0, Tensor da, Tensor db,
               Tensor dg, Seed seed) {
  const int64_t B = a.dim(0), TT = a.dim(1), HKV = a.dim(2), K = a.dim(3), Vd = bv.dim(3);
  std::vector<T> states(static_cast<size_t>((TT + 1) * K * Vd));  // S_{-1} .. S_{T-1}
  std::vector<T> D(static_cast<size_t>(K * Vd));
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      std::copy(state0.ptr<T>() + (b * HKV + j) * K * Vd, state0.ptr<T>() + (b * HKV + j + 1) * K * Vd, states.begin());
      for (int64_t t = 0; t < TT; t++) {
        const T* prev = &states[static_cast<size_t>(t * K * Vd)];
        T* cur = &states[static_cast<size_t>((t + 1) * K * Vd)];
        const T* gt = at<T>(g, b, t, j);
        const T* at_ = at<T>(a, b, t, j);
        const T* bt = at<T>(bv, b, t, j);
        for (int64_t c = 0; c < K; c++)
          for (int64_t e = 0; e < Vd; e++) cur[c * Vd + e] = std::exp(gt[c]) * prev[c * Vd + e] + at_[c] * bt[e];
      }
      std::fill(D.begin(), D.end(), T(0));
      for (int64_t t = TT - 1; t >= 0; t--) {
        if (t + 1 < TT) {
          const T* gn = at<T>(g, b, t + 1, j);
          for (int64_t c = 0; c < K; c++) {
            const T decay = std::exp(gn[c]);
            for (int64_t e = 0; e < Vd; e++) D[static_cast<size_t>(c * Vd + e)] *= decay;
          }
        }
        seed(b, j, t, &states[static_cast<size_t>((t + 1) * K * Vd)], D.data());
        const T* prev = &states[static_cast<size_t>(t * K * Vd)];
        const T* gt = at<T>(g, b, t, j);
        const T* at_ = at<T>(a, b, t, j);
        const T* bt = at<T>(bv, b, t, j);
        T* dat = at<T>(da, b, t, j);
        T* dbt = at<T>(db, b, t, j);
        T* dgt = at<T>(dg, b, t, j);
        std::fill(dbt, dbt + Vd, T(0));
        for (int64_t c = 0; c < K; c++) {
          T sa = 0, sg = 0;
          for (int64_t e = 0; e < Vd; e++) {
            const T Dce = D[static_cast<size_t>(c * Vd + e)];
            sa += Dce * bt[e];
            sg += Dce * prev[c * Vd + e];
            dbt[e] += Dce * at_[c];
          }
          dat[c] = sa;
          dgt[c] = std::exp(gt[c]) * sg;
        }
      }
    }
  }
}

template <class T>
void linear_recurrence_backward_t(Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout, const Tensor& fq,
                                  const Tensor& fk, const Tensor& v, const Tensor& g, const Tensor& state0) {
  const int64_t H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3), group = H / HKV;
  // Readout o_t[h] = S_t^T fq_t[h]:  dfq_t[h] = S_t do_t[h];  D += fq_t[h] (x) do_t[h].
  reverse_t<T>(fk, v, g, state0, dfk, dv, dg, [&](int64_t b, int64_t j, int64_t t, const T* S, T* D) {
    for (int64_t h = j * group; h < (j + 1) * group; h++) {
      const T* q = at<T>(fq, b, t, h);
      const T* o = at<T>(dout, b, t, h);
      T* dq = at<T>(dfq, b, t, h);
      for (int64_t c = 0; c < K; c++) {
        T acc = 0;
        for (int64_t e = 0; e < Vd; e++) {
          acc += S[c * Vd + e] * o[e];
          D[c * Vd + e] += q[c] * o[e];
        }
        dq[c] = acc;
      }
    }
  });
}

template <class T>
void slot_scores_backward_t(Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz, const Tensor& q,
                            const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& state0) {
  const int64_t H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3), group = H / HKV;
  // State Kt (M x d) written with s (x) k; readout z_t[h] = Kt_t q_t[h]:  dq_t[h] = Kt_t^T dz_t[h];
  // D += dz_t[h] (x) q_t[h].
  reverse_t<T>(s, k, g, state0, ds, dk, dg, [&](int64_t b, int64_t j, int64_t t, const T* S, T* D) {
    for (int64_t h = j * group; h < (j + 1) * group; h++) {
      const T* qh = at<T>(q, b, t, h);
      const T* zh = at<T>(dz, b, t, h);
      T* dqh = at<T>(dq, b, t, h);
      std::fill(dqh, dqh + d, T(0));
      for (int64_t m = 0; m < M; m++) {
        for (int64_t c = 0; c < d; c++) {
          dqh[c] += S[m * d + c] * zh[m];
          D[m * d + c] += zh[m] * qh[c];
        }
      }
    }
  });
}

}  // namespace


void linear_recurrence(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g, Tensor state,
                       int64_t chunk) {
  by_dtype(fq.dtype(), [&](auto zero) { linear_recurrence_t<decltype(zero)>(out, fq, fk, v, g, state, chunk); });
}

void linear_recurrence_step(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                            Tensor state) {
  by_dtype(fq.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t K = fq.dim(3), Vd = v.dim(3);
    step_t<T>(fk, v, g, state, fq.dim(2), [&](int64_t b, int64_t h, const T* S) {
      const T* q = at<T>(fq, b, 0, h);
      T* o = at<T>(out, b, 0, h);
      std::fill(o, o + Vd, T(0));
      for (int64_t c = 0; c < K; c++)
        for (int64_t e = 0; e < Vd; e++) o[e] += q[c] * S[c * Vd + e];
    });
  });
}

void slot_scores(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state,
                 int64_t chunk) {
  by_dtype(q.dtype(), [&](auto zero) { slot_scores_t<decltype(zero)>(z, q, k, s, g, state, chunk); });
}

void slot_scores_step(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state) {
  by_dtype(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t d = q.dim(3), M = s.dim(3);
    step_t<T>(s, k, g, state, q.dim(2), [&](int64_t b, int64_t h, const T* Kt) {
      const T* qh = at<T>(q, b, 0, h);
      T* zh = at<T>(z, b, 0, h);
      for (int64_t m = 0; m < M; m++) {
        T dot = 0;
        for (int64_t c = 0; c < d; c++) dot += Kt[m * d + c] * qh[c];
        zh[m] = dot;
      }
    });
  });
}

void linear_recurrence_backward(Tensor dfq, Tensor dfk, Tensor dv, Tensor dg, const Tensor& dout, const Tensor& fq,
                                const Tensor& fk, const Tensor& v, const Tensor& g, const Tensor& state0) {
  by_dtype(fq.dtype(), [&](auto zero) {
    linear_recurrence_backward_t<decltype(zero)>(dfq, dfk, dv, dg, dout, fq, fk, v, g, state0);
  });
}

void slot_scores_backward(Tensor dq, Tensor dk, Tensor ds, Tensor dg, const Tensor& dz, const Tensor& q,
                          const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& state0) {
  by_dtype(q.dtype(),
           [&](auto zero) { slot_scores_backward_t<decltype(zero)>(dq, dk, ds, dg, dz, q, k, s, g, state0); });
}

}  // namespace liger::ops::cpu
