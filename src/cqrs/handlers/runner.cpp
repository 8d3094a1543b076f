// HandlerRunner: checkpointed, locked, retried handling of $all for one handler.
#include "cqrs/handlers/runner.hpp"

#include <algorithm>
#include <charconv>

#include "cqrs/handlers/projection_sql.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"

namespace cqrs {
namespace {

// First key of the handlers' advisory locks ('hndl'); the second is hashtext(handler name).
constexpr int64_t kHandlerLockKey = 1752067180;
constexpr auto kReconnectDelay = std::chrono::milliseconds(1000);
constexpr auto kStandbyDelay = std::chrono::milliseconds(1000);
constexpr auto kIdleCheckpointEvery = std::chrono::seconds(1);
using Clock = std::chrono::steady_clock;

uint64_t to_uint64(std::string_view text) {
  uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

std::string describe(const RecordedEvent& record) {
  return record.type + " " + record.event_id.to_string() + " (" + record.stream_id + " v" +
         std::to_string(record.stream_version) + ")";
}

// Runs `fn`, turning an exception into an Error: domain code must not take the runtime down.
template <class Fn>
Result<void> guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return Error::internal("handler_failed", std::string("exception: ") + e.what());
  } catch (...) {
    return Error::internal("handler_failed", "unknown exception");
  }
}

}  // namespace

std::string_view to_string(HandlerKind kind) {
  switch (kind) {
    case HandlerKind::kProjector:
      return "projector";
    case HandlerKind::kProcessManager:
      return "process_manager";
    case HandlerKind::kEventHandler:
      return "event_handler";
  }
  return "unknown";
}

std::string_view to_string(HandlerState state) {
  switch (state) {
    case HandlerState::kStarting:
      return "starting";
    case HandlerState::kStandby:
      return "standby";
    case HandlerState::kRunning:
      return "running";
    case HandlerState::kRetrying:
      return "retrying";
    case HandlerState::kStopped:
      return "stopped";
  }
  return "unknown";
}

HandlerRunner::HandlerRunner(std::shared_ptr<Handler> handler, std::string conninfo,
                             const Upcasters* upcasters, Dispatcher dispatcher)
    : handler_(std::move(handler)),
      conninfo_(std::move(conninfo)),
      upcasters_(upcasters),
      dispatcher_(std::move(dispatcher)),
      options_(handler_->options()),
      event_types_(handler_->event_types()) {
  std::sort(event_types_.begin(), event_types_.end());
  options_.batch_size = std::max<size_t>(1, options_.batch_size);
  options_.max_attempts = std::max(1, options_.max_attempts);
  if (options_.typed_read_window) {
    options_.typed_read_window = std::max<int64_t>(1, *options_.typed_read_window);
  }
  status_.name = handler_->name();
  status_.kind = handler_->kind();
  status_.strong = handler_->strong();
}

HandlerRunner::~HandlerRunner() = default;

void HandlerRunner::lose_connection(const Error& error) {
  status_.last_error = error.message();
  if (store_ && !store_->connection().is_ok()) locked_session_ = 0;
}

Result<void> HandlerRunner::open_store() {
  if (!store_) {
    pg::PostgresStoreOptions options;
    options.notify = false;
    if (auto window = options_.typed_read_window) options.typed_read_window = *window;
    auto opened = pg::PostgresEventStore::open(conninfo_, options);
    if (!opened) return opened.error();
    store_ = std::move(opened).value();
  }
  return store_->reconnect_if_needed();
}

Result<void> HandlerRunner::ensure_ready() {
  if (auto connected = open_store(); !connected) return connected;
  // A new session has lost the old one's lock (and anything else session-scoped).
  if (store_->connection().session() != locked_session_) locked_session_ = 0;
  if (locked_session_ != 0) return {};
  auto got = store_->connection().exec("SELECT pg_try_advisory_lock($1::int, hashtext($2))",
                                       pg::Params().add(kHandlerLockKey).add(status_.name));
  if (!got) return got.error();
  if (got->text(0, 0) != "t") {
    status_.state = HandlerState::kStandby;
    return {};
  }
  locked_session_ = store_->connection().session();
  status_.state = HandlerState::kRunning;
  // A handler's effects and its checkpoint commit together, so a commit lost in a crash loses
  // both and the events are handled again: nothing needs to wait for the WAL flush, and
  // appends then do not queue behind the handlers' flushes.
  if (auto async = store_->connection().exec("SET synchronous_commit = off"); !async) {
    return async.error();
  }
  return load_checkpoint();
}

