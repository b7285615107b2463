// tests/train/test_optimizer.cpp — AdamW against an fp64 reference and hand-computed values, clipping, the learning
// rate schedules, state export/import, and config validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "tests/common/test_util.h"
#include "train/optimizer.h"

namespace liger {
namespace {

using test::TempDir;
using test::throws_error;

using Named = std::vector<std::pair<std::string, Tensor>>;

Tensor f32(Shape s, const std::vector<float>& v) {
  return Tensor::from_f32(s, v);
}

Tensor random_f32(Shape s, Rng& rng, float scale, float offset = 0.0f) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = offset + scale * rng.normal();
  return t;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), Device::CPU);
  std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

const Tensor& state_tensor(const Named& state, const std::string& name) {
  for (const auto& kv : state)
    if (kv.first == name) return kv.second;
  ADD_FAILURE() << "no state tensor " << name;
  static Tensor none;
  return none;
}

// ||out - ref|| / ||ref|| with the reference kept in fp64; prints the worst element on failure.
double rel_error_f64(const Tensor& out, const std::vector<double>& ref, const std::string& what) {
  double num = 0, den = 0, worst = -1;
  size_t wi = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double o = out.ptr<float>()[i];
    if (std::isnan(o)) return INFINITY;
    const double d = o - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
    if (std::fabs(d) > worst) worst = std::fabs(d), wi = i;
  }
  const double e = std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
  if (e > 1e-6) {
    ADD_FAILURE() << what << ": worst element " << wi << ": " << out.ptr<float>()[wi] << " vs " << ref[wi];
  }
  return e;
}

// ---- against an fp64 reference --------------------------------------------------------------------------------------

// The AdamW recipe written out in fp64 from its definition (PyTorch AdamW with decoupled weight decay), including
// global-norm clipping and the schedule.
struct RefAdamW {
  OptimConfig cfg;
  std::vector<std::vector<double>> p, m, v;
  int64_t t = 0;

  void step(const std::vector<std::vector<double>>& g) {
    double sq = 0;
    for (const auto& gi : g)
      for (double x : gi) sq += x * x;
    const double norm = std::sqrt(sq);
    double scale = 1.0;
    if (cfg.clip_norm > 0) scale = std::min(1.0, cfg.clip_norm / (norm + 1e-6));
    const double lr = lr_at(cfg, t);
    t++;
    const double b1 = cfg.beta1, b2 = cfg.beta2;
    for (size_t k = 0; k < p.size(); k++) {
      for (size_t i = 0; i < p[k].size(); i++) {
        const double gs = g[k][i] * scale;
        p[k][i] -= lr * cfg.weight_decay * p[k][i];
        m[k][i] = b1 * m[k][i] + (1 - b1) * gs;
        v[k][i] = b2 * v[k][i] + (1 - b2) * gs * gs;
        const double m_hat = m[k][i] / (1 - std::pow(b1, static_cast<double>(t)));
        const double v_hat = v[k][i] / (1 - std::pow(b2, static_cast<double>(t)));
        p[k][i] -= lr * m_hat / (std::sqrt(v_hat) + cfg.eps);
      }
    }
  }
};

std::vector<double> to_f64(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); i++) out[i] = t.ptr<float>()[i];
  return out;
}

