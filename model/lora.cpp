#include "model/lora.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace liger {

namespace {

std::string peft_name(int64_t layer, LoraTarget t, const char* which) {
  const bool mlp = t == LoraTarget::Gate || t == LoraTarget::Up || t == LoraTarget::Down;
  return strfmt("base_model.model.model.layers.%lld.%s.%s.lora_%s.weight", static_cast<long long>(layer),
                mlp ? "mlp" : "self_attn", lora_target_module(t), which);
}

}  // namespace

const char* lora_target_module(LoraTarget t) {
  static const char* names[kLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                            "gate_proj", "up_proj", "down_proj"};
  return names[static_cast<int>(t)];
}

std::vector<LoraTarget> LoraConfig::parse_targets(const std::string& list) {
  std::vector<LoraTarget> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    static const char* shorts[kLoraTargets] = {"q", "k", "v", "o", "gate", "up", "down"};
    int found = -1;
    for (int i = 0; i < kLoraTargets; i++)
      if (item == shorts[i] || item == lora_target_module(static_cast<LoraTarget>(i))) found = i;
    LIGER_CHECK(found >= 0, "lora targets: unknown target '%s' (use q, k, v, o, gate, up, down)", item.c_str());
    for (LoraTarget t : out) LIGER_CHECK(static_cast<int>(t) != found, "lora targets: '%s' given twice", item.c_str());
    out.push_back(static_cast<LoraTarget>(found));
  }
  LIGER_CHECK(!out.empty(), "lora targets: empty list");
  return out;
}

void LoraConfig::validate() const {
  LIGER_CHECK(rank >= 1 && rank <= 4096, "lora rank must be in [1, 4096], got %lld", static_cast<long long>(rank));
  LIGER_CHECK(alpha > 0, "lora alpha must be positive, got %g", alpha);
  LIGER_CHECK(dropout == 0.0, "lora dropout %g is not supported (only 0, the paper's setting)", dropout);
  LIGER_CHECK(!targets.empty(), "lora targets: empty list");
}

std::pair<int64_t, int64_t> lora_target_shape(const ModelConfig& c, LoraTarget t) {
  switch (t) {
    case LoraTarget::Q:
      return {c.d_model, c.q_dim()};
    case LoraTarget::K:
      return {c.d_model, c.kv_dim()};
    case LoraTarget::V:
      return {c.d_model, c.kv_dim()};
    case LoraTarget::O:
      return {c.q_dim(), c.d_model};
    case LoraTarget::Gate:
      return {c.d_model, c.local_ff()};
    case LoraTarget::Up:
      return {c.d_model, c.local_ff()};
    case LoraTarget::Down:
      return {c.local_ff(), c.d_model};
  }
  return {0, 0};
}

LoraAdapters LoraAdapters::init(const ModelConfig& cfg, const LoraConfig& lc, Device device, DType dtype) {
  LIGER_CHECK(dtype == DType::F32 || dtype == DType::F64, "lora: adapters are f32 (f64 for checks)");
  lc.validate();
  LoraAdapters a;
  a.cfg_ = lc;
  a.layers_.resize(static_cast<size_t>(cfg.n_layers));
  Rng rng(lc.seed);
  for (int64_t l = 0; l < cfg.n_layers; l++) {
    for (LoraTarget t : lc.targets) {
      auto [in, out] = lora_target_shape(cfg, t);
      LoraPair& p = a.layers_[static_cast<size_t>(l)][static_cast<int>(t)];
      Tensor A = Tensor::empty({lc.rank, in}, DType::F32, Device::CPU);
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      for (int64_t i = 0; i < A.numel(); i++) A.ptr<float>()[i] = (2.0f * rng.uniform() - 1.0f) * bound;
      p.A = A.to(device, dtype);
      p.B = Tensor::zeros({out, lc.rank}, dtype, device);
    }
  }
  a.allocate_gradients(device, dtype);
  return a;
}

const LoraPair* LoraAdapters::get(int64_t layer, LoraTarget t) const {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size())) return nullptr;
  const LoraPair& p = layers_[static_cast<size_t>(layer)][static_cast<int>(t)];
  return p.defined() ? &p : nullptr;
}

LoraPair* LoraAdapters::get(int64_t layer, LoraTarget t) {
  return const_cast<LoraPair*>(static_cast<const LoraAdapters*>(this)->get(layer, t));
}

