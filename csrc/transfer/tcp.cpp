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
#include "net.h"
#include "wire.h"

namespace hierbench::transfer {

namespace {

using namespace wire;
using namespace net;


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


// ---- the transport ----------------------------------------------------------------------------

class TcpTransport final : public Transport {
 public:
  TcpTransport(Connection c, const EndpointOptions& o, std::shared_ptr<Clock> clock)
      : conn_(std::move(c)), opts_(o), clock_(std::move(clock)), macs_(conn_.session.frame_macs) {
    if (macs_) {
      tx_mac_ = std::make_unique<HmacSha256>(conn_.session.send_key.data(), 32);
      rx_mac_ = std::make_unique<HmacSha256>(conn_.session.recv_key.data(), 32);
    }
  }

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
  uint64_t peer_max_frame() const override { return conn_.peer_max_frame(); }
  bool needs_real_clock() const override { return true; }
  std::string describe() const override {
    return "tcp to " + conn_.peer + (macs_ ? " (frames authenticated)" : "");
  }

  bool begin(const FrameMeta& m) override {
    std::memset(header_, 0, sizeof header_);
    std::memcpy(header_, kFrameMagic, 4);
    put_u16(header_ + 4, kData);
    put_u64(header_ + 8, m.seq);
    put_u64(header_ + 16, m.bytes);
    put_u64(header_ + 24, static_cast<uint64_t>(m.delay));
    put_u64(header_ + 32, static_cast<uint64_t>(m.enqueued));
    seal_header(header_);
    if (macs_) {  // the frame's tag: counter, header, payload, trailer
      tx_mac_->update("F", 1);
      uint8_t n[8];
      put_u64(n, tx_frames_ - 1);
      tx_mac_->update(n, 8);
      tx_mac_->update(header_, 52);
    }
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
    if (macs_) tx_mac_->update(p, n);
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
    Digest tag{};
    if (macs_) {
      tx_mac_->update(t, sizeof t);
      tag = tx_mac_->finish();
    }
    iovec iov[3] = {{header_, header_pending_ ? kHeaderBytes : 0},
                    {t, sizeof t},
                    {tag.data(), macs_ ? kTagBytes : 0}};
    mid_frame_ = true;
    send_all(conn_.fd, iov, 3, false, opts_.io_timeout, what_, &heard_);
    header_pending_ = false;
    mid_frame_ = false;
  }

  void cancel_frame_for_close(Nanos stall) override {
    if (header_pending_) {  // nothing of the frame is on the wire: CLOSE can follow
      if (macs_) {  // take back the frame counter and the tag begin() started
        --tx_frames_;
        tx_mac_->reset();
      }
      header_pending_ = false;
      return;
    }
    // The peer expects frame_bytes_ payload bytes: send filler for the rest, then a trailer
    // flagged cancelled (the peer discards the frame), unpaced. With MACs the tag covers the
    // filler and the whole trailer, flag included, like any frame's.
    static const uint8_t zeros[64 * 1024] = {};
    const std::string what = what_ + " (cancelling it)";
    while (sent_ < frame_bytes_) {
      const uint64_t n = std::min<uint64_t>(sizeof zeros, frame_bytes_ - sent_);
      if (macs_) tx_mac_->update(zeros, n);
      send_bytes(conn_.fd, zeros, n, stall, what);
      crc_ = crc32c(zeros, n, crc_);
      sent_ += n;
    }
    uint8_t t[kTrailerBytes] = {};
    put_u32(t + 16, crc32c(t, 16, crc_));
    put_u32(t + 20, kTrailerCancelled);
    Digest tag{};
    if (macs_) {
      tx_mac_->update(t, sizeof t);
      tag = tx_mac_->finish();
      tx_mac_->reset();
    }
    iovec iov[2] = {{t, sizeof t}, {tag.data(), macs_ ? kTagBytes : 0}};
    send_all(conn_.fd, iov, 2, false, stall, what);
    mid_frame_ = false;
  }

  Nanos keepalive_interval() const override {
    return opts_.io_timeout == kNever ? kNever : std::max<Nanos>(opts_.io_timeout / 4, 1'000'000);
  }

  void send_keepalive() override {
    uint8_t h[kHeaderBytes] = {};
    std::memcpy(h, kFrameMagic, 4);
    put_u16(h + 4, kKeepalive);
    seal_header(h);  // with MACs: authenticated and counted like any frame
    send_all_header(h, "sending a keepalive to " + conn_.peer);
  }

