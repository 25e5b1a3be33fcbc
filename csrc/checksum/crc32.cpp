#include "crc32.h"

#include <iterator>
#include <stdexcept>

#include "../common/crc_math.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 warns inside its own intrinsics headers (the deliberately undefined register of
// _mm256_undefined_si256, in the masked extract forms) once they are inlined at -O3.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define HIERBENCH_CRC32_PCLMUL 1
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "crc32.cpp reads SIMD lanes as little-endian");

namespace hierbench::checksum {

namespace {

constexpr uint32_t kPoly = 0xEDB88320u;  // x^32 + x^26 + ... + 1, bit-reflected

// The CRC register (no initial or final inversion) after `c`, then n bytes: slicing-by-8.
uint32_t update_serial(uint32_t c, const uint8_t* p, size_t n) {
  return crc_math::slice8_update<kPoly>(c, p, n);
}

// The same over four interleaved streams. One slicing-by-8 chain waits on its loads (~0.5 byte
// per cycle); four independent chains over four consecutive blocks keep the load ports busy, and
// their registers combine into the register of the whole (crc_math.h) at ~100 cycles per round.
uint32_t update_portable(uint32_t c, const uint8_t* p, size_t n) {
  constexpr size_t kBlock = 2048;  // bytes per stream per round
  if (n >= 4 * kBlock) {
    const auto& t = crc_math::slice8_tables<kPoly>().t;
    static const uint32_t shift1 = crc_math::x_pow_8n(kBlock, kPoly);
    static const uint32_t shift2 = crc_math::x_pow_8n(2 * kBlock, kPoly);
    static const uint32_t shift3 = crc_math::x_pow_8n(3 * kBlock, kPoly);
    while (n >= 4 * kBlock) {
      uint32_t a = c, b = 0, d = 0, e = 0;
      for (size_t i = 0; i < kBlock; i += 8) {
        a = crc_math::slice8_step(t, a, p + i);
        b = crc_math::slice8_step(t, b, p + kBlock + i);
        d = crc_math::slice8_step(t, d, p + 2 * kBlock + i);
        e = crc_math::slice8_step(t, e, p + 3 * kBlock + i);
      }
      c = crc_math::mul(a, shift3, kPoly) ^ crc_math::mul(b, shift2, kPoly) ^
          crc_math::mul(d, shift1, kPoly) ^ e;
      p += 4 * kBlock;
      n -= 4 * kBlock;
    }
  }
  return update_serial(c, p, n);
}

#ifdef HIERBENCH_CRC32_PCLMUL
// Folding with carry-less multiplication (Gopal et al., "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ Instruction", Intel, 2009), in the bit-reflected domain.
//
// A 16-byte block loaded little-endian is a polynomial A = H x^64 + L of degree < 128, with its
// first message bit as the top coefficient. Moving A forward by D bits of message keeps its
// residue mod P: A x^D = H x^(D+64) + L x^D == H (x^(D+64) mod P) + L (x^D mod P), two 64x32-bit
// carry-less products that fit in 128 bits. In the reflected domain the product of two reflected
// operands comes out shifted right by one bit, and a 32-bit register of the top-aligned L half
// carries another x^32, so the constants are k(e) = reflect32(x^e mod P) << 1 with e = D + 32 for
// the L (low) half and e = D - 32 for the H (high) half:
//   D = 512 (four blocks ahead): k(544) = 0x154442BD4, k(480) = 0x1C6E41596
//   D = 128 (one block ahead):   k(160) = 0x1751997D0, k(96)  = 0x0CCAA009E
// The loop keeps four independent blocks in flight (64 bytes per step), folds them into one,
// and the final 16 bytes go through the table: the raw register of a message M from 0 is
// M x^32 mod P, which is exactly the CRC register the folded residue stands for.
__attribute__((target("sse4.1,pclmul"))) inline __m128i fold(__m128i x, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

__attribute__((target("sse4.1,pclmul"))) inline __m128i load16(const uint8_t* q) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
}

// The folded residue `x` of everything before p, then n more bytes: 16-byte folds, the table.
__attribute__((target("sse4.1,pclmul"))) uint32_t finish(__m128i x, const uint8_t* p, size_t n) {
  const __m128i k1 = _mm_set_epi64x(0x0CCAA009ELL, 0x1751997D0LL);  // {lo: k(160), hi: k(96)}
  while (n >= 16) {
    x = _mm_xor_si128(fold(x, k1), load16(p));
    p += 16;
    n -= 16;
  }
  alignas(16) uint8_t last[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(last), x);
  return update_serial(update_serial(0, last, 16), p, n);
}

__attribute__((target("sse4.1,pclmul"))) uint32_t update_pclmul(uint32_t c, const uint8_t* p,
                                                                 size_t n) {
  if (n < 64) return update_serial(c, p, n);
  const __m128i k4 = _mm_set_epi64x(0x1C6E41596LL, 0x154442BD4LL);  // {lo: k(544), hi: k(480)}
  const __m128i k1 = _mm_set_epi64x(0x0CCAA009ELL, 0x1751997D0LL);  // {lo: k(160), hi: k(96)}
  __m128i x0 = _mm_xor_si128(load16(p), _mm_cvtsi32_si128(static_cast<int>(c)));
  __m128i x1 = load16(p + 16);
  __m128i x2 = load16(p + 32);
  __m128i x3 = load16(p + 48);
  p += 64;
  n -= 64;
  while (n >= 64) {
    x0 = _mm_xor_si128(fold(x0, k4), load16(p));
    x1 = _mm_xor_si128(fold(x1, k4), load16(p + 16));
    x2 = _mm_xor_si128(fold(x2, k4), load16(p + 32));
    x3 = _mm_xor_si128(fold(x3, k4), load16(p + 48));
    p += 64;
    n -= 64;
  }
  __m128i x = _mm_xor_si128(fold(x0, k1), x1);
  x = _mm_xor_si128(fold(x, k1), x2);
  x = _mm_xor_si128(fold(x, k1), x3);
  return finish(x, p, n);
}

bool have_pclmul() {
  static const bool yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return yes;
}

// The same folding on 512-bit registers (VPCLMULQDQ: four 128-bit lanes per instruction), four
// registers (256 bytes) in flight. Fold distances and constants, k(e) as above:
//   256 bytes ahead (the loop):              D = 2048: k(2080) = 0x11542778A, k(2016) = 0x1322D1430
//   64 bytes ahead (4 registers into 1):     D = 512:  k(544), k(480)
//   the register's 4 lanes into one (lane i moves 48 - 16 i bytes ahead):
//     D = 384: k(416) = 0x03DB1ECDC, k(352) = 0x174359406
//     D = 256: k(288) = 0x0F1DA05AA, k(224) = 0x15A546366
//     D = 128: k(160), k(96); the last lane stays.
#define HIERBENCH_VPCLMUL_TARGET "avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1"
__attribute__((target(HIERBENCH_VPCLMUL_TARGET))) inline __m512i load64(const uint8_t* q) {
  return _mm512_loadu_si512(q);
}

__attribute__((target(HIERBENCH_VPCLMUL_TARGET))) inline __m512i fold512(__m512i z, __m512i k) {
  return _mm512_xor_si512(_mm512_clmulepi64_epi128(z, k, 0x00),
                          _mm512_clmulepi64_epi128(z, k, 0x11));
}

__attribute__((target(HIERBENCH_VPCLMUL_TARGET))) uint32_t update_vpclmul(uint32_t c,
                                                                          const uint8_t* p,
                                                                          size_t n) {
  if (n < 256) return update_pclmul(c, p, n);
  // _mm512_set_epi64 lists qwords from the top: each 128-bit lane is {lo, hi} = {k(D+32), k(D-32)}.
  const __m512i k256 = _mm512_set_epi64(0x1322D1430LL, 0x11542778ALL, 0x1322D1430LL, 0x11542778ALL,
                                        0x1322D1430LL, 0x11542778ALL, 0x1322D1430LL, 0x11542778ALL);
  const __m512i k64 = _mm512_set_epi64(0x1C6E41596LL, 0x154442BD4LL, 0x1C6E41596LL, 0x154442BD4LL,
                                       0x1C6E41596LL, 0x154442BD4LL, 0x1C6E41596LL, 0x154442BD4LL);
  const __m512i klanes = _mm512_set_epi64(0, 0, 0x0CCAA009ELL, 0x1751997D0LL, 0x15A546366LL,
                                          0x0F1DA05AALL, 0x174359406LL, 0x03DB1ECDCLL);
  const __m512i init = _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(c)));
  __m512i z0 = _mm512_xor_si512(load64(p), init);
  __m512i z1 = load64(p + 64);
  __m512i z2 = load64(p + 128);
  __m512i z3 = load64(p + 192);
  p += 256;
  n -= 256;
  while (n >= 256) {
    z0 = _mm512_xor_si512(fold512(z0, k256), load64(p));
    z1 = _mm512_xor_si512(fold512(z1, k256), load64(p + 64));
    z2 = _mm512_xor_si512(fold512(z2, k256), load64(p + 128));
    z3 = _mm512_xor_si512(fold512(z3, k256), load64(p + 192));
    p += 256;
    n -= 256;
  }
  __m512i z = _mm512_xor_si512(fold512(z0, k64), z1);
  z = _mm512_xor_si512(fold512(z, k64), z2);
  z = _mm512_xor_si512(fold512(z, k64), z3);
  while (n >= 64) {
    z = _mm512_xor_si512(fold512(z, k64), load64(p));
    p += 64;
    n -= 64;
  }
  // Lanes 0-2 folded onto lane 3's position (klanes' lane 3 is zero), plus lane 3 itself.
  z = _mm512_xor_si512(fold512(z, klanes), _mm512_maskz_mov_epi64(0xC0, z));
  const __m256i y = _mm256_xor_si256(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64(z, 1));
  const __m128i x = _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
  return finish(x, p, n);
}

