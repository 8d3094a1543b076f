// The domain registry: which aggregates exist, which commands each handles, which events each
// applies, and how commands are decoded from JSON. Domain code registers an aggregate in one
// statement:
//
//   domain.aggregate<GiftCard>("GiftCard", "giftcard", "card_id")
//       .handles<IssueGiftCard, RedeemGiftCard, CancelGiftCard>()
//       .applies<GiftCardIssued, GiftCardRedeemed, GiftCardEmptied, GiftCardCancelled>();
//
// An aggregate is a default-constructible struct with JSON mapping (CQRS_JSON) for its state,
// `Outcome execute(const C&) const` per command and `void apply(const E&)` per event. Streams are
// named "<prefix>-<id>", the id taken from the identity field every command carries.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <vector>

#include "cqrs/domain/json_mapping.hpp"
#include "cqrs/domain/outcome.hpp"
#include "cqrs/domain/unique_scopes.hpp"
#include "cqrs/domain/upcasters.hpp"
#include "cqrs/handlers/handler.hpp"
#include "cqrs/result.hpp"

namespace cqrs {

namespace errc {
inline constexpr std::string_view kUnregisteredCommand = "unregistered_command";
inline constexpr std::string_view kInvalidCommand = "invalid_command";
inline constexpr std::string_view kCommandTooLarge = "command_too_large";
inline constexpr std::string_view kExecutionFailed = "execution_failed";
inline constexpr std::string_view kInvalidEvent = "invalid_event";
inline constexpr std::string_view kUnknownAggregate = "unknown_aggregate";
}  // namespace errc

// Commands and dispatch envelopes nest JSON arrays and objects at most this deep. Parsing is
// iterative, but copying, comparing and serializing a document recurse once per level, so deeper
// client input could exhaust the stack of whatever touches it next.
inline constexpr size_t kMaxJsonDepth = 128;

// True when `value` nests arrays and objects more than `max_depth` levels deep (an array or
// object is level 1, its array or object members level 2, ...). Iterative: safe at any depth.
bool json_nested_deeper_than(const nlohmann::json& value, size_t max_depth);

class AggregateType;

// One registered command type.
struct CommandType {
  std::string name;
  const AggregateType* aggregate = nullptr;
  // Builds the typed command from a JSON object. Throws FieldError.
  std::function<std::shared_ptr<const void>(const nlohmann::json&)> decode;
  // Runs the aggregate's execute() for this command type.
  std::function<Outcome(const void* aggregate, const void* command)> execute;
  // The command usually starts a new stream (AggregateBuilder::creates).
  bool creates = false;
  // Only process managers of this daemon may dispatch it (AggregateBuilder::internal).
  bool internal = false;
};

// A command decoded and addressed, ready for its aggregate.
struct DecodedCommand {
  const CommandType* type = nullptr;
  std::string aggregate_id;
  std::string stream_id;
  std::shared_ptr<const void> value;
};

// The live state of one aggregate instance. Not thread-safe: owned by one aggregate actor.
class AggregateInstance {
 public:
  virtual ~AggregateInstance() = default;
  // Decides the command against the current state. Exceptions from domain code propagate.
  virtual Outcome execute(const DecodedCommand& command) const = 0;
  // Folds one stored event into the state. Errors: invalid_event (unknown type, bad payload).
  virtual Result<void> apply(std::string_view type, const nlohmann::json& data) = 0;
  virtual nlohmann::json state() const = 0;
  // Replaces the state with a snapshot. Errors: invalid_event when the snapshot does not decode.
  virtual Result<void> restore(const nlohmann::json& state) = 0;
};

class AggregateType {
 public:
  AggregateType(std::string name, std::string prefix, std::string identity_field)
      : name_(std::move(name)),
        prefix_(std::move(prefix)),
        identity_field_(std::move(identity_field)) {}

  const std::string& name() const { return name_; }
  const std::string& prefix() const { return prefix_; }
  const std::string& identity_field() const { return identity_field_; }
  std::string stream_id(std::string_view aggregate_id) const {
    return prefix_ + "-" + std::string(aggregate_id);
  }
  // Save a snapshot every this many events (0: never).
  int snapshot_every() const { return snapshot_every_; }
  void set_snapshot_every(int events) { snapshot_every_ = events; }