Result<void> HandlerRunner::load_checkpoint() {
  auto rows = store_->connection().exec(
      "SELECT transaction_id::text, global_position, stopped_error FROM cqrs.checkpoints "
      "WHERE handler_name = $1",
      pg::Params().add(status_.name));
  if (!rows) return rows.error();
  if (rows->rows() == 1) {
    position_ = Position{to_uint64(rows->text(0, 0)), rows->int64(0, 1)};
    stored_ = position_;
    status_.position = position_;
    if (!rows->is_null(0, 2)) {
      status_.state = HandlerState::kStopped;
      status_.last_error = std::string(rows->text(0, 2));
    }
    return {};
  }
  // No checkpoint yet: where to begin. A chosen start is saved at once, so it holds across
  // restarts ("current" would otherwise move).
  switch (options_.start_from.kind) {
    case StartFrom::Kind::kOrigin:
      position_ = Position{};
      status_.position.reset();
      return {};
    case StartFrom::Kind::kCurrent: {
      auto current = head();
      if (!current) return current.error();
      position_ = *current;
      break;
    }
    case StartFrom::Kind::kPosition:
      position_ = options_.start_from.position;
      break;
  }
  return save_checkpoint(position_);
}

Result<Position> HandlerRunner::head() {
  if (auto ready = open_store(); !ready) return ready.error();
  return store_->head();
}

// Called when a step read everything it could. Stored events of the handler's types (any event
// for a handler of every type) after the position that the step did not read are either hidden
// behind a running transaction, whose end need not notify (it need not be an append), or committed
// while the step ran, whose notification found the handler busy: look again soon instead of waiting
// for the polling interval. Asking about the position rather than the watermark also catches a
// transaction that ended between the read and this check. The delay starts at 5 ms and doubles
// while such events stay unread (a long transaction), up to 1 s; a step that read events starts it
// over (`progressed`), since under load there are always unread events and the delay would
// otherwise climb to its maximum.
std::chrono::milliseconds HandlerRunner::recheck_delay(bool progressed) {
  if (progressed) recheck_delay_ = std::chrono::milliseconds(0);
  constexpr auto kFirst = std::chrono::milliseconds(5);
  constexpr auto kMax = std::chrono::milliseconds(1000);
  auto held = store_->events_after_exist(position_, event_types_);
  if (!held || !*held) {
    recheck_delay_ = std::chrono::milliseconds(0);
  } else {
    recheck_delay_ = recheck_delay_.count() == 0 ? kFirst : std::min(recheck_delay_ * 2, kMax);
  }
  return recheck_delay_;
}

Result<void> HandlerRunner::save_checkpoint(Position position) {
  if (auto saved = store_->save_checkpoint(status_.name, position); !saved) return saved;
  position_ = position;
  status_.position = position;
  mark_stored(position);
  return {};
}

Result<void> HandlerRunner::skip_to(Position end, bool write_now) {
  if (write_now || Clock::now() - last_saved_ >= kIdleCheckpointEvery) {
    if (auto saved = save_checkpoint(end); !saved) return saved;
  }
  position_ = end;
  status_.position = end;
  return {};
}

void HandlerRunner::notify_change() {
  if (handler_->kind() != HandlerKind::kProjector) return;
  std::string channel = static_cast<const Projector&>(*handler_).change_channel();
  if (channel.empty()) return;
  // Committed without waiting for the WAL flush: a lost notification only delays a reader. A
  // failure is left to the next statement on this connection, which reconnects.
  (void)store_->connection().exec(
      "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
      pg::Params().add(channel));
}

void HandlerRunner::mark_stored(Position position) {
  stored_ = position;
  last_saved_ = Clock::now();
}

