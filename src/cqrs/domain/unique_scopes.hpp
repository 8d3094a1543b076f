// Unique scopes: sets of values that at most one aggregate owns at a time (an e-mail address per
// open account, a user name per user). Set-based rules like these do not fit one aggregate's
// state, so the store keeps the owners and checks claims in the transaction that appends the
// claiming events:
//
//   domain.unique_scope("account_email", cqrs::normalize_email, "email_taken");
//
//   cqrs::Outcome execute(const OpenAccount& command) const {
//     cqrs::Outcome outcome = AccountOpened{...};
//     outcome.claim("account_email", command.email);  // rejected with email_taken when owned
//     return outcome;
//   }
//
// A value is normalized by its scope before it is stored or compared.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace cqrs {

inline constexpr std::string_view kDefaultConflictCode = "already_taken";

struct UniqueScope {
  std::string name;
  // Turns a value into the form that is stored and compared; nullptr keeps it as it is.
  std::function<std::string(std::string_view)> normalize;
  // The rejection code of a command whose claim another aggregate owns (snake_case).
  std::string conflict_code = std::string(kDefaultConflictCode);
};

class UniqueScopes {
 public:
  // Throws std::logic_error when the name is empty or taken (a programming error).
  void add(UniqueScope scope);
  const UniqueScope* find(std::string_view name) const;
  bool empty() const { return scopes_.empty(); }

 private:
  std::map<std::string, UniqueScope, std::less<>> scopes_;
};

// Normalizers for common scopes.
// Trims ASCII white space and lower-cases ASCII letters ("  Ada@Example.COM " ->
// "ada@example.com").
std::string normalize_email(std::string_view value);

}  // namespace cqrs
