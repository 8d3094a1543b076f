// Handler actors and the notifier.
#include "actors/handlers.hpp"

#include <caf/all.hpp>

#include "actors/log.hpp"
#include "actors/replies.hpp"
#include "cqrs/handlers/runner.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"

namespace cqrs::actors {
namespace {

constexpr int64_t kDefaultDeadLetterLimit = 1000;

struct HandlerActorState {
  std::unique_ptr<HandlerRunner> runner;
  std::unique_ptr<caf::scoped_actor> requester;  // process managers' blocking dispatch
  caf::actor gateway;
  HandlerActorConfig config;
  uint64_t generation = 0;  // of the step scheduled last; older step messages are ignored
  bool waiting = false;     // caught up: a wake-up steps (at once, or after min_step_interval)
  std::chrono::steady_clock::time_point last_step{};  // when the last step began
  std::optional<Position> reported;
  HandlerState logged_state = HandlerState::kStarting;  // the state the last log line named
  static inline const char* name = "cqrs.handler";
};

using HandlerActor = caf::stateful_actor<HandlerActorState>;

// Both kinds of stepping actor here (handlers, the correlation indexer) keep `generation`,
// `waiting`, `last_step` and `config.min_step_interval` in their state.
template <class State>
void schedule(caf::stateful_actor<State>* self, std::chrono::milliseconds delay) {
  uint64_t generation = ++self->state.generation;
  if (delay.count() <= 0) {
    self->send(self, step_atom::value, generation);
  } else {
    self->delayed_send(self, delay, step_atom::value, generation);
  }
}

// A wake-up of a caught-up actor steps it, at once or min_step_interval after its last step
// began, so that under load one step takes the events of many appends.
template <class State>
void wake(caf::stateful_actor<State>* self) {
  auto& state = self->state;
  if (!state.waiting) return;  // stepping already, or a step is due anyway
  state.waiting = false;       // later wake-ups until that step are covered by it
  auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - state.last_step);
  schedule(self, std::max(std::chrono::milliseconds(0), state.config.min_step_interval - since));
}

void report_progress(HandlerActor* self, const std::optional<Position>& position) {
  auto& st = self->state;
  if (!position || position == st.reported) return;
  st.reported = position;
  self->send(st.gateway, progress_atom::value, st.runner->status().name, position->commit_id,
             position->global_position);
}

// One log line per change of state (not per retry): retrying and stopped at warn/error with
// the failing event and error, the way back to running at info.
void log_state_change(HandlerActorState& st) {
  const HandlerStatus& status = st.runner->status();
  if (status.state == st.logged_state) return;
  st.logged_state = status.state;
  log::Level level = status.state == HandlerState::kStopped    ? log::Level::kError
                     : status.state == HandlerState::kRetrying ? log::Level::kWarn
                                                               : log::Level::kInfo;
  log::write(level, "handler state changed",
             {{"handler", status.name},
              {"state", std::string(to_string(status.state))},
              {"attempts", std::to_string(status.attempts)},
              {"error", status.state == HandlerState::kRunning ? "" : status.last_error}});
}

void run_step(HandlerActor* self) {
  auto& st = self->state;
  st.waiting = false;
  st.last_step = std::chrono::steady_clock::now();
  HandlerRunner::Step step = st.runner->step();
  log_state_change(st);
  using Next = HandlerRunner::Step::Next;
  if (step.next == Next::kStandby) {
    // Another process runs it: follow its checkpoint, so strong consistency works here too.
    if (auto stored = st.runner->stored_checkpoint(); stored) report_progress(self, *stored);
  } else {
    report_progress(self, st.runner->status().position);
  }
  switch (step.next) {
    case Next::kContinue:
      schedule(self, {});
      break;
    case Next::kWait:
      st.waiting = true;
      schedule(self, step.delay.count() > 0 ? step.delay : st.config.poll_interval);
      break;
    case Next::kRetryAfter:
    case Next::kStandby:
      schedule(self, step.delay);
      break;
    case Next::kStopped:
      ++st.generation;  // nothing runs until a restart
      break;
  }
}

nlohmann::json status_json(HandlerActor* self) {
  auto& runner = *self->state.runner;
  const HandlerStatus& status = runner.status();
  nlohmann::json out = {
      {"name", status.name},
      {"kind", to_string(status.kind)},
      {"state", to_string(status.state)},
      {"strong", status.strong},
      {"position", nullptr},
      {"lag", nullptr},
      {"last_error",
       status.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(status.last_error)},
      {"attempts", status.attempts}};
  if (status.position) out["position"] = status.position->to_string();
  if (status.state != HandlerState::kStandby) {
    if (auto lag = runner.lag(); lag) out["lag"] = *lag;
  } else if (auto stored = runner.stored_checkpoint(); stored && *stored) {
    out["position"] = (*stored)->to_string();
  }
  if (auto head = runner.head(); head) out["head"] = head->to_string();
  if (auto dead = runner.dead_letter_count(); dead) out["dead_letters"] = *dead;
  return out;
}

std::string admin(HandlerActor* self, const nlohmann::json& request) {
  auto& st = self->state;
  std::string op = request.value("op", "");
  if (op == "status") return status_json(self).dump();
  if (op == "reset") {
    if (auto done = st.runner->reset(); !done) return error_reply(done.error());
    int64_t total = 0;
    if (auto lag = st.runner->lag(); lag) total = *lag;
    auto head = st.runner->head();
    schedule(self, {});
    return nlohmann::json{{"status", "ok"},
                          {"handler", st.runner->status().name},
                          {"total", total},
                          {"target", head ? nlohmann::json(head->to_string()) : nullptr}}
        .dump();
  }
  if (op == "restart") {
    if (auto done = st.runner->restart(); !done) return error_reply(done.error());
    schedule(self, {});
    return nlohmann::json{{"status", "ok"}, {"handler", st.runner->status().name}}.dump();
  }
  if (op == "dead_letters") {
    int64_t limit = request.value("limit", kDefaultDeadLetterLimit);
    auto list = st.runner->dead_letters(limit);
    if (!list) return error_reply(list.error());
    return nlohmann::json{{"status", "ok"}, {"dead_letters", std::move(*list)}}.dump();
  }
  return error_reply(errc::kInvalidArgument, "unknown handler operation '" + op + "'");
}

// Process managers dispatch through the gateway like any client, from this actor's own thread.
Dispatcher make_dispatcher(HandlerActor* self) {
  return [self](const DispatchRequest& request) -> Result<std::string> {
    auto& st = self->state;
    if (!st.requester) st.requester = std::make_unique<caf::scoped_actor>(self->system());
    auto timeout = st.config.dispatch_timeout;
    nlohmann::json envelope = {{"type", request.type},
                               {"data", request.data},
                               {"command_id", request.command_id.to_string()},
                               {"correlation_id", request.correlation_id},
                               {"causation_id", request.causation_id},
                               {"timeout_ms", timeout.count()}};
    std::optional<Result<std::string>> out;
    (*st.requester)
        ->request(st.gateway, timeout + std::chrono::seconds(1), dispatch_atom::value,
                  envelope.dump(), st.config.dispatch_token)
        .receive([&](std::string& reply) { out = std::move(reply); },
                 [&](caf::error& err) {
                   out = Error::unavailable("dispatch failed: " + self->system().render(err));
                 });
    return std::move(*out);
  };
}

caf::behavior handler_actor(HandlerActor* self, std::shared_ptr<Handler> handler,
                            std::string conninfo, const Upcasters* upcasters, caf::actor gateway,
                            HandlerActorConfig config) {
  auto& st = self->state;
  st.gateway = std::move(gateway);
  st.config = config;
  Dispatcher dispatcher;
  if (handler->kind() == HandlerKind::kProcessManager) dispatcher = make_dispatcher(self);
  st.runner = std::make_unique<HandlerRunner>(std::move(handler), std::move(conninfo), upcasters,
                                              std::move(dispatcher));
  schedule(self, {});
  return {
      [self](step_atom, uint64_t generation) {
        if (generation == self->state.generation) run_step(self);
      },
      [self](wake_atom) { wake(self); },
      [self](admin_atom, const std::string& text) -> std::string {
        nlohmann::json request = nlohmann::json::parse(text, nullptr, false);
        if (!request.is_object()) {
          return error_reply(errc::kInvalidArgument, "admin request is not a JSON object");
        }
        // A field of an unexpected type must fail the request, not the handler.
        try {
          return admin(self, request);
        } catch (const nlohmann::json::exception& ex) {
          return wrong_field_type_reply(ex.what());
        }
      },
  };
}

struct CorrelationIndexerState {
  std::unique_ptr<pg::PostgresEventStore> store;
  std::string conninfo;
  CorrelationIndexerConfig config;
  uint64_t generation = 0;
  bool waiting = false;
  std::chrono::steady_clock::time_point last_step{};
  std::string failing;  // the error the last log line named; empty while indexing works
  static inline const char* name = "cqrs.correlation_indexer";
};

using CorrelationIndexer = caf::stateful_actor<CorrelationIndexerState>;

// One log line when indexing starts failing (and when the error changes), one when it works again.
void note_indexing(CorrelationIndexerState& st, const std::string& error) {
  if (error == st.failing) return;
  if (error.empty()) {
    log::write(log::Level::kInfo, "correlation index running again");
  } else {
    log::write(log::Level::kWarn, "correlation index cannot index", {{"error", error}});
  }
  st.failing = error;
}

void index_step(CorrelationIndexer* self) {
  auto& st = self->state;
  st.waiting = false;
  st.last_step = std::chrono::steady_clock::now();
  if (!st.store) {
    pg::PostgresStoreOptions options;  // it appends nothing: no notifications, no groups
    options.notify = false;
    options.group_appends = false;
    auto opened = pg::PostgresEventStore::open(st.conninfo, options);
    if (!opened) {
      note_indexing(st, opened.error().to_string());
      return schedule(self, st.config.retry_interval);
    }
    st.store = std::move(opened).value();
  }
  auto done = st.store->index_correlations(st.config.batch_runs);
  if (!done) {
    note_indexing(st, done.error().to_string());
    return schedule(self, st.config.retry_interval);
  }
  note_indexing(st, "");
  if (!done->busy && done->indexed >= st.config.batch_runs) return schedule(self, {});
  // Caught up (or another process indexes): the next appends' wake-up, or the poll.
  st.waiting = true;
  schedule(self, st.config.poll_interval);
}

caf::behavior correlation_indexer(CorrelationIndexer* self, std::string conninfo,
                                  CorrelationIndexerConfig config) {
  self->state.conninfo = std::move(conninfo);
  self->state.config = config;
  schedule(self, {});
  return {
      [self](step_atom, uint64_t generation) {
        if (generation == self->state.generation) index_step(self);
      },
      [self](wake_atom) { wake(self); },
  };
}

}  // namespace

