#include "cqrs/pg/notice_sender.hpp"

#include <chrono>
#include <map>

#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"

namespace cqrs::pg {
namespace {

constexpr auto kReconnectDelay = std::chrono::milliseconds(100);
// Bounds how long stopping can wait for the sender to give up on an unreachable server.
constexpr const char* kConnectTimeoutSeconds = "5";

// conninfo with a connect timeout, unless it has one.
std::string bounded(const std::string& conninfo) {
  auto with_timeout = with_option(conninfo, "connect_timeout", kConnectTimeoutSeconds, false);
  return with_timeout ? *with_timeout : conninfo;
}

// The notification: the head, then $1 (notice_types_suffix() of the types).
std::string notify_call() {
  return "pg_notify('" + std::string(kEventsChannel) +
         "', pg_sequence_last_value('cqrs.events_global_position_seq')::text || $1::text)";
}

}  // namespace

std::shared_ptr<NoticeSender> NoticeSender::for_database(const std::string& conninfo) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<NoticeSender>> registry;
  std::lock_guard lock(registry_mutex);
  std::weak_ptr<NoticeSender>& slot = registry[conninfo];
  if (auto existing = slot.lock()) return existing;
  for (auto it = registry.begin(); it != registry.end();) {
    it = it->second.expired() && it->first != conninfo ? registry.erase(it) : std::next(it);
  }
  auto sender = std::make_shared<NoticeSender>(conninfo);
  slot = sender;
  return sender;
}

NoticeSender::NoticeSender(std::string conninfo, std::chrono::milliseconds min_interval,
                           std::chrono::milliseconds carry_grace)
    : conninfo_(bounded(conninfo)),
      min_interval_(min_interval),
      carry_grace_(carry_grace),
      thread_([this] { run(); }) {}

NoticeSender::~NoticeSender() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

bool NoticeSender::begin_append(std::vector<std::string>& carried) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (appending_ != 0 || sending_ || now - last_sent_ < min_interval_) {
    ++appending_;
    return false;
  }
  carried.assign(types_.begin(), types_.end());  // first: should it throw, nothing changed
  ++appending_;
  last_sent_ = now;
  // The last carrier ended, so carried_ is empty; merge keeps it right regardless. The thread,
  // awake since the types were posted, sends them at its deadline unless confirmed by then.
  carried_.merge(types_);
  types_.clear();
  pending_ = false;
  return true;
}

void NoticeSender::end_append(bool claimed, bool delivered) noexcept {
  std::lock_guard lock(mutex_);
  --appending_;
  if (!claimed || carried_.empty()) return;  // not claimed, or the thread sent them already
  if (delivered) {
    carried_.clear();
    return;
  }
  types_.merge(carried_);  // not sent, and late already: the thread sends them at once
  carried_.clear();
  pending_ = true;
  last_sent_ = {};
  wake_.notify_one();
}

void NoticeSender::post(std::span<const std::string> types) {
  bool wake;
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
    types_.insert(types.begin(), types.end());
    wake = idle_;
    idle_ = false;
    if (wake) ++posts_that_woke_;
  }
  // A thread that is not idle waits out the interval, or sends, and sees these types then:
  // waking it for every append (or every first one after a carry) would only cost a context
  // switch each.
  if (wake) wake_.notify_one();
}

uint64_t NoticeSender::posts_that_woke() const {
  std::lock_guard lock(mutex_);
  return posts_that_woke_;
}

std::string NoticeSender::statement() {
  // Its own transaction, committed without waiting for the WAL flush: a notification lost in a
  // crash only delays readers.
  return "SELECT set_config('synchronous_commit', 'off', true), " + notify_call();
}

std::string NoticeSender::statement_at_commit() { return "SELECT " + notify_call(); }

void NoticeSender::run() {
  const std::string sql = statement();
  std::unique_ptr<Connection> conn;
  std::unique_lock lock(mutex_);
  auto due = [&] { return pending_ || !carried_.empty(); };
  // The end of the interval and grace after the last notification or claim.
  auto deadline = [&] { return last_sent_ + min_interval_ + carry_grace_; };
  while (true) {
    // Nothing to send. Within interval + grace of the last notification or claim, appends are
    // likely running, and the next one may carry what they post: look again at that deadline
    // rather than be woken by the first post after every claim (a context switch per interval,
    // and a wake-up call in the posting append). After it, wait idle for post() to wake it.
    // idle_ is set again before every idle wait, not once: an append may claim what a post woke
    // the thread for before it looks, and the next post must find it idle, or that post's types
    // wait for some other wake-up.
    while (!due() && !stopping_) {
      if (std::chrono::steady_clock::now() < deadline()) {
        wake_.wait_until(lock, deadline());
      } else {
        idle_ = true;
        wake_.wait(lock);
        idle_ = false;
      }
    }
    // What arrives until the interval is over goes out with it, unless an append carries it
    // and confirms it (a claim moves last_sent_ on).
    while (due() && !stopping_ && std::chrono::steady_clock::now() < deadline()) {
      wake_.wait_until(lock, deadline());
    }
    if (!due()) {
      if (stopping_) return;
      continue;
    }
    std::vector<std::string> types(types_.begin(), types_.end());
    types.insert(types.end(), carried_.begin(), carried_.end());
    types_.clear();
    carried_.clear();
    pending_ = false;
    sending_ = true;
    bool stopping = stopping_;
    lock.unlock();
    // A connection the server closed while it sat idle (a restart, a timeout) is replaced
    // before the statement (still_open); one lost without a word fails its statement: reconnect
    // and send again once. Without a connection, keep the types for the next attempt.
    Params params;
    params.add(notice_types_suffix(types));
    bool sent = false;
    for (int attempt = 0; attempt < 2 && !sent; ++attempt) {
      if (conn && !conn->still_open()) (void)conn->reconnect();
      if (!conn) {
        // Prepared once: a reconnect prepares it again.
        if (auto opened = Connection::open(conninfo_);
            opened && (*opened)->prepare("notify", sql).ok()) {
          conn = std::move(opened).value();
        }
      }
      if (!conn || !conn->is_ok()) break;
      // An SQL error is not retried.
      sent = conn->exec_prepared("notify", params).ok() || conn->is_ok();
    }
    if (!sent && !stopping) {
      std::this_thread::sleep_for(kReconnectDelay);
      std::lock_guard relock(mutex_);
      pending_ = true;
      types_.insert(types.begin(), types.end());
    }
    lock.lock();
    last_sent_ = std::chrono::steady_clock::now();
    sending_ = false;
    if (stopping) return;
  }
}

}  // namespace cqrs::pg
