// The demo web page's routes, its dispatches through the gateway and its change listener.
#include "actors/web.hpp"

#include <caf/all.hpp>
#include <set>

#include "actors/client.hpp"
#include "actors/log.hpp"
#include "actors/messages.hpp"
#include "actors/web_assets.hpp"
#include "cqrs/pg/connection.hpp"
#include "giftcard/giftcard_projection.hpp"

namespace cqrs::actors {
namespace {

using metrics::HttpRequest;
using metrics::HttpResponse;

// Connections kept open between API reads; more are opened when reads overlap.
constexpr size_t kIdleConnections = 2;
// How soon the listener notices a stop; how long it waits before reconnecting.
constexpr auto kListenWait = std::chrono::milliseconds(200);
constexpr auto kReconnectDelay = std::chrono::seconds(1);

HttpResponse json_response(int status, std::string body) {
  return {status, "application/json", std::move(body), {{"Cache-Control", "no-store"}}};
}

HttpResponse error_response(int status, const Error& error) {
  return json_response(status, DispatchReply::from_error(error).canonical());
}

// The HTTP status of a dispatch reply: 200 ok; 422 a domain rejection; for errors, 400 bad input,
// 403 a process manager's command (internal_command), 413 too large (the command, or the events
// it made for the store), 503 cqrsd cannot take it now, 504 no answer in time, 500 anything else.
int http_status(const DispatchReply& reply) {
  static const std::set<std::string, std::less<>> kBadInput = {
      "invalid_command", "unregistered_command", "invalid_argument", "invalid_payload"};
  static const std::set<std::string, std::less<>> kUnavailable = {
      "overloaded", "shutting_down", "store_unavailable", "too_many_attempts", "not_ready"};
  if (reply.ok()) return 200;
  if (reply.status == "rejected") return 422;
  if (kBadInput.count(reply.error) != 0) return 400;
  if (reply.error == "internal_command") return 403;
  static const std::set<std::string, std::less<>> kTooLarge = {
      "command_too_large", "event_too_large", "append_too_large"};
  if (kTooLarge.count(reply.error) != 0) return 413;
  if (kUnavailable.count(reply.error) != 0) return 503;
  if (reply.error == "timeout" || reply.error == "consistency_timeout") return 504;
  return 500;
}

Error not_ready() {
  return Error(ErrorKind::kUnavailable, "not_ready", "cqrsd is starting; retry in a moment");
}

}  // namespace

WebUi::WebUi(caf::actor_system& system, Options options)
    : system_(system), options_(std::move(options)), hub_(std::make_shared<metrics::EventHub>()) {}

WebUi::~WebUi() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (listener_.joinable()) listener_.join();
}

void WebUi::add_routes(metrics::HttpExporter::Routes& routes) {
  for (const WebAsset& asset : web_assets()) {
    HttpResponse response{200,
                          std::string(asset.content_type),
                          std::string(asset.body),
                          {{"Cache-Control", "no-cache"}}};
    std::string pattern = asset.path == "/index.html" ? "/|/index\\.html" : std::string();
    if (pattern.empty()) {
      for (char ch : asset.path) {
        if (ch == '.') pattern += '\\';
        pattern += ch;
      }
    }
    routes.routes.push_back(
        {pattern, {"GET"}, [response](const HttpRequest&) { return response; }});
  }
  routes.routes.push_back(
      {"/api/giftcards", {"GET"}, [this](const HttpRequest&) { return list_cards(); }});
  routes.routes.push_back({"/api/commands/([^/]+)", {"POST"}, [this](const HttpRequest& request) {
                             return dispatch(request.captures.at(0), request.body);
                           }});
  routes.streams.push_back({"/api/giftcards/events", "giftcards", hub_});
  routes.max_body_bytes = options_.max_command_bytes;
}

void WebUi::attach(caf::actor gateway) {
  std::lock_guard lock(mutex_);
  gateway_ = std::move(gateway);
  if (!listener_.joinable()) listener_ = std::thread([this] { listen_for_changes(); });
}

