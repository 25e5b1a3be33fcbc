// The TCP wire format: handshake messages and frames. All integers little-endian.
// docs/transfer.md has the byte tables; tests/transfer/wire.py is an independent Python
// implementation the tests use to talk to the engine (and to send it hostile input).
//
// Handshake (client = the side that connects):
//   every message starts with an 8-byte prefix: magic "HBTH", u16 version, u16 type
//   C->S CLIENT_HELLO (56 B): prefix | u64 max_frame_bytes | 32 B client nonce | 8 B zero
//   S->C SERVER_HELLO (88 B): prefix | u64 max_frame_bytes | 32 B server nonce
//                             | 32 B server proof = HMAC-SHA256(secret, "hierbench-transfer/1 server"
//                               || CLIENT_HELLO || SERVER_HELLO[0:48])
//   C->S CLIENT_AUTH  (40 B): prefix | 32 B client proof = HMAC-SHA256(secret,
//                               "hierbench-transfer/1 client" || CLIENT_HELLO || SERVER_HELLO[0:48])
//   S->C ACCEPT       (8 B) : prefix
//   either way REJECT (16 B): prefix | u16 reason | 6 B zero  (then the sender closes)
// Frames (after ACCEPT, both directions):
//   header (56 B): "HBF1" | u16 kind | u16 flags=0 | u64 seq | u64 length | u64 delay_ns
//                  | i64 enqueued_ns | 12 B zero | u32 CRC32C(header[0:52])
//   DATA: header, `length` payload bytes, trailer (24 B): i64 tx_start_ns | i64 tx_end_ns
//                  | u32 CRC32C(payload || trailer[0:16]) | 4 B zero
//   CLOSE: header only (length 0, seq = number of DATA frames sent); the sender then shuts down
//          its write side and sends nothing more.
//   KEEPALIVE: header only (length 0, seq 0), between frames, after io_timeout/4 without sending:
//          the peer is alive even when it does not read (its consumer pauses).
//   A DATA frame whose trailer has flag 1 (u32 at offset 20) was cancelled by a close() that ran
//          out of time: the receiver discards it (its payload is filler); only CLOSE follows.
#pragma once

#include <cstdint>
#include <cstring>

namespace hierbench::transfer::wire {

constexpr uint16_t kVersion = 1;
constexpr char kHandshakeMagic[4] = {'H', 'B', 'T', 'H'};
constexpr char kFrameMagic[4] = {'H', 'B', 'F', '1'};
constexpr char kServerLabel[] = "hierbench-transfer/1 server";
constexpr char kClientLabel[] = "hierbench-transfer/1 client";

enum HandshakeType : uint16_t {
  kClientHello = 1,
  kServerHello = 2,
  kClientAuth = 3,
  kAccept = 4,
  kReject = 5,
};
enum RejectReason : uint16_t {
  kRejectVersion = 1,
  kRejectAuth = 2,
  kRejectMalformed = 3,
};

constexpr size_t kPrefixBytes = 8;
constexpr size_t kClientHelloBytes = 56;
constexpr size_t kServerHelloBytes = 88;
constexpr size_t kServerHelloSigned = 48;
constexpr size_t kClientAuthBytes = 40;
constexpr size_t kRejectBytes = 16;
constexpr size_t kNonceBytes = 32;

enum FrameKind : uint16_t { kData = 1, kClose = 2, kKeepalive = 3 };
constexpr uint32_t kTrailerCancelled = 1;
constexpr size_t kHeaderBytes = 56;
constexpr size_t kTrailerBytes = 24;

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
