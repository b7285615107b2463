// launcher/main.cpp — the `liger` program: dispatches to a subcommand and owns the one fatal path: every
// liger::Error becomes "liger: error: <message>" on stderr and exit code 1; a command-line mistake exit code 2.
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/check.h"
#include "dist/runtime.h"
#include "launcher/commands.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: liger <command> [options]   (liger <command> --help for the options of one)\n\n"
               "commands:\n"
               "  convert    HF model directory -> Liger model directory (gla, hgrn2, gsa; ablations; hybrid)\n"
               "  generate   generate text from a model directory (HF or Liger), optionally with LoRA adapters merged\n"
               "  train      LoRA fine-tuning: `liger train --config configs/stories260k-liger-gla.cfg`\n"
               "  eval       perplexity on a text file or a validation split; --diagnostics: per-layer Liger figures\n"
               "  export     merge LoRA adapters into the weights: a model directory of its own\n"
               "  select-layers  rank a Liger model's layers by how much restoring softmax attention there brings it\n"
               "             back to its base model (KL); prints the --softmax-layers list for liger convert\n"
               "  bench      benchmarks: `liger bench forward --shape llama3-8b --seq 1024 --device cuda`\n"
               "  slurm      write or submit a requeueable sbatch job: `liger slurm --nodes 2 --gpus-per-node 8 --time "
               "24:00:00 -- train --config FILE`\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  const bool verbose = std::getenv("LIGER_VERBOSE") != nullptr;
  try {
    if (cmd == "convert") return liger::cli::cmd_convert(args);
    if (cmd == "generate") return liger::cli::cmd_generate(args);
    if (cmd == "bench") return liger::cli::cmd_bench(args);
    if (cmd == "train") return liger::cli::cmd_train(args);
    if (cmd == "eval") return liger::cli::cmd_eval(args);
    if (cmd == "export") return liger::cli::cmd_export(args);
    if (cmd == "slurm") return liger::cli::cmd_slurm(args);
    if (cmd == "select-layers") return liger::cli::cmd_select_layers(args);
    std::fprintf(stderr, "liger: unknown command '%s'\n", cmd.c_str());
    usage(stderr);
    return 2;
  } catch (const liger::dist::QuietError&) {
    return 1;  // reported once, by the rank that met it (rank 0 for errors every rank meets)
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "liger %s: %s (see liger %s --help)\n", cmd.c_str(), e.what(), cmd.c_str());
    return 2;
  } catch (const liger::Error& e) {
    // Under several ranks an error met by one rank alone names the rank and ends the whole job (no rank is left
    // waiting in a collective); errors every rank meets were already reported once (QuietError above).
    const std::string rank = liger::dist::multi_rank() ? liger::strfmt("[rank %d] ", liger::dist::world_rank()) : "";
    if (verbose) std::fprintf(stderr, "liger: error: %s%s [at %s:%d]\n", rank.c_str(), e.what(), e.file(), e.line());
    else std::fprintf(stderr, "liger: error: %s%s\n", rank.c_str(), e.what());
    if (liger::dist::multi_rank()) liger::dist::abort_job(1);
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "liger: error: out of host memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "liger: error: %s\n", e.what());
    return 1;
  }
}
