// Gateway: envelope decoding (cqrs/envelope.hpp), middleware, and the hand-off to the router.
#include "actors/gateway.hpp"

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <map>
#include <thread>
#include <unordered_map>

#include "actors/messages.hpp"
#include "actors/replies.hpp"
#include "actors/router.hpp"
#include "cqrs/envelope.hpp"
#include "cqrs/handlers/handler.hpp"

namespace cqrs::actors {
namespace {

using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using Clock = caf::actor_clock::clock_type;

// How often the deadlines of commands in flight are checked: the resolution of timeouts.
constexpr auto kSweepInterval = std::chrono::milliseconds(10);
// How long a command answered `timeout` may hold its in-flight slot waiting for its aggregate.
constexpr auto kAbandonedGrace = std::chrono::seconds(60);

struct InFlight {
  caf::typed_response_promise<std::string> promise;
  std::shared_ptr<DispatchContext> context;
  std::chrono::milliseconds timeout;
  std::multimap<Clock::time_point, uint64_t>::iterator deadline;
  bool strong = false;
  std::optional<std::string> reply;  // held while strong consistency waits for the handlers
  Position wait_for;
  std::vector<std::string> event_types;  // of the held reply's events, sorted
};

// Commands in flight wait for the router's answer without a CAF request timeout (one timer per
// request costs a clock entry and a clock-thread wake-up); a periodic sweep answers the ones past
// their deadline instead, and a late answer is dropped.
struct GatewayState {
  const Domain* domain = nullptr;
  caf::actor router;
  GatewayConfig config;
  std::vector<std::shared_ptr<Middleware>> middlewares;
  std::unordered_map<uint64_t, InFlight> waiting;
  std::multimap<Clock::time_point, uint64_t> deadlines;
  uint64_t next_id = 0;
  bool sweep_armed = false;
  std::vector<HandlerRef> handlers;
  std::map<std::string, Position, std::less<>> handler_positions;  // strong handlers' checkpoints
  std::vector<uint64_t> strong_waiting;  // ids whose ok reply waits for the handlers
  // Commands answered `timeout` that their aggregate has not finished: each still counts in
  // in_flight until it has, so that limits.max_in_flight bounds the work queued at the
  // aggregates (and a drain waits for it), not only the commands whose clients still wait. An
  // answer that never comes (an aggregate that died) frees the slot after kAbandonedGrace: the
  // entry in `deadlines` it keeps.
  std::unordered_map<uint64_t, std::multimap<Clock::time_point, uint64_t>::iterator> abandoned;
  uint64_t in_flight = 0;
  bool draining = false;
  std::vector<caf::typed_response_promise<bool>> drain_waiters;
  static inline const char* name = "cqrs.gateway";
};

using GatewayActor = caf::stateful_actor<GatewayState>;

// Reads the top-level "status" and "error" strings of a reply without building a document.
class SummaryReader : public nlohmann::json::json_sax_t {
 public:
  explicit SummaryReader(DispatchSummary& summary) : summary_(summary) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& value) override {
    if (depth_ == 1 && key_ == "status") summary_.status = value;
    if (depth_ == 1 && key_ == "error") summary_.error = value;
    return true;
  }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return ++depth_, true; }
  bool end_object() override { return --depth_, true; }
  bool start_array(std::size_t) override { return ++depth_, true; }
  bool end_array() override { return --depth_, true; }
  bool key(string_t& value) override {
    if (depth_ == 1) key_ = value;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override {
    return false;
  }

 private:
  DispatchSummary& summary_;
  int depth_ = 0;
  std::string key_;
};

DispatchSummary summarize(const std::string& reply, std::chrono::steady_clock::time_point started) {
  DispatchSummary summary;
  summary.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  summary.status = "error";
  SummaryReader reader(summary);
  nlohmann::json::sax_parse(reply, &reader);
  return summary;
}

void arm_sweep(GatewayActor* self) {
  auto& st = self->state;
  if (st.sweep_armed || st.deadlines.empty()) return;
  st.sweep_armed = true;
  self->delayed_send(self, kSweepInterval, sweep_atom::value);
}

void finish_one(GatewayActor* self);

// The types of an ok reply's events, sorted and unique.
std::vector<std::string> event_types_of(const nlohmann::json& reply) {
  std::vector<std::string> types;
  auto events = reply.find("events");
  if (events == reply.end() || !events->is_array()) return types;
  for (const nlohmann::json& event : *events) {
    auto type = event.is_object() ? event.find("type") : event.end();
    if (type != event.end() && type->is_string()) types.push_back(type->get<std::string>());
  }
  return sorted_types(std::move(types));
}

// The strong handlers of one of `types` (sorted) that have not yet processed `position`. A
// handler of other types has nothing to do for the events, and is not woken for them either.
std::vector<std::string> behind(const GatewayState& st, const Position& position,
                                const std::vector<std::string>& types) {
  std::vector<std::string> names;
  for (const HandlerRef& handler : st.handlers) {
    // No types known (a reply without its events): every strong handler counts.
    if (!handler.strong || (!types.empty() && !handles_any(handler.event_types, types))) continue;
    auto it = st.handler_positions.find(handler.name);
    if (it == st.handler_positions.end() || it->second < position) names.push_back(handler.name);
  }
  return names;
}

// Answers the command `id` with `reply` (or, without one, a timeout) unless it was answered.
void complete(GatewayActor* self, uint64_t id, std::string* reply) {
  auto& st = self->state;
  auto it = st.waiting.find(id);
  if (it == st.waiting.end()) {
    // Timed out before: this is the late answer (dropped), or the end of its grace. Either way
    // its slot is free now.
    if (auto gone = st.abandoned.find(id); gone != st.abandoned.end()) {
      st.deadlines.erase(gone->second);
      st.abandoned.erase(gone);
      finish_one(self);
    }
    return;
  }
  if (reply != nullptr && it->second.strong && !st.handlers.empty()) {
    // Strong consistency: hold an ok reply until every strong handler has processed its events.
    nlohmann::json parsed = nlohmann::json::parse(*reply, nullptr, false);
    auto position = parsed.is_object() ? position_of(parsed) : std::nullopt;
    std::vector<std::string> types = position ? event_types_of(parsed) : std::vector<std::string>();
    it->second.strong = false;
    if (position && !behind(st, *position, types).empty()) {
      it->second.reply = std::move(*reply);
      it->second.wait_for = *position;
      it->second.event_types = std::move(types);
      st.strong_waiting.push_back(id);
      return;
    }
  }
  InFlight done = std::move(it->second);
  st.waiting.erase(it);
  st.deadlines.erase(done.deadline);
  auto& mws = st.middlewares;
  if (reply == nullptr && done.reply) {
    std::vector<std::string> late = behind(st, done.wait_for, done.event_types);
    std::string names;
    for (const auto& name : late) names += (names.empty() ? "" : ", ") + name;
    std::string held = error_reply("consistency_timeout",
                                   "the command succeeded and its events are stored, but " + names +
                                       " had not processed them within " +
                                       std::to_string(done.timeout.count()) + " ms",
                                   done.context->command_id);
    DispatchSummary summary = summarize(held, done.context->started);
    for (auto mw = mws.rbegin(); mw != mws.rend(); ++mw) (*mw)->after(*done.context, summary);
    done.promise.deliver(std::move(held));
  } else if (reply != nullptr) {
    DispatchSummary summary = summarize(*reply, done.context->started);
    for (auto mw = mws.rbegin(); mw != mws.rend(); ++mw) (*mw)->after(*done.context, summary);
    done.promise.deliver(std::move(*reply));
  } else {
    Error error(ErrorKind::kUnavailable, "timeout",
                "no answer within " + std::to_string(done.timeout.count()) +
                    " ms; the command may still complete");
    for (auto mw = mws.rbegin(); mw != mws.rend(); ++mw) (*mw)->on_failure(*done.context, error);
    done.promise.deliver(error_reply(error, done.context->command_id));
    // Finished when its aggregate answers, or at the end of the grace.
    st.abandoned.emplace(id, st.deadlines.emplace(self->clock().now() + kAbandonedGrace, id));
    arm_sweep(self);
    return;
  }
  finish_one(self);
}

// Delivers held strong replies whose events every strong handler has processed.
void release_strong(GatewayActor* self) {
  auto& st = self->state;
  std::vector<uint64_t> still;
  for (uint64_t id : st.strong_waiting) {
    auto it = st.waiting.find(id);
    if (it == st.waiting.end()) continue;
    if (!behind(st, it->second.wait_for, it->second.event_types).empty()) {
      still.push_back(id);
      continue;
    }
    std::string reply = std::move(*it->second.reply);
    it->second.strong = false;
    complete(self, id, &reply);
  }
  st.strong_waiting = std::move(still);
}

void sweep(GatewayActor* self) {
  auto& st = self->state;
  st.sweep_armed = false;
  auto now = self->clock().now();
  while (!st.deadlines.empty() && st.deadlines.begin()->first <= now) {
    complete(self, st.deadlines.begin()->second, nullptr);
  }
  arm_sweep(self);
}

void finish_one(GatewayActor* self) {
  auto& st = self->state;
  --st.in_flight;
  if (st.draining && st.in_flight == 0) {
    for (auto& waiter : st.drain_waiters) waiter.deliver(true);
    st.drain_waiters.clear();
  }
}

constexpr auto kAdminTimeout = std::chrono::seconds(10);
constexpr int64_t kMaxDeadLetters = 10000;  // per handler, in one dead_letters request

// Asks `target` and answers with its reply text, or with dispatch_failed when none comes.
template <class... Ts>
caf::result<std::string> relay(GatewayActor* self, const caf::actor& target, caf::timespan timeout,
                               Ts&&... xs) {
  auto promise = self->make_response_promise<std::string>();
  self->request(target, timeout, std::forward<Ts>(xs)...)
      .then([promise](std::string& reply) mutable { promise.deliver(std::move(reply)); },
            [self, promise](caf::error& err) mutable {
              promise.deliver(error_reply("dispatch_failed", self->system().render(err)));
            });
  return promise;
}

// Completes a status reply with what the store says: the head, when `for_head` (no handler here
// said it), then how far the index of correlations is behind. A query that fails leaves its
// field as it was (null).
void ask_store(GatewayActor* self, nlohmann::json reply, bool for_head,
               caf::typed_response_promise<std::string> promise) {
  std::string query = for_head ? R"({"op":"head"})" : R"({"op":"correlation_index"})";
  auto next = [self, for_head](nlohmann::json& so_far, const nlohmann::json& answer,
                               caf::typed_response_promise<std::string>& to) {
    bool ok = answer.is_object() && answer.value("status", "") == "ok";
    if (for_head) {
      if (ok && answer.contains("head")) so_far["head"] = answer["head"];
      return ask_store(self, std::move(so_far), false, to);
    }
    if (ok && answer.contains("lag")) so_far["correlation_index_lag"] = answer["lag"];
    to.deliver(so_far.dump());
  };
  self->request(self->state.router, kAdminTimeout, query_atom::value, std::move(query))
      .then(
          [reply, promise, next](std::string& answer) mutable {
            next(reply, nlohmann::json::parse(answer, nullptr, false), promise);
          },
          [reply, promise, next](caf::error&) mutable {
            next(reply, nlohmann::json(nullptr), promise);
          });
}

// Asks every handler actor `request` and hands the parsed replies, in handler order, to `done`.
void ask_handlers(GatewayActor* self, const std::string& request,
                  std::function<void(std::vector<nlohmann::json>&)> done) {
  auto& handlers = self->state.handlers;
  struct Gather {
    std::vector<nlohmann::json> replies;
    size_t pending = 0;
  };
  auto gather = std::make_shared<Gather>();
  gather->replies.resize(handlers.size());
  gather->pending = handlers.size();
  if (handlers.empty()) {
    done(gather->replies);
    return;
  }
  for (size_t idx = 0; idx < handlers.size(); ++idx) {
    auto answer = [gather, idx, done](nlohmann::json reply) {
      gather->replies[idx] = std::move(reply);
      if (--gather->pending == 0) done(gather->replies);
    };
    std::string name = handlers[idx].name;
    self->request(handlers[idx].actor, kAdminTimeout, admin_atom::value, request)
        .then(
            [answer](std::string& reply) { answer(nlohmann::json::parse(reply, nullptr, false)); },
            [self, answer, name](caf::error& err) {
              answer({{"name", name},
                      {"state", "unreachable"},
                      {"last_error", self->system().render(err)}});
            });
  }
}

// Routes one command envelope to its aggregate and answers with its reply. Internal commands
// (AggregateBuilder::internal) only `from_process_manager`.
caf::result<std::string> dispatch(GatewayActor* self, const std::string& text,
                                  bool from_process_manager) {
  auto& st = self->state;
  // Refused before routing: counted and logged by the middlewares, answered at once.
  auto refuse = [&st](Error error) {
    for (auto& middleware : st.middlewares) middleware->on_refused(error);
    return error_reply(error);
  };
  if (st.draining) {
    return refuse(Error(ErrorKind::kUnavailable, "shutting_down",
                        "cqrsd is shutting down; retry on another instance"));
  }
  if (st.in_flight >= st.config.max_in_flight) {
    return refuse(Error(
        ErrorKind::kUnavailable, "overloaded",
        std::to_string(st.in_flight) + " commands in flight (limits.max_in_flight); retry later"));
  }
  auto decoded =
      decode_envelope(*st.domain, text, {st.config.max_command_bytes, st.config.default_timeout});
  if (!decoded) return refuse(decoded.error());
  if (decoded->envelope.command.type->internal && !from_process_manager) {
    return refuse(Error(ErrorKind::kInvalidInput, "internal_command",
                        decoded->envelope.command.type->name +
                            " is a step of a process: only this daemon's process managers "
                            "dispatch it"));
  }
  auto context = std::make_shared<DispatchContext>();
  context->command_type = decoded->envelope.command.type->name;
  context->command_id = decoded->envelope.command_id.to_string();
  context->correlation_id = decoded->envelope.correlation_id;
  context->stream_id = decoded->envelope.command.stream_id;
  context->started = std::chrono::steady_clock::now();
  for (auto& middleware : st.middlewares) middleware->before(*context);

  ++st.in_flight;
  auto promise = self->make_response_promise<std::string>();
  uint64_t id = ++st.next_id;
  auto deadline = st.deadlines.emplace(self->clock().now() + decoded->timeout, id);
  st.waiting.emplace(id, InFlight{promise,
                                  context,
                                  decoded->timeout,
                                  deadline,
                                  decoded->envelope.consistency == Consistency::kStrong,
                                  std::nullopt,
                                  Position{},
                                  {}});
  arm_sweep(self);
  self->request(st.router, caf::infinite, execute_atom::value, std::move(decoded->envelope))
      .then([self, id](std::string& reply) { complete(self, id, &reply); },
            [self, id](caf::error& err) {
              std::string reply = error_reply("dispatch_failed", self->system().render(err));
              complete(self, id, &reply);
            });
  return promise;
}

caf::result<std::string> admin(GatewayActor* self, const std::string& text) {
  auto& st = self->state;
  nlohmann::json request = nlohmann::json::parse(text, nullptr, false);
  if (!request.is_object() || !request.contains("op") || !request["op"].is_string()) {
    return error_reply(errc::kInvalidArgument,
                       "admin request must be a JSON object with a string field 'op'");
  }
  std::string op = request["op"];
  if (request.contains("handler") && !request["handler"].is_string()) {
    return error_reply(errc::kInvalidArgument,
                       "admin request field 'handler' must be a string: a handler's name");
  }
  std::string name = request.value("handler", "");
  if (op == "dead_letters" && request.contains("limit")) {
    const nlohmann::json& limit = request["limit"];
    if (!limit.is_number_integer() || limit.get<int64_t>() < 1 ||
        limit.get<int64_t>() > kMaxDeadLetters) {
      return error_reply(errc::kInvalidArgument, "admin request field 'limit' must be 1.." +
                                                     std::to_string(kMaxDeadLetters));
    }
  }
  if (op == "history" || op == "trace") {
    return relay(self, st.router, kAdminTimeout, query_atom::value, text);
  }
  if (op == "status") {
    auto promise = self->make_response_promise<std::string>();
    self->request(st.router, kAdminTimeout, status_atom::value)
        .then(
            [self, promise](uint64_t live) mutable {
              ask_handlers(self, R"({"op":"status"})",
                           [self, promise, live](std::vector<nlohmann::json>& handlers) mutable {
                             std::optional<Position> head;
                             for (auto& handler : handlers) {
                               if (!handler.is_object() || !handler.contains("head")) continue;
                               auto at = Position::parse(handler["head"].get<std::string>());
                               if (at && (!head || *head < *at)) head = at;
                               handler.erase("head");
                             }
                             nlohmann::json reply = {
                                 {"status", "ok"},
                                 {"head", head ? nlohmann::json(head->to_string()) : nullptr},
                                 {"aggregates_live", live},
                                 {"handlers", handlers},
                                 {"correlation_index_lag", nullptr}};
                             // No handler here said the head (none run in this process, or
                             // none could): the store does. The store also says how far the
                             // index of correlations is behind.
                             ask_store(self, std::move(reply), !head, promise);
                           });
            },
            [self, promise](caf::error& err) mutable {
              promise.deliver(error_reply("dispatch_failed", self->system().render(err)));
            });
    return promise;
  }
  if (op == "dead_letters" && name.empty()) {
    auto promise = self->make_response_promise<std::string>();
    std::vector<std::string> names;
    for (const HandlerRef& handler : st.handlers) names.push_back(handler.name);
    ask_handlers(self, text, [promise, names](std::vector<nlohmann::json>& replies) mutable {
      nlohmann::json all = nlohmann::json::array();
      // A handler that did not answer is named, so that an empty list is not taken for "none".
      nlohmann::json unanswered = nlohmann::json::array();
      for (size_t idx = 0; idx < replies.size(); ++idx) {
        nlohmann::json& reply = replies[idx];
        if (!reply.is_object() || !reply.contains("dead_letters")) {
          std::string why = "no answer";
          if (reply.is_object() && reply.contains("message")) why = reply["message"].dump();
          if (reply.is_object() && reply.contains("last_error")) why = reply["last_error"].dump();
          unanswered.push_back({{"handler", idx < names.size() ? names[idx] : ""}, {"error", why}});
          continue;
        }
        for (auto& letter : reply["dead_letters"]) all.push_back(std::move(letter));
      }
      nlohmann::json out = {{"status", "ok"}, {"dead_letters", std::move(all)}};
      if (!unanswered.empty()) out["unanswered"] = std::move(unanswered);
      promise.deliver(out.dump());
    });
    return promise;
  }
  if (op == "reset" || op == "restart" || op == "dead_letters") {
    std::string known;
    for (const HandlerRef& handler : st.handlers) {
      if (handler.name == name) {
        // A reset replays; its answer comes after the reset, not after the replay.
        return relay(self, handler.actor, kAdminTimeout, admin_atom::value, text);
      }
      known += (known.empty() ? "" : ", ") + handler.name;
    }
    return error_reply("unknown_handler", "no handler named '" + name +
                                              "'; known: " + (known.empty() ? "(none)" : known));
  }
  return error_reply(errc::kInvalidArgument, "unknown admin operation '" + op +
                                                 "'; known: status, reset, restart, dead_letters, "
                                                 "history, trace");
}

caf::behavior gateway(GatewayActor* self, const Domain* domain, caf::actor router,
                      GatewayConfig config, std::vector<std::shared_ptr<Middleware>> middlewares) {
  self->state.domain = domain;
  self->state.router = std::move(router);
  self->state.config = config;
  self->state.middlewares = std::move(middlewares);
  return {
      [self](dispatch_atom, const std::string& text) -> caf::result<std::string> {
        return dispatch(self, text, false);
      },
      // A process manager's command: the token shows it comes from this process.
      [self](dispatch_atom, const std::string& text,
             const std::string& token) -> caf::result<std::string> {
        const std::string& expected = self->state.config.internal_token;
        return dispatch(self, text, !expected.empty() && token == expected);
      },
      [self](state_atom, const std::string& aggregate,
             const std::string& id) -> caf::result<std::string> {
        auto& st = self->state;
        const AggregateType* type = st.domain->find_aggregate(aggregate);
        if (type == nullptr) {
          std::string known;
          for (const AggregateType* each : st.domain->aggregates()) {
            known += (known.empty() ? "" : ", ") + each->name() + " (" + each->prefix() + ")";
          }
          return error_reply(errc::kUnknownAggregate,
                             "unknown aggregate type '" + aggregate + "'; known: " + known);
        }
        if (id.empty()) return error_reply(errc::kInvalidArgument, "aggregate id is empty");
        StateQuery query{type, id, type->stream_id(id)};
        return relay(self, st.router, st.config.default_timeout, state_atom::value,
                     std::move(query));
      },
      [self](sweep_atom) { sweep(self); },
      [self](handlers_atom, std::vector<HandlerRef>& handlers) {
        self->state.handlers = std::move(handlers);
      },
      [self](progress_atom, const std::string& name, uint64_t commit_id, int64_t global_position) {
        self->state.handler_positions[name] = Position{commit_id, global_position};
        if (!self->state.strong_waiting.empty()) release_strong(self);
      },
      [self](admin_atom, const std::string& text) -> caf::result<std::string> {
        // A field of an unexpected type must fail the request, not the gateway.
        try {
          return admin(self, text);
        } catch (const nlohmann::json::exception& ex) {
          return wrong_field_type_reply(ex.what());
        }
      },
      [self](drain_atom) -> caf::result<bool> {
        auto& st = self->state;
        st.draining = true;
        if (st.in_flight == 0) return true;
        auto promise = self->make_response_promise<bool>();
        st.drain_waiters.push_back(promise);
        return promise;
      },
  };
}

}  // namespace

