// libpq wrapper: statement execution, reconnects and error mapping.
#include "cqrs/pg/connection.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>  // program_invocation_short_name
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace cqrs::pg {
namespace {

bool starts_with(const char* text, std::string_view prefix) {
  return text != nullptr && std::string_view(text).substr(0, prefix.size()) == prefix;
}

std::string trimmed(const char* text) {
  std::string out = text == nullptr ? "" : text;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// A field of an error or notice (PG_DIAG_...), or "" when there is none.
std::string_view field_of(const PGresult* result, int field) {
  const char* value = result == nullptr ? nullptr : PQresultErrorField(result, field);
  return value == nullptr ? std::string_view() : std::string_view(value);
}

// Whether `result` is PostgreSQL refusing a prepared statement whose result columns changed type
// since it was prepared ("cached plan must not change result type"). The statement did not run.
// Told by the SQLSTATE and the reporting function, which do not depend on the server's language.
bool is_stale_plan(const PGresult* result) {
  return field_of(result, PG_DIAG_SQLSTATE) == "0A000" &&
         field_of(result, PG_DIAG_SOURCE_FUNCTION) == "RevalidateCachedQuery";
}

// The server refused a write because it accepts none (read_only_sql_transaction): a hot
// standby, possibly a former primary after a failover, or default_transaction_read_only turned
// on. Another session may reach a server that does (the connection string may list several).
bool is_read_only_server(const PGresult* result) {
  return field_of(result, PG_DIAG_SQLSTATE) == "25006";
}

}  // namespace

Params& Params::reserve(size_t count) {
  values_.reserve(count);
  return *this;
}

Params::Value& Params::next() { return values_.emplace_back(); }

Params& Params::add(std::string value) {
  next().owned = std::move(value);
  return *this;
}

Params& Params::add(int64_t value) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof(digits), value).ptr;
  next().owned.assign(digits, end);
  return *this;
}

Params& Params::add_null() {
  next().null = true;
  return *this;
}

Params& Params::add_borrowed(const std::string& value) {
  Value& added = next();
  added.borrowed = value.c_str();
  added.borrowed_length = static_cast<int>(value.size());
  return *this;
}

Params& Params::add_binary(std::string bytes) {
  Value& added = next();
  added.owned = std::move(bytes);
  added.binary = true;
  return *this;
}

Params& Params::add_uuid(const std::array<uint8_t, 16>& bytes) {
  Value& added = next();
  added.owned.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  added.binary = true;
  return *this;
}

Params::Wire::Wire(size_t count) {
  if (count > kSmall) {
    more_values_.resize(count);
    more_lengths_.resize(count);
    more_formats_.resize(count);
  }
}

void Params::Wire::set(size_t idx, const char* value, int length, int format) {
  if (big()) {
    more_values_[idx] = value;
    more_lengths_[idx] = length;
    more_formats_[idx] = format;
  } else {
    small_values_[idx] = value;
    small_lengths_[idx] = length;
    small_formats_[idx] = format;
  }
  any_binary_ = any_binary_ || format == 1;
}

Params::Wire Params::wire() const {
  Wire wire(values_.size());
  for (size_t idx = 0; idx < values_.size(); ++idx) {
    const Value& value = values_[idx];
    int format = value.binary ? 1 : 0;
    if (value.null) {
      wire.set(idx, nullptr, 0, format);
    } else if (value.borrowed != nullptr) {
      wire.set(idx, value.borrowed, value.borrowed_length, format);
    } else {
      wire.set(idx, value.owned.c_str(), static_cast<int>(value.owned.size()), format);
    }
  }
  return wire;
}

namespace {

void put_be32(std::string& out, uint32_t value) {
  const char bytes[4] = {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
                         static_cast<char>(value >> 8), static_cast<char>(value)};
  out.append(bytes, 4);
}

void patch_be32(std::string& out, size_t at, uint32_t value) {
  out[at] = static_cast<char>(value >> 24);
  out[at + 1] = static_cast<char>(value >> 16);
  out[at + 2] = static_cast<char>(value >> 8);
  out[at + 3] = static_cast<char>(value);
}

// array_recv's header: dimensions, whether any element is NULL, the element type, then per
// dimension its length and lower bound. The count and the NULL flag are patched in by take().
constexpr size_t kArrayHeaderSize = 20;
constexpr size_t kNullFlagAt = 4;
constexpr size_t kLengthAt = 12;

}  // namespace

