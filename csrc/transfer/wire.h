// The TCP wire format: handshake messages and frames. All integers little-endian.
// docs/transfer.md has the byte tables and the threat model; tests/transfer/reference_peer.py is
// an independent Python implementation the tests use to talk to the engine (and to send it
// hostile input).
//
// Handshake v2 (client = the side that connects). The client proves first: nothing the server
// sends before the client has proven knowledge of the secret depends on the secret.
//   K = scrypt(secret, "hierbench-transfer/2", N=2^15, r=8, p=1) (crypto.h); secret >= 16 bytes
//   every message starts with an 8-byte prefix: magic "HBTH", u16 version, u16 type
//   C->S CLIENT_HELLO (56 B): prefix | u64 max_frame_bytes | 32 B client nonce | u32 flags | 4 B 0
//   S->C SERVER_HELLO (56 B): prefix | u64 max_frame_bytes | 32 B server nonce | u32 flags | 4 B 0
//   C->S CLIENT_AUTH  (40 B): prefix | HMAC-SHA256(K, "hierbench-transfer/2 client" || CH || SH)
//   S->C SERVER_AUTH  (40 B): prefix | HMAC-SHA256(K, "hierbench-transfer/2 server" || CH || SH
//                                                      || CA)            (frames may follow)
//   either way REJECT (16 B): prefix | u16 reason | 6 B zero  (then the sender closes)
//   flags bit 0: "authenticate frames". Frames carry MACs iff either hello sets it (each side
//   sets it when its peer is not on loopback, or when asked to); the proofs cover both hellos.
//   Session keys, one per direction: HMAC-SHA256(K, "hierbench-transfer/2 c2s" (or "s2c")
//   || CH || SH || CA).
// Frames (after SERVER_AUTH, both directions):
//   header (56 B): "HBF1" | u16 kind | u16 flags | u64 seq | u64 length | u64 delay_ns
//                  | i64 enqueued_ns | 12 B header MAC or zero | u32 CRC32C(header[0:52])
//   DATA: header, `length` payload bytes, trailer (24 B): i64 tx_start_ns | i64 tx_end_ns
//                  | u32 CRC32C(payload || trailer[0:16]) | u32 flags
//         with MACs, then a 32 B tag = HMAC-SHA256(k_dir, "F" || u64 n || header[0:52]
//                  || payload || trailer)
//   CLOSE: header only (length 0, seq = number of DATA frames sent); the sender then shuts down
//          its write side and sends nothing more.
//          The receiver checks that seq equals the DATA frames it got whole (not cancelled).
//   KEEPALIVE: header only (length 0, seq 0), between frames, after io_timeout/4 without sending:
//          the peer is alive even when it does not read (its consumer pauses).
//   DATA trailer flags (u32 at offset 20): 0, or 1 = cancelled by a close() that ran out of time:
//          the payload is filler, the receiver discards the frame, and only CLOSE may follow.
//          Any other value is refused.
//   With MACs: flags = 1 and header[40:52] = HMAC-SHA256(k_dir, "H" || u64 n || header[0:40])
//   truncated to 12 bytes, where n counts the frames (DATA, CLOSE and KEEPALIVE) this side sent
//   on this connection, from 0: a frame replayed, reordered, dropped, injected or from another
//   connection fails. The DATA tag covers the whole trailer, its flags included.
#pragma once

#include <cstdint>
#include <cstring>

namespace hierbench::transfer::wire {

constexpr uint16_t kVersion = 2;
constexpr size_t kMinSecretBytes = 16;
constexpr char kHandshakeMagic[4] = {'H', 'B', 'T', 'H'};
constexpr char kFrameMagic[4] = {'H', 'B', 'F', '1'};
constexpr char kServerLabel[] = "hierbench-transfer/2 server";
constexpr char kClientLabel[] = "hierbench-transfer/2 client";
constexpr char kC2sLabel[] = "hierbench-transfer/2 c2s";
constexpr char kS2cLabel[] = "hierbench-transfer/2 s2c";

enum HandshakeType : uint16_t {
  kClientHello = 1,
  kServerHello = 2,
  kClientAuth = 3,
  kServerAuth = 4,
  kReject = 5,
};
enum RejectReason : uint16_t {
  kRejectVersion = 1,
  kRejectAuth = 2,
  kRejectMalformed = 3,
};

constexpr size_t kPrefixBytes = 8;
constexpr size_t kHelloBytes = 56;  // CLIENT_HELLO and SERVER_HELLO
constexpr size_t kAuthBytes = 40;   // CLIENT_AUTH and SERVER_AUTH
constexpr size_t kRejectBytes = 16;
constexpr size_t kNonceBytes = 32;
constexpr uint32_t kHelloMacFrames = 1;  // hello flags bit 0

enum FrameKind : uint16_t { kData = 1, kClose = 2, kKeepalive = 3 };
constexpr uint32_t kTrailerCancelled = 1;
constexpr size_t kHeaderBytes = 56;
constexpr size_t kTrailerBytes = 24;
constexpr uint16_t kFrameFlagMac = 1;
constexpr size_t kHeaderMacBytes = 12;  // header[40:52]
constexpr size_t kTagBytes = 32;

inline void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint16_t get_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t get_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline void put_prefix(uint8_t* p, uint16_t type) {
  std::memcpy(p, kHandshakeMagic, 4);
  put_u16(p + 4, kVersion);
  put_u16(p + 6, type);
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire helpers assume a LE host");

}  // namespace hierbench::transfer::wire
