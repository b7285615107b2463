// tests/dist/test_rendezvous.cpp — the rendezvous that hands NCCL's unique id to every rank when the job has no MPI
// (srun without PMI): real processes (fork) meet over TCP on localhost and through a file, every rank receives rank
// 0's bytes, a rank 0 that never comes is a clear error within the timeout, and a stale file of another job is not
// taken.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "dist/runtime.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

std::vector<uint8_t> payload() {
  std::vector<uint8_t> p(128);
  for (size_t i = 0; i < p.size(); i++) p[i] = static_cast<uint8_t>(i * 37 + 11);
  return p;
}

// Runs ranks 1..n-1 as child processes (each exits 0 when it received `payload()`) and rank 0 here, once every child
// is up (its marker file exists), so the others are usually waiting when rank 0 comes.
void meet(const std::string& spec, int n) {
  test::TempDir marks("rdv_up");
  std::vector<pid_t> kids;
  for (int r = 1; r < n; r++) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::ofstream(marks.file(std::to_string(r))) << "up\n";
      int code = 3;
      try {
        code = dist::rendezvous_share(spec, r, n, {}, 20.0) == payload() ? 0 : 1;
      } catch (...) {
        code = 2;
      }
      _exit(code);
    }
    kids.push_back(pid);
  }
  ASSERT_TRUE(test::wait_until(
      [&] {
        for (int r = 1; r < n; r++)
          if (!std::filesystem::exists(marks.file(std::to_string(r)))) return false;
        return true;
      },
      30))
      << "the other ranks did not start";
  EXPECT_EQ(dist::rendezvous_share(spec, 0, n, payload(), 20.0), payload());
  for (pid_t k : kids) {
    int status = 0;
    waitpid(k, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << spec << ": a rank did not get rank 0's bytes";
  }
}

TEST(Rendezvous, TcpOnLocalhost) {
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  meet("tcp:127.0.0.1:" + std::to_string(port), 4);
}

TEST(Rendezvous, SharedFile) {
  test::TempDir tmp("rdv");
  meet("file:" + tmp.file("nccl_id"), 3);
}

TEST(Rendezvous, TimeoutIsAClearError) {
  test::TempDir tmp("rdv");
  EXPECT_TRUE(test::throws_error([&] { dist::rendezvous_share("file:" + tmp.file("never"), 1, 2, {}, 0.5); },
                                 {"--rendezvous", "within"}));
  const int port = 40000 + static_cast<int>(getpid() % 20000);
  EXPECT_TRUE(test::throws_error(
      [&] { dist::rendezvous_share("tcp:127.0.0.1:" + std::to_string(port), 1, 2, {}, 0.5); }, {"could not reach"}));
  EXPECT_TRUE(test::throws_error([&] { dist::rendezvous_share("udp:x", 1, 2, {}, 0.5); }, {"expected tcp:HOST:PORT"}));
}

TEST(Rendezvous, StaleFileOfAnotherJobIsIgnored) {
  test::TempDir tmp("rdv");
  const std::string path = tmp.file("id");
  setenv("LIGER_RENDEZVOUS_KEY", "job-A", 1);
  EXPECT_EQ(dist::rendezvous_share("file:" + path, 0, 2, payload(), 1.0), payload());  // job A's file stays behind
  setenv("LIGER_RENDEZVOUS_KEY", "job-B", 1);
  EXPECT_TRUE(test::throws_error([&] { dist::rendezvous_share("file:" + path, 1, 2, {}, 0.5); }, {"no file"}));
  unsetenv("LIGER_RENDEZVOUS_KEY");
}

}  // namespace
}  // namespace liger
