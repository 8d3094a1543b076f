// Gateway: envelope decoding, validation, middleware, and the hand-off to the router.
#include "actors/gateway.hpp"

#include <caf/all.hpp>
#include <map>
#include <unordered_map>

#include "actors/messages.hpp"
#include "actors/replies.hpp"

namespace cqrs::actors {
namespace {

constexpr int64_t kMaxTimeoutMs = 300000;
// Room for the envelope's own fields around a payload of the maximum size.
constexpr size_t kEnvelopeOverhead = 64 * 1024;

using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using Clock = caf::actor_clock::clock_type;

// How often the deadlines of commands in flight are checked: the resolution of timeouts.
constexpr auto kSweepInterval = std::chrono::milliseconds(10);

struct InFlight {
  caf::typed_response_promise<std::string> promise;
  std::shared_ptr<DispatchContext> context;
  std::chrono::milliseconds timeout;
  std::multimap<Clock::time_point, uint64_t>::iterator deadline;
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
  uint64_t in_flight = 0;
  bool draining = false;
  std::vector<caf::typed_response_promise<bool>> drain_waiters;
  static inline const char* name = "cqrs.gateway";
};

using GatewayActor = caf::stateful_actor<GatewayState>;

struct Decoded {
  CommandEnvelope envelope;
  std::chrono::milliseconds timeout;
};

Error invalid(std::string message) {
  return Error::invalid(errc::kInvalidCommand, std::move(message));
}

Error too_large(size_t size, size_t limit) {
  return Error::invalid(errc::kCommandTooLarge,
                        "command is " + std::to_string(size) + " bytes; the limit is " +
                            std::to_string(limit) + " (limits.max_command_bytes)");
}

Result<Decoded> decode_envelope(const GatewayState& st, const std::string& text) {
  size_t limit = st.config.max_command_bytes;
  if (text.size() > limit + kEnvelopeOverhead) return too_large(text.size(), limit);
  nlohmann::json envelope = nlohmann::json::parse(text, nullptr, false);
  if (envelope.is_discarded() || !envelope.is_object()) {
    return invalid("the dispatch envelope is not a JSON object");
  }
  auto type = envelope.find("type");
  if (type == envelope.end() || !type->is_string()) {
    return invalid("envelope field 'type' (the command type name) is missing or not a string");
  }
  const std::string& type_name = type->get_ref<const std::string&>();

  Result<DecodedCommand> command = invalid("envelope has neither 'payload' nor 'data'");
  if (auto payload = envelope.find("payload"); payload != envelope.end()) {
    if (!payload->is_string()) return invalid("envelope field 'payload' must be JSON text");
    const std::string& payload_text = payload->get_ref<const std::string&>();
    if (payload_text.size() > limit) return too_large(payload_text.size(), limit);
    command = st.domain->decode(type_name, payload_text);
  } else if (auto data = envelope.find("data"); data != envelope.end()) {
    if (text.size() > limit) return too_large(text.size(), limit);
    command = st.domain->decode_json(type_name, *data);
  } else if (st.domain->find_command(type_name) == nullptr) {
    command = st.domain->decode(type_name, "{}");  // unregistered_command wins
  }
  if (!command) return command.error();

  Decoded decoded;
  decoded.envelope.command = std::move(command).value();
  decoded.timeout = st.config.default_timeout;
  if (auto id = envelope.find("command_id"); id != envelope.end() && !id->is_null()) {
    std::optional<Uuid> parsed;
    if (id->is_string()) parsed = Uuid::parse(id->get_ref<const std::string&>());
    if (!parsed || parsed->is_nil()) return invalid("envelope field 'command_id' must be a UUID");
    decoded.envelope.command_id = *parsed;
  } else {
    decoded.envelope.command_id = Uuid::time_ordered();
  }
  std::string command_id = decoded.envelope.command_id.to_string();
  decoded.envelope.causation_id = command_id;
  decoded.envelope.correlation_id = command_id;
  if (auto correlation = envelope.find("correlation_id");
      correlation != envelope.end() && !correlation->is_null()) {
    if (!correlation->is_string() || correlation->get_ref<const std::string&>().empty()) {
      return invalid("envelope field 'correlation_id' must be a non-empty string");
    }
    decoded.envelope.correlation_id = correlation->get<std::string>();
  }
  if (auto metadata = envelope.find("metadata");
      metadata != envelope.end() && !metadata->is_null()) {
    if (!metadata->is_object()) return invalid("envelope field 'metadata' must be a JSON object");
    decoded.envelope.metadata = *metadata;
  }
  if (auto consistency = envelope.find("consistency");
      consistency != envelope.end() && !consistency->is_null()) {
    if (*consistency == "strong") {
      decoded.envelope.consistency = Consistency::kStrong;
    } else if (*consistency != "eventual") {
      return invalid("envelope field 'consistency' must be \"eventual\" or \"strong\"");
    }
  }
  if (auto timeout = envelope.find("timeout_ms");
      timeout != envelope.end() && !timeout->is_null()) {
    if (!timeout->is_number_integer() || timeout->get<int64_t>() < 1 ||
        timeout->get<int64_t>() > kMaxTimeoutMs) {
      return invalid("envelope field 'timeout_ms' must be an integer from 1 to " +
                     std::to_string(kMaxTimeoutMs));
    }
    decoded.timeout = std::chrono::milliseconds(timeout->get<int64_t>());
  }
  return decoded;
}

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

// Answers the command `id` with `reply` (or, without one, a timeout) unless it was answered.
void complete(GatewayActor* self, uint64_t id, std::string* reply) {
  auto& st = self->state;
  auto it = st.waiting.find(id);
  if (it == st.waiting.end()) return;  // timed out before; this is the late answer
  InFlight done = std::move(it->second);
  st.waiting.erase(it);
  st.deadlines.erase(done.deadline);
  auto& mws = st.middlewares;
  if (reply != nullptr) {
    DispatchSummary summary = summarize(*reply, done.context->started);
    for (auto mw = mws.rbegin(); mw != mws.rend(); ++mw) (*mw)->after(*done.context, summary);
    done.promise.deliver(std::move(*reply));
  } else {
    Error error(ErrorKind::kUnavailable, "timeout",
                "no answer within " + std::to_string(done.timeout.count()) +
                    " ms; the command may still complete");
    for (auto mw = mws.rbegin(); mw != mws.rend(); ++mw) (*mw)->on_failure(*done.context, error);
    done.promise.deliver(error_reply(error, done.context->command_id));
  }
  finish_one(self);
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

caf::behavior gateway(GatewayActor* self, const Domain* domain, caf::actor router,
                      GatewayConfig config, std::vector<std::shared_ptr<Middleware>> middlewares) {
  self->state.domain = domain;
  self->state.router = std::move(router);
  self->state.config = config;
  self->state.middlewares = std::move(middlewares);
  return {
      [self](dispatch_atom, const std::string& text) -> caf::result<std::string> {
        auto& st = self->state;
        if (st.draining) {
          return error_reply("shutting_down", "cqrsd is shutting down; retry on another instance");
        }
        auto decoded = decode_envelope(st, text);
        if (!decoded) return error_reply(decoded.error());
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
        st.waiting.emplace(id, InFlight{promise, context, decoded->timeout, deadline});
        arm_sweep(self);
        self->request(st.router, caf::infinite, execute_atom::value, std::move(decoded->envelope))
            .then([self, id](std::string& reply) { complete(self, id, &reply); },
                  [self, id](caf::error& err) {
                    std::string reply = error_reply("dispatch_failed", self->system().render(err));
                    complete(self, id, &reply);
                  });
        return promise;
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
        auto promise = self->make_response_promise<std::string>();
        self->request(st.router, st.config.default_timeout, state_atom::value, std::move(query))
            .then([promise](std::string& reply) mutable { promise.deliver(std::move(reply)); },
                  [self, promise](caf::error& err) mutable {
                    promise.deliver(error_reply("dispatch_failed", self->system().render(err)));
                  });
        return promise;
      },
      [self](sweep_atom) { sweep(self); },
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

caf::actor spawn_gateway(caf::actor_system& system, const Domain& domain, caf::actor router,
                         GatewayConfig config,
                         std::vector<std::shared_ptr<Middleware>> middlewares) {
  return system.spawn(gateway, &domain, std::move(router), config, std::move(middlewares));
}

}  // namespace cqrs::actors
