// Time for the transfer engine: a real monotonic clock, and a virtual clock for tests.
//
// Every timestamp is an int64 count of nanoseconds on the endpoint's clock. The real clock is
// std::chrono::steady_clock (CLOCK_MONOTONIC on Linux), which is shared by all processes of one
// machine, so timestamps that travel in TCP frames can be compared on the same host.
//
// All waiting goes through Clock::wait_until, so a virtual clock can see who is blocked and on
// what. See VirtualClock for the rule that makes virtual runs deterministic.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

namespace hierbench::transfer {

using Nanos = int64_t;
constexpr Nanos kNever = std::numeric_limits<Nanos>::max();

// Saturating a + b for deadlines (kNever stays kNever).
inline Nanos add_sat(Nanos a, Nanos b) {
  Nanos r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kNever : std::numeric_limits<Nanos>::min();
  return r;
}

// One mutex and one condition variable. Everything an endpoint shares between its threads lives
// under its Sync. On a virtual clock all endpoints share the clock's single Sync.
struct Sync {
  std::mutex m;
  std::condition_variable cv;
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Nanos now() const = 0;
  // The Sync a new endpoint (or ring) should use.
  virtual std::shared_ptr<Sync> make_sync() = 0;
  // With `lk` holding `sync.m`: block until pred() holds or now() >= deadline; returns pred().
  // pred is evaluated under sync.m (on a virtual clock possibly by another waiting thread).
  virtual bool wait_until(Sync& sync, std::unique_lock<std::mutex>& lk, Nanos deadline,
                          const std::function<bool()>& pred) = 0;
  // State under sync.m changed (call with sync.m held): wake the waiters so they re-check.
  virtual void notify(Sync& sync) { sync.cv.notify_all(); }
  // An engine thread is about to be started (called by its creator, before the thread exists)
  // and an engine thread is exiting (called by the thread itself, without holding any lock).
  virtual void attach() {}
  virtual void detach() {}
  virtual bool is_virtual() const { return false; }
};

// steady_clock; each endpoint gets its own Sync.
class RealClock final : public Clock {
 public:
  Nanos now() const override;
  std::shared_ptr<Sync> make_sync() override { return std::make_shared<Sync>(); }
  bool wait_until(Sync& sync, std::unique_lock<std::mutex>& lk, Nanos deadline,
                  const std::function<bool()>& pred) override;
  static std::shared_ptr<RealClock> instance();
};

// Virtual time, for fast and deterministic tests.
//
// The rule: time stands still while any participant can run, and jumps to the earliest pending
// deadline when every participant is blocked in wait_until with a false predicate.
//   * Participants are the engine threads (attach() is called by their creator before they
//     start, detach() when they exit) plus `participants` external threads (the test's Python
//     thread by default); an external thread counts as blocked only while it waits inside an
//     engine call or VirtualClock::sleep, which is how a test "spends" compute time.
//   * Every endpoint on the clock uses the clock's one Sync, so the check "everyone is blocked
//     and no predicate holds" is made atomically under one mutex: a thread that was notified but
//     has not run yet still has a true predicate, so the clock cannot skip past it.
// Hence each thread leaves a wait at the first virtual instant its condition holds, and at every
// instant all the work that instant allows is done before time moves on. Threads may interleave
// differently within one instant, but every timestamp the engine takes is now() (the same for the
// whole instant) or computed from earlier timestamps, so the timeline of a run is a function of its
// inputs. The one exception is two decisions racing at the very same instant (say the peer's
// close and a commit): either may win, so tests do not schedule such ties.
// If every participant waits with no deadline and no predicate holds, nothing can ever happen: the
// external waiters get a TransferError ("deadlock") instead of hanging the test.
class VirtualClock final : public Clock {
 public:
  explicit VirtualClock(Nanos start = 0, int participants = 1);
  Nanos now() const override { return now_.load(std::memory_order_acquire); }
  std::shared_ptr<Sync> make_sync() override { return sync_; }
  bool wait_until(Sync& sync, std::unique_lock<std::mutex>& lk, Nanos deadline,
                  const std::function<bool()>& pred) override;
  void attach() override;
  void detach() override;
  bool is_virtual() const override { return true; }

  // External participants: a thread that starts (join) or stops (leave) driving the engine.
  void join();
  void leave();
  // An external participant spends `d` of virtual time (e.g. simulated compute).
  void sleep(Nanos d);
  int running() const;

  // Marks the calling thread as an engine thread (its waits never raise "deadlock").
  static void mark_engine_thread();

 private:
  struct Waiter {
    const std::function<bool()>* pred;
    Nanos deadline;
    bool external;
    bool deadlocked;
  };
  void advance_locked();

  std::shared_ptr<Sync> sync_;
  std::atomic<Nanos> now_;
  int running_;
  std::vector<Waiter*> waiters_;
};

}  // namespace hierbench::transfer
