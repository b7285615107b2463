// launcher/commands.h — the `liger` subcommands. Each takes the arguments after its name and returns the exit code.
#pragma once

#include <string>
#include <vector>

namespace liger::cli {

int cmd_convert(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_train(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_export(const std::vector<std::string>& args);
int cmd_slurm(const std::vector<std::string>& args);

// `liger bench layer` (launcher/bench_layer.cpp), dispatched by cmd_bench.
int bench_layer(const std::vector<std::string>& args);

}  // namespace liger::cli