  std::unique_ptr<AggregateInstance> create() const { return factory_(); }
  // The C++ type of the aggregate's state.
  std::type_index state_type() const { return state_type_; }
  // Folds one event into `state`, which REQUIRES to point at an object of state_type().
  // Errors: invalid_event (no apply() for the type, or the payload does not decode).
  Result<void> apply(void* state, std::string_view event_type, const nlohmann::json& data) const;
  const std::vector<std::string>& command_names() const { return command_names_; }
  const std::vector<std::string>& event_names() const { return event_names_; }

 private:
  template <class A>
  friend class AggregateBuilder;
  friend class Domain;

  using Applier = std::function<void(void* aggregate, const nlohmann::json& data)>;

  std::string name_;
  std::string prefix_;
  std::string identity_field_;
  int snapshot_every_ = 0;
  std::type_index state_type_ = typeid(void);
  std::function<std::unique_ptr<AggregateInstance>()> factory_;
  std::vector<std::string> command_names_;
  std::vector<std::string> event_names_;
  std::map<std::string, Applier, std::less<>> appliers_;
};

template <class A>
class AggregateBuilder;

class Domain {
 public:
  Domain() = default;
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;

  // Handlers (projectors, process managers, event handlers) cqrsd runs behind the store.
  // Throws std::logic_error when the name is taken.
  void add_handler(std::shared_ptr<Handler> handler);
  const std::vector<std::shared_ptr<Handler>>& handlers() const { return handlers_; }

  // Upcasters of stored events, applied on every read (aggregates and handlers).
  Upcasters& upcasters() { return upcasters_; }
  const Upcasters& upcasters() const { return upcasters_; }

  // Declares a unique scope that aggregates claim values in (see unique_scopes.hpp). Throws
  // std::logic_error when the name is taken.
  void unique_scope(std::string name, std::function<std::string(std::string_view)> normalize = {},
                    std::string conflict_code = std::string(kDefaultConflictCode)) {
    unique_scopes_.add(
        UniqueScope{std::move(name), std::move(normalize), std::move(conflict_code)});
  }
  const UniqueScopes& unique_scopes() const { return unique_scopes_; }

  // Registers aggregate A. Throws std::logic_error when the name or prefix is taken (a
  // programming error, found at start-up).
  template <class A>
  AggregateBuilder<A> aggregate(std::string name, std::string prefix, std::string identity_field);

  const CommandType* find_command(std::string_view name) const;
  // By registered name ("GiftCard") or stream prefix ("giftcard").
  const AggregateType* find_aggregate(std::string_view name_or_prefix) const;
  std::vector<const AggregateType*> aggregates() const;
  // The aggregate whose state type is A, or nullptr.
  template <class A>
  const AggregateType* aggregate_of() const {
    for (const auto& type : aggregates_) {
      if (type->state_type() == typeid(A)) return type.get();
    }
    return nullptr;
  }

  // Decodes a command from its type name and JSON text. Errors: unregistered_command (naming the
  // known types), invalid_command (naming the field that is missing or mistyped, or saying that
  // the payload is not JSON or nests deeper than kMaxJsonDepth).
  Result<DecodedCommand> decode(std::string_view type, std::string_view payload) const;
  Result<DecodedCommand> decode_json(std::string_view type, const nlohmann::json& payload) const;

 private:
  template <class A>
  friend class AggregateBuilder;
  AggregateType& add_aggregate(std::unique_ptr<AggregateType> type);
  void add_command(std::unique_ptr<CommandType> command);
  void mark_creating(const AggregateType& aggregate, std::string_view command);
  void mark_internal(const AggregateType& aggregate, std::string_view command);
  // The command `aggregate` handles; throws std::logic_error naming `declared_as` otherwise.
  CommandType& handled_command(const AggregateType& aggregate, std::string_view command,
                               std::string_view declared_as);

  std::vector<std::unique_ptr<AggregateType>> aggregates_;
  std::map<std::string, std::unique_ptr<CommandType>, std::less<>> commands_;
  Upcasters upcasters_;
  UniqueScopes unique_scopes_;
  std::vector<std::shared_ptr<Handler>> handlers_;
};

namespace detail {

template <class A>
class TypedAggregate final : public AggregateInstance {
 public:
  explicit TypedAggregate(const AggregateType* type) : type_(type) {}

