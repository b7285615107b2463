// tests/dist/test_collectives.cpp — run as real MPI ranks (ctest: mpiexec -n 1, 2 and 4): the MPI communicator's
// collectives give the known answers (each rank fills rank + 1, the sum is n (n + 1) / 2), the dp x tp grid splits
// as documented, agree() stops every rank with one message, and the tensor-parallel pieces (vocab-parallel
// cross-entropy, sharded embedding, LoRA shards and their gradient assembly) equal their one-rank forms on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/rng.h"
#include "dist/runtime.h"
#include "model/lora.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

dist::Runtime& runtime(int64_t tp = 1) {
  static std::unique_ptr<dist::Runtime> rt[5];
  auto& r = rt[tp];
  if (!r) {
    dist::DistConfig dc;
    dc.tp = tp;
    r = dist::Runtime::create(dc, Device::CPU);
  }
  return *r;
}

Tensor randn_cpu(Shape s, uint64_t seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(s, DType::F32, Device::CPU);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = scale * rng.normal();
  return t;
}

TEST(Collectives, KnownAnswers) {
  dist::Communicator& w = runtime().world();
  const int n = w.size(), r = w.rank();
  ASSERT_EQ(w.backend(), n == 1 ? dist::Backend::Local : dist::Backend::Mpi);
  for (DType dt : {DType::F32, DType::F64, DType::I32, DType::I64}) {
    Tensor t = Tensor::empty({5}, dt, Device::CPU);
    for (int64_t i = 0; i < 5; i++) {
      const double v = (r + 1) * (i + 1);
      if (dt == DType::F32) t.ptr<float>()[i] = static_cast<float>(v);
      if (dt == DType::F64) t.ptr<double>()[i] = v;
      if (dt == DType::I32) t.ptr<int32_t>()[i] = static_cast<int32_t>(v);
      if (dt == DType::I64) t.ptr<int64_t>()[i] = static_cast<int64_t>(v);
    }
    Tensor mx = Tensor::empty({5}, dt, Device::CPU), mn = Tensor::empty({5}, dt, Device::CPU);
    copy(mx, t), copy(mn, t);
    w.all_reduce(t, dist::ReduceOp::Sum);
    w.all_reduce(mx, dist::ReduceOp::Max);
    w.all_reduce(mn, dist::ReduceOp::Min);
    for (int64_t i = 0; i < 5; i++) {
      auto at = [&](const Tensor& x) {
        return dt == DType::F32   ? x.ptr<float>()[i]
               : dt == DType::F64 ? x.ptr<double>()[i]
               : dt == DType::I32 ? x.ptr<int32_t>()[i]
                                  : static_cast<double>(x.ptr<int64_t>()[i]);
      };
      EXPECT_EQ(at(t), (i + 1) * n * (n + 1) / 2.0) << dtype_name(dt) << " sum, element " << i;
      EXPECT_EQ(at(mx), (i + 1) * n) << dtype_name(dt) << " max";
      EXPECT_EQ(at(mn), (i + 1) * 1.0) << dtype_name(dt) << " min";
    }
  }
  // all_gather: rank k's block k; reduce_scatter: block r of the sum; broadcast from the last rank.
  Tensor mine = Tensor::from_f32({2, 3}, std::vector<float>(6, static_cast<float>(r + 1)));
  Tensor all = Tensor::empty({2 * n, 3}, DType::F32, Device::CPU);
  w.all_gather(all, mine);
  for (int k = 0; k < n; k++)
    for (int e = 0; e < 6; e++) EXPECT_EQ(all.ptr<float>()[k * 6 + e], k + 1.0f) << "all_gather block " << k;
  Tensor in = Tensor::empty({3 * n}, DType::F32, Device::CPU);
  for (int64_t i = 0; i < 3 * n; i++) in.ptr<float>()[i] = static_cast<float>(i * (r + 1));
  Tensor out = Tensor::empty({3}, DType::F32, Device::CPU);
  w.reduce_scatter(out, in, dist::ReduceOp::Sum);
  for (int64_t i = 0; i < 3; i++) EXPECT_EQ(out.ptr<float>()[i], (3 * r + i) * n * (n + 1) / 2.0f) << "reduce_scatter";
  Tensor b = Tensor::from_f32({4}, std::vector<float>(4, static_cast<float>(r == n - 1 ? 42 : r)));
  w.broadcast(b, n - 1);
  for (int64_t i = 0; i < 4; i++) EXPECT_EQ(b.ptr<float>()[i], 42.0f) << "broadcast";
  w.barrier();
  EXPECT_EQ(w.all_reduce_value(static_cast<int64_t>(r), dist::ReduceOp::Max), n - 1);
  const std::vector<double> g = w.all_gather_values({static_cast<double>(r), -1.0});
  ASSERT_EQ(g.size(), static_cast<size_t>(2 * n));
  for (int k = 0; k < n; k++) EXPECT_EQ(g[static_cast<size_t>(2 * k)], k);
}

