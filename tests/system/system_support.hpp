// Shared pieces of the system tests: a fixture with a fresh database and a SQL connection to it,
// cqrsctl calls with their JSON output parsed, the stored events of cqrs.events, and a gift card
// fold that computes from stored events what `cqrsctl state` must print.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cqrs/pg/connection.hpp"
#include "support/test_database.hpp"
#include "system/process.hpp"

namespace cqrs::system_test {

// One cqrsctl run: the process outcome and its first stdout line as a JSON object ({} when
// there is none, {"unparsed": line} when it is not a JSON object).
struct CtlReply {
  ProcessResult process;
  nlohmann::json json;

  int exit_code() const { return process.exit_code; }
  std::string status() const;
  std::string error() const;
  std::string describe() const { return process.describe(); }
};

// A new random command id (UUID text).
std::string new_command_id();

// cqrsctl dispatch <type> <payload> [extra...].
CtlReply dispatch(uint16_t port, std::string_view type, const nlohmann::json& payload,
                  const std::vector<std::string>& extra = {});
// The same with the payload given as raw text (for malformed payloads).
CtlReply dispatch_text(uint16_t port, std::string_view type, std::string_view payload,
                       const std::vector<std::string>& extra = {});
// cqrsctl state <aggregate> <id> [extra...].
CtlReply query_state(uint16_t port, std::string_view aggregate, std::string_view id,
                     const std::vector<std::string>& extra = {});

// cqrsctl dispatch - --window <window> [extra...] with `lines` on stdin; the result lines as JSON
// objects (a line that is not one becomes {"unparsed": line}).
struct BatchReply {
  ProcessResult process;
  std::vector<nlohmann::json> replies;
};
BatchReply dispatch_batch(uint16_t port, const std::vector<std::string>& lines, size_t window,
                          std::chrono::milliseconds timeout = kCqrsctlTimeout,
                          const std::vector<std::string>& extra = {});

// An envelope line for `cqrsctl dispatch -`.
std::string envelope_line(std::string_view type, const nlohmann::json& data,
                          const std::string& command_id);

// A row of cqrs.events.
struct StoredEvent {
  std::string stream_id;
  int64_t version = 0;
  std::string type;
  nlohmann::json data;
  nlohmann::json metadata;

  std::string command_id() const { return metadata.value("command_id", ""); }
};

// All events, or those of one stream, ordered by (stream_id, stream_version).
std::vector<StoredEvent> read_events(pg::Connection& sql, std::string_view stream_id = {});
// The events grouped by stream id.
std::map<std::string, std::vector<StoredEvent>> by_stream(const std::vector<StoredEvent>& events);
// The events whose metadata names `command_id`.
std::vector<StoredEvent> events_of_command(const std::vector<StoredEvent>& events,
                                           const std::string& command_id);

// Every stream's versions are exactly 1..n, in order, without duplicates.
::testing::AssertionResult versions_are_contiguous(const std::vector<StoredEvent>& events);

// {"version":n,"state":{card_id,status,initial_value,remaining}} from one stream's events, applying
// the gift card rules independently of the product code; also checks that every redemption's
// `remaining` is the previous balance minus its amount and never negative.
struct GiftCardFold {
  nlohmann::json state_reply;
  int64_t redeemed_total = 0;
  int64_t redemptions = 0;
  std::vector<std::string> problems;  // empty when the stream is consistent
};
GiftCardFold fold_gift_card(const std::vector<StoredEvent>& stream);

// How many runs of $all the correlation index has not reached (schema/018): "0" once cqrsd's
// indexer caught up with everything stored.
inline constexpr const char* kRunsNotCorrelated =
    "SELECT count(*) FROM cqrs.events AS h WHERE h.run_length > 0"
    " AND (h.transaction_id, h.global_position) > (SELECT i.transaction_id, i.global_position"
    " FROM cqrs.correlations_indexed AS i)";

// Polls `condition` every few milliseconds until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// A fresh, migrated database per test and one SQL connection to it. Daemons a test starts are
// declared after these members, so they stop before the database is dropped.
class SystemTest : public ::testing::Test {
 protected:
  void SetUp() override;

  // Starts cqrsd on this test's database (a test failure and nullptr when it cannot).
  std::unique_ptr<Daemon> start_daemon(const std::vector<std::string>& extra_args = {});
  std::vector<StoredEvent> events(std::string_view stream_id = {}) {
    return read_events(*sql_, stream_id);
  }
  // One scalar query result as text ("" when there is no row).
  std::string scalar(const std::string& query, const std::vector<std::string>& params = {});

  std::unique_ptr<cqrs::testing::TestDatabase> db_;
  std::unique_ptr<pg::Connection> sql_;
};

// A SystemTest with one cqrsd started on the test's database before each test; TearDown stops it
// with SIGTERM and requires exit code 0 (it drains whatever the test left in flight).
class DaemonTest : public SystemTest {
 protected:
  void SetUp() override;
  void TearDown() override;
  uint16_t port() const { return daemon_->port(); }
  // Options the daemon gets besides Daemon::start's own (for fixtures that need some).
  virtual std::vector<std::string> daemon_args() { return {}; }

  std::unique_ptr<Daemon> daemon_;
};

}  // namespace cqrs::system_test
