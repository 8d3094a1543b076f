// PostgresEventStore behaviour that has no in-memory counterpart: immutability enforced by the
// database, reconnects, notifications, transactional checkpoints, and connection failures.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "cqrs/append_validation.hpp"
#include "cqrs/handlers/handler.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/notice_sender.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "support/json_edits.hpp"
#include "support/test_database.hpp"

namespace cqrs::pg {
namespace {

class PostgresStore : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::TestDatabase::create();
    ASSERT_NE(db_, nullptr);
    auto store = PostgresEventStore::open(db_->url());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    store_ = std::move(store).value();
    raw_ = db_->connect();
    ASSERT_NE(raw_, nullptr);
  }

  // Rows in cqrs.events, counted on the raw connection.
  int64_t stored_events() {
    auto count = raw_->exec("SELECT count(*) FROM cqrs.events");
    EXPECT_TRUE(count.ok()) << count.error().to_string();
    return count.ok() ? count->int64(0, 0) : -1;
  }

  void append_one(std::string_view stream) {
    EventData event;
    event.type = "Happened";
    event.data = R"({"n":1})";
    auto appended = store_->append(stream, ExpectedVersion::any(), std::span(&event, 1));
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  }

  // `setting` = `value` (a literal) for the sessions that open from now on, or back to the
  // server's default when `value` is empty (ALTER DATABASE).
  bool set_for_new_sessions(std::string_view setting, std::string_view value) {
    std::string alter = "ALTER DATABASE " + quote_identifier(db_->name());
    alter += value.empty() ? " RESET " + std::string(setting)
                           : " SET " + std::string(setting) + " = " + std::string(value);
    auto done = raw_->exec(alter);
    EXPECT_TRUE(done.ok()) << done.error().to_string();
    return done.ok();
  }

  // Ends the server session `pid` and waits until it is gone; true when it was ended.
  bool terminate(int pid) {
    auto killed = raw_->exec("SELECT pg_terminate_backend($1, 5000)", Params().add(int64_t{pid}));
    EXPECT_TRUE(killed.ok()) << killed.error().to_string();
    return killed.ok() && killed->text(0, 0) == "t";
  }

  // Waits (up to 10 s) until the server session `pid` waits for an advisory lock.
  bool wait_for_advisory_lock(int pid) {
    for (int attempt = 0; attempt < 500; ++attempt) {
      auto rows = raw_->exec(
          "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
          Params().add(int64_t{pid}));
      EXPECT_TRUE(rows.ok()) << rows.error().to_string();
      if (!rows.ok()) return false;
      if (rows->int64(0, 0) == 1) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::unique_ptr<testing::TestDatabase> db_;
  std::unique_ptr<PostgresEventStore> store_;
  std::unique_ptr<Connection> raw_;
};

// The stores check payloads before they reach the database, so that a bad one gets a clear error
// and cannot fail a whole group commit. The check must accept exactly what jsonb accepts: here
// both judge the same random edits of JSON documents. (Text that is not UTF-8 or holds a NUL byte
// cannot be sent as a text parameter at all; the checker refuses it.)
TEST_F(PostgresStore, PayloadCheckAgreesWithJsonb) {
  ASSERT_TRUE(raw_->exec("CREATE FUNCTION pg_temp.is_jsonb(t text) RETURNS bool LANGUAGE plpgsql "
                         "AS $$ BEGIN PERFORM t::jsonb; RETURN true; "
                         "EXCEPTION WHEN others THEN RETURN false; END $$")
                  .ok());
  std::vector<std::string> texts;
  for (std::string& text : testing::random_json_edits(20'000, 20261128)) {
    if (is_valid_utf8(text) && text.find('\0') == std::string::npos) {
      texts.push_back(std::move(text));
    }
  }
  // Numbers at numeric's limits, which random edits do not reach.
  for (const char* text : {"1e131071", "1e131072", "1e-16383", "1e-16384", "1.0000e-16380",
                           "0e99999999", "0e1000000000000", "[0.5e-16383]"}) {
    texts.emplace_back(text);
  }
  std::string literal = "{";
  for (const std::string& text : texts) append_array_element(literal, text);
  literal += "}";
  auto verdicts = raw_->exec("SELECT pg_temp.is_jsonb(t)::text FROM unnest($1::text[]) AS t",
                             Params().add(literal));
  ASSERT_TRUE(verdicts.ok()) << verdicts.error().to_string();
  ASSERT_EQ(verdicts->rows(), static_cast<int>(texts.size()));
  int accepted = 0;
  for (size_t idx = 0; idx < texts.size(); ++idx) {
    bool by_postgres = verdicts->text(static_cast<int>(idx), 0) == "true";
    auto checked = validate_json(texts[idx], false, "text");
    ASSERT_EQ(checked.ok(), by_postgres)
        << "text: " << texts[idx] << (checked.ok() ? "" : "\n" + checked.error().to_string());
    accepted += by_postgres ? 1 : 0;
  }
  EXPECT_GT(accepted, 1'000);
  EXPECT_GT(static_cast<int>(texts.size()) - accepted, 1'000);
}

TEST_F(PostgresStore, ReadAllOfTypesReturnsThoseTypesAndMovesPastTheOthers) {
  std::vector<EventData> events(6);
  const char* types[] = {"A", "B", "A", "C", "B", "A"};
  for (size_t idx = 0; idx < events.size(); ++idx) {
    events[idx].type = types[idx];
    events[idx].data = "{}";
  }
  ASSERT_TRUE(store_->append("s", ExpectedVersion::any(), events).ok());
  // Visible once no transaction in the cluster predates the append (other tests may run).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  auto held = [&] {
    auto exist = store_->events_behind_watermark_exist();
    return !exist.ok() || *exist;
  };
  while (held() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto all = store_->read_all(Position{}, 10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->events.size(), 6u);

  // A repeated type changes nothing.
  std::vector<std::string> wanted = {"C", "B", "B"};
  auto first = store_->read_all_of_types(Position{}, 2, wanted);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  ASSERT_EQ(first->events.size(), 2u);
  EXPECT_EQ(first->events[0].type, "B");
  EXPECT_EQ(first->events[0].stream_version, 2);
  EXPECT_EQ(first->events[1].type, "C");
  EXPECT_EQ(first->events[1].data, "{}");
  EXPECT_TRUE(first->more) << "a full page";
  EXPECT_EQ(first->next, all->events[3].position()) << "a full page ends at its last event";

  auto rest = store_->read_all_of_types(first->next, 10, wanted);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->events.size(), 1u);
  EXPECT_EQ(rest->events[0].stream_version, 5);
  EXPECT_FALSE(rest->more);
  EXPECT_EQ(rest->next, all->events[5].position()) << "past the trailing event of another type";

  auto none = store_->read_all_of_types(rest->next, 10, wanted);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->events.empty());
  EXPECT_FALSE(none->more);
  EXPECT_EQ(none->next, rest->next);

  // Nothing of the types at all: the page still moves past everything visible.
  std::vector<std::string> absent = {"Z"};
  auto skipped = store_->read_all_of_types(Position{}, 10, absent);
  ASSERT_TRUE(skipped.ok());
  EXPECT_TRUE(skipped->events.empty());
  EXPECT_EQ(skipped->next, all->events[5].position());
}

TEST_F(PostgresStore, UpdatingAStoredEventFails) {
  append_one("s");
  auto updated = raw_->exec("UPDATE cqrs.events SET data = '{\"n\":2}'");
  ASSERT_FALSE(updated.ok());
  EXPECT_NE(updated.error().message().find("append-only"), std::string::npos)
      << updated.error().message();
  auto stored = store_->read_stream("s", 1, 10, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->at(0).data, R"({"n": 1})");
}

TEST_F(PostgresStore, DeletingAStoredEventFails) {
  append_one("s");
  auto deleted = raw_->exec("DELETE FROM cqrs.events");
  ASSERT_FALSE(deleted.ok());
  EXPECT_NE(deleted.error().message().find("append-only"), std::string::npos);
  EXPECT_EQ(*store_->stream_version("s"), 1);
}

TEST_F(PostgresStore, TruncatingTheEventsTableFails) {
  append_one("s");
  auto truncated = raw_->exec("TRUNCATE cqrs.events");
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(stored_events(), 1);
}

// global_position is unique by construction, without an index to enforce it: an identity that
// always comes from its sequence, so a writer of plain SQL cannot choose one.
TEST_F(PostgresStore, AnInsertThatChoosesAGlobalPositionIsRefused) {
  append_one("s");
  auto inserted = raw_->exec(
      "INSERT INTO cqrs.events (global_position, stream_id, stream_version, event_id, event_type,"
      " data) SELECT global_position, 'other', 1, gen_random_uuid(), 'Copied', data"
      " FROM cqrs.events");
  ASSERT_FALSE(inserted.ok());
  EXPECT_NE(inserted.error().message().find("global_position"), std::string::npos)
      << inserted.error().message();
  EXPECT_EQ(stored_events(), 1);
}

// The stores check every event before writing it; the database keeps the same rules for any
// other writer (schema/014: the columns' domains).
TEST_F(PostgresStore, RowsThatBreakTheColumnRulesAreRefusedByTheDatabase) {
  auto insert = [&](std::string_view version, std::string_view type, std::string_view type_version,
                    std::string_view metadata) {
    return raw_->exec(
        "INSERT INTO cqrs.events (stream_id, stream_version, event_id, event_type, event_version,"
        " data, metadata) VALUES ('raw', $1::bigint, gen_random_uuid(), $2, $3::int, '{}', "
        "$4::jsonb)",
        Params().add(version).add(type).add(type_version).add(metadata));
  };
  struct Case {
    const char* version;
    const char* type;
    const char* type_version;
    const char* metadata;
    const char* rule;
  };
  for (const Case& bad : {Case{"0", "Happened", "1", "{}", "stream_version_positive"},
                          Case{"-3", "Happened", "1", "{}", "stream_version_positive"},
                          Case{"1", "", "1", "{}", "event_type_not_empty"},
                          Case{"1", "Happened", "0", "{}", "event_version_positive"},
                          Case{"1", "Happened", "1", "[1]", "event_metadata_is_object"},
                          Case{"1", "Happened", "1", "\"text\"", "event_metadata_is_object"}}) {
    auto refused = insert(bad.version, bad.type, bad.type_version, bad.metadata);
    ASSERT_FALSE(refused.ok()) << bad.rule;
    EXPECT_NE(refused.error().message().find(bad.rule), std::string::npos)
        << refused.error().message();
    EXPECT_NE(refused.error().message().find("SQLSTATE 23514"), std::string::npos)
        << refused.error().message();
  }
  // The same rules hold for the SQL function that other writers may call.
  auto called = raw_->exec(
      "SELECT status FROM cqrs.append_to_stream('raw', -1, ARRAY[gen_random_uuid()], "
      "ARRAY['Happened'], ARRAY[0], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb])");
  ASSERT_FALSE(called.ok());
  EXPECT_NE(called.error().message().find("event_version_positive"), std::string::npos)
      << called.error().message();
  EXPECT_EQ(stored_events(), 0);
  // A row that keeps them is stored, with the metadata's default when none is given.
  ASSERT_TRUE(insert("1", "Happened", "1", "{\"k\":1}").ok());
  auto defaulted = raw_->exec(
      "INSERT INTO cqrs.events (stream_id, stream_version, event_id, event_type, data)"
      " VALUES ('raw', 2, gen_random_uuid(), 'Happened', '{}') RETURNING metadata::text");
  ASSERT_TRUE(defaulted.ok()) << defaulted.error().to_string();
  EXPECT_EQ(defaulted->text(0, 0), "{}");
  EXPECT_EQ(*store_->stream_version("raw"), 2);
}

// A server that ends an idle session says so before it closes the connection: the store reads
// that before its next call and reconnects first, so the call succeeds on a new session.
TEST_F(PostgresStore, AConnectionTheServerClosedWhileIdleIsReplacedBeforeTheNextCall) {
  append_one("s");
  const int old_pid = store_->backend_pid();
  const uint64_t old_session = store_->connection().session();
  ASSERT_TRUE(terminate(old_pid));

  auto read = store_->stream_version("s");
  ASSERT_TRUE(read.ok()) << read.error().to_string();
  EXPECT_EQ(*read, 1);
  EXPECT_NE(store_->backend_pid(), old_pid);
  EXPECT_EQ(store_->connection().session(), old_session + 1);
  append_one("s");  // prepared statements work on the new connection
  EXPECT_EQ(*store_->stream_version("s"), 2);

  // An append is the first call after the server closed the connection: it is stored once.
  ASSERT_TRUE(terminate(store_->backend_pid()));
  EventData event;
  event.type = "AfterTheClose";
  auto appended = store_->append("s", ExpectedVersion::exact(2), std::span(&event, 1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 3);
  EXPECT_EQ(store_->connection().session(), old_session + 2);
}

// The same when the server's idle_session_timeout ends the session (and a restart at night
// would): the first call after a quiet spell does not fail.
TEST_F(PostgresStore, ASessionTheServerTimedOutIsReplacedBeforeTheNextCall) {
  ASSERT_TRUE(set_for_new_sessions("idle_session_timeout", "'200ms'"));
  auto opened = PostgresEventStore::open(db_->url());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& store = *opened;
  EventData event;
  event.type = "BeforeTheTimeout";
  ASSERT_TRUE(store->append("quiet", ExpectedVersion::no_stream(), std::span(&event, 1)).ok());
  const int old_pid = store->backend_pid();
  // Until the server has ended that session.
  bool ended = false;
  for (int attempt = 0; attempt < 100 && !ended; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto rows = raw_->exec("SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                           Params().add(int64_t{old_pid}));
    ASSERT_TRUE(rows.ok()) << rows.error().to_string();
    ended = rows->int64(0, 0) == 0;
  }
  ASSERT_TRUE(ended) << "the server did not end the idle session";

  EventData later;
  later.type = "AfterTheTimeout";
  auto appended = store->append("quiet", ExpectedVersion::exact(1), std::span(&later, 1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 2);
  EXPECT_NE(store->backend_pid(), old_pid);
  EXPECT_EQ(store->connection().session(), 2u);
}

// A connection lost while a call runs fails that call with store_unavailable (whether the
// append was stored cannot be known in general; here it was not) and the next call reconnects.
// Inside a transaction the caller opened, a closed connection is not replaced silently: the
// caller must learn that its transaction is gone.
TEST_F(PostgresStore, AConnectionLostDuringACallFailsItAndTheNextCallReconnects) {
  const int store_pid = store_->backend_pid();
  auto blocker = db_->connect();
  ASSERT_NE(blocker, nullptr);
  ASSERT_TRUE(
      blocker->exec("SELECT pg_advisory_lock(1668379251, hashtext($1))", Params().add("s")).ok());
  Result<AppendResult> appended = Error::internal(errc::kStoreError, "unset");
  std::thread appending([&] {
    EventData event;
    event.type = "Lost";
    appended = store_->append("s", ExpectedVersion::any(), std::span(&event, 1));
  });
  const bool waiting = wait_for_advisory_lock(store_pid);
  const bool killed = terminate(store_pid);
  blocker.reset();
  appending.join();
  ASSERT_TRUE(waiting) << "the append did not wait for the stream's lock";
  ASSERT_TRUE(killed);
  ASSERT_FALSE(appended.ok());
  EXPECT_EQ(appended.error().code(), errc::kStoreUnavailable);
  EXPECT_EQ(appended.error().kind(), ErrorKind::kUnavailable);

  auto after = store_->stream_version("s");
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_EQ(*after, 0) << "the lost append was stored";
  EXPECT_NE(store_->backend_pid(), store_pid);
  append_one("s");
  EXPECT_EQ(*store_->stream_version("s"), 1);

  // A transaction the caller opened on the store's connection, which the server then closes.
  ASSERT_TRUE(store_->connection().exec("BEGIN").ok());
  const int in_transaction_pid = store_->backend_pid();
  ASSERT_TRUE(terminate(in_transaction_pid));
  EventData event;
  event.type = "InTheLostTransaction";
  appended = store_->append("s", ExpectedVersion::exact(1), std::span(&event, 1));
  ASSERT_FALSE(appended.ok()) << "an append ran outside the transaction its caller opened";
  EXPECT_EQ(appended.error().code(), errc::kStoreUnavailable);
  after = store_->stream_version("s");  // outside any transaction now: reconnects
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_EQ(*after, 1);
  EXPECT_NE(store_->backend_pid(), in_transaction_pid);
}

// Appends after a version the store knows take the stream's lock before they insert (the lock
// keeps cqrs.append_to_stream's view of the head exact), whether or not they record a command,
// and store their events with positions in version order.
TEST_F(PostgresStore, AppendsAfterAKnownVersionWaitForTheStreamsLock) {
  for (const bool recorded : {false, true}) {
    SCOPED_TRACE(recorded ? "with a command record" : "without");
    const std::string stream = recorded ? "locked-recorded" : "locked";
    append_one(stream);  // the store now knows version 1
    const int store_pid = store_->backend_pid();
    auto blocker = db_->connect();
    ASSERT_NE(blocker, nullptr);
    ASSERT_TRUE(
        blocker->exec("SELECT pg_advisory_lock(1668379251, hashtext($1))", Params().add(stream))
            .ok());
    WriteRequest request;
    request.stream_id = stream;
    request.expected = ExpectedVersion::exact(1);
    for (int idx = 0; idx < 3; ++idx) {
      EventData event;
      event.type = "Happened";
      event.data = R"({"n":)" + std::to_string(idx) + "}";
      request.events.push_back(event);
    }
    if (recorded) request.command = CommandRecord{Uuid::time_ordered(), stream, R"({"ok":true})"};
    std::future<WriteResult> writing = std::async(std::launch::async, [&] {
      if (recorded) return store_->write(std::span(&request, 1)).front();
      WriteResult result;
      auto appended = store_->append(stream, request.expected, request.events);
      if (appended) {
        result.appended = *appended;
      } else {
        result.error = appended.error();
      }
      return result;
    });
    // Whatever fails below, the lock goes before the future waits for the append.
    struct Release {
      std::unique_ptr<Connection>& blocker;
      ~Release() { blocker.reset(); }
    };
    bool waiting = false;
    {
      Release release{blocker};
      waiting = wait_for_advisory_lock(store_pid);
      EXPECT_EQ(writing.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
          << "the append finished while the stream's lock was held";
    }
    EXPECT_TRUE(waiting) << "the append did not wait for the stream's lock";
    WriteResult written = writing.get();
    ASSERT_TRUE(written.ok()) << written.error->to_string();
    EXPECT_EQ(written.appended->stream_version, 4);
    ASSERT_EQ(written.appended->global_positions.size(), 3u);
    EXPECT_TRUE(std::is_sorted(written.appended->global_positions.begin(),
                               written.appended->global_positions.end()));
    auto events = store_->read_stream(stream, 2, 10, Direction::kForward);
    ASSERT_TRUE(events.ok()) << events.error().to_string();
    ASSERT_EQ(events->size(), 3u);
    for (size_t idx = 0; idx < events->size(); ++idx) {
      EXPECT_EQ((*events)[idx].global_position, written.appended->global_positions[idx]);
      EXPECT_EQ((*events)[idx].data, R"({"n": )" + std::to_string(idx) + "}");
    }
  }
}

// A reconnect prepares the store's statements again; when the server refuses one (here a
// lock_timeout while DDL holds cqrs.events), the call fails with store_unavailable and the next
// call connects again, instead of going on with a session that lacks statements.
TEST_F(PostgresStore, AReconnectThatCannotPrepareItsStatementsIsTriedAgainAtTheNextCall) {
  append_one("prepared");
  ASSERT_TRUE(set_for_new_sessions("lock_timeout", "'300ms'"));
  auto locker = db_->connect();
  ASSERT_NE(locker, nullptr);
  ASSERT_TRUE(locker->exec("BEGIN; LOCK cqrs.events IN ACCESS EXCLUSIVE MODE").ok());
  ASSERT_TRUE(terminate(store_->backend_pid()));
  auto refused = store_->stream_version("prepared");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kStoreUnavailable) << refused.error().to_string();
  ASSERT_TRUE(locker->exec("COMMIT").ok());
  for (int call = 0; call < 3; ++call) {
    auto version = store_->stream_version("prepared");
    ASSERT_TRUE(version.ok()) << "call " << call << ": " << version.error().to_string();
    EXPECT_EQ(*version, 1);
  }
  append_one("prepared");
  EXPECT_EQ(*store_->stream_version("prepared"), 2);
  EXPECT_TRUE(set_for_new_sessions("lock_timeout", ""));
}

// Two writers of one command id on one stream (a client's retry racing its first attempt): the
// second waits for the stream's lock, then finds the first's record and answers with it, on the
// path of requests with claims as on the others.
TEST_F(PostgresStore, ACommandIdWrittenWhileItsTwinWaitsForTheLockAnswersDuplicateCommand) {
  const Uuid command_id = Uuid::time_ordered();
  auto first = db_->connect();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->exec("BEGIN").ok());
  auto holding = first->exec(
      "SELECT status FROM cqrs.append_to_stream('twin', -1, ARRAY[gen_random_uuid()],"
      " ARRAY['Happened'], ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], $1::uuid,"
      " '{\"first\":true}'::jsonb)",
      Params().add(command_id.to_string()));
  ASSERT_TRUE(holding.ok()) << holding.error().to_string();
  ASSERT_EQ(holding->text(0, 0), "ok");

  WriteRequest request;
  request.stream_id = "twin";
  EventData event;
  event.type = "Happened";
  event.data = R"({"twin":true})";
  request.events.push_back(event);
  request.command = CommandRecord{command_id, "twin", R"({"first":false})"};
  request.claims.push_back(UniqueClaim{"email", "twin@example.com", false});
  const int store_pid = store_->backend_pid();
  WriteResult written;
  std::thread writer([&] { written = store_->write(std::span(&request, 1)).front(); });
  const bool waiting = wait_for_advisory_lock(store_pid);
  auto committed = first->exec("COMMIT");
  writer.join();
  ASSERT_TRUE(waiting) << "the second writer did not wait for the stream's lock";
  ASSERT_TRUE(committed.ok()) << committed.error().to_string();
  ASSERT_FALSE(written.ok()) << "the twin appended again";
  EXPECT_EQ(written.error->code(), errc::kDuplicateCommand) << written.error->to_string();
  ASSERT_TRUE(written.existing_result.has_value());
  EXPECT_NE(written.existing_result->find("\"first\": true"), std::string::npos)
      << *written.existing_result;
  EXPECT_EQ(*store_->stream_version("twin"), 1);
}

// Another process's migration can change what a prepared statement returns (schema/014 turned
// four columns into domains). PostgreSQL then refuses the statement on this connection for good
// ("cached plan must not change result type"): the store answers store_unavailable once, and the
// next call runs on a new connection with its statements prepared again.
TEST_F(PostgresStore, AStatementTheSchemaChangedUnderIsPreparedAgain) {
  append_one("s");
  append_one("s");
  auto before = store_->read_stream("s", 1, 10, Direction::kForward);
  ASSERT_TRUE(before.ok()) << before.error().to_string();
  ASSERT_EQ(before->size(), 2u);

  auto altered = raw_->exec("ALTER TABLE cqrs.events ALTER COLUMN event_type TYPE text");
  ASSERT_TRUE(altered.ok()) << altered.error().to_string();

  auto during = store_->read_stream("s", 1, 10, Direction::kForward);
  ASSERT_FALSE(during.ok());
  EXPECT_EQ(during.error().code(), errc::kStoreUnavailable);
  EXPECT_EQ(during.error().kind(), ErrorKind::kUnavailable);
  EXPECT_NE(during.error().message().find("no longer matches the database schema"),
            std::string::npos)
      << during.error().message();

  auto after = store_->read_stream("s", 1, 10, Direction::kForward);
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[1].type, "Happened");
  append_one("s");
  EXPECT_EQ(*store_->stream_version("s"), 3);
}

TEST_F(PostgresStore, UnreachableServerIsStoreUnavailable) {
  auto store = PostgresEventStore::open("host=127.0.0.1 port=1 dbname=x connect_timeout=2");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), errc::kStoreUnavailable);
  EXPECT_NE(store.error().message().find("cannot connect"), std::string::npos);
}

// Waits for notifications on kEventsChannel until one announces a head of at least `head`;
// returns every payload received (empty when none did within 5 s).
// Heads need not arrive in order: a notification's head is read before its transaction commits,
// and notifications go out in commit order (a carried one holds the notification lock through
// its append's WAL flush, while the sender's thread may have read an older head).
std::vector<std::string> notices_until(Connection& listener, int64_t head) {
  std::vector<std::string> payloads;
  int64_t highest = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    auto received = listener.wait_notifications(200);
    if (!received) return {};
    for (const std::string& payload : *received)
      highest = std::max<int64_t>(highest, std::stoll(payload));
    payloads.insert(payloads.end(), received->begin(), received->end());
    if (highest >= head) return payloads;
  }
  return {};
}

// Listens on kEventsChannel once `store` holds one event, and takes that event's notification:
// the notifications a test sends itself then carry head 1.
void listen_at_head_one(Connection& listener, PostgresEventStore& store) {
  ASSERT_TRUE(listener.listen(kEventsChannel).ok());
  EventData event;
  event.type = "Happened";
  event.data = "{}";
  auto appended = store.append("s", ExpectedVersion::no_stream(), std::span(&event, 1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  ASSERT_FALSE(notices_until(listener, 1).empty());
}

TEST_F(PostgresStore, AppendNotifiesListenersWithTheNewHead) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  append_one("s");
  auto first = notices_until(*raw_, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], R"(1 ["Happened"])");
  EXPECT_EQ(notice_types(first[0]), std::vector<std::string>{"Happened"});
  append_one("t");
  auto second = notices_until(*raw_, 2);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0], R"(2 ["Happened"])");
}

