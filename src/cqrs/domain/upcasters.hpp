// Upcasters: schema evolution of stored events without rewriting them (events are immutable).
//
// An upcaster turns the data of (event type, version n) into version n + 1. On every read, for
// aggregates and handlers alike, a stored event is passed through the chain of upcasters from
// its stored version up to the newest registered one:
//
//   upcasters.add("GiftCardIssued", 1, [](nlohmann::json data) {
//     data["currency"] = "EUR";  // version 2 added the currency
//     return data;
//   });
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace cqrs {

class Upcasters {
 public:
  using Fn = std::function<nlohmann::json(nlohmann::json data)>;

  // Registers the step from `from_version` to `from_version + 1` of `type`. Throws
  // std::logic_error when that step is already registered (a programming error).
  void add(std::string type, int from_version, Fn fn);

  // Brings `data` of `type` at `version` up to the newest version; returns that version.
  // Exceptions from an upcaster propagate (the read fails with the event named by the caller).
  int upcast(std::string_view type, int version, nlohmann::json& data) const;

  bool empty() const { return steps_.empty(); }

 private:
  std::map<std::pair<std::string, int>, Fn, std::less<>> steps_;
};

}  // namespace cqrs
