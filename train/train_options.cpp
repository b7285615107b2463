#include "train/train_options.h"

#include <fstream>

#include "core/check.h"

namespace liger {

namespace po = boost::program_options;

po::options_description dist_options(dist::DistConfig& dc) {
  po::options_description d("distributed (under mpirun or srun)");
  d.add_options()("tp", po::value(&dc.tp)->default_value(1), "tensor-parallel size (divides heads, KV heads, MLP width)")(
      "dp", po::value(&dc.dp)->default_value(0), "data-parallel size (0: world size / tp; given: must match)")(
      "dist-backend", po::value(&dc.backend)->default_value("auto"),
      "auto (nccl on cuda, mpi on cpu, local alone) | mpi | nccl | local")(
      "rendezvous", po::value(&dc.rendezvous)->default_value(""),
      "NCCL unique-id exchange without MPI: tcp:HOST:PORT (rank 0 listens) or file:PATH (shared filesystem)")(
      "rendezvous-timeout", po::value(&dc.rendezvous_timeout_s)->default_value(300.0), "seconds to wait for it");
  return d;
}

po::options_description train_options(TrainConfig& cfg, std::string* targets, std::string* schedule) {
  po::options_description run("run"), lora("LoRA"), optim("optimizer"), data("data");
  run.add_options()("model", po::value(&cfg.model), "model directory (HF or Liger)")(
      "out", po::value(&cfg.out), "run directory (checkpoints, metrics.jsonl, config.json)")(
      "device", po::value(&cfg.device)->default_value("cpu"), "cpu or cuda (one GPU)")(
      "dtype", po::value(&cfg.dtype)->default_value(""),
      "activations and frozen weights: f32 (cpu default) or bf16 (cuda default); the adapters stay fp32")(
      "micro-batch", po::value(&cfg.micro_batch)->default_value(1), "sequences per micro-step")(
      "grad-accum", po::value(&cfg.grad_accum)->default_value(8), "micro-steps per optimizer step and rank")(
      "global-batch", po::value(&cfg.global_batch)->default_value(0),
      "sequences per optimizer step over all ranks (sets grad-accum; 0: micro-batch x grad-accum x dp)")(
      "collective-timeout", po::value(&cfg.collective_timeout_s)->default_value(600.0),
      "seconds without progress (a dead or hung peer rank) before the job stops naming it; 0: off")(
      "recompute", po::value(&cfg.recompute)->default_value(false)->implicit_value(true),
      "per-layer recompute: keep each layer's input only, redo its forward in the backward (long sequences)")(
      "max-bad-steps", po::value(&cfg.max_bad_steps)->default_value(5),
      "stop after N steps in a row with a non-finite loss or gradient (each is skipped on every rank)")(
      "deterministic", po::value(&cfg.deterministic)->default_value(false)->implicit_value(true),
      "sum micro-batch gradients in global sample order: bitwise the same for any dp")(
      "epochs", po::value(&cfg.epochs)->default_value(2), "passes over the training chunks")(
      "max-steps", po::value(&cfg.max_steps)->default_value(0), "stop after N optimizer steps (0: epochs decide)")(
      "log-every", po::value(&cfg.log_every)->default_value(1), "metrics every N steps")(
      "eval-every", po::value(&cfg.eval_every)->default_value(0), "validation every N steps (0: at the end)")(
      "eval-chunks", po::value(&cfg.eval_chunks)->default_value(0), "validation chunks per evaluation (0: all)")(
      "save-every", po::value(&cfg.save_every)->default_value(0), "checkpoint every N steps (0: at the end)")(
      "keep-last", po::value(&cfg.keep_last)->default_value(3), "complete checkpoints kept")(
      "save-wait", po::value(&cfg.save_wait)->default_value(false)->implicit_value(true),
      "a due checkpoint waits for the previous write (every N-th step written) instead of being taken at the first "
      "step after the writer is free (the steps never wait)")(
      "resume", po::value(&cfg.resume)->default_value(""), "auto (newest complete checkpoint of --out) or a DIR");
  lora.add_options()("lora-rank", po::value(&cfg.lora.rank)->default_value(8), "LoRA rank r")(
      "lora-alpha", po::value(&cfg.lora.alpha)->default_value(8.0), "LoRA alpha (scale alpha / r)")(
      "lora-dropout", po::value(&cfg.lora.dropout)->default_value(0.0), "LoRA dropout (only 0)")(
      "lora-targets", po::value(targets)->default_value("q,k,v"), "adapted projections: q,k,v,o,gate,up,down")(
      "lora-seed", po::value(&cfg.lora.seed)->default_value(0), "seed of the A initialization");
  optim.add_options()("lr", po::value(&cfg.optim.lr)->default_value(1e-3), "peak learning rate")(
      "beta1", po::value(&cfg.optim.beta1)->default_value(0.9), "AdamW beta1")(
      "beta2", po::value(&cfg.optim.beta2)->default_value(0.999), "AdamW beta2")(
      "eps", po::value(&cfg.optim.eps)->default_value(1e-8), "AdamW eps")(
      "weight-decay", po::value(&cfg.optim.weight_decay)->default_value(0.01), "decoupled weight decay")(
      "clip-norm", po::value(&cfg.optim.clip_norm)->default_value(0.0), "gradient clipping norm (0: off)")(
      "lr-schedule", po::value(schedule)->default_value("constant"), "constant | linear_warmup | cosine")(
      "warmup-steps", po::value(&cfg.optim.warmup_steps)->default_value(0), "linear warmup steps")(
      "total-steps", po::value(&cfg.optim.total_steps)->default_value(0), "steps of the cosine schedule")(
      "min-lr-ratio", po::value(&cfg.optim.min_lr_ratio)->default_value(0.0), "cosine floor as a fraction of lr");
  data.add_options()("data", po::value(&cfg.data.path),
                     "dataset file: Alpaca JSON/JSONL, JSONL {\"text\"} or plain text")(
      "data-format", po::value(&cfg.data.format)->default_value("auto"), "auto | alpaca | text | jsonl")(
      "template", po::value(&cfg.data.prompt_template)->default_value("alpaca"), "prompt template")(
      "chunk-length", po::value(&cfg.data.chunk_length)->default_value(1024), "tokens per packed chunk")(
      "pack-across-documents", po::value(&cfg.data.pack_across_documents)->default_value(false),
      "true: the paper's packing (no document boundaries)")(
      "validation-fraction", po::value(&cfg.data.validation_fraction)->default_value(0.01), "held-out fraction")(
      "validation-count", po::value(&cfg.data.validation_count)->default_value(0), "held-out records (overrides)")(
      "data-seed", po::value(&cfg.data.seed)->default_value(0), "seed of the split and the order")(
      "strict", po::value(&cfg.data.strict)->default_value(false), "true: a bad record is an error");
  po::options_description all;
  all.add(run).add(lora).add(optim).add(data).add(dist_options(cfg.dist));
  return all;
}

void finish_train_config(TrainConfig& cfg, const std::string& targets, const std::string& schedule) {
  cfg.lora.targets = LoraConfig::parse_targets(targets);
  cfg.optim.schedule = parse_lr_schedule(schedule);
}

void store_config_file(const std::string& path, const po::options_description& desc, po::variables_map* vm) {
  std::ifstream f(path);
  LIGER_CHECK(f.good(), "%s: cannot open config file", path.c_str());
  try {
    po::store(po::parse_config_file(f, desc, /*allow_unregistered=*/false), *vm);
  } catch (const po::error& e) {
    LIGER_FAIL("%s: %s", path.c_str(), e.what());
  }
}

TrainConfig load_train_config_file(const std::string& path) {
  TrainConfig cfg;
  std::string targets, schedule;
  po::options_description desc = train_options(cfg, &targets, &schedule);
  po::variables_map vm;
  store_config_file(path, desc, &vm);
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    LIGER_FAIL("%s: %s", path.c_str(), e.what());
  }
  finish_train_config(cfg, targets, schedule);
  try {
    cfg.validate();
  } catch (const Error& e) {
    LIGER_FAIL("%s: %s", path.c_str(), e.what());
  }
  return cfg;
}

}  // namespace liger
