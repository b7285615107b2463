// core/timer.h — wall-clock timing on the host (GPU regions are timed with CUDA events in the benchmarks).
#pragma once

#include <chrono>

namespace liger {

class Timer {
 public:
  Timer() : t0_(std::chrono::steady_clock::now()) {}
  void reset() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace liger

// ---- section profile (LIGER_PROFILE=1) ------------------------------------------------------------------------------
// `liger bench` sets it with --profile: every ProfileScope then synchronizes the device on entry and exit and adds its
// wall time to a per-name total, so the report splits a step into its parts (the synchronization itself slows the
// step a little; the totals are for finding the large parts, the headline figure comes from an unprofiled run).
#include <cstdio>
#include <map>
#include <string>

#include "core/context.h"

namespace liger {

bool profiling();
void set_profiling(bool on);
void profile_add(const char* name, double seconds);
void profile_report(std::FILE* f, int steps);  // per-step milliseconds, largest first; clears the totals

class ProfileScope {
 public:
  ProfileScope(const Context& ctx, const char* name) : ctx_(ctx), name_(name), on_(profiling()) {
    if (on_) ctx_.synchronize(), t_.reset();
  }
  ~ProfileScope() {
    if (on_) ctx_.synchronize(), profile_add(name_, t_.seconds());
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const Context& ctx_;
  const char* name_;
  bool on_;
  Timer t_;
};

}  // namespace liger
