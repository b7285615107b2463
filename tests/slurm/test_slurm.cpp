// tests/slurm/test_slurm.cpp — `liger slurm` against a real SLURM: munged, slurmctld and slurmd (Debian's munge and
// slurm-wlm) started on localhost as a one-node cluster by tests/slurm/cluster.sh, and stopped at the end.
//   1. A 2-task CPU training job submitted through the script `liger slurm` writes runs to completion: its checkpoint
//      is complete and its log holds the run.
//   2. A second job is sent SIGUSR1 mid-run (scancel --signal=USR1 --batch): it checkpoints, exits 75 and is
//      requeued; released (scontrol update StartTime=now), it resumes and ends with the final loss and the adapter
//      file (SHA-256) of an uninterrupted run.
// Skipped, with the reason printed, where SLURM is not installed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/common/proc.h"
#include "tests/common/test_util.h"
#include "train/checkpoint.h"

namespace liger {
namespace {

namespace fs = std::filesystem;
using test::launch;
using test::liger_binary;
using test::read_file;
using test::loss_text;
using test::Proc;
using test::sh;
using test::source_path;
using test::TempDir;
using test::train_args;

class Slurm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("slurm");
    Proc c = sh(source_path("tests/slurm/cluster.sh") + " start " + tmp_->file("cluster"));
    if (c.code == 77) {
      skip_ = "SLURM is not installed: " + c.out;
      return;
    }
    ASSERT_EQ(c.code, 0) << c.out;
    started_ = true;
    std::string conf = c.out;
    while (!conf.empty() && (conf.back() == '\n' || conf.back() == ' ')) conf.pop_back();
    setenv("SLURM_CONF", conf.c_str(), 1);
    // The jobs inherit this environment (sbatch --export=ALL): one OpenBLAS thread per rank, as the uninterrupted
    // reference run has (launch(0)). OpenBLAS's sums depend on its thread count, so bitwise comparisons need the same
    // count on both sides (docs/DISTRIBUTED.md); under srun a rank would otherwise take every core of the node.
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    Proc m = sh(liger_binary() + " convert --model " + source_path("assets/stories260K/hf") + " --out " +
                tmp_->file("gla") + " --variant gla --window 16");
    ASSERT_EQ(m.code, 0) << m.out;
  }
  static void TearDownTestSuite() {
    if (started_) {
      Proc c = sh(source_path("tests/slurm/cluster.sh") + " stop " + tmp_->file("cluster"));
      EXPECT_EQ(c.code, 0) << c.out;
      // "[m]" and "[s]": the pattern does not match the shell that runs pgrep itself.
      Proc left = sh("pgrep -af '([m]unged --key-file=|[s]lurmctld -f |[s]lurmd -f )" + tmp_->file("cluster") + "'");
      EXPECT_NE(left.code, 0) << "daemons left running: " << left.out;
    }
    delete tmp_;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  // The `-- train ...` part of a job: 2 CPU ranks, deterministic, its own steps.
  static std::string job_args(int steps) {
    std::string a = train_args(tmp_->file("gla"), "X", steps) + " --deterministic --save-every 25";
    return a.substr(0, a.find(" --out X")) + a.substr(a.find(" --out X") + 8);  // `liger slurm` sets --out itself
  }
  static std::string submit(const std::string& name, int steps) {
    Proc p = sh(liger_binary() + " slurm --gpus-per-node 0 --tasks-per-node 2 --time 00:10:00 --job-name " + name +
                " --runs " + tmp_->file("runs") + " --submit --" + job_args(steps));
    EXPECT_EQ(p.code, 0) << p.out;
    std::string id = p.out.substr(0, p.out.find_first_of(";\n"));
    return id;
  }
  static std::string field(const std::string& id, const std::string& key) {
    Proc p = sh("scontrol show job " + id);
    std::smatch m;
    if (std::regex_search(p.out, m, std::regex(key + "=([^ \n]*)"))) return m[1];
    return "";
  }
  // Polls until the job's state is one of `states` (or it left the queue: "GONE"); "" after the timeout.
  static std::string wait_state(const std::string& id, const std::vector<std::string>& states, double timeout_s) {
    std::string s;
    const bool reached = test::wait_until(
        [&] {
          s = field(id, "JobState");
          if (s.empty()) s = "GONE";
          return std::find(states.begin(), states.end(), s) != states.end();
        },
        timeout_s, 300);
    return reached ? s : "";
  }
  static TempDir* tmp_;
  static std::string skip_;
  static bool started_;
};
TempDir* Slurm::tmp_ = nullptr;
std::string Slurm::skip_;
bool Slurm::started_ = false;


TEST_F(Slurm, SubmittedJobTrains) {
  const std::string id = submit("first", 6);
  ASSERT_FALSE(id.empty());
  const std::string end = wait_state(id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "GONE"}, 180);
  const std::string run = tmp_->file("runs") + "/first";
  const std::string log = read_file(run + "/slurm-" + id + ".log");
  ASSERT_EQ(end, "COMPLETED") << log;
  EXPECT_EQ(verify_checkpoint(checkpoint_dir(run, 6)), "") << log;
  EXPECT_NE(log.find("world 2 = dp 2 x tp 1 (mpi backend, ranks from mpi)"), std::string::npos) << log;
  EXPECT_NE(log.find("trained 6 steps"), std::string::npos) << log;
  EXPECT_EQ(loss_text(run).size(), 6u);
}