bool HandlerRunner::wanted(const RecordedEvent& record) const {
  return event_types_.empty() ||
         std::binary_search(event_types_.begin(), event_types_.end(), record.type);
}

std::optional<Event> HandlerRunner::decode(const RecordedEvent& record, std::string& error) const {
  Event event;
  event.data = nlohmann::json::parse(record.data, nullptr, false);
  event.metadata = nlohmann::json::parse(record.metadata, nullptr, false);
  if (event.data.is_discarded() || !event.metadata.is_object()) {
    error = "stored event " + describe(record) + " has unreadable data or metadata";
    return std::nullopt;
  }
  event.record = record;
  if (upcasters_ != nullptr) {
    try {
      event.record.type_version = upcasters_->upcast(record.type, record.type_version, event.data);
    } catch (const std::exception& e) {
      error = "upcasting " + describe(record) + " failed: " + e.what();
      return std::nullopt;
    }
  }
  return event;
}

HandlerRunner::Step HandlerRunner::step() {
  if (status_.state == HandlerState::kStopped) return {Step::Next::kStopped, {}, 0};
  if (auto ready = ensure_ready(); !ready) {
    lose_connection(ready.error());
    status_.state = HandlerState::kRetrying;
    return {Step::Next::kRetryAfter, kReconnectDelay, 0};
  }
  if (status_.state == HandlerState::kStandby) return {Step::Next::kStandby, kStandbyDelay, 0};
  if (status_.state == HandlerState::kStopped) return {Step::Next::kStopped, {}, 0};

  // A handler of some types reads only those; its page moves past the others.
  auto page = event_types_.empty()
                  ? store_->read_all(position_, options_.batch_size)
                  : store_->read_all_of_types(position_, options_.batch_size, event_types_);
  if (!page) {
    lose_connection(page.error());
    status_.state = HandlerState::kRetrying;
    return {Step::Next::kRetryAfter, kReconnectDelay, 0};
  }
  page_end_ = page->next;
  if (page->events.empty() && page->next == position_) {
    if (!failing_at_) status_.state = HandlerState::kRunning;
    // Caught up: store a position that only moved in memory (skipped pages), so that other
    // processes following the stored checkpoint (strong consistency on a standby) see it.
    if (status_.position && stored_ != position_) {
      if (auto saved = save_checkpoint(position_); !saved) {
        lose_connection(saved.error());
        return {Step::Next::kRetryAfter, kReconnectDelay, 0};
      }
    }
    return {Step::Next::kWait, recheck_delay(false), 0};
  }
  Step step;
  switch (handler_->kind()) {
    case HandlerKind::kProjector:
      step = run_projector(page->events);
      break;
    case HandlerKind::kProcessManager:
      step = run_process_manager(page->events);
      break;
    case HandlerKind::kEventHandler:
      step = run_event_handler(page->events);
      break;
  }
  if (step.next == Step::Next::kWait && page->more) {
    step.next = Step::Next::kContinue;  // a full page: there is probably more
  }
  if (step.next == Step::Next::kWait) step.delay = recheck_delay(true);
  return step;
}

