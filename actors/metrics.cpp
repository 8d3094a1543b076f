// Daemon metrics: the families, the metrics middleware, and the endpoint's scrape and health
// callbacks.
#include "actors/metrics.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/log.hpp"
#include "actors/messages.hpp"
#include "cqrs/metrics/http_exporter.hpp"
#include "cqrs/pg/health.hpp"

namespace cqrs::actors {
namespace {

// Dispatch latency, seconds: from sub-millisecond answers to the longest allowed timeouts.
const std::vector<double> kDurationBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30};
// Write requests committed in one transaction (db.max_batch is 256 by default).
const std::vector<double> kBatchBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

double seconds(std::chrono::microseconds elapsed) {
  return std::chrono::duration<double>(elapsed).count();
}

// The first line of an error, for a probe's short reason.
std::string first_line(std::string text) {
  if (auto end = text.find('\n'); end != std::string::npos) text.resize(end);
  return text;
}

}  // namespace

DaemonMetrics::DaemonMetrics()
    : commands(registry.counter("cqrs_commands_total",
                                "Commands answered, by command type and outcome (ok, rejected, "
                                "error); code is the rejection or error code.",
                                {"type", "outcome", "code"})),
      command_duration(registry.histogram(
          "cqrs_command_duration_seconds",
          "Time from accepting a command at the gateway to answering it, by command type.",
          kDurationBounds, {"type"})),
      commands_refused(registry.counter(
          "cqrs_commands_refused_total",
          "Dispatch envelopes refused by the gateway before routing (malformed, unknown type, too "
          "large), by error code.",
          {"code"})),
      events_appended(registry
                          .counter("cqrs_events_appended_total",
                                   "Events committed to the event store by this process.")
                          .with({})),
      append_batch_size(registry
                            .histogram("cqrs_store_append_batch_size",
                                       "Write requests (one per command) committed together in "
                                       "one store transaction (group commit).",
                                       kBatchBounds)
                            .with({})),
      store_workers_busy(registry
                             .gauge("cqrs_store_workers_busy",
                                    "Store connections (writer/loader workers) running a job.")
                             .with({})),
      store_workers(
          registry.gauge("cqrs_store_workers", "Store connections (writer/loader workers) in all.")
              .with({})),
      aggregates_live(
          registry.gauge("cqrs_aggregates_live", "Aggregate actors alive in this process.")
              .with({})),
      handler_position(registry.gauge(
          "cqrs_handler_position",
          "Global position ($all) of the last event a handler processed, by handler.",
          {"handler"})),
      handler_lag(registry.gauge(
          "cqrs_handler_lag_events",
          "Committed events after a handler's position that it has yet to process, by handler "
          "(absent while the handler stands by for another process).",
          {"handler"})),
      handler_dead_letters(registry.gauge("cqrs_handler_dead_letters",
                                          "Events a handler gave up on (cqrs.dead_letters rows).",
                                          {"handler"})),
      handler_state(registry.gauge("cqrs_handler_state",
                                   "1 for the state each handler is in (starting, standby, "
                                   "running, retrying, stopped, unreachable).",
                                   {"handler", "state"})),
      correlation_index_lag(registry.gauge(
          "cqrs_correlation_index_lag_runs",
          "Runs of events (an append's events of one type) stored after the correlation index's "
          "position, which it has yet to take in; traces find them either way.")),
      collect_failures(registry
                           .counter("cqrs_metrics_collect_failures_total",
                                    "Scrapes that could not gather handler and aggregate figures "
                                    "from the daemon in time.")
                           .with({})) {}

void MetricsMiddleware::after(const DispatchContext& context, const DispatchSummary& summary) {
  metrics_->commands.with({context.command_type, summary.status, summary.error}).inc();
  metrics_->command_duration.with({context.command_type}).observe(seconds(summary.elapsed));
}

void MetricsMiddleware::on_failure(const DispatchContext& context, const Error& error) {
  auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - context.started);
  metrics_->commands.with({context.command_type, "error", error.code()}).inc();
  metrics_->command_duration.with({context.command_type}).observe(seconds(elapsed));
}