// An append inside a transaction the caller opened leaves that transaction's durability alone
// (the notifying statement must not turn synchronous_commit off for it), and its notification
// goes out when the caller commits.
TEST_F(PostgresStore, AnAppendInTheCallersTransactionKeepsItsCommitDurable) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  ASSERT_TRUE(store_->connection().exec("BEGIN").ok());
  append_one("s");
  auto setting = store_->connection().exec("SHOW synchronous_commit");
  ASSERT_TRUE(setting.ok());
  EXPECT_EQ(setting->text(0, 0), "on");
  auto early = raw_->wait_notifications(300);
  ASSERT_TRUE(early.ok());
  EXPECT_TRUE(early->empty()) << "announced before the commit: " << early->front();
  ASSERT_TRUE(store_->connection().exec("COMMIT").ok());
  auto announced = notices_until(*raw_, 1);
  ASSERT_EQ(announced.size(), 1u);
  EXPECT_EQ(notice_types(announced[0]), std::vector<std::string>{"Happened"});
}

// A group commit inside the caller's transaction whose statement fails names that failure: the
// transaction is aborted, so the requests are not retried one by one there.
TEST_F(PostgresStore, AFailedGroupInTheCallersTransactionNamesItsError) {
  EventData stored;
  stored.type = "Happened";
  stored.data = "{}";
  ASSERT_TRUE(store_->append("s", ExpectedVersion::no_stream(), std::span(&stored, 1)).ok());
  std::vector<WriteRequest> requests(2);
  for (size_t idx = 0; idx < requests.size(); ++idx) {
    requests[idx].stream_id = "t" + std::to_string(idx);
    requests[idx].expected = ExpectedVersion::no_stream();
    requests[idx].events.push_back(stored);
  }
  requests[1].events[0].event_id = Uuid::time_ordered();  // only the first repeats an event id
  ASSERT_TRUE(store_->connection().exec("BEGIN").ok());
  auto written = store_->write(requests);
  ASSERT_TRUE(store_->connection().exec("ROLLBACK").ok());
  ASSERT_EQ(written.size(), 2u);
  for (const WriteResult& result : written) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error->code(), errc::kDuplicateEvent) << result.error->to_string();
  }
}

// The appends of every store of a process go out through one extra connection, coalesced: the
// last notification always announces the last append, with the types of all of them.
TEST_F(PostgresStore, StoresOfOneProcessShareOneNotifyingConnection) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  auto backends = [&] {
    auto rows = raw_->exec(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend'");
    return rows ? rows->int64(0, 0) : -1;
  };
  append_one("warm-up");  // starts the sender's connection
  ASSERT_FALSE(notices_until(*raw_, 1).empty());
  int64_t before = backends();
  constexpr int kStores = 4;
  constexpr int kAppendsEach = 50;
  std::vector<std::unique_ptr<PostgresEventStore>> stores;
  for (int idx = 0; idx < kStores; ++idx) {
    auto store = PostgresEventStore::open(db_->url());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    stores.push_back(std::move(store).value());
  }
  EXPECT_EQ(backends(), before + kStores) << "one connection per store, none more";
  std::vector<std::thread> writers;
  for (int idx = 0; idx < kStores; ++idx) {
    writers.emplace_back([&, idx] {
      for (int append_idx = 0; append_idx < kAppendsEach; ++append_idx) {
        EventData event;
        event.type = "Type" + std::to_string(idx);
        event.data = "{}";
        auto done = stores[idx]->append("w" + std::to_string(idx), ExpectedVersion::any(),
                                        std::span(&event, 1));
        EXPECT_TRUE(done.ok());
      }
    });
  }
  for (auto& writer : writers) writer.join();
  const int64_t last = 1 + kStores * kAppendsEach;
  auto payloads = notices_until(*raw_, last);
  ASSERT_FALSE(payloads.empty()) << "no notification announced the last append";
  EXPECT_LE(payloads.size(), size_t{kStores * kAppendsEach});
  std::set<std::string> announced;
  for (const std::string& payload : payloads) {
    auto types = notice_types(payload);
    ASSERT_TRUE(types.has_value()) << payload;
    announced.insert(types->begin(), types->end());
  }
  EXPECT_EQ(announced, (std::set<std::string>{"Type0", "Type1", "Type2", "Type3"}));
}

// Options of a store whose appends wait for a group as long as a test needs.
PostgresStoreOptions patient() {
  PostgresStoreOptions options;
  options.group_wait = std::chrono::seconds(60);
  return options;
}

// Stores of one process whose appends arrive while AppendGroups' slots are taken: two appends
// lead and wait inside the database for stream locks that `blocker` holds; the appends after them
// wait for a group. Returns the leaders' threads; release() lets everything run.
class BlockedGroups {
 public:
  BlockedGroups(const testing::TestDatabase& db, PostgresEventStore& probe)
      : db_(db), probe_(probe), blocker_(db.connect()) {
    EXPECT_NE(blocker_, nullptr);
    for (const char* stream : {"held-1", "held-2"}) {
      EXPECT_TRUE(
          blocker_->exec("SELECT pg_advisory_lock(1668379251, hashtext($1))", Params().add(stream))
              .ok());
      leaders_.emplace_back([this, stream] {
        auto store = PostgresEventStore::open(db_.url());
        ASSERT_TRUE(store.ok()) << store.error().to_string();
        EventData event;
        event.type = "Held";
        auto done = (*store)->append(stream, ExpectedVersion::no_stream(), std::span(&event, 1));
        EXPECT_TRUE(done.ok()) << done.error().to_string();
      });
    }
    // Both leaders wait for their locks: every group slot is taken.
    wait_for([&] {
      auto rows = blocker_->exec(
          "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
          " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
      return rows.ok() && rows->int64(0, 0) == 2;
    });
  }

  // Waits until `count` appends wait for a group.
  void wait_for_waiting(size_t count) {
    wait_for([&] { return probe_.appends_waiting() == count; });
  }

  void release() {
    EXPECT_TRUE(blocker_->exec("SELECT pg_advisory_unlock_all()").ok());
    for (auto& leader : leaders_) leader.join();
    leaders_.clear();
  }

  ~BlockedGroups() {
    if (!leaders_.empty()) release();
  }

 private:
  static void wait_for(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out";
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  const testing::TestDatabase& db_;
  PostgresEventStore& probe_;
  std::unique_ptr<Connection> blocker_;
  std::vector<std::thread> leaders_;
};

// Appends of many stores that arrive together commit together: one statement and one
// transaction for those that waited, each append atomic, with its own versions and positions.
TEST_F(PostgresStore, AppendsThatArriveTogetherCommitInOneGroup) {
  constexpr int kWriters = 8;
  std::vector<std::unique_ptr<PostgresEventStore>> stores;
  for (int idx = 0; idx < kWriters; ++idx) {
    auto store = PostgresEventStore::open(db_->url(), patient());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    stores.push_back(std::move(store).value());
  }
  std::vector<Result<AppendResult>> results(kWriters, Error::internal(errc::kStoreError, "unset"));
  BlockedGroups blocked(*db_, *store_);
  std::vector<std::thread> writers;
  for (int idx = 0; idx < kWriters; ++idx) {
    writers.emplace_back([&, idx] {
      std::vector<EventData> events(1 + idx % 3);  // one to three events
      for (EventData& event : events) {
        event.type = "Grouped" + std::to_string(idx % 2);
        event.data = R"({"writer":)" + std::to_string(idx) + "}";
      }
      results[idx] =
          stores[idx]->append("g-" + std::to_string(idx), ExpectedVersion::no_stream(), events);
    });
  }
  blocked.wait_for_waiting(kWriters);
  blocked.release();
  for (auto& writer : writers) writer.join();

  for (int idx = 0; idx < kWriters; ++idx) {
    ASSERT_TRUE(results[idx].ok()) << results[idx].error().to_string();
    const int count = 1 + idx % 3;
    EXPECT_EQ(results[idx]->stream_version, count);
    auto stored = store_->read_stream("g-" + std::to_string(idx), 1, 10, Direction::kForward);
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->size(), static_cast<size_t>(count));
    ASSERT_EQ(results[idx]->global_positions.size(), static_cast<size_t>(count));
    for (int event = 0; event < count; ++event) {
      EXPECT_EQ((*stored)[event].global_position, results[idx]->global_positions[event]);
      EXPECT_EQ((*stored)[event].data, R"({"writer": )" + std::to_string(idx) + "}");
    }
    EXPECT_EQ((*stored)[0].position().commit_id, results[idx]->commit_id);
    // The store knows the version it wrote: the next append goes right after it.
    EventData more;
    more.type = "More";
    auto next = stores[idx]->append("g-" + std::to_string(idx), ExpectedVersion::exact(count),
                                    std::span(&more, 1));
    ASSERT_TRUE(next.ok()) << next.error().to_string();
    EXPECT_EQ(next->stream_version, count + 1);
  }
  // The waiting appends went out in at most two groups (each slot promotes one leader, which
  // takes every append waiting then).
  auto transactions = raw_->exec(
      "SELECT count(DISTINCT transaction_id) FROM cqrs.events"
      " WHERE stream_id LIKE 'g-%' AND stream_version = 1");
  ASSERT_TRUE(transactions.ok());
  EXPECT_LE(transactions->int64(0, 0), 2);
  EXPECT_GE(transactions->int64(0, 0), 1);
}

// A group whose statement fails stores nothing of it; every append of it then runs alone, so
// the one with a stale version and the one with a stored event id get their own errors, and
// the others are stored.
TEST_F(PostgresStore, AFailedGroupStoresTheOthersAndNamesEachError) {
  constexpr int kWriters = 6;
  std::vector<std::unique_ptr<PostgresEventStore>> stores;
  for (int idx = 0; idx < kWriters; ++idx) {
    auto store = PostgresEventStore::open(db_->url(), patient());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    stores.push_back(std::move(store).value());
  }
  // Writer 0 knows version 1 of "stale"; another writer then stores version 2 behind its back.
  EventData first;
  first.type = "First";
  ASSERT_TRUE(stores[0]->append("stale", ExpectedVersion::no_stream(), std::span(&first, 1)).ok());
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id,"
                         " event_type, data) VALUES ('stale', 2, gen_random_uuid(), 'Behind',"
                         " '{}')")
                  .ok());
  // Writer 1 sends an event id that is stored already.
  const Uuid taken = first.event_id;

  std::vector<Result<AppendResult>> results(kWriters, Error::internal(errc::kStoreError, "unset"));
  BlockedGroups blocked(*db_, *store_);
  std::vector<std::thread> writers;
  for (int idx = 0; idx < kWriters; ++idx) {
    writers.emplace_back([&, idx] {
      EventData event;
      event.type = "Grouped";
      if (idx == 1) event.event_id = taken;
      std::string stream = idx == 0 ? "stale" : "f-" + std::to_string(idx);
      ExpectedVersion expected =
          idx == 0 ? ExpectedVersion::exact(1) : ExpectedVersion::no_stream();
      results[idx] = stores[idx]->append(stream, expected, std::span(&event, 1));
    });
  }
  blocked.wait_for_waiting(kWriters);
  blocked.release();
  for (auto& writer : writers) writer.join();

  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(results[0].error().actual_version(), std::optional<int64_t>(2));
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error().code(), errc::kDuplicateEvent);
  for (int idx = 2; idx < kWriters; ++idx) {
    ASSERT_TRUE(results[idx].ok()) << results[idx].error().to_string();
    EXPECT_EQ(results[idx]->stream_version, 1);
  }
  EXPECT_EQ(*store_->stream_version("stale"), 2);
  EXPECT_EQ(*store_->stream_version("f-1"), 0);
  auto count = raw_->exec("SELECT count(*) FROM cqrs.events WHERE stream_id LIKE 'f-%'");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->int64(0, 0), kWriters - 2);
}

// An append that no group takes within PostgresStoreOptions::group_wait runs alone: here both
// slots stay taken by appends that wait for locks, and it is stored all the same.
TEST_F(PostgresStore, AnAppendNoGroupTakesRunsAloneAfterItsWait) {
  PostgresStoreOptions options;
  options.group_wait = std::chrono::milliseconds(20);
  auto store = PostgresEventStore::open(db_->url(), options);
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  BlockedGroups blocked(*db_, *store_);
  EventData event;
  event.type = "Alone";
  auto started = std::chrono::steady_clock::now();
  auto done = (*store)->append("alone", ExpectedVersion::no_stream(), std::span(&event, 1));
  ASSERT_TRUE(done.ok()) << done.error().to_string();
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(20));
  EXPECT_EQ(store_->appends_waiting(), 0u);
  EXPECT_EQ(*store_->stream_version("held-1"), 0) << "the slots were still taken";
  blocked.release();
  EXPECT_EQ(*store_->stream_version("held-1"), 1);
}

// A thread that holds a stream's lock in its own transaction and then appends to another stream
// through a second store must not wait forever for a group that waits for that lock: the group
// gives up on the lock after group_lock_wait, and its appends run alone.
TEST_F(PostgresStore, AGroupDoesNotWaitForALockItsOwnMemberHolds) {
  auto holder = PostgresEventStore::open(db_->url());
  auto second = PostgresEventStore::open(db_->url(), patient());
  auto other = PostgresEventStore::open(db_->url(), patient());
  ASSERT_TRUE(holder.ok() && second.ok() && other.ok());
  ASSERT_TRUE((*holder)->connection().exec("BEGIN").ok());
  EventData held;
  held.type = "Held";
  ASSERT_TRUE((*holder)->append("t", ExpectedVersion::no_stream(), std::span(&held, 1)).ok());

  BlockedGroups blocked(*db_, *store_);
  std::promise<Result<AppendResult>> holder_append;
  std::future<Result<AppendResult>> holder_done = holder_append.get_future();
  std::thread holder_thread([&] {
    EventData event;
    event.type = "Elsewhere";
    holder_append.set_value(
        (*second)->append("s", ExpectedVersion::no_stream(), std::span(&event, 1)));
  });
  blocked.wait_for_waiting(1);
  Result<AppendResult> other_result = Error::internal(errc::kStoreError, "unset");
  std::thread other_thread([&] {
    EventData event;
    event.type = "Waits";
    other_result = (*other)->append("t", ExpectedVersion::no_stream(), std::span(&event, 1));
  });
  blocked.wait_for_waiting(2);
  blocked.release();  // one group takes both: "s", and "t", whose lock the holder's transaction has

  bool finished = holder_done.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  if (!finished) {  // unblock the group before failing, so that the test can end
    (void)raw_->exec("SELECT pg_terminate_backend($1)",
                     Params().add(int64_t{(*holder)->backend_pid()}));
  }
  holder_thread.join();
  ASSERT_TRUE(finished) << "the append waited for a group that waited for its own thread's lock";
  Result<AppendResult> appended = holder_done.get();
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 1);
  ASSERT_TRUE((*holder)->connection().exec("COMMIT").ok());
  other_thread.join();
  // It ran alone, waited for the holder's commit, and was told of it.
  ASSERT_FALSE(other_result.ok());
  EXPECT_EQ(other_result.error().code(), errc::kStreamExists) << other_result.error().to_string();
  EXPECT_EQ(*store_->stream_version("t"), 1);
}

