// transport_floor: the cheapest possible cqrsd, for command_bench --transport-floor. It publishes
// one actor that answers every dispatch with the same "ok" reply, at once: no JSON parsing, no
// aggregate, no database. CAF is configured by cqrsd's own configure_gateway_process (one
// scheduler thread per core but one, work sharing, deserialization on the multiplexer thread).
// So the rate the client
// reaches against it bounds what any cqrsd on the same machine can reach with CAF remote
// messaging, before a single byte is written to PostgreSQL.
//
// usage: transport_floor [--port N]   (binds 127.0.0.1; prints "transport_floor: listening on
//                                      127.0.0.1:<port>"; stops on SIGINT or SIGTERM)
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "actors/gateway.hpp"
#include "actors/messages.hpp"

namespace {

// The size and shape of cqrsd's answer to a RedeemGiftCard.
constexpr std::string_view kReply =
    R"({"aggregate_id":"w1-123","command_id":"6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b",)"
    R"("events":[{"data":{"amount":42,"card_id":"w1-123","remaining":999999958},)"
    R"("type":"GiftCardRedeemed"}],"position":"123456/987654","status":"ok",)"
    R"("stream_id":"giftcard-w1-123","version":2})";

class FloorConfig : public caf::actor_system_config {
 public:
  FloorConfig() { cqrs::actors::configure_gateway_process(*this); }
};

caf::behavior echo_gateway(caf::event_based_actor*) {
  return {
      [](cqrs::actors::dispatch_atom, const std::string&) { return std::string(kReply); },
  };
}

}  // namespace

int main(int argc, char** argv) {
  uint16_t requested_port = 0;
  for (int idx = 1; idx < argc; ++idx) {
    std::string_view arg = argv[idx];
    if (arg == "--port" && idx + 1 < argc) {
      requested_port = static_cast<uint16_t>(std::atoi(argv[++idx]));
    } else {
      std::fprintf(stderr, "usage: transport_floor [--port N]\n");
      return 2;
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before CAF starts its threads

  FloorConfig cfg;
  caf::actor_system system{cfg};
  caf::actor gateway = system.spawn(echo_gateway);
  auto port = system.middleman().publish(gateway, requested_port, "127.0.0.1", true);
  if (!port) {
    std::fprintf(stderr, "transport_floor: cannot publish: %s\n",
                 system.render(port.error()).c_str());
    return 1;
  }
  std::printf("transport_floor: listening on 127.0.0.1:%u\n", static_cast<unsigned>(*port));
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
  return 0;
}
