// Hand-written AVX-512 quantize for the hot case: float32, float16 or bfloat16 input of up to
// 16 MiB (larger inputs stream from DRAM and go to the portable loops: kMaxInputBytes), full
// groups of 32/64/128/256, round to nearest, 2/4/8 bits. fp16/bf16 are widened exactly on load. Same results, bit for bit, as the portable loops of
// quant_cpu.cpp and the reference (tests/ops/test_cpu_kernels.py holds both to it).
//
// Why a separate kernel: the portable fused loop handles one group at a time, and each group
// ends in two horizontal reductions (min and max across 16 lanes) and two dependent divisions
// (scale, 1 / scale) before its first code can be computed; GCC also folds each load into every
// instruction that uses it (a compare, a min and a max: three 64-byte loads per vector, and
// Zen 4 takes one per cycle). Here the groups are taken 16 at a time (a block of 2-16 KiB, in
// L1):
//   A. each group's vectors are loaded once (kept in registers) and folded to one lane-wise min
//      and max vector; NaN is found by an ordered compare of pairs of vectors, chained through
//      the mask register;
//   B. the 16 min vectors are reduced together by a transposing shuffle tree (45 shuffles and
//      mins for 16 groups, instead of 8 per group), likewise the max vectors, so that lane g
//      holds group g; the parameters of the 16 groups are computed in one vector (two vector
//      divisions for 16 groups);
//   C. each group's elements are re-read from L1, mapped to codes and packed with byte permutes
//      (vpermt2b: two vectors of 32-bit codes into 32 bytes) into full 64-byte stores; 4 and 2
//      bits merge pairs / quads of byte codes with shifts and narrow them with vpmovwb / vpmovdb.
// Tried and dropped (slower here): interleaving phase C of one block with phase A of the next;
// integer order keys instead of float min/max (they make the NaN test free but cost more than
// it); vpmovdb instead of vpermt2b for 8 bits.
//
// The arithmetic is the reference's: t = (x - lo) * inv, rounded to nearest even by adding 2^23
// (quant_common.h: rint_bits), scale = ((hi - lo) + 0) / qmax, inv = 1 / scale (0 when scale is
// below FLT_MIN), offset = lo + 0, and an invalid group (NaN or inf inside, or a range
// overflowing) stores NaN and codes 0. Only the order of the min/max comparisons differs, which
// could change nothing but the sign of a zero min or max: the codes are the same either way, and
// the "+ 0" (in group_params too) stores +0 for both zeros, so all kernels write the same bits.
//
// Compiled with function-level target attributes and called only when the CPU reports the
// features (supported()), so the library still loads and runs on any x86-64.
#include "quant_cpu_avx512.h"

#include <atomic>
#include <cfloat>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own intrinsics headers (the deliberately undefined register of
// _mm512_undefined_ps, in the masked forms) once they are inlined at -O3: not this file's code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define HB_AVX512_KERNEL 1
#define HB_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"), always_inline)) inline
#define HB_AVX512_ENTRY __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))
#else
#define HB_AVX512_KERNEL 0
#endif

namespace hierbench::quant::avx512 {

#if HB_AVX512_KERNEL

bool supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vbmi");
  }();
  return ok;
}

namespace {

constexpr int kBlock = 16;  // groups per block: one lane each

struct Min {
  HB_AVX512 static __m512 op(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
};
struct Max {
  HB_AVX512 static __m512 op(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
};

// Slot of group g in the array fed to reduce16: the shuffle tree leaves the value of slot
// 4 * j + k in lane 4 * k + j, so group g goes to slot (g % 4) * 4 + g / 4 to come out in lane g.
constexpr int slot(int g) { return (g % 4) * 4 + g / 4; }

// v[16] -> one vector whose lane l is Op over the 16 lanes of the vector of group l.
template <class Op>
HB_AVX512 __m512 reduce16(const __m512* v) {
  __m512 w[8], u[4], s[2];
  for (int i = 0; i < 8; ++i) {  // 256-bit halves: [v0 | v1] with 8 partials each
    const __m512 a = _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 b = _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2));
    w[i] = Op::op(a, b);
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit lanes: four slots with 4 partials each
    const __m512 a = _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 b = _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1));
    u[i] = Op::op(a, b);
  }
  for (int i = 0; i < 2; ++i) {  // within 128-bit lanes: 2 partials
    const __m512 a = _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 b = _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2));
    s[i] = Op::op(a, b);
  }
  const __m512 a = _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0));
  const __m512 b = _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1));
  return Op::op(a, b);
}