// Many stores appending to one stream with `any`: their known versions are soon stale, and each
// group reads the heads under the locks, so every append is stored once, versions 1..n.
TEST_F(PostgresStore, StoresAppendingToOneStreamTogetherLeaveNoGap) {
  constexpr int kWriters = 8;
  constexpr int kAppendsEach = 40;
  std::vector<std::unique_ptr<PostgresEventStore>> stores;
  for (int idx = 0; idx < kWriters; ++idx) {
    auto store = PostgresEventStore::open(db_->url());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    stores.push_back(std::move(store).value());
  }
  std::mutex mutex;
  std::map<int64_t, int64_t> position_of_version;  // as the appends were told
  std::vector<std::thread> writers;
  for (int idx = 0; idx < kWriters; ++idx) {
    writers.emplace_back([&, idx] {
      for (int round = 0; round < kAppendsEach; ++round) {
        std::vector<EventData> events(1 + (idx + round) % 2);
        for (EventData& event : events) event.type = "Shared";
        auto done = stores[idx]->append("hot", ExpectedVersion::any(), events);
        ASSERT_TRUE(done.ok()) << done.error().to_string();
        std::lock_guard lock(mutex);
        for (size_t event = 0; event < events.size(); ++event) {
          int64_t version = done->stream_version - static_cast<int64_t>(events.size() - 1 - event);
          EXPECT_TRUE(position_of_version.emplace(version, done->global_positions[event]).second)
              << "version " << version << " told twice";
        }
      }
    });
  }
  for (auto& writer : writers) writer.join();
  auto stored = store_->read_stream("hot", 1, 10'000, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), position_of_version.size());
  for (size_t idx = 0; idx < stored->size(); ++idx) {
    const RecordedEvent& event = (*stored)[idx];
    EXPECT_EQ(event.stream_version, static_cast<int64_t>(idx) + 1);
    EXPECT_EQ(position_of_version[event.stream_version], event.global_position);
  }
}

// Notifications are transactions of their own: one writer appending back to back sends at most
// one per NoticeSender::kMinInterval, and the last one still announces the last append.
TEST_F(PostgresStore, NotificationsGoOutAtMostOncePerInterval) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  append_one("warm-up");
  ASSERT_FALSE(notices_until(*raw_, 1).empty());
  constexpr int kAppends = 200;
  auto start = std::chrono::steady_clock::now();
  for (int idx = 0; idx < kAppends; ++idx) append_one("s");
  auto elapsed = std::chrono::steady_clock::now() - start;
  auto payloads = notices_until(*raw_, 1 + kAppends);
  ASSERT_FALSE(payloads.empty()) << "no notification announced the last append";
  auto intervals = elapsed / NoticeSender::kMinInterval;
  EXPECT_LE(static_cast<int64_t>(payloads.size()), intervals + 2)
      << kAppends << " appends in " << std::chrono::duration<double>(elapsed).count() << " s";
}

// The sender's connection, closed by the server while idle, is opened again and the notification
// still goes out.
TEST_F(PostgresStore, NoticeSenderReconnectsAfterTheServerClosedItsConnection) {
  ASSERT_NO_FATAL_FAILURE(listen_at_head_one(*raw_, *store_));
  auto sender = NoticeSender::for_database(db_->url());
  sender->post(std::vector<std::string>{"First"});
  auto first = notices_until(*raw_, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(notice_types(first[0]), std::vector<std::string>{"First"});
  auto terminated = raw_->exec(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
      " WHERE datname = current_database() AND backend_type = 'client backend'"
      " AND pid <> pg_backend_pid() AND pid <> $1",
      Params().add(int64_t{store_->backend_pid()}));
  ASSERT_TRUE(terminated.ok()) << terminated.error().to_string();
  ASSERT_EQ(terminated->int64(0, 0), 1) << "the sender's connection is the only other one";
  sender->post(std::vector<std::string>{"Second"});
  auto second = notices_until(*raw_, 1);
  ASSERT_EQ(second.size(), 1u) << "the notification after the reconnect was lost";
  EXPECT_EQ(notice_types(second[0]), std::vector<std::string>{"Second"});
}

// An append that begins once the interval is over, while no other append runs, takes what other
// appends posted meanwhile into its own notification: the sender's thread then has nothing to
// send, so one writer appending back to back never wakes it to send.
TEST_F(PostgresStore, AnAppendAfterTheIntervalCarriesWhatWasPosted) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  constexpr auto kInterval = std::chrono::seconds(1);  // two calls within it, even on a busy host
  NoticeSender sender(db_->url(), kInterval, std::chrono::seconds(30));
  std::vector<std::string> carried;
  ASSERT_TRUE(sender.begin_append(carried)) << "the first append sends its own";
  EXPECT_TRUE(carried.empty());
  sender.end_append(true, true);
  EXPECT_FALSE(sender.begin_append(carried)) << "within the interval";
  sender.end_append(false, false);
  sender.post(std::vector<std::string>{"Posted"});
  std::this_thread::sleep_for(kInterval + std::chrono::milliseconds(20));
  ASSERT_TRUE(sender.begin_append(carried)) << "the interval is over and no append runs";
  EXPECT_EQ(carried, std::vector<std::string>{"Posted"});
  std::vector<std::string> more;
  EXPECT_FALSE(sender.begin_append(more)) << "another append runs";
  sender.end_append(false, false);
  sender.end_append(true, true);
  auto sent = raw_->wait_notifications(300);
  ASSERT_TRUE(sent.ok());
  EXPECT_TRUE(sent->empty()) << "the thread sent what an append carried: " << sent->front();
}

// What no append carries, the thread sends once the interval and the grace are over.
TEST_F(PostgresStore, WhatNoAppendCarriesTheSenderSendsAfterTheGrace) {
  ASSERT_NO_FATAL_FAILURE(listen_at_head_one(*raw_, *store_));
  NoticeSender sender(db_->url(), std::chrono::milliseconds(20), std::chrono::milliseconds(20));
  std::vector<std::string> carried;
  auto start = std::chrono::steady_clock::now();  // at or before the claim
  ASSERT_TRUE(sender.begin_append(carried));
  sender.end_append(true, true);
  sender.post(std::vector<std::string>{"Posted"});
  auto payloads = notices_until(*raw_, 1);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(notice_types(payloads[0]), std::vector<std::string>{"Posted"});
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40))
      << "sent before the grace let an append carry it";
}

// A post wakes the idle thread; an append may claim what was posted before the thread looks.
// The thread then finds nothing to send and sleeps again, and must be woken by the next post:
// otherwise the last appends of a burst are announced only when something else wakes it.
TEST_F(PostgresStore, APostAfterAnAppendCarriedWhatWokeTheThreadStillGoesOut) {
  ASSERT_NO_FATAL_FAILURE(listen_at_head_one(*raw_, *store_));
  NoticeSender sender(db_->url(), std::chrono::milliseconds(0), std::chrono::milliseconds(5));
  for (int round = 0; round < 50; ++round) {
    const std::string late = "Late" + std::to_string(round);
    sender.post(std::vector<std::string>{"Early"});
    std::vector<std::string> carried;
    bool claimed = sender.begin_append(carried);                // most often before the thread runs
    sender.end_append(claimed, claimed);                        // as if its notification went out
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the thread looks, finds nothing
    sender.post(std::vector<std::string>{late});
    bool heard = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!heard && std::chrono::steady_clock::now() < deadline) {
      auto received = raw_->wait_notifications(50);
      ASSERT_TRUE(received.ok()) << received.error().to_string();
      for (const std::string& payload : *received) {
        auto types = notice_types(payload);
        heard = heard || (types && std::count(types->begin(), types->end(), late) > 0);
      }
    }
    ASSERT_TRUE(heard) << "round " << round << ": the thread slept through the post of " << late;
  }
}

// With one writer, appends carry the notifications and post their types between them. The
// thread, which must send what nobody carries by the deadline, waits for that deadline rather
// than being woken by the first post after each carried notification: a context switch per
// interval otherwise. What is posted still goes out at the deadline.
TEST_F(PostgresStore, APostSoonAfterACarriedNotificationDoesNotWakeTheThread) {
  ASSERT_NO_FATAL_FAILURE(listen_at_head_one(*raw_, *store_));
  using std::chrono::milliseconds;
  const milliseconds interval(400), grace(400);
  NoticeSender sender(db_->url(), interval, grace);
  std::vector<std::string> carried;
  ASSERT_TRUE(sender.begin_append(carried));  // the first claims, with nothing to carry
  sender.end_append(true, true);
  sender.post(std::vector<std::string>{"Carried"});
  const uint64_t woken = sender.posts_that_woke();
  std::this_thread::sleep_for(interval + milliseconds(50));
  ASSERT_TRUE(sender.begin_append(carried));
  EXPECT_EQ(carried, std::vector<std::string>{"Carried"});
  sender.end_append(true, true);
  const auto claimed = std::chrono::steady_clock::now();
  // The thread wakes at the first claim's deadline (interval + grace after it, 350 ms from
  // here), finds the types carried, and waits for the second claim's (800 ms from here). A post
  // in between, with 200 ms to spare on either side, must not wake it.
  std::this_thread::sleep_for(milliseconds(550));
  sender.post(std::vector<std::string>{"Posted"});
  EXPECT_EQ(sender.posts_that_woke(), woken);
  auto payloads = notices_until(*raw_, 1);
  const auto heard = std::chrono::steady_clock::now();
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(notice_types(payloads[0]), std::vector<std::string>{"Posted"});
  EXPECT_GE(heard - claimed, interval + grace - milliseconds(50)) << "sent before its deadline";
}

// Types an append carries but does not confirm in time (it waits for a lock, say) go out from
// the thread at the deadline; a carrier whose notification failed hands them back.
TEST_F(PostgresStore, WhatAnAppendCarriesGoesOutEvenIfTheAppendIsSlowOrFails) {
  ASSERT_NO_FATAL_FAILURE(listen_at_head_one(*raw_, *store_));
  NoticeSender sender(db_->url(), std::chrono::milliseconds(20), std::chrono::milliseconds(20));
  std::vector<std::string> carried;
  ASSERT_TRUE(sender.begin_append(carried));  // the first claims, with nothing to carry
  sender.end_append(true, true);
  sender.post(std::vector<std::string>{"Slow"});
  std::this_thread::sleep_for(std::chrono::milliseconds(25));
  bool claimed = sender.begin_append(carried);
  if (claimed) {
    EXPECT_EQ(carried, std::vector<std::string>{"Slow"});
  }
  // The claiming append is still running: the thread sends what it carries at the deadline.
  auto payloads = notices_until(*raw_, 1);
  sender.end_append(claimed, false);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(notice_types(payloads[0]), std::vector<std::string>{"Slow"});

  // A sender that would wait half a minute for a carrier: a failed one hands its types back,
  // and they go out at once.
  NoticeSender patient(db_->url(), std::chrono::milliseconds(20), std::chrono::seconds(30));
  ASSERT_TRUE(patient.begin_append(carried));
  patient.end_append(true, true);
  patient.post(std::vector<std::string>{"Failed"});
  std::this_thread::sleep_for(std::chrono::milliseconds(25));
  ASSERT_TRUE(patient.begin_append(carried));
  EXPECT_EQ(carried, std::vector<std::string>{"Failed"});
  patient.end_append(true, false);  // its notification did not go out
  payloads = notices_until(*raw_, 1);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(notice_types(payloads[0]), std::vector<std::string>{"Failed"});
}

// A pipeline of one step runs as a plain prepared statement. Its contract is the pipeline's:
// a statement error is the step's result and leaves the connection as it was; a broken
// connection fails the whole call, which reconnects; a statement the schema changed under marks
// the connection for a reconnect.
TEST_F(PostgresStore, APipelineOfOneStepKeepsThePipelinesContract) {
  auto opened = Connection::open(db_->url());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  Connection& conn = **opened;
  ASSERT_TRUE(conn.exec("CREATE TABLE one_step (id int PRIMARY KEY, label text)").ok());
  ASSERT_TRUE(conn.prepare("one_step_insert",
                           "INSERT INTO one_step VALUES ($1::int, $2) RETURNING id, label")
                  .ok());
  ASSERT_TRUE(conn.prepare("one_step_select", "SELECT id, label FROM one_step ORDER BY id").ok());
  auto step = [](const char* name, Params params) {
    std::vector<Connection::PipelineStep> steps;
    steps.push_back({name, std::move(params), true});
    return steps;
  };
  const int pid = conn.backend_pid();

  Params first;
  first.add(int64_t{1}).add("one");
  auto ran = conn.exec_pipeline(step("one_step_insert", first));
  ASSERT_TRUE(ran.ok()) << ran.error().to_string();
  ASSERT_EQ(ran->size(), 1u);
  ASSERT_TRUE((*ran)[0].ok()) << (*ran)[0].error().to_string();
  EXPECT_EQ((*ran)[0]->text(0, 1), "one");

  // The same key again: the step's own error, on the same connection, outside any transaction.
  ran = conn.exec_pipeline(step("one_step_insert", first));
  ASSERT_TRUE(ran.ok()) << ran.error().to_string();
  ASSERT_FALSE((*ran)[0].ok());
  EXPECT_NE((*ran)[0].error().message().find("one_step_pkey"), std::string::npos)
      << (*ran)[0].error().message();
  EXPECT_FALSE(conn.in_transaction());
  EXPECT_TRUE(conn.is_ok());
  EXPECT_EQ(conn.backend_pid(), pid);
  auto rows = conn.exec_pipeline(step("one_step_select", Params()));
  ASSERT_TRUE(rows.ok() && (*rows)[0].ok());
  EXPECT_EQ((*rows)[0]->rows(), 1);

  // The server ends the connection: the call fails as unavailable and reconnects, with the
  // statements prepared again.
  auto killed = raw_->exec("SELECT pg_terminate_backend($1, 5000)", Params().add(int64_t{pid}));
  ASSERT_TRUE(killed.ok()) << killed.error().to_string();
  Params second;
  second.add(int64_t{2}).add("two");
  ran = conn.exec_pipeline(step("one_step_insert", second));
  ASSERT_FALSE(ran.ok());
  EXPECT_EQ(ran.error().kind(), ErrorKind::kUnavailable);
  EXPECT_TRUE(conn.is_ok());
  EXPECT_NE(conn.backend_pid(), pid);
  ran = conn.exec_pipeline(step("one_step_insert", second));
  ASSERT_TRUE(ran.ok() && (*ran)[0].ok());

  // Another session changes a result column's type: the step fails, and the connection asks
  // for a reconnect (is_ok() turns false), after which the statement runs again.
  ASSERT_TRUE(raw_->exec("ALTER TABLE one_step ALTER COLUMN label TYPE varchar(20)").ok());
  rows = conn.exec_pipeline(step("one_step_select", Params()));
  ASSERT_TRUE(rows.ok()) << rows.error().to_string();
  ASSERT_FALSE((*rows)[0].ok());
  EXPECT_FALSE(conn.is_ok());
  ASSERT_TRUE(conn.reconnect().ok());
  rows = conn.exec_pipeline(step("one_step_select", Params()));
  ASSERT_TRUE(rows.ok() && (*rows)[0].ok());
  EXPECT_EQ((*rows)[0]->rows(), 2);
}

// The append functions' plans are made at their first call in a session, a prepared statement's
// generic plan after a few runs, and a plan made while cqrs.events looks empty (a new database: the
// migrations analyze it) is kept until the table is analyzed again, up to a minute later under
// load. Their head lookups must walk the primary key in that plan too: sorting a sequential scan of
// the whole table for each request's head makes every group commit slower as the table fills.
TEST_F(PostgresStore, LookupsPlannedOnAnEmptyTableWalkTheIndexesOnceItFills) {
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events SET (autovacuum_enabled = false)").ok());
  int written = 0;
  // Two requests for streams the store does not know: one cqrs.append_batch call, which reads
  // both heads (and command records).
  auto write_pair = [&] {
    std::vector<WriteRequest> requests(2);
    for (WriteRequest& request : requests) {
      request.stream_id = "pair-" + std::to_string(written++);
      request.expected = ExpectedVersion::any();
      request.events.resize(1);
      request.events[0].type = "Paired";
      request.command = CommandRecord{Uuid::random(), request.stream_id, "{}"};
    }
    for (const WriteResult& result : store_->write(requests)) {
      ASSERT_TRUE(result.ok()) << result.error->to_string();
    }
  };
  // One event for a stream the store does not know: the single-event statement that reads the
  // head itself (append_one). Then the stream's head and events.
  auto append_alone = [&] {
    EventData event;
    event.type = "Alone";
    std::string stream = "alone-" + std::to_string(written++);
    auto appended = store_->append(stream, ExpectedVersion::any(), std::span(&event, 1));
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
    // And the reads of one stream.
    auto head = store_->stream_version(stream);
    ASSERT_TRUE(head.ok() && *head == 1);
    auto events = store_->read_stream(stream, 1, 10, Direction::kForward);
    ASSERT_TRUE(events.ok() && events->size() == 1);
    events = store_->read_stream(stream, -1, 10, Direction::kBackward);
    ASSERT_TRUE(events.ok() && events->size() == 1);
  };
  for (int call = 0; call < 6; ++call) {  // planned now, on the empty table
    write_pair();
    append_alone();
  }
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id,"
                         " event_type, data) SELECT 'many-' || (v / 10), v % 10 + 1,"
                         " gen_random_uuid(), 'Other', '{}' FROM generate_series(0, 19999) AS v")
                  .ok());
  auto scans = testing::scans_during(*raw_, "cqrs.events", [&] {
    for (int call = 0; call < 10; ++call) {
      write_pair();
      append_alone();
    }
  });
  EXPECT_GT(scans.index, 0) << "the lookups by the primary key";
  EXPECT_EQ(scans.sequential, 0) << "a lookup scanned all of cqrs.events";
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events RESET (autovacuum_enabled)").ok());
}

