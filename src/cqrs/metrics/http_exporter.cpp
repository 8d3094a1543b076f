// HttpExporter on cpp-httplib (Debian's libcpp-httplib): the only file that includes its header.
#include "cqrs/metrics/http_exporter.hpp"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "cqrs/metrics/registry.hpp"

namespace cqrs::metrics {
namespace {

// Idle keep-alive connections hold a serving thread until this passes; requests on one
// connection at most.
constexpr size_t kKeepAliveMaxRequests = 100;
// How soon a reconnecting EventSource tries again after the stream ended.
constexpr int kStreamRetryMs = 1000;

template <class Json>
std::string dump(const Json& body) {
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The shape of cqrsd's error replies (status first, as cqrsctl prints them).
std::string error_body(std::string_view code, std::string_view message) {
  nlohmann::ordered_json body;
  body["status"] = "error";
  body["error"] = code;
  body["message"] = message;
  return dump(body);
}

void apply(const HttpResponse& from, httplib::Response& to) {
  to.status = from.status;
  for (const auto& [name, value] : from.headers) to.set_header(name, value);
  to.set_content(from.body, from.content_type.c_str());
}

// The body of an error answer that has none of its own.
std::string default_error_body(int status, size_t max_body_bytes) {
  switch (status) {
    case 400:
      return error_body("bad_request", "the request is malformed");
    case 404:
      return error_body("not_found", "no such path");
    case 405:
      return error_body("method_not_allowed", "the path does not take this method");
    case 413:
      return error_body("command_too_large", "the body exceeds " + std::to_string(max_body_bytes) +
                                                 " bytes (limits.max_command_bytes)");
    default:
      return error_body("http_" + std::to_string(status), "the request failed");
  }
}

// A body over the limit is still read, up to this much more, so that the client gets its 413
// instead of a connection reset while it is still sending; beyond that the connection is dropped.
constexpr size_t kMaxDrainBytes = 1 << 20;

void add_route(httplib::Server& server, HttpExporter::Route route, size_t max_body_bytes) {
  std::string allow;
  for (const auto& method : route.methods) allow += (allow.empty() ? "" : ", ") + method;
  // Reads the body through a receiver, so that the limit holds for chunked bodies too (the
  // library checks only a Content-Length against its payload limit).
  auto handle = [route, allow, max_body_bytes](const httplib::Request& request,
                                               httplib::Response& response,
                                               const httplib::ContentReader* reader) {
    std::string method = request.method == "HEAD" ? "GET" : request.method;
    if (std::find(route.methods.begin(), route.methods.end(), method) == route.methods.end()) {
      response.status = 405;
      response.set_header("Allow", allow);
      return;
    }
    std::string body = request.body;
    size_t received = body.size();
    if (reader != nullptr) {
      bool complete = (*reader)([&](const char* data, size_t length) {
        received += length;
        if (max_body_bytes == 0 || received <= max_body_bytes) {
          body.append(data, length);
          return true;
        }
        return received <= max_body_bytes + kMaxDrainBytes;
      });
      if (!complete) {
        // Cut off: by the receiver above, by the library (a Content-Length past the payload
        // limit), or by a malformed or interrupted body.
        uint64_t declared =
            std::strtoull(request.get_header_value("Content-Length").c_str(), nullptr, 10);
        bool too_large =
            max_body_bytes != 0 && (received > max_body_bytes || declared > max_body_bytes);
        response.status = too_large ? 413 : 400;
        return;
      }
    }
    if (max_body_bytes != 0 && received > max_body_bytes) {
      response.status = 413;
      return;
    }
    HttpRequest in{request.method, request.path, {}, std::move(body)};
    for (size_t idx = 1; idx < request.matches.size(); ++idx) {
      in.captures.push_back(request.matches[idx].str());
    }
    apply(route.handle(in), response);
  };
  auto without_body = [handle](const httplib::Request& request, httplib::Response& response) {
    handle(request, response, nullptr);
  };
  auto with_body = [handle](const httplib::Request& request, httplib::Response& response,
                            const httplib::ContentReader& reader) {
    handle(request, response, &reader);
  };
  server.Get(route.pattern, without_body);
  server.Post(route.pattern, with_body);
  server.Put(route.pattern, with_body);
  server.Patch(route.pattern, with_body);
  server.Delete(route.pattern, with_body);
  server.Options(route.pattern, without_body);
}

void add_stream(httplib::Server& server, HttpExporter::EventStream stream, size_t max_streams) {
  server.Get(
      stream.path, [stream, max_streams](const httplib::Request&, httplib::Response& response) {
        if (!stream.hub->try_open(max_streams)) {
          response.status = 503;
          response.set_header("Retry-After", "2");
          response.set_content(error_body("too_many_streams",
                                          std::to_string(max_streams) + " event streams are open"),
                               "application/json");
          return;
        }
        response.set_header("Cache-Control", "no-cache");
        auto seen = std::make_shared<uint64_t>(0);
        response.set_chunked_content_provider(
            "text/event-stream",
            [stream, seen](size_t offset, httplib::DataSink& sink) {
              std::string chunk =
                  offset == 0 ? "retry: " + std::to_string(kStreamRetryMs) + "\n\n" : std::string();
              EventHub::Next next = stream.hub->next(*seen, stream.keepalive);
              if (next.kind == EventHub::Next::Kind::kClosed) {
                if (!chunk.empty() && !sink.write(chunk.data(), chunk.size())) return false;
                sink.done();
                return true;
              }
              if (next.kind == EventHub::Next::Kind::kMessage) {
                chunk += "event: " + stream.event + "\ndata: " + next.message + "\n\n";
              } else {
                chunk += ": keep-alive\n\n";
              }
              return sink.write(chunk.data(), chunk.size());
            },
            [hub = stream.hub](bool) { hub->release(); });
      });
}

}  // namespace

struct HttpExporter::Impl {
  httplib::Server server;
  std::vector<std::shared_ptr<EventHub>> hubs;
  std::thread listener;
  std::atomic<bool> listener_done{false};
};

HttpExporter::HttpExporter(std::unique_ptr<Impl> impl, uint16_t port)
    : impl_(std::move(impl)), port_(port) {}

HttpExporter::~HttpExporter() {
  for (auto& hub : impl_->hubs) hub->close();
  impl_->server.stop();
  if (impl_->listener.joinable()) impl_->listener.join();
}

Result<std::unique_ptr<HttpExporter>> HttpExporter::start(const std::string& host, uint16_t port,
                                                          Routes routes) {
  auto impl = std::make_unique<Impl>();
  httplib::Server& server = impl->server;
  // A bounded pool: scrapes, probes, API requests and event streams at once, and no more
  // threads than that whatever the number of clients (further connections wait in the queue).
  server.new_task_queue = [] { return new httplib::ThreadPool(kServingThreads); };
  server.set_keep_alive_max_count(kKeepAliveMaxRequests);
  server.set_keep_alive_timeout(kKeepAliveSeconds);
  server.set_read_timeout(std::chrono::seconds(2));
  server.set_write_timeout(std::chrono::seconds(2));
  size_t max_body_bytes = routes.max_body_bytes;
  if (max_body_bytes != 0) {
    // Larger bodies are not read at all (the receiver below drains up to this much).
    server.set_payload_max_length(max_body_bytes + kMaxDrainBytes);
  }
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
    response.set_content(dump(body), "application/json");
  });
  for (auto& stream : routes.streams) {
    impl->hubs.push_back(stream.hub);
    add_stream(server, std::move(stream), routes.max_streams);
  }
  for (auto& route : routes.routes) add_route(server, std::move(route), max_body_bytes);
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body_bytes](const httplib::Request&, httplib::Response& response) {
        if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        response.set_content(default_error_body(response.status, max_body_bytes),
                             "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
        response.status = 500;
        response.set_content(R"({"status":"error"})", "application/json");
      });

  // cpp-httplib's default sets SO_REUSEPORT, with which a second process binds the same port
  // without an error and takes half the requests (scrapes, health checks, the web console):
  // SO_REUSEADDR only, so a port in use is refused.
  server.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
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
