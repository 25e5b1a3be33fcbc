// TCP transport: length-prefixed, CRC32C-checked frames over one connection (and, off loopback or
// when asked, HMAC-SHA256-authenticated under per-connection session keys), after a versioned
// handshake in which the client proves first that it knows the shared secret, then the server.
// Wire format: wire.h and docs/transfer.md; the handshake: handshake.h; the listener: listener.cpp.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "crypto.h"
#include "engine.h"
#include "handshake.h"

namespace hierbench::transfer {

// A connected, authenticated socket, not yet owned by an endpoint.
struct Connection {
  int fd = -1;
  Session session;
  std::string peer;  // "host:port" of the other side
  uint64_t peer_max_frame() const { return session.peer_max_frame; }
  Connection() = default;
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&& o) noexcept;
  Connection(const Connection&) = delete;
  ~Connection();
};

// Connects to host:port and runs the client side of the handshake. `timeout` bounds connect
// (handshake: opts.handshake_timeout). `frame_macs`: authenticate frames even on loopback (off
// loopback they always are).
Connection tcp_connect(const std::string& host, int port, const std::string& secret,
                       const EndpointOptions& opts, Nanos timeout, bool frame_macs = false);

// Listens, and runs the handshakes of incoming connections on its own thread, all at once
// (each bounded by opts.handshake_timeout and exactly the bytes of the handshake; at most
// `max_pending` at a time: a newer one evicts the oldest of the address holding the most). A
// connection that fails is
// closed and its failure kept for take_rejections(); it never reaches accept() and never stops
// the listener. Authenticated connections wait (at most kMaxReady) for accept().
class Listener {
 public:
  static constexpr size_t kMaxReady = 8;
  static constexpr size_t kMaxKeptRejections = 256;

  // Binds host:port (port 0: any free port). host defaults to loopback in the Python facade.
  Listener(const std::string& host, int port, const std::string& secret,
           const EndpointOptions& opts, int backlog, int max_pending = 64,
           bool frame_macs = false);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // The next authenticated connection. TimeoutError if none within `timeout`; ClosedError once
  // closed.
  Connection accept(Nanos timeout);
  // Why connections were dropped since the last call ("handshake with HOST:PORT failed: ...").
  std::vector<std::string> take_rejections();
  uint64_t rejected() const { return rejected_total_.load(); }
  void close();
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  const EndpointOptions& options() const { return opts_; }

 private:
  struct Pending;
  void acceptor_main();
  void drop(Pending& p, const std::string& why);
  void reject_locked(const std::string& why);

  int fd_ = -1;
  int wake_fd_ = -1;  // eventfd: wakes the acceptor's poll() on close()
  std::atomic<bool> closed_{false};
  std::string host_;
  int port_ = 0;
  Digest key_{};
  EndpointOptions opts_;
  size_t max_pending_;
  bool frame_macs_;
  std::thread acceptor_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Connection> ready_;         // guarded by m_
  std::deque<std::string> rejections_;  // guarded by m_
  std::atomic<uint64_t> rejected_total_{0};
};

std::unique_ptr<Transport> make_tcp_transport(Connection conn, const EndpointOptions& opts,
                                              std::shared_ptr<Clock> clock);

// An endpoint over an established connection (always on the real clock).
std::shared_ptr<Endpoint> make_tcp_endpoint(
    Connection conn, const LinkSpec& link, const EndpointOptions& opts,
    const std::function<void(Endpoint*)>& deleter = [](Endpoint* e) { delete e; });

}  // namespace hierbench::transfer