// Fold V vectors to one, pairwise (a tree: short dependency chains).
template <int V, class Op>
HB_AVX512 __m512 fold(const __m512* v) {
  if constexpr (V == 1) {
    return v[0];
  } else {
    __m512 h[V / 2];
    for (int i = 0; i < V / 2; ++i) h[i] = Op::op(v[2 * i], v[2 * i + 1]);
    return fold<V / 2, Op>(h);
  }
}

// The input types: 16 elements -> 16 floats, exactly (fp16 and bf16 widen without rounding).
struct F32 {
  using T = float;
  HB_AVX512 static __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
  HB_AVX512 static __m512 load16_masked(const float* p, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, p);
  }
};
struct F16 {  // vcvtph2ps: exact, subnormals included (MXCSR's DAZ does not apply to it)
  using T = uint16_t;
  HB_AVX512 static __m512 load16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  HB_AVX512 static __m512 load16_masked(const uint16_t* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};
struct BF16 {  // the bf16 bits are the top half of the float32 bits
  using T = uint16_t;
  HB_AVX512 static __m512 load16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  HB_AVX512 static __m512 load16_masked(const uint16_t* p, __mmask16 m) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
};

// Codes of 16 elements as the low byte of each 32-bit lane: rint((x - qlo) * inv) + 2^23.
template <class In>
HB_AVX512 __m512i codes16(const typename In::T* x, __m512 qlo, __m512 inv) {
  const __m512 t = _mm512_mul_ps(_mm512_sub_ps(In::load16(x), qlo), inv);
  return _mm512_castps_si512(_mm512_add_ps(t, _mm512_set1_ps(8388608.0f)));
}

// 64 codes (4 vectors of 16 codes in the low byte of each lane) -> 64 bytes.
template <class In>
HB_AVX512 __m512i bytes64(const typename In::T* x, __m512 qlo, __m512 inv, __m512i idx) {
  const __m512i lo =
      _mm512_permutex2var_epi8(codes16<In>(x, qlo, inv), idx, codes16<In>(x + 16, qlo, inv));
  const __m512i hi =
      _mm512_permutex2var_epi8(codes16<In>(x + 32, qlo, inv), idx, codes16<In>(x + 48, qlo, inv));
  return _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1);
}

// 64 codes (bytes, each < 2^bits) -> 64 * bits / 8 payload bytes, lowest bits first.
template <int Bits>
HB_AVX512 void store_packed(uint8_t* dst, __m512i c) {
  if constexpr (Bits == 8) {
    _mm512_storeu_si512(dst, c);
  } else if constexpr (Bits == 4) {  // byte pairs (a, b) -> a | b << 4
    const __m512i w = _mm512_or_si512(c, _mm512_srli_epi16(c, 4));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi16_epi8(w));
  } else {  // Bits == 2: byte quads (a, b, c, d) -> a | b << 2 | c << 4 | d << 6
    __m512i w = _mm512_or_si512(c, _mm512_srli_epi32(c, 6));  // byte 0: a | b<<2, byte 2: c | d<<2
    w = _mm512_or_si512(w, _mm512_srli_epi32(w, 12));         // byte 0: a | b<<2 | c<<4 | d<<6
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(w));
  }
}

