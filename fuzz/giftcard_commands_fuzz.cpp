// libFuzzer target: "<type>\\n<payload>" inputs, decoded by type name through the gift card
// registry. Invariants: fuzz_checks.hpp. Run with scripts/fuzz (docs/fuzzing.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string problem = cqrs::fuzz::check_command(cqrs::fuzz::giftcard_domain(), input);
  if (!problem.empty()) {
    std::fprintf(stderr, "fuzz_giftcard_commands: invariant violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
