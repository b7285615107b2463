// tests/ops/test_train_ops_gpu.cpp — the CUDA training ops against their CPU twins (ops/cpu) on fresh random inputs:
// the two matmul gradients (ops/matmul.h), the fused LM head + cross-entropy (ops/cross_entropy.h), and the
// tensor-parallel pieces: the vocab-shard row passes of the distributed cross-entropy and the sharded embedding.
//
// As in test_ops_gpu.cpp: each GPU run takes inputs exactly representable in its storage dtype, the CPU twin computes
// in f32 on the same values, and ||out - ref|| / ||ref|| <= 1e-5 for f32 storage, <= 1e-2 for bf16 storage
// (docs/DESIGN.md §2); NaN never passes. `=` outputs are filled with NaN bytes before each GPU call, so an element the
// kernel forgets to write fails; `+=` outputs start from random values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "tests/common/gpu_compare.h"

namespace liger {
namespace {

using namespace liger::test;  // tests/common/gpu_compare.h

// ---- matmul gradients ----------------------------------------------------------------------------------------------

struct MatmulCase {
  int64_t M, N, K;
};
const MatmulCase kMatmulCases[] = {{1, 1, 1}, {37, 19, 13}, {64, 1000, 72}, {300, 128, 512}, {1024, 8, 4096}};

struct MatmulTypes {
  DType in, out;
};
const MatmulTypes kMatmulTypes[] = {{DType::F32, DType::F32}, {DType::BF16, DType::BF16}, {DType::BF16, DType::F32}};

double matmul_tol(const MatmulTypes& ty) {
  return ty.in == DType::F32 && ty.out == DType::F32 ? kTolF32 : kTolBf16;
}

std::string matmul_label(const char* op, const MatmulCase& c, const MatmulTypes& ty, bool acc) {
  return std::string(op) + " " + dims({c.M, c.N, c.K}) + " " + dtype_name(ty.in) + "->" + dtype_name(ty.out) +
         (acc ? " +=" : "");
}

// dx (M, K) (+)= dout (M, N) · w (N, K).
TEST(TrainOpsGpu, MatmulBackwardInput) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  uint64_t seed = 10000;
  for (const MatmulCase& c : kMatmulCases) {
    for (const MatmulTypes& ty : kMatmulTypes) {
      for (bool acc : {false, true}) {
        Tensor dout = representable(randn({c.M, c.N}, seed++), ty.in);
        Tensor w = representable(randn({c.N, c.K}, seed++, 0.2f), ty.in);
        Tensor init = representable(randn({c.M, c.K}, seed++), ty.out);
        Tensor ref = init.to(Device::CPU);
        ops::matmul_backward_input(cpu, ref, dout, w, acc);
        Tensor gdout = dout.to(Device::CUDA, ty.in), gw = w.to(Device::CUDA, ty.in);
        // Twice without accumulation: the second call takes the cached plan.
        for (int rep = 0; rep < (acc ? 1 : 2); rep++) {
          Tensor dx = acc ? init.to(Device::CUDA, ty.out) : poisoned({c.M, c.K}, ty.out);
          ops::matmul_backward_input(gpu, dx, gdout, gw, acc);
          expect_close(to_host(dx), to_host(ref), matmul_tol(ty), matmul_label("matmul_backward_input", c, ty, acc));
        }
      }
    }
  }
}

// dw (N, K) (+)= dout (M, N)^T · x (M, K).
TEST(TrainOpsGpu, MatmulWeightGrad) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  uint64_t seed = 11000;
  for (const MatmulCase& c : kMatmulCases) {
    for (const MatmulTypes& ty : kMatmulTypes) {
      for (bool acc : {false, true}) {
        Tensor dout = representable(randn({c.M, c.N}, seed++), ty.in);
        Tensor x = representable(randn({c.M, c.K}, seed++), ty.in);
        Tensor init = representable(randn({c.N, c.K}, seed++), ty.out);
        Tensor ref = init.to(Device::CPU);
        ops::matmul_weight_grad(cpu, ref, dout, x, acc);
        Tensor gdout = dout.to(Device::CUDA, ty.in), gx = x.to(Device::CUDA, ty.in);
        for (int rep = 0; rep < (acc ? 1 : 2); rep++) {
          Tensor dw = acc ? init.to(Device::CUDA, ty.out) : poisoned({c.N, c.K}, ty.out);
          ops::matmul_weight_grad(gpu, dw, gdout, gx, acc);
          expect_close(to_host(dw), to_host(ref), matmul_tol(ty), matmul_label("matmul_weight_grad", c, ty, acc));
        }
      }
    }
  }
}