// tp innermost: ranks 2d, 2d + 1 form tp group d; ranks with the same tp rank form a dp group.
TEST(Collectives, GridSplitsTpInnermost) {
  const int n = runtime().size();
  if (n % 2 != 0) GTEST_SKIP() << "one rank: no grid of tp 2";
  dist::Runtime& rt = runtime(2);
  EXPECT_EQ(rt.tp(), 2);
  EXPECT_EQ(rt.dp(), n / 2);
  EXPECT_EQ(rt.tp_rank(), rt.rank() % 2);
  EXPECT_EQ(rt.dp_rank(), rt.rank() / 2);
  EXPECT_EQ(rt.tp_comm().size(), 2);
  EXPECT_EQ(rt.dp_comm().size(), n / 2);
  EXPECT_EQ(rt.tp_comm().rank(), rt.tp_rank());
  // The sum of world ranks over my tp group: 2d + 2d + 1; over my dp group: sum over d of (2d + t).
  EXPECT_EQ(rt.tp_comm().all_reduce_value(static_cast<int64_t>(rt.rank())), 4 * rt.dp_rank() + 1);
  int64_t want = 0;
  for (int d = 0; d < n / 2; d++) want += 2 * d + rt.tp_rank();
  EXPECT_EQ(rt.dp_comm().all_reduce_value(static_cast<int64_t>(rt.rank())), want);
}

// An error on one rank stops every rank (QuietError everywhere); nothing hangs.
TEST(Collectives, AgreeStopsEveryRank) {
  dist::Communicator& w = runtime().world();
  if (w.size() == 1) GTEST_SKIP() << "one rank: agree() just runs the setup";
  bool quiet = false;
  try {
    dist::agree(w, [&] { LIGER_CHECK(w.rank() != w.size() - 1, "only the last rank fails here"); });
  } catch (const dist::QuietError&) {
    quiet = true;
  }
  EXPECT_TRUE(quiet) << "every rank must stop when one fails";
  EXPECT_NO_THROW(dist::agree(w, [] {}));  // and all go on when none fails
}

