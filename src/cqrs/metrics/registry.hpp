// A small metrics registry: counters, gauges and fixed-bucket histograms in labelled families,
// rendered in the Prometheus text exposition format (version 0.0.4) by render_prometheus().
//
// Thread safety: updating a metric is lock-free (relaxed atomics). Finding a family's child by
// its label values takes the family's shared lock (exclusive only the first time a label set is
// seen); callers on a hot path may keep the returned reference, which stays valid for the
// registry's life unless the family is clear()ed. Rendering may run while metrics are updated:
// every value read is a real value, but a histogram's buckets, sum and count may be read a few
// observations apart.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace cqrs::metrics {

// A monotonically increasing count. Names of counter families end in "_total".
class Counter {
 public:
  void inc(uint64_t amount = 1) { value_.fetch_add(amount, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double value) { value_.store(value, std::memory_order_relaxed); }
  void add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets. The bucket of an observation is the first whose upper
// bound is >= the value; values above the last bound land in the implicit +Inf bucket.
class Histogram {
 public:
  // REQUIRES: `bounds` is strictly increasing and finite.
  explicit Histogram(std::span<const double> bounds);

  void observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // observations <= bounds[i]; one more entry for +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // per bucket (not cumulative), +Inf last
  std::atomic<double> sum_{0};
};

// Compares label value lists lexicographically, whether held as strings or string views.
struct LabelValuesLess {
  using is_transparent = void;
  template <class Left, class Right>
  bool operator()(const Left& left, const Right& right) const {
    return std::lexicographical_compare(
        left.begin(), left.end(), right.begin(), right.end(),
        [](std::string_view lhs, std::string_view rhs) { return lhs < rhs; });
  }
};

// The metrics of one name, one child per combination of label values.
template <class Metric>
class Family {
 public:
  using Labels = std::vector<std::string>;

  Family(std::string name, std::string help, Labels label_names, std::vector<double> bounds)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // The child for `values` (one per label name, in order), created on first use.
  Metric& with(std::initializer_list<std::string_view> values) {
    return with(std::span<const std::string_view>(values.begin(), values.size()));
  }
  Metric& with(std::span<const std::string_view> values);

  // Removes every child. REQUIRES: nobody holds a reference to one (for families that are
  // refilled from scratch when scraped).
  void clear() {
    std::unique_lock lock(mutex_);
    children_.clear();
  }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const Labels& label_names() const { return label_names_; }

  // Calls fn(label values, metric) for each child, in label value order, under the shared lock.
  template <class Fn>
  void for_each(Fn&& fn) const {
    std::shared_lock lock(mutex_);
    for (const auto& [values, metric] : children_) fn(values, *metric);
  }

 private:
  std::string name_;
  std::string help_;
  Labels label_names_;
  std::vector<double> bounds_;  // histograms only
  mutable std::shared_mutex mutex_;
  std::map<Labels, std::unique_ptr<Metric>, LabelValuesLess> children_;
};

template <class Metric>
Metric& Family<Metric>::with(std::span<const std::string_view> values) {
  {
    std::shared_lock lock(mutex_);
    if (auto it = children_.find(values); it != children_.end()) return *it->second;
  }
  std::unique_lock lock(mutex_);
  if (auto it = children_.find(values); it != children_.end()) return *it->second;
  std::unique_ptr<Metric> created;
  if constexpr (std::is_same_v<Metric, Histogram>) {
    created = std::make_unique<Histogram>(bounds_);
  } else {
    created = std::make_unique<Metric>();
  }
  Metric& out = *created;
  children_.emplace(Labels(values.begin(), values.end()), std::move(created));
  return out;
}

// Owns every family. Families are registered once, at start, and rendered in registration order.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // REQUIRES (asserted): valid Prometheus names, a name registered once, counter names ending
  // in "_total", no histogram label named "le", histogram bounds strictly increasing.
  Family<Counter>& counter(std::string name, std::string help,
                           std::vector<std::string> labels = {});
  Family<Gauge>& gauge(std::string name, std::string help, std::vector<std::string> labels = {});
  Family<Histogram>& histogram(std::string name, std::string help, std::vector<double> bounds,
                               std::vector<std::string> labels = {});

  using AnyFamily = std::variant<std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
                                 std::unique_ptr<Family<Histogram>>>;
  // Calls fn(const AnyFamily&) for each family in registration order.
  template <class Fn>
  void for_each(Fn&& fn) const {
    std::lock_guard lock(mutex_);
    for (const AnyFamily& family : families_) fn(family);
  }

 private:
  void check_new_name(const std::string& name, const std::vector<std::string>& labels) const;

  mutable std::mutex mutex_;
  std::vector<AnyFamily> families_;
};

// The whole registry in the Prometheus text format: per family "# HELP" and "# TYPE" lines, then
// one line per sample. Label values that are empty are left out (Prometheus treats an empty
// label as absent). Histograms give <name>_bucket{...,le="<bound>"} lines (cumulative, ending
// with le="+Inf"), <name>_sum and <name>_count.
std::string render_prometheus(const Registry& registry);

// The content type of render_prometheus()'s output.
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace cqrs::metrics