BinaryArray::BinaryArray(uint32_t element_type, size_t expected_elements, size_t expected_bytes)
    : element_type_(element_type) {
  const size_t fixed = element_type == kUuid   ? 16
                       : element_type == kInt8 ? 8
                       : element_type == kInt4 ? 4
                                               : 0;
  bytes_.reserve(kArrayHeaderSize + expected_elements * (4 + fixed) + expected_bytes);
  start();
}

void BinaryArray::start() {
  put_be32(bytes_, 1);  // one dimension
  put_be32(bytes_, 0);  // NULL flag
  put_be32(bytes_, element_type_);
  put_be32(bytes_, 0);  // length
  put_be32(bytes_, 1);  // lower bound
}

void BinaryArray::add_length(int32_t length) {
  put_be32(bytes_, static_cast<uint32_t>(length));
  ++count_;
}

void BinaryArray::add_int8(int64_t value) {
  add_length(8);
  put_be32(bytes_, static_cast<uint32_t>(static_cast<uint64_t>(value) >> 32));
  put_be32(bytes_, static_cast<uint32_t>(value));
}

void BinaryArray::add_int4(int32_t value) {
  add_length(4);
  put_be32(bytes_, static_cast<uint32_t>(value));
}

void BinaryArray::add_text(std::string_view value) {
  add_length(static_cast<int32_t>(value.size()));
  bytes_.append(value);
}

