// model/convert.h — turning an HF model directory into a Liger model directory (liger-spec.md §1).
//
// Liger adds no parameters, so the weights are kept untouched (hard-linked, or copied across file systems or when
// asked); config.json gets a "liger" section; the tokenizer files come along. Every subcommand reads both kinds of
// directory.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace liger {

// The files besides config.json and the weights that a model directory carries along (tokenizer, generation
// defaults); `convert` and `export` copy those present.
const std::vector<std::string>& model_side_files();

struct ConvertOptions {
  bool copy_weights = false;  // copy instead of hard-linking
  bool force = false;         // write into an existing non-empty directory
};

// Writes the Liger model directory `out_dir` from the HF model directory `src_dir`. Validates the source (config and
// weights index) first; errors name the file. The directory is assembled under `out_dir.tmp` and renamed at the end,
// so an interrupted conversion leaves no half-written model behind.
void convert_to_liger(const std::string& src_dir, const std::string& out_dir, const LigerConfig& lc,
                      const ConvertOptions& opt);

}  // namespace liger
