// A thin RAII layer over one libpq connection: parameterized statements, prepared statements and
// error mapping into cqrs::Error. All values travel as parameters; no value is spliced into SQL.
//
// REQUIRES: external synchronization. One Connection belongs to one thread at a time, and every
// call blocks on the network: use it only from dedicated (detached) threads, never from a
// cooperatively scheduled actor.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cqrs/result.hpp"

struct pg_conn;
struct pg_result;

namespace cqrs::pg {

// Parameter values for one statement, each in text format or, from add_binary and add_uuid, in
// the binary format of the parameter's type. Values are copied, so temporaries are fine, except
// those of add_borrowed.
class Params {
 public:
  // Room for `count` values without reallocating.
  Params& reserve(size_t count);

  Params& add(std::string value);
  Params& add(std::string_view value) { return add(std::string(value)); }
  Params& add(const char* value) { return add(std::string(value)); }
  Params& add(int64_t value);
  Params& add_null();
  // A text value these Params point to instead of copying it: an event's payload, which can be
  // large. REQUIRES: `value` stays alive and unchanged until the last statement sent with these
  // Params (or a copy of them) has run.
  Params& add_borrowed(const std::string& value);
  Params& add_borrowed(std::string&&) = delete;  // a temporary would be gone before it is sent
  // A value in its type's binary format (see BinaryArray): PostgreSQL reads it without parsing
  // text. REQUIRES: the statement's parameter has exactly that type.
  Params& add_binary(std::string bytes);
  // A uuid as its 16 bytes (binary format). REQUIRES: the statement's parameter is a uuid.
  Params& add_uuid(const std::array<uint8_t, 16>& bytes);

  int size() const { return static_cast<int>(values_.size()); }

  // The values as libpq's calls take them. Valid until these Params change or go away.
  class Wire {
   public:
    const char* const* values() const { return big() ? more_values_.data() : small_values_.data(); }
    const int* lengths() const {
      return !any_binary_ ? nullptr : big() ? more_lengths_.data() : small_lengths_.data();
    }
    const int* formats() const {
      return !any_binary_ ? nullptr : big() ? more_formats_.data() : small_formats_.data();
    }

   private:
    friend class Params;
    static constexpr size_t kSmall = 16;  // values held without allocating
    explicit Wire(size_t count);
    bool big() const { return !more_values_.empty(); }
    void set(size_t idx, const char* value, int length, int format);

    std::array<const char*, kSmall> small_values_;
    std::array<int, kSmall> small_lengths_, small_formats_;
    std::vector<const char*> more_values_;  // instead, for more than kSmall values
    std::vector<int> more_lengths_, more_formats_;
    bool any_binary_ = false;
  };
  Wire wire() const;

 private:
  struct Value {
    std::string owned;
    const char* borrowed = nullptr;  // instead of `owned`
    int borrowed_length = 0;
    bool null = false;
    bool binary = false;
  };
  Value& next();

  std::vector<Value> values_;
};

// A one-dimensional array parameter in PostgreSQL's binary format (what array_recv reads),
// built element by element: no quoting on this side, no parsing of an array literal on the
// server's. The element type is fixed by its type's oid, which the statement's parameter must
// match (uuid[] takes uuids, and so on).
//
// REQUIRES: the whole array below 1 GiB, the most PostgreSQL takes in one value (lengths are
// 32-bit in the format; nothing here checks them).
class BinaryArray {
 public:
  static constexpr uint32_t kInt8 = 20, kInt4 = 23, kText = 25, kUuid = 2950, kJsonb = 3802;

  // Reserves room for `expected_elements` elements and, beyond the fixed-size types' bytes,
  // `expected_bytes` of variable-length ones.
  BinaryArray(uint32_t element_type, size_t expected_elements, size_t expected_bytes = 0);

  void add_int8(int64_t value);
  void add_int4(int32_t value);
  void add_text(std::string_view value);
  void add_uuid(const std::array<uint8_t, 16>& bytes);
  void add_jsonb(std::string_view json);  // the JSON text; the server parses it
  void add_null();

  // The finished parameter value (for Params::add_binary). The builder starts a new, empty array
  // of the same element type.
  std::string take();

 private:
  void start();  // the header
  void add_length(int32_t length);

