#include "ops/recurrence.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace liger::ops::cpu {

namespace {

// Row pointer of a (B, T, heads, dim) tensor.
inline const float* at(const Tensor& x, int64_t b, int64_t t, int64_t head) {
  return x.ptr<float>() + ((b * x.dim(1) + t) * x.dim(2) + head) * x.dim(3);
}
inline float* at_mut(const Tensor& x, int64_t b, int64_t t, int64_t head) {
  return x.ptr<float>() + ((b * x.dim(1) + t) * x.dim(2) + head) * x.dim(3);
}

// G (L x K): running sums of the log-gates of KV head j over the chunk [t0, t0 + L).
void chunk_cumsum(const Tensor& g, int64_t b, int64_t j, int64_t t0, int64_t L, std::vector<float>* G) {
  const int64_t K = g.dim(3);
  G->assign(static_cast<size_t>(L * K), 0.0f);
  for (int64_t i = 0; i < L; i++) {
    const float* gi = at(g, b, t0 + i, j);
    for (int64_t c = 0; c < K; c++)
      (*G)[static_cast<size_t>(i * K + c)] = gi[c] + (i ? (*G)[static_cast<size_t>((i - 1) * K + c)] : 0.0f);
  }
}

}  // namespace

void linear_recurrence(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g, Tensor state,
                       int64_t chunk) {
  const int64_t B = fq.dim(0), T = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  const int64_t group = H / HKV;
  std::vector<float> G;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      float* S = state.ptr<float>() + (b * HKV + j) * K * Vd;  // (K, Vd)
      for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t L = std::min(chunk, T - t0);
        chunk_cumsum(g, b, j, t0, L, &G);
        for (int64_t h = j * group; h < (j + 1) * group; h++) {
          for (int64_t i = 0; i < L; i++) {
            const float* q = at(fq, b, t0 + i, h);
            const float* Gi = &G[static_cast<size_t>(i * K)];
            float* o = at_mut(out, b, t0 + i, h);
            std::fill(o, o + Vd, 0.0f);
            for (int64_t c = 0; c < K; c++) {  // the state carried in from earlier chunks
              const float a = q[c] * std::exp(Gi[c]);
              for (int64_t e = 0; e < Vd; e++) o[e] += a * S[c * Vd + e];
            }
            for (int64_t s = 0; s <= i; s++) {  // this chunk's tokens up to i
              const float* k = at(fk, b, t0 + s, j);
              const float* Gs = &G[static_cast<size_t>(s * K)];
              float w = 0.0f;
              for (int64_t c = 0; c < K; c++) w += q[c] * k[c] * std::exp(Gi[c] - Gs[c]);
              const float* vs = at(v, b, t0 + s, j);
              for (int64_t e = 0; e < Vd; e++) o[e] += w * vs[e];
            }
          }
        }
        // S <- Diag(exp(G_last)) S + sum_s (fk_s * exp(G_last - G_s)) (x) v_s
        const float* Gl = &G[static_cast<size_t>((L - 1) * K)];
        for (int64_t c = 0; c < K; c++) {
          const float decay = std::exp(Gl[c]);
          for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] *= decay;
        }
        for (int64_t s = 0; s < L; s++) {
          const float* k = at(fk, b, t0 + s, j);
          const float* Gs = &G[static_cast<size_t>(s * K)];
          const float* vs = at(v, b, t0 + s, j);
          for (int64_t c = 0; c < K; c++) {
            const float a = k[c] * std::exp(Gl[c] - Gs[c]);
            for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] += a * vs[e];
          }
        }
      }
    }
  }
}

