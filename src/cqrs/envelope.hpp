// The dispatch envelope: the JSON document a client sends to cqrsd's gateway for one command, and
// its decoding into an addressed command with the envelope's fields. No actors: the gateway calls
// decode_envelope() for every dispatch, and tests and fuzz targets call it directly.
//
//   {"type":"RedeemGiftCard",                    required
//    "payload":"{\"card_id\":\"c1\",...}"        the command as JSON text, or
//    "data":{"card_id":"c1",...},                the command as a JSON object
//    "command_id":"<uuid>",                      optional; generated when absent
//    "correlation_id":"...",                     optional; defaults to the command id
//    "causation_id":"...",                       optional; defaults to the command id
//    "metadata":{...},                           optional JSON object, copied to events
//    "consistency":"eventual"|"strong",          optional
//    "timeout_ms":5000}                          optional, 1..kMaxTimeoutMs
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "cqrs/domain/domain.hpp"
#include "cqrs/result.hpp"
#include "cqrs/uuid.hpp"

namespace cqrs {

inline constexpr int64_t kMaxTimeoutMs = 300000;
// Room for the envelope's own fields around a payload of the maximum size.
inline constexpr size_t kEnvelopeOverhead = 64 * 1024;

enum class Consistency { kEventual, kStrong };

// A decoded, addressed command with its envelope fields. Travels gateway -> router -> aggregate.
struct CommandEnvelope {
  DecodedCommand command;
  Uuid command_id;
  std::string correlation_id;
  std::string causation_id;
  nlohmann::json metadata = nlohmann::json::object();  // user metadata
  Consistency consistency = Consistency::kEventual;
};

struct EnvelopeLimits {
  size_t max_command_bytes = 1 << 20;               // the largest command payload
  std::chrono::milliseconds default_timeout{5000};  // when the envelope sets none
};

struct DecodedEnvelope {
  CommandEnvelope envelope;
  std::chrono::milliseconds timeout;
};

// Decodes one dispatch envelope and the command in it (through `domain`'s registry).
// Errors, all of kind kInvalidInput: command_too_large (the envelope or its payload exceeds
// `limits`), unregistered_command, invalid_command (the message names the envelope or command
// field that is malformed, or says that the envelope or payload nests deeper than kMaxJsonDepth).
Result<DecodedEnvelope> decode_envelope(const Domain& domain, const std::string& text,
                                        const EnvelopeLimits& limits);

}  // namespace cqrs
