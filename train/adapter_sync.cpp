#include "train/adapter_sync.h"

#include <cstring>

#include "core/check.h"
#include "train/checkpoint.h"

namespace liger {

AdapterSync::AdapterSync(dist::Runtime& rt, LoraAdapters& master, const ModelConfig& local, Context& ctx)
    : rt_(rt), master_(master), local_(local), ctx_(ctx) {
  LIGER_CHECK(local.tp_size == rt.tp(), "AdapterSync: the model is split over %lld ranks, the grid's tp is %d",
              static_cast<long long>(local.tp_size), rt.tp());
  work_ = master.shard(local, ctx.device());
  on_device_ = rt.tp() == 1 && ctx.is_cuda() && work_.grad_buffer().dtype() == DType::F32;
  // Overlap the dp sum with the backward only without tensor parallelism: the tp collectives of the backward run on
  // the compute stream through another communicator, and NCCL does not promise progress for two communicators'
  // collectives interleaved on one device.
  const bool overlap = rt.tp() == 1;
  dp_sum_ = std::make_unique<dist::OverlappedSum>(rt.dp_comm(), overlap && ctx.is_cuda() ? ctx.stream() : nullptr);
}

void AdapterSync::layer_done(int64_t layer) {
  if (!dp_sum_->overlaps()) return;
  auto [off, n] = work_.layer_grad_range(layer);
  dp_sum_->start(work_.grad_buffer().slice(off, n));
}

void AdapterSync::finish_gradients() {
  dp_sum_->finish(work_.grad_buffer());
  if (!on_device_) assemble();
}

void AdapterSync::assemble() {
  const Tensor& buf = work_.grad_buffer();
  const int64_t G = buf.numel();
  Tensor gathered = Tensor::empty({rt_.tp(), G}, buf.dtype(), Device::CPU);
  if (rt_.tp() == 1)
    copy(gathered.view({G}), buf);
  else
    rt_.tp_comm().all_gather(gathered, buf);
  master_.assemble_gradients(gathered, local_);
}

void AdapterSync::stash_micro_batch(bool used) {
  const Tensor& buf = work_.grad_buffer();
  LIGER_CHECK(buf.dtype() == DType::F32, "deterministic mode: f32 gradients only");
  const size_t G = static_cast<size_t>(buf.numel()), at = stash_.size();
  stash_.resize(at + G, 0.0f);
  if (used) copy(Tensor(stash_.data() + at, {static_cast<int64_t>(G)}, DType::F32, Device::CPU), buf);
  stash_used_.push_back(used ? 1.0 : 0.0);
  work_.zero_grad();
}

void AdapterSync::reduce_stash() {
  const int64_t G = work_.grad_buffer().numel(), n = static_cast<int64_t>(stash_used_.size()), dp = rt_.dp();
  // Every dp rank stashed the same number of micro-batches (its share of the global batch).
  Tensor mine(stash_.data(), {n, G}, DType::F32, Device::CPU);
  Tensor all = Tensor::empty({dp * n, G}, DType::F32, Device::CPU);
  rt_.dp_comm().all_gather(all, mine);
  const std::vector<double> used = rt_.dp_comm().all_gather_values(stash_used_);
  Tensor sum = Tensor::zeros({G}, DType::F32, Device::CPU);
  float* s = sum.ptr<float>();
  bool first = true;
  for (int64_t j = 0; j < dp * n; j++) {  // global sample order
    if (used[static_cast<size_t>(j)] == 0.0) continue;
    const float* g = all.ptr<float>() + j * G;
    if (first)
      std::memcpy(s, g, static_cast<size_t>(G) * sizeof(float));
    else
      for (int64_t i = 0; i < G; i++) s[i] += g[i];
    first = false;
  }
  copy(work_.grad_buffer(), sum);
  stash_.clear();
  stash_used_.clear();
  if (!on_device_) assemble();
}

namespace {
std::vector<Tensor> gradient_list(const LoraAdapters& a) {
  std::vector<Tensor> grads;
  for (auto& [name, g] : a.gradients()) grads.push_back(g);
  return grads;
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> AdapterSync::optimizer_parameters() const {
  return updated().parameters();
}

std::vector<std::pair<std::string, Tensor>> AdapterSync::checkpoint_values() const {
  return host_copies(updated().parameters());
}

double AdapterSync::grad_norm(AdamW& opt) const {
  return opt.norm(gradient_list(updated()));
}

AdamWStepStats AdapterSync::step(AdamW& opt, double grad_norm) {
  AdamWStepStats st = opt.step(gradient_list(updated()), grad_norm);
  if (!on_device_) work_.load_shard_values(master_, local_);
  return st;
}

}  // namespace liger
