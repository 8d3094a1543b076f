// spdlog behind the structured logging facade.
#include "actors/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <nlohmann/json.hpp>

namespace cqrs::log {
namespace {

std::atomic<Format> g_format{Format::kText};

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto created = spdlog::stderr_logger_mt("cqrsd");
    created->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
    return created;
  }();
  return instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// Appends `value` as is, or quoted with \\, \", \n, \r and \t escaped when it holds a space,
// a quote, an equals sign or a control character (the message, first on the line, is never
// quoted: only its line breaks are escaped).
void append_text_value(std::string& out, std::string_view value, bool quote_when_needed = true) {
  bool needs_quotes = false;
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      needs_quotes = true;
      break;
    }
  }
  bool quoted = needs_quotes && quote_when_needed;
  if (quoted) out += '"';
  for (char c : value) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (quoted && (c == '"' || c == '\\')) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  if (quoted) out += '"';
}

}  // namespace

bool configure(std::string_view level, std::string_view format) {
  auto instance = logger();
  if (level == "debug") {
    instance->set_level(spdlog::level::debug);
  } else if (level == "info") {
    instance->set_level(spdlog::level::info);
  } else if (level == "warn" || level == "warning") {
    instance->set_level(spdlog::level::warn);
  } else if (level == "error") {
    instance->set_level(spdlog::level::err);
  } else {
    return false;
  }
  if (format == "json") {
    g_format = Format::kJson;
    instance->set_pattern("%v");
  } else if (format == "text") {
    g_format = Format::kText;
    instance->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  } else {
    return false;
  }
  instance->flush_on(spdlog::level::info);
  return true;
}

Format format() { return g_format; }

std::string render(Format line_format, Level level, std::string_view message,
                   std::initializer_list<Field> fields) {
  if (line_format == Format::kJson) {
    nlohmann::json line = {{"time", std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count()},
                           {"level", spdlog::level::to_string_view(to_spdlog(level)).data()},
                           {"msg", message}};
    for (const auto& [key, value] : fields) line[std::string(key)] = value;
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string text;
  append_text_value(text, message, false);
  for (const auto& [key, value] : fields) {
    text += ' ';
    text += key;
    text += '=';
    append_text_value(text, value);
  }
  return text;
}

void write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  auto instance = logger();
  auto spd_level = to_spdlog(level);
  if (!instance->should_log(spd_level)) return;
  instance->log(spd_level, "{}", render(g_format, level, message, fields));
}

}  // namespace cqrs::log
