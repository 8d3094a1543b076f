// EventHub: the newest message for every stream, superseded messages skipped, close() ending
// waiting streams, and the bound on open streams.
#include "cqrs/metrics/event_hub.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace cqrs::metrics {
namespace {

using namespace std::chrono_literals;
using Kind = EventHub::Next::Kind;

TEST(EventHub, ANewStreamGetsTheCurrentMessageAtOnce) {
  EventHub hub;
  uint64_t seen = 0;
  EXPECT_EQ(hub.next(seen, 0ms).kind, Kind::kTimeout) << "nothing published yet";
  hub.publish("one");
  EventHub::Next next = hub.next(seen, 0ms);
  EXPECT_EQ(next.kind, Kind::kMessage);
  EXPECT_EQ(next.message, "one");
  EXPECT_EQ(hub.next(seen, 0ms).kind, Kind::kTimeout) << "the same message is not sent twice";
}

TEST(EventHub, AStreamThatFellBehindGetsOnlyTheNewestMessage) {
  EventHub hub;
  uint64_t seen = 0;
  hub.publish("one");
  ASSERT_EQ(hub.next(seen, 0ms).message, "one");
  hub.publish("two");
  hub.publish("three");
  EventHub::Next next = hub.next(seen, 0ms);
  EXPECT_EQ(next.message, "three");
  EXPECT_EQ(hub.next(seen, 0ms).kind, Kind::kTimeout);
}

TEST(EventHub, PublishWakesAWaitingStream) {
  EventHub hub;
  uint64_t seen = 0;
  // Usually the stream waits before the thread publishes; the other order must work too.
  std::thread publisher([&] { hub.publish("late"); });
  EventHub::Next next = hub.next(seen, 10s);
  publisher.join();
  EXPECT_EQ(next.kind, Kind::kMessage);
  EXPECT_EQ(next.message, "late");
}

TEST(EventHub, CloseEndsWaitingAndLaterStreams) {
  EventHub hub;
  hub.publish("one");
  uint64_t seen = 0;
  ASSERT_EQ(hub.next(seen, 0ms).kind, Kind::kMessage);
  auto started = std::chrono::steady_clock::now();
  std::thread closer([&] { hub.close(); });
  EventHub::Next next = hub.next(seen, 10s);
  closer.join();
  EXPECT_EQ(next.kind, Kind::kClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  uint64_t fresh = 0;
  EXPECT_EQ(hub.next(fresh, 0ms).kind, Kind::kClosed);
  hub.publish("ignored");
  EXPECT_EQ(hub.next(fresh, 0ms).kind, Kind::kClosed);
  EXPECT_FALSE(hub.try_open(10)) << "no stream opens once closed";
}

TEST(EventHub, OpenStreamsAreBounded) {
  EventHub hub;
  EXPECT_TRUE(hub.try_open(2));
  EXPECT_TRUE(hub.try_open(2));
  EXPECT_FALSE(hub.try_open(2));
  EXPECT_EQ(hub.open_streams(), 2u);
  hub.release();
  EXPECT_EQ(hub.open_streams(), 1u);
  EXPECT_TRUE(hub.try_open(2));
}

}  // namespace
}  // namespace cqrs::metrics