// A statement's implicit transaction can fail at its commit, after the statement returned its
// rows: a deferred constraint, or a serialization failure under a default isolation of
// SERIALIZABLE. libpq then reports the commit's error after the statement's result. Every step
// of that transaction must report the error, never the rows that were rolled back, and the
// connection stays usable.
TEST_F(PostgresStore, APipelineReportsACommitThatFailsAfterItsStatements) {
  auto opened = Connection::open(db_->url());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  Connection& conn = **opened;
  ASSERT_TRUE(conn.exec("CREATE TABLE doomed (id int)").ok());
  ASSERT_TRUE(conn.exec("CREATE FUNCTION public.refuse_at_commit() RETURNS trigger"
                        " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
                  .ok());
  ASSERT_TRUE(conn.exec("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON doomed"
                        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                        " WHEN (NEW.id < 0) EXECUTE FUNCTION public.refuse_at_commit()")
                  .ok());
  ASSERT_TRUE(
      conn.prepare("doomed_insert", "INSERT INTO doomed VALUES ($1::int) RETURNING id").ok());
  ASSERT_TRUE(conn.prepare("doomed_count", "SELECT count(*) FROM doomed").ok());
  const int pid = conn.backend_pid();
  auto insert = [](int64_t id, bool sync) {
    return Connection::PipelineStep{"doomed_insert", Params().add(id), sync};
  };
  auto expect_refused = [](const Result<QueryResult>& step) {
    ASSERT_FALSE(step.ok()) << "a rolled-back statement reported success";
    EXPECT_NE(step.error().message().find("refused at commit"), std::string::npos)
        << step.error().to_string();
  };

  // One step: a plain prepared statement.
  auto ran = conn.exec_pipeline({insert(-1, true)});
  ASSERT_TRUE(ran.ok()) << ran.error().to_string();
  expect_refused((*ran)[0]);

  // Two transactions in one pipeline: the first fails at its commit (both of its steps report
  // it), the second commits.
  ran = conn.exec_pipeline({insert(1, false), insert(-2, true), insert(3, true)});
  ASSERT_TRUE(ran.ok()) << ran.error().to_string();
  ASSERT_EQ(ran->size(), 3u);
  expect_refused((*ran)[0]);
  expect_refused((*ran)[1]);
  ASSERT_TRUE((*ran)[2].ok()) << (*ran)[2].error().to_string();
  EXPECT_EQ((*ran)[2]->int64(0, 0), 3);

  EXPECT_TRUE(conn.is_ok());
  EXPECT_FALSE(conn.in_transaction());
  EXPECT_EQ(conn.backend_pid(), pid);
  auto count = conn.exec_pipeline({{"doomed_count", Params(), true}});
  ASSERT_TRUE(count.ok() && (*count)[0].ok());
  EXPECT_EQ((*count)[0]->int64(0, 0), 1);
}

// The store's appends report such a commit failure as their error, whichever statement they
// took: the first append of a stream, one after a known version, several events, a group
// commit with a command record, and an append that carries a notification.
TEST_F(PostgresStore, AnAppendWhoseCommitFailsIsReportedAsFailed) {
  ASSERT_TRUE(
      raw_->exec("CREATE FUNCTION public.refuse_at_commit() RETURNS trigger"
                 " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
          .ok());
  ASSERT_TRUE(raw_->exec("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON cqrs.events"
                         " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                         " WHEN (NEW.event_type = 'Refused') EXECUTE FUNCTION"
                         " public.refuse_at_commit()")
                  .ok());
  auto expect_refused = [](const Error& error) {
    EXPECT_NE(error.message().find("refused at commit"), std::string::npos) << error.to_string();
  };
  EventData refused;
  refused.type = "Refused";
  EventData fine;
  fine.type = "Fine";

  // A new stream, then a stream the store knows, with one event and with several.
  for (int round = 0; round < 3; ++round) {
    std::string fresh = "fresh-" + std::to_string(round);
    refused.event_id = Uuid::random();
    auto appended = store_->append(fresh, ExpectedVersion::no_stream(), std::span(&refused, 1));
    ASSERT_FALSE(appended.ok()) << "stored at version " << appended->stream_version;
    expect_refused(appended.error());
    std::this_thread::sleep_for(NoticeSender::kMinInterval);  // the next may carry a notice
  }
  fine.event_id = Uuid::random();
  ASSERT_TRUE(store_->append("known", ExpectedVersion::no_stream(), std::span(&fine, 1)).ok());
  refused.event_id = Uuid::random();
  auto after = store_->append("known", ExpectedVersion::exact(1), std::span(&refused, 1));
  ASSERT_FALSE(after.ok());
  expect_refused(after.error());
  std::vector<EventData> several(3, fine);
  for (EventData& event : several) event.event_id = Uuid::random();
  several[1].type = "Refused";
  auto many = store_->append("known", ExpectedVersion::exact(1), several);
  ASSERT_FALSE(many.ok());
  expect_refused(many.error());

  WriteRequest request;
  request.stream_id = "known";
  request.expected = ExpectedVersion::exact(1);
  refused.event_id = Uuid::random();
  request.events = {refused};
  request.command = CommandRecord{Uuid::random(), "known", R"({"ok":true})"};
  auto written = store_->write(std::span(&request, 1)).front();
  ASSERT_FALSE(written.ok());
  ASSERT_TRUE(written.error.has_value());
  expect_refused(*written.error);

  // Nothing of it was stored, and the store goes on.
  auto stored = raw_->exec("SELECT count(*) FROM cqrs.events WHERE event_type = 'Refused'");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->int64(0, 0), 0);
  auto recorded = raw_->exec("SELECT count(*) FROM cqrs.command_results");
  ASSERT_TRUE(recorded.ok());
  EXPECT_EQ(recorded->int64(0, 0), 0);
  EXPECT_EQ(*store_->stream_version("known"), 1);
  fine.event_id = Uuid::random();
  auto next = store_->append("known", ExpectedVersion::exact(1), std::span(&fine, 1));
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(next->stream_version, 2);
}

// An append that carries the notification sends it in the append's round trip. Should the
// notification fail (here: the role may not call pg_notify), the append must not: it is stored,
// once.
TEST_F(PostgresStore, AnAppendWhoseNotificationFailsIsStoredAllTheSame) {
  const std::string role = "cqrs_mute_" + Uuid::random().to_string().substr(0, 8);
  const std::string password = Uuid::random().to_string();  // nothing to escape
  const std::string quoted = quote_identifier(role);
  struct DropRole {
    Connection& sql;
    std::string quoted;
    ~DropRole() {
      // Roles are cluster-wide: remove this database's grants, then the role.
      (void)sql.exec("DROP OWNED BY " + quoted);
      (void)sql.exec("DROP ROLE " + quoted);
    }
  } drop_role{*raw_, quoted};
  for (const std::string& grant :
       {"CREATE ROLE " + quoted + " LOGIN PASSWORD '" + password + "'",
        "GRANT USAGE ON SCHEMA cqrs TO " + quoted,
        "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA cqrs TO " + quoted,
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA cqrs TO " + quoted,
        std::string("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC")}) {
    auto done = raw_->exec(grant);
    ASSERT_TRUE(done.ok()) << grant << ": " << done.error().to_string();
  }
  auto store = PostgresEventStore::open(db_->url() + " user=" + role + " password=" + password);
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  auto listener = db_->connect();
  ASSERT_NE(listener, nullptr);
  ASSERT_TRUE(listener->listen(kEventsChannel).ok());

  // The store's first append carries a notification (none went out before); later ones do
  // after the interval. A new stream, a known one, several events.
  EventData event;
  event.type = "Quiet";
  for (int version = 0; version < 3; ++version) {
    event.event_id = Uuid::random();
    auto appended = (*store)->append("mute", ExpectedVersion::exact(version), std::span(&event, 1));
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
    EXPECT_EQ(appended->stream_version, version + 1);
    std::this_thread::sleep_for(NoticeSender::kMinInterval + NoticeSender::kCarryGrace);
  }
  std::vector<EventData> several(2, event);
  for (EventData& each : several) each.event_id = Uuid::random();
  auto many = (*store)->append("mute", ExpectedVersion::exact(3), several);
  ASSERT_TRUE(many.ok()) << many.error().to_string();
  EXPECT_EQ(many->stream_version, 5);

  auto stored =
      raw_->exec("SELECT count(*), max(stream_version) FROM cqrs.events WHERE stream_id = 'mute'");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->int64(0, 0), 5);
  EXPECT_EQ(stored->int64(0, 1), 5);
  auto heard = listener->wait_notifications(50);
  ASSERT_TRUE(heard.ok());
  EXPECT_TRUE(heard->empty()) << "a notification went out: " << heard->front();
  ASSERT_TRUE(raw_->exec("GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO PUBLIC").ok());
}

// What a store learns about the server (stream heads, the server's identity) belongs to one
// session; a reconnect starts another, even when the new server process has the old one's id.
TEST_F(PostgresStore, EachReconnectStartsANewSession) {
  auto conn = Connection::open(db_->url());
  ASSERT_TRUE(conn.ok()) << conn.error().to_string();
  EXPECT_EQ((*conn)->session(), 1u);
  ASSERT_TRUE((*conn)->reconnect().ok());
  EXPECT_EQ((*conn)->session(), 2u);
  ASSERT_TRUE((*conn)->exec("SELECT 1").ok());
  EXPECT_EQ((*conn)->session(), 2u) << "a statement is not a new session";
}

// still_open() reads what arrived while the connection sat idle: a notification or a notice
// leaves it open (and the notification is still delivered); the server ending the session
// closes it, and the owner's reconnect() starts a new session.
TEST_F(PostgresStore, StillOpenTellsWhatArrivedWhileIdleFromTheServerEndingTheSession) {
  auto opened = Connection::open(db_->url());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  Connection& conn = **opened;
  ASSERT_TRUE(conn.listen("still_open_test").ok());
  ASSERT_TRUE(raw_->exec("SELECT pg_notify('still_open_test', 'hello')").ok());
  // Until the notification has reached the socket.
  pollfd descriptor{PQsocket(conn.raw()), POLLIN, 0};
  ASSERT_EQ(poll(&descriptor, 1, 5000), 1);
  EXPECT_TRUE(conn.still_open());
  EXPECT_EQ(conn.session(), 1u);
  auto heard = conn.wait_notifications(0);
  ASSERT_TRUE(heard.ok()) << heard.error().to_string();
  EXPECT_EQ(*heard, std::vector<std::string>{"hello"});

  ASSERT_TRUE(terminate(conn.backend_pid()));
  EXPECT_FALSE(conn.still_open());
  EXPECT_FALSE(conn.is_ok());
  ASSERT_TRUE(conn.reconnect().ok());
  EXPECT_TRUE(conn.still_open());
  EXPECT_EQ(conn.session(), 2u);
  auto rows = conn.exec("SELECT 1");
  EXPECT_TRUE(rows.ok()) << rows.error().to_string();
}

// Every kind of value Params holds arrives as sent, in a statement with more values than a
// Wire holds without allocating, and in one prepared statement with fewer.
TEST_F(PostgresStore, ParamsSendEveryKindOfValue) {
  const std::string borrowed = "borrowed \"text\", Grüße";
  const std::string json = R"({"k": [1, "two"]})";
  Uuid id = Uuid::random();
  Params params;
  params.add(std::numeric_limits<int64_t>::min()).add(std::numeric_limits<int64_t>::max());
  params.add(int64_t{0}).add_borrowed(borrowed).add_uuid(id.bytes()).add_null();
  params.add(std::string_view("view")).add("literal").add(std::string(100, 'x'));
  params.add_borrowed(json);
  std::string sql =
      "SELECT $1::bigint::text, $2::bigint::text, $3::bigint::text, $4::text,"
      " $5::uuid::text, ($6::text IS NULL)::text, $7::text, $8::text, $9::text,"
      " $10::jsonb::text";
  // Up to 20 values in all, each its own number: more than a Wire holds inline.
  for (int idx = 11; idx <= 20; ++idx) {
    params.add(int64_t{idx});
    sql += ", $" + std::to_string(idx) + "::int::text";
  }
  ASSERT_EQ(params.size(), 20);
  auto rows = raw_->exec(sql, params);
  ASSERT_TRUE(rows.ok()) << rows.error().to_string();
  ASSERT_EQ(rows->rows(), 1);
  std::vector<std::string> expected = {"-9223372036854775808",
                                       "9223372036854775807",
                                       "0",
                                       borrowed,
                                       id.to_string(),
                                       "true",
                                       "view",
                                       "literal",
                                       std::string(100, 'x'),
                                       R"({"k": [1, "two"]})"};
  for (int idx = 11; idx <= 20; ++idx) expected.push_back(std::to_string(idx));
  for (int column = 0; column < 20; ++column) {
    EXPECT_EQ(rows->text(0, column), expected[column]) << "value " << column + 1;
  }

  // Fewer values, prepared, some binary: the inline Wire.
  ASSERT_TRUE(raw_->prepare("params_few", "SELECT $1::uuid::text, $2::text, $3::text").ok());
  Params few;
  few.add_uuid(id.bytes()).add_borrowed(borrowed).add_null();
  auto prepared = raw_->exec_prepared("params_few", few);
  ASSERT_TRUE(prepared.ok()) << prepared.error().to_string();
  EXPECT_EQ(prepared->text(0, 0), id.to_string());
  EXPECT_EQ(prepared->text(0, 1), borrowed);
  EXPECT_TRUE(prepared->is_null(0, 2));
}

// The append statements take their arrays in binary format (BinaryArray). Each element type
// reads back as sent, NULL elements and empty arrays included, and an array of the wrong element
// type is refused by the server rather than read as something else.
TEST_F(PostgresStore, BinaryArraysReadBackAsSent) {
  auto as_text = [&](const char* sql, std::string bytes) -> std::string {
    auto rows = raw_->exec(sql, Params().add_binary(std::move(bytes)));
    EXPECT_TRUE(rows.ok()) << sql << ": " << rows.error().to_string();
    return rows.ok() && rows->rows() == 1 ? std::string(rows->text(0, 0)) : "<no row>";
  };
  BinaryArray int8s(BinaryArray::kInt8, 4);
  for (int64_t value : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min(),
                        std::numeric_limits<int64_t>::max()}) {
    int8s.add_int8(value);
  }
  EXPECT_EQ(as_text("SELECT $1::bigint[]::text", int8s.take()),
            "{0,-1,-9223372036854775808,9223372036854775807}");

  BinaryArray int4s(BinaryArray::kInt4, 3);
  int4s.add_int4(std::numeric_limits<int32_t>::min());
  int4s.add_null();
  int4s.add_int4(100);
  EXPECT_EQ(as_text("SELECT $1::int[]::text", int4s.take()), "{-2147483648,NULL,100}");

  // What an array literal would have to quote: quotes, backslashes, braces, commas, spaces,
  // the word NULL, the empty string; and text that is not ASCII.
  const std::vector<std::string> texts = {"a\"b", "c\\d", "{e}", "f,g",
                                          " h ",  "NULL", "",    "Grüße, 世界"};
  BinaryArray strings(BinaryArray::kText, texts.size());
  for (const std::string& text : texts) strings.add_text(text);
  auto elements = raw_->exec(
      "SELECT t, t IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS"
      " u(t, n) ORDER BY n",
      Params().add_binary(strings.take()));
  ASSERT_TRUE(elements.ok()) << elements.error().to_string();
  ASSERT_EQ(elements->rows(), static_cast<int>(texts.size()));
  for (size_t idx = 0; idx < texts.size(); ++idx) {
    EXPECT_EQ(elements->text(static_cast<int>(idx), 0), texts[idx]);
    EXPECT_EQ(elements->text(static_cast<int>(idx), 1), "f");
  }

  Uuid id = Uuid::time_ordered();
  BinaryArray uuids(BinaryArray::kUuid, 2);
  uuids.add_uuid(id.bytes());
  uuids.add_null();
  EXPECT_EQ(as_text("SELECT $1::uuid[]::text", uuids.take()), "{" + id.to_string() + ",NULL}");

  BinaryArray documents(BinaryArray::kJsonb, 2);
  documents.add_jsonb(R"({"b": "\"quoted\" \\ back", "a": [1, 2.50]})");
  documents.add_jsonb("\"\\u00fc\"");
  EXPECT_EQ(as_text("SELECT $1::jsonb[]::text", documents.take()),
            R"({"{\"a\": [1, 2.50], \"b\": \"\\\"quoted\\\" \\\\ back\"}","\"ü\""})");

  EXPECT_EQ(
      as_text("SELECT cardinality($1::jsonb[])::text", BinaryArray(BinaryArray::kJsonb, 0).take()),
      "0");

  BinaryArray wrong(BinaryArray::kUuid, 1);
  wrong.add_uuid(id.bytes());
  auto refused = raw_->exec("SELECT $1::int[]::text", Params().add_binary(wrong.take()));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().to_string().find("42804"), std::string::npos)  // datatype_mismatch
      << refused.error().to_string();
  BinaryArray bad_json(BinaryArray::kJsonb, 1);
  bad_json.add_jsonb("{\"a\":");
  auto malformed = raw_->exec("SELECT $1::jsonb[]::text", Params().add_binary(bad_json.take()));
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error().code(), errc::kInvalidPayload) << malformed.error().to_string();
}

// How many times `store` ran each of the append statements `names` in all (pg_prepared_statements
// counts the plans of each execution).
int64_t runs_of(PostgresEventStore& store, const std::vector<std::string>& names) {
  auto rows = store.connection().exec(
      "SELECT coalesce(sum(generic_plans + custom_plans), 0)::bigint FROM pg_prepared_statements"
      " WHERE name = ANY ($1::text[])",
      Params().add(text_array(names)));
  EXPECT_TRUE(rows.ok()) << rows.error().to_string();
  return rows.ok() ? rows->int64(0, 0) : -1;
}

// write() keeps each batch statement's payloads to 16 MiB: larger groups of requests take more
// statements (in one transaction), and every request is stored with its own result.
TEST_F(PostgresStore, WriteSplitsLargePayloadsOverSeveralStatements) {
  constexpr size_t kSixMebibytes = size_t{6} << 20;
  auto large_event = [&](char fill) {
    EventData event;
    event.type = "Large";
    event.data = "\"" + std::string(kSixMebibytes, fill) + "\"";
    return event;
  };
  std::vector<WriteRequest> requests;
  for (char fill : {'a', 'b', 'c', 'd'}) {
    requests.push_back({std::string("large-") + fill,
                        ExpectedVersion::no_stream(),
                        {large_event(fill)},
                        std::nullopt,
                        {}});
  }
  requests.push_back({"large-a", ExpectedVersion::exact(1), {large_event('e')}, std::nullopt, {}});
  const int64_t before = runs_of(*store_, {"append_batch"});
  auto written = store_->write(requests);
  // 6 MiB each: two requests per statement, and the second of stream "large-a" after its first.
  EXPECT_EQ(runs_of(*store_, {"append_batch"}), before + 3);
  ASSERT_EQ(written.size(), requests.size());
  for (size_t idx = 0; idx < written.size(); ++idx) {
    ASSERT_TRUE(written[idx].ok()) << idx << ": " << written[idx].error->to_string();
  }
  EXPECT_EQ(written[4].appended->stream_version, 2);
  auto stored = store_->read_stream("large-a", 1, 10, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ((*stored)[1].data.size(), kSixMebibytes + 2);
  EXPECT_EQ((*stored)[1].data[1], 'e');
}

// Every statement that appends events stores their values byte for byte, also those that a text
// array literal would have to escape. Each step checks that its statement ran, and no other
// append statement (a failed statement would have been followed by another that stores the
// same events).
TEST_F(PostgresStore, EveryAppendStatementStoresValuesAnArrayLiteralWouldQuote) {
  const std::vector<std::string> kAppendStatements = {
      "append",     "append_after", "append_after_many", "append_after_recorded",
      "append_one", "append_group", "append_batch",      "append_claiming"};
  // A run of two "NULL"s: run lengths above 1; type versions that differ from them.
  const std::vector<std::string> types = {
      "Type \"quoted\"", "Back\\slash", "{Braces},comma", "NULL", "NULL", "Grüße"};
  auto events_for = [&](bool shared_metadata) {
    std::vector<EventData> events;
    for (size_t idx = 0; idx < types.size(); ++idx) {
      EventData& event = events.emplace_back();
      event.type = types[idx];
      event.type_version = static_cast<int32_t>(idx) + 2;
      event.data = R"({"text":"a \"quote\", a \\ and {braces}","n":)" + std::to_string(idx) +
                   R"(,"ü":"世界"})";
      event.metadata = shared_metadata ? R"({"correlation_id":"c \"1\""})"
                                       : R"({"nth":")" + std::to_string(idx) + R"(\\"})";
    }
    return events;
  };
  auto expect_stored = [&](const std::string& stream, int64_t from,
                           const std::vector<EventData>& sent) {
    auto stored = store_->read_stream(stream, from, sent.size(), Direction::kForward);
    ASSERT_TRUE(stored.ok()) << stored.error().to_string();
    ASSERT_EQ(stored->size(), sent.size()) << stream;
    for (size_t idx = 0; idx < sent.size(); ++idx) {
      const RecordedEvent& event = (*stored)[idx];
      EXPECT_EQ(event.stream_id, stream);
      EXPECT_EQ(event.event_id, sent[idx].event_id);
      EXPECT_EQ(event.type, sent[idx].type);
      EXPECT_EQ(event.type_version, sent[idx].type_version);
      EXPECT_EQ(nlohmann::json::parse(event.data), nlohmann::json::parse(sent[idx].data));
      EXPECT_EQ(nlohmann::json::parse(event.metadata), nlohmann::json::parse(sent[idx].metadata));
    }
  };
  // Runs `step` and expects that `store` ran `statement` once and no other append statement.
  auto through = [&](PostgresEventStore& store, const std::string& statement, auto&& step) {
    SCOPED_TRACE(statement);
    const int64_t before = runs_of(store, {statement});
    const int64_t all_before = runs_of(store, kAppendStatements);
    step();
    EXPECT_EQ(runs_of(store, {statement}), before + 1);
    EXPECT_EQ(runs_of(store, kAppendStatements), all_before + 1);
  };
  const std::string stream = "stream \"{a,b}\" \\ ü";
  for (bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "shared metadata" : "metadata of each event");
    const std::string name = stream + (shared ? " 1" : " 2");
    std::vector<EventData> first = events_for(shared), second = events_for(shared);
    through(*store_, "append",
            [&] { ASSERT_TRUE(store_->append(name, ExpectedVersion::any(), first).ok()); });
    through(*store_, "append_after_many",
            [&] { ASSERT_TRUE(store_->append(name, ExpectedVersion::exact(6), second).ok()); });
    WriteRequest recorded{name,
                          ExpectedVersion::exact(12),
                          events_for(shared),
                          CommandRecord{Uuid::time_ordered(), name, R"({"status":"ok"})"},
                          {}};
    through(*store_, "append_after_recorded", [&] {
      auto written = store_->write(std::span(&recorded, 1));
      ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
    });
    std::vector<WriteRequest> pair = {
        {name, ExpectedVersion::exact(18), events_for(shared), std::nullopt, {}},
        {name + " other",
         ExpectedVersion::no_stream(),
         events_for(shared),
         CommandRecord{Uuid::time_ordered(), name, R"({"status":"ok"})"},
         {}}};
    through(*store_, "append_batch", [&] {
      auto both = store_->write(pair);
      ASSERT_TRUE(both[0].ok()) << both[0].error->to_string();
      ASSERT_TRUE(both[1].ok()) << both[1].error->to_string();
    });
    WriteRequest claiming{name + " claiming",
                          ExpectedVersion::no_stream(),
                          events_for(shared),
                          std::nullopt,
                          {UniqueClaim{"scope \"q\"", name, false}}};
    through(*store_, "append_claiming", [&] {
      auto written = store_->write(std::span(&claiming, 1));
      ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
    });
    expect_stored(name, 1, first);
    expect_stored(name, 7, second);
    expect_stored(name, 13, recorded.events);
    expect_stored(name, 19, pair[0].events);
    expect_stored(name + " other", 1, pair[1].events);
    expect_stored(name + " claiming", 1, claiming.events);
  }

  // A group: appends of three stores that wait while both group slots are taken. However the
  // freed slots share them out, at least two go in one group statement, which stores them in one
  // transaction. (Not counted through pg_prepared_statements: a store whose connection() was
  // handed out leaves the groups.)
  constexpr int kWriters = 3;
  std::vector<std::unique_ptr<PostgresEventStore>> stores;
  std::vector<std::vector<EventData>> sent;
  for (int idx = 0; idx < kWriters; ++idx) {
    auto store = PostgresEventStore::open(db_->url(), patient());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    stores.push_back(std::move(store).value());
    sent.push_back(events_for(idx % 2 == 0));
  }
  std::vector<Result<AppendResult>> results(kWriters, Error::internal(errc::kStoreError, "unset"));
  {
    BlockedGroups blocked(*db_, *stores.front());
    std::vector<std::thread> writers;
    for (int idx = 0; idx < kWriters; ++idx) {
      writers.emplace_back([&, idx] {
        results[idx] = stores[idx]->append(stream + " g" + std::to_string(idx),
                                           ExpectedVersion::no_stream(), sent[idx]);
      });
    }
    blocked.wait_for_waiting(kWriters);
    blocked.release();
    for (auto& writer : writers) writer.join();
  }
  auto transactions = raw_->exec(
      "SELECT count(DISTINCT transaction_id) FROM cqrs.events WHERE starts_with(stream_id, $1)",
      Params().add(stream + " g"));
  ASSERT_TRUE(transactions.ok()) << transactions.error().to_string();
  EXPECT_LE(transactions->int64(0, 0), kWriters - 1);
  for (int idx = 0; idx < kWriters; ++idx) {
    ASSERT_TRUE(results[idx].ok()) << results[idx].error().to_string();
    expect_stored(stream + " g" + std::to_string(idx), 1, sent[idx]);
  }
}

