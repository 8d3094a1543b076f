// Store queries for admin requests (history, trace).
#include "actors/queries.hpp"

#include <nlohmann/json.hpp>

#include "actors/replies.hpp"
#include "cqrs/trace.hpp"

namespace cqrs::actors {
namespace {

std::string history(EventStore& store, const nlohmann::json& request) {
  std::string stream_id = request.value("stream_id", "");
  if (stream_id.empty()) return error_reply(errc::kInvalidArgument, "history needs a stream id");
  int64_t from = request.value("from", int64_t{1});
  int64_t limit = request.value("limit", kHistoryDefaultLimit);
  if (from < 1) return error_reply(errc::kInvalidArgument, "--from must be 1 or more");
  if (limit < 1 || limit > kHistoryMaxLimit) {
    return error_reply(errc::kInvalidArgument,
                       "--limit must be 1.." + std::to_string(kHistoryMaxLimit));
  }
  auto events = store.read_stream(stream_id, from, static_cast<size_t>(limit), Direction::kForward);
  if (!events) return error_reply(events.error());
  nlohmann::json out = {
      {"status", "ok"}, {"stream_id", stream_id}, {"events", nlohmann::json::array()}};
  for (const RecordedEvent& event : *events) out["events"].push_back(event_json(event));
  return out.dump();
}

std::string trace(EventStore& store, const nlohmann::json& request) {
  std::string correlation_id = request.value("correlation_id", "");
  if (correlation_id.empty()) {
    return error_reply(errc::kInvalidArgument, "trace needs a correlation id");
  }
  auto events = store.read_correlated(correlation_id, kTraceMaxEvents + 1);
  if (!events) return error_reply(events.error());
  bool truncated = events->size() > kTraceMaxEvents;
  if (truncated) events->resize(kTraceMaxEvents);
  return nlohmann::json{{"status", "ok"},
                        {"correlation_id", correlation_id},
                        {"events", events->size()},
                        {"truncated", truncated},
                        {"commands", trace_tree(*events)}}
      .dump();
}

}  // namespace

std::string run_query(EventStore& store, const std::string& text) {
  nlohmann::json request = nlohmann::json::parse(text, nullptr, false);
  if (!request.is_object()) {
    return error_reply(errc::kInvalidArgument, "query is not a JSON object");
  }
  try {
    std::string op = request.value("op", "");
    if (op == "history") return history(store, request);
    if (op == "trace") return trace(store, request);
    if (op == "head") {
      auto head = store.head();
      if (!head) return error_reply(head.error());
      return nlohmann::json{{"status", "ok"},
                            {"head", *head == Position{} ? nlohmann::json(nullptr)
                                                         : nlohmann::json(head->to_string())}}
          .dump();
    }
    if (op == "correlation_index") {
      auto lag = store.correlation_index_lag();
      if (!lag) return error_reply(lag.error());
      return nlohmann::json{{"status", "ok"}, {"lag", *lag}}.dump();
    }
    return error_reply(errc::kInvalidArgument, "unknown query '" + op + "'");
  } catch (const nlohmann::json::exception& ex) {
    return error_reply(errc::kInvalidArgument, std::string("malformed query: ") + ex.what());
  }
}

}  // namespace cqrs::actors
