// tests/ops/test_backward_gpu.cpp — the CUDA backward ops (ops/cuda/backward.cu) against their CPU twins on fresh
// random inputs: rmsnorm_backward, swiglu_backward, rope_backward, softmax_backward, attention_backward.
//
// As in test_ops_gpu.cpp: each GPU run takes inputs exactly representable in its storage dtype (random f32 values
// rounded to bf16 for the bf16 runs), and the CPU twin computes in f32 on the same values, so the comparison measures
// the op, not the rounding of its inputs. Tolerances (docs/DESIGN.md §2): ||out - ref|| / ||ref|| <= 1e-5 for f32
// storage, <= 1e-2 for bf16 storage (one rounding of an fp32 result to bf16 is 2^-9 relative); NaN never passes. The
// attention test also runs f16 (rounding 2^-11 relative) under the bf16 bound.
// Outputs of `=` ops are filled with NaN bytes before each GPU call, so an element the kernel forgets to write fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/common/gpu_compare.h"

namespace liger {
namespace {

using namespace liger::test;  // tests/common/gpu_compare.h

TEST(BackwardGpu, Rmsnorm) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  // A warp per row up to D = 1024, a block per row above (1025, 4096).
  const int64_t shapes[][2] = {{37, 72}, {64, 4096}, {1, 1}, {5, 1024}, {9, 1025}, {300, 128}};
  uint64_t seed = 20000;
  for (const auto& s : shapes) {
    const int64_t N = s[0], D = s[1];
    for (DType dt : kStorage) {
      Tensor x = representable(randn({N, D}, seed++, 3.0f), dt);
      Tensor w = representable(randn({D}, seed++), dt);
      Tensor dout = representable(randn({N, D}, seed++), dt);
      Tensor dx0 = representable(randn({N, D}, seed++), dt);  // `+=`: both sides start from these values
      Tensor ref = dx0.to(Device::CPU);
      ops::rmsnorm_backward(cpu, ref, dout, x, w, 1e-5f);
      Tensor gdx = dx0.to(Device::CUDA, dt);
      ops::rmsnorm_backward(gpu, gdx, dout.to(Device::CUDA, dt), x.to(Device::CUDA, dt), w.to(Device::CUDA, dt), 1e-5f);
      expect_close(to_host(gdx), to_host(ref), tol_for(dt),
                   "rmsnorm_backward += " + dims({N, D}) + " " + dtype_name(dt));
    }
  }
}

TEST(BackwardGpu, Swiglu) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t shapes[][2] = {{37, 1000}, {1, 1}, {3, 4099}, {64, 8192}};
  uint64_t seed = 21000;
  for (const auto& s : shapes) {
    const Shape shape{s[0], s[1]};
    for (DType dt : kStorage) {
      Tensor gate = randn(shape, seed++, 3.0f);
      if (gate.numel() >= 3) {  // the saturated ends: exp(-g) overflows to inf (s = 0), or s rounds to 1
        gate.ptr<float>()[0] = -100.0f;
        gate.ptr<float>()[1] = 100.0f;
        gate.ptr<float>()[2] = -20.0f;
      }
      gate = representable(gate, dt);
      Tensor up = representable(randn(shape, seed++), dt);
      Tensor dout = representable(randn(shape, seed++), dt);
      Tensor ref_dg = Tensor::empty(shape, DType::F32, Device::CPU),
             ref_du = Tensor::empty(shape, DType::F32, Device::CPU);
      ops::swiglu_backward(cpu, ref_dg, ref_du, dout, gate, up);
      const std::string name = dims({s[0], s[1]}) + " " + dtype_name(dt);

      Tensor gg = gate.to(Device::CUDA, dt), gu = up.to(Device::CUDA, dt), gd = dout.to(Device::CUDA, dt);
      Tensor dg = poisoned(shape, dt), du = poisoned(shape, dt);
      ops::swiglu_backward(gpu, dg, du, gd, gg, gu);
      expect_close(to_host(dg), to_host(ref_dg), tol_for(dt), "swiglu_backward dgate " + name);
      expect_close(to_host(du), to_host(ref_du), tol_for(dt), "swiglu_backward dup " + name);

      // In place over the inputs: dgate = gate, dup = up.
      ops::swiglu_backward(gpu, gg, gu, gd, gg, gu);
      expect_close(to_host(gg), to_host(ref_dg), tol_for(dt), "swiglu_backward dgate in gate " + name);
      expect_close(to_host(gu), to_host(ref_du), tol_for(dt), "swiglu_backward dup in up " + name);

      // dgate over dout.
      gg = gate.to(Device::CUDA, dt);
      gu = up.to(Device::CUDA, dt);
      du = poisoned(shape, dt);
      ops::swiglu_backward(gpu, gd, du, gd, gg, gu);
      expect_close(to_host(gd), to_host(ref_dg), tol_for(dt), "swiglu_backward dgate in dout " + name);
      expect_close(to_host(du), to_host(ref_du), tol_for(dt), "swiglu_backward dup (dgate in dout) " + name);
    }
  }
  // Views one element in: pointers off 16-byte alignment take the element-by-element path.
  Tensor gate = randn({1001}, seed++, 3.0f), up = randn({1001}, seed++), dout = randn({1001}, seed++);
  Tensor ref_dg = Tensor::empty({1000}, DType::F32, Device::CPU),
         ref_du = Tensor::empty({1000}, DType::F32, Device::CPU);
  ops::swiglu_backward(cpu, ref_dg, ref_du, dout.slice(1, 1000), gate.slice(1, 1000), up.slice(1, 1000));
  Tensor dg = poisoned({1001}, DType::F32), du = poisoned({1001}, DType::F32);
  ops::swiglu_backward(gpu, dg.slice(1, 1000), du.slice(1, 1000), dout.to(Device::CUDA).slice(1, 1000),
                       gate.to(Device::CUDA).slice(1, 1000), up.to(Device::CUDA).slice(1, 1000));
  expect_close(to_host(dg.slice(1, 1000)), to_host(ref_dg), kTolF32, "swiglu_backward dgate unaligned 1000 f32");
  expect_close(to_host(du.slice(1, 1000)), to_host(ref_du), kTolF32, "swiglu_backward dup unaligned 1000 f32");
}