TEST(ConnectionOptions, WithOptionSetsOrKeepsAKeyword) {
  auto added = with_option("postgresql://u@127.0.0.1:5432/db", "connect_timeout", "5", false);
  ASSERT_TRUE(added.ok());
  EXPECT_NE(added->find("connect_timeout='5'"), std::string::npos) << *added;
  EXPECT_NE(added->find("dbname='db'"), std::string::npos) << *added;
  auto kept = with_option("host=h connect_timeout=2", "connect_timeout", "5", false);
  ASSERT_TRUE(kept.ok());
  EXPECT_NE(kept->find("connect_timeout='2'"), std::string::npos) << *kept;
  EXPECT_EQ(kept->find("'5'"), std::string::npos) << *kept;
  auto replaced = with_option("host=h dbname=a", "dbname", "b", true);
  ASSERT_TRUE(replaced.ok());
  EXPECT_NE(replaced->find("dbname='b'"), std::string::npos) << *replaced;
  EXPECT_EQ(replaced->find("dbname='a'"), std::string::npos) << *replaced;
  EXPECT_FALSE(with_option("host='unterminated", "dbname", "b", true).ok());
}

// A group commit announces each type once, sorted, whatever request it came from; a daemon
// wakes only the handlers of those types.
TEST_F(PostgresStore, GroupCommitNotifiesTheTypesOfEveryRequest) {
  ASSERT_TRUE(raw_->listen(kEventsChannel).ok());
  std::vector<WriteRequest> requests(2);
  for (size_t idx = 0; idx < requests.size(); ++idx) {
    requests[idx].stream_id = "g" + std::to_string(idx);
    requests[idx].expected = ExpectedVersion::no_stream();
    for (const char* type : {"Zeta", idx == 0 ? "Alpha" : "Zeta"}) {
      EventData event;
      event.type = type;
      event.data = "{}";
      requests[idx].events.push_back(event);
    }
  }
  auto results = store_->write(requests);
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  std::vector<std::string> payloads = notices_until(*raw_, 4);
  ASSERT_EQ(payloads.size(), 1u);
  EXPECT_EQ(payloads[0], R"(4 ["Alpha","Zeta"])");
}

TEST(AppendNotice, TypesAreReadBackAndAnUnreadablePayloadStandsForAnyType) {
  EXPECT_EQ(notice_types(R"(7 ["B","A","B"])"), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(notice_types(R"(7 [])"), std::vector<std::string>{});
  EXPECT_EQ(notice_types("7"), std::nullopt);            // an older daemon's payload
  EXPECT_EQ(notice_types("7 {\"x\":1}"), std::nullopt);  // not a list
  EXPECT_EQ(notice_types(R"(7 ["A",1])"), std::nullopt);
  EXPECT_EQ(notice_types_suffix({"B", "A", "B"}), R"( ["A","B"])");
  // Too many types for a notification: the payload names none, so every handler wakes.
  EXPECT_EQ(notice_types_suffix(std::vector<std::string>(1, std::string(5000, 'x'))), "");
  EXPECT_EQ(notice_types_suffix(std::vector<std::string>(1000, std::string(4, 'x'))),
            R"( ["xxxx"])");
  std::vector<std::string> many;
  for (int idx = 0; idx < 1000; ++idx) many.push_back("Type" + std::to_string(idx));
  EXPECT_EQ(notice_types_suffix(many), "");
}

// Types that JSON must escape, and non-ASCII ones, come back as they were appended.
TEST(AppendNotice, TypesThatNeedEscapesComeBackAsTheyWere) {
  std::vector<std::string> types{"Quote\"d",
                                 "Back\\slash",
                                 "Tab\there",
                                 std::string("\x01\x1F"),
                                 "Gr\xC3\xBC\xC3\x9F"
                                 "e \xF0\x9F\x8E\x81",
                                 "/slash",
                                 "Plain"};
  std::string suffix = notice_types_suffix(types);
  EXPECT_EQ(suffix.find('\t'), std::string::npos) << "control characters are escaped";
  std::sort(types.begin(), types.end());
  EXPECT_EQ(notice_types("12" + suffix), types);
  EXPECT_EQ(notice_types_suffix({"A\"B"}), R"( ["A\"B"])");
  EXPECT_EQ(notice_types_suffix({std::string("\n")}), R"( ["\u000a"])");
}

TEST(AppendNotice, AHandlerOfNoTypesHandlesEveryType) {
  EXPECT_TRUE(handles_any({}, {"A"}));
  EXPECT_TRUE(handles_any({}, {}));
  EXPECT_TRUE(handles_any({"A", "C"}, {"B", "C"}));
  EXPECT_FALSE(handles_any({"A", "C"}, {"B", "D"}));
  EXPECT_FALSE(handles_any({"A"}, {}));
}

// With types, only events of those types count as waiting.
TEST_F(PostgresStore, EventsAfterExistCanBeLimitedToTypes) {
  append_one("s");
  std::vector<std::string> other{"Other"};
  std::vector<std::string> mine{"Happened"};
  EXPECT_TRUE(*store_->events_after_exist(Position{}));
  EXPECT_TRUE(*store_->events_after_exist(Position{}, mine));
  EXPECT_FALSE(*store_->events_after_exist(Position{}, other));
}

TEST_F(PostgresStore, CommitWithCheckpointCommitsWorkAndCheckpointTogether) {
  ASSERT_TRUE(raw_->exec("CREATE TABLE read_model (id int PRIMARY KEY)").ok());
  auto done = store_->commit_with_checkpoint("proj", Position{5, 3}, [](Connection& conn) {
    auto inserted = conn.exec("INSERT INTO read_model VALUES ($1)", Params().add(int64_t{1}));
    if (!inserted) return Result<void>(inserted.error());
    return Result<void>();
  });
  ASSERT_TRUE(done.ok()) << done.error().to_string();
  EXPECT_EQ(raw_->exec("SELECT count(*) FROM read_model")->int64(0, 0), 1);
  EXPECT_EQ(**store_->load_checkpoint("proj"), (Position{5, 3}));
}

TEST_F(PostgresStore, CommitWithCheckpointRollsBackBothWhenTheWorkFails) {
  ASSERT_TRUE(raw_->exec("CREATE TABLE read_model (id int PRIMARY KEY)").ok());
  ASSERT_TRUE(store_->save_checkpoint("proj", Position{1, 1}).ok());
  auto done = store_->commit_with_checkpoint("proj", Position{9, 9}, [](Connection& conn) {
    (void)conn.exec("INSERT INTO read_model VALUES (1)");
    auto duplicate = conn.exec("INSERT INTO read_model VALUES (1)");  // fails
    if (!duplicate) return Result<void>(duplicate.error());
    return Result<void>();
  });
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(raw_->exec("SELECT count(*) FROM read_model")->int64(0, 0), 0);
  EXPECT_EQ(**store_->load_checkpoint("proj"), (Position{1, 1}));
  // The store's connection is usable after the rollback.
  append_one("s");
}

// An append that began before another writer committed the stream's next version: `other` holds
// the stream's lock with version 1 appended but not committed; the store's append starts, waits
// for the lock, and is let go by the commit. However the append is written, it must then decide
// on the committed head (version 1), not on what it could see when it began. Returns the
// store's answer.
Result<AppendResult> append_racing_a_commit(testing::TestDatabase& db, PostgresEventStore& store,
                                            Connection& other, ExpectedVersion expected) {
  EXPECT_TRUE(other.exec("BEGIN").ok());
  auto first = other.exec(
      "SELECT status FROM cqrs.append_to_stream('s', -1, ARRAY[gen_random_uuid()],"
      " ARRAY['Happened'], ARRAY[1], ARRAY['{\"n\":1}'::jsonb], ARRAY['{}'::jsonb])");
  EXPECT_TRUE(first.ok()) << first.error().to_string();
  EventData event;
  event.type = "Happened";
  event.data = R"({"n":2})";
  Result<AppendResult> answer = Error::internal("not_answered", "the append did not return");
  std::thread appender([&] { answer = store.append("s", expected, std::span(&event, 1)); });
  // Wait until the store's statement is waiting for the stream's lock (its snapshot is taken).
  auto watcher = db.connect();
  bool waiting = false;
  for (int poll = 0; poll < 500 && !waiting; ++poll) {
    auto rows = watcher->exec(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND wait_event = 'advisory' AND pid <> pg_backend_pid()");
    waiting = rows.ok() && rows->int64(0, 0) > 0;
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(waiting) << "the store's append never waited for the stream's lock";
  EXPECT_TRUE(other.exec("COMMIT").ok());
  appender.join();
  return answer;
}

TEST_F(PostgresStore, AnyVersionAppendThatLostARaceIsStoredAfterTheWinner) {
  auto appended = append_racing_a_commit(*db_, *store_, *raw_, ExpectedVersion::any());
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 2);
  auto stored = store_->read_stream("s", 1, 10, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ(stored->at(0).data, R"({"n": 1})");
  EXPECT_EQ(stored->at(1).data, R"({"n": 2})");
}

TEST_F(PostgresStore, ExactVersionAppendThatLostARaceNamesTheActualVersion) {
  auto appended = append_racing_a_commit(*db_, *store_, *raw_, ExpectedVersion::exact(0));
  ASSERT_FALSE(appended.ok());
  EXPECT_EQ(appended.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(appended.error().actual_version(), std::optional<int64_t>(1));
  EXPECT_EQ(*store_->stream_version("s"), 1);
}

TEST_F(PostgresStore, NoStreamAppendThatLostARaceSaysTheStreamExists) {
  auto appended = append_racing_a_commit(*db_, *store_, *raw_, ExpectedVersion::no_stream());
  ASSERT_FALSE(appended.ok());
  EXPECT_EQ(appended.error().code(), errc::kStreamExists);
  EXPECT_EQ(*store_->stream_version("s"), 1);
}

// The store's statements assume READ COMMITTED (a statement that waited for a stream's lock reads
// the head committed meanwhile). On a database whose default isolation is stricter, concurrent
// appends by stores of one process (so also in groups) must neither fail with serialization
// failures nor tell an `any` append of a version it should have gone after, and the store's
// sessions must keep that after a reconnect.
TEST_F(PostgresStore, AppendsSucceedOnADatabaseWhoseDefaultIsolationIsStricter) {
  constexpr int kThreads = 8;
  constexpr int kAppendsPerPhase = 40;
  for (const std::string level : {"serializable", "repeatable read"}) {
    SCOPED_TRACE(level);
    ASSERT_TRUE(set_for_new_sessions("default_transaction_isolation", "'" + level + "'"));
    std::vector<std::unique_ptr<PostgresEventStore>> stores;
    for (int idx = 0; idx < kThreads; ++idx) {
      auto opened = PostgresEventStore::open(db_->url());  // a session with the new default
      ASSERT_TRUE(opened.ok()) << opened.error().to_string();
      stores.push_back(std::move(opened).value());
    }
    std::mutex mutex;
    std::vector<std::string> failures;
    int64_t events_appended = 0;
    auto phase = [&](int phase_no) {
      std::vector<std::thread> threads;
      for (int idx = 0; idx < kThreads; ++idx) {
        threads.emplace_back([&, idx] {
          PostgresEventStore& store = *stores[idx];
          for (int attempt = 0; attempt < 3 && !store.stream_version("probe").ok(); ++attempt) {
            // The first call after the server ended the session fails; the next reconnects.
          }
          for (int n = 0; n < kAppendsPerPhase; ++n) {
            // Half to streams of its own, half to three streams all threads share.
            std::string stream = n % 2 == 0
                                     ? level + "-own-" + std::to_string(idx) + "-" +
                                           std::to_string(phase_no) + "-" + std::to_string(n / 8)
                                     : level + "-shared-" + std::to_string(n % 3);
            std::vector<EventData> events(static_cast<size_t>(1 + n % 3));
            for (EventData& event : events) {
              event.type = "Happened";
              event.data = R"({"n": 1})";
            }
            auto appended = store.append(stream, ExpectedVersion::any(), events);
            std::lock_guard lock(mutex);
            if (appended) {
              events_appended += std::ssize(events);
            } else {
              failures.push_back(appended.error().to_string());
            }
          }
        });
      }
      for (std::thread& thread : threads) thread.join();
    };
    phase(1);
    // Every session of the stores ends; each reconnects on its next call.
    ASSERT_TRUE(raw_->exec("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                           " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                           " AND backend_type = 'client backend'")
                    .ok());
    phase(2);
    EXPECT_TRUE(failures.empty()) << failures.size() << " appends failed, the first: "
                                  << (failures.empty() ? "" : failures.front());
    auto stored =
        raw_->exec("SELECT count(*) FROM cqrs.events WHERE stream_id LIKE '" + level + "-%'");
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ(stored->int64(0, 0), events_appended);
  }
}

// Events are JSON, which is UTF-8. A database (or an environment, PGCLIENTENCODING) that sets
// another client encoding must not make the server convert them as if they were in it: they
// would be stored garbled for every other reader, and characters that encoding lacks could not
// be read back.
TEST_F(PostgresStore, SessionsSpeakUtf8WhateverClientEncodingTheDatabaseSets) {
  ASSERT_TRUE(set_for_new_sessions("client_encoding", "'LATIN1'"));
  auto opened = PostgresEventStore::open(db_->url());  // a session with the new default
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  PostgresEventStore& store = **opened;
  const std::string name = "caf\u00e9 \u20ac \u65e5";  // é (in LATIN1), € and 日 (not)
  EventData event;
  event.type = "Named";
  event.data = R"({"name": ")" + name + R"("})";
  auto appended = store.append("utf8", ExpectedVersion::no_stream(), std::span(&event, 1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  auto stored = raw_->exec("SELECT data->>'name' FROM cqrs.events WHERE stream_id = 'utf8'");
  ASSERT_TRUE(stored.ok()) << stored.error().to_string();
  ASSERT_EQ(stored->rows(), 1);
  EXPECT_EQ(stored->text(0, 0), name);
  auto read = store.read_stream("utf8", 1, 10, Direction::kForward);
  ASSERT_TRUE(read.ok()) << read.error().to_string();
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ(read->front().data, event.data);
  auto other = Connection::open(db_->url());  // any connection of the library, not only stores
  ASSERT_TRUE(other.ok()) << other.error().to_string();
  auto encoding = (*other)->exec("SHOW client_encoding");
  ASSERT_TRUE(encoding.ok());
  EXPECT_EQ(encoding->text(0, 0), "UTF8");
}

// The library's sessions are named after the program in pg_stat_activity and the server's log,
// unless the connection string names them.
TEST_F(PostgresStore, SessionsAreNamedAfterTheProgramUnlessTheConnectionStringNamesThem) {
  auto name_of = [](Connection& conn) {
    auto shown = conn.exec("SHOW application_name");
    return shown.ok() && shown->rows() == 1 ? std::string(shown->text(0, 0)) : "(unknown)";
  };
  const char* from_environment = std::getenv("PGAPPNAME");  // names them as a string would
  EXPECT_EQ(name_of(*raw_),
            from_environment != nullptr ? from_environment : program_invocation_short_name);
  auto named = with_option(db_->url(), "application_name", "projector-7", true);
  ASSERT_TRUE(named.ok());
  auto opened = Connection::open(*named);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  EXPECT_EQ(name_of(**opened), "projector-7");
}

// A server that accepts no writes (a hot standby; here a database with
// default_transaction_read_only) is refused when connecting, with libpq's reason, rather than
// at the first append: of several hosts in a connection string, the store takes the primary.
TEST_F(PostgresStore, AStoreDoesNotOpenOnAServerThatAcceptsNoWrites) {
  ASSERT_TRUE(set_for_new_sessions("default_transaction_read_only", "on"));
  auto refused = PostgresEventStore::open(db_->url());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kStoreUnavailable);
  EXPECT_NE(refused.error().message().find("read-only"), std::string::npos)
      << refused.error().message();
  ASSERT_TRUE(set_for_new_sessions("default_transaction_read_only", ""));
  auto opened = PostgresEventStore::open(db_->url());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
}

// A session whose server stops accepting writes (default_transaction_read_only turned on, a
// primary turned standby) reports store_unavailable with the reason, and the next call
// reconnects: to a server that accepts writes, if there is one by then.
TEST_F(PostgresStore, AWriteRefusedBecauseTheServerAcceptsNoneReconnects) {
  append_one("s");
  auto turned = store_->commit_with_checkpoint("proj", Position{1, 1}, [](Connection& conn) {
    auto set = conn.exec("SET SESSION default_transaction_read_only = on");
    if (!set) return Result<void>(set.error());
    return Result<void>();
  });
  ASSERT_TRUE(turned.ok()) << turned.error().to_string();
  EventData event;
  event.type = "Happened";
  event.data = "{}";
  auto refused = store_->append("s", ExpectedVersion::any(), std::span(&event, 1));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kStoreUnavailable);
  EXPECT_NE(refused.error().message().find("accepts no writes"), std::string::npos)
      << refused.error().message();
  auto appended = store_->append("s", ExpectedVersion::any(), std::span(&event, 1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 2);
}

// A one-event append after a version the store has seen skips the head lookup; the primary key
// must still catch every case where that version is no longer the head.
class KnownVersions : public PostgresStore {
 protected:
  Result<AppendResult> append_with(PostgresEventStore& store, ExpectedVersion expected, int n) {
    EventData event;
    event.type = "Happened";
    event.data = R"({"n":)" + std::to_string(n) + "}";
    return store.append("s", expected, std::span(&event, 1));
  }
  // A group commit request for "s" of `count` events, with a command record when `recorded`.
  static WriteRequest request_for(ExpectedVersion expected, size_t count, bool recorded) {
    WriteRequest request;
    request.stream_id = "s";
    request.expected = expected;
    request.events.resize(count);
    for (EventData& event : request.events) {
      event.type = "Happened";
      event.data = "{}";
    }
    if (recorded) request.command = CommandRecord{Uuid::time_ordered(), "s", R"({"status":"ok"})"};
    return request;
  }
  std::unique_ptr<PostgresEventStore> other() {
    auto store = PostgresEventStore::open(db_->url());
    EXPECT_TRUE(store.ok());
    return store.ok() ? std::move(store).value() : nullptr;
  }
  // The stored versions of "s", in order.
  std::vector<int64_t> versions() {
    std::vector<int64_t> out;
    auto stored = raw_->exec(
        "SELECT stream_version FROM cqrs.events WHERE stream_id = 's'"
        " ORDER BY stream_version");
    EXPECT_TRUE(stored.ok());
    for (int row = 0; stored.ok() && row < stored->rows(); ++row) {
      out.push_back(stored->int64(row, 0));
    }
    return out;
  }
};

TEST_F(KnownVersions, ExactAppendAfterAVersionThatIsNoLongerTheHeadNamesTheHead) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  auto second = other();
  ASSERT_TRUE(append_with(*second, ExpectedVersion::exact(1), 2).ok());
  ASSERT_TRUE(append_with(*second, ExpectedVersion::exact(2), 3).ok());
  auto stale = append_with(*store_, ExpectedVersion::exact(1), 4);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(stale.error().actual_version(), std::optional<int64_t>(3));
  auto fresh = append_with(*store_, ExpectedVersion::exact(3), 5);
  ASSERT_TRUE(fresh.ok()) << fresh.error().to_string();
  EXPECT_EQ(fresh->stream_version, 4);
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3, 4}));
}