// 20 steps on fresh random parameters and gradients of LoRA-like shapes (A (R, D), B (D, R), an odd length), one of
// them with gradients ~1e-8, where sqrt(v_hat) is comparable to eps, so the placement of eps matters.
//
// Tolerance 1e-6 (relative, whole tensor): the fp64 reference sees the same fp32 inputs, so the difference is only the
// fp32 rounding inside the update. Each step rounds every parameter twice at its own magnitude (after the decay and
// after subtracting the update, 0.5 ulp each; the update term itself is ~lr times smaller, and its few ulps of error
// are negligible against |p|). Over 20 steps that is 40 independent roundings: RMS about sqrt(40/12) ulp ~ 1.8 ulp
// ~ 1e-7..2e-7 relative (fp32 ulp is 2^-24..2^-23 of the value). The moments add a systematic part from beta1,
// beta2 and 1-beta2 being rounded to fp32 (relative 2.6e-8, 1.3e-8 and 4.7e-8; summed over the 20-term EMA of v at
// most ~3e-7). Measured: 1.4e-7 .. 2.1e-7 for p, m and v in both tests below, so 1e-6 leaves a margin of ~5x, while
// formula slips land above it (measured on deliberately broken copies): no bias correction of m 1e-2 .. 5e-2, eps
// inside the sqrt 7e-2 (the ~1e-8 tensor), no weight decay 2e-3, decay applied to the new p instead of the old one
// 2.6e-6 .. 2e-4.
void check_against_reference(const OptimConfig& cfg, uint64_t seed) {
  Rng rng(seed);
  const std::vector<Shape> shapes = {Shape{8, 16}, Shape{16, 8}, Shape{37}};
  const std::vector<float> grad_scales = {1.0f, 0.03f, 1e-8f};
  Named params;
  RefAdamW ref;
  ref.cfg = cfg;
  for (size_t k = 0; k < shapes.size(); k++) {
    params.emplace_back("p" + std::to_string(k), random_f32(shapes[k], rng, 0.5f, k == 1 ? 2.0f : 0.0f));
    ref.p.push_back(to_f64(params.back().second));
    ref.m.emplace_back(ref.p.back().size(), 0.0);
    ref.v.emplace_back(ref.p.back().size(), 0.0);
  }
  AdamW opt(cfg, params);
  for (int s = 0; s < 20; s++) {
    std::vector<Tensor> grads;
    std::vector<std::vector<double>> g64;
    for (size_t k = 0; k < shapes.size(); k++) {
      grads.push_back(random_f32(shapes[k], rng, grad_scales[k]));
      g64.push_back(to_f64(grads.back()));
    }
    const AdamWStepStats st = opt.step(grads);
    EXPECT_EQ(st.step, s + 1);
    EXPECT_DOUBLE_EQ(st.lr, lr_at(cfg, s));
    ref.step(g64);
  }
  const Named state = opt.export_state();
  for (size_t k = 0; k < shapes.size(); k++) {
    const std::string n = params[k].first;
    EXPECT_LE(rel_error_f64(params[k].second, ref.p[k], n), 1e-6) << n;
    EXPECT_LE(rel_error_f64(state_tensor(state, n + ".exp_avg"), ref.m[k], n + ".exp_avg"), 1e-6) << n;
    EXPECT_LE(rel_error_f64(state_tensor(state, n + ".exp_avg_sq"), ref.v[k], n + ".exp_avg_sq"), 1e-6) << n;
  }
}

TEST(AdamW, MatchesFp64ReferenceOver20Steps) {
  OptimConfig cfg;
  cfg.lr = 1e-2;  // larger than the recipe's 1e-3 so the 20 updates move p well above the rounding level
  check_against_reference(cfg, 1);
}

TEST(AdamW, MatchesFp64ReferenceWithClippingAndCosine) {
  OptimConfig cfg;
  cfg.lr = 2e-2;
  cfg.weight_decay = 0.1;
  cfg.clip_norm = 0.5;  // the random gradients have norm ~12: clipping acts on every step
  cfg.schedule = LrSchedule::Cosine;
  cfg.warmup_steps = 3;
  cfg.total_steps = 15;  // the last 5 steps run at min_lr_ratio * lr
  cfg.min_lr_ratio = 0.1;
  check_against_reference(cfg, 2);
}

// ---- hand-computed values -------------------------------------------------------------------------------------------

