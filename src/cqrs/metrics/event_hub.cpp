// EventHub: one mutex and one condition variable around the newest message.
#include "cqrs/metrics/event_hub.hpp"

namespace cqrs::metrics {

void EventHub::publish(std::string message) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    message_ = std::move(message);
    ++number_;
  }
  changed_.notify_all();
}

void EventHub::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

EventHub::Next EventHub::next(uint64_t& seen, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return closed_ || number_ > seen; });
  if (closed_) return {Next::Kind::kClosed, {}};
  if (number_ <= seen) return {Next::Kind::kTimeout, {}};
  seen = number_;
  return {Next::Kind::kMessage, message_};
}

bool EventHub::try_open(size_t max_streams) {
  std::lock_guard lock(mutex_);
  if (closed_ || open_ >= max_streams) return false;
  ++open_;
  return true;
}

void EventHub::release() {
  std::lock_guard lock(mutex_);
  if (open_ > 0) --open_;
}

size_t EventHub::open_streams() const {
  std::lock_guard lock(mutex_);
  return open_;
}

}  // namespace cqrs::metrics
