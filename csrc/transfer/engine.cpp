#include "engine.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hierbench::transfer {

namespace {

std::string seconds(Nanos ns) {
  if (ns == kNever) return "forever";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g s", static_cast<double>(ns) * 1e-9);
  return buf;
}

// Uninitialised bytes: a slot is always overwritten before it is read.
std::unique_ptr<uint8_t[]> allocate(uint64_t n) {
  return std::unique_ptr<uint8_t[]>(new uint8_t[std::max<uint64_t>(n, 1)]);
}

}  // namespace

// ---- RecvRing ---------------------------------------------------------------------------------

RecvRing::RecvRing(std::shared_ptr<Clock> c, std::shared_ptr<Sync> s, int slots,
                   uint64_t slot_bytes)
    : clock(std::move(c)), sync(std::move(s)) {
  if (slots < 1) throw std::invalid_argument("recv_slots must be >= 1");
  slots_.resize(static_cast<size_t>(slots));
  if (slot_bytes) {
    for (auto& sl : slots_) {
      sl.buf = allocate(slot_bytes);
      sl.capacity = slot_bytes;
    }
  }
}

int RecvRing::begin(const FrameMeta& m, const std::atomic<bool>* cancel, bool* waited) {
  std::unique_lock<std::mutex> lk(sync->m);
  auto free_slot = [&]() -> int {
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].state == Slot::kFree) return static_cast<int>(i);
    }
    return -1;
  };
  if (waited) *waited = free_slot() < 0;
  clock->wait_until(*sync, lk, kNever, [&] {
    return local_closed_ || (cancel && cancel->load()) || free_slot() >= 0;
  });
  if (local_closed_ || (cancel && cancel->load())) return -1;
  if (m.bytes > limit_.load()) {
    // The receiving side fails too (its recv() raises this), whichever thread brought the
    // message: over TCP our own receiver thread, in process the peer's sender thread.
    const auto e = std::make_exception_ptr(TransferError(
        "message " + std::to_string(m.seq) + " announces " + std::to_string(m.bytes) +
        " bytes, over this endpoint's receive limit of " + std::to_string(limit_.load()) +
        " (set_recv_limit): refused"));
    if (!error_) error_ = e;
    clock->notify(*sync);
    std::rethrow_exception(e);
  }
  if (m.seq != next_seq_) {
    throw TransferError("frame out of order: got seq " + std::to_string(m.seq) + ", expected " +
                        std::to_string(next_seq_));
  }
  ++next_seq_;
  const int i = free_slot();
  Slot& s = slots_[static_cast<size_t>(i)];
  s.state = Slot::kFilling;
  if (s.capacity < m.bytes) {
    s.buf.reset();
    s.buf = allocate(m.bytes);
    s.capacity = m.bytes;
  }
  return i;
}

void RecvRing::complete(int i, const FrameMeta& m, Nanos rx_start, Nanos arrived) {
  std::lock_guard<std::mutex> lk(sync->m);
  Slot& s = slots_[static_cast<size_t>(i)];
  if (local_closed_) {  // the owner closed while the message was in flight: discard it
    s.state = Slot::kFree;
    clock->notify(*sync);
    return;
  }
  Nanos ready = add_sat(arrived, m.delay);
  if (prev_ready_ != kNoTime) ready = std::max(ready, prev_ready_);  // order is kept
  prev_ready_ = ready;
  s.state = Slot::kReady;
  s.meta = m;
  s.rec = Record{false, m.seq, m.bytes, m.enqueued, m.tx_start, m.tx_end, arrived, ready, kNoTime};
  fifo_.push_back(i);
  stats_.messages_received += 1;
  stats_.bytes_received += m.bytes;
  if (stats_.first_rx_start == kNoTime) stats_.first_rx_start = rx_start;
  stats_.last_arrived = arrived;
  stats_.last_delivered = ready;
  clock->notify(*sync);
}

