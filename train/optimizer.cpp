#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "core/check.h"

namespace liger {

// ---- schedules ------------------------------------------------------------------------------------------------------

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Constant:
      return "constant";
    case LrSchedule::LinearWarmup:
      return "linear_warmup";
    case LrSchedule::Cosine:
      return "cosine";
  }
  return "?";
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear_warmup") return LrSchedule::LinearWarmup;
  if (name == "cosine") return LrSchedule::Cosine;
  LIGER_FAIL("--lr-schedule: unknown schedule '%s' (use constant, linear_warmup or cosine)", name.c_str());
}

void OptimConfig::validate() const {
  auto finite = [](double x) { return std::isfinite(x); };
  LIGER_CHECK(finite(lr) && lr > 0, "--lr = %g is out of range (must be > 0)", lr);
  LIGER_CHECK(finite(beta1) && beta1 >= 0 && beta1 < 1, "--beta1 = %g is out of range (must be in [0, 1))", beta1);
  LIGER_CHECK(finite(beta2) && beta2 >= 0 && beta2 < 1, "--beta2 = %g is out of range (must be in [0, 1))", beta2);
  LIGER_CHECK(finite(eps) && eps > 0, "--eps = %g is out of range (must be > 0)", eps);
  LIGER_CHECK(finite(weight_decay) && weight_decay >= 0, "--weight-decay = %g is out of range (must be >= 0)",
              weight_decay);
  LIGER_CHECK(lr * weight_decay < 1,
              "--weight-decay = %g with --lr = %g: lr * weight_decay must be < 1 (each step multiplies the weights "
              "by 1 - lr * weight_decay)",
              weight_decay, lr);
  LIGER_CHECK(finite(clip_norm) && clip_norm >= 0, "--clip-norm = %g is out of range (must be >= 0; 0 = off)",
              clip_norm);
  LIGER_CHECK(warmup_steps >= 0, "--warmup-steps = %lld is out of range (must be >= 0)",
              static_cast<long long>(warmup_steps));
  LIGER_CHECK(total_steps >= 0, "--total-steps = %lld is out of range (must be >= 0)",
              static_cast<long long>(total_steps));
  LIGER_CHECK(finite(min_lr_ratio) && min_lr_ratio >= 0 && min_lr_ratio <= 1,
              "--min-lr-ratio = %g is out of range (must be in [0, 1])", min_lr_ratio);
  switch (schedule) {
    case LrSchedule::Constant:
      LIGER_CHECK(warmup_steps == 0,
                  "--warmup-steps = %lld with --lr-schedule constant (use --lr-schedule linear_warmup or cosine "
                  "for a warmup)",
                  static_cast<long long>(warmup_steps));
      break;
    case LrSchedule::LinearWarmup:
      LIGER_CHECK(warmup_steps > 0, "--lr-schedule linear_warmup needs --warmup-steps > 0 (got %lld)",
                  static_cast<long long>(warmup_steps));
      break;
    case LrSchedule::Cosine:
      LIGER_CHECK(total_steps > warmup_steps,
                  "--lr-schedule cosine needs --total-steps > --warmup-steps (got %lld and %lld)",
                  static_cast<long long>(total_steps), static_cast<long long>(warmup_steps));
      break;
  }
}

double lr_at(const OptimConfig& cfg, int64_t step) {
  constexpr double kPi = 3.14159265358979323846;
  LIGER_CHECK(step >= 0, "lr_at: negative step %lld", static_cast<long long>(step));
  if (cfg.schedule == LrSchedule::Constant) return cfg.lr;
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.schedule == LrSchedule::LinearWarmup) return cfg.lr;
  const double span = static_cast<double>(cfg.total_steps - cfg.warmup_steps);
  const double p = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / span);
  const double r = cfg.min_lr_ratio;
  return cfg.lr * (r + (1.0 - r) * 0.5 * (1.0 + std::cos(kPi * p)));
}

// ---- AdamW ----------------------------------------------------------------------------------------------------------

AdamW::AdamW(const OptimConfig& cfg, std::vector<std::pair<std::string, Tensor>> params, Context* ctx)
    : cfg_(cfg), ctx_(ctx), params_(std::move(params)) {
  cfg_.validate();
  const Device device = params_.empty() ? Device::CPU : params_[0].second.device();
  LIGER_CHECK(device == Device::CPU || (ctx_ && ctx_->device() == device),
              "AdamW: GPU parameters need the CUDA context they live in");
  std::set<std::string> seen;
  for (const auto& [name, t] : params_) {
    LIGER_CHECK(!name.empty(), "AdamW: a parameter has an empty name");
    LIGER_CHECK(name != "step", "AdamW: parameter name 'step' is reserved for the step counter");
    LIGER_CHECK(seen.insert(name).second, "AdamW: parameter '%s' is listed twice", name.c_str());
    LIGER_CHECK(t.defined() && t.data() != nullptr, "AdamW: parameter '%s' is not allocated", name.c_str());
    LIGER_CHECK(t.dtype() == DType::F32 && t.device() == device,
                "AdamW: parameter '%s' is %s; the optimizer updates fp32 tensors on one device (%s)", name.c_str(),
                t.str().c_str(), device_name(device));
    exp_avg_.push_back(Tensor::zeros(t.shape(), DType::F32, device));
    exp_avg_sq_.push_back(Tensor::zeros(t.shape(), DType::F32, device));
    max_numel_ = std::max(max_numel_, t.numel());
  }
}

