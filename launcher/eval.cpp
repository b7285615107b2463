// `liger eval`: perplexity of a model (with LoRA adapters, unmerged) on a text file or on the validation split of a
// dataset, and with --diagnostics the per-layer Liger figures of model/diagnostics.h. stdout gets the result line
// "loss X  ppl Y  tokens N  chunks C" (and the diagnostics table); everything else goes to stderr.
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "launcher/commands.h"
#include "dist/runtime.h"
#include "launcher/options.h"
#include "model/diagnostics.h"
#include "model/position_losses.h"
#include "model/train_step.h"
#include "train/train_options.h"

namespace liger::cli {

namespace {

// JSON has no infinity or NaN: those become null.
Json number_or_null(double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); }

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  std::string model_dir, adapter_dir, text_file, json_file, device, dtype;
  DataConfig dc;
  int64_t max_chunks = 0;
  bool diagnostics = false, by_position = false;
  po::options_description desc("eval options");
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "model directory (HF, Liger, or made by liger export)")
      ("adapter", po::value(&adapter_dir), "LoRA adapters: a PEFT adapter directory or a training checkpoint")
      ("text", po::value(&text_file), "plain-text file: every chunk of it (paragraphs are documents)")
      ("data", po::value(&dc.path), "dataset file (as liger train --data): its validation split")
      ("data-format", po::value(&dc.format)->default_value("auto"), "auto | alpaca | text | jsonl (with --data)")
      ("template", po::value(&dc.prompt_template)->default_value("alpaca"), "prompt template (with --data)")
      ("chunk-length", po::value(&dc.chunk_length)->default_value(1024), "tokens per packed chunk")
      ("pack-across-documents", po::value(&dc.pack_across_documents)->default_value(false),
       "true: the paper's packing (no document boundaries)")
      ("validation-fraction", po::value(&dc.validation_fraction)->default_value(0.01),
       "held-out fraction (with --data; as in training)")
      ("validation-count", po::value(&dc.validation_count)->default_value(0), "held-out records (overrides)")
      ("data-seed", po::value(&dc.seed)->default_value(0), "seed of the split (as in training)")
      ("strict", po::value(&dc.strict)->default_value(false), "true: a bad record is an error")
      ("max-chunks", po::value(&max_chunks)->default_value(0), "evaluate the first N chunks only (0: all)")
      ("diagnostics", po::bool_switch(&diagnostics),
       "Liger models: per layer, the error against softmax attention, mean gate, memory length, state norm")
      ("by-position", po::bool_switch(&by_position),
       "also the mean loss by position: 0-64, 64-128, 128-256, 256-512, ... tokens of context (from the start of the "
       "document, or of the chunk with --pack-across-documents true)")
      ("json", po::value(&json_file), "also write the figures to this JSON file")
      ("device", po::value(&device)->default_value("cpu"), "cpu or cuda")
      ("dtype", po::value(&dtype)->default_value(""), "f32 (cpu default) or bf16 (cuda default; Liger states in fp32)");
  dist::DistConfig dcfg;
  desc.add(dist_options(dcfg));
  po::variables_map vm;
  if (!parse_options("eval", args, desc, &vm,
                     "--model DIR [--adapter DIR] (--text FILE | --data FILE [--data-format F]) [options]"))
    return 0;
  const bool text = !text_file.empty();
  LIGER_CHECK(text != !dc.path.empty(), "give one of --text FILE or --data FILE");
  LIGER_CHECK(max_chunks >= 0, "--max-chunks must be >= 0, got %lld", static_cast<long long>(max_chunks));
  // --validation-count overrides the default fraction (an explicit fraction with a count stays an error).
  if (!text && dc.validation_count > 0 && vm["validation-fraction"].defaulted()) dc.validation_fraction = 0.0;
  if (text) {
    for (const char* key : {"data-format", "template", "validation-fraction", "validation-count", "data-seed"})
      LIGER_CHECK(vm[key].defaulted(), "--%s applies to --data only (--text evaluates every chunk of the file)", key);
    dc.path = text_file;
    dc.format = "text";
    dc.validation_fraction = 0.0;  // one split holding every document
    dc.validation_count = 0;
  }

  LIGER_CHECK(device == "cpu" || device == "cuda", "--device %s: expected cpu or cuda", device.c_str());
  LIGER_CHECK(dtype.empty() || dtype == "f32" || dtype == "bf16", "--dtype %s: expected f32 or bf16", dtype.c_str());
  LIGER_CHECK(!(device == "cpu" && dtype == "bf16"), "--dtype bf16: the CPU path computes in f32 (use --device cuda)");
  LIGER_CHECK(!diagnostics || device == "cpu",
              "--diagnostics runs on the CPU in this version (the per-layer figures compare every layer against "
              "softmax attention in fp64): drop --device cuda, or evaluate the perplexity alone on the GPU");
  const bool gpu = device == "cuda";
  const DType model_dtype = dtype == "bf16" || (dtype.empty() && gpu) ? DType::BF16 : DType::F32;
  Timer timer;
  // Under mpirun: --tp N splits the model, the dp ranks share the chunks (chunk i on dp rank i % dp); each rank takes
  // the GPU of its local rank.
  const dist::WorldInfo world = dist::discover_world();
  Context ctx = gpu ? Context::cuda(world.size > 1 ? dist::cuda_device_for(world, cuda_device_count()) : 0)
                    : Context::cpu();
  std::unique_ptr<dist::Runtime> rt = dist::Runtime::create(dcfg, ctx.device(), ctx.stream());
  LIGER_CHECK(!diagnostics || rt->size() == 1, "--diagnostics runs in one process (the per-layer figures need every "
                                               "head and every chunk on one rank); perplexity alone runs on any layout");
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaModel> model;
  dist::agree(rt->world(), [&] {
    tok = load_tokenizer(model_dir);
    model = LlamaModel::load(model_dir, ctx, model_dtype, rt->tp() > 1 ? &rt->tp_comm() : nullptr);
  });
  const ModelConfig& cfg = model->config();
  LIGER_CHECK(tok->vocab_size() <= cfg.vocab_size, "%s: the tokenizer has %lld tokens but the model only %lld",
              model_dir.c_str(), static_cast<long long>(tok->vocab_size()), static_cast<long long>(cfg.vocab_size));
  LIGER_CHECK(!diagnostics || cfg.is_liger,
              "--diagnostics: %s is not a Liger model (its config.json has no 'liger' section; make one with liger "
              "convert)",
              model_dir.c_str());
  LoraAdapters lora;
  if (!adapter_dir.empty()) lora = LoraAdapters::load_for(adapter_dir, cfg, ctx.device());
  const LoraAdapters* lp = adapter_dir.empty() ? nullptr : &lora;

  DataLoader data(dc, *tok);
  const PackedDataset& split = text ? data.train() : data.validation();
  LIGER_CHECK(split.num_chunks() > 0, "%s: the %s split has no chunk of %lld tokens to evaluate (%s)", dc.path.c_str(),
              text ? "text" : "validation", static_cast<long long>(dc.chunk_length),
              text ? "lower --chunk-length" : "raise --validation-fraction/--validation-count or lower --chunk-length");
  const int64_t n = max_chunks > 0 ? std::min(max_chunks, split.num_chunks()) : split.num_chunks();
  LOG_INFO("%s%s%s on %lld chunks of %lld tokens of %s (%s, %s)", cfg.summary().c_str(), lp ? " + adapters " : "",
           adapter_dir.c_str(), static_cast<long long>(n), static_cast<long long>(dc.chunk_length), dc.path.c_str(),
           ctx.device_label(), dtype_name(model_dtype));

  double loss_sum = 0.0;
  int64_t tokens = 0;
  LigerDiagnostics diag;
  PositionLosses positions(dc.chunk_length);
  Timer loop;
  for (int64_t i = rt->dp_rank(); i < n; i += rt->dp()) {
    const Chunk c = split.chunk(i);
    const int64_t T = static_cast<int64_t>(c.input_ids.size());
    const Tensor ids = Tensor::from_i32({1, T}, c.input_ids), targets = Tensor::from_i32({1, T}, c.targets);
    // Document-aware like training's validation loss: each packed document runs as if alone (data/dataset.h).
    const StepStats s = eval_step(*model, lp, ids, targets, &c.doc_starts);
    loss_sum += s.loss_sum;
    tokens += s.tokens;
    if (by_position) positions.add(s, c.targets, c.doc_starts);
    if (diagnostics) forward_with_diagnostics(*model, lp, ids, Tensor(), &diag, &c.doc_starts);
  }
  loss_sum = rt->dp_comm().all_reduce_value(loss_sum);
  tokens = rt->dp_comm().all_reduce_value(tokens);
  if (by_position && rt->dp() > 1) {  // every rank's sums and counts, added
    const std::vector<double> sums = rt->dp_comm().all_gather_values(positions.sums());
    const std::vector<double> counts = rt->dp_comm().all_gather_values(positions.counts());
    PositionLosses total(dc.chunk_length);
    const size_t nb = positions.buckets();
    for (int d = 0; d < rt->dp(); d++)
      total.merge(std::vector<double>(sums.begin() + d * nb, sums.begin() + (d + 1) * nb),
                  std::vector<double>(counts.begin() + d * nb, counts.begin() + (d + 1) * nb));
    positions = total;
  }
  if (!rt->is_root()) return 0;
  const double loss = loss_sum / static_cast<double>(tokens), ppl = std::exp(loss);
  LOG_INFO("evaluated in %.2f s (the chunks: %.2f s, %.0f tokens/s)", timer.seconds(), loop.seconds(),
           static_cast<double>(tokens) / loop.seconds());

  std::printf("loss %.6f  ppl %.4f  tokens %lld  chunks %lld\n", loss, ppl, static_cast<long long>(tokens),
              static_cast<long long>(n));
  Json j = {{"model", model_dir},
            {"adapter", adapter_dir},
            {"data", dc.path},
            {"split", text ? "all" : "validation"},
            {"chunk_length", dc.chunk_length},
            {"loss", number_or_null(loss)},
            {"ppl", number_or_null(ppl)},
            {"tokens", tokens},
            {"chunks", n}};
  if (by_position) {
    std::printf("%-13s  %9s  %9s\n", "position", "loss", "tokens");
    for (size_t b = 0; b < positions.buckets(); b++)
      std::printf("%5lld-%-7lld  %9.4f  %9lld\n", static_cast<long long>(positions.from(b)),
                  static_cast<long long>(positions.to(b)), positions.mean(b), static_cast<long long>(positions.count(b)));
    j["by_position"] = positions.to_json();
  }
  if (diagnostics) {
    // memory length: mean over tokens, KV heads and channels of 1 / (1 - alpha), the decay horizon in tokens.
    std::printf("%5s  %10s  %9s  %11s  %10s\n", "layer", "rel_err", "mean_gate", "memory_len", "state_norm");
    Json rows = Json::array();
    for (const LayerDiagnostics& d : diag.layers) {
      std::printf("%5lld  %10.6f  %9.6f  %11.3f  %10.4f\n", static_cast<long long>(d.layer), d.rel_error(),
                  d.mean_gate(), d.memory_length(), d.state_norm());
      rows.push_back({{"layer", d.layer},
                      {"rel_error", number_or_null(d.rel_error())},
                      {"mean_gate", number_or_null(d.mean_gate())},
                      {"memory_length", number_or_null(d.memory_length())},
                      {"state_norm", number_or_null(d.state_norm())}});
    }
    j["diagnostics"] = rows;
  }
  std::fflush(stdout);
  if (!json_file.empty()) {
    std::ofstream f(json_file);
    f << j.dump(2) << "\n";
    LIGER_CHECK(f.good(), "%s: write failed", json_file.c_str());
  }
  return 0;
}

}  // namespace liger::cli
