// Device helpers shared by the CUDA kernels (group_minmax, quantize): widening loads and the
// min/max/NaN accumulator their reductions carry.
#pragma once

#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace hierbench::device {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(at::Half v) {
  return __half2float(__ushort_as_half(v.x));
}
__device__ __forceinline__ float to_f32(at::BFloat16 v) {
  return __uint_as_float(static_cast<uint32_t>(v.x) << 16);
}

struct Acc {
  float lo, hi;
  int nan;
  __device__ __forceinline__ void add(float v) {
    lo = fminf(lo, v);  // fminf/fmaxf skip NaN; NaN is tracked separately
    hi = fmaxf(hi, v);
    nan |= (v != v);
  }
  __device__ __forceinline__ void merge(const Acc& o) {
    lo = fminf(lo, o.lo);
    hi = fmaxf(hi, o.hi);
    nan |= o.nan;
  }
};
__device__ __forceinline__ Acc acc_empty() { return {INFINITY, -INFINITY, 0}; }

}  // namespace hierbench::device
