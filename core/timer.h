// core/timer.h — wall-clock timing on the host (GPU regions are timed with CUDA events in the benchmarks).
#pragma once

#include <chrono>

namespace liger {

class Timer {
 public:
  Timer() : t0_(std::chrono::steady_clock::now()) {}
  void reset() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace liger
