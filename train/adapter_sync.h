// train/adapter_sync.h — the adapters of one rank and how their gradients meet across ranks (DESIGN.md §5).
//
// Every rank keeps the full fp32 master adapters on the host (a few MB to a few hundred MB even for 70B shapes),
// identical on every rank: AdamW updates them and checkpoints hold them, in one logical layout whatever the
// dp x tp layout, so any layout resumes any other. The steps run on a working copy on the model's device, sliced for
// this rank's tensor-parallel block (LoraAdapters::shard). One optimizer step:
//   1. zero_grad(); every micro-batch's backward accumulates into the working copy's gradient buffer;
//   2. data parallel: the buffer is summed over the dp group — on NCCL (tp = 1) bucket by bucket, one layer's
//      gradients at a time, on a stream of its own while the backward of the last micro-batch goes on (layer_done);
//      elsewhere once, after it;
//      or, in deterministic mode, every micro-batch's gradients are stashed, gathered from every dp rank and added in
//      global sample order (stash_micro_batch, reduce_stash), so the sum has the same bits whatever dp is;
//   3. tensor parallel: the buffers of the tp group are gathered and put together into the master's gradients
//      (LoraAdapters::assemble_gradients: split tensors concatenated, partial sums added in rank order);
//   4. AdamW on the master (the same on every rank), and the new values sliced into the working copy.
// On a GPU without tensor parallelism the working copy is the whole adapters, so it is the master: AdamW runs on the
// device over it (optimizer_parameters()), nothing goes to the host in a step, and checkpoint_values() copies the
// values out only when a checkpoint is written.
#pragma once

#include <memory>
#include <vector>

#include "core/context.h"
#include "dist/overlap.h"
#include "dist/runtime.h"
#include "model/lora.h"
#include "train/optimizer.h"

namespace liger {

class AdapterSync {
 public:
  // master: the full adapters (host, fp32); local: the model's config (its tp slice); ctx: the model's context.
  AdapterSync(dist::Runtime& rt, LoraAdapters& master, const ModelConfig& local, Context& ctx);

  LoraAdapters& work() { return work_; }
  // True when the optimizer runs on the device over the working copy (tp = 1 on a GPU).
  bool on_device() const { return on_device_; }
  // The tensors AdamW updates: the working copy's on the device (on_device()), else the host master's.
  std::vector<std::pair<std::string, Tensor>> optimizer_parameters() const;
  // Host copies of the current adapter values (PEFT names, full shapes), for a checkpoint.
  std::vector<std::pair<std::string, Tensor>> checkpoint_values() const;

  void zero_grad() { work_.zero_grad(); }
  // After the backward of `layer` in the last micro-batch of a step (train_step's after_layer): starts that bucket's
  // data-parallel sum when it can overlap.
  void layer_done(int64_t layer);
  // The data-parallel sum (what layer_done did not start), then the tensor-parallel assembly into the master.
  void finish_gradients();

  // Deterministic mode: keeps this micro-batch's gradients (used = false: the micro-batch was skipped, nothing kept)
  // and zeroes the working gradients for the next one.
  void stash_micro_batch(bool used);
  // Gathers every dp rank's stash (rank d holds global micro-batches d * n .. d * n + n - 1) and adds them in global
  // order into the working gradients, then assembles as finish_gradients does.
  void reduce_stash();

  // The global norm of the assembled gradients (NaN or inf when any is not finite: the step is skipped); `opt` is
  // the optimizer over optimizer_parameters().
  double grad_norm(AdamW& opt) const;
  // AdamW (grad_norm: as grad_norm() returned); off the device, the master's new values into the working copy.
  AdamWStepStats step(AdamW& opt, double grad_norm);

 private:
  void assemble();
  // The adapters AdamW updates: the working copy on the device (on_device_), else the host master.
  const LoraAdapters& updated() const { return on_device_ ? work_ : master_; }

  dist::Runtime& rt_;
  LoraAdapters& master_;
  ModelConfig local_;
  Context& ctx_;
  LoraAdapters work_;
  bool on_device_ = false;
  std::unique_ptr<dist::OverlappedSum> dp_sum_;
  std::vector<float> stash_;        // (micro-batches kept so far, G) host copies, deterministic mode
  std::vector<double> stash_used_;  // 1 / 0 per stashed micro-batch
};

}  // namespace liger
