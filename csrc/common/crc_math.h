// Arithmetic on reflected CRC registers, shared by CRC-32 (csrc/checksum) and CRC-32C
// (csrc/transfer/crypto.cpp): what lets independent streams over consecutive pieces of a buffer be
// combined into the CRC of the whole.
//
// In the reflected representation bit 31 of a register is the coefficient of x^0 and bit 0 that
// of x^31; `poly` is the reflected polynomial without its x^32 term (0xEDB88320 for CRC-32,
// 0x82F63B78 for CRC-32C).
#pragma once

#include <cstddef>
#include <cstdint>

namespace hierbench::crc_math {

// a * b mod P.
inline uint32_t mul(uint32_t a, uint32_t b, uint32_t poly) {
  uint32_t r = 0;
  for (int i = 0; i < 32; ++i) {
    r ^= (0u - ((b >> 31) & 1u)) & a;
    b <<= 1;
    a = (a >> 1) ^ (poly & (0u - (a & 1u)));
  }
  return r;
}

// x^(8n) mod P: mul(crc, x_pow_8n(n)) is the raw register `crc` advanced over n zero bytes, so
// raw(A B) = mul(raw(A), x_pow_8n(|B|)) ^ raw0(B), raw0 being the register of B from zero.
inline uint32_t x_pow_8n(size_t n, uint32_t poly) {
  uint32_t result = 0x80000000u;  // x^0
  uint32_t sq = 0x00800000u;      // x^8
  while (n) {
    if (n & 1) result = mul(result, sq, poly);
    sq = mul(sq, sq, poly);
    n >>= 1;
  }
  return result;
}

}  // namespace hierbench::crc_math
