// cqrsd: the daemon. Applies migrations, starts the store pool, router and gateway, publishes
// the gateway on the configured port and serves until SIGINT/SIGTERM, then drains in-flight
// commands and exits 0.
//
//   cqrsd [--config-file=config/cqrsd.conf] [--db.url=URL] [--server.port=4242] ...
//   cqrsd migrate [--db.url=URL]      apply the schema migrations and exit
//   cqrsd --help                      usage and every option (config/cqrsd.conf: defaults)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>

#include "actors/client.hpp"
#include "actors/gateway.hpp"
#include "actors/handlers.hpp"
#include "actors/log.hpp"
#include "actors/metrics.hpp"
#include "actors/middlewares.hpp"
#include "actors/router.hpp"
#include "actors/store_pool.hpp"
#include "actors/web.hpp"
#include "bank/bank.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "cqrs/uuid.hpp"
#include "giftcard/giftcard.hpp"

namespace {

using namespace std::chrono_literals;

class DaemonConfig : public caf::actor_system_config {
 public:
  std::string db_url;
  size_t pool_size = 4;
  size_t max_batch = 256;
  size_t max_batch_events = 128;
  caf::timespan connect_timeout = std::chrono::seconds(30);
  std::string bind = "127.0.0.1";
  uint16_t port = 4242;
  cqrs::TlsOptions tls;
  caf::timespan idle_timeout = std::chrono::minutes(5);
  int snapshot_every = 0;
  int retry_attempts = 10;
  size_t max_command_bytes = 1 << 20;
  size_t max_in_flight = 4096;
  caf::timespan default_timeout = std::chrono::seconds(5);
  caf::timespan drain_timeout = std::chrono::seconds(30);
  bool handlers_enabled = true;
  bool handlers_disabled = false;  // the command line's way to say enabled = false
  caf::timespan poll_interval = std::chrono::seconds(1);
  caf::timespan min_step_interval = std::chrono::milliseconds(5);
  std::string log_level = "info";
  std::string log_format = "text";
  std::string metrics_bind = "127.0.0.1";
  uint16_t metrics_port = 0;
  bool web_enabled = false;

  DaemonConfig() {
    cqrs::actors::configure_gateway_process(*this);
    opt_group{custom_options_, "db"}
        .add(db_url, "url", "PostgreSQL URL (default: DATABASE_URL, else libpq's PG* variables)")
        .add(pool_size, "pool_size", "store connections (detached writer/loader workers)")
        .add(max_batch, "max_batch",
             "appends committed in one transaction at most (see also max_batch_events)")
        .add(max_batch_events, "max_batch_events",
             "events committed in one transaction at most (unless one append has more)")
        .add(connect_timeout, "connect_timeout", "how long to retry reaching PostgreSQL at start");
    opt_group{custom_options_, "server"}
        .add(bind, "bind", "address the gateway listens on")
        .add(port, "port", "port the gateway listens on (0: any free port)");
    opt_group{custom_options_, "tls"}
        .add(tls.cert, "cert", "server certificate (PEM); with key and ca: mutual TLS")
        .add(tls.key, "key", "the server certificate's private key (PEM)")
        .add(tls.ca, "ca", "CA certificate (PEM) that client certificates must be signed by");
    opt_group{custom_options_, "aggregates"}
        .add(idle_timeout, "idle_timeout",
             "stop an aggregate actor after this idle time (0s: never)")
        .add(snapshot_every, "snapshot_every", "snapshot every N events (0: never)")
        .add(retry_attempts, "retry_attempts", "reload-and-retry attempts on concurrent writes");
    opt_group{custom_options_, "limits"}
        .add(max_command_bytes, "max_command_bytes", "largest accepted command payload")
        .add(max_in_flight, "max_in_flight",
             "commands in progress at most; more are answered 'overloaded'")
        .add(default_timeout, "default_timeout", "dispatch timeout when the client sets none")
        .add(drain_timeout, "drain_timeout", "how long shutdown waits for in-flight commands");
    opt_group{custom_options_, "handlers"}
        .add(handlers_enabled, "enabled",
             "run projectors and process managers in this process (each runs in one process)")
        .add(handlers_disabled, "disabled",
             "run no handlers in this process (on the command line, instead of enabled=false)")
        .add(poll_interval, "poll_interval",
             "how often handlers look for events when no notification came")
        .add(min_step_interval, "min_step_interval",
             "a woken handler steps no sooner than this after its last step (batches under "
             "load; 0ms: at every wake-up)");
    opt_group{custom_options_, "log"}
        .add(log_level, "level", "debug, info, warn or error")
        .add(log_format, "format", "text or json");
    opt_group{custom_options_, "metrics"}
        .add(metrics_bind, "bind", "address of the metrics and health endpoint")
        .add(metrics_port, "port", "HTTP port for /metrics and /healthz (0: off)");
    opt_group{custom_options_, "web"}.add(
        web_enabled, "enabled",
        "serve the gift card demo page and its JSON API on the metrics port (needs metrics.port)");
  }