TEST(BackwardGpu, Rope) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t shapes[][3] = {{37, 4, 64}, {300, 8, 128}, {7, 3, 8}, {5, 2, 72}, {1, 1, 2}};
  uint64_t seed = 22000;
  Rng rng(22);
  for (const auto& s : shapes) {
    const int64_t N = s[0], NH = s[1], HS = s[2];
    ops::RopeConfig rc;
    rc.head_dim = HS;
    if (HS == 128) {  // Llama-3.1 scaling
      rc.theta = 500000.0;
      rc.type = ops::RopeConfig::Type::Llama3;
      rc.factor = 8.0;
    }
    Tensor inv_freq = Tensor::from_f32({HS / 2}, ops::rope_inv_freq(rc));
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int32_t& p : pos) p = static_cast<int32_t>(rng.next_u64() % 5001);  // arbitrary positions up to 5000
    pos[0] = 0;
    pos[static_cast<size_t>(N - 1)] = 5000;
    Tensor positions = Tensor::from_i32({N}, pos);
    Tensor gpos = positions.to(Device::CUDA), ginv = inv_freq.to(Device::CUDA);
    for (DType dt : kStorage) {
      const std::string name = dims({N, NH, HS}) + " " + dtype_name(dt);
      Tensor dx = representable(randn({N, NH, HS}, seed++), dt);
      Tensor ref = dx.to(Device::CPU);
      ops::rope_backward(cpu, ref, positions, inv_freq);
      Tensor gdx = dx.to(Device::CUDA, dt);
      ops::rope_backward(gpu, gdx, gpos, ginv);
      expect_close(to_host(gdx), to_host(ref), tol_for(dt), "rope_backward " + name);
      // rope_backward undoes rope (the rotation is orthogonal): rope then rope_backward returns the input.
      Tensor x = dx.to(Device::CUDA, dt);
      ops::rope(gpu, x, gpos, ginv);
      ops::rope_backward(gpu, x, gpos, ginv);
      expect_close(to_host(x), to_host(dx), tol_for(dt), "rope_backward after rope " + name);
    }
  }
}

