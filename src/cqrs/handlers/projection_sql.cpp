#include "cqrs/handlers/projection_sql.hpp"

namespace cqrs {
namespace {

Error missing_row(const std::string& message) {
  return Error::internal("read_model_out_of_step", message);
}

}  // namespace

void ImmediateProjectionSql::queue(std::string sql, pg::Params params, std::string if_no_row) {
  if (failure_) return;
  auto done = conn_.exec(sql, params);
  if (!done) {
    failure_ = done.error();
  } else if (!if_no_row.empty() && done->affected_rows() == 0) {
    failure_ = missing_row(if_no_row);
  }
}

void BatchProjectionSql::queue(std::string sql, pg::Params params, std::string if_no_row) {
  items_.push_back(Item{std::move(sql), std::move(params), std::move(if_no_row), event_});
}

Result<pg::QueryResult> BatchProjectionSql::query(const std::string& sql,
                                                  const pg::Params& params) {
  if (auto failed = flush()) return failed->error;
  return conn_.exec(sql, params);
}

std::optional<BatchProjectionSql::Failure> BatchProjectionSql::flush() {
  if (items_.empty()) return std::nullopt;
  std::vector<Item> items = std::move(items_);
  items_.clear();
  std::vector<pg::Connection::PipelineStep> steps;
  steps.reserve(items.size());
  for (Item& item : items) {
    auto name = conn_.prepared_name(item.sql);
    if (!name) return Failure{item.event, name.error(), !conn_.is_ok()};
    steps.push_back({*name, std::move(item.params), false});
  }
  steps.back().sync_after = true;
  auto results = conn_.exec_pipeline(steps);
  if (!results) return Failure{items.front().event, results.error(), true};
  for (size_t idx = 0; idx < items.size(); ++idx) {
    const auto& result = (*results)[idx];
    if (!result) return Failure{items[idx].event, result.error(), false};
    if (!items[idx].if_no_row.empty() && result->affected_rows() == 0) {
      return Failure{items[idx].event, missing_row(items[idx].if_no_row), false};
    }
  }
  return std::nullopt;
}

}  // namespace cqrs
