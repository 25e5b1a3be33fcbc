// The listener: one thread accepts connections and runs all their handshakes at once
// (non-blocking sockets, one poll() over all of them), so no peer, silent or hostile, can hold
// up another. See tcp.h for the limits.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <map>

#include <netinet/in.h>

#include "net.h"
#include "tcp.h"

namespace hierbench::transfer {

using net::errstr;
using net::real_now;
using net::secs;

namespace {

std::string host_of(const std::string& peer) {  // "host:port" / "[v6]:port" -> the host part
  return peer.substr(0, peer.rfind(':'));
}

}  // namespace

struct Listener::Pending {
  int fd = -1;
  std::string peer;
  bool loopback = false;
  Nanos deadline = kNever;
  ServerHandshake hs;
  Pending(int f, std::string p, bool lo, Nanos d, const Digest& key, uint64_t max_frame,
          bool macs)
      : fd(f), peer(std::move(p)), loopback(lo), deadline(d), hs(key, max_frame, macs) {}
};

Listener::Listener(const std::string& host, int port, const std::string& secret,
                   const EndpointOptions& opts, int backlog, int max_pending, bool frame_macs)
    : host_(host), opts_(opts), max_pending_(static_cast<size_t>(std::max(1, max_pending))),
      frame_macs_(frame_macs) {
  check_secret(secret);
  key_ = derive_key(secret);
  net::AddrInfo ai;
  net::resolve(host, port, true, ai);
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
      net::configure_socket(fd, opts);  // inherited by accepted sockets (window scale)
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
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const int e = errno;
    ::close(fd_);
    throw TransferError("eventfd() failed: " + errstr(e));
  }
  acceptor_ = std::thread([this] { acceptor_main(); });
}

