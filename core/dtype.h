// core/dtype.h — element types and devices, and the scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace liger {

// F64 is for the CPU only: fp64 references and finite-difference gradient checks.
enum class DType : uint8_t { F32, BF16, F16, I32, I64, F64 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);    // "f32", "bf16", ...
const char* device_name(Device d);   // "cpu", "cuda"
// Parses "cpu" / "cuda"; throws liger::Error naming the option otherwise.
Device parse_device(const std::string& s);
// Parses "f32"/"bf16"/"f16"; throws otherwise.
DType parse_dtype(const std::string& s);

// bf16 <-> f32, round to nearest even (NaN kept NaN), as torch does.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE half <-> f32 (round to nearest even), subnormals and inf/NaN handled.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace liger
