// tests/core/test_core.cpp — Shape/Tensor views, dtype conversions, Arena, memory accounting, Rng, strfmt, errors.
//
// Expected values of the conversions are derived by hand from bit patterns (see the comments at each case) or by an
// independent fp64 rounding written here, never by calling the conversion under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/check.h"
#include "core/dtype.h"
#include "core/json.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::round_to_format;
using test::throws_error;

// ---- helpers ------------------------------------------------------------------------------------------------------

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}


double round_bf16(double x) { return round_to_format(x, 7, -126); }
double round_f16(double x) { return round_to_format(x, 10, -14); }

Tensor bf16_tensor(const std::vector<uint16_t>& bits) {
  Tensor t = Tensor::empty({static_cast<int64_t>(bits.size())}, DType::BF16, Device::CPU);
  std::memcpy(t.data(), bits.data(), bits.size() * 2);
  return t;
}
Tensor f16_tensor(const std::vector<uint16_t>& bits) {
  Tensor t = Tensor::empty({static_cast<int64_t>(bits.size())}, DType::F16, Device::CPU);
  std::memcpy(t.data(), bits.data(), bits.size() * 2);
  return t;
}
std::vector<uint16_t> u16_of(const Tensor& t) {
  std::vector<uint16_t> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data(), v.size() * 2);
  return v;
}
// f32 -> dtype through copy() (the path under test), returning the raw 16-bit patterns.
std::vector<uint16_t> convert16(const std::vector<float>& x, DType dt) {
  Tensor src = Tensor::from_f32({static_cast<int64_t>(x.size())}, x);
  Tensor dst = Tensor::empty(src.shape(), dt, Device::CPU);
  copy(dst, src);
  return u16_of(dst);
}
bool bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }
bool f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }

// ---- Shape ----------------------------------------------------------------------------------------------------------

TEST(Shape, NumelStrEquality) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.ndim(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s[-1], 4);  // negative index counts from the end
  EXPECT_EQ(s.str(), "(2, 3, 4)");
  EXPECT_EQ(Shape({5}).str(), "(5,)");
  EXPECT_EQ(Shape().str(), "()");
  EXPECT_EQ(Shape().numel(), 1);  // a 0-dim tensor holds one element
  EXPECT_EQ(Shape({3, 0, 2}).numel(), 0);
  EXPECT_TRUE(Shape({2, 3}) == Shape(std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(Shape({2, 3}) != Shape({3, 2}));
  EXPECT_TRUE(Shape({2, 3}) != Shape({2, 3, 1}));
}

TEST(Shape, RankAboveMaxIsError) {
  EXPECT_TRUE(throws_error([] { Shape s{1, 2, 3, 4, 5, 6, 7}; (void)s; }, {"rank 7"}));
  EXPECT_TRUE(throws_error([] { Shape s(std::vector<int64_t>(8, 1)); (void)s; }, {"rank 8"}));
  Shape ok{1, 2, 3, 4, 5, 6};  // kMaxDims itself is fine
  EXPECT_EQ(ok.numel(), 720);
}

// ---- Tensor views -------------------------------------------------------------------------------------------------

TEST(Tensor, ViewSliceRowShareMemory) {
  std::vector<float> vals(24);
  for (size_t i = 0; i < vals.size(); i++) vals[i] = static_cast<float>(i) + 0.5f;
  Tensor t = Tensor::from_f32({4, 3, 2}, vals);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.dim(1), 3);
  EXPECT_EQ(t.str(), "f32 cpu (4, 3, 2)");

  Tensor v = t.view({6, 4});
  EXPECT_EQ(v.data(), t.data());
  EXPECT_EQ(v.shape(), Shape({6, 4}));
  EXPECT_EQ(v.ptr<float>()[4 * 2 + 3], 11.5f);

  Tensor s = t.slice(1, 2);  // rows 1..2 of dim 0: elements 6..17
  EXPECT_EQ(s.shape(), Shape({2, 3, 2}));
  EXPECT_EQ(s.ptr<float>(), t.ptr<float>() + 6);
  EXPECT_EQ(s.to_f32_vector().front(), 6.5f);
  EXPECT_EQ(s.to_f32_vector().back(), 17.5f);

  Tensor r = t.row(3);  // dim 0 removed
  EXPECT_EQ(r.shape(), Shape({3, 2}));
  EXPECT_EQ(r.ptr<float>(), t.ptr<float>() + 18);
  EXPECT_EQ(r.ptr<float>()[5], 23.5f);

  // A write through a view is visible in the original.
  s.ptr<float>()[0] = -7.0f;
  EXPECT_EQ(t.ptr<float>()[6], -7.0f);

  // Empty slices are legal at both ends.
  EXPECT_EQ(t.slice(0, 0).numel(), 0);
  EXPECT_EQ(t.slice(4, 0).numel(), 0);
  EXPECT_EQ(t.slice(0, 4).data(), t.data());

  // Slicing a bf16 tensor advances by 2-byte elements.
  Tensor b = Tensor::zeros({5, 3}, DType::BF16, Device::CPU);
  EXPECT_EQ(static_cast<char*>(b.slice(2, 1).data()) - static_cast<char*>(b.data()), 2 * 3 * 2);
}