caf::actor spawn_correlation_indexer(caf::actor_system& system, std::string conninfo,
                                     CorrelationIndexerConfig config) {
  return system.spawn<caf::detached>(correlation_indexer, std::move(conninfo), config);
}

caf::actor spawn_handler_actor(caf::actor_system& system, std::shared_ptr<Handler> handler,
                               std::string conninfo, const Upcasters* upcasters, caf::actor gateway,
                               HandlerActorConfig config) {
  return system.spawn<caf::detached>(handler_actor, std::move(handler), std::move(conninfo),
                                     upcasters, std::move(gateway), config);
}

Notifier::Notifier(std::string conninfo, std::vector<WakeTarget> targets)
    : conninfo_(std::move(conninfo)), targets_(std::move(targets)) {
  if (!targets_.empty()) thread_ = std::thread([this] { run(); });
}

Notifier::~Notifier() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void Notifier::run() {
  constexpr int kWaitMs = 200;  // how soon a stop is noticed
  std::unique_ptr<pg::Connection> conn;
  while (!stopping_) {
    if (!conn || !conn->is_ok()) {
      conn.reset();
      auto opened = pg::Connection::open(conninfo_);
      if (!opened || !(*opened)->listen(pg::kEventsChannel)) {
        std::this_thread::sleep_for(std::chrono::seconds(1));  // handlers poll meanwhile
        continue;
      }
      conn = std::move(opened).value();
    }
    auto payloads = conn->wait_notifications(kWaitMs);
    if (!payloads || payloads->empty()) continue;
    // The union of the announced types; nullopt once a notification stands for any type.
    std::optional<std::vector<std::string>> announced = std::vector<std::string>();
    for (const std::string& payload : *payloads) {
      auto types = pg::notice_types(payload);
      if (!types) {
        announced.reset();
        break;
      }
      announced->insert(announced->end(), types->begin(), types->end());
    }
    if (announced) std::sort(announced->begin(), announced->end());
    for (const WakeTarget& target : targets_) {
      if (!announced || handles_any(target.types, *announced)) {
        caf::anon_send(target.actor, wake_atom::value);
      }
    }
  }
}

}  // namespace cqrs::actors
