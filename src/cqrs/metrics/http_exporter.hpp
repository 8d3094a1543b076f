// The HTTP endpoint for scrapers and health probes, served from threads of its own (never from
// the actor scheduler):
//   GET /metrics  -> 200, the `metrics` callback's text (Prometheus text format)
//   GET /healthz  -> 200 {"status":"ok"}, or 503 {"status":"unavailable","reason":"..."}
// Anything else is 404. Requests are served one at a time, so the callbacks need not be
// thread-safe with respect to each other and may block (up to their own timeouts); each
// connection is closed after one request, so no idle client holds the serving thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cqrs/result.hpp"

namespace cqrs::metrics {

struct HealthReport {
  bool ready = false;
  std::string reason;  // why not, when not ready
};

class HttpExporter {
 public:
  struct Routes {
    std::function<std::string()> metrics;
    std::function<HealthReport()> health;
  };

  // Listens on host:port (0: a free port) and serves until destroyed.
  // Errors: invalid_argument when the address cannot be bound (in use, not local, ...).
  static Result<std::unique_ptr<HttpExporter>> start(const std::string& host, uint16_t port,
                                                     Routes routes);

  // Stops listening, waits for a request in progress, and joins the threads.
  ~HttpExporter();
  HttpExporter(const HttpExporter&) = delete;
  HttpExporter& operator=(const HttpExporter&) = delete;

  uint16_t port() const { return port_; }

 private:
  struct Impl;
  explicit HttpExporter(std::unique_ptr<Impl> impl, uint16_t port);

  std::unique_ptr<Impl> impl_;
  uint16_t port_;
};

}  // namespace cqrs::metrics
