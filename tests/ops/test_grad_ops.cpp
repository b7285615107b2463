// Gradient checks of the training path's ops (rmsnorm, matmul, swiglu, rope, attention, softmax, the fused LM head +
// cross-entropy): every backward against central finite differences of its forward, in fp64 (the CPU ops run in f64
// for this). Loss = sum(out * R) with a fresh random R, so dout = R; each input's analytic gradient must match
// (L(x + h e_i) - L(x - h e_i)) / 2h for every element: ||analytic - fd|| / ||fd|| <= 1e-6 (the bound; with
// h = 1e-5 in fp64 the difference quotient is accurate to ~1e-10). Then the f32 instantiation of every op against the
// f64 one on the same (f32-rounded) inputs: <= 1e-5 relative (short fp32 reductions are good to ~1e-7), and the
// validation errors of the new dispatchers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/liger_gates.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::dot64;
using test::fd_check;
using test::throws_error;

constexpr double kFdTol = 1e-6;   // fp64 analytic against fp64 finite differences
constexpr double kF32Tol = 1e-5;  // the f32 instantiation against the f64 one

// ---- helpers (fd_check and dot64 live in tests/common/test_util.h) -----------------------------------------------------

Tensor randn64(Shape s, Rng& rng, double scale = 1.0) {
  Tensor t = Tensor::empty(s, DType::F64, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<double>()[i] = scale * rng.normal();
  return t;
}

Tensor empty64(Shape s) {
  return Tensor::empty(s, DType::F64, Device::CPU);
}
Tensor clone(const Tensor& t) {
  return t.to(Device::CPU);
}
Tensor to32(const Tensor& t) {
  return t.to(Device::CPU, DType::F32);
}
// The f64 tensor of the values an f32 tensor can hold: both instantiations then see identical inputs.
Tensor round32(const Tensor& t) {
  return to32(t).to(Device::CPU, DType::F64);
}


// a - b, element-wise (f64).
Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor d = empty64(a.shape());
  for (int64_t i = 0; i < a.numel(); i++) d.ptr<double>()[i] = a.ptr<double>()[i] - b.ptr<double>()[i];
  return d;
}


// fd_check, printed and held to kFdTol.
void expect_fd(const std::string& what, Tensor x, const Tensor& analytic, const std::function<double()>& loss,
               double h = 1e-5) {
  const double e = fd_check(x, analytic, loss, h);
  std::printf("  fd %-52s %.2e\n", what.c_str(), e);
  EXPECT_LE(e, kFdTol) << what;
}

// ||a - b|| / ||b|| over all elements (a and b any float dtype; b must not be all zeros), printing the worst element.
double rel_diff(const Tensor& a, const Tensor& b, const std::string& what) {
  Tensor ta = a.to(Device::CPU, DType::F64), tb = b.to(Device::CPU, DType::F64);
  EXPECT_EQ(ta.numel(), tb.numel()) << what;
  double num = 0, den = 0, worst = -1;
  int64_t wi = 0;
  for (int64_t i = 0; i < tb.numel() && i < ta.numel(); i++) {
    const double d = ta.ptr<double>()[i] - tb.ptr<double>()[i];
    if (std::isnan(d)) return INFINITY;
    num += d * d;
    den += tb.ptr<double>()[i] * tb.ptr<double>()[i];
    if (std::fabs(d) > worst) worst = std::fabs(d), wi = i;
  }
  EXPECT_GT(den, 0) << what << ": the reference is all zeros";
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
  std::printf("  %-55s %.2e (worst element %lld, |diff| %.2e)\n", what.c_str(), rel, static_cast<long long>(wi), worst);
  return rel;
}

// The f32 result against the f64 one.
void expect_agree(const std::string& what, const Tensor& out32, const Tensor& out64) {
  EXPECT_LE(rel_diff(out32, out64, "f32 vs f64 " + what), kF32Tol) << what;
}

// A tensor tagged as CUDA memory (never dereferenced: the device check rejects it first).
Tensor fake_cuda(const Tensor& host) {
  return Tensor(host.data(), host.shape(), host.dtype(), Device::CUDA);
}

ops::RopeConfig default_rope(int64_t hs) {
  ops::RopeConfig c;
  c.head_dim = hs;
  return c;
}

ops::RopeConfig llama3_rope(int64_t hs) {
  ops::RopeConfig c;
  c.head_dim = hs, c.theta = 500000.0, c.type = ops::RopeConfig::Type::Llama3;
  c.factor = 8.0, c.low_freq_factor = 1.0, c.high_freq_factor = 4.0, c.original_max_position = 64;
  return c;
}

Tensor inv_freq_tensor(const ops::RopeConfig& c) {
  std::vector<float> inv = ops::rope_inv_freq(c);
  return Tensor::from_f32({static_cast<int64_t>(inv.size())}, inv);
}

// ---- rmsnorm
// ---------------------------------------------------------------------------------------------------------

