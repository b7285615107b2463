// tests/ops/test_ops_cpu.cpp — every CPU op against a plain fp64 formula written here (the naive math, not a copy of
// ops/cpu), on fresh random inputs, plus the validation errors of the dispatchers in ops/*.h.
//
// Tolerance: ||out - ref|| / ||ref|| <= 1e-5. The CPU path computes in fp32; every op here is a short reduction
// (at most a few hundred terms), whose fp32 rounding error is ~1e-7 relative, so 1e-5 leaves two orders of margin
// while still catching any formula error (a wrong mask, scale, index or band shows up at 1e-2 or more).
// A NaN anywhere in the output fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/sampling.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::round_to_format;
using test::throws_error;

constexpr double kTol = 1e-5;
const double kPi = 3.14159265358979323846;

// ---- helpers ------------------------------------------------------------------------------------------------------

// Standard normal values times `scale` (never all zeros).
Tensor randn(Shape s, Rng& rng, double scale = 1.0) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = static_cast<float>(scale * rng.normal());
  return t;
}

std::vector<double> f64(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); i++) v[i] = t.ptr<float>()[i];
  return v;
}

// ||out - ref|| / ||ref|| <= tol, printing the worst element on failure; any non-finite output where the reference is
// finite fails, and so does an all-zero reference (the comparison would prove nothing).
::testing::AssertionResult close(const std::vector<float>& out, const std::vector<double>& ref, double tol = kTol) {
  if (out.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << out.size() << " vs reference " << ref.size();
  double num = 0, den = 0, worst = -1;
  size_t wi = 0;
  for (size_t i = 0; i < out.size(); i++) {
    if (!std::isfinite(out[i]) && std::isfinite(ref[i]))
      return ::testing::AssertionFailure() << "element " << i << " is " << out[i] << ", reference " << ref[i];
    const double d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
    if (std::fabs(d) > worst) worst = std::fabs(d), wi = i;
  }
  if (!(den > 0)) return ::testing::AssertionFailure() << "reference is all zeros";
  const double rel = std::sqrt(num) / std::sqrt(den);
  if (!(rel <= tol)) {
    return ::testing::AssertionFailure() << "relative error " << rel << " > " << tol << "; worst element " << wi
                                         << ": out " << out[wi] << ", ref " << ref[wi] << " (|diff| " << worst << ")";
  }
  return ::testing::AssertionSuccess();
}
::testing::AssertionResult close(const Tensor& out, const std::vector<double>& ref, double tol = kTol) {
  return close(out.to_f32_vector(), ref, tol);
}


// A tensor tagged as CUDA memory (never dereferenced: the device check rejects it first).
Tensor fake_cuda(const Tensor& host) { return Tensor(host.data(), host.shape(), host.dtype(), Device::CUDA); }

// ---- the comparison itself ----------------------------------------------------------------------------------------

TEST(Harness, RejectsNaNLargeErrorAndZeroReference) {
  std::vector<double> ref = {1.0, -2.0, 3.0, 0.5};
  EXPECT_TRUE(close(std::vector<float>{1.0f, -2.0f, 3.0f, 0.5f}, ref));
  EXPECT_FALSE(close(std::vector<float>{1.0f, -2.0f, NAN, 0.5f}, ref));
  EXPECT_FALSE(close(std::vector<float>{1.0f, -2.0f, INFINITY, 0.5f}, ref));
  EXPECT_FALSE(close(std::vector<float>{1.0f, -2.0f, 3.001f, 0.5f}, ref));  // 3e-4 relative
  EXPECT_FALSE(close(std::vector<float>{1.0f, -2.0f, 3.0f}, ref));
  EXPECT_FALSE(close(std::vector<float>{0.0f, 0.0f}, std::vector<double>{0.0, 0.0}));
}

// ---- embedding ------------------------------------------------------------------------------------------------------

TEST(Ops, Embedding) {
  Context ctx = Context::cpu();
  Rng rng(1001);
  const int64_t V = 37, D = 19, N = 11;
  Tensor table = randn({V, D}, rng);
  std::vector<int32_t> ids(N);
  for (auto& id : ids) id = static_cast<int32_t>(rng.next_u64() % V);
  ids[0] = 0, ids[1] = V - 1, ids[2] = ids[3];  // both ends of the vocabulary and a repeat
  Tensor out = Tensor::empty({N, D}, DType::F32, Device::CPU);
  ops::embedding(ctx, out, Tensor::from_i32({N}, ids), table);
  std::vector<double> ref;
  for (int64_t n = 0; n < N; n++)
    for (int64_t d = 0; d < D; d++) ref.push_back(table.ptr<float>()[ids[static_cast<size_t>(n)] * D + d]);
  EXPECT_TRUE(close(out, ref, 0.0));  // a lookup is exact

  // Ids outside [0, V) are errors naming the id and its position.
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out.slice(0, 2), Tensor::from_i32({2}, {3, 37}), table); },
                           {"token id 37", "position 1"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out.slice(0, 1), Tensor::from_i32({1}, {-1}), table); },
                           {"token id -1"}));
}

TEST(Ops, EmbeddingValidation) {
  Context ctx = Context::cpu();
  Rng rng(1002);
  Tensor table = randn({10, 4}, rng);
  Tensor ids = Tensor::from_i32({3}, {1, 2, 3});
  Tensor out = Tensor::empty({3, 4}, DType::F32, Device::CPU);
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, Tensor::empty({3, 5}, DType::F32, Device::CPU), ids, table); },
                           {"embedding", "out", "(3, 5)"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out, ids.to(Device::CPU, DType::I64), table); }, {"i32"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out, ids.view({3, 1}), table); }, {"ids"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out.view({12}), ids, table.view({40})); }, {"table"}));
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out, ids, fake_cuda(table)); }, {"embedding", "cuda"}));
  Tensor tb = table.to(Device::CPU, DType::BF16);
  EXPECT_TRUE(throws_error([&] { ops::embedding(ctx, out, ids, tb); }, {"embedding"}));
}

// ---- rmsnorm --------------------------------------------------------------------------------------------------------

std::vector<double> rmsnorm_ref(const Tensor& x, const Tensor& w, double eps) {
  const int64_t N = x.dim(0), D = x.dim(1);
  std::vector<double> out;
  for (int64_t n = 0; n < N; n++) {
    double ms = 0;
    for (int64_t i = 0; i < D; i++) ms += std::pow(static_cast<double>(x.ptr<float>()[n * D + i]), 2);
    ms /= static_cast<double>(D);
    for (int64_t i = 0; i < D; i++) out.push_back(x.ptr<float>()[n * D + i] / std::sqrt(ms + eps) * w.ptr<float>()[i]);
  }
  return out;
}