bool have_vpclmul() {
  static const bool yes = have_pclmul() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("vpclmulqdq");
  return yes;
}
#endif

using Update = uint32_t (*)(uint32_t, const uint8_t*, size_t);

struct Kernel {
  const char* name;
  Update update;
  bool (*supported)();
};

bool always() { return true; }

// Every kernel, fastest first: the one order that crc32(), crc32_kernel() and
// available_crc32_kernels() all follow.
const Kernel kKernels[] = {
#ifdef HIERBENCH_CRC32_PCLMUL
    {"vpclmul", update_vpclmul, have_vpclmul},
    {"pclmul", update_pclmul, have_pclmul},
#endif
    {"portable", update_portable, always},
};

const Kernel& best() {
  static const Kernel& chosen = []() -> const Kernel& {
    for (const auto& k : kKernels) {
      if (k.supported()) return k;
    }
    return kKernels[std::size(kKernels) - 1];
  }();
  return chosen;
}

Update update_for(const std::string& kernel) {
  for (const auto& k : kKernels) {
    if (kernel == k.name && k.supported()) return k.update;
  }
  std::string names;
  for (const auto& k : available_crc32_kernels()) names += (names.empty() ? "'" : ", '") + k + "'";
  throw std::invalid_argument("crc32 kernel must be one of " + names + ", got '" + kernel + "'");
}

}  // namespace

const char* crc32_kernel() { return best().name; }

std::vector<std::string> available_crc32_kernels() {
  std::vector<std::string> out;
  for (const auto& k : kKernels) {
    if (k.supported()) out.emplace_back(k.name);
  }
  return out;
}

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  return ~best().update(~crc, static_cast<const uint8_t*>(data), n);
}

uint32_t crc32_with(const std::string& kernel, const void* data, size_t n, uint32_t crc) {
  return ~update_for(kernel)(~crc, static_cast<const uint8_t*>(data), n);
}

}  // namespace hierbench::checksum
