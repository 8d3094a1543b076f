// Metrics registry and its Prometheus text rendering.
#include "cqrs/metrics/registry.hpp"

#include <cassert>
#include <charconv>
#include <cmath>

namespace cqrs::metrics {
namespace {

[[maybe_unused]] bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t idx = 0; idx < name.size(); ++idx) {
    char c = name[idx];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(idx > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void append_number(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else {
    // Shortest round-trip text; plain decimals (0.0005, not 5e-04) unless very small or large.
    double magnitude = std::fabs(value);
    bool plain = magnitude == 0 || (magnitude >= 1e-6 && magnitude < 1e15);
    char buffer[64];
    auto [end, ec] =
        plain ? std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed)
              : std::to_chars(buffer, buffer + sizeof buffer, value);
    assert(ec == std::errc());
    out.append(buffer, end);
  }
}

void append_number(std::string& out, uint64_t value) {
  char buffer[24];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  assert(ec == std::errc());
  out.append(buffer, end);
}

// HELP text: backslash and line feed escaped.
void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// Label values: backslash, double quote and line feed escaped.
void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// "{name="value",...}" for the non-empty values plus `extra` (already rendered, e.g. le="1"),
// or nothing when there is no label to show.
void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra = {}) {
  bool open = false;
  for (size_t idx = 0; idx < names.size() && idx < values.size(); ++idx) {
    if (values[idx].empty()) continue;
    out += open ? ',' : '{';
    open = true;
    out += names[idx];
    out += "=\"";
    append_label_value(out, values[idx]);
    out += '"';
  }
  if (!extra.empty()) {
    out += open ? ',' : '{';
    open = true;
    out += extra;
  }
  if (open) out += '}';
}

void append_header(std::string& out, const std::string& name, const std::string& help,
                   std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_help(out, help);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()), counts_(bounds.size() + 1) {
  assert(std::is_sorted(bounds_.begin(), bounds_.end()) &&
         std::adjacent_find(bounds_.begin(), bounds_.end()) == bounds_.end());
}

void Histogram::observe(double value) {
  size_t bucket = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                      bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  snapshot.bounds = bounds_;
  snapshot.cumulative.reserve(counts_.size());
  uint64_t running = 0;
  for (const auto& count : counts_) {
    running += count.load(std::memory_order_relaxed);
    snapshot.cumulative.push_back(running);
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

void Registry::check_new_name([[maybe_unused]] const std::string& name,
                              [[maybe_unused]] const std::vector<std::string>& labels) const {
  assert(valid_name(name));
  for ([[maybe_unused]] const auto& label : labels) {
    assert(valid_name(label) && label.find(':') == std::string::npos);
  }
#ifndef NDEBUG
  for (const AnyFamily& family : families_) {
    std::visit([&](const auto& existing) { assert(existing->name() != name); }, family);
  }
#endif
}

Family<Counter>& Registry::counter(std::string name, std::string help,
                                   std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  check_new_name(name, labels);
  assert(name.size() > 6 && name.ends_with("_total"));
  auto family = std::make_unique<Family<Counter>>(std::move(name), std::move(help),
                                                  std::move(labels), std::vector<double>{});
  auto& out = *family;
  families_.emplace_back(std::move(family));
  return out;
}

Family<Gauge>& Registry::gauge(std::string name, std::string help,
                               std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  check_new_name(name, labels);
  auto family = std::make_unique<Family<Gauge>>(std::move(name), std::move(help), std::move(labels),
                                                std::vector<double>{});
  auto& out = *family;
  families_.emplace_back(std::move(family));
  return out;
}

Family<Histogram>& Registry::histogram(std::string name, std::string help,
                                       std::vector<double> bounds,
                                       std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  check_new_name(name, labels);
  assert(std::find(labels.begin(), labels.end(), "le") == labels.end());
  auto family = std::make_unique<Family<Histogram>>(std::move(name), std::move(help),
                                                    std::move(labels), std::move(bounds));
  auto& out = *family;
  families_.emplace_back(std::move(family));
  return out;
}

std::string render_prometheus(const Registry& registry) {
  std::string out;
  registry.for_each([&out](const Registry::AnyFamily& any) {
    if (const auto* counters = std::get_if<std::unique_ptr<Family<Counter>>>(&any)) {
      const Family<Counter>& family = **counters;
      append_header(out, family.name(), family.help(), "counter");
      family.for_each([&](const std::vector<std::string>& values, const Counter& counter) {
        out += family.name();
        append_labels(out, family.label_names(), values);
        out += ' ';
        append_number(out, counter.value());
        out += '\n';
      });
    } else if (const auto* gauges = std::get_if<std::unique_ptr<Family<Gauge>>>(&any)) {
      const Family<Gauge>& family = **gauges;
      append_header(out, family.name(), family.help(), "gauge");
      family.for_each([&](const std::vector<std::string>& values, const Gauge& gauge) {
        out += family.name();
        append_labels(out, family.label_names(), values);
        out += ' ';
        append_number(out, gauge.value());
        out += '\n';
      });
    } else {
      const Family<Histogram>& family = *std::get<std::unique_ptr<Family<Histogram>>>(any);
      append_header(out, family.name(), family.help(), "histogram");
      family.for_each([&](const std::vector<std::string>& values, const Histogram& histogram) {
        Histogram::Snapshot snapshot = histogram.snapshot();
        for (size_t idx = 0; idx < snapshot.cumulative.size(); ++idx) {
          std::string le = "le=\"";
          if (idx < snapshot.bounds.size()) {
            append_number(le, snapshot.bounds[idx]);
          } else {
            le += "+Inf";
          }
          le += '"';
          out += family.name();
          out += "_bucket";
          append_labels(out, family.label_names(), values, le);
          out += ' ';
          append_number(out, snapshot.cumulative[idx]);
          out += '\n';
        }
        out += family.name();
        out += "_sum";
        append_labels(out, family.label_names(), values);
        out += ' ';
        append_number(out, snapshot.sum);
        out += '\n';
        out += family.name();
        out += "_count";
        append_labels(out, family.label_names(), values);
        out += ' ';
        append_number(out, snapshot.count);
        out += '\n';
      });
    }
  });
  return out;
}

}  // namespace cqrs::metrics