TEST(GradOps, RmsNormAccumulates) {
  Context ctx = Context::cpu();
  uint64_t seed = 2000;
  // At scale 1e-2 the eps (1e-5) is ~10% of the mean square, and x / sqrt(x^2 + eps) bends on the scale
  // sqrt(eps) ~ 3e-3: the difference step shrinks with the inputs (h = 1e-5 leaves a truncation error ~4e-6).
  // D = 1 only at small scales: at scale 1 its output is ~sign(x) w, with a gradient ~eps / |x|^3 at the noise floor
  // of the differences.
  struct Case {
    int64_t D;
    double scale;
  };
  for (Case c : {Case{1, 1e-2}, Case{1, 3e-3}, Case{5, 1.0}, Case{5, 1e-2}, Case{8, 1.0}, Case{8, 1e-2}}) {
    Rng rng(seed++);
    const int64_t N = 3;
    const float eps = 1e-5f;
    Tensor x = randn64({N, c.D}, rng, c.scale), w = randn64({c.D}, rng), R = randn64({N, c.D}, rng);
    auto loss = [&] {
      Tensor out = empty64({N, c.D});
      ops::rmsnorm(ctx, out, x, w, eps);
      return test::dot64(out, R);
    };
    // dx starts non-zero: the result must be the old value plus the gradient.
    Tensor dx0 = randn64({N, c.D}, rng), dx = clone(dx0);
    ops::rmsnorm_backward(ctx, dx, R, x, w, eps);
    expect_fd(strfmt("rmsnorm D=%lld scale %g (dx - dx0)", static_cast<long long>(c.D), c.scale), x, sub(dx, dx0), loss,
              1e-5 * c.scale);
  }
}

// ---- matmul
// ----------------------------------------------------------------------------------------------------------

TEST(GradOps, MatmulInputAndWeight) {
  Context ctx = Context::cpu();
  uint64_t seed = 2100;
  struct Dims {
    int64_t M, K, N;
  };
  for (Dims d : {Dims{3, 4, 5}, Dims{1, 3, 2}, Dims{4, 1, 3}, Dims{5, 6, 1}}) {
    Rng rng(seed++);
    Tensor x = randn64({d.M, d.K}, rng), w = randn64({d.N, d.K}, rng), R = randn64({d.M, d.N}, rng);
    auto loss = [&] {
      Tensor out = empty64({d.M, d.N});
      ops::matmul(ctx, out, x, w);
      return test::dot64(out, R);
    };
    const std::string dims = strfmt("M=%lld K=%lld N=%lld", static_cast<long long>(d.M), static_cast<long long>(d.K),
                                    static_cast<long long>(d.N));
    for (bool accumulate : {false, true}) {
      // Garbage that `=` must overwrite, or a start value that `+=` must keep.
      Tensor dx0 = randn64({d.M, d.K}, rng), dx = clone(dx0);
      ops::matmul_backward_input(ctx, dx, R, w, accumulate);
      expect_fd("matmul dx " + dims + (accumulate ? " (+=, dx - dx0)" : " (=)"), x, accumulate ? sub(dx, dx0) : dx,
                loss);
      Tensor dw0 = randn64({d.N, d.K}, rng), dw = clone(dw0);
      ops::matmul_weight_grad(ctx, dw, R, x, accumulate);
      expect_fd("matmul dw " + dims + (accumulate ? " (+=, dw - dw0)" : " (=)"), w, accumulate ? sub(dw, dw0) : dw,
                loss);
    }
  }
}

// No rows (M = 0): the weight gradient is 0 (`=`) or unchanged (`+=`); nothing is read.
TEST(GradOps, MatmulWeightGradOfNoRows) {
  Context ctx = Context::cpu();
  Rng rng(2150);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor dout = Tensor::empty({0, 3}, dt, Device::CPU), x = Tensor::empty({0, 4}, dt, Device::CPU);
    Tensor dw0 = randn64({3, 4}, rng).to(Device::CPU, dt), dw = clone(dw0);
    ops::matmul_weight_grad(ctx, dw, dout, x, true);
    EXPECT_EQ(dw.to_f32_vector(), dw0.to_f32_vector());
    ops::matmul_weight_grad(ctx, dw, dout, x, false);
    EXPECT_EQ(dw.to_f32_vector(), std::vector<float>(12, 0.0f));
  }
}

// ---- swiglu
// ----------------------------------------------------------------------------------------------------------

TEST(GradOps, Swiglu) {
  Context ctx = Context::cpu();
  Rng rng(2200);
  const int64_t N = 3, F = 7;
  Tensor gate = randn64({N, F}, rng, 3.0), up = randn64({N, F}, rng), R = randn64({N, F}, rng);
  gate.ptr<double>()[0] = -30.0, gate.ptr<double>()[1] = 30.0, gate.ptr<double>()[2] = 0.0;  // both tails and 0
  auto loss = [&] {
    Tensor out = empty64({N, F});
    ops::swiglu(ctx, out, gate, up);
    return test::dot64(out, R);
  };
  Tensor dgate = randn64({N, F}, rng), dup = randn64({N, F}, rng);  // garbage: both are `=`
  ops::swiglu_backward(ctx, dgate, dup, R, gate, up);
  expect_fd("swiglu dgate", gate, dgate, loss);
  expect_fd("swiglu dup", up, dup, loss);

  // dgate may alias gate and dup may alias up.
  Tensor g2 = clone(gate), u2 = clone(up);
  ops::swiglu_backward(ctx, g2, u2, R, g2, u2);
  EXPECT_EQ(g2.to_f32_vector(), dgate.to_f32_vector());
  EXPECT_EQ(u2.to_f32_vector(), dup.to_f32_vector());
}

// ---- rope
// ------------------------------------------------------------------------------------------------------------

TEST(GradOps, Rope) {
  Context ctx = Context::cpu();
  uint64_t seed = 2300;
  for (const ops::RopeConfig& c : {default_rope(4), default_rope(8), llama3_rope(16)}) {
    Rng rng(seed++);
    const int64_t N = 5, NH = 2, HS = c.head_dim;
    const std::string name = strfmt("%s HS=%lld", c.type == ops::RopeConfig::Type::Llama3 ? "llama3" : "default",
                                    static_cast<long long>(HS));
    Tensor inv = inv_freq_tensor(c);
    Tensor pos = Tensor::from_i32({N}, {0, 3, 17, 1000, 3});
    Tensor x = randn64({N, NH, HS}, rng), R = randn64({N, NH, HS}, rng);
    auto loss = [&] {
      Tensor y = clone(x);
      ops::rope(ctx, y, pos, inv);
      return test::dot64(y, R);
    };
    Tensor dx = clone(R);
    ops::rope_backward(ctx, dx, pos, inv);
    expect_fd("rope " + name, x, dx, loss);
    // The backward is the inverse rotation: rope_backward(rope(x)) = x.
    Tensor y = clone(x);
    ops::rope(ctx, y, pos, inv);
    ops::rope_backward(ctx, y, pos, inv);
    EXPECT_LE(rel_diff(y, x, "rope_backward(rope(x)) vs x, " + name), 1e-14);
  }
}

