// `liger train --config FILE [--key value ...]`: LoRA fine-tuning. The config file holds the same keys as the command
// line (Boost.Program_options syntax: `key = value`, `#` comments); the command line overrides it. Unknown keys and
// out-of-range values are errors naming the key.
#include <fstream>
#include <iostream>

#include "core/check.h"
#include "dist/runtime.h"
#include "launcher/commands.h"
#include "train/preemption.h"
#include "train/train_options.h"

namespace liger::cli {

namespace po = boost::program_options;

int cmd_train(const std::vector<std::string>& args) {
  install_stop_signals();  // first: a SIGUSR1 / SIGTERM during start-up must not kill the rank (it stops after a step)
  TrainConfig cfg;
  std::string targets, schedule, config_file;
  po::options_description desc = train_options(cfg, &targets, &schedule);
  desc.add_options()("config", po::value(&config_file), "config file with the same keys (key = value)");
  desc.add_options()("help,h", "print this help and exit");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);  // the command line first: it wins
  if (vm.count("help")) {
    std::cout << "usage: liger train --config FILE [--key value ...]\n\n" << desc << "\n";
    return 0;
  }
  if (vm.count("config")) store_config_file(vm["config"].as<std::string>(), desc, &vm);
  po::notify(vm);
  finish_train_config(cfg, targets, schedule);
  TrainResult r = train(cfg);
  if (r.preempted) {
    if (dist::world_rank() == 0)
      std::printf("stopped by a signal after step %lld; checkpoint %s; exit %d asks for a requeue (--resume auto)\n",
                  static_cast<long long>(r.steps), r.last_checkpoint.c_str(), kRequeueExitCode);
    return kRequeueExitCode;
  }
  if (dist::world_rank() == 0)  // every rank returns the same result; rank 0 reports it
    std::printf("trained %lld steps; final validation loss %.4f; checkpoint %s\n", static_cast<long long>(r.steps),
              r.final_val_loss, r.last_checkpoint.c_str());
  return 0;
}

}  // namespace liger::cli
