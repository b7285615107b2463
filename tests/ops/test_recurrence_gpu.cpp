// tests/ops/test_recurrence_gpu.cpp — the CUDA recurrences of ops/recurrence.h (ops/cuda/recurrence.cu) against their
// CPU twin (ops/cpu/recurrence.cpp) on fresh random inputs: linear_recurrence and slot_scores, chunked and one-step
// forms (outputs and final states), and both backwards (every gradient), over T in {1, 17, 64, 200, 1000}, B in
// {1, 2}, GQA groups 1, 2, 3, 4, state sizes from 8 to 128 (square and not, and sizes that are not a multiple of the
// kernels' 32-wide tiles), chunk sizes 16 and 64 (and 1, 5, 100, 1000), GLA-strength gates (logsigmoid(x) / 16) and
// HGRN2-strength gates (logsigmoid(x)), from a nonzero initial state. Then a finite-difference check of the CUDA
// backward against the CUDA forward, a Llama-3-8B-sized layer (T = 4096, 32 query heads, 8 KV heads, 128 x 128 states)
// checked on the rows the CPU twin can afford, the tensor-core path of bf16 linear_recurrence on awkward shapes and
// gate strengths, and the GPU path's dtype errors.
//
// Inputs: fq, fk rows softmax-normalized (the GLA feature maps), v normal; GSA's q, k normal and s = 1 - exp(g). Each
// GPU run takes inputs exactly representable in its storage dtype (bf16 runs: the f32 values rounded to bf16) and the
// CPU twin computes in f32 on the same values, so a comparison measures the kernel. GPU outputs are filled with NaN
// bytes before each call: an element the kernel forgets to write fails. All tests are named *Gpu* and skip without a
// CUDA device.
//
// Tolerances (||gpu - cpu|| / ||cpu|| over a whole tensor, the worst element printed; NaN never passes):
//   * forward, f32 inputs: 1e-5 (docs/DESIGN.md §2). Both sides compute the same chunked formula with the same running
//     log-gate sums (summed in the same order, so bitwise equal); only the fp32 summation order of the dot products
//     and fused multiply-adds differ: ~1e-7 expected (an emulation of the kernels on the CPU measured <= 2e-7).
//   * forward, bf16 inputs: 1e-2 (DESIGN.md §2). With the same rounded inputs on both sides, the difference is the
//     kernel's single bf16 rounding of each output (relative 2^-9 at worst; emulation: 1.6e-3..2.8e-3 over a tensor).
//     States are f32 on both paths: the state of a bf16 run is held to 1e-5 too.
//   * backward, f32: 1e-4. The GPU accumulates chunk by chunk (an adjoint carried across chunk boundaries, decays as
//     exponentials of running sums, dg from the per-chunk identity dg_t = sum_{r>=t} (u o P - a o da)_r + carry)
//     while the CPU twin runs the exact token-by-token reverse recurrence; the gradients are long fp32 sums (up to T
//     terms, with cancellation between the query and key terms of dg), and the running sum G of HGRN2-strength gates
//     reaches |G| ~ 50 in a chunk of 64, where its fp32 rounding (|G| * 6e-8) enters every decay. Expected ~1e-6
//     (emulation: <= 3e-6); 1e-4 leaves room, while a wrong term (a decay off by one token, a missing head, a carry not
//     decayed) shows at 1e-2 or more.
//   * backward, bf16: 1e-2, the output rounding again.
//   * bf16 linear_recurrence runs on the tensor cores (ops/cuda/recurrence_tc.cu): besides the output rounding, the
//     mma operands are rounded to bf16 (the rescaled feature maps, the chunk-boundary states and cotangents, the
//     chunk's score matrices), each a relative 2^-9 at worst. A numpy port of those kernels (their index formulas and
//     roundings) against an fp64 recurrence measured 2.0e-3..3.4e-3 for out and every gradient over the shapes of
//     TensorCorePathMatchesCpu, GLA to 4x-HGRN2 gates; the same 1e-2 bounds hold them. The state stays fp32-exact
//     (the keys split into three bf16 terms; port: <= 4e-9), under the same 1e-5.
#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/recurrence.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

using test::throws_error;

constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 1e-2;
constexpr double kTolGradF32 = 1e-4;

double tol_for(DType dt) {
  return dt == DType::F32 ? kTolF32 : kTolBf16;
}
double grad_tol_for(DType dt) {
  return dt == DType::F32 ? kTolGradF32 : kTolBf16;
}

const DType kStorage[] = {DType::F32, DType::BF16};

// ---- tensors --------------------------------------------------------------------------------------------------------

