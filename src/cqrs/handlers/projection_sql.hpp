// ProjectionSql implementations: the runtime's batch (statements sent together, one round trip
// per batch) and an immediate one that runs each statement at once (tests and tools).
#pragma once

#include <string>
#include <vector>

#include "cqrs/handlers/handler.hpp"
#include "cqrs/pg/connection.hpp"

namespace cqrs {

// Runs every statement as it comes; a statement that fails or misses its row makes the next
// call (or failure()) report it.
class ImmediateProjectionSql final : public ProjectionSql {
 public:
  explicit ImmediateProjectionSql(pg::Connection& conn) : conn_(conn) {}
  void queue(std::string sql, pg::Params params, std::string if_no_row = {}) override;
  Result<pg::QueryResult> query(const std::string& sql, const pg::Params& params) override {
    return conn_.exec(sql, params);
  }
  // The first failure of a queued statement, if any.
  const std::optional<Error>& failure() const { return failure_; }

 private:
  pg::Connection& conn_;
  std::optional<Error> failure_;
};

// Collects statements of several events; flush() sends them in one pipeline inside the caller's
// open transaction and names the event whose statement failed.
class BatchProjectionSql final : public ProjectionSql {
 public:
  explicit BatchProjectionSql(pg::Connection& conn) : conn_(conn) {}
  // Statements queued from now on belong to event `index`.
  void set_event(size_t index) { event_ = index; }
  void queue(std::string sql, pg::Params params, std::string if_no_row = {}) override;
  Result<pg::QueryResult> query(const std::string& sql, const pg::Params& params) override;

  struct Failure {
    size_t event = 0;
    Error error;
    bool connection_lost = false;
  };
  // Sends what is queued; on failure, which event's statement failed and why.
  std::optional<Failure> flush();

 private:
  struct Item {
    std::string sql;
    pg::Params params;
    std::string if_no_row;
    size_t event = 0;
  };
  pg::Connection& conn_;
  std::vector<Item> items_;
  size_t event_ = 0;
};

}  // namespace cqrs
