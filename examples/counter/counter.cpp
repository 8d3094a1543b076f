// Counter rules: an increment must be positive.
#include "counter.hpp"

namespace counter {

cqrs::Outcome Counter::execute(const IncrementCounter& command) const {
  if (command.by <= 0) {
    return cqrs::reject("invalid_increment",
                        "increment by a positive amount, got " + std::to_string(command.by));
  }
  return CounterIncremented{command.counter_id, command.by, value + command.by};
}

void Counter::apply(const CounterIncremented& event) {
  counter_id = event.counter_id;
  value = event.value;
}

void register_domain(cqrs::Domain& domain) {
  domain.aggregate<Counter>("Counter", "counter", "counter_id")
      .handles<IncrementCounter>()
      .applies<CounterIncremented>();
}

}  // namespace counter