std::vector<std::pair<std::string, Tensor>> LoraAdapters::parameters() const {
  std::vector<std::pair<std::string, Tensor>> v;
  for (size_t l = 0; l < layers_.size(); l++)
    for (int t = 0; t < kLoraTargets; t++) {
      const LoraPair& p = layers_[l][static_cast<size_t>(t)];
      if (!p.defined()) continue;
      v.push_back({peft_name(static_cast<int64_t>(l), static_cast<LoraTarget>(t), "A"), p.A});
      v.push_back({peft_name(static_cast<int64_t>(l), static_cast<LoraTarget>(t), "B"), p.B});
    }
  return v;
}

std::vector<std::pair<std::string, Tensor>> LoraAdapters::gradients() const {
  std::vector<std::pair<std::string, Tensor>> v;
  for (size_t l = 0; l < layers_.size(); l++)
    for (int t = 0; t < kLoraTargets; t++) {
      const LoraPair& p = layers_[l][static_cast<size_t>(t)];
      if (!p.defined()) continue;
      v.push_back({peft_name(static_cast<int64_t>(l), static_cast<LoraTarget>(t), "A"), p.dA});
      v.push_back({peft_name(static_cast<int64_t>(l), static_cast<LoraTarget>(t), "B"), p.dB});
    }
  return v;
}

LoraAdapters LoraAdapters::to(Device device) const {
  LoraAdapters a;
  a.cfg_ = cfg_;
  a.layers_.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); l++)
    for (size_t ti = 0; ti < static_cast<size_t>(kLoraTargets); ti++) {
      const LoraPair& p = layers_[l][ti];
      if (!p.defined()) continue;
      LoraPair& q = a.layers_[l][ti];
      q.A = p.A.to(device);
      q.B = p.B.to(device);
    }
  if (!a.layers_.empty() && a.n_params() > 0) a.allocate_gradients(device, grad_buffer_.dtype());
  return a;
}

void LoraAdapters::allocate_gradients(Device device, DType dtype) {
  int64_t n = 0;
  for (auto& [name, p] : parameters()) n += p.numel();
  grad_buffer_ = Tensor::zeros({n}, dtype, device);
  int64_t off = 0;
  for (auto& layer : layers_)
    for (LoraPair& p : layer) {
      if (!p.defined()) continue;
      p.dA = grad_buffer_.slice(off, p.A.numel()).view(p.A.shape());
      off += p.A.numel();
      p.dB = grad_buffer_.slice(off, p.B.numel()).view(p.B.shape());
      off += p.B.numel();
    }
}

std::pair<int64_t, int64_t> LoraAdapters::layer_grad_range(int64_t layer) const {
  int64_t off = 0, count = 0;
  for (size_t l = 0; l < layers_.size(); l++)
    for (const LoraPair& p : layers_[l]) {
      if (!p.defined()) continue;
      const int64_t n = p.A.numel() + p.B.numel();
      if (static_cast<int64_t>(l) < layer) off += n;
      else if (static_cast<int64_t>(l) == layer) count += n;
    }
  return {off, count};
}

void LoraAdapters::zero_grad() {
  if (!grad_buffer_.defined()) return;
  set_zero(grad_buffer_);
}

LoraSplit lora_split(LoraTarget t) {
  return t == LoraTarget::O || t == LoraTarget::Down ? LoraSplit::Row : LoraSplit::Column;
}

namespace {

// Block r of `n` along dim `dim` (0 or 1) of a 2-D host tensor.
Tensor block_of(const Tensor& full, int dim, int64_t r, int64_t n) {
  return dim == 0 ? full.slice(r * n, n) : column_block(full, r * n, n);
}

// Which dimension of a pair's tensor is split (-1: whole): B's rows for column-parallel targets, A's columns for
// row-parallel ones.
int split_dim(LoraTarget t, bool is_a) {
  const bool column = lora_split(t) == LoraSplit::Column;
  if (is_a) return column ? -1 : 1;
  return column ? 0 : -1;
}

}  // namespace

LoraAdapters LoraAdapters::shard(const ModelConfig& local, Device device) const {
  if (local.tp_size == 1) return to(device);
  LoraAdapters a;
  a.cfg_ = cfg_;
  a.layers_.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); l++)
    for (int ti = 0; ti < kLoraTargets; ti++) {
      const LoraPair& p = layers_[l][static_cast<size_t>(ti)];
      if (!p.defined()) continue;
      auto [in, out] = lora_target_shape(local, static_cast<LoraTarget>(ti));
      LoraPair& q = a.layers_[l][static_cast<size_t>(ti)];
      q.A = Tensor::empty({cfg_.rank, in}, p.A.dtype(), device);
      q.B = Tensor::empty({out, cfg_.rank}, p.B.dtype(), device);
    }
  a.allocate_gradients(device, grad_buffer_.dtype());
  a.load_shard_values(*this, local);
  return a;
}

