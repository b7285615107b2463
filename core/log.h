// core/log.h — leveled logging to stderr: "[liger] message". LOG_DEBUG prints only with LIGER_LOG=debug or
// set_log_level(Debug). Messages are printf-style.
#pragma once

#include <string>

namespace liger {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };
void set_log_level(LogLevel level);
LogLevel log_level();
// Replaces the "[liger] " prefix of every line (e.g. "[liger rank 1] " under several ranks).
void set_log_prefix(const std::string& prefix);
void log_message(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace liger

#define LOG_DEBUG(...) ::liger::log_message(::liger::LogLevel::Debug, __VA_ARGS__)
#define LOG_INFO(...) ::liger::log_message(::liger::LogLevel::Info, __VA_ARGS__)
#define LOG_WARN(...) ::liger::log_message(::liger::LogLevel::Warn, __VA_ARGS__)
