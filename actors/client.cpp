// Client: a private actor system with the middleman, a remote handle to the gateway, and
// blocking or windowed requests over it.
#include "actors/client.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "actors/messages.hpp"

namespace cqrs {
namespace {

using actors::dispatch_atom;
using actors::state_atom;

Error transport_error(caf::actor_system& system, const caf::error& err) {
  if (err == caf::sec::request_timeout) {
    return Error(ErrorKind::kUnavailable, "timeout", "no reply from cqrsd in time");
  }
  return Error(ErrorKind::kUnavailable, "transport_error", system.render(err));
}

class ClientConfig : public caf::actor_system_config {
 public:
  explicit ClientConfig(const TlsOptions& tls) {
    load<caf::io::middleman>();
    set("logger.verbosity", caf::atom("quiet"));
    // CAF 0.17's BASP worker hub loses replies under many concurrent connections.
    set("middleman.workers", size_t{0});
    // The client's actors only send requests and hand replies over: one scheduler thread that
    // sleeps on a condition variable, instead of CAF's default of at least four polling ones.
    set("scheduler.policy", caf::atom("sharing"));
    set("scheduler.max-threads", size_t{1});
    if (tls.enabled()) {
      load<caf::openssl::manager>();
      openssl_certificate = tls.cert;
      openssl_key = tls.key;
      openssl_cafile = tls.ca;
    }
  }
};

using done_atom = caf::atom_constant<caf::atom("done")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;

// How often an open-loop sender checks for due requests.
constexpr auto kPaceTick = std::chrono::milliseconds(1);

// Sends one request and hands its reply (or a transport error) to `done`.
template <class... Ts>
void request_reply(caf::event_based_actor* self, const caf::actor& gateway,
                   std::chrono::milliseconds timeout, std::function<void(Result<std::string>)> done,
                   Ts&&... xs) {
  self->request(gateway, timeout, std::forward<Ts>(xs)...)
      .then([done](std::string& reply) { done(std::move(reply)); },
            [self, done](caf::error& err) { done(transport_error(self->system(), err)); });
}

}  // namespace

DispatchReply DispatchReply::parse(const std::string& text) {
  DispatchReply reply;
  reply.json = nlohmann::json::parse(text, nullptr, false);
  if (!reply.json.is_object()) {
    reply.status = "error";
    reply.error = "bad_reply";
    reply.message = "the server's reply is not a JSON object";
    return reply;
  }
  reply.status = reply.json.value("status", "ok");
  reply.error = reply.json.value("error", "");
  reply.message = reply.json.value("message", "");
  return reply;
}

DispatchReply DispatchReply::from_error(const Error& error) {
  return parse(
      nlohmann::json{{"status", "error"}, {"error", error.code()}, {"message", error.message()}}
          .dump());
}

std::string DispatchReply::canonical() const {
  static const char* kOrder[] = {"status", "aggregate_id", "stream_id", "version", "command_id",
                                 "events", "error",        "message",   "state"};
  nlohmann::ordered_json out;
  for (const char* key : kOrder) {
    if (json.contains(key)) out[key] = json[key];
  }
  for (const auto& [key, value] : json.items()) {
    if (!out.contains(key)) out[key] = value;
  }
  return out.dump();
}

Result<void> TlsOptions::validate() const {
  if (!enabled()) return {};
  const std::pair<const char*, const std::string*> files[] = {
      {"tls.cert", &cert}, {"tls.key", &key}, {"tls.ca", &ca}};
  for (const auto& [name, path] : files) {
    if (path->empty()) {
      return Error::invalid(
          errc::kInvalidArgument,
          std::string("TLS needs tls.cert, tls.key and tls.ca; ") + name + " is missing");
    }
    if (!std::ifstream(*path).good()) {
      return Error::invalid(errc::kInvalidArgument,
                            std::string(name) + ": cannot read '" + *path + "'");
    }
  }
  return {};
}

struct Client::Impl {
  explicit Impl(const TlsOptions& tls) : config(tls), system(config) {}
  ClientConfig config;
  caf::actor_system system;
  caf::actor gateway;
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const std::string& host, uint16_t port,
                                                const TlsOptions& tls,
                                                std::optional<std::chrono::milliseconds> timeout) {
  if (auto valid = tls.validate(); !valid) return valid.error();
  const std::string where = host + ":" + std::to_string(port);
  // CAF's remote_actor has no deadline of its own: with one, it runs on a thread of its own,
  // which owns the attempt (and, when it is abandoned, everything it uses) until it ends.
  struct Attempt {
    explicit Attempt(const TlsOptions& tls) : impl(std::make_unique<Impl>(tls)) {}
    std::unique_ptr<Impl> impl;
    std::optional<Result<void>> outcome;
    std::mutex mutex;
    std::condition_variable done;
  };
  auto attempt = std::make_shared<Attempt>(tls);
  auto run = [attempt, host, port, where, enabled = tls.enabled()] {
    Impl& impl = *attempt->impl;
    auto gateway = enabled ? caf::openssl::remote_actor(impl.system, host, port)
                           : impl.system.middleman().remote_actor(host, port);
    Result<void> outcome;
    if (gateway) {
      impl.gateway = *gateway;
    } else {
      outcome =
          Error(ErrorKind::kUnavailable, "transport_error",
                "cannot connect to cqrsd at " + where + ": " + impl.system.render(gateway.error()));
    }
    std::lock_guard lock(attempt->mutex);
    attempt->outcome = std::move(outcome);
    attempt->done.notify_all();
  };
  if (!timeout) {
    run();
  } else {
    std::thread(run).detach();
    std::unique_lock lock(attempt->mutex);
    if (!attempt->done.wait_for(lock, *timeout, [&] { return attempt->outcome.has_value(); })) {
      return Error(ErrorKind::kUnavailable, "transport_error",
                   "cqrsd at " + where + " did not complete the connection within " +
                       std::to_string(timeout->count()) +
                       " ms: is it stopped or overloaded, or is another service on that port?");
    }
  }
  std::lock_guard lock(attempt->mutex);
  if (!*attempt->outcome) return attempt->outcome->error();
  return std::unique_ptr<Client>(new Client(std::move(attempt->impl)));
}

std::string Client::envelope(std::string_view type, std::string_view payload,
                             const DispatchOptions& options) {
  nlohmann::json envelope = {{"type", type}, {"payload", payload}};
  if (options.command_id) envelope["command_id"] = *options.command_id;
  if (options.correlation_id) envelope["correlation_id"] = *options.correlation_id;
  if (!options.metadata.empty()) envelope["metadata"] = options.metadata;
  if (options.strong) envelope["consistency"] = "strong";
  envelope["timeout_ms"] = options.timeout.count();
  return envelope.dump();
}

Result<std::string> Client::send_envelope(const std::string& envelope,
                                          std::chrono::milliseconds timeout) {
  std::optional<Result<std::string>> out;
  run_requests(
      1, Pace{},
      [&](caf::event_based_actor* self, const caf::actor& gateway, size_t, ReplyHandler done) {
        // A little longer than the server's own timeout, so the server's answer wins.
        request_reply(self, gateway, timeout + std::chrono::seconds(1), std::move(done),
                      dispatch_atom::value, envelope);
      },
      [&](size_t, Result<std::string> reply) { out = std::move(reply); });
  return std::move(*out);
}

Result<DispatchReply> Client::dispatch(std::string_view type, std::string_view payload,
                                       const DispatchOptions& options) {
  auto reply = send_envelope(envelope(type, payload, options), options.timeout);
  if (!reply) return reply.error();
  return DispatchReply::parse(*reply);
}

Result<DispatchReply> Client::state(std::string_view aggregate, std::string_view id,
                                    std::chrono::milliseconds timeout) {
  std::optional<Result<std::string>> out;
  std::string aggregate_name(aggregate);
  std::string aggregate_id(id);
  run_requests(
      1, Pace{},
      [&](caf::event_based_actor* self, const caf::actor& gateway, size_t, ReplyHandler done) {
        request_reply(self, gateway, timeout, std::move(done), state_atom::value, aggregate_name,
                      aggregate_id);
      },
      [&](size_t, Result<std::string> reply) { out = std::move(reply); });
  if (!*out) return out->error();
  return DispatchReply::parse(**out);
}

Result<DispatchReply> Client::admin(const nlohmann::json& request,
                                    std::chrono::milliseconds timeout) {
  std::optional<Result<std::string>> out;
  std::string text = request.dump();
  run_requests(
      1, Pace{},
      [&](caf::event_based_actor* self, const caf::actor& gateway, size_t, ReplyHandler done) {
        request_reply(self, gateway, timeout, std::move(done), actors::admin_atom::value, text);
      },
      [&](size_t, Result<std::string> reply) { out = std::move(reply); });
  if (!*out) return out->error();
  return DispatchReply::parse(**out);
}

void Client::dispatch_many(const std::vector<std::string>& envelopes, size_t window,
                           std::chrono::milliseconds timeout,
                           const std::function<void(size_t, Result<std::string>)>& on_reply) {
  run_requests(
      envelopes.size(), Pace{window},
      [&](caf::event_based_actor* self, const caf::actor& gateway, size_t index,
          ReplyHandler done) {
        request_reply(self, gateway, timeout + std::chrono::seconds(1), std::move(done),
                      dispatch_atom::value, envelopes[index]);
      },
      on_reply);
}

void Client::dispatch_at_rate(const std::vector<std::string>& envelopes,
                              std::chrono::steady_clock::time_point start, double rate,
                              std::chrono::milliseconds timeout,
                              const std::function<void(size_t, Result<std::string>)>& on_reply) {
  run_requests(
      envelopes.size(), Pace{0, rate, start},
      [&](caf::event_based_actor* self, const caf::actor& gateway, size_t index,
          ReplyHandler done) {
        request_reply(self, gateway, timeout + std::chrono::seconds(1), std::move(done),
                      dispatch_atom::value, envelopes[index]);
      },
      on_reply);
}

void Client::run_requests(size_t count, Pace pace, const Issue& issue,
                          const std::function<void(size_t, Result<std::string>)>& on_reply) {
  if (count == 0) return;
  caf::scoped_actor waiter{impl_->system};
  caf::actor waiter_handle = caf::actor_cast<caf::actor>(waiter);
  caf::actor gateway = impl_->gateway;
  impl_->system.spawn(
      [&issue, &on_reply, count, pace, waiter_handle, gateway](caf::event_based_actor* self) {
        struct Progress {
          size_t next = 0;
          size_t answered = 0;
          std::vector<bool> done;
          bool finished = false;
        };
        auto progress = std::make_shared<Progress>();
        progress->done.assign(count, false);
        auto finish_one = [self, progress, count, &on_reply, waiter_handle](
                              size_t index, Result<std::string> reply) {
          if (progress->finished || progress->done[index]) return false;
          progress->done[index] = true;
          on_reply(index, std::move(reply));
          if (++progress->answered == count) {
            progress->finished = true;
            self->send(waiter_handle, done_atom::value);
            self->quit();
            return false;
          }
          return true;
        };
        // When the connection to cqrsd is lost, outstanding and unsent requests fail at once
        // instead of each waiting out its timeout.
        self->monitor(gateway);
        self->set_down_handler([self, progress, count, finish_one](caf::down_msg& down) {
          Error lost(ErrorKind::kUnavailable, "transport_error",
                     "lost the connection to cqrsd: " + self->system().render(down.reason));
          for (size_t index = 0; index < count && !progress->finished; ++index) {
            finish_one(index, lost);
          }
        });
        bool windowed = pace.rate <= 0;
        auto send_next = std::make_shared<std::function<void()>>();
        *send_next = [self, progress, count, &issue, gateway, finish_one, send_next, windowed]() {
          if (progress->finished || progress->next >= count) return;
          size_t index = progress->next++;
          std::weak_ptr<std::function<void()>> weak_next = send_next;
          issue(self, gateway, index,
                [index, finish_one, weak_next, windowed](Result<std::string> reply) mutable {
                  if (finish_one(index, std::move(reply)) && windowed) {
                    if (auto next = weak_next.lock()) (*next)();
                  }
                });
        };
        // Open loop: on each tick, send everything that is due.
        auto send_due = [self, progress, count, pace, send_next] {
          std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - pace.start;
          // Requests 0..floor(elapsed * rate) are due: request k at start + k / rate, not before.
          double due = elapsed.count() < 0 ? 0 : std::floor(elapsed.count() * pace.rate) + 1;
          while (progress->next < count && static_cast<double>(progress->next) < due) {
            (*send_next)();
          }
          if (progress->next < count) self->delayed_send(self, kPaceTick, tick_atom::value);
        };
        if (windowed) {
          for (size_t idx = 0; idx < std::max<size_t>(1, pace.window); ++idx) (*send_next)();
        } else {
          send_due();
        }
        // The behavior keeps send_next alive for the actor's lifetime; nothing else holds it.
        return caf::behavior{[send_next](done_atom) {}, [send_due](tick_atom) { send_due(); }};
      });
  waiter->receive([](done_atom) {});
}

}  // namespace cqrs