  cqrs::Result<void> enable_tls();

  // CAF applies the config file's values it can convert and drops the rest without a word: a
  // misspelt key, a port of 99999 or "abc", a duration without its unit. cqrsd would then run on
  // defaults. Reads the file again and names the first key that is unknown or whose value does
  // not fit its option; nullopt when all are fine (or no file was read).
  std::optional<std::string> config_file_problem() const {
    std::ifstream in(config_file_path);
    if (config_file_path.empty() || !in) return std::nullopt;
    // Without the options: every value as written, to be checked below.
    auto parsed = parse_config(in);
    if (!parsed) return config_file_path + ": " + caf::to_string(parsed.error());
    return unfit_entry(*parsed, "");
  }

 private:
  std::optional<std::string> unfit_entry(const caf::settings& entries,
                                         const std::string& category) const {
    for (const auto& [key, value] : entries) {
      std::string name = category.empty() ? key : category + "." + key;
      if (const auto* nested = caf::get_if<caf::settings>(&value)) {
        if (auto problem = unfit_entry(*nested, name)) return problem;
        continue;
      }
      auto option = custom_options_.qualified_name_lookup(category, key);
      if (option == nullptr) {
        return config_file_path + ": unknown option '" + name + "' (cqrsd --help lists them)";
      }
      if (auto err = option->check(value)) {
        return config_file_path + ": '" + name + "' = " + caf::to_string(value) +
               " is not a valid " +
               std::string(option->type_name().begin(), option->type_name().end());
      }
    }
    return std::nullopt;
  }
};

// With --tls.*, the gateway is published through CAF's OpenSSL manager: every peer must
// present a certificate signed by tls.ca (the manager verifies peers when a certificate is set).
cqrs::Result<void> DaemonConfig::enable_tls() {
  if (auto valid = tls.validate(); !valid) return valid.error();
  if (!tls.enabled()) return {};
  load<caf::openssl::manager>();
  openssl_certificate = tls.cert;
  openssl_key = tls.key;
  openssl_cafile = tls.ca;
  return {};
}

// CAF's error for a flag it could not take, in words: parser_error(not_an_option, ({"argument" =
// "--bogus"})) becomes "unknown option --bogus".
std::string command_line_problem(const caf::error& err) {
  std::string text = caf::to_string(err);
  std::string argument;
  if (auto at = text.find("\"argument\" = \""); at != std::string::npos) {
    at += std::string_view("\"argument\" = \"").size();
    argument = text.substr(at, text.find('"', at) - at);
  }
  if (argument.empty()) return text;
  if (text.find("not_an_option") != std::string::npos) {
    return "unknown option " + argument + " (cqrsd --help lists them)";
  }
  return "bad value in " + argument + " (the option's type is in cqrsd --help; durations take a " +
         "unit: ms, s, min, h)";
}

int fail(const std::string& message) {
  cqrs::log::error(message);
  // For people reading a terminal; in JSON mode every stderr line stays a JSON object.
  if (cqrs::log::format() == cqrs::log::Format::kText) {
    std::fprintf(stderr, "cqrsd: %s\n", message.c_str());
  }
  return 1;
}

// "cannot listen on ...: address already in use" when another process listens on bind:port;
// nullopt when it is free, 0 (any free port), or not a numeric address (CAF says more later).
std::optional<std::string> port_in_use(const std::string& bind, uint16_t port) {
  if (port == 0) return std::nullopt;
  sockaddr_storage address{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  std::string host = bind == "localhost" ? "127.0.0.1" : bind;
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
  } else {
    return std::nullopt;
  }
  int sock = socket(address.ss_family, SOCK_STREAM, 0);
  if (sock < 0) return std::nullopt;
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // as CAF binds it
  bool in_use =
      ::bind(sock, reinterpret_cast<const sockaddr*>(&address), length) != 0 && errno == EADDRINUSE;
  close(sock);
  if (!in_use) return std::nullopt;
  return "cannot listen on " + bind + ":" + std::to_string(port) +
         ": address already in use (another cqrsd? choose another --server.port)";
}

// Whether a failed connection may succeed later: the server was not reached, or it is starting,
// stopping, recovering or full. A server that answered with anything else (no such role or
// database, a wrong password, no pg_hba.conf entry) gives the same answer next time.
bool worth_retrying(const std::string& message) {
  if (message.find("FATAL:") == std::string::npos) return true;
  for (const char* transient : {"starting up", "shutting down", "in recovery", "too many",
                                "not yet accepting connections", "not accepting connections"}) {
    if (message.find(transient) != std::string::npos) return true;
  }
  return false;
}

// Connects and migrates, retrying while PostgreSQL is unreachable for up to `timeout`.
cqrs::Result<cqrs::pg::MigrationReport> connect_and_migrate(const std::string& url,
                                                            caf::timespan timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto conn = cqrs::pg::Connection::open(url);
    if (conn) return cqrs::pg::migrate(**conn);
    if (!worth_retrying(conn.error().message())) return conn.error();
    if (std::chrono::steady_clock::now() >= deadline) return conn.error();
    cqrs::log::warn("PostgreSQL not reachable yet; retrying", {{"error", conn.error().message()}});
    std::this_thread::sleep_for(500ms);
  }
}

