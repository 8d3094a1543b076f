// libFuzzer target: dispatch envelopes, decoded with decode_envelope() as the gateway does, against
// the shipped domains. Invariants: fuzz_checks.hpp. Run with scripts/fuzz (docs/fuzzing.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string problem = cqrs::fuzz::check_envelope(input);
  if (!problem.empty()) {
    std::fprintf(stderr, "fuzz_envelope: invariant violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
