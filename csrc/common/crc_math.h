// Reflected 32-bit CRCs in software, shared by CRC-32 (csrc/checksum) and CRC-32C
// (csrc/transfer/crypto.cpp): slicing-by-8 tables and updates, and the arithmetic that combines
// the registers of independent streams over consecutive pieces of a buffer into the whole's.
//
// In the reflected representation bit 31 of a register is the coefficient of x^0 and bit 0 that
// of x^31; `poly` is the reflected polynomial without its x^32 term (0xEDB88320 for CRC-32,
// 0x82F63B78 for CRC-32C).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the slicing-by-8 CRCs read 8-byte words as little-endian");

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

// Slicing-by-8 tables: t[0] is the classic byte table, t[s][i] = i's register after s more
// zero bytes, so eight lookups advance a register over 8 bytes.
template <uint32_t Poly>
struct Slice8Tables {
  uint32_t t[8][256];
  Slice8Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (Poly & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

template <uint32_t Poly>
const Slice8Tables<Poly>& slice8_tables() {
  static const Slice8Tables<Poly> tables;
  return tables;
}

// The register `c` after the 8 bytes at p.
inline uint32_t slice8_step(const uint32_t (&t)[8][256], uint32_t c, const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  v ^= c;
  return t[7][v & 0xFF] ^ t[6][(v >> 8) & 0xFF] ^ t[5][(v >> 16) & 0xFF] ^ t[4][(v >> 24) & 0xFF] ^
         t[3][(v >> 32) & 0xFF] ^ t[2][(v >> 40) & 0xFF] ^ t[1][(v >> 48) & 0xFF] ^ t[0][v >> 56];
}

// The register (no initial or final inversion) after `c`, then the n bytes at p.
template <uint32_t Poly>
uint32_t slice8_update(uint32_t c, const uint8_t* p, size_t n) {
  const auto& t = slice8_tables<Poly>().t;
  while (n >= 8) {
    c = slice8_step(t, c, p);
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

}  // namespace hierbench::crc_math
