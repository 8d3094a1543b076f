// Event handlers: what runs behind the store, each from its own checkpoint in the global order.
//
// Three kinds, after Commanded:
//   Projector       writes read-model tables; its SQL and its checkpoint commit in one transaction,
//                   so every event's effect lands exactly once.
//   ProcessManager  coordinates aggregates: instances keyed by a correlation value react to
//                   events by dispatching commands; instance state and checkpoint commit together.
//   EventHandler    plain side effects, at least once; dedupe by the event id.
//
// Handlers are written against this header only: events arrive decoded (and upcast to their
// current version), and the runtime takes care of reading, checkpoints, retries, dead letters and
// of running each handler in exactly one cqrsd process at a time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cqrs/domain/json_mapping.hpp"
#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs {

namespace pg {
class Connection;
class Params;
class QueryResult;
}  // namespace pg

// A stored event as handlers see it: the record plus its data and metadata parsed, data already
// upcast to the current version of its type.
struct Event {
  RecordedEvent record;
  nlohmann::json data;
  nlohmann::json metadata;

  const std::string& type() const { return record.type; }
  const std::string& stream_id() const { return record.stream_id; }
  // The typed payload; throws nlohmann::json::exception when the data does not fit E.
  template <Message E>
  E as() const {
    return data.get<E>();
  }
  // metadata fields set by the command side ("" when absent or not a string).
  std::string correlation_id() const { return text_field("correlation_id"); }
  std::string command_id() const { return text_field("command_id"); }

 private:
  std::string text_field(const char* key) const {
    auto found = metadata.is_object() ? metadata.find(key) : metadata.end();
    return found != metadata.end() && found->is_string() ? found->get<std::string>() : "";
  }
};

enum class HandlerKind { kProjector, kProcessManager, kEventHandler };
std::string_view to_string(HandlerKind kind);

// What happens to an event that still fails after `max_attempts`.
enum class FailurePolicy {
  kStop,        // the handler stops with the error; everything else keeps running
  kDeadLetter,  // the event goes to cqrs.dead_letters and the handler moves on
};

// Where a handler without a checkpoint begins.
struct StartFrom {
  enum class Kind { kOrigin, kCurrent, kPosition };
  Kind kind = Kind::kOrigin;
  Position position;

  static StartFrom origin() { return {}; }
  static StartFrom current() { return {Kind::kCurrent, {}}; }
  static StartFrom at(Position after) { return {Kind::kPosition, after}; }
};

struct HandlerOptions {
  StartFrom start_from;
  size_t batch_size = 500;                       // events read per query
  int max_attempts = 5;                          // tries of one event before the policy
  std::chrono::milliseconds backoff_base{100};   // first retry delay, doubled each time
  std::chrono::milliseconds backoff_max{10000};  // cap of the retry delay
  FailurePolicy on_failure = FailurePolicy::kStop;
  // Strong consistency waits for this handler (projectors are strong by default).
  std::optional<bool> strong;
  // For a handler of some types: how many transactions one read walks past at most
  // (pg::PostgresStoreOptions::typed_read_window; unset: the store's default; below 1 counts as
  // 1, as batch_size and max_attempts do). A read that ends at its window is followed by the
  // next at once.
  std::optional<int64_t> typed_read_window;
};

// Common base; use one of the three kinds below.
class Handler {
 public:
  virtual ~Handler() = default;
  virtual HandlerKind kind() const = 0;
  // Unique, stable: it names the checkpoint. Renaming a handler starts it over.
  virtual std::string name() const = 0;
  // The event types it reacts to; events of other types only advance the checkpoint. Empty
  // means every type.
  virtual std::vector<std::string> event_types() const { return {}; }
  virtual HandlerOptions options() const { return {}; }
  bool strong() const {
    auto opts = options();
    return opts.strong.value_or(kind() == HandlerKind::kProjector);
  }
};

// `types` sorted and without repeats, as handles_any() takes them.
inline std::vector<std::string> sorted_types(std::vector<std::string> types) {
  std::sort(types.begin(), types.end());
  types.erase(std::unique(types.begin(), types.end()), types.end());
  return types;
}