// A host f32 tensor of normal values * scale (counter-based: seed and index decide each value).
Tensor randn(Shape shape, uint64_t seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = scale * hash_normal(seed, static_cast<uint64_t>(i));
  return t;
}

// Softmax over the last dimension of every row, in place, in fp64 (max subtracted).
Tensor softmax_rows(Tensor x) {
  const int64_t n = x.dim(x.ndim() - 1), rows = x.numel() / n;
  for (int64_t r = 0; r < rows; r++) {
    float* p = x.ptr<float>() + r * n;
    const double mx = *std::max_element(p, p + n);
    double sum = 0.0;
    for (int64_t c = 0; c < n; c++) sum += std::exp(p[c] - mx);
    for (int64_t c = 0; c < n; c++) p[c] = static_cast<float>(std::exp(p[c] - mx) / sum);
  }
  return x;
}

// g = logsigmoid(x) / divisor, in place (stable: min(x, 0) - log1p(exp(-|x|)), liger-spec.md §7 item 2).
Tensor log_gates(Tensor x, double divisor) {
  for (int64_t i = 0; i < x.numel(); i++) {
    const double v = x.ptr<float>()[i];
    x.ptr<float>()[i] = static_cast<float>((std::min(v, 0.0) - std::log1p(std::exp(-std::fabs(v)))) / divisor);
  }
  return x;
}

// 1 - exp(g) per element: GSA's slot write weight.
Tensor one_minus_exp(const Tensor& g) {
  Tensor s = Tensor::empty(g.shape(), DType::F32, Device::CPU);
  for (int64_t i = 0; i < g.numel(); i++) s.ptr<float>()[i] = static_cast<float>(-std::expm1(g.ptr<float>()[i]));
  return s;
}

// The host f32 tensor rounded to dt and back: values the GPU run can hold exactly.
Tensor representable(const Tensor& host_f32, DType dt) {
  return host_f32.to(Device::CPU, dt).to(Device::CPU, DType::F32);
}

Tensor clone(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  copy(y, x);
  return y;
}

// A GPU tensor of the given shape and dtype filled with 0xFF bytes (NaN in every floating dtype).
Tensor poisoned(Shape shape, DType dt) {
  Tensor h = Tensor::empty(shape, dt, Device::CPU);
  std::memset(h.data(), 0xFF, h.nbytes());
  return h.to(Device::CUDA);
}

std::vector<float> host(const Tensor& t) {
  return t.to_f32_vector();
}

// Rows [t0, t0 + len) along T of a host (B, T, n, d) tensor of any dtype, as a fresh f32 (B, len, n, d) tensor.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t len) {
  const Tensor xf = x.dtype() == DType::F32 && x.device() == Device::CPU ? x : x.to(Device::CPU, DType::F32);
  const int64_t B = xf.dim(0), T = xf.dim(1), row = xf.dim(2) * xf.dim(3);
  Tensor y = Tensor::empty({B, len, xf.dim(2), xf.dim(3)}, DType::F32, Device::CPU);
  for (int64_t b = 0; b < B; b++)
    std::copy_n(xf.ptr<float>() + (b * T + t0) * row, len * row, y.ptr<float>() + b * len * row);
  return y;
}

// ||out - ref|| / ||ref|| (||out - ref|| when ref is 0); NaN when either holds a NaN. *worst = the index of the largest
// |out - ref|.
double rel_error(const std::vector<float>& out, const std::vector<float>& ref, size_t* worst) {
  double num = 0.0, den = 0.0, big = -1.0;
  *worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (std::isnan(out[i]) || std::isnan(ref[i])) {
      *worst = i;
      return NAN;
    }
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    if (std::fabs(d) > big) {
      big = std::fabs(d);
      *worst = i;
    }
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Expects rel_error(out, ref) <= tol (NaN fails) and prints the figure with the worst element.
void expect_close(const std::vector<float>& out, const std::vector<float>& ref, double tol, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  size_t w = 0;
  const double err = rel_error(out, ref, &w);
  std::printf("  %-78s rel err %.3g (worst [%zu] gpu %.7g cpu %.7g)\n", what.c_str(), err, w,
              out.empty() ? 0.0 : out[w], ref.empty() ? 0.0 : ref[w]);
  EXPECT_TRUE(err <= tol) << what << ": rel err " << err << " > " << tol << "; worst element [" << w << "] gpu "
                          << out[w] << " cpu " << ref[w];
}

// ---- the two ops behind one description -----------------------------------------------------------------------------

// Both ops are a gated recurrence per KV head over a (rows x cols) state, rows gated:
//   linear:  x = fq (B, T, H, K), y = fk (B, T, HKV, K), z = v (B, T, HKV, Vd), g (B, T, HKV, K),
//            state (B, HKV, K, Vd), out (B, T, H, Vd)
//   slots:   x = q (B, T, H, d), y = k (B, T, HKV, d), z = s (B, T, HKV, M), g (B, T, HKV, M),
//            state (B, HKV, M, d), out (B, T, H, M)
// with (K, Vd) of a case standing for (M, d) in the slot runs.
enum class Op { Linear, Slots };

const char* op_name(Op op) {
  return op == Op::Linear ? "linear_recurrence" : "slot_scores";
}

struct Dims {
  int64_t B, T, H, HKV, K, Vd;
};

std::string dims_str(const Dims& d) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "B%lld T%lld H%lld HKV%lld %lldx%lld", static_cast<long long>(d.B),
                static_cast<long long>(d.T), static_cast<long long>(d.H), static_cast<long long>(d.HKV),
                static_cast<long long>(d.K), static_cast<long long>(d.Vd));
  return buf;
}