// Operands that start one odd-length row into their buffer (2- or 4-byte aligned pointers: views of activations at a
// row offset), so the plan cache must hand out a plan made for that alignment.
TEST(TrainOpsGpu, MatmulGradsMisalignedOperands) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t M = 37, N = 19, K = 13;
  uint64_t seed = 12000;
  for (const MatmulTypes& ty : kMatmulTypes) {
    Tensor dout = representable(randn({M + 1, N}, seed++), ty.in);
    Tensor w = representable(randn({N + 1, K}, seed++, 0.2f), ty.in);
    Tensor x = representable(randn({M + 1, K}, seed++), ty.in);
    Tensor gdout_all = dout.to(Device::CUDA, ty.in), gw_all = w.to(Device::CUDA, ty.in);
    Tensor gx_all = x.to(Device::CUDA, ty.in);
    Tensor gdout = gdout_all.slice(1, M), gw = gw_all.slice(1, N), gx = gx_all.slice(1, M);
    Tensor dx_ref = Tensor::empty({M, K}, DType::F32, Device::CPU),
           dw_ref = Tensor::empty({N, K}, DType::F32, Device::CPU);
    ops::matmul_backward_input(cpu, dx_ref, dout.slice(1, M), w.slice(1, N), false);
    ops::matmul_weight_grad(cpu, dw_ref, dout.slice(1, M), x.slice(1, M), false);
    Tensor dx_all = poisoned({M + 1, K}, ty.out), dw_all = poisoned({N + 1, K}, ty.out);
    Tensor dx = dx_all.slice(1, M), dw = dw_all.slice(1, N);
    ops::matmul_backward_input(gpu, dx, gdout, gw, false);
    ops::matmul_weight_grad(gpu, dw, gdout, gx, false);
    const std::string types = std::string(dtype_name(ty.in)) + "->" + dtype_name(ty.out);
    expect_close(to_host(dx), to_host(dx_ref), matmul_tol(ty), "matmul_backward_input misaligned " + types);
    expect_close(to_host(dw), to_host(dw_ref), matmul_tol(ty), "matmul_weight_grad misaligned " + types);
  }
}

// An empty inner dimension (no rows in a weight gradient, dout with no columns): `=` gives 0, `+=` changes nothing.
TEST(TrainOpsGpu, MatmulGradsEmptyInnerDimension) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  const int64_t N = 5, K = 3;
  Tensor init = randn({N, K}, 13000);
  Tensor dout = Tensor::empty({0, N}, DType::F32, Device::CUDA), x = Tensor::empty({0, K}, DType::F32, Device::CUDA);
  Tensor dw = init.to(Device::CUDA);
  ops::matmul_weight_grad(gpu, dw, dout, x, true);
  EXPECT_EQ(to_host(dw), to_host(init)) << "matmul_weight_grad += with no rows";
  dw = poisoned({N, K}, DType::F32);
  ops::matmul_weight_grad(gpu, dw, dout, x, false);
  EXPECT_EQ(to_host(dw), std::vector<float>(N * K, 0.0f)) << "matmul_weight_grad = with no rows";

  Tensor dy = Tensor::empty({N, 0}, DType::F32, Device::CUDA), w = Tensor::empty({0, K}, DType::F32, Device::CUDA);
  Tensor dx = init.to(Device::CUDA);
  ops::matmul_backward_input(gpu, dx, dy, w, true);
  EXPECT_EQ(to_host(dx), to_host(init)) << "matmul_backward_input += with no inner columns";
  dx = poisoned({N, K}, DType::F32);
  ops::matmul_backward_input(gpu, dx, dy, w, false);
  EXPECT_EQ(to_host(dx), std::vector<float>(N * K, 0.0f)) << "matmul_backward_input = with no inner columns";
}

