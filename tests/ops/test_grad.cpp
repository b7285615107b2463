// Gradient checks: every backward against central finite differences of its forward, in fp64 (the CPU ops also run
// in f64 for this). Loss = sum(out * R) with a fresh random R, so dout = R; each input's analytic gradient must match
// (L(x + h e_i) - L(x - h e_i)) / 2h for every element: ||analytic - fd|| / ||fd|| <= 1e-6 (the bound;
// with h = 1e-5 in fp64 the difference quotient is accurate to ~1e-10).
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "core/rng.h"
#include "ops/recurrence.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::fd_check;
using test::throws_error;

Tensor randn64(Shape s, Rng& rng, double scale = 1.0) {
  Tensor t = Tensor::empty(s, DType::F64, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<double>()[i] = scale * rng.normal();
  return t;
}

// Log-gates in (-inf, 0): logsigmoid of normal values, as the Liger gates are.
Tensor loggates64(Shape s, Rng& rng, double divisor) {
  Tensor t = randn64(s, rng, 2.0);
  for (int64_t i = 0; i < t.numel(); i++) {
    const double x = t.ptr<double>()[i];
    t.ptr<double>()[i] = (std::min(x, 0.0) - std::log1p(std::exp(-std::fabs(x)))) / divisor;
  }
  return t;
}

Tensor clone(const Tensor& t) {
  return t.to(Device::CPU);
}



struct Dims {
  int64_t B, T, H, HKV, K, Vd, chunk;
};

TEST(Grad, LinearRecurrence) {
  Context ctx = Context::cpu();
  uint64_t seed = 500;
  for (const Dims d : {Dims{1, 5, 2, 1, 3, 4, 2}, Dims{2, 6, 4, 2, 4, 3, 4}, Dims{1, 7, 2, 2, 2, 2, 64}}) {
    for (double divisor : {16.0, 1.0}) {
      Rng rng(seed++);
      Tensor fq = randn64({d.B, d.T, d.H, d.K}, rng), fk = randn64({d.B, d.T, d.HKV, d.K}, rng);
      Tensor v = randn64({d.B, d.T, d.HKV, d.Vd}, rng), g = loggates64({d.B, d.T, d.HKV, d.K}, rng, divisor);
      Tensor s0 = randn64({d.B, d.HKV, d.K, d.Vd}, rng), R = randn64({d.B, d.T, d.H, d.Vd}, rng);
      auto loss = [&] {
        Tensor out = Tensor::empty(R.shape(), DType::F64, Device::CPU), st = clone(s0);
        ops::linear_recurrence(ctx, out, fq, fk, v, g, st, d.chunk);
        return test::dot64(out, R);
      };
      Tensor dfq = Tensor::empty(fq.shape(), DType::F64, Device::CPU),
             dfk = Tensor::empty(fk.shape(), DType::F64, Device::CPU);
      Tensor dv = Tensor::empty(v.shape(), DType::F64, Device::CPU),
             dg = Tensor::empty(g.shape(), DType::F64, Device::CPU);
      ops::linear_recurrence_backward(ctx, dfq, dfk, dv, dg, R, fq, fk, v, g, s0);
      const double e[4] = {fd_check(fq, dfq, loss), fd_check(fk, dfk, loss), fd_check(v, dv, loss),
                           fd_check(g, dg, loss)};
      std::printf("  T=%lld H=%lld HKV=%lld K=%lld Vd=%lld gate/%g: fq %.2g fk %.2g v %.2g g %.2g\n",
                  static_cast<long long>(d.T), static_cast<long long>(d.H), static_cast<long long>(d.HKV),
                  static_cast<long long>(d.K), static_cast<long long>(d.Vd), divisor, e[0], e[1], e[2], e[3]);
      for (double x : e) EXPECT_LE(x, 1e-6);
    }
  }
}

TEST(Grad, SlotScores) {
  Context ctx = Context::cpu();
  uint64_t seed = 600;
  for (const Dims d : {Dims{1, 5, 2, 1, 3, 4, 2}, Dims{2, 6, 4, 2, 2, 3, 64}}) {  // K plays M (slots), Vd plays d
    Rng rng(seed++);
    Tensor q = randn64({d.B, d.T, d.H, d.Vd}, rng), k = randn64({d.B, d.T, d.HKV, d.Vd}, rng);
    Tensor g = loggates64({d.B, d.T, d.HKV, d.K}, rng, 16.0), s = randn64({d.B, d.T, d.HKV, d.K}, rng);
    Tensor s0 = randn64({d.B, d.HKV, d.K, d.Vd}, rng), R = randn64({d.B, d.T, d.H, d.K}, rng);
    auto loss = [&] {
      Tensor z = Tensor::empty(R.shape(), DType::F64, Device::CPU), st = clone(s0);
      ops::slot_scores(ctx, z, q, k, s, g, st, d.chunk);
      return test::dot64(z, R);
    };
    Tensor dq = Tensor::empty(q.shape(), DType::F64, Device::CPU),
           dk = Tensor::empty(k.shape(), DType::F64, Device::CPU);
    Tensor ds = Tensor::empty(s.shape(), DType::F64, Device::CPU),
           dg = Tensor::empty(g.shape(), DType::F64, Device::CPU);
    ops::slot_scores_backward(ctx, dq, dk, ds, dg, R, q, k, s, g, s0);
    const double e[4] = {fd_check(q, dq, loss), fd_check(k, dk, loss), fd_check(s, ds, loss), fd_check(g, dg, loss)};
    std::printf("  slot scores T=%lld H=%lld HKV=%lld M=%lld d=%lld: q %.2g k %.2g s %.2g g %.2g\n",
                static_cast<long long>(d.T), static_cast<long long>(d.H), static_cast<long long>(d.HKV),
                static_cast<long long>(d.K), static_cast<long long>(d.Vd), e[0], e[1], e[2], e[3]);
    for (double x : e) EXPECT_LE(x, 1e-6);
  }
}

// The check itself can fail: a gradient that is off by a small amount in one element is caught.
TEST(Grad, CheckerCatchesAWrongGradient) {
  Context ctx = Context::cpu();
  Rng rng(700);
  Tensor fq = randn64({1, 4, 2, 3}, rng), fk = randn64({1, 4, 1, 3}, rng), v = randn64({1, 4, 1, 2}, rng);
  Tensor g = loggates64({1, 4, 1, 3}, rng, 16.0), s0 = randn64({1, 1, 3, 2}, rng), R = randn64({1, 4, 2, 2}, rng);
  auto loss = [&] {
    Tensor out = Tensor::empty(R.shape(), DType::F64, Device::CPU), st = clone(s0);
    ops::linear_recurrence(ctx, out, fq, fk, v, g, st, 2);
    return test::dot64(out, R);
  };
  Tensor dfq = Tensor::empty(fq.shape(), DType::F64, Device::CPU),
         dfk = Tensor::empty(fk.shape(), DType::F64, Device::CPU);
  Tensor dv = Tensor::empty(v.shape(), DType::F64, Device::CPU), dg = Tensor::empty(g.shape(), DType::F64, Device::CPU);
  ops::linear_recurrence_backward(ctx, dfq, dfk, dv, dg, R, fq, fk, v, g, s0);
  dg.ptr<double>()[5] *= 1.001;
  EXPECT_GT(fd_check(g, dg, loss), 1e-6);
}

TEST(Grad, BackwardValidatesShapes) {
  Context ctx = Context::cpu();
  Rng rng(800);
  Tensor fq = randn64({1, 4, 2, 3}, rng), fk = randn64({1, 4, 1, 3}, rng), v = randn64({1, 4, 1, 2}, rng);
  Tensor g = loggates64({1, 4, 1, 3}, rng, 16.0), s0 = randn64({1, 1, 3, 2}, rng), R = randn64({1, 4, 2, 2}, rng);
  Tensor bad = Tensor::empty({1, 4, 1, 2}, DType::F64, Device::CPU);
  EXPECT_TRUE(throws_error(
      [&] { ops::linear_recurrence_backward(ctx, clone(fq), clone(fk), clone(v), bad, R, fq, fk, v, g, s0); },
      {"linear_recurrence_backward", "dg"}));
}

}  // namespace
}  // namespace liger
