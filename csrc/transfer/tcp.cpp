#include "tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "crypto.h"
#include "wire.h"

namespace hierbench::transfer {

namespace {

using namespace wire;

Nanos real_now() { return RealClock::instance()->now(); }

std::string errstr(int e) {
  char buf[256];
  return std::string(strerror_r(e, buf, sizeof buf));  // GNU strerror_r returns the string
}

std::string secs(Nanos ns) {
  if (ns == kNever) return "forever";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ns) * 1e-9);
  return buf;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Waits until fd is ready for `events` (or has an error/hangup, which the next call reports).
// Returns false once `deadline` (absolute, real clock) has passed.
bool wait_fd(int fd, short events, Nanos deadline) {
  for (;;) {
    int ms = -1;
    if (deadline != kNever) {
      const Nanos left = deadline - real_now();
      if (left <= 0) return false;
      ms = static_cast<int>(std::min<Nanos>((left + 999'999) / 1'000'000, INT_MAX));
    }
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) throw TransferError("poll() failed: " + errstr(errno));
  }
}

std::string socket_error(const char* call, int e) {
  if (e == EPIPE || e == ECONNRESET) {
    return std::string(call) + "(): the connection was closed by the peer (" + errstr(e) + ")";
  }
  return std::string(call) + "() failed: " + errstr(e);
}

// Writes all of iov (blocking in poll, `stall` per lack of progress). MSG_MORE asks the kernel
// to hold a partial segment because more of the same frame follows at once. `heard` (optional):
// when the peer last showed it is alive; a stall is an error only if the peer was not heard from
// within `stall` either (a live peer that does not read is backpressure, not a failure).
void send_all(int fd, iovec* iov, int cnt, bool more, Nanos stall, const std::string& what,
              const std::atomic<Nanos>* heard = nullptr) {
  msghdr msg{};
  while (cnt > 0 && iov[0].iov_len == 0) {
    ++iov;
    --cnt;
  }
  while (cnt > 0) {
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    const ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!wait_fd(fd, POLLOUT, add_sat(real_now(), stall))) {
          if (heard && real_now() - heard->load() < stall) continue;  // alive, only not reading
          throw TransferError(what + ": no progress for " + secs(stall) +
                              " and nothing heard from the peer (it stopped reading and "
                              "sends no keepalives: hung or unreachable)");
        }
        continue;
      }
      throw TransferError(what + ": " + socket_error("send", errno));
    }
    size_t left = static_cast<size_t>(r);
    while (cnt > 0 && left >= iov[0].iov_len) {
      left -= iov[0].iov_len;
      ++iov;
      --cnt;
    }
    if (cnt > 0) {
      iov[0].iov_base = static_cast<uint8_t*>(iov[0].iov_base) + left;
      iov[0].iov_len -= left;
    }
  }
}

void send_bytes(int fd, const void* p, size_t n, Nanos stall, const std::string& what) {
  iovec iov{const_cast<void*>(p), n};
  send_all(fd, &iov, 1, false, stall, what);
}

// recv() of up to n bytes into p: >0 bytes, 0 at EOF. Waits until `deadline`.
ssize_t recv_some(int fd, uint8_t* p, size_t n, Nanos deadline, const std::string& what) {
  for (;;) {
    const ssize_t r = ::recv(fd, p, n, MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLIN, deadline)) throw TimeoutError(what + ": timed out");
      continue;
    }
    throw TransferError(what + ": " + socket_error("recv", errno));
  }
}

// Exactly n bytes unless EOF comes first; returns the count. For the handshake: reads no further
// than asked, since frames may follow immediately.
size_t recv_exact(int fd, uint8_t* p, size_t n, Nanos deadline, const std::string& what) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = recv_some(fd, p + got, n - got, deadline, what);
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

