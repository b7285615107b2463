// tests/ops/test_ops_gpu.cpp — every CUDA op against its CPU twin (ops/cpu) on fresh random inputs.
//
// Each GPU run takes inputs that are exactly representable in its storage dtype (random f32 values rounded to bf16
// for the bf16 runs), so the comparison measures the op, not the rounding of its inputs. The CPU twin computes in
// f32 on the same values. Tolerances (docs/DESIGN.md §2): ||out - ref|| / ||ref|| <= 1e-5 for f32 storage, <= 1e-2
// for bf16 storage; NaN never passes. Outputs are filled with NaN bytes before each GPU call, so an element the
// kernel forgets to write fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/liger_gates.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/sampling.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/common/gpu_compare.h"

namespace liger {
namespace {

using namespace liger::test;  // tests/common/gpu_compare.h

TEST(OpsGpu, Matmul) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t M, N, K;
  };
  const Case cases[] = {{1, 1, 1}, {1, 72, 40}, {37, 19, 13}, {64, 1000, 72}, {300, 128, 512}};
  struct Types {
    DType x, out;
  };
  const Types types[] = {{DType::F32, DType::F32}, {DType::BF16, DType::BF16}, {DType::BF16, DType::F32}};
  enum class BiasKind { None, SameAsOut, Other };
  uint64_t seed = 1000;
  for (const Case& c : cases) {
    for (const Types& ty : types) {
      for (BiasKind bk : {BiasKind::None, BiasKind::SameAsOut, BiasKind::Other}) {
        for (bool acc : {false, true}) {
          const DType bias_dt = bk == BiasKind::SameAsOut ? ty.out : (ty.out == DType::F32 ? DType::BF16 : DType::F32);
          Tensor x = representable(randn({c.M, c.K}, seed++), ty.x);
          Tensor w = representable(randn({c.N, c.K}, seed++, 0.2f), ty.x);
          Tensor bias = representable(randn({c.N}, seed++), bias_dt);
          Tensor init = representable(randn({c.M, c.N}, seed++), ty.out);
          Tensor ref = init.to(Device::CPU);
          ops::matmul(cpu, ref, x, w, bk == BiasKind::None ? nullptr : &bias, acc);
          Tensor gx = x.to(Device::CUDA, ty.x), gw = w.to(Device::CUDA, ty.x), gb = bias.to(Device::CUDA, bias_dt);
          // Twice without accumulation: the second call takes the cached plan.
          for (int rep = 0; rep < (acc ? 1 : 2); rep++) {
            Tensor out = acc ? init.to(Device::CUDA, ty.out) : poisoned({c.M, c.N}, ty.out);
            ops::matmul(gpu, out, gx, gw, bk == BiasKind::None ? nullptr : &gb, acc);
            expect_close(to_host(out), to_host(ref), ty.x == DType::F32 && ty.out == DType::F32 ? kTolF32 : kTolBf16,
                         "matmul " + dims({c.M, c.N, c.K}) + " " + dtype_name(ty.x) + "->" + dtype_name(ty.out) +
                             (bk == BiasKind::None ? "" : std::string(" bias ") + dtype_name(bias_dt)) +
                             (acc ? " +=" : ""));
          }
        }
      }
    }
  }
  Tensor x = Tensor::zeros({2, 3}, DType::F32, Device::CUDA), w = Tensor::zeros({4, 3}, DType::F32, Device::CUDA);
  Tensor out = Tensor::zeros({2, 4}, DType::BF16, Device::CUDA);
  EXPECT_THROW(ops::matmul(gpu, out, x, w), liger::Error);  // f32 inputs give f32 only
}

