#include "train/trainer.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/train_step.h"
#include "dist/watchdog.h"
#include "train/adapter_sync.h"
#include "train/checkpoint.h"
#include "train/preemption.h"

namespace liger {

namespace fs = std::filesystem;

void TrainConfig::validate() const {
  LIGER_CHECK(!model.empty(), "--model: required");
  LIGER_CHECK(!out.empty(), "--out: required (the run directory)");
  LIGER_CHECK(device == "cpu" || device == "cuda", "--device %s: expected cpu or cuda", device.c_str());
  LIGER_CHECK(dtype.empty() || dtype == "f32" || dtype == "bf16", "--dtype %s: expected f32 or bf16", dtype.c_str());
  LIGER_CHECK(!(device == "cpu" && dtype == "bf16"), "--dtype bf16: the CPU path computes in f32 (use --device cuda)");
  LIGER_CHECK(micro_batch >= 1 && micro_batch <= 4096, "--micro-batch must be in [1, 4096]");
  LIGER_CHECK(grad_accum >= 1 && grad_accum <= 65536, "--grad-accum must be in [1, 65536]");
  LIGER_CHECK(epochs >= 1, "--epochs must be >= 1");
  LIGER_CHECK(max_steps >= 0 && log_every >= 1 && eval_every >= 0 && eval_chunks >= 0 && save_every >= 0,
              "--max-steps, --eval-every, --eval-chunks, --save-every must be >= 0 and --log-every >= 1");
  LIGER_CHECK(keep_last >= 1, "--keep-last must be >= 1");
  LIGER_CHECK(global_batch >= 0, "--global-batch must be >= 0 (0: micro_batch x grad_accum x dp)");
  LIGER_CHECK(max_bad_steps >= 1, "--max-bad-steps must be >= 1");
  LIGER_CHECK(collective_timeout_s >= 0, "--collective-timeout must be >= 0 (0: off)");
  dist.validate();
  lora.validate();
  optim.validate();
  data.validate();
}

Json TrainConfig::to_json(int64_t global) const {
  Json targets = Json::array();
  for (LoraTarget t : lora.targets) targets.push_back(lora_target_module(t));
  return {{"model", model},
          {"lora", {{"rank", lora.rank}, {"alpha", lora.alpha}, {"targets", targets}, {"seed", lora.seed}}},
          {"optim",
           {{"lr", optim.lr},
            {"beta1", optim.beta1},
            {"beta2", optim.beta2},
            {"eps", optim.eps},
            {"weight_decay", optim.weight_decay},
            {"clip_norm", optim.clip_norm},
            {"schedule", lr_schedule_name(optim.schedule)},
            {"warmup_steps", optim.warmup_steps},
            {"total_steps", optim.total_steps},
            {"min_lr_ratio", optim.min_lr_ratio}}},
          {"data",
           {{"path", data.path},
            {"format", data.format},
            {"template", data.prompt_template},
            {"chunk_length", data.chunk_length},
            {"pack_across_documents", data.pack_across_documents},
            {"validation_fraction", data.validation_fraction},
            {"validation_count", data.validation_count},
            {"seed", data.seed},
            {"strict", data.strict}}},
          {"global_batch", global},
          {"epochs", epochs}};
}

namespace {

// Mean loss of each chunk (B = 1 per train_step, so every sequence gets its own mean, as the recipe's loss does).
struct Batch {
  Tensor ids, targets;
  int64_t supervised = 0;
  std::vector<int32_t> doc_starts;  // {0} in pack_across_documents mode: one stream
};

Batch make_batch(const Chunk& c) {
  Batch b;
  const int64_t T = static_cast<int64_t>(c.input_ids.size());
  b.ids = Tensor::from_i32({1, T}, c.input_ids);
  b.targets = Tensor::from_i32({1, T}, c.targets);
  b.supervised = c.num_targets();
  b.doc_starts = c.doc_starts;
  return b;
}

// Mean validation loss: chunk i is evaluated by dp rank i % dp (the whole tp group together); the per-chunk sums are
// gathered and added in chunk order, so the figure does not depend on the layout beyond rounding inside the model.
double validation_loss(LlamaModel& model, const LoraAdapters& lora, const DataLoader& data, int64_t limit,
                       dist::Runtime& rt, dist::Watchdog& watchdog) {
  const int64_t n = limit > 0 ? std::min(limit, data.num_validation_chunks()) : data.num_validation_chunks();
  const int64_t dp = rt.dp(), per = (n + dp - 1) / dp;
  std::vector<double> mine(static_cast<size_t>(2 * per), 0.0);  // (sum, tokens) of chunks dp_rank, dp_rank + dp, ...
  for (int64_t k = 0; k < per; k++) {
    const int64_t i = k * dp + rt.dp_rank();
    if (i >= n) break;
    Batch b = make_batch(data.validation_chunk(i));
    watchdog.progress();
    StepStats s = eval_step(model, &lora, b.ids, b.targets, &b.doc_starts);
    mine[static_cast<size_t>(2 * k)] = s.loss_sum;
    mine[static_cast<size_t>(2 * k + 1)] = static_cast<double>(s.tokens);
  }
  const std::vector<double> all = rt.dp_comm().all_gather_values(mine);  // rank d's block d
  double sum = 0.0, tokens = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const size_t at = static_cast<size_t>((i % dp) * 2 * per + 2 * (i / dp));
    sum += all[at];
    tokens += all[at + 1];
  }
  return tokens > 0 ? sum / tokens : NAN;
}

// After a resume at `step`: metrics.jsonl keeps the records of steps <= step (those the checkpoint includes), so the
// file of a run that was interrupted and resumed, any number of times, reads as one uninterrupted run. A line torn by a
// crash is dropped too. Rewritten atomically.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    if (j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  in.close();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    LIGER_CHECK(out.good(), "%s: write failed", tmp.c_str());
  }
  fs::rename(tmp, path);
}