void RecvRing::abandon(int i) {
  std::lock_guard<std::mutex> lk(sync->m);
  slots_[static_cast<size_t>(i)].state = Slot::kFree;
  clock->notify(*sync);
}

void RecvRing::peer_closed() {
  std::lock_guard<std::mutex> lk(sync->m);
  peer_closed_ = true;
  clock->notify(*sync);
}

void RecvRing::fail(std::exception_ptr e) {
  std::lock_guard<std::mutex> lk(sync->m);
  if (!error_) error_ = std::move(e);
  clock->notify(*sync);
}

void RecvRing::wake() {
  std::lock_guard<std::mutex> lk(sync->m);
  clock->notify(*sync);
}

// ---- Lease ------------------------------------------------------------------------------------

Lease::Lease(std::shared_ptr<RecvRing> ring, int slot, Record rec)
    : ring_(std::move(ring)), slot_(slot), rec_(rec) {}

Lease::~Lease() { release(); }

uint8_t* Lease::data() const {
  if (slot_ < 0) throw std::invalid_argument("the message was released");
  return ring_->data(slot_);
}

void Lease::release() {
  if (slot_ < 0) return;
  std::lock_guard<std::mutex> lk(ring_->sync->m);
  ring_->slots_[static_cast<size_t>(slot_)].state = RecvRing::Slot::kFree;
  slot_ = -1;
  ring_->clock->notify(*ring_->sync);
}

// ---- Endpoint ---------------------------------------------------------------------------------

Endpoint::Endpoint(std::shared_ptr<Clock> clock, const LinkSpec& link, const EndpointOptions& opts,
                   std::shared_ptr<RecvRing> ring, std::unique_ptr<Transport> transport,
                   Nanos epoch)
    : clock_(std::move(clock)),
      sync_(ring->sync),
      opts_(opts),
      link_(link, epoch),
      ingress_(link.ingress),
      ring_(std::move(ring)),
      transport_(std::move(transport)),
      epoch_(epoch),
      peer_max_frame_(transport_->peer_max_frame()) {
  if (opts.send_slots < 1) throw std::invalid_argument("slots must be >= 1");
  if (transport_->needs_real_clock() && clock_->is_virtual()) {
    throw std::invalid_argument(transport_->describe() +
                                " cannot run on a VirtualClock (sockets block in real time); use "
                                "the in-process transport for virtual-time runs");
  }
  if (ingress_) ingress_->bind(clock_);
  slots_.resize(static_cast<size_t>(opts.send_slots));
  if (opts.slot_bytes) {
    for (auto& s : slots_) {
      s.buf = allocate(opts.slot_bytes);
      s.capacity = opts.slot_bytes;
    }
  }
  transport_->start(this, ring_);
  clock_->attach();  // counted from now, so a virtual clock cannot run ahead of its first wait
  try {
    sender_ = std::thread([this] { sender_main(); });
  } catch (...) {
    clock_->detach();
    transport_->abort();
    transport_->finish(clock_->now());
    throw;
  }
}

Endpoint::~Endpoint() {
  try {
    close(0);
  } catch (...) {  // a destructor must not throw; close() only fails on internal errors
  }
}

void Endpoint::throw_if_broken_locked() const {
  if (error_) std::rethrow_exception(error_);
  if (closing_ || closed_) throw ClosedError("the endpoint is closed");
  if (ring_->peer_closed_) {
    throw ClosedError("the peer closed the channel: nothing more can be sent");
  }
}

void Endpoint::fail_locked(std::exception_ptr e) {
  if (!error_) error_ = e;
  if (!ring_->error_) ring_->error_ = e;
  clock_->notify(*sync_);
}

void Endpoint::transport_failed(std::exception_ptr e) {
  std::lock_guard<std::mutex> lk(sync_->m);
  fail_locked(std::move(e));
}

void Endpoint::transport_peer_closed() { ring_->peer_closed(); }

