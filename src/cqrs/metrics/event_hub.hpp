// EventHub: hands the newest message to every open event stream of the HTTP endpoint (Server-Sent
// Events). A publisher replaces the message; a stream that was busy or waiting sees only the
// newest one, so the hub suits messages that each carry a whole state (older ones are superseded,
// never queued). It also counts the open streams, so the endpoint can bound them.
//
// Thread-safe: publish() and close() from any thread, next() from each stream's serving thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

namespace cqrs::metrics {

class EventHub {
 public:
  struct Next {
    enum class Kind { kMessage, kTimeout, kClosed };
    Kind kind = Kind::kTimeout;
    std::string message;  // with kMessage
  };

  EventHub() = default;
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // Replaces the message and wakes every waiting stream. Ignored once closed.
  void publish(std::string message);
  // Ends every stream: waiting and later next() calls return kClosed.
  void close();

  // Waits up to `timeout` for a message newer than the one numbered `seen` (0: none seen) and
  // returns it, setting `seen` to its number; a message published before the call counts, so a
  // new stream (seen = 0) gets the current message at once.
  Next next(uint64_t& seen, std::chrono::milliseconds timeout);

  // Admits one more stream unless `max_streams` are open; release() when it ends.
  bool try_open(size_t max_streams);
  void release();
  size_t open_streams() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t number_ = 0;  // of message_; 0 before the first publish
  std::string message_;
  bool closed_ = false;
  size_t open_ = 0;
};

}  // namespace cqrs::metrics