// One block of 16 full groups of N elements, starting at group g.
template <class In, int N, int Bits>
HB_AVX512 void block(const typename In::T* x, int64_t g, uint8_t* payload, float* scale,
                     float* offset) {
  constexpr int V = N / 16;
  static_assert(V >= 2 && (V & (V - 1)) == 0, "groups of 32, 64, 128 or 256 floats");
  constexpr float kQmax = static_cast<float>((1 << Bits) - 1);
  alignas(64) __m512 lo_v[kBlock], hi_v[kBlock];
  uint32_t ordered = 0;  // bit g: group g has no NaN
  const typename In::T* xb = x + g * N;
  // A. lane-wise min/max of each group
  for (int j = 0; j < kBlock; ++j) {
    const typename In::T* xg = xb + j * N;
    __m512 v[V];
    for (int i = 0; i < V; ++i) {
      v[i] = In::load16(xg + 16 * i);
      // Keep the vector in its register: left alone, GCC folds the load into each of the
      // compare, min and max that use it, and three 64-byte loads per vector are what limits
      // this loop on cores that take one per cycle (AMD Zen 4).
      asm("" : "+v"(v[i]));
    }
    __mmask16 ord = 0xffff;  // lanes where every pair so far was ordered (neither is NaN)
    for (int i = 0; i < V; i += 2) ord = _mm512_mask_cmp_ps_mask(ord, v[i], v[i + 1], _CMP_ORD_Q);
    ordered |= static_cast<uint32_t>(ord == 0xffff) << j;
    lo_v[slot(j)] = fold<V, Min>(v);
    hi_v[slot(j)] = fold<V, Max>(v);
  }
  // B. the 16 groups' parameters, lane g = group g (group_params of quant_common.h, vectorised)
  const __m512 lo = reduce16<Min>(lo_v);
  const __m512 hi = reduce16<Max>(hi_v);
  const __m512 rng = _mm512_add_ps(_mm512_sub_ps(hi, lo), _mm512_setzero_ps());  // -0 -> +0
  const __mmask16 valid = static_cast<__mmask16>(ordered) &
                          _mm512_cmp_ps_mask(rng, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
  const __m512 sc = _mm512_div_ps(rng, _mm512_set1_ps(kQmax));
  const __mmask16 normal = _mm512_cmp_ps_mask(sc, _mm512_set1_ps(FLT_MIN), _CMP_GE_OQ);
  const __m512 inv = _mm512_maskz_div_ps(normal, _mm512_set1_ps(1.0f), sc);
  const __m512 qnan = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000));
  _mm512_storeu_ps(scale + g, _mm512_mask_blend_ps(valid, qnan, sc));
  // offset = lo + 0 (a zero minimum stored as +0), as group_params does
  const __m512 off = _mm512_add_ps(lo, _mm512_setzero_ps());
  _mm512_storeu_ps(offset + g, _mm512_mask_blend_ps(valid, qnan, off));
  alignas(64) float qlo_s[kBlock], inv_s[kBlock];
  _mm512_store_ps(qlo_s, lo);
  _mm512_store_ps(inv_s, inv);
  // C. codes and payload. idx picks byte 0 of each 32-bit lane of two vectors (32 bytes).
  alignas(64) static constexpr uint8_t kIdx[64] = {
      0,   4,   8,   12,  16,  20,  24,  28,  32,  36,  40,  44,  48,  52,  56,  60,
      64,  68,  72,  76,  80,  84,  88,  92,  96,  100, 104, 108, 112, 116, 120, 124,
      0,   4,   8,   12,  16,  20,  24,  28,  32,  36,  40,  44,  48,  52,  56,  60,
      64,  68,  72,  76,  80,  84,  88,  92,  96,  100, 104, 108, 112, 116, 120, 124};
  const __m512i idx = _mm512_load_si512(kIdx);
  constexpr int64_t kGroupBytes = int64_t{N} * Bits / 8;
  uint8_t* pb = payload + g * kGroupBytes;
  for (int j = 0; j < kBlock; ++j) {
    const typename In::T* xg = xb + j * N;
    uint8_t* dst = pb + j * kGroupBytes;
    // The next block's group j into L1 while this block computes (a prefetch past the end of x
    // does not fault).
    for (int l = 0; l < N; l += 16)
      _mm_prefetch(reinterpret_cast<const char*>(xg + kBlock * N + l), _MM_HINT_T0);
    if (!((valid >> j) & 1)) {  // invalid group: codes 0
      std::memset(dst, 0, kGroupBytes);
      continue;
    }
    const __m512 q = _mm512_set1_ps(qlo_s[j]);
    const __m512 f = _mm512_set1_ps(inv_s[j]);
    if constexpr (N == 32) {
      const __m512i c = _mm512_permutex2var_epi8(codes16<In>(xg, q, f), idx, codes16<In>(xg + 16, q, f));
      if constexpr (Bits == 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(c));
      } else {
        alignas(64) uint8_t tmp[Bits * 8];  // 64 codes -> Bits * 8 bytes; the first half is ours
        store_packed<Bits>(tmp, c);
        std::memcpy(dst, tmp, kGroupBytes);
      }
    } else {
      for (int i = 0; i < N; i += 64) store_packed<Bits>(dst + i * Bits / 8, bytes64<In>(xg + i, q, f, idx));
    }
  }
}

template <class In, int N, int Bits>
HB_AVX512 void blocks(const void* x, int64_t g0, int64_t g1, uint8_t* payload, float* scale,
                      float* offset) {
  const auto* xt = static_cast<const typename In::T*>(x);
  for (int64_t g = g0; g < g1; g += kBlock) block<In, N, Bits>(xt, g, payload, scale, offset);
}

