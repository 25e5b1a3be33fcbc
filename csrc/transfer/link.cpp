#include "link.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace hierbench::transfer {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

LinkEmulator::LinkEmulator(const LinkSpec& spec, Nanos epoch) : spec_(spec) {
  if (spec.latency < 0) throw std::invalid_argument("link latency must be >= 0");
  if (spec.jitter < 0) throw std::invalid_argument("link jitter must be >= 0");
  std::vector<Outage> o = spec.outages;
  for (const auto& x : o) {
    if (x.start < 0 || x.end <= x.start) {
      throw std::invalid_argument("link outage (" + std::to_string(x.start) + ", " +
                                  std::to_string(x.end) +
                                  ") ns must satisfy 0 <= start < end (relative to the epoch)");
    }
  }
  std::sort(o.begin(), o.end(), [](const Outage& a, const Outage& b) { return a.start < b.start; });
  for (const auto& x : o) {
    Outage a{add_sat(epoch, x.start), add_sat(epoch, x.end)};
    if (!abs_.empty() && a.start <= abs_.back().end) {
      abs_.back().end = std::max(abs_.back().end, a.end);  // merge overlapping / touching
    } else {
      abs_.push_back(a);
    }
  }
  cap_ = cost(spec.burst_bytes);
  credit_ = cap_;  // the bucket starts full
  credit_up_ = up_time(epoch);
}

Nanos LinkEmulator::up_at(Nanos t) const {
  for (const auto& o : abs_) {
    if (t < o.start) break;
    if (t < o.end) return o.end;
  }
  return t;
}

Nanos LinkEmulator::up_time(Nanos t) const {
  Nanos down = 0;
  for (const auto& o : abs_) {
    if (o.start >= t) break;
    down += std::min(t, o.end) - o.start;
  }
  return t - down;
}

Nanos LinkEmulator::from_up_time(Nanos u) const {
  Nanos t = u;
  for (const auto& o : abs_) {
    if (o.start < t) {
      t = add_sat(t, o.end - o.start);
    } else {
      break;
    }
  }
  return t;
}

LinkEmulator::Credit LinkEmulator::credit_at(Nanos up) const {
  if (up <= credit_up_) return credit_;
  const Credit c = credit_ + Credit(up - credit_up_) * Credit(spec_.rate_bps);
  return std::min(c, cap_);
}

Nanos LinkEmulator::begin(Nanos t) {
  const Nanos s = up_at(t);
  cur_start_ = s;
  if (!unshaped()) {
    cur_start_up_ = up_time(s);
    cur_credit_ = credit_at(cur_start_up_);
  }
  return s;
}

Nanos LinkEmulator::time_after(uint64_t k) const {
  if (unshaped()) return cur_start_;
  const Credit deficit = cost(k) - cur_credit_;
  if (deficit <= 0) return cur_start_;
  const Credit r = Credit(spec_.rate_bps);
  const Credit ns = (deficit + r - 1) / r;  // ceil: a byte has passed once all its bits have
  if (ns > Credit(kNever / 4)) return kNever;   // centuries: treat as never
  return std::max(cur_start_, from_up_time(cur_start_up_ + static_cast<Nanos>(ns)));
}

void LinkEmulator::finish(Nanos end, uint64_t n) {
  if (unshaped()) return;
  const Nanos up_end = std::max(up_time(end), cur_start_up_);
  Credit c = cur_credit_ + Credit(up_end - cur_start_up_) * Credit(spec_.rate_bps) - cost(n);
  credit_ = std::max<Credit>(0, std::min(c, cap_));
  credit_up_ = up_end;
}

Nanos LinkEmulator::delay(uint64_t seq) const {
  Nanos j = 0;
  if (spec_.jitter > 0) {
    const uint64_t h = mix64(spec_.seed ^ mix64(seq + 0x51ed270b27a1d3c5ULL));
    j = static_cast<Nanos>(h % (static_cast<uint64_t>(spec_.jitter) + 1));
  }
  return spec_.latency + j;
}

}  // namespace hierbench::transfer
