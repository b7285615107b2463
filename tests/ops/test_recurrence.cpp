// tests/ops/test_recurrence.cpp — the forms of ops/recurrence.h agree (issue 4): linear_recurrence (GLA, HGRN2, GSA's
// second pass) and slot_scores (GSA's first pass), each as
//   * the chunked form with chunk sizes 1, 16, 64 and one larger than T,
//   * the one-step form applied token by token,
//   * the chunked form over a sequence split in two calls, the state carried from the first to the second,
// all compared with naive fp64 references written here from liger-spec.md §2.1–2.3 (the parallel form, a double sum
// over query and key positions — not a copy of ops/cpu), outputs and final states alike, on fresh random inputs
// starting from a nonzero state. Then GSA's two passes composed (slot_scores -> softmax -> linear_recurrence) against a
// fully naive recurrent GSA, a strong-decay case that must stay finite, and the dispatchers' validation errors.
//
// Tolerance: ||out - ref|| / ||ref|| <= 1e-5, the bound of issue 4. The op computes in fp32: every output is a sum of
// at most a few hundred terms and the log-gates are summed over at most one chunk, so fp32 rounding contributes
// ~1e-7..1e-6 relative, while any formula error (decay applied after the add instead of before, an off-by-one in the
// exponent sum, the state not decayed across a chunk boundary, the wrong KV head for a query head) shows up at 1e-3
// or more. Each case prints its worst error so the margin is visible. Measured worst: 3.4e-6, a final state under
// HGRN2-strength gates (logsigmoid without /16) in one chunk of 64: the op's fp32 running sum G of the log-gates
// within a chunk rounds at ~|G| * 6e-8, and |G| grows with chunk length x |g|. With the /16 gates all stay < 5e-7.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/recurrence.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::throws_error;

constexpr double kTol = 1e-5;
constexpr int64_t kB = 2;  // batch
constexpr int64_t kH = 4;  // query heads; HKV in {4, 2, 1} gives GQA groups of 1, 2, 4

// ---- random inputs --------------------------------------------------------------------------------------------------

// Normal values with the given mean and standard deviation (never all zeros).
Tensor randn(Shape s, Rng& rng, double mean = 0.0, double stddev = 1.0) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = static_cast<float>(mean + stddev * rng.normal());
  return t;
}

// Stable logsigmoid (liger-spec.md §7 item 2): min(x, 0) - log1p(exp(-|x|)).
double log_sigmoid(double x) {
  return std::min(x, 0.0) - std::log1p(std::exp(-std::fabs(x)));
}

// Log-gates g = logsigmoid(x) / divisor (<= 0): divisor 16 is GLA's and GSA's normalizer, 1 is HGRN2's stronger decay.
Tensor log_gates(const Tensor& x, double divisor) {
  Tensor g = Tensor::empty(x.shape(), DType::F32, Device::CPU);
  for (int64_t i = 0; i < x.numel(); i++)
    g.ptr<float>()[i] = static_cast<float>(log_sigmoid(x.ptr<float>()[i]) / divisor);
  return g;
}

// 1 - exp(g) per element: HGRN2's key slot and GSA's slot write weight s.
Tensor one_minus_exp(const Tensor& g) {
  Tensor s = Tensor::empty(g.shape(), DType::F32, Device::CPU);
  for (int64_t i = 0; i < g.numel(); i++) s.ptr<float>()[i] = static_cast<float>(-std::expm1(g.ptr<float>()[i]));
  return s;
}

// Softmax over the last dimension of every row, in fp64 (max subtracted), rounded to f32.
Tensor softmax_rows(const Tensor& logits) {
  const int64_t n = logits.dim(logits.ndim() - 1), rows = logits.numel() / n;
  Tensor p = Tensor::empty(logits.shape(), DType::F32, Device::CPU);
  for (int64_t r = 0; r < rows; r++) {
    const float* x = logits.ptr<float>() + r * n;
    const double mx = *std::max_element(x, x + n);
    double sum = 0.0;
    for (int64_t c = 0; c < n; c++) sum += std::exp(x[c] - mx);
    for (int64_t c = 0; c < n; c++) p.ptr<float>()[r * n + c] = static_cast<float>(std::exp(x[c] - mx) / sum);
  }
  return p;
}

Tensor clone(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::CPU);
  copy(y, x);
  return y;
}

// Rows [t0, t0 + len) along T of a (B, T, n, d) tensor, copied into a fresh (B, len, n, d) tensor.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t len) {
  const int64_t B = x.dim(0), T = x.dim(1), row = x.dim(2) * x.dim(3);
  Tensor y = Tensor::empty({B, len, x.dim(2), x.dim(3)}, DType::F32, Device::CPU);
  for (int64_t b = 0; b < B; b++)
    std::copy_n(x.ptr<float>() + (b * T + t0) * row, len * row, y.ptr<float>() + b * len * row);
  return y;
}