TEST(Tensor, ViewsKeepMemoryAlive) {
  const size_t before = mem_stats(Device::CPU).current;
  Tensor r;
  {
    Tensor t = Tensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
    EXPECT_EQ(mem_stats(Device::CPU).current, before + 24);
    r = t.row(1);
  }
  // The owner is shared with the view: the allocation is still held and readable.
  EXPECT_EQ(mem_stats(Device::CPU).current, before + 24);
  EXPECT_EQ(r.to_f32_vector(), (std::vector<float>{4, 5, 6}));
  r = Tensor();
  EXPECT_EQ(mem_stats(Device::CPU).current, before);
}

TEST(Tensor, BadViewSliceRowAreErrors) {
  Tensor t = Tensor::zeros({4, 3}, DType::F32, Device::CPU);
  EXPECT_TRUE(throws_error([&] { t.view({5, 3}); }, {"view", "(4, 3)", "(5, 3)"}));
  EXPECT_TRUE(throws_error([&] { t.view({13}); }, {"view"}));
  EXPECT_TRUE(throws_error([&] { t.slice(3, 2); }, {"slice", "[3, 5)", "(4, 3)"}));
  EXPECT_TRUE(throws_error([&] { t.slice(-1, 1); }, {"slice"}));
  EXPECT_TRUE(throws_error([&] { t.slice(0, -1); }, {"slice"}));
  EXPECT_TRUE(throws_error([&] { t.slice(5, 0); }, {"slice"}));
  EXPECT_TRUE(throws_error([&] { t.row(4); }, {"slice"}));
  EXPECT_TRUE(throws_error([&] { t.row(-1); }, {"slice"}));
  Tensor scalar = Tensor::zeros(Shape(), DType::F32, Device::CPU);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_TRUE(throws_error([&] { scalar.slice(0, 1); }, {"slice"}));
  EXPECT_TRUE(throws_error([] { Tensor::from_f32({2, 2}, {1, 2, 3}); }, {"from_f32", "3 values", "(2, 2)"}));
  EXPECT_TRUE(throws_error([] { Tensor::from_i32({2}, {1, 2, 3}); }, {"from_i32"}));
}

TEST(Tensor, IntegerCopiesAndVectors) {
  Tensor a = Tensor::from_i32({4}, {-3, 0, 7, 2147483647});
  Tensor b = a.to(Device::CPU, DType::I64);
  EXPECT_EQ(b.to_i64_vector(), (std::vector<int64_t>{-3, 0, 7, 2147483647}));
  Tensor c = Tensor::empty({2, 2}, DType::I32, Device::CPU);
  copy(c, b);  // equal numel, different shape is allowed
  EXPECT_EQ(c.to_i64_vector(), (std::vector<int64_t>{-3, 0, 7, 2147483647}));
  EXPECT_TRUE(throws_error([&] { a.to_f32_vector(); }, {"to_f32_vector", "i32"}));
  Tensor f = Tensor::from_f32({4}, {1, 2, 3, 4});
  EXPECT_TRUE(throws_error([&] { f.to_i64_vector(); }, {"to_i64_vector", "f32"}));
  EXPECT_TRUE(throws_error([&] { copy(a, f); }, {"cannot convert", "f32", "i32"}));
  EXPECT_TRUE(throws_error([&] { copy(f, a); }, {"cannot convert", "i32", "f32"}));
  EXPECT_TRUE(throws_error([&] { copy(Tensor::empty({5}, DType::F32, Device::CPU), f); }, {"copy", "(4,)", "(5,)"}));
}

// ---- dtype conversions ----------------------------------------------------------------------------------------------

TEST(DType, NamesSizesParsing) {
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::F16), 2u);
  EXPECT_EQ(dtype_size(DType::I32), 4u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_STREQ(dtype_name(DType::BF16), "bf16");
  EXPECT_STREQ(device_name(Device::CUDA), "cuda");
  EXPECT_EQ(parse_dtype("bfloat16"), DType::BF16);
  EXPECT_EQ(parse_dtype("f16"), DType::F16);
  EXPECT_EQ(parse_dtype("float32"), DType::F32);
  EXPECT_EQ(parse_device("cpu"), Device::CPU);
  EXPECT_EQ(parse_device("cuda"), Device::CUDA);
  EXPECT_TRUE(throws_error([] { parse_dtype("f64"); }, {"--dtype", "f64"}));
  EXPECT_TRUE(throws_error([] { parse_device("tpu"); }, {"--device", "tpu"}));
}