// Whether a handler of `handled` types (empty: every type) handles one of `appended`. Both are
// sorted.
inline bool handles_any(const std::vector<std::string>& handled,
                        const std::vector<std::string>& appended) {
  if (handled.empty()) return true;
  auto mine = handled.begin();
  auto theirs = appended.begin();
  while (mine != handled.end() && theirs != appended.end()) {
    if (*mine == *theirs) return true;
    if (*mine < *theirs) {
      ++mine;
    } else {
      ++theirs;
    }
  }
  return false;
}

// The SQL side of a projector's transaction. queue() collects statements; the runtime sends all
// of a batch's statements in one round trip, in order, inside the transaction that also saves
// the checkpoint. query() runs at once (after sending what is queued), for projectors that must
// read. All values travel as parameters.
class ProjectionSql {
 public:
  virtual ~ProjectionSql() = default;
  // `if_no_row`: when not empty, the event fails with this message if the statement affects no
  // row (e.g. an UPDATE of a row an earlier event should have created).
  virtual void queue(std::string sql, pg::Params params, std::string if_no_row = {}) = 0;
  virtual Result<pg::QueryResult> query(const std::string& sql, const pg::Params& params) = 0;
};

// Writes read models. project() turns one event into SQL on `sql`; the runtime commits a batch
// of events' SQL together with the checkpoint. Throw (or return an Error) to fail the event: the
// transaction is rolled back, the events before it are committed, and the event is retried.
class Projector : public Handler {
 public:
  HandlerKind kind() const final { return HandlerKind::kProjector; }
  virtual Result<void> project(const Event& event, ProjectionSql& sql) = 0;
  // Empties the read model for a rebuild (TRUNCATE or DELETE statements); run in the same
  // transaction that resets the checkpoint.
  virtual std::string reset_sql() const = 0;
  // When not empty: a channel on which the runtime sends NOTIFY (empty payload) after each
  // committed batch that projected an event, and after a reset, so that readers of the read
  // model (a live page, say) know to read it again. It goes in a transaction of its own, after
  // the commit: a NOTIFY inside the batch's transaction would hold PostgreSQL's notification
  // lock through that commit's WAL flush, and every other notifying commit in the cluster (the
  // store's appends among them) would wait for it.
  virtual std::string change_channel() const { return {}; }
};

// A command a process manager wants dispatched.
struct CommandRequest {
  std::string type;
  nlohmann::json data;

  template <Message C>
  static CommandRequest of(const C& command) {
    return CommandRequest{std::string(type_name_of<C>()), nlohmann::json(command)};
  }
};

// How a process manager relates to an event.
struct Interest {
  enum class Kind { kIgnore, kStart, kContinue, kStop };
  Kind kind = Kind::kIgnore;
  std::string instance;  // the correlation value, e.g. a transfer id

  static Interest ignore() { return {}; }
  static Interest start(std::string id) { return {Kind::kStart, std::move(id)}; }
  static Interest continue_with(std::string id) { return {Kind::kContinue, std::move(id)}; }
  static Interest stop(std::string id) { return {Kind::kStop, std::move(id)}; }
};

// Coordinates aggregates. For each event, interested() names the instance:
//   start     creates the instance (or continues it if it exists), then handles the event;
//   continue  handles the event if the instance exists (ignored otherwise);
//   stop      handles the event, then deletes the instance;
//   ignore    skips it.
// Handling: handle(state, event) returns commands, which are dispatched in order, each with
// causation_id = the event id, the event's correlation_id, and a command id derived from
// (handler name, event id, index) so that redelivery after a crash is answered from the
// recorded outcome. Then apply(state, event) gives the new state, saved with the checkpoint.
// A rejected command is a normal outcome (the aggregate records what it means); a transport or
// store failure fails the event, which is retried.
class ProcessManager : public Handler {
 public:
  HandlerKind kind() const final { return HandlerKind::kProcessManager; }
  virtual Interest interested(const Event& event) const = 0;
  virtual std::vector<CommandRequest> handle(const nlohmann::json& state,
                                             const Event& event) const = 0;
  virtual nlohmann::json apply(nlohmann::json state, const Event& event) const = 0;
};

// Side effects (e-mail, a message queue). At least once: after a crash, events since the last
// checkpoint are handled again; use event.record.event_id to dedupe.
class EventHandler : public Handler {
 public:
  HandlerKind kind() const final { return HandlerKind::kEventHandler; }
  virtual Result<void> handle(const Event& event) = 0;
};

}  // namespace cqrs
