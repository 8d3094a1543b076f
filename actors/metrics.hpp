// cqrsd's metrics and health endpoint (--metrics.port): the metric families the daemon's parts
// update, the middleware that counts and times commands, and the Observability object that serves
// them over HTTP and gathers the figures only known at scrape time (live aggregates, handler
// positions, lag, dead letters) from the gateway. Names and labels: docs/observability.md.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "cqrs/metrics/http_exporter.hpp"
#include "cqrs/metrics/registry.hpp"
#include "cqrs/middleware.hpp"
#include "cqrs/result.hpp"

namespace cqrs::pg {
class HealthProbe;
}

namespace cqrs::actors {

// The daemon's metric families, in the registry they are rendered from. Shared (shared_ptr) by
// the parts that update them; every update is an atomic operation and never blocks.
struct DaemonMetrics {
  DaemonMetrics();
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  metrics::Registry registry;
  // Updated as things happen.
  metrics::Family<metrics::Counter>& commands;            // {type, outcome, code}
  metrics::Family<metrics::Histogram>& command_duration;  // {type}, seconds
  metrics::Family<metrics::Counter>& commands_refused;    // {code}
  metrics::Counter& events_appended;
  metrics::Histogram& append_batch_size;  // write requests per transaction
  metrics::Gauge& store_workers_busy;
  metrics::Gauge& store_workers;
  // Refreshed when scraped.
  metrics::Gauge& aggregates_live;
  metrics::Family<metrics::Gauge>& handler_position;      // {handler}
  metrics::Family<metrics::Gauge>& handler_lag;           // {handler}
  metrics::Family<metrics::Gauge>& handler_dead_letters;  // {handler}
  metrics::Family<metrics::Gauge>& handler_state;         // {handler, state}
  // No labels; absent when the status did not say (see Observability::scrape).
  metrics::Family<metrics::Gauge>& correlation_index_lag;
  metrics::Counter& collect_failures;
};

// Counts every answered command by type and outcome and times it; counts envelopes the gateway
// refused. Runs on the gateway's thread; each call is a few atomic updates.
class MetricsMiddleware final : public Middleware {
 public:
  explicit MetricsMiddleware(std::shared_ptr<DaemonMetrics> metrics)
      : metrics_(std::move(metrics)) {}
  void after(const DispatchContext& context, const DispatchSummary& summary) override;
  void on_failure(const DispatchContext& context, const Error& error) override;
  void on_refused(const Error& error) override;

 private:
  std::shared_ptr<DaemonMetrics> metrics_;
};

// Everything --metrics.port turns on. The HTTP endpoint starts with the object, so /healthz
// answers (503) while cqrsd still waits for PostgreSQL; /metrics gathers the scrape-time figures
// once attach() has named the gateway. Scrapes run on the endpoint's serving threads and wait for
// the gateway through a scoped actor with a timeout: they never block the actor scheduler.
// Scrapes run one at a time (they refill shared families), and so do health probes (one
// connection); a scrape and a probe may overlap, and other routes run beside both.
class Observability {
 public:
  struct Options {
    std::string bind = "127.0.0.1";
    uint16_t port = 0;  // REQUIRES: not 0 (0 means metrics are off; the caller skips start)
    std::string db_url;
    std::chrono::milliseconds collect_timeout{5000};
    // Adds further routes to the endpoint (the web page), before it starts listening.
    std::function<void(metrics::HttpExporter::Routes&)> extend_routes;
  };
  // Errors: invalid_argument when the address cannot be bound.
  static Result<std::unique_ptr<Observability>> start(caf::actor_system& system, Options options);
  // Stops the endpoint (waiting for a scrape in progress) before anything it uses goes away.
  ~Observability();
  Observability(const Observability&) = delete;
  Observability& operator=(const Observability&) = delete;

  const std::shared_ptr<DaemonMetrics>& metrics() const { return metrics_; }
  std::shared_ptr<Middleware> middleware() const;
  // The gateway to ask for status at each scrape. Thread-safe.
  void attach(caf::actor gateway);
  uint16_t port() const;

 private:
  Observability(caf::actor_system& system, Options options);
  std::string scrape();

  caf::actor_system& system_;
  Options options_;
  std::shared_ptr<DaemonMetrics> metrics_;
  std::mutex probe_mutex_;  // one probe at a time: guards probe_
  std::unique_ptr<pg::HealthProbe> probe_;
  std::mutex scrape_mutex_;  // one scrape at a time: it clears and refills families
  std::mutex mutex_;         // guards gateway_
  caf::actor gateway_;
  std::unique_ptr<metrics::HttpExporter> exporter_;  // last: stops first
};

}  // namespace cqrs::actors