// The whole batch in one transaction with the checkpoint after its last event; the projector's
// statements travel in one round trip. When an event fails, the transaction is rolled back, the
// events before it are committed on their own, and the failing one goes to fail().
HandlerRunner::Step HandlerRunner::run_projector(const std::vector<RecordedEvent>& events) {
  auto& projector = static_cast<Projector&>(*handler_);
  auto& conn = store_->connection();
  struct Outcome {
    bool committed = false;
    bool connection_lost = false;
    size_t failed = 0;  // the failing event, when neither of the above
    std::string error;
  };
  // Projects events[0, count) and commits them with the checkpoint.
  auto project_range = [&](size_t count) -> Outcome {
    Outcome outcome;
    auto lost = [&](const Error& error) {
      outcome.connection_lost = true;
      outcome.error = error.message();
      return outcome;
    };
    if (count == 0) {
      outcome.committed = true;
      return outcome;
    }
    if (auto begun = conn.exec("BEGIN"); !begun) return lost(begun.error());
    auto abandon = [&](size_t failed, std::string error, bool connection_lost) {
      if (conn.is_ok()) (void)conn.exec("ROLLBACK");
      outcome.failed = failed;
      outcome.error = std::move(error);
      outcome.connection_lost = connection_lost || !conn.is_ok();
      return outcome;
    };
    BatchProjectionSql sql(conn);
    bool projected_any = false;
    for (size_t idx = 0; idx < count; ++idx) {
      if (!wanted(events[idx])) continue;
      projected_any = true;
      sql.set_event(idx);
      std::string error;
      auto event = decode(events[idx], error);
      Result<void> done = event ? guarded([&] { return projector.project(*event, sql); })
                                : Result<void>(Error::internal("invalid_event", error));
      if (!done) return abandon(idx, done.error().message(), false);
    }
    if (auto failed = sql.flush()) {
      return abandon(failed->event, failed->error.message(), failed->connection_lost);
    }
    Position end = count == events.size() ? page_end_ : events[count - 1].position();
    if (auto saved = store_->save_checkpoint(status_.name, end); !saved) {
      return abandon(count, saved.error().message(), true);
    }
    if (auto committed = conn.exec("COMMIT"); !committed) {
      return abandon(count, committed.error().message(), true);
    }
    outcome.committed = true;
    mark_stored(end);
    if (projected_any) notify_change();
    return outcome;
  };

  // A page without a single event of interest writes nothing: the position moves in memory and
  // is saved with the next real batch (or at most every kIdleCheckpointEvery). A write
  // transaction per page would hold every $all reader's watermark back for nothing, and after a
  // crash the skipped events are only read and skipped again.
  if (std::none_of(events.begin(), events.end(), [&](const auto& e) { return wanted(e); })) {
    if (auto moved = skip_to(page_end_, /*write_now=*/false); !moved) {
      lose_connection(moved.error());
      return {Step::Next::kRetryAfter, kReconnectDelay, 0};
    }
    status_.state = HandlerState::kRunning;
    return {Step::Next::kWait, {}, events.size()};
  }

  size_t limit = events.size();
  std::optional<size_t> culprit;
  std::string culprit_error;
  while (true) {
    Outcome outcome = project_range(limit);
    if (outcome.connection_lost) {
      lose_connection(Error::unavailable(outcome.error));
      status_.state = HandlerState::kRetrying;
      return {Step::Next::kRetryAfter, kReconnectDelay, 0};
    }
    if (outcome.committed) break;
    // Everything before the failing event passed once; commit that much, unless one of those
    // fails now (then it is the culprit).
    culprit = outcome.failed;
    culprit_error = outcome.error;
    limit = outcome.failed;
  }
  if (!culprit) {
    position_ = page_end_;
    status_.position = position_;
  } else if (limit > 0) {
    position_ = events[limit - 1].position();
    status_.position = position_;
  }
  if (!culprit) {
    failing_at_.reset();
    status_.attempts = 0;
    status_.state = HandlerState::kRunning;
    return {Step::Next::kWait, {}, events.size()};
  }
  return fail(events[*culprit], culprit_error, limit);
}