void LoraAdapters::load_shard_values(const LoraAdapters& full, const ModelConfig& local) {
  for (size_t l = 0; l < layers_.size(); l++)
    for (int ti = 0; ti < kLoraTargets; ti++) {
      LoraPair& q = layers_[l][static_cast<size_t>(ti)];
      if (!q.defined()) continue;
      const LoraPair& p = full.layers_[l][static_cast<size_t>(ti)];
      const LoraTarget t = static_cast<LoraTarget>(ti);
      for (bool is_a : {true, false}) {
        Tensor& dst = is_a ? q.A : q.B;
        const Tensor& src = is_a ? p.A : p.B;
        const int dim = split_dim(t, is_a);
        if (dim < 0 || local.tp_size == 1) {
          copy(dst, src);
          continue;
        }
        const Tensor host = src.device() == Device::CPU ? src : src.to(Device::CPU);
        copy(dst, block_of(host, dim, local.tp_rank, dst.dim(dim)));
      }
    }
}

void LoraAdapters::assemble_gradients(const Tensor& gathered, const ModelConfig& local) {
  const int64_t tp = local.tp_size;
  LIGER_CHECK(gathered.device() == Device::CPU && gathered.ndim() == 2 && gathered.dim(0) == tp,
              "assemble_gradients: gathered must be a host (tp, G) tensor, got %s", gathered.str().c_str());
  LIGER_CHECK(gathered.dtype() == grad_buffer_.dtype(), "assemble_gradients: dtype %s, the gradients are %s",
              dtype_name(gathered.dtype()), dtype_name(grad_buffer_.dtype()));
  const int64_t G = gathered.dim(1);
  const size_t es = dtype_size(gathered.dtype());
  const char* base = static_cast<const char*>(gathered.data());
  int64_t off = 0;  // offset of the current tensor in one rank's shard buffer
  for (size_t l = 0; l < layers_.size(); l++)
    for (int ti = 0; ti < kLoraTargets; ti++) {
      LoraPair& p = layers_[l][static_cast<size_t>(ti)];
      if (!p.defined()) continue;
      const LoraTarget t = static_cast<LoraTarget>(ti);
      for (bool is_a : {true, false}) {
        Tensor g = is_a ? p.dA : p.dB;  // full shape
        const int dim = tp == 1 ? -1 : split_dim(t, is_a);
        const int64_t n = dim < 0 ? g.numel() : g.numel() / tp;  // elements of this tensor in one shard
        Tensor host = g.device() == Device::CPU ? g : Tensor::empty(g.shape(), g.dtype(), Device::CPU);
        char* out = static_cast<char*>(host.data());
        if (dim < 0) {  // whole on every rank: the partial sums, added in rank order
          std::memcpy(out, base + static_cast<size_t>(off) * es, static_cast<size_t>(n) * es);
          for (int64_t r = 1; r < tp; r++) {
            const char* src = base + static_cast<size_t>(r * G + off) * es;
            if (g.dtype() == DType::F64)
              for (int64_t i = 0; i < n; i++)
                reinterpret_cast<double*>(out)[i] += reinterpret_cast<const double*>(src)[i];
            else
              for (int64_t i = 0; i < n; i++)
                reinterpret_cast<float*>(out)[i] += reinterpret_cast<const float*>(src)[i];
          }
        } else if (dim == 0) {  // rank r's rows come r-th
          for (int64_t r = 0; r < tp; r++)
            std::memcpy(out + static_cast<size_t>(r * n) * es, base + static_cast<size_t>(r * G + off) * es,
                        static_cast<size_t>(n) * es);
        } else {  // rank r's columns [r * cn, (r + 1) * cn) of every row
          const int64_t rows = g.dim(0), cols = g.dim(1), cn = cols / tp;
          for (int64_t r = 0; r < tp; r++)
            for (int64_t i = 0; i < rows; i++)
              std::memcpy(out + static_cast<size_t>(i * cols + r * cn) * es,
                          base + static_cast<size_t>(r * G + off + i * cn) * es, static_cast<size_t>(cn) * es);
        }
        if (host.data() != g.data()) copy(g, host);
        off += n;
      }
    }
  LIGER_CHECK(off == G, "assemble_gradients: the shards hold %lld gradient values, the layout %lld",
              static_cast<long long>(G), static_cast<long long>(off));
}

