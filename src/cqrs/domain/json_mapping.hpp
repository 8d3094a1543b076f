// JSON mapping for commands, events and aggregate state, with errors that name the field.
//
//   struct IssueGiftCard { std::string card_id; int64_t amount = 0; };
//   CQRS_MESSAGE(IssueGiftCard, card_id, amount)   // JSON mapping + the type name "IssueGiftCard"
//
//   struct GiftCard { ... };
//   CQRS_JSON(GiftCard, card_id, remaining, status)  // JSON mapping only (state, nested values)
//
// Decoding is strict: a missing field, a value of the wrong JSON type, a fractional or
// out-of-range number for an integer field all throw FieldError naming the field (nested fields
// as "outer.inner"). Optional fields (std::optional<T>) may be missing or null. Fields not listed
// are ignored. Use the macros at namespace scope, in the namespace of the type.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace cqrs {

// A payload field that is missing or has the wrong type. `field()` is the dotted path.
class FieldError : public std::runtime_error {
 public:
  FieldError(std::string field, const std::string& problem)
      : std::runtime_error(field.empty() ? problem : "field '" + field + "' " + problem),
        field_(std::move(field)),
        problem_(problem) {}
  const std::string& field() const { return field_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string field_;
  std::string problem_;
};

namespace detail {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class T>
std::string describe_json_type() {
  if constexpr (std::is_same_v<T, bool>) {
    return "a boolean";
  } else if constexpr (std::is_integral_v<T>) {
    return "an integer";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "a number";
  } else if constexpr (std::is_convertible_v<T, std::string_view>) {
    return "a string";
  } else {
    return "a value of the declared type";
  }
}

// Checks `value` against T before converting, so that 1.5 does not silently become 1 and
// "5" is not accepted for a number.
template <class T>
void check_json_type(const nlohmann::json& value, const std::string& name) {
  auto wrong = [&] {
    return FieldError(
        name, "must be " + describe_json_type<T>() + ", got " + std::string(value.type_name()));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) throw wrong();
  } else if constexpr (std::is_integral_v<T>) {
    if (!value.is_number_integer()) throw wrong();
    if (value.is_number_unsigned()) {
      if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        throw FieldError(name, "is out of range");
      }
    } else {
      auto number = value.get<int64_t>();
      if (number < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          (number > 0 &&
           static_cast<uint64_t>(number) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
        throw FieldError(name, "is out of range");
      }
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) throw wrong();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) throw wrong();
  }
}

template <class T>
void read_value(const nlohmann::json& value, const std::string& name, T& out) {
  if constexpr (is_optional<T>::value) {
    if (value.is_null()) {
      out.reset();
      return;
    }
    typename T::value_type inner{};
    read_value(value, name, inner);
    out = std::move(inner);
  } else {
    check_json_type<T>(value, name);
    try {
      value.get_to(out);
    } catch (const FieldError& nested) {
      throw FieldError(nested.field().empty() ? name : name + "." + nested.field(),
                       nested.problem());
    } catch (const nlohmann::json::exception&) {
      throw FieldError(
          name, "must be " + describe_json_type<T>() + ", got " + std::string(value.type_name()));
    }
  }
}

template <class T>
void read_field(const nlohmann::json& object, const char* name, T& out) {
  auto it = object.find(name);
  if (it == object.end()) {
    if constexpr (is_optional<T>::value) {
      out.reset();
      return;
    } else {
      throw FieldError(name, "is missing");
    }
  }
  read_value(*it, name, out);
}

template <class T>
void write_field(nlohmann::json& object, const char* name, const T& value) {
  if constexpr (is_optional<T>::value) {
    if (value.has_value()) {
      object[name] = *value;
    } else {
      object[name] = nullptr;
    }
  } else {
    object[name] = value;
  }
}

inline void require_object(const nlohmann::json& json) {
  if (!json.is_object()) {
    throw FieldError("", "must be a JSON object, got " + std::string(json.type_name()));
  }
}

}  // namespace detail
}  // namespace cqrs

#define CQRS_JSON_WRITE_FIELD(field) \
  ::cqrs::detail::write_field(cqrs_json, #field, cqrs_value.field);
#define CQRS_JSON_READ_FIELD(field) ::cqrs::detail::read_field(cqrs_json, #field, cqrs_value.field);

// JSON mapping (to_json / from_json) for Type with the listed fields.
#define CQRS_JSON(Type, ...)                                                      \
  inline void to_json(nlohmann::json& cqrs_json, const Type& cqrs_value) {        \
    cqrs_json = nlohmann::json::object();                                         \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(CQRS_JSON_WRITE_FIELD, __VA_ARGS__)) \
  }                                                                               \
  inline void from_json(const nlohmann::json& cqrs_json, Type& cqrs_value) {      \
    ::cqrs::detail::require_object(cqrs_json);                                    \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(CQRS_JSON_READ_FIELD, __VA_ARGS__))  \
  }

// A command or event: JSON mapping plus its wire/store type name (the struct's name).
#define CQRS_MESSAGE(Type, ...) \
  CQRS_JSON(Type, __VA_ARGS__)  \
  [[maybe_unused]] inline constexpr std::string_view cqrs_type_name(const Type*) { return #Type; }

namespace cqrs {

// A type declared with CQRS_MESSAGE.
template <class T>
concept Message = requires(const T* message) {
  { cqrs_type_name(message) } -> std::convertible_to<std::string_view>;
};

template <Message T>
constexpr std::string_view type_name_of() {
  return cqrs_type_name(static_cast<const T*>(nullptr));
}

}  // namespace cqrs
