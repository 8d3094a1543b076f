// The gift card web page's HTTP side, against a real cqrsd (--web.enabled on the metrics port):
// the embedded page and its content types, GET /api/giftcards (rows and totals from the read
// model), POST /api/commands/<Type> (cqrsctl's reply shape through the same gateway, and the
// status codes of rejections, bad input, oversized bodies and wrong methods), the Server-Sent
// Events stream (an event within a second of a command; bounded streams beside scrapes), and a
// prompt shutdown with a stream open.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct HttpReply {
  int status = 0;  // 0: no answer
  std::string body;
  std::string content_type;
  std::string allow;

  json parsed() const { return json::parse(body, nullptr, false); }
};

HttpReply from(const httplib::Result& response) {
  if (!response) return {};
  return {response->status, response->body, response->get_header_value("Content-Type"),
          response->get_header_value("Allow")};
}

httplib::Client client_for(uint16_t port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2s);
  client.set_read_timeout(15s);
  return client;
}

HttpReply http_get(uint16_t port, const std::string& path) {
  return from(client_for(port).Get(path));
}

HttpReply http_post(uint16_t port, const std::string& path, const std::string& body) {
  return from(client_for(port).Post(path, body, "application/json"));
}

// One Server-Sent Events client on a thread of its own, collecting the events it receives.
class EventStreamClient {
 public:
  struct Event {
    std::string name;
    std::string data;
    Clock::time_point received;
  };

  EventStreamClient(uint16_t port, std::string path) : client_("127.0.0.1", port) {
    client_.set_connection_timeout(2s);
    client_.set_read_timeout(30s);
    thread_ = std::thread([this, path = std::move(path)] {
      auto result = client_.Get(
          path,
          [this](const httplib::Response& response) {
            std::lock_guard lock(mutex_);
            status_ = response.status;
            content_type_ = response.get_header_value("Content-Type");
            changed_.notify_all();
            return true;
          },
          [this](const char* data, size_t size) { return receive(std::string(data, size)); });
      std::lock_guard lock(mutex_);
      ended_ = true;
      changed_.notify_all();
    });
  }
  ~EventStreamClient() {
    client_.stop();
    thread_.join();
  }

  // Waits until `condition` holds for the events so far (and the stream state), or `timeout`.
  bool wait(const std::function<bool(const std::vector<Event>&)>& condition,
            std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return condition(events_); });
  }
  bool wait_for_status(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return status_ != 0 || ended_; });
  }
  bool wait_ended(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return ended_; });
  }
  int status() {
    std::lock_guard lock(mutex_);
    return status_;
  }
  std::string content_type() {
    std::lock_guard lock(mutex_);
    return content_type_;
  }
  std::vector<Event> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  // Splits the stream into events (blank-line separated); comment lines and "retry:" are skipped.
  bool receive(const std::string& chunk) {
    std::lock_guard lock(mutex_);
    buffer_ += chunk;
    size_t end;
    while ((end = buffer_.find("\n\n")) != std::string::npos) {
      std::string block = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      Event event;
      size_t start = 0;
      while (start <= block.size()) {
        size_t stop = block.find('\n', start);
        std::string line =
            block.substr(start, stop == std::string::npos ? std::string::npos : stop - start);
        if (line.rfind("event: ", 0) == 0) event.name = line.substr(7);
        if (line.rfind("data: ", 0) == 0) event.data += line.substr(6);
        if (stop == std::string::npos) break;
        start = stop + 1;
      }
      if (event.name.empty() && event.data.empty()) continue;
      event.received = Clock::now();
      events_.push_back(std::move(event));
    }
    changed_.notify_all();
    return true;
  }

  httplib::Client client_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string buffer_;
  std::vector<Event> events_;
  int status_ = 0;
  std::string content_type_;
  bool ended_ = false;
};

// The card of `card_id` in a giftcards summary, or null.
json card_in(const json& summary, const std::string& card_id) {
  if (!summary.is_object() || !summary.contains("cards")) return nullptr;
  for (const auto& card : summary["cards"]) {
    if (card.value("card_id", "") == card_id) return card;
  }
  return nullptr;
}

bool any_event_lists(const std::vector<EventStreamClient::Event>& events,
                     const std::string& card_id) {
  return std::any_of(events.begin(), events.end(), [&](const auto& event) {
    return event.name == "giftcards" &&
           !card_in(json::parse(event.data, nullptr, false), card_id).is_null();
  });
}