void linear_recurrence_step(Tensor out, const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                            Tensor state) {
  const int64_t B = fq.dim(0), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  const int64_t group = H / HKV;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      float* S = state.ptr<float>() + (b * HKV + j) * K * Vd;
      const float* gj = at(g, b, 0, j);
      const float* k = at(fk, b, 0, j);
      const float* vs = at(v, b, 0, j);
      for (int64_t c = 0; c < K; c++) {
        const float decay = std::exp(gj[c]);
        for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] = decay * S[c * Vd + e] + k[c] * vs[e];
      }
      for (int64_t h = j * group; h < (j + 1) * group; h++) {
        const float* q = at(fq, b, 0, h);
        float* o = at_mut(out, b, 0, h);
        std::fill(o, o + Vd, 0.0f);
        for (int64_t c = 0; c < K; c++)
          for (int64_t e = 0; e < Vd; e++) o[e] += q[c] * S[c * Vd + e];
      }
    }
  }
}

void slot_scores(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state,
                 int64_t chunk) {
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  const int64_t group = H / HKV;
  std::vector<float> G;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      float* Kt = state.ptr<float>() + (b * HKV + j) * M * d;  // (M, d)
      for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t L = std::min(chunk, T - t0);
        chunk_cumsum(g, b, j, t0, L, &G);
        for (int64_t h = j * group; h < (j + 1) * group; h++) {
          for (int64_t i = 0; i < L; i++) {
            const float* qi = at(q, b, t0 + i, h);
            const float* Gi = &G[static_cast<size_t>(i * M)];
            float* zi = at_mut(z, b, t0 + i, h);
            for (int64_t m = 0; m < M; m++) {
              float dot = 0.0f;
              for (int64_t c = 0; c < d; c++) dot += Kt[m * d + c] * qi[c];
              zi[m] = std::exp(Gi[m]) * dot;
            }
            for (int64_t t = 0; t <= i; t++) {
              const float* kt = at(k, b, t0 + t, j);
              float kq = 0.0f;
              for (int64_t c = 0; c < d; c++) kq += kt[c] * qi[c];
              const float* st = at(s, b, t0 + t, j);
              const float* Gt = &G[static_cast<size_t>(t * M)];
              for (int64_t m = 0; m < M; m++) zi[m] += std::exp(Gi[m] - Gt[m]) * st[m] * kq;
            }
          }
        }
        const float* Gl = &G[static_cast<size_t>((L - 1) * M)];
        for (int64_t m = 0; m < M; m++) {
          const float decay = std::exp(Gl[m]);
          for (int64_t c = 0; c < d; c++) Kt[m * d + c] *= decay;
        }
        for (int64_t t = 0; t < L; t++) {
          const float* kt = at(k, b, t0 + t, j);
          const float* st = at(s, b, t0 + t, j);
          const float* Gt = &G[static_cast<size_t>(t * M)];
          for (int64_t m = 0; m < M; m++) {
            const float a = st[m] * std::exp(Gl[m] - Gt[m]);
            for (int64_t c = 0; c < d; c++) Kt[m * d + c] += a * kt[c];
          }
        }
      }
    }
  }
}

void slot_scores_step(Tensor z, const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, Tensor state) {
  const int64_t B = q.dim(0), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  const int64_t group = H / HKV;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      float* Kt = state.ptr<float>() + (b * HKV + j) * M * d;
      const float* gj = at(g, b, 0, j);
      const float* kj = at(k, b, 0, j);
      const float* sj = at(s, b, 0, j);
      for (int64_t m = 0; m < M; m++) {
        const float decay = std::exp(gj[m]);
        for (int64_t c = 0; c < d; c++) Kt[m * d + c] = decay * Kt[m * d + c] + sj[m] * kj[c];
      }
      for (int64_t h = j * group; h < (j + 1) * group; h++) {
        const float* qh = at(q, b, 0, h);
        float* zh = at_mut(z, b, 0, h);
        for (int64_t m = 0; m < M; m++) {
          float dot = 0.0f;
          for (int64_t c = 0; c < d; c++) dot += Kt[m * d + c] * qh[c];
          zh[m] = dot;
        }
      }
    }
  }
}

}  // namespace liger::ops::cpu