int Endpoint::acquire(uint64_t nbytes, Nanos timeout, bool need_buffer) {
  if (nbytes > peer_max_frame_) {
    throw std::invalid_argument("a message of " + std::to_string(nbytes) +
                                " bytes exceeds the peer's frame limit of " +
                                std::to_string(peer_max_frame_) + " bytes (max_frame_bytes)");
  }
  std::unique_lock<std::mutex> lk(sync_->m);
  throw_if_broken_locked();
  auto free_slot = [&]() -> int {
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].state == SendSlot::kFree) return static_cast<int>(i);
    }
    return -1;
  };
  const Nanos t0 = clock_->now();
  clock_->wait_until(*sync_, lk, add_sat(t0, timeout), [&] {
    return free_slot() >= 0 || error_ || closing_ || closed_ || ring_->peer_closed_;
  });
  stats_.producer_stall += clock_->now() - t0;
  throw_if_broken_locked();
  const int i = free_slot();
  if (i < 0) {
    throw TimeoutError("no free send slot within " + seconds(timeout) + ": all " +
                       std::to_string(slots_.size()) +
                       " slots are in flight (the link or the peer is slower than the producer)");
  }
  SendSlot& s = slots_[static_cast<size_t>(i)];
  s.state = SendSlot::kAcquired;
  if (need_buffer && s.capacity < nbytes) {
    s.buf.reset();
    s.buf = allocate(nbytes);
    s.capacity = nbytes;
  }
  return i;
}

void Endpoint::check_slot_locked(int slot, const char* what) const {
  if (slot < 0 || static_cast<size_t>(slot) >= slots_.size() ||
      slots_[static_cast<size_t>(slot)].state != SendSlot::kAcquired) {
    throw std::invalid_argument(std::string(what) + ": slot " + std::to_string(slot) +
                                " is not acquired (already committed or aborted?)");
  }
}

uint8_t* Endpoint::slot_data(int slot) {
  std::lock_guard<std::mutex> lk(sync_->m);
  check_slot_locked(slot, "slot_data");
  return slots_[static_cast<size_t>(slot)].buf.get();
}

uint64_t Endpoint::commit_locked(int slot) {
  SendSlot& s = slots_[static_cast<size_t>(slot)];
  s.seq = next_seq_++;
  s.enqueued = clock_->now();
  s.state = SendSlot::kQueued;
  queue_.push_back(slot);
  clock_->notify(*sync_);
  return s.seq;
}

uint64_t Endpoint::commit(int slot, uint64_t nbytes) {
  std::lock_guard<std::mutex> lk(sync_->m);
  check_slot_locked(slot, "commit");
  SendSlot& s = slots_[static_cast<size_t>(slot)];
  if (nbytes > s.capacity) {
    throw std::invalid_argument("commit: " + std::to_string(nbytes) +
                                " bytes exceed the slot's " + std::to_string(s.capacity));
  }
  try {
    throw_if_broken_locked();
  } catch (...) {
    s.state = SendSlot::kFree;
    clock_->notify(*sync_);
    throw;
  }
  s.bytes = nbytes;
  s.ext = nullptr;
  return commit_locked(slot);
}

uint64_t Endpoint::commit_external(int slot, const void* data, uint64_t nbytes,
                                   std::shared_ptr<void> keep) {
  if (nbytes > peer_max_frame_) {
    throw std::invalid_argument("a message of " + std::to_string(nbytes) +
                                " bytes exceeds the peer's frame limit of " +
                                std::to_string(peer_max_frame_) + " bytes (max_frame_bytes)");
  }
  std::lock_guard<std::mutex> lk(sync_->m);
  check_slot_locked(slot, "commit_external");
  SendSlot& s = slots_[static_cast<size_t>(slot)];
  try {
    throw_if_broken_locked();
  } catch (...) {
    s.state = SendSlot::kFree;
    clock_->notify(*sync_);
    throw;  // `keep` is still the caller's: it is released outside this lock
  }
  s.bytes = nbytes;
  s.ext = static_cast<const uint8_t*>(data);
  s.keep = std::move(keep);
  return commit_locked(slot);
}

