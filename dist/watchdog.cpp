#include "dist/watchdog.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/check.h"
#include "dist/comm_backends.h"
#include "dist/runtime.h"

namespace liger::dist {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

Watchdog::Watchdog(std::string dir, int rank, int size, double timeout_s)
    : dir_(std::move(dir)), rank_(rank), size_(size), timeout_s_(timeout_s) {
  if (timeout_s_ <= 0 || size_ <= 1) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Watchdog::done() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (timeout_s_ <= 0 || size_ <= 1) return;
  std::ofstream f(dir_ + "/rank_" + std::to_string(rank_));
  f << strfmt("%.3f", now_s()) << " done\n";  // a finished rank is never taken for a dead one
}

// Peers whose heartbeat stopped (stale, or none since `start`), as "1, 3"; "" when every peer beats or is done.
std::string Watchdog::stale_peers(double start, double t) const {
  std::string dead;
  for (int r = 0; r < size_; r++) {
    if (r == rank_) continue;
    double beat = 0;
    std::string what;
    std::ifstream f(dir_ + "/rank_" + std::to_string(r));
    if (!(f >> beat >> what) || beat < start - 1) beat = 0;  // none, or one of an earlier run
    if (what == "done") continue;
    if (t - beat > 5.0) dead += (dead.empty() ? "" : ", ") + std::to_string(r);
  }
  return dead;
}

void Watchdog::run() {
  const double start = now_s();
  uint64_t seen = progress_.load();
  double since = start;
  const std::string mine = dir_ + "/rank_" + std::to_string(rank_);
  while (!stop_) {
    const double t = now_s();
    {
      const std::string tmp = mine + ".tmp";
      std::ofstream f(tmp);
      f << strfmt("%.3f", t) << " " << progress_.load() << "\n";
      f.close();
      std::rename(tmp.c_str(), mine.c_str());
    }
    const uint64_t p = progress_.load();
    if (p != seen) seen = p, since = t;
#ifdef LIGER_CUDA
    // An NCCL communicator in an error state (a peer's connection broke): stop now, not after the timeout. The peer
    // that died stops beating within a few seconds; wait for that, so the message can name it.
    if (const std::string e = nccl_async_error(); !e.empty()) {
      std::string dead;
      for (int i = 0; i < 70 && (dead = stale_peers(start, now_s())).empty(); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::fprintf(stderr, "liger: error: [rank %d] NCCL: %s; %s; stopping the job\n", rank_, e.c_str(),
                   dead.empty() ? "every peer's heartbeat is alive"
                                : ("rank " + dead + " stopped responding (dead or hung)").c_str());
      std::fflush(stderr);
      nccl_abort_all();
      abort_job(1);
    }
#endif
    if (t - since > timeout_s_) {
      // Which peers stopped beating (a stale heartbeat, or none since this rank started)?
      const std::string dead = stale_peers(start, t);
      std::fprintf(stderr,
                   "liger: error: [rank %d] no progress for %.0f s (--collective-timeout): %s; stopping the job\n",
                   rank_, t - since,
                   dead.empty() ? "every peer is alive, so a collective or this rank is hung"
                                : ("rank " + dead + " stopped responding (dead or hung)").c_str());
      std::fflush(stderr);
#ifdef LIGER_CUDA
      nccl_abort_all();  // NCCL kernels waiting for the dead peer end
#endif
      abort_job(1);
    }
    for (int i = 0; i < 10 && !stop_; i++) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace liger::dist
