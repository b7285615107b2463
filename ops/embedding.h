// ops/embedding.h — token embedding lookup.
#pragma once

#include "ops/common.h"

namespace liger::ops {

namespace cpu {
void embedding(Tensor out, const Tensor& ids, const Tensor& table);
void embedding_shard(Tensor out, const Tensor& ids, const Tensor& table, int64_t v0);
}
namespace cuda {
void embedding(Context& ctx, Tensor out, const Tensor& ids, const Tensor& table, int64_t v0 = 0);
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

// The vocab-parallel lookup (tensor parallelism, DESIGN.md §5): this rank holds rows [v0, v0 + Vs) of the table,
// table (Vs, D). out (N, D) = table[ids - v0] for the ids in that range, zeros for every other id; the sum of out
// over the ranks (an all-reduce) is the full lookup. Ids are not checked here (the caller checked them against the
// whole vocabulary).
inline void embedding_shard(Context& ctx, Tensor out, const Tensor& ids, const Tensor& table, int64_t v0) {
  check_device(ctx, "embedding_shard", {&out, &ids, &table});
  LIGER_CHECK(ids.dtype() == DType::I32 && ids.ndim() == 1, "embedding_shard: ids must be i32 (N), got %s",
              ids.str().c_str());
  LIGER_CHECK(table.ndim() == 2 && v0 >= 0, "embedding_shard: table must be (Vs, D) and v0 >= 0, got %s",
              table.str().c_str());
  check_shape("embedding_shard", "out", out, {ids.dim(0), table.dim(1)});
  LIGER_CHECK(out.dtype() == table.dtype(), "embedding_shard: out %s != table %s", dtype_name(out.dtype()),
              dtype_name(table.dtype()));
#ifdef LIGER_CUDA
  if (ctx.is_cuda()) return cuda::embedding(ctx, out, ids, table, v0);
#endif
  check_cpu_float("embedding_shard", {&out, &table});
  cpu::embedding_shard(out, ids, table, v0);
}

}  // namespace liger::ops
