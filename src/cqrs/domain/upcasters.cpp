#include "cqrs/domain/upcasters.hpp"

#include <stdexcept>

namespace cqrs {

void Upcasters::add(std::string type, int from_version, Fn fn) {
  auto key = std::make_pair(std::move(type), from_version);
  if (steps_.count(key) != 0) {
    throw std::logic_error("upcaster for " + key.first + " version " +
                           std::to_string(from_version) + " is registered twice");
  }
  steps_.emplace(std::move(key), std::move(fn));
}

int Upcasters::upcast(std::string_view type, int version, nlohmann::json& data) const {
  if (steps_.empty()) return version;
  for (;;) {
    auto step = steps_.find(std::make_pair(std::string(type), version));
    if (step == steps_.end()) return version;
    data = step->second(std::move(data));
    ++version;
  }
}

}  // namespace cqrs
