// cqrsctl: dispatch commands to cqrsd and read aggregate state from the command line.
//
//   cqrsctl [--host H] [--port P] [--tls.cert F --tls.key F --tls.ca F] dispatch <CommandType>
//   '<json>' [--command-id ID]
//           [--correlation-id ID] [--metadata '<json>'] [--consistency eventual|strong]
//           [--timeout-ms N]
//   cqrsctl dispatch -        JSON lines {"type":..,"data":{..},"command_id":..} from stdin,
//                             many in flight, one result line per input line, in input order
//   cqrsctl state <AggregateType> <id>
//   cqrsctl status                          head, live aggregates, every handler's state
//   cqrsctl handler reset <name> [--no-wait]  rebuild a projection (progress on stderr)
//   cqrsctl handler restart <name>          restart a stopped handler
//   cqrsctl dead-letters [<name>]           dead letters as JSON lines
//   cqrsctl history <stream-id> [--from N] [--limit N] [--format json|table]
//   cqrsctl trace <correlation-id> [--format tree|json]
//
// Prints one JSON object per result on stdout. Exit code: 0 ok, 1 rejected, 2 usage,
// transport, timeout or server error (details on stderr).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

#include "actors/client.hpp"
#include "cqrs/event.hpp"
#include "cqrs/trace.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRejected = 1;
constexpr int kExitError = 2;

int exit_code_for(const cqrs::DispatchReply& reply) {
  if (reply.ok()) return kExitOk;
  return reply.status == "rejected" ? kExitRejected : kExitError;
}

std::string transport_reply(const cqrs::Error& error) {
  return cqrs::DispatchReply::from_error(error).canonical();
}

// `cqrsctl history --format table`: version, time, type, data (metadata left out).
std::string history_table(const nlohmann::json& events) {
  std::string out = "VERSION  TIME                         TYPE                      DATA\n";
  for (const auto& event : events) {
    char line[128];
    std::snprintf(line, sizeof(line), "%-8lld %-28s %-25s ",
                  static_cast<long long>(event.value("version", int64_t{0})),
                  event.value("time", "").c_str(), event.value("type", "").c_str());
    out += line + event["data"].dump() + "\n";
  }
  return out;
}

int print_reply(const cqrs::Result<cqrs::DispatchReply>& reply) {
  if (!reply) {
    std::printf("%s\n", transport_reply(reply.error()).c_str());
    std::fprintf(stderr, "cqrsctl: %s\n", reply.error().to_string().c_str());
    return kExitError;
  }
  std::printf("%s\n", reply->canonical().c_str());
  if (reply->status == "error") {
    std::fprintf(stderr, "cqrsctl: %s: %s\n", reply->error.c_str(), reply->message.c_str());
  }
  return exit_code_for(*reply);
}

// Reads JSON lines from stdin and dispatches them with a window of requests in flight.
int dispatch_stdin(cqrs::Client& client, size_t window, std::chrono::milliseconds timeout) {
  std::vector<std::string> envelopes;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json input = nlohmann::json::parse(line, nullptr, false);
    if (input.is_object() && !input.contains("timeout_ms")) {
      input["timeout_ms"] = timeout.count();
      envelopes.push_back(input.dump());
    } else {
      envelopes.push_back(line);  // the server explains what is wrong with it
    }
  }
  std::vector<std::optional<std::string>> results(envelopes.size());
  size_t printed = 0;
  int worst = kExitOk;
  std::mutex mutex;
  client.dispatch_many(envelopes, window, timeout,
                       [&](size_t index, cqrs::Result<std::string> reply) {
                         std::lock_guard lock(mutex);
                         std::string text = reply ? *reply : transport_reply(reply.error());
                         auto parsed = cqrs::DispatchReply::parse(text);
                         worst = std::max(worst, exit_code_for(parsed));
                         results[index] = parsed.canonical();
                         while (printed < results.size() && results[printed]) {
                           std::printf("%s\n", results[printed]->c_str());
                           ++printed;
                         }
                       });
  std::fflush(stdout);
  return worst;
}

