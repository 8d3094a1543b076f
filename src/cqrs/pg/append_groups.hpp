// Group commit across the stores of one process: appends that arrive while others are running
// wait briefly and then commit together, in one statement and one transaction.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs::pg {

// The appends of every PostgresEventStore of a process that share a database (and options).
//
// At most kMaxInFlight groups run at once, each on the connection of the store that leads it.
// An append that finds a free slot leads at once: alone, it runs as it would without groups. An
// append that finds both slots taken waits; when a group ends, the first waiting append leads
// the next one and takes every waiting append along (up to kMaxGroupEvents events and
// kMaxGroupBytes of payloads, one append
// per stream, of the leader's server, none of a stream the other group is writing). With one writer
// nothing ever waits; with many, a group commits in one round trip what took one each, so the
// server's work and the commits per append shrink.
//
// Two slots, not one: while one group waits for its commit to reach the disk, the next one runs.
//
// Only appends after a version their store knows (see PostgresEventStore::known_base), outside
// a caller's transaction, of at most kMaxJobEvents events, take part: their statement needs no
// head lookup. Many stores appending to one stream each know an older version than the last
// one written, so the groups remember the newest version of each stream that the process's
// appends stored and append after it (an `any` or `stream_exists` append), or let the append run
// alone when it is known to fail (`no_stream`, `exact`). A group's statement waits for each of
// its streams' locks at most group_lock_wait. A version another writer took (another process)
// fails the whole statement, and a lock that does not come in time too; the appends that stored
// nothing then run again alone, which names their outcome (see Job::result).
class AppendGroups {
 public:
  static constexpr int kMaxInFlight = 2;
  static constexpr size_t kMaxGroupEvents = 1000;
  // A group's data and metadata bytes: its statement's arrays stay far below PostgreSQL's 1 GiB
  // per value. A leader's own append may be larger (up to kMaxAppendBytes); it then runs alone.
  static constexpr size_t kMaxGroupBytes = size_t{16} << 20;
  // Larger appends run outside the groups, as many at once as there are writers: their rows are
  // most of their work, so sharing a commit saves them little, and waiting for a slot would cost
  // them the server's other cores.
  static constexpr size_t kMaxJobEvents = 20;

  // One append waiting in, or leading, a group.
  struct Job {
    std::string_view stream_id;
    ExpectedVersion expected = ExpectedVersion::any();
    int64_t base = 0;  // a version of the stream its store knows to exist (0: a new stream)
    // The server its store learned `base` from (see PostgresEventStore::server_identity): a group
    // holds only appends of the server its leader is connected to, so that a version one server
    // has is never assumed on another (a promoted replica may lack the latest commits).
    std::string_view server;
    std::span<const EventData> events;
    // How long it waits for a group to take it before it runs alone (see
    // PostgresStoreOptions::group_wait).
    std::chrono::milliseconds max_wait{0};
    // Set by the group's leader. Left empty when the append stored nothing (its expected
    // version did not hold, or the group's transaction failed): it then runs alone.
    std::optional<Result<AppendResult>> result;

   private:
    friend class AppendGroups;
    std::string key;     // server and stream
    size_t bytes = 0;    // its events' data and metadata
    bool done = false;   // its group ran
    bool lead = false;   // it leads the next group
    bool taken = false;  // a group took it
    std::condition_variable wake;
  };

  // Runs a group (of one or more jobs, the first is the caller's) on the leader's store and
  // sets each job's result.
  using GroupRunner = std::function<void(std::span<Job* const> group)>;

  // The groups of the stores of `key` (a conninfo and options) in this process, created on first
  // use and kept while a store holds them.
  static std::shared_ptr<AppendGroups> for_key(const std::string& key);

  // Returns once `job` ran: in a group that this thread led with `run` (on its own store), or
  // in one another thread led.
  void run(Job& job, const GroupRunner& run);

  // Appends waiting for a group now (for tests).
  size_t waiting() const;

  // Records that `version` of a stream exists on `server`, for an append that ran alone: groups
  // then append after it, not after an older version a store remembers (see Job::base).
  void note(std::string_view server, std::string_view stream_id, int64_t version);

 private:
  static constexpr size_t kMaxKnownStreams = 10'000;

  // Brings `job`'s base up to the newest version of its stream the groups know. False when the
  // append is known to fail (no_stream or exact(base) of a stream with a newer version).
  bool freshen(Job& job);
  void note_locked(const std::string& key, int64_t version) noexcept;
  // Hands free slots to the first waiting appends whose streams no group is writing.
  void promote_next() noexcept;

  mutable std::mutex mutex_;
  int in_flight_ = 0;
  std::deque<Job*> queue_;
  // The server and stream (Job::key) of every append in a running group, or promoted to lead:
  // two groups never write one stream at once, so neither fails on the other's versions.
  std::unordered_set<std::string> running_;
  // The newest version of each stream (by Job::key) that appends of the process stored.
  std::unordered_map<std::string, int64_t> versions_;
};

}  // namespace cqrs::pg