TEST(OpsGpu, Rmsnorm) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t shapes[][2] = {{1, 72}, {5, 4096}, {300, 128}, {3, 1000}, {2, 8}, {9, 1025}};
  uint64_t seed = 2000;
  for (const auto& s : shapes) {
    const int64_t N = s[0], D = s[1];
    for (DType dt : kStorage) {
      Tensor x = representable(randn({N, D}, seed++, 3.0f), dt);
      Tensor w = representable(randn({D}, seed++), dt);
      Tensor ref = Tensor::empty({N, D}, DType::F32, Device::CPU);
      ops::rmsnorm(cpu, ref, x, w, 1e-5f);
      Tensor gx = x.to(Device::CUDA, dt), gw = w.to(Device::CUDA, dt), out = poisoned({N, D}, dt);
      ops::rmsnorm(gpu, out, gx, gw, 1e-5f);
      expect_close(to_host(out), to_host(ref), tol_for(dt), "rmsnorm " + dims({N, D}) + " " + dtype_name(dt));
      ops::rmsnorm(gpu, gx, gx, gw, 1e-5f);  // in place
      expect_close(to_host(gx), to_host(ref), tol_for(dt), "rmsnorm in place " + dims({N, D}) + " " + dtype_name(dt));
    }
  }
  // Mixed storage: an f32 residual stream normalized into a bf16 activation with bf16 weights.
  Tensor x = randn({7, 4096}, seed++), w = representable(randn({4096}, seed++), DType::BF16);
  Tensor ref = Tensor::empty({7, 4096}, DType::F32, Device::CPU);
  ops::rmsnorm(cpu, ref, x, w, 1e-6f);
  Tensor out = poisoned({7, 4096}, DType::BF16);
  ops::rmsnorm(gpu, out, x.to(Device::CUDA), w.to(Device::CUDA, DType::BF16), 1e-6f);
  expect_close(to_host(out), to_host(ref), kTolBf16, "rmsnorm 7x4096 f32 x, bf16 w -> bf16");
}

TEST(OpsGpu, Rope) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t shapes[][3] = {{7, 3, 8}, {37, 4, 128}, {5, 2, 72}, {1, 1, 2}};
  uint64_t seed = 3000;
  Rng rng(3);
  for (const auto& s : shapes) {
    const int64_t N = s[0], NH = s[1], HS = s[2];
    ops::RopeConfig rc;
    rc.head_dim = HS;
    if (HS == 128) {  // Llama-3.1 scaling
      rc.theta = 500000.0;
      rc.type = ops::RopeConfig::Type::Llama3;
      rc.factor = 8.0;
    }
    const std::vector<float> inv = ops::rope_inv_freq(rc);
    Tensor inv_freq = Tensor::from_f32({HS / 2}, inv);
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; n++) pos[static_cast<size_t>(n)] = static_cast<int32_t>(rng.next_u64() % 131072);
    pos[0] = N > 1 ? 0 : 131071;
    pos[static_cast<size_t>(N - 1)] = 131071;  // the largest position of a 128K context
    Tensor positions = Tensor::from_i32({N}, pos);
    for (DType dt : kStorage) {
      Tensor x = representable(randn({N, NH, HS}, seed++), dt);
      Tensor ref = x.to(Device::CPU);
      ops::rope(cpu, ref, positions, inv_freq);
      Tensor gx = x.to(Device::CUDA, dt);
      ops::rope(gpu, gx, positions.to(Device::CUDA), inv_freq.to(Device::CUDA));
      expect_close(to_host(gx), to_host(ref), tol_for(dt), "rope " + dims({N, NH, HS}) + " " + dtype_name(dt));
    }
  }
}

