// Primitives for the TCP transport: CRC32C (frame integrity against accidents, ours: SSE4.2),
// and from OpenSSL's libcrypto: SHA-256, HMAC-SHA256 (handshake proofs, frame MACs), scrypt
// (the key derived from the shared secret), a constant-time comparison and the OS CSPRNG.
// Tests hold them to Python's hashlib/hmac and to published check values.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

typedef struct evp_mac_ctx_st EVP_MAC_CTX;  // <openssl/types.h>, without pulling it in here

namespace hierbench::transfer {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI/ext4: crc32c("123456789") ==
// 0xE3069283. Incremental: crc32c(b, crc32c(a)) == crc32c(a + b). Uses SSE4.2 when available.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

using Digest = std::array<uint8_t, 32>;

Digest sha256(const void* data, size_t n);

// Incremental HMAC-SHA256 (RFC 2104) under one key; reset() starts a new message, same key.
class HmacSha256 {
 public:
  HmacSha256(const void* key, size_t n);
  ~HmacSha256();
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;
  void reset();
  void update(const void* data, size_t n);
  Digest finish();  // then reset() before the next message

 private:
  EVP_MAC_CTX* ctx_;
};

Digest hmac_sha256(const std::string& key, const std::string& message);

// The handshake key: scrypt(secret, salt kKdfSalt, N = 2^15, r = 8, p = 1) -> 32 bytes (RFC 7914).
// Memory-hard: each guess at the secret costs 32 MiB and tens of milliseconds.
constexpr char kKdfSalt[] = "hierbench-transfer/2";
constexpr uint64_t kKdfN = 1u << 15;
constexpr uint64_t kKdfR = 8, kKdfP = 1;
constexpr uint64_t kKdfMaxMem = 64ull << 20;
Digest derive_key(const std::string& secret);

// Equality of two equally long byte strings in time independent of where they differ.
bool constant_time_equal(const uint8_t* a, const uint8_t* b, size_t n);

// n bytes from OpenSSL's CSPRNG (seeded by the OS); throws TransferError if unavailable.
void random_bytes(void* out, size_t n);

}  // namespace hierbench::transfer
