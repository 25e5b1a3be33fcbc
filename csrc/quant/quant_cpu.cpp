// quantize / dequantize on the CPU.
//
// Groups of consecutive elements ("group", up to kChunk elements): one fused pass per group. The
// group is read once from memory by the min/max loop and re-read from L1/L2 by the quantize loop,
// which writes its codes straight into the group's own payload bytes (a group of >= 32 elements
// owns whole bytes at every bit width), so threads never share a byte.
//
// Per-tensor, per-channel and very large groups need every element of a group before the first
// code can be computed, so they take two passes: a parallel min/max (partials merged per group),
// then a parallel quantize pass over byte-aligned chunks of the flat tensor. A per-channel chunk
// looks its (lo, inv) up per element from a small table filled per sub-block (channels are
// strided, and with channel_dim = -1 they change every element).
//
// Vectorisation: every inner loop is an OpenMP SIMD loop of plain float/integer operations (no
// libm: rounding uses the 2^23 trick of quant_common.h), inlined into functions compiled for
// AVX-512, AVX2 and baseline x86-64 (HIERBENCH_TARGET_CLONES). scripts/check_vectorization.sh
// verifies this on the object file. Float contraction is off (-ffp-contract=off), so the results
// match the reference and the CUDA kernels bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../common/simd.h"
#include "cpu_common.h"
#include "quant_common.h"
#include "quant_cpu_avx512.h"

namespace hierbench::quant {
namespace {

using cpu::combine;
using cpu::kEmpty;
using cpu::load_f32;
using cpu::MinMax;
using cpu::minmax_range;
using cpu::store_f32;

// Every helper is HIERBENCH_INLINE (force-inlined into the target_clones entry points; see
// cpu_common.h).

constexpr int64_t kChunk = int64_t{1} << 16;  // elements per parallel task (byte-aligned)
constexpr int64_t kSub = 1024;                // codes staged in L1 before packing
constexpr int64_t kRunMin = 32;     // channel quantize: runs this long skip the per-element table
constexpr int64_t kColMin = 64;     // channel min/max: rows shorter than this go by column
constexpr int64_t kPrefetch = 1024;  // software prefetch distance of the fused group loop (bytes)

// ----------------------------------------------------------------------------------------------
// inner loops (templates, inlined into the target_clones functions below)
// ----------------------------------------------------------------------------------------------
// rint(t) for t in [0, 2^22), as the low bits of t + 2^23: the float addition rounds to nearest
// even and leaves the integer in the mantissa. One add instead of add, sub and convert; the
// result equals code_nearest(t) of quant_common.h.
HIERBENCH_INLINE uint32_t rint_bits(float t) { return f32_to_bits(t + kRoundMagic); }

// Codes of n elements with one (qlo, inv) into c[0..n). k: flat index of x[0] (for the
// generator).
//
// Round to nearest needs no clamp in a valid group: x >= lo gives t >= 0, and x <= hi gives
// t <= qmax * (1 + 4 * 2^-24) < qmax + 1/2 (three roundings in t, one in scale), so
// rint(t) == rint(min(t, qmax)), the reference's formula. Stochastic rounding clamps above (floor
// + 1 could pass qmax). kClampLow adds the lower clamp, which maps an invalid group's NaN
// (inf * 0) to code 0 (per-channel path, where invalid channels are not filtered out).
template <bool kClampLow = false, typename T>
HIERBENCH_INLINE void codes_scalar(const T* __restrict__ x, int64_t n, float qlo, float inv, float qmax,
                            bool stochastic, int64_t k, Keys keys, uint8_t* __restrict__ c) {
  if (!stochastic) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float t = (load_f32(x, i) - qlo) * inv;
      if constexpr (kClampLow) t = clamp_t(t, qmax);
      c[i] = static_cast<uint8_t>(rint_bits(t));
    }
    return;
  }
  const uint32_t ilo = static_cast<uint32_t>(k), ihi = static_cast<uint32_t>(k >> 32);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float t = (load_f32(x, i) - qlo) * inv;
    if constexpr (kClampLow) t = t > 0.0f ? t : 0.0f;
    t = t < qmax ? t : qmax;
    const float u = uniform24(ilo + static_cast<uint32_t>(i), ihi, keys);
    c[i] = static_cast<uint8_t>(code_stochastic(t, u));
  }
}

