#include "train/trainer.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/train_step.h"
#include "train/checkpoint.h"

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
  lora.validate();
  optim.validate();
  data.validate();
}

Json TrainConfig::to_json() const {
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
          {"micro_batch", micro_batch},
          {"grad_accum", grad_accum},
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

double validation_loss(LlamaModel& model, const LoraAdapters& lora, const DataLoader& data, int64_t limit) {
  const int64_t n = limit > 0 ? std::min(limit, data.num_validation_chunks()) : data.num_validation_chunks();
  double sum = 0.0;
  int64_t tokens = 0;
  for (int64_t i = 0; i < n; i++) {
    Batch b = make_batch(data.validation_chunk(i));
    StepStats s = eval_step(model, &lora, b.ids, b.targets, &b.doc_starts);
    sum += s.loss_sum;
    tokens += s.tokens;
  }
  return tokens ? sum / static_cast<double>(tokens) : NAN;
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

void copy_pairs(const std::vector<std::pair<std::string, Tensor>>& dst,
                const std::vector<std::pair<std::string, Tensor>>& src) {
  for (size_t i = 0; i < dst.size(); i++) copy(dst[i].second, src[i].second);
}

}  // namespace

void copy_adapter_values(LoraAdapters& dst, const LoraAdapters& src) {
  copy_pairs(dst.parameters(), src.parameters());
}

AdamWStepStats adapter_step(AdamW& opt, LoraAdapters& host, LoraAdapters* device) {
  if (device) copy_pairs(host.gradients(), device->gradients());
  std::vector<Tensor> grads;
  for (auto& [name, g] : host.gradients()) grads.push_back(g);
  AdamWStepStats st = opt.step(grads);
  if (device) copy_adapter_values(*device, host);
  return st;
}

TrainResult train(const TrainConfig& cfg, int64_t stop_after) {
  cfg.validate();
  fs::create_directories(cfg.out);
  const Json settings = cfg.to_json();
  const std::string config_hash = sha256_hex(settings.dump());

  const bool gpu = cfg.device == "cuda";
  Context ctx = gpu ? Context::cuda(0) : Context::cpu();
  const DType dtype = cfg.dtype == "bf16" || (cfg.dtype.empty() && gpu) ? DType::BF16 : DType::F32;
  auto model = LlamaModel::load(cfg.model, ctx, dtype);
  auto tok = load_tokenizer(cfg.model);
  DataLoader data(cfg.data, *tok);
  // The adapters' master copy lives on the host (the optimizer and the checkpoints work on it, identically on both
  // devices); on the GPU the steps run on a device copy whose fp32 gradients come back once per optimizer step (a few
  // MB for an 8B model's q, k, v adapters) and whose values are refreshed after it.
  LoraAdapters lora = LoraAdapters::init(model->config(), cfg.lora, Device::CPU);
  LoraAdapters device_lora;
  if (gpu) device_lora = lora.to(Device::CUDA);
  LoraAdapters& work = gpu ? device_lora : lora;
  AdamW opt(cfg.optim, lora.parameters());

  const int64_t per_step = cfg.micro_batch * cfg.grad_accum;
  const int64_t nc = data.num_chunks();
  int64_t total = cfg.epochs * nc / per_step;
  if (cfg.max_steps > 0) total = std::min(total, cfg.max_steps);
  LIGER_CHECK(total > 0,
              "%s: %lld training chunks of %lld tokens make no step of %lld sequences (micro_batch x "
              "grad_accum); use more data, a shorter --chunk-length or a smaller batch",
              cfg.data.path.c_str(), static_cast<long long>(nc), static_cast<long long>(cfg.data.chunk_length),
              static_cast<long long>(per_step));

  // Resume: the adapters, the optimizer (moments and step count) and the trainer state of a complete checkpoint.
  int64_t start = 0;
  if (!cfg.resume.empty()) {
    std::string dir = cfg.resume;
    if (cfg.resume == "auto") {
      auto latest = find_latest_complete(cfg.out);
      dir = latest ? latest->dir : "";
    }
    if (!dir.empty()) {
      int64_t step = 0;
      CheckpointData ck = read_checkpoint(dir, &step);
      LIGER_CHECK(ck.json.count("trainer_state"), "%s: no trainer_state.json", dir.c_str());
      const Json& ts = ck.json.at("trainer_state");
      const std::string theirs = json_string(ts, "config_hash", dir + "/trainer_state.json");
      LIGER_CHECK(theirs == config_hash,
                  "%s: the checkpoint was written with other settings (model, adapters, optimizer, data or batch); "
                  "resume with the run's own settings (%s/config.json)",
                  dir.c_str(), cfg.out.c_str());
      lora.load_parameters(ck.tensors.at("adapter_model").tensors, dir + "/adapter_model.safetensors");
      opt.import_state(ck.tensors.at("optimizer").tensors, dir + "/optimizer.safetensors");
      if (gpu) copy_adapter_values(device_lora, lora);
      start = step;
      LOG_INFO("resumed from %s at step %lld", dir.c_str(), static_cast<long long>(start));
    } else {
      LOG_INFO("--resume auto: no complete checkpoint in %s, starting fresh", cfg.out.c_str());
    }
  } else {
    LIGER_CHECK(list_checkpoints(cfg.out).empty(),
                "%s: the run directory already holds checkpoints; pass --resume auto to continue it, or another --out",
                cfg.out.c_str());
  }
  {
    std::ofstream f(fs::path(cfg.out) / "config.json");
    f << settings.dump(2) << "\n";
  }
  const std::string metrics = (fs::path(cfg.out) / "metrics.jsonl").string();
  LOG_INFO(
      "train: %s on %s (%s); LoRA r=%lld on %zu targets (%lld parameters); %lld chunks x %lld tokens, %lld steps of "
      "%lld sequences",
      model->config().summary().c_str(), ctx.device_label(), dtype_name(dtype), static_cast<long long>(cfg.lora.rank),
      cfg.lora.targets.size(), static_cast<long long>(lora.n_params()), static_cast<long long>(nc),
      static_cast<long long>(cfg.data.chunk_length), static_cast<long long>(total), static_cast<long long>(per_step));

  auto save = [&](int64_t step) {
    CheckpointData ck;
    ck.tensors["adapter_model"] = TensorFile{lora.parameters(), {{"format", "pt"}}};
    ck.tensors["optimizer"] = TensorFile{opt.export_state(), {}};
    ck.json["adapter_config"] = lora.adapter_config(cfg.model);
    ck.json["trainer_state"] = {
        {"step", step}, {"config_hash", config_hash}, {"settings", settings}, {"samples_consumed", step * per_step}};
    const std::string dir = write_checkpoint(cfg.out, step, ck);
    prune_checkpoints(cfg.out, static_cast<int>(cfg.keep_last));
    return dir;
  };

  TrainResult res;
  const bool tty = isatty(fileno(stderr));
  Timer clock;
  int64_t tokens_done = 0;
  for (int64_t step = start; step < total; step++) {
    Timer st;
    work.zero_grad();
    double loss_sum = 0.0;
    int64_t tokens = 0;
    for (int64_t j = 0; j < per_step; j++) {
      const int64_t g = step * per_step + j;  // global sample index: the order does not depend on how we run
      Batch b = make_batch(data.chunk(g / nc, g % nc));
      if (b.supervised == 0) continue;
      const float scale = 1.0f / static_cast<float>(b.supervised * per_step);
      StepStats s = train_step(*model, work, b.ids, b.targets, scale, &b.doc_starts);
      loss_sum += s.loss_sum / static_cast<double>(s.tokens);
      tokens += b.ids.numel();
    }
    AdamWStepStats os = adapter_step(opt, lora, gpu ? &device_lora : nullptr);
    const double loss = loss_sum / static_cast<double>(per_step);
    res.losses.push_back(loss);
    tokens_done += tokens;
    const int64_t done = step + 1;
    if (done % cfg.log_every == 0 || done == total) {
      const double tps = tokens_done / std::max(clock.seconds(), 1e-9);
      const double eta = (total - done) * clock.seconds() / static_cast<double>(done - start);
      append_jsonl(metrics, {{"step", done},
                             {"loss", loss},
                             {"lr", os.lr},
                             {"grad_norm", os.grad_norm},
                             {"tokens", tokens},
                             {"tokens_per_s", tps},
                             {"step_s", st.seconds()}});
      std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  eta %s%s", tty ? "\r" : "",
                   static_cast<long long>(done), static_cast<long long>(total), loss, os.lr, tps,
                   fmt_duration(eta).c_str(), tty ? "   " : "\n");
    }
    if (cfg.eval_every > 0 && done % cfg.eval_every == 0 && data.num_validation_chunks() > 0) {
      const double vl = validation_loss(*model, work, data, cfg.eval_chunks);
      append_jsonl(metrics, {{"step", done}, {"val_loss", vl}});
      std::fprintf(stderr, "%sstep %lld  validation loss %.4f\n", tty ? "\n" : "", static_cast<long long>(done), vl);
    }
    const bool stopping = stop_after > 0 && done - start >= stop_after;
    if ((cfg.save_every > 0 && done % cfg.save_every == 0) || done == total || stopping)
      res.last_checkpoint = save(done);
    res.steps = done;
    if (stopping) break;
  }
  if (tty) std::fputs("\n", stderr);
  res.final_val_loss = data.num_validation_chunks() > 0 ? validation_loss(*model, work, data, cfg.eval_chunks) : NAN;
  if (std::isfinite(res.final_val_loss)) append_jsonl(metrics, {{"step", res.steps}, {"val_loss", res.final_val_loss}});
  return res;
}

}  // namespace liger