  void send_close(uint64_t frames_sent) override {
    if (mid_frame_) throw TransferError("a frame is part-sent: CLOSE cannot follow it");
    uint8_t h[kHeaderBytes] = {};
    std::memcpy(h, kFrameMagic, 4);
    put_u16(h + 4, kClose);
    put_u64(h + 8, frames_sent);
    seal_header(h);
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

  // Flags, header MAC (with MACs: under the send key and this side's frame counter) and CRC.
  void seal_header(uint8_t* h) {
    if (macs_) {
      put_u16(h + 6, kFrameFlagMac);
      const Digest d = header_mac(*tx_mac_, tx_frames_++, h);
      std::memcpy(h + 40, d.data(), kHeaderMacBytes);
    }
    put_u32(h + 52, crc32c(h, 52));
  }
  static Digest header_mac(HmacSha256& mac, uint64_t n, const uint8_t* h) {
    uint8_t nb[8];
    put_u64(nb, n);
    mac.reset();
    mac.update("H", 1);
    mac.update(nb, 8);
    mac.update(h, 40);
    Digest d = mac.finish();
    mac.reset();
    return d;
  }

  Connection conn_;
  EndpointOptions opts_;
  std::shared_ptr<Clock> clock_;
  const bool macs_;
  std::unique_ptr<HmacSha256> tx_mac_;  // sender thread only (and CLOSE, sent after it stopped)
  std::unique_ptr<HmacSha256> rx_mac_;  // receiver thread only
  uint64_t tx_frames_ = 0;
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
  uint64_t rx_frames = 0;  // all frames, for the MACs' counter
  uint64_t cancelled = 0;  // DATA frames the peer's close() cancelled (0 or 1: only CLOSE follows)
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
      const uint16_t flags = get_u16(h + 6);
      if (flags != (macs_ ? kFrameFlagMac : 0)) {
        throw TransferError(where + (macs_ ? ": a frame without a MAC on a connection whose "
                                             "frames are authenticated: forged or injected"
                                           : ": unexpected frame flags " +
                                                 std::to_string(flags)));
      }
      const uint64_t n = rx_frames++;
      if (macs_) {  // before anything else in the header is believed
        const Digest d = header_mac(*rx_mac_, n, h);
        if (!constant_time_equal(d.data(), h + 40, kHeaderMacBytes)) {
          throw TransferError(where + ": header MAC mismatch: the frame was forged, replayed, "
                                      "reordered or altered in transit");
        }
      }
      const uint32_t hcrc = crc32c(h, 52);
      if (hcrc != get_u32(h + 52)) {
        throw TransferError(where + ": header CRC32C mismatch (computed " + hex32(hcrc) +
                            ", frame says " + hex32(get_u32(h + 52)) +
                            "): corrupted in transit");
      }
      heard_ = real_now();
      const uint16_t kind = get_u16(h + 4);
      if ((kind == kKeepalive || kind == kClose) && get_u64(h + 16) != 0) {
        throw TransferError(where + ": a " + (kind == kClose ? "CLOSE" : "KEEPALIVE") +
                            " frame with a payload length (protocol violation)");
      }
      if (kind == kKeepalive) {
        if (saw_close || cancelled) {
          throw TransferError(where + ": a KEEPALIVE after " +
                              (saw_close ? "CLOSE" : "a cancelled frame") +
                              " (protocol violation)");
        }
        continue;  // the peer is alive (it may not be reading)
      }
      if (kind == kClose) {
        if (saw_close) throw TransferError(where + ": a second CLOSE (protocol violation)");
        // CLOSE counts the DATA frames the peer sent whole: any other number means frames
        // were lost (or a cancelled flag was flipped in transit), which must not pass silently.
        if (get_u64(h + 8) != frames - cancelled) {
          throw TransferError(where + ": CLOSE says " + std::to_string(get_u64(h + 8)) +
                              " frame(s) were sent, " + std::to_string(frames - cancelled) +
                              " arrived whole: frames were lost or altered in transit");
        }
        saw_close = true;
        host_->transport_peer_closed();
        continue;  // keep reading until EOF, so nothing we have not read triggers a reset
      }
      if (kind != kData) {
        throw TransferError(where + ": unknown frame kind " + std::to_string(kind));
      }
      if (saw_close) throw TransferError(where + ": a DATA frame after CLOSE (protocol violation)");
      if (cancelled) {
        throw TransferError(where + ": a DATA frame after a cancelled one (only CLOSE may "
                                    "follow it: protocol violation)");
      }
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
      uint32_t tflags = 0;
      if (macs_) {
        uint8_t nb[8];
        put_u64(nb, n);
        rx_mac_->update("F", 1);
        rx_mac_->update(nb, 8);
        rx_mac_->update(h, 52);
      }
      try {
        uint64_t off = 0;
        while (off < m.bytes) {
          const uint64_t piece = std::min(kPiece, m.bytes - off);
          uint8_t* p = dst ? dst + off : scratch.get();
          const size_t g = rd.read(p, piece, io, io);
          crc = crc32c(p, g, crc);
          if (macs_) rx_mac_->update(p, g);
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
        if (macs_) {  // the tag first: a forged frame is named as such, not as corruption
          uint8_t tag[kTagBytes];
          if (rd.read(tag, kTagBytes, io, io) < kTagBytes) {
            throw TransferError("connection lost in the middle of " + where +
                                " (MAC): the peer died mid-frame");
          }
          rx_mac_->update(t, kTrailerBytes);
          const Digest d = rx_mac_->finish();
          rx_mac_->reset();
          if (!constant_time_equal(d.data(), tag, kTagBytes)) {
            throw TransferError(where + " (seq " + std::to_string(m.seq) + ", " +
                                std::to_string(m.bytes) +
                                " bytes): MAC mismatch: the frame was forged, replayed or "
                                "altered in transit");
          }
        }
        if (crc != get_u32(t + 16)) {
          throw TransferError(where + " (seq " + std::to_string(m.seq) + ", " +
                              std::to_string(m.bytes) + " bytes): payload CRC32C mismatch " +
                              "(computed " + hex32(crc) + ", frame says " +
                              hex32(get_u32(t + 16)) + "): the data was corrupted in transit");
        }
        m.tx_start = static_cast<Nanos>(get_u64(t));
        m.tx_end = static_cast<Nanos>(get_u64(t + 8));
        tflags = get_u32(t + 20);
        if (tflags != 0 && tflags != kTrailerCancelled) {
          throw TransferError(where + " (seq " + std::to_string(m.seq) +
                              "): unknown trailer flags " + hex32(tflags) +
                              " (protocol violation)");
        }
        heard_ = real_now();
      } catch (...) {
        if (slot >= 0) ring_->abandon(slot);
        throw;
      }
      if (tflags == kTrailerCancelled) {  // the peer's close() ran out of time: filler
        if (slot >= 0) ring_->abandon(slot);
        ++frames;
        ++cancelled;
        continue;
      }
      if (slot >= 0) ring_->complete(slot, m, rx_start, clock_->now());
      ++frames;
    }
  } catch (...) {
    if (!stop_) {
      // The cause first (the first failure recorded is the one every call reports), then cut
      // the connection: the unusable socket makes both sides notice (our sender thread's next
      // write fails too, but that is a consequence, not the cause).
      host_->transport_failed(std::current_exception());
      ::shutdown(conn_.fd, SHUT_RDWR);
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
    : fd(o.fd), session(o.session), peer(std::move(o.peer)) {
  o.fd = -1;
}

Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    if (fd >= 0) ::close(fd);
    fd = o.fd;
    session = o.session;
    peer = std::move(o.peer);
    o.fd = -1;
  }
  return *this;
}

Connection::~Connection() {
  if (fd >= 0) ::close(fd);
}

Connection tcp_connect(const std::string& host, int port, const std::string& secret,
                       const EndpointOptions& opts, Nanos timeout, bool frame_macs) {
  check_secret(secret);
  const std::string where = host + ":" + std::to_string(port);
  const Nanos deadline = add_sat(real_now(), timeout);
  const Digest key = derive_key(secret);
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
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, std::min<size_t>(a->ai_addrlen, sizeof ss));
    const bool macs = frame_macs || !is_loopback(ss);
    const Nanos hs_deadline = std::min(deadline, add_sat(real_now(), opts.handshake_timeout));
    try {
      c.session = client_handshake(c.fd, key, opts.max_frame_bytes, macs, hs_deadline);
    } catch (const TimeoutError&) {
      throw TimeoutError("handshake with " + where +
                         " timed out: the server did not answer (is it a hierbench listener?)");
    } catch (const TransferError& e) {
      throw TransferError("handshake with " + where + " failed: " + e.what());
    }
    return c;
  }
  throw TransferError("cannot connect to " + where + ": " + last);
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