// ---- attention
// -------------------------------------------------------------------------------------------------------

TEST(GradOps, Attention) {
  Context ctx = Context::cpu();
  uint64_t seed = 2400;
  struct Case {
    int64_t B, T, H, HKV, HS, window;
  };
  for (Case c : {Case{2, 9, 2, 2, 4, 0}, Case{2, 9, 2, 2, 6, 3}, Case{2, 9, 4, 2, 8, 0}, Case{2, 9, 4, 2, 5, 3},
                 Case{2, 9, 2, 1, 7, 3}, Case{1, 1, 2, 1, 4, 0}, Case{2, 5, 2, 1, 4, 12}}) {
    Rng rng(seed++);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.HS)));
    Tensor q = randn64({c.B, c.T, c.H, c.HS}, rng), k = randn64({c.B, c.T, c.HKV, c.HS}, rng);
    Tensor v = randn64({c.B, c.T, c.HKV, c.HS}, rng), R = randn64({c.B, c.T, c.H, c.HS}, rng);
    auto loss = [&] {
      Tensor out = empty64(q.shape());
      ops::attention(ctx, out, q, k, v, 0, c.T, scale, c.window);
      return test::dot64(out, R);
    };
    Tensor dq = randn64(q.shape(), rng), dk = randn64(k.shape(), rng), dv = randn64(v.shape(), rng);  // all `=`
    ops::attention_backward(ctx, dq, dk, dv, R, q, k, v, scale, c.window);
    const std::string what =
        strfmt("attention B=%lld T=%lld H=%lld HKV=%lld HS=%lld window=%lld", static_cast<long long>(c.B),
               static_cast<long long>(c.T), static_cast<long long>(c.H), static_cast<long long>(c.HKV),
               static_cast<long long>(c.HS), static_cast<long long>(c.window));
    if (c.T > 1) expect_fd(what + " dq", q, dq, loss);  // T = 1: one key, softmax = 1, dq = dk = 0 exactly
    if (c.T > 1) expect_fd(what + " dk", k, dk, loss);
    expect_fd(what + " dv", v, dv, loss);
    if (c.T == 1) {
      EXPECT_EQ(dq.to_f32_vector(), std::vector<float>(static_cast<size_t>(dq.numel()), 0.0f));
      EXPECT_EQ(dk.to_f32_vector(), std::vector<float>(static_cast<size_t>(dk.numel()), 0.0f));
    }
  }
}

// ---- softmax
// ---------------------------------------------------------------------------------------------------------

TEST(GradOps, Softmax) {
  Context ctx = Context::cpu();
  Rng rng(2500);
  for (int64_t V : {1, 2, 9}) {
    const int64_t N = 3;
    Tensor x = randn64({N, V}, rng, 2.0), R = randn64({N, V}, rng);
    auto loss = [&] {
      Tensor y = empty64({N, V});
      ops::softmax(ctx, y, x);
      return test::dot64(y, R);
    };
    Tensor y = empty64({N, V}), dx = randn64({N, V}, rng);
    ops::softmax(ctx, y, x);
    ops::softmax_backward(ctx, dx, R, y);
    if (V == 1) {  // softmax of one element is 1 whatever x is: a zero gradient
      EXPECT_EQ(dx.to_f32_vector(), std::vector<float>(3, 0.0f));
      continue;
    }
    expect_fd(strfmt("softmax V=%lld", static_cast<long long>(V)), x, dx, loss);
    // dx may alias dy.
    Tensor d2 = clone(R);
    ops::softmax_backward(ctx, d2, d2, y);
    EXPECT_EQ(d2.to_f32_vector(), dx.to_f32_vector());
  }
}

// ---- the fused LM head + cross-entropy
// -------------------------------------------------------------------------------

// losses (N) = -log softmax(h w^T)[target] in fp64, written out directly (the whole logits at once); 0 for ignored.
std::vector<double> cross_entropy_ref(const Tensor& h, const Tensor& w, const std::vector<int32_t>& targets) {
  const int64_t N = h.dim(0), D = h.dim(1), V = w.dim(0);
  std::vector<double> out;
  for (int64_t n = 0; n < N; n++) {
    if (targets[static_cast<size_t>(n)] == ops::kIgnoreTarget) {
      out.push_back(0.0);
      continue;
    }
    std::vector<double> logits(static_cast<size_t>(V));
    double mx = -INFINITY;
    for (int64_t c = 0; c < V; c++) {
      double s = 0;
      for (int64_t d = 0; d < D; d++) s += h.ptr<double>()[n * D + d] * w.ptr<double>()[c * D + d];
      logits[static_cast<size_t>(c)] = s;
      mx = std::max(mx, s);
    }
    double z = 0;
    for (double l : logits) z += std::exp(l - mx);
    out.push_back(mx + std::log(z) - logits[static_cast<size_t>(targets[static_cast<size_t>(n)])]);
  }
  return out;
}