Shape out_shape(Op op, const Dims& d) {
  return op == Op::Linear ? Shape{d.B, d.T, d.H, d.Vd} : Shape{d.B, d.T, d.H, d.K};
}

// Host f32 inputs, representable in the run's dtype (the state is always f32).
struct Inputs {
  Tensor x, y, z, g, state0;
};

// Fresh random inputs: gates logsigmoid(N(0, 1.5^2)) / divisor (16: GLA/GSA; 1: HGRN2-strength), a nonzero state.
Inputs make_inputs(Op op, const Dims& d, double divisor, DType dt, uint64_t* seed) {
  Inputs in;
  if (op == Op::Linear) {
    in.x = representable(softmax_rows(randn({d.B, d.T, d.H, d.K}, (*seed)++, 2.0f)), dt);
    in.y = representable(softmax_rows(randn({d.B, d.T, d.HKV, d.K}, (*seed)++, 2.0f)), dt);
    in.z = representable(randn({d.B, d.T, d.HKV, d.Vd}, (*seed)++), dt);
    in.g = representable(log_gates(randn({d.B, d.T, d.HKV, d.K}, (*seed)++, 1.5f), divisor), dt);
  } else {
    in.x = representable(randn({d.B, d.T, d.H, d.Vd}, (*seed)++, 0.5f), dt);
    in.y = representable(randn({d.B, d.T, d.HKV, d.Vd}, (*seed)++, 0.5f), dt);
    in.g = representable(log_gates(randn({d.B, d.T, d.HKV, d.K}, (*seed)++, 1.5f), divisor), dt);
    in.z = representable(one_minus_exp(in.g), dt);
  }
  in.state0 = randn({d.B, d.HKV, d.K, d.Vd}, (*seed)++, 0.5f);
  return in;
}

// The inputs on the device in storage dtype dt (the state stays f32).
Inputs to_gpu(const Inputs& in, DType dt) {
  return {in.x.to(Device::CUDA, dt), in.y.to(Device::CUDA, dt), in.z.to(Device::CUDA, dt), in.g.to(Device::CUDA, dt),
          in.state0.to(Device::CUDA)};
}

// Rows [t0, t0 + len) of every per-token input; the state is `state0`.
Inputs time_window(const Inputs& in, int64_t t0, int64_t len, const Tensor& state0) {
  return {time_slice(in.x, t0, len), time_slice(in.y, t0, len), time_slice(in.z, t0, len), time_slice(in.g, t0, len),
          state0};
}

// The chunked form; `state` goes in holding the initial state and comes out holding the final one.
void forward(Context& ctx, Op op, Tensor out, const Inputs& in, Tensor state, int64_t chunk) {
  if (op == Op::Linear)
    ops::linear_recurrence(ctx, out, in.x, in.y, in.z, in.g, state, chunk);
  else
    ops::slot_scores(ctx, out, in.x, in.y, in.z, in.g, state, chunk);
}

void step(Context& ctx, Op op, Tensor out, const Inputs& in, Tensor state) {
  if (op == Op::Linear)
    ops::linear_recurrence_step(ctx, out, in.x, in.y, in.z, in.g, state);
  else
    ops::slot_scores_step(ctx, out, in.x, in.y, in.z, in.g, state);
}

// Gradients of x, y, z, g (in that order) from the output's cotangent dout, from in.state0.
void backward(Context& ctx, Op op, std::vector<Tensor>& grads, const Tensor& dout, const Inputs& in) {
  if (op == Op::Linear)
    ops::linear_recurrence_backward(ctx, grads[0], grads[1], grads[2], grads[3], dout, in.x, in.y, in.z, in.g,
                                    in.state0);
  else
    ops::slot_scores_backward(ctx, grads[0], grads[1], grads[2], grads[3], dout, in.x, in.y, in.z, in.g, in.state0);
}

