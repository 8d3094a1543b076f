// The middlewares cqrsd installs by default: a log line per command (with command_id,
// correlation_id, outcome and time taken, and one per refused envelope) and per-type dispatch
// statistics.
#pragma once

#include <map>
#include <mutex>

#include "cqrs/middleware.hpp"

namespace cqrs::actors {

class LoggingMiddleware final : public Middleware {
 public:
  void before(const DispatchContext& context) override;
  void after(const DispatchContext& context, const DispatchSummary& summary) override;
  void on_failure(const DispatchContext& context, const Error& error) override;
  void on_refused(const Error& error) override;
};

// Counts and times commands per type and outcome. Thread-safe.
class TimingMiddleware final : public Middleware {
 public:
  struct Stats {
    uint64_t count = 0;
    std::chrono::microseconds total{0};
    std::chrono::microseconds max{0};
  };
  void after(const DispatchContext& context, const DispatchSummary& summary) override;
  // (command type, status) -> stats.
  std::map<std::pair<std::string, std::string>, Stats> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, Stats> stats_;
};

}  // namespace cqrs::actors