// Waits until handler `name` has reached `target`, drawing progress on stderr.
int wait_for_replay(cqrs::Client& client, const std::string& name, const nlohmann::json& reset) {
  using Clock = std::chrono::steady_clock;
  auto target = reset["target"].is_string()
                    ? cqrs::Position::parse(reset["target"].get<std::string>())
                    : std::nullopt;
  int64_t total = reset.value("total", int64_t{0});
  auto started = Clock::now();
  while (target) {
    auto status = client.admin({{"op", "status"}});
    if (!status || !status->ok()) {
      std::fprintf(stderr, "\ncqrsctl: lost track of the replay: %s\n",
                   status ? status->message.c_str() : status.error().to_string().c_str());
      return kExitError;
    }
    nlohmann::json mine;
    for (const auto& handler : status->json["handlers"]) {
      if (handler.value("name", "") == name) mine = handler;
    }
    if (mine.value("state", "") == "stopped") {
      std::fprintf(stderr, "\ncqrsctl: %s stopped: %s\n", name.c_str(),
                   mine.value("last_error", nlohmann::json("")).dump().c_str());
      return kExitError;
    }
    auto position = mine["position"].is_string()
                        ? cqrs::Position::parse(mine["position"].get<std::string>())
                        : std::nullopt;
    int64_t done = std::max<int64_t>(0, total - mine.value("lag", total));
    double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
    std::fprintf(stderr, "\r%s: %lld/%lld events, %.0f ev/s, ETA %.0f s   ", name.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), rate, eta);
    if (position && *position >= *target) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::fprintf(stderr, "\n");
  std::printf(
      "%s\n",
      nlohmann::json{{"status", "ok"}, {"handler", name}, {"replayed", total}, {"seconds", seconds}}
          .dump()
          .c_str());
  return kExitOk;
}

// The first word of the command line that is not an option or an option's value (the command),
// and the one after it when the command is `handler`; empty when there is none. CLI11 reports a
// misspelt command as a missing one: this lets cqrsctl name it.
std::vector<std::string> command_words(int argc, char** argv) {
  static const std::set<std::string, std::less<>> kWithValue = {
      "--host", "--port", "--tls.cert", "--tls.key", "--tls.ca", "--timeout-ms"};
  std::vector<std::string> words;
  for (int idx = 1; idx < argc && words.size() < 2; ++idx) {
    std::string_view arg = argv[idx];
    if (arg.starts_with("-")) {
      if (kWithValue.count(arg) != 0) ++idx;  // --port 4242: skip the value too
      continue;
    }
    words.emplace_back(arg);
    if (words.front() != "handler") break;
  }
  return words;
}

