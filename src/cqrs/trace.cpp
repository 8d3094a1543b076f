// The causal tree of a correlation, and the JSON form of stored events.
#include "cqrs/trace.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <set>

namespace cqrs {
namespace {

std::string iso_time(int64_t micros) {
  std::time_t seconds = static_cast<std::time_t>(micros / 1000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[40];
  size_t length = std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + length, sizeof(text) - length, ".%06lldZ",
                static_cast<long long>(micros % 1000000));
  return text;
}

nlohmann::json parsed(const std::string& text) {
  auto value = nlohmann::json::parse(text, nullptr, false);
  return value.is_discarded() ? nlohmann::json(text) : value;
}

std::string field(const nlohmann::json& metadata, const char* name) {
  auto found = metadata.find(name);
  return found != metadata.end() && found->is_string() ? found->get<std::string>() : "";
}

}  // namespace

nlohmann::json event_json(const RecordedEvent& event) {
  return {{"stream_id", event.stream_id},
          {"version", event.stream_version},
          {"type", event.type},
          {"type_version", event.type_version},
          {"event_id", event.event_id.to_string()},
          {"position", event.position().to_string()},
          {"time", iso_time(event.created_at_us)},
          {"data", parsed(event.data)},
          {"metadata", parsed(event.metadata)}};
}

nlohmann::json trace_tree(const std::vector<RecordedEvent>& unordered) {
  std::vector<const RecordedEvent*> events;
  for (const RecordedEvent& event : unordered) events.push_back(&event);
  std::sort(events.begin(), events.end(), [](const RecordedEvent* a, const RecordedEvent* b) {
    return a->position() < b->position();
  });

  // Commands in order of their first event, with their events and their cause.
  struct Command {
    std::string id;
    std::string type;
    std::string stream_id;
    std::string cause;
    std::vector<const RecordedEvent*> events;
  };
  std::vector<Command> commands;
  std::map<std::string, size_t> command_index;
  std::set<std::string> event_ids;
  for (const RecordedEvent* event : events) {
    event_ids.insert(event->event_id.to_string());
    nlohmann::json metadata = parsed(event->metadata);
    if (!metadata.is_object()) metadata = nlohmann::json::object();
    std::string id = field(metadata, "command_id");
    auto [it, added] = command_index.emplace(id, commands.size());
    if (added) {
      commands.push_back(Command{id,
                                 field(metadata, "command_type"),
                                 event->stream_id,
                                 field(metadata, "causation_id"),
                                 {}});
    }
    commands[it->second].events.push_back(event);
  }
  // Children of each event: the commands it caused.
  std::map<std::string, std::vector<size_t>> caused_by;
  std::vector<size_t> roots;
  for (size_t idx = 0; idx < commands.size(); ++idx) {
    const Command& command = commands[idx];
    if (command.cause != command.id && event_ids.count(command.cause)) {
      caused_by[command.cause].push_back(idx);
    } else {
      roots.push_back(idx);
    }
  }
  std::function<nlohmann::json(size_t, int)> build = [&](size_t idx, int depth) {
    const Command& command = commands[idx];
    nlohmann::json node = {{"command_id", command.id},
                           {"command_type", command.type},
                           {"stream_id", command.stream_id},
                           {"events", nlohmann::json::array()}};
    for (const RecordedEvent* event : command.events) {
      nlohmann::json entry = event_json(*event);
      entry.erase("metadata");
      entry["caused"] = nlohmann::json::array();
      // A cycle cannot come from real metadata; the depth bound keeps odd data finite.
      if (depth < 64) {
        for (size_t child : caused_by[event->event_id.to_string()]) {
          entry["caused"].push_back(build(child, depth + 1));
        }
      }
      node["events"].push_back(std::move(entry));
    }
    return node;
  };
  nlohmann::json tree = nlohmann::json::array();
  for (size_t idx : roots) tree.push_back(build(idx, 0));
  return tree;
}

std::string render_trace(const nlohmann::json& tree) {
  std::string out;
  std::function<void(const nlohmann::json&, int)> command_lines = [&](const nlohmann::json& node,
                                                                      int depth) {
    std::string pad(static_cast<size_t>(depth) * 4, ' ');
    std::string type = node.value("command_type", "");
    out += pad + "command " + (type.empty() ? std::string("(type not recorded)") : type) + " " +
           node.value("command_id", "") + " -> " + node.value("stream_id", "") + "\n";
    for (const auto& event : node["events"]) {
      out += pad + "  event " + event.value("type", "") + " " + event.value("stream_id", "") + "@" +
             std::to_string(event.value("version", int64_t{0})) + " " + event["data"].dump() + "\n";
      for (const auto& child : event["caused"]) command_lines(child, depth + 1);
    }
  };
  for (const auto& root : tree) command_lines(root, 0);
  return out;
}

}  // namespace cqrs