  uint32_t element_type_;
  std::string bytes_;
  int32_t count_ = 0;
  bool has_null_ = false;
};

// An owned query result. Field accessors REQUIRE 0 <= row < rows() and 0 <= column < columns().
class QueryResult {
 public:
  QueryResult() = default;
  explicit QueryResult(pg_result* result) : result_(result) {}
  QueryResult(QueryResult&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  QueryResult& operator=(QueryResult&& other) noexcept;
  QueryResult(const QueryResult&) = delete;
  QueryResult& operator=(const QueryResult&) = delete;
  ~QueryResult();

  int rows() const;
  int columns() const;
  bool is_null(int row, int column) const;
  std::string_view text(int row, int column) const;
  int64_t int64(int row, int column) const;  // REQUIRES: the field is a decimal integer
  // Number of rows an INSERT/UPDATE/DELETE touched.
  int64_t affected_rows() const;

 private:
  pg_result* result_ = nullptr;
};

class Connection {
 public:
  // Opens a connection (conninfo is a libpq keyword string or a postgresql:// URL), in UTF-8,
  // to a server that accepts writes unless conninfo or PGTARGETSESSIONATTRS names other
  // target_session_attrs. Errors: store_unavailable, with libpq's reason.
  static Result<std::unique_ptr<Connection>> open(const std::string& conninfo);

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // True when the connection is usable. After a failure that broke the connection, the owner
  // calls reconnect() before the next statement. A prepared statement whose result changed
  // shape under it (a migration changed a column's type) also makes the connection unusable: a
  // reconnect prepares every statement again. So does a write the server refused because it
  // accepts none (a standby): a reconnect may reach the primary.
  bool is_ok() const;
  // is_ok(), after reading without waiting what the server sent since the last statement. A
  // server that ends an idle session (a restart, pg_terminate_backend, idle_session_timeout)
  // says so before it closes the connection: this then returns false, and the owner reconnects
  // before it sends anything, instead of failing the call it was about to make. A connection
  // lost without a word (a network failure) is found out by its next statement, as before.
  // Inside a transaction it only returns is_ok(): the owner must learn that the transaction was
  // lost, which a silent reconnect would hide. Costs one poll() when nothing came.
  bool still_open();
  // A new session with the settings and prepared statements of the old one. When the server
  // refuses one of them (a lock_timeout while DDL holds a table), the session stays unusable
  // (is_ok() is false, so the owner's next call reconnects again) and the error is
  // store_unavailable.
  Result<void> reconnect();
  // Whether a transaction is open (begun by the caller, or failed and not yet rolled back).
  bool in_transaction();

  // Runs one or more statements without parameters (DDL, BEGIN/COMMIT, migration scripts).
  Result<QueryResult> exec(std::string_view sql);
  // Runs one statement with text parameters.
  Result<QueryResult> exec(std::string_view sql, const Params& params);

  // Runs `sql` (session settings: SET ...) now and again first after each reconnect, so that
  // every session of this connection has them.
  Result<void> configure(const std::string& sql);
  // Prepares `sql` under `name` on this connection (again after each reconnect, see
  // on_reconnect) and runs a prepared statement.
  Result<void> prepare(const std::string& name, const std::string& sql);
  Result<QueryResult> exec_prepared(const std::string& name, const Params& params);
  // The name of a prepared statement for `sql`, preparing it on first use (for SQL that repeats,
  // such as a projector's; the statements stay prepared for the connection's life).
  Result<std::string> prepared_name(const std::string& sql);

  // The message of a pipeline step that did not run because an earlier statement of its
  // transaction failed.
  static constexpr std::string_view kNotExecuted =
      "not executed: another statement in the same transaction failed";
  // One prepared statement of a pipeline. Statements up to and including one with
  // `sync_after` form one implicit transaction: if any of them fails, none of them commits (the
  // results before it still hold what those statements returned: the caller must look at the
  // whole transaction) and the rest report kNotExecuted; if its commit fails, each of them
  // reports the commit's error.
  struct PipelineStep {
    std::string name;
    Params params;
    bool sync_after = true;
  };
  // Sends every step in ONE round trip (libpq pipeline mode; one step alone as a plain prepared
  // statement) and returns one result per step.
  // The outer Result fails only when the connection broke. REQUIRES: the last step syncs.
  Result<std::vector<Result<QueryResult>>> exec_pipeline(const std::vector<PipelineStep>& steps);
  // exec_pipeline in two halves, so that the caller works while the server runs the steps:
  // send_pipeline sends them and returns at once; take_sent() waits for their results. Any
  // other call on this connection first reads those results and throws them away (the
  // statements still ran). The outer Result of send_pipeline fails only when the connection
  // broke; nothing is then outstanding. REQUIRES: the last step syncs.
  Result<void> send_pipeline(const std::vector<PipelineStep>& steps);
  // The results of the steps sent last, as exec_pipeline returns them. Errors: internal when
  // nothing is outstanding; store_unavailable when the connection broke.
  Result<std::vector<Result<QueryResult>>> take_sent();
  bool has_sent() const { return !sent_syncs_.empty(); }
  // Which send_pipeline sent what is outstanding now (each call counts one more), so that the
  // caller that sent it can tell it from steps someone else sent on this connection.
  uint64_t sent_id() const { return sent_id_; }

