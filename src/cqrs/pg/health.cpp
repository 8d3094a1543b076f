// HealthProbe: a connection of its own and check_schema.
#include "cqrs/pg/health.hpp"

#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"

namespace cqrs::pg {

HealthProbe::HealthProbe(std::string conninfo) : conninfo_(std::move(conninfo)) {}

HealthProbe::~HealthProbe() = default;

Result<void> HealthProbe::check() {
  bool fresh = false;
  if (!conn_ || !conn_->still_open()) {
    conn_.reset();
    auto opened = Connection::open(conninfo_);
    if (!opened) return opened.error();
    conn_ = std::move(opened).value();
    fresh = true;
  }
  auto checked = check_schema(*conn_);
  if (checked || fresh || !checked.error().is(errc::kStoreUnavailable)) return checked;
  // The reused connection broke (the server restarted, say): judge by a new one.
  conn_.reset();
  return check();
}

}  // namespace cqrs::pg