TEST(OpsGpu, Attention) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t B, T, H, HKV, HS, S, pos0, kv_len, window;
  };
  const Case cases[] = {
      {2, 1, 8, 2, 64, 64, 50, 51, 0},           // decode against a cache, G = 4
      {2, 1, 8, 2, 64, 64, 50, 51, 7},           // decode, window 7
      {1, 1, 32, 8, 128, 200, 130, 131, 65},     // decode, Llama-3 heads, window 65
      {1, 1, 8, 1, 8, 40, 20, 21, 0},            // decode, HS 8, G = 8
      {2, 1, 8, 2, 64, 1100, 1000, 1001, 0},     // decode on a long cache: keys split over blocks
      {1, 1, 4, 1, 128, 3000, 2500, 2501, 700},  // long cache, window 700: splits start past 0
      {1, 2, 4, 1, 32, 600, 500, 502, 0},        // two queries (8 rows) with split keys
      {1, 1, 4, 4, 64, 300, 280, 281, 0},        // decode, G = 1 (one row per KV head), split keys
      {1, 37, 4, 4, 16, 37, 0, 37, 0},           // prefill, G = 1
      {2, 37, 8, 4, 8, 37, 0, 37, 7},            // prefill, HS 8 (stories260K), G = 2, window 7
      {1, 300, 8, 1, 128, 300, 0, 300, 65},      // prefill, G = 8, window 65
      {1, 300, 4, 2, 64, 333, 20, 320, 7},       // prefill on a cache (pos0 > 0, kv_len < S), window 7
      {2, 129, 8, 2, 128, 129, 0, 129, 0},       // rows not a multiple of the tile
      {1, 300, 4, 1, 64, 300, 0, 300, 0},        // G = 4, full causal
      {1, 5, 6, 3, 32, 16, 3, 8, 0},             // a few queries on a cache
      {1, 2, 8, 2, 200, 10, 4, 6, 0},            // HS 200, two queries
      {1, 70, 4, 4, 256, 70, 0, 70, 65},         // HS 256
  };
  uint64_t seed = 4000;
  for (const Case& c : cases) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.HS));
    for (DType dt : kStorage) {
      Tensor q = representable(randn({c.B, c.T, c.H, c.HS}, seed++), dt);
      Tensor k = representable(randn({c.B, c.S, c.HKV, c.HS}, seed++), dt);
      Tensor v = representable(randn({c.B, c.S, c.HKV, c.HS}, seed++), dt);
      // Cache slots at and beyond kv_len hold NaN: reading one poisons the output.
      for (Tensor* t : {&k, &v})
        for (int64_t b = 0; b < c.B; b++)
          for (int64_t s = c.kv_len; s < c.S; s++)
            std::fill_n(t->ptr<float>() + (b * c.S + s) * c.HKV * c.HS, c.HKV * c.HS, NAN);
      Tensor ref = Tensor::empty(q.shape(), DType::F32, Device::CPU);
      ops::attention(cpu, ref, q, k, v, c.pos0, c.kv_len, scale, c.window);
      Tensor out = poisoned(q.shape(), dt);
      ops::attention(gpu, out, q.to(Device::CUDA, dt), k.to(Device::CUDA, dt), v.to(Device::CUDA, dt), c.pos0, c.kv_len,
                     scale, c.window);
      expect_close(to_host(out), to_host(ref), tol_for(dt),
                   "attention B,T,H,HKV,HS " + dims({c.B, c.T, c.H, c.HKV, c.HS}) + " pos0 " + std::to_string(c.pos0) +
                       " kv " + std::to_string(c.kv_len) + " win " + std::to_string(c.window) + " " + dtype_name(dt));
    }
  }
}

TEST(OpsGpu, KvWrite) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  const int64_t B = 2, S = 10, T = 4, HKV = 3, HS = 8, pos0 = 5;
  for (DType dt : kStorage) {
    Tensor src = representable(randn({B, T, HKV, HS}, 5000 + static_cast<uint64_t>(dt)), dt);
    Tensor cache = poisoned({B, S, HKV, HS}, dt);
    ops::kv_write(gpu, cache, src.to(Device::CUDA, dt), pos0);
    const std::vector<float> got = to_host(cache), want = to_host(src);
    size_t bad = 0;
    for (int64_t b = 0; b < B; b++)
      for (int64_t s = 0; s < S; s++)
        for (int64_t e = 0; e < HKV * HS; e++) {
          const float g = got[static_cast<size_t>((b * S + s) * HKV * HS + e)];
          const bool written = s >= pos0 && s < pos0 + T;
          if (written ? g != want[static_cast<size_t>((b * T + s - pos0) * HKV * HS + e)] : !std::isnan(g)) bad++;
        }
    EXPECT_EQ(bad, 0u) << "kv_write " << dtype_name(dt) << ": elements written wrongly or outside [pos0, pos0 + T)";
  }
}

