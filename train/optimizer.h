// train/optimizer.h — AdamW over the trainable fp32 tensors (the LoRA A/B matrices), and the learning-rate schedules.
//
// The update is PyTorch's AdamW (torch.optim.AdamW, decoupled weight decay; the recipe of liger-spec.md §4.2 and §7
// item 15), per element of a parameter p with gradient g at step t = 1, 2, ...:
//   p     -= lr * wd * p                                  (decoupled weight decay, applied to the old p)
//   m      = b1 * m + (1 - b1) * g
//   v      = b2 * v + (1 - b2) * g^2
//   m_hat  = m / (1 - b1^t),  v_hat = v / (1 - b2^t)      (bias correction)
//   p     -= lr * m_hat / (sqrt(v_hat) + eps)
// arranged as in torch's fused kernel (torch.optim.AdamW(fused=True), which the reference training used;
// aten/src/ATen/native/cuda/fused_adam_utils.cuh, adam_math):
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p -= (lr / (1 - b1^t)) * m / denom.
// Per-step scalars (lr, the bias corrections) are computed in fp64 and rounded to fp32 once; every per-element
// operation is fp32 (parameters, gradients and both moments are fp32, DESIGN.md §2). (torch's kernel evaluates a few
// of the per-element products in fp64, because its scalars are doubles: results agree to a few fp32 ulps, not bitwise.)
//
// The element loops are ops (ops/adamw.h): the parameters, their gradients and the moments live on the CPU or on
// the GPU (the trainer keeps them on the GPU at tensor-parallel size 1: no copy to the host but for a checkpoint), and
// the GPU update has the CPU's bits. Optional global-norm clipping (PyTorch clip_grad_norm_:
// scale = clip_norm / (norm + 1e-6) when that is < 1) is folded into the update as a gradient multiplier, so the
// caller's gradient buffers are never modified.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/context.h"
#include "core/tensor.h"
#include "ops/adamw.h"

namespace liger {

// Learning-rate schedules (lr_at below).
enum class LrSchedule {
  Constant,      // lr at every step (the paper's recipe: constant 1e-3, no warmup)
  LinearWarmup,  // lr * (s + 1) / warmup_steps for s < warmup_steps, then lr
  Cosine,        // the same warmup, then a half cosine from lr down to min_lr_ratio * lr at total_steps, then flat
};
const char* lr_schedule_name(LrSchedule s);  // "constant" | "linear_warmup" | "cosine"
// Parses a schedule name; Error naming --lr-schedule and the accepted values otherwise.
LrSchedule parse_lr_schedule(const std::string& name);

// Optimizer settings. Defaults are the published recipe (liger-spec.md §7 item 15). The flag named with each field
// is the long option the trainer registers for it (and the name validate() uses in its messages).
struct OptimConfig {
  double lr = 1e-3;            // --lr: peak learning rate; > 0
  double beta1 = 0.9;          // --beta1: first-moment decay; in [0, 1)
  double beta2 = 0.999;        // --beta2: second-moment decay; in [0, 1)
  double eps = 1e-8;           // --eps: added to sqrt(v_hat); > 0
  double weight_decay = 0.01;  // --weight-decay: decoupled (AdamW) decay per unit lr; >= 0 and lr * wd < 1
  double clip_norm = 0.0;      // --clip-norm: clip the global gradient L2 norm to this value; 0 = off (the recipe)
  LrSchedule schedule = LrSchedule::Constant;  // --lr-schedule: constant | linear_warmup | cosine
  int64_t warmup_steps = 0;   // --warmup-steps: optimizer steps of linear warmup; 0 for constant, > 0 for
                              //   linear_warmup, >= 0 for cosine
  int64_t total_steps = 0;    // --total-steps: optimizer steps of the whole run; cosine needs > warmup_steps (the
                              //   other schedules ignore it)
  double min_lr_ratio = 0.0;  // --min-lr-ratio: cosine ends at min_lr_ratio * lr; in [0, 1]

