// `liger select-layers`: which layers of a Liger model to keep as softmax attention (the inter-layer hybrid). Liger
// adds no parameters, so any layer can be switched back to its base model's softmax attention without reloading. On
// continuous text, each layer is scored by how much the model's KL divergence from the base model (the same weights
// with softmax attention everywhere) drops when that layer alone is restored; the K best are printed and written as
// the softmax_layers list that `liger convert --softmax-layers` takes (KL-guided layer selection).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "model/kl.h"
#include "model/llama.h"

namespace liger::cli {

int cmd_select_layers(const std::vector<std::string>& args) {
  std::string model_dir, json_file, device, dtype;
  DataConfig dc;
  int64_t keep = 0, max_chunks = 0;
  po::options_description desc("select-layers options");
  desc.add_options()("model", po::value(&model_dir)->required(), "a Liger model directory (made by liger convert)")(
      "data", po::value(&dc.path)->required(), "text to score on: .txt (plain text), .jsonl or .json (as train)")(
      "data-format", po::value(&dc.format)->default_value("auto"), "auto | alpaca | text | jsonl")(
      "keep", po::value(&keep)->required(), "how many layers to keep as softmax attention")(
      "chunk-length", po::value(&dc.chunk_length)->default_value(512), "tokens per chunk of continuous text")(
      "max-chunks", po::value(&max_chunks)->default_value(16), "score on the first N chunks (0: all)")(
      "json", po::value(&json_file), "also write the ranking and the chosen list to this JSON file")(
      "device", po::value(&device)->default_value("cpu"), "cpu or cuda")("dtype", po::value(&dtype)->default_value(""),
                                                                         "f32 (cpu default) or bf16 (cuda default)");
  po::variables_map vm;
  if (!parse_options("select-layers", args, desc, &vm, "--model DIR --data FILE --keep K [options]")) return 0;
  LIGER_CHECK(max_chunks >= 0, "--max-chunks must be >= 0, got %lld", static_cast<long long>(max_chunks));
  const Device dev = parse_device(device);
  const DType dt = dtype.empty() ? (dev == Device::CPU ? DType::F32 : DType::BF16) : parse_dtype(dtype);
  Context ctx = dev == Device::CUDA ? Context::cuda(0) : Context::cpu();
  std::unique_ptr<LlamaModel> model = LlamaModel::load(model_dir, ctx, dt);
  const ModelConfig cfg = model->config();
  LIGER_CHECK(cfg.is_liger,
              "%s: not a Liger model (its config.json has no 'liger' section; make one with liger convert)",
              model_dir.c_str());
  const int64_t L = cfg.n_layers;
  const std::vector<int64_t> kept = cfg.liger.softmax_layers;  // already softmax in the model
  std::vector<int64_t> candidates;
  for (int64_t l = 0; l < L; l++)
    if (!cfg.liger.is_softmax_layer(l)) candidates.push_back(l);
  LIGER_CHECK(keep >= 1 && keep <= static_cast<int64_t>(candidates.size()),
              "--keep %lld: the model has %zu Liger layers to choose from (it keeps %zu as softmax already)",
              static_cast<long long>(keep), candidates.size(), kept.size());

  // Continuous text (the recurrent branch matters beyond the window), every chunk, no held-out split.
  std::unique_ptr<Tokenizer> tok = load_tokenizer(model_dir);
  dc.pack_across_documents = true;
  dc.validation_fraction = 0.0;
  DataLoader data(dc, *tok);
  const PackedDataset& split = data.train();
  const int64_t n = max_chunks > 0 ? std::min(max_chunks, split.num_chunks()) : split.num_chunks();
  LIGER_CHECK(n > 0, "%s: no chunk of %lld tokens (lower --chunk-length)", dc.path.c_str(),
              static_cast<long long>(dc.chunk_length));
  LOG_INFO("select-layers: %s; %zu candidate layers, keep %lld; %lld chunks of %lld tokens of %s (%s, %s)",
           cfg.summary().c_str(), candidates.size(), static_cast<long long>(keep), static_cast<long long>(n),
           static_cast<long long>(dc.chunk_length), dc.path.c_str(), ctx.device_label(), dtype_name(dt));

  std::vector<int64_t> all(static_cast<size_t>(L));
  std::iota(all.begin(), all.end(), 0);
  const int64_t V = cfg.vocab_size;
  double kl_model = 0.0;                                    // the model as converted
  std::vector<double> kl_restored(candidates.size(), 0.0);  // with candidates[i] restored too
  int64_t tokens = 0;
  Timer timer;
  for (int64_t c = 0; c < n; c++) {
    const Chunk ch = split.chunk(c);
    const int64_t T = static_cast<int64_t>(ch.input_ids.size());
    const Tensor ids = Tensor::from_i32({1, T}, ch.input_ids);
    // Two logits buffers per chunk: the base model's, and the one every variant reuses.
    Tensor base = Tensor::empty({1, T, V}, DType::F32, dev), variant = Tensor::empty({1, T, V}, DType::F32, dev);
    auto logits_with = [&](const std::vector<int64_t>& softmax_layers, Tensor& out) {
      model->set_softmax_layers(softmax_layers);
      model->forward(ids, nullptr, out, /*last_only=*/false);
      return out.view({T, V});
    };
    const Tensor base_logits = logits_with(all, base);
    kl_model += kl_divergence_sum(base_logits, logits_with(kept, variant));
    for (size_t i = 0; i < candidates.size(); i++) {
      std::vector<int64_t> s = kept;
      s.push_back(candidates[i]);
      kl_restored[i] += kl_divergence_sum(base_logits, logits_with(s, variant));
    }
    tokens += T;
  }
  model->set_softmax_layers(kept);
  const double mean_model = kl_model / static_cast<double>(tokens);
  std::vector<size_t> order(candidates.size());
  std::iota(order.begin(), order.end(), 0);
  // The largest drop first; ties (equal KL) to the lower layer.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return kl_restored[a] < kl_restored[b]; });
  std::vector<int64_t> chosen = kept;
  for (int64_t i = 0; i < keep; i++) chosen.push_back(candidates[order[static_cast<size_t>(i)]]);
  std::sort(chosen.begin(), chosen.end());
  LOG_INFO("scored in %.1f s", timer.seconds());

  std::printf("KL(base || model) per token: %.6f nats (%lld tokens; softmax layers of the model: %zu)\n", mean_model,
              static_cast<long long>(tokens), kept.size());
  std::printf("%5s  %5s  %12s  %12s\n", "rank", "layer", "kl_restored", "drop");
  Json rows = Json::array();
  for (size_t r = 0; r < order.size(); r++) {
    const size_t i = order[r];
    const double kl = kl_restored[i] / static_cast<double>(tokens);
    std::printf("%5zu  %5lld  %12.6f  %12.6f\n", r + 1, static_cast<long long>(candidates[i]), kl, mean_model - kl);
    rows.push_back({{"layer", candidates[i]}, {"kl_restored", kl}, {"drop", mean_model - kl}});
  }
  std::string list;
  for (int64_t l : chosen) list += (list.empty() ? "" : ",") + std::to_string(l);
  std::printf("softmax_layers: %s\n", list.c_str());
  std::printf("(liger convert --model BASE --out DIR --variant %s --softmax-layers %s)\n", cfg.liger.variant_name(),
              list.c_str());
  if (!json_file.empty()) {
    std::ofstream f(json_file);
    f << Json{{"model", model_dir},     {"data", dc.path}, {"tokens", tokens},
              {"kl_model", mean_model}, {"ranking", rows}, {"softmax_layers", chosen}}
             .dump(2)
      << "\n";
    LIGER_CHECK(f.good(), "%s: write failed", json_file.c_str());
  }
  return 0;
}

}  // namespace liger::cli