// A snapshot's version is what its writer said: loading one must not make the store take that
// version as stored, or an append "after" it would leave a gap in the stream.
TEST_F(KnownVersions, ASnapshotAheadOfTheStreamIsNotTakenAsItsHead) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  ASSERT_TRUE(store_->save_snapshot(Snapshot{"s", 10, "State", 1, "{}"}).ok());
  auto fresh = other();
  StreamLoad load{"s", 0, true};
  auto loaded = fresh->load_streams(std::span(&load, 1));
  ASSERT_FALSE(loaded[0].error);
  ASSERT_TRUE(loaded[0].snapshot.has_value());
  auto after = append_with(*fresh, ExpectedVersion::exact(10), 2);
  ASSERT_FALSE(after.ok()) << "appended at version " << after->stream_version;
  EXPECT_EQ(after.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(after.error().actual_version(), std::optional<int64_t>(1));
  auto any = append_with(*fresh, ExpectedVersion::any(), 3);
  ASSERT_TRUE(any.ok()) << any.error().to_string();
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
}

// An append retried after its outcome was lost carries event ids already stored. A store that
// has not seen the stream answers as one that has: the expectation that no longer holds, not
// duplicate_event.
TEST_F(KnownVersions, ARetriedFirstAppendNamesTheStreamNotTheEventId) {
  EventData first;
  first.type = "Happened";
  first.data = "{}";
  ASSERT_TRUE(store_->append("s", ExpectedVersion::no_stream(), std::span(&first, 1)).ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::exact(1), 2).ok());
  auto fresh = other();
  ASSERT_NE(fresh, nullptr);
  for (PostgresEventStore* store : {store_.get(), fresh.get()}) {
    SCOPED_TRACE(store == store_.get() ? "the writer's store" : "a store new to the stream");
    auto no_stream = store->append("s", ExpectedVersion::no_stream(), std::span(&first, 1));
    ASSERT_FALSE(no_stream.ok());
    EXPECT_EQ(no_stream.error().code(), errc::kStreamExists) << no_stream.error().to_string();
    auto exact = store->append("s", ExpectedVersion::exact(0), std::span(&first, 1));
    ASSERT_FALSE(exact.ok());
    EXPECT_EQ(exact.error().code(), errc::kWrongExpectedVersion) << exact.error().to_string();
    auto any = store->append("s", ExpectedVersion::any(), std::span(&first, 1));
    ASSERT_FALSE(any.ok());
    EXPECT_EQ(any.error().code(), errc::kDuplicateEvent) << any.error().to_string();
  }
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
}

TEST_F(KnownVersions, AnyAppendAfterAStaleVersionLandsAfterTheHead) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::any(), 1).ok());
  auto second = other();
  ASSERT_TRUE(append_with(*second, ExpectedVersion::any(), 2).ok());
  ASSERT_TRUE(append_with(*second, ExpectedVersion::any(), 3).ok());
  for (ExpectedVersion expected : {ExpectedVersion::any(), ExpectedVersion::stream_exists()}) {
    auto appended = append_with(*store_, expected, 4);
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  }
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

TEST_F(KnownVersions, ExactAppendBeyondTheHeadIsRefusedAfterAKnownVersion) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::any(), 1).ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::any(), 2).ok());
  auto ahead = append_with(*store_, ExpectedVersion::exact(5), 3);
  ASSERT_FALSE(ahead.ok());
  EXPECT_EQ(ahead.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(ahead.error().actual_version(), std::optional<int64_t>(2));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
}

// The one-event statement after a known version returns only the position and the transaction:
// the version it reports is the known one plus one, and all three are the stored event's.
TEST_F(KnownVersions, OneEventAfterAKnownVersionReportsTheStoredVersionPositionAndCommit) {
  // Taken first: a store whose connection was handed out appends alone, on that connection.
  Connection& connection = store_->connection();
  auto runs_of_append_after = [&] {
    auto rows = connection.exec(
        "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements"
        " WHERE name = 'append_after'");
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    return rows.ok() ? rows->int64(0, 0) : -1;
  };
  auto first = append_with(*store_, ExpectedVersion::no_stream(), 1);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  const int64_t runs_before = runs_of_append_after();
  for (int n = 2; n <= 4; ++n) {
    auto appended = n % 2 == 0 ? append_with(*store_, ExpectedVersion::exact(n - 1), n)
                               : append_with(*store_, ExpectedVersion::any(), n);
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
    EXPECT_EQ(runs_of_append_after(), runs_before + n - 1) << "not the known-version statement";
    EXPECT_EQ(appended->stream_version, n);
    ASSERT_EQ(appended->global_positions.size(), 1u);
    auto stored = raw_->exec(
        "SELECT stream_version, global_position, transaction_id::text FROM cqrs.events"
        " WHERE stream_id = 's' AND data->>'n' = $1",
        Params().add(std::to_string(n)));
    ASSERT_TRUE(stored.ok()) << stored.error().to_string();
    ASSERT_EQ(stored->rows(), 1);
    EXPECT_EQ(stored->int64(0, 0), n);
    EXPECT_EQ(stored->int64(0, 1), appended->global_positions[0]);
    EXPECT_EQ(std::to_string(appended->commit_id), stored->text(0, 2));
  }
}

TEST_F(KnownVersions, SeveralEventsAfterAKnownVersionTakeTheNextVersionsInOrder) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  std::vector<EventData> three(3);
  for (size_t idx = 0; idx < three.size(); ++idx) {
    three[idx].type = "Happened";
    three[idx].data = R"({"k":)" + std::to_string(idx) + "}";
  }
  auto appended = store_->append("s", ExpectedVersion::exact(1), three);
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->stream_version, 4);
  ASSERT_EQ(appended->global_positions.size(), 3u);
  EXPECT_LT(appended->global_positions[0], appended->global_positions[1]);
  EXPECT_LT(appended->global_positions[1], appended->global_positions[2]);
  auto stored = store_->read_stream("s", 2, 10, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 3u);
  for (size_t idx = 0; idx < 3; ++idx) {
    EXPECT_EQ(stored->at(idx).data, R"({"k": )" + std::to_string(idx) + "}");
    EXPECT_EQ(stored->at(idx).global_position, appended->global_positions[idx]);
    EXPECT_EQ(stored->at(idx).commit_id, appended->commit_id) << "the $all position's commit";
  }
}

TEST_F(KnownVersions, SeveralEventsAfterAStaleVersionAreRefusedWhole) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  auto second = other();
  ASSERT_TRUE(append_with(*second, ExpectedVersion::exact(1), 2).ok());
  std::vector<EventData> three(3);
  for (EventData& event : three) {
    event.type = "Happened";
    event.data = "{}";
  }
  auto stale = store_->append("s", ExpectedVersion::exact(1), three);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(stale.error().actual_version(), std::optional<int64_t>(2));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
  for (EventData& event : three) event.event_id = Uuid::time_ordered();
  auto any = store_->append("s", ExpectedVersion::any(), three);
  ASSERT_TRUE(any.ok()) << any.error().to_string();
  EXPECT_EQ(any->stream_version, 5);
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

// A group commit of one request after a known version: its events and its command record go in
// one statement, and the record carries the position of the request's last event, as the group
// statement records it.
TEST_F(KnownVersions, AWriteOfOneRequestAfterAKnownVersionRecordsItsCommand) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  WriteRequest request = request_for(ExpectedVersion::exact(1), 2, true);
  auto written = store_->write(std::span(&request, 1));
  ASSERT_EQ(written.size(), 1u);
  ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
  EXPECT_EQ(written[0].appended->stream_version, 3);
  ASSERT_EQ(written[0].appended->global_positions.size(), 2u);
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3}));
  auto recorded = store_->find_command(request.command->command_id);
  ASSERT_TRUE(recorded.ok() && recorded->has_value());
  EXPECT_EQ(nlohmann::json::parse((*recorded)->result),
            nlohmann::json({{"status", "ok"},
                            {"position", written[0].appended->last_position().to_string()}}));

  // The same command id again, after the now known version 3: refused, with the first result.
  for (EventData& event : request.events) event.event_id = Uuid::time_ordered();
  request.expected = ExpectedVersion::exact(3);
  auto again = store_->write(std::span(&request, 1));
  ASSERT_EQ(again.size(), 1u);
  ASSERT_FALSE(again[0].ok());
  EXPECT_EQ(again[0].error->code(), errc::kDuplicateCommand);
  EXPECT_EQ(again[0].existing_result, std::optional<std::string>((*recorded)->result));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3}));
}

// The version known from a group commit is stale once another store appended: the write is
// refused with the head, and nothing of it (events, command record) is stored.
TEST_F(KnownVersions, AWriteOfOneRequestAfterAStaleVersionNamesTheHead) {
  WriteRequest request = request_for(ExpectedVersion::no_stream(), 1, true);
  ASSERT_TRUE(store_->write(std::span(&request, 1))[0].ok());
  auto second = other();
  ASSERT_TRUE(append_with(*second, ExpectedVersion::exact(1), 2).ok());
  request.expected = ExpectedVersion::exact(1);
  request.events[0].event_id = Uuid::time_ordered();
  request.command = CommandRecord{Uuid::time_ordered(), "s", R"({"status":"ok"})"};
  auto stale = store_->write(std::span(&request, 1));
  ASSERT_EQ(stale.size(), 1u);
  ASSERT_FALSE(stale[0].ok());
  EXPECT_EQ(stale[0].error->code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(stale[0].error->actual_version(), std::optional<int64_t>(2));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
  auto recorded = store_->find_command(request.command->command_id);
  ASSERT_TRUE(recorded.ok());
  EXPECT_FALSE(recorded->has_value());
}

// An append inside the caller's own transaction may roll back: its version is not known then.
TEST_F(KnownVersions, AVersionWrittenInARolledBackTransactionIsNotKnown) {
  ASSERT_TRUE(store_->connection().exec("BEGIN").ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::exact(1), 2).ok());
  ASSERT_TRUE(store_->connection().exec("ROLLBACK").ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 3).ok());
  auto appended = append_with(*store_, ExpectedVersion::exact(2), 4);
  ASSERT_FALSE(appended.ok()) << "version 3 was written after a rolled-back version 2";
  EXPECT_EQ(appended.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(appended.error().actual_version(), std::optional<int64_t>(1));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1}));
}

// A group of one request without a command record takes the same way; a duplicate event id
// there is named as such by the group statement.
TEST_F(KnownVersions, AWriteOfOneRequestWithoutACommandAfterAKnownVersion) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  WriteRequest request = request_for(ExpectedVersion::exact(1), 3, false);
  auto written = store_->write(std::span(&request, 1));
  ASSERT_EQ(written.size(), 1u);
  ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
  EXPECT_EQ(written[0].appended->stream_version, 4);
  const std::vector<int64_t>& positions = written[0].appended->global_positions;
  ASSERT_EQ(positions.size(), 3u);
  EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end()));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3, 4}));
  auto stored = store_->read_stream("s", 2, 10, Direction::kForward);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 3u);
  EXPECT_EQ(stored->back().position(), written[0].appended->last_position());

  request.expected = ExpectedVersion::exact(4);  // the same event ids again
  auto again = store_->write(std::span(&request, 1));
  ASSERT_EQ(again.size(), 1u);
  ASSERT_FALSE(again[0].ok());
  EXPECT_EQ(again[0].error->code(), errc::kDuplicateEvent) << again[0].error->to_string();
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3, 4}));
}

// An append that the known versions say must fail goes to the functions at once: it takes no
// position from the sequence, as a failed INSERT would.
TEST_F(KnownVersions, AnAppendKnownToFailTakesNoPosition) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::exact(1), 2).ok());
  auto before = append_with(*store_, ExpectedVersion::exact(2), 3);
  ASSERT_TRUE(before.ok());
  auto behind = append_with(*store_, ExpectedVersion::exact(1), 4);
  ASSERT_FALSE(behind.ok());
  EXPECT_EQ(behind.error().actual_version(), std::optional<int64_t>(3));
  auto exists = append_with(*store_, ExpectedVersion::no_stream(), 5);
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(exists.error().code(), errc::kStreamExists);
  auto after = append_with(*store_, ExpectedVersion::exact(3), 6);
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_EQ(after->global_positions.front(), before->global_positions.front() + 1);
}

// Inside a transaction the caller opened on the store's connection, a failed statement would
// abort the caller's transaction: appends there go to the functions, which answer a stale version
// without raising, so the caller's transaction stays usable.
TEST_F(KnownVersions, AStaleAppendInsideTheCallersTransactionLeavesItUsable) {
  ASSERT_TRUE(append_with(*store_, ExpectedVersion::no_stream(), 1).ok());
  auto second = other();
  ASSERT_TRUE(append_with(*second, ExpectedVersion::exact(1), 2).ok());
  ASSERT_TRUE(store_->connection().exec("BEGIN").ok());
  auto stale = append_with(*store_, ExpectedVersion::exact(1), 3);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), errc::kWrongExpectedVersion) << stale.error().to_string();
  WriteRequest request = request_for(ExpectedVersion::exact(1), 1, true);
  auto written = store_->write(std::span(&request, 1));
  ASSERT_EQ(written.size(), 1u);
  ASSERT_FALSE(written[0].ok());
  EXPECT_EQ(written[0].error->code(), errc::kWrongExpectedVersion) << written[0].error->to_string();
  auto fresh = append_with(*store_, ExpectedVersion::exact(2), 4);
  ASSERT_TRUE(fresh.ok()) << fresh.error().to_string();
  ASSERT_TRUE(store_->connection().exec("COMMIT").ok());
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2, 3}));
}

// After a reconnect the server may be another one (a promoted replica) that lacks the latest
// commits: what the store saw before must not count. The lost commit is simulated by deleting it
// behind the immutability trigger's back.
TEST_F(KnownVersions, ReconnectingForgetsTheKnownVersions) {
  for (int n = 1; n <= 3; ++n) ASSERT_TRUE(append_with(*store_, ExpectedVersion::any(), n).ok());
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events DISABLE TRIGGER events_immutable_rows").ok());
  ASSERT_TRUE(
      raw_->exec("DELETE FROM cqrs.events WHERE stream_id = 's' AND stream_version = 3").ok());
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events ENABLE TRIGGER events_immutable_rows").ok());
  auto killed = raw_->exec("SELECT pg_terminate_backend($1, 5000)",
                           Params().add(int64_t{store_->backend_pid()}));
  ASSERT_TRUE(killed.ok() && killed->text(0, 0) == "t");
  // The next call notices the closed connection and reconnects first: a new session.
  const uint64_t old_session = store_->connection().session();
  ASSERT_TRUE(store_->stream_version("other").ok());
  EXPECT_EQ(store_->connection().session(), old_session + 1);

  auto appended = append_with(*store_, ExpectedVersion::exact(3), 4);
  ASSERT_FALSE(appended.ok()) << "version 4 was written after a missing version 3";
  EXPECT_EQ(appended.error().code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(appended.error().actual_version(), std::optional<int64_t>(2));
  EXPECT_EQ(versions(), (std::vector<int64_t>{1, 2}));
}

TEST_F(PostgresStore, OpeningAnUnmigratedDatabaseSaysToMigrate) {
  auto bare = testing::TestDatabase::create(/*migrated=*/false);
  ASSERT_NE(bare, nullptr);
  auto store = PostgresEventStore::open(bare->url());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), errc::kMigrationFailed);
  EXPECT_NE(store.error().message().find("cqrsd migrate"), std::string::npos)
      << store.error().message();
}

// Runs (schema/012): the $all index and cqrs.correlations hold the first event of each stretch of
// one append's events that share their type and metadata, and reads widen each to its run.
class Runs : public PostgresStore {
 protected:
  // Events of `types` (one letter each), all with the metadata of correlation `correlation`.
  static std::vector<EventData> events_of(std::string_view types,
                                          const std::string& correlation = "corr") {
    std::vector<EventData> out;
    for (char type : types) {
      EventData& event = out.emplace_back();
      event.type = std::string(1, type);
      event.data = R"({"n":)" + std::to_string(out.size()) + "}";
      event.metadata = R"({"correlation_id":")" + correlation + R"("})";
    }
    return out;
  }
  void append(std::string_view stream, std::vector<EventData> events) {
    auto appended = store_->append(stream, ExpectedVersion::any(), events);
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  }
  // run_length of each event of `stream`, in version order.
  std::vector<int64_t> runs_of(const std::string& stream) {
    std::vector<int64_t> out;
    auto rows = raw_->exec(
        "SELECT run_length FROM cqrs.events WHERE stream_id = $1 ORDER BY stream_version",
        Params().add(stream));
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    for (int row = 0; rows.ok() && row < rows->rows(); ++row) out.push_back(rows->int64(row, 0));
    return out;
  }
  // Every event in $all once the store's appends are visible there.
  std::vector<RecordedEvent> settled_all() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      auto held = store_->events_behind_watermark_exist();
      if (held.ok() && !*held) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    auto all = store_->read_all(Position{}, 10'000);
    EXPECT_TRUE(all.ok());
    return all.ok() ? all->events : std::vector<RecordedEvent>{};
  }
  static std::vector<Uuid> ids(const std::vector<RecordedEvent>& events) {
    std::vector<Uuid> out;
    for (const RecordedEvent& event : events) out.push_back(event.event_id);
    return out;
  }
};

TEST_F(Runs, EveryPathStoresOneRunPerStretchOfOneTypeAndMetadata) {
  append("new", events_of("AAA"));   // a new stream: cqrs.append_to_stream
  append("new", events_of("AABA"));  // after a known version: one INSERT
  std::vector<EventData> differing = events_of("AAA");
  differing[2].metadata = R"({"correlation_id":"other"})";
  append("new", differing);
  append("new", events_of("D"));  // one event
  EXPECT_EQ(runs_of("new"), (std::vector<int64_t>{3, 0, 0, 2, 0, 1, 1, 2, 0, 1, 1}));

  std::vector<WriteRequest> group(2);
  group[0].stream_id = "g1";
  group[0].expected = ExpectedVersion::no_stream();
  group[0].events = events_of("BBA");
  group[1].stream_id = "g2";
  group[1].expected = ExpectedVersion::any();
  group[1].events = events_of("CC");
  for (const WriteResult& result : store_->write(group)) {
    ASSERT_TRUE(result.ok()) << result.error->to_string();
  }
  EXPECT_EQ(runs_of("g1"), (std::vector<int64_t>{2, 0, 1}));
  EXPECT_EQ(runs_of("g2"), (std::vector<int64_t>{2, 0}));

  // A group of one request after a known version, with its command record.
  std::vector<WriteRequest> one(1);
  one[0].stream_id = "g1";
  one[0].expected = ExpectedVersion::exact(3);
  one[0].events = events_of("EEEF");
  one[0].command = CommandRecord{Uuid::time_ordered(), "g1", R"({"status":"ok"})"};
  auto written = store_->write(one);
  ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
  EXPECT_EQ(runs_of("g1"), (std::vector<int64_t>{2, 0, 1, 3, 0, 0, 1}));
}