void Endpoint::abort_slot(int slot) {
  std::lock_guard<std::mutex> lk(sync_->m);
  check_slot_locked(slot, "abort");
  slots_[static_cast<size_t>(slot)].state = SendSlot::kFree;
  clock_->notify(*sync_);
}

uint64_t Endpoint::send(const void* data, uint64_t nbytes, Nanos timeout) {
  const int slot = acquire(nbytes, timeout);
  uint8_t* dst;
  {
    std::lock_guard<std::mutex> lk(sync_->m);
    dst = slots_[static_cast<size_t>(slot)].buf.get();
  }
  if (nbytes) std::memcpy(dst, data, nbytes);  // the slot is ours until commit: no lock needed
  return commit(slot, nbytes);
}

std::unique_ptr<Lease> Endpoint::recv(Nanos timeout) {
  std::unique_lock<std::mutex> lk(sync_->m);
  RecvRing& r = *ring_;
  const Nanos t0 = clock_->now();
  const Nanos deadline = add_sat(t0, timeout);
  struct WaitClock {  // adds the time spent in here to consumer_wait, however we leave
    Endpoint* ep;
    Nanos t0;
    ~WaitClock() { ep->ring_->stats_.consumer_wait += ep->clock_->now() - t0; }
  } wait_clock{this, t0};
  auto closed = [&] { return closing_ || closed_ || r.local_closed_; };
  for (;;) {
    if (closed()) throw ClosedError("recv() on a closed endpoint");
    const Nanos now = clock_->now();
    if (!r.fifo_.empty()) {
      const int i = r.fifo_.front();
      RecvRing::Slot& s = r.slots_[static_cast<size_t>(i)];
      if (s.rec.delivered <= now) {
        r.fifo_.pop_front();
        s.state = RecvRing::Slot::kLent;
        s.rec.taken = now;
        r.records_.push_back(s.rec);
        return std::make_unique<Lease>(ring_, i, s.rec);
      }
      if (now >= deadline) {
        throw TimeoutError("recv(): no message due within " + seconds(timeout) +
                           " (the next one is still crossing the emulated link)");
      }
      clock_->wait_until(*sync_, lk, std::min(deadline, s.rec.delivered), closed);
      continue;
    }
    if (r.error_) std::rethrow_exception(r.error_);
    if (r.peer_closed_) {
      throw ClosedError("the peer closed the channel (after " +
                        std::to_string(r.stats_.messages_received) + " messages)");
    }
    if (now >= deadline) {
      throw TimeoutError("recv(): no message within " + seconds(timeout));
    }
    clock_->wait_until(*sync_, lk, deadline, [&] {
      return !r.fifo_.empty() || r.error_ || r.peer_closed_ || closed();
    });
  }
}

bool Endpoint::drained_locked() const {
  if (!queue_.empty()) return false;
  for (const auto& s : slots_) {
    if (s.state == SendSlot::kSending) return false;
  }
  return true;
}

void Endpoint::flush(Nanos timeout) {
  std::unique_lock<std::mutex> lk(sync_->m);
  const Nanos t0 = clock_->now();
  clock_->wait_until(*sync_, lk, add_sat(t0, timeout),
                     [&] { return drained_locked() || error_ || sender_done_; });
  if (error_) std::rethrow_exception(error_);
  if (ring_->peer_closed_ && stats_.dropped) {
    throw ClosedError("flush(): the peer closed the channel; " + std::to_string(stats_.dropped) +
                      " queued message(s) were dropped");
  }
  if (!drained_locked()) {
    if (sender_done_) throw ClosedError("flush(): the endpoint stopped sending (peer closed?)");
    throw TimeoutError("flush(): " + std::to_string(queue_.size()) +
                       " message(s) still queued after " + seconds(timeout));
  }
}