// dst rows [t0, t0 + src.T) along T = src; both (B, ·, n, d).
void time_put(const Tensor& dst, const Tensor& src, int64_t t0) {
  const int64_t B = src.dim(0), len = src.dim(1), T = dst.dim(1), row = src.dim(2) * src.dim(3);
  for (int64_t b = 0; b < B; b++)
    std::copy_n(src.ptr<float>() + b * len * row, len * row, dst.ptr<float>() + (b * T + t0) * row);
}

// Element [i0, i1, i2, i3] of a 4-d tensor as double: (b, t, head, channel) of an input, (b, j, row, col) of a state.
double at(const Tensor& x, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return x.ptr<float>()[((i0 * x.dim(1) + i1) * x.dim(2) + i2) * x.dim(3) + i3];
}

// ---- naive fp64 references (liger-spec.md §2.1–2.3) -------------------------------------------------------------

struct Reference {
  std::vector<double> out;    // (B, T, H, ·), laid out like the op's output
  std::vector<double> state;  // (B, HKV, ·, ·), the state after the last token, laid out like the op's state
};

// The parallel form of the gated linear recurrence, query head h reading KV head j = h / (H / HKV):
//   out_t[h] = sum_c fq_t[c] exp(G_t[c]) S0[c, :]  +  sum_{s<=t} sum_c fq_t[c] fk_s[c] exp(sum_{r=s+1..t} g_r[c]) v_s
//   S_T[c, e] = exp(G_{T-1}[c]) S0[c, e]  +  sum_s exp(sum_{r=s+1..T-1} g_r[c]) fk_s[c] v_s[e]
// with G_t = sum_{r<=t} g_r. The exponent sums are accumulated term by term walking s down from t (never as a
// difference of running sums), so the reference has no cancellation even when they reach -3000.
Reference naive_linear_recurrence(const Tensor& fq, const Tensor& fk, const Tensor& v, const Tensor& g,
                                  const Tensor& S0) {
  const int64_t B = fq.dim(0), T = fq.dim(1), H = fq.dim(2), K = fq.dim(3), HKV = fk.dim(2), Vd = v.dim(3);
  const int64_t group = H / HKV;
  Reference r;
  r.out.assign(static_cast<size_t>(B * T * H * Vd), 0.0);
  r.state.assign(static_cast<size_t>(B * HKV * K * Vd), 0.0);
  std::vector<double> D(static_cast<size_t>(K));  // D[c] = sum_{r=s+1..t} g_r[c]
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < H; h++) {
      const int64_t j = h / group;
      for (int64_t t = 0; t < T; t++) {
        double* o = &r.out[static_cast<size_t>(((b * T + t) * H + h) * Vd)];
        std::fill(D.begin(), D.end(), 0.0);
        for (int64_t s = t; s >= 0; s--) {
          if (s < t)
            for (int64_t c = 0; c < K; c++) D[c] += at(g, b, s + 1, j, c);
          double w = 0.0;
          for (int64_t c = 0; c < K; c++) w += at(fq, b, t, h, c) * at(fk, b, s, j, c) * std::exp(D[c]);
          for (int64_t e = 0; e < Vd; e++) o[e] += w * at(v, b, s, j, e);
        }
        for (int64_t c = 0; c < K; c++) {  // G_t = sum_{r=1..t} g_r + g_0
          const double a = at(fq, b, t, h, c) * std::exp(D[c] + at(g, b, 0, j, c));
          for (int64_t e = 0; e < Vd; e++) o[e] += a * at(S0, b, j, c, e);
        }
      }
    }
    for (int64_t j = 0; j < HKV; j++) {
      double* S = &r.state[static_cast<size_t>((b * HKV + j) * K * Vd)];
      std::fill(D.begin(), D.end(), 0.0);
      for (int64_t s = T - 1; s >= 0; s--) {
        if (s < T - 1)
          for (int64_t c = 0; c < K; c++) D[c] += at(g, b, s + 1, j, c);
        for (int64_t c = 0; c < K; c++)
          for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] += std::exp(D[c]) * at(fk, b, s, j, c) * at(v, b, s, j, e);
      }
      for (int64_t c = 0; c < K; c++)
        for (int64_t e = 0; e < Vd; e++) S[c * Vd + e] += std::exp(D[c] + at(g, b, 0, j, c)) * at(S0, b, j, c, e);
    }
  }
  return r;
}

