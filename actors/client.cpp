// Client: a private actor system with the middleman, a remote handle to the gateway, and
// blocking or windowed requests over it.
#include "actors/client.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

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
  ClientConfig() {
    load<caf::io::middleman>();
    set("logger.verbosity", caf::atom("quiet"));
  }
};

using done_atom = caf::atom_constant<caf::atom("done")>;

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

struct Client::Impl {
  ClientConfig config;
  caf::actor_system system{config};
  caf::actor gateway;
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const std::string& host, uint16_t port) {
  auto impl = std::make_unique<Impl>();
  auto gateway = impl->system.middleman().remote_actor(host, port);
  if (!gateway) {
    return Error(ErrorKind::kUnavailable, "transport_error",
                 "cannot connect to cqrsd at " + host + ":" + std::to_string(port) + ": " +
                     impl->system.render(gateway.error()));
  }
  impl->gateway = *gateway;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
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
  caf::scoped_actor self{impl_->system};
  std::optional<Result<std::string>> out;
  // A little longer than the server's own timeout, so the server's answer wins.
  self->request(impl_->gateway, timeout + std::chrono::seconds(1), dispatch_atom::value, envelope)
      .receive([&](std::string& reply) { out = std::move(reply); },
               [&](caf::error& err) { out = transport_error(impl_->system, err); });
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
  caf::scoped_actor self{impl_->system};
  std::optional<Result<DispatchReply>> out;
  self->request(impl_->gateway, timeout, state_atom::value, std::string(aggregate), std::string(id))
      .receive([&](std::string& reply) { out = DispatchReply::parse(reply); },
               [&](caf::error& err) { out = transport_error(impl_->system, err); });
  return std::move(*out);
}

void Client::dispatch_many(const std::vector<std::string>& envelopes, size_t window,
                           std::chrono::milliseconds timeout,
                           const std::function<void(size_t, Result<std::string>)>& on_reply) {
  if (envelopes.empty()) return;
  caf::scoped_actor waiter{impl_->system};
  caf::actor waiter_handle = caf::actor_cast<caf::actor>(waiter);
  caf::actor gateway = impl_->gateway;
  caf::actor_system* system = &impl_->system;
  auto sender = impl_->system.spawn([&envelopes, window, timeout, &on_reply, waiter_handle, gateway,
                                     system](caf::event_based_actor* self) {
    auto next_index = std::make_shared<size_t>(0);
    auto answered = std::make_shared<size_t>(0);
    auto send_next = std::make_shared<std::function<void()>>();
    *send_next = [=, &envelopes, &on_reply]() {
      if (*next_index >= envelopes.size()) return;
      size_t index = (*next_index)++;
      self->request(gateway, timeout + std::chrono::seconds(1), dispatch_atom::value,
                    envelopes[index])
          .then(
              [=, &envelopes, &on_reply](std::string& reply) {
                on_reply(index, std::move(reply));
                if (++*answered == envelopes.size()) {
                  self->send(waiter_handle, done_atom::value);
                  self->quit();
                  return;
                }
                (*send_next)();
              },
              [=, &envelopes, &on_reply](caf::error& err) {
                on_reply(index, transport_error(*system, err));
                if (++*answered == envelopes.size()) {
                  self->send(waiter_handle, done_atom::value);
                  self->quit();
                  return;
                }
                (*send_next)();
              });
    };
    for (size_t idx = 0; idx < std::max<size_t>(1, window); ++idx) (*send_next)();
  });
  waiter->receive([](done_atom) {});
}

}  // namespace cqrs