TEST(Ops, RmsNorm) {
  Context ctx = Context::cpu();
  Rng rng(1003);
  for (int64_t D : {1, 8, 67, 256}) {
    for (double scale : {1.0, 1e3, 1e-3}) {  // at 1e-3 the eps of 1e-5 matters (mean square ~1e-6)
      const int64_t N = 7;
      Tensor x = randn({N, D}, rng, scale);
      Tensor w = randn({D}, rng);
      Tensor out = Tensor::empty({N, D}, DType::F32, Device::CPU);
      ops::rmsnorm(ctx, out, x, w, 1e-5f);
      EXPECT_TRUE(close(out, rmsnorm_ref(x, w, 1e-5f))) << "D " << D << " scale " << scale;
      // In place (out aliases x).
      std::vector<double> ref = rmsnorm_ref(x, w, 1e-6f);
      ops::rmsnorm(ctx, x, x, w, 1e-6f);
      EXPECT_TRUE(close(x, ref)) << "in place, D " << D;
    }
  }
}

TEST(Ops, RmsNormValidation) {
  Context ctx = Context::cpu();
  Rng rng(1004);
  Tensor x = randn({3, 8}, rng), w = randn({8}, rng), out = Tensor::empty({3, 8}, DType::F32, Device::CPU);
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, out, x, randn({7}, rng), 1e-5f); }, {"rmsnorm", "(7,)"}));
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, out.view({8, 3}), x, w, 1e-5f); }, {"rmsnorm", "out"}));
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, out.view({24}), x.view({24}), w, 1e-5f); }, {"rmsnorm"}));
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, out, x, w.to(Device::CPU, DType::BF16), 1e-5f); }, {"f32", "bf16"}));
  EXPECT_TRUE(throws_error([&] { ops::rmsnorm(ctx, fake_cuda(out), x, w, 1e-5f); }, {"cuda"}));
}

// ---- matmul ---------------------------------------------------------------------------------------------------------

// out0 + x w^T + bias, in fp64.
std::vector<double> matmul_ref(const Tensor& x, const Tensor& w, const Tensor* bias, const std::vector<double>* out0) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  std::vector<double> out(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; m++) {
    for (int64_t n = 0; n < N; n++) {
      double s = out0 ? (*out0)[static_cast<size_t>(m * N + n)] : 0.0;
      for (int64_t k = 0; k < K; k++) s += static_cast<double>(x.ptr<float>()[m * K + k]) * w.ptr<float>()[n * K + k];
      if (bias) s += bias->ptr<float>()[n];
      out[static_cast<size_t>(m * N + n)] = s;
    }
  }
  return out;
}

TEST(Ops, Matmul) {
  Context ctx = Context::cpu();
  Rng rng(1005);
  struct Dims {
    int64_t M, K, N;
  };
  for (Dims d : {Dims{13, 37, 23}, Dims{1, 64, 5}, Dims{9, 1, 3}, Dims{4, 3, 1}, Dims{33, 129, 65}}) {
    SCOPED_TRACE(strfmt("M %lld K %lld N %lld", (long long)d.M, (long long)d.K, (long long)d.N));
    Tensor x = randn({d.M, d.K}, rng), w = randn({d.N, d.K}, rng), bias = randn({d.N}, rng);
    Tensor out = randn({d.M, d.N}, rng);  // garbage that must be overwritten
    ops::matmul(ctx, out, x, w);
    EXPECT_TRUE(close(out, matmul_ref(x, w, nullptr, nullptr))) << "plain";
    ops::matmul(ctx, out, x, w, &bias);
    EXPECT_TRUE(close(out, matmul_ref(x, w, &bias, nullptr))) << "bias";
    // accumulate: out += x w^T (+ bias).
    Tensor acc = randn({d.M, d.N}, rng);
    std::vector<double> acc0 = f64(acc);
    ops::matmul(ctx, acc, x, w, nullptr, true);
    EXPECT_TRUE(close(acc, matmul_ref(x, w, nullptr, &acc0))) << "accumulate";
    acc0 = f64(acc);
    ops::matmul(ctx, acc, x, w, &bias, true);
    EXPECT_TRUE(close(acc, matmul_ref(x, w, &bias, &acc0))) << "accumulate + bias";
  }
}

TEST(Ops, MatmulValidation) {
  Context ctx = Context::cpu();
  Rng rng(1006);
  Tensor x = randn({4, 6}, rng), w = randn({5, 6}, rng), out = Tensor::empty({4, 5}, DType::F32, Device::CPU);
  Tensor bias = randn({5}, rng);
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x, randn({5, 7}, rng)); }, {"matmul", "(4, 6)", "(5, 7)"}));
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out.view({5, 4}), x, w); }, {"matmul", "out", "(5, 4)"}));
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x.view({24}), w); }, {"matmul"}));
  Tensor b4 = randn({4}, rng);
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x, w, &b4); }, {"bias", "(4,)"}));
  Tensor wb = w.to(Device::CPU, DType::BF16);
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x, wb); }, {"matmul", "f32", "bf16"}));
  Tensor xb = x.to(Device::CPU, DType::BF16);
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, xb, wb); }, {"f32"}));  // the CPU path is f32 only
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x, fake_cuda(w)); }, {"cuda"}));
  Tensor bc = fake_cuda(bias);
  EXPECT_TRUE(throws_error([&] { ops::matmul(ctx, out, x, w, &bc); }, {"cuda"}));
}

// ---- rope -----------------------------------------------------------------------------------------------------------

// transformers' default inv_freq and _compute_llama3_parameters, transcribed in fp64 with the same structure
// (torch.where on wavelengths, then the medium band smoothed).
std::vector<double> inv_freq_ref(const ops::RopeConfig& c) {
  std::vector<double> out;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double inv = 1.0 / std::pow(c.theta, static_cast<double>(i) / static_cast<double>(c.head_dim));
    if (c.type == ops::RopeConfig::Type::Default) {
      out.push_back(inv);
      continue;
    }
    const double old_context_len = static_cast<double>(c.original_max_position);
    const double low_freq_wavelen = old_context_len / c.low_freq_factor;
    const double high_freq_wavelen = old_context_len / c.high_freq_factor;
    const double wavelen = 2 * kPi / inv;
    // wavelen < high_freq_wavelen: do nothing; wavelen > low_freq_wavelen: divide by factor
    double inv_freq_llama = wavelen > low_freq_wavelen ? inv / c.factor : inv;
    const double smooth_factor =
        (old_context_len / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
    const double smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / c.factor + smooth_factor * inv_freq_llama;
    const bool is_medium_freq = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    out.push_back(is_medium_freq ? smoothed_inv_freq : inv_freq_llama);
  }
  return out;
}