// The keys of a JSON object in the order its text lists them.
std::vector<std::string> keys_in_order(const std::string& text) {
  std::vector<std::string> keys;
  auto object = nlohmann::ordered_json::parse(text, nullptr, false);
  if (!object.is_object()) return keys;
  for (auto it = object.begin(); it != object.end(); ++it) keys.push_back(it.key());
  return keys;
}

class WebTest : public DaemonTest {
 protected:
  std::vector<std::string> daemon_args() override {
    web_port_ = free_local_port();
    return {"--metrics.port=" + std::to_string(web_port_), "--web.enabled"};
  }

  uint16_t web_port_ = 0;
};

TEST_F(WebTest, ServesThePageAndItsAssetsWithTheirContentTypes) {
  HttpReply page = http_get(web_port_, "/");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("<table id=\"cards\">"), std::string::npos);
  EXPECT_NE(page.body.find("src=\"/app.js\""), std::string::npos);
  EXPECT_EQ(page.body.find("http://"), std::string::npos)
      << "the page loads nothing from elsewhere";
  EXPECT_EQ(page.body.find("https://"), std::string::npos);
  EXPECT_EQ(http_get(web_port_, "/index.html").body, page.body);

  HttpReply script = http_get(web_port_, "/app.js");
  EXPECT_EQ(script.status, 200);
  EXPECT_EQ(script.content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(script.body.find("EventSource"), std::string::npos);
  HttpReply style = http_get(web_port_, "/style.css");
  EXPECT_EQ(style.status, 200);
  EXPECT_EQ(style.content_type, "text/css; charset=utf-8");

  HttpReply missing = http_get(web_port_, "/nothing.js");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.parsed().value("error", ""), "not_found") << missing.body;
}

TEST_F(WebTest, ListsTheReadModelWithTotals) {
  HttpReply empty = http_get(web_port_, "/api/giftcards");
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.content_type, "application/json");
  EXPECT_EQ(empty.parsed(), json({{"cards", json::array()},
                                  {"totals", {{"cards", 0}, {"outstanding", 0}}},
                                  {"truncated", false}}));

  ASSERT_EQ(dispatch(port(), "IssueGiftCard", {{"card_id", "a"}, {"amount", 1000}}).status(), "ok");
  ASSERT_EQ(dispatch(port(), "IssueGiftCard", {{"card_id", "b"}, {"amount", 300}}).status(), "ok");
  ASSERT_EQ(dispatch(port(), "IssueGiftCard", {{"card_id", "c"}, {"amount", 50}}).status(), "ok");
  ASSERT_EQ(dispatch(port(), "RedeemGiftCard", {{"card_id", "a"}, {"amount", 250}}).status(), "ok");
  ASSERT_EQ(dispatch(port(), "CancelGiftCard", {{"card_id", "b"}}).status(), "ok");

  json summary;
  ASSERT_TRUE(wait_until(
      [&] {
        summary = http_get(web_port_, "/api/giftcards").parsed();
        return card_in(summary, "b").value("status", "") == "cancelled" &&
               card_in(summary, "a").value("remaining_value", 0) == 750;
      },
      10s))
      << summary.dump();
  EXPECT_EQ(summary["totals"], json({{"cards", 3}, {"outstanding", 800}}))
      << "outstanding sums the remaining value of active cards only";
  EXPECT_EQ(summary["truncated"], false);
  ASSERT_EQ(summary["cards"].size(), 3u);
  // Newest first.
  EXPECT_EQ(summary["cards"][0]["card_id"], "c");
  EXPECT_EQ(summary["cards"][2]["card_id"], "a");
  json a = card_in(summary, "a");
  EXPECT_EQ(a["initial_value"], 1000);
  EXPECT_EQ(a["status"], "active");
  // The same instant as the read model's row, in UTC.
  EXPECT_EQ(
      a["issued_at"].get<std::string>(),
      scalar("SELECT to_char(issued_at AT TIME ZONE 'UTC', "
             "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM giftcard_summary WHERE card_id = 'a'"));
  EXPECT_TRUE(a.contains("updated_at"));
}

// The server ends every session of the database while cqrsd is idle (as a restart would): the
// console's pooled connection and the store's are replaced before they are used, so neither the
// next listing nor the next command fails.
TEST_F(WebTest, ListingAndCommandsWorkRightAfterTheServerEndedTheIdleSessions) {
  ASSERT_EQ(dispatch(port(), "IssueGiftCard", {{"card_id", "before"}, {"amount", 10}}).status(),
            "ok");
  // Listed once projected; the listing leaves a pooled connection.
  ASSERT_TRUE(wait_until(
      [&] { return !card_in(http_get(web_port_, "/api/giftcards").parsed(), "before").is_null(); },
      10s));
  std::string ended = scalar(
      "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
      " WHERE datname = current_database() AND pid <> pg_backend_pid()");
  ASSERT_NE(ended, "0") << "no session of cqrsd was ended";

  HttpReply listed = http_get(web_port_, "/api/giftcards");
  EXPECT_EQ(listed.status, 200) << listed.body;
  EXPECT_FALSE(card_in(listed.parsed(), "before").is_null()) << listed.body;
  CtlReply issued = dispatch(port(), "IssueGiftCard", {{"card_id", "after"}, {"amount", 10}});
  EXPECT_EQ(issued.status(), "ok") << issued.describe();
}

