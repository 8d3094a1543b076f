// The invariants the fuzz targets check, shared with the regression test that replays the corpus
// and the saved crashing inputs (tests/unit/fuzz_regression_test.cpp) in the normal build.
//
// Every check feeds one input through the decoding functions cqrsd uses and returns "" when the
// input was handled cleanly: either a command that satisfies the checks below, or an error of
// kind kInvalidInput with a known snake_case code and a non-empty UTF-8 message that names what
// is wrong. Otherwise it returns a description of the violated invariant. A crash, a sanitizer
// report or an escaping exception is a failure too (the fuzz target aborts; the test fails).
#pragma once

#include <string>
#include <string_view>

#include "cqrs/domain/domain.hpp"

namespace cqrs::fuzz {

// A domain with the gift card and bank domains registered, as cqrsd runs them.
const Domain& shipped_domain();
// A domain with only the gift card domain, or only the bank domain.
const Domain& giftcard_domain();
const Domain& bank_domain();

// `input` is a dispatch envelope (cqrs/envelope.hpp), decoded with decode_envelope() against
// shipped_domain() as the gateway does. A decoded command is also executed against fresh and
// prepared aggregates (see check_command).
std::string check_envelope(std::string_view input);

// `input` is "<command type>\n<payload JSON text>", decoded by type name through `domain`'s
// registry both from text (the envelope's "payload") and from a parsed document (its "data");
// the two must agree. A decoded command must carry exactly the payload's fields (it encodes back
// to them, and decodes again to the same command), and executing it against a fresh aggregate
// and against aggregates with a prepared history must reject it with a snake_case code or
// produce events of the aggregate's registered types that it applies (and unique claims in
// registered scopes), with a state that survives a snapshot round trip.
std::string check_command(const Domain& domain, std::string_view input);

}  // namespace cqrs::fuzz
