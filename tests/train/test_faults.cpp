// tests/train/test_faults.cpp — a job that is killed, stopped, signalled or poisoned resumes with nothing lost
// (issue 10), with real processes: `mpirun -np 2` of the liger program on CPU ranks, Liger-GLA on stories260K,
// --deterministic so that "the same run" means the same bits.
//   - SIGKILL of one rank at random moments (20 trials): the job ends within 30 s naming the dead rank; restarted with
//     --resume auto it continues from the newest complete checkpoint; the whole run's per-step losses equal an
//     uninterrupted run's, bitwise;
//   - SIGSTOP of one rank: the other's watchdog (--collective-timeout) ends the job naming it;
//   - a kill at each point of a checkpoint write (100 trials, LIGER_TEST_KILL_IN_CHECKPOINT): --resume auto takes the
//     newest complete checkpoint, never a torn one, and the run ends with the uninterrupted run's adapters;
//   - a flipped byte in any file of the newest checkpoint: rejected by its manifest, naming the file; the previous one
//     is used;
//   - NaN in one rank's gradients (LIGER_TEST_NAN_STEPS): every rank skips the step, the optimizer untouched; K bad
//     steps in a row stop the run with one error and the last good checkpoint intact;
//   - SIGTERM to every rank: a checkpoint of the current step within 10 s, exit 75, and the resumed run is bitwise
//     the uninterrupted one.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "tests/common/proc.h"
#include "tests/common/test_util.h"
#include "train/checkpoint.h"