// Pages of any size, from the origin and from wherever the last one ended (often inside a run),
// return every event of the types once, in $all order.
TEST_F(Runs, TypedPagesOfEverySizeReturnEachEventOnceInOrder) {
  append("s1", events_of("AAAAA"));
  append("s2", events_of("BBB"));
  append("s1", events_of("AABA"));
  append("s3", events_of("A"));
  append("s2", events_of("BAAAA"));
  append("s3", events_of("CCAAC"));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 23u);
  for (const std::vector<std::string>& types :
       {std::vector<std::string>{"A"}, std::vector<std::string>{"B"},
        std::vector<std::string>{"A", "B"}, std::vector<std::string>{"C", "A"}}) {
    std::vector<RecordedEvent> expected;
    for (const RecordedEvent& event : all) {
      if (std::find(types.begin(), types.end(), event.type) != types.end()) {
        expected.push_back(event);
      }
    }
    for (size_t page_size : {1, 2, 3, 4, 7, 100}) {
      std::vector<RecordedEvent> got;
      Position position;
      for (int page_no = 0; page_no < 100; ++page_no) {
        auto page = store_->read_all_of_types(position, page_size, types);
        ASSERT_TRUE(page.ok()) << page.error().to_string();
        ASSERT_LE(page->events.size(), page_size);
        got.insert(got.end(), page->events.begin(), page->events.end());
        position = page->next;
        if (!page->more) break;
      }
      EXPECT_EQ(ids(got), ids(expected)) << "types " << types.front() << ", pages of " << page_size;
      EXPECT_EQ(position, all.back().position()) << "the last page moves past everything";
    }
  }
}

// A read of some types walks at most typed_read_window transactions from the first append after
// its position, so that a handler of a rare type (or of a common and a rare one) never walks
// every other type's entries up to the watermark at each page. A page that ends at its window
// ends at the last event before the window's end, and says more may follow at once.
TEST_F(Runs, ReadsOfRareTypesWalkAWindowOfTransactionsAtATime) {
  for (int idx = 0; idx < 20; ++idx) append("a" + std::to_string(idx), events_of("A"));
  append("m", events_of("AAAAARAA"));  // three runs in one transaction
  for (int idx = 20; idx < 30; ++idx) append("a" + std::to_string(idx), events_of("A"));
  append("r", events_of("R"));
  for (int idx = 30; idx < 40; ++idx) append("a" + std::to_string(idx), events_of("A"));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 49u);
  constexpr int64_t kWindow = 4;
  PostgresStoreOptions options;
  options.typed_read_window = kWindow;
  auto opened = PostgresEventStore::open(db_->url(), options);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  std::unique_ptr<PostgresEventStore> windowed = std::move(opened).value();

  const std::vector<std::string> rare{"R"};
  std::vector<RecordedEvent> got;
  Position position;
  int pages = 0;
  for (; pages < 100; ++pages) {
    auto page = windowed->read_all_of_types(position, 10, rare);
    ASSERT_TRUE(page.ok()) << page.error().to_string();
    // The page's end: the last event before the window, which starts at the first event after
    // the position (every event here is below the watermark).
    auto first = std::find_if(all.begin(), all.end(),
                              [&](const RecordedEvent& e) { return position < e.position(); });
    Position end = position;
    for (auto it = first; it != all.end() && it->commit_id < first->commit_id + kWindow; ++it) {
      end = it->position();
    }
    EXPECT_EQ(page->next, end) << "page " << pages;
    if (end < all.back().position()) {
      EXPECT_TRUE(page->more) << "page " << pages;
    }
    got.insert(got.end(), page->events.begin(), page->events.end());
    position = page->next;
    if (!page->more) break;
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].stream_id, "m");
  EXPECT_EQ(got[0].stream_version, 6);
  EXPECT_EQ(got[1].stream_id, "r");
  EXPECT_EQ(position, all.back().position());
  // Each window holds at most kWindow appends (other transactions take ids between them).
  EXPECT_GE(pages, 42 / static_cast<int>(kWindow));

  // A handler of both types reads every event once, in order, at any page size: pages that end
  // inside a run continue with its rest.
  const std::vector<std::string> both{"A", "R"};
  for (size_t page_size : {1, 3, 10, 100}) {
    std::vector<RecordedEvent> read;
    Position at;
    for (int page_no = 0; page_no < 200; ++page_no) {
      auto page = windowed->read_all_of_types(at, page_size, both);
      ASSERT_TRUE(page.ok()) << page.error().to_string();
      read.insert(read.end(), page->events.begin(), page->events.end());
      at = page->next;
      if (!page->more) break;
    }
    EXPECT_EQ(ids(read), ids(all)) << "pages of " << page_size;
  }
}

TEST_F(PostgresStore, ATypedReadWindowOfNoTransactionIsRefused) {
  PostgresStoreOptions options;
  options.typed_read_window = 0;
  auto store = PostgresEventStore::open(db_->url(), options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), "invalid_argument");
  EXPECT_NE(store.error().message().find("typed_read_window must be at least 1"), std::string::npos)
      << store.error().to_string();
}

TEST_F(Runs, ATraceFindsEveryEventOfItsCorrelationInEachRun) {
  append("s1", events_of("AAA", "x"));
  append("s2", events_of("B", "y"));
  append("s1", events_of("AB", "x"));
  append("s3", events_of("CC", "x"));
  std::vector<RecordedEvent> all = settled_all();
  std::vector<RecordedEvent> expected;
  for (const RecordedEvent& event : all) {
    if (event.stream_id != "s2") expected.push_back(event);
  }
  auto traced = store_->read_correlated("x", 100);
  ASSERT_TRUE(traced.ok()) << traced.error().to_string();
  EXPECT_EQ(ids(*traced), ids(expected));
  auto first = store_->read_correlated("x", 4);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(ids(*first), ids(std::vector<RecordedEvent>(expected.begin(), expected.begin() + 4)));
}

// Rows stored before runs existed, or by an INSERT that does not name run_length, are runs of
// one: both indexes still find them.
TEST_F(Runs, RowsWithoutARunLengthAreRunsOfOne) {
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, metadata) SELECT 'old', v, gen_random_uuid(), 'A', "
                         "'{}', '{\"correlation_id\":\"x\"}' FROM generate_series(1, 3) AS v")
                  .ok());
  EXPECT_EQ(runs_of("old"), (std::vector<int64_t>{1, 1, 1}));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 3u);
  std::vector<std::string> types{"A"};
  auto page = store_->read_all_of_types(Position{}, 2, types);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->events.size(), 2u);
  auto rest = store_->read_all_of_types(page->next, 2, types);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->events.size(), 1u);
  EXPECT_EQ(rest->events[0].stream_version, 3);
  auto traced = store_->read_correlated("x", 10);
  ASSERT_TRUE(traced.ok());
  EXPECT_EQ(ids(*traced), ids(all));
}

// Correlations behind the appends (schema/018): cqrs.correlations up to its position, $all
// after it. A trace is the same before, during and after indexing.
class Correlations : public Runs {
 protected:
  // Indexes until caught up, `batch` runs at a time; the runs indexed.
  int64_t index_all(int batch = 1000) {
    int64_t total = 0;
    for (int round = 0; round < 1000; ++round) {
      auto done = store_->index_correlations(batch);
      EXPECT_TRUE(done.ok()) << done.error().to_string();
      if (!done.ok()) return total;
      EXPECT_FALSE(done->busy);
      total += done->indexed;
      if (done->indexed < batch) return total;
    }
    ADD_FAILURE() << "the index never caught up";
    return total;
  }
  int64_t rows_of(const std::string& correlation) {
    auto rows = raw_->exec("SELECT count(*) FROM cqrs.correlations WHERE correlation_id = $1",
                           Params().add(correlation));
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    return rows.ok() ? rows->int64(0, 0) : -1;
  }
  std::vector<Uuid> traced(const std::string& correlation) {
    auto events = store_->read_correlated(correlation, 1000);
    EXPECT_TRUE(events.ok()) << events.error().to_string();
    return events.ok() ? ids(*events) : std::vector<Uuid>{};
  }
  static std::vector<Uuid> ids_of(const std::vector<RecordedEvent>& all,
                                  const std::string& stream_prefix) {
    std::vector<Uuid> out;
    for (const RecordedEvent& event : all) {
      if (event.stream_id.rfind(stream_prefix, 0) == 0) out.push_back(event.event_id);
    }
    return out;
  }
};

TEST_F(Correlations, ATraceIsTheSameBeforeDuringAndAfterIndexing) {
  append("x1", events_of("AAB", "x"));  // two runs
  append("y1", events_of("A", "y"));
  append("x1", events_of("C", "x"));
  append("x2", events_of("DDDD", "x"));
  std::vector<RecordedEvent> all = settled_all();
  std::vector<Uuid> expected = ids_of(all, "x");
  ASSERT_EQ(expected.size(), 8u);
  EXPECT_EQ(traced("x"), expected) << "nothing indexed: $all alone";

  auto first = store_->index_correlations(2);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  EXPECT_EQ(first->indexed, 2);
  EXPECT_FALSE(first->busy);
  EXPECT_EQ(rows_of("x"), 2) << "the first two runs are both of x";
  EXPECT_EQ(traced("x"), expected) << "two runs indexed, the rest in $all";
  EXPECT_EQ(*store_->correlation_index_lag(), 3);

  EXPECT_EQ(index_all(), 3);
  EXPECT_EQ(rows_of("x"), 4);
  EXPECT_EQ(rows_of("y"), 1);
  EXPECT_EQ(*store_->correlation_index_lag(), 0);
  EXPECT_EQ(traced("x"), expected) << "everything indexed";
  EXPECT_EQ(traced("y"), ids_of(all, "y"));

  append("x3", events_of("E", "x"));
  std::vector<RecordedEvent> more = settled_all();
  std::vector<Uuid> expected_more = ids_of(more, "x");
  ASSERT_EQ(expected_more.size(), 9u);
  EXPECT_EQ(traced("x"), expected_more) << "indexed runs, then one in $all";
  auto page = store_->read_correlated("x", 5);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(ids(*page), std::vector<Uuid>(expected_more.begin(), expected_more.begin() + 5));
  EXPECT_EQ(index_all(), 1);
  EXPECT_EQ(traced("x"), expected_more);
}

// The index moves only below the watermark: a run of a transaction still open is not passed over,
// and a trace meanwhile finds every committed event.
TEST_F(Correlations, TheIndexWaitsForTransactionsStillOpen) {
  append("before", events_of("A", "x"));
  settled_all();
  EXPECT_EQ(index_all(), 1);
  auto open = db_->connect();
  ASSERT_NE(open, nullptr);
  ASSERT_TRUE(open->exec("BEGIN").ok());
  ASSERT_TRUE(open->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, metadata) VALUES ('slow', 1, gen_random_uuid(), 'A', "
                         "'{}', '{\"correlation_id\":\"x\"}')")
                  .ok());
  append("fast", events_of("B", "x"));
  auto held = store_->index_correlations(100);
  ASSERT_TRUE(held.ok()) << held.error().to_string();
  EXPECT_EQ(held->indexed, 0) << "indexed past a transaction that is still open";
  EXPECT_EQ(rows_of("x"), 1);
  auto seen = store_->read_correlated("x", 10);
  ASSERT_TRUE(seen.ok());
  ASSERT_EQ(seen->size(), 2u) << "the committed events, the open one's not";
  EXPECT_EQ(seen->back().stream_id, "fast");

  ASSERT_TRUE(open->exec("COMMIT").ok());
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(index_all(), 2);
  EXPECT_EQ(rows_of("x"), 3);
  std::vector<Uuid> expected = ids(all);
  EXPECT_EQ(traced("x"), expected) << "each event once, in $all order";
}

// Indexers of several processes take turns: one that finds the position locked leaves at once.
TEST_F(Correlations, AnIndexerThatFindsAnotherAtWorkLeavesAtOnce) {
  append("s", events_of("A", "x"));
  settled_all();
  auto other = db_->connect();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->exec("BEGIN").ok());
  ASSERT_TRUE(other->exec("SELECT 1 FROM cqrs.correlations_indexed FOR UPDATE").ok());
  auto began = std::chrono::steady_clock::now();
  auto busy = store_->index_correlations(100);
  auto waited = std::chrono::steady_clock::now() - began;
  ASSERT_TRUE(busy.ok()) << busy.error().to_string();
  EXPECT_TRUE(busy->busy);
  EXPECT_EQ(busy->indexed, 0);
  EXPECT_LT(waited, std::chrono::seconds(1));
  ASSERT_TRUE(other->exec("ROLLBACK").ok());
  EXPECT_EQ(index_all(), 1);
  EXPECT_EQ(rows_of("x"), 1);
}

// Runs whose metadata names no correlation are passed over without a row; a position row that is
// gone (removed by hand) leaves traces walking all of $all, still complete.
TEST_F(Correlations, RunsWithoutACorrelationAndAMissingPositionLeaveTracesWhole) {
  std::vector<EventData> bare = events_of("AB");
  for (EventData& event : bare) event.metadata = "{}";
  append("bare", bare);
  append("x", events_of("C", "x"));
  std::vector<RecordedEvent> all = settled_all();
  EXPECT_EQ(index_all(), 3);
  auto rows = raw_->exec("SELECT count(*) FROM cqrs.correlations");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->int64(0, 0), 1);
  std::vector<Uuid> expected = ids_of(all, "x");
  ASSERT_TRUE(raw_->exec("DELETE FROM cqrs.correlations_indexed").ok());
  EXPECT_EQ(traced("x"), expected);
  auto gone = store_->index_correlations(100);
  ASSERT_FALSE(gone.ok()) << "a missing position is neither caught up nor another indexer";
  EXPECT_EQ(gone.error().code(), errc::kStoreError);
  EXPECT_NE(gone.error().message().find("INSERT INTO cqrs.correlations_indexed"), std::string::npos)
      << gone.error().message();
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.correlations_indexed (transaction_id, global_position)"
                         " VALUES ('0', 0)")
                  .ok());
  EXPECT_EQ(index_all(), 3) << "built again from the origin";
  EXPECT_EQ(rows_of("x"), 1) << "no row twice";
  EXPECT_EQ(traced("x"), expected);
  auto refused = store_->index_correlations(0);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kInvalidArgument);
}

// PostgresStoreOptions::read_ahead: after a full page the next one is on its way; only a full
// page read ahead is used, and any other call first throws it away.
class ReadAhead : public Runs {
 protected:
  std::unique_ptr<PostgresEventStore> reader() {
    PostgresStoreOptions options;
    options.read_ahead = true;
    auto store = PostgresEventStore::open(db_->url(), options);
    EXPECT_TRUE(store.ok()) << store.error().to_string();
    return store.ok() ? std::move(store).value() : nullptr;
  }
  // Streams s<from> up to s<to - 1>, one event each.
  void append_streams(int from, int to) {
    for (int idx = from; idx < to; ++idx) append("s" + std::to_string(idx), events_of("A"));
  }
  static std::vector<Uuid> read_pages(PostgresEventStore& store, size_t page_size) {
    std::vector<Uuid> out;
    Position after{};
    for (int page = 0; page < 1000; ++page) {
      auto read = store.read_all(after, page_size);
      EXPECT_TRUE(read.ok()) << read.error().to_string();
      if (!read.ok() || read->events.empty()) break;
      for (const RecordedEvent& event : read->events) {
        EXPECT_GT(event.position(), after);
        out.push_back(event.event_id);
        after = event.position();
      }
      EXPECT_EQ(read->next, after);
    }
    return out;
  }
};

TEST_F(ReadAhead, PagesReadAheadHoldEveryEventOnceInOrder) {
  for (int idx = 0; idx < 7; ++idx) append("s" + std::to_string(idx), events_of("AB"));
  append("long", events_of("CCCCCCCCCC"));  // a run that pages end inside
  std::vector<Uuid> all = ids(settled_all());
  ASSERT_EQ(all.size(), 24u);
  auto store = reader();
  ASSERT_NE(store, nullptr);
  for (size_t page_size : {1u, 3u, 5u, 24u, 100u}) {
    EXPECT_EQ(read_pages(*store, page_size), all) << "pages of " << page_size;
  }
}

// A page read ahead that is not full is not used: a reader that caught up sees what committed
// after that page was read.
TEST_F(ReadAhead, AShortPageReadAheadIsReadAgain) {
  append_streams(0, 7);
  settled_all();
  auto store = reader();
  ASSERT_NE(store, nullptr);
  auto first = store->read_all(Position{}, 5);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->events.size(), 5u);  // the next page (2 events) is read ahead now
  append_streams(7, 10);
  std::vector<Uuid> all = ids(settled_all());
  ASSERT_EQ(all.size(), 10u);
  auto second = store->read_all(first->next, 5);
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_EQ(ids(second->events), std::vector<Uuid>(all.begin() + 5, all.end()));
}

// Other calls between reads wait for the page read ahead and throw it away; the next read asks
// again from wherever the caller says.
TEST_F(ReadAhead, OtherCallsBetweenReadsWorkAndTheNextReadIsRight) {
  append_streams(0, 6);
  std::vector<Uuid> all = ids(settled_all());
  auto store = reader();
  ASSERT_NE(store, nullptr);
  auto first = store->read_all(Position{}, 2);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->events.size(), 2u);
  auto appended = store->append("own", ExpectedVersion::no_stream(), events_of("B"));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  ASSERT_TRUE(store->save_checkpoint("reader", first->next).ok());
  auto raw = store->connection().exec("SELECT count(*) FROM cqrs.events");
  ASSERT_TRUE(raw.ok()) << raw.error().to_string();
  EXPECT_EQ(raw->int64(0, 0), 7);
  // Not the page read ahead (after the first): the caller starts over.
  auto again = store->read_all(Position{}, 2);
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(ids(again->events), std::vector<Uuid>(all.begin(), all.begin() + 2));
  // Inside the caller's transaction nothing is read ahead: the transaction's statements run.
  ASSERT_TRUE(store->connection().exec("BEGIN").ok());
  auto inside = store->read_all(Position{}, 2);
  ASSERT_TRUE(inside.ok()) << inside.error().to_string();
  EXPECT_FALSE(store->connection().has_sent());
  ASSERT_TRUE(store->connection().exec("COMMIT").ok());
}

// Steps a caller sends on the store's connection() between reads are not taken for the page
// read ahead, even when they look like one.
TEST_F(ReadAhead, StepsTheCallerSentAreNotTakenForAPage) {
  append_streams(0, 4);
  std::vector<Uuid> all = ids(settled_all());
  auto store = reader();
  ASSERT_NE(store, nullptr);
  auto first = store->read_all(Position{}, 2);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->events.size(), 2u);
  Connection& connection = store->connection();
  ASSERT_TRUE(connection
                  .prepare("lookalike",
                           "SELECT g::bigint, '1', 'fake', g::bigint, gen_random_uuid()::text, 'A',"
                           " 1, '{}', '{}', 0::bigint FROM generate_series(100, 101) AS g")
                  .ok());
  std::vector<Connection::PipelineStep> steps = {{"generic_plans", Params(), false},
                                                 {"lookalike", Params(), true}};
  ASSERT_TRUE(connection.send_pipeline(steps).ok());
  auto second = store->read_all(first->next, 2);
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_EQ(ids(second->events), std::vector<Uuid>(all.begin() + 2, all.end()));
}