// Buffered reads for the frame stream: small frames cost one recv() for several, large payloads
// are read straight into their slot.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd), buf_(new uint8_t[kCap]) {}
  // Reads n bytes unless EOF comes first; returns the count. Waits up to `first` for the first
  // byte and up to `stall` for each later piece.
  size_t read(uint8_t* dst, size_t n, Nanos first, Nanos stall) {
    size_t got = std::min(n, len_ - pos_);
    std::memcpy(dst, buf_.get() + pos_, got);
    pos_ += got;
    while (got < n) {
      const Nanos deadline = add_sat(real_now(), got == 0 ? first : stall);
      const size_t want = n - got;
      if (want >= kCap) {
        const ssize_t r = recv_some(fd_, dst + got, want, deadline, "reading a frame");
        if (r == 0) return got;
        got += static_cast<size_t>(r);
      } else {
        const ssize_t r = recv_some(fd_, buf_.get(), kCap, deadline, "reading a frame");
        if (r == 0) return got;
        len_ = static_cast<size_t>(r);
        const size_t take = std::min(want, len_);
        std::memcpy(dst + got, buf_.get(), take);
        pos_ = take;
        got += take;
      }
    }
    return got;
  }

 private:
  static constexpr size_t kCap = 64 * 1024;
  int fd_;
  std::unique_ptr<uint8_t[]> buf_;
  size_t pos_ = 0, len_ = 0;
};

void configure_socket(int fd, const EndpointOptions& opts) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opts.sndbuf > 0 && ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opts.sndbuf, sizeof(int)) != 0) {
    throw TransferError("setsockopt(SO_SNDBUF) failed: " + errstr(errno));
  }
  if (opts.rcvbuf > 0 && ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opts.rcvbuf, sizeof(int)) != 0) {
    throw TransferError("setsockopt(SO_RCVBUF) failed: " + errstr(errno));
  }
}

std::string addr_str(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

struct AddrInfo {
  addrinfo* res = nullptr;
  ~AddrInfo() {
    if (res) freeaddrinfo(res);
  }
};

void resolve(const std::string& host, int port, bool passive, AddrInfo& out) {
  if (port < 0 || port > 65535) throw std::invalid_argument("port must be in 0..65535");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  const std::string p = std::to_string(port);
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), p.c_str(), &hints, &out.res);
  if (rc != 0) {
    throw TransferError("cannot resolve " + host + ":" + p + ": " + gai_strerror(rc));
  }
}

std::string transcript(const char* label, const uint8_t* client_hello, const uint8_t* server_hello) {
  std::string t(label);
  t.append(reinterpret_cast<const char*>(client_hello), kClientHelloBytes);
  t.append(reinterpret_cast<const char*>(server_hello), kServerHelloSigned);
  return t;
}

