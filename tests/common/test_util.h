// tests/common/test_util.h — small helpers shared by the test suites: paths and error measures.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/tensor.h"

namespace liger::test {

// The repository and ../shared as the build saw them; the environment variables LIGER_SOURCE_DIR / LIGER_SHARED_DIR
// override them when the test binaries run from another checkout (the GPU machine gets a copy of the tree).
inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}
inline std::string source_path(const std::string& rel) { return env_or("LIGER_SOURCE_DIR", LIGER_SOURCE_DIR) + "/" + rel; }
inline std::string shared_path(const std::string& rel) { return env_or("LIGER_SHARED_DIR", LIGER_SHARED_DIR) + "/" + rel; }
inline std::string liger_binary() { return env_or("LIGER_BINARY", LIGER_BINARY); }

// ||out - ref|| / ||ref|| over all elements; *worst gets the index of the largest |out - ref|. NaN anywhere in out
// gives +inf, so a NaN never passes a tolerance.
inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref, size_t* worst = nullptr) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0.0, den = 0.0, max_abs = -1.0;
  for (size_t i = 0; i < out.size() && i < ref.size(); i++) {
    if (std::isnan(out[i]) || std::isnan(ref[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    if (std::fabs(d) > max_abs) {
      max_abs = std::fabs(d);
      if (worst) *worst = i;
    }
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

inline double max_abs_error(const std::vector<float>& out, const std::vector<float>& ref) {
  double m = 0.0;
  for (size_t i = 0; i < out.size() && i < ref.size(); i++) {
    if (std::isnan(out[i])) return INFINITY;
    m = std::max(m, std::fabs(static_cast<double>(out[i]) - ref[i]));
  }
  return m;
}

// Runs fn and checks that it throws a liger::Error whose message is one line containing every string of `parts`
// (file names, tensor names, keys). Any other exception, or none, is a failure.
template <typename Fn>
::testing::AssertionResult throws_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) {
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not contain \"" << p << "\"";
    }
    if (msg.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "message is not one line: \"" << msg << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-liger exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// Nearest value of a binary format with `mant_bits` stored mantissa bits and minimum normal exponent `emin`
// (subnormals below 2^emin have the fixed spacing 2^(emin - mant_bits)), ties to even, computed in fp64 without
// looking at bit patterns: the representable grid around x has spacing ulp = 2^(max(floor(log2|x|), emin) - mant_bits),
// and std::nearbyint (default rounding mode: to nearest, ties to even) picks the grid point. Overflow is not handled
// here (callers stay below the format's maximum). bf16: (7, -126); f16: (10, -14).
inline double round_to_format(double x, int mant_bits, int emin) {
  if (x == 0.0) return x;
  int e = static_cast<int>(std::floor(std::log2(std::fabs(x))));
  // log2 can be off by one at exact powers of two; fix e so that 2^e <= |x| < 2^(e+1).
  if (std::ldexp(1.0, e) > std::fabs(x)) e--;
  if (std::ldexp(1.0, e + 1) <= std::fabs(x)) e++;
  if (e < emin) e = emin;
  const double ulp = std::ldexp(1.0, e - mant_bits);
  return std::nearbyint(x / ulp) * ulp;
}

// Gradient checks in fp64: the relative error of `analytic` (f64, x's shape) against central differences of `loss`
// with respect to every element of the f64 tensor `x`, with step h (1e-5 for inputs of order 1; smaller for inputs
// whose function bends on a smaller scale). With h = 1e-5 the difference quotient is accurate to ~1e-10.
inline double fd_check(Tensor x, const Tensor& analytic, const std::function<double()>& loss, double h = 1e-5) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < x.numel(); i++) {
    const double x0 = x.ptr<double>()[i];
    x.ptr<double>()[i] = x0 + h;
    const double lp = loss();
    x.ptr<double>()[i] = x0 - h;
    const double lm = loss();
    x.ptr<double>()[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    const double d = analytic.ptr<double>()[i] - fd;
    num += d * d;
    den += fd * fd;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// sum(a * b) of two f64 tensors: the loss whose gradient with respect to `a` is `b`.
inline double dot64(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); i++) s += a.ptr<double>()[i] * b.ptr<double>()[i];
  return s;
}

// How a test waits: for a condition, with a bound, never for a fixed time (a busy machine makes any fixed time wrong).
// Polls `done` every poll_ms until it holds (true) or timeout_s has passed (false).
inline bool wait_until(const std::function<bool()>& done, double timeout_s, int poll_ms = 50) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return true;
}

// A fresh temporary directory, removed when the object goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("liger_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

}  // namespace liger::test
