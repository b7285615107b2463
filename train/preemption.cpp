#include "train/preemption.h"

#include <signal.h>

#include <atomic>

namespace liger {

namespace {
volatile sig_atomic_t g_signal = 0;

void on_stop(int sig) {
  if (g_signal == 0) g_signal = sig;
}
}  // namespace

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // system calls in flight (a write, a collective's poll) go on
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int stop_signal() {
  return g_signal;
}

void clear_stop_signal() {
  g_signal = 0;
}

}  // namespace liger