Result<void> HandlerRunner::handle_process_event(const RecordedEvent& record) {
  auto& manager = static_cast<ProcessManager&>(*handler_);
  std::string error;
  auto event = decode(record, error);
  if (!event) return Error::internal("invalid_event", error);
  Interest interest;
  if (auto asked = guarded([&]() -> Result<void> {
        interest = manager.interested(*event);
        return {};
      });
      !asked) {
    return asked;
  }
  if (interest.kind == Interest::Kind::kIgnore) return {};
  auto& sql = store_->connection();
  pg::Params key;
  key.add(status_.name).add(interest.instance);
  auto rows = sql.exec(
      "SELECT state::text FROM cqrs.process_instances WHERE handler_name = $1 AND instance_id = $2",
      key);
  if (!rows) return rows.error();
  bool exists = rows->rows() == 1;
  if (!exists && interest.kind != Interest::Kind::kStart) return {};
  nlohmann::json state =
      exists ? nlohmann::json::parse(rows->text(0, 0), nullptr, false) : nlohmann::json::object();
  if (state.is_discarded()) state = nlohmann::json::object();

  std::vector<CommandRequest> commands;
  if (auto handled = guarded([&]() -> Result<void> {
        commands = manager.handle(state, *event);
        return {};
      });
      !handled) {
    return handled;
  }
  std::string event_id = record.event_id.to_string();
  std::string correlation = event->correlation_id().empty() ? event_id : event->correlation_id();
  for (size_t idx = 0; idx < commands.size(); ++idx) {
    if (!dispatcher_) return Error::internal("no_dispatcher", "process manager without dispatcher");
    DispatchRequest request{
        commands[idx].type, commands[idx].data,
        Uuid::derived(status_.name + "/" + event_id + "/" + std::to_string(idx)), correlation,
        event_id};
    auto reply = dispatcher_(request);
    if (!reply) return reply.error();
    nlohmann::json parsed = nlohmann::json::parse(*reply, nullptr, false);
    std::string status = parsed.is_object() ? parsed.value("status", "error") : "error";
    if (status == "error") {
      return Error::unavailable("dispatching " + request.type + " failed: " +
                                (parsed.is_object() ? parsed.value("message", *reply) : *reply));
    }
  }
  nlohmann::json next;
  if (auto applied = guarded([&]() -> Result<void> {
        next = manager.apply(std::move(state), *event);
        return {};
      });
      !applied) {
    return applied;
  }
  return store_->commit_with_checkpoint(
      status_.name, record.position(), [&](pg::Connection& tx) -> Result<void> {
        Result<pg::QueryResult> written =
            interest.kind == Interest::Kind::kStop
                ? tx.exec(
                      "DELETE FROM cqrs.process_instances"
                      " WHERE handler_name = $1 AND instance_id = $2",
                      key)
                : tx.exec(
                      "INSERT INTO cqrs.process_instances (handler_name, instance_id, state)"
                      " VALUES ($1, $2, $3::jsonb) ON CONFLICT (handler_name, instance_id)"
                      " DO UPDATE SET state = excluded.state, updated_at = now()",
                      pg::Params().add(status_.name).add(interest.instance).add(next.dump()));
        if (!written) return written.error();
        return {};
      });
}

HandlerRunner::Step HandlerRunner::run_process_manager(const std::vector<RecordedEvent>& events) {
  bool handled_any = false;
  for (size_t idx = 0; idx < events.size(); ++idx) {
    if (!wanted(events[idx])) continue;
    auto done = handle_process_event(events[idx]);
    if (!done) {
      if (idx > 0 && events[idx - 1].position() != stored_) {
        (void)save_checkpoint(events[idx - 1].position());
      }
      if (!store_->connection().is_ok()) {
        lose_connection(done.error());
        status_.state = HandlerState::kRetrying;
        return {Step::Next::kRetryAfter, kReconnectDelay, idx};
      }
      return fail(events[idx], done.error().message(), idx);
    }
    handled_any = true;
    position_ = events[idx].position();
    mark_stored(position_);
    status_.position = position_;
    failing_at_.reset();
    status_.attempts = 0;
  }
  // Events skipped after the last handled one: written with this batch when it handled any,
  // else as for projectors.
  if (page_end_ != stored_) {
    if (auto moved = skip_to(page_end_, handled_any); !moved) {
      lose_connection(moved.error());
      return {Step::Next::kRetryAfter, kReconnectDelay, events.size()};
    }
  }
  status_.state = HandlerState::kRunning;
  return {Step::Next::kWait, {}, events.size()};
}

HandlerRunner::Step HandlerRunner::run_event_handler(const std::vector<RecordedEvent>& events) {
  auto& handler = static_cast<EventHandler&>(*handler_);
  for (size_t idx = 0; idx < events.size(); ++idx) {
    if (!wanted(events[idx])) continue;
    std::string error;
    auto event = decode(events[idx], error);
    Result<void> done = event ? guarded([&] { return handler.handle(*event); })
                              : Result<void>(Error::internal("invalid_event", error));
    if (!done) {
      if (idx > 0) (void)save_checkpoint(events[idx - 1].position());
      return fail(events[idx], done.error().message(), idx);
    }
    failing_at_.reset();
    status_.attempts = 0;
  }
  if (auto saved = save_checkpoint(page_end_); !saved) {
    lose_connection(saved.error());
    return {Step::Next::kRetryAfter, kReconnectDelay, events.size()};
  }
  status_.state = HandlerState::kRunning;
  return {Step::Next::kWait, {}, events.size()};
}