Listener::~Listener() {
  close();
  if (acceptor_.joinable()) acceptor_.join();
  ready_.clear();
  if (fd_ >= 0) ::close(fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Listener::close() {
  if (closed_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] const auto r = ::write(wake_fd_, &one, sizeof one);
  }
  {
    std::lock_guard<std::mutex> lk(m_);  // (also: an accept() between its check and its wait)
    ready_.clear();                      // authenticated connections nobody will accept
  }
  cv_.notify_all();
  // Release the port now, not when the object is destroyed: a closed listener's port can be
  // bound again at once (a cloud restarted in the same process, a test's stand-in).
  if (acceptor_.joinable() && acceptor_.get_id() != std::this_thread::get_id()) {
    acceptor_.join();
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
}

Connection Listener::accept(Nanos timeout) {
  const Nanos deadline = add_sat(real_now(), timeout);
  std::unique_lock<std::mutex> lk(m_);
  for (;;) {
    if (closed_) throw ClosedError("the listener is closed");
    if (!ready_.empty()) {
      Connection c = std::move(ready_.front());
      ready_.pop_front();
      return c;
    }
    const Nanos left = deadline - real_now();
    if (deadline != kNever && left <= 0) {
      throw TimeoutError("accept(): no authenticated connection within " + secs(timeout));
    }
    // Bounded waits: the real clock and the condition variable's clock may differ.
    cv_.wait_for(lk, std::chrono::nanoseconds(deadline == kNever
                                                  ? Nanos(1'000'000'000)
                                                  : std::min<Nanos>(left, 1'000'000'000)));
  }
}

std::vector<std::string> Listener::take_rejections() {
  std::lock_guard<std::mutex> lk(m_);
  std::vector<std::string> out(rejections_.begin(), rejections_.end());
  rejections_.clear();
  return out;
}

void Listener::reject_locked(const std::string& why) {
  rejected_total_++;
  if (rejections_.size() >= kMaxKeptRejections) rejections_.pop_front();
  rejections_.push_back(why);
}

void Listener::drop(Pending& p, const std::string& why) {
  if (p.fd >= 0) {
    ::close(p.fd);
    p.fd = -1;
  }
  std::lock_guard<std::mutex> lk(m_);
  reject_locked("handshake with " + p.peer + " failed: " + why + ": dropped");
}

void Listener::acceptor_main() {
  std::vector<std::unique_ptr<Pending>> pending;  // oldest first
  std::vector<pollfd> fds;
  Nanos accept_pause_until = 0;  // after EMFILE & co.: do not spin on the listening socket
  uint8_t buf[64];
  while (!closed_) {
    const Nanos now = real_now();
    Nanos wake = kNever;
    for (const auto& p : pending) wake = std::min(wake, p->deadline);
    const bool listening = now >= accept_pause_until;
    if (!listening) wake = std::min(wake, accept_pause_until);
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listening ? fd_ : -1, POLLIN, 0});
    for (const auto& p : pending) fds.push_back({p->fd, POLLIN, 0});
    int ms = -1;
    if (wake != kNever) {
      ms = static_cast<int>(std::clamp<Nanos>((wake - now + 999'999) / 1'000'000, 0, INT_MAX));
    }
    const int r = ::poll(fds.data(), fds.size(), ms);
    if (r < 0 && errno != EINTR) {
      std::lock_guard<std::mutex> lk(m_);
      reject_locked("poll() failed in the listener: " + errstr(errno));
      accept_pause_until = real_now() + 100'000'000;
      continue;
    }
    if (closed_) break;
    // Handshakes that have bytes for us (or an error / hang-up to report).
    for (size_t i = 0; i < pending.size(); ++i) {
      Pending& p = *pending[i];
      if (r <= 0 || !(fds[2 + i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
      try {
        const size_t want = p.hs.want();
        const ssize_t got = ::recv(p.fd, buf, want, MSG_DONTWAIT);
        if (got < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
          throw TransferError(net::socket_error("recv", errno));
        }
        if (got == 0) {
          throw TransferError(p.hs.started()
                                  ? "the client closed the connection during the handshake"
                                  : "the client closed the connection before the handshake");
        }
        const std::string out = p.hs.feed(buf, static_cast<size_t>(got));
        if (!out.empty()) {
          // A fresh socket's send buffer takes these few bytes at once; if not, the peer is
          // not reading: drop it rather than wait.
          const ssize_t s = ::send(p.fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (s != static_cast<ssize_t>(out.size())) {
            throw TransferError(s < 0 ? net::socket_error("send", errno)
                                      : std::string("the client does not read (send buffer "
                                                    "full during the handshake)"));
          }
        }
        if (p.hs.done()) {
          Connection c;
          c.fd = p.fd;
          c.peer = p.peer;
          c.session = p.hs.session();
          p.fd = -1;
          ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
          std::lock_guard<std::mutex> lk(m_);
          if (ready_.size() >= kMaxReady) {
            reject_locked("connection from " + c.peer + " authenticated, but " +
                          std::to_string(kMaxReady) +
                          " connections already wait for accept(): dropped");
          } else {
            ready_.push_back(std::move(c));
            cv_.notify_all();
          }
        }
      } catch (const HandshakeError& e) {
        if (e.reject) {
          const std::string rej = reject_message(e.reject);
          [[maybe_unused]] auto s = ::send(p.fd, rej.data(), rej.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        drop(p, std::string(e.what()) + (e.reject ? ": refused" : ""));
      } catch (const std::exception& e) {
        drop(p, e.what());
      }
    }
    // Handshakes past their deadline.
    const Nanos t = real_now();
    for (auto& p : pending) {
      if (p->fd >= 0 && t >= p->deadline) {
        drop(*p, std::string(p->hs.started() ? "it stalled in the handshake"
                                             : "it sent nothing") +
                     " for " + secs(opts_.handshake_timeout));
      }
    }
    std::erase_if(pending, [](const auto& p) { return p->fd < 0; });
    // New connections.
    if (r > 0 && listening && (fds[1].revents & POLLIN)) {
      for (int n = 0; n < 64; ++n) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        const int fd =
            ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          if (errno == EINTR || errno == ECONNABORTED) continue;
          std::lock_guard<std::mutex> lk(m_);
          reject_locked("accept() failed: " + errstr(errno) + " (retrying in 0.1 s)");
          accept_pause_until = real_now() + 100'000'000;
          break;
        }
        const bool loopback = net::is_loopback(ss);
        auto p = std::make_unique<Pending>(fd, net::addr_str(ss), loopback,
                                           add_sat(real_now(), opts_.handshake_timeout), key_,
                                           opts_.max_frame_bytes, frame_macs_ || !loopback);
        try {
          net::configure_socket(fd, opts_);
        } catch (const std::exception& e) {
          drop(*p, e.what());
          continue;
        }
        if (pending.size() >= max_pending_) {
          // Room is made by the oldest handshake of the address that holds the most: a flood
          // from one address evicts its own connections, not another peer's.
          std::map<std::string, size_t> per_host;
          for (const auto& q : pending) per_host[host_of(q->peer)]++;
          const auto heaviest = std::max_element(
              per_host.begin(), per_host.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
          auto victim = std::find_if(pending.begin(), pending.end(), [&](const auto& q) {
            return host_of(q->peer) == heaviest->first;
          });
          drop(**victim, "evicted: " + std::to_string(max_pending_) +
                             " handshakes were already in progress (" +
                             std::to_string(heaviest->second) + " from " + heaviest->first + ")");
          pending.erase(victim);
        }
        pending.push_back(std::move(p));
      }
    }
  }
  for (auto& p : pending) {
    if (p->fd >= 0) ::close(p->fd);
  }
}

}  // namespace hierbench::transfer
