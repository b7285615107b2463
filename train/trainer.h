// train/trainer.h — the LoRA fine-tuning loop (issue 4): data -> micro-batches -> train_step -> AdamW, with
// validation, metrics (JSONL), atomic checkpoints and exact resume.
//
// The data order is a pure function of the seed and the global sample index (data/dataset.h), the optimizer state
// and the adapters are saved bit for bit, and nothing else is random (dropout 0), so a resumed run takes exactly the
// steps a run that never stopped would have taken (bitwise on the CPU; tests/train/test_trainer.cpp).
#pragma once

#include <string>

#include "data/dataset.h"
#include "dist/runtime.h"
#include "model/lora.h"
#include "train/optimizer.h"

namespace liger {

struct TrainConfig {
  std::string model;           // model directory (HF, or Liger made by `liger convert`)
  std::string out;             // run directory: checkpoints step_N/, metrics.jsonl, config.json
  std::string device = "cpu";  // cpu or cuda (one GPU: the model, activations and a working copy of the adapters)
  std::string dtype;           // "" (f32 on the CPU, bf16 on the GPU), f32 or bf16: frozen weights and activations
  LoraConfig lora;             // rank, alpha, targets (q, k, v by default)
  OptimConfig optim;           // AdamW and the schedule
  DataConfig data;             // dataset, template, packing, split
  int64_t micro_batch = 1;     // sequences per micro-step
  int64_t grad_accum = 8;      // micro-steps per optimizer step and rank (global batch = micro_batch x grad_accum x dp)
  int64_t global_batch = 0;    // sequences per optimizer step over all ranks; 0: micro_batch x grad_accum x dp. Given,
                               // it sets grad_accum = global_batch / (micro_batch x dp), which must divide
  dist::DistConfig dist;       // tp, dp, backend, rendezvous (launched by mpirun or srun: dist/runtime.h)
  bool recompute = false;      // per-layer activation recompute: keep each layer's input only (long sequences)
  bool deterministic = false;  // micro-batch gradients summed in global sample order: bitwise the same for any dp
  double collective_timeout_s = 600;  // a rank that makes no progress for this long (waiting for a dead or hung peer)
                                     // ends the job naming the peer (dist/watchdog.h); 0: off
  int64_t max_bad_steps = 5;   // a step whose loss or gradients are not finite (on any rank) is skipped on every rank,
                               // the optimizer untouched; after this many in a row the run stops, its last good
                               // checkpoint intact
  int64_t epochs = 2;          // passes over the training chunks (the paper: 2)
  int64_t max_steps = 0;       // stop after this many optimizer steps (0: the epochs decide)
  int64_t log_every = 1;       // print and record metrics every N steps
  int64_t eval_every = 0;      // validation loss every N steps (0: only at the end)
  int64_t eval_chunks = 0;     // validation chunks per evaluation (0: all)
  int64_t save_every = 0;      // checkpoint every N steps (0: only at the end)
  int64_t keep_last = 3;       // complete checkpoints kept
  bool save_wait = false;      // false: a checkpoint that comes due while the previous one is still being written
                               // is taken at the first step after the writer is free, so the steps never wait for
                               // the disk (nor copy state for a write that would wait); true: the step waits, so
                               // every save_every-th step is written
  std::string resume;          // "": start fresh (the run directory must not hold checkpoints); "auto": the newest
                               // complete checkpoint of `out`; or a checkpoint directory

  void validate() const;
  // The resolved settings, saved in the run directory and hashed into checkpoints. The batch enters as the global
  // batch (not micro_batch / grad_accum, which depend on dp), so a run resumes under any dp x tp layout.
  Json to_json(int64_t global) const;
};

struct TrainResult {
  int64_t steps = 0;            // optimizer steps done in total (resumed steps included)
  std::vector<double> losses;   // mean training loss of each step run by this call
  double final_val_loss = 0.0;  // mean validation loss at the end (NaN without validation data)
  std::string last_checkpoint;
  bool preempted = false;       // stopped by SIGUSR1 / SIGTERM after writing the checkpoint of its last step
  int64_t skipped_steps = 0;    // steps of this call skipped for a non-finite loss or gradient
};

// Runs (or resumes) the training described by `cfg`; stops early after `stop_after` steps of this call when > 0
// (used to simulate an interrupted run in tests), writing a checkpoint there. Under mpirun / srun every rank calls
// it: the grid comes from cfg.dist (dist/runtime.h); samples are addressed by global index (step x global batch + j,
// rank d of dp taking j in [d n, d n + n), n = micro_batch x grad_accum), so the data order does not depend on dp.
// Rank 0 alone prints progress, writes metrics, config.json and checkpoints (on a thread of its own, so the steps go on
// while they are written); every rank returns the same result. SIGUSR1 / SIGTERM (train/preemption.h) on any rank stop
// every rank after the current step with a checkpoint of it (result.preempted).
TrainResult train(const TrainConfig& cfg, int64_t stop_after = 0);

}  // namespace liger
