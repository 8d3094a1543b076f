// Invariants of envelope and command decoding, checked by the fuzz targets and the regression test.
#include "fuzz_checks.hpp"

#include <algorithm>
#include <cctype>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "bank/bank.hpp"
#include "cqrs/append_validation.hpp"
#include "cqrs/envelope.hpp"
#include "giftcard/giftcard.hpp"

namespace cqrs::fuzz {
namespace {

// The gateway's limits in the default configuration, and a small one that fuzz inputs exceed.
const EnvelopeLimits kLimits{};
const EnvelopeLimits kSmallLimits{32, std::chrono::milliseconds(5000)};

// Encodes a decoded command (DecodedCommand::value) back to JSON with its type's mapping.
using Encoder = std::function<nlohmann::json(const void* command)>;

template <Message... Cs>
void add_encoders(std::map<std::string, Encoder, std::less<>>& encoders) {
  (encoders.emplace(
       std::string(type_name_of<Cs>()),
       [](const void* command) { return nlohmann::json(*static_cast<const Cs*>(command)); }),
   ...);
}

// Every shipped command. check_command reports a registered command missing here, so a command
// added to a domain cannot silently escape the round-trip checks.
const std::map<std::string, Encoder, std::less<>>& encoders() {
  static const auto all = [] {
    std::map<std::string, Encoder, std::less<>> map;
    add_encoders<giftcard::IssueGiftCard, giftcard::RedeemGiftCard, giftcard::CancelGiftCard>(map);
    add_encoders<bank::OpenAccount, bank::DepositMoney, bank::WithdrawMoney, bank::CloseAccount,
                 bank::DebitAccount, bank::CreditAccount, bank::RefundAccount, bank::TransferMoney,
                 bank::CompleteTransfer, bank::FailTransfer>(map);
    return map;
  }();
  return all;
}

struct StoredEvent {
  std::string type;
  nlohmann::json data;
};
using History = std::vector<StoredEvent>;

template <Message E>
StoredEvent stored(const E& event) {
  return {std::string(type_name_of<E>()), nlohmann::json(event)};
}

// Histories that put the aggregate `id` of type `aggregate` in each of its states; the first is
// always the empty history (a new aggregate).
std::vector<History> histories(const std::string& aggregate, const std::string& id) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  std::vector<History> all{History{}};
  if (aggregate == "GiftCard") {
    using namespace giftcard;
    all.push_back({stored(GiftCardIssued{id, 1000})});
    all.push_back({stored(GiftCardIssued{id, 1000}), stored(GiftCardRedeemed{id, 1000, 0}),
                   stored(GiftCardEmptied{id})});
    all.push_back({stored(GiftCardIssued{id, 1000}), stored(GiftCardCancelled{id, 1000})});
    all.push_back({stored(GiftCardIssued{id, kMax})});
  } else if (aggregate == "Account") {
    using namespace bank;
    all.push_back({stored(AccountOpened{id, "owner", "owner@example.com", 1000})});
    all.push_back({stored(AccountOpened{id, "owner", "owner@example.com", kMax})});
    all.push_back(
        {stored(AccountOpened{id, "owner", "owner@example.com", 0}), stored(AccountClosed{id})});
    all.push_back({stored(AccountOpened{id, "owner", "owner@example.com", 1000}),
                   stored(AccountDebited{id, "t1", 100, 900}),
                   stored(AccountCredited{id, "t2", 100, 1000}),
                   stored(AccountRefunded{id, "t1", 100, 1100})});
    all.push_back({stored(TransferDebitRejected{id, "t1", 100, "account_not_found"}),
                   stored(TransferCreditRejected{id, "t2", 100, "account_not_found"})});
  } else if (aggregate == "Transfer") {
    using namespace bank;
    all.push_back({stored(TransferRequested{id, "a1", "a2", 100})});
    all.push_back({stored(TransferRequested{id, "a1", "a2", 100}), stored(TransferCompleted{id})});
    all.push_back(
        {stored(TransferRequested{id, "a1", "a2", 100}), stored(TransferFailed{id, "why"})});
  }
  return all;
}

bool is_snake_case(std::string_view code) {
  if (code.empty() || !std::islower(static_cast<unsigned char>(code.front()))) return false;
  if (code.back() == '_') return false;
  char previous = 0;
  for (char ch : code) {
    bool lower_or_digit = std::islower(static_cast<unsigned char>(ch)) ||
                          std::isdigit(static_cast<unsigned char>(ch));
    if (!lower_or_digit && ch != '_') return false;
    if (ch == '_' && previous == '_') return false;
    previous = ch;
  }
  return true;
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return text;
}

// A decoding error as the gateway answers it: invalid input, one of `codes`, snake_case, and a
// message that can be sent in a JSON reply.
std::string check_error(const Error& error, std::initializer_list<std::string_view> codes,
                        bool utf8_input = true) {
  std::string what = "error " + error.to_string() + ": ";
  if (error.kind() != ErrorKind::kInvalidInput) return what + "kind is not invalid input";
  if (std::find(codes.begin(), codes.end(), error.code()) == codes.end()) {
    return what + "unexpected code";
  }
  if (!is_snake_case(error.code())) return what + "code is not snake_case";
  if (error.message().empty()) return what + "empty message";
  // The reply carries the message as a JSON string; nlohmann refuses to dump invalid UTF-8.
  if (utf8_input && !is_valid_utf8(error.message())) return what + "message is not UTF-8";
  return {};
}

// Unique claims name a registered scope, and their values normalize to a non-empty fixed point
// (the store compares normalized values).
std::string check_claims(const Domain& domain, const Outcome& outcome) {
  for (const UniqueClaim& claim : outcome.claims()) {
    const UniqueScope* scope = domain.unique_scopes().find(claim.scope);
    if (scope == nullptr) return "claim in the unregistered scope '" + claim.scope + "'";
    if (!scope->normalize) continue;
    std::string normalized = scope->normalize(claim.value);
    if (normalized.empty()) return "claim in " + claim.scope + " normalizes to nothing";
    if (scope->normalize(normalized) != normalized) {
      return "claim in " + claim.scope + " does not normalize to a fixed point";
    }
  }
  return {};
}

std::string check_rejection_or_events(const AggregateType& aggregate, AggregateInstance& instance,
                                      const Outcome& outcome) {
  if (outcome.rejected()) {
    const Rejection& rejection = outcome.rejection();
    if (!is_snake_case(rejection.code)) {
      return "rejection code '" + rejection.code + "' is not snake_case";
    }
    if (rejection.message.empty()) return "rejection " + rejection.code + " has no message";
    if (!outcome.events().empty() || !outcome.claims().empty()) {
      return "rejection " + rejection.code + " carries events or claims";
    }
    return {};
  }
  const auto& known = aggregate.event_names();
  for (const NewEvent& event : outcome.events()) {
    if (std::find(known.begin(), known.end(), event.type) == known.end()) {
      return "decided event " + event.type + " is not registered with " + aggregate.name();
    }
    try {
      (void)event.data.dump();
    } catch (const std::exception& ex) {
      return "decided event " + event.type + " does not serialize: " + ex.what();
    }
    if (auto applied = instance.apply(event.type, event.data); !applied) {
      return "decided event " + event.type + " does not apply: " + applied.error().to_string();
    }
  }
  return {};
}

// Executes `command` against its aggregate in every prepared state, as the aggregate actor does.
std::string check_execution(const Domain& domain, const DecodedCommand& command) {
  const AggregateType& aggregate = *command.type->aggregate;
  for (const History& history : histories(aggregate.name(), command.aggregate_id)) {
    std::unique_ptr<AggregateInstance> instance = aggregate.create();
    for (const StoredEvent& event : history) {
      if (auto applied = instance->apply(event.type, event.data); !applied) {
        return "prepared history does not apply: " + applied.error().to_string();
      }
    }
    std::string where = command.type->name + " after " + std::to_string(history.size()) +
                        " events of " + aggregate.name() + ": ";
    Outcome outcome;
    try {
      outcome = instance->execute(command);
    } catch (const std::exception& ex) {
      return where + "the shipped domain threw " + ex.what();
    }
    if (auto problem = check_rejection_or_events(aggregate, *instance, outcome); !problem.empty()) {
      return where + problem;
    }
    if (auto problem = check_claims(domain, outcome); !problem.empty()) return where + problem;
    nlohmann::json state = instance->state();
    std::unique_ptr<AggregateInstance> restored = aggregate.create();
    if (auto ok = restored->restore(state); !ok) {
      return where + "snapshot does not restore: " + ok.error().to_string();
    }
    if (restored->state() != state) return where + "restored snapshot differs";
  }
  return {};
}

// A decoded command: addressed by the payload's identity field, carrying exactly the payload's
// fields, stable under encode/decode, and executable.
std::string check_command_value(const Domain& domain, std::string_view type,
                                const nlohmann::json& payload, const DecodedCommand& command) {
  std::string where = "decoded " + std::string(type) + ": ";
  if (command.type == nullptr || command.value == nullptr) return where + "no type or value";
  if (command.type != domain.find_command(type)) return where + "type differs from the registry";
  const AggregateType& aggregate = *command.type->aggregate;
  auto identity = payload.find(aggregate.identity_field());
  if (identity == payload.end() || !identity->is_string() ||
      identity->get_ref<const std::string&>() != command.aggregate_id) {
    return where + "aggregate id is not the payload's " + aggregate.identity_field();
  }
  if (command.aggregate_id.empty()) return where + "empty aggregate id";
  if (command.stream_id != aggregate.prefix() + "-" + command.aggregate_id) {
    return where + "stream id " + command.stream_id + " is not <prefix>-<id>";
  }
  if (auto valid = validate_stream_id(command.stream_id); !valid) {
    return where + "stream id the store refuses: " + valid.error().to_string();
  }

  auto encoder = encoders().find(command.type->name);
  if (encoder == encoders().end()) return where + "the fuzz checks have no encoder for it";
  nlohmann::json encoded = encoder->second(command.value.get());
  if (!encoded.is_object()) return where + "encodes to a non-object";
  for (const auto& [key, value] : encoded.items()) {
    auto sent = payload.find(key);
    bool same = sent == payload.end() ? value.is_null() : *sent == value;
    if (!same) return where + "field '" + key + "' differs from the payload";
  }
  Result<DecodedCommand> again = domain.decode_json(type, encoded);
  if (!again) return where + "its encoding does not decode: " + again.error().to_string();
  if (again->aggregate_id != command.aggregate_id || again->stream_id != command.stream_id ||
      encoder->second(again->value.get()) != encoded) {
    return where + "decoding its encoding gives another command";
  }
  return check_execution(domain, command);
}

// A domain with the chosen shipped domains registered.
struct Registered {
  Registered(bool with_giftcard, bool with_bank) {
    if (with_giftcard) giftcard::register_domain(domain);
    if (with_bank) bank::register_domain(domain);
  }
  Domain domain;
};

}  // namespace

