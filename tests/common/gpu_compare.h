// tests/common/gpu_compare.h — what the GPU-vs-CPU op tests share: counter-based random inputs representable in the
// storage dtype, outputs poisoned with NaN bytes, and the relative-error comparison with the project's tolerances
// (docs/DESIGN.md §2): ||out - ref|| / ||ref|| <= 1e-5 for f32 storage, <= 1e-2 for bf16; NaN never passes.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace liger::test {

constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 1e-2;

inline double tol_for(DType dt) {
  return dt == DType::F32 ? kTolF32 : kTolBf16;
}

// A host f32 tensor of normal values * scale (counter-based: seed and index decide each value).
inline Tensor randn(Shape shape, uint64_t seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = scale * hash_normal(seed, static_cast<uint64_t>(i));
  return t;
}

// The host f32 tensor rounded to dt and back: values the GPU run can hold exactly.
inline Tensor representable(const Tensor& host_f32, DType dt) {
  return host_f32.to(Device::CPU, dt).to(Device::CPU, DType::F32);
}

// A GPU tensor of the given shape and dtype filled with 0xFF bytes (NaN in every floating dtype, -1 in i32).
inline Tensor poisoned(Shape shape, DType dt) {
  Tensor h = Tensor::empty(shape, dt, Device::CPU);
  std::memset(h.data(), 0xFF, h.nbytes());
  return h.to(Device::CUDA);
}

inline std::vector<float> to_host(const Tensor& t) {
  return t.to_f32_vector();
}

// ||out - ref|| / ||ref|| (||out - ref|| when ref is 0); NaN when either holds a NaN. *worst = the index of the largest
// |out - ref|.
inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref, size_t* worst) {
  double num = 0.0, den = 0.0, big = -1.0;
  *worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (std::isnan(out[i]) || std::isnan(ref[i])) {
      *worst = i;
      return NAN;
    }
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    if (std::fabs(d) > big) {
      big = std::fabs(d);
      *worst = i;
    }
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Expects rel_error(out, ref) <= tol (NaN fails) and prints the figure with the worst element.
inline void expect_close(const std::vector<float>& out, const std::vector<float>& ref, double tol,
                         const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  size_t w = 0;
  const double err = rel_error(out, ref, &w);
  std::printf("  %-60s rel err %.3g (worst [%zu] gpu %.7g cpu %.7g)\n", what.c_str(), err, w,
              out.empty() ? 0.0 : out[w], ref.empty() ? 0.0 : ref[w]);
  EXPECT_TRUE(err <= tol) << what << ": rel err " << err << " > " << tol << "; worst element [" << w << "] gpu "
                          << out[w] << " cpu " << ref[w];
}

// Same bytes (bit-for-bit equality of two tensors of one dtype).
inline size_t count_bit_mismatches(const Tensor& a, const Tensor& b) {
  Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  const size_t es = dtype_size(a.dtype());
  size_t bad = 0;
  for (int64_t i = 0; i < a.numel(); i++)
    bad += std::memcmp(static_cast<const char*>(ha.data()) + i * es, static_cast<const char*>(hb.data()) + i * es,
                       es) != 0;
  return bad;
}

inline std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

inline const DType kStorage[] = {DType::F32, DType::BF16};

}  // namespace liger::test
