// train/train_options.h — the `liger train` keys (Boost.Program_options), shared by the command line, config files
// and the test that validates every file in configs/.
#pragma once

#include <boost/program_options.hpp>
#include <string>

#include "train/trainer.h"

namespace liger {

// The options of `liger train`, bound to the fields of `cfg`; `targets` and `schedule` receive the two keys that are
// parsed after (finish_train_config).
boost::program_options::options_description train_options(TrainConfig& cfg, std::string* targets,
                                                          std::string* schedule);
// The `dist` group (--tp, --dp, --dist-backend, --rendezvous, --rendezvous-timeout), shared by train, bench, generate
// and eval.
boost::program_options::options_description dist_options(dist::DistConfig& dc);
void finish_train_config(TrainConfig& cfg, const std::string& targets, const std::string& schedule);
// Adds the keys of a config file to vm (values already there, from the command line, win). Unknown keys and bad
// values are Errors naming the file.
void store_config_file(const std::string& path, const boost::program_options::options_description& desc,
                       boost::program_options::variables_map* vm);
// Reads a config file alone and validates the result (TrainConfig::validate): an Error names the file and the key.
TrainConfig load_train_config_file(const std::string& path);

}  // namespace liger