TEST(DType, Bf16RoundToNearestEvenByHand) {
  // bf16 keeps the top 16 bits of the f32 pattern; the low 16 bits decide the rounding (0x8000 = exactly half).
  struct Case {
    float in;
    uint16_t want;
    const char* why;
  };
  const Case cases[] = {
      // 1 + 2^-8 = 0x3F808000: kept 0x3F80 (even), rest 0x8000 = tie -> stays 0x3F80 = 1.0
      {1.00390625f, 0x3F80, "tie to even, down"},
      // 1 + 2^-7 + 2^-8 = 0x3F818000: kept 0x3F81 (odd), rest 0x8000 = tie -> 0x3F82 = 1 + 2/128 = 1.015625
      {1.01171875f, 0x3F82, "tie to even, up"},
      // 1 + 2^-8 + 2^-20 = 0x3F808008: rest 0x8008 > half -> 0x3F81 = 1.0078125
      {1.00390720367431640625f, 0x3F81, "above half"},
      // 1 + 2^-8 - 2^-23 = 0x3F807FFF: rest 0x7FFF < half -> 0x3F80
      {1.00390613079071044921875f, 0x3F80, "below half"},
      // -1.01171875 = 0xBF818000 -> 0xBF82 (sign does not change the rounding of the magnitude)
      {-1.01171875f, 0xBF82, "negative tie"},
      // FLT_MAX = 0x7F7FFFFF: rest 0xFFFF rounds up into the exponent -> 0x7F80 = +inf (as torch does)
      {std::numeric_limits<float>::max(), 0x7F80, "overflow to inf"},
      // 3.0 = 0x40400000: exact
      {3.0f, 0x4040, "exact"},
      // -0.0 = 0x80000000 keeps its sign
      {-0.0f, 0x8000, "negative zero"},
      // +inf = 0x7F800000 stays inf
      {std::numeric_limits<float>::infinity(), 0x7F80, "inf"},
      // smallest f32 subnormal 2^-149 = 0x00000001: rest 0x0001 < half -> +0
      {f32_from_bits(0x00000001u), 0x0000, "tiny subnormal"},
      // 0x00018000 (f32 subnormal): kept 0x0001 odd, tie -> 0x0002
      {f32_from_bits(0x00018000u), 0x0002, "subnormal tie"},
  };
  for (const Case& c : cases) {
    uint16_t got = convert16({c.in}, DType::BF16)[0];
    EXPECT_EQ(got, c.want) << c.why << ": 0x" << std::hex << f32_bits(c.in);
    EXPECT_EQ(got, f32_to_bf16(c.in)) << c.why;  // the scalar helper agrees with copy()
  }
  // Back to f32 is exact: the 16 bits become the top half of the pattern.
  Tensor b = bf16_tensor({0x3F82, 0xBF82, 0x0002, 0x7F80});
  std::vector<float> f = b.to_f32_vector();
  EXPECT_EQ(f[0], 1.015625f);
  EXPECT_EQ(f[1], -1.015625f);
  EXPECT_EQ(f32_bits(f[2]), 0x00020000u);
  EXPECT_TRUE(std::isinf(f[3]) && f[3] > 0);
}

TEST(DType, Bf16NaNStaysNaN) {
  // A quiet NaN, and a signalling NaN whose payload lies only in the low 16 bits (0x7F800001): truncating the latter
  // would give 0x7F80 = inf, and rounding would carry into 0x7F81; both must come out as NaN.
  std::vector<float> in = {std::numeric_limits<float>::quiet_NaN(), f32_from_bits(0x7F800001u),
                           f32_from_bits(0xFFFFFFFFu), f32_from_bits(0x7FFFFFFFu)};
  std::vector<uint16_t> out = convert16(in, DType::BF16);
  for (size_t i = 0; i < out.size(); i++) EXPECT_TRUE(bf16_is_nan(out[i])) << i << ": 0x" << std::hex << out[i];
  for (float f : bf16_tensor(out).to_f32_vector()) EXPECT_TRUE(std::isnan(f));
}