TEST(AdamW, OneStepByHand) {
  // p = 1, g = 0.5, lr = 0.1, wd = 0.01:
  //   p <- 1 - 0.1 * 0.01 * 1 = 0.999;  m = 0.1 * 0.5 = 0.05;  v = 0.001 * 0.25 = 0.00025
  //   m_hat = 0.05 / 0.1 = 0.5;  v_hat = 0.00025 / 0.001 = 0.25;  p <- 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002
  OptimConfig cfg;
  cfg.lr = 0.1;
  Tensor p = f32(Shape{1}, {1.0f});
  AdamW opt(cfg, {{"w", p}});
  opt.step({f32(Shape{1}, {0.5f})});
  // Tolerances: a few fp32 ulps. Besides rounding each result, the fp32 update uses (float)(1 - b2) = 0.001 * (1 +
  // 4.7e-8) and (float)sqrt(1 - b2^t), so the values sit a few 1e-8 (relative) away from the exact ones.
  EXPECT_NEAR(p.ptr<float>()[0], 0.899000002, 1e-7);  // fp32 spacing near 0.9 is 6e-8
  const Named st = opt.export_state();
  EXPECT_NEAR(state_tensor(st, "w.exp_avg").ptr<float>()[0], 0.05, 0.05 * 2e-7);
  EXPECT_NEAR(state_tensor(st, "w.exp_avg_sq").ptr<float>()[0], 0.00025, 0.00025 * 2e-7);
  EXPECT_EQ(state_tensor(st, "step").ptr<int64_t>()[0], 1);
  EXPECT_EQ(opt.steps_done(), 1);
}

TEST(AdamW, WeightDecayIsDecoupled) {
  // A zero gradient leaves m = v = 0 and the Adam term 0 / (0 + eps) = 0: only p *= 1 - lr * wd remains
  // (coupled L2 decay, as in Adam, would instead feed wd * p into m and move p by ~lr).
  OptimConfig cfg;
  cfg.lr = 0.1;
  cfg.weight_decay = 0.5;
  Tensor p = f32(Shape{3}, {2.0f, -4.0f, 0.0f});
  AdamW opt(cfg, {{"w", p}});
  opt.step({f32(Shape{3}, {0.0f, 0.0f, 0.0f})});
  EXPECT_NEAR(p.ptr<float>()[0], 1.9, 1e-6);
  EXPECT_NEAR(p.ptr<float>()[1], -3.8, 1e-6);
  EXPECT_EQ(p.ptr<float>()[2], 0.0f);
  opt.step({f32(Shape{3}, {0.0f, 0.0f, 0.0f})});
  EXPECT_NEAR(p.ptr<float>()[0], 1.805, 1e-6);
}

TEST(AdamW, BiasCorrectionOverTwoSteps) {
  // p0 = 0, wd = 0, lr = 0.1, g1 = 1, g2 = -1:
  //   step 1: m = 0.1, v = 0.001; m_hat = 1, v_hat = 1 -> p1 = -0.1 (up to eps: -0.1 / (1 + 1e-8))
  //   step 2: m = 0.09 - 0.1 = -0.01, v = 0.000999 + 0.001 = 0.001999; 1 - b1^2 = 0.19, 1 - b2^2 = 0.001999
  //           m_hat = -1/19, v_hat = 1 -> p2 = p1 + 0.1/19 = -0.0947368421...
  // Without bias correction step 2 would be -0.01 / sqrt(0.001999) = -0.224 instead of -0.0526.
  OptimConfig cfg;
  cfg.lr = 0.1;
  cfg.weight_decay = 0.0;
  Tensor p = f32(Shape{1}, {0.0f});
  AdamW opt(cfg, {{"w", p}});
  opt.step({f32(Shape{1}, {1.0f})});
  // Tolerance 3e-8: 4 fp32 ulps near 0.1 (see OneStepByHand for where the few-ulp deviations come from).
  EXPECT_NEAR(p.ptr<float>()[0], -0.1, 3e-8);
  opt.step({f32(Shape{1}, {-1.0f})});
  EXPECT_NEAR(p.ptr<float>()[0], -0.1 + 0.1 / 19.0, 3e-8);
}

