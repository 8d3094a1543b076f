// Logging and timing middlewares.
#include "actors/middlewares.hpp"

#include "actors/log.hpp"

namespace cqrs::actors {

void LoggingMiddleware::before(const DispatchContext& context) {
  log::debug("dispatching", {{"type", context.command_type},
                             {"command_id", context.command_id},
                             {"correlation_id", context.correlation_id},
                             {"stream_id", context.stream_id}});
}

void LoggingMiddleware::after(const DispatchContext& context, const DispatchSummary& summary) {
  // Accepted commands at debug (they are the bulk); rejections at info; errors at warn.
  log::Level level = summary.status == "ok"         ? log::Level::kDebug
                     : summary.status == "rejected" ? log::Level::kInfo
                                                    : log::Level::kWarn;
  log::write(level, "dispatched",
             {{"type", context.command_type},
              {"command_id", context.command_id},
              {"correlation_id", context.correlation_id},
              {"stream_id", context.stream_id},
              {"status", summary.status},
              {"error", summary.error},
              {"elapsed_us", std::to_string(summary.elapsed.count())}});
}

void LoggingMiddleware::on_failure(const DispatchContext& context, const Error& error) {
  log::warn("dispatch failed", {{"type", context.command_type},
                                {"command_id", context.command_id},
                                {"correlation_id", context.correlation_id},
                                {"stream_id", context.stream_id},
                                {"error", error.code()},
                                {"message", error.message()}});
}

void LoggingMiddleware::on_refused(const Error& error) {
  // Load shedding refuses by the thousand: one line each only when debugging.
  if (error.kind() == ErrorKind::kUnavailable) {
    log::debug("refused", {{"error", error.code()}, {"message", error.message()}});
    return;
  }
  log::info("refused", {{"error", error.code()}, {"message", error.message()}});
}

void TimingMiddleware::after(const DispatchContext& context, const DispatchSummary& summary) {
  std::lock_guard lock(mutex_);
  Stats& stats = stats_[{context.command_type, summary.status}];
  ++stats.count;
  stats.total += summary.elapsed;
  stats.max = std::max(stats.max, summary.elapsed);
}

std::map<std::pair<std::string, std::string>, TimingMiddleware::Stats> TimingMiddleware::snapshot()
    const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace cqrs::actors
