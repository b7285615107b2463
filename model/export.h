// model/export.h — LoRA adapters merged into a model's weights: in memory (`liger generate --adapter`), or written
// out as a model directory of its own (`liger export`) that every subcommand loads like any other.
//
// Merging is exact in exact arithmetic (liger-spec.md §6.2: the gates and feature maps are functions of the merged
// key), so the merged model computes what the model with its adapters computes, to f32 rounding.
#pragma once

#include <string>

#include "model/llama.h"
#include "model/lora.h"

namespace liger {

// The frozen matrix (out, in) of `model` that target t of layer `layer` adapts (W_Q, W_K, ..., W_down).
Tensor lora_target_weight(ModelWeights& w, int64_t layer, LoraTarget t);

// W += sign * (alpha / r) B A for every adapted projection (sign -1 takes the adapters out again). The weights must
// be f32 on the CPU (an Error otherwise: there is no GPU merge; export the merged model and load that).
void merge_adapters(LlamaModel& model, const LoraAdapters& lora, double sign = 1.0);

struct ExportOptions {
  bool force = false;  // replace an existing non-empty output directory
};

// Writes the model directory out_dir:
//   config.json        the source's, byte for byte (a "liger" section stays: a Liger model exports as a Liger model);
//   model.safetensors  every weight of the model under its HF name, with the adapters of adapter_dir (a PEFT adapter
//                      directory or a training checkpoint) merged in f32 and each tensor stored in the dtype it has in
//                      the source checkpoint (f32 stays f32; bf16/f16 are rounded to nearest even after the merge);
//                      one file, whatever the source's sharding; metadata {"format": "pt"} as HF writes it;
//   tokenizer files    copied (model_side_files()).
// The directory is assembled under out_dir.tmp and renamed at the end, so an interrupted export leaves no
// half-written model. out_dir may not be the model or the adapter directory; an existing non-empty out_dir needs
// force. Errors name the file (and tensor) at fault.
void export_merged_model(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                         const ExportOptions& opt);

}  // namespace liger
