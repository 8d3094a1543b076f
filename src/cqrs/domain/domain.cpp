// Domain registry and command decoding.
#include "cqrs/domain/domain.hpp"

#include <utility>
#include <vector>

#include "cqrs/append_validation.hpp"

namespace cqrs {

bool json_nested_deeper_than(const nlohmann::json& value, size_t max_depth) {
  if (!value.is_structured()) return false;
  std::vector<std::pair<const nlohmann::json*, size_t>> pending{{&value, 1}};
  while (!pending.empty()) {
    auto [node, depth] = pending.back();
    pending.pop_back();
    if (depth > max_depth) return true;
    for (const nlohmann::json& member : *node) {
      if (member.is_structured()) pending.emplace_back(&member, depth + 1);
    }
  }
  return false;
}

Result<void> AggregateType::apply(void* state, std::string_view event_type,
                                  const nlohmann::json& data) const {
  auto it = appliers_.find(event_type);
  if (it == appliers_.end()) {
    return Error::internal(
        errc::kInvalidEvent,
        "aggregate " + name_ + " has no apply() for event type '" + std::string(event_type) + "'");
  }
  try {
    it->second(state, data);
  } catch (const std::exception& ex) {
    return Error::internal(errc::kInvalidEvent,
                           "event '" + std::string(event_type) + "' does not decode: " + ex.what());
  }
  return {};
}

AggregateType& Domain::add_aggregate(std::unique_ptr<AggregateType> type) {
  for (const auto& existing : aggregates_) {
    if (existing->name() == type->name() || existing->prefix() == type->prefix()) {
      throw std::logic_error("aggregate '" + type->name() + "' (prefix '" + type->prefix() +
                             "') clashes with the registered '" + existing->name() + "'");
    }
  }
  if (type->prefix().empty() || type->identity_field().empty()) {
    throw std::logic_error("aggregate '" + type->name() + "' needs a prefix and identity field");
  }
  // The name is its snapshots' state type, which the stores check as they check event types.
  if (auto valid = validate_type_name(type->name(), "aggregate '" + type->prefix() + "'", "name");
      !valid) {
    throw std::logic_error(valid.error().message() + " (it is its snapshots' state type)");
  }
  aggregates_.push_back(std::move(type));
  return *aggregates_.back();
}

void Domain::add_command(std::unique_ptr<CommandType> command) {
  std::string name = command->name;
  if (!commands_.emplace(name, std::move(command)).second) {
    throw std::logic_error("command '" + name + "' is registered twice");
  }
}

CommandType& Domain::handled_command(const AggregateType& aggregate, std::string_view command,
                                     std::string_view declared_as) {
  auto it = commands_.find(command);
  if (it == commands_.end() || it->second->aggregate != &aggregate) {
    throw std::logic_error("aggregate '" + aggregate.name() + "' declares '" +
                           std::string(command) + "' as " + std::string(declared_as) +
                           ", but does not handle it (list it in handles() first)");
  }
  return *it->second;
}

void Domain::mark_creating(const AggregateType& aggregate, std::string_view command) {
  handled_command(aggregate, command, "creating").creates = true;
}

void Domain::mark_internal(const AggregateType& aggregate, std::string_view command) {
  handled_command(aggregate, command, "internal").internal = true;
}

const CommandType* Domain::find_command(std::string_view name) const {
  auto it = commands_.find(name);
  return it == commands_.end() ? nullptr : it->second.get();
}

const AggregateType* Domain::find_aggregate(std::string_view name_or_prefix) const {
  for (const auto& type : aggregates_) {
    if (type->name() == name_or_prefix || type->prefix() == name_or_prefix) return type.get();
  }
  return nullptr;
}

std::vector<const AggregateType*> Domain::aggregates() const {
  std::vector<const AggregateType*> out;
  for (const auto& type : aggregates_) out.push_back(type.get());
  return out;
}

Result<DecodedCommand> Domain::decode(std::string_view type, std::string_view payload) const {
  if (find_command(type) == nullptr) return decode_json(type, nlohmann::json::object());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(payload);
  } catch (const nlohmann::json::parse_error& ex) {
    return Error::invalid(errc::kInvalidCommand, "payload of " + std::string(type) +
                                                     " is not valid JSON (byte " +
                                                     std::to_string(ex.byte) + ")");
  } catch (const nlohmann::json::out_of_range&) {
    // A number beyond a double's range, such as 1e999: the parser throws this, not parse_error.
    return Error::invalid(errc::kInvalidCommand,
                          "payload of " + std::string(type) +
                              " is not valid JSON (a number is too large for a double)");
  }
  return decode_json(type, json);
}

Result<DecodedCommand> Domain::decode_json(std::string_view type,
                                           const nlohmann::json& payload) const {
  const CommandType* command = find_command(type);
  if (command == nullptr) {
    std::string known;
    for (const auto& [name, unused] : commands_) known += (known.empty() ? "" : ", ") + name;
    return Error::invalid(errc::kUnregisteredCommand,
                          "unknown command type '" + std::string(type) +
                              "'; this server handles: " + (known.empty() ? "nothing" : known));
  }
  std::string where = "command " + command->name + ": ";
  if (!payload.is_object()) {
    return Error::invalid(errc::kInvalidCommand,
                          where + "payload must be a JSON object, got " + payload.type_name());
  }
  if (json_nested_deeper_than(payload, kMaxJsonDepth)) {
    return Error::invalid(errc::kInvalidCommand,
                          where + "payload nests arrays and objects deeper than " +
                              std::to_string(kMaxJsonDepth) + " levels");
  }
  const std::string& identity = command->aggregate->identity_field();
  auto id_it = payload.find(identity);
  if (id_it == payload.end()) {
    return Error::invalid(errc::kInvalidCommand, where + "field '" + identity + "' is missing");
  }
  if (!id_it->is_string() || id_it->get_ref<const std::string&>().empty()) {
    return Error::invalid(errc::kInvalidCommand,
                          where + "field '" + identity + "' must be a non-empty string");
  }
  DecodedCommand decoded;
  decoded.type = command;
  decoded.aggregate_id = id_it->get<std::string>();
  decoded.stream_id = command->aggregate->stream_id(decoded.aggregate_id);
  if (auto valid = validate_stream_id(decoded.stream_id); !valid) {
    return Error::invalid(errc::kInvalidCommand,
                          where + "field '" + identity + "': " + valid.error().message());
  }
  try {
    decoded.value = command->decode(payload);
  } catch (const FieldError& ex) {
    return Error::invalid(errc::kInvalidCommand, where + ex.what());
  } catch (const std::exception& ex) {
    return Error::invalid(errc::kInvalidCommand, where + ex.what());
  }
  return decoded;
}

void Domain::add_handler(std::shared_ptr<Handler> handler) {
  for (const auto& existing : handlers_) {
    if (existing->name() == handler->name()) {
      throw std::logic_error("handler '" + handler->name() + "' is registered twice");
    }
  }
  handlers_.push_back(std::move(handler));
}

}  // namespace cqrs
