#include "launcher/options.h"

#include <iostream>

namespace liger::cli {

bool parse_options(const std::string& command, const std::vector<std::string>& args, const po::options_description& desc,
                   po::variables_map* vm, const std::string& usage) {
  po::options_description all(desc);
  all.add_options()("help,h", "print this help and exit");
  po::store(po::command_line_parser(args).options(all).run(), *vm);
  if (vm->count("help")) {
    std::cout << "usage: liger " << command << " " << usage << "\n\n" << all << "\n";
    return false;
  }
  po::notify(*vm);
  return true;
}

}  // namespace liger::cli
