// AppendGroups on its own, with a runner that records the groups instead of writing them: who
// waits, who leads, and which waiting appends a leader takes along.
#include "cqrs/pg/append_groups.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace cqrs::pg {
namespace {

using Job = AppendGroups::Job;

// Runs jobs through one AppendGroups. While `hold` is set, groups that contain a stream named
// "hold-*" wait in the runner, as a group waits for a lock in the database.
class Groups {
 public:
  // Starts an append on a thread of its own; returns at once. Its first event carries
  // `data_bytes` of data.
  void start(std::string stream, std::string server, size_t events = 1,
             std::chrono::milliseconds max_wait = std::chrono::seconds(60), size_t data_bytes = 0) {
    auto job = std::make_unique<Owned>();
    job->stream = std::move(stream);
    job->server = std::move(server);
    job->events.resize(events);
    job->events.front().data.assign(data_bytes, 'x');
    Owned* raw = job.get();
    jobs_.push_back(std::move(job));
    threads_.emplace_back([this, raw, max_wait] {
      Job& running = raw->job;
      running.stream_id = raw->stream;
      running.server = raw->server;
      running.events = raw->events;
      running.max_wait = max_wait;
      groups_.run(running, [this](std::span<Job* const> group) { run_group(group); });
      raw->ran = running.result.has_value();
      raw->finished = true;
    });
  }

  void wait_for_waiting(size_t count) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (groups_.waiting() != count) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out";
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  void wait_for_held(int count) {
    std::unique_lock lock(mutex_);
    ASSERT_TRUE(changed_.wait_for(lock, std::chrono::seconds(20), [&] { return held_ == count; }));
  }

  void release() {
    std::lock_guard lock(mutex_);
    hold_ = false;
    changed_.notify_all();
  }

  void join() {
    for (auto& thread : threads_) thread.join();
    threads_.clear();
  }

  // The groups in the order they ran, each as its streams, leader first.
  std::vector<std::vector<std::string>> groups() {
    std::lock_guard lock(mutex_);
    return groups_run_;
  }

  // Whether the append of `stream` got its result from a group (rather than running alone).
  bool ran_in_group(const std::string& stream) const {
    for (const auto& job : jobs_) {
      if (job->stream == stream) return job->ran;
    }
    return false;
  }

  // Whether the append of `stream` returned.
  bool finished(const std::string& stream) const {
    for (const auto& job : jobs_) {
      if (job->stream == stream) return job->finished;
    }
    return false;
  }

 private:
  struct Owned {
    Job job;
    std::string stream;
    std::string server;
    std::vector<EventData> events;
    std::atomic<bool> ran{false};
    std::atomic<bool> finished{false};
  };

  void run_group(std::span<Job* const> group) {
    std::unique_lock lock(mutex_);
    std::vector<std::string> streams;
    bool holds = false;
    for (Job* job : group) {
      streams.emplace_back(job->stream_id);
      holds = holds || job->stream_id.starts_with("hold-");
      job->result = AppendResult{};
    }
    groups_run_.push_back(std::move(streams));
    if (holds) {
      ++held_;
      changed_.notify_all();
      changed_.wait(lock, [&] { return !hold_; });
    }
  }