// The three llama3 bands an inv_freq table covers: {kept, smoothed, divided} counts.
std::array<int, 3> llama3_bands(const ops::RopeConfig& c) {
  std::array<int, 3> n{0, 0, 0};
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double wavelen = 2 * kPi * std::pow(c.theta, static_cast<double>(i) / static_cast<double>(c.head_dim));
    const double lo = static_cast<double>(c.original_max_position) / c.low_freq_factor;
    const double hi = static_cast<double>(c.original_max_position) / c.high_freq_factor;
    n[wavelen < hi ? 0 : wavelen > lo ? 2 : 1]++;
  }
  return n;
}

ops::RopeConfig llama3_rope(int64_t hs, double theta, double factor, double lo, double hi, int64_t orig) {
  ops::RopeConfig c;
  c.head_dim = hs, c.theta = theta, c.type = ops::RopeConfig::Type::Llama3;
  c.factor = factor, c.low_freq_factor = lo, c.high_freq_factor = hi, c.original_max_position = orig;
  return c;
}

TEST(Ops, RopeInvFreq) {
  ops::RopeConfig d;
  for (int64_t hs : {2, 8, 16, 128}) {
    for (double theta : {10000.0, 500000.0, 1e6}) {
      d.head_dim = hs, d.theta = theta;
      std::vector<float> got = ops::rope_inv_freq(d);
      ASSERT_EQ(got.size(), static_cast<size_t>(hs / 2));
      EXPECT_EQ(got[0], 1.0f);
      EXPECT_TRUE(close(got, inv_freq_ref(d))) << "default hs " << hs << " theta " << theta;
    }
  }
  // Llama-3.1/3.2 values (factor 8 / 32, original 8192) at HS 128, and the golden llama3 config (original 64, HS 16).
  for (const ops::RopeConfig& c : {llama3_rope(128, 500000.0, 8.0, 1.0, 4.0, 8192),
                                    llama3_rope(128, 500000.0, 32.0, 1.0, 4.0, 8192),
                                    llama3_rope(16, 500000.0, 8.0, 1.0, 4.0, 64),
                                    llama3_rope(64, 10000.0, 4.0, 2.0, 8.0, 512)}) {
    std::array<int, 3> bands = llama3_bands(c);
    SCOPED_TRACE(strfmt("hs %lld factor %g orig %lld: bands %d/%d/%d", (long long)c.head_dim, c.factor,
                        (long long)c.original_max_position, bands[0], bands[1], bands[2]));
    // Each configuration exercises all three bands, so the blend is tested, not just the two plateaus.
    EXPECT_GT(bands[0], 0);
    EXPECT_GT(bands[1], 0);
    EXPECT_GT(bands[2], 0);
    std::vector<float> got = ops::rope_inv_freq(c);
    std::vector<double> ref = inv_freq_ref(c);
    EXPECT_TRUE(close(got, ref));
    // Per element too: the low-frequency entries are tiny and would hide in the norm.
    for (size_t i = 0; i < got.size(); i++) EXPECT_NEAR(got[i] / ref[i], 1.0, 1e-6) << "index " << i;
  }
  ops::RopeConfig odd;
  odd.head_dim = 7;
  EXPECT_TRUE(throws_error([&] { ops::rope_inv_freq(odd); }, {"head_dim 7"}));
  odd.head_dim = 0;
  EXPECT_TRUE(throws_error([&] { ops::rope_inv_freq(odd); }, {"head_dim 0"}));
}

// x (N, NH, HS) rotated: the angle is pos * inv_freq rounded to fp32 once, as the op's contract says (ops/rope.h: "a
// computed in fp32", as transformers computes freqs); cos, sin and the rotation are fp64.
std::vector<double> rope_ref(const Tensor& x, const std::vector<int32_t>& pos, const std::vector<float>& inv) {
  const int64_t N = x.dim(0), NH = x.dim(1), HS = x.dim(2), half = HS / 2;
  std::vector<double> out = f64(x);
  for (int64_t n = 0; n < N; n++)
    for (int64_t h = 0; h < NH; h++)
      for (int64_t i = 0; i < half; i++) {
        const float a32 = static_cast<float>(pos[static_cast<size_t>(n)]) * inv[static_cast<size_t>(i)];
        const double a = a32;
        const size_t p = static_cast<size_t>((n * NH + h) * HS + i), q = p + static_cast<size_t>(half);
        const double x1 = x.ptr<float>()[p], x2 = x.ptr<float>()[q];
        out[p] = x1 * std::cos(a) - x2 * std::sin(a);
        out[q] = x2 * std::cos(a) + x1 * std::sin(a);
      }
  return out;
}

TEST(Ops, Rope) {
  Context ctx = Context::cpu();
  Rng rng(1007);
  for (int64_t HS : {8, 16, 2}) {
    for (bool llama3 : {false, true}) {
      ops::RopeConfig c = llama3 ? llama3_rope(HS, 500000.0, 8.0, 1.0, 4.0, 64) : ops::RopeConfig{};
      c.head_dim = HS;
      const std::vector<float> inv = ops::rope_inv_freq(c);
      const int64_t N = 9, NH = 3;
      std::vector<int32_t> pos(N);
      for (auto& p : pos) p = static_cast<int32_t>(rng.next_u64() % 4096);
      pos[0] = 0, pos[1] = 1, pos[2] = 131071;  // no rotation, one step, a long-context position
      Tensor x = randn({N, NH, HS}, rng);
      std::vector<double> ref = rope_ref(x, pos, inv);
      ops::rope(ctx, x, Tensor::from_i32({N}, pos), Tensor::from_f32({HS / 2}, inv));
      EXPECT_TRUE(close(x, ref)) << "HS " << HS << (llama3 ? " llama3" : " default");
    }
  }
}

TEST(Ops, RopeValidation) {
  Context ctx = Context::cpu();
  Rng rng(1008);
  Tensor x = randn({4, 2, 8}, rng);
  Tensor pos = Tensor::from_i32({4}, {0, 1, 2, 3});
  Tensor inv = Tensor::from_f32({4}, {1, 0.1f, 0.01f, 0.001f});
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, randn({4, 2, 7}, rng), pos, Tensor::from_f32({3}, {1, 1, 1})); },
                           {"rope", "even HS"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x.view({8, 8}), pos, inv); }, {"rope"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x, Tensor::from_i32({3}, {0, 1, 2}), inv); }, {"positions", "(3,)"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x, Tensor::from_f32({4}, {0, 1, 2, 3}), inv); }, {"i32"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x, pos, Tensor::from_f32({8}, std::vector<float>(8, 1))); },
                           {"inv_freq", "(8,)"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x, pos, Tensor::from_i32({4}, {1, 1, 1, 1})); }, {"inv_freq", "f32"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, x.to(Device::CPU, DType::BF16), pos, inv); }, {"f32"}));
  EXPECT_TRUE(throws_error([&] { ops::rope(ctx, fake_cuda(x), pos, inv); }, {"cuda"}));
}

