#include "core/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/check.h"

namespace liger {

namespace {
LogLevel initial_level() {
  const char* e = std::getenv("LIGER_LOG");
  if (e && std::strcmp(e, "debug") == 0) return LogLevel::Debug;
  if (e && std::strcmp(e, "warn") == 0) return LogLevel::Warn;
  if (e && std::strcmp(e, "quiet") == 0) return LogLevel::Quiet;
  return LogLevel::Info;
}
LogLevel g_level = initial_level();
std::string g_prefix = "[liger] ";
}  // namespace

void set_log_prefix(const std::string& prefix) {
  g_prefix = prefix;
}

void set_log_level(LogLevel level) {
  g_level = level;
}
LogLevel log_level() {
  return g_level;
}

void log_message(LogLevel level, const char* fmt, ...) {
  if (level < g_level) return;
  va_list ap;
  va_start(ap, fmt);
  std::string s = vstrfmt(fmt, ap);
  va_end(ap);
  const char* tag = level == LogLevel::Warn ? "warning: " : (level == LogLevel::Error ? "error: " : "");
  std::fprintf(stderr, "%s%s%s\n", g_prefix.c_str(), tag, s.c_str());
}

}  // namespace liger

// ---- section profile (core/timer.h)
// ----------------------------------------------------------------------------------
#include <algorithm>
#include <mutex>
#include <vector>

#include "core/timer.h"

namespace liger {

namespace {
std::mutex g_profile_mutex;
bool g_profiling = false;
std::map<std::string, std::pair<double, int64_t>> g_profile;  // name -> (seconds, calls); guarded by the mutex
}  // namespace

bool profiling() {
  return g_profiling;
}
void set_profiling(bool on) {
  g_profiling = on;
}

void profile_add(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_profile_mutex);
  auto& e = g_profile[name];
  e.first += seconds;
  e.second++;
}

void profile_report(std::FILE* f, int steps) {
  std::lock_guard<std::mutex> lock(g_profile_mutex);
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(g_profile.begin(), g_profile.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::fprintf(f, "  profile (ms per step, sections nest: a parent includes its children)\n");
  for (const auto& [name, v] : rows)
    std::fprintf(f, "    %-34s %9.2f ms  %7.1f calls\n", name.c_str(), v.first * 1e3 / steps,
                 static_cast<double>(v.second) / steps);
  g_profile.clear();
}

}  // namespace liger