size_t AdamW::state_bytes() const {
  size_t b = 0;
  for (size_t i = 0; i < params_.size(); i++) b += exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes();
  return b;
}

double AdamW::global_norm(const std::vector<Tensor>& grads) {
  double sq = 0.0;
  for (const Tensor& g : grads) {
    LIGER_CHECK(g.dtype() == DType::F32 && g.device() == Device::CPU, "AdamW::global_norm: gradient %s",
                g.str().c_str());
    sq += ops::cpu::sum_squares(g.ptr<float>(), g.numel());
  }
  return std::sqrt(sq);
}

void AdamW::check_grads(const std::vector<Tensor>& grads) const {
  LIGER_CHECK(grads.size() == params_.size(), "AdamW::step: %zu gradients for %zu parameters", grads.size(),
              params_.size());
  for (size_t i = 0; i < grads.size(); i++) {
    const Tensor& g = grads[i];
    const Tensor& p = params_[i].second;
    LIGER_CHECK(g.dtype() == DType::F32 && g.device() == p.device() && g.shape() == p.shape(),
                "AdamW::step: gradient of '%s' is %s, the parameter is %s", params_[i].first.c_str(), g.str().c_str(),
                p.str().c_str());
  }
}

const ops::AdamWTensor* AdamW::device_table(const std::vector<Tensor>& grads) {
#ifdef LIGER_CUDA
  std::vector<const void*> ptrs;
  for (const Tensor& g : grads) ptrs.push_back(g.data());
  if (ptrs != table_grads_ || !table_.defined()) {
    std::vector<ops::AdamWTensor> host;
    for (size_t i = 0; i < params_.size(); i++)
      host.push_back({params_[i].second.ptr<float>(), grads[i].ptr<float>(), exp_avg_[i].ptr<float>(),
                      exp_avg_sq_[i].ptr<float>(), params_[i].second.numel()});
    static_assert(sizeof(ops::AdamWTensor) % sizeof(int64_t) == 0, "the table is carried as i64 words");
    const int64_t words = static_cast<int64_t>(host.size() * sizeof(ops::AdamWTensor) / sizeof(int64_t));
    Tensor staged = Tensor::empty({std::max<int64_t>(words, 1)}, DType::I64, Device::CPU);
    if (words > 0) std::memcpy(staged.data(), host.data(), static_cast<size_t>(words) * sizeof(int64_t));
    table_ = Tensor::empty(staged.shape(), DType::I64, ctx_->device());
    copy(table_, staged);
    table_grads_ = ptrs;
    sums_ = Tensor::empty({std::max<int64_t>(static_cast<int64_t>(params_.size()), 1)}, DType::F64, ctx_->device());
  }
  return static_cast<const ops::AdamWTensor*>(table_.data());
#else
  (void)grads;
  LIGER_FAIL("AdamW: built without CUDA");
#endif
}

double AdamW::norm(const std::vector<Tensor>& grads) {
  check_grads(grads);
  if (!ctx_ || !ctx_->is_cuda()) return global_norm(grads);
#ifdef LIGER_CUDA
  const int count = static_cast<int>(params_.size());
  const ops::AdamWTensor* table = device_table(grads);  // (re)makes sums_ too: before sums_.data() is read
  ops::cuda::sum_squares(*ctx_, table, count, static_cast<double*>(sums_.data()));
  const Tensor sums = sums_.to(Device::CPU);
  double sq = 0.0;
  for (int i = 0; i < count; i++) sq += sums.ptr<double>()[i];  // in parameter order
  return std::sqrt(sq);
#else
  LIGER_FAIL("AdamW: built without CUDA");
#endif
}

AdamWStepStats AdamW::step(const std::vector<Tensor>& grads) {
  return step(grads, norm(grads));
}