// GSA pass 1 in the parallel form, state Kt0 (M x d) per KV head:
//   z_t[h][m] = exp(G_t[m]) (Kt0[m, :] . q_t[h])  +  sum_{s<=t} exp(sum_{r=s+1..t} g_r[m]) s_s[m] (k_s . q_t[h])
//   Kt_T[m, c] = exp(G_{T-1}[m]) Kt0[m, c]  +  sum_s exp(sum_{r=s+1..T-1} g_r[m]) s_s[m] k_s[c]
Reference naive_slot_scores(const Tensor& q, const Tensor& k, const Tensor& s, const Tensor& g, const Tensor& Kt0) {
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  const int64_t group = H / HKV;
  Reference r;
  r.out.assign(static_cast<size_t>(B * T * H * M), 0.0);
  r.state.assign(static_cast<size_t>(B * HKV * M * d), 0.0);
  std::vector<double> D(static_cast<size_t>(M));  // D[m] = sum_{r=u+1..t} g_r[m]
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < H; h++) {
      const int64_t j = h / group;
      for (int64_t t = 0; t < T; t++) {
        double* z = &r.out[static_cast<size_t>(((b * T + t) * H + h) * M)];
        std::fill(D.begin(), D.end(), 0.0);
        for (int64_t u = t; u >= 0; u--) {
          if (u < t)
            for (int64_t m = 0; m < M; m++) D[m] += at(g, b, u + 1, j, m);
          double kq = 0.0;
          for (int64_t c = 0; c < d; c++) kq += at(k, b, u, j, c) * at(q, b, t, h, c);
          for (int64_t m = 0; m < M; m++) z[m] += std::exp(D[m]) * at(s, b, u, j, m) * kq;
        }
        for (int64_t m = 0; m < M; m++) {
          double dot = 0.0;
          for (int64_t c = 0; c < d; c++) dot += at(Kt0, b, j, m, c) * at(q, b, t, h, c);
          z[m] += std::exp(D[m] + at(g, b, 0, j, m)) * dot;
        }
      }
    }
    for (int64_t j = 0; j < HKV; j++) {
      double* Kt = &r.state[static_cast<size_t>((b * HKV + j) * M * d)];
      std::fill(D.begin(), D.end(), 0.0);
      for (int64_t u = T - 1; u >= 0; u--) {
        if (u < T - 1)
          for (int64_t m = 0; m < M; m++) D[m] += at(g, b, u + 1, j, m);
        for (int64_t m = 0; m < M; m++)
          for (int64_t c = 0; c < d; c++) Kt[m * d + c] += std::exp(D[m]) * at(s, b, u, j, m) * at(k, b, u, j, c);
      }
      for (int64_t m = 0; m < M; m++)
        for (int64_t c = 0; c < d; c++) Kt[m * d + c] += std::exp(D[m] + at(g, b, 0, j, m)) * at(Kt0, b, j, m, c);
    }
  }
  return r;
}

// The whole of GSA as the recurrent form of liger-spec.md §2.3, in fp64, per KV head j and token t (alpha = exp(g)):
//   pass 1: Kt_t = Kt_{t-1} Diag(alpha_t) + k_t (x) s_t   (d x M),   z_t[h] = Kt_t^T q_t[h],   p = softmax(z)
//   pass 2: Vt_t = Diag(alpha_t) Vt_{t-1} + s_t (x) v_t   (M x d),   o_t[h] = Vt_t^T p_t[h]
// Kt0 comes in the op's layout (B, HKV, M, d) and is transposed into the spec's d x M here; the final (Kt, Vt) are
// returned in the op's layouts, both (B, HKV, M, d).
struct GsaReference {
  std::vector<double> out;  // (B, T, H, d)
  std::vector<double> Kt;   // (B, HKV, M, d)
  std::vector<double> Vt;   // (B, HKV, M, d)
};
GsaReference naive_gsa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& s, const Tensor& g,
                       const Tensor& Kt0, const Tensor& Vt0) {
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), d = q.dim(3), HKV = k.dim(2), M = s.dim(3);
  const int64_t group = H / HKV;
  GsaReference r;
  r.out.assign(static_cast<size_t>(B * T * H * d), 0.0);
  r.Kt.assign(static_cast<size_t>(B * HKV * M * d), 0.0);
  r.Vt.assign(static_cast<size_t>(B * HKV * M * d), 0.0);
  std::vector<double> Kt(static_cast<size_t>(d * M)), Vt(static_cast<size_t>(M * d)), z(static_cast<size_t>(M));
  for (int64_t b = 0; b < B; b++) {
    for (int64_t j = 0; j < HKV; j++) {
      for (int64_t c = 0; c < d; c++)
        for (int64_t m = 0; m < M; m++) Kt[c * M + m] = at(Kt0, b, j, m, c), Vt[m * d + c] = at(Vt0, b, j, m, c);
      for (int64_t t = 0; t < T; t++) {
        for (int64_t m = 0; m < M; m++) {
          const double alpha = std::exp(at(g, b, t, j, m)), sm = at(s, b, t, j, m);
          for (int64_t c = 0; c < d; c++) {
            Kt[c * M + m] = Kt[c * M + m] * alpha + at(k, b, t, j, c) * sm;
            Vt[m * d + c] = alpha * Vt[m * d + c] + sm * at(v, b, t, j, c);
          }
        }
        for (int64_t h = j * group; h < (j + 1) * group; h++) {
          for (int64_t m = 0; m < M; m++) {
            z[m] = 0.0;
            for (int64_t c = 0; c < d; c++) z[m] += Kt[c * M + m] * at(q, b, t, h, c);
          }
          const double mx = *std::max_element(z.begin(), z.end());
          double sum = 0.0;
          for (double& x : z) sum += (x = std::exp(x - mx));
          double* o = &r.out[static_cast<size_t>(((b * T + t) * H + h) * d)];
          for (int64_t m = 0; m < M; m++)
            for (int64_t e = 0; e < d; e++) o[e] += Vt[m * d + e] * z[m] / sum;
        }
      }
      for (int64_t m = 0; m < M; m++) {
        for (int64_t c = 0; c < d; c++) {
          r.Kt[static_cast<size_t>(((b * HKV + j) * M + m) * d + c)] = Kt[c * M + m];
          r.Vt[static_cast<size_t>(((b * HKV + j) * M + m) * d + c)] = Vt[m * d + c];
        }
      }
    }
  }
  return r;
}