TEST(OpsGpu, Softmax) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  // Rows of up to 256 take the one-warp-per-row kernel (the Liger feature maps: 2,112 rows of 128 here, and a last
  // partial block of rows), longer rows the one-block kernel.
  const int64_t shapes[][2] = {{3, 1000}, {2, 128256}, {1, 1}, {4, 7}, {2112, 128}, {13, 256}, {5, 257}, {9, 33}};
  uint64_t seed = 6000;
  for (const auto& s : shapes) {
    for (DType dt : kStorage) {
      Tensor x = representable(randn({s[0], s[1]}, seed++, 4.0f), dt);
      for (bool log : {false, true}) {
        Tensor ref = Tensor::empty(x.shape(), DType::F32, Device::CPU);
        ops::softmax(cpu, ref, x, log);
        // f32 output from exactly the same inputs: the f32 tolerance holds for bf16 inputs too; bf16 output (the
        // Liger feature maps in bf16) is rounded once: the bf16 tolerance.
        for (DType od : {DType::F32, DType::BF16}) {
          Tensor out = poisoned(x.shape(), od);
          ops::softmax(gpu, out, x.to(Device::CUDA, dt), log);
          expect_close(to_host(out), to_host(ref), od == DType::F32 ? kTolF32 : kTolBf16,
                       std::string(log ? "log_softmax " : "softmax ") + dims({s[0], s[1]}) + " " + dtype_name(dt) +
                           " -> " + dtype_name(od));
        }
      }
    }
  }
}

// The CPU rule of ops/sampling.h in fp64 sums: how far the running nucleus sum at the CPU's choice lies from u * M,
// relative to M (a GPU choice may differ only where this is at fp32 rounding level).
double nucleus_boundary_gap(const float* l, int64_t V, float temperature, float top_p, float u) {
  std::vector<float> p(static_cast<size_t>(V));
  const float mx = *std::max_element(l, l + V);
  double sum = 0.0;
  for (int64_t i = 0; i < V; i++) sum += p[static_cast<size_t>(i)] = std::exp((l[i] - mx) / temperature);
  for (float& e : p) e = static_cast<float>(e / sum);
  float tau = 0.0f;
  if (top_p < 1.0f) {
    std::vector<float> sorted(p);
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    double mass = 0.0;
    for (float e : sorted) {
      mass += e;
      tau = e;
      if (mass >= top_p) break;
    }
  }
  double M = 0.0;
  for (float e : p)
    if (e >= tau) M += e;
  const double target = u * M;
  double run = 0.0, gap = INFINITY;
  for (float e : p) {
    if (e < tau) continue;
    gap = std::min(gap, std::fabs(run - target));
    run += e;
    gap = std::min(gap, std::fabs(run - target));
    if (run > target) break;
  }
  return gap / M;
}

TEST(OpsGpu, SampleGreedy) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  for (int64_t V : {1000, 128256}) {
    const int64_t N = 50;
    Tensor logits = randn({N, V}, 7000 + static_cast<uint64_t>(V), 3.0f);
    float* l = logits.ptr<float>();
    l[5] = l[17] = 100.0f;        // row 0: a tie, the lower index wins
    std::fill_n(l + V, V, 1.5f);  // row 1: all equal, index 0 wins
    l[2 * V + V - 1] = 100.0f;    // row 2: the maximum at the last index
    Tensor uniforms = Tensor::from_f32({N}, std::vector<float>(static_cast<size_t>(N), 0.5f));
    Tensor ref = Tensor::empty({N}, DType::I32, Device::CPU);
    ops::sample(cpu, ref, logits, 0.0f, 1.0f, uniforms);
    Tensor ids = poisoned({N}, DType::I32);
    ops::sample(gpu, ids, logits.to(Device::CUDA), 0.0f, 1.0f, uniforms.to(Device::CUDA));
    EXPECT_EQ(ids.to_i64_vector(), ref.to_i64_vector()) << "greedy, V " << V;
    EXPECT_EQ(ref.to_i64_vector()[0], 5);
  }
}