// The vocab-parallel cross-entropy over the tp group equals the one-rank fused op: losses and dh.
TEST(Collectives, VocabParallelCrossEntropy) {
  const int n = runtime().size();
  for (int64_t V : {512, 509}) {  // 509: not a multiple of the ranks, the last shard padded
    dist::Communicator& w = runtime().world();
    Context cpu = Context::cpu();
    const int64_t N = 37, D = 24, Vs = (V + n - 1) / n, v0 = w.rank() * Vs;
    const int64_t valid = std::max<int64_t>(0, std::min(Vs, V - v0));
    Tensor h = randn_cpu({N, D}, 1), full = randn_cpu({V, D}, 2, 0.3f);
    std::vector<int32_t> tg(N);
    for (int64_t i = 0; i < N; i++) tg[static_cast<size_t>(i)] = i % 5 == 3 ? ops::kIgnoreTarget : (i * 97 + 11) % V;
    Tensor targets = Tensor::from_i32({N}, tg);
    Tensor l_ref = Tensor::empty({N}, DType::F32, Device::CPU), dh_ref = Tensor::empty({N, D}, DType::F32, Device::CPU);
    ops::lm_head_cross_entropy(cpu, l_ref, dh_ref, h, full, targets, 0.5f, 16);
    Tensor shard = Tensor::zeros({Vs, D}, DType::F32, Device::CPU);
    if (valid > 0) copy(shard.slice(0, valid), full.slice(v0, valid));
    Tensor l = Tensor::empty({N}, DType::F32, Device::CPU), dh = Tensor::empty({N, D}, DType::F32, Device::CPU);
    ops::vocab_parallel_cross_entropy(
        cpu, l, dh, h, shard, targets, v0, valid, 0.5f,
        [&](Tensor t, bool is_max) { w.all_reduce(t, is_max ? dist::ReduceOp::Max : dist::ReduceOp::Sum); }, 16);
    EXPECT_LE(test::rel_error(l.to_f32_vector(), l_ref.to_f32_vector()), 1e-6) << "losses, V " << V;
    EXPECT_LE(test::rel_error(dh.to_f32_vector(), dh_ref.to_f32_vector()), 1e-5) << "dh, V " << V;
    for (int64_t i = 0; i < N; i++)
      if (tg[static_cast<size_t>(i)] == ops::kIgnoreTarget) EXPECT_EQ(l.ptr<float>()[i], 0.0f);
  }
}

// The sharded embedding summed over the ranks is the lookup in the whole table.
TEST(Collectives, EmbeddingShardSums) {
  dist::Communicator& w = runtime().world();
  Context cpu = Context::cpu();
  const int64_t V = 50, D = 8, N = 19, Vs = (V + w.size() - 1) / w.size(), v0 = w.rank() * Vs;
  const int64_t valid = std::max<int64_t>(0, std::min(Vs, V - v0));
  Tensor table = randn_cpu({V, D}, 3);
  std::vector<int32_t> ids(N);
  for (int64_t i = 0; i < N; i++) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 13) % V);
  Tensor tid = Tensor::from_i32({N}, ids);
  Tensor ref = Tensor::empty({N, D}, DType::F32, Device::CPU);
  ops::embedding(cpu, ref, tid, table);
  Tensor shard = Tensor::zeros({Vs, D}, DType::F32, Device::CPU);
  if (valid > 0) copy(shard.slice(0, valid), table.slice(v0, valid));
  Tensor out = Tensor::empty({N, D}, DType::F32, Device::CPU);
  ops::embedding_shard(cpu, out, tid, shard, v0);
  w.all_reduce(out, dist::ReduceOp::Sum);
  EXPECT_EQ(out.to_f32_vector(), ref.to_f32_vector()) << "one nonzero term per element: exact";
}

