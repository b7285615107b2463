// launcher/commands.h — the `liger` subcommands. Each takes the arguments after its name and returns the exit code.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace liger::cli {

int cmd_convert(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_train(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_export(const std::vector<std::string>& args);
int cmd_slurm(const std::vector<std::string>& args);
int cmd_select_layers(const std::vector<std::string>& args);

// `liger bench layer` (launcher/bench_layer.cpp), dispatched by cmd_bench.
int bench_layer(const std::vector<std::string>& args);
// `liger bench decode` (launcher/bench_decode.cpp), dispatched by cmd_bench.
int bench_decode(const std::vector<std::string>& args);
// The model of a benchmark: the named shape (model_config_for_shape), converted to the Liger `variant` with the given
// window unless the variant is "softmax" (launcher/bench.cpp).
ModelConfig bench_model_config(const std::string& shape, const std::string& variant, int64_t window);

}  // namespace liger::cli