void send_reject(int fd, uint16_t reason) {
  uint8_t r[kRejectBytes] = {};
  put_prefix(r, kReject);
  put_u16(r + 8, reason);
  try {
    send_bytes(fd, r, sizeof r, 1'000'000'000, "handshake");
  } catch (...) {  // best effort: we are refusing this peer anyway
  }
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

// Reads an 8-byte handshake prefix; checks magic and version.
uint16_t read_prefix(int fd, uint8_t* pre, Nanos deadline, const char* peer_role,
                     const char* eof_hint) {
  const size_t got = recv_exact(fd, pre, kPrefixBytes, deadline, "handshake");
  if (got < kPrefixBytes) {
    throw TransferError(std::string("the ") + peer_role + " closed the connection during the " +
                        "handshake (" + eof_hint + ")");
  }
  if (std::memcmp(pre, kHandshakeMagic, 4) != 0) {
    throw TransferError(std::string("the ") + peer_role +
                        " is not a hierbench transfer endpoint (bad handshake magic)");
  }
  const uint16_t version = get_u16(pre + 4);
  const uint16_t type = get_u16(pre + 6);
  if (type == kReject) {
    uint8_t rest[kRejectBytes - kPrefixBytes];
    recv_exact(fd, rest, sizeof rest, deadline, "handshake");
    const uint16_t reason = get_u16(rest);
    std::string msg = std::string("the ") + peer_role + " refused the connection: " +
                      reject_reason(reason);
    if (reason == kRejectVersion) {
      msg += " (it speaks protocol v" + std::to_string(version) + ", this build v" +
             std::to_string(kVersion) + ")";
    }
    throw TransferError(msg);
  }
  if (version != kVersion) {
    throw TransferError(std::string("protocol version mismatch: the ") + peer_role +
                        " speaks v" + std::to_string(version) + ", this build v" +
                        std::to_string(kVersion));
  }
  return type;
}

// Client side. Returns the server's frame limit.
uint64_t client_handshake(int fd, const std::string& secret, uint64_t max_frame, Nanos deadline) {
  uint8_t ch[kClientHelloBytes] = {};
  put_prefix(ch, kClientHello);
  put_u64(ch + 8, max_frame);
  random_bytes(ch + 16, kNonceBytes);
  send_bytes(fd, ch, sizeof ch, std::max<Nanos>(deadline - real_now(), 1), "handshake");

  uint8_t sh[kServerHelloBytes];
  const uint16_t type = read_prefix(fd, sh, deadline, "server", "is it a hierbench listener?");
  if (type != kServerHello) {
    throw TransferError("malformed handshake: expected SERVER_HELLO, got type " +
                        std::to_string(type));
  }
  const size_t rest = kServerHelloBytes - kPrefixBytes;
  if (recv_exact(fd, sh + kPrefixBytes, rest, deadline, "handshake") < rest) {
    throw TransferError("the server closed the connection during the handshake");
  }
  const Digest expect = hmac_sha256(secret, transcript(kServerLabel, ch, sh));
  if (!constant_time_equal(expect.data(), sh + kServerHelloSigned, 32)) {
    send_reject(fd, kRejectAuth);
    throw TransferError(
        "authentication failed: the server's proof does not match our secret (the two sides "
        "were given different secrets, or this is not the intended server)");
  }
  uint8_t ca[kClientAuthBytes] = {};
  put_prefix(ca, kClientAuth);
  const Digest proof = hmac_sha256(secret, transcript(kClientLabel, ch, sh));
  std::memcpy(ca + 8, proof.data(), 32);
  send_bytes(fd, ca, sizeof ca, std::max<Nanos>(deadline - real_now(), 1), "handshake");

  uint8_t acc[kPrefixBytes];
  const uint16_t t2 = read_prefix(fd, acc, deadline, "server",
                                  "it rejected our proof: wrong secret?");
  if (t2 != kAccept) {
    throw TransferError("malformed handshake: expected ACCEPT, got type " + std::to_string(t2));
  }
  return get_u64(sh + 8);
}

// Server side. Returns the client's frame limit.
uint64_t server_handshake(int fd, const std::string& secret, uint64_t max_frame, Nanos deadline) {
  uint8_t ch[kClientHelloBytes];
  if (recv_exact(fd, ch, kPrefixBytes, deadline, "handshake") < kPrefixBytes) {
    throw TransferError("the client closed the connection before the handshake");
  }
  if (std::memcmp(ch, kHandshakeMagic, 4) != 0) {
    throw TransferError("not a hierbench transfer client (bad handshake magic): refused");
  }
  const uint16_t version = get_u16(ch + 4);
  if (version != kVersion) {
    send_reject(fd, kRejectVersion);
    throw TransferError("protocol version mismatch: the client speaks v" +
                        std::to_string(version) + ", this build v" + std::to_string(kVersion) +
                        ": refused");
  }
  if (get_u16(ch + 6) != kClientHello) {
    send_reject(fd, kRejectMalformed);
    throw TransferError("malformed handshake: expected CLIENT_HELLO: refused");
  }
  const size_t rest = kClientHelloBytes - kPrefixBytes;
  if (recv_exact(fd, ch + kPrefixBytes, rest, deadline, "handshake") < rest) {
    throw TransferError("the client closed the connection during the handshake");
  }
  uint8_t sh[kServerHelloBytes] = {};
  put_prefix(sh, kServerHello);
  put_u64(sh + 8, max_frame);
  random_bytes(sh + 16, kNonceBytes);
  const Digest proof = hmac_sha256(secret, transcript(kServerLabel, ch, sh));
  std::memcpy(sh + kServerHelloSigned, proof.data(), 32);
  send_bytes(fd, sh, sizeof sh, std::max<Nanos>(deadline - real_now(), 1), "handshake");

  uint8_t ca[kClientAuthBytes];
  const uint16_t type = read_prefix(fd, ca, deadline, "client",
                                    "it rejected our proof: the secrets differ");
  if (type != kClientAuth) {
    send_reject(fd, kRejectMalformed);
    throw TransferError("malformed handshake: expected CLIENT_AUTH: refused");
  }
  const size_t rest2 = kClientAuthBytes - kPrefixBytes;
  if (recv_exact(fd, ca + kPrefixBytes, rest2, deadline, "handshake") < rest2) {
    throw TransferError("the client closed the connection during the handshake");
  }
  const Digest expect = hmac_sha256(secret, transcript(kClientLabel, ch, sh));
  if (!constant_time_equal(expect.data(), ca + 8, 32)) {
    send_reject(fd, kRejectAuth);
    throw TransferError("the client failed authentication (wrong secret): refused");
  }
  uint8_t acc[kPrefixBytes];
  put_prefix(acc, kAccept);
  send_bytes(fd, acc, sizeof acc, std::max<Nanos>(deadline - real_now(), 1), "handshake");
  return get_u64(ch + 8);
}

// ---- the transport ----------------------------------------------------------------------------

class TcpTransport final : public Transport {
 public:
  TcpTransport(Connection c, const EndpointOptions& o, std::shared_ptr<Clock> clock)
      : conn_(std::move(c)), opts_(o), clock_(std::move(clock)) {}

  ~TcpTransport() override {
    abort();
    if (rx_.joinable()) rx_.join();
  }

  void start(Host* host, std::shared_ptr<RecvRing> ring) override {
    host_ = host;
    ring_ = std::move(ring);
    heard_ = real_now();
    clock_->attach();
    rx_ = std::thread([this] { rx_main(); });
  }

  uint64_t pacing_chunk(const LinkSpec& link) const override {
    if (opts_.pacing_chunk_bytes) return opts_.pacing_chunk_bytes;
    return std::clamp<uint64_t>(link.rate_bps / 8000, 4096, 1 << 20);  // ~1 ms of link time
  }
  uint64_t peer_max_frame() const override { return conn_.peer_max_frame; }
  bool needs_real_clock() const override { return true; }
  std::string describe() const override { return "tcp to " + conn_.peer; }

  bool begin(const FrameMeta& m) override {
    std::memset(header_, 0, sizeof header_);
    std::memcpy(header_, kFrameMagic, 4);
    put_u16(header_ + 4, kData);
    put_u64(header_ + 8, m.seq);
    put_u64(header_ + 16, m.bytes);
    put_u64(header_ + 24, static_cast<uint64_t>(m.delay));
    put_u64(header_ + 32, static_cast<uint64_t>(m.enqueued));
    put_u32(header_ + 52, crc32c(header_, 52));
    header_pending_ = true;
    crc_ = 0;
    frame_bytes_ = m.bytes;
    sent_ = 0;
    what_ = "sending frame " + std::to_string(m.seq) + " to " + conn_.peer;
    return false;  // the header goes out with the first chunk
  }

  void write(const uint8_t* p, uint64_t n, uint64_t offset) override {
    iovec iov[2] = {{header_, header_pending_ ? kHeaderBytes : 0},
                    {const_cast<uint8_t*>(p), n}};
    mid_frame_ = true;  // until end() or a cancellation completes it
    send_all(conn_.fd, iov, 2, offset + n == frame_bytes_, opts_.io_timeout, what_, &heard_);
    header_pending_ = false;
    crc_ = crc32c(p, n, crc_);
    sent_ = offset + n;
  }

  void end(const FrameMeta& m) override {
    uint8_t t[kTrailerBytes] = {};
    put_u64(t, static_cast<uint64_t>(m.tx_start));
    put_u64(t + 8, static_cast<uint64_t>(m.tx_end));
    put_u32(t + 16, crc32c(t, 16, crc_));
    iovec iov[2] = {{header_, header_pending_ ? kHeaderBytes : 0}, {t, sizeof t}};
    mid_frame_ = true;
    send_all(conn_.fd, iov, 2, false, opts_.io_timeout, what_, &heard_);
    header_pending_ = false;
    mid_frame_ = false;
  }

  void cancel_frame_for_close(Nanos stall) override {
    if (header_pending_) return;  // nothing of the frame is on the wire: CLOSE can follow
    // The peer expects frame_bytes_ payload bytes: send filler for the rest, then a trailer
    // flagged cancelled (the peer discards the frame), unpaced.
    static const uint8_t zeros[64 * 1024] = {};
    while (sent_ < frame_bytes_) {
      const uint64_t n = std::min<uint64_t>(sizeof zeros, frame_bytes_ - sent_);
      send_bytes(conn_.fd, zeros, n, stall, what_ + " (cancelling it)");
      crc_ = crc32c(zeros, n, crc_);
      sent_ += n;
    }
    uint8_t t[kTrailerBytes] = {};
    put_u32(t + 16, crc32c(t, 16, crc_));
    put_u32(t + 20, kTrailerCancelled);
    send_bytes(conn_.fd, t, sizeof t, stall, what_ + " (cancelling it)");
    mid_frame_ = false;
  }

  Nanos keepalive_interval() const override {
    return opts_.io_timeout == kNever ? kNever : std::max<Nanos>(opts_.io_timeout / 4, 1'000'000);
  }

  void send_keepalive() override {
    uint8_t h[kHeaderBytes] = {};
    std::memcpy(h, kFrameMagic, 4);
    put_u16(h + 4, kKeepalive);
    put_u32(h + 52, crc32c(h, 52));
    send_all_header(h, "sending a keepalive to " + conn_.peer);
  }

  void send_close(uint64_t frames_sent) override {
    if (mid_frame_) throw TransferError("a frame is part-sent: CLOSE cannot follow it");
    uint8_t h[kHeaderBytes] = {};
    std::memcpy(h, kFrameMagic, 4);
    put_u16(h + 4, kClose);
    put_u64(h + 8, frames_sent);
    put_u32(h + 52, crc32c(h, 52));
    send_all_header(h, "sending CLOSE to " + conn_.peer);
    ::shutdown(conn_.fd, SHUT_WR);
  }

  void abort() override {
    stop_ = true;
    if (conn_.fd >= 0) ::shutdown(conn_.fd, SHUT_RDWR);  // wakes both threads' socket calls
    if (ring_) ring_->wake();
  }

  void finish(Nanos deadline) override {
    {
      std::unique_lock<std::mutex> lk(done_m_);
      done_cv_.wait_until(lk, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(
                                  std::min(deadline, real_now() + Nanos(3600'000'000'000)))),
                          [&] { return rx_done_; });
    }
    abort();
    if (rx_.joinable()) rx_.join();
    if (conn_.fd >= 0) {
      ::close(conn_.fd);
      conn_.fd = -1;
    }
  }

 private:
  void rx_main();
  void send_all_header(uint8_t* h, const std::string& what) {
    iovec iov{h, kHeaderBytes};
    send_all(conn_.fd, &iov, 1, false, opts_.io_timeout, what, &heard_);
  }

  Connection conn_;
  EndpointOptions opts_;
  std::shared_ptr<Clock> clock_;
  Host* host_ = nullptr;
  std::shared_ptr<RecvRing> ring_;
  std::thread rx_;
  std::atomic<bool> stop_{false};
  std::mutex done_m_;
  std::condition_variable done_cv_;
  bool rx_done_ = false;
  std::atomic<Nanos> heard_{0};  // real time the receiver last got a frame header
  // sender thread only
  uint64_t sent_ = 0;       // payload bytes of the current frame written
  bool mid_frame_ = false;  // bytes of a frame are on the wire, its trailer is not
  uint8_t header_[kHeaderBytes];
  bool header_pending_ = false;
  uint32_t crc_ = 0;
  uint64_t frame_bytes_ = 0;
  std::string what_;
};

void TcpTransport::rx_main() {
  VirtualClock::mark_engine_thread();
  Reader rd(conn_.fd);
  uint64_t frames = 0;
  bool saw_close = false;
  std::unique_ptr<uint8_t[]> scratch;
  const Nanos io = opts_.io_timeout;
  try {
    for (;;) {
      uint8_t h[kHeaderBytes];
      const size_t got = rd.read(h, kHeaderBytes, kNever, io);
      if (stop_) break;
      const std::string where = "frame " + std::to_string(frames) + " from " + conn_.peer;
      if (got == 0) {
        if (saw_close) break;
        throw TransferError("the peer (" + conn_.peer +
                            ") closed the connection without a CLOSE frame after " +
                            std::to_string(frames) +
                            " frame(s): it died, was killed, or rejected our data (see its error)");
      }
      if (got < kHeaderBytes) {
        throw TransferError("connection lost in the middle of " + where + " (header: " +
                            std::to_string(got) + " of " + std::to_string(kHeaderBytes) +
                            " bytes): the peer died mid-frame");
      }
      if (std::memcmp(h, kFrameMagic, 4) != 0) {
        throw TransferError(where + ": bad frame magic: the stream is corrupted, or the peer "
                                    "does not speak this protocol");
      }
      const uint32_t hcrc = crc32c(h, 52);
      if (hcrc != get_u32(h + 52)) {
        throw TransferError(where + ": header CRC32C mismatch (computed " + hex32(hcrc) +
                            ", frame says " + hex32(get_u32(h + 52)) +
                            "): corrupted in transit");
      }
      heard_ = real_now();
      const uint16_t kind = get_u16(h + 4);
      if (kind == kKeepalive) continue;  // the peer is alive (it may not be reading)
      if (kind == kClose) {
        saw_close = true;
        host_->transport_peer_closed();
        continue;  // keep reading until EOF, so nothing we have not read triggers a reset
      }
      if (kind != kData) {
        throw TransferError(where + ": unknown frame kind " + std::to_string(kind));
      }
      if (saw_close) throw TransferError(where + ": a DATA frame after CLOSE (protocol violation)");
      FrameMeta m;
      m.seq = get_u64(h + 8);
      m.bytes = get_u64(h + 16);
      m.delay = static_cast<Nanos>(get_u64(h + 24));
      m.enqueued = static_cast<Nanos>(get_u64(h + 32));
      if (m.bytes > opts_.max_frame_bytes) {
        throw TransferError(where + " (seq " + std::to_string(m.seq) + ") announces " +
                            std::to_string(m.bytes) + " payload bytes, over this endpoint's " +
                            "limit of " + std::to_string(opts_.max_frame_bytes) +
                            " (max_frame_bytes): refused");
      }
      if (m.delay < 0) throw TransferError(where + ": negative delay (protocol violation)");
      const Nanos rx_start = clock_->now();
      const int slot = ring_->begin(m, &stop_);
      if (stop_) break;
      uint8_t* dst = slot >= 0 ? ring_->data(slot) : nullptr;
      constexpr uint64_t kPiece = 1 << 20;  // CRC while the bytes are still in cache
      if (!dst && !scratch) scratch.reset(new uint8_t[kPiece]);
      uint32_t crc = 0;
      uint32_t flags = 0;
      try {
        uint64_t off = 0;
        while (off < m.bytes) {
          const uint64_t piece = std::min(kPiece, m.bytes - off);
          uint8_t* p = dst ? dst + off : scratch.get();
          const size_t g = rd.read(p, piece, io, io);
          crc = crc32c(p, g, crc);
          if (g < piece) {
            if (stop_) break;
            throw TransferError("connection lost in the middle of " + where + " (seq " +
                                std::to_string(m.seq) + "): got " + std::to_string(off + g) +
                                " of " + std::to_string(m.bytes) +
                                " payload bytes: the peer died mid-frame");
          }
          off += g;
        }
        if (stop_) {
          if (slot >= 0) ring_->abandon(slot);
          break;
        }
        uint8_t t[kTrailerBytes];
        if (rd.read(t, kTrailerBytes, io, io) < kTrailerBytes) {
          throw TransferError("connection lost in the middle of " + where +
                              " (trailer): the peer died mid-frame");
        }
        crc = crc32c(t, 16, crc);
        heard_ = real_now();
        if (crc != get_u32(t + 16)) {
          throw TransferError(where + " (seq " + std::to_string(m.seq) + ", " +
                              std::to_string(m.bytes) + " bytes): payload CRC32C mismatch " +
                              "(computed " + hex32(crc) + ", frame says " +
                              hex32(get_u32(t + 16)) + "): the data was corrupted in transit");
        }
        m.tx_start = static_cast<Nanos>(get_u64(t));
        m.tx_end = static_cast<Nanos>(get_u64(t + 8));
        flags = get_u32(t + 20);
      } catch (...) {
        if (slot >= 0) ring_->abandon(slot);
        throw;
      }
      if (flags & kTrailerCancelled) {  // the peer's close() ran out of time
        if (slot >= 0) ring_->abandon(slot);
        ++frames;
        continue;
      }
      if (slot >= 0) ring_->complete(slot, m, rx_start, clock_->now());
      ++frames;
    }
  } catch (...) {
    if (!stop_) {
      ::shutdown(conn_.fd, SHUT_RDWR);  // the connection is unusable: make both sides notice
      host_->transport_failed(std::current_exception());
    }
  }
  {
    std::lock_guard<std::mutex> lk(done_m_);
    rx_done_ = true;
  }
  done_cv_.notify_all();
  clock_->detach();
}

}  // namespace

// ---- Connection / connect / Listener ----------------------------------------------------------

Connection::Connection(Connection&& o) noexcept
    : fd(o.fd), peer_max_frame(o.peer_max_frame), peer(std::move(o.peer)) {
  o.fd = -1;
}

Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    if (fd >= 0) ::close(fd);
    fd = o.fd;
    peer_max_frame = o.peer_max_frame;
    peer = std::move(o.peer);
    o.fd = -1;
  }
  return *this;
}

Connection::~Connection() {
  if (fd >= 0) ::close(fd);
}

Connection tcp_connect(const std::string& host, int port, const std::string& secret,
                       const EndpointOptions& opts, Nanos timeout) {
  if (secret.empty()) throw std::invalid_argument("secret must not be empty");
  const std::string where = host + ":" + std::to_string(port);
  const Nanos deadline = add_sat(real_now(), timeout);
  AddrInfo ai;
  resolve(host, port, false, ai);
  std::string last = "no address";
  for (addrinfo* a = ai.res; a; a = a->ai_next) {
    Connection c;
    c.fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (c.fd < 0) {
      last = errstr(errno);
      continue;
    }
    configure_socket(c.fd, opts);  // buffer sizes before connect: they set the window scale
    if (::connect(c.fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last = errstr(errno);
        continue;
      }
      if (!wait_fd(c.fd, POLLOUT, deadline)) {
        throw TimeoutError("cannot connect to " + where + ": timed out after " + secs(timeout));
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = errstr(err);
        continue;
      }
    }
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
    c.peer = where;
    const Nanos hs_deadline = std::min(deadline, add_sat(real_now(), opts.handshake_timeout));
    try {
      c.peer_max_frame = client_handshake(c.fd, secret, opts.max_frame_bytes, hs_deadline);
    } catch (const TimeoutError&) {
      throw TimeoutError("handshake with " + where +
                         " timed out: the server did not answer (is it calling accept()?)");
    } catch (const TransferError& e) {
      throw TransferError("handshake with " + where + " failed: " + e.what());
    }
    return c;
  }
  throw TransferError("cannot connect to " + where + ": " + last);
}

Listener::Listener(const std::string& host, int port, std::string secret,
                   const EndpointOptions& opts, int backlog)
    : host_(host), secret_(std::move(secret)), opts_(opts) {
  if (secret_.empty()) throw std::invalid_argument("secret must not be empty");
  AddrInfo ai;
  resolve(host, port, true, ai);
  std::string last = "no address";
  for (addrinfo* a = ai.res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                            a->ai_protocol);
    if (fd < 0) {
      last = errstr(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    try {
      configure_socket(fd, opts);  // inherited by accepted sockets (window scale)
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, backlog) != 0) {
      last = errstr(errno);
      ::close(fd);
      continue;
    }
    fd_ = fd;
    break;
  }
  if (fd_ < 0) {
    throw TransferError("cannot listen on " + host + ":" + std::to_string(port) + ": " + last);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                   : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

Listener::~Listener() {
  close();
  if (fd_ >= 0) ::close(fd_);
}

void Listener::close() {
  if (!closed_.exchange(true) && fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
}

Connection Listener::accept(Nanos timeout) {
  const Nanos deadline = add_sat(real_now(), timeout);
  for (;;) {
    if (closed_) throw ClosedError("the listener is closed");
    if (!wait_fd(fd_, POLLIN, deadline)) {
      throw TimeoutError("accept(): no connection within " + secs(timeout));
    }
    if (closed_) throw ClosedError("the listener is closed");
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (closed_) throw ClosedError("the listener is closed");
      throw TransferError("accept() failed: " + errstr(errno));
    }
    Connection c;
    c.fd = fd;
    c.peer = addr_str(ss);
    try {
      configure_socket(fd, opts_);
      c.peer_max_frame = server_handshake(fd, secret_, opts_.max_frame_bytes,
                                          add_sat(real_now(), opts_.handshake_timeout));
    } catch (const TimeoutError&) {
      throw TransferError("handshake with " + c.peer + " failed: it stalled for " +
                          secs(opts_.handshake_timeout));
    } catch (const TransferError& e) {
      throw TransferError("handshake with " + c.peer + " failed: " + e.what());
    }
    return c;
  }
}

std::unique_ptr<Transport> make_tcp_transport(Connection conn, const EndpointOptions& opts,
                                              std::shared_ptr<Clock> clock) {
  return std::make_unique<TcpTransport>(std::move(conn), opts, std::move(clock));
}

std::shared_ptr<Endpoint> make_tcp_endpoint(Connection conn, const LinkSpec& link,
                                            const EndpointOptions& opts,
                                            const std::function<void(Endpoint*)>& deleter) {
  std::shared_ptr<Clock> clock = RealClock::instance();
  auto ring = std::make_shared<RecvRing>(clock, clock->make_sync(), opts.recv_slots,
                                         opts.slot_bytes);
  auto transport = make_tcp_transport(std::move(conn), opts, clock);
  return std::shared_ptr<Endpoint>(
      new Endpoint(clock, link, opts, ring, std::move(transport), clock->now()), deleter);
}

}  // namespace hierbench::transfer
