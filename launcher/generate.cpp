// `liger generate`: load a model directory and its tokenizer, prefill the prompt, stream the continuation.
#include <cstdio>
#include <iostream>

#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/tokenizer.h"
#include "launcher/commands.h"
#include "dist/runtime.h"
#include "launcher/options.h"
#include "model/export.h"
#include "model/generate.h"
#include "train/train_options.h"

namespace liger::cli {

int cmd_generate(const std::vector<std::string>& args) {
  std::string model_dir, adapter_dir, prompt, device, dtype;
  SamplingConfig sc;
  bool no_bos = false, quiet = false;
  po::options_description desc("generate options");
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "model directory (HF config.json + safetensors + tokenizer)")
      ("adapter", po::value(&adapter_dir), "LoRA adapters to merge first: PEFT dir or training checkpoint (cpu f32)")
      ("prompt", po::value(&prompt)->default_value(""), "prompt text (empty: start from BOS)")
      ("max-new-tokens", po::value(&sc.max_new_tokens)->default_value(256), "tokens to generate")
      ("temperature", po::value(&sc.temperature)->default_value(0.0f), "sampling temperature; 0 = greedy")
      ("top-p", po::value(&sc.top_p)->default_value(1.0f), "nucleus sampling mass in (0, 1]")
      ("seed", po::value(&sc.seed)->default_value(0), "random seed of the sampler")
      ("device", po::value(&device)->default_value("cpu"), "cpu or cuda")
      ("dtype", po::value(&dtype)->default_value(""), "weight/activation dtype: f32 (cpu default) or bf16 (cuda default)")
      ("no-bos", po::bool_switch(&no_bos), "do not prepend the BOS token")
      ("ignore-eos", po::bool_switch(), "keep generating after the EOS token")
      ("quiet", po::bool_switch(&quiet), "print only the generated text, no statistics");
  dist::DistConfig dcfg;
  desc.add(dist_options(dcfg));
  po::variables_map vm;
  if (!parse_options("generate", args, desc, &vm, "--model DIR [--prompt TEXT] [options]")) return 0;
  sc.stop_at_eos = !vm["ignore-eos"].as<bool>();
  LIGER_CHECK(sc.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  LIGER_CHECK(sc.top_p > 0.0f && sc.top_p <= 1.0f, "--top-p must be in (0, 1], got %g", sc.top_p);
  LIGER_CHECK(sc.temperature >= 0.0f, "--temperature must be >= 0, got %g", sc.temperature);

  const Device dev = parse_device(device);
  const DType dt = dtype.empty() ? (dev == Device::CPU ? DType::F32 : DType::BF16) : parse_dtype(dtype);
  LIGER_CHECK(adapter_dir.empty() || (dev == Device::CPU && dt == DType::F32),
              "--adapter on the GPU: merge with liger export first (the merge is f32 on the CPU)");
  // Under mpirun with --tp N every rank holds a slice of the heads, MLP and vocabulary; the ranks decode in lockstep
  // (the same tokens from the gathered logits) and rank 0 prints.
  const dist::WorldInfo world = dist::discover_world();
  const int gpu = dev == Device::CUDA && world.size > 1 ? dist::cuda_device_for(world, cuda_device_count()) : 0;
  Context ctx = dev == Device::CUDA ? Context::cuda(gpu) : Context::cpu();
  std::unique_ptr<dist::Runtime> rt = dist::Runtime::create(dcfg, dev, ctx.stream());
  LIGER_CHECK(rt->dp() == 1, "generate: %d ranks with --tp %d: generation runs tensor-parallel only (world = tp)",
              rt->size(), rt->tp());
  const bool root = rt->is_root();
  quiet = quiet || !root;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaModel> model;
  Timer load_timer;
  dist::agree(rt->world(), [&] {
    tok = load_tokenizer(model_dir);
    model = LlamaModel::load(model_dir, ctx, dt, rt->tp() > 1 ? &rt->tp_comm() : nullptr);
    if (!adapter_dir.empty()) merge_adapters(*model, LoraAdapters::load_for(adapter_dir, model->config(), Device::CPU));
  });
  if (!quiet) {
    LOG_INFO("%s on %s (%s), tokenizer %s, loaded in %.2f s", model->config().summary().c_str(), ctx.device_label(),
             dtype_name(dt), tok->kind().c_str(), load_timer.seconds());
  }
  LIGER_CHECK(tok->vocab_size() <= model->config().vocab_size,
              "%s: the tokenizer has %lld tokens but the model only %lld", model_dir.c_str(),
              static_cast<long long>(tok->vocab_size()), static_cast<long long>(model->config().vocab_size));
  std::vector<int32_t> ids = tok->encode(prompt, !no_bos);

  if (root) std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  Timer t;
  std::vector<int32_t> out = generate(*model, ids, sc, [&](int32_t prev, int32_t id) {
    if (!root || (sc.stop_at_eos && tok->is_eos(id))) return;
    std::string piece = tok->decode_piece(prev, id);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  const double secs = t.seconds();
  if (root) std::fputs("\n", stdout);
  std::fflush(stdout);
  if (!quiet) {
    LOG_INFO("prompt %zu tokens, generated %zu tokens in %.3f s (%.1f tok/s)", ids.size(), out.size(), secs,
             out.size() / (secs > 0 ? secs : 1e-9));
  }
  return 0;
}

}  // namespace liger::cli