// ---- clipping -------------------------------------------------------------------------------------------------------

TEST(AdamW, GlobalNormClipping) {
  // Gradients (3, 0) and (4): global norm 5 over both tensors.
  auto run = [](double clip, AdamWStepStats* st) {
    OptimConfig cfg;
    cfg.clip_norm = clip;
    Tensor a = f32(Shape{2}, {1.0f, 1.0f}), b = f32(Shape{1}, {1.0f});
    AdamW opt(cfg, {{"a", a}, {"b", b}});
    Tensor ga = f32(Shape{2}, {3.0f, 0.0f}), gb = f32(Shape{1}, {4.0f});
    *st = opt.step({ga, gb});
    EXPECT_EQ(ga.ptr<float>()[0], 3.0f) << "the caller's gradients are not modified";
    EXPECT_EQ(gb.ptr<float>()[0], 4.0f);
    return state_tensor(opt.export_state(), "b.exp_avg").ptr<float>()[0];  // m = 0.1 * g * scale
  };
  AdamWStepStats st;
  float m = run(1.0, &st);  // clipped: scale = 1 / (5 + 1e-6), torch.nn.utils.clip_grad_norm_
  EXPECT_DOUBLE_EQ(st.grad_norm, 5.0);
  EXPECT_DOUBLE_EQ(st.grad_scale, 1.0 / (5.0 + 1e-6));
  EXPECT_NEAR(m, 0.1 * 4.0 / (5.0 + 1e-6), 2e-8);  // fp32 spacing near 0.08 is 7.5e-9
  m = run(10.0, &st);                              // norm below the threshold: untouched
  EXPECT_DOUBLE_EQ(st.grad_norm, 5.0);
  EXPECT_EQ(st.grad_scale, 1.0);
  EXPECT_NEAR(m, 0.4, 1e-8);
  m = run(0.0, &st);  // off (the default): the norm is still reported
  EXPECT_DOUBLE_EQ(st.grad_norm, 5.0);
  EXPECT_EQ(st.grad_scale, 1.0);
  EXPECT_NEAR(m, 0.4, 1e-8);
}

TEST(AdamW, NonFiniteGradientIsAnErrorAndChangesNothing) {
  OptimConfig cfg;
  Tensor p = f32(Shape{2}, {1.0f, 2.0f});
  AdamW opt(cfg, {{"w", p}});
  EXPECT_TRUE(throws_error([&] { opt.step({f32(Shape{2}, {1.0f, NAN})}); }, {"gradient norm", "nan"}));
  EXPECT_TRUE(throws_error([&] { opt.step({f32(Shape{2}, {INFINITY, 1.0f})}); }, {"gradient norm", "inf"}));
  EXPECT_EQ(p.ptr<float>()[0], 1.0f);
  EXPECT_EQ(p.ptr<float>()[1], 2.0f);
  EXPECT_EQ(opt.steps_done(), 0);
}

TEST(AdamW, BadArgumentsAreErrors) {
  OptimConfig cfg;
  Tensor p = f32(Shape{2}, {1.0f, 2.0f});
  AdamW opt(cfg, {{"w", p}});
  EXPECT_TRUE(throws_error([&] { opt.step({f32(Shape{3}, {1, 2, 3})}); }, {"'w'", "(3,)", "(2,)"}));
  EXPECT_TRUE(throws_error([&] { opt.step({}); }, {"0 gradients for 1 parameters"}));
  EXPECT_TRUE(throws_error([&] { AdamW o(cfg, {{"w", p}, {"w", p}}); }, {"'w'", "twice"}));
  EXPECT_TRUE(throws_error([&] { AdamW o(cfg, {{"step", p}}); }, {"'step'", "reserved"}));
  Tensor bf = Tensor::zeros(Shape{2}, DType::BF16, Device::CPU);
  EXPECT_TRUE(throws_error([&] { AdamW o(cfg, {{"lora_A", bf}}); }, {"'lora_A'", "bf16"}));
}