TEST(DType, F16RoundToNearestEvenByHand) {
  // f16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Spacing near 1 is 2^-10; max finite 65504 = 0x7BFF;
  // the smallest normal is 2^-14 = 0x0400; subnormals are k * 2^-24, k = 1..1023.
  struct Case {
    float in;
    uint16_t want;
    const char* why;
  };
  const Case cases[] = {
      {1.0f, 0x3C00, "one"},
      {1.0f + 0x1p-11f, 0x3C00, "1 + half ulp: tie to even, down"},
      {1.0f + 0x1p-10f + 0x1p-11f, 0x3C02, "1 + 1.5 ulp: tie to even, up -> 1 + 2^-9"},
      {1.0f + 0x1p-11f + 0x1p-20f, 0x3C01, "just above half"},
      {-2.5f, 0xC100, "-2.5 = -1.25 * 2^1: sign, exponent 16, mantissa 0x100"},
      {65504.0f, 0x7BFF, "max finite"},
      {65519.0f, 0x7BFF, "below the midpoint to 65536"},
      {65520.0f, 0x7C00, "midpoint 65520: tie to even rounds to 2^16 -> inf"},
      {1e6f, 0x7C00, "overflow"},
      {-std::numeric_limits<float>::infinity(), 0xFC00, "-inf"},
      {-0.0f, 0x8000, "-0"},
      {0x1p-14f, 0x0400, "smallest normal"},
      {0x1p-24f, 0x0001, "smallest subnormal"},
      {0x1p-25f, 0x0000, "half the smallest subnormal: tie to even -> 0"},
      {0x1.8p-25f, 0x0001, "0.75 * 2^-24 -> rounds up to 2^-24"},
      {0x1p-26f, 0x0000, "a quarter of the smallest subnormal -> 0"},
      {0x1.8p-24f, 0x0002, "1.5 * 2^-24: tie between 1 and 2 -> 2 (even)"},
      {0x1.4p-23f, 0x0002, "2.5 * 2^-24: tie between 2 and 3 -> 2 (even)"},
      {1023.0f * 0x1p-24f, 0x03FF, "largest subnormal"},
      {1023.5f * 0x1p-24f, 0x0400, "tie between the largest subnormal and the smallest normal -> 0x0400 (even)"},
      {-341.0f * 0x1p-24f, 0x8155, "negative subnormal 341 * 2^-24"},
      {1e-10f, 0x0000, "far below the subnormal range"},
  };
  for (const Case& c : cases) {
    uint16_t got = convert16({c.in}, DType::F16)[0];
    EXPECT_EQ(got, c.want) << c.why << ": in " << c.in << " got 0x" << std::hex << got;
  }
}

TEST(DType, F16ToF32Exact) {
  // Each pattern decoded by hand: value = (-1)^s * 2^(e-15) * (1 + m/1024), or m * 2^-24 when e = 0.
  Tensor h = f16_tensor({0x0001, 0x0155, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x3555, 0x7BFF, 0xC100, 0x7C00, 0xFC00,
                         0x8000});
  std::vector<float> f = h.to_f32_vector();
  EXPECT_EQ(f[0], 0x1p-24f);
  EXPECT_EQ(f[1], 341.0f * 0x1p-24f);
  EXPECT_EQ(f[2], -0x1p-24f);
  EXPECT_EQ(f[3], 1023.0f * 0x1p-24f);
  EXPECT_EQ(f[4], 0x1p-14f);
  EXPECT_EQ(f[5], 1.0f);
  EXPECT_EQ(f[6], 0x1p-2f * (1.0f + 341.0f / 1024.0f));  // e = 13, m = 0x155 = 341
  EXPECT_EQ(f[7], 65504.0f);
  EXPECT_EQ(f[8], -2.5f);
  EXPECT_TRUE(std::isinf(f[9]) && f[9] > 0);
  EXPECT_TRUE(std::isinf(f[10]) && f[10] < 0);
  EXPECT_EQ(f32_bits(f[11]), 0x80000000u);
  // Every one of the 2^16 patterns survives f16 -> f32 -> f16 unchanged (NaNs stay NaN).
  for (uint32_t b = 0; b < 65536; b++) {
    uint16_t h16 = static_cast<uint16_t>(b);
    float x = f16_to_f32(h16);
    if (f16_is_nan(h16)) {
      ASSERT_TRUE(std::isnan(x)) << std::hex << b;
      ASSERT_TRUE(f16_is_nan(f32_to_f16(x))) << std::hex << b;
    } else {
      ASSERT_EQ(f32_to_f16(x), h16) << std::hex << b;
    }
  }
}

TEST(DType, F16NaNStaysNaN) {
  // 0x7F800001 has its payload below the 13 bits f16 drops: it must still come out as NaN, not inf.
  std::vector<float> in = {std::numeric_limits<float>::quiet_NaN(), f32_from_bits(0x7F800001u),
                           f32_from_bits(0xFFC00000u)};
  std::vector<uint16_t> out = convert16(in, DType::F16);
  for (size_t i = 0; i < out.size(); i++) EXPECT_TRUE(f16_is_nan(out[i])) << i << ": 0x" << std::hex << out[i];
  for (float f : f16_tensor(out).to_f32_vector()) EXPECT_TRUE(std::isnan(f));
}

