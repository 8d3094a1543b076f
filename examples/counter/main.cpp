// counterd: a minimal daemon for the counter domain, built only on the installed cqrs package.
// Applies the schema migrations, serves commands on the gateway port until SIGINT/SIGTERM, then
// answers what is in flight and exits 0.
//
//   counterd [--db.url=URL] [--server.bind=127.0.0.1] [--server.port=4343]
//   cqrsctl --port 4343 dispatch IncrementCounter '{"counter_id":"c1","by":2}'
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "actors/gateway.hpp"
#include "actors/log.hpp"
#include "actors/router.hpp"
#include "actors/store_pool.hpp"
#include "counter.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/pg/postgres_event_store.hpp"

namespace {

class CounterConfig : public caf::actor_system_config {
 public:
  std::string db_url;
  std::string bind = "127.0.0.1";
  uint16_t port = 4343;

  CounterConfig() {
    load<caf::io::middleman>();
    set("logger.verbosity", caf::atom("quiet"));
    // As in cqrsd: CAF 0.17.6's deserialization workers lose replies when many clients connect
    // at once; deserialize on the multiplexer thread.
    set("middleman.workers", size_t{0});
    opt_group{custom_options_, "db"}.add(db_url, "url", "PostgreSQL URL (default: DATABASE_URL)");
    opt_group{custom_options_, "server"}
        .add(bind, "bind", "address the gateway listens on")
        .add(port, "port", "port the gateway listens on (0: any free port)");
  }
};

int fail(const std::string& message) {
  std::fprintf(stderr, "counterd: %s\n", message.c_str());
  return 1;
}

int serve(CounterConfig& cfg, caf::actor_system& system, const cqrs::Domain& domain) {
  std::string url = cfg.db_url;
  cqrs::actors::StoreFactory factory = [url]() -> cqrs::Result<std::shared_ptr<cqrs::EventStore>> {
    auto store = cqrs::pg::PostgresEventStore::open(url);
    if (!store) return store.error();
    return std::shared_ptr<cqrs::EventStore>(std::move(store).value());
  };
  auto pool = cqrs::actors::spawn_store_pool(system, factory, {});
  auto router = cqrs::actors::spawn_router(system, pool, {});
  auto gateway = cqrs::actors::spawn_gateway(system, domain, router, {}, {});
  auto stop_all = [&] {
    for (auto& actor : {gateway, router, pool}) {
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
  };

  auto port = system.middleman().publish(gateway, cfg.port, cfg.bind.c_str(), true);
  if (!port) {
    stop_all();
    return fail("cannot listen on " + cfg.bind + ":" + std::to_string(cfg.port) + ": " +
                system.render(port.error()));
  }
  std::printf("counterd: listening on %s:%u\n", cfg.bind.c_str(), static_cast<unsigned>(*port));
  std::fflush(stdout);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int received = 0;
  sigwait(&signals, &received);

  (void)system.middleman().unpublish(gateway, *port);
  {
    caf::scoped_actor self{system};
    self->request(gateway, std::chrono::seconds(10), cqrs::actors::drain_atom::value)
        .receive([](bool) {}, [](caf::error&) {});
  }
  stop_all();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by sigwait in the main thread: block them before CAF starts threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  CounterConfig cfg;
  if (auto err = cfg.parse(argc, argv, "counterd.conf")) {
    std::fprintf(stderr, "counterd: %s\n", caf::to_string(err).c_str());
    return 2;
  }
  if (cfg.cli_helptext_printed) return 0;
  if (cfg.db_url.empty()) {
    if (const char* env = std::getenv("DATABASE_URL")) cfg.db_url = env;
  }
  cqrs::log::configure("warn", "text");

  auto migrated = cqrs::pg::migrate(cfg.db_url);
  if (!migrated) return fail("cannot migrate: " + migrated.error().to_string());

  cqrs::Domain domain;
  counter::register_domain(domain);
  caf::actor_system system{cfg};
  return serve(cfg, system, domain);
}
