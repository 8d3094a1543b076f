// Readiness of the store for health probes: PostgreSQL answers on a connection of the probe's
// own, and the database carries exactly this build's schema migrations.
#pragma once

#include <memory>
#include <string>

#include "cqrs/result.hpp"

namespace cqrs::pg {

class Connection;

class HealthProbe {
 public:
  explicit HealthProbe(std::string conninfo);
  ~HealthProbe();
  HealthProbe(const HealthProbe&) = delete;
  HealthProbe& operator=(const HealthProbe&) = delete;

  // Ok when the store is reachable and migrated. Reuses its connection and opens a new one when
  // that one broke (once per call, so a restarted server is seen at the first check after it).
  // Errors: store_unavailable; migration_failed (migrations missing); schema_too_new.
  // Blocks on the network (bounded by libpq's connect_timeout when the conninfo sets one).
  // REQUIRES: external synchronization.
  Result<void> check();

 private:
  std::string conninfo_;
  std::unique_ptr<Connection> conn_;
};

}  // namespace cqrs::pg