// ---- comparison ---------------------------------------------------------------------------------------------------

// ||out - ref|| / ||ref|| through test::rel_error, the reference rounded to f32 (6e-8 relative, far below the bound).
// A non-finite output, or an all-zero reference (the comparison would prove nothing), gives +inf.
double rel_err(const Tensor& out, const std::vector<double>& ref) {
  const std::vector<float> o = out.to_f32_vector();
  std::vector<float> r(ref.size());
  double norm = 0.0;
  for (size_t i = 0; i < ref.size(); i++) r[i] = static_cast<float>(ref[i]), norm += ref[i] * ref[i];
  if (!(norm > 0.0)) return INFINITY;
  for (float x : o)
    if (!std::isfinite(x)) return INFINITY;
  return test::rel_error(o, r);
}

// The worst error over the forms of one case, for the printed summary.
struct Worst {
  double err = -1.0;
  std::string form;
  void add(double e, const std::string& f) {
    if (e > err) err = e, form = f;
  }
};

// ---- the forms of one op ------------------------------------------------------------------------------------------

// linear_recurrence (out; fq, fk, v, g; state) and slot_scores (z; q, k, s, g; state) have the same calling shape:
// four (B, T, ·, ·) inputs and a state. This wraps either so one driver runs all its forms.
using ChunkedFn =
    std::function<void(Context&, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor, int64_t)>;
using StepFn =
    std::function<void(Context&, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor)>;
struct RecurrenceOp {
  const char* name;
  ChunkedFn chunked;
  StepFn step;
};

const RecurrenceOp kLinearRecurrence{
    "linear_recurrence",
    [](Context& ctx, Tensor out, const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& g, Tensor state,
       int64_t chunk) { ops::linear_recurrence(ctx, out, a, b, c, g, state, chunk); },
    [](Context& ctx, Tensor out, const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& g, Tensor state) {
      ops::linear_recurrence_step(ctx, out, a, b, c, g, state);
    }};
const RecurrenceOp kSlotScores{
    "slot_scores",
    [](Context& ctx, Tensor out, const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& g, Tensor state,
       int64_t chunk) { ops::slot_scores(ctx, out, a, b, c, g, state, chunk); },
    [](Context& ctx, Tensor out, const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& g, Tensor state) {
      ops::slot_scores_step(ctx, out, a, b, c, g, state);
    }};

// Runs every form of `op` on `in` from a copy of `state0` and checks output and final state against `ref`:
//   chunked, chunk in {1, 16, 64, T + 5}: chunk 1 is the recurrence itself, 16 and 64 cut T = 7, 100 into a partial
//     last chunk and T = 16, 64 into whole ones, T + 5 is one chunk holding everything (pure parallel form) — so the
//     intra-chunk part, the carried state and the chunk-boundary decay are each proved against the same formula;
//   step by step (the decode path): T calls of the one-step form, the state carried by the op itself;
//   split in two calls at a point that is not a chunk multiple: prefill then continuation from the returned state.
// Prints the worst output and state errors of the case. `out_dim` is the last dimension of the output.
void check_forms(const RecurrenceOp& op, const std::array<Tensor, 4>& in, const Tensor& state0, int64_t out_dim,
                 const Reference& ref, const std::string& label) {
  Context ctx = Context::cpu();
  const int64_t B = in[0].dim(0), T = in[0].dim(1), H = in[0].dim(2);
  Worst worst_out, worst_state;
  auto record = [&](const std::string& form, const Tensor& out, const Tensor& state) {
    const double eo = rel_err(out, ref.out), es = rel_err(state, ref.state);
    EXPECT_LE(eo, kTol) << op.name << " " << label << ", " << form << ": output";
    EXPECT_LE(es, kTol) << op.name << " " << label << ", " << form << ": final state";
    worst_out.add(eo, form);
    worst_state.add(es, form);
  };

  for (int64_t chunk : {int64_t{1}, int64_t{16}, int64_t{64}, T + 5}) {
    Tensor out = Tensor::empty({B, T, H, out_dim}, DType::F32, Device::CPU), state = clone(state0);
    op.chunked(ctx, out, in[0], in[1], in[2], in[3], state, chunk);
    record("chunk " + std::to_string(chunk), out, state);
  }
  {
    Tensor out = Tensor::empty({B, T, H, out_dim}, DType::F32, Device::CPU), state = clone(state0);
    Tensor out_t = Tensor::empty({B, 1, H, out_dim}, DType::F32, Device::CPU);
    for (int64_t t = 0; t < T; t++) {
      op.step(ctx, out_t, time_slice(in[0], t, 1), time_slice(in[1], t, 1), time_slice(in[2], t, 1),
              time_slice(in[3], t, 1), state);
      time_put(out, out_t, t);
    }
    record("step", out, state);
  }
  if (T >= 2) {
    const int64_t t1 = std::max<int64_t>(1, T / 3);  // 2, 5, 21, 33 for T = 7, 16, 64, 100
    Tensor out = Tensor::empty({B, T, H, out_dim}, DType::F32, Device::CPU), state = clone(state0);
    for (auto [t0, len, chunk] : {std::array<int64_t, 3>{0, t1, 16}, std::array<int64_t, 3>{t1, T - t1, 64}}) {
      Tensor part = Tensor::empty({B, len, H, out_dim}, DType::F32, Device::CPU);
      op.chunked(ctx, part, time_slice(in[0], t0, len), time_slice(in[1], t0, len), time_slice(in[2], t0, len),
                 time_slice(in[3], t0, len), state, chunk);
      time_put(out, part, t0);
    }
    record("split at " + std::to_string(t1), out, state);
  }
  std::printf("[ %-17s ] %-34s worst rel err: out %.2e (%s), state %.2e (%s)\n", op.name, label.c_str(), worst_out.err,
              worst_out.form.c_str(), worst_state.err, worst_state.form.c_str());
}

