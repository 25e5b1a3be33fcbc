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

// Helpers called from hot loops are forced inline: a helper compiled out of line is baseline
// x86-64 code that a target_clones caller can only call, one element at a time.
#if defined(__GNUC__)
#define HIERBENCH_INLINE inline __attribute__((always_inline))
#else
#define HIERBENCH_INLINE inline
#endif

namespace hierbench {

HIERBENCH_INLINE float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bfloat16 -> float32 is exact: the bf16 bits are the top half of the f32 bits.
HIERBENCH_INLINE float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t{h} << 16); }

// IEEE binary16 -> binary32, exact, branch-free: the three cases are combined with bit masks
// (nested selects leave control flow that stops GCC's vectoriser), so that loops vectorise.
HIERBENCH_INLINE float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  // normal: rebias exponent 15 -> 127
  const uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
  // inf/nan: all-ones exponent
  const uint32_t special = 0x7f800000u | (mant << 13);
  // subnormal: mant * 2^-24, computed exactly in float (signed conversion: vectorises on AVX2)
  const float sub = static_cast<float>(static_cast<int32_t>(mant)) * 5.9604644775390625e-08f;
  uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, sizeof sub_bits);
  const uint32_t is_sub = 0u - static_cast<uint32_t>(exp == 0);
  const uint32_t is_special = 0u - static_cast<uint32_t>(exp == 31);
  const uint32_t mag =
      (sub_bits & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
  return bits_to_f32(sign | mag);
}

HIERBENCH_INLINE uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// float32 -> bfloat16 bits, round to nearest even; NaN -> 0x7fc0 (as c10::BFloat16).
HIERBENCH_INLINE uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}

// float32 -> IEEE binary16 bits, round to nearest even, branch-free (selects only); NaN -> 0x7e00
// with the sign, overflow -> inf, as c10::Half. After F. Giesen's float_to_half_fast3_rtne.
HIERBENCH_INLINE uint16_t f32_to_f16(float f) {
  const uint32_t bits = f32_to_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t x = bits & 0x7fffffffu;
  // normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even
  const uint32_t normal = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
  // subnormal (|f| < 2^-14): adding 0.5f aligns the mantissa; the FPU rounds to nearest even
  const uint32_t sub = f32_to_bits(bits_to_f32(x) + 0.5f) - 0x3f000000u;
  uint32_t r = x < (113u << 23) ? sub : normal;
  r = x >= (143u << 23) ? 0x7c00u : r;  // >= 65536: inf (65520..65536 carries to inf above)
  r = x > 0x7f800000u ? 0x7e00u : r;    // NaN
  return static_cast<uint16_t>(sign | r);
}

}  // namespace hierbench