// The same with per-element parameters (per-channel), clamped on both sides.
template <typename T>
HIERBENCH_INLINE void codes_table(const T* __restrict__ x, int64_t n, const float* __restrict__ qlo,
                           const float* __restrict__ inv, float qmax, bool stochastic, int64_t k,
                           Keys keys, uint8_t* __restrict__ c) {
  if (!stochastic) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float t = clamp_t((load_f32(x, i) - qlo[i]) * inv[i], qmax);
      c[i] = static_cast<uint8_t>(rint_bits(t));
    }
    return;
  }
  const uint32_t ilo = static_cast<uint32_t>(k), ihi = static_cast<uint32_t>(k >> 32);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float t = clamp_t((load_f32(x, i) - qlo[i]) * inv[i], qmax);
    const float u = uniform24(ilo + static_cast<uint32_t>(i), ihi, keys);
    c[i] = static_cast<uint8_t>(code_stochastic(t, u));
  }
}

// Pack n codes (each < 2^bits) into ceil(n * bits / 8) bytes, lowest bits first. Full bytes go
// through 16/32-bit words so the loop vectorises; the tail byte (end of tensor only) is scalar.
HIERBENCH_INLINE void pack(const uint8_t* __restrict__ c, int64_t n, int bits, uint8_t* __restrict__ out) {
  if (bits == 4) {
    const int64_t full = n / 2;
#pragma omp simd
    for (int64_t j = 0; j < full; ++j) {
      uint16_t w;
      std::memcpy(&w, c + 2 * j, 2);
      out[j] = static_cast<uint8_t>((w & 0x0fu) | ((w >> 4) & 0xf0u));
    }
    if (n & 1) out[full] = c[n - 1];
  } else {  // bits == 2
    const int64_t full = n / 4;
#pragma omp simd
    for (int64_t j = 0; j < full; ++j) {
      uint32_t w;
      std::memcpy(&w, c + 4 * j, 4);
      out[j] = static_cast<uint8_t>((w & 0x03u) | ((w >> 6) & 0x0cu) | ((w >> 12) & 0x30u) |
                                    ((w >> 18) & 0xc0u));
    }
    if (n & 3) {
      uint8_t b = 0;
      for (int64_t m = 0; m < (n & 3); ++m) b |= static_cast<uint8_t>(c[4 * full + m] << (2 * m));
      out[full] = b;
    }
  }
}

// Unpack n codes from payload bytes into c (the inverse of pack; bits 2 or 4).
HIERBENCH_INLINE void unpack(const uint8_t* __restrict__ p, int64_t n, int bits, uint8_t* __restrict__ c) {
  if (bits == 4) {
    const int64_t full = n / 2;
#pragma omp simd
    for (int64_t j = 0; j < full; ++j) {
      const uint32_t b = p[j];
      const uint16_t w = static_cast<uint16_t>((b & 0x0fu) | ((b >> 4) << 8));
      std::memcpy(c + 2 * j, &w, 2);
    }
    if (n & 1) c[n - 1] = p[full] & 0x0fu;
  } else {
    const int64_t full = n / 4;
#pragma omp simd
    for (int64_t j = 0; j < full; ++j) {
      const uint32_t b = p[j];
      const uint32_t w =
          (b & 3u) | (((b >> 2) & 3u) << 8) | (((b >> 4) & 3u) << 16) | ((b >> 6) << 24);
      std::memcpy(c + 4 * j, &w, 4);
    }
    for (int64_t m = 0; m < (n & 3); ++m) c[4 * full + m] = (p[full] >> (2 * m)) & 3u;
  }
}

// Length of the sub-block starting at k (ending at most at `end`): at most kSub elements and
// never across a multiple of 2^32, so the generator's high index word is constant in each.
HIERBENCH_INLINE int64_t sub_len(int64_t k, int64_t end) {
  const int64_t to_wrap = (int64_t{1} << 32) - (k & 0xffffffffLL);
  return std::min({kSub, end - k, to_wrap});
}

// ----------------------------------------------------------------------------------------------
// quantize drivers
// ----------------------------------------------------------------------------------------------
struct QArgs {
  const void* x;
  Spec s;
  uint8_t* payload;
  float* scale;
  float* offset;
};

// Quantize + pack flat elements [k, k + n) of one group with parameters p; k is byte-aligned.
template <typename T>
HIERBENCH_INLINE void span_scalar(const QArgs& a, int64_t k, int64_t n, const GroupParams& p) {
  const T* x = static_cast<const T*>(a.x);
  const Spec& s = a.s;
  if (p.scale != p.scale) {  // invalid group (NaN/inf inside): codes 0
    std::memset(a.payload + k * s.bits / 8, 0, ceil_div(n * s.bits, 8));
    return;
  }
  const float qlo = p.qlo, inv = p.inv;
  alignas(64) uint8_t codes[kSub];
  for (int64_t kb = k, m = 0; kb < k + n; kb += m) {
    m = sub_len(kb, k + n);
    uint8_t* dst = a.payload + kb * s.bits / 8;
    uint8_t* c = s.bits == 8 ? dst : codes;
    codes_scalar(x + kb, m, qlo, inv, s.qmax, s.stochastic, kb, s.keys, c);
    if (s.bits != 8) pack(codes, m, s.bits, dst);
  }
}

