// Hooks around every dispatched command: before it is routed, after it is answered, and when it
// fails (rejections are answers, not failures); and for envelopes refused before routing.
// Middlewares run in the gateway, in registration order (after and on_failure in reverse), on the
// gateway's thread: keep them fast and non-blocking.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "cqrs/result.hpp"

namespace cqrs {

struct DispatchContext {
  std::string command_type;
  std::string command_id;
  std::string correlation_id;
  std::string stream_id;
  std::chrono::steady_clock::time_point started;
};

struct DispatchSummary {
  std::string status;  // ok | rejected | error
  std::string error;   // the code, when not ok
  std::chrono::microseconds elapsed{0};
};

class Middleware {
 public:
  virtual ~Middleware() = default;
  virtual void before(const DispatchContext&) {}
  virtual void after(const DispatchContext&, const DispatchSummary&) {}
  // The command could not be answered by its aggregate (transport error, timeout).
  virtual void on_failure(const DispatchContext&, const Error&) {}
  // The gateway refused an envelope before routing it (malformed, unregistered type, too
  // large); no context exists for it, and before/after are not called.
  virtual void on_refused(const Error&) {}
};

}  // namespace cqrs