const char* const kGradNames[2][4] = {{"dfq", "dfk", "dv", "dg"}, {"dq", "dk", "ds", "dg"}};

std::vector<Tensor> host_grads(const Inputs& in) {
  std::vector<Tensor> g;
  for (const Tensor* t : {&in.x, &in.y, &in.z, &in.g}) g.push_back(Tensor::empty(t->shape(), DType::F32, Device::CPU));
  return g;
}

std::vector<Tensor> poisoned_grads(const Inputs& in, DType dt) {
  std::vector<Tensor> g;
  for (const Tensor* t : {&in.x, &in.y, &in.z, &in.g}) g.push_back(poisoned(t->shape(), dt));
  return g;
}

// The shapes of the sweeps (K, Vd stand for M, d in the slot runs): every T of {1, 17, 64, 200, 1000}, B 1 and 2,
// groups 1, 2, 3, 4, sizes 8..128 and 40 x 100 (not multiples of the 32-wide tiles).
const Dims kCases[] = {
    {1, 1, 1, 1, 8, 8},     {2, 1, 8, 2, 64, 128},   {2, 17, 4, 4, 16, 8},    {1, 17, 4, 2, 8, 64},
    {2, 64, 4, 1, 64, 16},  {1, 64, 8, 2, 128, 128}, {2, 200, 2, 1, 16, 128}, {1, 200, 4, 1, 128, 64},
    {1, 77, 6, 2, 40, 100}, {1, 1000, 4, 1, 64, 64}, {2, 1000, 2, 2, 128, 8}, {1, 1000, 8, 2, 128, 128},
};

#define SKIP_WITHOUT_GPU() \
  if (!liger::cuda_available()) GTEST_SKIP() << "no CUDA device: GPU op tests skipped"

// ---- chunked forward ------------------------------------------------------------------------------------------------

void check_forward(Op op) {
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  uint64_t seed = op == Op::Linear ? 100 : 200;
  for (const Dims& d : kCases) {
    for (double divisor : {16.0, 1.0}) {
      for (int64_t chunk : {16, 64}) {
        for (DType dt : kStorage) {
          const Inputs in = make_inputs(op, d, divisor, dt, &seed);
          Tensor ref = Tensor::empty(out_shape(op, d), DType::F32, Device::CPU), ref_state = clone(in.state0);
          forward(cpu, op, ref, in, ref_state, chunk);
          Tensor out = poisoned(out_shape(op, d), dt), state = in.state0.to(Device::CUDA);
          forward(gpu, op, out, to_gpu(in, dt), state, chunk);
          const std::string what = std::string(op_name(op)) + " " + dims_str(d) + " g/" +
                                   std::to_string(static_cast<int>(divisor)) + " chunk " + std::to_string(chunk) + " " +
                                   dtype_name(dt);
          expect_close(host(out), host(ref), tol_for(dt), what + " out");
          expect_close(host(state), host(ref_state), kTolF32, what + " state");
        }
      }
    }
  }
}

TEST(RecurrenceGpu, LinearRecurrenceMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_forward(Op::Linear);
}

TEST(RecurrenceGpu, SlotScoresMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_forward(Op::Slots);
}

// Any chunk gives the same result: chunks of 1 and 5 tokens, and chunks above the kernel's cap of 64 (the GPU runs 64,
// the CPU the given chunk), on a length that is a multiple of none of them.
TEST(RecurrenceGpu, ChunkArgument) {
  SKIP_WITHOUT_GPU();
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  uint64_t seed = 300;
  const Dims d{2, 131, 4, 2, 40, 24};
  for (Op op : {Op::Linear, Op::Slots}) {
    for (int64_t chunk : {1, 5, 100, 1000}) {
      const Inputs in = make_inputs(op, d, 16.0, DType::F32, &seed);
      Tensor ref = Tensor::empty(out_shape(op, d), DType::F32, Device::CPU), ref_state = clone(in.state0);
      forward(cpu, op, ref, in, ref_state, chunk);
      Tensor out = poisoned(out_shape(op, d), DType::F32), state = in.state0.to(Device::CUDA);
      forward(gpu, op, out, to_gpu(in, DType::F32), state, chunk);
      const std::string what = std::string(op_name(op)) + " " + dims_str(d) + " chunk " + std::to_string(chunk);
      expect_close(host(out), host(ref), kTolF32, what + " out");
      expect_close(host(state), host(ref_state), kTolF32, what + " state");
    }
  }
}