TEST(GradOps, LmHeadCrossEntropy) {
  Context ctx = Context::cpu();
  Rng rng(2600);
  const int64_t N = 7, D = 5, V = 11;
  const std::vector<int32_t> tv = {3, ops::kIgnoreTarget, 0, 10, ops::kIgnoreTarget, 7, 3};
  Tensor targets = Tensor::from_i32({N}, tv);
  const float grad_scale = 1.0f / 5.0f;  // a mean over the 5 supervised tokens
  Tensor h = randn64({N, D}, rng), w = randn64({V, D}, rng, 0.7);
  for (int64_t block : {3, 2}) {  // blocks smaller than N, not dividing it
    auto loss = [&] {             // the forward alone (dh undefined), as evaluation uses it
      Tensor losses = empty64({N});
      ops::lm_head_cross_entropy(ctx, losses, Tensor(), h, w, targets, grad_scale, block);
      double s = 0;
      for (int64_t n = 0; n < N; n++) s += losses.ptr<double>()[n];
      return grad_scale * s;
    };
    Tensor losses = randn64({N}, rng), dh = randn64({N, D}, rng);  // garbage: both `=`
    ops::lm_head_cross_entropy(ctx, losses, dh, h, w, targets, grad_scale, block);
    expect_fd(strfmt("lm_head_cross_entropy dh, block_rows %lld", static_cast<long long>(block)), h, dh, loss);
    // The losses against the direct fp64 log-softmax; ignored rows: loss 0 and dh 0 exactly.
    const std::vector<double> ref = cross_entropy_ref(h, w, tv);
    Tensor ref_t = empty64({N});
    for (int64_t n = 0; n < N; n++) ref_t.ptr<double>()[n] = ref[static_cast<size_t>(n)];
    EXPECT_LE(rel_diff(losses, ref_t,
                       strfmt("cross-entropy losses vs fp64 log-softmax, block %lld", static_cast<long long>(block))),
              1e-13);
    for (int64_t n : {1, 4}) {
      EXPECT_EQ(losses.ptr<double>()[n], 0.0);
      for (int64_t d = 0; d < D; d++) EXPECT_EQ(dh.ptr<double>()[n * D + d], 0.0) << "row " << n;
    }
  }
}

// The blocking changes nothing but the order of work: block_rows 1, 3, N and more than N give the same losses and dh
// (to rounding: BLAS may choose another kernel for another block height), with and without dh.
TEST(GradOps, LmHeadCrossEntropyBlockingIsInvisible) {
  Context ctx = Context::cpu();
  Rng rng(2700);
  const int64_t N = 10, D = 6, V = 13;
  std::vector<int32_t> tv;
  for (int64_t n = 0; n < N; n++)
    tv.push_back(n % 4 == 1 ? ops::kIgnoreTarget : static_cast<int32_t>(rng.next_u64() % V));
  Tensor targets = Tensor::from_i32({N}, tv);
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor h = randn64({N, D}, rng).to(Device::CPU, dt), w = randn64({V, D}, rng).to(Device::CPU, dt);
    Tensor l0 = Tensor::empty({N}, dt, Device::CPU), dh0 = Tensor::empty({N, D}, dt, Device::CPU);
    ops::lm_head_cross_entropy(ctx, l0, dh0, h, w, targets, 0.25f, N);
    for (int64_t block : {int64_t{1}, int64_t{3}, N, int64_t{256}}) {
      Tensor l = Tensor::empty({N}, dt, Device::CPU), dh = Tensor::empty({N, D}, dt, Device::CPU);
      ops::lm_head_cross_entropy(ctx, l, dh, h, w, targets, 0.25f, block);
      const double tol = dt == DType::F64 ? 1e-14 : 1e-6;
      const std::string what = strfmt("%s block_rows %lld vs %lld:", dtype_name(dt), static_cast<long long>(block),
                                      static_cast<long long>(N));
      EXPECT_LE(rel_diff(l, l0, what + " losses"), tol);
      EXPECT_LE(rel_diff(dh, dh0, what + " dh"), tol);
      Tensor le = Tensor::empty({N}, dt, Device::CPU);  // forward only
      ops::lm_head_cross_entropy(ctx, le, Tensor(), h, w, targets, 0.25f, block);
      EXPECT_EQ(le.to_f32_vector(), l.to_f32_vector());
    }
  }
}

TEST(GradOps, LmHeadCrossEntropyBadTargets) {
  Context ctx = Context::cpu();
  Rng rng(2800);
  Tensor h = randn64({4, 3}, rng), w = randn64({5, 3}, rng), losses = randn64({4}, rng), dh = randn64({4, 3}, rng);
  const std::vector<float> l0 = losses.to_f32_vector(), dh0 = dh.to_f32_vector();
  EXPECT_TRUE(throws_error(
      [&] {
        ops::lm_head_cross_entropy(ctx, losses, dh, h, w, Tensor::from_i32({4}, {0, 4, 1, 5}), 1.f, 2);
      },
      {"lm_head_cross_entropy", "target 5", "row 3", "[0, 5)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::lm_head_cross_entropy(ctx, losses, dh, h, w, Tensor::from_i32({4}, {0, -1, 1, 2}), 1.f, 2);
      },
      {"target -1", "row 1"}));
  // Nothing was written before the error.
  EXPECT_EQ(losses.to_f32_vector(), l0);
  EXPECT_EQ(dh.to_f32_vector(), dh0);
}

// ---- the f32 instantiation against the f64 one
// -----------------------------------------------------------------------