int run_daemon(DaemonConfig& cfg, caf::actor_system& system) {
  if (cfg.web_enabled && cfg.metrics_port == 0) {
    return fail("web.enabled needs metrics.port: the page is served on the metrics endpoint");
  }
  // The web page's routes run on the endpoint: declared first, so it outlives the endpoint.
  std::unique_ptr<cqrs::actors::WebUi> web;
  if (cfg.web_enabled) {
    cqrs::actors::WebUi::Options options;
    options.db_url = cfg.db_url;
    options.max_command_bytes = cfg.max_command_bytes;
    options.command_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(cfg.default_timeout);
    web = std::make_unique<cqrs::actors::WebUi>(system, std::move(options));
  }
  // Metrics and health first, so probes see "unavailable" while the store is not reachable.
  std::unique_ptr<cqrs::actors::Observability> observability;
  if (cfg.metrics_port != 0) {
    cqrs::actors::Observability::Options options;
    options.bind = cfg.metrics_bind;
    options.port = cfg.metrics_port;
    options.db_url = cfg.db_url;
    if (web) options.extend_routes = [&web](auto& routes) { web->add_routes(routes); };
    auto started = cqrs::actors::Observability::start(system, std::move(options));
    if (!started) return fail("metrics endpoint: " + started.error().message());
    observability = std::move(started).value();
  }
  // The command port is published only once the store is ready; a port another process holds
  // is said now, before the migrations and the wait for PostgreSQL.
  if (auto taken = port_in_use(cfg.bind, cfg.port)) return fail(*taken);
  auto migrated = connect_and_migrate(cfg.db_url, cfg.connect_timeout);
  if (!migrated) {
    return fail("cannot start: " + migrated.error().to_string() +
                " (check --db.url / DATABASE_URL; waited " +
                std::to_string(
                    std::chrono::duration_cast<std::chrono::seconds>(cfg.connect_timeout).count()) +
                " s)");
  }
  cqrs::log::info("schema ready", {{"version", std::to_string(migrated->version_after)}});

  cqrs::Domain domain;
  giftcard::register_domain(domain);
  bank::register_domain(domain);

  std::string url = cfg.db_url;
  cqrs::actors::StoreFactory factory = [url]() -> cqrs::Result<std::shared_ptr<cqrs::EventStore>> {
    auto store = cqrs::pg::PostgresEventStore::open(url);
    if (!store) return store.error();
    return std::shared_ptr<cqrs::EventStore>(std::move(store).value());
  };
  cqrs::actors::StorePoolConfig pool_config;
  pool_config.workers = cfg.pool_size;
  pool_config.max_batch = cfg.max_batch;
  pool_config.max_batch_events = cfg.max_batch_events;
  if (observability) pool_config.metrics = observability->metrics();
  auto pool = cqrs::actors::spawn_store_pool(system, factory, pool_config);
  cqrs::actors::AggregateConfig aggregate_config;
  aggregate_config.retry_attempts = cfg.retry_attempts;
  aggregate_config.idle_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.idle_timeout);
  aggregate_config.snapshot_every = cfg.snapshot_every;
  aggregate_config.upcasters = &domain.upcasters();
  aggregate_config.unique_scopes = &domain.unique_scopes();
  auto router = cqrs::actors::spawn_router(system, pool, aggregate_config);
  cqrs::actors::GatewayConfig gateway_config;
  gateway_config.max_command_bytes = cfg.max_command_bytes;
  gateway_config.max_in_flight = cfg.max_in_flight;
  gateway_config.default_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.default_timeout);
  // Internal commands only from this process's process managers: they know this token, and
  // no client can guess it (122 random bits, new at every start).
  gateway_config.internal_token = cqrs::Uuid::random().to_string();
  std::vector<std::shared_ptr<cqrs::Middleware>> middlewares = {
      std::make_shared<cqrs::actors::LoggingMiddleware>(),
      std::make_shared<cqrs::actors::TimingMiddleware>()};
  if (observability) middlewares.push_back(observability->middleware());
  auto gateway = cqrs::actors::spawn_gateway(system, domain, router, gateway_config, middlewares);
  if (observability) observability->attach(gateway);
  if (web) web->attach(gateway);

  // Handlers behind the store, woken by one LISTEN connection.
  std::vector<caf::actor> handler_actors;
  std::vector<cqrs::actors::WakeTarget> wake_targets;
  std::vector<cqrs::actors::HandlerRef> handler_refs;
  if (cfg.handlers_enabled && !cfg.handlers_disabled) {
    cqrs::actors::HandlerActorConfig handler_config;
    handler_config.poll_interval =
        std::chrono::duration_cast<std::chrono::milliseconds>(cfg.poll_interval);
    handler_config.min_step_interval =
        std::chrono::duration_cast<std::chrono::milliseconds>(cfg.min_step_interval);
    handler_config.dispatch_token = gateway_config.internal_token;
    for (const auto& handler : domain.handlers()) {
      auto actor = cqrs::actors::spawn_handler_actor(system, handler, url, &domain.upcasters(),
                                                     gateway, handler_config);
      std::vector<std::string> types = cqrs::sorted_types(handler->event_types());
      handler_actors.push_back(actor);
      wake_targets.push_back({actor, types});
      handler_refs.push_back({handler->name(), std::string(cqrs::to_string(handler->kind())),
                              handler->strong(), types, actor});
    }
    // Traces' index, behind the appends like the handlers (woken by every append).
    cqrs::actors::CorrelationIndexerConfig indexer_config;
    indexer_config.poll_interval = handler_config.poll_interval;
    auto indexer = cqrs::actors::spawn_correlation_indexer(system, url, indexer_config);
    handler_actors.push_back(indexer);
    wake_targets.push_back({indexer, {}});
  }
  caf::anon_send(gateway, cqrs::actors::handlers_atom::value, handler_refs);
  auto notifier = std::make_unique<cqrs::actors::Notifier>(url, wake_targets);

  auto stop_all = [&] {
    observability.reset();
    web.reset();
    notifier.reset();
    for (auto& actor : handler_actors) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    for (auto& actor : {gateway, router, pool}) {
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
  };
  bool tls = cfg.tls.enabled();
  auto port = tls ? caf::openssl::publish(gateway, cfg.port, cfg.bind.c_str(), true)
                  : system.middleman().publish(gateway, cfg.port, cfg.bind.c_str(), true);
  if (!port) {
    stop_all();
    return fail("cannot listen on " + cfg.bind + ":" + std::to_string(cfg.port) +
                " (in use, or not an address of this host): " + system.render(port.error()));
  }
  if (!tls && cfg.bind != "127.0.0.1" && cfg.bind != "localhost" && cfg.bind != "::1") {
    cqrs::log::warn(
        "listening on a non-loopback address without TLS: anyone who can reach it "
        "can send commands",
        {{"bind", cfg.bind}});
  }
  std::printf("cqrsd: listening on %s:%u%s\n", cfg.bind.c_str(), static_cast<unsigned>(*port),
              tls ? " (mutual TLS)" : "");
  std::printf(
      "cqrsd: try  cqrsctl --port %u%s dispatch IssueGiftCard "
      "'{\"card_id\":\"c1\",\"amount\":5000}'\n",
      static_cast<unsigned>(*port),
      tls ? " --tls.cert CLIENT.pem --tls.key CLIENT.key --tls.ca CA.pem" : "");
  if (web) {
    std::printf("cqrsd: web page at http://%s:%u/\n", cfg.metrics_bind.c_str(),
                static_cast<unsigned>(observability->port()));
    if (cfg.metrics_bind != "127.0.0.1" && cfg.metrics_bind != "localhost" &&
        cfg.metrics_bind != "::1") {
      cqrs::log::warn(
          "the web page listens on a non-loopback address: anyone who can reach it can send "
          "commands (it has no authentication)",
          {{"bind", cfg.metrics_bind}});
    }
  }
  std::fflush(stdout);
  cqrs::log::info(
      "listening",
      {{"bind", cfg.bind}, {"port", std::to_string(*port)}, {"tls", tls ? "on" : "off"}});

  // Signals were blocked before the actor system started its threads; wait for one here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int received = 0;
  sigwait(&signals, &received);
  cqrs::log::info("shutting down", {{"signal", received == SIGINT ? "SIGINT" : "SIGTERM"}});

  if (tls) {
    // (caf/openssl/unpublish.hpp does not compile in 0.17.6: ask the manager's actor directly.)
    caf::scoped_actor self{system};
    self->request(system.openssl_manager().actor_handle(), 5s, caf::unpublish_atom::value,
                  gateway.address(), *port)
        .receive([] {}, [](caf::error&) {});
  } else {
    (void)system.middleman().unpublish(gateway, *port);
  }
  {
    caf::scoped_actor self{system};
    self->request(gateway, cfg.drain_timeout, cqrs::actors::drain_atom::value)
        .receive([](bool) { cqrs::log::info("in-flight commands answered"); },
                 [&](caf::error& err) {
                   cqrs::log::warn("stopped waiting for in-flight commands",
                                   {{"error", system.render(err)}});
                 });
  }
  stop_all();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Block SIGINT/SIGTERM in every thread; the main thread takes them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  bool migrate_only = argc > 1 && std::string_view(argv[1]) == "migrate";
  std::vector<char*> args(argv, argv + argc);
  if (migrate_only) args.erase(args.begin() + 1);
  // CAF's short help lists its own four options only, with a config file default that is not
  // cqrsd's: a usage line of cqrsd's, then every option.
  static char long_help[] = "--long-help";
  for (char*& arg : args) {
    std::string_view word = arg;
    if (word == "--help" || word == "-h" || word == "-?" || word == "--long-help") {
      std::printf(
          "usage: cqrsd [migrate] [--config-file=FILE] [--<group>.<option>=VALUE ...]\n"
          "  migrate        apply the schema migrations and exit\n"
          "  --config-file  default: config/cqrsd.conf, relative to the working "
          "directory (a missing default file is fine)\n"
          "Every option below can also be set in the file, under [<group>]; flags win. "
          "Durations take a unit (ms, s, min, h).\n"
          "config/cqrsd.conf lists each option at its default.\n\n");
      arg = long_help;
    }
  }

  DaemonConfig cfg;
  const char* default_config = "config/cqrsd.conf";
  if (auto err = cfg.parse(static_cast<int>(args.size()), args.data(), default_config)) {
    // The file's own error names the file; otherwise the command line's.
    std::string problem = cfg.config_file_problem().value_or(command_line_problem(err));
    std::fprintf(stderr, "cqrsd: %s\n", problem.c_str());
    return 2;
  }
  if (cfg.cli_helptext_printed) return 0;
  if (auto problem = cfg.config_file_problem()) {
    std::fprintf(stderr, "cqrsd: %s\n", problem->c_str());
    return 2;
  }
  // CAF stops reading options at the first word that is not one and leaves the rest: a
  // misplaced `migrate`, or a flag after a stray word, would otherwise be ignored unseen.
  if (!cfg.remainder.empty()) {
    std::fprintf(stderr,
                 "cqrsd: unexpected argument '%s' (options are --name=value; 'migrate' must "
                 "come first; see cqrsd --help)\n",
                 cfg.remainder.front().c_str());
    return 2;
  }
  if (!cqrs::log::configure(cfg.log_level, cfg.log_format)) {
    std::fprintf(stderr,
                 "cqrsd: log.level must be debug|info|warn|error and log.format "
                 "text|json\n");
    return 2;
  }
  if (cfg.db_url.empty()) {
    if (const char* env = std::getenv("DATABASE_URL")) cfg.db_url = env;
  }
  if (auto tls = cfg.enable_tls(); !tls) {
    (void)fail(tls.error().message());  // a JSON line in log.format=json, as every line after this
    return 2;
  }

  if (migrate_only) {
    auto migrated = connect_and_migrate(cfg.db_url, cfg.connect_timeout);
    if (!migrated) return fail("migration failed: " + migrated.error().to_string());
    std::printf("schema at version %d (%zu migration%s applied)\n", migrated->version_after,
                migrated->applied.size(), migrated->applied.size() == 1 ? "" : "s");
    return 0;
  }
  caf::actor_system system{cfg};
  return run_daemon(cfg, system);
}