// ---- one-step form --------------------------------------------------------------------------------------------------

// Decode: several consecutive steps from a nonzero state, each step's output and the state after it against the CPU
// step; batch up to 64 and the Llama-3-8B head layout.
TEST(RecurrenceGpu, StepFormsMatchCpu) {
  SKIP_WITHOUT_GPU();
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const Dims cases[] = {{1, 1, 1, 1, 8, 8},     {2, 1, 4, 4, 16, 8},      {3, 1, 6, 2, 40, 100},
                        {16, 1, 8, 2, 64, 128}, {64, 1, 32, 8, 128, 128}, {64, 1, 32, 8, 64, 128}};
  constexpr int kSteps = 4;
  uint64_t seed = 400;
  for (Op op : {Op::Linear, Op::Slots}) {
    for (const Dims& d : cases) {
      for (double divisor : {16.0, 1.0}) {
        for (DType dt : kStorage) {
          const Inputs first = make_inputs(op, d, divisor, dt, &seed);
          Tensor ref_state = clone(first.state0), state = first.state0.to(Device::CUDA);
          for (int s = 0; s < kSteps; s++) {
            const Inputs in = s == 0 ? first : make_inputs(op, d, divisor, dt, &seed);  // its state0 is unused
            Tensor ref = Tensor::empty(out_shape(op, d), DType::F32, Device::CPU);
            step(cpu, op, ref, in, ref_state);
            Tensor out = poisoned(out_shape(op, d), dt);
            step(gpu, op, out, to_gpu(in, dt), state);
            const std::string what = std::string(op_name(op)) + "_step " + dims_str(d) + " g/" +
                                     std::to_string(static_cast<int>(divisor)) + " " + dtype_name(dt) + " step " +
                                     std::to_string(s);
            expect_close(host(out), host(ref), tol_for(dt), what + " out");
            expect_close(host(state), host(ref_state), kTolF32, what + " state");
          }
        }
      }
    }
  }
}

// ---- backward -------------------------------------------------------------------------------------------------------

void check_backward(Op op) {
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  uint64_t seed = op == Op::Linear ? 500 : 600;
  for (const Dims& d : kCases) {
    for (double divisor : {16.0, 1.0}) {
      for (DType dt : kStorage) {
        const Inputs in = make_inputs(op, d, divisor, dt, &seed);
        const Tensor dout = representable(randn(out_shape(op, d), seed++), dt);
        std::vector<Tensor> ref = host_grads(in);
        backward(cpu, op, ref, dout, in);
        std::vector<Tensor> got = poisoned_grads(in, dt);
        backward(gpu, op, got, dout.to(Device::CUDA, dt), to_gpu(in, dt));
        const std::string what = std::string(op_name(op)) + "_backward " + dims_str(d) + " g/" +
                                 std::to_string(static_cast<int>(divisor)) + " " + dtype_name(dt) + " ";
        for (int i = 0; i < 4; i++)
          expect_close(host(got[i]), host(ref[i]), grad_tol_for(dt), what + kGradNames[op == Op::Slots][i]);
      }
    }
  }
}

TEST(RecurrenceGpu, LinearRecurrenceBackwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_backward(Op::Linear);
}

TEST(RecurrenceGpu, SlotScoresBackwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_backward(Op::Slots);
}

