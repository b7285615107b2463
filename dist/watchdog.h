// dist/watchdog.h — a dead or hung rank must not hang the job (DESIGN.md §5, issue 10).
//
// Every rank runs a thread that (1) writes a heartbeat file <dir>/rank_<r> once a second (the time and the rank's
// progress count) and (2) checks that the main thread made progress (progress() at every micro-batch and step) in the
// last `timeout_s` seconds. When it did not — the rank waits in a collective for a peer that is dead (SIGKILL, a lost
// node) or hung (SIGSTOP, a deadlocked kernel), or is hung itself — the thread reads the peers' heartbeats, names
// every rank whose heartbeat stopped (or never came), prints one line and ends the whole job (MPI_Abort; _exit
// without MPI), so no rank waits forever. A process stopped by SIGSTOP stops its own heartbeat too: the others name it.
// The directory must be visible to every rank (the run directory, shared across nodes).
// On GPUs the thread also polls the NCCL communicators (ncclCommGetAsyncError) every second: an error there (a peer's
// connection broke) stops the job at once, naming the rank whose heartbeat stopped; the communicators are aborted
// (ncclCommAbort) before the job ends, so no NCCL kernel is left waiting for the dead peer.
#pragma once

#include <atomic>
#include <string>
#include <thread>

namespace liger::dist {

class Watchdog {
 public:
  // timeout_s <= 0: no watchdog (nothing is started). dir: created if needed.
  Watchdog(std::string dir, int rank, int size, double timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  // The main thread moved on (a micro-batch, a step, a checkpoint).
  void progress() { progress_.fetch_add(1, std::memory_order_relaxed); }
  // The rank finished cleanly: its heartbeat says so, and peers waiting at the end are not "dead".
  void done();

 private:
  void run();
  std::string stale_peers(double start, double t) const;
  std::string dir_;
  int rank_, size_;
  double timeout_s_;
  std::atomic<uint64_t> progress_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace liger::dist
