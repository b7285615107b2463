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

// How a target's adapter splits over a tensor-parallel group, following its base weight (DESIGN.md §5):
//   Column (q, k, v, gate, up: the base weight's output rows are split): A (R, in) whole on every rank, B (out, R)
//     split by rows; dA is a partial sum on each rank (a sum over the group gives it);
//   Row (o, down: the base weight's input columns are split): A split by columns, B whole; dB is a partial sum.
enum class LoraSplit { Column, Row };
LoraSplit lora_split(LoraTarget t);

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
  // This rank's block of these (full, tp = 1) adapters for the tensor-parallel slice `local` of the model config
  // (local.tp_size, local.tp_rank; LoraSplit above), on `device`, gradients zero. With tp_size 1: a copy (to()).
  LoraAdapters shard(const ModelConfig& local, Device device) const;
  // Copies the values of `full` (tp = 1 adapters, any device) into this shard of them (made by full.shard(local, ..)).
  void load_shard_values(const LoraAdapters& full, const ModelConfig& local);
  // Sets the gradients of these full adapters from the gradient buffers of every rank of a tensor-parallel group:
  // gathered (tp, G) holds rank r's grad_buffer() (G elements, the shard layout of `local`) in row r. Split tensors
  // are put together; the partial sums of whole tensors are added in rank order (the same bits on every rank).
  void assemble_gradients(const Tensor& gathered, const ModelConfig& local);
  // Reads a PEFT adapter directory; errors name the file and the tensor whose shape does not fit the model.
  static LoraAdapters load(const std::string& dir, const ModelConfig& cfg, Device device);
  // load() for the full (tp = 1) shapes of `local`, then this rank's shard of them (shard(local, device)).
  static LoraAdapters load_for(const std::string& dir, const ModelConfig& local, Device device);
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
  // Every gradient in one contiguous buffer (dA, dB of each pair are views into it), in gradients() order: the
  // all-reduce buffer of data parallelism. layer_grad_range(l): [offset, count) of layer l's gradients in it.
  const Tensor& grad_buffer() const { return grad_buffer_; }
  std::pair<int64_t, int64_t> layer_grad_range(int64_t layer) const;

  // y (N, out) += scale * (x A^T) B^T, for x (N, in).
  void forward(Context& ctx, int64_t layer, LoraTarget t, Tensor y, const Tensor& x) const;
  // From dy (N, out) and the layer input x (N, in): dx (N, in) += scale * (dy B) A; dA += scale (dy B)^T x;
  // dB += scale dy^T (x A^T).
  void backward(Context& ctx, int64_t layer, LoraTarget t, Tensor dx, const Tensor& dy, const Tensor& x);

  // W += sign * scale * B A for every adapted weight (sign +1 merges, -1 unmerges); `weight(layer, target)` returns
  // the frozen matrix (out, in) of the model (f32 CPU tensors).
  void merge(const std::function<Tensor(int64_t, LoraTarget)>& weight, double sign) const;

 private:
  // Allocates grad_buffer_ and points every pair's dA, dB into it (zeros), in parameter order.
  void allocate_gradients(Device device, DType dtype);

  LoraConfig cfg_;
  std::vector<std::array<LoraPair, kLoraTargets>> layers_;
  Tensor grad_buffer_;  // (sum of every parameter's numel) f32 (f64 for checks)
};

// Input and output widths of a target's projection for this config.
std::pair<int64_t, int64_t> lora_target_shape(const ModelConfig& cfg, LoraTarget t);

}  // namespace liger