const Domain& shipped_domain() {
  static const Registered registered(true, true);
  return registered.domain;
}

const Domain& giftcard_domain() {
  static const Registered registered(true, false);
  return registered.domain;
}

const Domain& bank_domain() {
  static const Registered registered(false, true);
  return registered.domain;
}

std::string check_command(const Domain& domain, std::string_view input) {
  size_t newline = input.find('\n');
  std::string_view type = input.substr(0, newline);
  std::string_view payload_text =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  const CommandType* registered = domain.find_command(type);
  if (registered != nullptr && encoders().find(type) == encoders().end()) {
    return "command " + registered->name + " has no encoder in the fuzz checks";
  }

  Result<DecodedCommand> from_text = domain.decode(type, payload_text);
  nlohmann::json payload = nlohmann::json::parse(payload_text, nullptr, false);
  if (!from_text) {
    const Error& error = from_text.error();
    // The type name comes from the envelope's JSON, so it is UTF-8 in the gateway; raw inputs
    // here may not be, and the unregistered_command message quotes the name.
    if (auto problem = check_error(error, {errc::kUnregisteredCommand, errc::kInvalidCommand},
                                   is_valid_utf8(type));
        !problem.empty()) {
      return problem;
    }
    if ((registered == nullptr) != error.is(errc::kUnregisteredCommand)) {
      return "unregistered_command iff the type is unknown, got " + error.to_string();
    }
    if (registered != nullptr) {
      if (payload.is_discarded() && !contains(error.message(), "not valid JSON")) {
        return "text that is not JSON gives " + error.to_string();
      }
      if (!payload.is_discarded() && !contains(error.message(), "command " + registered->name)) {
        return "the error does not name the command: " + error.to_string();
      }
      if (payload.is_object() && !contains(error.message(), "field '") &&
          !contains(error.message(), "payload nests")) {
        return "the error does not name the field: " + error.to_string();
      }
    }
  } else if (payload.is_discarded()) {
    return "decoded text that is not JSON";
  } else if (auto problem = check_command_value(domain, type, payload, *from_text);
             !problem.empty()) {
    return problem;
  }

  // The envelope's "data" path decodes the parsed document; it must agree with the text path.
  if (payload.is_discarded()) return {};
  Result<DecodedCommand> from_json = domain.decode_json(type, payload);
  if (from_json.ok() != from_text.ok()) return "decode and decode_json disagree";
  if (!from_json.ok() && (from_json.error().code() != from_text.error().code() ||
                          from_json.error().message() != from_text.error().message())) {
    return "decode and decode_json give different errors: " + from_text.error().to_string() +
           " / " + from_json.error().to_string();
  }
  if (from_json.ok()) {
    auto encoder = encoders().find(type);
    if (encoder->second(from_json->value.get()) != encoder->second(from_text->value.get())) {
      return "decode and decode_json give different commands";
    }
  }
  return {};
}