// ---- linear_recurrence: GLA-like and HGRN2-like inputs --------------------------------------------------------------

enum class KeyMap { kGla, kHgrn2 };

struct LinearCase {
  KeyMap key;   // fk = softmax(x) (GLA) or 1 - exp(g) (HGRN2), x the raw key the gate is computed from
  int divisor;  // g = logsigmoid(x) / divisor: 16 (GLA's normalizer) or 1 (HGRN2's, strong decay)
  int64_t T, HKV, K, Vd;
  uint64_t seed;
};

std::string case_name(const LinearCase& c) {
  return std::string(c.key == KeyMap::kGla ? "GLA" : "HGRN2") + "_g" + std::to_string(c.divisor) + "_T" +
         std::to_string(c.T) + "_HKV" + std::to_string(c.HKV) + "_K" + std::to_string(c.K) + "_Vd" +
         std::to_string(c.Vd);
}

// T in {1, 7, 16, 64, 100} x HKV in {4, 2, 1} x (K, Vd) in {(16, 16), (8, 16), (16, 8)} x both key maps x both gate
// strengths; a different seed for each case.
constexpr std::array<std::array<int64_t, 2>, 3> kLinearDims{{{16, 16}, {8, 16}, {16, 8}}};
std::vector<LinearCase> linear_cases() {
  std::vector<LinearCase> cases;
  uint64_t seed = 4000;
  for (KeyMap key : {KeyMap::kGla, KeyMap::kHgrn2})
    for (int divisor : {16, 1})
      for (int64_t T : {1, 7, 16, 64, 100})
        for (int64_t HKV : {4, 2, 1})
          for (auto [K, Vd] : kLinearDims) cases.push_back({key, divisor, T, HKV, K, Vd, seed++});
  return cases;
}

class LinearRecurrenceForms : public ::testing::TestWithParam<LinearCase> {};

// Every form of linear_recurrence equals the spec's parallel form, outputs and final state, from a nonzero state.
TEST_P(LinearRecurrenceForms, AgreeWithNaiveParallelForm) {
  const LinearCase c = GetParam();
  Rng rng(c.seed);
  // fq: softmax over K of random logits, per query head (GLA/HGRN2's feature map on q).
  Tensor fq = softmax_rows(randn({kB, c.T, kH, c.K}, rng, 0.0, 2.0));
  // x ~ N(0, 2^2) is the raw key; the gate and (for GLA) the key feature map both come from it, as in §2.1.
  Tensor x = randn({kB, c.T, c.HKV, c.K}, rng, 0.0, 2.0);
  Tensor g = log_gates(x, c.divisor);
  Tensor fk = c.key == KeyMap::kGla ? softmax_rows(x) : one_minus_exp(g);
  Tensor v = randn({kB, c.T, c.HKV, c.Vd}, rng);
  Tensor S0 = randn({kB, c.HKV, c.K, c.Vd}, rng);

  const Reference ref = naive_linear_recurrence(fq, fk, v, g, S0);
  check_forms(kLinearRecurrence, {fq, fk, v, g}, S0, c.Vd, ref, case_name(c));
}

INSTANTIATE_TEST_SUITE_P(Recurrence, LinearRecurrenceForms, ::testing::ValuesIn(linear_cases()),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return case_name(info.param); });

// ---- slot_scores: GSA pass 1 ----------------------------------------------------------------------------------------

struct SlotCase {
  int64_t T, HKV, M, d;
  uint64_t seed;
};

std::string case_name(const SlotCase& c) {
  return "T" + std::to_string(c.T) + "_HKV" + std::to_string(c.HKV) + "_M" + std::to_string(c.M) + "_d" +
         std::to_string(c.d);
}