// ---- attention ------------------------------------------------------------------------------------------------------

// out (B, T, H, HS): softmax over keys s < kv_len allowed by the mask (s <= p and, with a window, p - s < window).
std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, int64_t kv_len,
                                  double scale, int64_t window) {
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), S = k.dim(1), HKV = k.dim(2);
  const int64_t group = H / HKV;
  std::vector<double> out(static_cast<size_t>(B * T * H * HS), 0.0);
  auto Q = [&](int64_t b, int64_t t, int64_t h, int64_t i) { return (double)q.ptr<float>()[((b * T + t) * H + h) * HS + i]; };
  auto K = [&](int64_t b, int64_t s, int64_t j, int64_t i) { return (double)k.ptr<float>()[((b * S + s) * HKV + j) * HS + i]; };
  auto Vv = [&](int64_t b, int64_t s, int64_t j, int64_t i) { return (double)v.ptr<float>()[((b * S + s) * HKV + j) * HS + i]; };
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t h = 0; h < H; h++) {
        const int64_t p = pos0 + t, j = h / group;
        std::vector<double> score;
        std::vector<int64_t> keys;
        for (int64_t s = 0; s < kv_len; s++) {
          if (s > p || (window > 0 && p - s >= window)) continue;
          double dot = 0;
          for (int64_t i = 0; i < HS; i++) dot += Q(b, t, h, i) * K(b, s, j, i);
          score.push_back(scale * dot);
          keys.push_back(s);
        }
        const double m = *std::max_element(score.begin(), score.end());
        double z = 0;
        for (double& e : score) z += (e = std::exp(e - m));
        for (size_t n = 0; n < keys.size(); n++)
          for (int64_t i = 0; i < HS; i++)
            out[static_cast<size_t>(((b * T + t) * H + h) * HS + i)] += score[n] / z * Vv(b, keys[n], j, i);
      }
  return out;
}

// k or v (B, S, HKV, HS) with random rows below kv_len and NaN from kv_len on: the op must not read past kv_len.
Tensor cache_with_nan_tail(int64_t B, int64_t S, int64_t HKV, int64_t HS, int64_t kv_len, Rng& rng) {
  Tensor c = randn({B, S, HKV, HS}, rng);
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = kv_len; s < S; s++)
      for (int64_t i = 0; i < HKV * HS; i++) c.ptr<float>()[(b * S + s) * HKV * HS + i] = NAN;
  return c;
}

struct AttnCase {
  const char* what;
  int64_t B, T, H, HKV, HS, pos0, kv_len, S, window;
  double scale;  // 0: 1/sqrt(HS)
};

TEST(Ops, Attention) {
  Context ctx = Context::cpu();
  Rng rng(1009);
  const AttnCase cases[] = {
      {"prefill causal MHA", 2, 13, 4, 4, 16, 0, 13, 13, 0, 0},
      {"prefill GQA 3 groups", 1, 11, 6, 2, 8, 0, 11, 11, 0, 0},
      {"MQA", 2, 7, 5, 1, 16, 0, 7, 7, 0, 0},
      {"T = 1 at position 0", 3, 1, 4, 2, 8, 0, 1, 1, 0, 0},
      {"sliding window 5", 2, 17, 4, 2, 16, 0, 17, 17, 5, 0},
      {"window 1 (self only)", 1, 9, 2, 1, 8, 0, 9, 9, 1, 0},
      {"window longer than T", 1, 6, 2, 2, 8, 0, 6, 6, 50, 0},
      {"decode, kv_len < S", 2, 1, 4, 1, 8, 9, 10, 16, 0, 0},
      {"decode GQA with window", 1, 1, 6, 3, 16, 20, 21, 32, 6, 0},
      {"chunked prefill on a cache", 2, 5, 4, 2, 16, 7, 12, 20, 0, 0},
      {"chunked prefill with window", 1, 7, 4, 2, 8, 10, 17, 24, 4, 0},
      {"other scale", 1, 10, 2, 1, 16, 0, 10, 10, 0, 0.37},
      {"large scores", 1, 9, 2, 2, 8, 0, 9, 9, 0, 4.0},
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(c.what);
    Tensor q = randn({c.B, c.T, c.H, c.HS}, rng);
    Tensor k = cache_with_nan_tail(c.B, c.S, c.HKV, c.HS, c.kv_len, rng);
    Tensor v = cache_with_nan_tail(c.B, c.S, c.HKV, c.HS, c.kv_len, rng);
    const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.HS));
    Tensor out = randn({c.B, c.T, c.H, c.HS}, rng);
    ops::attention(ctx, out, q, k, v, c.pos0, c.kv_len, static_cast<float>(scale), c.window);
    EXPECT_TRUE(close(out, attention_ref(q, k, v, c.pos0, c.kv_len, static_cast<float>(scale), c.window)));
  }
}

TEST(Ops, AttentionDecodeMatchesPrefill) {
  // Prefill P tokens into a cache with kv_write, then decode one token at a time; every step's output must equal the
  // reference on the whole sequence (the cache starts as NaN, so any unwritten row that is read fails).
  Context ctx = Context::cpu();
  Rng rng(1010);
  const int64_t B = 2, H = 4, HKV = 2, HS = 8, P = 5, T = 12, S = 16;
  for (int64_t window : {0, 4}) {
    SCOPED_TRACE(strfmt("window %lld", (long long)window));
    Tensor q = randn({B, T, H, HS}, rng), k = randn({B, T, HKV, HS}, rng), v = randn({B, T, HKV, HS}, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
    std::vector<double> ref = attention_ref(q, k, v, 0, T, scale, window);
    Tensor kc = cache_with_nan_tail(B, S, HKV, HS, 0, rng), vc = cache_with_nan_tail(B, S, HKV, HS, 0, rng);
    // Slices along T of a (B, T, ...) tensor are not contiguous for B > 1; copy each step's rows out.
    auto steps = [&](const Tensor& x, int64_t t0, int64_t n) {
      const int64_t row = x.dim(2) * x.dim(3);
      Tensor o = Tensor::empty({B, n, x.dim(2), x.dim(3)}, DType::F32, Device::CPU);
      for (int64_t b = 0; b < B; b++)
        std::memcpy(o.ptr<float>() + b * n * row, x.ptr<float>() + (b * T + t0) * row, sizeof(float) * n * row);
      return o;
    };
    ops::kv_write(ctx, kc, steps(k, 0, P), 0);
    ops::kv_write(ctx, vc, steps(v, 0, P), 0);
    Tensor out0 = Tensor::empty({B, P, H, HS}, DType::F32, Device::CPU);
    ops::attention(ctx, out0, steps(q, 0, P), kc, vc, 0, P, scale, window);
    std::vector<double> ref0;
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < P * H * HS; i++) ref0.push_back(ref[static_cast<size_t>(b * T * H * HS + i)]);
    EXPECT_TRUE(close(out0, ref0)) << "prefill";
    for (int64_t t = P; t < T; t++) {
      ops::kv_write(ctx, kc, steps(k, t, 1), t);
      ops::kv_write(ctx, vc, steps(v, t, 1), t);
      Tensor o = Tensor::empty({B, 1, H, HS}, DType::F32, Device::CPU);
      ops::attention(ctx, o, steps(q, t, 1), kc, vc, t, t + 1, scale, window);
      std::vector<double> r;
      for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < H * HS; i++) r.push_back(ref[static_cast<size_t>((b * T + t) * H * HS + i)]);
      EXPECT_TRUE(close(o, r)) << "decode step " << t;
    }
  }
}

