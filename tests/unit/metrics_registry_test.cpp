// The metrics registry: counting, bucketing, and the exact Prometheus text it renders; and the
// HTTP exporter's listening port.
#include <gtest/gtest.h>

#include <limits>
#include <thread>
#include <vector>

#include "cqrs/metrics/http_exporter.hpp"
#include "cqrs/metrics/registry.hpp"

namespace cqrs::metrics {
namespace {

TEST(MetricsRegistry, RendersEveryKindInTheExactExpositionFormat) {
  Registry registry;
  auto& commands = registry.counter("app_commands_total", "Commands answered, by type and outcome.",
                                    {"type", "outcome", "code"});
  auto& live = registry.gauge("app_live", "Live things.");
  auto& latency =
      registry.histogram("app_latency_seconds", "Time to answer.", {0.005, 0.5, 1}, {"type"});
  commands.with({"Issue", "ok", ""}).inc();
  commands.with({"Issue", "ok", ""}).inc(2);
  commands.with({"Issue", "rejected", "already_issued"}).inc();
  live.with({}).set(7);
  latency.with({"Issue"}).observe(0.001);
  latency.with({"Issue"}).observe(0.5);  // a bound belongs to its own bucket
  latency.with({"Issue"}).observe(3);    // above every bound: +Inf only

  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_commands_total Commands answered, by type and outcome.\n"
            "# TYPE app_commands_total counter\n"
            "app_commands_total{type=\"Issue\",outcome=\"ok\"} 3\n"
            "app_commands_total{type=\"Issue\",outcome=\"rejected\",code=\"already_issued\"} 1\n"
            "# HELP app_live Live things.\n"
            "# TYPE app_live gauge\n"
            "app_live 7\n"
            "# HELP app_latency_seconds Time to answer.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{type=\"Issue\",le=\"0.005\"} 1\n"
            "app_latency_seconds_bucket{type=\"Issue\",le=\"0.5\"} 2\n"
            "app_latency_seconds_bucket{type=\"Issue\",le=\"1\"} 2\n"
            "app_latency_seconds_bucket{type=\"Issue\",le=\"+Inf\"} 3\n"
            "app_latency_seconds_sum{type=\"Issue\"} 3.501\n"
            "app_latency_seconds_count{type=\"Issue\"} 3\n");
}

TEST(MetricsRegistry, FamiliesWithoutChildrenStillDescribeThemselves) {
  Registry registry;
  registry.counter("app_failures_total", "Failures.", {"code"});
  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_failures_total Failures.\n"
            "# TYPE app_failures_total counter\n");
}

TEST(MetricsRegistry, UnlabelledHistogramsCarryOnlyTheBoundLabel) {
  Registry registry;
  auto& sizes = registry.histogram("app_batch_size", "Batch sizes.", {1, 4});
  sizes.with({}).observe(1);
  sizes.with({}).observe(2);
  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_batch_size Batch sizes.\n"
            "# TYPE app_batch_size histogram\n"
            "app_batch_size_bucket{le=\"1\"} 1\n"
            "app_batch_size_bucket{le=\"4\"} 2\n"
            "app_batch_size_bucket{le=\"+Inf\"} 2\n"
            "app_batch_size_sum 3\n"
            "app_batch_size_count 2\n");
}

TEST(MetricsRegistry, EscapesHelpTextAndLabelValues) {
  Registry registry;
  auto& errors = registry.counter("app_errors_total", "Line one\nback\\slash \"quoted\"", {"what"});
  errors.with({"a\"b\\c\nd"}).inc();
  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_errors_total Line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE app_errors_total counter\n"
            "app_errors_total{what=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsRegistry, GaugesRenderFractionsAndSpecialValues) {
  Registry registry;
  auto& gauges = registry.gauge("app_value", "Values.", {"name"});
  gauges.with({"half"}).set(0.5);
  gauges.with({"negative"}).set(-2);
  gauges.with({"up"}).add(1);
  gauges.with({"up"}).add(1.25);
  gauges.with({"small"}).set(0.0005);
  gauges.with({"tiny"}).set(2.5e-9);
  gauges.with({"z_inf"}).set(std::numeric_limits<double>::infinity());
  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_value Values.\n"
            "# TYPE app_value gauge\n"
            "app_value{name=\"half\"} 0.5\n"
            "app_value{name=\"negative\"} -2\n"
            "app_value{name=\"small\"} 0.0005\n"
            "app_value{name=\"tiny\"} 2.5e-09\n"
            "app_value{name=\"up\"} 2.25\n"
            "app_value{name=\"z_inf\"} +Inf\n");
}

TEST(MetricsRegistry, ClearDropsEveryChildOfAFamily) {
  Registry registry;
  auto& lag = registry.gauge("app_lag", "Lag.", {"handler"});
  lag.with({"a"}).set(1);
  lag.with({"b"}).set(2);
  lag.clear();
  lag.with({"b"}).set(3);
  EXPECT_EQ(render_prometheus(registry),
            "# HELP app_lag Lag.\n"
            "# TYPE app_lag gauge\n"
            "app_lag{handler=\"b\"} 3\n");
}

TEST(MetricsRegistry, TheSameLabelValuesGiveTheSameChild) {
  Registry registry;
  auto& family = registry.counter("app_things_total", "Things.", {"kind"});
  std::string kind = "x";
  EXPECT_EQ(&family.with({"x"}), &family.with({std::string_view(kind)}));
  EXPECT_NE(&family.with({"x"}), &family.with({"y"}));
}

TEST(MetricsRegistry, ConcurrentUpdatesLoseNothing) {
  Registry registry;
  auto& counter = registry.counter("app_hits_total", "Hits.", {"thread"});
  auto& histogram = registry.histogram("app_sizes", "Sizes.", {1, 10});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int thread = 0; thread < kThreads; ++thread) {
    threads.emplace_back([&, thread] {
      for (int idx = 0; idx < kPerThread; ++idx) {
        counter.with({thread % 2 == 0 ? "even" : "odd"}).inc();
        histogram.with({}).observe(idx % 3 == 0 ? 0.5 : 5);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.with({"even"}).value() + counter.with({"odd"}).value(),
            uint64_t{kThreads * kPerThread});
  Histogram::Snapshot snapshot = histogram.with({}).snapshot();
  EXPECT_EQ(snapshot.count, uint64_t{kThreads * kPerThread});
  uint64_t small = kThreads * ((kPerThread + 2) / 3);
  EXPECT_EQ(snapshot.cumulative[0], small);
  EXPECT_EQ(snapshot.cumulative[1], snapshot.count);
  EXPECT_DOUBLE_EQ(snapshot.sum, 0.5 * static_cast<double>(small) +
                                     5.0 * static_cast<double>(snapshot.count - small));
}

// A second exporter on a port in use is refused, not bound beside the first (which would split
// scrapes and health checks between two processes).
TEST(HttpExporter, APortInUseIsRefused) {
  auto first = HttpExporter::start("127.0.0.1", 0, HttpExporter::Routes{});
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  auto second = HttpExporter::start("127.0.0.1", (*first)->port(), HttpExporter::Routes{});
  ASSERT_FALSE(second.ok()) << "a second exporter listens on port " << (*first)->port();
  EXPECT_EQ(second.error().code(), errc::kInvalidArgument);
  EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
}

}  // namespace
}  // namespace cqrs::metrics