// A message naming a command word that is not one, or nullopt.
std::optional<std::string> unknown_command(int argc, char** argv) {
  static const std::set<std::string, std::less<>> kCommands = {
      "dispatch", "state", "status", "handler", "dead-letters", "history", "trace"};
  std::vector<std::string> words = command_words(argc, argv);
  if (words.empty()) return std::nullopt;
  if (kCommands.count(words[0]) == 0) {
    return "unknown command '" + words[0] +
           "' (one of dispatch, state, status, handler, dead-letters, history, trace; see "
           "cqrsctl --help)";
  }
  if (words[0] == "handler" && words.size() > 1 && words[1] != "reset" && words[1] != "restart") {
    return "unknown handler command '" + words[1] + "' (reset or restart)";
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cqrsctl: send commands to cqrsd and read aggregate state"};
  app.require_subcommand(1);
  std::string host = "127.0.0.1";
  uint16_t port = 4242;
  int64_t timeout_ms = 5000;
  app.add_option("--host", host, "cqrsd host")->capture_default_str();
  app.add_option("--port", port, "cqrsd port")->capture_default_str();
  cqrs::TlsOptions tls;
  app.add_option("--tls.cert", tls.cert, "client certificate (PEM) for a cqrsd with TLS on");
  app.add_option("--tls.key", tls.key, "the client certificate's private key (PEM)");
  app.add_option("--tls.ca", tls.ca, "CA certificate (PEM) that signed the server's certificate");
  app.add_option("--timeout-ms", timeout_ms,
                 "how long to wait for the connection and for each reply, in milliseconds")
      ->check(CLI::Range(int64_t{1}, int64_t{300000}))
      ->capture_default_str();

  auto* dispatch = app.add_subcommand("dispatch", "dispatch a command ('-' reads JSON lines)");
  std::string type;
  std::string payload;
  std::optional<std::string> command_id;
  std::optional<std::string> correlation_id;
  std::string metadata = "{}";
  std::string consistency = "eventual";
  size_t window = 64;
  dispatch->add_option("type", type, "command type, e.g. IssueGiftCard, or - for stdin")
      ->required();
  dispatch->add_option("payload", payload, "the command as JSON");
  dispatch->add_option("--command-id", command_id, "UUID for idempotent dispatch");
  dispatch->add_option("--correlation-id", correlation_id, "correlation id");
  dispatch->add_option("--metadata", metadata, "JSON object copied into the events' metadata");
  dispatch->add_option("--consistency", consistency, "eventual or strong")
      ->check(CLI::IsMember({"eventual", "strong"}));
  dispatch->add_option("--window", window, "commands in flight with '-'")->capture_default_str();
  dispatch->fallthrough();

  auto* state = app.add_subcommand("state", "print an aggregate's version and state");
  std::string aggregate;
  std::string id;
  state->add_option("aggregate", aggregate, "aggregate type (GiftCard) or prefix (giftcard)")
      ->required();
  state->add_option("id", id, "aggregate id")->required();
  state->fallthrough();

  app.add_subcommand("status", "print the head, live aggregates and every handler's state")
      ->fallthrough();
  auto* handler = app.add_subcommand("handler", "manage a projector or process manager");
  handler->require_subcommand(1);
  std::string handler_name;
  bool no_wait = false;
  auto* reset = handler->add_subcommand("reset", "empty a projection and rebuild it from origin");
  reset->add_option("name", handler_name, "handler name")->required();
  reset->add_flag("--no-wait", no_wait, "return once the reset is done, before the replay");
  auto* restart = handler->add_subcommand("restart", "restart a stopped handler");
  restart->add_option("name", handler_name, "handler name")->required();
  reset->fallthrough();
  restart->fallthrough();
  handler->fallthrough();
  auto* dead_letters = app.add_subcommand("dead-letters", "list dead letters as JSON lines");
  dead_letters->add_option("name", handler_name, "only this handler's");
  dead_letters->fallthrough();
  auto* history = app.add_subcommand("history", "a stream's events as JSON lines (or a table)");
  std::string stream_id;
  int64_t from_version = 1;
  int64_t limit = 1000;
  std::string history_format = "json";
  history->add_option("stream", stream_id, "stream id, e.g. account-a1")->required();
  history->add_option("--from", from_version, "first version")->capture_default_str();
  history->add_option("--limit", limit, "events at most (up to 10000)")->capture_default_str();
  history->add_option("--format", history_format, "json (one object a line) or table")
      ->check(CLI::IsMember({"json", "table"}))
      ->capture_default_str();
  history->fallthrough();
  auto* trace = app.add_subcommand(
      "trace",
      "the causal tree of a correlation: commands, their events, the commands those caused");
  std::string trace_correlation;
  std::string trace_format = "tree";
  trace->add_option("correlation", trace_correlation, "correlation id")->required();
  trace->add_option("--format", trace_format, "tree (indented text) or json")
      ->check(CLI::IsMember({"tree", "json"}))
      ->capture_default_str();
  trace->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() != 0) {
      if (auto unknown = unknown_command(argc, argv)) {
        std::fprintf(stderr, "cqrsctl: %s\n", unknown->c_str());
        return kExitError;
      }
    }
    int code = app.exit(error);
    return code == 0 ? 0 : kExitError;
  }
  if (dispatch->parsed() && type == "-" && !payload.empty()) {
    std::fprintf(stderr,
                 "cqrsctl: 'dispatch -' reads the commands from stdin, one JSON line each; it "
                 "takes no payload argument\n");
    return kExitError;
  }

  nlohmann::json metadata_json = nlohmann::json::parse(metadata, nullptr, false);
  if (!metadata_json.is_object()) {
    std::fprintf(stderr, "cqrsctl: --metadata must be a JSON object\n");
    return kExitError;
  }
  if (dispatch->parsed() && type != "-" && payload.empty()) {
    std::fprintf(stderr,
                 "cqrsctl: dispatch needs the command as JSON, e.g. '{\"card_id\":\"c1\"}'\n");
    return kExitError;
  }

  if (auto valid = tls.validate(); !valid) {
    std::fprintf(stderr, "cqrsctl: %s\n", valid.error().message().c_str());
    return kExitError;
  }
  auto client = cqrs::Client::connect(host, port, tls, std::chrono::milliseconds(timeout_ms));
  if (!client) {
    std::printf("%s\n", transport_reply(client.error()).c_str());
    std::fprintf(stderr, "cqrsctl: %s\n", client.error().to_string().c_str());
    return kExitError;
  }
  auto timeout = std::chrono::milliseconds(timeout_ms);

  if (state->parsed()) return print_reply((*client)->state(aggregate, id, timeout));
  if (app.got_subcommand("status")) return print_reply((*client)->admin({{"op", "status"}}));
  if (restart->parsed()) {
    return print_reply((*client)->admin({{"op", "restart"}, {"handler", handler_name}}));
  }
  if (reset->parsed()) {
    auto reply = (*client)->admin({{"op", "reset"}, {"handler", handler_name}});
    if (!reply || !reply->ok() || no_wait) return print_reply(reply);
    return wait_for_replay(**client, handler_name, reply->json);
  }
  if (dead_letters->parsed()) {
    nlohmann::json request = {{"op", "dead_letters"}};
    if (!handler_name.empty()) request["handler"] = handler_name;
    auto reply = (*client)->admin(request);
    if (!reply || !reply->ok()) return print_reply(reply);
    for (const auto& letter : reply->json["dead_letters"])
      std::printf("%s\n", letter.dump().c_str());
    if (reply->json.contains("unanswered")) {
      for (const auto& missing : reply->json["unanswered"]) {
        std::fprintf(stderr, "cqrsctl: handler %s did not list its dead letters: %s\n",
                     missing.value("handler", "?").c_str(), missing.value("error", "?").c_str());
      }
      return kExitError;
    }
    return kExitOk;
  }
  if (history->parsed()) {
    auto reply = (*client)->admin(
        {{"op", "history"}, {"stream_id", stream_id}, {"from", from_version}, {"limit", limit}});
    if (!reply || !reply->ok()) return print_reply(reply);
    if (history_format == "table") {
      std::printf("%s", history_table(reply->json["events"]).c_str());
    } else {
      for (const auto& event : reply->json["events"]) std::printf("%s\n", event.dump().c_str());
    }
    return kExitOk;
  }
  if (trace->parsed()) {
    auto reply = (*client)->admin({{"op", "trace"}, {"correlation_id", trace_correlation}});
    if (!reply || !reply->ok()) return print_reply(reply);
    if (reply->json.value("events", 0) == 0) {
      std::fprintf(stderr, "cqrsctl: no events with correlation id %s\n",
                   trace_correlation.c_str());
      return kExitRejected;
    }
    if (trace_format == "json") {
      std::printf("%s\n", reply->json.dump().c_str());
    } else {
      std::printf("%s", cqrs::render_trace(reply->json["commands"]).c_str());
      if (reply->json.value("truncated", false)) {
        std::fprintf(stderr, "cqrsctl: only the first %d events are shown\n",
                     reply->json.value("events", 0));
      }
    }
    return kExitOk;
  }
  if (type == "-") return dispatch_stdin(**client, window, timeout);

  cqrs::DispatchOptions options;
  options.command_id = command_id;
  options.correlation_id = correlation_id;
  options.metadata = metadata_json;
  options.strong = consistency == "strong";
  options.timeout = timeout;
  return print_reply((*client)->dispatch(type, payload, options));
}
