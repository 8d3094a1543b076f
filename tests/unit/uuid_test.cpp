// Uuid: generation, parsing, formatting.
#include "cqrs/uuid.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

namespace cqrs {
namespace {

TEST(Uuid, RandomIdsAreVersionFourAndDistinct) {
  std::set<Uuid> seen;
  for (int idx = 0; idx < 10000; ++idx) {
    Uuid id = Uuid::random();
    EXPECT_EQ(id.bytes()[6] >> 4, 4);
    EXPECT_EQ(id.bytes()[8] & 0xC0, 0x80);
    EXPECT_TRUE(seen.insert(id).second);
  }
}

TEST(Uuid, TimeOrderedIdsAreVersionSevenAndSortByCreationTime) {
  Uuid first = Uuid::time_ordered();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  Uuid second = Uuid::time_ordered();
  EXPECT_EQ(first.bytes()[6] >> 4, 7);
  EXPECT_EQ(first.bytes()[8] & 0xC0, 0x80);
  EXPECT_LT(first, second);
  EXPECT_LT(first.to_string(), second.to_string());
}

TEST(Uuid, FormatsAndParsesTheCanonicalForm) {
  auto parsed = Uuid::parse("123E4567-e89b-12d3-a456-426614174000");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->to_string(), "123e4567-e89b-12d3-a456-426614174000");
  Uuid id = Uuid::random();
  EXPECT_EQ(Uuid::parse(id.to_string()), id);
}

TEST(Uuid, RejectsMalformedText) {
  EXPECT_FALSE(Uuid::parse("").has_value());
  EXPECT_FALSE(Uuid::parse("123e4567e89b12d3a456426614174000").has_value());
  EXPECT_FALSE(Uuid::parse("123e4567-e89b-12d3-a456-42661417400g").has_value());
  EXPECT_FALSE(Uuid::parse("123e4567-e89b-12d3-a456_426614174000").has_value());
}

TEST(Uuid, DefaultIsNil) {
  EXPECT_TRUE(Uuid().is_nil());
  EXPECT_FALSE(Uuid::random().is_nil());
}

}  // namespace
}  // namespace cqrs