  // Starts listening on `channel` and returns the payloads of notifications received so far
  // (waiting up to `timeout_ms` for the first when none is pending; 0 returns at once).
  Result<void> listen(std::string_view channel);
  Result<std::vector<std::string>> wait_notifications(int timeout_ms);

  // The server's process id for this connection (for pg_terminate_backend in tests).
  int backend_pid() const;
  // The server session: 1 for the first, one more at each reconnect(). What the caller learned
  // in one session (stream heads, the server's identity) may not hold in the next: it may be
  // another server, and process ids repeat.
  uint64_t session() const { return session_; }

  pg_conn* raw() {
    discard_sent();
    return conn_;
  }

 private:
  // Reads and throws away the results of steps send_pipeline sent, when any are outstanding.
  // Should the connection break meanwhile, it is left unusable (is_ok() false) and not
  // reconnected: the call that discarded then fails, and its owner reconnects, as after any
  // failure (a reconnect inside an unrelated call would run it in a new session unnoticed).
  void discard_sent();
  // The second half of exec_pipeline: reads one result per step of `syncs` (each step's
  // sync_after), then leaves pipeline mode. A broken connection reconnects, unless `discarding`.
  Result<std::vector<Result<QueryResult>>> receive_pipeline(const std::vector<bool>& syncs,
                                                            bool discarding = false);
  // Drops the session after a pipeline failed half-read, and reconnects.
  Error pipeline_broken(const std::string& what);
  Connection(pg_conn* conn, std::string conninfo) : conn_(conn), conninfo_(std::move(conninfo)) {}
  Result<QueryResult> check(pg_result* result);
  // Routes the server's notices to on_notice (again after each reconnect).
  void receive_notices();
  static void on_notice(void* self, const pg_result* notice);

  pg_conn* conn_ = nullptr;
  // The session must not be used again: a prepared statement no longer matches the schema, or
  // the server accepts no writes (another session may reach one that does).
  bool stale_ = false;
  // The server said, outside any statement, that it is ending the session (FATAL).
  bool ended_by_server_ = false;
  uint64_t session_ = 1;
  std::string conninfo_;
  std::vector<std::string> settings_;                          // replayed after reconnect
  std::vector<std::pair<std::string, std::string>> prepared_;  // replayed after reconnect
  std::unordered_map<std::string, std::string> names_by_sql_;  // prepared_name()'s
  std::vector<bool> sent_syncs_;  // the steps send_pipeline sent and nobody read yet
  uint64_t sent_id_ = 0;
};

// Maps a failed libpq call to an Error: connection problems, and prepared statements that the
// schema changed under (see Connection::is_ok), become store_unavailable; unique
// violations of the event id become duplicate_event; malformed JSON becomes invalid_payload;
// anything else is store_error with the server's message.
Error error_from(pg_conn* conn, pg_result* result);

// Returns `conninfo` (keyword string or URL) with its database name replaced by `dbname`, as a
// keyword string. Errors: invalid_argument when libpq cannot parse `conninfo`.
Result<std::string> with_database(const std::string& conninfo, std::string_view dbname);
// Returns `conninfo` as a keyword string with `keyword` set to `value`; with `replace` false, a
// value `conninfo` already has is kept. Errors: invalid_argument when libpq cannot parse it.
Result<std::string> with_option(const std::string& conninfo, std::string_view keyword,
                                std::string_view value, bool replace);

// Appends `value` as one quoted element to a Postgres array literal being built ("{" first,
// "}" last), escaping quotes and backslashes. Arrays travel as one text parameter.
void append_array_element(std::string& literal, std::string_view value);
// A whole text[] literal of `values`.
std::string text_array(std::span<const std::string> values);

// Quotes an identifier for DDL that cannot take parameters (CREATE DATABASE name).
std::string quote_identifier(std::string_view name);

}  // namespace cqrs::pg