void Endpoint::pace_until(Nanos t) {
  std::unique_lock<std::mutex> lk(sync_->m);
  clock_->wait_until(*sync_, lk, t, [&] { return aborting_.load(); });
  if (aborting_) throw Aborted{};
}

void Endpoint::transmit(SendSlot& s) {
  FrameMeta m;
  m.seq = s.seq;
  m.bytes = s.bytes;
  m.enqueued = s.enqueued;
  m.delay = link_.delay(s.seq);
  // The emulated link starts this message as soon as it is both committed and free. The sender
  // thread itself may wake a little later (real time); it then catches up by writing the first
  // chunks at once, so its scheduling latency is not charged to the link. Only a transport that
  // really blocked (the peer's ring was full) moves the start.
  const bool waited = transport_->begin(m);
  Nanos ready = std::max(m.enqueued, link_free_ == kNoTime ? m.enqueued : link_free_);
  if (waited) ready = std::max(ready, clock_->now());
  Nanos ingress_wait = 0;
  try {
    const uint8_t* p = s.ext ? s.ext : s.buf.get();
    if (ingress_ && m.bytes) {
      ingress_wait = transmit_through_ingress(m, p, ready);
    } else {
      const Nanos start = link_.begin(ready);  // after any outage
      m.tx_start = start;
      Nanos written = start;  // when the transport accepted the last byte
      if (link_.unshaped()) {
        pace_until(start);
        if (m.bytes) transport_->write(p, m.bytes, 0);
        written = clock_->now();
      } else {
        // Each chunk is handed over when its first byte enters the link; the message ends when its
        // last byte has left it (the receiver cannot complete it earlier: the trailer / the ready
        // mark is sent at the end).
        const uint64_t chunk = std::max<uint64_t>(1, transport_->pacing_chunk(link_.spec()));
        for (uint64_t off = 0; off < m.bytes;) {
          const uint64_t len = std::min(chunk, m.bytes - off);
          pace_until(link_.time_after(off));
          transport_->write(p + off, len, off);
          written = clock_->now();
          off += len;
        }
      }
      const Nanos scheduled_end = link_.time_after(m.bytes);
      pace_until(scheduled_end);
      // A transport slower than the emulated link (or an overloaded host) ends the message later,
      // never earlier; the sender thread's own wake-up latency is not counted.
      m.tx_end = std::max(scheduled_end, written);
      link_.finish(m.tx_end, m.bytes);
    }
  } catch (const Aborted&) {
    transport_->cancel_frame_for_close(opts_.linger);  // throws if it cannot
    throw;
  } catch (...) {
    transport_->cancel_frame();
    throw;
  }
  // The record (and the count) is made before the frame's last bytes go out: a message the
  // receiver holds is always in the sender's records() and stats() already (they never lag the
  // peer). If the end fails, both are taken back and the message counts as dropped.
  const Nanos busy = link_.up_time(m.tx_end) - link_.up_time(m.tx_start);
  const Stats before = [&] {
    std::lock_guard<std::mutex> lk(sync_->m);
    const Stats old = stats_;
    Nanos delivered = add_sat(m.tx_end, m.delay);
    if (prev_delivered_ != kNoTime) delivered = std::max(delivered, prev_delivered_);
    prev_delivered_ = delivered;
    records_.push_back(
        Record{true, m.seq, m.bytes, m.enqueued, m.tx_start, m.tx_end, kNoTime, delivered, kNoTime});
    stats_.messages_sent += 1;
    stats_.bytes_sent += m.bytes;
    if (stats_.first_tx_start == kNoTime) stats_.first_tx_start = m.tx_start;
    stats_.last_tx_end = m.tx_end;
    stats_.link_busy += busy;
    stats_.ingress_wait += ingress_wait;
    return old;
  }();
  try {
    transport_->end(m);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lk(sync_->m);
      if (!records_.empty() && records_.back().sent && records_.back().seq == m.seq) {
        records_.pop_back();
      }
      stats_.messages_sent = before.messages_sent;
      stats_.bytes_sent = before.bytes_sent;
      stats_.first_tx_start = before.first_tx_start;
      stats_.last_tx_end = before.last_tx_end;
      stats_.link_busy = before.link_busy;
      stats_.ingress_wait = before.ingress_wait;
    }
    transport_->cancel_frame();
    throw;
  }
  std::shared_ptr<void> keep;
  {
    std::lock_guard<std::mutex> lk(sync_->m);
    link_free_ = m.tx_end;
    keep = std::move(s.keep);
    s.ext = nullptr;
    s.state = SendSlot::kFree;
    clock_->notify(*sync_);
  }
  keep.reset();  // outside the lock: dropping a tensor's last reference may take the GIL
}

