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
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_message(LogLevel level, const char* fmt, ...) {
  if (level < g_level) return;
  va_list ap;
  va_start(ap, fmt);
  std::string s = vstrfmt(fmt, ap);
  va_end(ap);
  const char* tag = level == LogLevel::Warn ? "warning: " : (level == LogLevel::Error ? "error: " : "");
  std::fprintf(stderr, "[liger] %s%s\n", tag, s.c_str());
}

}  // namespace liger