  // Throws liger::Error naming the flag, the value and the accepted range for the first out-of-range field
  // (non-finite numbers included).
  void validate() const;
};

// Learning rate of the optimizer step with 0-based index `step` (= the number of steps already taken; AdamW::step
// uses lr_at(cfg, steps_done())). A pure function of the config: resuming at step s continues the same schedule.
//   constant:       lr
//   linear_warmup:  lr * (step + 1) / W  for step < W, then lr       (the first step is not wasted at lr 0; the last
//                                                                     warmup step, W - 1, runs at the full lr)
//   cosine:         the warmup above, then with p = min(1, (step - W) / (T - W)):
//                   lr * (r + (1 - r) * 0.5 * (1 + cos(pi * p)))     (lr at step W, r * lr at step T and after)
// W = warmup_steps, T = total_steps, r = min_lr_ratio. Error for step < 0. The config is assumed validated.
double lr_at(const OptimConfig& cfg, int64_t step);

// The per-step scalars and the element loops (CPU and GPU) are in ops/adamw.h.
using ops::AdamWScalars;

// What one AdamW::step did.
struct AdamWStepStats {
  int64_t step = 0;         // 1-based index of the step just taken (= steps_done() afterwards)
  double lr = 0.0;          // learning rate used (lr_at(cfg, step - 1))
  double grad_norm = 0.0;   // global L2 norm of the gradients before clipping (always computed)
  double grad_scale = 1.0;  // multiplier applied to the gradients (< 1 only when clipping took effect)
};

// AdamW over a fixed list of named fp32 parameter tensors, updated in place (a Tensor is a view: the optimizer
// writes into the caller's memory). Moments are zero-initialized fp32 tensors owned by the optimizer, on the
// parameters' device.
class AdamW {
 public:
  // `params`: distinct, non-empty names (the PEFT tensor names of the adapter), each a defined fp32 tensor, all on
  // one device; the name "step" is reserved. GPU parameters need `ctx` (a CUDA context: the stream of the updates).
  // Validates `cfg`. Errors name the offending parameter.
  AdamW(const OptimConfig& cfg, std::vector<std::pair<std::string, Tensor>> params, Context* ctx = nullptr);

  // One optimizer step: grads[i] is the gradient of params[i] (same shape, fp32, same device; already averaged over
  // micro-batches and data-parallel ranks). Computes the global gradient norm over all of them, derives the clip
  // scale (when clip_norm > 0), the lr from the schedule, and updates every parameter and moment. A non-finite
  // gradient norm is an Error raised before anything is modified (the loss diverged or the data has NaN/inf).
  AdamWStepStats step(const std::vector<Tensor>& grads);
  // The same step with the global norm already computed (global_norm(grads)): a caller that checks the gradients
  // for non-finite values first scans them once.
  AdamWStepStats step(const std::vector<Tensor>& grads, double grad_norm);
  // The global L2 norm of fp32 CPU gradients (sums of squares in fp64, in order); NaN or inf when any value is.
  static double global_norm(const std::vector<Tensor>& grads);
  // The same for the gradients of params() on their device (the GPU: one launch, one copy of the per-tensor sums).
  double norm(const std::vector<Tensor>& grads);

  int64_t steps_done() const { return steps_done_; }
  const OptimConfig& config() const { return cfg_; }
  const std::vector<std::pair<std::string, Tensor>>& params() const { return params_; }
  size_t state_bytes() const;  // bytes of the two moments

  // The optimizer state as named tensors (CPU copies, safe to keep while stepping, from either device): "<param>.exp_avg",
  // "<param>.exp_avg_sq" (fp32, the parameter's shape) for every parameter, and "step" (i64, shape (1)).
  std::vector<std::pair<std::string, Tensor>> export_state() const;
  // Restores a state written by export_state (from any device or a mapped file: values are copied). Every expected
  // tensor must be present with the right dtype and shape, and no other tensor may be present; an Error names
  // `what` (the file) and the tensor otherwise. After import, the next step is bitwise the step the exporting
  // optimizer would have taken.
  void import_state(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& what);

 private:
  void check_grads(const std::vector<Tensor>& grads) const;
  // GPU: the device table of (p, g, m, v, n) for `grads` (rebuilt when the gradient tensors change).
  const ops::AdamWTensor* device_table(const std::vector<Tensor>& grads);

  OptimConfig cfg_;
  Context* ctx_ = nullptr;                              // GPU parameters: their context
  std::vector<std::pair<std::string, Tensor>> params_;  // (name, fp32 tensor), updated in place
  std::vector<Tensor> exp_avg_;                         // m, one per param, same shape
  std::vector<Tensor> exp_avg_sq_;                      // v, one per param, same shape
  int64_t steps_done_ = 0;                              // t of the last step taken
  Tensor table_;                                        // GPU: the AdamWTensor entries (bytes on the device)
  std::vector<const void*> table_grads_;                // ... built for these gradient tensors
  int64_t max_numel_ = 0;
  Tensor sums_;                                         // GPU: (params) fp64 sums of squares
};

}  // namespace liger
