// ops/common.h — shared checks for op entry points.
//
// Dimension letters used in every op comment: N rows (= B*T tokens), B batch, T time, S cache length,
// D model width, F MLP width, V vocabulary, H query heads, HKV key/value heads, HS head size.
// `=` in a comment means the op overwrites the output; `+=` means it accumulates into it.
#pragma once

#include <initializer_list>

#include "core/check.h"
#include "core/context.h"
#include "core/tensor.h"

namespace liger::ops {

// Every tensor must live on the context's device.
inline void check_device(const Context& ctx, const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    LIGER_CHECK(t->device() == ctx.device(), "%s: tensor on %s but the context is %s", op,
                device_name(t->device()), device_name(ctx.device()));
  }
}

inline void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  LIGER_CHECK(t.shape() == want, "%s: %s has shape %s, expected %s", op, name, t.shape().str().c_str(),
              want.str().c_str());
}

inline bool is_float_dtype(DType d) {
  return d == DType::F32 || d == DType::BF16 || d == DType::F16 || d == DType::F64;
}

// CPU reference ops that also run in fp64 (for finite-difference gradient checks): every tensor f32, or every tensor
// f64.
inline void check_cpu_float(const char* op, std::initializer_list<const Tensor*> ts) {
  const DType first = (*ts.begin())->dtype();
  LIGER_CHECK(first == DType::F32 || first == DType::F64, "%s: the CPU path takes f32 (or f64) tensors, got %s", op,
              dtype_name(first));
  for (const Tensor* t : ts) {
    LIGER_CHECK(t->dtype() == first, "%s: tensors mix %s and %s", op, dtype_name(first), dtype_name(t->dtype()));
  }
}

// The CPU reference ops are templates over the scalar type: float for the model, double for the finite-difference
// checks. by_dtype runs f with a value of the scalar type of `dt` (after check_cpu_float): f(double{}) for f64,
// f(float{}) for f32; the body takes `using T = decltype(zero);`.
template <class F>
void by_dtype(DType dt, F&& f) {
  if (dt == DType::F64)
    f(double{});
  else
    f(float{});
}

}  // namespace liger::ops
