// The link emulator: what an emulated link does to one direction of traffic, as pure arithmetic
// on clock times (no threads, no waiting), so it can be checked exactly.
//
//  * Token bucket. Credit accrues at `rate_bps` and is capped at `burst_bytes`; a byte needs 8 bits
//    of credit. The bucket starts full. A message of n bytes that starts at s with credit c
//    finishes at s + ceil((8 n - c) / rate) (in integer nanoseconds, exact). burst 0 is a pure
//    rate limiter. rate 0 means unshaped: transmissions take no emulated time.
//  * Outages [start, end): the link is down; nothing is transmitted and no credit accrues, so a
//    transmission that straddles an outage pauses and resumes after it. Bytes that left before the
//    outage still arrive after the latency. Nothing is lost: senders just wait.
//  * One-way latency + jitter: each message gets delay = latency + j, j uniform in [0, jitter]
//    from a counter-based hash of (seed, seq), so the draw does not depend on timing. The receiver
//    makes the message available at max(arrival + delay, previous availability): order is kept.
//  * Shared ingress (optional, ingress.h): a second token bucket that this direction draws from
//    together with other endpoints. The engine (Endpoint::transmit) combines the two per chunk;
//    LinkEmulator itself knows nothing of it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "clock.h"

namespace hierbench::transfer {

struct Outage {
  Nanos start;  // relative to the endpoint's epoch (its creation time)
  Nanos end;
};

class Ingress;

struct LinkSpec {
  uint64_t rate_bps = 0;     // 0: unshaped
  uint64_t burst_bytes = 0;  // token bucket depth
  Nanos latency = 0;         // one-way
  Nanos jitter = 0;          // extra delay, uniform in [0, jitter]
  uint64_t seed = 0;         // jitter seed
  std::vector<Outage> outages;
  std::shared_ptr<Ingress> ingress;  // shared bucket also drawn from (nullptr: none)
};

class LinkEmulator {
 public:
  // Validates the spec (std::invalid_argument) and anchors the outages at `epoch`.
  LinkEmulator(const LinkSpec& spec, Nanos epoch);

  const LinkSpec& spec() const { return spec_; }
  bool unshaped() const { return spec_.rate_bps == 0; }

  // Earliest time >= t at which the link is up.
  Nanos up_at(Nanos t) const;
  // Link-up time: t minus all outage time before t (relative to the epoch's origin).
  Nanos up_time(Nanos t) const;
  // Smallest t with up_time(t) >= u.
  Nanos from_up_time(Nanos u) const;

  // Starts a transmission no earlier than `t`; returns its start (after any outage).
  Nanos begin(Nanos t);
  // When the first k bytes of the current transmission have passed the bucket.
  Nanos time_after(uint64_t k) const;
  // Ends the current transmission of n bytes at `end` (>= time_after(n); later if the sender ran
  // late, and then the link was idle meanwhile and credit accrued).
  void finish(Nanos end, uint64_t n);

  // Emulated one-way delay of message `seq`: latency + jitter draw.
  Nanos delay(uint64_t seq) const;

 private:
  using Credit = __int128;  // units of 1e-9 bit: accrues rate_bps per ns, a byte costs 8e9
  Credit cost(uint64_t bytes) const { return Credit(bytes) * 8'000'000'000LL; }
  Credit credit_at(Nanos up) const;

  LinkSpec spec_;
  std::vector<Outage> abs_;  // outages in clock time, sorted, disjoint, merged
  Credit cap_;
  Credit credit_;       // credit at link-up time credit_up_
  Nanos credit_up_;
  Nanos cur_start_ = 0;     // current transmission: start (clock time), in link-up time, and
  Nanos cur_start_up_ = 0;  // the credit then
  Credit cur_credit_ = 0;
};

// 64-bit mix (splitmix64 finaliser): the counter-based hash behind the jitter draw.
uint64_t mix64(uint64_t x);

}  // namespace hierbench::transfer
