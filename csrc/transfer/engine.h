// The transfer engine: one endpoint of a bidirectional, paced, in-order message channel.
// Knows nothing of Python or torch (bindings.cpp adapts it).
//
// Threads of one endpoint
//   producer (the caller)  acquire() a send slot -> fill it -> commit() (or send() = all three)
//   sender thread          takes committed slots in order, paces their bytes through the
//                          LinkEmulator and hands them to the Transport, frees the slot
//   receiver               TCP: a thread reading frames into the receive ring; in-process: the
//                          peer's sender thread writes straight into this endpoint's ring
//   consumer (the caller)  recv() takes complete messages in order once they are due
// Send ring: N preallocated slots (default 2: double buffering), FREE -> ACQUIRED -> QUEUED ->
// SENDING -> FREE. acquire() blocks while all N are in flight: that is the backpressure that
// lets a producer compute message k+1 while message k is on the link, and no further.
// Receive ring: M slots FREE -> FILLING -> READY (due at arrival + emulated delay) -> LENT -> FREE;
// when all are busy the receiver stops reading and the backpressure reaches the sender.
// Errors on the engine's threads are stored as std::exception_ptr and rethrown by the next call.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"
#include "errors.h"
#include "ingress.h"
#include "link.h"

namespace hierbench::transfer {

constexpr Nanos kNoTime = std::numeric_limits<Nanos>::min();

struct EndpointOptions {
  int send_slots = 2;
  int recv_slots = 4;
  uint64_t slot_bytes = 0;                 // preallocated bytes per slot (slots grow on demand)
  uint64_t max_frame_bytes = 1ull << 30;   // largest message this endpoint accepts
  Nanos io_timeout = 30'000'000'000;       // TCP: a stalled read inside a frame / a stalled write
  Nanos linger = 2'000'000'000;            // TCP close: wait this long for the peer's CLOSE
  uint64_t pacing_chunk_bytes = 0;         // TCP pacing granularity; 0: ~1 ms of link time
  Nanos handshake_timeout = 10'000'000'000;  // TCP connect + handshake
  int sndbuf = 0;                          // TCP SO_SNDBUF / SO_RCVBUF; 0: kernel default
  int rcvbuf = 0;
};

// One message as it crosses the link.
struct FrameMeta {
  uint64_t seq = 0;
  uint64_t bytes = 0;
  Nanos enqueued = kNoTime;  // producer committed it (sender clock)
  Nanos delay = 0;           // emulated one-way latency (+ jitter)
  Nanos tx_start = kNoTime;  // first byte entered the link (sender clock)
  Nanos tx_end = kNoTime;    // last byte left the link (sender clock)
};

// Timeline of one message, as seen by one endpoint. kNoTime where unknown.
struct Record {
  bool sent = true;  // sent by this endpoint (else received)
  uint64_t seq = 0;
  uint64_t bytes = 0;
  Nanos enqueued = kNoTime;
  Nanos tx_start = kNoTime;
  Nanos tx_end = kNoTime;
  Nanos arrived = kNoTime;    // received: last byte arrived
  Nanos delivered = kNoTime;  // due at the consumer (sent: the sender's estimate)
  Nanos taken = kNoTime;      // received: the consumer took it
};

struct Stats {
  uint64_t messages_sent = 0, bytes_sent = 0;
  uint64_t messages_received = 0, bytes_received = 0;
  uint64_t dropped = 0;  // committed but never sent whole (closed, peer gone, or send failed)
  Nanos first_tx_start = kNoTime, last_tx_end = kNoTime;
  Nanos link_busy = 0;        // time the link spent transmitting this endpoint's bytes
  Nanos ingress_wait = 0;     // how much later the shared ingress let this endpoint's chunks
                              // finish than its own link would have (0 without an ingress)
  Nanos producer_stall = 0;   // time acquire()/send() waited for a free slot
  Nanos consumer_wait = 0;    // time recv() waited for a message
  Nanos first_rx_start = kNoTime, last_arrived = kNoTime, last_delivered = kNoTime;
};

// The receive side of an endpoint. Shared (shared_ptr) by the endpoint, the thread that fills it
// (TCP receiver or the in-process peer's sender) and the leases handed to the consumer. All its
// fields are guarded by `sync`, which is the owning endpoint's Sync.
class RecvRing {
 public:
  RecvRing(std::shared_ptr<Clock> clock, std::shared_ptr<Sync> sync, int slots,
           uint64_t slot_bytes);