Nanos Endpoint::transmit_through_ingress(FrameMeta& m, const uint8_t* p, Nanos ready) {
  // Each chunk crosses the own link and the shared ingress as a transmission of its own on each:
  // it enters when both let it (the own link's start, after any outage; the ingress's start,
  // once the chunks reserved before it have drained) and has left once both have passed its last
  // byte. It is reserved when the own link would start it, so endpoints are served first come,
  // first served. Chunks are sized for the slower of the two rates (TCP: ~1 ms of it).
  LinkSpec pace;
  pace.rate_bps = link_.unshaped() ? ingress_->rate_bps()
                                   : std::min(link_.spec().rate_bps, ingress_->rate_bps());
  const uint64_t chunk = std::max<uint64_t>(1, transport_->pacing_chunk(pace));
  Nanos t = ready;
  Nanos wait = 0;
  for (uint64_t off = 0; off < m.bytes;) {
    const uint64_t len = std::min(chunk, m.bytes - off);
    const Nanos own_start = link_.begin(t);
    pace_until(own_start);
    const Nanos own_end = link_.time_after(len);
    const IngressGrant g = ingress_->reserve(len, own_start);
    const Nanos start = std::max(own_start, g.start);
    Nanos end = std::max(own_end, g.end);
    wait += end - own_end;
    if (off == 0) m.tx_start = start;
    pace_until(start);
    transport_->write(p + off, len, off);
    off += len;
    if (off == m.bytes) {
      // As in transmit(): a transport slower than the emulation ends the message later (when it
      // accepted the last byte), never earlier.
      const Nanos written = clock_->now();
      pace_until(end);
      end = std::max(end, written);
    }
    link_.finish(end, len);
    t = end;
  }
  m.tx_end = t;
  return wait;
}

