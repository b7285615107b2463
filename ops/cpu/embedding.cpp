#include "ops/embedding.h"

#include <cstring>

namespace liger::ops::cpu {

void embedding(Tensor out, const Tensor& ids, const Tensor& table) {
  const int64_t N = ids.dim(0), V = table.dim(0), D = table.dim(1);
  const int32_t* id = ids.ptr<int32_t>();
  const size_t row = static_cast<size_t>(D) * dtype_size(table.dtype());  // a copy: any dtype (f32 or f64 here)
  for (int64_t n = 0; n < N; n++) {
    LIGER_CHECK(id[n] >= 0 && id[n] < V, "embedding: token id %d at position %lld is outside the vocabulary [0, %lld)",
                id[n], static_cast<long long>(n), static_cast<long long>(V));
    std::memcpy(static_cast<char*>(out.data()) + static_cast<size_t>(n) * row,
                static_cast<const char*>(table.data()) + static_cast<size_t>(id[n]) * row, row);
  }
}

void embedding_shard(Tensor out, const Tensor& ids, const Tensor& table, int64_t v0) {
  const int64_t N = ids.dim(0), Vs = table.dim(0), D = table.dim(1);
  const int32_t* id = ids.ptr<int32_t>();
  const size_t row = static_cast<size_t>(D) * dtype_size(table.dtype());
  for (int64_t n = 0; n < N; n++) {
    char* dst = static_cast<char*>(out.data()) + static_cast<size_t>(n) * row;
    const int64_t local = id[n] - v0;
    if (local >= 0 && local < Vs)
      std::memcpy(dst, static_cast<const char*>(table.data()) + static_cast<size_t>(local) * row, row);
    else
      std::memset(dst, 0, row);  // +0.0 in f32 and f64
  }
}

}  // namespace liger::ops::cpu