  Outcome execute(const DecodedCommand& command) const override {
    return command.type->execute(&state_, command.value.get());
  }

  Result<void> apply(std::string_view type, const nlohmann::json& data) override {
    return type_->apply(&state_, type, data);
  }

  nlohmann::json state() const override { return nlohmann::json(state_); }

  Result<void> restore(const nlohmann::json& state) override {
    try {
      state_ = state.get<A>();
    } catch (const std::exception& ex) {
      return Error::internal(errc::kInvalidEvent,
                             std::string("snapshot does not decode: ") + ex.what());
    }
    return {};
  }

 private:
  const AggregateType* type_;
  A state_{};
};

}  // namespace detail

template <class A>
class AggregateBuilder {
 public:
  AggregateBuilder(Domain& domain, AggregateType& type) : domain_(domain), type_(type) {}

  // The commands A handles: A must have `Outcome execute(const C&) const` for each.
  template <Message... Cs>
  AggregateBuilder& handles() {
    (add_command<Cs>(), ...);
    return *this;
  }

  // The events A applies: A must have `void apply(const E&)` for each.
  template <Message... Es>
  AggregateBuilder& applies() {
    (add_event<Es>(), ...);
    return *this;
  }

  // The commands that usually start a new stream (IssueGiftCard, OpenAccount). An aggregate not
  // yet loaded decides them against its empty state without reading the stream first, and the
  // append expects the stream not to exist; if it does, the aggregate loads it and decides
  // again. That saves a store round trip for every new aggregate and costs one more when such a
  // command meets an existing stream. Outcomes are the same either way: a rejection, an
  // outcome without events or an exception is always decided again against the loaded stream
  // before it is answered. Each must be among the commands of handles(); throws
  // std::logic_error otherwise.
  template <Message... Cs>
  AggregateBuilder& creates() {
    (domain_.mark_creating(type_, type_name_of<Cs>()), ...);
    return *this;
  }

  // The commands that only process managers dispatch: the steps of a process (a transfer's
  // debit, credit and outcome), which a client sending them by hand could take out of order
  // (fail a transfer whose money is on its way, debit an account for no transfer). The gateway
  // refuses them from clients with internal_command; process managers of the same daemon send
  // them. Each must be among the commands of handles(); throws std::logic_error otherwise.
  template <Message... Cs>
  AggregateBuilder& internal() {
    (domain_.mark_internal(type_, type_name_of<Cs>()), ...);
    return *this;
  }

  AggregateBuilder& snapshot_every(int events) {
    type_.set_snapshot_every(events);
    return *this;
  }

 private:
  template <class C>
  void add_command() {
    auto command = std::make_unique<CommandType>();
    command->name = std::string(type_name_of<C>());
    command->aggregate = &type_;
    command->decode = [](const nlohmann::json& json) -> std::shared_ptr<const void> {
      return std::make_shared<const C>(json.get<C>());
    };
    command->execute = [](const void* aggregate, const void* value) -> Outcome {
      return static_cast<const A*>(aggregate)->execute(*static_cast<const C*>(value));
    };
    type_.command_names_.push_back(command->name);
    domain_.add_command(std::move(command));
  }

  template <class E>
  void add_event() {
    std::string name(type_name_of<E>());
    type_.event_names_.push_back(name);
    type_.appliers_.insert_or_assign(name, [](void* aggregate, const nlohmann::json& data) {
      static_cast<A*>(aggregate)->apply(data.get<E>());
    });
  }

  Domain& domain_;
  AggregateType& type_;
};

template <class A>
AggregateBuilder<A> Domain::aggregate(std::string name, std::string prefix,
                                      std::string identity_field) {
  auto type = std::make_unique<AggregateType>(std::move(name), std::move(prefix),
                                              std::move(identity_field));
  type->state_type_ = typeid(A);
  AggregateType& added = add_aggregate(std::move(type));
  const AggregateType* stable = &added;
  added.factory_ = [stable] {
    return std::unique_ptr<AggregateInstance>(new detail::TypedAggregate<A>(stable));
  };
  return AggregateBuilder<A>(*this, added);
}

}  // namespace cqrs
