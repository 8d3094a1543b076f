// Replays the fuzz targets' seed corpus (fuzz/corpus/<target>/) and every saved crashing or slow
// input (fuzz/regressions/<target>/) through the same checks the fuzz targets run, in the normal
// build, so a fixed bug stays fixed without clang or libFuzzer.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_checks.hpp"

namespace cqrs::fuzz {
namespace {

namespace fs = std::filesystem;

const fs::path kFuzzDir = CQRS_FUZZ_DIR;

// The files of fuzz/corpus/<target>/ and fuzz/regressions/<target>/, sorted.
std::vector<fs::path> inputs_of(const std::string& target, bool with_regressions = true) {
  std::vector<fs::path> inputs;
  for (const char* kind : {"corpus", "regressions"}) {
    if (!with_regressions && std::string(kind) == "regressions") continue;
    fs::path dir = kFuzzDir / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().filename().string().front() != '.') {
        inputs.push_back(entry.path());
      }
    }
  }
  std::sort(inputs.begin(), inputs.end());
  return inputs;
}

std::string contents(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(FuzzRegression, EnvelopeInputsDecodeCleanly) {
  std::vector<fs::path> inputs = inputs_of("envelope");
  ASSERT_FALSE(inputs.empty()) << "no inputs under " << kFuzzDir;
  for (const fs::path& path : inputs) {
    EXPECT_EQ(check_envelope(contents(path)), "") << path;
  }
}

TEST(FuzzRegression, GiftCardCommandInputsDecodeCleanly) {
  std::vector<fs::path> inputs = inputs_of("giftcard_commands");
  ASSERT_FALSE(inputs.empty()) << "no inputs under " << kFuzzDir;
  for (const fs::path& path : inputs) {
    EXPECT_EQ(check_command(giftcard_domain(), contents(path)), "") << path;
  }
}

TEST(FuzzRegression, BankCommandInputsDecodeCleanly) {
  std::vector<fs::path> inputs = inputs_of("bank_commands");
  ASSERT_FALSE(inputs.empty()) << "no inputs under " << kFuzzDir;
  for (const fs::path& path : inputs) {
    EXPECT_EQ(check_command(bank_domain(), contents(path)), "") << path;
  }
}

// The seed corpus holds a valid payload of every registered command, so the fuzzers start from
// each command's mapping and a newly registered command without seeds fails here.
TEST(FuzzRegression, SeedCorpusHasAValidPayloadOfEveryCommand) {
  struct Target {
    std::string name;
    const Domain& domain;
  };
  for (const Target& target :
       {Target{"giftcard_commands", giftcard_domain()}, Target{"bank_commands", bank_domain()}}) {
    std::vector<std::string> seeds;
    for (const fs::path& path : inputs_of(target.name, false)) seeds.push_back(contents(path));
    for (const AggregateType* aggregate : target.domain.aggregates()) {
      for (const std::string& command : aggregate->command_names()) {
        bool decodes = std::any_of(seeds.begin(), seeds.end(), [&](const std::string& seed) {
          return seed.starts_with(command + "\n") &&
                 target.domain.decode(command, seed.substr(command.size() + 1)).ok();
        });
        EXPECT_TRUE(decodes) << target.name << " has no valid seed for " << command;
      }
    }
  }
}

}  // namespace
}  // namespace cqrs::fuzz