// ---- schedules ------------------------------------------------------------------------------------------------------

TEST(Schedule, KeySteps) {
  OptimConfig c;
  c.lr = 1e-3;
  EXPECT_EQ(lr_at(c, 0), 1e-3);
  EXPECT_EQ(lr_at(c, 123456), 1e-3);

  c.schedule = LrSchedule::LinearWarmup;
  c.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1e-4);  // the first step already moves: (0 + 1) / 10
  EXPECT_DOUBLE_EQ(lr_at(c, 4), 5e-4);
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 1e-3);  // warmup end: the last warmup step is at the full lr
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1e-3);
  EXPECT_DOUBLE_EQ(lr_at(c, 1000000), 1e-3);

  c.schedule = LrSchedule::Cosine;
  c.total_steps = 110;
  c.min_lr_ratio = 0.1;
  c.validate();
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1e-4);
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 1e-3);                         // warmup end
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1e-3);                        // cosine start
  EXPECT_NEAR(lr_at(c, 60), 1e-3 * (0.1 + 0.9 * 0.5), 1e-15);  // half-way: the mean of lr and min lr
  EXPECT_NEAR(lr_at(c, 35), 1e-3 * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 4))), 1e-15);  // a quarter
  EXPECT_NEAR(lr_at(c, 110), 1e-4, 1e-15);                                                // end: min_lr_ratio * lr
  EXPECT_NEAR(lr_at(c, 5000), 1e-4, 1e-15);                                               // and flat afterwards
  for (int64_t s = 10; s < 120; s++) EXPECT_LE(lr_at(c, s + 1), lr_at(c, s)) << s;

  c.warmup_steps = 0;  // cosine without warmup starts at the full lr
  c.min_lr_ratio = 0.0;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1e-3);
  EXPECT_NEAR(lr_at(c, 55), 5e-4, 1e-15);
  EXPECT_NEAR(lr_at(c, 110), 0.0, 1e-15);

  EXPECT_TRUE(throws_error([&] { lr_at(c, -1); }, {"negative step"}));
}

TEST(Schedule, OptimizerFollowsIt) {
  OptimConfig c;
  c.schedule = LrSchedule::LinearWarmup;
  c.warmup_steps = 4;
  Tensor p = f32(Shape{1}, {1.0f});
  AdamW opt(c, {{"w", p}});
  const std::vector<double> expect = {2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3};
  for (double e : expect) EXPECT_DOUBLE_EQ(opt.step({f32(Shape{1}, {1.0f})}).lr, e);
}

TEST(Schedule, Names) {
  for (LrSchedule s : {LrSchedule::Constant, LrSchedule::LinearWarmup, LrSchedule::Cosine})
    EXPECT_EQ(parse_lr_schedule(lr_schedule_name(s)), s);
  EXPECT_TRUE(throws_error([] { parse_lr_schedule("step"); }, {"--lr-schedule", "'step'", "cosine"}));
}

// ---- state export / import ------------------------------------------------------------------------------------------

struct Fixture {
  Named params;
  std::vector<std::vector<Tensor>> grads;  // per step
};

Fixture make_fixture(uint64_t seed, int steps) {
  Rng rng(seed);
  Fixture f;
  f.params = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", random_f32(Shape{8, 64}, rng, 0.1f)},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", random_f32(Shape{64, 8}, rng, 0.1f)}};
  for (int s = 0; s < steps; s++) {
    f.grads.push_back({random_f32(Shape{8, 64}, rng, 1e-2f), random_f32(Shape{64, 8}, rng, 1e-3f)});
  }
  return f;
}

Named clone_all(const Named& n) {
  Named out;
  for (const auto& kv : n) out.emplace_back(kv.first, clone(kv.second));
  return out;
}