std::unique_ptr<pg::Connection> WebUi::take_connection() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->still_open()) return conn;
    }
  }
  auto opened = pg::Connection::open(options_.db_url);
  if (!opened) return nullptr;
  return std::move(opened).value();
}

void WebUi::give_back(std::unique_ptr<pg::Connection> conn) {
  std::lock_guard lock(mutex_);
  if (conn->is_ok() && idle_.size() < kIdleConnections) idle_.push_back(std::move(conn));
}

HttpResponse WebUi::list_cards() {
  auto conn = take_connection();
  if (!conn) {
    return error_response(503, Error::unavailable("cannot connect to PostgreSQL"));
  }
  auto summary = giftcard::read_summary(*conn, options_.max_cards);
  give_back(std::move(conn));
  if (!summary) return error_response(503, summary.error());
  return json_response(200, summary->dump());
}

HttpResponse WebUi::dispatch(const std::string& type, const std::string& body) {
  caf::actor gateway;
  {
    std::lock_guard lock(mutex_);
    gateway = gateway_;
  }
  if (!gateway) return error_response(503, not_ready());
  // Bodies over max_command_bytes never get here: the endpoint answers them 413 (add_routes).
  DispatchOptions options;
  options.timeout = options_.command_timeout;
  std::string envelope;
  try {
    envelope = Client::envelope(type, body, options);
  } catch (const nlohmann::json::exception&) {
    return error_response(
        400, Error::invalid("invalid_command", "the command type or body is not valid UTF-8"));
  }
  std::optional<DispatchReply> reply;
  {
    caf::scoped_actor self{system_};
    // A little longer than the gateway's own timeout, so the gateway's answer wins.
    self->request(gateway, options_.command_timeout + std::chrono::seconds(1), dispatch_atom::value,
                  envelope)
        .receive([&](std::string& text) { reply = DispatchReply::parse(text); },
                 [&](caf::error& err) {
                   std::string code =
                       err == caf::sec::request_timeout ? "timeout" : "dispatch_failed";
                   reply = DispatchReply::from_error(
                       Error(ErrorKind::kUnavailable, code, system_.render(err)));
                 });
  }
  return json_response(http_status(*reply), reply->canonical());
}

// Waits for notifications on the summary's channel and publishes a fresh read after each burst,
// at most every kMinRefresh. Listening starts before the first read, so no commit between the
// two goes unnoticed; after a reconnect the summary is read again (notifications may be lost).
void WebUi::listen_for_changes() {
  std::unique_ptr<pg::Connection> conn;
  bool stale = true;
  auto last_read = std::chrono::steady_clock::now() - kMinRefresh;
  auto stopped_within = [this](auto delay) {
    std::unique_lock lock(mutex_);
    return stop_.wait_for(lock, delay, [this] { return stopping_; });
  };
  while (!stopped_within(std::chrono::milliseconds(0))) {
    if (!conn || !conn->is_ok()) {
      conn.reset();
      auto opened = pg::Connection::open(options_.db_url);
      if (!opened || !(*opened)->listen(giftcard::kSummaryChannel)) {
        if (stopped_within(kReconnectDelay)) break;
        continue;
      }
      conn = std::move(opened).value();
      stale = true;
    }
    auto now = std::chrono::steady_clock::now();
    if (stale && now - last_read >= kMinRefresh) {
      last_read = now;
      auto summary = giftcard::read_summary(*conn, options_.max_cards);
      if (summary) {
        hub_->publish(summary->dump());
        stale = false;
      } else {
        log::warn("web: cannot read giftcard_summary", {{"error", summary.error().message()}});
        if (stopped_within(kReconnectDelay)) break;
        continue;
      }
    }
    auto wait = stale ? std::chrono::duration_cast<std::chrono::milliseconds>(
                            kMinRefresh - (std::chrono::steady_clock::now() - last_read))
                      : kListenWait;
    auto notified = conn->wait_notifications(static_cast<int>(std::max<int64_t>(0, wait.count())));
    if (notified && !notified->empty()) stale = true;
  }
}

}  // namespace cqrs::actors