AdamWStepStats AdamW::step(const std::vector<Tensor>& grads, double grad_norm) {
  check_grads(grads);

  AdamWStepStats st;
  st.grad_norm = grad_norm;
  LIGER_CHECK(std::isfinite(st.grad_norm),
              "optimizer step %lld: the gradient norm is %g (the loss diverged or the data has NaN/inf; lower --lr, "
              "or resume from an earlier checkpoint)",
              static_cast<long long>(steps_done_ + 1), st.grad_norm);
  if (cfg_.clip_norm > 0) {
    const double coef = cfg_.clip_norm / (st.grad_norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
    if (coef < 1.0) st.grad_scale = coef;
  }

  st.lr = lr_at(cfg_, steps_done_);
  st.step = steps_done_ + 1;
  const double t = static_cast<double>(st.step);
  AdamWScalars s;
  s.beta1 = static_cast<float>(cfg_.beta1);
  s.beta2 = static_cast<float>(cfg_.beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - cfg_.beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - cfg_.beta2);
  s.decay = static_cast<float>(st.lr * cfg_.weight_decay);
  s.step_size = static_cast<float>(st.lr / (1.0 - std::pow(cfg_.beta1, t)));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(cfg_.beta2, t)));
  s.eps = static_cast<float>(cfg_.eps);
  s.grad_scale = static_cast<float>(st.grad_scale);

  if (ctx_ && ctx_->is_cuda()) {
#ifdef LIGER_CUDA
    ops::cuda::adamw_update(*ctx_, device_table(grads), static_cast<int>(params_.size()), max_numel_, s);
#endif
  } else {
    for (size_t i = 0; i < params_.size(); i++) {
      const Tensor& p = params_[i].second;
      ops::cpu::adamw_update(p.ptr<float>(), grads[i].ptr<float>(), exp_avg_[i].ptr<float>(),
                             exp_avg_sq_[i].ptr<float>(), p.numel(), s);
    }
  }
  steps_done_ = st.step;
  return st;
}

std::vector<std::pair<std::string, Tensor>> AdamW::export_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor m = Tensor::empty(exp_avg_[i].shape(), DType::F32, Device::CPU);
    Tensor v = Tensor::empty(exp_avg_sq_[i].shape(), DType::F32, Device::CPU);
    copy(m, exp_avg_[i]);
    copy(v, exp_avg_sq_[i]);
    out.emplace_back(params_[i].first + ".exp_avg", m);
    out.emplace_back(params_[i].first + ".exp_avg_sq", v);
  }
  Tensor step = Tensor::empty(Shape{1}, DType::I64, Device::CPU);
  step.ptr<int64_t>()[0] = steps_done_;
  out.emplace_back("step", step);
  return out;
}

void AdamW::import_state(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& what) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) {
    LIGER_CHECK(by_name.emplace(name, &t).second, "%s: optimizer state tensor '%s' appears twice", what.c_str(),
                name.c_str());
  }
  auto take = [&](const std::string& name) -> const Tensor& {
    auto it = by_name.find(name);
    LIGER_CHECK(it != by_name.end(),
                "%s: optimizer state tensor '%s' is missing (was the checkpoint written with other LoRA targets?)",
                what.c_str(), name.c_str());
    const Tensor& t = *it->second;
    by_name.erase(it);
    return t;
  };

  // Check everything before changing anything, so a failed import leaves the optimizer as it was.
  const Tensor& step = take("step");
  LIGER_CHECK(step.dtype() == DType::I64 && step.numel() == 1,
              "%s: optimizer state tensor 'step' is %s, expected "
              "i64 (1)",
              what.c_str(), step.str().c_str());
  const int64_t steps = step.to_i64_vector()[0];
  LIGER_CHECK(steps >= 0, "%s: optimizer state tensor 'step' is %lld (must be >= 0)", what.c_str(),
              static_cast<long long>(steps));
  std::vector<const Tensor*> ms, vs;
  for (size_t i = 0; i < params_.size(); i++) {
    const std::string& name = params_[i].first;
    const Shape& shape = params_[i].second.shape();
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const Tensor& t = take(name + suffix);
      LIGER_CHECK(t.dtype() == DType::F32 && t.shape() == shape,
                  "%s: optimizer state tensor '%s%s' is %s, the parameter is f32 %s", what.c_str(), name.c_str(),
                  suffix, t.str().c_str(), shape.str().c_str());
      (std::strcmp(suffix, ".exp_avg") == 0 ? ms : vs).push_back(&t);
    }
  }
  LIGER_CHECK(by_name.empty(),
              "%s: optimizer state tensor '%s' belongs to no parameter of this model (was the checkpoint written for "
              "other LoRA targets?)",
              what.c_str(), by_name.empty() ? "" : by_name.begin()->first.c_str());

  for (size_t i = 0; i < params_.size(); i++) {
    copy(exp_avg_[i], *ms[i]);
    copy(exp_avg_sq_[i], *vs[i]);
  }
  steps_done_ = steps;
}

}  // namespace liger