int64_t LoraAdapters::n_params() const {
  int64_t n = 0;
  for (auto& [name, p] : parameters()) n += p.numel();
  return n;
}

void LoraAdapters::forward(Context& ctx, int64_t layer, LoraTarget t, Tensor y, const Tensor& x) const {
  const LoraPair* p = get(layer, t);
  if (!p) return;
  const int64_t N = x.dim(0), R = cfg_.rank;
  // The factors in the activations' dtype: the GPU runs bf16 activations against the fp32 adapters (whose gradients
  // still accumulate in fp32).
  const Tensor A = ops::converted(ctx, p->A, x.dtype()), B = ops::converted(ctx, p->B, x.dtype());
  Tensor xa = Tensor::empty({N, R}, x.dtype(), x.device());
  ops::matmul(ctx, xa, x, A);  // (N, R) = x A^T
  ops::scale(ctx, xa, xa, cfg_.scale());
  ops::matmul(ctx, y, xa, B, nullptr, /*accumulate=*/true);  // y += (scale x A^T) B^T
}

void LoraAdapters::backward(Context& ctx, int64_t layer, LoraTarget t, Tensor dx, const Tensor& dy, const Tensor& x) {
  LoraPair* p = get(layer, t);
  if (!p) return;
  const int64_t N = x.dim(0), R = cfg_.rank;
  // The factors in the activations' dtype: the GPU runs bf16 activations against the fp32 adapters (whose gradients
  // still accumulate in fp32).
  const Tensor A = ops::converted(ctx, p->A, x.dtype()), B = ops::converted(ctx, p->B, x.dtype());
  Tensor dyb = Tensor::empty({N, R}, x.dtype(), x.device());
  ops::matmul_backward_input(ctx, dyb, dy, B, /*accumulate=*/false);  // (N, R) = dy B
  ops::scale(ctx, dyb, dyb, cfg_.scale());
  ops::matmul_backward_input(ctx, dx, dyb, A, /*accumulate=*/true);  // dx += s (dy B) A
  ops::matmul_weight_grad(ctx, p->dA, dyb, x, /*accumulate=*/true);  // dA += s (dy B)^T x  (fp32 accumulator)
  Tensor xa = Tensor::empty({N, R}, x.dtype(), x.device());
  ops::matmul(ctx, xa, x, A);
  ops::scale(ctx, xa, xa, cfg_.scale());
  ops::matmul_weight_grad(ctx, p->dB, dy, xa, /*accumulate=*/true);  // dB += dy^T (s x A^T)
}

void LoraAdapters::merge(const std::function<Tensor(int64_t, LoraTarget)>& weight, double sign) const {
  for (size_t l = 0; l < layers_.size(); l++)
    for (int ti = 0; ti < kLoraTargets; ti++) {
      const LoraPair& p = layers_[l][static_cast<size_t>(ti)];
      if (!p.defined()) continue;
      Tensor W = weight(static_cast<int64_t>(l), static_cast<LoraTarget>(ti));
      LIGER_CHECK(W.device() == Device::CPU && W.dtype() == DType::F32, "lora merge: the CPU f32 path only");
      const Tensor A = p.A.device() == Device::CPU ? p.A : p.A.to(Device::CPU);
      const Tensor B = p.B.device() == Device::CPU ? p.B : p.B.to(Device::CPU);
      const int64_t out = B.dim(0), in = A.dim(1), R = A.dim(0);
      for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
          double acc = 0;
          for (int64_t r = 0; r < R; r++)
            acc += static_cast<double>(B.ptr<float>()[o * R + r]) * A.ptr<float>()[r * in + i];
          W.ptr<float>()[o * in + i] += static_cast<float>(sign * cfg_.scale() * acc);
        }
    }
}

void LoraAdapters::save(const std::string& dir, const std::string& base_model) const {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), parameters(),
                    {{"format", "pt"}, {"producer", "liger"}});
  const Json j = adapter_config(base_model);
  const std::string path = (fs::path(dir) / "adapter_config.json").string();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << j.dump(2) << "\n";
    LIGER_CHECK(f.good(), "%s: write failed", tmp.c_str());
  }
  fs::rename(tmp, path);
}