TEST(BackwardGpu, Softmax) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  // Feature-map rows (V = head size, a warp per row) and wide rows (a block per row above 1024).
  const int64_t shapes[][2] = {{37, 64}, {300, 128}, {1, 1}, {4, 7}, {3, 1000}, {2, 4099}};
  uint64_t seed = 23000;
  for (const auto& s : shapes) {
    const int64_t N = s[0], V = s[1];
    // y: a real softmax output.
    Tensor y32 = Tensor::empty({N, V}, DType::F32, Device::CPU);
    ops::softmax(cpu, y32, randn({N, V}, seed++, 2.0f));
    for (DType dt : kStorage) {
      const std::string name = dims({N, V}) + " " + dtype_name(dt);
      Tensor y = representable(y32, dt);
      Tensor dy = representable(randn({N, V}, seed++), dt);
      Tensor ref = Tensor::empty({N, V}, DType::F32, Device::CPU);
      ops::softmax_backward(cpu, ref, dy, y);
      Tensor gy = y.to(Device::CUDA, dt), gdy = dy.to(Device::CUDA, dt), dx = poisoned({N, V}, dt);
      ops::softmax_backward(gpu, dx, gdy, gy);
      expect_close(to_host(dx), to_host(ref), tol_for(dt), "softmax_backward " + name);
      ops::softmax_backward(gpu, gdy, gdy, gy);  // dx over dy
      expect_close(to_host(gdy), to_host(ref), tol_for(dt), "softmax_backward in place " + name);
    }
  }
}

