#include "core/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#ifdef LIGER_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace liger {

Shape::Shape(std::initializer_list<int64_t> dims) {
  LIGER_CHECK(dims.size() <= kMaxDims, "tensor rank %zu exceeds %d", dims.size(), kMaxDims);
  for (int64_t x : dims) d[static_cast<size_t>(n++)] = x;
}

Shape::Shape(const std::vector<int64_t>& dims) {
  LIGER_CHECK(dims.size() <= kMaxDims, "tensor rank %zu exceeds %d", dims.size(), kMaxDims);
  for (int64_t x : dims) d[static_cast<size_t>(n++)] = x;
}

int64_t Shape::numel() const {
  int64_t p = 1;
  for (int i = 0; i < n; i++) p *= d[static_cast<size_t>(i)];
  return p;
}

bool Shape::operator==(const Shape& o) const {
  if (n != o.n) return false;
  for (int i = 0; i < n; i++)
    if (d[static_cast<size_t>(i)] != o.d[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < n; i++) {
    if (i) s += ", ";
    s += std::to_string(d[static_cast<size_t>(i)]);
  }
  if (n == 1) s += ",";
  return s + ")";
}

namespace {
std::atomic<size_t> g_current[2];
std::atomic<size_t> g_peak[2];

void account(Device device, int64_t delta) {
  size_t i = static_cast<size_t>(device);
  size_t now = g_current[i].fetch_add(static_cast<size_t>(delta)) + static_cast<size_t>(delta);
  size_t peak = g_peak[i].load();
  while (now > peak && !g_peak[i].compare_exchange_weak(peak, now)) {
  }
}

constexpr size_t kCpuAlign = 256;  // = Arena::kAlign: arenas carve 256-byte aligned tensors from one block

void* device_alloc(Device device, size_t bytes) {
  if (device == Device::CPU) {
    size_t total = (bytes + kCpuAlign - 1) / kCpuAlign * kCpuAlign;
    void* p = std::aligned_alloc(kCpuAlign, total == 0 ? kCpuAlign : total);
    LIGER_CHECK(p != nullptr, "out of host memory allocating %.1f MiB", bytes / 1048576.0);
    account(device, static_cast<int64_t>(bytes));
    return p;
  }
#ifdef LIGER_CUDA
  // Stream-ordered allocation on the legacy default stream from the device's pool, which keeps freed memory for
  // reuse (release threshold: never), so the many temporaries of a training step cost no cudaMalloc/cudaFree and no
  // device synchronization. The contexts' streams are blocking streams (core/context.cpp): work on them is ordered
  // with the legacy stream, so memory freed here is reused only after the kernels that read it were issued before.
  static const bool pool_ready = [] {
    int dev = 0;
    cudaMemPool_t pool;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
    return true;
  }();
  (void)pool_ready;
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes == 0 ? 1 : bytes, cudaStreamLegacy);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    LIGER_FAIL("out of GPU memory allocating %.1f MiB (%.1f MiB free of %.1f MiB; liger holds %.1f MiB)",
               bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0, g_current[1].load() / 1048576.0);
  }
  account(device, static_cast<int64_t>(bytes));
  return p;
#else
  LIGER_FAIL("this liger was built without CUDA (rebuild with -DLIGER_CUDA=ON)");
#endif
}

void device_free(Device device, void* p, size_t bytes) {
  if (!p) return;
  account(device, -static_cast<int64_t>(bytes));
  if (device == Device::CPU) {
    std::free(p);
    return;
  }
#ifdef LIGER_CUDA
  cudaFreeAsync(p, cudaStreamLegacy);
#endif
}
}  // namespace

MemStats mem_stats(Device device) {
  size_t i = static_cast<size_t>(device);
  return MemStats{g_current[i].load(), g_peak[i].load()};
}

void reset_peak(Device device) {
  size_t i = static_cast<size_t>(device);
  g_peak[i].store(g_current[i].load());
}