  struct Slot {
    enum State { kFree, kFilling, kReady, kLent } state = kFree;
    std::unique_ptr<uint8_t[]> buf;
    uint64_t capacity = 0;
    FrameMeta meta;
    Record rec;
  };

  // Filler side (call without holding the lock). begin() blocks for a free slot and takes it.
  // begin() returns -1 if `cancel` became true or the owner closed the ring (then the caller
  // discards the message). It checks the sequence number (TransferError when out of order).
  int begin(const FrameMeta& m, const std::atomic<bool>* cancel, bool* waited = nullptr);
  uint8_t* data(int i) { return slots_[i].buf.get(); }
  // `rx_start`: when the first byte arrived; `arrived`: when the last one did.
  void complete(int i, const FrameMeta& m, Nanos rx_start, Nanos arrived);
  void abandon(int i);  // a begun slot that will not complete
  void peer_closed();
  void fail(std::exception_ptr e);  // the consumer gets what is queued, then this
  // Wakes a filler blocked in begin() (its `cancel` flag was just set).
  void wake();

  std::shared_ptr<Clock> clock;
  std::shared_ptr<Sync> sync;
  std::vector<Slot> slots_;
  std::deque<int> fifo_;  // READY slots in seq order
  uint64_t next_seq_ = 0;
  Nanos prev_ready_ = kNoTime;
  bool peer_closed_ = false;
  bool local_closed_ = false;
  // Largest message accepted from now on (set_recv_limit; the transport's own max_frame_bytes
  // still applies): the owner narrows it once it knows what the peer may send.
  std::atomic<uint64_t> limit_{UINT64_MAX};
  std::exception_ptr error_;
  std::vector<Record> records_;
  Stats stats_;  // the receive half of the endpoint's stats
};

// A message handed to the consumer: the slot stays LENT until the lease is released/destroyed.
class Lease {
 public:
  Lease(std::shared_ptr<RecvRing> ring, int slot, Record rec);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  void release();
  bool released() const { return slot_ < 0; }
  uint8_t* data() const;
  uint64_t size() const { return rec_.bytes; }
  const Record& record() const { return rec_; }

 private:
  std::shared_ptr<RecvRing> ring_;
  int slot_;
  Record rec_;
};

// How an endpoint's bytes leave it. The sender thread calls begin/write.../end for each message,
// in order; abort() may come from any thread.
class Transport {
 public:
  struct Host {  // what a transport may call back (from its own threads)
    virtual void transport_failed(std::exception_ptr e) = 0;
    virtual void transport_peer_closed() = 0;
    virtual ~Host() = default;
  };
  virtual ~Transport() = default;
  virtual void start(Host* host, std::shared_ptr<RecvRing> ring) = 0;
  virtual uint64_t pacing_chunk(const LinkSpec& link) const = 0;  // bytes per paced write
  virtual uint64_t peer_max_frame() const = 0;
  // Returns true if it had to wait (e.g. for a free slot in the peer's receive ring).
  virtual bool begin(const FrameMeta& m) = 0;
  virtual void write(const uint8_t* p, uint64_t n, uint64_t offset) = 0;
  virtual void end(const FrameMeta& m) = 0;
  // The frame begun last will not be completed (abort or error mid-frame).
  virtual void cancel_frame() {}
  // close(timeout) expired mid-frame: end the frame begun last so that the peer discards it and
  // the stream stays in sync for CLOSE (TCP: the rest as filler, a trailer flagged "cancelled";
  // each write may stall for at most `stall`). Throws if the stream cannot be kept in sync.
  virtual void cancel_frame_for_close(Nanos stall) { (void)stall; cancel_frame(); }
  virtual void send_close(uint64_t frames_sent) = 0;
  // Liveness: the sender thread sends a KEEPALIVE after this long without sending anything, so
  // that a peer whose writes stall because our consumer pauses knows that we are alive.
  virtual Nanos keepalive_interval() const { return kNever; }
  virtual void send_keepalive() {}
  // Wakes the sender thread out of a blocking transport call without making CLOSE impossible
  // (in process: the peer's full ring; TCP: nothing, its socket writes are bounded by io_timeout).
  virtual void interrupt() {}
  virtual void abort() = 0;
  // After the sender thread stopped: wait (until `deadline`) for the peer to finish, release.
  virtual void finish(Nanos deadline) = 0;
  virtual std::string describe() const = 0;
  virtual bool needs_real_clock() const { return false; }
};

class Endpoint : private Transport::Host {
 public:
  Endpoint(std::shared_ptr<Clock> clock, const LinkSpec& link, const EndpointOptions& opts,
           std::shared_ptr<RecvRing> ring, std::unique_ptr<Transport> transport, Nanos epoch);
  ~Endpoint() override;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Producer. Timeouts are relative seconds-as-nanos; kNever waits forever.
  // `need_buffer` false: the slot will carry a caller-owned buffer (commit_external).
  int acquire(uint64_t nbytes, Nanos timeout, bool need_buffer = true);
  uint8_t* slot_data(int slot);
  uint64_t commit(int slot, uint64_t nbytes);
  // Commits a caller-owned buffer instead of the slot's: no copy. `keep` is held until the bytes
  // are sent and is released without any engine lock held.
  uint64_t commit_external(int slot, const void* data, uint64_t nbytes, std::shared_ptr<void> keep);
  void abort_slot(int slot);
  uint64_t send(const void* data, uint64_t nbytes, Nanos timeout);  // acquire + copy + commit