TEST(OpsGpu, SampleTopP) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t N, V;
    float temperature, top_p;
  };
  const Case cases[] = {
      {50, 1000, 0.8f, 0.9f}, {50, 1000, 1.0f, 1.0f}, {20, 1001, 0.5f, 0.5f}, {8, 128256, 0.8f, 0.9f}};
  Rng rng(8);
  uint64_t seed = 8000;
  for (const Case& c : cases) {
    Tensor logits = randn({c.N, c.V}, seed++, 3.0f);
    std::vector<float> u(static_cast<size_t>(c.N));
    for (float& e : u) e = rng.uniform();
    Tensor uniforms = Tensor::from_f32({c.N}, u);
    Tensor ref = Tensor::empty({c.N}, DType::I32, Device::CPU);
    ops::sample(cpu, ref, logits, c.temperature, c.top_p, uniforms);
    Tensor ids = poisoned({c.N}, DType::I32);
    ops::sample(gpu, ids, logits.to(Device::CUDA), c.temperature, c.top_p, uniforms.to(Device::CUDA));
    const std::vector<int64_t> got = ids.to_i64_vector(), want = ref.to_i64_vector();
    int mismatches = 0;
    for (int64_t n = 0; n < c.N; n++) {
      if (got[static_cast<size_t>(n)] == want[static_cast<size_t>(n)]) continue;
      mismatches++;
      const double gap =
          nucleus_boundary_gap(logits.ptr<float>() + n * c.V, c.V, c.temperature, c.top_p, u[static_cast<size_t>(n)]);
      EXPECT_LE(gap, 1e-4) << "row " << n << " of " << dims({c.N, c.V}) << ": gpu " << got[static_cast<size_t>(n)]
                           << " cpu " << want[static_cast<size_t>(n)] << " away from the nucleus boundary";
    }
    std::printf("  sample %-10s T %.2f top_p %.2f: %d of %lld rows differ at the boundary\n", dims({c.N, c.V}).c_str(),
                c.temperature, c.top_p, mismatches, static_cast<long long>(c.N));
  }
}

TEST(OpsGpu, Embedding) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t V = 1000, N = 37;
  Rng rng(9);
  std::vector<int32_t> id(static_cast<size_t>(N));
  for (int32_t& e : id) e = static_cast<int32_t>(rng.next_u64() % V);
  id[0] = static_cast<int32_t>(V - 1);
  std::vector<int32_t> gpu_id = id;
  gpu_id[3] = -1;  // out of range on the GPU: a zero row
  gpu_id[10] = static_cast<int32_t>(V);
  for (int64_t D : {72, 8, 7}) {
    for (DType dt : kStorage) {
      Tensor table = representable(randn({V, D}, 9000 + static_cast<uint64_t>(D)), dt);
      Tensor ref = Tensor::empty({N, D}, DType::F32, Device::CPU);
      ops::embedding(cpu, ref, Tensor::from_i32({N}, id), table);
      std::fill_n(ref.ptr<float>() + 3 * D, D, 0.0f);
      std::fill_n(ref.ptr<float>() + 10 * D, D, 0.0f);
      Tensor out = poisoned({N, D}, dt);
      ops::embedding(gpu, out, Tensor::from_i32({N}, gpu_id).to(Device::CUDA), table.to(Device::CUDA, dt));
      expect_close(to_host(out), to_host(ref), 0.0, "embedding " + dims({N, D}) + " " + dtype_name(dt));
    }
  }
}