// Min/max and parameters of group g, after prefetching the group kPrefetch bytes ahead of it:
// the hardware prefetcher alone leaves the core waiting on DRAM (groups are short, the min/max
// loop restarts the stream at each one).
template <typename T>
HIERBENCH_INLINE GroupParams fused_params(const QArgs& a, int64_t g) {
  const T* x = static_cast<const T*>(a.x);
  const int64_t begin = g * a.s.group_size;
  const int64_t n = std::min(a.s.group_size, a.s.numel - begin);
  const char* ahead = reinterpret_cast<const char*>(x + begin) + kPrefetch;
  for (int64_t off = 0; off < n * int64_t{sizeof(T)}; off += 64) __builtin_prefetch(ahead + off);
  const MinMax m = minmax_range(x + begin, n);
  return group_params(m.lo, m.hi, m.nan, n == 0, a.s.qmax);
}

// Full groups of a compile-time size N (the common group sizes), round to nearest: the same
// computation as groups_fused below, but every loop has a constant trip count, so the compiler
// unrolls it with no remainder code and no per-group loop set-up.
template <int64_t N, typename T>
HIERBENCH_INLINE GroupParams fixed_params(const T* x, float qmax) {
  const char* ahead = reinterpret_cast<const char*>(x) + kPrefetch;
  for (int64_t off = 0; off < N * int64_t{sizeof(T)}; off += 64) __builtin_prefetch(ahead + off);
  const MinMax m = minmax_range(x, N);
  return group_params(m.lo, m.hi, m.nan, false, qmax);
}

template <int64_t N, typename T>
HIERBENCH_INLINE void groups_fixed(const QArgs& a, int64_t g0, int64_t g1) {
  const Spec& s = a.s;
  const T* x = static_cast<const T*>(a.x);
  const int bits = s.bits;
  GroupParams next = fixed_params<N>(x + g0 * N, s.qmax);
  for (int64_t g = g0; g < g1; ++g) {
    const GroupParams p = next;
    if (g + 1 < g1) next = fixed_params<N>(x + (g + 1) * N, s.qmax);
    a.scale[g] = p.scale;
    a.offset[g] = p.offset;
    uint8_t* dst = a.payload + g * N * bits / 8;
    if (p.scale != p.scale) {  // invalid group (NaN/inf inside): codes 0
      std::memset(dst, 0, N * bits / 8);
      continue;
    }
    alignas(64) uint8_t codes[N];
    uint8_t* c = bits == 8 ? dst : codes;
    codes_scalar(x + g * N, N, p.qlo, p.inv, s.qmax, false, 0, s.keys, c);
    if (bits != 8) pack(codes, N, bits, dst);
  }
}

// Groups [g0, g1) of a "group" quantization, fused: min/max, parameters, codes, pack. Software
// pipelined by one group: the parameters of group g + 1 (two dependent divisions) are computed
// before the codes of group g, so their latency overlaps the codes loop. Full groups of the
// common sizes with round-to-nearest take the constant-size path above.
template <typename T>
HIERBENCH_INLINE void groups_fused(const QArgs& a, int64_t g0, int64_t g1) {
  const Spec& s = a.s;
  if (!s.stochastic) {
    const int64_t full_end = std::min(g1, s.numel / s.group_size);
    if (full_end > g0) {
      bool done = true;
      switch (s.group_size) {
        case 32: groups_fixed<32, T>(a, g0, full_end); break;
        case 64: groups_fixed<64, T>(a, g0, full_end); break;
        case 128: groups_fixed<128, T>(a, g0, full_end); break;
        case 256: groups_fixed<256, T>(a, g0, full_end); break;
        default: done = false;
      }
      if (done) g0 = full_end;
    }
    if (g0 >= g1) return;
  }
  GroupParams next = fused_params<T>(a, g0);
  for (int64_t g = g0; g < g1; ++g) {
    const GroupParams p = next;
    if (g + 1 < g1) next = fused_params<T>(a, g + 1);
    const int64_t begin = g * s.group_size;
    a.scale[g] = p.scale;
    a.offset[g] = p.offset;
    span_scalar<T>(a, begin, std::min(s.group_size, s.numel - begin), p);
  }
}