void Endpoint::sender_main() {
  VirtualClock::mark_engine_thread();
  bool graceful = false;
  bool cut_short = false;  // close(timeout) expired: what is left is dropped, CLOSE still sent
  uint64_t frames_sent = 0;
  std::vector<std::shared_ptr<void>> dropped;
  const Nanos keepalive = transport_->keepalive_interval();
  Nanos last_sent = clock_->now();
  for (;;) {
    int i = -1;
    bool ping = false;
    {
      std::unique_lock<std::mutex> lk(sync_->m);
      auto wake = [&] {
        return !queue_.empty() || closing_ || aborting_ || error_ || ring_->peer_closed_;
      };
      clock_->wait_until(*sync_, lk, add_sat(last_sent, keepalive), wake);
      frames_sent = stats_.messages_sent;
      if (aborting_) {
        cut_short = !error_;
        break;
      }
      if (error_) break;
      if (!wake()) {
        ping = true;  // idle for a keepalive interval: tell the peer we are alive
      } else if (ring_->peer_closed_) {  // nobody will read what is queued
        graceful = true;
        break;
      } else if (queue_.empty()) {  // closing, and everything has been sent
        graceful = true;
        break;
      } else {
        i = queue_.front();
        queue_.pop_front();
        slots_[static_cast<size_t>(i)].state = SendSlot::kSending;
      }
    }
    try {
      if (ping) {
        transport_->send_keepalive();
      } else {
        transmit(slots_[static_cast<size_t>(i)]);
      }
      last_sent = clock_->now();
    } catch (const Aborted&) {
      cut_short = true;
      break;
    } catch (...) {
      std::lock_guard<std::mutex> lk(sync_->m);
      if (aborting_) {
        cut_short = !error_;  // CLOSE if the transport can still send one (it checks)
      } else {
        fail_locked(std::current_exception());
      }
      break;
    }
  }
  {
    // Every message committed but not sent whole is lost: count it, whatever stopped us (the
    // peer closed, close() expired, or the transport failed).
    std::lock_guard<std::mutex> lk(sync_->m);
    frames_sent = stats_.messages_sent;
    for (auto& s : slots_) {
      if (s.state == SendSlot::kQueued || s.state == SendSlot::kSending) {
        dropped.push_back(std::move(s.keep));
        s.ext = nullptr;
        s.state = SendSlot::kFree;
        stats_.dropped += 1;
      }
    }
    queue_.clear();
    clock_->notify(*sync_);
  }
  dropped.clear();
  if (graceful || cut_short) {
    try {
      transport_->send_close(frames_sent);
      std::lock_guard<std::mutex> lk(sync_->m);
      close_sent_ = true;
    } catch (...) {  // the peer is already gone: nothing to tell it
    }
  }
  {
    std::lock_guard<std::mutex> lk(sync_->m);
    sender_done_ = true;
    clock_->notify(*sync_);
  }
  clock_->detach();
}

void Endpoint::close(Nanos timeout) {
  {
    std::unique_lock<std::mutex> lk(sync_->m);
    if (closed_ || closing_) {
      // Another close() is running or has run: wait for it (it never takes long once started).
      clock_->wait_until(*sync_, lk, kNever, [&] { return closed_; });
      return;
    }
    closing_ = true;
    ring_->local_closed_ = true;  // the consumer is done: messages still arriving are discarded
    clock_->notify(*sync_);
    const Nanos deadline = add_sat(clock_->now(), timeout);
    clock_->wait_until(*sync_, lk, deadline, [&] { return sender_done_; });
    if (!sender_done_) {
      // Out of time: the sender stops pacing, ends a part-sent frame as cancelled, counts what
      // it did not send as dropped and still sends CLOSE, so the peer sees a clean close.
      aborting_ = true;
      clock_->notify(*sync_);
    }
  }
  if (aborting_) {
    transport_->interrupt();
    bool done;
    {
      std::unique_lock<std::mutex> lk(sync_->m);
      const Nanos grace = clock_->is_virtual() ? kNever : add_sat(clock_->now(), opts_.linger);
      clock_->wait_until(*sync_, lk, grace, [&] { return sender_done_; });
      done = sender_done_;
    }
    // A sender still blocked (in a socket the peer does not drain): cut the connection.
    if (!done) transport_->abort();
  }
  {
    std::unique_lock<std::mutex> lk(sync_->m);
    clock_->wait_until(*sync_, lk, kNever, [&] { return sender_done_; });
  }
  if (sender_.joinable()) sender_.join();
  bool told;
  {
    std::lock_guard<std::mutex> lk(sync_->m);
    told = close_sent_;
  }
  // After our CLOSE, wait (up to linger) for the peer's, so no unread data resets the connection.
  transport_->finish(clock_->is_virtual()
                         ? clock_->now()
                         : add_sat(clock_->now(), aborting_ && !told ? 0 : opts_.linger));
  std::vector<std::shared_ptr<void>> keeps;
  {
    std::lock_guard<std::mutex> lk(sync_->m);
    for (auto& s : slots_) {
      if (s.keep) keeps.push_back(std::move(s.keep));
      s.ext = nullptr;
      if (s.state != SendSlot::kAcquired) s.state = SendSlot::kFree;
    }
    queue_.clear();
    closed_ = true;
    clock_->notify(*sync_);
  }
  keeps.clear();  // outside the lock (see transmit)
}