Json LoraAdapters::adapter_config(const std::string& base_model) const {
  Json targets = Json::array();
  for (LoraTarget t : cfg_.targets) targets.push_back(lora_target_module(t));
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", cfg_.rank},
          {"lora_alpha", cfg_.alpha},
          {"lora_dropout", cfg_.dropout},
          {"target_modules", targets},
          {"bias", "none"},
          {"base_model_name_or_path", base_model},
          {"inference_mode", true},
          {"fan_in_fan_out", false},
          {"init_lora_weights", true}};
}

void LoraAdapters::load_parameters(const std::vector<std::pair<std::string, Tensor>>& values, const std::string& what) {
  for (auto& [name, p] : parameters()) {
    const Tensor* found = nullptr;
    for (auto& [n, t] : values)
      if (n == name) found = &t;
    LIGER_CHECK(found != nullptr, "%s: no tensor '%s'", what.c_str(), name.c_str());
    LIGER_CHECK(found->shape() == p.shape(), "%s: tensor '%s' has shape %s, the adapters need %s", what.c_str(),
                name.c_str(), found->shape().str().c_str(), p.shape().str().c_str());
    copy(p, *found);
  }
}

LoraAdapters LoraAdapters::load(const std::string& dir, const ModelConfig& cfg, Device device) {
  namespace fs = std::filesystem;
  LIGER_CHECK(fs::is_directory(dir), "%s: adapter directory does not exist", dir.c_str());
  const std::string cpath = (fs::path(dir) / "adapter_config.json").string();
  LIGER_CHECK(fs::exists(cpath), "%s: missing adapter_config.json (not a PEFT adapter directory)", dir.c_str());
  Json j = read_json_file(cpath);
  LoraConfig lc;
  LIGER_CHECK(json_string(j, "peft_type", cpath) == "LORA", "%s: key 'peft_type' must be LORA", cpath.c_str());
  lc.rank = json_int(j, "r", cpath);
  lc.alpha = json_number(j, "lora_alpha", cpath);
  lc.dropout = json_has(j, "lora_dropout") ? json_number(j, "lora_dropout", cpath) : 0.0;
  const Json& tm = json_field(j, "target_modules", cpath);
  LIGER_CHECK(tm.is_array(), "%s: key 'target_modules' must be a list", cpath.c_str());
  std::string list;
  for (const Json& t : tm) {
    LIGER_CHECK(t.is_string(), "%s: key 'target_modules' must hold names", cpath.c_str());
    list += (list.empty() ? "" : ",") + t.get<std::string>();
  }
  lc.targets = LoraConfig::parse_targets(list);
  lc.validate();
  LoraAdapters a = init(cfg, lc, device);
  const std::string wpath = (fs::path(dir) / "adapter_model.safetensors").string();
  auto f = SafetensorsFile::open(wpath);
  for (size_t l = 0; l < a.layers_.size(); l++)
    for (int ti = 0; ti < kLoraTargets; ti++) {
      LoraPair& p = a.layers_[l][static_cast<size_t>(ti)];
      if (!p.defined()) continue;
      for (auto [which, dst] : {std::pair<const char*, Tensor*>{"A", &p.A}, {"B", &p.B}}) {
        const std::string name = peft_name(static_cast<int64_t>(l), static_cast<LoraTarget>(ti), which);
        const SafetensorsEntry* e = f->find(name);
        LIGER_CHECK(e != nullptr, "%s: no tensor '%s' (adapter_config.json lists %s)", wpath.c_str(), name.c_str(),
                    lora_target_module(static_cast<LoraTarget>(ti)));
        LIGER_CHECK(Shape(e->shape) == dst->shape(), "%s: tensor '%s' has shape %s but this model needs %s",
                    wpath.c_str(), name.c_str(), Shape(e->shape).str().c_str(), dst->shape().str().c_str());
        copy(*dst, f->tensor(name));
      }
    }
  for (const SafetensorsEntry& e : f->entries()) {
    bool known = false;
    for (auto& [name, t] : a.parameters()) known = known || name == e.name;
    LIGER_CHECK(known, "%s: tensor '%s' does not belong to this model's adapters (%lld layers, targets %s)",
                wpath.c_str(), e.name.c_str(), static_cast<long long>(cfg.n_layers), list.c_str());
  }
  return a;
}

LoraAdapters LoraAdapters::load_for(const std::string& dir, const ModelConfig& local, Device device) {
  if (local.tp_size == 1) return load(dir, local, device);
  ModelConfig full = local;
  full.set_tensor_parallel(1, 0);
  return load(dir, full, Device::CPU).shard(local, device);
}

}  // namespace liger