// Per-channel quantize of flat elements [k, k + n): the channel of element e is
// (e / inner) % channels, constant over runs of `inner` elements.
template <typename T>
HIERBENCH_INLINE void span_channel(const QArgs& a, int64_t k, int64_t n, const float* qlo_c,
                         const float* inv_c) {
  const T* x = static_cast<const T*>(a.x);
  const Spec& s = a.s;
  alignas(64) uint8_t codes[kSub];
  alignas(64) float qlo[kSub];
  alignas(64) float inv[kSub];
  for (int64_t kb = k, m = 0; kb < k + n; kb += m) {
    m = sub_len(kb, k + n);
    const int64_t row = kb / s.inner;
    int64_t pos = kb - row * s.inner;  // position inside the run
    int64_t ch = row % s.channels;
    uint8_t* dst = a.payload + kb * s.bits / 8;
    uint8_t* c = s.bits == 8 ? dst : codes;
    if (s.inner - pos >= m) {  // one channel for the whole sub-block
      codes_scalar<true>(x + kb, m, qlo_c[ch], inv_c[ch], s.qmax, s.stochastic, kb, s.keys, c);
    } else if (s.inner >= kRunMin) {  // a few long runs: each with its channel's scalars
      for (int64_t i = 0; i < m;) {
        const int64_t run = std::min(m - i, s.inner - pos);
        codes_scalar<true>(x + kb + i, run, qlo_c[ch], inv_c[ch], s.qmax, s.stochastic, kb + i,
                           s.keys, c + i);
        i += run;
        pos = 0;
        ch = ch + 1 == s.channels ? 0 : ch + 1;
      }
    } else {
      for (int64_t i = 0; i < m;) {
        const int64_t run = std::min(m - i, s.inner - pos);
        std::fill_n(qlo + i, run, qlo_c[ch]);
        std::fill_n(inv + i, run, inv_c[ch]);
        i += run;
        pos = 0;
        ch = ch + 1 == s.channels ? 0 : ch + 1;
      }
      codes_table(x + kb, m, qlo, inv, s.qmax, s.stochastic, kb, s.keys, c);
    }
    if (s.bits != 8) pack(codes, m, s.bits, dst);
  }
}

// Elementwise, NaN-sticky min/max of `rows` rows of n elements (row stride `stride`) into
// lo[0..n), hi[0..n): the per-channel reduction when channels are short runs.
template <typename T>
HIERBENCH_INLINE void columns_minmax(const T* __restrict__ x, int64_t rows, int64_t stride, int64_t n,
                           float* __restrict__ lo, float* __restrict__ hi) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* p = x + r * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float v = load_f32(p, i);
      const bool nan = v != v;
      lo[i] = (v < lo[i]) | nan ? v : lo[i];
      hi[i] = (v > hi[i]) | nan ? v : hi[i];
    }
  }
}

// ----------------------------------------------------------------------------------------------
// dequantize drivers
// ----------------------------------------------------------------------------------------------
struct DArgs {
  const uint8_t* payload;
  const float* scale;
  const float* offset;
  void* out;
  Spec s;
};

// The codes of flat elements [kb, kb + m): the payload itself (8 bits), or unpacked into codes.
HIERBENCH_INLINE const uint8_t* codes_at(const DArgs& a, int64_t kb, int64_t m, uint8_t* codes) {
  const uint8_t* src = a.payload + kb * a.s.bits / 8;
  if (a.s.bits == 8) return src;
  unpack(src, m, a.s.bits, codes);
  return codes;
}

template <typename O>
HIERBENCH_INLINE void span_dequant_scalar(const DArgs& a, int64_t k, int64_t n, float lo, float scale) {
  O* out = static_cast<O*>(a.out);
  alignas(64) uint8_t codes[kSub];
  for (int64_t kb = k, m = 0; kb < k + n; kb += m) {
    m = sub_len(kb, k + n);
    const uint8_t* c = codes_at(a, kb, m, codes);
    O* o = out + kb;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) store_f32(o, i, lo + static_cast<float>(c[i]) * scale);
  }
}