TEST(DType, RandomValuesMatchFp64Rounding) {
  // Random magnitudes from 2^-30 to 2^15 (covering f16 subnormals) against the fp64 grid rounding above.
  Rng rng(101);
  std::vector<float> x(20000);
  for (float& v : x) {
    double mag = std::ldexp(1.0 + rng.uniform_f64(), static_cast<int>(rng.next_u64() % 46) - 30);
    v = static_cast<float>(rng.uniform() < 0.5f ? -mag : mag);
  }
  std::vector<uint16_t> b = convert16(x, DType::BF16);
  std::vector<uint16_t> h = convert16(x, DType::F16);
  std::vector<float> bf = bf16_tensor(b).to_f32_vector();
  std::vector<float> hf = f16_tensor(h).to_f32_vector();
  for (size_t i = 0; i < x.size(); i++) {
    ASSERT_EQ(static_cast<double>(bf[i]), round_bf16(x[i])) << "bf16 of " << x[i];
    const double want_h = round_f16(x[i]);  // beyond 65504 the f16 result is inf
    if (std::fabs(want_h) > 65504.0) {
      ASSERT_TRUE(std::isinf(hf[i]) && (hf[i] > 0) == (x[i] > 0)) << "f16 of " << x[i];
    } else {
      ASSERT_EQ(static_cast<double>(hf[i]), want_h) << "f16 of " << x[i];
    }
  }
}

TEST(DType, CopyBetweenHalfTypes) {
  // bf16 -> f16 goes through the exact f32 value, then rounds to f16.
  //   0x3F81 = 1 + 2^-7 (exact in f16: 0x3C08); 0x5015 = 2^33 * 1.1640625 (beyond 65504 -> f16 inf);
  //   0x3580 = 2^-20 (an f16 subnormal: 16 * 2^-24 = 0x0010); 0x3380 = 2^-24 -> 0x0001.
  Tensor b = bf16_tensor({0x3F81, 0x5015, 0x3580, 0x3380});
  Tensor h = Tensor::empty({4}, DType::F16, Device::CPU);
  copy(h, b);
  EXPECT_EQ(u16_of(h), (std::vector<uint16_t>{0x3C08, 0x7C00, 0x0010, 0x0001}));
  // f16 -> bf16: 0x3C01 = 1 + 2^-10 lies between bf16 1.0 and 1.0078125, below half -> 0x3F80;
  //   0x0001 = 2^-24 is exact in bf16 (0x3380); 0x7BFF = 65504 = 1.9990234375 * 2^15 rounds to 2^16 = 0x4780.
  Tensor h2 = f16_tensor({0x3C01, 0x0001, 0x7BFF});
  Tensor b2 = h2.to(Device::CPU, DType::BF16);
  EXPECT_EQ(u16_of(b2), (std::vector<uint16_t>{0x3F80, 0x3380, 0x4780}));
}

// ---- Arena ----------------------------------------------------------------------------------------------------------

TEST(Arena, AlignmentUsePeakReset) {
  Arena a("activations", Device::CPU, 4096);
  EXPECT_EQ(a.name(), "activations");
  EXPECT_EQ(a.capacity(), 4096u);
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(Arena::footprint({3}, DType::F32), 256u);
  EXPECT_EQ(Arena::footprint({64}, DType::F32), 256u);
  EXPECT_EQ(Arena::footprint({65}, DType::F32), 512u);
  EXPECT_EQ(Arena::footprint({0}, DType::F32), 0u);
  EXPECT_EQ(Arena::footprint({100, 3}, DType::BF16), 768u);

  Tensor t1 = a.alloc({3}, DType::F32);
  Tensor t2 = a.alloc({65}, DType::BF16);  // 130 bytes -> 256
  Tensor t3 = a.alloc({2, 65}, DType::F32);  // 520 bytes -> 768
  for (const Tensor* t : {&t1, &t2, &t3})
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % Arena::kAlign, 0u) << t->str();
  EXPECT_EQ(static_cast<char*>(t2.data()) - static_cast<char*>(t1.data()), 256);
  EXPECT_EQ(static_cast<char*>(t3.data()) - static_cast<char*>(t2.data()), 256);
  EXPECT_EQ(t3.shape(), Shape({2, 65}));
  EXPECT_EQ(t2.dtype(), DType::BF16);
  EXPECT_EQ(a.used(), 256u + 256u + 768u);
  EXPECT_EQ(a.peak(), a.used());
  // The memory is usable end to end.
  for (int i = 0; i < 130; i++) t3.ptr<float>()[i] = static_cast<float>(i);
  EXPECT_EQ(t3.ptr<float>()[129], 129.0f);

  void* first = t1.data();
  a.reset();
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.peak(), 1280u);  // the peak survives a reset
  Tensor u = a.alloc({10}, DType::I64);
  EXPECT_EQ(u.data(), first);  // the same memory is handed out again
  EXPECT_EQ(a.used(), 256u);
  EXPECT_EQ(a.peak(), 1280u);
  // Filling the arena exactly is fine: 3840 bytes are left.
  Tensor rest = a.alloc({960}, DType::F32);
  EXPECT_EQ(static_cast<char*>(rest.data()) - static_cast<char*>(first), 256);
  EXPECT_EQ(a.used(), 4096u);
  EXPECT_EQ(a.peak(), 4096u);
}