int cuda_device_count() {
#ifdef LIGER_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

bool cuda_available() {
  return cuda_device_count() > 0;
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  void* p = device_alloc(device, bytes);
  std::shared_ptr<void> owner(p, [device, bytes](void* q) { device_free(device, q, bytes); });
  return Tensor(p, shape, dtype, device, std::move(owner));
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  set_zero(t);
  return t;
}

Tensor column_block(const Tensor& host, int64_t c0, int64_t n) {
  LIGER_CHECK(host.device() == Device::CPU && host.ndim() == 2 && c0 >= 0 && n >= 0 && c0 + n <= host.dim(1),
              "column_block: columns [%lld, %lld) of %s", static_cast<long long>(c0), static_cast<long long>(c0 + n),
              host.str().c_str());
  const int64_t rows = host.dim(0), cols = host.dim(1);
  Tensor out = Tensor::empty({rows, n}, host.dtype(), Device::CPU);
  const size_t es = dtype_size(host.dtype());
  for (int64_t i = 0; i < rows; i++)
    std::memcpy(static_cast<char*>(out.data()) + static_cast<size_t>(i * n) * es,
                static_cast<const char*>(host.data()) + static_cast<size_t>(i * cols + c0) * es,
                static_cast<size_t>(n) * es);
  return out;
}

void set_zero(Tensor t) {
  if (t.nbytes() == 0) return;
  if (t.device() == Device::CPU) {
    std::memset(t.data(), 0, t.nbytes());
  } else {
#ifdef LIGER_CUDA
    CUDA_CHECK(cudaMemsetAsync(t.data(), 0, t.nbytes(), cudaStreamLegacy));
#endif
  }
}

Tensor Tensor::from_f32(Shape shape, const std::vector<float>& values) {
  LIGER_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_f32: %zu values for shape %s",
              values.size(), shape.str().c_str());
  Tensor t = empty(shape, DType::F32, Device::CPU);
  std::memcpy(t.data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::from_i32(Shape shape, const std::vector<int32_t>& values) {
  LIGER_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_i32: %zu values for shape %s",
              values.size(), shape.str().c_str());
  Tensor t = empty(shape, DType::I32, Device::CPU);
  std::memcpy(t.data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::view(Shape shape) const {
  LIGER_CHECK(shape.numel() == numel(), "view: cannot view %s as %s", shape_.str().c_str(), shape.str().c_str());
  return Tensor(data_, shape, dtype_, device_, owner_);
}

Tensor Tensor::slice(int64_t start, int64_t len) const {
  LIGER_CHECK(shape_.n >= 1 && start >= 0 && len >= 0 && start + len <= shape_[0],
              "slice [%lld, %lld) out of range for %s", static_cast<long long>(start),
              static_cast<long long>(start + len), shape_.str().c_str());
  Shape s = shape_;
  s.d[0] = len;
  int64_t row_elems = shape_[0] ? numel() / shape_[0] : 0;
  char* p = static_cast<char*>(data_) + static_cast<size_t>(start * row_elems) * dtype_size(dtype_);
  return Tensor(p, s, dtype_, device_, owner_);
}

Tensor Tensor::row(int64_t i) const {
  Tensor r = slice(i, 1);
  Shape s;
  for (int k = 1; k < shape_.n; k++) s.d[static_cast<size_t>(s.n++)] = shape_[k];
  return Tensor(r.data_, s, dtype_, device_, owner_);
}

Tensor Tensor::to(Device device) const { return to(device, dtype_); }

Tensor Tensor::to(Device device, DType dtype) const {
  Tensor out = empty(shape_, dtype, device);
  copy(out, *this);
  return out;
}

namespace {
bool is_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16 || d == DType::F64; }

double load_f(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::I32: return static_cast<double>(static_cast<const int32_t*>(p)[i]);
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

void store_f(void* p, DType d, int64_t i, double v) {
  switch (d) {
    case DType::F64: static_cast<double*>(p)[i] = v; break;
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v)); break;
    default: LIGER_ASSERT(false);
  }
}

int64_t load_i(const void* p, DType d, int64_t i) {
  if (d == DType::I32) return static_cast<const int32_t*>(p)[i];
  if (d == DType::I64) return static_cast<const int64_t*>(p)[i];
  LIGER_ASSERT(false);
  return 0;
}

void store_i(void* p, DType d, int64_t i, int64_t v) {
  if (d == DType::I32) static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v);
  else if (d == DType::I64) static_cast<int64_t*>(p)[i] = v;
  else LIGER_ASSERT(false);
}

// Host-side dtype conversion between two host buffers of n elements.
void convert_host(void* dst, DType ddt, const void* src, DType sdt, int64_t n) {
  if (ddt == sdt) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(ddt));
    return;
  }
  if (is_float(ddt) && is_float(sdt)) {
    for (int64_t i = 0; i < n; i++) store_f(dst, ddt, i, load_f(src, sdt, i));
    return;
  }
  LIGER_CHECK(!is_float(ddt) && !is_float(sdt), "copy: cannot convert %s to %s", dtype_name(sdt), dtype_name(ddt));
  for (int64_t i = 0; i < n; i++) store_i(dst, ddt, i, load_i(src, sdt, i));
}
}  // namespace