template <typename O>
HIERBENCH_INLINE void span_dequant_channel(const DArgs& a, int64_t k, int64_t n) {
  O* out = static_cast<O*>(a.out);
  const Spec& s = a.s;
  alignas(64) uint8_t codes[kSub];
  alignas(64) float lo[kSub];
  alignas(64) float sc[kSub];
  for (int64_t kb = k, m = 0; kb < k + n; kb += m) {
    m = sub_len(kb, k + n);
    const uint8_t* c = codes_at(a, kb, m, codes);
    const int64_t row = kb / s.inner;
    int64_t pos = kb - row * s.inner;
    int64_t ch = row % s.channels;
    O* o = out + kb;
    if (s.inner - pos >= m) {
      const float l = a.offset[ch], f = a.scale[ch];
#pragma omp simd
      for (int64_t i = 0; i < m; ++i) store_f32(o, i, l + static_cast<float>(c[i]) * f);
      continue;
    }
    for (int64_t i = 0; i < m;) {
      const int64_t run = std::min(m - i, s.inner - pos);
      std::fill_n(lo + i, run, a.offset[ch]);
      std::fill_n(sc + i, run, a.scale[ch]);
      i += run;
      pos = 0;
      ch = ch + 1 == s.channels ? 0 : ch + 1;
    }
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) store_f32(o, i, lo[i] + static_cast<float>(c[i]) * sc[i]);
  }
}

template <typename O>
HIERBENCH_INLINE void groups_dequant(const DArgs& a, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t begin = g * a.s.group_size;
    const int64_t n = std::min(a.s.group_size, a.s.numel - begin);
    span_dequant_scalar<O>(a, begin, n, a.offset[g], a.scale[g]);
  }
}

// ----------------------------------------------------------------------------------------------
// the target_clones entry points: one per (function, dtype); the templates above inline into them
// ----------------------------------------------------------------------------------------------
#define HB_QUANT_CLONES(SUFFIX, T)                                                               \
  HIERBENCH_TARGET_CLONES MinMax minmax_##SUFFIX(const void* x, int64_t n) {                      \
    return minmax_range(static_cast<const T*>(x), n);                                            \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void groups_fused_##SUFFIX(const QArgs& a, int64_t g0, int64_t g1) {    \
    groups_fused<T>(a, g0, g1);                                                                  \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void span_scalar_##SUFFIX(const QArgs& a, int64_t k, int64_t n,         \
                                                    const GroupParams& p) {                      \
    span_scalar<T>(a, k, n, p);                                                                  \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void span_channel_##SUFFIX(const QArgs& a, int64_t k, int64_t n,        \
                                                     const float* qlo, const float* inv) {       \
    span_channel<T>(a, k, n, qlo, inv);                                                          \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void columns_minmax_##SUFFIX(const void* x, int64_t rows,              \
                                                       int64_t stride, int64_t n, float* lo,     \
                                                       float* hi) {                              \
    columns_minmax(static_cast<const T*>(x), rows, stride, n, lo, hi);                           \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void span_dequant_scalar_##SUFFIX(const DArgs& a, int64_t k, int64_t n, \
                                                            float lo, float scale) {             \
    span_dequant_scalar<T>(a, k, n, lo, scale);                                                  \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void span_dequant_channel_##SUFFIX(const DArgs& a, int64_t k,          \
                                                             int64_t n) {                        \
    span_dequant_channel<T>(a, k, n);                                                            \
  }                                                                                              \
  HIERBENCH_TARGET_CLONES void groups_dequant_##SUFFIX(const DArgs& a, int64_t g0, int64_t g1) {  \
    groups_dequant<T>(a, g0, g1);                                                                \
  }

HB_QUANT_CLONES(f32, float)
HB_QUANT_CLONES(bf16, at::BFloat16)
HB_QUANT_CLONES(f16, at::Half)
#undef HB_QUANT_CLONES

// Runtime dtype -> clone. One table per dtype keeps the drivers free of switches.
struct Kernels {
  MinMax (*minmax)(const void*, int64_t);
  void (*groups_fused)(const QArgs&, int64_t, int64_t);
  void (*span_scalar)(const QArgs&, int64_t, int64_t, const GroupParams&);
  void (*span_channel)(const QArgs&, int64_t, int64_t, const float*, const float*);
  void (*columns_minmax)(const void*, int64_t, int64_t, int64_t, float*, float*);
  void (*span_dequant_scalar)(const DArgs&, int64_t, int64_t, float, float);
  void (*span_dequant_channel)(const DArgs&, int64_t, int64_t);
  void (*groups_dequant)(const DArgs&, int64_t, int64_t);
};

#define HB_KERNELS(SUFFIX)                                                                        \
  Kernels {                                                                                       \
    &minmax_##SUFFIX, &groups_fused_##SUFFIX, &span_scalar_##SUFFIX, &span_channel_##SUFFIX,      \
        &columns_minmax_##SUFFIX, &span_dequant_scalar_##SUFFIX, &span_dequant_channel_##SUFFIX, \
        &groups_dequant_##SUFFIX                                                                  \
  }