TEST(Ops, AttentionValidation) {
  Context ctx = Context::cpu();
  Rng rng(1011);
  Tensor q = randn({2, 3, 4, 8}, rng), k = randn({2, 10, 2, 8}, rng), v = randn({2, 10, 2, 8}, rng);
  Tensor out = Tensor::empty({2, 3, 4, 8}, DType::F32, Device::CPU);
  EXPECT_NO_THROW(ops::attention(ctx, out, q, k, v, 7, 10, 0.3f));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q.view({6, 4, 8}), k, v, 0, 3, 1.f); }, {"attention"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, k, randn({2, 10, 2, 4}, rng), 0, 3, 1.f); }, {"attention"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, randn({2, 10, 2, 4}, rng), randn({2, 10, 2, 4}, rng), 0, 3, 1.f); },
                           {"attention", "head size"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, randn({1, 10, 2, 8}, rng), randn({1, 10, 2, 8}, rng), 0, 3, 1.f); },
                           {"attention", "batch"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, randn({2, 10, 3, 8}, rng), randn({2, 10, 3, 8}, rng), 0, 3, 1.f); },
                           {"attention", "grouping"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, k, v, 8, 10, 1.f); }, {"pos0 8", "kv_len 10"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, k, v, 0, 11, 1.f); }, {"kv_len 11", "cache 10"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, k, v, -1, 3, 1.f); }, {"pos0 -1"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, k, v, 0, 3, 1.f, -2); }, {"negative window"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, Tensor::empty({2, 3, 4, 4}, DType::F32, Device::CPU), q, k, v, 0, 3, 1.f); },
                           {"attention", "out"}));
  Tensor kb = k.to(Device::CPU, DType::BF16), vb = v.to(Device::CPU, DType::BF16);
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, kb, vb, 0, 3, 1.f); }, {"dtype"}));
  EXPECT_TRUE(throws_error([&] { ops::attention(ctx, out, q, fake_cuda(k), v, 0, 3, 1.f); }, {"cuda"}));
}

// ---- kv_write -------------------------------------------------------------------------------------------------------

TEST(Ops, KvWrite) {
  Context ctx = Context::cpu();
  Rng rng(1012);
  const int64_t B = 3, S = 10, HKV = 3, HS = 8, T = 4, pos0 = 5;
  Tensor cache = randn({B, S, HKV, HS}, rng);
  const std::vector<float> before = cache.to_f32_vector();
  Tensor src = randn({B, T, HKV, HS}, rng);
  ops::kv_write(ctx, cache, src, pos0);
  const int64_t row = HKV * HS;
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++)
      for (int64_t i = 0; i < row; i++) {
        const float got = cache.ptr<float>()[(b * S + s) * row + i];
        const float want = (s >= pos0 && s < pos0 + T) ? src.ptr<float>()[(b * T + s - pos0) * row + i]
                                                       : before[static_cast<size_t>((b * S + s) * row + i)];
        ASSERT_EQ(got, want) << "b " << b << " s " << s << " i " << i;
      }
  // Writing the last rows exactly is fine; one past is an error.
  EXPECT_NO_THROW(ops::kv_write(ctx, cache, src, S - T));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, cache, src, S - T + 1); }, {"kv_write", "beyond cache length 10"}));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, cache, src, -1); }, {"kv_write"}));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, cache, randn({B, T, 2, HS}, rng), 0); }, {"kv_write", "do not fit"}));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, cache, randn({B + 1, T, HKV, HS}, rng), 0); }, {"kv_write"}));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, cache, src.to(Device::CPU, DType::BF16), 0); }, {"kv_write"}));
  EXPECT_TRUE(throws_error([&] { ops::kv_write(ctx, fake_cuda(cache), src, 0); }, {"cuda"}));
}

// ---- swiglu, add ------------------------------------------------------------------------------------------------------

TEST(Ops, Swiglu) {
  Context ctx = Context::cpu();
  Rng rng(1013);
  const int64_t N = 7, F = 45;
  Tensor gate = randn({N, F}, rng, 4.0), up = randn({N, F}, rng);
  gate.ptr<float>()[0] = 30.0f, gate.ptr<float>()[1] = -30.0f;  // saturated ends of the sigmoid
  std::vector<double> ref;
  for (int64_t i = 0; i < N * F; i++) {
    const double g = gate.ptr<float>()[i];
    ref.push_back(g / (1.0 + std::exp(-g)) * up.ptr<float>()[i]);
  }
  Tensor out = randn({N, F}, rng);
  ops::swiglu(ctx, out, gate, up);
  EXPECT_TRUE(close(out, ref));
  ops::swiglu(ctx, gate, gate, up);  // out aliases gate
  EXPECT_TRUE(close(gate, ref));
  EXPECT_TRUE(throws_error([&] { ops::swiglu(ctx, out, randn({N, F + 1}, rng), up); }, {"swiglu", "up"}));
  EXPECT_TRUE(throws_error([&] { ops::swiglu(ctx, out.view({F, N}), gate, up); }, {"swiglu", "out"}));
  EXPECT_TRUE(throws_error([&] { ops::swiglu(ctx, out, gate, up.to(Device::CPU, DType::BF16)); }, {"swiglu"}));
}

