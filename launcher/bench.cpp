// `liger bench forward`: prefill throughput and peak memory of the decoder on random weights (no files needed).
// `liger bench train`: LoRA fine-tuning throughput (forward, backward, optimizer) of a Liger or softmax model on random
// weights, as the trainer runs it.
// `liger bench layer` (launcher/bench_layer.cpp): one Liger attention layer and the recurrence alone, forward and
// backward.
#include <algorithm>
#include <cstdio>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/train_step.h"
#include "train/adapter_sync.h"
#include "train/checkpoint.h"
#include "train/train_options.h"
#include "train/trainer.h"

#ifdef LIGER_CUDA
#include <cuda_runtime.h>
#endif

namespace liger::cli {

namespace {

void print_device_memory(Device dev);

}  // namespace

ModelConfig bench_model_config(const std::string& shape, const std::string& variant, int64_t window) {
  ModelConfig cfg = model_config_for_shape(shape);
  if (variant != "softmax") {
    cfg.liger = parse_liger_config({{"variant", variant}, {"window", window}}, "--variant", cfg);
    cfg.is_liger = true;
  }
  return cfg;
}

namespace {

int bench_forward(const std::vector<std::string>& args) {
  std::string shape, device, dtype, logits_mode;
  int64_t seq = 0, batch = 1;
  int warmup = 0, iters = 0;
  po::options_description desc("bench forward options");
  desc.add_options()("shape", po::value(&shape)->default_value("llama3-8b"),
                     "model shape: llama3-8b, llama3.2-1b, llama3.2-3b, mistral-7b, qwen2.5-7b, stories260k")(
      "seq", po::value(&seq)->default_value(1024), "sequence length T")("batch", po::value(&batch)->default_value(1),
                                                                        "sequences per forward B")(
      "device", po::value(&device)->default_value("cuda"), "cpu or cuda")("dtype", po::value(&dtype)->default_value(""),
                                                                          "f32 (cpu default) or bf16 (cuda default)")(
      "logits", po::value(&logits_mode)->default_value("all"), "all: logits of every position; last: only the last")(
      "warmup", po::value(&warmup)->default_value(2), "untimed forwards first")(
      "iters", po::value(&iters)->default_value(5), "timed forwards (the median is reported)");
  po::variables_map vm;
  if (!parse_options("bench forward", args, desc, &vm, "[--shape NAME] [--seq N] [options]")) return 0;
  LIGER_CHECK(seq > 0 && batch > 0 && iters > 0 && warmup >= 0, "--seq, --batch and --iters must be positive");
  LIGER_CHECK(logits_mode == "all" || logits_mode == "last", "--logits must be all or last");
  const bool last_only = logits_mode == "last";
  const Device dev = parse_device(device);
  const DType dt = dtype.empty() ? (dev == Device::CPU ? DType::F32 : DType::BF16) : parse_dtype(dtype);
  ModelConfig cfg = model_config_for_shape(shape);
  Context ctx = dev == Device::CUDA ? Context::cuda(0) : Context::cpu();
  LOG_INFO("bench forward: %s, B=%lld T=%lld, %s %s, logits %s", cfg.summary().c_str(), static_cast<long long>(batch),
           static_cast<long long>(seq), ctx.device_label(), dtype_name(dt), logits_mode.c_str());
  reset_peak(dev);
  Timer init;
  std::unique_ptr<LlamaModel> model = LlamaModel::random(cfg, ctx, dt, /*seed=*/1234);
  ctx.synchronize();
  LOG_INFO("random weights: %.1f MiB in %.1f s", model->weight_bytes() / 1048576.0, init.seconds());

  std::vector<int32_t> ids(static_cast<size_t>(batch * seq));
  for (size_t i = 0; i < ids.size(); i++) ids[i] = static_cast<int32_t>((i * 7919 + 13) % cfg.vocab_size);
  Tensor tids = Tensor::from_i32({batch, seq}, ids);
  Tensor logits = Tensor::empty({batch, last_only ? 1 : seq, cfg.vocab_size}, DType::F32, dev);
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; i++) {
    ctx.synchronize();
    Timer t;
    model->forward(tids, nullptr, logits, last_only);
    ctx.synchronize();
    if (i >= warmup) times.push_back(t.seconds());
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  const double tokens = static_cast<double>(batch * seq);
  const MemStats ms = mem_stats(dev);
  std::printf("bench forward shape=%s B=%lld T=%lld device=%s dtype=%s logits=%s\n", shape.c_str(),
              static_cast<long long>(batch), static_cast<long long>(seq), ctx.device_label(), dtype_name(dt),
              logits_mode.c_str());
  std::printf("  median %.2f ms (min %.2f, max %.2f, %d iters) = %.0f tokens/s\n", med * 1e3, times.front() * 1e3,
              times.back() * 1e3, iters, tokens / med);
  std::printf("  peak memory held by liger: %.1f MiB (weights %.1f MiB, activations %.1f MiB, logits %.1f MiB)\n",
              ms.peak / 1048576.0, model->weight_bytes() / 1048576.0, model->activation_bytes() / 1048576.0,
              logits.nbytes() / 1048576.0);
  print_device_memory(dev);
  return 0;
}

// Peak and whole-process memory lines shared by the benchmarks.
void print_device_memory(Device dev) {
#ifdef LIGER_CUDA
  if (dev == Device::CUDA) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    std::printf(
        "  device memory in use (whole process, incl. CUDA context, cuBLAS and the allocator's cache): %.1f MiB "
        "of %.1f MiB\n",
        (total_b - free_b) / 1048576.0, total_b / 1048576.0);
  }
#else
  (void)dev;
#endif
}

int bench_train(const std::vector<std::string>& args) {
  std::string shape, device, dtype, variant, targets;
  int64_t seq = 0, batch = 1, rank = 8, window = 64;
  int warmup = 0, iters = 0;
  bool profile = false;
  po::options_description desc("bench train options");
  desc.add_options()("shape", po::value(&shape)->default_value("llama3-8b"),
                     "model shape: llama3-8b, llama3.2-1b, llama3.2-3b, mistral-7b, qwen2.5-7b, stories260k")(
      "variant", po::value(&variant)->default_value("gla"), "gla, hgrn2, gsa, or softmax (no conversion)")(
      "window", po::value(&window)->default_value(64), "Liger sliding window (previous tokens)")(
      "seq", po::value(&seq)->default_value(1024), "sequence length T")("batch", po::value(&batch)->default_value(1),
                                                                        "sequences per step")(
      "lora-rank", po::value(&rank)->default_value(8), "LoRA rank")(
      "lora-targets", po::value(&targets)->default_value("q,k,v"), "adapted projections")(
      "device", po::value(&device)->default_value("cuda"), "cpu or cuda")("dtype", po::value(&dtype)->default_value(""),
                                                                          "f32 (cpu default) or bf16 (cuda default)")(
      "warmup", po::value(&warmup)->default_value(2), "untimed steps first")(
      "iters", po::value(&iters)->default_value(6), "timed steps (the median is reported)")(
      "profile", po::bool_switch(&profile), "after the timed steps, profiled steps: time per section (syncs)");
  int64_t save_every = 0;
  std::string save_dir;
  bool recompute = false;
  desc.add_options()("recompute", po::bool_switch(&recompute),
                     "per-layer recompute: keep each layer's input only, redo its forward in the backward");
  desc.add_options()("save-every", po::value(&save_every)->default_value(0),
                     "write a checkpoint (adapters + AdamW state, asynchronously, as the trainer does) every N steps")(
      "save-dir", po::value(&save_dir)->default_value("bench-checkpoints"), "where --save-every writes them");
  dist::DistConfig dc;
  desc.add(dist_options(dc));
  po::variables_map vm;
  if (!parse_options("bench train", args, desc, &vm, "[--shape NAME] [--seq N] [--variant V] [options]")) return 0;
  LIGER_CHECK(seq > 1 && batch > 0 && iters > 0 && warmup >= 0, "--seq must be > 1, --batch and --iters positive");
  const Device dev = parse_device(device);
  const DType dt = dtype.empty() ? (dev == Device::CPU ? DType::F32 : DType::BF16) : parse_dtype(dtype);
  ModelConfig cfg = bench_model_config(shape, variant, window);
  // Under mpirun every rank runs the step on its own batch (data parallel) or its slice (--tp), as the trainer does.
  const dist::WorldInfo world = dist::discover_world();
  const int gpu_index = dev == Device::CUDA && world.size > 1 ? dist::cuda_device_for(world, cuda_device_count()) : 0;
  Context ctx = dev == Device::CUDA ? Context::cuda(gpu_index) : Context::cpu();
  std::unique_ptr<dist::Runtime> rt = dist::Runtime::create(dc, dev, ctx.stream());
  const ModelConfig full_cfg = cfg;
  cfg.set_tensor_parallel(rt->tp(), rt->tp_rank());
  reset_peak(dev);
  std::unique_ptr<LlamaModel> model =
      LlamaModel::random(cfg, ctx, dt, /*seed=*/1234, rt->tp() > 1 ? &rt->tp_comm() : nullptr);
  LoraConfig lc;
  lc.rank = rank;
  lc.alpha = static_cast<double>(rank);
  lc.targets = LoraConfig::parse_targets(targets);
  lc.validate();
  // As the trainer runs it: full master adapters, a device working copy (this rank's slice; at tp = 1 on a GPU it is
  // the master, and AdamW runs on the device), the data-parallel sum of the gradients (overlapped with the backward
  // on NCCL) and their tensor-parallel assembly.
  LoraAdapters host = LoraAdapters::init(full_cfg, lc, Device::CPU);
  AdapterSync sync(*rt, host, cfg, ctx);
  AdamW opt(OptimConfig{}, sync.optimizer_parameters(), &ctx);  // on the device at tp = 1 on a GPU
  LoraAdapters& work = sync.work();
  LOG_INFO("bench train: %s, B=%lld T=%lld, %s %s, LoRA r=%lld on %s (%lld parameters); %s", cfg.summary().c_str(),
           static_cast<long long>(batch), static_cast<long long>(seq), ctx.device_label(), dtype_name(dt),
           static_cast<long long>(rank), targets.c_str(), static_cast<long long>(host.n_params()),
           rt->describe().c_str());
  std::vector<int32_t> ids(static_cast<size_t>(batch * seq)), tg(ids.size());
  for (size_t i = 0; i < ids.size(); i++) ids[i] = static_cast<int32_t>((i * 7919 + 13) % cfg.vocab_size);
  for (size_t i = 0; i < ids.size(); i++) tg[i] = static_cast<int32_t>((i * 104729 + 7) % cfg.vocab_size);
  const Tensor tids = Tensor::from_i32({batch, seq}, ids), ttg = Tensor::from_i32({batch, seq}, tg);
  std::vector<double> times;
  double loss = 0;
  AsyncCheckpointWriter writer(save_dir, 2);
  int64_t steps_done = 0, written = 0;
  bool save_due = false;
  auto step = [&] {
    sync.zero_grad();
    const StepStats st = train_step(*model, work, tids, ttg, 1.0f / static_cast<float>(batch * seq * rt->dp()),
                                    nullptr, [&](int64_t l) { sync.layer_done(l); }, recompute);
    ProfileScope prof(ctx, sync.on_device() ? "optimizer (gradient sums, AdamW on the device)"
                                            : "optimizer (gradient sums, gradients to host, AdamW, adapters back)");
    sync.finish_gradients();
    sync.step(opt, sync.grad_norm(opt));
    loss = st.loss_sum / static_cast<double>(st.tokens);
    // As the trainer does: a due checkpoint waits for a free writer (no copy of the state for a write that would wait).
    ++steps_done;
    save_due = save_due || (save_every > 0 && steps_done % save_every == 0);
    if (save_due && rt->is_root() && !writer.busy()) {
      save_due = false;
      written++;
      CheckpointData ck;  // host copies, handed to the writer thread; the next step goes on meanwhile
      ck.tensors["adapter_model"] = TensorFile{sync.checkpoint_values(), {{"format", "pt"}}};
      ck.tensors["optimizer"] = TensorFile{opt.export_state(), {}};
      ck.json["trainer_state"] = {{"step", steps_done}};
      writer.submit(steps_done, std::move(ck));
    }
  };
  for (int i = 0; i < warmup + iters; i++) {
    ctx.synchronize();
    Timer t;
    step();
    ctx.synchronize();
    if (i >= warmup) times.push_back(t.seconds());
  }
  // A step ends when the slowest rank's does: the step time of the job is the maximum over the ranks.
  for (double& t : times) t = rt->world().all_reduce_value(t, dist::ReduceOp::Max);
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  const MemStats ms = mem_stats(dev);
  const int64_t job_tokens = batch * seq * rt->dp();  // tokens per step over the whole job
  if (!rt->is_root()) return 0;
  std::printf("bench train shape=%s variant=%s B=%lld T=%lld device=%s dtype=%s lora r=%lld targets=%s%s\n",
              shape.c_str(), variant.c_str(), static_cast<long long>(batch), static_cast<long long>(seq),
              ctx.device_label(), dtype_name(dt), static_cast<long long>(rank), targets.c_str(),
              recompute ? " recompute" : "");
  std::printf("  %s%s\n", rt->describe().c_str(),
              save_every > 0 ? strfmt("; a checkpoint due every %lld steps: %lld written in %lld steps (a due one "
                                      "waits for a free writer)",
                                      static_cast<long long>(save_every), static_cast<long long>(written),
                                      static_cast<long long>(steps_done)).c_str()
                             : "");
  std::printf("  median step %.2f ms (min %.2f, max %.2f, %d iters) = %.0f tokens/s (last loss %.3f)\n", med * 1e3,
              times.front() * 1e3, times.back() * 1e3, iters, static_cast<double>(job_tokens) / med, loss);
  std::printf("  peak memory held by liger: %.1f MiB (weights %.1f MiB)\n", ms.peak / 1048576.0,
              model->weight_bytes() / 1048576.0);
  print_device_memory(dev);
  if (profile) {
    set_profiling(true);
    for (int i = 0; i < 2; i++) {
      ProfileScope prof(ctx, "whole step (profiled)");
      step();
    }
    set_profiling(false);
    profile_report(stdout, 2);
  }
  return 0;
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf(
        "usage: liger bench <benchmark> [options]\n\nbenchmarks:\n  forward   prefill throughput and peak memory "
        "(random weights)\n  train     LoRA fine-tuning step throughput and peak memory (random weights)\n  layer     "
        "one Liger "
        "attention layer and its recurrence, forward and backward (random inputs)\n  decode    batched decoding: "
        "tokens/s at each length and the memory held (random weights)\n");
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "forward") return bench_forward(rest);
  if (args[0] == "train") return bench_train(rest);
  if (args[0] == "layer") return bench_layer(rest);
  if (args[0] == "decode") return bench_decode(rest);
  LIGER_FAIL("liger bench: unknown benchmark '%s' (available: forward, train, layer, decode)", args[0].c_str());
}

}  // namespace liger::cli