// The Liger gates for the three variants' shapes: GLA (per 1, no write weights), HGRN2 (per 1, fk = 1 - alpha),
// GSA (HS / M channels pooled per slot, with fk). Loss = sum(g * Rg) + sum(fk * Rf).
TEST(GradOps, LigerGates) {
  Context ctx = Context::cpu();
  Rng rng(77);
  struct Case {
    const char* label;
    int64_t K;
    bool fk;
    float norm;
  };
  const int64_t N = 5, HKV = 2, HS = 8;
  for (const Case& c : {Case{"gla", HS, false, 16.0f}, Case{"hgrn2", HS, true, 1.0f}, Case{"gsa M=2", 2, true, 16.0f}}) {
    Tensor s = randn64({N, HKV, HS}, rng, 3.0);  // wide enough to reach both branches of logsigmoid and sigmoid
    Tensor rg = randn64({N, HKV, c.K}, rng), rf = randn64({N, HKV, c.K}, rng);
    auto loss = [&] {
      Tensor g = empty64({N, HKV, c.K}), fk = c.fk ? empty64({N, HKV, c.K}) : Tensor();
      ops::liger_gates(ctx, g, fk, s, c.norm);
      return dot64(g, rg) + (c.fk ? dot64(fk, rf) : 0.0);
    };
    Tensor g = empty64({N, HKV, c.K}), fk = c.fk ? empty64({N, HKV, c.K}) : Tensor();
    ops::liger_gates(ctx, g, fk, s, c.norm);
    for (int64_t i = 0; i < g.numel(); i++) {  // log-gates are <= 0 and fk = 1 - exp(g)
      ASSERT_LE(g.ptr<double>()[i], 0.0);
      if (c.fk) ASSERT_NEAR(fk.ptr<double>()[i], 1.0 - std::exp(g.ptr<double>()[i]), 1e-15);
    }
    Tensor ds = empty64(s.shape());
    ops::liger_gates_backward(ctx, ds, rg, c.fk ? rf : Tensor(), s, g, c.norm);
    const double e = fd_check(s, ds, loss);
    std::printf("  liger_gates %-8s ds rel error %.2e\n", c.label, e);
    EXPECT_LE(e, kFdTol) << c.label;
  }
}

TEST(GradOps, GroupMean) {
  Context ctx = Context::cpu();
  Rng rng(78);
  const int64_t N = 3, H = 6, HKV = 2, HS = 5;
  Tensor x = randn64({N, H, HS}, rng), r = randn64({N, HKV, HS}, rng);
  auto loss = [&] {
    Tensor out = empty64({N, HKV, HS});
    ops::group_mean(ctx, out, x);
    return dot64(out, r);
  };
  Tensor out = empty64({N, HKV, HS});
  ops::group_mean(ctx, out, x);
  // head 1 is in group 0 (heads 0..2): out[0, 0, c] = mean of x[0, 0..2, c]
  EXPECT_NEAR(out.ptr<double>()[2], (x.ptr<double>()[2] + x.ptr<double>()[HS + 2] + x.ptr<double>()[2 * HS + 2]) / 3,
              1e-15);
  Tensor dx = randn64(x.shape(), rng), dx0 = clone(dx);
  ops::group_mean_backward(ctx, dx, r);  // += : subtract the starting value
  const double e = fd_check(x, sub(dx, dx0), loss);
  std::printf("  group_mean dx rel error %.2e\n", e);
  EXPECT_LE(e, kFdTol);
}

TEST(GradOpsF32, RmsNorm) {
  Context ctx = Context::cpu();
  Rng rng(3000);
  const int64_t N = 6, D = 67;
  Tensor x = round32(randn64({N, D}, rng)), w = round32(randn64({D}, rng)), R = round32(randn64({N, D}, rng));
  Tensor dx0 = round32(randn64({N, D}, rng));
  Tensor o64 = empty64({N, D}), o32 = to32(o64), dx64 = clone(dx0), dx32 = to32(dx0);
  ops::rmsnorm(ctx, o64, x, w, 1e-5f);
  ops::rmsnorm(ctx, o32, to32(x), to32(w), 1e-5f);
  expect_agree("rmsnorm", o32, o64);
  ops::rmsnorm_backward(ctx, dx64, R, x, w, 1e-5f);
  ops::rmsnorm_backward(ctx, dx32, to32(R), to32(x), to32(w), 1e-5f);
  expect_agree("rmsnorm_backward", sub(dx32.to(Device::CPU, DType::F64), dx0), sub(dx64, dx0));
}

TEST(GradOpsF32, Matmul) {
  Context ctx = Context::cpu();
  Rng rng(3100);
  const int64_t M = 13, K = 37, N = 23;
  Tensor x = round32(randn64({M, K}, rng)), w = round32(randn64({N, K}, rng)), b = round32(randn64({N}, rng));
  Tensor R = round32(randn64({M, N}, rng));
  Tensor o64 = empty64({M, N}), o32 = to32(o64);
  ops::matmul(ctx, o64, x, w, &b);
  Tensor b32 = to32(b);
  ops::matmul(ctx, o32, to32(x), to32(w), &b32);
  expect_agree("matmul", o32, o64);
  for (bool acc : {false, true}) {
    Tensor dx0 = round32(randn64({M, K}, rng)), dx64 = clone(dx0), dx32 = to32(dx0);
    ops::matmul_backward_input(ctx, dx64, R, w, acc);
    ops::matmul_backward_input(ctx, dx32, to32(R), to32(w), acc);
    expect_agree(acc ? "matmul_backward_input +=" : "matmul_backward_input =", dx32, dx64);
    Tensor dw0 = round32(randn64({N, K}, rng)), dw64 = clone(dw0), dw32 = to32(dw0);
    ops::matmul_weight_grad(ctx, dw64, R, x, acc);
    ops::matmul_weight_grad(ctx, dw32, to32(R), to32(x), acc);
    expect_agree(acc ? "matmul_weight_grad +=" : "matmul_weight_grad =", dw32, dw64);
  }
}