const Kernels& kernels_for(at::ScalarType t) {
  static const Kernels f32 = HB_KERNELS(f32), bf16 = HB_KERNELS(bf16), f16 = HB_KERNELS(f16);
  switch (t) {
    case at::kFloat:
      return f32;
    case at::kBFloat16:
      return bf16;
    default:
      return f16;
  }
}
#undef HB_KERNELS

// ----------------------------------------------------------------------------------------------
// quantize: host side
// ----------------------------------------------------------------------------------------------

// Two-pass quantization of groups too large to fuse (per-tensor, group_size > kChunk): a parallel
// min/max over (group, chunk) tasks, then a parallel quantize over the same tasks.
// min/max of n elements: the AVX-512 kernel where enabled, else the portable loop.
MinMax minmax_any(const Kernels& kr, avx512::Input in, const void* x, int64_t n) {
  if (avx512::enabled() && in != avx512::Input::kOther) {
    const avx512::Range r = avx512::minmax(x, in, n);
    return {r.lo, r.hi, r.nan ? 1 : 0};
  }
  return kr.minmax(x, n);
}

void quantize_chunked(const Kernels& kr, const QArgs& a, int64_t esize, avx512::Input in) {
  const Spec& s = a.s;
  const int64_t chunks = ceil_div(s.group_size, kChunk);
  const int64_t tasks = s.groups * chunks;
  const char* base = static_cast<const char*>(a.x);
  auto task_range = [&](int64_t task, int64_t* begin, int64_t* n) {
    const int64_t g = task / chunks, c = task % chunks;
    const int64_t group_end = std::min(s.numel, (g + 1) * s.group_size);
    *begin = g * s.group_size + c * kChunk;
    *n = std::max<int64_t>(0, std::min(kChunk, group_end - *begin));
  };
  std::vector<MinMax> partial(tasks, kEmpty);
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t begin, n;
      task_range(t, &begin, &n);
      if (n > 0) partial[t] = minmax_any(kr, in, base + begin * esize, n);
    }
  });
  std::vector<GroupParams> params(s.groups);
  for (int64_t g = 0; g < s.groups; ++g) {
    MinMax m = partial[g * chunks];
    for (int64_t c = 1; c < chunks; ++c) m = combine(m, partial[g * chunks + c]);
    const bool empty = g * s.group_size >= s.numel;
    params[g] = group_params(m.lo, m.hi, m.nan, empty, s.qmax);
    a.scale[g] = params[g].scale;
    a.offset[g] = params[g].offset;
  }
  const bool fast = avx512::span_used_for(in, s.bits, s.stochastic);
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t begin, n;
      task_range(t, &begin, &n);
      const GroupParams& p = params[t / chunks];
      if (n > 0 && fast && p.scale == p.scale) {  // begin is a multiple of kChunk: byte-aligned
        const int64_t done = avx512::quantize_span(base + begin * esize, in, n, p.qlo, p.inv,
                                                   s.bits, a.payload + begin * s.bits / 8);
        begin += done;
        n -= done;
      }
      if (n > 0) kr.span_scalar(a, begin, n, p);
    }
  });
}

// Per-channel min/max of x viewed as (outer, channels, inner), NaN tracked.
std::vector<MinMax> channel_minmax(const Kernels& kr, const QArgs& a, int64_t esize,
                                   avx512::Input in) {
  const Spec& s = a.s;
  const char* base = static_cast<const char*>(a.x);
  std::vector<MinMax> out(s.channels, kEmpty);
  if (s.numel == 0) return out;
  if (s.inner >= kColMin) {
    // Rows (o, c) of `inner` contiguous elements, cut into pieces of at most kChunk.
    const int64_t rows = s.outer * s.channels;
    const int64_t pieces = ceil_div(s.inner, kChunk);
    std::vector<MinMax> partial(rows * pieces, kEmpty);
    const int64_t grain = std::max<int64_t>(1, kChunk / s.inner);
    at::parallel_for(0, rows * pieces, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r = t / pieces, p = t % pieces;
        const int64_t begin = p * kChunk;
        const int64_t n = std::min(kChunk, s.inner - begin);
        partial[t] = minmax_any(kr, in, base + (r * s.inner + begin) * esize, n);
      }
    });
    at::parallel_for(0, s.channels, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        MinMax m = kEmpty;
        for (int64_t o = 0; o < s.outer; ++o)
          for (int64_t p = 0; p < pieces; ++p)
            m = combine(m, partial[(o * s.channels + c) * pieces + p]);
        out[c] = m;
      }
    });
    return out;
  }
  // Short runs: reduce columns of the (outer, L = channels * inner) matrix elementwise, in tiles
  // of (outer blocks) x (column segments), then fold each channel's `inner` columns.
  const int64_t L = s.channels * s.inner;
  const int64_t threads = at::get_num_threads();
  // Blocks of at least 8 rows: the partial tables (2 floats per column per block) stay within
  // the input's own size.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(2 * threads, s.outer / 8));
  const int64_t rows_per = ceil_div(s.outer, blocks);
  const int64_t seg = std::max<int64_t>(4096, ceil_div(L, 4 * threads));
  const int64_t segs = ceil_div(L, seg);
  std::vector<float> lo(blocks * L, std::numeric_limits<float>::infinity());
  std::vector<float> hi(blocks * L, -std::numeric_limits<float>::infinity());
  at::parallel_for(0, blocks * segs, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / segs, sg = t % segs;
      const int64_t o0 = b * rows_per, o1 = std::min(s.outer, o0 + rows_per);
      const int64_t l0 = sg * seg, n = std::min(seg, L - l0);
      if (o1 > o0)
        kr.columns_minmax(base + (o0 * L + l0) * esize, o1 - o0, L, n, lo.data() + b * L + l0,
                          hi.data() + b * L + l0);
    }
  });
  at::parallel_for(0, s.channels, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      MinMax m = kEmpty;
      for (int64_t b = 0; b < blocks; ++b) {
        for (int64_t j = 0; j < s.inner; ++j) {
          const float l = lo[b * L + c * s.inner + j], h = hi[b * L + c * s.inner + j];
          m.nan |= (l != l) | (h != h);
          m = combine(m, MinMax{l, h, 0});
        }
      }
      out[c] = m;
    }
  });
  return out;
}

