// Sends the event store's wake-ups (NOTIFY on kEventsChannel) for every store of a process that
// shares a database, from one connection of its own, coalescing what arrives while one is sent.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace cqrs::pg {

// A notification is a short transaction of its own, committed without waiting for the WAL flush,
// and sent only after the appends it announces committed. When no other append of the process
// is running and no notification is being sent, the appending connection sends it itself, in the
// append's round trip (begin_append). Otherwise the append posts its event types and returns,
// and a thread sends one notification for everything posted meanwhile. Without that, many
// connections appending at once each sent their own, and those transactions queued on PostgreSQL's
// notification lock: a third of the append rate at 16 connections. Lost notifications (a broken
// connection, a crash) only delay readers, which also poll.
//
// Notifications go out at most once per kMinInterval: an append within it of the last one posts,
// and the thread sends one for all of them when the interval is over. Each notification is a
// transaction, which cost as much server time as a one-event append itself; readers wait at most
// kMinInterval longer for their wake-up.
class NoticeSender {
 public:
  static constexpr std::chrono::milliseconds kMinInterval{2};

  // The sender of `conninfo` in this process, created on first use; it stops when the last
  // holder lets go.
  static std::shared_ptr<NoticeSender> for_database(const std::string& conninfo);

  explicit NoticeSender(std::string conninfo);
  ~NoticeSender();  // sends what is still pending, then stops
  NoticeSender(const NoticeSender&) = delete;
  NoticeSender& operator=(const NoticeSender&) = delete;

  // Brackets every append. begin_append() returns true when no other append of the process is
  // running, no notification is being sent or waiting and none went out in the last
  // kMinInterval: the caller then sends its own in the append's round trip. Otherwise it post()s
  // once the append committed.
  bool begin_append();
  void end_append();
  // Announces committed appends of events of `types`. Never blocks on the database.
  void post(const std::vector<std::string>& types);

  // The statement that sends one notification, in a transaction of its own that commits without
  // waiting for the WAL flush; $1 is notice_types_suffix() of the types.
  static std::string statement();
  // The same notification for the transaction it runs in, leaving its commit as it is: for a
  // transaction the caller opened, which PostgreSQL announces when it commits.
  static std::string statement_at_commit();

 private:
  void run();

  const std::string conninfo_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool pending_ = false;
  bool sending_ = false;                             // the thread is sending one
  int appending_ = 0;                                // appends running
  std::chrono::steady_clock::time_point last_sent_;  // the last notification, or its claim
  std::set<std::string> types_;
  std::thread thread_;
};

}  // namespace cqrs::pg
