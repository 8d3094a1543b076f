// The counter domain: counters that only go up. One command, one event.
// Stream: "counter-<counter_id>".
#pragma once

#include <cstdint>
#include <string>

#include "cqrs/domain/domain.hpp"

namespace counter {

// Command.
struct IncrementCounter {
  std::string counter_id;
  int64_t by = 0;
};
CQRS_MESSAGE(IncrementCounter, counter_id, by)

// Event: `value` is the counter after the increment.
struct CounterIncremented {
  std::string counter_id;
  int64_t by = 0;
  int64_t value = 0;
};
CQRS_MESSAGE(CounterIncremented, counter_id, by, value)

// The aggregate.
struct Counter {
  std::string counter_id;
  int64_t value = 0;

  cqrs::Outcome execute(const IncrementCounter& command) const;
  void apply(const CounterIncremented& event);
};
CQRS_JSON(Counter, counter_id, value)

// Registers the Counter aggregate and its command.
void register_domain(cqrs::Domain& domain);

}  // namespace counter