void quantize_channel(const Kernels& kr, const QArgs& a, int64_t esize, avx512::Input in) {
  const Spec& s = a.s;
  const std::vector<MinMax> mm = channel_minmax(kr, a, esize, in);
  std::vector<float> qlo(s.channels), inv(s.channels);
  const bool empty = s.outer * s.inner == 0;
  for (int64_t c = 0; c < s.channels; ++c) {
    const GroupParams p = group_params(mm[c].lo, mm[c].hi, mm[c].nan, empty, s.qmax);
    a.scale[c] = p.scale;
    a.offset[c] = p.offset;
    qlo[c] = p.qlo;
    inv[c] = p.inv;
  }
  if (avx512::span_used_for(in, s.bits, s.stochastic) && s.inner >= 64 && s.inner % 64 == 0) {
    // Rows (o, c) of `inner` contiguous elements (a multiple of 64: whole vectors, whole bytes),
    // each with its channel's scalars; an invalid channel's rows get codes 0.
    const int64_t rows = s.outer * s.channels;
    const int64_t row_bytes = s.inner * s.bits / 8;
    const char* base = static_cast<const char*>(a.x);
    at::parallel_for(0, rows, std::max<int64_t>(1, kChunk / s.inner), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % s.channels;
        uint8_t* dst = a.payload + r * row_bytes;
        if (a.scale[c] != a.scale[c])
          std::memset(dst, 0, row_bytes);
        else
          avx512::quantize_span(base + r * s.inner * esize, in, s.inner, qlo[c], inv[c], s.bits,
                                dst);
      }
    });
    return;
  }
  const int64_t chunks = ceil_div(s.numel, kChunk);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk;
      kr.span_channel(a, begin, std::min(kChunk, s.numel - begin), qlo.data(), inv.data());
    }
  });
}