TEST(Ops, Add) {
  Context ctx = Context::cpu();
  Rng rng(1014);
  Tensor a = randn({5, 33}, rng), b = randn({5, 33}, rng, 100.0);
  std::vector<double> ref;
  for (int64_t i = 0; i < a.numel(); i++) ref.push_back(static_cast<double>(a.ptr<float>()[i]) + b.ptr<float>()[i]);
  Tensor out = Tensor::empty({5, 33}, DType::F32, Device::CPU);
  ops::add(ctx, out, a, b);
  EXPECT_TRUE(close(out, ref));
  ops::add(ctx, a, a, b);  // out aliases a
  EXPECT_TRUE(close(a, ref));
  EXPECT_TRUE(throws_error([&] { ops::add(ctx, out, a, randn({33, 5}, rng)); }, {"add", "b"}));
  EXPECT_TRUE(throws_error([&] { ops::add(ctx, out.view({165}), a, b); }, {"add", "out"}));
  EXPECT_TRUE(throws_error([&] { ops::add(ctx, out, a, b.to(Device::CPU, DType::BF16)); }, {"add", "dtypes"}));
  Tensor ab = a.to(Device::CPU, DType::BF16), bb = b.to(Device::CPU, DType::BF16), ob = ab.to(Device::CPU);
  EXPECT_TRUE(throws_error([&] { ops::add(ctx, ob, ab, bb); }, {"f32"}));
}

// ---- convert, fill_normal ---------------------------------------------------------------------------------------------


TEST(Ops, Convert) {
  Context ctx = Context::cpu();
  Rng rng(1015);
  const int64_t n = 4099;
  Tensor x = Tensor::empty({n}, DType::F32, Device::CPU);
  for (int64_t i = 0; i < n; i++)  // magnitudes 2^-26 .. 2^14: f16 subnormals included, nothing beyond f16 range
    x.ptr<float>()[i] = static_cast<float>(rng.normal() * std::ldexp(1.0, static_cast<int>(rng.next_u64() % 40) - 26));
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor h = Tensor::empty({n}, dt, Device::CPU);
    ops::convert(ctx, h, x);
    std::vector<float> got = h.to_f32_vector();
    for (int64_t i = 0; i < n; i++) {
      const double want = dt == DType::BF16 ? round_to_format(x.ptr<float>()[i], 7, -126)
                                            : round_to_format(x.ptr<float>()[i], 10, -14);
      ASSERT_EQ(static_cast<double>(got[static_cast<size_t>(i)]), want) << "element " << i << " = " << x.ptr<float>()[i];
    }
    // Back to f32 is exact, and a 2-D view converts the same (same numel).
    Tensor back = Tensor::empty({n}, DType::F32, Device::CPU);
    ops::convert(ctx, back, h);
    EXPECT_EQ(back.to_f32_vector(), got);
  }
  EXPECT_TRUE(throws_error([&] { ops::convert(ctx, Tensor::empty({n + 1}, DType::BF16, Device::CPU), x); }, {"convert"}));
  EXPECT_TRUE(throws_error([&] { ops::convert(ctx, Tensor::empty({n}, DType::I32, Device::CPU), x); },
                           {"convert", "floating"}));
  EXPECT_TRUE(throws_error([&] { ops::convert(ctx, fake_cuda(x), x); }, {"cuda"}));
}

TEST(Ops, FillNormal) {
  Context ctx = Context::cpu();
  const int64_t n = 100000;
  const uint64_t seed = 1016;
  const float mean = 0.25f, stdv = 0.02f;
  Tensor t = Tensor::empty({n}, DType::F32, Device::CPU);
  ops::fill_normal(ctx, t, seed, mean, stdv);
  // Reference: Box-Muller in fp64 from the same counter-based uniforms (core/rng.h): u1 in (0, 1) shifted by 2^-25.
  std::vector<double> ref(static_cast<size_t>(n));
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) {
    const double u1 = static_cast<double>(hash_uniform(seed, 2 * static_cast<uint64_t>(i))) + std::ldexp(1.0, -25);
    const double u2 = hash_uniform(seed, 2 * static_cast<uint64_t>(i) + 1);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * kPi * u2);
    ref[static_cast<size_t>(i)] = mean + stdv * z;
    s += t.ptr<float>()[i], s2 += static_cast<double>(t.ptr<float>()[i]) * t.ptr<float>()[i];
  }
  EXPECT_TRUE(close(t, ref));
  // The moments of 100k samples: mean within 5 standard errors (5 * 0.02 / sqrt(1e5)), std within ~5 as well.
  const double m = s / n, sd = std::sqrt(s2 / n - m * m);
  EXPECT_NEAR(m, mean, 5 * stdv / std::sqrt(static_cast<double>(n)));
  EXPECT_NEAR(sd, stdv, 0.012 * stdv);
  // Another seed gives other values; bf16/f16 fills are the f32 values rounded.
  Tensor t2 = Tensor::empty({n}, DType::F32, Device::CPU);
  ops::fill_normal(ctx, t2, seed + 1, mean, stdv);
  EXPECT_NE(t2.to_f32_vector(), t.to_f32_vector());
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor h = Tensor::empty({n}, dt, Device::CPU);
    ops::fill_normal(ctx, h, seed, mean, stdv);
    EXPECT_EQ(h.to_f32_vector(), t.to(Device::CPU, dt).to_f32_vector()) << dtype_name(dt);
  }
  EXPECT_TRUE(throws_error([&] { ops::fill_normal(ctx, Tensor::empty({3}, DType::I32, Device::CPU), 1, 0, 1); },
                           {"fill_normal", "floating"}));
}

// ---- softmax ----------------------------------------------------------------------------------------------------------