HandlerRunner::Step HandlerRunner::fail(const RecordedEvent& record, const std::string& error,
                                        size_t handled) {
  if (failing_at_ != record.position()) {
    failing_at_ = record.position();
    status_.attempts = 0;
  }
  ++status_.attempts;
  status_.last_error = describe(record) + ": " + error;
  if (status_.attempts < options_.max_attempts) {
    status_.state = HandlerState::kRetrying;
    auto delay = options_.backoff_base * (int64_t{1} << std::min(status_.attempts - 1, 20));
    return {Step::Next::kRetryAfter, std::min(delay, options_.backoff_max), handled};
  }
  if (options_.on_failure == FailurePolicy::kDeadLetter) {
    auto moved = store_->commit_with_checkpoint(
        status_.name, record.position(), [&](pg::Connection& tx) -> Result<void> {
          pg::Params params;
          params.add(status_.name).add(std::to_string(record.commit_id));
          params.add(record.global_position).add(record.event_id.to_string());
          params.add(record.stream_id).add(record.stream_version).add(record.type);
          params.add(error).add(int64_t{status_.attempts});
          auto inserted = tx.exec(
              "INSERT INTO cqrs.dead_letters (handler_name, transaction_id, global_position,"
              " event_id, stream_id, stream_version, event_type, error, attempts)"
              " VALUES ($1, $2::xid8, $3, $4::uuid, $5, $6, $7, $8, $9)",
              params);
          if (!inserted) return inserted.error();
          return {};
        });
    if (!moved) {
      lose_connection(moved.error());
      return {Step::Next::kRetryAfter, kReconnectDelay, handled};
    }
    position_ = record.position();
    status_.position = position_;
    mark_stored(position_);
    failing_at_.reset();
    status_.attempts = 0;
    status_.state = HandlerState::kRunning;
    return {Step::Next::kContinue, {}, handled + 1};
  }
  pg::Params params;
  params.add(status_.name).add(std::to_string(position_.commit_id)).add(position_.global_position);
  params.add(status_.last_error);
  auto stopped = store_->connection().exec(
      "INSERT INTO cqrs.checkpoints (handler_name, transaction_id, global_position, stopped_error,"
      " stopped_at) VALUES ($1, $2::xid8, $3, $4, now()) ON CONFLICT (handler_name) DO UPDATE"
      " SET stopped_error = excluded.stopped_error, stopped_at = excluded.stopped_at",
      params);
  if (!stopped) {
    lose_connection(stopped.error());
    return {Step::Next::kRetryAfter, kReconnectDelay, handled};
  }
  status_.state = HandlerState::kStopped;
  return {Step::Next::kStopped, {}, handled};
}

Result<int64_t> HandlerRunner::lag() {
  if (auto ready = open_store(); !ready) return ready.error();
  // Only events of the handler's types: it is not woken for the others, so it passes them
  // only at its next wake-up or poll, and they need no work.
  if (!event_types_.empty()) return store_->count_of_types_after(position_, event_types_);
  // The runs that start after the position (the $all index holds the first event of each run,
  // schema/013), and the rest of the one it is inside.
  pg::Params params;
  params.add(std::to_string(position_.commit_id)).add(position_.global_position);
  auto rows = store_->connection().exec(
      "SELECT (SELECT coalesce(sum(run_length), 0) FROM cqrs.events WHERE run_length > 0"
      " AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
      " AND (transaction_id, global_position) > ($1::xid8, $2::bigint))"
      " + (SELECT count(*) FROM cqrs.rest_of_run($1::xid8, $2::bigint, NULL))",
      params);
  if (!rows) return rows.error();
  return rows->int64(0, 0);
}