TEST(GradOpsF32, SwigluAddEmbedding) {
  Context ctx = Context::cpu();
  Rng rng(3200);
  const int64_t N = 9, F = 33;
  Tensor g = round32(randn64({N, F}, rng, 3.0)), u = round32(randn64({N, F}, rng)), R = round32(randn64({N, F}, rng));
  Tensor o64 = empty64({N, F}), o32 = to32(o64);
  ops::swiglu(ctx, o64, g, u);
  ops::swiglu(ctx, o32, to32(g), to32(u));
  expect_agree("swiglu", o32, o64);
  Tensor dg64 = empty64({N, F}), du64 = empty64({N, F}), dg32 = to32(dg64), du32 = to32(du64);
  ops::swiglu_backward(ctx, dg64, du64, R, g, u);
  ops::swiglu_backward(ctx, dg32, du32, to32(R), to32(g), to32(u));
  expect_agree("swiglu_backward dgate", dg32, dg64);
  expect_agree("swiglu_backward dup", du32, du64);

  ops::add(ctx, o64, g, u);
  ops::add(ctx, o32, to32(g), to32(u));
  expect_agree("add", o32, o64);

  Tensor table = round32(randn64({N, F}, rng)), ids = Tensor::from_i32({4}, {3, 0, 8, 3});
  Tensor e64 = empty64({4, F}), e32 = to32(e64);
  ops::embedding(ctx, e64, ids, table);
  ops::embedding(ctx, e32, ids, to32(table));
  EXPECT_EQ(e32.to(Device::CPU, DType::F64).to_f32_vector(), e64.to_f32_vector());  // a lookup is exact
  EXPECT_EQ(e64.ptr<double>()[F + 5], table.ptr<double>()[5]);
}

TEST(GradOpsF32, Rope) {
  Context ctx = Context::cpu();
  Rng rng(3300);
  for (const ops::RopeConfig& c : {llama3_rope(16), default_rope(8)}) {
    const int64_t N = 6, NH = 3, HS = c.head_dim;
    Tensor inv = inv_freq_tensor(c), pos = Tensor::from_i32({N}, {0, 1, 5, 63, 64, 4000});
    Tensor x = round32(randn64({N, NH, HS}, rng));
    Tensor x64 = clone(x), x32 = to32(x);
    ops::rope(ctx, x64, pos, inv);
    ops::rope(ctx, x32, pos, inv);
    expect_agree(strfmt("rope HS=%lld", static_cast<long long>(HS)), x32, x64);
    ops::rope_backward(ctx, x64, pos, inv);
    ops::rope_backward(ctx, x32, pos, inv);
    expect_agree(strfmt("rope_backward HS=%lld", static_cast<long long>(HS)), x32, x64);
  }
}

TEST(GradOpsF32, Attention) {
  Context ctx = Context::cpu();
  Rng rng(3400);
  const int64_t B = 2, T = 17, H = 4, HKV = 2, HS = 16;
  const float scale = 0.25f;
  Tensor q = round32(randn64({B, T, H, HS}, rng)), k = round32(randn64({B, T, HKV, HS}, rng));
  Tensor v = round32(randn64({B, T, HKV, HS}, rng)), R = round32(randn64({B, T, H, HS}, rng));
  for (int64_t window : {0, 5}) {
    Tensor o64 = empty64(q.shape()), o32 = to32(o64);
    ops::attention(ctx, o64, q, k, v, 0, T, scale, window);
    ops::attention(ctx, o32, to32(q), to32(k), to32(v), 0, T, scale, window);
    expect_agree(strfmt("attention window %lld", static_cast<long long>(window)), o32, o64);
    Tensor dq64 = empty64(q.shape()), dk64 = empty64(k.shape()), dv64 = empty64(v.shape());
    Tensor dq32 = to32(dq64), dk32 = to32(dk64), dv32 = to32(dv64);
    ops::attention_backward(ctx, dq64, dk64, dv64, R, q, k, v, scale, window);
    ops::attention_backward(ctx, dq32, dk32, dv32, to32(R), to32(q), to32(k), to32(v), scale, window);
    expect_agree(strfmt("attention_backward dq window %lld", static_cast<long long>(window)), dq32, dq64);
    expect_agree(strfmt("attention_backward dk window %lld", static_cast<long long>(window)), dk32, dk64);
    expect_agree(strfmt("attention_backward dv window %lld", static_cast<long long>(window)), dv32, dv64);
  }
}

TEST(GradOpsF32, Softmax) {
  Context ctx = Context::cpu();
  Rng rng(3500);
  const int64_t N = 5, V = 41;
  Tensor x = round32(randn64({N, V}, rng, 3.0)), R = round32(randn64({N, V}, rng));
  for (bool log : {false, true}) {
    Tensor y64 = empty64({N, V}), y32 = to32(y64);
    ops::softmax(ctx, y64, x, log);
    ops::softmax(ctx, y32, to32(x), log);
    expect_agree(log ? "log_softmax" : "softmax", y32, y64);
  }
  Tensor y = empty64({N, V});
  ops::softmax(ctx, y, x);
  Tensor dx64 = empty64({N, V}), dx32 = to32(dx64);
  ops::softmax_backward(ctx, dx64, R, y);
  ops::softmax_backward(ctx, dx32, to32(R), to32(y));
  expect_agree("softmax_backward", dx32, dx64);
}

TEST(GradOpsF32, LmHeadCrossEntropy) {
  Context ctx = Context::cpu();
  Rng rng(3600);
  const int64_t N = 12, D = 24, V = 50;
  std::vector<int32_t> tv;
  for (int64_t n = 0; n < N; n++) tv.push_back(n == 2 ? ops::kIgnoreTarget : static_cast<int32_t>(rng.next_u64() % V));
  Tensor targets = Tensor::from_i32({N}, tv);
  Tensor h = round32(randn64({N, D}, rng)), w = round32(randn64({V, D}, rng, 0.3));
  Tensor l64 = empty64({N}), dh64 = empty64({N, D}), l32 = to32(l64), dh32 = to32(dh64);
  ops::lm_head_cross_entropy(ctx, l64, dh64, h, w, targets, 1.0f / 11, 5);
  ops::lm_head_cross_entropy(ctx, l32, dh32, to32(h), to32(w), targets, 1.0f / 11, 5);
  expect_agree("lm_head_cross_entropy losses", l32, l64);
  expect_agree("lm_head_cross_entropy dh", dh32, dh64);
}

