#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>
#include <mutex>

#include "../common/crc_math.h"
#include "errors.h"

namespace hierbench::transfer {

// ---- CRC32C -----------------------------------------------------------------------------------

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // Castagnoli, reflected

// Slicing-by-8 software CRC (the portable path).
uint32_t crc32c_sw(const uint8_t* p, size_t n, uint32_t c) {
  return crc_math::slice8_update<kPoly>(c, p, n);
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes exactly CRC32C. Three independent streams hide its
// 3-cycle latency; they are combined with the software shift below.
__attribute__((target("sse4.2"))) uint32_t crc32c_hw_serial(const uint8_t* p, size_t n,
                                                            uint32_t c) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const uint8_t* p, size_t n, uint32_t c) {
  constexpr size_t kBlock = 8192;  // bytes per stream per round
  if (n < 3 * kBlock) return crc32c_hw_serial(p, n, c);
  static const uint32_t shift1 = crc_math::x_pow_8n(kBlock, kPoly);
  static const uint32_t shift2 = crc_math::x_pow_8n(2 * kBlock, kPoly);
  while (n >= 3 * kBlock) {
    uint64_t a = c, b = 0, d = 0;
    const uint8_t* pa = p;
    const uint8_t* pb = p + kBlock;
    const uint8_t* pd = p + 2 * kBlock;
    for (size_t i = 0; i < kBlock; i += 8) {
      uint64_t va, vb, vd;
      std::memcpy(&va, pa + i, 8);
      std::memcpy(&vb, pb + i, 8);
      std::memcpy(&vd, pd + i, 8);
      a = __builtin_ia32_crc32di(a, va);
      b = __builtin_ia32_crc32di(b, vb);
      d = __builtin_ia32_crc32di(d, vd);
    }
    // crc(A B D) = shift(crc(A), |B|+|D|) ^ shift(crc0(B), |D|) ^ crc0(D)  (crc0: zero init)
    c = crc_math::mul(static_cast<uint32_t>(a), shift2, kPoly) ^
        crc_math::mul(static_cast<uint32_t>(b), shift1, kPoly) ^ static_cast<uint32_t>(d);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  return crc32c_hw_serial(p, n, c);
}

bool have_sse42() {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (have_sse42()) return ~crc32c_hw(p, n, c);
#endif
  return ~crc32c_sw(p, n, c);
}

// ---- OpenSSL libcrypto: SHA-256, HMAC-SHA256, scrypt, randomness ----------------------------

namespace {

std::string openssl_error(const char* what) {
  char buf[256] = "unknown error";
  const unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  return std::string(what) + " failed (OpenSSL: " + buf + ")";
}

// The HMAC implementation, fetched once (fetching is slow; the handle is thread-safe).
EVP_MAC* hmac_impl() {
  static EVP_MAC* mac = [] {
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (!m) throw TransferError(openssl_error("EVP_MAC_fetch(HMAC)"));
    return m;
  }();
  return mac;
}

}  // namespace

Digest sha256(const void* data, size_t n) {
  Digest d{};
  unsigned int len = 0;
  if (EVP_Digest(data, n, d.data(), &len, EVP_sha256(), nullptr) != 1 || len != d.size()) {
    throw TransferError(openssl_error("EVP_Digest(SHA-256)"));
  }
  return d;
}

HmacSha256::HmacSha256(const void* key, size_t n) : ctx_(EVP_MAC_CTX_new(hmac_impl())) {
  if (!ctx_) throw TransferError(openssl_error("EVP_MAC_CTX_new"));
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  // A zero-length key is legal HMAC; OpenSSL wants a non-null pointer for it.
  static const uint8_t kEmpty = 0;
  if (EVP_MAC_init(ctx_, n ? static_cast<const unsigned char*>(key) : &kEmpty, n, params) != 1) {
    EVP_MAC_CTX_free(ctx_);
    throw TransferError(openssl_error("EVP_MAC_init(HMAC-SHA256)"));
  }
}

HmacSha256::~HmacSha256() { EVP_MAC_CTX_free(ctx_); }

void HmacSha256::reset() {
  if (EVP_MAC_init(ctx_, nullptr, 0, nullptr) != 1) {  // same key, fresh state
    throw TransferError(openssl_error("EVP_MAC_init(HMAC-SHA256, reset)"));
  }
}

void HmacSha256::update(const void* data, size_t n) {
  if (n && EVP_MAC_update(ctx_, static_cast<const unsigned char*>(data), n) != 1) {
    throw TransferError(openssl_error("EVP_MAC_update"));
  }
}

Digest HmacSha256::finish() {
  Digest d{};
  size_t len = 0;
  if (EVP_MAC_final(ctx_, d.data(), &len, d.size()) != 1 || len != d.size()) {
    throw TransferError(openssl_error("EVP_MAC_final"));
  }
  return d;
}

Digest hmac_sha256(const std::string& key, const std::string& message) {
  HmacSha256 h(key.data(), key.size());
  h.update(message.data(), message.size());
  return h.finish();
}

Digest derive_key(const std::string& secret) {
  // The last derivation is remembered: an edge reconnecting pays the scrypt cost once.
  static std::mutex m;
  static std::string last_secret;
  static Digest last_key{};
  std::lock_guard<std::mutex> lk(m);
  if (!last_secret.empty() && last_secret.size() == secret.size() &&
      CRYPTO_memcmp(last_secret.data(), secret.data(), secret.size()) == 0) {
    return last_key;
  }
  Digest k{};
  if (EVP_PBE_scrypt(secret.data(), secret.size(),
                     reinterpret_cast<const unsigned char*>(kKdfSalt), sizeof kKdfSalt - 1,
                     kKdfN, kKdfR, kKdfP, kKdfMaxMem, k.data(), k.size()) != 1) {
    throw TransferError(openssl_error("EVP_PBE_scrypt"));
  }
  if (!last_secret.empty()) OPENSSL_cleanse(last_secret.data(), last_secret.size());
  last_secret = secret;
  last_key = k;
  return k;
}

bool constant_time_equal(const uint8_t* a, const uint8_t* b, size_t n) {
  return CRYPTO_memcmp(a, b, n) == 0;
}

void random_bytes(void* out, size_t n) {
  if (RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(n)) != 1) {
    throw TransferError(openssl_error("RAND_bytes"));
  }
}

}  // namespace hierbench::transfer
