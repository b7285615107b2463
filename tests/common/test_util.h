// tests/common/test_util.h — small helpers shared by the test suites: paths and error measures.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

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
