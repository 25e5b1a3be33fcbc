// Element access and the one-pass min/max reduction shared by the CPU kernels (group_minmax,
// quantize). Everything is force-inlined (HIERBENCH_INLINE) so that it is compiled inside each
// target_clones entry point: a helper left out of line is built for baseline x86-64 only and its
// loops would not use AVX2/AVX-512.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

#include "../common/simd.h"

namespace hierbench::cpu {

HIERBENCH_INLINE float load_f32(const float* p, int64_t i) { return p[i]; }
HIERBENCH_INLINE float load_f32(const at::BFloat16* p, int64_t i) { return bf16_to_f32(p[i].x); }
HIERBENCH_INLINE float load_f32(const at::Half* p, int64_t i) { return f16_to_f32(p[i].x); }

HIERBENCH_INLINE void store_f32(float* p, int64_t i, float v) { p[i] = v; }
HIERBENCH_INLINE void store_f32(at::BFloat16* p, int64_t i, float v) { p[i].x = f32_to_bf16(v); }
HIERBENCH_INLINE void store_f32(at::Half* p, int64_t i, float v) { p[i].x = f32_to_f16(v); }

struct MinMax {
  float lo, hi;
  int nan;
};
constexpr MinMax kEmpty{std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity(), 0};

HIERBENCH_INLINE MinMax combine(MinMax a, const MinMax& b) {
  a.lo = b.lo < a.lo ? b.lo : a.lo;
  a.hi = b.hi > a.hi ? b.hi : a.hi;
  a.nan |= b.nan;
  return a;
}

// One pass: min, max and whether a NaN was seen. An OpenMP SIMD reduction; NaN is tracked by a
// separate OR because a vector min/max does not propagate it the way the reference does.
template <typename T>
HIERBENCH_INLINE MinMax minmax_range(const T* __restrict__ p, int64_t n) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  int nan = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const float v = load_f32(p, i);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    nan |= (v != v);
  }
  return {lo, hi, nan};
}

}  // namespace hierbench::cpu