std::string check_envelope(std::string_view input) {
  const Domain& domain = shipped_domain();
  std::string text(input);
  Result<DecodedEnvelope> decoded = decode_envelope(domain, text, kLimits);
  Result<DecodedEnvelope> small = decode_envelope(domain, text, kSmallLimits);
  if (!decoded) {
    const Error& error = decoded.error();
    if (auto problem = check_error(
            error, {errc::kInvalidCommand, errc::kCommandTooLarge, errc::kUnregisteredCommand});
        !problem.empty()) {
      return problem;
    }
    if (error.is(errc::kInvalidCommand) && !contains(error.message(), "envelope") &&
        !contains(error.message(), "command ") && !contains(error.message(), "payload of ")) {
      return "the error names neither the envelope field nor the command: " + error.to_string();
    }
    if (small) return "a smaller limit accepted what the default limit refused";
    return {};
  }
  if (!small && !small.error().is(errc::kCommandTooLarge)) {
    return "a smaller limit gave " + small.error().to_string() + " instead of command_too_large";
  }

  // Decoded: every envelope field made it into the decoded envelope as sent.
  nlohmann::json envelope = nlohmann::json::parse(text, nullptr, false);
  if (!envelope.is_object()) return "decoded an envelope that is not a JSON object";
  const CommandEnvelope& out = decoded->envelope;
  const std::string& type = envelope["type"].get_ref<const std::string&>();
  nlohmann::json payload;
  if (envelope.contains("payload")) {
    payload = nlohmann::json::parse(envelope["payload"].get<std::string>(), nullptr, false);
  } else {
    payload = envelope["data"];
  }
  auto given = [&envelope](const char* field) {
    auto it = envelope.find(field);
    return it != envelope.end() && !it->is_null() ? &*it : nullptr;
  };
  std::string command_id = out.command_id.to_string();
  if (out.command_id.is_nil()) return "nil command id";
  if (auto* id = given("command_id");
      id != nullptr && lowercase(id->get<std::string>()) != command_id) {
    return "command id " + command_id + " is not the one sent";
  }
  auto* correlation = given("correlation_id");
  auto* causation = given("causation_id");
  if (out.correlation_id != (correlation ? correlation->get<std::string>() : command_id) ||
      out.causation_id != (causation ? causation->get<std::string>() : command_id) ||
      out.correlation_id.empty() || out.causation_id.empty()) {
    return "correlation or causation id is not the one sent or the command id";
  }
  auto* metadata = given("metadata");
  if (!out.metadata.is_object() || (metadata != nullptr && *metadata != out.metadata)) {
    return "metadata is not the object sent";
  }
  // The aggregate copies and serializes the metadata for every event: recursion, once per level.
  if (json_nested_deeper_than(out.metadata, kMaxJsonDepth)) return "metadata nests too deep";
  try {
    (void)out.metadata.dump();
  } catch (const std::exception& ex) {
    return std::string("metadata does not serialize: ") + ex.what();
  }
  auto* consistency = given("consistency");
  bool strong = consistency != nullptr && *consistency == "strong";
  if ((out.consistency == Consistency::kStrong) != strong) return "consistency is not the one sent";
  auto* timeout = given("timeout_ms");
  if (decoded->timeout.count() < 1 || decoded->timeout.count() > kMaxTimeoutMs ||
      decoded->timeout != (timeout ? std::chrono::milliseconds(timeout->get<int64_t>())
                                   : kLimits.default_timeout)) {
    return "timeout is not the one sent or the default";
  }
  return check_command_value(domain, type, payload, out.command);
}

}  // namespace cqrs::fuzz
