#include "net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

namespace hierbench::transfer::net {

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

void send_all(int fd, iovec* iov, int cnt, bool more, Nanos stall, const std::string& what,
              const std::atomic<Nanos>* heard) {
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
                              (heard ? " and nothing heard from the peer (it stopped reading and "
                                       "sends no keepalives: hung or unreachable)"
                                     : " (the peer stopped reading)"));
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

bool is_loopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace hierbench::transfer::net