void copy(Tensor dst, const Tensor& src) {
  LIGER_CHECK(dst.numel() == src.numel(), "copy: %s into %s", src.shape().str().c_str(), dst.shape().str().c_str());
  if (src.numel() == 0) return;
  if (dst.device() == Device::CPU && src.device() == Device::CPU) {
    convert_host(dst.data(), dst.dtype(), src.data(), src.dtype(), src.numel());
    return;
  }
#ifdef LIGER_CUDA
  if (dst.dtype() == src.dtype()) {
    if (dst.device() == Device::CUDA && src.device() == Device::CUDA) {  // stays stream-ordered, no host wait
      CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.nbytes(), cudaMemcpyDeviceToDevice, cudaStreamLegacy));
      return;
    }
    CUDA_CHECK(cudaMemcpy(dst.data(), src.data(), src.nbytes(), cudaMemcpyDefault));
    return;
  }
  // Different dtypes with a device involved: convert on the host (used for loading and tests, not hot paths).
  Tensor hs = src.device() == Device::CPU ? src : src.to(Device::CPU);
  Tensor hd = Tensor::empty(dst.shape(), dst.dtype(), Device::CPU);
  convert_host(hd.data(), hd.dtype(), hs.data(), hs.dtype(), hs.numel());
  CUDA_CHECK(cudaMemcpy(dst.data(), hd.data(), hd.nbytes(), cudaMemcpyDefault));
#else
  LIGER_FAIL("this liger was built without CUDA (rebuild with -DLIGER_CUDA=ON)");
#endif
}

std::vector<float> Tensor::to_f32_vector() const {
  Tensor h = device_ == Device::CPU ? *this : to(Device::CPU);
  LIGER_CHECK(is_float(dtype_), "to_f32_vector: tensor is %s", dtype_name(dtype_));
  std::vector<float> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); i++) v[static_cast<size_t>(i)] = static_cast<float>(load_f(h.data(), dtype_, i));
  return v;
}

std::vector<int64_t> Tensor::to_i64_vector() const {
  Tensor h = device_ == Device::CPU ? *this : to(Device::CPU);
  LIGER_CHECK(!is_float(dtype_), "to_i64_vector: tensor is %s", dtype_name(dtype_));
  std::vector<int64_t> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); i++) v[static_cast<size_t>(i)] = load_i(h.data(), dtype_, i);
  return v;
}

std::string Tensor::str() const {
  return strfmt("%s %s %s", dtype_name(dtype_), device_name(device_), shape_.str().c_str());
}

}  // namespace liger
