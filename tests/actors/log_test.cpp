// Log lines as cqrsd writes them: text lines stay on one line with unambiguous key=value pairs,
// and JSON lines are one object with the fields.
#include "actors/log.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace cqrs::log {
namespace {

TEST(LogLine, TextQuotesValuesWithSpacesQuotesOrLineBreaks) {
  std::string line = render(Format::kText, Level::kWarn, "store down\nretrying",
                            {{"command_id", "0192-ab"},
                             {"error", "cannot connect: refused\n\tIs the server running?"},
                             {"message", "say \"hi\" a=b"},
                             {"status", ""}});
  EXPECT_EQ(line,
            "store down\\nretrying command_id=0192-ab"
            " error=\"cannot connect: refused\\n\\tIs the server running?\""
            " message=\"say \\\"hi\\\" a=b\" status=");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(LogLine, JsonIsOneObjectWithTheFields) {
  std::string line = render(Format::kJson, Level::kInfo, "dispatched",
                            {{"command_id", "0192-ab"}, {"correlation_id", "order\n17"}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << line;
  EXPECT_EQ(parsed["msg"], "dispatched");
  EXPECT_EQ(parsed["level"], "info");
  EXPECT_TRUE(parsed["time"].is_number_integer());
  EXPECT_EQ(parsed["command_id"], "0192-ab");
  EXPECT_EQ(parsed["correlation_id"], "order\n17");
}

}  // namespace
}  // namespace cqrs::log