// LoRA under tensor parallelism: the shards' forward products add up to the full adapters' (column-parallel: the
// output rows; row-parallel: the partial sums), and the gradients put together by assemble_gradients equal the
// full adapters' gradients.
TEST(Collectives, LoraShardsAndGradientAssembly) {
  const int n = runtime().size();
  dist::Runtime& rt = runtime(n);  // the whole world as one tp group
  ModelConfig full;
  full.n_layers = 2, full.d_model = 16, full.n_heads = 4, full.n_kv_heads = 4, full.head_dim = 4, full.d_ff = 24;
  full.vocab_size = 32;
  ModelConfig local = full;
  local.set_tensor_parallel(n, rt.tp_rank());
  LoraConfig lc;
  lc.rank = 3;
  lc.targets = {LoraTarget::Q, LoraTarget::V, LoraTarget::O, LoraTarget::Down};
  LoraAdapters fa = LoraAdapters::init(full, lc, Device::CPU);
  for (auto& [name, p] : fa.parameters())  // B = 0 at init: give it values
    for (int64_t i = 0; i < p.numel(); i++) p.ptr<float>()[i] += 0.01f * static_cast<float>((i * 7) % 13);
  LoraAdapters sa = fa.shard(local, Device::CPU);
  Context cpu = Context::cpu();
  for (LoraTarget t : lc.targets) {
    auto [in, out] = lora_target_shape(full, t);
    auto [lin, lout] = lora_target_shape(local, t);
    const int64_t N = 5;
    Tensor x = randn_cpu({N, in}, 10 + static_cast<int>(t)), dy = randn_cpu({N, out}, 20 + static_cast<int>(t));
    Tensor y = Tensor::zeros({N, out}, DType::F32, Device::CPU), dx = Tensor::zeros({N, in}, DType::F32, Device::CPU);
    fa.zero_grad();
    fa.forward(cpu, 1, t, y, x);
    fa.backward(cpu, 1, t, dx, dy, x);
    const bool column = lora_split(t) == LoraSplit::Column;
    const int64_t r = rt.tp_rank();
    // This rank's input and output gradient: column-parallel sees all of x and its rows of dy; row-parallel its
    // columns of x and all of dy.
    auto cols = [&](const Tensor& m, int64_t c0, int64_t nc) {
      Tensor o = Tensor::empty({m.dim(0), nc}, DType::F32, Device::CPU);
      for (int64_t i = 0; i < m.dim(0); i++)
        for (int64_t j = 0; j < nc; j++) o.ptr<float>()[i * nc + j] = m.ptr<float>()[i * m.dim(1) + c0 + j];
      return o;
    };
    Tensor lx = column ? x : cols(x, r * lin, lin), ldy = column ? cols(dy, r * lout, lout) : dy;
    Tensor ly = Tensor::zeros({N, lout}, DType::F32, Device::CPU),
           ldx = Tensor::zeros({N, lin}, DType::F32, Device::CPU);
    sa.zero_grad();
    sa.forward(cpu, 1, t, ly, lx);
    sa.backward(cpu, 1, t, ldx, ldy, lx);
    if (!column) rt.tp_comm().all_reduce(ly, dist::ReduceOp::Sum);  // row-parallel: partial products
    const Tensor want_y = column ? cols(y, r * lout, lout) : y;
    EXPECT_LE(test::rel_error(ly.to_f32_vector(), want_y.to_f32_vector()), 1e-6) << lora_target_module(t) << " y";
    Tensor gathered = Tensor::empty({n, sa.grad_buffer().numel()}, DType::F32, Device::CPU);
    rt.tp_comm().all_gather(gathered, sa.grad_buffer());
    LoraAdapters fb = LoraAdapters::init(full, lc, Device::CPU);
    fb.assemble_gradients(gathered, local);
    const LoraPair* want = fa.get(1, t);
    const LoraPair* got = fb.get(1, t);
    EXPECT_LE(test::rel_error(got->dA.to_f32_vector(), want->dA.to_f32_vector()), 1e-5)
        << lora_target_module(t) << " dA";
    EXPECT_LE(test::rel_error(got->dB.to_f32_vector(), want->dB.to_f32_vector()), 1e-5)
        << lora_target_module(t) << " dB";
    // Values round trip: the shard of the full adapters, loaded again, is the same shard.
    LoraAdapters sb = LoraAdapters::init(full, lc, Device::CPU).shard(local, Device::CPU);
    sb.load_shard_values(fa, local);
    EXPECT_EQ(sb.get(1, t)->A.to_f32_vector(), sa.get(1, t)->A.to_f32_vector());
    EXPECT_EQ(sb.get(1, t)->B.to_f32_vector(), sa.get(1, t)->B.to_f32_vector());
  }
}

}  // namespace
}  // namespace liger
