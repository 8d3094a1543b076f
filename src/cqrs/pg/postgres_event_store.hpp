// The event store on PostgreSQL (schema cqrs, see schema/001_event_store.sql).
//
// One instance owns one connection. REQUIRES: external synchronization; every call blocks on the
// network, so use it from dedicated (detached) threads only. Open one instance per thread.
//
// Global order ($all) is (transaction_id, global_position): each event records the id of the
// transaction that wrote it, and read_all returns only events of transactions older than the
// oldest one still running (pg_snapshot_xmin). A transaction that took a lower position but
// commits later is therefore never skipped, without a global write lock and without a gap timer.
// The price: any long-running write transaction in the cluster holds $all readers back until it
// ends; events_behind_watermark() reports how much is held back.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cqrs/event_store.hpp"
#include "cqrs/pg/append_groups.hpp"
#include "cqrs/pg/connection.hpp"

namespace cqrs::pg {

class NoticeSender;

// NOTIFY channel signalled after each append. The payload is the new head's global position,
// then a space and a JSON array of the appended event types: `42 ["GiftCardIssued"]`. A payload
// with the position only (when the types would not fit) stands for any type.
inline constexpr std::string_view kEventsChannel = "cqrs_events";

// The event types a notification on kEventsChannel announces, sorted and unique; nullopt when
// the appends may have had any type (also for a payload this build cannot read).
std::optional<std::vector<std::string>> notice_types(std::string_view payload);

// The part of a notification's payload after the position for appends of `types` (" [...]"),
// or "" when they would make the payload too long (it then stands for any type).
std::string notice_types_suffix(std::vector<std::string> types);

struct PostgresStoreOptions {
  // Refuse to open unless the database is migrated to exactly this build's schema version.
  bool require_current_schema = true;
  // Send NOTIFY on kEventsChannel after successful appends (see NoticeSender: one connection per
  // process and database sends them for every store, coalesced).
  bool notify = true;
  // Commit appends that arrive together from several stores of the process in one statement
  // (see AppendGroups): more appends per second, and fewer commits, when many threads append.
  bool group_appends = true;
  // How long an append waits for a group to take it before it runs alone. A group takes about a
  // millisecond; this bounds the wait when every slot is held by appends that wait for locks in
  // the database (which may be locks the waiting thread holds on another connection).
  std::chrono::milliseconds group_wait{50};
  // How long a group this store leads waits for each of its streams' locks (lock_timeout) before
  // its appends run alone: a lock may be held by a transaction whose thread waits for the group.
  std::chrono::milliseconds group_lock_wait{50};
  // read_all reads ahead: after returning a full page, the next page's query is already on its
  // way, so the server reads it while the caller (and the store, turning rows into events)
  // works on this one. For a connection that pages through $all and does little else: any
  // other call before the next read_all first waits for that page and throws it away. A page
  // read ahead is used only when it is full; otherwise read_all asks again, so a reader that
  // caught up sees what committed meanwhile. A page read ahead that does not fit the socket's
  // buffers keeps its statement (its snapshot, a share lock on cqrs.events) on the server until
  // the next call: a reader that stops after a full page makes another call or closes the store.
  bool read_ahead = false;
  // How many transactions one read_all_of_types walks past at most, from the first append after
  // its position: a page of rare types ends there (with AllPage::more set) instead of walking
  // every other type's entries up to the watermark. At least 1.
  int64_t typed_read_window = 10000;
};

class PostgresEventStore final : public EventStore {
 public:
  // Connects and prepares statements. Errors: store_unavailable, schema_too_new,
  // migration_failed (database not migrated).
  static Result<std::unique_ptr<PostgresEventStore>> open(const std::string& conninfo,
                                                          PostgresStoreOptions options = {});
  ~PostgresEventStore() override;

