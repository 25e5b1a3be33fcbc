// The hand-written AVX-512 quantize kernel (quant_cpu_avx512.cpp), which quant_cpu.cpp calls for
// float32/float16/bfloat16 input of up to 16 MiB in full groups of 32, 64, 128 or 256 elements
// with round to nearest.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace hierbench::quant::avx512 {

// Whether this CPU has what the kernel uses (AVX-512 F/BW/DQ/VL/VBMI); false off x86-64 GCC.
bool supported();

// Whether the kernel is in use (supported() and not switched off by set_enabled(false), or by
// HIERBENCH_CPU_KERNEL=portable in the environment, read at the first call).
bool enabled();

// Switch the kernel on or off (tests and benchmarks compare it with the portable loops). Turning
// it on where it is not supported() leaves it off. Returns the previous state.
bool set_enabled(bool on);

// Inputs larger than this come from DRAM, where quantize is memory-bound whatever the kernel and
// the portable loops (which software-prefetch each group 1 KiB ahead) measured 3-9 % faster than
// this kernel (256 MiB, 2 threads, paired timings; prefetching here made it worse, as it competes
// with the hardware prefetcher): they take those inputs.
constexpr int64_t kMaxInputBytes = int64_t{16} << 20;

// The input dtypes the kernel reads.
enum class Input { kFloat32, kFloat16, kBFloat16, kOther };

inline Input input_of(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return Input::kFloat32;
    case c10::ScalarType::Half: return Input::kFloat16;
    case c10::ScalarType::BFloat16: return Input::kBFloat16;
    default: return Input::kOther;
  }
}

// Whether quantize on the CPU gives this call's full blocks of 16 groups to the kernel (the
// remaining 0-15 groups and a partial last group always take the portable loops): enabled(),
// float32/float16/bfloat16 input of at most kMaxInputBytes holding at least 16 full groups,
// group granularity with a group size of 32, 64, 128 or 256, round to nearest, 2/4/8 bits. The one
// place that decides it (quant_cpu.cpp dispatches on it, hierbench.ops.cpu_kernel(x, cfg) reports
// it).
bool used_for(Input in, bool group_granularity, int64_t group_size, int bits, bool stochastic,
              int64_t numel);

// Spans quantized with one (lo, inv) (per-tensor, per-channel, groups over 64 Ki elements),
// round to nearest: whether the kernel takes them (enabled(), float32/float16/bfloat16 input,
// round to nearest, 2/4/8 bits; any size: these are streaming loops, which the hardware
// prefetcher follows).
bool span_used_for(Input in, int bits, bool stochastic);

// min and max of n elements, and whether one is NaN (then lo/hi are unspecified). Only where
// enabled() (also for stochastic rounding: the min/max is the same).
struct Range {
  float lo, hi;
  bool nan;
};
Range minmax(const void* x, Input in, int64_t n);

// The codes of the first n / 64 * 64 elements of x with t = (x - qlo) * inv, rounded to nearest
// even, packed at dst (bits 2/4/8); returns how many elements it did (the caller does the rest).
// (qlo, inv) must be a valid range's (group_params of quant_common.h): x in [lo, hi].
int64_t quantize_span(const void* x, Input in, int64_t n, float qlo, float inv, int bits,
                      uint8_t* dst);

// Quantize full groups [g0, g1) of x (g1 - g0 a multiple of 16; every group complete) to `bits`
// bits with round to nearest: the payload bytes of those groups, scale[g] and offset[g]. Only
// where used_for(...).
void quantize_groups(const void* x, Input in, int64_t group_size, int bits, int64_t g0,
                     int64_t g1, uint8_t* payload, float* scale, float* offset);

}  // namespace hierbench::quant::avx512
