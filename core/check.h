// core/check.h — the one error path of liger.
//
// Every failure — bad user input, a failed CUDA/cuBLAS call, a broken invariant — throws liger::Error.
// The message is one line meant for the user ("<file>: <what> (<what to do>)"); the source location of
// the check is kept separately and printed by the launcher with --verbose. The launcher catches Error in
// main(), prints "liger: error: <message>" and exits 1; later, under several ranks, it aborts the whole job
// from there, never from deep library code.
//
// Never validate user input with assert(); never put side effects inside a check's message arguments.
#pragma once

#include <cstdarg>
#include <stdexcept>
#include <string>

namespace liger {

class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line)
      : std::runtime_error(std::move(message)), file_(file), line_(line) {}
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  const char* file_;
  int line_;
};

// printf-style formatting into a std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vstrfmt(const char* fmt, va_list ap);

namespace detail {
[[noreturn]] void fail(const char* file, int line, std::string message);
}  // namespace detail

}  // namespace liger

// LIGER_CHECK(cond, fmt, ...): if cond is false, throw liger::Error with the formatted message.
#define LIGER_CHECK(cond, ...)                                                   \
  do {                                                                           \
    if (!(cond)) ::liger::detail::fail(__FILE__, __LINE__, ::liger::strfmt(__VA_ARGS__)); \
  } while (0)

// LIGER_FAIL(fmt, ...): throw unconditionally.
#define LIGER_FAIL(...) ::liger::detail::fail(__FILE__, __LINE__, ::liger::strfmt(__VA_ARGS__))

// LIGER_ASSERT(cond): an internal invariant (a bug in liger if it fails), checked in every build type.
#define LIGER_ASSERT(cond)                                                                        \
  do {                                                                                            \
    if (!(cond)) ::liger::detail::fail(__FILE__, __LINE__, "internal error: check failed: " #cond); \
  } while (0)