void BinaryArray::add_uuid(const std::array<uint8_t, 16>& bytes) {
  add_length(16);
  bytes_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void BinaryArray::add_jsonb(std::string_view json) {
  add_length(static_cast<int32_t>(json.size() + 1));
  bytes_.push_back('\x01');  // jsonb's binary format version: the JSON text follows
  bytes_.append(json);
}

void BinaryArray::add_null() {
  add_length(-1);
  has_null_ = true;
}

std::string BinaryArray::take() {
  patch_be32(bytes_, kNullFlagAt, has_null_ ? 1 : 0);
  patch_be32(bytes_, kLengthAt, static_cast<uint32_t>(count_));
  std::string out = std::move(bytes_);
  bytes_ = std::string();
  count_ = 0;
  has_null_ = false;
  start();
  return out;
}

QueryResult& QueryResult::operator=(QueryResult&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

QueryResult::~QueryResult() {
  if (result_ != nullptr) PQclear(result_);
}

int QueryResult::rows() const { return result_ == nullptr ? 0 : PQntuples(result_); }
int QueryResult::columns() const { return result_ == nullptr ? 0 : PQnfields(result_); }
bool QueryResult::is_null(int row, int column) const {
  return PQgetisnull(result_, row, column) != 0;
}
std::string_view QueryResult::text(int row, int column) const {
  return {PQgetvalue(result_, row, column), static_cast<size_t>(PQgetlength(result_, row, column))};
}
int64_t QueryResult::int64(int row, int column) const {
  std::string_view field = text(row, column);
  int64_t value = 0;
  std::from_chars(field.data(), field.data() + field.size(), value);
  return value;
}
int64_t QueryResult::affected_rows() const {
  const char* count = result_ == nullptr ? "" : PQcmdTuples(result_);
  int64_t value = 0;
  std::from_chars(count, count + std::strlen(count), value);
  return value;
}

namespace {

// Connects with `conninfo` (a keyword string or a URL).
// * In UTF-8, whatever the environment (PGCLIENTENCODING), the connection string or the
//   database's settings ask for: events, commands and read models are JSON, which is UTF-8, and
//   another client encoding would have the server convert them as if they were in it. A keyword
//   after the expanded dbname overrides the connection string's.
// * To a server that accepts writes (target_session_attrs=read-write), unless the connection
//   string or PGTARGETSESSIONATTRS says otherwise: of several hosts listed, the primary; a
//   standby alone is refused at once, with libpq's reason, rather than at the first write. A
//   keyword before the expanded dbname yields to the connection string's.
// * Named after the program (cqrsd, cqrsctl, ...) in pg_stat_activity and the server's log,
//   unless an application_name is given (fallback_application_name).
PGconn* connect_to(const std::string& conninfo) {
  const char* target = std::getenv("PGTARGETSESSIONATTRS") == nullptr ? "read-write" : nullptr;
  const char* const keywords[] = {"target_session_attrs", "fallback_application_name", "dbname",
                                  "client_encoding", nullptr};
  const char* const values[] = {target, program_invocation_short_name, conninfo.c_str(), "UTF8",
                                nullptr};
  return PQconnectdbParams(keywords, values, 1);
}

}  // namespace

Result<std::unique_ptr<Connection>> Connection::open(const std::string& conninfo) {
  PGconn* conn = connect_to(conninfo);
  if (conn == nullptr) return Error::unavailable("cannot allocate a PostgreSQL connection");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string reason = trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    return Error::unavailable("cannot connect to PostgreSQL: " + reason);
  }
  std::unique_ptr<Connection> opened(new Connection(conn, conninfo));
  opened->receive_notices();
  return opened;
}

Connection::~Connection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

bool Connection::in_transaction() {
  discard_sent();
  PGTransactionStatusType status = PQtransactionStatus(conn_);
  return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE;
}

bool Connection::is_ok() const {
  return conn_ != nullptr && !stale_ && !ended_by_server_ && PQstatus(conn_) == CONNECTION_OK;
}

bool Connection::still_open() {
  discard_sent();
  if (!is_ok() || PQtransactionStatus(conn_) != PQTRANS_IDLE) return is_ok();
  pollfd descriptor{PQsocket(conn_), POLLIN, 0};
  // The server's last words and the end of the stream may arrive apart: a few rounds at most,
  // each only while there is something to read.
  for (int round = 0; round < 4 && is_ok() && poll(&descriptor, 1, 0) > 0; ++round) {
    if (PQconsumeInput(conn_) == 0) break;  // the end of the stream: the status is now bad
    // Parses what came while idle: a FATAL message goes to on_notice, notifications wait for
    // PQnotifies, parameter changes are applied.
    (void)PQisBusy(conn_);
  }
  return is_ok();
}

void Connection::receive_notices() { PQsetNoticeReceiver(conn_, &Connection::on_notice, this); }

void Connection::on_notice(void* self, const PGresult* notice) {
  // Between statements, libpq hands error messages to the notice receiver; the one a server
  // sends before it closes the session is FATAL (PANIC when it is going down). Notices and
  // warnings are of no interest.
  std::string_view severity = field_of(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity == "FATAL" || severity == "PANIC") {
    static_cast<Connection*>(self)->ended_by_server_ = true;
  }
}

Result<void> Connection::reconnect() {
  sent_syncs_.clear();  // they die with the session
  if (conn_ != nullptr) PQfinish(conn_);
  ++session_;
  stale_ = false;
  ended_by_server_ = false;
  conn_ = connect_to(conninfo_);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    std::string reason = conn_ == nullptr ? "out of memory" : trimmed(PQerrorMessage(conn_));
    return Error::unavailable("cannot reconnect to PostgreSQL: " + reason);
  }
  receive_notices();
  // A session without all its settings and statements would fail every later call that needs a
  // missing one, and still look open: it is marked stale, so the next call connects again.
  auto unfinished = [this](const Error& error) {
    stale_ = true;
    return Error::unavailable("reconnected to PostgreSQL, but setting up the session failed (" +
                              error.to_string() + "); the next call connects again");
  };
  for (const std::string& sql : settings_) {
    auto checked = check(PQexec(conn_, sql.c_str()));
    if (!checked) return unfinished(checked.error());
  }
  for (const auto& [name, sql] : prepared_) {
    PGresult* result = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    auto checked = check(result);
    if (!checked) return unfinished(checked.error());
  }
  return {};
}

Result<QueryResult> Connection::check(PGresult* result) {
  ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY) {
    return QueryResult(result);
  }
  Error error = error_from(conn_, result);
  if (is_stale_plan(result) || is_read_only_server(result)) stale_ = true;
  if (result != nullptr) PQclear(result);
  return error;
}

