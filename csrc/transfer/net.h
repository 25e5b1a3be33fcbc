// Socket helpers shared by the TCP transport (tcp.cpp), the handshake (handshake.cpp) and the
// listener (listener.cpp): waits on the real clock, exact reads/writes with deadlines, errors that
// name the call, addresses.
#pragma once

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "clock.h"
#include "engine.h"
#include "errors.h"

namespace hierbench::transfer::net {

Nanos real_now();
std::string errstr(int e);
std::string secs(Nanos ns);  // "1.5 s", or "forever"
std::string hex32(uint32_t v);

// Waits until fd is ready for `events` (or has an error/hangup, which the next call reports).
// Returns false once `deadline` (absolute, real clock) has passed.
bool wait_fd(int fd, short events, Nanos deadline);
std::string socket_error(const char* call, int e);

// Writes all of iov (blocking in poll, `stall` per lack of progress). MSG_MORE asks the kernel
// to hold a partial segment because more of the same frame follows at once. `heard` (optional):
// when the peer last showed it is alive (real clock); a stall is an error only if the peer was not
// heard from within `stall` either (a live peer that does not read is backpressure, not a failure).
void send_all(int fd, iovec* iov, int cnt, bool more, Nanos stall, const std::string& what,
              const std::atomic<Nanos>* heard = nullptr);
void send_bytes(int fd, const void* p, size_t n, Nanos stall, const std::string& what);
// recv() of up to n bytes into p: >0 bytes, 0 at EOF. Waits until `deadline` (TimeoutError).
ssize_t recv_some(int fd, uint8_t* p, size_t n, Nanos deadline, const std::string& what);
// Exactly n bytes unless EOF comes first; returns the count. Reads no further than asked.
size_t recv_exact(int fd, uint8_t* p, size_t n, Nanos deadline, const std::string& what);

// TCP_NODELAY and the socket buffer sizes of `opts`.
void configure_socket(int fd, const EndpointOptions& opts);
std::string addr_str(const sockaddr_storage& ss);  // "host:port" / "[v6]:port"
bool is_loopback(const sockaddr_storage& ss);      // 127.0.0.0/8, ::1, ::ffff:127.x.x.x

struct AddrInfo {
  addrinfo* res = nullptr;
  AddrInfo() = default;
  AddrInfo(const AddrInfo&) = delete;
  AddrInfo& operator=(const AddrInfo&) = delete;
  ~AddrInfo() {
    if (res) freeaddrinfo(res);
  }
};
void resolve(const std::string& host, int port, bool passive, AddrInfo& out);

}  // namespace hierbench::transfer::net