TEST(TrainOpsGpu, MatmulGradsRejectUnsupportedDtypes) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  Tensor dout = Tensor::zeros({2, 4}, DType::F32, Device::CUDA), w = Tensor::zeros({4, 3}, DType::F32, Device::CUDA);
  Tensor dx_bf16 = Tensor::zeros({2, 3}, DType::BF16, Device::CUDA);
  EXPECT_THROW(ops::matmul_backward_input(gpu, dx_bf16, dout, w, false), liger::Error);  // f32 inputs give f32 only
  Tensor w_bf16 = Tensor::zeros({4, 3}, DType::BF16, Device::CUDA),
         dx = Tensor::zeros({2, 3}, DType::F32, Device::CUDA);
  EXPECT_THROW(ops::matmul_backward_input(gpu, dx, dout, w_bf16, false), liger::Error);  // mixed inputs
  Tensor x_bf16 = Tensor::zeros({2, 3}, DType::BF16, Device::CUDA),
         dw = Tensor::zeros({4, 3}, DType::F32, Device::CUDA);
  EXPECT_THROW(ops::matmul_weight_grad(gpu, dw, dout, x_bf16, false), liger::Error);
}

// ---- fused LM head + cross-entropy ---------------------------------------------------------------------------------

// Targets in [0, V), every `ignore_every`-th row (from row 1) ignored (-100); counter-based like randn.
std::vector<int32_t> random_targets(int64_t N, int64_t V, uint64_t seed, int64_t ignore_every) {
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; n++) {
    const auto v = static_cast<int32_t>(hash_uniform(seed, static_cast<uint64_t>(n)) * static_cast<float>(V));
    t[static_cast<size_t>(n)] = n % ignore_every == 1 ? ops::kIgnoreTarget : std::min(v, static_cast<int32_t>(V - 1));
  }
  return t;
}

TEST(TrainOpsGpu, LmHeadCrossEntropy) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t N, V, D, block_rows;
  };
  // Blocks that do not divide N (37 = 2 * 16 + 5), one block larger than N, and several blocks with a short last one.
  const Case cases[] = {{37, 512, 64, 16}, {37, 512, 64, 256}, {300, 5000, 128, 256}, {300, 5000, 128, 64}};
  uint64_t seed = 20000;
  for (const Case& c : cases) {
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::vector<int32_t> tv = random_targets(c.N, c.V, seed++, 7);
      int64_t supervised = 0;
      for (int32_t t : tv) supervised += t != ops::kIgnoreTarget;
      const float grad_scale = 1.0f / static_cast<float>(supervised);
      Tensor targets = Tensor::from_i32({c.N}, tv);
      Tensor h = representable(randn({c.N, c.D}, seed++), dt);
      Tensor w = representable(randn({c.V, c.D}, seed++, 0.2f), dt);
      Tensor losses_ref = Tensor::empty({c.N}, DType::F32, Device::CPU);
      Tensor dh_ref = Tensor::empty({c.N, c.D}, DType::F32, Device::CPU);
      ops::lm_head_cross_entropy(cpu, losses_ref, dh_ref, h, w, targets, grad_scale, c.block_rows);

      Tensor gh = h.to(Device::CUDA, dt), gw = w.to(Device::CUDA, dt), gt = targets.to(Device::CUDA);
      Tensor losses = poisoned({c.N}, DType::F32), dh = poisoned({c.N, c.D}, dt);
      ops::lm_head_cross_entropy(gpu, losses, dh, gh, gw, gt, grad_scale, c.block_rows);
      const std::string what = "lm_head_cross_entropy " + dims({c.N, c.V, c.D}) + " block " +
                               std::to_string(c.block_rows) + " " + dtype_name(dt);
      const std::vector<float> l = to_host(losses), d = to_host(dh);
      expect_close(l, to_host(losses_ref), tol_for(dt), what + " losses");
      expect_close(d, to_host(dh_ref), tol_for(dt), what + " dh");
      // Ignored rows: loss 0 and dh 0 exactly.
      for (int64_t n = 0; n < c.N; n++) {
        if (tv[static_cast<size_t>(n)] != ops::kIgnoreTarget) continue;
        EXPECT_EQ(l[static_cast<size_t>(n)], 0.0f) << what << ": loss of ignored row " << n;
        for (int64_t e = 0; e < c.D; e++)
          ASSERT_EQ(d[static_cast<size_t>(n * c.D + e)], 0.0f) << what << ": dh of ignored row " << n;
      }
    }
  }
}

