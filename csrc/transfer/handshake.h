// The v2 handshake (wire.h, docs/transfer.md): the client proves first, so a peer that has not
// proven knowledge of the secret never sees anything computed from it. The client side runs
// blocking (tcp_connect); the server side is a byte-fed state machine, so the listener can run
// many handshakes at once on one thread without any of them blocking the others.
#pragma once

#include <cstdint>
#include <string>

#include "clock.h"
#include "crypto.h"
#include "errors.h"

namespace hierbench::transfer {

// What a finished handshake agreed on.
struct Session {
  uint64_t peer_max_frame = 0;
  bool frame_macs = false;  // every frame carries MACs under the keys below
  Digest send_key{}, recv_key{};
};

// A handshake failure; `reject` is the REJECT reason to send the peer first (0: none).
struct HandshakeError : TransferError {
  HandshakeError(const std::string& what, uint16_t reject)
      : TransferError(what), reject(reject) {}
  uint16_t reject;
};

// Throws std::invalid_argument naming the minimum if the secret is too short.
void check_secret(const std::string& secret);

// Client side over a connected blocking socket; `key` = derive_key(secret). `want_macs`: ask for
// frame MACs (the server may ask too). Throws TransferError / TimeoutError (after `deadline`).
Session client_handshake(int fd, const Digest& key, uint64_t max_frame, bool want_macs,
                         Nanos deadline);

// Server side, fed the bytes the client sends.
class ServerHandshake {
 public:
  ServerHandshake(const Digest& key, uint64_t max_frame, bool want_macs)
      : key_(key), max_frame_(max_frame), want_macs_(want_macs) {}
  // How many more bytes the current message needs (0 once done). Read no more than this: the
  // next message may follow at once.
  size_t want() const;
  // Takes bytes received; returns what to send now (possibly nothing). Throws HandshakeError.
  std::string feed(const uint8_t* p, size_t n);
  bool done() const { return stage_ == kDone; }
  bool started() const { return stage_ != kHello || got_ > 0; }
  const Session& session() const { return session_; }

 private:
  enum Stage { kHello, kAuth, kDone } stage_ = kHello;
  Digest key_;
  uint64_t max_frame_;
  bool want_macs_;
  uint8_t buf_[64] = {};
  size_t got_ = 0;
  uint8_t ch_[56] = {}, sh_[56] = {};
  Session session_;
};

// REJECT bytes for `reason`.
std::string reject_message(uint16_t reason);

}  // namespace hierbench::transfer