TEST(AdamWState, ExportImportReproducesTheNextStepBitwise) {
  OptimConfig cfg;
  cfg.schedule = LrSchedule::Cosine;
  cfg.warmup_steps = 2;
  cfg.total_steps = 10;
  const Fixture f = make_fixture(7, 8);
  AdamW a(cfg, clone_all(f.params));
  for (int s = 0; s < 5; s++) a.step(f.grads[static_cast<size_t>(s)]);

  // Through a safetensors file, as a checkpoint stores it.
  TempDir dir("optim_state");
  write_safetensors(dir.file("optimizer.safetensors"), a.export_state());
  auto file = SafetensorsFile::open(dir.file("optimizer.safetensors"));
  Named loaded;
  for (const auto& e : file->entries()) loaded.emplace_back(e.name, file->tensor(e.name));

  AdamW b(cfg, clone_all(a.params()));  // the parameters as a checkpoint would restore them
  b.import_state(loaded, file->path());
  EXPECT_EQ(b.steps_done(), 5);
  for (int s = 5; s < 8; s++) {
    const AdamWStepStats sa = a.step(f.grads[static_cast<size_t>(s)]);
    const AdamWStepStats sb = b.step(f.grads[static_cast<size_t>(s)]);
    EXPECT_EQ(sa.lr, sb.lr);
    EXPECT_EQ(sa.grad_norm, sb.grad_norm);
  }
  for (size_t i = 0; i < a.params().size(); i++)
    EXPECT_TRUE(same_bytes(a.params()[i].second, b.params()[i].second)) << a.params()[i].first;
  const Named ea = a.export_state(), eb = b.export_state();
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); i++) {
    EXPECT_EQ(ea[i].first, eb[i].first);
    EXPECT_TRUE(same_bytes(ea[i].second, eb[i].second)) << ea[i].first;
  }
}

TEST(AdamWState, ExportIsACopy) {
  const Fixture f = make_fixture(3, 2);
  AdamW a(OptimConfig{}, clone_all(f.params));
  a.step(f.grads[0]);
  const Named before = a.export_state();
  const Named keep = clone_all(before);
  a.step(f.grads[1]);
  for (size_t i = 0; i < before.size(); i++) EXPECT_TRUE(same_bytes(before[i].second, keep[i].second));
}

TEST(AdamWState, BadStateIsAnErrorNamingTheTensor) {
  const Fixture f = make_fixture(5, 1);
  AdamW a(OptimConfig{}, clone_all(f.params));
  a.step(f.grads[0]);
  const Named good = a.export_state();
  const std::string A = f.params[0].first, B = f.params[1].first;

  AdamW b(OptimConfig{}, clone_all(f.params));
  auto without = [&](const std::string& name) {
    Named n;
    for (const auto& kv : good)
      if (kv.first != name) n.push_back(kv);
    return n;
  };
  EXPECT_TRUE(throws_error([&] { b.import_state(without(B + ".exp_avg_sq"), "ck/optimizer.safetensors"); },
                           {"ck/optimizer.safetensors", B + ".exp_avg_sq", "missing"}));
  EXPECT_TRUE(throws_error([&] { b.import_state(without("step"), "f"); }, {"'step'", "missing"}));
  Named extra = good;
  extra.emplace_back("other.lora_A.weight.exp_avg", Tensor::zeros(Shape{1}, DType::F32, Device::CPU));
  EXPECT_TRUE(throws_error([&] { b.import_state(extra, "f"); }, {"'other.lora_A.weight.exp_avg'", "no parameter"}));
  Named reshaped = without(A + ".exp_avg");
  reshaped.emplace_back(A + ".exp_avg", Tensor::zeros(Shape{64, 8}, DType::F32, Device::CPU));
  EXPECT_TRUE(throws_error([&] { b.import_state(reshaped, "f"); }, {A + ".exp_avg", "(64, 8)", "(8, 64)"}));
  Named bad_step = without("step");
  Tensor neg = Tensor::empty(Shape{1}, DType::I64, Device::CPU);
  neg.ptr<int64_t>()[0] = -3;
  bad_step.emplace_back("step", neg);
  EXPECT_TRUE(throws_error([&] { b.import_state(bad_step, "f"); }, {"'step'", "-3"}));
  Named dup = good;
  dup.push_back(good[0]);
  EXPECT_TRUE(throws_error([&] { b.import_state(dup, "f"); }, {"twice"}));
  // A failed import changed nothing.
  EXPECT_EQ(b.steps_done(), 0);
  for (const auto& kv : b.export_state()) {
    if (kv.first == "step") continue;
    for (int64_t i = 0; i < kv.second.numel(); i++) ASSERT_EQ(kv.second.ptr<float>()[i], 0.0f) << kv.first;
  }
}