// GSA inputs (§2.3): q (B, T, H, d), k and v (B, T, HKV, d) random normal; lambda ~ N(0, 2^2) per slot,
// g = logsigmoid(lambda) / 16, s = 1 - exp(g); initial slot states Kt0 and Vt0 (B, HKV, M, d) random normal.
struct GsaInputs {
  Tensor q, k, v, g, s, Kt0, Vt0;
};
GsaInputs gsa_inputs(const SlotCase& c) {
  Rng rng(c.seed);
  GsaInputs in;
  in.q = randn({kB, c.T, kH, c.d}, rng);
  in.k = randn({kB, c.T, c.HKV, c.d}, rng);
  in.v = randn({kB, c.T, c.HKV, c.d}, rng);
  in.g = log_gates(randn({kB, c.T, c.HKV, c.M}, rng, 0.0, 2.0), 16.0);
  in.s = one_minus_exp(in.g);
  in.Kt0 = randn({kB, c.HKV, c.M, c.d}, rng);
  in.Vt0 = randn({kB, c.HKV, c.M, c.d}, rng);
  return in;
}

// T in {1, 7, 16, 64, 100} x HKV in {4, 2, 1} x (M, d) in {(4, 8), (4, 16), (8, 8), (8, 16)}.
constexpr std::array<std::array<int64_t, 2>, 4> kSlotDims{{{4, 8}, {4, 16}, {8, 8}, {8, 16}}};
std::vector<SlotCase> slot_cases(uint64_t seed) {
  std::vector<SlotCase> cases;
  for (int64_t T : {1, 7, 16, 64, 100})
    for (int64_t HKV : {4, 2, 1})
      for (auto [M, d] : kSlotDims) cases.push_back({T, HKV, M, d, seed++});
  return cases;
}

class SlotScoresForms : public ::testing::TestWithParam<SlotCase> {};

// Every form of slot_scores equals the parallel form of GSA's first pass, scores and final slot-key state.
TEST_P(SlotScoresForms, AgreeWithNaiveParallelForm) {
  const SlotCase c = GetParam();
  const GsaInputs in = gsa_inputs(c);
  const Reference ref = naive_slot_scores(in.q, in.k, in.s, in.g, in.Kt0);
  check_forms(kSlotScores, {in.q, in.k, in.s, in.g}, in.Kt0, c.M, ref, case_name(c));
}

INSTANTIATE_TEST_SUITE_P(Recurrence, SlotScoresForms, ::testing::ValuesIn(slot_cases(5000)),
                         [](const ::testing::TestParamInfo<SlotCase>& info) { return case_name(info.param); });

// ---- GSA: both passes composed ------------------------------------------------------------------------------------

class GsaComposition : public ::testing::TestWithParam<SlotCase> {};

// slot_scores -> softmax over M -> linear_recurrence(p as fq, s as fk, v, g) is GSA: the composition, chunked (chunk
// 16, so T = 100 crosses boundaries) and step by step, matches the fully naive recurrent GSA of §2.3 — output and both
// final states. This also proves the state layouts: the op's (M, d) slot-key state is the spec's Kt (d x M) transposed.
TEST_P(GsaComposition, MatchesNaiveGsa) {
  const SlotCase c = GetParam();
  const GsaInputs in = gsa_inputs(c);
  const GsaReference ref = naive_gsa(in.q, in.k, in.v, in.s, in.g, in.Kt0, in.Vt0);
  Context ctx = Context::cpu();
  Worst worst;
  auto record = [&](const std::string& form, const Tensor& o, const Tensor& Kt, const Tensor& Vt) {
    const double eo = rel_err(o, ref.out), ek = rel_err(Kt, ref.Kt), ev = rel_err(Vt, ref.Vt);
    EXPECT_LE(eo, kTol) << case_name(c) << ", " << form << ": output";
    EXPECT_LE(ek, kTol) << case_name(c) << ", " << form << ": final slot-key state";
    EXPECT_LE(ev, kTol) << case_name(c) << ", " << form << ": final slot-value state";
    worst.add(eo, form + " out");
    worst.add(ek, form + " Kt");
    worst.add(ev, form + " Vt");
  };
  {  // chunked (training / prefill)
    Tensor z = Tensor::empty({kB, c.T, kH, c.M}, DType::F32, Device::CPU);
    Tensor o = Tensor::empty({kB, c.T, kH, c.d}, DType::F32, Device::CPU);
    Tensor Kt = clone(in.Kt0), Vt = clone(in.Vt0);
    ops::slot_scores(ctx, z, in.q, in.k, in.s, in.g, Kt, 16);
    ops::linear_recurrence(ctx, o, softmax_rows(z), in.s, in.v, in.g, Vt, 16);
    record("chunk 16", o, Kt, Vt);
  }
  {  // one token at a time (decode)
    Tensor z = Tensor::empty({kB, 1, kH, c.M}, DType::F32, Device::CPU);
    Tensor o_t = Tensor::empty({kB, 1, kH, c.d}, DType::F32, Device::CPU);
    Tensor o = Tensor::empty({kB, c.T, kH, c.d}, DType::F32, Device::CPU);
    Tensor Kt = clone(in.Kt0), Vt = clone(in.Vt0);
    for (int64_t t = 0; t < c.T; t++) {
      const Tensor s_t = time_slice(in.s, t, 1), g_t = time_slice(in.g, t, 1);
      ops::slot_scores_step(ctx, z, time_slice(in.q, t, 1), time_slice(in.k, t, 1), s_t, g_t, Kt);
      ops::linear_recurrence_step(ctx, o_t, softmax_rows(z), s_t, time_slice(in.v, t, 1), g_t, Vt);
      time_put(o, o_t, t);
    }
    record("step", o, Kt, Vt);
  }
  std::printf("[ %-17s ] %-34s worst rel err %.2e (%s)\n", "gsa", case_name(c).c_str(), worst.err, worst.form.c_str());
}

