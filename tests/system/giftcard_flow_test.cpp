// The gift card domain end to end through real processes: cqrsctl's JSON replies and exit codes
// for every outcome, the rows cqrsd stores in cqrs.events, and `cqrsctl state`.
#include <gtest/gtest.h>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitRejected = 1;
constexpr int kExitError = 2;

class GiftCardFlowTest : public DaemonTest {
 protected:
  // Dispatches and checks the common shape of an ok reply.
  json expect_ok(std::string_view type, const json& payload, const std::string& card_id,
                 int64_t version, const std::vector<std::string>& extra = {}) {
    CtlReply reply = dispatch(port(), type, payload, extra);
    EXPECT_EQ(reply.exit_code(), kExitOk) << reply.describe();
    EXPECT_EQ(reply.status(), "ok") << reply.describe();
    EXPECT_EQ(reply.json.value("aggregate_id", ""), card_id) << reply.describe();
    EXPECT_EQ(reply.json.value("stream_id", ""), "giftcard-" + card_id) << reply.describe();
    EXPECT_EQ(reply.json.value("version", int64_t{-1}), version) << reply.describe();
    EXPECT_TRUE(reply.json.contains("command_id")) << reply.describe();
    EXPECT_TRUE(reply.json.value("events", json()).is_array()) << reply.describe();
    EXPECT_FALSE(reply.json.contains("error")) << reply.describe();
    return reply.json;
  }

  // Dispatches and checks a rejection with `code`; returns the reply.
  json expect_rejected(std::string_view type, const json& payload, const std::string& code) {
    std::string command_id = new_command_id();
    CtlReply reply = dispatch(port(), type, payload, {"--command-id", command_id});
    EXPECT_EQ(reply.exit_code(), kExitRejected) << reply.describe();
    EXPECT_EQ(reply.status(), "rejected") << reply.describe();
    EXPECT_EQ(reply.error(), code) << reply.describe();
    EXPECT_EQ(reply.json.value("command_id", ""), command_id) << reply.describe();
    EXPECT_FALSE(reply.json.value("message", "").empty()) << reply.describe();
    EXPECT_FALSE(reply.json.contains("events")) << reply.describe();
    EXPECT_FALSE(reply.json.contains("version")) << reply.describe();
    rejected_ids_.push_back(command_id);
    return reply.json;
  }

  std::vector<std::string> rejected_ids_;
};

json event(std::string_view type, const json& data) { return {{"type", type}, {"data", data}}; }

TEST_F(GiftCardFlowTest, IssueRedeemEmptyAndCancelReplyWithEventsAndStoreThemWithMetadata) {
  auto announced = daemon_->stdout_lines();
  ASSERT_FALSE(announced.empty());
  EXPECT_EQ(announced.front(), "cqrsd: listening on 127.0.0.1:" + std::to_string(port()));

  std::string issue_id = new_command_id();
  json issued = expect_ok(
      "IssueGiftCard", {{"card_id", "flow"}, {"amount", 100}}, "flow", 1,
      {"--command-id", issue_id, "--metadata", R"({"user":"alice","channel":"system-test"})"});
  EXPECT_EQ(issued["command_id"], issue_id);
  EXPECT_EQ(issued["events"],
            json::array({event("GiftCardIssued", {{"card_id", "flow"}, {"amount", 100}})}));

  json redeemed = expect_ok("RedeemGiftCard", {{"card_id", "flow"}, {"amount", 30}}, "flow", 2,
                            {"--correlation-id", "order-17"});
  EXPECT_EQ(redeemed["events"],
            json::array({event("GiftCardRedeemed",
                               {{"card_id", "flow"}, {"amount", 30}, {"remaining", 70}})}));

  json emptied = expect_ok("RedeemGiftCard", {{"card_id", "flow"}, {"amount", 70}}, "flow", 4);
  EXPECT_EQ(emptied["events"],
            json::array(
                {event("GiftCardRedeemed", {{"card_id", "flow"}, {"amount", 70}, {"remaining", 0}}),
                 event("GiftCardEmptied", {{"card_id", "flow"}})}));

  json cancelled = expect_ok("CancelGiftCard", {{"card_id", "flow"}}, "flow", 5);
  EXPECT_EQ(cancelled["events"],
            json::array({event("GiftCardCancelled", {{"card_id", "flow"}, {"remaining", 0}})}));

  auto stored = events("giftcard-flow");
  ASSERT_EQ(stored.size(), 5u);
  EXPECT_TRUE(versions_are_contiguous(stored));
  std::vector<std::string> types;
  for (const auto& each : stored) types.push_back(each.type);
  EXPECT_EQ(types,
            (std::vector<std::string>{"GiftCardIssued", "GiftCardRedeemed", "GiftCardRedeemed",
                                      "GiftCardEmptied", "GiftCardCancelled"}));

  // Each event carries its command's ids; client commands cause themselves.
  const json* replies[] = {&issued, &redeemed, &emptied, &emptied, &cancelled};
  for (size_t idx = 0; idx < stored.size(); ++idx) {
    const auto& metadata = stored[idx].metadata;
    std::string command_id = (*replies[idx])["command_id"];
    SCOPED_TRACE("event version " + std::to_string(stored[idx].version) + " " + metadata.dump());
    EXPECT_EQ(metadata.value("command_id", ""), command_id);
    EXPECT_EQ(metadata.value("causation_id", ""), command_id);
    EXPECT_EQ(metadata.value("correlation_id", ""), idx == 1 ? "order-17" : command_id);
  }
  EXPECT_EQ(stored[0].metadata.value("user", ""), "alice");
  EXPECT_EQ(stored[0].metadata.value("channel", ""), "system-test");
  EXPECT_FALSE(stored[1].metadata.contains("user")) << "user metadata is per command";

  // The stored data is what the replies announced.
  EXPECT_EQ(stored[0].data, issued["events"][0]["data"]);
  EXPECT_EQ(stored[2].data, emptied["events"][0]["data"]);
  EXPECT_EQ(stored[4].data, cancelled["events"][0]["data"]);
}