void quantize_out_cpu(const at::Tensor& x_in, int64_t bits, c10::string_view granularity,
                      int64_t group_size, int64_t channel_dim, c10::string_view rounding,
                      int64_t seed, at::Tensor& payload, at::Tensor& scale, at::Tensor& offset) {
  check_float_input(x_in, "x");
  Spec s = make_spec(x_in.sizes(), bits, granularity, group_size, channel_dim);
  s.stochastic = parse_rounding(rounding);
  s.keys = seed_keys(seed);
  check_quant_outputs(s, payload, scale, offset, x_in.device());
  if (s.groups == 0) return;
  const at::Tensor x = x_in.contiguous();
  const QArgs a{x.const_data_ptr(), s, payload.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                offset.data_ptr<float>()};
  const Kernels& kr = kernels_for(x.scalar_type());
  const avx512::Input in = avx512::input_of(x.scalar_type());
  if (s.gran == Granularity::kChannel) {
    quantize_channel(kr, a, x.element_size(), in);
  } else if (s.group_size <= kChunk) {
    const int64_t grain = std::max<int64_t>(1, kChunk / s.group_size);
    int64_t g0 = 0;  // groups before g0 are done by the AVX-512 kernel
    if (avx512::used_for(in, s.gran == Granularity::kGroup, s.group_size, s.bits, s.stochastic,
                         s.numel)) {
      // Blocks of 16 full groups; the rest (at most 15 groups and a partial one) go below.
      const int64_t blocks = s.numel / s.group_size / 16;
      at::parallel_for(0, blocks, std::max<int64_t>(1, grain / 16), [&](int64_t b0, int64_t b1) {
        avx512::quantize_groups(a.x, in, s.group_size, s.bits, 16 * b0, 16 * b1, a.payload,
                                a.scale, a.offset);
      });
      g0 = 16 * blocks;
    }
    if (g0 < s.groups)
      at::parallel_for(g0, s.groups, grain,
                       [&](int64_t b0, int64_t b1) { kr.groups_fused(a, b0, b1); });
  } else {
    quantize_chunked(kr, a, x.element_size(), in);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_cpu(
    const at::Tensor& x, int64_t bits, c10::string_view granularity, int64_t group_size,
    int64_t channel_dim, c10::string_view rounding, int64_t seed) {
  check_float_input(x, "x");
  const Spec s = make_spec(x.sizes(), bits, granularity, group_size, channel_dim);
  parse_rounding(rounding);
  auto payload = at::empty({s.nbytes}, x.options().dtype(at::kByte));
  auto scale = at::empty({s.groups}, x.options().dtype(at::kFloat));
  auto offset = at::empty({s.groups}, x.options().dtype(at::kFloat));
  quantize_out_cpu(x, bits, granularity, group_size, channel_dim, rounding, seed, payload, scale,
                   offset);
  return {payload, scale, offset};
}

void quantize_out_cpu_op(const at::Tensor& x, int64_t bits, c10::string_view granularity,
                         int64_t group_size, int64_t channel_dim, c10::string_view rounding,
                         int64_t seed, at::Tensor payload, at::Tensor scale, at::Tensor offset) {
  quantize_out_cpu(x, bits, granularity, group_size, channel_dim, rounding, seed, payload, scale,
                   offset);
}

// ----------------------------------------------------------------------------------------------
// dequantize: host side
// ----------------------------------------------------------------------------------------------
void dequantize_out_cpu(const at::Tensor& payload, const at::Tensor& scale,
                        const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                        c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                        at::Tensor& out) {
  const Spec s = make_spec(shape, bits, granularity, group_size, channel_dim);
  check_dequant_inputs(s, payload, scale, offset);
  check_out_dtype(out.scalar_type(), "out");
  check_out(out, "out", shape, out.scalar_type(), payload.device());
  if (s.numel == 0) return;
  const at::Tensor sc = scale.contiguous(), of = offset.contiguous(), pl = payload.contiguous();
  const DArgs a{pl.const_data_ptr<uint8_t>(), sc.const_data_ptr<float>(),
                of.const_data_ptr<float>(), out.data_ptr(), s};
  const Kernels& kr = kernels_for(out.scalar_type());
  if (s.gran == Granularity::kGroup) {
    const int64_t grain = std::max<int64_t>(1, kChunk / s.group_size);
    at::parallel_for(0, s.groups, grain,
                     [&](int64_t g0, int64_t g1) { kr.groups_dequant(a, g0, g1); });
    return;
  }
  const int64_t chunks = ceil_div(s.numel, kChunk);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, n = std::min(kChunk, s.numel - begin);
      if (s.gran == Granularity::kTensor)
        kr.span_dequant_scalar(a, begin, n, a.offset[0], a.scale[0]);
      else
        kr.span_dequant_channel(a, begin, n);
    }
  });
}

at::Tensor dequantize_cpu(const at::Tensor& payload, const at::Tensor& scale,
                          const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                          c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                          at::ScalarType dtype) {
  check_out_dtype(dtype, "dtype");
  make_spec(shape, bits, granularity, group_size, channel_dim);  // validate before allocating
  auto out = at::empty(shape, payload.options().dtype(dtype));
  dequantize_out_cpu(payload, scale, offset, shape, bits, granularity, group_size, channel_dim,
                     out);
  return out;
}

void dequantize_out_cpu_op(const at::Tensor& payload, const at::Tensor& scale,
                           const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                           c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                           at::Tensor out) {
  dequantize_out_cpu(payload, scale, offset, shape, bits, granularity, group_size, channel_dim,
                     out);
}

}  // namespace

TORCH_LIBRARY_IMPL(hierbench, CPU, m) {
  m.impl("quantize", &quantize_cpu);
  m.impl("quantize.out", &quantize_out_cpu_op);
  m.impl("dequantize", &dequantize_cpu);
  m.impl("dequantize.out", &dequantize_out_cpu_op);
}

}  // namespace hierbench::quant
