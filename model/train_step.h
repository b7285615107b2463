// model/train_step.h — one micro-batch of LoRA fine-tuning: the training forward (saving what the backward needs),
// the fused LM head + cross-entropy, and the explicit backward through every layer down to the LoRA matrices.
// Only LoRA is trainable: the frozen weights get input gradients only (DESIGN.md §2). Runs on the model's device: the
// CPU in f32 (f64 for the finite-difference check of the whole model), the GPU with f32 or bf16 activations against
// fp32 adapters whose gradients accumulate in fp32 (the adapters must live on the model's device).
#pragma once

#include <functional>
#include <vector>

#include "model/llama.h"
#include "model/lora.h"

namespace liger {

struct StepStats {
  double loss_sum = 0.0;  // sum of the per-token losses over supervised tokens
  int64_t tokens = 0;     // supervised tokens
  std::vector<double> token_losses;  // (B*T) loss of every position, 0 where nothing is predicted
};

// ids, targets (B, T) i32 host tensors; targets[b, t] is the token to predict after position t (-100: none).
// Adds (+=) to every LoRA gradient the gradient of grad_scale * sum(losses); returns the summed loss.
// doc_starts (optional; B = 1): positions where a packed document begins (starting with 0). Every document then runs
// as if alone: its positions restart at 0, its attention window and recurrent state do not reach back into the
// previous document (document-aware packing, data/dataset.h). Without it, the sequence is one stream.
// after_layer (optional) is called with l once the backward of layer l has queued the last write to layer l's LoRA
// gradients (layers go L-1 .. 0): the data-parallel sum of that bucket can start (train/adapter_sync.h).
// recompute (per-layer activation checkpointing): the forward keeps each layer's input only and the backward runs the
// layer's forward again before its backward; the same losses and gradients, bit for bit, for one more forward and the
// memory of one layer's activations instead of L.
StepStats train_step(LlamaModel& model, LoraAdapters& lora, const Tensor& ids, const Tensor& targets,
                     float grad_scale, const std::vector<int32_t>* doc_starts = nullptr,
                     const std::function<void(int64_t layer)>& after_layer = {}, bool recompute = false);

// The summed loss with the adapters applied (lora may be null), no gradients (evaluation).
StepStats eval_step(LlamaModel& model, const LoraAdapters* lora, const Tensor& ids, const Tensor& targets,
                    const std::vector<int32_t>* doc_starts = nullptr);

}  // namespace liger
