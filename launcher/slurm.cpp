// `liger slurm [options] -- train --config FILE [...]`: writes the sbatch script of a (requeueable) training job and
// prints it (--dry-run, the default) or submits it (--submit). The job:
//   - one task per GPU (--gpus-per-node G), or --tasks-per-node T CPU ranks (--gpus-per-node 0);
//   - srun --mpi=pmix starts the ranks (MPI is how CPU ranks talk and how GPU ranks exchange NCCL's id);
//   - --signal=USR1@120 and --requeue: 120 s before the time limit, and on preemption, every rank gets SIGUSR1 (the
//     batch shell forwards a USR1 or TERM it receives itself, e.g. from `scancel --signal=USR1 --batch`), finishes its
//     step, checkpoints and exits 75 (train/preemption.h); the script then requeues the job, which continues with
//     --resume auto from the same run directory;
//   - the run directory and the log are named after the job: RUNS/NAME (checkpoints, metrics) and RUNS/NAME/slurm-<id>.log.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

#include "core/check.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "train/preemption.h"

namespace liger::cli {

namespace {

// A shell word: kept as is when it is plain, else single-quoted.
std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string absolute(const std::string& p) {
  return std::filesystem::absolute(p).lexically_normal().string();
}

}  // namespace

int cmd_slurm(const std::vector<std::string>& all_args) {
  // Everything after "--" is the liger command the job runs.
  std::vector<std::string> args, job;
  bool in_job = false;
  for (const std::string& a : all_args) {
    if (!in_job && a == "--") in_job = true;
    else (in_job ? job : args).push_back(a);
  }
  int64_t nodes = 1, gpus = 1, tasks = 0, cpus = 0;
  std::string time, partition, account, name, runs, script, extra, liger_path;
  bool submit = false, dry_run = false;
  po::options_description desc("slurm options");
  desc.add_options()("nodes", po::value(&nodes)->default_value(1), "nodes")(
      "gpus-per-node", po::value(&gpus)->default_value(1), "GPUs per node, one task each (0: CPU ranks)")(
      "tasks-per-node", po::value(&tasks)->default_value(0), "CPU ranks per node (with --gpus-per-node 0)")(
      "cpus-per-task", po::value(&cpus)->default_value(0), "CPUs per task (0: SLURM's default)")(
      "time", po::value(&time), "time limit HH:MM:SS (required)")(
      "partition", po::value(&partition), "partition")("account", po::value(&account), "account")(
      "job-name", po::value(&name)->default_value("liger"), "job name: also names the run directory and the log")(
      "runs", po::value(&runs)->default_value("runs"), "directory holding the run directory RUNS/JOB_NAME")(
      "sbatch-extra", po::value(&extra), "more #SBATCH lines, separated by ';' (e.g. --qos=high;--exclusive)")(
      "liger", po::value(&liger_path), "the liger program the job runs (default: this one)")(
      "script", po::value(&script), "also write the script to this file")(
      "dry-run", po::bool_switch(&dry_run), "print the script (the default)")(
      "submit", po::bool_switch(&submit), "submit it with sbatch and print the job id");
  po::variables_map vm;
  if (!parse_options("slurm", args, desc, &vm,
                     "--nodes N --gpus-per-node G --time HH:MM:SS [options] -- train --config FILE [...]"))
    return 0;
  LIGER_CHECK(!(submit && dry_run), "--submit and --dry-run: choose one");
  LIGER_CHECK(std::regex_match(time, std::regex(R"((\d+-)?\d{1,3}:\d{2}:\d{2})")),
              "--time '%s': expected HH:MM:SS (or D-HH:MM:SS)", time.c_str());
  LIGER_CHECK(nodes >= 1, "--nodes must be >= 1");
  LIGER_CHECK(gpus >= 0, "--gpus-per-node must be >= 0");
  LIGER_CHECK(gpus > 0 ? tasks == 0 || tasks == gpus : tasks >= 1,
              "--tasks-per-node: with GPUs there is one task per GPU; with --gpus-per-node 0 give the CPU ranks per "
              "node (>= 1)");
  LIGER_CHECK(!job.empty() && job[0] == "train",
              "after '--' comes the job's command: -- train --config FILE [...]");
  LIGER_CHECK(std::regex_match(name, std::regex(R"([A-Za-z0-9_.-]+)")),
              "--job-name '%s': letters, digits, '_', '-', '.' (it names the run directory)", name.c_str());
  for (const std::string& a : job)
    LIGER_CHECK(a != "--out" && a.rfind("--out=", 0) != 0 && a != "--resume" && a.rfind("--resume=", 0) != 0,
                "the job sets --out (RUNS/JOB_NAME) and --resume auto itself; remove %s", a.c_str());
  const int64_t per_node = gpus > 0 ? gpus : tasks;
  if (liger_path.empty()) {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    LIGER_CHECK(n > 0, "cannot find this program's path; pass --liger PATH");
    liger_path.assign(buf, static_cast<size_t>(n));
  }
  const std::string run_dir = absolute(runs) + "/" + name;

  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Written by `liger slurm`. A requeueable liger training job: SIGUSR1 120 s before the time limit (and on\n"
    << "# preemption) makes every rank checkpoint its current step and exit " << kRequeueExitCode
    << "; the job is then requeued and resumes.\n"
    << "#SBATCH --job-name=" << name << "\n"
    << "#SBATCH --nodes=" << nodes << "\n"
    << "#SBATCH --ntasks-per-node=" << per_node << "\n";
  if (gpus > 0) s << "#SBATCH --gpus-per-node=" << gpus << "\n";
  if (cpus > 0) s << "#SBATCH --cpus-per-task=" << cpus << "\n";
  s << "#SBATCH --time=" << time << "\n";
  if (!partition.empty()) s << "#SBATCH --partition=" << partition << "\n";
  if (!account.empty()) s << "#SBATCH --account=" << account << "\n";
  s << "#SBATCH --signal=USR1@120\n"
    << "#SBATCH --requeue\n"
    << "#SBATCH --open-mode=append\n"
    << "#SBATCH --output=" << run_dir << "/slurm-%j.log\n";
  std::stringstream ex(extra);
  for (std::string line; std::getline(ex, line, ';');)
    if (!line.empty()) s << "#SBATCH " << line << "\n";
  s << "\nset -u\n"
    << "RUN_DIR=" << shell_quote(run_dir) << "\n"
    << "mkdir -p \"$RUN_DIR\"\n"
    << "echo \"[liger slurm] job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: $(date)\"\n"
    << "srun --mpi=pmix --kill-on-bad-exit=1 " << shell_quote(liger_path);
  for (const std::string& a : job) s << " " << shell_quote(a);
  s << " --out \"$RUN_DIR\" --resume auto &\n"
    << "pid=$!\n"
    << "# A signal to the batch shell alone (scancel --signal=USR1 --batch, or TERM) goes on to every rank.\n"
    << "trap 'kill -USR1 $pid 2>/dev/null' USR1\n"
    << "trap 'kill -TERM $pid 2>/dev/null' TERM\n"
    << "rc=0\n"
    << "while true; do\n"
    << "  wait $pid; rc=$?\n"
    << "  kill -0 $pid 2>/dev/null || break  # wait also returns when a trapped signal arrives\n"
    << "done\n"
    << "echo \"[liger slurm] srun exited $rc: $(date)\"\n"
    << "if [ $rc -eq " << kRequeueExitCode << " ]; then\n"
    << "  echo \"[liger slurm] checkpointed after a stop signal: requeueing job $SLURM_JOB_ID\"\n"
    << "  scontrol requeue \"$SLURM_JOB_ID\"\n"
    << "fi\n"
    << "exit $rc\n";
  const std::string text = s.str();
  if (!script.empty()) {
    std::ofstream f(script);
    f << text;
    LIGER_CHECK(f.good(), "%s: cannot write the script", script.c_str());
  }
  if (!submit) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::filesystem::create_directories(run_dir);
  const std::string path = script.empty() ? run_dir + "/job.sbatch" : script;
  if (script.empty()) {
    std::ofstream f(path);
    f << text;
    LIGER_CHECK(f.good(), "%s: cannot write the script", path.c_str());
  }
  FILE* p = popen(("sbatch --parsable " + shell_quote(path) + " 2>&1").c_str(), "r");
  LIGER_CHECK(p != nullptr, "cannot run sbatch");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  const int rc = pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  LIGER_CHECK(rc == 0, "sbatch %s failed: %s", path.c_str(), out.c_str());
  std::printf("%s\n", out.c_str());  // the job id (--parsable: "id" or "id;cluster")
  return 0;
}

}  // namespace liger::cli