// The forward alone (dh undefined, as evaluation calls it): the same losses.
TEST(TrainOpsGpu, LmHeadCrossEntropyWithoutDh) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t N = 37, V = 512, D = 64;
  uint64_t seed = 21000;
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor targets = Tensor::from_i32({N}, random_targets(N, V, seed++, 5));
    Tensor h = representable(randn({N, D}, seed++), dt), w = representable(randn({V, D}, seed++, 0.2f), dt);
    Tensor losses_ref = Tensor::empty({N}, DType::F32, Device::CPU);
    ops::lm_head_cross_entropy(cpu, losses_ref, Tensor(), h, w, targets, 0.0f, 16);
    Tensor losses = poisoned({N}, DType::F32);
    ops::lm_head_cross_entropy(gpu, losses, Tensor(), h.to(Device::CUDA, dt), w.to(Device::CUDA, dt),
                               targets.to(Device::CUDA), 0.0f, 16);
    expect_close(to_host(losses), to_host(losses_ref), tol_for(dt),
                 std::string("lm_head_cross_entropy without dh ") + dims({N, V, D}) + " " + dtype_name(dt));
  }
}

// A target of V (one past the vocabulary) is an Error naming its row, raised before anything is written.
TEST(TrainOpsGpu, LmHeadCrossEntropyBadTarget) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0);
  const int64_t N = 4, V = 5, D = 3;
  Tensor h = randn({N, D}, 22000).to(Device::CUDA), w = randn({V, D}, 22001).to(Device::CUDA);
  Tensor losses0 = randn({N}, 22002), dh0 = randn({N, D}, 22003);
  Tensor losses = losses0.to(Device::CUDA), dh = dh0.to(Device::CUDA);
  Tensor targets = Tensor::from_i32({N}, {0, 4, ops::kIgnoreTarget, 5}).to(Device::CUDA);
  bool threw = false;
  try {
    ops::lm_head_cross_entropy(gpu, losses, dh, h, w, targets, 1.0f, 2);
  } catch (const liger::Error& e) {
    threw = true;
    const std::string msg = e.what();
    std::printf("  bad target: %s\n", msg.c_str());
    EXPECT_NE(msg.find("row 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("target 5"), std::string::npos) << msg;
  }
  EXPECT_TRUE(threw) << "a target of V must raise liger::Error";
  EXPECT_EQ(to_host(losses), to_host(losses0)) << "losses written before the error";
  EXPECT_EQ(to_host(dh), to_host(dh0)) << "dh written before the error";
}

// The three row passes of the vocab-parallel cross-entropy on one shard of the vocabulary: shards at the start, in the
// middle and at the end of the vocabulary, one with padding columns (valid < Vs) and one with no valid column at all
// (the last rank of a vocabulary that tp barely divides); dlogits in f32 (aliasing the logits, as the composite runs
// it) and bf16. The statistics that the all-reduces would combine are taken as they come (one shard's alone): the
// passes themselves are what is checked here; test_dist checks the composite across real ranks.
TEST(TrainOpsGpu, VocabShardPasses) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  struct Case {
    int64_t n, Vs, v0, valid, V;
  };
  const Case cases[] = {{37, 128, 0, 128, 500}, {37, 128, 256, 128, 500}, {64, 128, 384, 116, 500},
                        {5, 1000, 3000, 0, 3000}, {300, 4096, 4096, 4096, 16384}};
  uint64_t seed = 23000;
  for (const Case& c : cases) {
    const std::string what = "vocab shard " + dims({c.n, c.Vs}) + " v0 " + std::to_string(c.v0) + " valid " +
                             std::to_string(c.valid);
    Tensor logits = randn({c.n, c.Vs}, seed++, 3.0f);
    Tensor targets = Tensor::from_i32({c.n}, random_targets(c.n, c.V, seed++, 6));
    // Targets inside this shard too (random ones over a large vocabulary rarely are).
    for (int64_t r = 0; r < c.n && c.valid > 0; r += 3)
      targets.ptr<int32_t>()[r] = static_cast<int32_t>(c.v0 + (r * 7) % c.valid);
    Tensor m_ref = Tensor::empty({c.n}, DType::F32, Device::CPU), s_ref = Tensor::empty({2, c.n}, DType::F32, Device::CPU);
    ops::vocab_shard_max(cpu, m_ref, logits, c.valid);
    Tensor gl = logits.to(Device::CUDA), gt = targets.to(Device::CUDA);
    Tensor m = poisoned({c.n}, DType::F32);
    ops::vocab_shard_max(gpu, m, gl, c.valid);
    const std::vector<float> mh = to_host(m), mr = to_host(m_ref);
    if (c.valid == 0) {
      for (float x : mh) EXPECT_EQ(x, -INFINITY) << what << ": the max of no column";
      continue;  // a shard without columns contributes nothing more (its sums are 0: checked on the CPU side)
    }
    EXPECT_EQ(mh, mr) << what << ": row max";  // a max is exact
    ops::vocab_shard_sums(cpu, s_ref, logits, m_ref, targets, c.v0, c.valid);
    Tensor sums = poisoned({2, c.n}, DType::F32);
    ops::vocab_shard_sums(gpu, sums, gl, m, gt, c.v0, c.valid);
    expect_close(to_host(sums), to_host(s_ref), kTolF32, what + " sums");
    for (DType dt : {DType::F32, DType::BF16}) {
      Tensor l_ref = Tensor::empty({c.n}, DType::F32, Device::CPU), d_ref = Tensor::empty({c.n, c.Vs}, DType::F32, Device::CPU);
      ops::vocab_shard_finish(cpu, l_ref, d_ref, logits, m_ref, s_ref, targets, c.v0, c.valid, 0.25f);
      Tensor losses = poisoned({c.n}, DType::F32);
      Tensor gl2 = logits.to(Device::CUDA);
      Tensor dl = dt == DType::F32 ? gl2 : poisoned({c.n, c.Vs}, dt);  // f32: in place over the logits
      ops::vocab_shard_finish(gpu, losses, dl, gl2, m, sums, gt, c.v0, c.valid, 0.25f);
      expect_close(to_host(losses), to_host(l_ref), kTolF32, what + " losses");
      expect_close(to_host(dl), to_host(d_ref), tol_for(dt), what + " dlogits " + dtype_name(dt));
    }
  }
}

// The sharded embedding: rows [v0, v0 + Vs) of the table on this rank, zeros for every other id.
TEST(TrainOpsGpu, EmbeddingShard) {
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const int64_t N = 77, Vs = 40, D = 72, v0 = 40, V = 120;
  std::vector<int32_t> ids(N);
  for (int64_t i = 0; i < N; i++) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 + 5) % V);
  const Tensor tid = Tensor::from_i32({N}, ids);
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor table = representable(randn({Vs, D}, 24000), dt);
    Tensor ref = Tensor::empty({N, D}, DType::F32, Device::CPU);
    ops::embedding_shard(cpu, ref, tid, table, v0);
    Tensor out = poisoned({N, D}, dt);
    ops::embedding_shard(gpu, out, tid.to(Device::CUDA), table.to(Device::CUDA, dt), v0);
    EXPECT_EQ(to_host(out), to_host(ref)) << "embedding_shard " << dtype_name(dt) << ": a copy must be exact";
  }
}

}  // namespace
}  // namespace liger