TEST_F(Slurm, PreemptedJobRequeuesAndResumesBitwise) {
  const int steps = 300;
  const std::string id = submit("second", steps), run = tmp_->file("runs") + "/second";
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(wait_state(id, {"RUNNING"}, 60), "RUNNING");
  // Mid-run: once it has taken a few steps.
  ASSERT_TRUE(test::wait_until([&] { return loss_text(run).size() >= 20; }, 60))
      << read_file(run + "/slurm-" + id + ".log");
  Proc sig = sh("scancel --signal=USR1 --batch " + id);
  ASSERT_EQ(sig.code, 0) << sig.out;
  // It checkpoints and requeues itself: pending again, held until its BeginTime.
  ASSERT_EQ(wait_state(id, {"PENDING"}, 60), "PENDING") << read_file(run + "/slurm-" + id + ".log");
  EXPECT_EQ(field(id, "Restarts"), "1");
  const std::string log1 = read_file(run + "/slurm-" + id + ".log");
  EXPECT_NE(log1.find("srun exited 75"), std::string::npos) << log1;
  EXPECT_NE(log1.find("requeueing job " + id), std::string::npos) << log1;
  const auto ck = find_latest_complete(run);
  ASSERT_TRUE(ck.has_value());
  ASSERT_LT(ck->step, steps) << "the signal came after the end";
  // Release it once the node has cleaned up the stopped instance (releasing at once can race slurmd's cleanup of the
  // old step, whose id the new instance reuses).
  ASSERT_TRUE(test::wait_until(
      [&] {
        Proc n = sh("scontrol show node"), steps = sh("squeue -s -h"), stepd = sh("pgrep slurmstepd");
        return n.out.find("State=IDLE") != std::string::npos && steps.out.empty() && stepd.code != 0;
      },
      30, 200))
      << "the node did not clean up the stopped instance";
  Proc rel = sh("scontrol update JobId=" + id + " StartTime=now");
  ASSERT_EQ(rel.code, 0) << rel.out;
  const std::string end = wait_state(id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "GONE"}, 240);
  const std::string log = read_file(run + "/slurm-" + id + ".log");
  ASSERT_EQ(end, "COMPLETED") << log;
  EXPECT_NE(log.find("restart 1"), std::string::npos) << log;
  EXPECT_NE(log.find("resumed from " + ck->dir), std::string::npos) << log;
  std::printf("  stopped at step %lld, requeued, resumed, completed %d steps\n", static_cast<long long>(ck->step),
              steps);
  // The uninterrupted run: one process, the same global batch (deterministic: any dp gives the same bits).
  const std::string straight = tmp_->file("straight");
  Proc s = sh(launch(0) + train_args(tmp_->file("gla"), straight, steps) + " --deterministic --save-every 25");
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_TRUE(test::same_run_bitwise(run, straight, steps));
}

}  // namespace
}  // namespace liger