// The tensor-core path (bf16 storage, states up to 128 x 128; ops/cuda/recurrence_tc.cu) against the CPU twin on
// fresh random inputs: odd lengths, a last partial chunk (of one token too), T below the chunk, GQA groups 1 and 4, B
// 2, the Llama-3-8B head layout, state sizes that are not multiples of 16; GLA gates (/16), HGRN2-strength gates (/1)
// and gates 4x stronger than HGRN2's (/0.25), whose decay over a chunk of 64 leaves the range the rescaled products
// allow (the kernels' exact fallback) while a chunk of 16 stays on the rescaled path. Same bounds as above: out and
// gradients 1e-2 (bf16 storage), the f32 state 1e-5.
TEST(RecurrenceGpu, TensorCorePathMatchesCpu) {
  SKIP_WITHOUT_GPU();
  // LIGER_RECURRENCE_TC=0 turns the path off (ops/cuda/recurrence.cu, use_tensor_cores): this test would then
  // check the FMA kernels a second time.
  const char* tc = std::getenv("LIGER_RECURRENCE_TC");
  if (tc && tc[0] == '0') GTEST_SKIP() << "LIGER_RECURRENCE_TC=0: the tensor-core recurrence is off";
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  const Dims cases[] = {{2, 1, 4, 1, 128, 128},  {2, 47, 8, 2, 128, 128},   {1, 131, 4, 4, 128, 128},
                        {2, 257, 8, 2, 64, 128}, {1, 100, 32, 8, 128, 128}, {1, 65, 4, 1, 24, 40}};
  uint64_t seed = 900;
  const DType dt = DType::BF16;
  for (const Dims& d : cases) {
    for (double divisor : {16.0, 1.0, 0.25}) {
      const std::string what = std::string("linear_recurrence ") + dims_str(d) + " g/" +
                               (divisor < 1.0 ? std::string("0.25") : std::to_string(static_cast<int>(divisor))) +
                               " bf16";
      for (int64_t chunk : {16, 64}) {
        const Inputs in = make_inputs(Op::Linear, d, divisor, dt, &seed);
        Tensor ref = Tensor::empty(out_shape(Op::Linear, d), DType::F32, Device::CPU), ref_state = clone(in.state0);
        forward(cpu, Op::Linear, ref, in, ref_state, chunk);
        Tensor out = poisoned(out_shape(Op::Linear, d), dt), state = in.state0.to(Device::CUDA);
        forward(gpu, Op::Linear, out, to_gpu(in, dt), state, chunk);
        const std::string w = what + " chunk " + std::to_string(chunk);
        expect_close(host(out), host(ref), kTolBf16, w + " out");
        expect_close(host(state), host(ref_state), kTolF32, w + " state");
      }
      const Inputs in = make_inputs(Op::Linear, d, divisor, dt, &seed);
      const Tensor dout = representable(randn(out_shape(Op::Linear, d), seed++), dt);
      std::vector<Tensor> ref = host_grads(in);
      backward(cpu, Op::Linear, ref, dout, in);
      std::vector<Tensor> got = poisoned_grads(in, dt);
      backward(gpu, Op::Linear, got, dout.to(Device::CUDA, dt), to_gpu(in, dt));
      for (int i = 0; i < 4; i++)
        expect_close(host(got[i]), host(ref[i]), kTolBf16, what + " backward " + kGradNames[0][i]);
    }
  }
}

// The CUDA backward against central differences of the CUDA forward, L = sum(out o W), at a few elements of every
// input, in f32 with h = 1e-2: the output is linear in x, y and z (the difference quotient is exact up to rounding)
// and smooth in g (truncation ~h^2 = 1e-4 relative); the f32 rounding of L (a sum of ~10^3 terms, ~1e-7 relative
// each) divided by 2h gives ~1e-4 absolute. Hence the loose bound: |fd - grad| <= 1e-2 * max(|grad|, rms of that
// gradient). The tight check of the same formulas is the fp64 one of the CPU twin in tests/ops/test_grad.cpp; this
// one ties the GPU backward to the GPU forward independently of the CPU.
TEST(RecurrenceGpu, BackwardMatchesFiniteDifferences) {
  SKIP_WITHOUT_GPU();
  Context gpu = Context::cuda(0);
  constexpr double kH = 1e-2, kTol = 1e-2;
  uint64_t seed = 700;
  for (Op op : {Op::Linear, Op::Slots}) {
    const Dims d{1, 40, 4, 2, 16, 8};
    Inputs in = make_inputs(op, d, 16.0, DType::F32, &seed);
    const Tensor W = randn(out_shape(op, d), seed++);
    auto loss = [&]() {
      Tensor out = poisoned(out_shape(op, d), DType::F32), state = in.state0.to(Device::CUDA);
      forward(gpu, op, out, to_gpu(in, DType::F32), state, 16);
      const std::vector<float> o = host(out);
      double l = 0.0;
      for (size_t i = 0; i < o.size(); i++) l += static_cast<double>(o[i]) * W.ptr<float>()[i];
      return l;
    };
    std::vector<Tensor> grads = poisoned_grads(in, DType::F32);
    backward(gpu, op, grads, W.to(Device::CUDA), to_gpu(in, DType::F32));
    Tensor* inputs[4] = {&in.x, &in.y, &in.z, &in.g};
    for (int k = 0; k < 4; k++) {
      const std::vector<float> grad = host(grads[k]);
      double rms = 0.0;
      for (float v : grad) rms += static_cast<double>(v) * v;
      rms = std::sqrt(rms / static_cast<double>(grad.size()));
      float* x = inputs[k]->ptr<float>();
      const int64_t n = inputs[k]->numel();
      for (int64_t i : {int64_t{0}, n / 3 + 5, n / 2 + 1, n - 1}) {
        const float x0 = x[i];
        x[i] = x0 + static_cast<float>(kH);
        const double lp = loss();
        x[i] = x0 - static_cast<float>(kH);
        const double lm = loss();
        x[i] = x0;
        const double fd = (lp - lm) / (2 * kH), an = grad[static_cast<size_t>(i)];
        const double err = std::fabs(fd - an) / std::max(std::fabs(an), rms);
        std::printf("  %s %s[%lld]: gpu backward %.7g, finite difference %.7g, error %.3g\n", op_name(op),
                    kGradNames[op == Op::Slots][k], static_cast<long long>(i), an, fd, err);
        EXPECT_LE(err, kTol) << op_name(op) << " " << kGradNames[op == Op::Slots][k] << "[" << i << "]";
      }
    }
  }
}