TEST(Ops, SoftmaxAndLogSoftmax) {
  Context ctx = Context::cpu();
  Rng rng(1017);
  const int64_t N = 6, V = 101;
  Tensor x = randn({N, V}, rng, 3.0);
  float* r = x.ptr<float>();
  // Row 1: huge logits of both signs (exp(1000) overflows even fp64 unless the max is subtracted first).
  r[V + 0] = 1000.0f, r[V + 5] = -1000.0f, r[V + 7] = 999.0f, r[V + 50] = 998.5f;
  // Row 2: everything near -1000.
  for (int64_t i = 0; i < V; i++) r[2 * V + i] -= 1000.0f;
  // Row 3: all equal -> uniform.
  for (int64_t i = 0; i < V; i++) r[3 * V + i] = 1000.0f;
  // Row 4: one logit far above the rest.
  r[4 * V + 17] = 200.0f;
  for (bool log : {false, true}) {
    SCOPED_TRACE(log ? "log_softmax" : "softmax");
    Tensor out = Tensor::empty({N, V}, DType::F32, Device::CPU);
    if (log) ops::log_softmax(ctx, out, x);
    else ops::softmax(ctx, out, x);
    for (int64_t n = 0; n < N; n++) {
      // fp64: logsumexp with the max subtracted, then x - lse.
      double m = -INFINITY;
      for (int64_t i = 0; i < V; i++) m = std::max(m, static_cast<double>(r[n * V + i]));
      double z = 0;
      for (int64_t i = 0; i < V; i++) z += std::exp(r[n * V + i] - m);
      const double lse = m + std::log(z);
      std::vector<double> ref;
      for (int64_t i = 0; i < V; i++) ref.push_back(log ? r[n * V + i] - lse : std::exp(r[n * V + i] - lse));
      std::vector<float> got(out.ptr<float>() + n * V, out.ptr<float>() + (n + 1) * V);
      EXPECT_TRUE(close(got, ref)) << "row " << n;  // row by row, so that no row hides behind another
      if (!log) {
        EXPECT_NEAR(std::accumulate(got.begin(), got.end(), 0.0), 1.0, 1e-5) << "row " << n;
      }
    }
    if (!log) {
      EXPECT_NEAR(out.ptr<float>()[3 * V + 42], 1.0 / V, 1e-7);
      EXPECT_NEAR(out.ptr<float>()[V + 0], 1.0 / (1.0 + std::exp(-1.0) + std::exp(-1.5)), 1e-6);
      EXPECT_EQ(out.ptr<float>()[V + 5], 0.0f);  // exp(-2000) underflows to exactly 0, not NaN
    } else {
      EXPECT_NEAR(out.ptr<float>()[V + 5], -2000.0 - std::log(1.0 + std::exp(-1.0) + std::exp(-1.5)), 1e-3);
    }
  }
}

TEST(Ops, SoftmaxValidation) {
  Context ctx = Context::cpu();
  Rng rng(1018);
  Tensor x = randn({3, 5}, rng);
  EXPECT_TRUE(throws_error([&] { ops::softmax(ctx, Tensor::empty({3, 6}, DType::F32, Device::CPU), x); }, {"softmax", "out"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax(ctx, Tensor::empty({15}, DType::F32, Device::CPU), x.view({15})); },
                           {"softmax", "(N, V)"}));
  EXPECT_TRUE(throws_error([&] { ops::softmax(ctx, Tensor::empty({3, 5}, DType::BF16, Device::CPU), x); },
                           {"softmax", "f32"}));
  EXPECT_TRUE(throws_error([&] { ops::log_softmax(ctx, Tensor::empty({3, 5}, DType::F32, Device::CPU),
                                                  x.to(Device::CPU, DType::BF16)); },
                           {"f32"}));
}

// ---- sample -----------------------------------------------------------------------------------------------------------

// One row per uniform, all with the same logits; returns the chosen ids.
std::vector<int32_t> sample_rows(Context& ctx, const std::vector<float>& logits, const std::vector<float>& uniforms,
                                 float temperature, float top_p) {
  const int64_t N = static_cast<int64_t>(uniforms.size()), V = static_cast<int64_t>(logits.size());
  std::vector<float> all;
  for (int64_t n = 0; n < N; n++) all.insert(all.end(), logits.begin(), logits.end());
  Tensor ids = Tensor::from_i32({N}, std::vector<int32_t>(static_cast<size_t>(N), -7));
  ops::sample(ctx, ids, Tensor::from_f32({N, V}, all), temperature, top_p, Tensor::from_f32({N}, uniforms));
  std::vector<int32_t> out(static_cast<size_t>(N));
  std::memcpy(out.data(), ids.data(), out.size() * 4);
  return out;
}

std::vector<float> log_probs(const std::vector<double>& p, double offset = 0.0, double temperature = 1.0) {
  std::vector<float> l;
  for (double e : p) l.push_back(static_cast<float>(temperature * std::log(e) + offset));
  return l;
}

TEST(Ops, SampleGreedyTiesToLowestIndex) {
  Context ctx = Context::cpu();
  Rng rng(1019);
  const int64_t V = 40;
  std::vector<float> rows;
  std::vector<int32_t> want;
  for (int r = 0; r < 4; r++) {
    std::vector<float> l(V);
    for (auto& e : l) e = rng.normal();
    if (r == 0) l[3] = l[7] = l[31] = 9.0f, want.push_back(3);          // a three-way tie at the max
    if (r == 1) l[V - 1] = 9.0f, want.push_back(static_cast<int32_t>(V - 1));  // the max at the end
    if (r == 2) std::fill(l.begin(), l.end(), -5.0f), want.push_back(0);  // all equal
    if (r == 3) l[12] = 1e30f, l[13] = 1e30f, want.push_back(12);       // huge tied logits
    rows.insert(rows.end(), l.begin(), l.end());
  }
  for (float temp : {0.0f, -1.0f}) {
    Tensor ids = Tensor::from_i32({4}, {-7, -7, -7, -7});
    ops::sample(ctx, ids, Tensor::from_f32({4, V}, rows), temp, 0.9f, Tensor::from_f32({4}, {0.1f, 0.5f, 0.9f, 0.99f}));
    std::vector<int64_t> got = ids.to_i64_vector();
    for (size_t i = 0; i < 4; i++) EXPECT_EQ(got[i], want[i]) << "row " << i << " temperature " << temp;
  }
}