  AppendGroups groups_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool hold_ = true;
  int held_ = 0;
  std::vector<std::vector<std::string>> groups_run_;
  std::vector<std::unique_ptr<Owned>> jobs_;
  std::vector<std::thread> threads_;
};

TEST(AppendGroups, OneWriterNeverWaits) {
  Groups groups;
  groups.start("a", "server");
  groups.join();
  groups.start("a", "server");
  groups.join();
  EXPECT_EQ(groups.groups(), (std::vector<std::vector<std::string>>{{"a"}, {"a"}}));
}

// With both slots taken, the appends that wait go together, except a second append to a stream
// and an append learned from another server, which wait for groups of their own.
TEST(AppendGroups, ALeaderTakesTheWaitingAppendsOfItsServerOnePerStream) {
  Groups groups;
  groups.start("hold-1", "server");
  groups.start("hold-2", "server");
  groups.wait_for_held(2);
  groups.start("x", "server");
  groups.wait_for_waiting(1);
  groups.start("y", "other server");
  groups.wait_for_waiting(2);
  groups.start("x", "server");
  groups.wait_for_waiting(3);
  groups.start("z", "server");
  groups.wait_for_waiting(4);
  groups.release();
  groups.join();

  auto ran = groups.groups();
  std::string described;
  for (const auto& group : ran) {
    described += "{";
    for (const auto& stream : group) described += stream + " ";
    described += "} ";
  }
  // Which waiting append leads next depends on which thread wakes first, so the groups differ
  // from run to run; these hold in every order.
  std::multiset<std::string> appended;
  for (const auto& group : ran) {
    std::set<std::string> streams(group.begin(), group.end());
    EXPECT_EQ(streams.size(), group.size())
        << "two appends to one stream in a group: " << described;
    if (group.size() > 1) {
      EXPECT_FALSE(streams.contains("y")) << "an append of another server joined: " << described;
    }
    appended.insert(group.begin(), group.end());
  }
  EXPECT_EQ(appended, (std::multiset<std::string>{"hold-1", "hold-2", "x", "x", "y", "z"}))
      << described;
  EXPECT_TRUE(groups.ran_in_group("z"));
}

TEST(AppendGroups, TheGroupBoundLeavesTheRestWaiting) {
  Groups groups;
  groups.start("hold-1", "server");
  groups.start("hold-2", "server");
  groups.wait_for_held(2);
  groups.start("a", "server", 600);
  groups.wait_for_waiting(1);
  groups.start("b", "server", 600);
  groups.wait_for_waiting(2);
  groups.release();
  groups.join();
  auto ran = groups.groups();
  ASSERT_EQ(ran.size(), 4u);
  EXPECT_EQ(ran[2].size(), 1u) << "1,200 events exceed one group's 1,000";
  EXPECT_EQ(ran[3].size(), 1u);
}

// Bytes bound a group as events do: its statement's arrays stay small. Both slots free at
// once, so "a" and "b" lead, and no group takes a second large append along.
TEST(AppendGroups, TheGroupByteBoundLeavesTheRestWaiting) {
  constexpr size_t kLarge = AppendGroups::kMaxGroupBytes / 2 + 1;
  Groups groups;
  groups.start("hold-1", "server");
  groups.start("hold-2", "server");
  groups.wait_for_held(2);
  size_t waiting = 0;
  for (const char* stream : {"a", "b", "c", "d"}) {
    groups.start(stream, "server", 1, std::chrono::seconds(60), *stream == 'd' ? 1000 : kLarge);
    groups.wait_for_waiting(++waiting);
  }
  groups.release();
  groups.join();
  auto ran = groups.groups();
  ASSERT_GE(ran.size(), 5u);
  // Which leader forms its group first is up to the threads: "d" joins "b" or "c", or leads.
  std::multiset<std::string> appended;
  for (auto group = ran.begin() + 2; group != ran.end(); ++group) {
    EXPECT_LE(std::count_if(group->begin(), group->end(), [](auto& s) { return s != "d"; }), 1)
        << "two large appends exceed one group's bytes";
    appended.insert(group->begin(), group->end());
  }
  EXPECT_EQ(appended, (std::multiset<std::string>{"a", "b", "c", "d"}));
}

TEST(AppendGroups, AnAppendThatWaitsTooLongRunsAlone) {
  Groups groups;
  groups.start("hold-1", "server");
  groups.start("hold-2", "server");
  groups.wait_for_held(2);
  groups.start("late", "server", 1, std::chrono::milliseconds(10));
  // It returns on its own, without a result, while both slots stay taken.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!groups.finished("late") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(groups.finished("late"));
  EXPECT_FALSE(groups.ran_in_group("late"));
  EXPECT_EQ(groups.groups().size(), 2u);
  groups.release();
  groups.join();
  EXPECT_EQ(groups.groups().size(), 2u);
}

}  // namespace
}  // namespace cqrs::pg