  // Consumer.
  std::unique_ptr<Lease> recv(Nanos timeout);

  // Waits until every committed message has left the link.
  void flush(Nanos timeout);
  // Flushes (up to `timeout`, kNever = all), tells the peer, stops the threads. Idempotent.
  void close(Nanos timeout);

  std::vector<Record> records(bool clear);
  Stats stats();
  Nanos now() const { return clock_->now(); }
  Nanos epoch() const { return epoch_; }
  const LinkSpec& link() const { return link_.spec(); }
  const EndpointOptions& options() const { return opts_; }
  std::string describe() const { return transport_->describe(); }
  uint64_t peer_max_frame() const { return peer_max_frame_; }
  // Refuse any later message over `nbytes` (a TransferError that fails the connection).
  void set_recv_limit(uint64_t nbytes) { ring_->limit_ = nbytes; }
  const std::shared_ptr<Clock>& clock() const { return clock_; }

 private:
  struct SendSlot {
    enum State { kFree, kAcquired, kQueued, kSending } state = kFree;
    std::unique_ptr<uint8_t[]> buf;
    uint64_t capacity = 0;
    const uint8_t* ext = nullptr;
    std::shared_ptr<void> keep;
    uint64_t bytes = 0;
    uint64_t seq = 0;
    Nanos enqueued = kNoTime;
  };
  struct Aborted {};

  void transport_failed(std::exception_ptr e) override;
  void transport_peer_closed() override;
  void sender_main();
  void transmit(SendSlot& s);
  Nanos transmit_through_ingress(FrameMeta& m, const uint8_t* p, Nanos ready);
  void pace_until(Nanos t);
  void throw_if_broken_locked() const;
  void fail_locked(std::exception_ptr e);
  void check_slot_locked(int slot, const char* what) const;
  uint64_t commit_locked(int slot);
  bool drained_locked() const;

  std::shared_ptr<Clock> clock_;
  std::shared_ptr<Sync> sync_;
  EndpointOptions opts_;
  LinkEmulator link_;  // touched by the sender thread only (after construction)
  std::shared_ptr<Ingress> ingress_;  // link.ingress: nullptr, or drawn from by every chunk
  std::shared_ptr<RecvRing> ring_;
  std::unique_ptr<Transport> transport_;
  Nanos epoch_;
  uint64_t peer_max_frame_;

  // guarded by sync_->m
  std::vector<SendSlot> slots_;
  std::deque<int> queue_;
  uint64_t next_seq_ = 0;
  bool closing_ = false;
  bool closed_ = false;
  bool sender_done_ = false;
  std::atomic<bool> aborting_{false};
  bool close_sent_ = false;  // the sender thread told the peer (CLOSE)
  std::exception_ptr error_;
  std::vector<Record> records_;
  Stats stats_;
  Nanos prev_delivered_ = kNoTime;
  Nanos link_free_ = kNoTime;

  std::thread sender_;
};

// Two endpoints joined in process: a -> b uses link_ab, b -> a uses link_ba. Both on `clock`
// (a VirtualClock makes the pair run in virtual time).
std::pair<std::shared_ptr<Endpoint>, std::shared_ptr<Endpoint>> make_inprocess_pair(
    std::shared_ptr<Clock> clock, const LinkSpec& link_ab, const LinkSpec& link_ba,
    const EndpointOptions& opts,
    const std::function<void(Endpoint*)>& deleter = [](Endpoint* e) { delete e; });

}  // namespace hierbench::transfer