// ---- validation
// ------------------------------------------------------------------------------------------------------

TEST(GradOps, ForwardOpsRejectMixedDtypes) {
  Context ctx = Context::cpu();
  Rng rng(3700);
  Tensor x = randn64({3, 4}, rng), w = randn64({4}, rng);
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, to32(x), x, w, 1e-5f); }, {"rmsnorm", "f32", "f64"}));
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, to32(empty64({3, 3})), x, x); }, {"matmul", "mix"}));
  Tensor b32 = to32(randn64({3}, rng));
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, empty64({3, 3}), x, x, &b32); }, {"matmul", "mix"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax(ctx, to32(x), x); }, {"softmax", "mix"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax(ctx, x, to32(x)); }, {"softmax", "mix"}));
  EXPECT_TRUE(throws_error([&] { ops::swiglu(ctx, to32(x), x, x); }, {"swiglu"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, to32(x), Tensor::from_i32({3}, {0, 1, 2}), x); }, {"embedding"}));
}

TEST(GradOps, BackwardsValidate) {
  Context ctx = Context::cpu();
  Rng rng(3800);
  // rmsnorm_backward
  Tensor x = randn64({3, 4}, rng), w = randn64({4}, rng), dy = randn64({3, 4}, rng), dx = randn64({3, 4}, rng);
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rmsnorm_backward(ctx, randn64({3, 5}, rng), dy, x, w, 1e-5f);
      },
      {"rmsnorm_backward", "dx", "(3, 5)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rmsnorm_backward(ctx, dx, randn64({4, 4}, rng), x, w, 1e-5f);
      },
      {"rmsnorm_backward", "dout"}));
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm_backward(ctx, dx, dy, x, randn64({3}, rng), 1e-5f); },
                           {"rmsnorm_backward", "(3,)"}));
  EXPECT_TRUE(
      throws_error([&] { ops::rmsnorm_backward(ctx, to32(dx), dy, x, w, 1e-5f); }, {"rmsnorm_backward", "mix"}));
  EXPECT_TRUE(
      throws_error([&] { ops::rmsnorm_backward(ctx, dx, dy, x, fake_cuda(w), 1e-5f); }, {"rmsnorm_backward", "cuda"}));
  Tensor xb = x.to(Device::CPU, DType::BF16);
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm_backward(ctx, xb, xb, xb, w.to(Device::CPU, DType::BF16), 1e-5f); },
                           {"rmsnorm_backward", "bf16"}));

  // matmul_backward_input: dx (M, K) from dout (M, N) and w (N, K).
  Tensor dout = randn64({3, 5}, rng), wm = randn64({5, 4}, rng), xm = randn64({3, 4}, rng);
  EXPECT_TRUE(throws_error(
      [&] {
        ops::matmul_backward_input(ctx, randn64({3, 5}, rng), dout, wm, false);
      },
      {"matmul_backward_input", "dx", "(3, 4)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::matmul_backward_input(ctx, xm, dout, randn64({4, 4}, rng), false);
      },
      {"matmul_backward_input", "dout", "(4, 4)"}));
  EXPECT_TRUE(throws_error([&] { ops::matmul_backward_input(ctx, xm, to32(dout), wm, false); },
                           {"matmul_backward_input", "mix"}));
  // matmul_weight_grad: dw (N, K) from dout (M, N) and x (M, K).
  EXPECT_TRUE(throws_error(
      [&] {
        ops::matmul_weight_grad(ctx, randn64({4, 5}, rng), dout, xm, true);
      },
      {"matmul_weight_grad", "dw", "(5, 4)"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::matmul_weight_grad(ctx, wm, dout, randn64({2, 4}, rng), true);
      },
      {"matmul_weight_grad", "do not fit"}));
  EXPECT_TRUE(throws_error([&] { ops::matmul_weight_grad(ctx, wm, dout, fake_cuda(xm), true); },
                           {"matmul_weight_grad", "cuda"}));

  // swiglu_backward
  Tensor g = randn64({2, 6}, rng), u = randn64({2, 6}, rng), d = randn64({2, 6}, rng);
  Tensor dg = empty64({2, 6}), du = empty64({2, 6});
  EXPECT_TRUE(throws_error(
      [&] {
        ops::swiglu_backward(ctx, dg, du, d, g, randn64({2, 5}, rng));
      },
      {"swiglu_backward", "up"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::swiglu_backward(ctx, dg, empty64({6, 2}), d, g, u);
      },
      {"swiglu_backward", "dup"}));
  EXPECT_TRUE(
      throws_error([&] { ops::swiglu_backward(ctx, dg, du, randn64({12}, rng), g, u); }, {"swiglu_backward", "dout"}));
  EXPECT_TRUE(throws_error([&] { ops::swiglu_backward(ctx, dg, dg, d, g, u); }, {"swiglu_backward", "same memory"}));
  EXPECT_TRUE(throws_error([&] { ops::swiglu_backward(ctx, dg, du, d, to32(g), u); }, {"swiglu_backward", "mix"}));

  // rope_backward
  Tensor inv = Tensor::from_f32({2}, {1.0f, 0.1f}), pos = Tensor::from_i32({3}, {0, 1, 2});
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rope_backward(ctx, randn64({3, 2, 5}, rng), pos, inv);
      },
      {"rope_backward", "even HS"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rope_backward(ctx, randn64({2, 2, 4}, rng), pos, inv);
      },
      {"rope_backward", "positions"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rope_backward(ctx, randn64({3, 2, 4}, rng), pos, to32(randn64({2}, rng)).to(Device::CPU, DType::F64));
      },
      {"rope_backward", "inv_freq", "f32"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::rope_backward(ctx, randn64({3, 2, 4}, rng).to(Device::CPU, DType::BF16), pos, inv);
      },
      {"rope_backward", "bf16"}));

  // attention_backward: q (B, T, H, HS), k v (B, T, HKV, HS).
  Tensor q = randn64({2, 5, 4, 3}, rng), k = randn64({2, 5, 2, 3}, rng), v = randn64({2, 5, 2, 3}, rng);
  Tensor dq = empty64(q.shape()), dk = empty64(k.shape()), dv = empty64(v.shape()), R = randn64(q.shape(), rng);
  EXPECT_NO_THROW(ops::attention_backward(ctx, dq, dk, dv, R, q, k, v, 0.5f, 2));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::attention_backward(ctx, dq, dk, dv, R, q, randn64({2, 6, 2, 3}, rng), v, 0.5f);
      },
      {"attention_backward", "k", "(2, 6, 2, 3)"}));  // a KV cache longer than T: not the training form
  EXPECT_TRUE(throws_error(
      [&] {
        ops::attention_backward(ctx, dq, dk, dv, R, q, randn64({2, 5, 3, 3}, rng), v, 0.5f);
      },
      {"attention_backward", "4 query heads", "3 KV heads"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::attention_backward(ctx, dq, dk, dv, R, q, k, randn64({2, 5, 2, 4}, rng), 0.5f);
      },
      {"attention_backward", "v"}));
  EXPECT_TRUE(
      throws_error([&] { ops::attention_backward(ctx, dq, dq, dv, R, q, k, v, 0.5f); }, {"attention_backward", "dk"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::attention_backward(ctx, dq, dk, dv, randn64({2, 5, 4, 2}, rng), q, k, v, 0.5f);
      },
      {"attention_backward", "dout"}));
  EXPECT_TRUE(throws_error([&] { ops::attention_backward(ctx, dq, dk, dv, R, q, k, v, 0.5f, -1); },
                           {"attention_backward", "negative window"}));
  EXPECT_TRUE(throws_error([&] { ops::attention_backward(ctx, dq, dk, to32(dv), R, q, k, v, 0.5f); },
                           {"attention_backward", "mix"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::attention_backward(ctx, dq, dk, dv, R, q.view({10, 4, 3}), k, v, 0.5f);
      },
      {"attention_backward"}));

  // softmax_backward
  Tensor y = randn64({3, 4}, rng);
  EXPECT_TRUE(throws_error(
      [&] {
        ops::softmax_backward(ctx, empty64({3, 4}), randn64({3, 5}, rng), y);
      },
      {"softmax_backward", "dy"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax_backward(ctx, empty64({4, 3}), y, y); }, {"softmax_backward", "dx"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax_backward(ctx, empty64({12}), y.view({12}), y.view({12})); },
                           {"softmax_backward", "(N, V)"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax_backward(ctx, to32(y), y, y); }, {"softmax_backward", "mix"}));

  // lm_head_cross_entropy
  Tensor h = randn64({4, 3}, rng), wl = randn64({5, 3}, rng), losses = empty64({4}), dh = empty64({4, 3});
  Tensor t = Tensor::from_i32({4}, {0, 1, 2, -100});
  EXPECT_NO_THROW(ops::lm_head_cross_entropy(ctx, losses, dh, h, wl, t, 1.f));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::lm_head_cross_entropy(ctx, losses, dh, h, randn64({5, 4}, rng), t, 1.f);
      },
      {"lm_head_cross_entropy", "(4, 3)", "(5, 4)"}));
  EXPECT_TRUE(throws_error([&] { ops::lm_head_cross_entropy(ctx, empty64({3}), dh, h, wl, t, 1.f); },
                           {"lm_head_cross_entropy", "losses"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::lm_head_cross_entropy(ctx, losses, empty64({4, 5}), h, wl, t, 1.f);
      },
      {"lm_head_cross_entropy", "dh"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::lm_head_cross_entropy(ctx, losses, dh, h, wl, Tensor::from_i32({3}, {0, 1, 2}), 1.f);
      },
      {"lm_head_cross_entropy", "targets", "(3,)"}));
  EXPECT_TRUE(
      throws_error([&] { ops::lm_head_cross_entropy(ctx, losses, dh, h, wl, t.to(Device::CPU, DType::I64), 1.f); },
                   {"lm_head_cross_entropy", "i32"}));
  EXPECT_TRUE(throws_error([&] { ops::lm_head_cross_entropy(ctx, losses, dh, h, wl, t, 1.f, 0); },
                           {"lm_head_cross_entropy", "block_rows"}));
  EXPECT_TRUE(throws_error([&] { ops::lm_head_cross_entropy(ctx, losses, to32(dh), h, wl, t, 1.f); },
                           {"lm_head_cross_entropy", "mix"}));
  EXPECT_TRUE(throws_error([&] { ops::lm_head_cross_entropy(ctx, losses, Tensor(), to32(h), wl, t, 1.f); },
                           {"lm_head_cross_entropy", "mix"}));
  EXPECT_TRUE(throws_error([&] { ops::lm_head_cross_entropy(ctx, losses, dh, h, fake_cuda(wl), t, 1.f); },
                           {"lm_head_cross_entropy", "cuda"}));
}

}  // namespace
}  // namespace liger