TEST(Arena, ExactFitAndOverflowNamesArena) {
  Arena a("kv-cache", Device::CPU, 1024);
  Tensor t = a.alloc({256}, DType::F32);  // exactly 1024 bytes
  EXPECT_EQ(a.used(), 1024u);
  EXPECT_TRUE(throws_error([&] { a.alloc({1}, DType::F32); }, {"arena 'kv-cache'", "full", "f32", "(1,)"}));
  EXPECT_EQ(a.used(), 1024u);  // a failed alloc changes nothing
  a.reset();
  EXPECT_TRUE(throws_error([&] { a.alloc({257}, DType::F32); }, {"kv-cache", "(257,)"}));
  EXPECT_EQ(a.used(), 0u);
  Tensor u = a.alloc({0}, DType::F32);  // zero bytes fit even in a full arena
  EXPECT_EQ(u.numel(), 0);
}

TEST(Arena, CapacityIsAccounted) {
  const MemStats before = mem_stats(Device::CPU);
  {
    Arena a("weights", Device::CPU, 1 << 20);
    EXPECT_EQ(mem_stats(Device::CPU).current, before.current + (1u << 20));
    a.alloc({1000}, DType::F32);  // carving does not allocate
    EXPECT_EQ(mem_stats(Device::CPU).current, before.current + (1u << 20));
  }
  EXPECT_EQ(mem_stats(Device::CPU).current, before.current);
}

// ---- memory accounting ----------------------------------------------------------------------------------------------

TEST(MemStats, CurrentAndPeak) {
  const size_t base = mem_stats(Device::CPU).current;
  reset_peak(Device::CPU);
  EXPECT_EQ(mem_stats(Device::CPU).peak, base);
  {
    Tensor a = Tensor::empty({1000}, DType::F32, Device::CPU);
    EXPECT_EQ(mem_stats(Device::CPU).current, base + 4000);
    {
      Tensor b = Tensor::zeros({300}, DType::BF16, Device::CPU);
      EXPECT_EQ(mem_stats(Device::CPU).current, base + 4600);
      Tensor c = b.view({3, 100});  // a view allocates nothing
      EXPECT_EQ(mem_stats(Device::CPU).current, base + 4600);
    }
    EXPECT_EQ(mem_stats(Device::CPU).current, base + 4000);
    EXPECT_EQ(mem_stats(Device::CPU).peak, base + 4600);
    Tensor d = a.to(Device::CPU, DType::F32).view({10, 100});  // to() allocates a copy: 4000 bytes
    Tensor e = Tensor::from_i32({1000}, std::vector<int32_t>(1000, 1)).to(Device::CPU, DType::I64);  // 8000 bytes
    EXPECT_EQ(e.to_i64_vector()[999], 1);
    // from_i32's 4000-byte temporary is gone; it was held together with e's 8000 bytes for a moment.
    EXPECT_EQ(mem_stats(Device::CPU).current, base + 16000);
    EXPECT_EQ(mem_stats(Device::CPU).peak, base + 20000);
  }
  EXPECT_EQ(mem_stats(Device::CPU).current, base);
  EXPECT_EQ(mem_stats(Device::CPU).peak, base + 20000);
  reset_peak(Device::CPU);
  EXPECT_EQ(mem_stats(Device::CPU).peak, base);
  // Zero-byte tensors account zero bytes but still have a non-null pointer.
  Tensor z = Tensor::empty({0, 7}, DType::F32, Device::CPU);
  EXPECT_NE(z.data(), nullptr);
  EXPECT_EQ(mem_stats(Device::CPU).current, base);
  // The CUDA counters are untouched by host allocations.
  EXPECT_EQ(mem_stats(Device::CUDA).current, 0u);
}

// ---- Rng ------------------------------------------------------------------------------------------------------------

TEST(Rng, Splitmix64KnownAnswers) {
  // The published SplitMix64 sequence from state 0 (state += 0x9e3779b97f4a7c15 before each mix).
  EXPECT_EQ(splitmix64(0), 0xe220a8397b1dcdafull);
  EXPECT_EQ(splitmix64(0x9e3779b97f4a7c15ull), 0x6e789e6aa1b965f4ull);
}