TEST(BackwardGpu, Attention) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t B, T, H, HKV, HS, window;
  };
  const Case cases[] = {
      {2, 37, 4, 2, 64, 0},     // G = 2, full causal
      {2, 37, 4, 2, 64, 5},     // window 5
      {2, 37, 4, 2, 64, 65},    // window longer than T
      {1, 300, 8, 2, 128, 65},  // Llama-3 head size, G = 4, the main user's window
      {1, 300, 8, 2, 128, 0},   // full causal
      {1, 50, 4, 1, 32, 0},     // HS 32: one dimension per lane, G = 4
      {1, 50, 4, 1, 32, 7},     // HS 32, window 7
      {1, 1, 2, 1, 64, 0},      // T = 1
      {2, 20, 3, 3, 72, 7},     // HS 72 (not a multiple of 32), G = 1
      {1, 40, 2, 1, 256, 0},    // HS 256
      {1, 33, 4, 2, 8, 1},      // HS 8, window 1 (each query sees only itself)
      {1, 1024, 2, 1, 64, 0},   // long rows: a query sees up to 1024 keys, a key up to 2 x 1024 queries
      // bf16 / f16 with HS 64 or 128 take the tensor-core kernels (ops/cuda/attention_bwd_mma.cu: 64-row and 64-key
      // tiles); f32 and the head sizes above (32, 72, 256, 8) keep the FMA kernels. T not a multiple of the tile,
      // G 1 and 4, windows 0, 1, 5, 65 and beyond T, B 2.
      {2, 1, 4, 1, 64, 0},      // T = 1, G = 4
      {2, 17, 4, 4, 64, 1},     // G = 1, window 1
      {2, 17, 8, 2, 128, 5},    // G = 4, window 5
      {2, 100, 8, 2, 128, 65},  // G = 4, the main user's window, two row tiles
      {2, 100, 4, 4, 64, 0},    // G = 1, full causal
      {2, 257, 8, 2, 128, 0},   // G = 4, full causal, a partial last key tile
      {2, 257, 4, 4, 128, 65},  // G = 1, window 65
      {2, 257, 4, 1, 64, 300},  // G = 4, window beyond T
      {1, 257, 8, 2, 64, 5},    // G = 4, window 5
      {2, 100, 2, 2, 128, 1},   // G = 1, window 1
      {1, 200, 8, 8, 128, 64},  // G = 1, window equal to a key tile
  };
  uint64_t seed = 24000;
  for (const Case& c : cases) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.HS));
    const Shape qs{c.B, c.T, c.H, c.HS}, ks{c.B, c.T, c.HKV, c.HS};
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      Tensor q = representable(randn(qs, seed++, 1.5f), dt);  // 1.5: peakier softmax rows
      Tensor k = representable(randn(ks, seed++), dt);
      Tensor v = representable(randn(ks, seed++), dt);
      Tensor dout = representable(randn(qs, seed++), dt);
      Tensor rdq = Tensor::empty(qs, DType::F32, Device::CPU), rdk = Tensor::empty(ks, DType::F32, Device::CPU),
             rdv = Tensor::empty(ks, DType::F32, Device::CPU);
      ops::attention_backward(cpu, rdq, rdk, rdv, dout, q, k, v, scale, c.window);
      Tensor gq = q.to(Device::CUDA, dt), gk = k.to(Device::CUDA, dt), gv = v.to(Device::CUDA, dt),
             gdout = dout.to(Device::CUDA, dt);
      Tensor dq = poisoned(qs, dt), dk = poisoned(ks, dt), dv = poisoned(ks, dt);
      ops::attention_backward(gpu, dq, dk, dv, gdout, gq, gk, gv, scale, c.window);
      const std::string name = "B,T,H,HKV,HS " + dims({c.B, c.T, c.H, c.HKV, c.HS}) + " win " +
                               std::to_string(c.window) + " " + dtype_name(dt);
      expect_close(to_host(dq), to_host(rdq), tol_for(dt), "attention_backward dq " + name);
      expect_close(to_host(dk), to_host(rdk), tol_for(dt), "attention_backward dk " + name);
      expect_close(to_host(dv), to_host(rdv), tol_for(dt), "attention_backward dv " + name);
      // Deterministic: a second run gives the same bits.
      Tensor dq2 = poisoned(qs, dt), dk2 = poisoned(ks, dt), dv2 = poisoned(ks, dt);
      ops::attention_backward(gpu, dq2, dk2, dv2, gdout, gq, gk, gv, scale, c.window);
      EXPECT_EQ(count_bit_mismatches(dq, dq2) + count_bit_mismatches(dk, dk2) + count_bit_mismatches(dv, dv2), 0u)
          << "attention_backward " << name << " is not deterministic";
    }
  }
}

// Prints the time of attention_backward on the Llama-3-8B layer shape (B 1, T 1024, H 32, HKV 8, HS 128, bf16) with
// the Liger window (64 + 1) and full causal. Measures only, asserts nothing (benchmarks are `liger bench`'s job).
TEST(BackwardGpu, AttentionTiming) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  const int64_t B = 1, T = 1024, H = 32, HKV = 8, HS = 128;
  const DType dt = DType::BF16;
  const Shape qs{B, T, H, HS}, ks{B, T, HKV, HS};
  Tensor q = randn(qs, 25000, 1.5f).to(Device::CUDA, dt), k = randn(ks, 25001).to(Device::CUDA, dt),
         v = randn(ks, 25002).to(Device::CUDA, dt), dout = randn(qs, 25003).to(Device::CUDA, dt);
  Tensor dq = poisoned(qs, dt), dk = poisoned(ks, dt), dv = poisoned(ks, dt);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  for (int64_t window : {int64_t{65}, int64_t{0}}) {
    auto run = [&] { ops::attention_backward(gpu, dq, dk, dv, dout, q, k, v, scale, window); };
    for (int i = 0; i < 3; i++) run();  // warm-up
    gpu.synchronize();
    constexpr int kIters = 10;
    std::vector<double> ms;
    for (int rep = 0; rep < 5; rep++) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kIters; i++) run();
      gpu.synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kIters);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("  attention_backward bf16 B,T,H,HKV,HS 1x1024x32x8x128 win %lld: %.4f ms (median of 5 x %d calls)\n",
                static_cast<long long>(window), ms[ms.size() / 2], kIters);
  }
}

}  // namespace
}  // namespace liger