Result<QueryResult> Connection::exec(std::string_view sql) {
  discard_sent();
  std::string text(sql);
  return check(PQexec(conn_, text.c_str()));
}

Result<QueryResult> Connection::exec(std::string_view sql, const Params& params) {
  discard_sent();
  std::string text(sql);
  Params::Wire wire = params.wire();
  return check(PQexecParams(conn_, text.c_str(), params.size(), nullptr, wire.values(),
                            wire.lengths(), wire.formats(), 0));
}

Result<void> Connection::configure(const std::string& sql) {
  discard_sent();
  auto result = check(PQexec(conn_, sql.c_str()));
  if (!result) return result.error();
  settings_.push_back(sql);
  return {};
}

Result<void> Connection::prepare(const std::string& name, const std::string& sql) {
  discard_sent();
  auto result = check(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr));
  if (!result) return result.error();
  prepared_.emplace_back(name, sql);
  return {};
}

Result<std::string> Connection::prepared_name(const std::string& sql) {
  auto known = names_by_sql_.find(sql);
  if (known != names_by_sql_.end()) return known->second;
  std::string name = "auto_" + std::to_string(names_by_sql_.size() + 1);
  if (auto prepared = prepare(name, sql); !prepared) return prepared.error();
  names_by_sql_.emplace(sql, name);
  return name;
}

Result<QueryResult> Connection::exec_prepared(const std::string& name, const Params& params) {
  discard_sent();
  Params::Wire wire = params.wire();
  return check(PQexecPrepared(conn_, name.c_str(), params.size(), wire.values(), wire.lengths(),
                              wire.formats(), 0));
}

Error Connection::pipeline_broken(const std::string& what) {
  std::string reason = trimmed(PQerrorMessage(conn_));
  // Leave no half-read pipeline behind: the next call starts on a fresh connection.
  sent_syncs_.clear();
  PQfinish(conn_);
  conn_ = nullptr;
  (void)reconnect();
  return Error::unavailable("PostgreSQL pipeline " + what + " failed: " + reason);
}

Result<std::vector<Result<QueryResult>>> Connection::exec_pipeline(
    const std::vector<PipelineStep>& steps) {
  discard_sent();
  if (steps.empty()) return std::vector<Result<QueryResult>>{};
  if (steps.size() == 1) {
    // One statement is one round trip without pipeline mode, and libpq does less for it: no
    // pipeline queue, no sync result.
    const PipelineStep& step = steps.front();
    Params::Wire wire = step.params.wire();
    if (PQsendQueryPrepared(conn_, step.name.c_str(), step.params.size(), wire.values(),
                            wire.lengths(), wire.formats(), 0) != 1) {
      return pipeline_broken("send");
    }
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) return pipeline_broken("read");
    // A query's results end in null. An error after the statement's own result is its
    // implicit transaction's commit failing (a deferred constraint, a serialization failure):
    // the statement's rows were rolled back, so the error is its result.
    while (PGresult* extra = PQgetResult(conn_)) {
      if (PQresultStatus(extra) == PGRES_FATAL_ERROR &&
          PQresultStatus(result) != PGRES_FATAL_ERROR) {
        std::swap(result, extra);
      }
      PQclear(extra);
    }
    if (PQstatus(conn_) != CONNECTION_OK) {
      PQclear(result);
      return pipeline_broken("read");
    }
    std::vector<Result<QueryResult>> results;
    results.push_back(check(result));
    return results;
  }
  if (auto sent = send_pipeline(steps); !sent) return sent.error();
  return take_sent();
}

