// launcher/options.h — Boost.Program_options glue shared by the subcommands.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace liger::cli {

namespace po = boost::program_options;

// Parses `args` against `desc` (with positional arguments if given). Returns false when --help was asked for (the
// help text has been printed). Unknown options, missing values and bad numbers throw po::error, which main() turns
// into a one-line message and exit code 2.
bool parse_options(const std::string& command, const std::vector<std::string>& args, const po::options_description& desc,
                   po::variables_map* vm, const std::string& usage);

}  // namespace liger::cli