std::vector<SlotCase> gsa_cases() {
  std::vector<SlotCase> cases;
  uint64_t seed = 6000;
  for (int64_t T : {1, 7, 64, 100})
    for (int64_t HKV : {4, 2, 1})
      for (auto [M, d] : {kSlotDims[0], kSlotDims[3]}) cases.push_back({T, HKV, M, d, seed++});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Recurrence, GsaComposition, ::testing::ValuesIn(gsa_cases()),
                         [](const ::testing::TestParamInfo<SlotCase>& info) { return case_name(info.param); });

// ---- strong decay -------------------------------------------------------------------------------------------------

// Log-gates for T = 100 where even channels decay at about -30 per token (x ~ N(-30, 1), so the exponent sums reach
// about -3000 and every exp of them underflows: to 0 in the fp64 reference and in the op's f32) and odd channels keep
// GLA-like long memory (logsigmoid(N(0, 4)) / 16), so the outputs are not trivially the current token. Returns the
// gates and checks that the sums really go that low.
Tensor strong_gates(Shape shape, Rng& rng) {
  Tensor x = randn(shape, rng, 0.0, 2.0);
  const int64_t n = shape[3];
  Tensor g = log_gates(x, 16.0);
  for (int64_t i = 0; i < g.numel(); i++)
    if ((i % n) % 2 == 0) g.ptr<float>()[i] = static_cast<float>(log_sigmoid(-30.0 + rng.normal()));
  double G = 0.0;  // channel 0 of (b, head) = (0, 0)
  for (int64_t t = 0; t < shape[1]; t++) G += at(g, 0, t, 0, 0);
  EXPECT_LT(G, -2800.0) << "the strong-decay gates do not reach the intended exponent sums";
  return g;
}

// Exponent sums of -3000 give no NaN or inf in any form, and the forms still match the reference (whose terms
// underflow to exactly 0) — the op must work in log space (exp(G_i - G_s)), never divide by a vanished product.
TEST(RecurrenceStrongDecay, LinearRecurrenceStaysFinite) {
  Rng rng(7001);
  const int64_t T = 100, HKV = 2, K = 16, Vd = 16;
  Tensor fq = softmax_rows(randn({kB, T, kH, K}, rng, 0.0, 2.0));
  Tensor g = strong_gates({kB, T, HKV, K}, rng);
  Tensor fk = one_minus_exp(g);  // HGRN2-like: the key slot is ~1 on the strongly decaying channels
  Tensor v = randn({kB, T, HKV, Vd}, rng);
  Tensor S0 = randn({kB, HKV, K, Vd}, rng);
  const Reference ref = naive_linear_recurrence(fq, fk, v, g, S0);
  check_forms(kLinearRecurrence, {fq, fk, v, g}, S0, Vd, ref, "strong decay T100_HKV2_K16_Vd16");
}

TEST(RecurrenceStrongDecay, SlotScoresStaysFinite) {
  Rng rng(7002);
  const int64_t T = 100, HKV = 2, M = 8, d = 16;
  Tensor q = randn({kB, T, kH, d}, rng), k = randn({kB, T, HKV, d}, rng);
  Tensor g = strong_gates({kB, T, HKV, M}, rng);
  Tensor s = one_minus_exp(g);
  Tensor Kt0 = randn({kB, HKV, M, d}, rng);
  const Reference ref = naive_slot_scores(q, k, s, g, Kt0);
  check_forms(kSlotScores, {q, k, s, g}, Kt0, M, ref, "strong decay T100_HKV2_M8_d16");
}

// ---- validation -----------------------------------------------------------------------------------------------------

Tensor zeros(Shape s) {
  return Tensor::zeros(s, DType::F32, Device::CPU);
}

