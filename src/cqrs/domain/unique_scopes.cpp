// UniqueScopes: the registry of unique scopes and the shipped normalizers.
#include "cqrs/domain/unique_scopes.hpp"

#include <stdexcept>

namespace cqrs {

void UniqueScopes::add(UniqueScope scope) {
  if (scope.name.empty()) throw std::logic_error("a unique scope needs a name");
  if (scope.conflict_code.empty()) scope.conflict_code = std::string(kDefaultConflictCode);
  std::string name = scope.name;
  if (!scopes_.emplace(name, std::move(scope)).second) {
    throw std::logic_error("unique scope '" + name + "' is registered twice");
  }
}

const UniqueScope* UniqueScopes::find(std::string_view name) const {
  auto found = scopes_.find(name);
  return found == scopes_.end() ? nullptr : &found->second;
}

std::string normalize_email(std::string_view value) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!value.empty() && is_space(value.front())) value.remove_prefix(1);
  while (!value.empty() && is_space(value.back())) value.remove_suffix(1);
  std::string out(value);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace cqrs
