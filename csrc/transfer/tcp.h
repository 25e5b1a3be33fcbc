// TCP transport: length-prefixed, CRC32C-checked frames over one connection, after a versioned
// handshake in which each side proves it knows the shared secret (HMAC-SHA256 challenge-response,
// both ways). Wire format: wire.h and docs/transfer.md.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "engine.h"

namespace hierbench::transfer {

// A connected, authenticated socket, not yet owned by an endpoint.
struct Connection {
  int fd = -1;
  uint64_t peer_max_frame = 0;
  std::string peer;  // "host:port" of the other side
  Connection() = default;
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&& o) noexcept;
  Connection(const Connection&) = delete;
  ~Connection();
};

// Connects to host:port and runs the client side of the handshake. `timeout` bounds connect
// (handshake: opts.handshake_timeout).
Connection tcp_connect(const std::string& host, int port, const std::string& secret,
                       const EndpointOptions& opts, Nanos timeout);

class Listener {
 public:
  // Binds host:port (port 0: any free port). host defaults to loopback in the Python facade.
  Listener(const std::string& host, int port, std::string secret, const EndpointOptions& opts,
           int backlog);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Waits for a connection and runs the server side of the handshake. TimeoutError if none
  // arrives in time; TransferError naming the peer and the cause if its handshake fails (the
  // listener stays usable: call accept() again).
  Connection accept(Nanos timeout);
  void close();
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  const EndpointOptions& options() const { return opts_; }

 private:
  int fd_ = -1;
  std::atomic<bool> closed_{false};
  std::string host_;
  int port_ = 0;
  std::string secret_;
  EndpointOptions opts_;
};

std::unique_ptr<Transport> make_tcp_transport(Connection conn, const EndpointOptions& opts,
                                              std::shared_ptr<Clock> clock);

// An endpoint over an established connection (always on the real clock).
std::shared_ptr<Endpoint> make_tcp_endpoint(
    Connection conn, const LinkSpec& link, const EndpointOptions& opts,
    const std::function<void(Endpoint*)>& deleter = [](Endpoint* e) { delete e; });

}  // namespace hierbench::transfer