template <class In, int Bits>
HB_AVX512 void dispatch_n(const void* x, int64_t n, int64_t g0, int64_t g1, uint8_t* payload,
                          float* scale, float* offset) {
  switch (n) {
    case 32: return blocks<In, 32, Bits>(x, g0, g1, payload, scale, offset);
    case 64: return blocks<In, 64, Bits>(x, g0, g1, payload, scale, offset);
    case 128: return blocks<In, 128, Bits>(x, g0, g1, payload, scale, offset);
    default: return blocks<In, 256, Bits>(x, g0, g1, payload, scale, offset);
  }
}

template <class In>
HB_AVX512 void dispatch_bits(const void* x, int64_t n, int bits, int64_t g0, int64_t g1,
                             uint8_t* payload, float* scale, float* offset) {
  switch (bits) {
    case 8: return dispatch_n<In, 8>(x, n, g0, g1, payload, scale, offset);
    case 4: return dispatch_n<In, 4>(x, n, g0, g1, payload, scale, offset);
    default: return dispatch_n<In, 2>(x, n, g0, g1, payload, scale, offset);
  }
}

// ----------------------------------------------------------------------------------------------
// Spans with one (qlo, inv): per-tensor and per-channel quantization (two passes: min/max of the
// whole tensor or channel, then codes), and groups larger than the fused loops take.
// ----------------------------------------------------------------------------------------------

// min, max and NaN of n elements: four independent min and max accumulators (the loop-carried
// min/max latency, not the loads, limits a single-accumulator loop on data in L1/L2), NaN found
// by ordered compares chained through a mask as in block(); the tail (< 16) by masked loads.
template <class In>
HB_AVX512 Range minmax_t(const typename In::T* x, int64_t n) {
  const __m512 pinf = _mm512_set1_ps(__builtin_inff()), ninf = _mm512_set1_ps(-__builtin_inff());
  __m512 mn0 = pinf, mn1 = pinf, mn2 = pinf, mn3 = pinf;
  __m512 mx0 = ninf, mx1 = ninf, mx2 = ninf, mx3 = ninf;
  __mmask16 ord = 0xffff;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 v0 = In::load16(x + i), v1 = In::load16(x + i + 16);
    __m512 v2 = In::load16(x + i + 32), v3 = In::load16(x + i + 48);
    asm("" : "+v"(v0), "+v"(v1), "+v"(v2), "+v"(v3));  // one load each (see block())
    ord = _mm512_mask_cmp_ps_mask(ord, v0, v1, _CMP_ORD_Q);
    ord = _mm512_mask_cmp_ps_mask(ord, v2, v3, _CMP_ORD_Q);
    mn0 = _mm512_min_ps(mn0, v0), mx0 = _mm512_max_ps(mx0, v0);
    mn1 = _mm512_min_ps(mn1, v1), mx1 = _mm512_max_ps(mx1, v1);
    mn2 = _mm512_min_ps(mn2, v2), mx2 = _mm512_max_ps(mx2, v2);
    mn3 = _mm512_min_ps(mn3, v3), mx3 = _mm512_max_ps(mx3, v3);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 v = In::load16(x + i);
    ord = _mm512_mask_cmp_ps_mask(ord, v, v, _CMP_ORD_Q);
    mn0 = _mm512_min_ps(mn0, v), mx0 = _mm512_max_ps(mx0, v);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = In::load16_masked(x + i, m);
    ord = static_cast<__mmask16>(_mm512_mask_cmp_ps_mask(ord & m, v, v, _CMP_ORD_Q) | (ord & ~m));
    mn0 = _mm512_mask_min_ps(mn0, m, mn0, v), mx0 = _mm512_mask_max_ps(mx0, m, mx0, v);
  }
  // A NaN in an accumulator is harmless: a NaN anywhere makes the range invalid (nan = true),
  // and without one the accumulators hold plain values.
  const __m512 mn = _mm512_min_ps(_mm512_min_ps(mn0, mn1), _mm512_min_ps(mn2, mn3));
  const __m512 mx = _mm512_max_ps(_mm512_max_ps(mx0, mx1), _mm512_max_ps(mx2, mx3));
  return {_mm512_reduce_min_ps(mn), _mm512_reduce_max_ps(mx), ord != 0xffff};
}

