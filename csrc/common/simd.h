// CPU vectorisation helpers.
//
// HIERBENCH_TARGET_CLONES compiles a function for AVX-512, AVX2 and baseline x86-64; the dynamic
// loader picks the clone for the running CPU (GCC ifunc). Put it on the function that owns a hot
// loop, not on an inline helper: clones are dispatched at the call, never inlined.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define HIERBENCH_TARGET_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HIERBENCH_TARGET_CLONES
#endif

namespace hierbench {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bfloat16 -> float32 is exact: the bf16 bits are the top half of the f32 bits.
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t{h} << 16); }

// IEEE binary16 -> binary32, exact, branch-free (selects only), so that loops vectorise.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  // normal: rebias exponent 15 -> 127
  const uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
  // inf/nan: all-ones exponent
  const uint32_t special = 0x7f800000u | (mant << 13);
  // subnormal: mant * 2^-24, computed exactly in float
  const float sub = static_cast<float>(mant) * 5.9604644775390625e-08f;
  uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, sizeof sub_bits);
  const uint32_t mag = exp == 0 ? sub_bits : (exp == 31 ? special : normal);
  return bits_to_f32(sign | mag);
}

}  // namespace hierbench