// ---- a Llama-3-8B-sized layer ---------------------------------------------------------------------------------------

// B = 1, T = 4096, 32 query heads, 8 KV heads, 128 x 128 states (GLA; GSA with 64 slots x 128), against the CPU twin
// on the rows it can afford (its full-length run, the backward with a state per token, is slow):
//   * forward rows [0, 256) against the CPU on the prefix; rows [T - 256, T) and the final state against the CPU on
//     the suffix, started from the state a GPU run over [0, T - 256) leaves;
//   * backward with dout everywhere: rows [T - 256, T) of every gradient against the CPU backward of the suffix from
//     that state (the gradients of the suffix's inputs depend only on the state before it and the suffix);
//   * backward with dout zero from row 256 on: rows [0, 256) against the CPU backward of the prefix, and every later
//     row exactly zero.
// The backward's chunk-boundary states (~34 MB for GLA) exceed the context's 32 MiB workspace: the kernel allocates.
TEST(RecurrenceGpu, LargeLayerMatchesCpuOnSampledRows) {
  SKIP_WITHOUT_GPU();
  Context gpu = Context::cuda(0), cpu = Context::cpu();
  constexpr int64_t kT = 4096, kP = 256, kMid = kT - kP;
  uint64_t seed = 800;
  for (Op op : {Op::Linear, Op::Slots}) {
    const Dims d = op == Op::Linear ? Dims{1, kT, 32, 8, 128, 128} : Dims{1, kT, 32, 8, 64, 128};
    for (DType dt : kStorage) {
      const std::string what = std::string(op_name(op)) + " " + dims_str(d) + " " + dtype_name(dt);
      const std::string head_rows = " rows [0, " + std::to_string(kP) + ")";
      const std::string tail_rows = " rows [" + std::to_string(kMid) + ", " + std::to_string(kT) + ")";
      const Inputs in = make_inputs(op, d, 16.0, dt, &seed);
      const Inputs gin = to_gpu(in, dt);

      // Forward.
      Tensor out = poisoned(out_shape(op, d), dt), state = in.state0.to(Device::CUDA);
      forward(gpu, op, out, gin, state, 64);
      const Tensor out_host = out.to(Device::CPU, DType::F32);
      {
        const Inputs pre = time_window(in, 0, kP, in.state0);
        Tensor ref = Tensor::empty(out_shape(op, {1, kP, d.H, d.HKV, d.K, d.Vd}), DType::F32, Device::CPU);
        Tensor ref_state = clone(in.state0);
        forward(cpu, op, ref, pre, ref_state, 64);
        expect_close(host(time_slice(out_host, 0, kP)), host(ref), tol_for(dt), what + " out" + head_rows);
      }
      // The state after [0, kMid), from a GPU run over the prefix alone.
      Tensor mid_state = in.state0.to(Device::CUDA);
      {
        const Inputs head = time_window(in, 0, kMid, in.state0);
        Tensor head_out = poisoned(out_shape(op, {1, kMid, d.H, d.HKV, d.K, d.Vd}), dt);
        forward(gpu, op, head_out, to_gpu(head, dt), mid_state, 64);
      }
      const Tensor mid_host = mid_state.to(Device::CPU);
      const Inputs tail = time_window(in, kMid, kP, mid_host);
      {
        Tensor ref = Tensor::empty(out_shape(op, {1, kP, d.H, d.HKV, d.K, d.Vd}), DType::F32, Device::CPU);
        Tensor ref_state = clone(mid_host);
        forward(cpu, op, ref, tail, ref_state, 64);
        expect_close(host(time_slice(out_host, kMid, kP)), host(ref), tol_for(dt), what + " out" + tail_rows);
        expect_close(host(state), host(ref_state), kTolF32, what + " final state");
      }

      // Backward, dout everywhere: the suffix's rows.
      const Tensor dout = representable(randn(out_shape(op, d), seed++), dt);
      {
        std::vector<Tensor> got = poisoned_grads(in, dt);
        backward(gpu, op, got, dout.to(Device::CUDA, dt), gin);
        std::vector<Tensor> ref = host_grads(tail);
        backward(cpu, op, ref, time_slice(dout, kMid, kP), tail);
        for (int i = 0; i < 4; i++)
          expect_close(host(time_slice(got[i], kMid, kP)), host(ref[i]), grad_tol_for(dt),
                       what + " " + kGradNames[op == Op::Slots][i] + tail_rows);
      }
      // Backward, dout zero after the prefix: the prefix's rows, and zeros after it.
      {
        Tensor dpre = clone(dout);
        const int64_t row = d.H * out_shape(op, d)[3];
        std::fill(dpre.ptr<float>() + kP * row, dpre.ptr<float>() + kT * row, 0.0f);
        std::vector<Tensor> got = poisoned_grads(in, dt);
        backward(gpu, op, got, dpre.to(Device::CUDA, dt), gin);
        const Inputs pre = time_window(in, 0, kP, in.state0);
        std::vector<Tensor> ref = host_grads(pre);
        backward(cpu, op, ref, time_slice(dpre, 0, kP), pre);
        for (int i = 0; i < 4; i++) {
          const Tensor g = got[i].to(Device::CPU, DType::F32);
          expect_close(host(time_slice(g, 0, kP)), host(ref[i]), grad_tol_for(dt),
                       what + " " + kGradNames[op == Op::Slots][i] + head_rows + ", dout 0 after");
          const std::vector<float> rest = host(time_slice(g, kP, kT - kP));
          size_t nonzero = 0;
          for (float v : rest) nonzero += v != 0.0f;  // NaN counts too
          EXPECT_EQ(nonzero, 0u) << what << " " << kGradNames[op == Op::Slots][i]
                                 << ": rows past the last nonzero cotangent must be exactly zero";
        }
      }
    }
  }
}