TEST_F(GiftCardFlowTest, EveryRejectionCodeExitsOneAndStoresNoEvents) {
  expect_rejected("IssueGiftCard", {{"card_id", "r1"}, {"amount", 0}}, "invalid_amount");
  expect_rejected("IssueGiftCard", {{"card_id", "r1"}, {"amount", -5}}, "invalid_amount");
  expect_ok("IssueGiftCard", {{"card_id", "r1"}, {"amount", 50}}, "r1", 1);
  expect_rejected("IssueGiftCard", {{"card_id", "r1"}, {"amount", 10}}, "gift_card_exists");
  expect_rejected("RedeemGiftCard", {{"card_id", "ghost"}, {"amount", 1}}, "gift_card_not_found");
  expect_rejected("CancelGiftCard", {{"card_id", "ghost"}}, "gift_card_not_found");
  expect_rejected("RedeemGiftCard", {{"card_id", "r1"}, {"amount", 0}}, "invalid_amount");
  json short_of = expect_rejected("RedeemGiftCard", {{"card_id", "r1"}, {"amount", 80}},
                                  "insufficient_balance");
  EXPECT_NE(short_of.value("message", "").find("50"), std::string::npos)
      << "the message names the balance: " << short_of;
  expect_ok("RedeemGiftCard", {{"card_id", "r1"}, {"amount", 50}}, "r1", 3);
  expect_rejected("RedeemGiftCard", {{"card_id", "r1"}, {"amount", 1}}, "gift_card_empty");

  expect_ok("IssueGiftCard", {{"card_id", "r2"}, {"amount", 20}}, "r2", 1);
  expect_ok("CancelGiftCard", {{"card_id", "r2"}}, "r2", 2);
  expect_rejected("RedeemGiftCard", {{"card_id", "r2"}, {"amount", 5}}, "gift_card_cancelled");
  expect_rejected("CancelGiftCard", {{"card_id", "r2"}}, "gift_card_cancelled");

  auto stored = events();
  EXPECT_TRUE(versions_are_contiguous(stored));
  auto streams = by_stream(stored);
  ASSERT_EQ(streams.size(), 2u) << "no stream for the card that never existed";
  std::vector<std::string> r1_types, r2_types;
  for (const auto& each : streams["giftcard-r1"]) r1_types.push_back(each.type);
  for (const auto& each : streams["giftcard-r2"]) r2_types.push_back(each.type);
  EXPECT_EQ(r1_types,
            (std::vector<std::string>{"GiftCardIssued", "GiftCardRedeemed", "GiftCardEmptied"}));
  EXPECT_EQ(r2_types, (std::vector<std::string>{"GiftCardIssued", "GiftCardCancelled"}));
  for (const auto& id : rejected_ids_) {
    EXPECT_TRUE(events_of_command(stored, id).empty()) << "rejected command " << id;
    // The rejection is recorded as the command's outcome (idempotent dispatch).
    json recorded = json::parse(
        scalar("SELECT result::text FROM cqrs.command_results WHERE command_id = $1", {id}),
        nullptr, false);
    EXPECT_EQ(recorded.value("status", ""), "rejected") << id;
  }
}

TEST_F(GiftCardFlowTest, StatePrintsVersionAndStateByTypeNameOrStreamPrefix) {
  expect_ok("IssueGiftCard", {{"card_id", "s1"}, {"amount", 100}}, "s1", 1);
  expect_ok("RedeemGiftCard", {{"card_id", "s1"}, {"amount", 40}}, "s1", 2);
  json expected = {
      {"version", 2},
      {"state",
       {{"card_id", "s1"}, {"status", "active"}, {"initial_value", 100}, {"remaining", 60}}}};

  for (std::string aggregate : {"giftcard", "GiftCard"}) {
    CtlReply reply = query_state(port(), aggregate, "s1");
    EXPECT_EQ(reply.exit_code(), kExitOk) << aggregate << ": " << reply.describe();
    EXPECT_EQ(reply.json, expected) << aggregate << ": " << reply.describe();
  }
  EXPECT_EQ(fold_gift_card(events("giftcard-s1")).state_reply, expected);

  CtlReply never_issued = query_state(port(), "giftcard", "nobody");
  EXPECT_EQ(never_issued.exit_code(), kExitOk) << never_issued.describe();
  EXPECT_EQ(never_issued.json.value("version", int64_t{-1}), 0) << never_issued.describe();
  EXPECT_EQ(never_issued.json["state"].value("status", ""), "none") << never_issued.describe();

  CtlReply unknown = query_state(port(), "Wallet", "s1");
  EXPECT_EQ(unknown.exit_code(), kExitError) << unknown.describe();
  EXPECT_EQ(unknown.status(), "error") << unknown.describe();
  EXPECT_EQ(unknown.error(), "unknown_aggregate") << unknown.describe();
  EXPECT_NE(unknown.json.value("message", "").find("GiftCard"), std::string::npos)
      << "the message lists the known aggregates: " << unknown.describe();
  EXPECT_NE(unknown.process.stderr_text.find("unknown_aggregate"), std::string::npos)
      << unknown.describe();
}

}  // namespace
}  // namespace cqrs::system_test
