// ops/embedding.h — token embedding lookup.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void embedding(Tensor out, const Tensor& ids, const Tensor& table);
}
namespace cuda {
void embedding(Context& ctx, Tensor out, const Tensor& ids, const Tensor& table);
}

// out (N, D) = table (V, D)[ids (N) i32]. An id outside [0, V) is an Error on the CPU; the CUDA kernel writes zeros
// for it (ids are validated on the host before they reach the GPU). CPU: table and out f32 (or f64 for the gradient
// checks).
inline void embedding(Context& ctx, Tensor out, const Tensor& ids, const Tensor& table) {
  check_device(ctx, "embedding", {&out, &ids, &table});
  LIGER_CHECK(ids.dtype() == DType::I32 && ids.ndim() == 1, "embedding: ids must be i32 (N), got %s", ids.str().c_str());
  LIGER_CHECK(table.ndim() == 2, "embedding: table must be (V, D), got %s", table.str().c_str());
  check_shape("embedding", "out", out, {ids.dim(0), table.dim(1)});
  LIGER_CHECK(out.dtype() == table.dtype(), "embedding: out %s != table %s", dtype_name(out.dtype()),
              dtype_name(table.dtype()));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::embedding(ctx, out, ids, table);
#endif
  check_cpu_float("embedding", {&out, &table});
  cpu::embedding(out, ids, table);
}

}  // namespace liger::ops
