// HandlerRunner: runs one handler against the Postgres store, one step at a time.
//
// A step reads the next batch of $all after the handler's checkpoint and handles it: projectors
// in one transaction with the checkpoint, process managers one event per transaction with their
// instance state, event handlers with the checkpoint saved after the batch. The runner holds a
// session advisory lock named after the handler on its own connection, so across every cqrsd
// process on the database exactly one runs the handler; the others stand by and take over when
// that connection goes away.
//
// Failures: an event that fails is retried with exponential backoff; after max_attempts the
// handler's policy stops it (kept across restarts until restart()) or dead-letters the event and
// moves on. A step never loops on a failing event: it returns the delay to wait first.
//
// Blocking: every call does network I/O. Call from a dedicated thread (a detached actor).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cqrs/domain/upcasters.hpp"
#include "cqrs/handlers/handler.hpp"
#include "cqrs/uuid.hpp"

namespace cqrs {

namespace pg {
class PostgresEventStore;
}

// A command a process manager dispatches, with the ids the runtime derived for it.
struct DispatchRequest {
  std::string type;
  nlohmann::json data;
  Uuid command_id;
  std::string correlation_id;
  std::string causation_id;
};

// Dispatches one command and returns the reply JSON text ({"status":"ok"|"rejected"|"error",
// ...}). An Error means the command may not have arrived; the event is then retried.
using Dispatcher = std::function<Result<std::string>(const DispatchRequest&)>;

enum class HandlerState { kStarting, kStandby, kRunning, kRetrying, kStopped };
std::string_view to_string(HandlerState state);

struct HandlerStatus {
  std::string name;
  HandlerKind kind = HandlerKind::kProjector;
  HandlerState state = HandlerState::kStarting;
  bool strong = false;
  std::optional<Position> position;  // the checkpoint; nullopt before the first one
  std::string last_error;
  int attempts = 0;  // failed tries of the current event
};

class HandlerRunner {
 public:
  // `upcasters` may be null. `dispatcher` is needed for process managers only.
  HandlerRunner(std::shared_ptr<Handler> handler, std::string conninfo,
                const Upcasters* upcasters = nullptr, Dispatcher dispatcher = {});
  ~HandlerRunner();
  HandlerRunner(const HandlerRunner&) = delete;
  HandlerRunner& operator=(const HandlerRunner&) = delete;

  struct Step {
    enum class Next {
      kWait,        // caught up: wait for a wake-up, or `delay` when set, else the polling interval
      kContinue,    // more is waiting: step again now
      kRetryAfter,  // a failure: step again after `delay`
      kStandby,     // another process runs this handler: try again after `delay`
      kStopped,     // stopped by its failure policy: wait for restart()
    };
    Next next = Next::kWait;
    std::chrono::milliseconds delay{0};
    size_t handled = 0;  // events read and passed (handled or skipped) in this step
  };
  Step step();

  const HandlerStatus& status() const { return status_; }
  const Handler& handler() const { return *handler_; }

  // Projectors: in one transaction, runs reset_sql() and removes the checkpoint (and any stop),
  // so the next steps rebuild the read model from the origin. Errors: invalid_argument for other
  // kinds; store errors.
  Result<void> reset();
  // Clears a stop; the next step retries the event that stopped the handler.
  Result<void> restart();

  // For status reports (each a query on the runner's connection):
  // the newest position readers can see, the events after the checkpoint up to it, the
  // checkpoint as stored (also when another process runs the handler), and dead letters (the
  // first `limit`, or how many there are).
  Result<Position> head();
  Result<int64_t> lag();
  Result<std::optional<Position>> stored_checkpoint();
  Result<nlohmann::json> dead_letters(int64_t limit);
  Result<int64_t> dead_letter_count();

 private:
  struct Failure {
    Position position;
    std::string error;
  };
  Result<void> open_store();
  Result<void> ensure_ready();
  Result<void> load_checkpoint();
  std::optional<Event> decode(const RecordedEvent& record, std::string& error) const;
  bool wanted(const RecordedEvent& record) const;
  Step run_projector(const std::vector<RecordedEvent>& events);
  Step run_process_manager(const std::vector<RecordedEvent>& events);
  Step run_event_handler(const std::vector<RecordedEvent>& events);
  Result<void> handle_process_event(const RecordedEvent& record);
  Result<void> save_checkpoint(Position position);
  void mark_stored(Position position);
  // Moves the position over events this handler does not handle; writes it when `write_now`
  // or kIdleCheckpointEvery passed since the last write, else it moves in memory only.
  Result<void> skip_to(Position end, bool write_now);
  // NOTIFY on the projector's change channel, if it has one; see Projector::change_channel().
  void notify_change();
  std::chrono::milliseconds recheck_delay(bool progressed);
  Step fail(const RecordedEvent& record, const std::string& error, size_t handled);
  void lose_connection(const Error& error);
  Error not_here() const;

  std::shared_ptr<Handler> handler_;
  std::string conninfo_;
  const Upcasters* upcasters_;
  Dispatcher dispatcher_;
  HandlerOptions options_;
  std::vector<std::string> event_types_;
  std::unique_ptr<pg::PostgresEventStore> store_;
  // The connection session (pg::Connection::session) that holds the lock; 0 when not held. Not
  // the backend pid: a new session may get the old one's pid and not hold its lock.
  uint64_t locked_session_ = 0;
  Position position_;
  Position stored_;
  Position page_end_;  // where the page being handled ends (past skipped events)  // the checkpoint
                       // as last written (position_ may run ahead over skipped pages)
  std::optional<Position> failing_at_;
  std::chrono::steady_clock::time_point last_saved_{};  // of the checkpoint, by a projector
  std::chrono::milliseconds recheck_delay_{0};          // doubles while events stay unread
  HandlerStatus status_;
};

}  // namespace cqrs
