// HttpExporter on cpp-httplib (Debian's libcpp-httplib): the only file that includes its header.
#include "cqrs/metrics/http_exporter.hpp"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "cqrs/metrics/registry.hpp"

namespace cqrs::metrics {

struct HttpExporter::Impl {
  httplib::Server server;
  std::thread listener;
  std::atomic<bool> listener_done{false};
};

HttpExporter::HttpExporter(std::unique_ptr<Impl> impl, uint16_t port)
    : impl_(std::move(impl)), port_(port) {}

HttpExporter::~HttpExporter() {
  impl_->server.stop();
  if (impl_->listener.joinable()) impl_->listener.join();
}

Result<std::unique_ptr<HttpExporter>> HttpExporter::start(const std::string& host, uint16_t port,
                                                          Routes routes) {
  auto impl = std::make_unique<Impl>();
  httplib::Server& server = impl->server;
  // One serving thread: scrapes and probes are rare, and the callbacks then never overlap.
  server.new_task_queue = [] { return new httplib::ThreadPool(1); };
  server.set_keep_alive_max_count(1);
  server.set_read_timeout(std::chrono::seconds(2));
  server.set_write_timeout(std::chrono::seconds(2));
  server.Get("/metrics", [metrics = std::move(routes.metrics)](const httplib::Request&,
                                                               httplib::Response& response) {
    response.set_content(metrics(), kPrometheusContentType);
  });
  server.Get("/healthz", [health = std::move(routes.health)](const httplib::Request&,
                                                             httplib::Response& response) {
    HealthReport report = health();
    nlohmann::json body = {{"status", report.ready ? "ok" : "unavailable"}};
    if (!report.ready) body["reason"] = report.reason;
    response.status = report.ready ? 200 : 503;
    response.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                         "application/json");
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
        response.status = 500;
        response.set_content(R"({"status":"error"})", "application/json");
      });

  int bound = port == 0 ? server.bind_to_any_port(host)
                        : (server.bind_to_port(host, port) ? static_cast<int>(port) : -1);
  if (bound <= 0) {
    return Error::invalid(errc::kInvalidArgument, "cannot listen on " + host + ":" +
                                                      std::to_string(port) +
                                                      " (in use, or not an address of this host)");
  }
  Impl& running = *impl;
  running.listener = std::thread([&running] {
    running.server.listen_after_bind();
    running.listener_done = true;
  });
  // stop() only takes effect once the loop runs: wait for it, so a destructor right after
  // start() cannot miss it.
  while (!server.is_running() && !running.listener_done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::unique_ptr<HttpExporter>(
      new HttpExporter(std::move(impl), static_cast<uint16_t>(bound)));
}

}  // namespace cqrs::metrics