TEST_F(PostgresStore, StepsSentAndNotTakenAreReadByTheNextCall) {
  Connection& connection = *raw_;
  std::vector<Connection::PipelineStep> steps;
  ASSERT_TRUE(connection.prepare("two", "SELECT 2").ok());
  steps.push_back({"two", Params(), true});
  ASSERT_TRUE(connection.send_pipeline(steps).ok());
  EXPECT_TRUE(connection.has_sent());
  auto next = connection.exec("SELECT 3");
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(next->int64(0, 0), 3);
  EXPECT_FALSE(connection.has_sent());
  auto none = connection.take_sent();
  ASSERT_FALSE(none.ok());
  ASSERT_TRUE(connection.send_pipeline(steps).ok());
  auto taken = connection.take_sent();
  ASSERT_TRUE(taken.ok()) << taken.error().to_string();
  ASSERT_EQ(taken->size(), 1u);
  ASSERT_TRUE((*taken)[0].ok());
  EXPECT_EQ((*taken)[0]->int64(0, 0), 2);
  std::vector<Connection::PipelineStep> unsynced = {{"two", Params(), false}};
  EXPECT_FALSE(connection.send_pipeline(unsynced).ok());
  EXPECT_FALSE(connection.has_sent());
}

TEST_F(Runs, EventsAfterAPositionInsideARunExist) {
  append("s", events_of("AAA"));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 3u);
  std::vector<std::string> mine{"A"}, other{"B"};
  EXPECT_TRUE(*store_->events_after_exist(all[1].position(), mine));
  EXPECT_FALSE(*store_->events_after_exist(all[1].position(), other));
  EXPECT_FALSE(*store_->events_after_exist(all[2].position(), mine)) << "the run's last event";
}

// $all in the order PostgreSQL itself gives (transaction, position), for checking the store's
// reads through runs against.
std::vector<Uuid> ids_in_stored_order(Connection& raw) {
  std::vector<Uuid> out;
  auto rows =
      raw.exec("SELECT event_id::text FROM cqrs.events ORDER BY transaction_id, global_position");
  EXPECT_TRUE(rows.ok()) << rows.error().to_string();
  for (int row = 0; rows.ok() && row < rows->rows(); ++row) {
    out.push_back(*Uuid::parse(rows->text(row, 0)));
  }
  return out;
}

// $all's order index holds the first event of each run (schema/013). Pages of any size, from
// the origin and from wherever the last one ended (often inside a run, or inside a group
// commit's transaction of several runs), return every event once in $all order.
TEST_F(Runs, PagesOfAllOfEverySizeReturnEachEventOnceInOrder) {
  append("s1", events_of("AAAAA"));
  append("s2", events_of("B"));
  append("s1", events_of("AABA"));
  std::vector<WriteRequest> group(3);
  group[0].stream_id = "g1";
  group[0].events = events_of("CCC");
  group[1].stream_id = "g2";
  group[1].events = events_of("D");
  group[2].stream_id = "g3";
  group[2].events = events_of("EEEE");
  for (const WriteResult& result : store_->write(group)) {
    ASSERT_TRUE(result.ok()) << result.error->to_string();
  }
  // Rows that name no run length: runs of one.
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data) SELECT 'old', v, gen_random_uuid(), 'A', '{}' "
                         "FROM generate_series(1, 3) AS v")
                  .ok());
  append("s2", events_of("BBAAA"));
  std::vector<RecordedEvent> all = settled_all();
  std::vector<Uuid> expected = ids_in_stored_order(*raw_);
  ASSERT_EQ(expected.size(), 26u);
  EXPECT_EQ(ids(all), expected);
  for (size_t page_size : {1, 2, 3, 4, 5, 7, 100}) {
    std::vector<RecordedEvent> got;
    Position position;
    for (int page_no = 0; page_no < 100; ++page_no) {
      auto page = store_->read_all(position, page_size);
      ASSERT_TRUE(page.ok()) << page.error().to_string();
      ASSERT_LE(page->events.size(), page_size);
      got.insert(got.end(), page->events.begin(), page->events.end());
      position = page->next;
      if (!page->more) break;
    }
    EXPECT_EQ(ids(got), expected) << "pages of " << page_size;
    EXPECT_EQ(position, all.back().position());
  }
  auto head = store_->head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, all.back().position()) << "the head is the last event of the last run";
}

// A run's events are behind the watermark together, and a position inside a run has the rest
// of it after it.
TEST_F(Runs, TheWatermarkAndThePositionsAfterCountEveryEventOfARun) {
  append("s", events_of("AAA"));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 3u);
  std::vector<std::string> any;
  EXPECT_TRUE(*store_->events_after_exist(all[0].position(), any));
  EXPECT_TRUE(*store_->events_after_exist(all[1].position(), any));
  EXPECT_FALSE(*store_->events_after_exist(all[2].position(), any)) << "the run's last event";

  // An open transaction holds the watermark; a run committed after it waits behind it.
  auto held = db_->connect();
  ASSERT_TRUE(held->exec("BEGIN").ok());
  ASSERT_TRUE(held->exec("SELECT cqrs.append_to_stream('held', -1, ARRAY[gen_random_uuid()], "
                         "ARRAY['A'], ARRAY[1], ARRAY['{}']::jsonb[], ARRAY['{}']::jsonb[])")
                  .ok());
  append("t", events_of("AAAA"));
  auto behind = store_->events_behind_watermark();
  ASSERT_TRUE(behind.ok()) << behind.error().to_string();
  EXPECT_EQ(*behind, 4);
  EXPECT_TRUE(*store_->events_behind_watermark_exist());
  EXPECT_EQ(*store_->head(), all[2].position()) << "nothing behind the open transaction";
  EXPECT_TRUE(*store_->events_after_exist(all[2].position(), any)) << "visible or not";
  ASSERT_TRUE(held->exec("COMMIT").ok());
  std::vector<RecordedEvent> now = settled_all();
  ASSERT_EQ(now.size(), 8u);
  EXPECT_EQ(*store_->events_behind_watermark(), 0);
  EXPECT_EQ(*store_->head(), now.back().position());
}

// A reader resuming inside a long run (a bulk append) reads the rest of it, not the whole run
// again: the position's version is found by a backward probe, not by filtering the run.
TEST_F(Runs, ResumingInsideALongRunReadsOnlyTheRestOfIt) {
  append("bulk", events_of(std::string(5000, 'A')));
  std::vector<RecordedEvent> all = settled_all();
  ASSERT_EQ(all.size(), 5000u);
  Position inside = all[4989].position();
  auto page = store_->read_all(inside, 100);
  ASSERT_TRUE(page.ok()) << page.error().to_string();
  EXPECT_EQ(ids(page->events), ids(std::vector<RecordedEvent>(all.begin() + 4990, all.end())));
  std::vector<std::string> types{"A"};
  auto typed = store_->read_all_of_types(inside, 100, types);
  ASSERT_TRUE(typed.ok()) << typed.error().to_string();
  EXPECT_EQ(ids(typed->events), ids(page->events));
  // Rows read and dropped on the way: the whole run before the position would be 4,990.
  auto most_removed = [&](const std::string& explain) {
    auto rows = store_->connection().exec(explain);
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    int64_t most = -1;
    for (int row = 0; rows.ok() && row < rows->rows(); ++row) {
      std::string line(rows->text(row, 0));
      most = std::max<int64_t>(most, 0);
      size_t at = line.find("Rows Removed by Filter: ");
      if (at != std::string::npos) {
        most = std::max<int64_t>(most, std::strtoll(line.c_str() + at + 24, nullptr, 10));
      }
    }
    return most;
  };
  std::string at =
      "'" + std::to_string(inside.commit_id) + "', " + std::to_string(inside.global_position);
  for (const std::string& explain :
       {"EXPLAIN ANALYZE EXECUTE read_all(" + at + ", 100)",
        "EXPLAIN ANALYZE EXECUTE read_all_of_types(" + at + ", 100, '{A}', 10000)",
        "EXPLAIN ANALYZE EXECUTE events_after_exist(" + at + ")",
        "EXPLAIN ANALYZE SELECT * FROM cqrs.rest_of_run(" + at + ", NULL)"}) {
    int64_t removed = most_removed(explain);
    EXPECT_GE(removed, 0) << explain;
    EXPECT_LT(removed, 100) << explain;
  }
}

// A position whose transaction is not below the watermark yet (an append's own position, given
// as a starting point) reads nothing of that transaction until it is.
TEST_F(Runs, APositionAboveTheWatermarkReadsNothingOfItsRunYet) {
  auto held = db_->connect();
  ASSERT_TRUE(held->exec("BEGIN").ok());
  ASSERT_TRUE(held->exec("SELECT cqrs.append_to_stream('held', -1, ARRAY[gen_random_uuid()], "
                         "ARRAY['A'], ARRAY[1], ARRAY['{}']::jsonb[], ARRAY['{}']::jsonb[])")
                  .ok());
  auto appended = store_->append("t", ExpectedVersion::any(), events_of("AAA"));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  Position first{appended->commit_id, appended->global_positions.front()};
  auto page = store_->read_all(first, 10);
  ASSERT_TRUE(page.ok()) << page.error().to_string();
  EXPECT_TRUE(page->events.empty());
  std::vector<std::string> types{"A"};
  auto typed = store_->read_all_of_types(first, 10, types);
  ASSERT_TRUE(typed.ok()) << typed.error().to_string();
  EXPECT_TRUE(typed->events.empty());
  ASSERT_TRUE(held->exec("COMMIT").ok());
  settled_all();
  page = store_->read_all(first, 10);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->events.size(), 2u) << "the rest of the run, once below the watermark";
}

// Left to choose, PostgreSQL plans the reads of loads, $all, $all by type and correlations again
// at every execution; the store has them use their generic plans (checked by the next test),
// made once per connection, without changing the plan choice of anything else on the connection.
TEST_F(Runs, TheComplexReadsRunTheirGenericPlansAndLeaveTheSessionsChoiceAlone) {
  append("s", events_of("AAB", "x"));
  append("t", events_of("C", "y"));
  std::vector<std::string> types{"A"};
  for (int round = 0; round < 8; ++round) {
    ASSERT_TRUE(store_->read_all(Position{}, 10).ok());
    ASSERT_TRUE(store_->read_all_of_types(Position{}, 10, types).ok());
    ASSERT_TRUE(store_->read_correlated("x", 10).ok());
    std::vector<StreamLoad> loads(1);
    loads[0].stream_id = "s";
    auto loaded = store_->load_streams(loads);
    ASSERT_EQ(loaded.size(), 1u);
    ASSERT_FALSE(loaded[0].error) << loaded[0].error->to_string();
    ASSERT_EQ(loaded[0].events.size(), 3u);
  }
  Connection& connection = store_->connection();
  auto plans = connection.exec(
      "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
      " WHERE name IN ('read_all', 'read_all_of_types', 'read_correlated', 'load_streams')"
      " ORDER BY name");
  ASSERT_TRUE(plans.ok()) << plans.error().to_string();
  ASSERT_EQ(plans->rows(), 4);
  for (int row = 0; row < plans->rows(); ++row) {
    EXPECT_EQ(plans->int64(row, 1), 8) << plans->text(row, 0) << ": generic plans";
    EXPECT_EQ(plans->int64(row, 2), 0) << plans->text(row, 0) << ": custom plans";
  }
  auto mode = connection.exec("SHOW plan_cache_mode");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ(mode->text(0, 0), "auto") << "the setting outlasted the read";
  auto scans = connection.exec("SHOW enable_seqscan");
  ASSERT_TRUE(scans.ok());
  EXPECT_EQ(scans->text(0, 0), "on") << "the setting outlasted the read";

  // A read that fails after the setting (a lock it may not wait for) does not leave it behind.
  ASSERT_TRUE(connection.exec("SET lock_timeout = '50ms'").ok());
  ASSERT_TRUE(raw_->exec("BEGIN").ok());
  ASSERT_TRUE(raw_->exec("LOCK TABLE cqrs.events IN ACCESS EXCLUSIVE MODE").ok());
  EXPECT_FALSE(store_->read_all(Position{}, 10).ok());
  ASSERT_TRUE(raw_->exec("ROLLBACK").ok());
  mode = connection.exec("SHOW plan_cache_mode");
  ASSERT_TRUE(mode.ok()) << mode.error().to_string();
  EXPECT_EQ(mode->text(0, 0), "auto") << "the setting outlasted a failed read";
  ASSERT_TRUE(connection.exec("RESET lock_timeout").ok());

  // In a transaction the caller opened, the setting would last until the caller's commit: the
  // reads there leave the choice to PostgreSQL.
  ASSERT_TRUE(connection.exec("BEGIN").ok());
  ASSERT_TRUE(store_->read_all(Position{}, 10).ok());
  mode = connection.exec("SHOW plan_cache_mode");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ(mode->text(0, 0), "auto");
  ASSERT_TRUE(connection.exec("COMMIT").ok());
}

// A generic plan made while cqrs.events looks empty (a new database: the migrations analyze it)
// is kept until the table is analyzed again. The reads' plans must walk their indexes even then,
// not scan and sort the whole table at every page as it grows.
TEST_F(Runs, ReadsPlannedOnAnEmptyTableWalkTheirIndexesOnceItFills) {
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events SET (autovacuum_enabled = false)").ok());
  std::vector<std::string> types{"A"};
  ASSERT_TRUE(store_->read_all(Position{}, 10).ok());
  ASSERT_TRUE(store_->read_all_of_types(Position{}, 10, types).ok());
  ASSERT_TRUE(store_->read_correlated("x", 10).ok());
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, metadata) SELECT 'many-' || (v / 10), v % 10 + 1, "
                         "gen_random_uuid(), 'C', '{}', jsonb_build_object('correlation_id', "
                         "'c' || v) FROM generate_series(0, 19999) AS v")
                  .ok());
  Connection& connection = store_->connection();
  // The plans the reads cached, as EXPLAIN EXECUTE shows them with generic plans forced.
  ASSERT_TRUE(connection.exec("SET plan_cache_mode = force_generic_plan").ok());
  for (const char* explain : {"EXPLAIN EXECUTE read_all('0', 0, 10)",
                              "EXPLAIN EXECUTE read_all_of_types('0', 0, 10, '{A}', 10000)",
                              "EXPLAIN EXECUTE read_correlated('x', 10)"}) {
    auto rows = connection.exec(explain);
    ASSERT_TRUE(rows.ok()) << rows.error().to_string();
    std::string plan;
    for (int row = 0; row < rows->rows(); ++row) plan += std::string(rows->text(row, 0)) + "\n";
    EXPECT_EQ(plan.find("Seq Scan on events"), std::string::npos) << explain << "\n" << plan;
  }
  ASSERT_TRUE(connection.exec("RESET plan_cache_mode").ok());
  ASSERT_TRUE(raw_->exec("ALTER TABLE cqrs.events RESET (autovacuum_enabled)").ok());
}

// PostgreSQL plans a prepared statement once for all after a few runs (a generic plan). The
// reads by type and by correlation must reach their partial indexes in that plan too; a plan
// that walks $all instead gets slower with every event stored.
TEST_F(Runs, GenericPlansOfTheReadsUseTheRunIndexes) {
  append("s", events_of("AAB", "x"));
  // Enough events of other correlations that walking them all looks costly to the planner.
  ASSERT_TRUE(raw_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, metadata) SELECT 'many-' || (v / 10), v % 10 + 1, "
                         "gen_random_uuid(), 'C', '{}', jsonb_build_object('correlation_id', "
                         "'c' || v) FROM generate_series(0, 19999) AS v")
                  .ok());
  ASSERT_TRUE(raw_->exec("ANALYZE cqrs.events").ok());
  Connection& connection = store_->connection();
  ASSERT_TRUE(connection.exec("SET plan_cache_mode = force_generic_plan").ok());
  auto plan_of = [&](const std::string& explain) {
    auto rows = connection.exec(explain);
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    std::string plan;
    for (int row = 0; rows.ok() && row < rows->rows(); ++row) {
      plan += std::string(rows->text(row, 0)) + "\n";
    }
    return plan;
  };
  // Prepared on first use.
  ASSERT_TRUE(store_->read_correlated("x", 10).ok());
  std::vector<std::string> types{"A"};
  ASSERT_TRUE(store_->read_all_of_types(Position{}, 10, types).ok());
  ASSERT_TRUE(store_->events_after_exist(Position{}, types).ok());
  // By correlation (schema/018): the table's key up to the index's position, and a walk of the
  // $all index that starts at the position, not at the origin.
  std::string correlated = plan_of("EXPLAIN EXECUTE read_correlated('x', 10)");
  EXPECT_NE(correlated.find("correlations_pkey"), std::string::npos) << correlated;
  const std::regex tail_from_position(
      "(using|on) events_order_idx[^\\n]*\\n *Index Cond: \\(ROW\\(transaction_id, "
      "global_position\\) > "
      "ROW\\(COALESCE");
  EXPECT_TRUE(std::regex_search(correlated, tail_from_position)) << correlated;
  EXPECT_EQ(correlated.find("Seq Scan"), std::string::npos) << correlated;
  // By type through the $all index (schema/015): one walk in $all order from the position,
  // the types checked on each run, that stops at the page's last event (or the window's end),
  // so a page never walks past its own end for a rare type.
  std::string typed = plan_of("EXPLAIN EXECUTE read_all_of_types('0', 0, 10, '{A}', 10000)");
  const std::regex one_walk(
      "Index Scan using events_order_idx on events x[^\\n]*\\n *Index Cond: \\(\\(transaction_id < "
      "[^\\n]*\\n *Filter: [^\\n]*event_type[^\\n]*ANY \\(\\$4\\)\\)");
  EXPECT_TRUE(std::regex_search(typed, one_walk))
      << "the types must be read in one ordered walk of the $all index:\n"
      << typed;
  EXPECT_EQ(typed.find("Seq Scan on events"), std::string::npos) << typed;
  // Whether events of some types follow: one walk per type to its first entry, the type checked
  // in the index.
  std::string typed_exist = plan_of("EXPLAIN EXECUTE events_of_types_after_exist('0', 0, '{A}')");
  const std::regex type_in_index(
      "Index (Only )?Scan using events_order_idx on events x[^\\n]*\\n *Index Cond: "
      "[^\\n]*event_type");
  EXPECT_TRUE(std::regex_search(typed_exist, type_in_index)) << typed_exist;
  EXPECT_EQ(correlated.find("Seq Scan on events"), std::string::npos) << correlated;
  // Aggregate loads: the snapshot and the events by their primary keys.
  std::vector<StreamLoad> loads(1);
  loads[0].stream_id = "s";
  ASSERT_FALSE(store_->load_streams(loads)[0].error);
  std::string load = plan_of("EXPLAIN EXECUTE load_streams('{s}', '{0}', '{t}')");
  EXPECT_NE(load.find("events_pkey"), std::string::npos) << load;
  EXPECT_NE(load.find("snapshots_pkey"), std::string::npos) << load;
  EXPECT_EQ(load.find("Seq Scan"), std::string::npos) << load;
  // $all's reads, through events_order_idx (schema/013).
  ASSERT_TRUE(store_->read_all(Position{}, 10).ok());
  ASSERT_TRUE(store_->head().ok());
  ASSERT_TRUE(store_->events_after_exist(Position{}, {}).ok());
  ASSERT_TRUE(store_->events_behind_watermark().ok());
  for (const char* explain :
       {"EXPLAIN EXECUTE read_all('0', 0, 10)", "EXPLAIN EXECUTE head",
        "EXPLAIN EXECUTE events_after_exist('0', 0)", "EXPLAIN EXECUTE behind_watermark"}) {
    // The count behind the watermark sums a range whose size the planner cannot know (a
    // third of the table, it assumes); the store runs it with sequential scans off
    // (exec_generic), and so is it explained here.
    const bool as_run = std::string_view(explain).ends_with("behind_watermark");
    if (as_run) {
      ASSERT_TRUE(connection.exec("SET enable_seqscan = off").ok());
    }
    std::string plan = plan_of(explain);
    if (as_run) {
      ASSERT_TRUE(connection.exec("RESET enable_seqscan").ok());
    }
    EXPECT_NE(plan.find("events_order_idx"), std::string::npos) << explain << "\n" << plan;
    EXPECT_EQ(plan.find("Seq Scan on events"), std::string::npos) << explain << "\n" << plan;
  }
  // read_all sorts only within runs: a full sort would widen every run of the page first.
  std::string all = plan_of("EXPLAIN EXECUTE read_all('0', 0, 10)");
  EXPECT_NE(all.find("Incremental Sort"), std::string::npos) << all;
}

}  // namespace
}  // namespace cqrs::pg