void append_jsonl(const std::string& path, const Json& j) {
  std::ofstream f(path, std::ios::app);
  f << j.dump() << "\n";
  LIGER_CHECK(f.good(), "%s: write failed", path.c_str());
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s);
  return t >= 3600 ? strfmt("%lldh%02lldm", static_cast<long long>(t / 3600), static_cast<long long>(t % 3600 / 60))
                   : strfmt("%lldm%02llds", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
}

}  // namespace

TrainResult train(const TrainConfig& cfg, int64_t stop_after) {
  cfg.validate();
  const bool gpu = cfg.device == "cuda";
  // The job: rank discovery first, then the GPU of this rank's local rank, then the grid and its communicators.
  const dist::WorldInfo world = dist::discover_world();
  int cuda_device = 0;
  if (gpu && world.size > 1 && cuda_device_count() > 0) cuda_device = dist::cuda_device_for(world, cuda_device_count());
  Context ctx = gpu ? Context::cuda(cuda_device) : Context::cpu();
  std::unique_ptr<dist::Runtime> rt = dist::Runtime::create(cfg.dist, ctx.device(), ctx.stream());
  const bool root = rt->is_root();

  // Batch layout: global = micro_batch x grad_accum x dp.
  int64_t grad_accum = cfg.grad_accum;
  dist::agree(rt->world(), [&] {
    if (cfg.global_batch == 0) return;
    const int64_t per = cfg.micro_batch * rt->dp();
    LIGER_CHECK(cfg.global_batch % per == 0,
                "--global-batch %lld is not a multiple of micro_batch x dp = %lld x %d: choose a global batch that "
                "micro-batches of %lld sequences on %d data-parallel ranks divide",
                static_cast<long long>(cfg.global_batch), static_cast<long long>(cfg.micro_batch), rt->dp(),
                static_cast<long long>(cfg.micro_batch), rt->dp());
    grad_accum = cfg.global_batch / per;
  });
  const int64_t per_rank = cfg.micro_batch * grad_accum;  // sequences of one rank per optimizer step
  const int64_t per_step = per_rank * rt->dp();            // the global batch
  const Json settings = cfg.to_json(per_step);
  const std::string config_hash = sha256_hex(settings.dump());
  const DType dtype = cfg.dtype == "bf16" || (cfg.dtype.empty() && gpu) ? DType::BF16 : DType::F32;

  // Setup that any rank may fail (files, data, shapes): agreed on, so an error is one line and no rank hangs.
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<DataLoader> data;
  LoraAdapters lora;
  std::unique_ptr<AdamW> opt;
  std::vector<std::pair<std::string, Tensor>> resumed_optimizer;  // AdamW state of the checkpoint resumed from
  int64_t total = 0, start = 0, bad_in_a_row = 0;
  std::string resume_dir;
  int64_t latest_step = -1;
  dist::agree(rt->world(), [&] {
    if (root) fs::create_directories(cfg.out);
    model = LlamaModel::load(cfg.model, ctx, dtype, rt->tp() > 1 ? &rt->tp_comm() : nullptr);
    tok = load_tokenizer(cfg.model);
    data = std::make_unique<DataLoader>(cfg.data, *tok);
    // The master adapters: full (tp = 1) shapes, on the host, the same on every rank.
    ModelConfig full = model->config();
    full.set_tensor_parallel(1, 0);
    lora = LoraAdapters::init(full, cfg.lora, Device::CPU);
    const int64_t nc = data->num_chunks();
    total = cfg.epochs * nc / per_step;
    if (cfg.max_steps > 0) total = std::min(total, cfg.max_steps);
    LIGER_CHECK(total > 0,
                "%s: %lld training chunks of %lld tokens make no step of %lld sequences (micro_batch x grad_accum x "
                "dp); use more data, a shorter --chunk-length or a smaller batch",
                cfg.data.path.c_str(), static_cast<long long>(nc), static_cast<long long>(cfg.data.chunk_length),
                static_cast<long long>(per_step));
    if (cfg.resume.empty()) {
      LIGER_CHECK(list_checkpoints(cfg.out).empty(),
                  "%s: the run directory already holds checkpoints; pass --resume auto to continue it, or another --out",
                  cfg.out.c_str());
    } else if (cfg.resume == "auto") {
      if (root) {  // rank 0 looks; its choice is everyone's (a shared run directory, read by every rank)
        auto latest = find_latest_complete(cfg.out);
        latest_step = latest ? latest->step : -1;
      }
    } else {
      resume_dir = cfg.resume;
    }
  });
  if (cfg.resume == "auto") {
    const int64_t chosen = rt->world().all_reduce_value(latest_step, dist::ReduceOp::Max);
    resume_dir = chosen >= 0 ? checkpoint_dir(cfg.out, chosen) : "";
  }
  // Resume: the adapters, the optimizer (moments and step count) and the trainer state of a complete checkpoint.
  dist::agree(rt->world(), [&] {
    if (resume_dir.empty()) {
      if (cfg.resume == "auto") LOG_INFO("--resume auto: no complete checkpoint in %s, starting fresh", cfg.out.c_str());
      return;
    }
    int64_t step = 0;
    CheckpointData ck = read_checkpoint(resume_dir, &step);
    LIGER_CHECK(ck.json.count("trainer_state"), "%s: no trainer_state.json", resume_dir.c_str());
    const Json& ts = ck.json.at("trainer_state");
    const std::string ts_path = resume_dir + "/trainer_state.json";
    if (json_has(ts, "global_batch")) {
      const int64_t theirs = json_int(ts, "global_batch", ts_path);
      LIGER_CHECK(theirs == per_step,
                  "%s: the checkpoint was trained with a global batch of %lld sequences, this run has %lld "
                  "(micro_batch %lld x grad_accum %lld x dp %d); pass --global-batch %lld to resume it on this layout",
                  resume_dir.c_str(), static_cast<long long>(theirs), static_cast<long long>(per_step),
                  static_cast<long long>(cfg.micro_batch), static_cast<long long>(grad_accum), rt->dp(),
                  static_cast<long long>(theirs));
    }
    const std::string theirs = json_string(ts, "config_hash", ts_path);
    LIGER_CHECK(theirs == config_hash,
                "%s: the checkpoint was written with other settings (model, adapters, optimizer, data or batch); "
                "resume with the run's own settings (%s/config.json)",
                resume_dir.c_str(), cfg.out.c_str());
    const int64_t consumed = json_has(ts, "samples_consumed") ? json_int(ts, "samples_consumed", ts_path) : step * per_step;
    LIGER_CHECK(consumed == step * per_step, "%s: %lld samples consumed at step %lld do not match a global batch of %lld",
                ts_path.c_str(), static_cast<long long>(consumed), static_cast<long long>(step),
                static_cast<long long>(per_step));
    if (json_has(ts, "bad_steps_in_a_row")) bad_in_a_row = json_int(ts, "bad_steps_in_a_row", ts_path);
    lora.load_parameters(ck.tensors.at("adapter_model").tensors, resume_dir + "/adapter_model.safetensors");
    // The optimizer state is checked and loaded once the optimizer exists (below, over the adapters it updates).
    resumed_optimizer = std::move(ck.tensors.at("optimizer").tensors);
    start = step;
    LOG_INFO("resumed from %s at step %lld (%lld samples consumed)", resume_dir.c_str(), static_cast<long long>(start),
             static_cast<long long>(consumed));
  });
  AdapterSync sync(*rt, lora, model->config(), ctx);
  LoraAdapters& work = sync.work();
  // AdamW over what the sync says it updates: the device working copy at tp = 1 on a GPU, else the host master.
  dist::agree(rt->world(), [&] {
    opt = std::make_unique<AdamW>(cfg.optim, sync.optimizer_parameters(), &ctx);
    if (!resume_dir.empty()) opt->import_state(resumed_optimizer, resume_dir + "/optimizer.safetensors");
    resumed_optimizer.clear();
  });
  if (root) {
    std::ofstream f(fs::path(cfg.out) / "config.json");
    f << settings.dump(2) << "\n";
  }
  const std::string metrics = (fs::path(cfg.out) / "metrics.jsonl").string();
  if (root && !cfg.resume.empty()) truncate_metrics(metrics, start);
  const int64_t nc = data->num_chunks();
  LOG_INFO(
      "train: %s on %s (%s); %s; LoRA r=%lld on %zu targets (%lld parameters); %lld chunks x %lld tokens, %lld steps "
      "of %lld sequences (%lld per rank: micro-batch %lld x %lld accumulation)%s",
      model->config().summary().c_str(), ctx.device_label(), dtype_name(dtype), rt->describe().c_str(),
      static_cast<long long>(cfg.lora.rank), cfg.lora.targets.size(), static_cast<long long>(lora.n_params()),
      static_cast<long long>(nc), static_cast<long long>(cfg.data.chunk_length), static_cast<long long>(total),
      static_cast<long long>(per_step), static_cast<long long>(per_rank), static_cast<long long>(cfg.micro_batch),
      static_cast<long long>(grad_accum), cfg.deterministic ? "; deterministic" : "");

  // Checkpoints: rank 0 hands host copies of the state to the writer thread, so the next steps overlap the write.
  AsyncCheckpointWriter writer(cfg.out, static_cast<int>(cfg.keep_last));
  auto save = [&](int64_t step) {
    if (!root) return;
    CheckpointData ck;
    ck.tensors["adapter_model"] = TensorFile{sync.checkpoint_values(), {{"format", "pt"}}};
    ck.tensors["optimizer"] = TensorFile{opt->export_state(), {}};
    ck.json["adapter_config"] = lora.adapter_config(cfg.model);
    ck.json["trainer_state"] = {{"step", step},
                                {"config_hash", config_hash},
                                {"settings", settings},
                                {"samples_consumed", step * per_step},
                                {"global_batch", per_step},
                                {"bad_steps_in_a_row", bad_in_a_row},
                                {"layout", {{"dp", rt->dp()}, {"tp", rt->tp()}}}};
    writer.submit(step, std::move(ck), cfg.save_wait);
  };
  install_stop_signals();
  // Test hook (tests/train/test_faults.cpp): LIGER_TEST_NAN_STEPS="3,4" puts a NaN into the gradients of rank
  // LIGER_TEST_NAN_RANK (default 0) at those (1-based) steps.
  std::vector<int64_t> nan_steps;
  int nan_rank = 0;
  if (const char* e = std::getenv("LIGER_TEST_NAN_STEPS")) {
    std::stringstream ss(e);
    for (std::string item; std::getline(ss, item, ',');)
      if (!item.empty()) nan_steps.push_back(std::stoll(item));
    if (const char* r = std::getenv("LIGER_TEST_NAN_RANK")) nan_rank = std::atoi(r);
  }

  // From here on a dead or hung peer must not hang this rank (heartbeats in the run directory).
  dist::Watchdog watchdog(cfg.out + "/.heartbeat", rt->rank(), rt->size(), cfg.collective_timeout_s);
  TrainResult res;
  bool save_due = false;  // a periodic checkpoint waits for the writer (rank 0)
  const bool tty = root && isatty(fileno(stderr));
  Timer clock;
  double tokens_done = 0;
  for (int64_t step = start; step < total; step++) {
    Timer st;
    sync.zero_grad();
    std::vector<double> sample_loss;  // per micro-batch of this rank: its mean loss (deterministic mode)
    double loss_sum = 0.0, tokens = 0.0;
    for (int64_t j = 0; j < per_rank; j++) {
      // Global sample index: the order does not depend on how the job is laid out.
      const int64_t g = step * per_step + rt->dp_rank() * per_rank + j;
      Batch b = make_batch(data->chunk(g / nc, g % nc));
      const bool last = j == per_rank - 1;
      watchdog.progress();
      if (b.supervised > 0) {
        const float scale = 1.0f / static_cast<float>(b.supervised * per_step);
        auto hook = [&](int64_t l) {
          if (last && !cfg.deterministic) sync.layer_done(l);
        };
        StepStats s = train_step(*model, work, b.ids, b.targets, scale, &b.doc_starts, hook, cfg.recompute);
        const double mean = s.loss_sum / static_cast<double>(s.tokens);
        loss_sum += mean;
        sample_loss.push_back(mean);
        tokens += static_cast<double>(b.ids.numel());
      } else {
        sample_loss.push_back(0.0);
      }
      if (last && rt->rank() == nan_rank &&
          std::find(nan_steps.begin(), nan_steps.end(), step + 1) != nan_steps.end())
        copy(work.grad_buffer().slice(0, 1), Tensor::from_f32({1}, {NAN}));  // the test hook above
      if (cfg.deterministic) sync.stash_micro_batch(b.supervised > 0);
    }
    double loss = 0.0;
    if (cfg.deterministic) {
      sync.reduce_stash();
      const std::vector<double> all = rt->dp_comm().all_gather_values(sample_loss);
      for (double l : all) loss += l;  // in global sample order
      tokens = rt->dp_comm().all_reduce_value(tokens);
    } else {
      sync.finish_gradients();
      const std::vector<double> both = rt->dp_comm().all_gather_values({loss_sum, tokens});
      tokens = 0;
      for (int d = 0; d < rt->dp(); d++) loss += both[static_cast<size_t>(2 * d)], tokens += both[2 * d + 1];
    }
    loss /= static_cast<double>(per_step);
    const int64_t done = step + 1;
    watchdog.progress();
    // Every rank holds the reduced loss and the assembled gradients, so every rank reaches the same verdict: a NaN on
    // one rank reached all of them through the sums.
    const double grad_norm = sync.grad_norm(*opt);  // one scan of the gradients: the check below and AdamW's norm
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    AdamWStepStats os;
    if (!finite) {
      bad_in_a_row++;
      res.skipped_steps++;
      LOG_WARN("step %lld: non-finite %s; the step is skipped on every rank (%lld in a row, --max-bad-steps %lld)",
               static_cast<long long>(done), std::isfinite(loss) ? "gradients" : "loss",
               static_cast<long long>(bad_in_a_row), static_cast<long long>(cfg.max_bad_steps));
      if (root) append_jsonl(metrics, {{"step", done}, {"skipped", true}, {"bad_steps_in_a_row", bad_in_a_row}});
      if (bad_in_a_row >= cfg.max_bad_steps) {
        if (root) writer.wait();
        const auto good = root ? find_latest_complete(cfg.out) : std::nullopt;
        dist::fail_on_every_rank(
            rt->world(), strfmt("%lld steps in a row had a non-finite loss or gradients (the last at step %lld); "
                                "stopping. The last good checkpoint, %s, is intact: look at the data of those steps, "
                                "or lower --lr, and resume",
                                static_cast<long long>(bad_in_a_row), static_cast<long long>(done),
                                good ? good->dir.c_str() : "(none yet)"));
      }
      // The step counts (its samples are consumed) and may still be checkpointed or stopped at, below.
    } else {
      bad_in_a_row = 0;
      os = sync.step(*opt, grad_norm);
      tokens_done += tokens;
    }
    res.losses.push_back(loss);
    if (finite && root && (done % cfg.log_every == 0 || done == total)) {
      const double tps = tokens_done / std::max(clock.seconds(), 1e-9);
      const double eta = (total - done) * clock.seconds() / static_cast<double>(done - start);
      append_jsonl(metrics, {{"step", done},
                             {"loss", loss},
                             {"lr", os.lr},
                             {"grad_norm", os.grad_norm},
                             {"tokens", static_cast<int64_t>(tokens)},
                             {"tokens_per_s", tps},
                             {"step_s", st.seconds()}});
      std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  eta %s%s", tty ? "\r" : "",
                   static_cast<long long>(done), static_cast<long long>(total), loss, os.lr, tps,
                   fmt_duration(eta).c_str(), tty ? "   " : "\n");
    }
    if (cfg.eval_every > 0 && done % cfg.eval_every == 0 && data->num_validation_chunks() > 0) {
      const double vl = validation_loss(*model, work, *data, cfg.eval_chunks, *rt, watchdog);
      if (root) {
        append_jsonl(metrics, {{"step", done}, {"val_loss", vl}});
        std::fprintf(stderr, "%sstep %lld  validation loss %.4f\n", tty ? "\n" : "", static_cast<long long>(done), vl);
      }
    }
    // A stop signal on any rank stops every rank after this step (one small all-reduce per step).
    const bool signalled = rt->world().all_reduce_value(static_cast<int64_t>(stop_signal()), dist::ReduceOp::Max) > 0;
    const bool stopping = (stop_after > 0 && done - start >= stop_after) || signalled;
    // A periodic checkpoint that comes due while the previous one is still being written is taken at the first step
    // after the writer is free (unless --save-wait): no host copy of the state is made for a write that would wait.
    // The last step's and a stop's checkpoint are always written.
    save_due = save_due || (cfg.save_every > 0 && done % cfg.save_every == 0);
    if (done == total || stopping) {
      save(done);
      res.last_checkpoint = checkpoint_dir(cfg.out, done);
      save_due = false;
    } else if (save_due && (cfg.save_wait || !root || !writer.busy())) {
      save(done);
      save_due = false;
    }
    res.steps = done;
    if (signalled) {
      res.preempted = true;
      LOG_INFO("stop signal: checkpoint of step %lld, then exit %d (requeue)", static_cast<long long>(done),
               kRequeueExitCode);
    }
    if (stopping) break;
  }
  if (root) {
    writer.wait();  // the last checkpoint is complete (an error of its write is raised here)
    if (writer.superseded() > 0)
      LOG_INFO("%lld checkpoints were superseded by newer ones while the disk was busy (--save-wait writes every one)",
               static_cast<long long>(writer.superseded()));
  }
  rt->world().barrier();     // before any rank returns
  if (tty) std::fputs("\n", stderr);
  if (res.preempted) return res;  // no final evaluation: the job is being stopped
  res.final_val_loss =
      data->num_validation_chunks() > 0 ? validation_loss(*model, work, *data, cfg.eval_chunks, *rt, watchdog) : NAN;
  if (root && std::isfinite(res.final_val_loss))
    append_jsonl(metrics, {{"step", res.steps}, {"val_loss", res.final_val_loss}});
  return res;
}

}  // namespace liger
