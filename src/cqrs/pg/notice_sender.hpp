// Sends the event store's wake-ups (NOTIFY on kEventsChannel) for every store of a process that
// shares a database, from one connection of its own, coalescing what arrives while one is sent.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace cqrs::pg {

// A notification is a short transaction of its own, committed without waiting for the WAL flush,
// and sent only after the appends it announces committed. It goes out at most once per
// kMinInterval, in one of two ways:
// * The first append that begins kMinInterval or more after the last notification, while no other
//   append of the process runs and none is being sent, carries it in its own round trip
//   (begin_append): for its own events and for those posted since the last one. A group of
//   appends (AppendGroups) does not: its members would wait for the notification too.
// * Otherwise appends post their event types once committed, and a thread sends one notification
//   for everything posted, kMinInterval + kCarryGrace after the last, unless an append carried
//   them meanwhile and confirmed that its notification went out. Within that time after a
//   notification the thread waits for the deadline, not for posts: with one writer, waking it
//   for the first post after each carried notification cost a context switch every interval.
// Without the coalescing, many connections appending at once each sent their own, and those
// transactions queued on PostgreSQL's notification lock: a third of the append rate at 16
// connections. Each notification is a transaction, and one sent by the thread also wakes the
// thread and its connection's server process: on two CPUs, about 200 µs of server time, twice a
// one-event append. Readers wait at most kMinInterval + kCarryGrace longer for their wake-up. Lost
// notifications (a broken connection, a crash) only delay readers, which also poll.
class NoticeSender {
 public:
  static constexpr std::chrono::milliseconds kMinInterval{2};
  // How much longer than kMinInterval the thread leaves to an append to carry what is posted.
  static constexpr std::chrono::milliseconds kCarryGrace{1};

  // The sender of `conninfo` in this process, created on first use; it stops when the last
  // holder lets go.
  static std::shared_ptr<NoticeSender> for_database(const std::string& conninfo);

  explicit NoticeSender(std::string conninfo, std::chrono::milliseconds min_interval = kMinInterval,
                        std::chrono::milliseconds carry_grace = kCarryGrace);
  ~NoticeSender();  // sends what is still pending, then stops
  NoticeSender(const NoticeSender&) = delete;
  NoticeSender& operator=(const NoticeSender&) = delete;

  // Brackets every append. begin_append() returns true when no other append of the process is
  // running, no notification is being sent, and none went out in the last kMinInterval: the
  // caller then sends the notification in the append's round trip, for its own events and for
  // `carried`, the types posted since the last one, and says in end_append() whether it went
  // out. Until then the sender keeps the carried types, and sends them itself if they are not
  // confirmed kMinInterval + kCarryGrace after the claim: an append that waits long (for a lock,
  // a slow network) must not hold back other appends' notifications; a carrier whose
  // notification failed hands them back, and the thread sends them at once. A copy sent twice
  // only wakes readers once more. Without the claim, the caller post()s its types once the append
  // committed.
  bool begin_append(std::vector<std::string>& carried);
  void end_append(bool claimed, bool delivered) noexcept;
  // Announces committed appends of events of `types`. Never blocks on the database.
  void post(std::span<const std::string> types);
  // How many posts woke the thread (for tests): only a post that finds it idle does, which it is
  // not while a notification sent or claimed in the last kMinInterval + kCarryGrace may be
  // followed by a carrier.
  uint64_t posts_that_woke() const;

  // The statement that sends one notification, in a transaction of its own that commits without
  // waiting for the WAL flush; $1 is notice_types_suffix() of the types.
  static std::string statement();
  // The same notification for the transaction it runs in, leaving its commit as it is: for a
  // transaction the caller opened, which PostgreSQL announces when it commits.
  static std::string statement_at_commit();

 private:
  void run();

  const std::string conninfo_;
  const std::chrono::milliseconds min_interval_;
  const std::chrono::milliseconds carry_grace_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool pending_ = false;
  bool sending_ = false;  // the thread is sending one
  bool idle_ = false;     // the thread waits with nothing due (and no deadline)
  uint64_t posts_that_woke_ = 0;
  int appending_ = 0;                                // appends running
  std::chrono::steady_clock::time_point last_sent_;  // the last notification, or its claim
  std::set<std::string> types_;                      // posted, to send
  std::set<std::string> carried_;  // claimed by the running append, not yet confirmed
  std::thread thread_;
};

}  // namespace cqrs::pg