namespace liger {
namespace {

namespace fs = std::filesystem;
using test::launch;
using test::read_file;
using test::loss_text;
using test::Proc;
using test::sh;
using test::source_path;
using test::TempDir;
using test::train_args;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A job in the background: its output goes to `log`, its exit code to `log`.rc.
struct Job {
  pid_t pid = -1;
  std::string log;
};
Job start_job(const std::string& cmd, const std::string& log) {
  Job j;
  j.log = log;
  j.pid = fork();
  if (j.pid == 0) {
    setpgid(0, 0);  // its own process group: the test can signal the whole job
    execl("/bin/sh", "sh", "-c", (cmd + " > " + log + " 2>&1; echo $? > " + log + ".rc").c_str(), nullptr);
    _exit(127);
  }
  return j;
}
// Whether the job has ended (without reaping it: wait_job still collects its exit code).
bool job_ended(const Job& j) {
  siginfo_t info{};
  return waitid(P_PID, static_cast<id_t>(j.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == j.pid;
}
// Waits up to `timeout_s`; returns the job's exit code, or -1000 when it did not end (it is then killed).
int wait_job(const Job& j, double timeout_s) {
  int status = 0;
  if (!test::wait_until([&] { return job_ended(j); }, timeout_s)) {
    kill(-j.pid, SIGKILL);
    waitpid(j.pid, &status, 0);
    return -1000;
  }
  waitpid(j.pid, &status, 0);
  std::ifstream f(j.log + ".rc");
  int rc = -1;
  f >> rc;
  return rc;
}
// The newest step in the run's metrics (0 when none).
int64_t last_step(const std::string& run) {
  const auto m = loss_text(run);
  return m.empty() ? 0 : m.rbegin()->first;
}
// Waits until the run's metrics reach `step` (or the job ended, or timeout_s passed); whether they did.
// poll_ms: how often the metrics are read; a step takes a few ms, so the moment this returns falls anywhere inside the
// step after `step` (the kill test draws the interval at random: no fixed wait is added to pick the point).
bool wait_for_step(const Job& j, const std::string& run, int64_t step, double timeout_s, int poll_ms = 50) {
  test::wait_until([&] { return last_step(run) >= step || job_ended(j); }, timeout_s, poll_ms);
  return last_step(run) >= step;
}
// The pids of the liger ranks whose command line mentions `out` (the run directory), ordered by rank (the
// OMPI_COMM_WORLD_RANK of their environment).
std::vector<pid_t> rank_pids(const std::string& out, int np) {
  std::vector<pid_t> pids(static_cast<size_t>(np), -1);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = read_file(e.path().string() + "/cmdline");
    for (char& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find("liger train") == std::string::npos || cmd.find(out + " ") == std::string::npos ||
        cmd.find("mpiexec") != std::string::npos || cmd.find("sh -c") == 0)
      continue;
    std::string env = read_file(e.path().string() + "/environ");
    const size_t at = env.find("OMPI_COMM_WORLD_RANK=");
    if (at == std::string::npos) continue;
    const int r = std::atoi(env.c_str() + at + 21);
    if (r >= 0 && r < np) pids[static_cast<size_t>(r)] = std::stoi(name);
  }
  return pids;
}

// rank_pids once every rank is up (a loaded machine can take a while to start them), for up to timeout_s; earlier
// when the job has already ended.
std::vector<pid_t> wait_rank_pids(const Job& j, const std::string& out, int np, double timeout_s) {
  std::vector<pid_t> pids;
  test::wait_until(
      [&] {
        pids = rank_pids(out, np);
        return std::find(pids.begin(), pids.end(), -1) == pids.end() || job_ended(j);
      },
      timeout_s);
  return pids;
}

class Faults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("faults");
    Proc r = sh(test::liger_binary() + " convert --model " + source_path("assets/stories260K/hf") + " --out " +
                tmp_->file("gla") + " --variant gla --window 16");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string model() { return tmp_->file("gla"); }
  // The uninterrupted deterministic run of `steps` steps (dp 2), computed once per length.
  static std::string reference(int steps) {
    const std::string out = tmp_->file("ref_" + std::to_string(steps));
    if (!fs::exists(out)) {
      Proc r = sh(launch(2) + train_args(model(), out, steps) + " --deterministic --save-every 1");
      EXPECT_EQ(r.code, 0) << r.out;
    }
    return out;
  }
  static TempDir* tmp_;
};
TempDir* Faults::tmp_ = nullptr;

TEST_F(Faults, KilledRankResumesBitwise) {
  // Long enough for 20 kills, each at most 12 steps after the previous one.
  const int steps = 400;
  const std::string ref = reference(steps), run = tmp_->file("killed");
  const std::string cmd = launch(2) + train_args(model(), run, steps) + " --deterministic --save-every 1 --resume auto";
  std::mt19937 rng(1234);
  int kills = 0, launches = 0;
  while (true) {
    const auto before = find_latest_complete(run);
    const int64_t seen = last_step(run);  // what earlier launches logged (the relaunch cuts it back to its checkpoint)
    Job j = start_job(cmd, tmp_->file("killed.log"));
    launches++;
    if (kills < 20) {
      // A random moment: one launch in five right at start-up, the others 1-12 steps past anything logged before,
      // at a random point inside the step (forward, backward, the all-reduce, the optimizer or a checkpoint write).
      const int victim = static_cast<int>(rng() % 2);
      std::vector<pid_t> pids = wait_rank_pids(j, run, 2, 30);
      if (rng() % 5 != 0) {
        // The point inside the step: where the metrics poll, at a random interval of 1-37 ms, first sees the step.
        wait_for_step(j, run, seen + 1 + static_cast<int64_t>(rng() % 12), 60, 1 + static_cast<int>(rng() % 37));
        pids = rank_pids(run, 2);
      }
      if (pids[static_cast<size_t>(victim)] > 0) {
        kill(pids[static_cast<size_t>(victim)], SIGKILL);
        kills++;
        const double t0 = now_s();
        const int rc = wait_job(j, 30);
        const std::string out = read_file(j.log);
        ASSERT_NE(rc, -1000) << "the job did not end within 30 s of killing rank " << victim << ":\n" << out;
        std::printf("  kill %2d: rank %d, the job ended in %.1f s (exit %d)\n", kills, victim, now_s() - t0, rc);
        EXPECT_NE(rc, 0) << out;
        EXPECT_NE(out.find("rank " + std::to_string(victim)), std::string::npos) << "the dead rank is not named:\n"
                                                                                  << out;
        if (before) {  // what the relaunch must resume from is at least the checkpoint that existed before it
          const auto after = find_latest_complete(run);
          ASSERT_TRUE(after.has_value());
          EXPECT_GE(after->step, before->step);
        }
        continue;
      }
    }
    const int rc = wait_job(j, 120);
    const std::string out = read_file(j.log);
    if (rc == 0) {
      if (before) {
        EXPECT_NE(out.find("resumed from " + before->dir), std::string::npos) << out;
      }
      break;
    }
    ASSERT_LT(launches, 60) << "no end in sight:\n" << out;
  }
  EXPECT_EQ(kills, 20);
  const auto a = loss_text(ref), b = loss_text(run);
  ASSERT_EQ(a.size(), static_cast<size_t>(steps));
  EXPECT_EQ(b, a) << "the killed and resumed run's per-step losses differ from the uninterrupted run";
  EXPECT_EQ(sha256_file(checkpoint_dir(run, steps) + "/adapter_model.safetensors"),
            sha256_file(checkpoint_dir(ref, steps) + "/adapter_model.safetensors"));
}

TEST_F(Faults, StoppedRankIsNamedByTheWatchdog) {
  const std::string run = tmp_->file("stopped");
  Job j = start_job(launch(2) + train_args(model(), run, 5000) + " --collective-timeout 4", tmp_->file("stopped.log"));
  ASSERT_TRUE(wait_for_step(j, run, 3, 60)) << read_file(j.log);  // training, past start-up
  const std::vector<pid_t> pids = wait_rank_pids(j, run, 2, 30);
  ASSERT_GT(pids[1], 0);
  kill(pids[1], SIGSTOP);
  const double t0 = now_s();
  const int rc = wait_job(j, 30);
  kill(pids[1], SIGKILL);
  const std::string out = read_file(j.log);
  ASSERT_NE(rc, -1000) << "hung:\n" << out;
  std::printf("  rank 1 stopped: the job ended in %.1f s\n", now_s() - t0);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("rank 1 stopped responding"), std::string::npos) << out;
}

TEST_F(Faults, KilledCheckpointWritesNeverResumeTorn) {
  const int steps = 12;
  // One process (the writer is rank 0's alone): the reference is a clean one-process run.
  const std::string ref = tmp_->file("ckref");
  Proc r = sh(launch(0) + train_args(model(), ref, steps) + " --deterministic --save-every 1 --save-wait");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string want = sha256_file(checkpoint_dir(ref, steps) + "/adapter_model.safetensors");
  int torn_seen = 0;
  for (int point = 1; point <= 100; point++) {
    const std::string run = tmp_->file("ck" + std::to_string(point));
    Proc k = sh("LIGER_TEST_KILL_IN_CHECKPOINT=" + std::to_string(point) + " " + launch(0) +
                train_args(model(), run, steps) + " --deterministic --save-every 1 --save-wait");
    ASSERT_NE(k.code, 0) << "kill point " << point << " was not reached:\n" << k.out;
    // What the resume must take: the newest directory that verifies.
    const auto good = find_latest_complete(run);
    for (const CheckpointInfo& c : list_checkpoints(run)) torn_seen += !verify_checkpoint(c.dir).empty();
    for (const auto& e : fs::directory_iterator(run)) torn_seen += e.path().string().find(".tmp") != std::string::npos;
    Proc res = sh(launch(0) + train_args(model(), run, steps) + " --deterministic --save-every 1 --resume auto");
    ASSERT_EQ(res.code, 0) << "kill point " << point << ":\n" << res.out;
    if (good) EXPECT_NE(res.out.find("resumed from " + good->dir), std::string::npos) << res.out;
    else EXPECT_NE(res.out.find("starting fresh"), std::string::npos) << res.out;
    EXPECT_EQ(sha256_file(checkpoint_dir(run, steps) + "/adapter_model.safetensors"), want) << "kill point " << point;
    EXPECT_EQ(loss_text(run), loss_text(ref)) << "kill point " << point;
    fs::remove_all(run);
  }
  std::printf("  100 kill points; %d torn or unfinished checkpoint directories were left and skipped\n", torn_seen);
  EXPECT_GT(torn_seen, 0) << "no kill point left a torn write: the hook is not where it should be";
}

TEST_F(Faults, FlippedByteIsRejectedNamingTheFile) {
  const std::string run = tmp_->file("flip");
  Proc r = sh(launch(0) + train_args(model(), run, 4) + " --save-every 1 --save-wait");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string newest = checkpoint_dir(run, 4), previous = checkpoint_dir(run, 3);
  for (const auto& e : fs::directory_iterator(newest)) {
    const std::string file = e.path().string(), name = e.path().filename().string();
    if (name == "MANIFEST.json") continue;
    const std::string orig = read_file(file);
    std::string bad = orig;
    bad[bad.size() / 2] ^= 0x01;
    { std::ofstream(file, std::ios::binary | std::ios::trunc) << bad; }
    Proc res = sh(launch(0) + train_args(model(), run, 4) + " --save-every 1 --save-wait --resume auto");
    EXPECT_EQ(res.code, 0) << res.out;
    EXPECT_NE(res.out.find(name), std::string::npos) << "the damaged file is not named: " << res.out;
    EXPECT_NE(res.out.find("resumed from " + previous), std::string::npos) << res.out;
    { std::ofstream(file, std::ios::binary | std::ios::trunc) << orig; }
    // The resumed run wrote step 4 again, complete: put the flipped byte test on that one next time.
  }
}

TEST_F(Faults, NonFiniteGradientsSkipTheStepOnEveryRank) {
  const std::string clean = reference(6), bad = tmp_->file("nan"), alone = tmp_->file("nan1");
  // NaN on rank 1 at steps 3 and 5 (2 ranks); the same steps poisoned in one process: the same run.
  Proc r = sh("LIGER_TEST_NAN_STEPS=3,5 LIGER_TEST_NAN_RANK=1 " + launch(2) + train_args(model(), bad, 6) +
              " --deterministic --save-every 1 --save-wait --keep-last 10");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("[liger rank 0] warning: step 3: non-finite"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[liger rank 1] warning: step 5: non-finite"), std::string::npos) << r.out;
  Proc one = sh("LIGER_TEST_NAN_STEPS=3,5 " + launch(0) + train_args(model(), alone, 6) + " --deterministic");
  ASSERT_EQ(one.code, 0) << one.out;
  const auto a = loss_text(clean), b = loss_text(bad), c = loss_text(alone);
  EXPECT_EQ(b.at(1), a.at(1));
  EXPECT_EQ(b.at(2), a.at(2));
  EXPECT_EQ(b, c) << "dp 2 with NaN on rank 1 differs from one process with the same steps poisoned";
  // A skipped step leaves the adapters and the optimizer exactly as they were.
  for (const char* f : {"/adapter_model.safetensors", "/optimizer.safetensors"}) {
    EXPECT_EQ(sha256_file(checkpoint_dir(bad, 3) + f), sha256_file(checkpoint_dir(bad, 2) + f)) << f;
    EXPECT_NE(sha256_file(checkpoint_dir(bad, 4) + f), sha256_file(checkpoint_dir(bad, 3) + f)) << f;
  }
  // Three in a row with --max-bad-steps 3: one error, every rank exits non-zero, the last checkpoint intact (that of
  // step 4, a skipped step: the adapters of step 2, the data position after step 4).
  const std::string stop = tmp_->file("nanstop");
  Proc s = sh("LIGER_TEST_NAN_STEPS=3,4,5 " + launch(2) + train_args(model(), stop, 8) +
              " --deterministic --save-every 1 --save-wait --keep-last 10 --max-bad-steps 3");
  EXPECT_NE(s.code, 0) << s.out;
  size_t errors = 0;
  for (size_t at = s.out.find("liger: error:"); at != std::string::npos; at = s.out.find("liger: error:", at + 1))
    errors++;
  EXPECT_EQ(errors, 1u) << s.out;
  EXPECT_NE(s.out.find("3 steps in a row"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find(checkpoint_dir(stop, 4) + ", is intact"), std::string::npos) << s.out;
  EXPECT_EQ(verify_checkpoint(checkpoint_dir(stop, 4)), "");
  EXPECT_FALSE(fs::exists(checkpoint_dir(stop, 5))) << "no checkpoint after the step that stopped the run";
  EXPECT_EQ(sha256_file(checkpoint_dir(stop, 4) + "/adapter_model.safetensors"),
            sha256_file(checkpoint_dir(stop, 2) + "/adapter_model.safetensors"));
}

TEST_F(Faults, SigtermCheckpointsWithinTenSecondsAndResumesBitwise) {
  const std::string run = tmp_->file("term");
  Job j = start_job(launch(2) + train_args(model(), run, 3000) + " --deterministic",
                    tmp_->file("term.log"));
  ASSERT_TRUE(wait_for_step(j, run, 20, 60)) << read_file(j.log);  // mid-run
  const std::vector<pid_t> pids = wait_rank_pids(j, run, 2, 30);
  ASSERT_GT(pids[0], 0);
  ASSERT_GT(pids[1], 0);
  const double t0 = now_s();
  for (pid_t p : pids) kill(p, SIGTERM);
  const int rc = wait_job(j, 30);
  const double took = now_s() - t0;
  const std::string out = read_file(j.log);
  ASSERT_NE(rc, -1000) << out;
  EXPECT_EQ(rc, 75) << out;
  EXPECT_LE(took, 10.0) << out;
  const auto ck = find_latest_complete(run);
  ASSERT_TRUE(ck.has_value()) << out;
  std::printf("  SIGTERM: checkpoint of step %lld, exit %d, %.1f s after the signal\n",
              static_cast<long long>(ck->step), rc, took);
  const int steps = static_cast<int>(ck->step) + 4;
  Proc res = sh(launch(2) + train_args(model(), run, steps) + " --deterministic --resume auto");
  ASSERT_EQ(res.code, 0) << res.out;
  const std::string straight = tmp_->file("term_straight");
  Proc s = sh(launch(2) + train_args(model(), straight, steps) + " --deterministic");
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_TRUE(test::same_run_bitwise(run, straight, steps));
}

}  // namespace
}  // namespace liger
