// Dispatch envelope decoding.
#include "cqrs/envelope.hpp"

#include <optional>
#include <utility>

#include "cqrs/append_validation.hpp"

namespace cqrs {
namespace {

Error invalid(std::string message) {
  return Error::invalid(errc::kInvalidCommand, std::move(message));
}

Error too_large(size_t size, size_t limit) {
  return Error::invalid(errc::kCommandTooLarge,
                        "command is " + std::to_string(size) + " bytes; the limit is " +
                            std::to_string(limit) + " (limits.max_command_bytes)");
}

}  // namespace

Result<DecodedEnvelope> decode_envelope(const Domain& domain, const std::string& text,
                                        const EnvelopeLimits& limits) {
  size_t limit = limits.max_command_bytes;
  if (text.size() > limit + kEnvelopeOverhead) return too_large(text.size(), limit);
  nlohmann::json envelope = nlohmann::json::parse(text, nullptr, false);
  if (envelope.is_discarded() || !envelope.is_object()) {
    return invalid("the dispatch envelope is not a JSON object");
  }
  if (json_nested_deeper_than(envelope, kMaxJsonDepth)) {
    return invalid("the dispatch envelope nests arrays and objects deeper than " +
                   std::to_string(kMaxJsonDepth) + " levels");
  }
  auto type = envelope.find("type");
  if (type == envelope.end() || !type->is_string()) {
    return invalid("envelope field 'type' (the command type name) is missing or not a string");
  }
  const std::string& type_name = type->get_ref<const std::string&>();

  Result<DecodedCommand> command = invalid("envelope has neither 'payload' nor 'data'");
  if (auto payload = envelope.find("payload"); payload != envelope.end()) {
    if (!payload->is_string()) return invalid("envelope field 'payload' must be JSON text");
    const std::string& payload_text = payload->get_ref<const std::string&>();
    if (payload_text.size() > limit) return too_large(payload_text.size(), limit);
    command = domain.decode(type_name, payload_text);
  } else if (auto data = envelope.find("data"); data != envelope.end()) {
    if (text.size() > limit) return too_large(text.size(), limit);
    command = domain.decode_json(type_name, *data);
  } else if (domain.find_command(type_name) == nullptr) {
    command = domain.decode(type_name, "{}");  // unregistered_command wins
  }
  if (!command) return command.error();

  DecodedEnvelope decoded;
  decoded.envelope.command = std::move(command).value();
  decoded.timeout = limits.default_timeout;
  if (auto id = envelope.find("command_id"); id != envelope.end() && !id->is_null()) {
    std::optional<Uuid> parsed;
    if (id->is_string()) parsed = Uuid::parse(id->get_ref<const std::string&>());
    if (!parsed || parsed->is_nil()) return invalid("envelope field 'command_id' must be a UUID");
    decoded.envelope.command_id = *parsed;
  } else {
    decoded.envelope.command_id = Uuid::time_ordered();
  }
  std::string command_id = decoded.envelope.command_id.to_string();
  decoded.envelope.causation_id = command_id;
  decoded.envelope.correlation_id = command_id;
  if (auto correlation = envelope.find("correlation_id");
      correlation != envelope.end() && !correlation->is_null()) {
    if (!correlation->is_string() || correlation->get_ref<const std::string&>().empty()) {
      return invalid("envelope field 'correlation_id' must be a non-empty string");
    }
    // It goes into every event's metadata and the stores' index of correlations.
    if (size_t bytes = correlation->get_ref<const std::string&>().size();
        bytes > kMaxCorrelationIdBytes) {
      return invalid("envelope field 'correlation_id' is " + std::to_string(bytes) +
                     " bytes long; the limit is " + std::to_string(kMaxCorrelationIdBytes));
    }
    decoded.envelope.correlation_id = correlation->get<std::string>();
  }
  if (auto causation = envelope.find("causation_id");
      causation != envelope.end() && !causation->is_null()) {
    if (!causation->is_string() || causation->get_ref<const std::string&>().empty()) {
      return invalid("envelope field 'causation_id' must be a non-empty string");
    }
    decoded.envelope.causation_id = causation->get<std::string>();
  }
  if (auto metadata = envelope.find("metadata");
      metadata != envelope.end() && !metadata->is_null()) {
    if (!metadata->is_object()) return invalid("envelope field 'metadata' must be a JSON object");
    decoded.envelope.metadata = *metadata;
  }
  if (auto consistency = envelope.find("consistency");
      consistency != envelope.end() && !consistency->is_null()) {
    if (*consistency == "strong") {
      decoded.envelope.consistency = Consistency::kStrong;
    } else if (*consistency != "eventual") {
      return invalid("envelope field 'consistency' must be \"eventual\" or \"strong\"");
    }
  }
  if (auto timeout = envelope.find("timeout_ms");
      timeout != envelope.end() && !timeout->is_null()) {
    if (!timeout->is_number_integer() || timeout->get<int64_t>() < 1 ||
        timeout->get<int64_t>() > kMaxTimeoutMs) {
      return invalid("envelope field 'timeout_ms' must be an integer from 1 to " +
                     std::to_string(kMaxTimeoutMs));
    }
    decoded.timeout = std::chrono::milliseconds(timeout->get<int64_t>());
  }
  return decoded;
}

}  // namespace cqrs