// out = f(a, b) element-wise on the GPU against the CPU twin, out of place and in place (out = a).
void check_binary(const char* name, const std::function<void(Context&, Tensor, const Tensor&, const Tensor&)>& op,
                  uint64_t seed) {
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t shapes[][2] = {{37, 1000}, {1, 1}, {3, 4099}};
  for (const auto& s : shapes) {
    for (DType dt : kStorage) {
      Tensor a = representable(randn({s[0], s[1]}, seed++, 3.0f), dt);
      Tensor b = representable(randn({s[0], s[1]}, seed++), dt);
      Tensor ref = Tensor::empty(a.shape(), DType::F32, Device::CPU);
      op(cpu, ref, a, b);
      Tensor ga = a.to(Device::CUDA, dt), gb = b.to(Device::CUDA, dt), out = poisoned(a.shape(), dt);
      op(gpu, out, ga, gb);
      expect_close(to_host(out), to_host(ref), tol_for(dt),
                   std::string(name) + " " + dims({s[0], s[1]}) + " " + dtype_name(dt));
      op(gpu, ga, ga, gb);
      expect_close(to_host(ga), to_host(ref), tol_for(dt),
                   std::string(name) + " in place " + dims({s[0], s[1]}) + " " + dtype_name(dt));
    }
  }
  // A view one element in: pointers off 16-byte alignment take the element-by-element path.
  Tensor a = randn({1001}, seed++), b = randn({1001}, seed++);
  Tensor ref = Tensor::empty({1000}, DType::F32, Device::CPU);
  op(cpu, ref, a.slice(1, 1000), b.slice(1, 1000));
  Tensor out = poisoned({1001}, DType::F32);
  op(gpu, out.slice(1, 1000), a.to(Device::CUDA).slice(1, 1000), b.to(Device::CUDA).slice(1, 1000));
  expect_close(to_host(out.slice(1, 1000)), to_host(ref), kTolF32, std::string(name) + " unaligned 1000 f32");
}

TEST(OpsGpu, Swiglu) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  check_binary(
      "swiglu", [](Context& c, Tensor o, const Tensor& g, const Tensor& u) { ops::swiglu(c, o, g, u); }, 10000);
}

TEST(OpsGpu, Add) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  check_binary(
      "add", [](Context& c, Tensor o, const Tensor& a, const Tensor& b) { ops::add(c, o, a, b); }, 11000);
}

TEST(OpsGpu, ScaleAndAddScaled) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  check_binary(
      "scale", [](Context& c, Tensor o, const Tensor& a, const Tensor&) { ops::scale(c, o, a, -1.37); }, 11500);
  check_binary(
      "add_scaled",
      [](Context& c, Tensor o, const Tensor& a, const Tensor& b) {
        if (o.data() != a.data()) copy(o, a);
        ops::add_scaled(c, o, b, 0.61);
      },
      11600);
}

// The Liger gates (GLA: per 1, no fk; HGRN2: per 1 with fk; GSA: HS / M pooled with fk) and the GQA group mean,
// forward and backward, against the CPU twin.
TEST(OpsGpu, LigerGatesAndGroupMean) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    const char* label;
    int64_t N, HKV, HS, K;
    bool fk;
    float norm;
  };
  const Case cases[] = {{"gla", 37, 2, 64, 64, false, 16.0f},
                        {"hgrn2", 37, 2, 64, 64, true, 1.0f},
                        {"gsa M=16", 37, 2, 64, 16, true, 16.0f},
                        {"gsa M=64 HS=128", 5, 8, 128, 64, true, 16.0f}};
  uint64_t seed = 13000;
  for (const Case& c : cases) {
    for (DType dt : kStorage) {
      const std::string tag = std::string(c.label) + " " + dtype_name(dt);
      Tensor s = representable(randn({c.N, c.HKV, c.HS}, seed++, 3.0f), dt);
      Tensor g_ref = Tensor::empty({c.N, c.HKV, c.K}, DType::F32, Device::CPU);
      Tensor fk_ref = c.fk ? Tensor::empty(g_ref.shape(), DType::F32, Device::CPU) : Tensor();
      ops::liger_gates(cpu, g_ref, fk_ref, s, c.norm);
      Tensor gs = s.to(Device::CUDA, dt), g = poisoned(g_ref.shape(), dt);
      Tensor fk = c.fk ? poisoned(g_ref.shape(), dt) : Tensor();
      ops::liger_gates(gpu, g, fk, gs, c.norm);
      expect_close(to_host(g), to_host(g_ref), tol_for(dt), "liger_gates g " + tag);
      if (c.fk) expect_close(to_host(fk), to_host(fk_ref), tol_for(dt), "liger_gates fk " + tag);
      // Backward from the GPU's own g (rounded to dt), so both sides see the same values.
      Tensor g_host = g.to(Device::CPU, DType::F32);
      Tensor dg = representable(randn(g_ref.shape(), seed++), dt);
      Tensor dfk = c.fk ? representable(randn(g_ref.shape(), seed++), dt) : Tensor();
      Tensor ds_ref = Tensor::empty(s.shape(), DType::F32, Device::CPU);
      ops::liger_gates_backward(cpu, ds_ref, dg, dfk, s, g_host, c.norm);
      Tensor ds = poisoned(s.shape(), dt);
      ops::liger_gates_backward(gpu, ds, dg.to(Device::CUDA, dt), c.fk ? dfk.to(Device::CUDA, dt) : Tensor(), gs,
                                g_host.to(Device::CUDA, dt), c.norm);
      expect_close(to_host(ds), to_host(ds_ref), tol_for(dt), "liger_gates_backward ds " + tag);
    }
  }
  for (DType dt : kStorage) {
    const int64_t N = 29, H = 8, HKV = 2, HS = 64;
    Tensor x = representable(randn({N, H, HS}, seed++), dt);
    Tensor ref = Tensor::empty({N, HKV, HS}, DType::F32, Device::CPU);
    ops::group_mean(cpu, ref, x);
    Tensor out = poisoned(ref.shape(), dt);
    ops::group_mean(gpu, out, x.to(Device::CUDA, dt));
    expect_close(to_host(out), to_host(ref), tol_for(dt), std::string("group_mean ") + dtype_name(dt));
    Tensor dout = representable(randn(ref.shape(), seed++), dt);
    Tensor dx_ref = representable(randn(x.shape(), seed++), dt);
    Tensor dx = dx_ref.to(Device::CUDA, dt);
    ops::group_mean_backward(cpu, dx_ref, dout);
    ops::group_mean_backward(gpu, dx, dout.to(Device::CUDA, dt));
    expect_close(to_host(dx), to_host(dx_ref), tol_for(dt), std::string("group_mean_backward += ") + dtype_name(dt));
  }
}

