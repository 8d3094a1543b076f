#include "cqrs/pg/append_groups.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

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

void AppendGroups::run(Job& job, const GroupRunner& run) {
  std::unique_lock lock(mutex_);
  if (in_flight_ < kMaxInFlight && queue_.empty()) {
    ++in_flight_;
  } else {
    queue_.push_back(&job);
    if (!job.wake.wait_for(lock, job.max_wait, [&] { return job.done || job.lead || job.taken; })) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &job));
      return;  // no result: it runs alone
    }
    job.wake.wait(lock, [&] { return job.done || job.lead; });
    if (job.done) return;
    // Promoted to lead: the slot is counted already, and the job left the queue.
  }

  // The group: this job, then the waiting ones in order, one per stream, within the size bound.
  std::vector<Job*> group{&job};
  size_t events = job.events.size();
  std::set<std::string_view> streams{job.stream_id};
  for (auto it = queue_.begin(); it != queue_.end();) {
    Job* waiting = *it;
    if (events + waiting->events.size() > kMaxGroupEvents) break;
    if (!streams.insert(waiting->stream_id).second) {
      ++it;  // a second append to a stream waits for the next group
      continue;
    }
    events += waiting->events.size();
    waiting->taken = true;
    group.push_back(waiting);
    it = queue_.erase(it);
  }
  lock.unlock();

  try {
    run(group);
  } catch (...) {
    // Whatever did not get a result runs alone.
  }

  lock.lock();
  for (Job* member : group) {
    if (member == &job) continue;
    member->done = true;
    member->wake.notify_one();
  }
  --in_flight_;
  if (!queue_.empty() && in_flight_ < kMaxInFlight) {
    Job* next = queue_.front();
    queue_.pop_front();
    next->lead = true;
    ++in_flight_;
    next->wake.notify_one();
  }
}

size_t AppendGroups::waiting() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

}  // namespace cqrs::pg