void MetricsMiddleware::on_refused(const Error& error) {
  metrics_->commands_refused.with({error.code()}).inc();
}

Observability::Observability(caf::actor_system& system, Options options)
    : system_(system),
      options_(std::move(options)),
      metrics_(std::make_shared<DaemonMetrics>()),
      probe_(std::make_unique<pg::HealthProbe>(options_.db_url)) {}

Observability::~Observability() { exporter_.reset(); }

Result<std::unique_ptr<Observability>> Observability::start(caf::actor_system& system,
                                                            Options options) {
  std::unique_ptr<Observability> out(new Observability(system, std::move(options)));
  Observability* self = out.get();
  metrics::HttpExporter::Routes routes;
  routes.metrics = [self] { return self->scrape(); };
  routes.health = [self] {
    std::lock_guard lock(self->probe_mutex_);
    auto checked = self->probe_->check();
    if (checked) return metrics::HealthReport{true, ""};
    return metrics::HealthReport{false, first_line(checked.error().to_string())};
  };
  if (out->options_.extend_routes) out->options_.extend_routes(routes);
  auto exporter =
      metrics::HttpExporter::start(out->options_.bind, out->options_.port, std::move(routes));
  if (!exporter) return exporter.error();
  out->exporter_ = std::move(exporter).value();
  log::info("metrics endpoint listening",
            {{"bind", out->options_.bind}, {"port", std::to_string(out->port())}});
  return out;
}

std::shared_ptr<Middleware> Observability::middleware() const {
  return std::make_shared<MetricsMiddleware>(metrics_);
}

void Observability::attach(caf::actor gateway) {
  std::lock_guard lock(mutex_);
  gateway_ = std::move(gateway);
}

uint16_t Observability::port() const { return exporter_ ? exporter_->port() : 0; }

// Runs on a serving thread, one scrape at a time (clearing a family while another scrape holds
// one of its children would leave that reference dangling): asks the gateway for the status reply
// of `cqrsctl status` and refills the scrape-time families from it.
std::string Observability::scrape() {
  std::lock_guard scraping(scrape_mutex_);
  caf::actor gateway;
  {
    std::lock_guard lock(mutex_);
    gateway = gateway_;
  }
  if (gateway) {
    nlohmann::json status;
    {
      caf::scoped_actor self{system_};
      self->request(gateway, options_.collect_timeout, admin_atom::value,
                    std::string(R"({"op":"status"})"))
          .receive(
              [&](std::string& reply) { status = nlohmann::json::parse(reply, nullptr, false); },
              [](caf::error&) {});
    }
    DaemonMetrics& m = *metrics_;
    m.handler_position.clear();
    m.handler_lag.clear();
    m.handler_dead_letters.clear();
    m.handler_state.clear();
    m.correlation_index_lag.clear();
    if (!status.is_object() || status.value("status", "") != "ok") {
      m.collect_failures.inc();
    } else {
      if (auto live = status.find("aggregates_live"); live != status.end() && live->is_number()) {
        m.aggregates_live.set(live->get<double>());
      }
      if (auto lag = status.find("correlation_index_lag");
          lag != status.end() && lag->is_number()) {
        m.correlation_index_lag.with({}).set(lag->get<double>());
      }
      for (const auto& handler : status.value("handlers", nlohmann::json::array())) {
        if (!handler.is_object() || !handler.contains("name")) continue;
        std::string name = handler.value("name", "");
        m.handler_state.with({name, handler.value("state", "")}).set(1);
        if (auto at = handler.find("position"); at != handler.end() && at->is_string()) {
          if (auto position = Position::parse(at->get<std::string>())) {
            m.handler_position.with({name}).set(static_cast<double>(position->global_position));
          }
        }
        if (auto lag = handler.find("lag"); lag != handler.end() && lag->is_number()) {
          m.handler_lag.with({name}).set(lag->get<double>());
        }
        if (auto dead = handler.find("dead_letters"); dead != handler.end() && dead->is_number()) {
          m.handler_dead_letters.with({name}).set(dead->get<double>());
        }
      }
    }
  }
  return metrics::render_prometheus(metrics_->registry);
}

}  // namespace cqrs::actors
