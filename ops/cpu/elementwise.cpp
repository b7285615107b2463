#include "ops/elementwise.h"

#include "core/rng.h"

namespace liger::ops::cpu {

void add(Tensor out, const Tensor& a, const Tensor& b) {
  by_dtype(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = a.numel();
    for (int64_t i = 0; i < n; i++) out.ptr<T>()[i] = a.ptr<T>()[i] + b.ptr<T>()[i];
  });
}

void scale(Tensor out, const Tensor& x, double alpha) {
  by_dtype(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T a = static_cast<T>(alpha);
    for (int64_t i = 0; i < x.numel(); i++) out.ptr<T>()[i] = a * x.ptr<T>()[i];
  });
}

void add_scaled(Tensor out, const Tensor& x, double alpha) {
  by_dtype(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T a = static_cast<T>(alpha);
    for (int64_t i = 0; i < x.numel(); i++) {
      const T p = a * x.ptr<T>()[i];
      out.ptr<T>()[i] += p;
    }
  });
}

void convert(Tensor out, const Tensor& in) {
  copy(out, in);
}

void fill_normal(Tensor t, uint64_t seed, float mean, float std) {
  const int64_t n = t.numel();
  if (t.dtype() == DType::F32) {
    for (int64_t i = 0; i < n; i++) t.ptr<float>()[i] = mean + std * hash_normal(seed, static_cast<uint64_t>(i));
    return;
  }
  if (t.dtype() == DType::F64) {
    for (int64_t i = 0; i < n; i++) t.ptr<double>()[i] = mean + std * hash_normal(seed, static_cast<uint64_t>(i));
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    float v = mean + std * hash_normal(seed, static_cast<uint64_t>(i));
    t.ptr<uint16_t>()[i] = t.dtype() == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  }
}

}  // namespace liger::ops::cpu