// ---- config validation ----------------------------------------------------------------------------------------------

TEST(OptimConfig, DefaultsAreTheRecipe) {
  OptimConfig c;  // liger-spec.md §7 item 15
  EXPECT_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.beta1, 0.9);
  EXPECT_EQ(c.beta2, 0.999);
  EXPECT_EQ(c.eps, 1e-8);
  EXPECT_EQ(c.weight_decay, 0.01);
  EXPECT_EQ(c.clip_norm, 0.0);
  EXPECT_EQ(c.schedule, LrSchedule::Constant);
  c.validate();
}

TEST(OptimConfig, OutOfRangeValuesAreErrors) {
  struct Case {
    std::function<void(OptimConfig&)> set;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {[](OptimConfig& c) { c.lr = 0; }, {"--lr", "> 0"}},
      {[](OptimConfig& c) { c.lr = -1e-3; }, {"--lr", "-0.001"}},
      {[](OptimConfig& c) { c.lr = NAN; }, {"--lr", "nan"}},
      {[](OptimConfig& c) { c.beta1 = 1.0; }, {"--beta1", "[0, 1)"}},
      {[](OptimConfig& c) { c.beta1 = -0.1; }, {"--beta1"}},
      {[](OptimConfig& c) { c.beta2 = 1.5; }, {"--beta2", "1.5"}},
      {[](OptimConfig& c) { c.eps = 0; }, {"--eps", "> 0"}},
      {[](OptimConfig& c) { c.weight_decay = -0.01; }, {"--weight-decay", ">= 0"}},
      {[](OptimConfig& c) { c.weight_decay = INFINITY; }, {"--weight-decay", "inf"}},
      {[](OptimConfig& c) { c.weight_decay = 2000; }, {"--weight-decay", "lr * weight_decay"}},
      {[](OptimConfig& c) { c.clip_norm = -1; }, {"--clip-norm", ">= 0"}},
      {[](OptimConfig& c) { c.min_lr_ratio = 1.5; }, {"--min-lr-ratio", "[0, 1]"}},
      {[](OptimConfig& c) { c.warmup_steps = -1; }, {"--warmup-steps", ">= 0"}},
      {[](OptimConfig& c) { c.total_steps = -5; }, {"--total-steps", ">= 0"}},
      {[](OptimConfig& c) { c.warmup_steps = 10; }, {"--warmup-steps", "constant", "linear_warmup"}},
      {[](OptimConfig& c) { c.schedule = LrSchedule::LinearWarmup; }, {"linear_warmup", "--warmup-steps > 0"}},
      {[](OptimConfig& c) {
         c.schedule = LrSchedule::Cosine;
         c.warmup_steps = 100;
         c.total_steps = 100;
       },
       {"cosine", "--total-steps > --warmup-steps", "100"}},
  };
  for (size_t i = 0; i < cases.size(); i++) {
    OptimConfig c;
    cases[i].set(c);
    EXPECT_TRUE(throws_error([&] { c.validate(); }, cases[i].parts)) << "case " << i;
    EXPECT_TRUE(throws_error([&] { AdamW o(c, {}); }, cases[i].parts)) << "case " << i << " (constructor)";
  }
}

}  // namespace
}  // namespace liger
