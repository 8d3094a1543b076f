// A fresh PostgreSQL database per test, created on the server named by DATABASE_URL and dropped
// when the object goes away, so tests never see each other's events.
#pragma once

#include <memory>
#include <string>

#include "cqrs/pg/connection.hpp"

namespace cqrs::testing {

class TestDatabase {
 public:
  // Creates the database and, when `migrated`, applies the schema. Fails the current test
  // (ADD_FAILURE) and returns nullptr when DATABASE_URL is unset or the server is unreachable.
  static std::unique_ptr<TestDatabase> create(bool migrated = true);
  ~TestDatabase();

  const std::string& name() const { return name_; }
  // A libpq conninfo string for the fresh database.
  const std::string& url() const { return url_; }
  // A new raw connection to the fresh database (for SQL the store API does not offer).
  std::unique_ptr<pg::Connection> connect() const;

 private:
  TestDatabase(std::string admin_url, std::string name, std::string url)
      : admin_url_(std::move(admin_url)), name_(std::move(name)), url_(std::move(url)) {}
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

// DATABASE_URL, or "" (after ADD_FAILURE with instructions) when unset.
std::string database_url();

}  // namespace cqrs::testing