  Result<AppendResult> append(std::string_view stream_id, ExpectedVersion expected,
                              std::span<const EventData> events) override;
  std::vector<WriteResult> write(std::span<const WriteRequest> requests) override;
  Result<std::vector<RecordedEvent>> read_correlated(std::string_view correlation_id,
                                                     size_t max_count) override;
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream_id, int64_t from_version,
                                                 size_t max_count, Direction direction) override;
  std::vector<LoadedStream> load_streams(std::span<const StreamLoad> loads) override;
  Result<int64_t> stream_version(std::string_view stream_id) override;
  Result<AllPage> read_all(Position after, size_t max_count) override;
  Result<std::optional<Position>> load_checkpoint(std::string_view handler) override;
  Result<void> save_checkpoint(std::string_view handler, Position position) override;
  Result<void> save_snapshot(const Snapshot& snapshot) override;
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream_id) override;
  Result<bool> record_command(const CommandRecord& record) override;
  Result<std::optional<CommandRecord>> find_command(const Uuid& command_id) override;

  // Runs `work` and saves the handler's checkpoint in ONE transaction: both commit or neither
  // does (exactly-once effects for projectors). `work` gets the connection inside the open
  // transaction and must not commit or roll back itself.
  Result<void> commit_with_checkpoint(std::string_view handler, Position position,
                                      const std::function<Result<void>(Connection&)>& work);

  // read_all of the events whose type is in `types`: up to `max_count` of them, found by one walk
  // of the $all index, which holds each run's type; events of other types are passed over, never
  // sent. Each read walks at most options.typed_read_window transactions. When fewer match,
  // page.next is the newest position readers can see within that window, past every skipped event,
  // and page.more says whether the window ended before the watermark (read again at once).
  Result<AllPage> read_all_of_types(Position after, size_t max_count,
                                    std::span<const std::string> types);

  // The position of the last event $all readers can see now (Position{} when none): one index
  // probe.
  Result<Position> head() override;
  // How many stored events $all readers cannot see yet because an older transaction is running.
  Result<int64_t> events_behind_watermark();
  // Whether any stored event is behind the watermark (cheap: one index probe).
  Result<bool> events_behind_watermark_exist();
  // Whether any stored event comes after `after` in $all order, readable by read_all() yet or
  // not (one index probe). With `types`, only events of those types count.
  Result<bool> events_after_exist(Position after, std::span<const std::string> types = {});
  // How many events of `types` follow `after` below the watermark (a handler's lag), through
  // the $all index.
  Result<int64_t> count_of_types_after(Position after, std::span<const std::string> types);

  // Indexes correlations behind the appends (schema/018): the next runs of $all after the
  // index's position, at most `max_runs`, all below the watermark, in one transaction.
  // read_correlated finds every event with or without it; it only walks less of $all.
  // Errors: invalid_argument (max_runs < 1); store_error when the index's position row is gone
  // (the message says how to put it back); store errors.
  struct CorrelationIndexing {
    int64_t indexed = 0;  // runs passed over; fewer than max_runs: caught up with the watermark
    bool busy = false;    // another session (another process's indexer) is indexing: none done
  };
  Result<CorrelationIndexing> index_correlations(int max_runs);
  // The runs of $all the correlation index has not reached yet (readable by read_all or not).
  Result<int64_t> correlation_index_lag() override;

  // The server process behind this store's connection.
  int backend_pid() const;
  // Appends of this process's stores (on this database) waiting to join a group now (see
  // AppendGroups); 0 without options.group_appends.
  size_t appends_waiting() const;

  // The connection itself, for callers that run their own SQL between store calls (handler
  // runtime: locks, transactions). Do not leave a transaction open across store calls. From
  // then on the store's appends take no part in groups (see AppendGroups): whatever its session
  // was set to (synchronous_commit, a role, timeouts) must not apply to other stores' appends.
  Connection& connection() {
    groups_.reset();
    return *conn_;
  }
  // Reconnects when the connection broke. Errors: store_unavailable.
  Result<void> reconnect_if_needed() { return ensure_connected(); }

 private:
  explicit PostgresEventStore(std::unique_ptr<Connection> conn, PostgresStoreOptions options);
  Result<void> prepare_statements();
  Result<void> ensure_connected();
  // append() without a group: `base` as known_base() found it.
  Result<AppendResult> append_alone(std::string_view stream_id, ExpectedVersion expected,
                                    std::span<const EventData> events, std::optional<int64_t> base);
  // Runs a group of appends (see AppendGroups) on this store's connection and sets their
  // results; a group of one runs as append_alone.
  void run_group(std::span<AppendGroups::Job* const> group);
  // One append running, for the NoticeSender; claimed when its notification rides in its own
  // round trip, with the types other appends posted (see NoticeSender::begin_append).
  class Notice {
   public:
    Notice(NoticeSender* sender, bool claimed) : sender_(sender), claimed_(claimed) {}
    Notice(const Notice&) = delete;
    Notice& operator=(const Notice&) = delete;
    ~Notice();
    // Whether the claimed notification went out: it is the last step of `ran`.
    bool sent(const std::vector<Result<QueryResult>>& ran) {
      delivered_ = claimed_ && !ran.empty() && ran.back().ok();
      return delivered_;
    }

   private:
    NoticeSender* sender_;
    bool claimed_;
    bool delivered_ = false;
  };
  // Runs `steps` in one round trip with the notification for appends of `types` as their last
  // step when no other append of the process runs (see NoticeSender), or when the caller opened
  // the transaction (it goes out at the caller's commit). `announced` says whether it went out;
  // otherwise the caller notify()s after the commit.
  Result<std::vector<Result<QueryResult>>> exec_announced(
      std::vector<Connection::PipelineStep>& steps, std::span<const std::string> types,
      bool& announced);
  // Announces committed appends of events of `types` through the NoticeSender's thread.
  void notify(std::span<const std::string> types) const;
  // Runs the prepared read `name` with its generic plan, in one round trip (see "generic_plans"
  // in the statements); inside a transaction the caller opened, as PostgreSQL chooses.
  Result<QueryResult> exec_generic(const char* name, Params params);
  // read_all's page after `after` from the query sent ahead for it, when that one is full; else
  // none (and whatever was sent ahead is gone).
  std::optional<QueryResult> page_read_ahead(Position after, size_t max_count);
  // Sends read_all's query for the page after `after` (see PostgresStoreOptions::read_ahead).
  void read_ahead(Position after, size_t max_count);
  // write() for requests without claims: one transaction, one round trip, per-request results.
  void write_group(std::span<const WriteRequest> requests, const std::vector<size_t>& pending,
                   std::vector<WriteResult>& results);
  // write() for one request with unique claims, in its own transaction.
  WriteResult write_claiming(const WriteRequest& request);
  // write() for a group of one request whose base version is known (see known_base): its
  // events and command record in one INSERT statement, with no head lookup. None when the base
  // is unknown or the statement failed: the group statement then decides.
  std::optional<WriteResult> write_one_after(const WriteRequest& request);
  // Notes the versions that the group's results show to exist.
  void note_versions(std::span<const WriteRequest> requests, const std::vector<size_t>& pending,
                     const std::vector<WriteResult>& results);

  // The version an append can go right after without reading the stream's head: 0 for a new
  // stream, or a version this store knows exists. None when it must read the head, and always
  // inside a transaction the caller opened.
  std::optional<int64_t> known_base(std::string_view stream_id, ExpectedVersion expected);
  // Records that `version` of the stream exists (this store wrote or read it).
  void note_version(std::string_view stream_id, int64_t version);
  // Which server this store's connection reaches: its address and when it started, read once
  // per server session. A failover to a promoted replica changes it. "" when it cannot be read.
  const std::string& server_identity();

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };

  std::unique_ptr<Connection> conn_;
  PostgresStoreOptions options_;
  std::shared_ptr<NoticeSender> notices_;  // null without options_.notify
  std::shared_ptr<AppendGroups> groups_;   // null without options_.group_appends
  // Per stream, the highest version known to exist. Stored events are never deleted, so a
  // version once seen stays; the map is kept for one server session (known_session_) only, since
  // a reconnect may reach another server (a promoted replica) that lacks recent commits.
  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> known_versions_;
  uint64_t known_session_ = 0;  // Connection::session()
  // The page read_all sent ahead for (PostgresStoreOptions::read_ahead), while it is on its way.
  struct ReadAhead {
    Position after;
    size_t max_count = 0;
    uint64_t session = 0;
    uint64_t sent_id = 0;  // Connection::sent_id(): steps a caller sent on connection() differ
  };
  std::optional<ReadAhead> read_ahead_;
  std::string server_identity_;
  uint64_t server_session_ = 0;  // the session server_identity_ was read in
};

}  // namespace cqrs::pg