TEST_F(WebTest, AnIssuedCommandAnswersLikeCqrsctlAndGoesThroughTheGateway) {
  HttpReply issued =
      http_post(web_port_, "/api/commands/IssueGiftCard", R"({"card_id":"w1","amount":5000})");
  ASSERT_EQ(issued.status, 200) << issued.body;
  EXPECT_EQ(issued.content_type, "application/json");
  CtlReply ctl = dispatch(port(), "IssueGiftCard", {{"card_id", "w2"}, {"amount", 5000}});
  ASSERT_EQ(ctl.status(), "ok") << ctl.describe();
  ASSERT_FALSE(ctl.process.stdout_lines.empty());
  // The same keys in the same order as cqrsctl prints, and the same values but for the ids.
  EXPECT_EQ(keys_in_order(issued.body), keys_in_order(ctl.process.stdout_lines[0]));
  json reply = issued.parsed();
  EXPECT_EQ(reply["status"], "ok");
  EXPECT_EQ(reply["stream_id"], "giftcard-w1");
  EXPECT_EQ(reply["version"], 1);
  EXPECT_EQ(
      reply["events"],
      json::array({{{"type", "GiftCardIssued"}, {"data", {{"card_id", "w1"}, {"amount", 5000}}}}}));

  // Stored like any command, with the reply's command id.
  auto stored = events("giftcard-w1");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].type, "GiftCardIssued");
  EXPECT_EQ(stored[0].command_id(), reply.value("command_id", "?"));
  // Counted by the same middleware as commands from cqrsctl.
  HttpReply metrics = http_get(web_port_, "/metrics");
  EXPECT_NE(metrics.body.find("cqrs_commands_total{type=\"IssueGiftCard\",outcome=\"ok\"} 2"),
            std::string::npos)
      << metrics.body;
}

TEST_F(WebTest, ADomainRejectionIs422WithItsCodeAndMessage) {
  ASSERT_EQ(http_post(web_port_, "/api/commands/IssueGiftCard", R"({"card_id":"r1","amount":100})")
                .status,
            200);
  HttpReply rejected =
      http_post(web_port_, "/api/commands/RedeemGiftCard", R"({"card_id":"r1","amount":900})");
  EXPECT_EQ(rejected.status, 422) << rejected.body;
  json reply = rejected.parsed();
  EXPECT_EQ(reply.value("status", ""), "rejected");
  EXPECT_EQ(reply.value("error", ""), "insufficient_balance");
  EXPECT_NE(reply.value("message", "").find("insufficient balance"), std::string::npos);
  EXPECT_EQ(keys_in_order(rejected.body)[0], "status");
  EXPECT_EQ(events("giftcard-r1").size(), 1u) << "a rejection appends nothing";

  HttpReply unknown_card =
      http_post(web_port_, "/api/commands/CancelGiftCard", R"({"card_id":"nobody"})");
  EXPECT_EQ(unknown_card.status, 422);
  EXPECT_EQ(unknown_card.parsed().value("error", ""), "gift_card_not_found");
}

TEST_F(WebTest, BadInputIs400WithTheErrorCode) {
  struct Case {
    std::string path;
    std::string body;
    std::string code;
  };
  const Case cases[] = {
      {"/api/commands/IssueGiftCard", R"({"card_id":"x","amount":)", "invalid_command"},
      {"/api/commands/IssueGiftCard", "[1,2]", "invalid_command"},
      {"/api/commands/IssueGiftCard", R"({"card_id":"x"})", "invalid_command"},
      {"/api/commands/IssueGiftCard", R"({"card_id":"x","amount":"ten"})", "invalid_command"},
      {"/api/commands/IssueGiftCard", "\xff\xfe", "invalid_command"},
      {"/api/commands/PaintGiftCard", R"({"card_id":"x"})", "unregistered_command"},
  };
  for (const Case& each : cases) {
    HttpReply reply = http_post(web_port_, each.path, each.body);
    EXPECT_EQ(reply.status, 400) << each.path << " " << each.body << ": " << reply.body;
    EXPECT_EQ(reply.parsed().value("status", ""), "error") << reply.body;
    EXPECT_EQ(reply.parsed().value("error", ""), each.code) << each.body << ": " << reply.body;
  }
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events"), "0");
}