Result<void> Connection::send_pipeline(const std::vector<PipelineStep>& steps) {
  discard_sent();
  if (steps.empty() || !steps.back().sync_after) {
    return Error::internal(errc::kStoreError, "a pipeline must end with a step that syncs");
  }
  if (PQenterPipelineMode(conn_) != 1) return pipeline_broken("start");
  std::vector<bool> syncs;
  syncs.reserve(steps.size());
  for (const PipelineStep& step : steps) {
    Params::Wire wire = step.params.wire();
    if (PQsendQueryPrepared(conn_, step.name.c_str(), step.params.size(), wire.values(),
                            wire.lengths(), wire.formats(), 0) != 1) {
      return pipeline_broken("send");
    }
    if (step.sync_after && PQpipelineSync(conn_) != 1) return pipeline_broken("sync");
    syncs.push_back(step.sync_after);
  }
  if (PQflush(conn_) != 0) return pipeline_broken("flush");
  sent_syncs_ = std::move(syncs);
  ++sent_id_;
  return {};
}

Result<std::vector<Result<QueryResult>>> Connection::take_sent() {
  if (sent_syncs_.empty()) {
    return Error::internal(errc::kStoreError, "no pipeline was sent on this connection");
  }
  std::vector<bool> syncs = std::move(sent_syncs_);
  sent_syncs_.clear();
  return receive_pipeline(syncs);
}

void Connection::discard_sent() {
  if (sent_syncs_.empty()) return;
  std::vector<bool> syncs = std::move(sent_syncs_);
  sent_syncs_.clear();
  (void)receive_pipeline(syncs, true);
}

Result<std::vector<Result<QueryResult>>> Connection::receive_pipeline(
    const std::vector<bool>& syncs, bool discarding) {
  auto broken = [&](const std::string& what) -> Error {
    if (!discarding) return pipeline_broken(what);
    stale_ = true;  // the owner's next reconnect starts a new session
    return Error::unavailable("PostgreSQL pipeline " + what +
                              " failed: " + trimmed(PQerrorMessage(conn_)));
  };
  std::vector<Result<QueryResult>> results;
  results.reserve(syncs.size());
  size_t transaction_begin = 0;  // the first step of the implicit transaction being read
  for (bool sync_after : syncs) {
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) return broken("read");
    if (PQresultStatus(result) == PGRES_PIPELINE_ABORTED) {
      PQclear(result);
      results.emplace_back(Error::conflict(errc::kStoreError, std::string(kNotExecuted)));
    } else {
      results.push_back(check(result));
    }
    while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);  // a query's results end in null
    if (sync_after) {
      PGresult* sync = PQgetResult(conn_);
      if (sync != nullptr && PQresultStatus(sync) == PGRES_FATAL_ERROR) {
        // The implicit transaction's commit failed after its statements succeeded: none of
        // them took effect, so each one's result is that error.
        Result<QueryResult> failed = check(sync);
        for (size_t idx = transaction_begin; idx < results.size(); ++idx) {
          if (results[idx]) results[idx] = failed.error();
        }
        while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
        sync = PQgetResult(conn_);
      }
      bool synced = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
      if (sync != nullptr) PQclear(sync);
      if (!synced) return broken("sync read");
      transaction_begin = results.size();
    }
  }
  if (PQexitPipelineMode(conn_) != 1) return broken("end");
  return results;
}

Result<void> Connection::listen(std::string_view channel) {
  auto result = exec("LISTEN " + quote_identifier(channel));
  if (!result) return result.error();
  return {};
}

Result<std::vector<std::string>> Connection::wait_notifications(int timeout_ms) {
  discard_sent();
  std::vector<std::string> payloads;
  auto drain = [&]() -> Result<void> {
    if (PQconsumeInput(conn_) == 0) {
      return Error::unavailable("lost the PostgreSQL connection while listening: " +
                                trimmed(PQerrorMessage(conn_)));
    }
    while (PGnotify* notify = PQnotifies(conn_)) {
      payloads.emplace_back(notify->extra == nullptr ? "" : notify->extra);
      PQfreemem(notify);
    }
    return {};
  };
  if (auto drained = drain(); !drained) return drained.error();
  if (!payloads.empty() || timeout_ms <= 0) return payloads;
  pollfd descriptor{PQsocket(conn_), POLLIN, 0};
  int ready = poll(&descriptor, 1, timeout_ms);
  if (ready < 0) return Error::unavailable("poll on the PostgreSQL socket failed");
  if (ready > 0) {
    if (auto drained = drain(); !drained) return drained.error();
  }
  return payloads;
}