void configure_gateway_process(caf::actor_system_config& cfg) {
  cfg.load<caf::io::middleman>();
  cfg.set("logger.verbosity", caf::atom("quiet"));
  // CAF 0.17.6's BASP worker hub (middleman.workers) loses replies when many clients connect
  // at once (tests/system/transport_test.cpp); deserialize on the multiplexer thread instead.
  cfg.set("middleman.workers", size_t{0});
  // Work sharing (one queue, condition variable) instead of work stealing (workers that poll
  // with short sleeps): on a few cores the polling's wake-ups cost more than they save; one
  // command at a time answers about 0.3 ms sooner and throughput is unchanged.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  // One core is left to the multiplexer, the store workers and the handlers (and, often,
  // PostgreSQL on the same host); CAF's default, at least four threads, spreads each command's
  // hops (gateway, router, aggregate, pool) over threads that wake one another. On 2 cores
  // one thread took the peak from ~10,700 to ~11,200 commands/s and cut cqrsd's CPU per
  // command by ~15%.
  unsigned cores = std::thread::hardware_concurrency();
  cfg.set("scheduler.max-threads", size_t{cores > 1 ? cores - 1 : 1});
}

caf::actor spawn_gateway(caf::actor_system& system, const Domain& domain, caf::actor router,
                         GatewayConfig config,
                         std::vector<std::shared_ptr<Middleware>> middlewares) {
  return system.spawn(gateway, &domain, std::move(router), config, std::move(middlewares));
}

}  // namespace cqrs::actors
