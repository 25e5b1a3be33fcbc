// Dependency-free primitives for the TCP transport: CRC32C (frame integrity), SHA-256 and
// HMAC-SHA256 (handshake), a constant-time comparison, and OS randomness for nonces.
// Tests hold them to Python's hashlib/hmac and to published check values.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace hierbench::transfer {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI/ext4: crc32c("123456789") ==
// 0xE3069283. Incremental: crc32c(b, crc32c(a)) == crc32c(a + b). Uses SSE4.2 when available.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

using Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  Digest finish();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

Digest sha256(const void* data, size_t n);

// HMAC-SHA256 (RFC 2104).
Digest hmac_sha256(const std::string& key, const std::string& message);

// Equality of two equally long byte strings in time independent of where they differ.
bool constant_time_equal(const uint8_t* a, const uint8_t* b, size_t n);

// n bytes from the OS CSPRNG (getrandom); throws TransferError if unavailable.
void random_bytes(void* out, size_t n);

}  // namespace hierbench::transfer
