#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace liger::ops::cpu {

void attention(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, int64_t kv_len,
               float scale, int64_t window) {
  (void)kv_len;  // keys beyond the last query's position are masked anyway
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), HS = q.dim(3), S = k.dim(1), HKV = k.dim(2);
  const int64_t G = H / HKV;
  std::vector<float> p;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++) {
      const int64_t pos = pos0 + t;
      const int64_t s_lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      for (int64_t h = 0; h < H; h++) {
        const int64_t j = h / G;
        const float* qr = q.ptr<float>() + ((b * T + t) * H + h) * HS;
        p.assign(static_cast<size_t>(pos - s_lo + 1), 0.0f);
        float mx = -INFINITY;
        for (int64_t s = s_lo; s <= pos; s++) {
          const float* kr = k.ptr<float>() + ((b * S + s) * HKV + j) * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; i++) dot += qr[i] * kr[i];
          p[static_cast<size_t>(s - s_lo)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        double sum = 0.0;
        for (float& e : p) {
          e = std::exp(e - mx);
          sum += e;
        }
        float* o = out.ptr<float>() + ((b * T + t) * H + h) * HS;
        std::fill(o, o + HS, 0.0f);
        for (int64_t s = s_lo; s <= pos; s++) {
          const float w = static_cast<float>(p[static_cast<size_t>(s - s_lo)] / sum);
          const float* vr = v.ptr<float>() + ((b * S + s) * HKV + j) * HS;
          for (int64_t i = 0; i < HS; i++) o[i] += w * vr[i];
        }
      }
    }
  }
}

void kv_write(Tensor cache, const Tensor& src, int64_t pos0) {
  const int64_t B = src.dim(0), T = src.dim(1), S = cache.dim(1);
  const size_t row = static_cast<size_t>(src.dim(2) * src.dim(3)) * dtype_size(src.dtype());
  for (int64_t b = 0; b < B; b++) {
    std::memcpy(static_cast<char*>(cache.data()) + static_cast<size_t>(b * S + pos0) * row,
                static_cast<const char*>(src.data()) + static_cast<size_t>(b * T) * row, static_cast<size_t>(T) * row);
  }
}

}  // namespace liger::ops::cpu