// ---- dtype errors ---------------------------------------------------------------------------------------------------

// The GPU path takes the state in f32 and every other tensor f32 or bf16, all alike; anything else is an Error naming
// the op, never a silent reinterpretation of the bytes.
TEST(RecurrenceGpu, RejectsBadDtypes) {
  SKIP_WITHOUT_GPU();
  Context gpu = Context::cuda(0);
  const int64_t B = 1, T = 3, H = 2, HKV = 1, K = 8, Vd = 8;
  auto z = [](Shape s, DType dt) { return Tensor::zeros(s, dt, Device::CUDA); };
  const Tensor fq = z({B, T, H, K}, DType::BF16), fk = z({B, T, HKV, K}, DType::BF16);
  const Tensor v = z({B, T, HKV, Vd}, DType::BF16), g = z({B, T, HKV, K}, DType::BF16);
  Tensor out = z({B, T, H, Vd}, DType::BF16), state = z({B, HKV, K, Vd}, DType::F32);
  ops::linear_recurrence(gpu, out, fq, fk, v, g, state);  // bf16 inputs with an f32 state pass
  gpu.synchronize();
  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence(gpu, out, fq, fk, v, g, z({B, HKV, K, Vd}, DType::BF16));
      },
      {"linear_recurrence", "state", "f32"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence(gpu, out, fq, fk, z({B, T, HKV, Vd}, DType::F32), g, state);
      },
      {"linear_recurrence", "mix"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::linear_recurrence_step(gpu, z({B, 1, H, Vd}, DType::F16), z({B, 1, H, K}, DType::F16),
                                    z({B, 1, HKV, K}, DType::F16), z({B, 1, HKV, Vd}, DType::F16),
                                    z({B, 1, HKV, K}, DType::F16), state);
      },
      {"linear_recurrence_step", "f16"}));
  EXPECT_TRUE(throws_error(
      [&] {
        ops::slot_scores(gpu, z({B, T, H, K}, DType::F32), z({B, T, H, Vd}, DType::F32), z({B, T, HKV, Vd}, DType::F32),
                         z({B, T, HKV, K}, DType::F32), z({B, T, HKV, K}, DType::F32), z({B, HKV, K, Vd}, DType::BF16));
      },
      {"slot_scores", "state"}));
  std::vector<Tensor> grads = {z({B, T, H, K}, DType::BF16), z({B, T, HKV, K}, DType::BF16),
                               z({B, T, HKV, Vd}, DType::F32), z({B, T, HKV, K}, DType::BF16)};
  EXPECT_TRUE(throws_error(
      [&] { ops::linear_recurrence_backward(gpu, grads[0], grads[1], grads[2], grads[3], out, fq, fk, v, g, state); },
      {"linear_recurrence_backward", "mix"}));
}

}  // namespace
}  // namespace liger