// A wrong shape is a liger::Error naming the op and the tensor, never a silent out-of-bounds read.
TEST(RecurrenceValidation, LinearRecurrenceRejectsBadShapes) {
  Context ctx = Context::cpu();
  const int64_t B = 2, T = 7, H = 4, HKV = 2, K = 8, Vd = 16;
  Tensor out = zeros({B, T, H, Vd}), fq = zeros({B, T, H, K}), fk = zeros({B, T, HKV, K}), v = zeros({B, T, HKV, Vd});
  Tensor g = zeros({B, T, HKV, K}), state = zeros({B, HKV, K, Vd});
  ops::linear_recurrence(ctx, out, fq, fk, v, g, state);  // the consistent shapes pass

  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence(ctx, out, fq, zeros({B, T - 1, HKV, K}), v, g, state);
      },
      {"linear_recurrence", "fk", "(2, 6, 2, 8)", "(2, 7, 2, 8)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence(ctx, out, fq, fk, v, g, zeros({B, HKV, Vd, K}));
      },
      {"linear_recurrence", "state", "(2, 2, 16, 8)", "(2, 2, 8, 16)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence(ctx, out, fq, fk, v, zeros({B, T, HKV, Vd}), state);
      },
      {"linear_recurrence", "g has shape"}));
  EXPECT_TRUE(throws_error(  // 4 query heads over 3 KV heads
      [&] {
        ops::linear_recurrence(ctx, out, fq, zeros({B, T, 3, K}), zeros({B, T, 3, Vd}), zeros({B, T, 3, K}),
                               zeros({B, 3, K, Vd}));
      },
      {"linear_recurrence", "4 query heads", "3 KV heads"}));
  EXPECT_TRUE(
      throws_error([&] { ops::linear_recurrence(ctx, out, fq, fk, v, g, state, 0); }, {"linear_recurrence", "chunk"}));
  EXPECT_TRUE(throws_error(  // the one-step form with T = 2
      [&] {
        ops::linear_recurrence_step(ctx, zeros({B, 2, H, Vd}), zeros({B, 2, H, K}), zeros({B, 2, HKV, K}),
                                    zeros({B, 2, HKV, Vd}), zeros({B, 2, HKV, K}), state);
      },
      {"linear_recurrence_step", "T = 2"}));
  EXPECT_TRUE(throws_error(  // the one-step form with a wrong-shaped state
      [&] {
        ops::linear_recurrence_step(ctx, zeros({B, 1, H, Vd}), zeros({B, 1, H, K}), zeros({B, 1, HKV, K}),
                                    zeros({B, 1, HKV, Vd}), zeros({B, 1, HKV, K}), zeros({B, H, K, Vd}));
      },
      {"linear_recurrence_step", "state"}));
  EXPECT_TRUE(throws_error(  // an f64 state with f32 inputs would be read with the wrong element size
      [&] {
        ops::linear_recurrence(ctx, out, fq, fk, v, g, Tensor::zeros({B, HKV, K, Vd}, DType::F64, Device::CPU));
      },
      {"linear_recurrence", "f32", "f64"}));
}

TEST(RecurrenceValidation, SlotScoresRejectsBadShapes) {
  Context ctx = Context::cpu();
  const int64_t B = 2, T = 7, H = 4, HKV = 2, M = 8, d = 16;
  Tensor z = zeros({B, T, H, M}), q = zeros({B, T, H, d}), k = zeros({B, T, HKV, d}), s = zeros({B, T, HKV, M});
  Tensor g = zeros({B, T, HKV, M}), state = zeros({B, HKV, M, d});
  ops::slot_scores(ctx, z, q, k, s, g, state);  // the consistent shapes pass

  EXPECT_TRUE(throws_error(
      [&] {
        ops::slot_scores(ctx, z, q, k, zeros({B, T + 1, HKV, M}), g, state);
      },
      {"slot_scores", "s has shape", "(2, 8, 2, 8)", "(2, 7, 2, 8)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::slot_scores(ctx, z, q, k, s, g, zeros({B, HKV, d, M}));
      },
      {"slot_scores", "state", "(2, 2, 16, 8)", "(2, 2, 8, 16)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::slot_scores(ctx, zeros({B, T, H, d}), q, k, s, g, state);
      },
      {"slot_scores", "z has shape"}));
  EXPECT_TRUE(throws_error(  // 3 query heads over 2 KV heads
      [&] {
        ops::slot_scores(ctx, zeros({B, T, 3, M}), zeros({B, T, 3, d}), k, s, g, state);
      },
      {"slot_scores", "3 query heads", "2 KV heads"}));
  EXPECT_TRUE(throws_error(  // the one-step form with T = 2
      [&] {
        ops::slot_scores_step(ctx, zeros({B, 2, H, M}), zeros({B, 2, H, d}), zeros({B, 2, HKV, d}),
                              zeros({B, 2, HKV, M}), zeros({B, 2, HKV, M}), state);
      },
      {"slot_scores_step", "T = 2"}));
  EXPECT_TRUE(throws_error(  // an f64 state with f32 inputs would be read with the wrong element size
      [&] {
        ops::slot_scores(ctx, z, q, k, s, g, Tensor::zeros({B, HKV, M, d}, DType::F64, Device::CPU));
      },
      {"slot_scores", "f32", "f64"}));
}

}  // namespace
}  // namespace liger