TEST_F(WebTest, AProcessManagersCommandIs403) {
  HttpReply reply = http_post(web_port_, "/api/commands/FailTransfer",
                              R"({"transfer_id":"t1","reason":"by hand"})");
  EXPECT_EQ(reply.status, 403) << reply.body;
  EXPECT_EQ(reply.parsed().value("error", ""), "internal_command") << reply.body;
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events"), "0");
}

TEST_F(WebTest, OnlyPostDispatchesAndOnlyGetLists) {
  HttpReply get_command = http_get(web_port_, "/api/commands/IssueGiftCard");
  EXPECT_EQ(get_command.status, 405);
  EXPECT_EQ(get_command.allow, "POST");
  EXPECT_EQ(get_command.parsed().value("error", ""), "method_not_allowed") << get_command.body;
  HttpReply delete_command = from(client_for(web_port_).Delete("/api/commands/IssueGiftCard"));
  EXPECT_EQ(delete_command.status, 405);
  HttpReply post_list = http_post(web_port_, "/api/giftcards", "{}");
  EXPECT_EQ(post_list.status, 405);
  EXPECT_EQ(post_list.allow, "GET");
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events"), "0");
}

TEST_F(WebTest, StreamPushesTheChangedSummaryWithinASecondOfACommand) {
  EventStreamClient stream(web_port_, "/api/giftcards/events");
  ASSERT_TRUE(stream.wait_for_status(5s));
  ASSERT_EQ(stream.status(), 200);
  EXPECT_EQ(stream.content_type(), "text/event-stream");
  // The current summary comes first, at once.
  ASSERT_TRUE(stream.wait([](const auto& events) { return !events.empty(); }, 5s));
  json first = json::parse(stream.events()[0].data, nullptr, false);
  EXPECT_EQ(stream.events()[0].name, "giftcards");
  EXPECT_EQ(first["totals"]["cards"], 0) << stream.events()[0].data;

  for (const char* card : {"s1", "s2", "s3"}) {
    CtlReply issued = dispatch(port(), "IssueGiftCard", {{"card_id", card}, {"amount", 700}});
    ASSERT_EQ(issued.status(), "ok") << issued.describe();
    auto acknowledged = Clock::now();
    ASSERT_TRUE(stream.wait([&](const auto& events) { return any_event_lists(events, card); }, 5s))
        << card << " never came through the stream";
    auto events = stream.events();
    auto pushed = std::find_if(events.begin(), events.end(),
                               [&](const auto& event) { return any_event_lists({event}, card); });
    auto delay =
        std::chrono::duration_cast<std::chrono::milliseconds>(pushed->received - acknowledged);
    EXPECT_LT(delay, 1000ms) << card << " came " << delay.count() << " ms after the reply";
  }
  json last = json::parse(stream.events().back().data, nullptr, false);
  EXPECT_EQ(last["totals"], json({{"cards", 3}, {"outstanding", 2100}}));
}

