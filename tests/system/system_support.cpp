// cqrsctl wrappers, cqrs.events reads and the independent gift card fold used by the system tests.
#include "system/system_support.hpp"

#include <thread>

#include "cqrs/uuid.hpp"

namespace cqrs::system_test {
namespace {

// A JSON object for `line`: the line itself when it is one, else {"unparsed": line}.
nlohmann::json parse_object(const std::string& line) {
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
  if (parsed.is_object()) return parsed;
  return {{"unparsed", line}};
}

CtlReply to_reply(ProcessResult process) {
  CtlReply reply;
  reply.json = process.stdout_lines.empty() ? nlohmann::json::object()
                                            : parse_object(process.stdout_lines.front());
  reply.process = std::move(process);
  return reply;
}

}  // namespace

std::string CtlReply::status() const { return json.value("status", ""); }

std::string CtlReply::error() const { return json.value("error", ""); }

std::string new_command_id() { return Uuid::random().to_string(); }

CtlReply dispatch(uint16_t port, std::string_view type, const nlohmann::json& payload,
                  const std::vector<std::string>& extra) {
  return dispatch_text(port, type, payload.dump(), extra);
}

CtlReply dispatch_text(uint16_t port, std::string_view type, std::string_view payload,
                       const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"dispatch", std::string(type), std::string(payload)};
  args.insert(args.end(), extra.begin(), extra.end());
  return to_reply(run_cqrsctl(port, args));
}

CtlReply query_state(uint16_t port, std::string_view aggregate, std::string_view id,
                     const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"state", std::string(aggregate), std::string(id)};
  args.insert(args.end(), extra.begin(), extra.end());
  return to_reply(run_cqrsctl(port, args));
}

BatchReply dispatch_batch(uint16_t port, const std::vector<std::string>& lines, size_t window,
                          std::chrono::milliseconds timeout,
                          const std::vector<std::string>& extra) {
  std::string input;
  for (const auto& line : lines) input += line + "\n";
  BatchReply batch;
  std::vector<std::string> args = {"dispatch", "-", "--window", std::to_string(window)};
  args.insert(args.end(), extra.begin(), extra.end());
  batch.process = run_cqrsctl(port, args, input, timeout);
  for (const auto& line : batch.process.stdout_lines) batch.replies.push_back(parse_object(line));
  return batch;
}

std::string envelope_line(std::string_view type, const nlohmann::json& data,
                          const std::string& command_id) {
  return nlohmann::json{{"type", type}, {"data", data}, {"command_id", command_id}}.dump();
}

std::vector<StoredEvent> read_events(pg::Connection& sql, std::string_view stream_id) {
  std::string query =
      "SELECT stream_id, stream_version, event_type, data::text, metadata::text FROM cqrs.events";
  pg::Params params;
  if (!stream_id.empty()) {
    query += " WHERE stream_id = $1";
    params.add(stream_id);
  }
  query += " ORDER BY stream_id, stream_version";
  auto rows = sql.exec(query, params);
  std::vector<StoredEvent> events;
  if (!rows) {
    ADD_FAILURE() << "reading cqrs.events: " << rows.error().to_string();
    return events;
  }
  for (int row = 0; row < rows->rows(); ++row) {
    StoredEvent& event = events.emplace_back();
    event.stream_id = rows->text(row, 0);
    event.version = rows->int64(row, 1);
    event.type = rows->text(row, 2);
    event.data = nlohmann::json::parse(rows->text(row, 3));
    event.metadata = nlohmann::json::parse(rows->text(row, 4));
  }
  return events;
}

std::map<std::string, std::vector<StoredEvent>> by_stream(const std::vector<StoredEvent>& events) {
  std::map<std::string, std::vector<StoredEvent>> streams;
  for (const auto& event : events) streams[event.stream_id].push_back(event);
  return streams;
}

std::vector<StoredEvent> events_of_command(const std::vector<StoredEvent>& events,
                                           const std::string& command_id) {
  std::vector<StoredEvent> out;
  for (const auto& event : events) {
    if (event.command_id() == command_id) out.push_back(event);
  }
  return out;
}

::testing::AssertionResult versions_are_contiguous(const std::vector<StoredEvent>& events) {
  for (const auto& [stream_id, stream] : by_stream(events)) {
    for (size_t idx = 0; idx < stream.size(); ++idx) {
      if (stream[idx].version != static_cast<int64_t>(idx + 1)) {
        return ::testing::AssertionFailure()
               << "stream " << stream_id << ": event #" << idx + 1 << " has version "
               << stream[idx].version << " (versions must be 1.." << stream.size() << ")";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

GiftCardFold fold_gift_card(const std::vector<StoredEvent>& stream) {
  GiftCardFold fold;
  nlohmann::json state = {
      {"card_id", ""}, {"status", "none"}, {"initial_value", 0}, {"remaining", 0}};
  int64_t version = 0;
  for (const auto& event : stream) {
    version = event.version;
    const auto& data = event.data;
    if (event.type == "GiftCardIssued") {
      state["card_id"] = data.at("card_id");
      state["status"] = "active";
      state["initial_value"] = data.at("amount");
      state["remaining"] = data.at("amount");
    } else if (event.type == "GiftCardRedeemed") {
      int64_t before = state["remaining"].get<int64_t>();
      int64_t amount = data.at("amount").get<int64_t>();
      int64_t after = data.at("remaining").get<int64_t>();
      if (after != before - amount || after < 0 || amount <= 0) {
        fold.problems.push_back("version " + std::to_string(event.version) + ": redeemed " +
                                std::to_string(amount) + " from " + std::to_string(before) +
                                " leaving " + std::to_string(after));
      }
      state["remaining"] = after;
      fold.redeemed_total += amount;
      ++fold.redemptions;
    } else if (event.type == "GiftCardEmptied") {
      if (state["remaining"] != 0) {
        fold.problems.push_back("version " + std::to_string(event.version) +
                                ": emptied with a balance left");
      }
      state["status"] = "emptied";
    } else if (event.type == "GiftCardCancelled") {
      state["status"] = "cancelled";
    } else {
      fold.problems.push_back("unexpected event type " + event.type);
    }
  }
  fold.state_reply = {{"version", version}, {"state", state}};
  return fold;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void SystemTest::SetUp() {
  db_ = cqrs::testing::TestDatabase::create();
  ASSERT_NE(db_, nullptr);
  sql_ = db_->connect();
  ASSERT_NE(sql_, nullptr);
}

void DaemonTest::SetUp() {
  SystemTest::SetUp();
  if (HasFatalFailure()) return;
  daemon_ = start_daemon(daemon_args());
  ASSERT_NE(daemon_, nullptr);
}

void DaemonTest::TearDown() {
  if (daemon_) daemon_->stop();
}

std::unique_ptr<Daemon> SystemTest::start_daemon(const std::vector<std::string>& extra_args) {
  return Daemon::start(db_->url(), extra_args);
}

std::string SystemTest::scalar(const std::string& query, const std::vector<std::string>& params) {
  pg::Params values;
  for (const auto& param : params) values.add(param);
  auto rows = sql_->exec(query, values);
  if (!rows) {
    ADD_FAILURE() << query << ": " << rows.error().to_string();
    return "";
  }
  if (rows->rows() == 0 || rows->is_null(0, 0)) return "";
  return std::string(rows->text(0, 0));
}

}  // namespace cqrs::system_test
