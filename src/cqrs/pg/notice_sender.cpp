#include "cqrs/pg/notice_sender.hpp"

#include <chrono>
#include <map>

#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"

namespace cqrs::pg {
namespace {

constexpr auto kReconnectDelay = std::chrono::milliseconds(100);

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

NoticeSender::NoticeSender(std::string conninfo)
    : conninfo_(std::move(conninfo)), thread_([this] { run(); }) {}

NoticeSender::~NoticeSender() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

bool NoticeSender::begin_append() {
  std::lock_guard lock(mutex_);
  return ++appending_ == 1 && !pending_ && !sending_;
}

void NoticeSender::end_append() {
  std::lock_guard lock(mutex_);
  --appending_;
}

void NoticeSender::post(const std::vector<std::string>& types) {
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
    types_.insert(types.begin(), types.end());
  }
  wake_.notify_one();
}

void NoticeSender::run() {
  const std::string sql =
      "SELECT set_config('synchronous_commit', 'off', true), pg_notify('" +
      std::string(kEventsChannel) +
      "', pg_sequence_last_value('cqrs.events_global_position_seq')::text || $1::text)";
  std::unique_ptr<Connection> conn;
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return pending_ || stopping_; });
    if (!pending_) return;  // stopping with nothing left to send
    std::vector<std::string> types(types_.begin(), types_.end());
    types_.clear();
    pending_ = false;
    sending_ = true;
    bool stopping = stopping_;
    lock.unlock();
    if (conn && !conn->is_ok()) (void)conn->reconnect();
    if (!conn) {
      if (auto opened = Connection::open(conninfo_); opened) conn = std::move(opened).value();
    }
    if (conn && conn->is_ok()) {
      // A failure loses this notification only; the next one reconnects.
      (void)conn->exec(sql, Params().add(notice_types_suffix(std::move(types))));
    } else if (!stopping) {
      std::this_thread::sleep_for(kReconnectDelay);
    }
    lock.lock();
    sending_ = false;
    if (stopping) return;
  }
}

}  // namespace cqrs::pg