TEST(Ops, SampleTopPKnownNucleus) {
  Context ctx = Context::cpu();
  // p = [0.05, 0.40, 0.10, 0.30, 0.15]; sorted 0.40, 0.30, 0.15, 0.10, 0.05 (cumulative .40 .70 .85 .95 1.0).
  const std::vector<double> p = {0.05, 0.40, 0.10, 0.30, 0.15};
  for (double offset : {0.0, 1000.0, -1000.0}) {  // adding a constant to every logit changes nothing
    SCOPED_TRACE(strfmt("offset %g", offset));
    const std::vector<float> l = log_probs(p, offset);
    // top_p 0.6: nucleus {1, 3}, mass 0.7; walk in index order: id 1 while u*0.7 < 0.4 (u < 0.571), then id 3.
    EXPECT_EQ(sample_rows(ctx, l, {0.0f, 0.3f, 0.55f, 0.6f, 0.8f, 0.999f}, 1.0f, 0.6f),
              (std::vector<int32_t>{1, 1, 1, 3, 3, 3}));
    // top_p 0.8: nucleus {1, 3, 4}, mass 0.85; cumulative in index order 0.40, 0.70, 0.85:
    //   u*0.85 < 0.4 (u < 0.47) -> 1; < 0.7 (u < 0.824) -> 3; else 4. Ids 0 and 2 are never chosen.
    EXPECT_EQ(sample_rows(ctx, l, {0.01f, 0.45f, 0.5f, 0.8f, 0.85f, 0.99f}, 1.0f, 0.8f),
              (std::vector<int32_t>{1, 1, 3, 3, 4, 4}));
    // top_p 1: every token; cumulative in index order .05 .45 .55 .85 1.0.
    EXPECT_EQ(sample_rows(ctx, l, {0.01f, 0.3f, 0.5f, 0.7f, 0.9f}, 1.0f, 1.0f),
              (std::vector<int32_t>{0, 1, 2, 3, 4}));
    // top_p 0.1: only the most likely token, whatever u is.
    EXPECT_EQ(sample_rows(ctx, l, {0.0f, 0.5f, 0.999f}, 1.0f, 0.1f), (std::vector<int32_t>{1, 1, 1}));
  }
  // Ties at tau stay in: p = [0.3, 0.2, 0.3, 0.2]. top_p 0.5 -> tau 0.3, nucleus {0, 2} (mass 0.6): u*0.6 < 0.3 -> 0.
  const std::vector<float> tied = log_probs({0.3, 0.2, 0.3, 0.2});
  EXPECT_EQ(sample_rows(ctx, tied, {0.2f, 0.45f, 0.55f, 0.9f}, 1.0f, 0.5f), (std::vector<int32_t>{0, 0, 2, 2}));
  // top_p 0.65 -> tau 0.2 and both 0.2s are kept: the whole vocabulary, cumulative .3 .5 .8 1.0.
  EXPECT_EQ(sample_rows(ctx, tied, {0.2f, 0.4f, 0.7f, 0.9f}, 1.0f, 0.65f), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(Ops, SampleTemperature) {
  Context ctx = Context::cpu();
  // Logits 2 log q: at temperature 2 the probabilities are q = [.1 .2 .3 .4] (cumulative .1 .3 .6 1.0); at
  // temperature 1 they are q^2 / sum q^2 = [1 4 9 16] / 30 (cumulative .033 .167 .467 1.0).
  const std::vector<float> l = log_probs({0.1, 0.2, 0.3, 0.4}, 0.0, 2.0);
  const std::vector<float> u = {0.05f, 0.2f, 0.45f, 0.8f};
  EXPECT_EQ(sample_rows(ctx, l, u, 2.0f, 1.0f), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(sample_rows(ctx, l, u, 1.0f, 1.0f), (std::vector<int32_t>{1, 2, 2, 3}));
  // A very low temperature is (almost) greedy: p(3) = 1 - 1e-12.
  EXPECT_EQ(sample_rows(ctx, l, u, 0.01f, 1.0f), (std::vector<int32_t>{3, 3, 3, 3}));
  // Temperature and top-p together: at temperature 2, top_p 0.65 keeps {3, 2} (mass .7): u*.7 < .3 -> 2.
  EXPECT_EQ(sample_rows(ctx, l, {0.1f, 0.4f, 0.45f, 0.9f}, 2.0f, 0.65f), (std::vector<int32_t>{2, 2, 3, 3}));
}

// The rule of ops/sampling.h in fp64: p = softmax(l / T); tau = the largest p_j such that the mass of {p_i >= tau} is
// >= top_p; nucleus {p_i >= tau} of mass M; the first nucleus index (in index order) whose running sum exceeds u*M.
int32_t sample_ref(const std::vector<float>& l, double temperature, double top_p, double u) {
  const double m = *std::max_element(l.begin(), l.end());
  std::vector<double> p;
  double z = 0;
  for (float e : l) z += p.emplace_back(std::exp((e - m) / temperature));
  for (double& e : p) e /= z;
  double tau = 0;
  if (top_p < 1) {
    std::vector<double> s = p;
    std::sort(s.rbegin(), s.rend());
    for (double cand : s) {
      double mass = 0;
      for (double e : p)
        if (e >= cand) mass += e;
      tau = cand;
      if (mass >= top_p) break;
    }
  }
  double M = 0;
  for (double e : p)
    if (e >= tau) M += e;
  double run = 0;
  int32_t last = -1;
  for (size_t i = 0; i < p.size(); i++) {
    if (p[i] < tau) continue;
    run += p[i];
    last = static_cast<int32_t>(i);
    if (run > u * M) return last;
  }
  return last;
}

TEST(Ops, SampleMatchesReferenceOnRandomRows) {
  Context ctx = Context::cpu();
  Rng rng(1020);
  const int64_t N = 200, V = 50;
  int checked = 0;
  std::vector<int> counts(V, 0);
  for (int64_t n = 0; n < N; n++) {
    std::vector<float> l(V);
    for (auto& e : l) e = 2.0f * rng.normal();
    const float temperature = 0.5f + rng.uniform();
    const float top_p = n % 4 == 0 ? 1.0f : 0.3f + 0.65f * rng.uniform();
    const float u = rng.uniform();
    const int32_t want = sample_ref(l, temperature, top_p, u);
    // fp32 and fp64 may disagree only at a boundary: keep the rows whose answer is stable under nudges of 1e-4.
    bool stable = true;
    for (double dp : {-1e-4, 1e-4})
      for (double du : {-1e-4, 1e-4})
        stable &= sample_ref(l, temperature, std::min(1.0, top_p + dp), std::clamp(u + du, 0.0, 0.9999)) == want;
    if (!stable) continue;
    checked++;
    counts[static_cast<size_t>(want)]++;
    EXPECT_EQ(sample_rows(ctx, l, {u}, temperature, top_p)[0], want)
        << "row " << n << " temperature " << temperature << " top_p " << top_p << " u " << u;
  }
  EXPECT_GT(checked, 190);
  EXPECT_GT(std::count_if(counts.begin(), counts.end(), [](int c) { return c > 0; }), 20);  // many different ids
}

TEST(Ops, SampleValidation) {
  Context ctx = Context::cpu();
  Tensor logits = Tensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor ids = Tensor::from_i32({2}, {0, 0});
  Tensor u = Tensor::from_f32({2}, {0.5f, 0.5f});
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, Tensor::from_i32({3}, {0, 0, 0}), logits, 1.f, 1.f, u); },
                           {"sample", "ids"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, logits, 1.f, 1.f, Tensor::from_f32({1}, {0.5f})); },
                           {"sample", "uniforms"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, logits.to(Device::CPU, DType::BF16), 1.f, 1.f, u); },
                           {"sample", "logits"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, logits.view({6}), 1.f, 1.f, u); }, {"sample", "logits"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids.to(Device::CPU, DType::I64), logits, 1.f, 1.f, u); },
                           {"sample", "i32"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, logits, 1.f, 0.f, u); }, {"top_p"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, logits, 1.f, -0.5f, u); }, {"top_p"}));
  EXPECT_TRUE(throws_error([&] { ops::sample(ctx, ids, fake_cuda(logits), 1.f, 1.f, u); }, {"cuda"}));
}

}  // namespace
}  // namespace liger
