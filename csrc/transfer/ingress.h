// The shared ingress: one token bucket that any number of sending endpoints draw from, besides
// their own links (a cell tower, a datacentre uplink: what all edges of a fleet share on the way
// into the cloud). Lock-free: the whole state is one 64-bit word, updated by compare-and-swap, so
// it can live in process memory (endpoints of one process) or in a small file mapped MAP_SHARED
// by every process of one machine (the fleet's edge processes).
//
// The arithmetic (GCRA, the virtual-scheduling form of a token bucket), in integer nanoseconds:
//   rate R bit/s, depth b bytes:  tau = ceil(8 b 1e9 / R)   (the depth, in ns of transmission)
//   a chunk of n bytes costs      c   = ceil(8 n 1e9 / R)   ns
//   state TAT ("theoretical arrival time"): the bucket holds tau - max(0, TAT - t) ns of credit
//   at time t; it starts full (TAT in the far past). A chunk of n bytes that may enter at t:
//     start = max(t, TAT - tau)        its first byte enters (once earlier chunks have drained)
//     TAT'  = max(TAT, t) + c
//     end   = max(t, TAT' - tau)       its last byte has passed
// For chunks reserved in nondecreasing t this is exactly a FIFO token bucket whose tokens are
// nanoseconds (refilled 1 per ns up to tau; a chunk drains c of them, trickling at the refill rate
// once the bucket is empty; a chunk queues behind the ones reserved before it). Compared with the
// bit-exact bucket of LinkEmulator, each chunk costs up to 1 ns more (the ceil on c; none when
// 8e9 n / R is an integer), so the ingress never lets more than R through. Whatever the order of
// the reservations, the chunks that start and end inside any window [a, z] hold at most
// R (z - a + tau) / 1e9 bits (their [TAT' - c, TAT'] are disjoint and lie in [a, z + tau]).
//
// Endpoints reserve chunk by chunk (Endpoint::transmit); reservations are first come, first
// served, and a reservation is never given back (a sender that then fails still used its share).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "clock.h"

namespace hierbench::transfer {

// When a chunk may enter the ingress and when its last byte has passed it.
struct IngressGrant {
  Nanos start;
  Nanos end;
};

// The pure arithmetic (no state, no threads): one reservation against TAT.
struct Gcra {
  // ceil(8 bytes 1e9 / rate_bps) ns, saturated at kMaxNs (rate_bps > 0).
  static Nanos cost(uint64_t bytes, uint64_t rate_bps);
  struct Step {
    Nanos tat;  // the new TAT
    IngressGrant grant;
  };
  static Step step(Nanos tat, Nanos tau, Nanos cost, Nanos t);
  // TAT of a full bucket (far in the past, with room for tau below it).
  static constexpr Nanos kFull = std::numeric_limits<Nanos>::min() / 4;
  // Largest cost / tau (centuries): sums of them stay far from overflow.
  static constexpr Nanos kMaxNs = std::numeric_limits<Nanos>::max() / 8;
};

class Ingress {
 public:
  // In this process only (endpoints of one process, on any one clock).
  Ingress(uint64_t rate_bps, uint64_t burst_bytes);
  // Shared by processes: a new file at `path` (refuses an existing one), holding the rate, the
  // depth and the state; endpoints on the real clock only (CLOCK_MONOTONIC, common to the
  // machine's processes).
  static std::shared_ptr<Ingress> create(const std::string& path, uint64_t rate_bps,
                                         uint64_t burst_bytes);
  // Maps an existing file made by create(); checks its header (magic, version, size, rate).
  static std::shared_ptr<Ingress> attach(const std::string& path);
  ~Ingress();
  Ingress(const Ingress&) = delete;
  Ingress& operator=(const Ingress&) = delete;

  uint64_t rate_bps() const { return rate_bps_; }
  uint64_t burst_bytes() const { return burst_bytes_; }
  Nanos tolerance() const { return tau_; }
  const std::string& path() const { return path_; }  // empty: in-process
  bool shared() const { return !path_.empty(); }
  Nanos tat() const { return tat_->load(std::memory_order_acquire); }

  // Reserves a chunk of `bytes` that may enter at `t` (lock-free; any thread, any process).
  IngressGrant reserve(uint64_t bytes, Nanos t);

  // An endpoint on `clock` will draw from this ingress: a shared one refuses a virtual clock, an
  // in-process one serves endpoints of one clock only (std::invalid_argument otherwise).
  void bind(const std::shared_ptr<Clock>& clock);

  std::string describe() const;

 private:
  struct FileTag {};
  Ingress(FileTag, std::string path, void* map, uint64_t map_bytes);

  uint64_t rate_bps_;
  uint64_t burst_bytes_;
  Nanos tau_;
  std::string path_;
  void* map_ = nullptr;
  uint64_t map_bytes_ = 0;
  std::atomic<Nanos> local_{Gcra::kFull};
  std::atomic<Nanos>* tat_;  // &local_ or inside the mapping
  std::mutex bind_m_;
  std::weak_ptr<Clock> clock_;
  bool bound_ = false;
};

}  // namespace hierbench::transfer
