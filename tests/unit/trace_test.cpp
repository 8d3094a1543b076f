// cqrs::trace_tree: the causal tree built from events' metadata alone.
#include "cqrs/trace.hpp"

#include <gtest/gtest.h>

namespace cqrs {
namespace {

using nlohmann::json;

RecordedEvent event(int64_t position, const std::string& stream, const std::string& type,
                    const std::string& command_id, const std::string& command_type,
                    const std::string& causation_id) {
  RecordedEvent out;
  out.global_position = position;
  out.commit_id = 100 + static_cast<uint64_t>(position);
  out.stream_id = stream;
  out.stream_version = 1;
  out.event_id = Uuid::random();
  out.type = type;
  out.data = R"({"n":1})";
  out.metadata = json{
      {"command_id", command_id},
      {"command_type", command_type},
      {"correlation_id", "corr"},
      {"causation_id",
       causation_id}}.dump();
  out.created_at_us = 1'800'000'000'000'000 + position;
  return out;
}

TEST(TraceTree, LinksCommandsToTheEventsThatCausedThem) {
  RecordedEvent requested =
      event(1, "transfer-t", "TransferRequested", "c1", "TransferMoney", "c1");
  RecordedEvent debited =
      event(2, "account-a", "AccountDebited", "c2", "DebitAccount", requested.event_id.to_string());
  RecordedEvent credited =
      event(3, "account-b", "AccountCredited", "c3", "CreditAccount", debited.event_id.to_string());
  // Given out of order: the tree follows the global order anyway.
  json tree = trace_tree({credited, requested, debited});
  ASSERT_EQ(tree.size(), 1u) << tree.dump(2);
  const json& root = tree[0];
  EXPECT_EQ(root["command_id"], "c1");
  EXPECT_EQ(root["command_type"], "TransferMoney");
  const json& debit = root["events"][0]["caused"][0];
  EXPECT_EQ(debit["command_type"], "DebitAccount");
  EXPECT_EQ(debit["events"][0]["caused"][0]["stream_id"], "account-b");
  EXPECT_EQ(debit["events"][0]["caused"][0]["events"][0]["type"], "AccountCredited");

  std::string text = render_trace(tree);
  EXPECT_EQ(text.rfind("command TransferMoney c1 -> transfer-t\n", 0), 0u) << text;
  EXPECT_NE(text.find("\n        command CreditAccount c3 -> account-b\n"), std::string::npos)
      << text;
}

TEST(TraceTree, ACommandWhoseCauseIsMissingIsARoot) {
  RecordedEvent orphan = event(5, "account-x", "AccountDebited", "c9", "", "no-such-event");
  RecordedEvent client = event(6, "giftcard-1", "GiftCardIssued", "c8", "IssueGiftCard", "c8");
  json tree = trace_tree({orphan, client});
  ASSERT_EQ(tree.size(), 2u);
  EXPECT_EQ(tree[0]["command_id"], "c9");
  EXPECT_EQ(tree[1]["command_id"], "c8");
  EXPECT_NE(render_trace(tree).find("command (type not recorded) c9"), std::string::npos);
}

TEST(TraceTree, EventJsonHasIsoTimeAndParsedPayloads) {
  RecordedEvent one = event(1, "s", "E", "c", "C", "c");
  one.created_at_us = 1'700'000'000'123'456;
  json out = event_json(one);
  EXPECT_EQ(out["time"], "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(out["data"]["n"], 1);
  EXPECT_EQ(out["metadata"]["command_type"], "C");
  EXPECT_EQ(out["position"], one.position().to_string());
}

}  // namespace
}  // namespace cqrs
