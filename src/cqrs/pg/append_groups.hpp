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

#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs::pg {

// The appends of every PostgresEventStore of a process that share a database (and options).
//
// At most kMaxInFlight groups run at once, each on the connection of the store that leads it.
// An append that finds a free slot leads at once: alone, it runs as it would without groups. An
// append that finds both slots taken waits; when a group ends, the first waiting append leads
// the next one and takes every waiting append along (up to kMaxGroupEvents events, one append
// per stream). With one writer nothing ever waits; with many, a group commits in one round
// trip what took one each, so the server's work and the commits per append shrink.
//
// Two slots, not one: while one group waits for its commit to reach the disk, the next one runs.
//
// Only appends after a version the store knows (see PostgresEventStore::known_base) outside a
// caller's transaction take part. Their statement needs no head lookup: a stale version fails
// the whole group on the primary key, and then every append of it runs again alone, which
// names the error of the one that failed (see Job::result).
class AppendGroups {
 public:
  static constexpr int kMaxInFlight = 2;
  static constexpr size_t kMaxGroupEvents = 1000;
  // Larger appends run outside the groups, as many at once as there are writers: their rows are
  // most of their work, so sharing a commit saves them little, and waiting for a slot would cost
  // them the server's other cores.
  static constexpr size_t kMaxJobEvents = 20;

  // One append waiting in, or leading, a group.
  struct Job {
    std::string_view stream_id;
    ExpectedVersion expected = ExpectedVersion::any();
    int64_t base = 0;  // the version the events go right after
    std::span<const EventData> events;
    // How long it waits for a group to take it before it runs alone (see
    // PostgresStoreOptions::group_wait).
    std::chrono::milliseconds max_wait{0};
    // Set by the group's leader. Left empty when the group's statement failed without
    // committing anything: the append then runs alone.
    std::optional<Result<AppendResult>> result;

   private:
    friend class AppendGroups;
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

 private:
  mutable std::mutex mutex_;
  int in_flight_ = 0;
  std::deque<Job*> queue_;
};

}  // namespace cqrs::pg
