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

// ---- the element loop -----------------------------------------------------------------------------------------------

namespace cpu {

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
  for (int64_t i = 0; i < n; i++) {
    const float gs = g[i] * s.grad_scale;
    float pi = p[i];
    pi -= s.decay * pi;
    const float mi = s.beta1 * m[i] + s.one_minus_beta1 * gs;
    const float vi = s.beta2 * v[i] + s.one_minus_beta2 * gs * gs;
    const float denom = std::sqrt(vi) / s.bias_correction2_sqrt + s.eps;
    pi -= s.step_size * (mi / denom);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

double sum_squares(const float* x, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; i++) acc += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return acc;
}

}  // namespace cpu

// ---- AdamW ----------------------------------------------------------------------------------------------------------

AdamW::AdamW(const OptimConfig& cfg, std::vector<std::pair<std::string, Tensor>> params)
    : cfg_(cfg), params_(std::move(params)) {
  cfg_.validate();
  std::set<std::string> seen;
  for (const auto& [name, t] : params_) {
    LIGER_CHECK(!name.empty(), "AdamW: a parameter has an empty name");
    LIGER_CHECK(name != "step", "AdamW: parameter name 'step' is reserved for the step counter");
    LIGER_CHECK(seen.insert(name).second, "AdamW: parameter '%s' is listed twice", name.c_str());
    LIGER_CHECK(t.defined() && t.data() != nullptr, "AdamW: parameter '%s' is not allocated", name.c_str());
    LIGER_CHECK(t.dtype() == DType::F32 && t.device() == Device::CPU,
                "AdamW: parameter '%s' is %s; the optimizer updates fp32 CPU tensors", name.c_str(), t.str().c_str());
    exp_avg_.push_back(Tensor::zeros(t.shape(), DType::F32, Device::CPU));
    exp_avg_sq_.push_back(Tensor::zeros(t.shape(), DType::F32, Device::CPU));
  }
}

size_t AdamW::state_bytes() const {
  size_t b = 0;
  for (size_t i = 0; i < params_.size(); i++) b += exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes();
  return b;
}

double AdamW::global_norm(const std::vector<Tensor>& grads) {
  double sq = 0.0;
  for (const Tensor& g : grads) sq += cpu::sum_squares(g.ptr<float>(), g.numel());
  return std::sqrt(sq);
}

AdamWStepStats AdamW::step(const std::vector<Tensor>& grads) {
  return step(grads, global_norm(grads));
}

AdamWStepStats AdamW::step(const std::vector<Tensor>& grads, double grad_norm) {
  LIGER_CHECK(grads.size() == params_.size(), "AdamW::step: %zu gradients for %zu parameters", grads.size(),
              params_.size());
  for (size_t i = 0; i < grads.size(); i++) {
    const Tensor& g = grads[i];
    LIGER_CHECK(g.dtype() == DType::F32 && g.device() == Device::CPU && g.shape() == params_[i].second.shape(),
                "AdamW::step: gradient of '%s' is %s, the parameter is %s", params_[i].first.c_str(), g.str().c_str(),
                params_[i].second.str().c_str());
  }

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

  for (size_t i = 0; i < params_.size(); i++) {
    const Tensor& p = params_[i].second;
    cpu::adamw_update(p.ptr<float>(), grads[i].ptr<float>(), exp_avg_[i].ptr<float>(), exp_avg_sq_[i].ptr<float>(),
                      p.numel(), s);
  }
  steps_done_ = st.step;
  return st;
}

std::vector<std::pair<std::string, Tensor>> AdamW::export_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor m = Tensor::empty(exp_avg_[i].shape(), DType::F32, Device::CPU);
    Tensor v = Tensor::empty(exp_avg_sq_[i].shape(), DType::F32, Device::CPU);
    std::memcpy(m.data(), exp_avg_[i].data(), m.nbytes());
    std::memcpy(v.data(), exp_avg_sq_[i].data(), v.nbytes());
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