TEST(Rng, DeterministicPerSeed) {
  Rng a(42), b(42), c(43);
  std::vector<uint64_t> va, vb, vc;
  for (int i = 0; i < 100; i++) {
    va.push_back(a.next_u64());
    vb.push_back(b.next_u64());
    vc.push_back(c.next_u64());
  }
  EXPECT_EQ(va, vb);
  int same = 0;
  for (int i = 0; i < 100; i++) same += va[static_cast<size_t>(i)] == vc[static_cast<size_t>(i)];
  EXPECT_EQ(same, 0);
  a.reseed(42);
  EXPECT_EQ(a.next_u64(), va[0]);
  // Uniforms are in [0, 1) and cover the interval.
  Rng r(7);
  double lo = 1, hi = 0, sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; i++) {
    float u = r.uniform();
    double d = r.uniform_f64();
    ASSERT_TRUE(u >= 0.0f && u < 1.0f);
    ASSERT_TRUE(d >= 0.0 && d < 1.0);
    lo = std::min(lo, d), hi = std::max(hi, d);
    sum += u;
  }
  EXPECT_LT(lo, 1e-3);
  EXPECT_GT(hi, 1 - 1e-3);
  EXPECT_NEAR(sum / n, 0.5, 0.005);  // std error 0.29/sqrt(1e5) = 0.0009
}

TEST(Rng, HashUniformIsPureFunction) {
  EXPECT_EQ(hash_uniform(5, 123), hash_uniform(5, 123));
  EXPECT_NE(hash_uniform(5, 123), hash_uniform(6, 123));
  EXPECT_NE(hash_uniform(5, 123), hash_uniform(5, 124));
  // Any evaluation order gives the same values.
  std::vector<float> fwd(1000), bwd(1000);
  for (int i = 0; i < 1000; i++) fwd[static_cast<size_t>(i)] = hash_normal(9, static_cast<uint64_t>(i));
  for (int i = 999; i >= 0; i--) bwd[static_cast<size_t>(i)] = hash_normal(9, static_cast<uint64_t>(i));
  EXPECT_EQ(fwd, bwd);
}

// Moments and tail fractions of n samples.
struct Stats {
  double mean, std, within1, beyond3;
};
template <typename Gen>
Stats sample_stats(int n, Gen gen) {
  double s = 0, s2 = 0;
  int w1 = 0, b3 = 0;
  for (int i = 0; i < n; i++) {
    double x = gen(i);
    EXPECT_TRUE(std::isfinite(x));
    s += x, s2 += x * x;
    w1 += std::fabs(x) < 1.0;
    b3 += std::fabs(x) > 3.0;
  }
  double mean = s / n;
  return {mean, std::sqrt(s2 / n - mean * mean), static_cast<double>(w1) / n, static_cast<double>(b3) / n};
}

TEST(Rng, HashNormalStatistics) {
  // n = 100k: the standard error of the mean is 0.0032, of the std 0.0022, of P(|x| < 1) = 0.6827 is 0.0015 and of
  // P(|x| > 3) = 0.0027 is 0.00016. Bounds are ~5 standard errors: loose enough never to flake for a correct
  // generator, tight enough to catch a wrong scale (e.g. a missing sqrt(2)) or a shifted mean.
  for (uint64_t seed : {1ull, 2024ull}) {
    Stats st = sample_stats(100000, [&](int i) { return hash_normal(seed, static_cast<uint64_t>(i)); });
    EXPECT_NEAR(st.mean, 0.0, 0.016) << "seed " << seed;
    EXPECT_NEAR(st.std, 1.0, 0.011) << "seed " << seed;
    EXPECT_NEAR(st.within1, 0.6827, 0.008) << "seed " << seed;
    EXPECT_NEAR(st.beyond3, 0.0027, 0.0009) << "seed " << seed;
  }
  Rng r(3);
  Stats st = sample_stats(100000, [&](int) { return r.normal(); });
  EXPECT_NEAR(st.mean, 0.0, 0.016);
  EXPECT_NEAR(st.std, 1.0, 0.011);
  EXPECT_NEAR(st.within1, 0.6827, 0.008);
}

// ---- strfmt and errors ------------------------------------------------------------------------------------------

TEST(Strfmt, Formats) {
  EXPECT_EQ(strfmt("%d-%s-%.2f", 3, "ab", 1.5), "3-ab-1.50");
  EXPECT_EQ(strfmt("%s", ""), "");
  EXPECT_EQ(strfmt("100%%"), "100%");
  EXPECT_EQ(strfmt("%lld", static_cast<long long>(-9007199254740993ll)), "-9007199254740993");
  // Longer than any fixed buffer: nothing is cut.
  std::string big(5000, 'x');
  std::string s = strfmt("<%s|%s>", big.c_str(), big.c_str());
  EXPECT_EQ(s.size(), 10003u);
  EXPECT_EQ(s.front(), '<');
  EXPECT_EQ(s.back(), '>');
  EXPECT_EQ(s[5001], '|');
}

