#include "clock.h"

#include <algorithm>
#include <chrono>

#include "errors.h"

namespace hierbench::transfer {

namespace {
thread_local bool tls_engine_thread = false;
}  // namespace

Nanos RealClock::now() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool RealClock::wait_until(Sync& sync, std::unique_lock<std::mutex>& lk, Nanos deadline,
                           const std::function<bool()>& pred) {
  if (deadline == kNever) {
    sync.cv.wait(lk, pred);
    return true;
  }
  if (pred()) return true;
  if (deadline <= now()) return false;  // no futex round trip for a deadline already past
  const std::chrono::steady_clock::time_point tp{std::chrono::nanoseconds(deadline)};
  return sync.cv.wait_until(lk, tp, pred);
}

std::shared_ptr<RealClock> RealClock::instance() {
  static auto clock = std::make_shared<RealClock>();
  return clock;
}

VirtualClock::VirtualClock(Nanos start, int participants)
    : sync_(std::make_shared<Sync>()), now_(start), running_(participants) {}

void VirtualClock::mark_engine_thread() { tls_engine_thread = true; }

bool VirtualClock::wait_until(Sync& sync, std::unique_lock<std::mutex>& lk, Nanos deadline,
                              const std::function<bool()>& pred) {
  if (pred()) return true;
  if (now() >= deadline) return false;
  Waiter w{&pred, deadline, !tls_engine_thread, false};
  waiters_.push_back(&w);
  --running_;
  advance_locked();
  while (!pred() && now() < deadline && !w.deadlocked) sync.cv.wait(lk);
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &w));
  ++running_;
  const bool ok = pred();
  if (!ok && w.deadlocked) {
    throw TransferError(
        "virtual clock deadlock: every thread is waiting, nothing is scheduled, and no waiter can "
        "ever proceed (e.g. recv() with nothing sent, or a full receive ring nobody drains; on a "
        "VirtualClock driven by several threads, pass participants=N)");
  }
  return ok;
}

void VirtualClock::advance_locked() {
  if (running_ > 0) return;
  Nanos next = kNever;
  for (Waiter* w : waiters_) {
    if (w->deadlocked || w->deadline <= now() || (*w->pred)()) {
      sync_->cv.notify_all();  // someone can run at this instant: time must not move
      return;
    }
    next = std::min(next, w->deadline);
  }
  if (next == kNever) {
    bool any = false;
    for (Waiter* w : waiters_) {
      if (w->external) w->deadlocked = any = true;
    }
    if (any) sync_->cv.notify_all();
    return;
  }
  now_.store(next, std::memory_order_release);
  sync_->cv.notify_all();
}

void VirtualClock::attach() {
  std::lock_guard<std::mutex> lk(sync_->m);
  ++running_;
}

void VirtualClock::detach() {
  std::lock_guard<std::mutex> lk(sync_->m);
  --running_;
  advance_locked();
}

void VirtualClock::join() { attach(); }
void VirtualClock::leave() { detach(); }

void VirtualClock::sleep(Nanos d) {
  std::unique_lock<std::mutex> lk(sync_->m);
  const Nanos deadline = add_sat(now(), std::max<Nanos>(d, 0));
  static const std::function<bool()> never = [] { return false; };
  wait_until(*sync_, lk, deadline, never);
}

int VirtualClock::running() const {
  std::lock_guard<std::mutex> lk(sync_->m);
  return running_;
}

}  // namespace hierbench::transfer