TEST(OpsGpu, Convert) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  const DType all[] = {DType::F32, DType::BF16, DType::F16};
  uint64_t seed = 12000;
  for (int64_t n : {1001, 4096}) {
    for (DType from : all) {
      for (DType to : all) {
        // Values in f16 range; the host conversion (core/dtype.h, round to nearest even) is the reference.
        Tensor x = randn({n}, seed++, 100.0f).to(Device::CPU, from);
        Tensor want = x.to(Device::CPU, to);
        Tensor out = poisoned({n}, to);
        ops::convert(gpu, out, x.to(Device::CUDA));
        EXPECT_EQ(count_bit_mismatches(out, want), 0u) << "convert " << dtype_name(from) << " -> " << dtype_name(to);
        // And back: a round trip through the wider type is exact.
        Tensor back = poisoned({n}, from);
        ops::convert(gpu, back, out);
        EXPECT_EQ(count_bit_mismatches(back, want.to(Device::CPU, from)), 0u)
            << "convert " << dtype_name(from) << " -> " << dtype_name(to) << " -> " << dtype_name(from);
      }
    }
  }
  // Off 16-byte alignment.
  Tensor x = randn({1001}, seed++);
  Tensor out = poisoned({1001}, DType::BF16);
  ops::convert(gpu, out.slice(1, 1000), x.to(Device::CUDA).slice(1, 1000));
  EXPECT_EQ(count_bit_mismatches(out.slice(1, 1000), x.slice(1, 1000).to(Device::CPU, DType::BF16)), 0u)
      << "convert f32 -> bf16, unaligned";
}

TEST(OpsGpu, FillNormal) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t n = 100003;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Tensor want = Tensor::empty({n}, dt, Device::CPU);
    ops::fill_normal(cpu, want, 13000 + static_cast<uint64_t>(dt), 0.25f, 0.02f);
    Tensor got = poisoned({n}, dt);
    ops::fill_normal(gpu, got, 13000 + static_cast<uint64_t>(dt), 0.25f, 0.02f);
    // Bit equality needs hash_normal (core/rng.h) to give the same float on both sides: float libm functions (logf,
    // cosf) differ between glibc and CUDA in the last bit, so it must round log and cos computed in double.
    EXPECT_EQ(count_bit_mismatches(got, want), 0u) << "fill_normal " << dtype_name(dt) << " differs from the CPU";
  }
}

}  // namespace
}  // namespace liger