std::vector<Record> Endpoint::records(bool clear) {
  std::lock_guard<std::mutex> lk(sync_->m);
  std::vector<Record> out = records_;
  out.insert(out.end(), ring_->records_.begin(), ring_->records_.end());
  if (clear) {
    records_.clear();
    ring_->records_.clear();
  }
  return out;
}

Stats Endpoint::stats() {
  std::lock_guard<std::mutex> lk(sync_->m);
  Stats s = stats_;
  const Stats& r = ring_->stats_;
  s.messages_received = r.messages_received;
  s.bytes_received = r.bytes_received;
  s.consumer_wait = r.consumer_wait;
  s.first_rx_start = r.first_rx_start;
  s.last_arrived = r.last_arrived;
  s.last_delivered = r.last_delivered;
  return s;
}

// ---- in-process transport ---------------------------------------------------------------------

namespace {

// The sender thread writes straight into the peer's receive ring: one copy, like a socket's.
class InprocTransport final : public Transport {
 public:
  InprocTransport(std::shared_ptr<RecvRing> peer, uint64_t peer_max)
      : peer_(std::move(peer)), peer_max_(peer_max) {}
  void start(Host*, std::shared_ptr<RecvRing>) override {}
  uint64_t pacing_chunk(const LinkSpec&) const override { return UINT64_MAX; }
  uint64_t peer_max_frame() const override { return peer_max_; }
  bool begin(const FrameMeta& m) override {
    bool waited = false;
    slot_ = peer_->begin(m, &aborted_, &waited);
    if (slot_ < 0) {
      if (aborted_) throw TransferError("aborted");
      throw ClosedError("the peer endpoint is closed");
    }
    return waited;
  }
  void write(const uint8_t* p, uint64_t n, uint64_t offset) override {
    std::memcpy(peer_->data(slot_) + offset, p, n);
  }
  void end(const FrameMeta& m) override {
    peer_->complete(slot_, m, m.tx_start, m.tx_end);
    slot_ = -1;
  }
  void cancel_frame() override {
    if (slot_ >= 0) peer_->abandon(slot_);
    slot_ = -1;
  }
  void send_close(uint64_t) override { peer_->peer_closed(); }
  void abort() override {
    aborted_ = true;
    peer_->wake();
  }
  void interrupt() override { abort(); }  // CLOSE is a flag on the peer's ring: still possible
  void finish(Nanos) override {}
  std::string describe() const override { return "in-process"; }

 private:
  std::shared_ptr<RecvRing> peer_;
  uint64_t peer_max_;
  int slot_ = -1;
  std::atomic<bool> aborted_{false};
};

}  // namespace

std::pair<std::shared_ptr<Endpoint>, std::shared_ptr<Endpoint>> make_inprocess_pair(
    std::shared_ptr<Clock> clock, const LinkSpec& link_ab, const LinkSpec& link_ba,
    const EndpointOptions& opts, const std::function<void(Endpoint*)>& deleter) {
  auto ring_a = std::make_shared<RecvRing>(clock, clock->make_sync(), opts.recv_slots,
                                           opts.slot_bytes);
  auto ring_b = std::make_shared<RecvRing>(clock, clock->make_sync(), opts.recv_slots,
                                           opts.slot_bytes);
  const Nanos epoch = clock->now();
  std::shared_ptr<Endpoint> a(
      new Endpoint(clock, link_ab, opts, ring_a,
                   std::make_unique<InprocTransport>(ring_b, opts.max_frame_bytes), epoch),
      deleter);
  std::shared_ptr<Endpoint> b(
      new Endpoint(clock, link_ba, opts, ring_b,
                   std::make_unique<InprocTransport>(ring_a, opts.max_frame_bytes), epoch),
      deleter);
  return {a, b};
}

}  // namespace hierbench::transfer