Result<std::optional<Position>> HandlerRunner::stored_checkpoint() {
  if (auto ready = open_store(); !ready) return ready.error();
  auto stored = store_->load_checkpoint(status_.name);
  if (!stored) return stored.error();
  return *stored;
}

Result<nlohmann::json> HandlerRunner::dead_letters(int64_t limit) {
  if (auto ready = open_store(); !ready) return ready.error();
  auto rows = store_->connection().exec(
      "SELECT id, handler_name, transaction_id::text, global_position, event_id::text, stream_id,"
      " stream_version, event_type, error, attempts, failed_at::text FROM cqrs.dead_letters"
      " WHERE handler_name = $1 ORDER BY id LIMIT $2",
      pg::Params().add(status_.name).add(limit));
  if (!rows) return rows.error();
  nlohmann::json list = nlohmann::json::array();
  for (int row = 0; row < rows->rows(); ++row) {
    list.push_back(
        {{"id", rows->int64(row, 0)},
         {"handler", rows->text(row, 1)},
         {"position", std::string(rows->text(row, 2)) + "/" + std::to_string(rows->int64(row, 3))},
         {"event_id", rows->text(row, 4)},
         {"stream_id", rows->text(row, 5)},
         {"stream_version", rows->int64(row, 6)},
         {"event_type", rows->text(row, 7)},
         {"error", rows->text(row, 8)},
         {"attempts", rows->int64(row, 9)},
         {"failed_at", rows->text(row, 10)}});
  }
  return list;
}

Result<int64_t> HandlerRunner::dead_letter_count() {
  if (auto ready = open_store(); !ready) return ready.error();
  auto rows =
      store_->connection().exec("SELECT count(*) FROM cqrs.dead_letters WHERE handler_name = $1",
                                pg::Params().add(status_.name));
  if (!rows) return rows.error();
  return rows->int64(0, 0);
}

Error HandlerRunner::not_here() const {
  return Error::conflict("handler_elsewhere", "handler '" + status_.name +
                                                  "' runs in another cqrsd process; ask that one");
}

Result<void> HandlerRunner::reset() {
  if (handler_->kind() != HandlerKind::kProjector) {
    return Error::invalid(errc::kInvalidArgument, "only projectors can be reset; '" + status_.name +
                                                      "' is a " +
                                                      std::string(to_string(handler_->kind())));
  }
  if (auto ready = ensure_ready(); !ready) return ready;
  if (locked_session_ == 0) return not_here();
  auto& projector = static_cast<Projector&>(*handler_);
  auto& sql = store_->connection();
  if (auto begun = sql.exec("BEGIN"); !begun) return begun.error();
  auto rollback = [&](const Error& error) -> Result<void> {
    if (sql.is_ok()) (void)sql.exec("ROLLBACK");
    return error;
  };
  if (auto cleared = sql.exec(projector.reset_sql()); !cleared) return rollback(cleared.error());
  if (auto removed = sql.exec("DELETE FROM cqrs.checkpoints WHERE handler_name = $1",
                              pg::Params().add(status_.name));
      !removed) {
    return rollback(removed.error());
  }
  if (auto committed = sql.exec("COMMIT"); !committed) return rollback(committed.error());
  notify_change();
  position_ = Position{};
  stored_ = Position{};
  status_.position.reset();
  failing_at_.reset();
  status_.attempts = 0;
  status_.last_error.clear();
  if (status_.state == HandlerState::kStopped) status_.state = HandlerState::kRunning;
  return {};
}

Result<void> HandlerRunner::restart() {
  if (auto ready = ensure_ready(); !ready) return ready;
  if (locked_session_ == 0) return not_here();
  auto cleared = store_->connection().exec(
      "UPDATE cqrs.checkpoints SET stopped_error = NULL, stopped_at = NULL WHERE handler_name = $1",
      pg::Params().add(status_.name));
  if (!cleared) return cleared.error();
  failing_at_.reset();
  status_.attempts = 0;
  status_.last_error.clear();
  if (status_.state == HandlerState::kStopped) status_.state = HandlerState::kRunning;
  return {};
}

}  // namespace cqrs
