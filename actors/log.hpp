// Structured logging for the daemon: one line per event with key/value fields, as text
// ("message key=value ...", values with spaces, quotes or line breaks quoted and escaped, so an
// event never spans lines) or as one JSON object per line (--log.format=json).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace cqrs::log {

enum class Level { kDebug, kInfo, kWarn, kError };
enum class Format { kText, kJson };

// Configures the process-wide logger (stderr). Errors: an unknown level or format name is
// reported by returning false. Call once at start, before other threads log.
bool configure(std::string_view level, std::string_view format);

using Field = std::pair<std::string_view, std::string>;

// The configured format.
Format format();

// The line write() logs for an event, without the text format's time and level prefix (spdlog
// adds those); JSON lines carry "time" (ms since the epoch), "level" and "msg" themselves.
std::string render(Format format, Level level, std::string_view message,
                   std::initializer_list<Field> fields);

void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void debug(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::kDebug, message, fields);
}
inline void info(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::kInfo, message, fields);
}
inline void warn(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::kWarn, message, fields);
}
inline void error(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::kError, message, fields);
}

}  // namespace cqrs::log