// Codes of n elements (n a multiple of 64) with one (qlo, inv) of a valid range, packed into
// n * Bits / 8 bytes at dst: no clamp needed (see codes_scalar in quant_cpu.cpp).
template <class In, int Bits>
HB_AVX512 void span_t(const typename In::T* x, int64_t n, float qlo, float inv, uint8_t* dst) {
  alignas(64) static constexpr uint8_t kIdx[64] = {
      0,   4,   8,   12,  16,  20,  24,  28,  32,  36,  40,  44,  48,  52,  56,  60,
      64,  68,  72,  76,  80,  84,  88,  92,  96,  100, 104, 108, 112, 116, 120, 124,
      0,   4,   8,   12,  16,  20,  24,  28,  32,  36,  40,  44,  48,  52,  56,  60,
      64,  68,  72,  76,  80,  84,  88,  92,  96,  100, 104, 108, 112, 116, 120, 124};
  const __m512i idx = _mm512_load_si512(kIdx);
  const __m512 q = _mm512_set1_ps(qlo), f = _mm512_set1_ps(inv);
  for (int64_t i = 0; i < n; i += 64)
    store_packed<Bits>(dst + i * Bits / 8, bytes64<In>(x + i, q, f, idx));
}

template <class In>
HB_AVX512 void span_bits(const void* x, int64_t n, float qlo, float inv, int bits, uint8_t* dst) {
  const auto* xt = static_cast<const typename In::T*>(x);
  switch (bits) {
    case 8: return span_t<In, 8>(xt, n, qlo, inv, dst);
    case 4: return span_t<In, 4>(xt, n, qlo, inv, dst);
    default: return span_t<In, 2>(xt, n, qlo, inv, dst);
  }
}

// On unless HIERBENCH_CPU_KERNEL=portable (read once, at the first quantize or cpu_kernel call;
// hierbench.ops rejects other values when it is imported).
std::atomic<bool>& flag() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("HIERBENCH_CPU_KERNEL");
    return supported() && !(env != nullptr && std::strcmp(env, "portable") == 0);
  }()};
  return on;
}

}  // namespace

bool enabled() { return flag().load(std::memory_order_relaxed); }

bool set_enabled(bool on) { return flag().exchange(on && supported()); }

bool used_for(Input in, bool group_granularity, int64_t group_size, int bits, bool stochastic,
              int64_t numel) {
  const int64_t esize = in == Input::kFloat32 ? 4 : 2;
  return enabled() && in != Input::kOther && group_granularity && !stochastic &&
         numel <= kMaxInputBytes / esize &&
         (group_size == 32 || group_size == 64 || group_size == 128 || group_size == 256) &&
         numel / group_size >= 16 && (bits == 2 || bits == 4 || bits == 8);
}

bool span_used_for(Input in, int bits, bool stochastic) {
  return enabled() && in != Input::kOther && !stochastic && (bits == 2 || bits == 4 || bits == 8);
}

HB_AVX512_ENTRY Range minmax(const void* x, Input in, int64_t n) {
  switch (in) {
    case Input::kFloat32: return minmax_t<F32>(static_cast<const float*>(x), n);
    case Input::kFloat16: return minmax_t<F16>(static_cast<const uint16_t*>(x), n);
    default: return minmax_t<BF16>(static_cast<const uint16_t*>(x), n);
  }
}

HB_AVX512_ENTRY int64_t quantize_span(const void* x, Input in, int64_t n, float qlo, float inv,
                                      int bits, uint8_t* dst) {
  const int64_t m = n / 64 * 64;
  switch (in) {
    case Input::kFloat32: span_bits<F32>(x, m, qlo, inv, bits, dst); break;
    case Input::kFloat16: span_bits<F16>(x, m, qlo, inv, bits, dst); break;
    default: span_bits<BF16>(x, m, qlo, inv, bits, dst); break;
  }
  return m;
}

HB_AVX512_ENTRY void quantize_groups(const void* x, Input in, int64_t group_size, int bits,
                                     int64_t g0, int64_t g1, uint8_t* payload, float* scale,
                                     float* offset) {
  switch (in) {
    case Input::kFloat32:
      return dispatch_bits<F32>(x, group_size, bits, g0, g1, payload, scale, offset);
    case Input::kFloat16:
      return dispatch_bits<F16>(x, group_size, bits, g0, g1, payload, scale, offset);
    default:
      return dispatch_bits<BF16>(x, group_size, bits, g0, g1, payload, scale, offset);
  }
}

#else  // not x86-64 GCC: the portable loops do everything

bool supported() { return false; }
bool enabled() { return false; }
bool set_enabled(bool) { return false; }
bool used_for(Input, bool, int64_t, int, bool, int64_t) { return false; }
bool span_used_for(Input, int, bool) { return false; }
Range minmax(const void*, Input, int64_t) { return {0.0f, 0.0f, true}; }
int64_t quantize_span(const void*, Input, int64_t, float, float, int, uint8_t*) { return 0; }
void quantize_groups(const void*, Input, int64_t, int, int64_t, int64_t, uint8_t*, float*, float*) {}

#endif

}  // namespace hierbench::quant::avx512
