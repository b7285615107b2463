// model/lora.h — LoRA adapters on the frozen projections (DESIGN.md §4): W' = W + (alpha / r) B A.
//
// A (R, in) Kaiming-uniform (PEFT's kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))), B (out, R) zero, both
// fp32 and trainable; dropout 0. Targets: q, k, v by default; o, gate, up, down selectable. Because Liger's gates and
// feature maps are functions of the adapted key, LoRA on W_K also trains the gates.
// Saved in the PEFT layout (adapter_model.safetensors with PEFT tensor names + adapter_config.json), so the adapters
// load in the Python ecosystem and back here; loading checks every shape against the model.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/json.h"
#include "model/config.h"

namespace liger {

enum class LoraTarget { Q = 0, K, V, O, Gate, Up, Down };
constexpr int kLoraTargets = 7;
const char* lora_target_module(LoraTarget t);  // "q_proj", ..., "down_proj"

struct LoraConfig {
  int64_t rank = 8;      // R
  double alpha = 8.0;    // scale = alpha / R
  double dropout = 0.0;  // only 0 is supported (the paper's setting)
  std::vector<LoraTarget> targets = {LoraTarget::Q, LoraTarget::K, LoraTarget::V};
  uint64_t seed = 0;  // initialization of A

  double scale() const { return alpha / static_cast<double>(rank); }
  // Parses "q,k,v,o,gate,up,down" (any subset); Error naming the option otherwise.
  static std::vector<LoraTarget> parse_targets(const std::string& list);
  void validate() const;
};

struct LoraPair {
  Tensor A, B;    // (R, in), (out, R) f32 (f64 in gradient checks)
  Tensor dA, dB;  // gradients, same shapes
  bool defined() const { return A.defined(); }
};

class LoraAdapters {
 public:
  LoraAdapters() = default;
  // Fresh adapters for every layer and target of `cfg`, on `device`; f32 (f64 only for gradient checks).
  static LoraAdapters init(const ModelConfig& cfg, const LoraConfig& lc, Device device, DType dtype = DType::F32);
  // A copy on `device` (values copied, gradients zero), with the same parameter order.
  LoraAdapters to(Device device) const;
  // Reads a PEFT adapter directory; errors name the file and the tensor whose shape does not fit the model.
  static LoraAdapters load(const std::string& dir, const ModelConfig& cfg, Device device);
  // Writes adapter_model.safetensors and adapter_config.json into `dir` (created if needed).
  void save(const std::string& dir, const std::string& base_model) const;
  // PEFT's adapter_config.json for these adapters.
  Json adapter_config(const std::string& base_model) const;
  // Copies values into the parameters from (name, tensor) pairs with the PEFT names (a checkpoint); every parameter
  // must be present with its shape, else an Error naming `what` and the tensor.
  void load_parameters(const std::vector<std::pair<std::string, Tensor>>& values, const std::string& what);

  const LoraConfig& config() const { return cfg_; }
  const LoraPair* get(int64_t layer, LoraTarget t) const;
  LoraPair* get(int64_t layer, LoraTarget t);
  // (name, tensor) of every trainable parameter / gradient in a fixed order (PEFT names).
  std::vector<std::pair<std::string, Tensor>> parameters() const;
  std::vector<std::pair<std::string, Tensor>> gradients() const;
  void zero_grad();
  int64_t n_params() const;

  // y (N, out) += scale * (x A^T) B^T, for x (N, in).
  void forward(Context& ctx, int64_t layer, LoraTarget t, Tensor y, const Tensor& x) const;
  // From dy (N, out) and the layer input x (N, in): dx (N, in) += scale * (dy B) A; dA += scale (dy B)^T x;
  // dB += scale dy^T (x A^T).
  void backward(Context& ctx, int64_t layer, LoraTarget t, Tensor dx, const Tensor& dy, const Tensor& x);

  // W += sign * scale * B A for every adapted weight (sign +1 merges, -1 unmerges); `weight(layer, target)` returns
  // the frozen matrix (out, in) of the model (f32 CPU tensors).
  void merge(const std::function<Tensor(int64_t, LoraTarget)>& weight, double sign) const;

 private:
  LoraConfig cfg_;
  std::vector<std::array<LoraPair, kLoraTargets>> layers_;
};

// Input and output widths of a target's projection for this config.
std::pair<int64_t, int64_t> lora_target_shape(const ModelConfig& cfg, LoraTarget t);

}  // namespace liger