TEST(Check, ErrorCarriesMessageAndLocation) {
  int line = 0;
  try {
    line = __LINE__ + 1;
    LIGER_CHECK(1 + 1 == 3, "%s: key '%s' is wrong (got %d)", "cfg.json", "hidden_size", 7);
    FAIL() << "LIGER_CHECK did not throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "cfg.json: key 'hidden_size' is wrong (got 7)");
    EXPECT_NE(std::string(e.file()).find("test_core.cpp"), std::string::npos);
    EXPECT_EQ(e.line(), line);
  }
  EXPECT_NO_THROW(LIGER_CHECK(true, "never"));
  EXPECT_TRUE(throws_error([] { LIGER_FAIL("plain %d", 5); }, {"plain 5"}));
  EXPECT_TRUE(throws_error([] { LIGER_ASSERT(2 < 1); }, {"internal error", "2 < 1"}));
  // Error is a std::runtime_error, so generic handlers still see it.
  EXPECT_THROW(LIGER_FAIL("x"), std::runtime_error);
}

// ---- JSON ------------------------------------------------------------------------------------------------------------

TEST(Json, ParseErrorsNameTheSource) {
  EXPECT_EQ(parse_json(R"({"a": [1, 2.5, "x"]})", "t.json")["a"][1].get<double>(), 2.5);
  EXPECT_TRUE(throws_error([] { parse_json("{\"a\": ", "cfg/config.json"); }, {"cfg/config.json", "invalid JSON"}));
  EXPECT_TRUE(throws_error([] { parse_json("", "empty.json"); }, {"empty.json", "invalid JSON"}));
  EXPECT_TRUE(throws_error([] { parse_json("{\"a\": \"\xff\"}", "bad-utf8.json"); }, {"bad-utf8.json", "invalid JSON"}));
  EXPECT_TRUE(throws_error([] { read_json_file("/nonexistent/dir/config.json"); }, {"/nonexistent/dir/config.json"}));
}

TEST(Json, DeepNestingIsAnErrorNotAStackOverflow) {
  // Copying or dumping a Json recurses once per level; a few thousand brackets would overflow the stack, so parse_json
  // refuses documents nested deeper than 512 levels. 512 itself is fine; brackets inside strings do not count.
  auto nested = [](int depth) { return std::string(static_cast<size_t>(depth), '[') + "1" + std::string(static_cast<size_t>(depth), ']'); };
  EXPECT_NO_THROW(parse_json(nested(512), "ok.json"));
  EXPECT_NO_THROW(parse_json("{\"s\": \"" + std::string(5000, '[') + "\\\"{\"}", "strings.json"));
  EXPECT_TRUE(throws_error([&] { parse_json(nested(513), "deep.json"); }, {"deep.json", "nested deeper than 512"}));
  EXPECT_TRUE(throws_error([&] { parse_json("{\"k\": " + nested(1000000) + "}", "deep.json"); }, {"deep.json"}));
}

TEST(Json, TypedFieldsNameFileAndKey) {
  const Json j = parse_json(R"({"n": 3, "x": 1.5, "s": "str", "b": true, "nil": null, "arr": [[1], [2]],)"
                            R"( "big": 18446744073709551615})", "f.json");
  EXPECT_EQ(json_int(j, "n", "f.json"), 3);
  EXPECT_EQ(json_number(j, "n", "f.json"), 3.0);
  EXPECT_EQ(json_number(j, "x", "f.json"), 1.5);
  EXPECT_EQ(json_string(j, "s", "f.json"), "str");
  EXPECT_TRUE(json_bool(j, "b", "f.json"));
  EXPECT_TRUE(json_has(j, "n"));
  EXPECT_FALSE(json_has(j, "nil"));  // null counts as absent
  EXPECT_FALSE(json_has(j, "zzz"));
  EXPECT_FALSE(json_has(Json::array({1}), "n"));
  EXPECT_TRUE(throws_error([&] { json_int(j, "x", "f.json"); }, {"f.json", "'x'", "integer", "1.5"}));
  EXPECT_TRUE(throws_error([&] { json_int(j, "s", "f.json"); }, {"f.json", "'s'", "\"str\""}));
  EXPECT_TRUE(throws_error([&] { json_string(j, "n", "f.json"); }, {"f.json", "'n'", "string"}));
  EXPECT_TRUE(throws_error([&] { json_bool(j, "n", "f.json"); }, {"f.json", "'n'", "true or false"}));
  EXPECT_TRUE(throws_error([&] { json_number(j, "s", "f.json"); }, {"f.json", "'s'", "number"}));
  EXPECT_TRUE(throws_error([&] { json_int(j, "nil", "f.json"); }, {"f.json", "missing key 'nil'"}));
  EXPECT_TRUE(throws_error([&] { json_field(j, "zzz", "f.json"); }, {"f.json", "missing key 'zzz'"}));
  EXPECT_TRUE(throws_error([&] { json_field(Json::array(), "a", "f.json"); }, {"f.json", "object"}));
  // A container is summarized in the message, not dumped.
  EXPECT_TRUE(throws_error([&] { json_int(j, "arr", "f.json"); }, {"f.json", "'arr'", "an array of 2 elements"}));
}

}  // namespace
}  // namespace liger
