#include "handshake.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "net.h"
#include "wire.h"

namespace hierbench::transfer {

using namespace wire;
using net::real_now;

namespace {

Digest mac_of(const Digest& key, const char* label, const uint8_t* ch, const uint8_t* sh,
              const uint8_t* ca) {
  HmacSha256 h(key.data(), key.size());
  h.update(label, std::strlen(label));
  h.update(ch, kHelloBytes);
  h.update(sh, kHelloBytes);
  if (ca) h.update(ca, kAuthBytes);
  return h.finish();
}

// Frame MACs iff either hello asks for them; keys bound to the whole transcript.
Session agree(const Digest& key, const uint8_t* ch, const uint8_t* sh, const uint8_t* ca,
              bool client) {
  Session s;
  s.peer_max_frame = get_u64((client ? sh : ch) + 8);
  s.frame_macs = ((get_u32(ch + 48) | get_u32(sh + 48)) & kHelloMacFrames) != 0;
  const Digest c2s = mac_of(key, kC2sLabel, ch, sh, ca);
  const Digest s2c = mac_of(key, kS2cLabel, ch, sh, ca);
  s.send_key = client ? c2s : s2c;
  s.recv_key = client ? s2c : c2s;
  return s;
}

void make_hello(uint8_t* out, uint16_t type, uint64_t max_frame, bool want_macs) {
  std::memset(out, 0, kHelloBytes);
  put_prefix(out, type);
  put_u64(out + 8, max_frame);
  random_bytes(out + 16, kNonceBytes);
  put_u32(out + 48, want_macs ? kHelloMacFrames : 0);
}

const char* reject_reason(uint16_t reason) {
  switch (reason) {
    case kRejectVersion:
      return "protocol version mismatch";
    case kRejectAuth:
      return "authentication failed (the two sides hold different secrets)";
    case kRejectMalformed:
      return "malformed handshake";
    default:
      return "unknown reason";
  }
}

// Client: reads an 8-byte prefix from the server; checks magic and version; turns REJECT into
// an error naming the reason.
uint16_t read_prefix(int fd, uint8_t* pre, Nanos deadline, const char* eof_hint) {
  if (net::recv_exact(fd, pre, kPrefixBytes, deadline, "handshake") < kPrefixBytes) {
    throw TransferError(std::string("the server closed the connection during the handshake (") +
                        eof_hint + ")");
  }
  if (std::memcmp(pre, kHandshakeMagic, 4) != 0) {
    throw TransferError("the server is not a hierbench transfer endpoint (bad handshake magic)");
  }
  const uint16_t version = get_u16(pre + 4);
  const uint16_t type = get_u16(pre + 6);
  if (type == kReject) {
    uint8_t rest[kRejectBytes - kPrefixBytes];
    net::recv_exact(fd, rest, sizeof rest, deadline, "handshake");
    const uint16_t reason = get_u16(rest);
    std::string msg = std::string("the server refused the connection: ") + reject_reason(reason);
    if (reason == kRejectVersion) {
      msg += " (it speaks protocol v" + std::to_string(version) + ", this build v" +
             std::to_string(kVersion) + ")";
    }
    throw TransferError(msg);
  }
  if (version != kVersion) {
    throw TransferError("protocol version mismatch: the server speaks v" +
                        std::to_string(version) + ", this build v" + std::to_string(kVersion));
  }
  return type;
}

}  // namespace

void check_secret(const std::string& secret) {
  if (secret.size() < kMinSecretBytes) {
    throw std::invalid_argument(
        "the shared secret is " + std::to_string(secret.size()) + " bytes; at least " +
        std::to_string(kMinSecretBytes) +
        " are required (make one with: python -c 'import secrets; print(secrets.token_hex(16))')");
  }
}

std::string reject_message(uint16_t reason) {
  uint8_t r[kRejectBytes] = {};
  put_prefix(r, kReject);
  put_u16(r + 8, reason);
  return std::string(reinterpret_cast<const char*>(r), sizeof r);
}

Session client_handshake(int fd, const Digest& key, uint64_t max_frame, bool want_macs,
                         Nanos deadline) {
  auto stall = [&] { return std::max<Nanos>(deadline - real_now(), 1); };
  uint8_t ch[kHelloBytes];
  make_hello(ch, kClientHello, max_frame, want_macs);
  net::send_bytes(fd, ch, sizeof ch, stall(), "handshake");

  uint8_t sh[kHelloBytes];
  const uint16_t type = read_prefix(fd, sh, deadline, "is it a hierbench listener?");
  if (type != kServerHello) {
    throw TransferError("malformed handshake: expected SERVER_HELLO, got type " +
                        std::to_string(type));
  }
  const size_t rest = kHelloBytes - kPrefixBytes;
  if (net::recv_exact(fd, sh + kPrefixBytes, rest, deadline, "handshake") < rest) {
    throw TransferError("the server closed the connection during the handshake");
  }
  uint8_t ca[kAuthBytes];
  put_prefix(ca, kClientAuth);
  const Digest proof = mac_of(key, kClientLabel, ch, sh, nullptr);
  std::memcpy(ca + kPrefixBytes, proof.data(), proof.size());
  net::send_bytes(fd, ca, sizeof ca, stall(), "handshake");

  uint8_t sa[kAuthBytes];
  const uint16_t t2 = read_prefix(fd, sa, deadline, "it rejected our proof: wrong secret?");
  if (t2 != kServerAuth) {
    throw TransferError("malformed handshake: expected SERVER_AUTH, got type " +
                        std::to_string(t2));
  }
  if (net::recv_exact(fd, sa + kPrefixBytes, 32, deadline, "handshake") < 32) {
    throw TransferError("the server closed the connection during the handshake");
  }
  const Digest expect = mac_of(key, kServerLabel, ch, sh, ca);
  if (!constant_time_equal(expect.data(), sa + kPrefixBytes, 32)) {
    const std::string r = reject_message(kRejectAuth);
    try {
      net::send_bytes(fd, r.data(), r.size(), 1'000'000'000, "handshake");
    } catch (...) {  // best effort: we are leaving anyway
    }
    throw TransferError(
        "authentication failed: the server's proof does not match our secret (this is not the "
        "intended server, or it holds another secret)");
  }
  return agree(key, ch, sh, ca, true);
}

size_t ServerHandshake::want() const {
  switch (stage_) {
    case kHello:
      return kHelloBytes - got_;
    case kAuth:
      return kAuthBytes - got_;
    default:
      return 0;
  }
}

std::string ServerHandshake::feed(const uint8_t* p, size_t n) {
  if (n > want()) throw std::logic_error("ServerHandshake::feed: more bytes than wanted");
  const size_t before = got_;
  std::memcpy(buf_ + got_, p, n);
  got_ += n;
  // Check the prefix as soon as it is in: a stranger is dropped at once, not at the timeout.
  if (before < 4 && got_ >= 4 && std::memcmp(buf_, kHandshakeMagic, 4) != 0) {
    throw HandshakeError("not a hierbench transfer client (bad handshake magic)", 0);
  }
  if (before < kPrefixBytes && got_ >= kPrefixBytes) {
    const uint16_t version = get_u16(buf_ + 4), type = get_u16(buf_ + 6);
    if (type == kReject) throw HandshakeError("the client gave up (REJECT)", 0);
    if (version != kVersion) {
      throw HandshakeError("protocol version mismatch: the client speaks v" +
                               std::to_string(version) + ", this build v" +
                               std::to_string(kVersion),
                           kRejectVersion);
    }
    const uint16_t expect = stage_ == kHello ? kClientHello : kClientAuth;
    if (type != expect) {
      throw HandshakeError(std::string("malformed handshake: expected ") +
                               (stage_ == kHello ? "CLIENT_HELLO" : "CLIENT_AUTH") +
                               ", got type " + std::to_string(type),
                           kRejectMalformed);
    }
  }
  if (want() > 0) return {};
  got_ = 0;
  if (stage_ == kHello) {
    std::memcpy(ch_, buf_, kHelloBytes);
    make_hello(sh_, kServerHello, max_frame_, want_macs_);
    stage_ = kAuth;
    return std::string(reinterpret_cast<const char*>(sh_), kHelloBytes);
  }
  const Digest expect = mac_of(key_, kClientLabel, ch_, sh_, nullptr);
  if (!constant_time_equal(expect.data(), buf_ + kPrefixBytes, 32)) {
    throw HandshakeError("the client failed authentication (wrong secret)", kRejectAuth);
  }
  uint8_t sa[kAuthBytes];
  put_prefix(sa, kServerAuth);
  const Digest proof = mac_of(key_, kServerLabel, ch_, sh_, buf_);
  std::memcpy(sa + kPrefixBytes, proof.data(), proof.size());
  session_ = agree(key_, ch_, sh_, buf_, false);
  stage_ = kDone;
  return std::string(reinterpret_cast<const char*>(sa), sizeof sa);
}

}  // namespace hierbench::transfer
