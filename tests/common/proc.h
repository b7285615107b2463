// tests/common/proc.h — running the liger program (alone or as MPI ranks) from a test, and reading what a training run
// left behind (metrics.jsonl, adapter files).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <map>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/safetensors.h"
#include "train/checkpoint.h"
#include "tests/common/test_util.h"

namespace liger::test {

struct Proc {
  int code = -1;    // exit code (-1: killed by a signal)
  std::string out;  // stdout and stderr
};

inline Proc sh(const std::string& cmd) {
  Proc r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The liger program as np MPI ranks (np = 0: one plain process, no mpirun). One BLAS thread per rank: the ranks share
// the machine's cores.
inline std::string launch(int np) {
  const std::string bin = liger_binary();
  if (np == 0) return "OPENBLAS_NUM_THREADS=1 " + bin;
  return std::string(LIGER_MPIEXEC) + " -n " + std::to_string(np) +
         " --oversubscribe --allow-run-as-root -x OPENBLAS_NUM_THREADS=1 " + bin;
}

// A small training run on the bundled text: `global_batch` sequences of 64 tokens per step.
inline std::string train_args(const std::string& model, const std::string& out, int steps, int global_batch = 4) {
  return " train --model " + model + " --out " + out + " --data " +
         source_path("assets/text/tinystories_valid_head.txt") +
         " --data-format text --chunk-length 64 --validation-count 8 --validation-fraction 0 --epochs 1"
         " --eval-chunks 4 --log-every 1 --micro-batch 1 --global-batch " +
         std::to_string(global_batch) + " --max-steps " + std::to_string(steps);
}

// step -> the "loss" field's text (exact digits, for bitwise comparisons) of metrics.jsonl; torn lines are skipped.
inline std::map<int64_t, std::string> loss_text(const std::string& run) {
  std::map<int64_t, std::string> m;
  std::ifstream f(run + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("loss")) m[j["step"].get<int64_t>()] = j["loss"].dump();
  }
  return m;
}

// step -> the numeric field `key` of metrics.jsonl ("loss", "grad_norm", ...); torn lines are skipped.
inline std::map<int64_t, double> metric_values(const std::string& run, const std::string& key) {
  std::map<int64_t, double> m;
  std::ifstream f(run + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains(key) && j[key].is_number()) m[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return m;
}

// Every adapter tensor of a checkpoint (f32 values).
inline std::map<std::string, std::vector<float>> adapters(const std::string& ckpt) {
  std::map<std::string, std::vector<float>> m;
  auto f = SafetensorsFile::open(ckpt + "/adapter_model.safetensors");
  for (const SafetensorsEntry& e : f->entries()) m[e.name] = f->tensor(e.name).to_f32_vector();
  return m;
}

inline std::string read_file(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Two runs are the same training, bit for bit: every step's loss, and the adapter file of the last step.
inline ::testing::AssertionResult same_run_bitwise(const std::string& run, const std::string& ref, int64_t last_step) {
  const std::map<int64_t, std::string> a_loss = loss_text(run), b_loss = loss_text(ref);
  if (a_loss != b_loss) {
    // Name the first step that differs (or is missing from one of them).
    auto ia = a_loss.begin(), ib = b_loss.begin();
    while (ia != a_loss.end() && ib != b_loss.end() && *ia == *ib) ++ia, ++ib;
    auto describe = [](const auto& it, const auto& end) {
      return it == end ? std::string("(none)") : "step " + std::to_string(it->first) + " loss " + it->second;
    };
    return ::testing::AssertionFailure() << run << ": per-step losses differ (" << a_loss.size() << " and "
                                         << b_loss.size() << " steps logged); first difference: "
                                         << describe(ia, a_loss.end()) << " against " << describe(ib, b_loss.end());
  }
  const std::string a = sha256_file(checkpoint_dir(run, last_step) + "/adapter_model.safetensors");
  const std::string b = sha256_file(checkpoint_dir(ref, last_step) + "/adapter_model.safetensors");
  if (a != b) return ::testing::AssertionFailure() << run << ": the adapters of step " << last_step << " differ";
  return ::testing::AssertionSuccess();
}

}  // namespace liger::test