TEST_F(WebTest, StreamsAreBoundedAndLeaveThreadsForScrapesAndCommands) {
  std::vector<std::unique_ptr<EventStreamClient>> streams;
  for (int idx = 0; idx < 4; ++idx) {
    streams.push_back(std::make_unique<EventStreamClient>(web_port_, "/api/giftcards/events"));
    ASSERT_TRUE(streams.back()->wait([](const auto& events) { return !events.empty(); }, 5s));
  }
  HttpReply refused = http_get(web_port_, "/api/giftcards/events");
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.parsed().value("error", ""), "too_many_streams") << refused.body;

  // With every stream taken, scrapes, probes, reads and commands still answer, several at once.
  std::vector<std::thread> clients;
  std::atomic<int> answered{0};
  for (int idx = 0; idx < 3; ++idx) {
    clients.emplace_back([&, idx] {
      for (int round = 0; round < 5; ++round) {
        if (http_get(web_port_, "/metrics").status == 200) ++answered;
        if (http_get(web_port_, "/healthz").status == 200) ++answered;
        if (http_get(web_port_, "/api/giftcards").status == 200) ++answered;
      }
      std::string card = "p" + std::to_string(idx);
      if (http_post(web_port_, "/api/commands/IssueGiftCard",
                    json({{"card_id", card}, {"amount", 10}}).dump())
              .status == 200) {
        ++answered;
      }
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(answered.load(), 3 * 5 * 3 + 3);
  // Every open stream sees the new cards.
  for (auto& stream : streams) {
    EXPECT_TRUE(stream->wait(
        [](const auto& events) {
          return any_event_lists(events, "p0") && any_event_lists(events, "p1") &&
                 any_event_lists(events, "p2");
        },
        5s));
  }
}

TEST_F(WebTest, DaemonStopsPromptlyWithAStreamOpen) {
  EventStreamClient stream(web_port_, "/api/giftcards/events");
  ASSERT_TRUE(stream.wait([](const auto& events) { return !events.empty(); }, 5s));
  auto started = Clock::now();
  EXPECT_EQ(daemon_->stop(true, 10s), 0);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  EXPECT_LT(took, 3000ms) << "stopping took " << took.count() << " ms";
  EXPECT_TRUE(stream.wait_ended(2s)) << "the stream did not end with the daemon";
  daemon_.reset();
}

class WebOffTest : public SystemTest {};

TEST_F(WebOffTest, ThePageIsOffUnlessEnabledAndNeedsTheMetricsPort) {
  uint16_t metrics_port = free_local_port();
  auto daemon = start_daemon({"--metrics.port=" + std::to_string(metrics_port)});
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(http_get(metrics_port, "/healthz").status, 200);
  EXPECT_EQ(http_get(metrics_port, "/").status, 404);
  EXPECT_EQ(http_get(metrics_port, "/api/giftcards").status, 404);
  EXPECT_EQ(http_post(metrics_port, "/api/commands/IssueGiftCard", "{}").status, 404);
  daemon->stop();

  ProcessResult refused =
      run_process({CQRSD_BIN, "--config-file=/dev/null", "--db.url=" + db_->url(),
                   "--server.port=0", "--web.enabled"},
                  "", 30s);
  EXPECT_EQ(refused.exit_code, 1) << refused.describe();
  EXPECT_NE(refused.stderr_text.find("web.enabled needs metrics.port"), std::string::npos)
      << refused.describe();
}

class WebLimitTest : public WebTest {
 protected:
  std::vector<std::string> daemon_args() override {
    auto args = WebTest::daemon_args();
    args.push_back("--limits.max_command_bytes=1024");
    return args;
  }
};

TEST_F(WebLimitTest, BodiesOverTheCommandLimitAre413ChunkedOrNot) {
  std::string at_limit = R"({"card_id":"big","amount":5})";
  at_limit.append(1024 - at_limit.size(), ' ');
  ASSERT_EQ(at_limit.size(), 1024u);
  HttpReply accepted = http_post(web_port_, "/api/commands/IssueGiftCard", at_limit);
  EXPECT_EQ(accepted.status, 200) << accepted.body;

  std::string over = at_limit + " ";
  HttpReply refused = http_post(web_port_, "/api/commands/IssueGiftCard", over);
  EXPECT_EQ(refused.status, 413) << refused.body;
  EXPECT_EQ(refused.parsed().value("error", ""), "command_too_large") << refused.body;
  HttpReply far_over =
      http_post(web_port_, "/api/commands/IssueGiftCard", std::string(64 * 1024, ' '));
  EXPECT_EQ(far_over.status, 413);
  EXPECT_EQ(far_over.parsed().value("error", ""), "command_too_large") << far_over.body;
  EXPECT_EQ(events("giftcard-big").size(), 1u);

  // A chunked body has no length to check up front: it is read up to the limit.
  auto send_chunked = [&](std::string body) {
    return from(client_for(web_port_).Post(
        "/api/commands/IssueGiftCard",
        [body](size_t offset, httplib::DataSink& sink) {
          constexpr size_t kChunk = 100;
          if (offset < body.size()) {
            size_t length = std::min(kChunk, body.size() - offset);
            sink.write(body.data() + offset, length);
          } else {
            sink.done();
          }
          return true;
        },
        "application/json"));
  };
  HttpReply chunked = send_chunked(R"({"card_id":"chunked","amount":5})");
  EXPECT_EQ(chunked.status, 200) << chunked.body;
  EXPECT_EQ(events("giftcard-chunked").size(), 1u);
  std::string chunked_over = R"({"card_id":"chunked-over","amount":5})";
  chunked_over.append(2048, ' ');
  HttpReply refused_chunked = send_chunked(chunked_over);
  EXPECT_EQ(refused_chunked.status, 413) << refused_chunked.body;
  EXPECT_EQ(refused_chunked.parsed().value("error", ""), "command_too_large");
  EXPECT_TRUE(events("giftcard-chunked-over").empty());
}

}  // namespace
}  // namespace cqrs::system_test
