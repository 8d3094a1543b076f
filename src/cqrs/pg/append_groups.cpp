#include "cqrs/pg/append_groups.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

#include "cqrs/append_validation.hpp"

namespace cqrs::pg {

std::shared_ptr<AppendGroups> AppendGroups::for_key(const std::string& key) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<AppendGroups>> registry;
  std::lock_guard lock(registry_mutex);
  std::weak_ptr<AppendGroups>& slot = registry[key];
  if (auto existing = slot.lock()) return existing;
  for (auto it = registry.begin(); it != registry.end();) {
    it = it->second.expired() && it->first != key ? registry.erase(it) : std::next(it);
  }
  auto groups = std::make_shared<AppendGroups>();
  slot = groups;
  return groups;
}

namespace {

std::string key_of(std::string_view server, std::string_view stream_id) {
  std::string key;
  key.reserve(server.size() + 1 + stream_id.size());
  key.append(server).push_back('\n');
  key.append(stream_id);
  return key;
}

}  // namespace

bool AppendGroups::freshen(Job& job) {
  auto known = versions_.find(job.key);
  if (known == versions_.end() || known->second <= job.base) return true;
  auto kind = job.expected.kind();
  if (kind != ExpectedVersion::Kind::kAny && kind != ExpectedVersion::Kind::kStreamExists) {
    return false;  // no_stream or exact(base): a newer version exists, so it must fail
  }
  job.base = known->second;
  return true;
}

void AppendGroups::note_locked(const std::string& key, int64_t version) noexcept {
  try {
    auto [it, added] = versions_.try_emplace(key, version);
    if (!added) {
      it->second = std::max(it->second, version);
    } else if (versions_.size() > kMaxKnownStreams) {
      versions_.clear();
      versions_.emplace(key, version);
    }
  } catch (...) {
    // Out of memory. The versions are hints: without them a group holding a stale base fails
    // as a whole and its appends run alone.
    versions_.clear();
  }
}

void AppendGroups::note(std::string_view server, std::string_view stream_id, int64_t version) {
  std::string key = key_of(server, stream_id);
  std::lock_guard lock(mutex_);
  note_locked(key, version);
}

void AppendGroups::promote_next() noexcept {
  for (auto it = queue_.begin(); it != queue_.end() && in_flight_ < kMaxInFlight;) {
    Job* next = *it;
    if (running_.contains(next->key)) {
      ++it;
      continue;
    }
    // Out of memory here ends the process (noexcept): a slot or an append lost instead would
    // hang every later append of the process.
    running_.insert(next->key);
    it = queue_.erase(it);
    next->lead = true;
    ++in_flight_;
    next->wake.notify_one();
  }
}

void AppendGroups::run(Job& job, const GroupRunner& run) {
  job.key = key_of(job.server, job.stream_id);
  job.bytes = payload_bytes(job.events);
  std::unique_lock lock(mutex_);
  if (!freshen(job)) return;  // known to fail: alone, it is told why
  if (in_flight_ < kMaxInFlight && queue_.empty() && !running_.contains(job.key)) {
    running_.insert(job.key);  // first: should it throw, nothing is taken
    ++in_flight_;
  } else {
    queue_.push_back(&job);
    promote_next();  // a free slot takes the first waiting append whose stream no group writes
    if (job.lead) {
      // Promoted at once: the slot and the stream are taken, and the job left the queue.
    } else if (!job.wake.wait_for(lock, job.max_wait,
                                  [&] { return job.done || job.lead || job.taken; })) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &job));
      return;  // no result: it runs alone
    }
    job.wake.wait(lock, [&] { return job.done || job.lead; });
    if (job.done) return;
    // Promoted to lead: the slot and the stream are taken already, and the job left the queue.
    // Groups that ran meanwhile may have stored newer versions of its stream.
    if (!freshen(job)) {
      running_.erase(job.key);
      --in_flight_;
      promote_next();
      return;
    }
  }

  // The group: this job, then the waiting ones in order: one per stream, none of a stream another
  // group is writing, all of this job's server, within the size bound. Waiting appends that are
  // known to fail leave to run alone. Should this fail (out of memory), the jobs taken so far run
  // alone, and the others stay in the queue as they were.
  std::vector<Job*> group;
  bool formed = false;
  try {
    group.reserve(1 + queue_.size());  // no allocation once jobs are taken
    group.push_back(&job);
    size_t events = job.events.size();
    size_t group_bytes = job.bytes;
    for (auto it = queue_.begin(); it != queue_.end();) {
      Job* waiting = *it;
      if (waiting->server != job.server || running_.contains(waiting->key)) {
        ++it;
        continue;
      }
      if (events + waiting->events.size() > kMaxGroupEvents ||
          group_bytes + waiting->bytes > kMaxGroupBytes) {
        break;
      }
      running_.insert(waiting->key);  // the only step that may throw: before the job is moved
      it = queue_.erase(it);
      if (!freshen(*waiting)) {
        running_.erase(waiting->key);
        waiting->done = true;
        waiting->wake.notify_one();
        continue;
      }
      events += waiting->events.size();
      group_bytes += waiting->bytes;
      waiting->taken = true;
      group.push_back(waiting);
    }
    formed = true;
  } catch (...) {
  }
  lock.unlock();

  if (formed) {
    // An exception leaves the outcome of the group's appends unknown: none may run again.
    std::string failure;
    try {
      run(group);
    } catch (const std::exception& error) {
      failure = error.what();
    } catch (...) {
      failure = "unknown exception";
    }
    if (!failure.empty()) {
      for (Job* member : group) {
        if (!member->result) {
          member->result = Error::internal(errc::kStoreError, "a group append failed: " + failure);
        }
      }
    }
  }

  lock.lock();
  // The leader's stream first: `group` is empty when forming it failed at once.
  running_.erase(job.key);
  if (job.result && job.result->ok()) note_locked(job.key, (*job.result)->stream_version);
  for (Job* member : group) {
    if (member == &job) continue;
    if (member->result && member->result->ok()) {
      note_locked(member->key, (*member->result)->stream_version);
    }
    running_.erase(member->key);
    member->done = true;
    member->wake.notify_one();
  }
  --in_flight_;
  promote_next();
}

size_t AppendGroups::waiting() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

}  // namespace cqrs::pg
