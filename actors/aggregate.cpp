// Aggregate actor: load, decide, append, answer — one command at a time.
#include "actors/aggregate.hpp"

#include <caf/all.hpp>
#include <list>
#include <utility>
#include <variant>

#include "actors/replies.hpp"

namespace cqrs::actors {
namespace {

struct PendingCommand {
  CommandEnvelope envelope;
  caf::typed_response_promise<std::string> promise;
};

struct PendingQuery {
  caf::typed_response_promise<std::string> promise;
};

struct AggregateState {
  AggregateConfig config;
  caf::actor pool;
  caf::actor router;
  const AggregateType* type = nullptr;
  std::string stream_id;
  std::unique_ptr<AggregateInstance> instance;
  int64_t version = 0;
  int64_t snapshot_version = 0;
  bool loaded = false;
  // Decided without loading (a creating command, see AggregateBuilder::creates): the stream is
  // taken to be new until the append says so.
  bool assumed_empty = false;
  bool busy = false;
  int attempts = 0;
  uint64_t received = 0;
  // A list, not a deque: an empty one allocates nothing (a deque allocates ~560 bytes up front,
  // and most of the many live aggregates have nothing queued).
  std::list<std::variant<PendingCommand, PendingQuery>> queue;
  static inline const char* name = "cqrs.aggregate";
};

using AggregateActor = caf::stateful_actor<AggregateState>;

void next(AggregateActor* self);
void decide(AggregateActor* self);

void finish_front(AggregateActor* self, const std::string& reply) {
  auto& st = self->state;
  std::visit([&](auto& pending) { pending.promise.deliver(reply); }, st.queue.front());
  st.queue.pop_front();
  st.attempts = 0;
  st.busy = false;
  next(self);
}

// Discards the in-memory state; the next message reloads it from the store.
void forget_state(AggregateActor* self) {
  auto& st = self->state;
  st.instance = st.type->create();
  st.version = 0;
  st.snapshot_version = 0;
  st.loaded = false;
  st.assumed_empty = false;
}

Result<void> apply_recorded(AggregateState& st, const std::vector<RecordedEvent>& events) {
  for (const RecordedEvent& event : events) {
    nlohmann::json data = nlohmann::json::parse(event.data, nullptr, false);
    if (data.is_discarded()) {
      return Error::internal(errc::kInvalidEvent,
                             "stored event " + event.event_id.to_string() + " has unreadable data");
    }
    if (st.config.upcasters != nullptr) {
      try {
        st.config.upcasters->upcast(event.type, event.type_version, data);
      } catch (const std::exception& e) {
        return Error::internal(
            errc::kInvalidEvent,
            "upcasting stored event " + event.event_id.to_string() + " failed: " + e.what());
      }
    }
    if (auto applied = st.instance->apply(event.type, data); !applied) return applied;
    st.version = event.stream_version;
  }
  return {};
}

// Loads what the store has after the current version, then continues with `then`.
template <class Continue>
void load(AggregateActor* self, Continue then) {
  auto& st = self->state;
  LoadJob job{st.stream_id, st.version, /*with_snapshot=*/!st.loaded};
  self->request(st.pool, caf::infinite, load_atom::value, std::move(job))
      .then(
          [self, then](LoadOutcome& outcome) mutable {
            auto& state = self->state;
            if (outcome.error) {
              forget_state(self);
              finish_front(self, error_reply(*outcome.error));
              return;
            }
            if (outcome.snapshot) {
              nlohmann::json snapshot =
                  nlohmann::json::parse(outcome.snapshot->data, nullptr, false);
              auto restored = state.instance->restore(snapshot);
              if (!restored) {
                // An unreadable snapshot is not fatal: rebuild from the first event instead.
                forget_state(self);
                state.loaded = true;  // skip the snapshot on the next load
                load(self, then);
                return;
              }
              state.version = outcome.snapshot->stream_version;
              state.snapshot_version = state.version;
            }
            if (auto applied = apply_recorded(state, outcome.events); !applied) {
              forget_state(self);
              finish_front(self, error_reply(applied.error()));
              return;
            }
            state.loaded = true;
            then();
          },
          [self](caf::error& err) {
            forget_state(self);
            finish_front(self, error_reply(errc::kStoreUnavailable,
                                           "loading failed: " + self->system().render(err)));
          });
}

// Drops a state that was only assumed, loads the stream and decides the front command again.
void load_and_decide_again(AggregateActor* self) {
  forget_state(self);
  load(self, [self] { decide(self); });
}

void maybe_snapshot(AggregateActor* self) {
  auto& st = self->state;
  int every = st.config.snapshot_every > 0 ? st.config.snapshot_every : st.type->snapshot_every();
  if (every <= 0 || st.version - st.snapshot_version < every) return;
  Snapshot snapshot{st.stream_id, st.version, st.type->name(), 1, st.instance->state().dump()};
  st.snapshot_version = st.version;
  self->send(st.pool, snapshot_atom::value, std::move(snapshot));
}

nlohmann::json event_metadata(const CommandEnvelope& envelope) {
  nlohmann::json metadata =
      envelope.metadata.is_object() ? envelope.metadata : nlohmann::json::object();
  metadata["command_id"] = envelope.command_id.to_string();
  metadata["command_type"] = envelope.command.type->name;
  metadata["correlation_id"] = envelope.correlation_id;
  metadata["causation_id"] = envelope.causation_id;
  return metadata;
}

void record_outcome(AggregateActor* self, WriteRequest request, std::string reply,
                    std::vector<NewEvent> events);

// The domain's declaration of a unique scope, or nullptr.
const UniqueScope* find_scope(const AggregateState& st, std::string_view name) {
  return st.config.unique_scopes == nullptr ? nullptr : st.config.unique_scopes->find(name);
}

// Another aggregate owns a value the command claimed: the command is rejected with the scope's
// conflict code, and that rejection is recorded like any other (a retry of the command id gets
// it again).
void reject_taken_claim(AggregateActor* self, const UniqueClaim& taken) {
  auto& st = self->state;
  auto& pending = std::get<PendingCommand>(st.queue.front());
  const UniqueScope* scope = find_scope(st, taken.scope);
  std::string code = scope == nullptr ? std::string(kDefaultConflictCode) : scope->conflict_code;
  std::string reply =
      rejection_reply(code, "'" + taken.value + "' is already taken (" + taken.scope + ")",
                      pending.envelope.command_id.to_string());
  WriteRequest request;
  request.stream_id = st.stream_id;
  request.expected = ExpectedVersion::exact(st.version);
  request.command = CommandRecord{pending.envelope.command_id, st.stream_id, reply};
  record_outcome(self, std::move(request), std::move(reply), {});
}

// The outcome's claims, normalized by their scopes; an error names an unregistered scope.
Result<std::vector<UniqueClaim>> normalized_claims(const AggregateState& st,
                                                   const Outcome& outcome) {
  std::vector<UniqueClaim> claims;
  for (const UniqueClaim& claim : outcome.claims()) {
    const UniqueScope* scope = find_scope(st, claim.scope);
    if (scope == nullptr) {
      return Error::internal(errc::kExecutionFailed,
                             "unique scope '" + claim.scope +
                                 "' is not registered (declare it with domain.unique_scope)");
    }
    claims.push_back(UniqueClaim{claim.scope,
                                 scope->normalize ? scope->normalize(claim.value) : claim.value,
                                 claim.release});
  }
  return claims;
}

// store_unavailable for a write whose outcome is unknown: it may have committed before the
// connection (or the store worker) was lost.
std::string unknown_outcome_reply(const std::string& detail, std::string_view command_id) {
  return error_reply(errc::kStoreUnavailable,
                     detail +
                         "; the command may or may not have been stored: send it again "
                         "with the same command_id, which applies it at most once",
                     command_id);
}

void record_outcome(AggregateActor* self, WriteRequest request, std::string reply,
                    std::vector<NewEvent> events) {
  self->request(self->state.pool, caf::infinite, write_atom::value, std::move(request))
      .then(
          [self, reply, events](WriteResult& result) {
            auto& state = self->state;
            bool assumed = std::exchange(state.assumed_empty, false);
            if (assumed && !result.ok()) {
              const Error& error = *result.error;
              if (error.is(errc::kDuplicateCommand) && result.existing_result) {
                forget_state(self);  // the recorded answer stands; the state is unknown
                finish_front(self, *result.existing_result);
                return;
              }
              if (error.is(errc::kWrongExpectedVersion) || error.is(errc::kAlreadyTaken)) {
                load_and_decide_again(self);  // the stream exists: decide against it
                return;
              }
              forget_state(self);  // other errors answer as usual, and the next command loads
            }
            if (result.ok()) {
              for (const NewEvent& event : events) {
                if (auto applied = state.instance->apply(event.type, event.data); !applied) {
                  // The events are stored; the state must come from the store next time.
                  forget_state(self);
                  break;
                }
              }
              if (state.loaded) {
                state.version = result.appended->stream_version;
                maybe_snapshot(self);
              }
              finish_front(self, events.empty()
                                     ? reply
                                     : with_position(reply, result.appended->last_position()));
              return;
            }
            const Error& error = *result.error;
            if (error.is(errc::kAlreadyTaken) && result.taken) {
              reject_taken_claim(self, *result.taken);
              return;
            }
            if (error.is(errc::kDuplicateCommand) && result.existing_result) {
              finish_front(self, *result.existing_result);
              return;
            }
            // Another writer appended since this state was loaded: the events, or the rejection
            // or no-change outcome (which the store checks against the version too), were
            // decided against an old state. Decide again against the stream as it is.
            if (error.is(errc::kWrongExpectedVersion)) {
              if (++state.attempts > state.config.retry_attempts) {
                forget_state(self);
                auto& pending = std::get<PendingCommand>(state.queue.front());
                finish_front(
                    self,
                    error_reply("too_many_attempts",
                                "stream " + state.stream_id + " kept changing: gave up after " +
                                    std::to_string(state.config.retry_attempts) + " attempts",
                                pending.envelope.command_id.to_string()));
                return;
              }
              load(self, [self] { decide(self); });
              return;
            }
            if (events.empty()) {
              // The rejection stands even when recording it failed.
              finish_front(self, reply);
              return;
            }
            // The events may be stored all the same (a connection lost after the commit leaves the
            // outcome unknown): the next command loads the stream instead of trusting this state.
            forget_state(self);
            auto& pending = std::get<PendingCommand>(state.queue.front());
            std::string command_id = pending.envelope.command_id.to_string();
            finish_front(self, error.kind() == ErrorKind::kUnavailable
                                   ? unknown_outcome_reply(error.message(), command_id)
                                   : error_reply(error, command_id));
          },
          [self](caf::error& err) {
            // Whether the append happened is unknown: the next command loads the stream.
            forget_state(self);
            auto& pending = std::get<PendingCommand>(self->state.queue.front());
            finish_front(self, unknown_outcome_reply(self->system().render(err),
                                                     pending.envelope.command_id.to_string()));
          });
}

// Decides the command at the front of the queue against the loaded state.
void decide(AggregateActor* self) {
  auto& st = self->state;
  auto& pending = std::get<PendingCommand>(st.queue.front());
  const CommandEnvelope& envelope = pending.envelope;
  std::string command_id = envelope.command_id.to_string();

  Outcome outcome;
  try {
    outcome = st.instance->execute(envelope.command);
  } catch (const std::exception& ex) {
    if (st.assumed_empty) {
      load_and_decide_again(self);  // the failure against the stream itself is the answer
      return;
    }
    forget_state(self);
    finish_front(self,
                 error_reply(errc::kExecutionFailed,
                             envelope.command.type->name + " failed: " + ex.what(), command_id));
    return;
  } catch (...) {
    if (st.assumed_empty) {
      load_and_decide_again(self);
      return;
    }
    forget_state(self);
    finish_front(
        self, error_reply(errc::kExecutionFailed,
                          envelope.command.type->name + " failed with an exception", command_id));
    return;
  }

  if (st.assumed_empty && (outcome.rejected() || outcome.events().empty())) {
    // Only an append can confirm that the stream is new; an outcome without events is decided
    // again against the loaded stream before it is recorded.
    load_and_decide_again(self);
    return;
  }

  WriteRequest request;
  request.stream_id = st.stream_id;
  request.expected = ExpectedVersion::exact(st.version);
  if (outcome.rejected()) {
    std::string reply =
        rejection_reply(outcome.rejection().code, outcome.rejection().message, command_id);
    request.command = CommandRecord{envelope.command_id, st.stream_id, reply};
    record_outcome(self, std::move(request), std::move(reply), {});
    return;
  }

  auto claims = normalized_claims(st, outcome);
  if (!claims) {
    if (st.assumed_empty) {
      load_and_decide_again(self);
      return;
    }
    finish_front(self, error_reply(claims.error(), command_id));
    return;
  }
  request.claims = std::move(claims).value();
  std::string metadata = event_metadata(envelope).dump();
  nlohmann::json reply_events = nlohmann::json::array();
  for (const NewEvent& event : outcome.events()) {
    EventData data;
    data.type = event.type;
    data.data = event.data.dump();
    data.metadata = metadata;
    request.events.push_back(std::move(data));
    reply_events.push_back({{"type", event.type}, {"data", event.data}});
  }
  nlohmann::json reply = {{"status", "ok"},
                          {"aggregate_id", envelope.command.aggregate_id},
                          {"stream_id", st.stream_id},
                          {"version", st.version + std::ssize(outcome.events())},
                          {"command_id", command_id},
                          {"events", std::move(reply_events)}};
  std::string reply_text = reply.dump();
  request.command = CommandRecord{envelope.command_id, st.stream_id, reply_text};
  record_outcome(self, std::move(request), std::move(reply_text), std::move(outcome.events()));
}

// Whether `pending` is a command declared as creating its aggregate.
bool creates(const std::variant<PendingCommand, PendingQuery>& pending) {
  const auto* command = std::get_if<PendingCommand>(&pending);
  return command != nullptr && command->envelope.command.type->creates;
}

void next(AggregateActor* self) {
  auto& st = self->state;
  if (st.busy || st.queue.empty()) return;
  st.busy = true;
  if (!st.loaded && creates(st.queue.front())) {
    st.loaded = true;
    st.assumed_empty = true;
    decide(self);
    return;
  }
  if (!st.loaded) {
    load(self, [self] {
      self->state.busy = false;
      next(self);
    });
    return;
  }
  if (auto* query = std::get_if<PendingQuery>(&st.queue.front())) {
    (void)query;
    finish_front(self,
                 nlohmann::json{{"version", st.version}, {"state", st.instance->state()}}.dump());
    return;
  }
  decide(self);
}

}  // namespace

static caf::behavior aggregate_behavior(AggregateActor* self, AggregateConfig config,
                                        caf::actor store_pool, caf::actor router,
                                        const AggregateType* type, std::string stream_id) {
  self->state.config = config;
  self->state.pool = std::move(store_pool);
  self->state.router = std::move(router);
  self->state.type = type;
  self->state.stream_id = std::move(stream_id);
  self->state.instance = type->create();

  auto on_execute = [self](execute_atom, CommandEnvelope& envelope) -> caf::result<std::string> {
    auto promise = self->make_response_promise<std::string>();
    ++self->state.received;
    self->state.queue.emplace_back(PendingCommand{std::move(envelope), promise});
    next(self);
    return promise;
  };
  auto on_state = [self](state_atom, StateQuery&) -> caf::result<std::string> {
    auto promise = self->make_response_promise<std::string>();
    ++self->state.received;
    self->state.queue.emplace_back(PendingQuery{promise});
    next(self);
    return promise;
  };
  auto on_stop = [self](stop_atom) { self->quit(); };
  // The router's sweep asks; the answer carries how many messages this actor has received, so
  // the router can tell whether another is already on its way.
  auto on_idle_check = [self](idle_atom) {
    auto& st = self->state;
    if (!st.busy && st.queue.empty()) {
      self->send(st.router, idle_atom::value, st.stream_id, st.received);
    }
  };
  return {on_execute, on_state, on_stop, on_idle_check};
}

caf::actor spawn_aggregate(caf::local_actor* parent, AggregateConfig config, caf::actor store_pool,
                           caf::actor router, const AggregateType* type, std::string stream_id) {
  return parent->spawn(aggregate_behavior, config, std::move(store_pool), std::move(router), type,
                       std::move(stream_id));
}

}  // namespace cqrs::actors
