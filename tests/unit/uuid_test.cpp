// Uuid: generation, parsing, formatting.
#include "cqrs/uuid.hpp"

#include <gtest/gtest.h>

#include <set>

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