int Connection::backend_pid() const { return conn_ == nullptr ? 0 : PQbackendPID(conn_); }

Error error_from(PGconn* conn, PGresult* result) {
  const char* sqlstate = result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_SQLSTATE);
  std::string message =
      trimmed(result == nullptr ? PQerrorMessage(conn) : PQresultErrorMessage(result));
  if (message.empty()) message = trimmed(PQerrorMessage(conn));
  if (is_stale_plan(result)) {
    return Error::unavailable(
        "a prepared statement no longer matches the database schema, which changed while the "
        "connection was open (a migration by another process?); the next call reconnects and "
        "prepares it again: " +
        message);
  }
  if (is_read_only_server(result)) {
    return Error::unavailable(
        "the server accepts no writes (a hot standby, or default_transaction_read_only is on); "
        "the next call reconnects, to a server that accepts writes if the connection string "
        "lists one: " +
        message);
  }
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK || sqlstate == nullptr ||
      starts_with(sqlstate, "08") || starts_with(sqlstate, "57P")) {
    return Error::unavailable("PostgreSQL connection failed: " + message);
  }
  std::string_view state(sqlstate);
  if (state == "23505") {
    const char* constraint = PQresultErrorField(result, PG_DIAG_CONSTRAINT_NAME);
    std::string_view name = constraint == nullptr ? "" : constraint;
    if (name == "events_event_id_key") {
      const char* detail = PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL);
      return Error::conflict(errc::kDuplicateEvent,
                             "an event id is already stored" +
                                 (detail == nullptr ? std::string() : ": " + trimmed(detail)));
    }
    if (name == "unique_claims_pkey") {
      const char* primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
      return Error::conflict(errc::kAlreadyTaken, primary == nullptr ? message : trimmed(primary));
    }
    if (name == "events_pkey") {
      return Error::conflict(errc::kWrongExpectedVersion,
                             "another writer appended to the stream at the same time: " + message);
    }
    return Error::conflict(errc::kStoreError, message);
  }
  if (state == "22P02" || state == "22P05" || state == "22025" || state == "22021") {
    return Error::invalid(errc::kInvalidPayload, message);
  }
  return Error::internal(errc::kStoreError, message + " (SQLSTATE " + std::string(state) + ")");
}

Result<std::string> with_database(const std::string& conninfo, std::string_view dbname) {
  return with_option(conninfo, "dbname", dbname, true);
}

Result<std::string> with_option(const std::string& conninfo, std::string_view keyword,
                                std::string_view value, bool replace) {
  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (options == nullptr) {
    std::string reason = parse_error == nullptr ? "out of memory" : trimmed(parse_error);
    if (parse_error != nullptr) PQfreemem(parse_error);
    return Error::invalid(errc::kInvalidArgument, "cannot parse database URL: " + reason);
  }
  auto quote_value = [](std::string_view text) {
    std::string out = "'";
    for (char c : text) {
      if (c == '\\' || c == '\'') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('\'');
    return out;
  };
  std::string out;
  bool set = false;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    if (std::string_view(option->keyword) == keyword) {
      if (replace) continue;
      set = true;
    }
    out += std::string(option->keyword) + "=" + quote_value(option->val) + " ";
  }
  if (!set) out += std::string(keyword) + "=" + quote_value(value);
  PQconninfoFree(options);
  return out;
}

void append_array_element(std::string& literal, std::string_view value) {
  if (literal.size() > 1) literal.push_back(',');
  literal.push_back('"');
  // Copies the stretches between the characters to escape whole: payloads are mostly such
  // stretches, and this runs for every event of every append.
  const char* next = value.data();
  const char* end = next + value.size();
  for (const char* at = next; at != end; ++at) {
    if (*at == '"' || *at == '\\') {
      literal.append(next, static_cast<size_t>(at - next)).push_back('\\');
      next = at;
    }
  }
  literal.append(next, static_cast<size_t>(end - next));
  literal.push_back('"');
}

std::string text_array(std::span<const std::string> values) {
  std::string literal = "{";
  for (const std::string& value : values) append_array_element(literal, value);
  literal.push_back('}');
  return literal;
}

std::string quote_identifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace cqrs::pg
