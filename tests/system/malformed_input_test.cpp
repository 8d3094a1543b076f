// Malformed commands through real processes: each gets a clear error reply with exit code 2,
// nothing is stored, and the daemon keeps serving valid commands afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;

constexpr int kExitError = 2;
constexpr size_t kTwoMebibytes = 2 * 1024 * 1024;

class MalformedInputTest : public SystemTest {
 protected:
  void SetUp() override {
    SystemTest::SetUp();
    if (HasFatalFailure()) return;
    daemon_ = start_daemon();
    ASSERT_NE(daemon_, nullptr);
  }

  // The reply is an error with `code` whose message contains `mentions`, exit code 2, and
  // cqrsctl explained it on stderr.
  void expect_error(const CtlReply& reply, const std::string& code, const std::string& mentions) {
    EXPECT_EQ(reply.exit_code(), kExitError) << reply.describe();
    EXPECT_EQ(reply.status(), "error") << reply.describe();
    EXPECT_EQ(reply.error(), code) << reply.describe();
    std::string message = reply.json.is_object() ? reply.json.value("message", "") : "";
    EXPECT_NE(message.find(mentions), std::string::npos)
        << "message should mention '" << mentions << "': " << reply.describe();
    EXPECT_NE(reply.process.stderr_text.find(code), std::string::npos) << reply.describe();
  }

  // The daemon is still up, answers a valid command, and stored nothing but that command.
  void expect_still_serving() {
    ASSERT_TRUE(daemon_->running()) << daemon_->stderr_text();
    CtlReply ok = dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "fine"}, {"amount", 5}});
    EXPECT_EQ(ok.exit_code(), 0) << ok.describe();
    EXPECT_EQ(ok.status(), "ok") << ok.describe();
    auto stored = events();
    ASSERT_EQ(stored.size(), 1u) << "only the valid command stores events";
    EXPECT_EQ(stored[0].stream_id, "giftcard-fine");
    daemon_->stop();
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(MalformedInputTest, GarbageJsonPayloadIsAnInvalidCommand) {
  expect_error(dispatch_text(daemon_->port(), "IssueGiftCard", R"({"card_id": "g1", amount: })"),
               "invalid_command", "not valid JSON");
  expect_error(dispatch_text(daemon_->port(), "IssueGiftCard", "[1,2,3]"), "invalid_command",
               "IssueGiftCard");
  expect_still_serving();
}

TEST_F(MalformedInputTest, UnknownCommandTypeIsUnregisteredAndListsTheKnownTypes) {
  CtlReply reply = dispatch(daemon_->port(), "TopUpGiftCard", {{"card_id", "u1"}, {"amount", 1}});
  expect_error(reply, "unregistered_command", "TopUpGiftCard");
  EXPECT_NE(reply.json.value("message", "").find("RedeemGiftCard"), std::string::npos)
      << reply.describe();
  expect_still_serving();
}

// The steps of the transfer process are the process manager's: a client's FailTransfer (which
// could end a transfer whose money is on its way) or DebitAccount is refused and stores nothing.
TEST_F(MalformedInputTest, AProcessStepSentByAClientIsRefused) {
  expect_error(dispatch(daemon_->port(), "FailTransfer", {{"transfer_id", "t1"}, {"reason", "x"}}),
               "internal_command", "FailTransfer");
  expect_error(dispatch(daemon_->port(), "DebitAccount",
                        {{"account_id", "a1"}, {"transfer_id", "t1"}, {"amount", 5}}),
               "internal_command", "DebitAccount");
  expect_still_serving();
}

TEST_F(MalformedInputTest, MissingFieldIsNamed) {
  expect_error(dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "m1"}}), "invalid_command",
               "'amount'");
  expect_error(dispatch(daemon_->port(), "CancelGiftCard", json::object()), "invalid_command",
               "'card_id'");
  expect_still_serving();
}

TEST_F(MalformedInputTest, MistypedFieldIsNamedWithItsType) {
  expect_error(dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "t1"}, {"amount", "lots"}}),
               "invalid_command", "'amount' must be an integer");
  expect_error(dispatch(daemon_->port(), "RedeemGiftCard", {{"card_id", 17}, {"amount", 1}}),
               "invalid_command", "'card_id'");
  expect_still_serving();
}

TEST_F(MalformedInputTest, TwoMebibytePayloadIsCommandTooLarge) {
  // Through stdin: one argv string may not exceed MAX_ARG_STRLEN (128 KiB).
  std::string padding(kTwoMebibytes, 'x');
  json data = {{"card_id", "big"}, {"amount", 1}, {"note", padding}};
  std::vector<std::string> lines = {
      envelope_line("IssueGiftCard", data, new_command_id()),
      json{{"type", "IssueGiftCard"}, {"payload", data.dump()}}.dump(),
  };
  BatchReply batch = dispatch_batch(daemon_->port(), lines, 2);
  EXPECT_EQ(batch.process.exit_code, kExitError) << batch.process.describe();
  ASSERT_EQ(batch.replies.size(), 2u) << batch.process.describe();
  for (const auto& reply : batch.replies) {
    EXPECT_EQ(reply.value("status", ""), "error") << reply;
    EXPECT_EQ(reply.value("error", ""), "command_too_large") << reply;
    EXPECT_NE(reply.value("message", "").find("1048576"), std::string::npos)
        << "the message names the limit: " << reply;
  }
  expect_still_serving();
}

TEST_F(MalformedInputTest, NonObjectEnvelopeLinesGetErrorsInInputOrderAndValidLinesStillRun) {
  std::string valid_id = new_command_id();
  std::vector<std::string> lines = {
      "[1,2,3]",
      "\"IssueGiftCard\"",
      "42",
      "this is not json",
      R"({"data":{"card_id":"n1","amount":5}})",  // no type
      R"({"type":"IssueGiftCard","data":{"card_id":"n1","amount":5},"command_id":"not-a-uuid"})",
      R"({"type":"IssueGiftCard","data":{"card_id":"n1","amount":5},"metadata":[1]})",
      envelope_line("IssueGiftCard", {{"card_id", "ok-in-batch"}, {"amount", 5}}, valid_id),
  };
  BatchReply batch = dispatch_batch(daemon_->port(), lines, 4);
  EXPECT_EQ(batch.process.exit_code, kExitError) << batch.process.describe();
  ASSERT_EQ(batch.replies.size(), lines.size()) << batch.process.describe();
  const char* mentions[] = {
      "not a JSON object", "not a JSON object", "not a JSON object", "not a JSON object", "'type'",
      "'command_id'",      "'metadata'"};
  for (size_t idx = 0; idx + 1 < lines.size(); ++idx) {
    const json& reply = batch.replies[idx];
    SCOPED_TRACE("line " + std::to_string(idx + 1) + ": " + lines[idx]);
    EXPECT_EQ(reply.value("status", ""), "error") << reply;
    EXPECT_EQ(reply.value("error", ""), "invalid_command") << reply;
    EXPECT_NE(reply.value("message", "").find(mentions[idx]), std::string::npos) << reply;
  }
  EXPECT_EQ(batch.replies.back().value("status", ""), "ok") << batch.replies.back();
  EXPECT_EQ(batch.replies.back().value("command_id", ""), valid_id);

  auto stored = events();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].stream_id, "giftcard-ok-in-batch");
  ASSERT_TRUE(daemon_->running()) << daemon_->stderr_text();
  CtlReply after =
      dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "after"}, {"amount", 1}});
  EXPECT_EQ(after.status(), "ok") << after.describe();
  daemon_->stop();
}

// cqrsd's own command line: CAF stops at the first word that is not an option and leaves the
// rest, so a misplaced `migrate` or a misspelt word used to start the whole server (or ignore the
// options after it). It is refused at once, naming the word.
TEST(CqrsdArguments, AWordThatIsNotAnOptionIsRefusedAndNamed) {
  const std::string nowhere = "--db.url=postgresql://nobody@127.0.0.1:1/x";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{CQRSD_BIN, "--config-file=/dev/null", nowhere, "migrate", "--db.connect_timeout=2s"},
       "'migrate'"},
      {{CQRSD_BIN, "--config-file=/dev/null", "migrat", nowhere}, "'migrat'"},
      {{CQRSD_BIN, "migrate", "--config-file=/dev/null", nowhere, "extra"}, "'extra'"}};
  for (const auto& [argv, named] : cases) {
    ProcessResult run = run_process(argv, "", std::chrono::milliseconds(20000));
    ASSERT_FALSE(run.timed_out) << "cqrsd ran on: " << run.describe();
    EXPECT_EQ(run.exit_code, kExitError) << run.describe();
    EXPECT_NE(run.stderr_text.find("unexpected argument " + named), std::string::npos)
        << run.describe();
  }
}

// CAF applies the config file's values it can convert and dropped the rest without a word, so a
// typo in /etc/cqrsd/cqrsd.conf ran production on defaults. Each is refused, naming the file and
// the key; a file that is not valid syntax is named too.
TEST(CqrsdArguments, AConfigFileEntryThatDoesNotFitIsRefusedAndNamed) {
  const std::string path = "/tmp/cqrsd-config-" + std::to_string(::getpid()) + ".conf";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[server]\nport = \"abc\"\n", "'server.port' = \"abc\" is not a valid uint16"},
      {"[server]\nport = 99999\n", "'server.port' = 99999 is not a valid uint16"},
      {"[server]\nprot = 4243\n", "unknown option 'server.prot'"},
      {"[aggregates]\nidle_timeout = 5\n", "'aggregates.idle_timeout' = 5 is not a valid timespan"},
      {"[db]\npool_size = -3\n", "'db.pool_size' = -3"},
      {"format = json\n", "parser_error"}};
  for (const auto& [text, named] : cases) {
    {
      std::ofstream file(path);
      file << text;
    }
    ProcessResult run =
        run_process({CQRSD_BIN, "--config-file=" + path,
                     "--db.url=postgresql://nobody@127.0.0.1:1/x", "--db.connect_timeout=1s"},
                    "", std::chrono::milliseconds(20000));
    EXPECT_EQ(run.exit_code, kExitError) << text << run.describe();
    EXPECT_NE(run.stderr_text.find(path), std::string::npos) << text << run.describe();
    EXPECT_NE(run.stderr_text.find(named), std::string::npos) << text << run.describe();
  }
  std::remove(path.c_str());
}

// A misspelt command is named (CLI11 alone said "A subcommand is required"), and 'dispatch -'
// refuses a payload argument it would otherwise ignore.
TEST(CqrsctlArguments, AMisspeltCommandIsNamedAndAnIgnoredPayloadRefused) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"dispach", "IssueGiftCard", "{}"}, "unknown command 'dispach'"},
      {{"--timeout-ms", "500", "statuss"}, "unknown command 'statuss'"},
      {{"handler", "frobnicate", "x"}, "unknown handler command 'frobnicate'"},
      {{"dispatch", "-", R"({"card_id":"c1"})"}, "takes no payload argument"}};
  for (const auto& [args, named] : cases) {
    ProcessResult run = run_cqrsctl(1, args, "{}\n");
    EXPECT_EQ(run.exit_code, kExitError) << run.describe();
    EXPECT_NE(run.stderr_text.find(named), std::string::npos) << run.describe();
  }
}

// A flag CAF cannot take is named in words, not as CAF's parser_error; --help starts with
// cqrsd's own usage and lists every option.
TEST(CqrsdArguments, FlagErrorsAndHelpSpeakCqrsd) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--bogus", "unknown option --bogus"},
      {"--server.port=99999", "bad value in --server.port=99999"},
      {"--aggregates.idle_timeout=5", "durations take a unit"}};
  for (const auto& [flag, named] : cases) {
    ProcessResult run = run_process({CQRSD_BIN, "--config-file=/dev/null", flag}, "",
                                    std::chrono::milliseconds(20000));
    EXPECT_EQ(run.exit_code, kExitError) << run.describe();
    EXPECT_NE(run.stderr_text.find(named), std::string::npos) << run.describe();
    EXPECT_EQ(run.stderr_text.find("parser_error"), std::string::npos) << run.describe();
  }
  ProcessResult help = run_process({CQRSD_BIN, "--help"}, "", std::chrono::milliseconds(20000));
  EXPECT_EQ(help.exit_code, 0) << help.describe();
  std::string text;
  for (const std::string& line : help.stdout_lines) text += line + "\n";
  EXPECT_EQ(text.rfind("usage: cqrsd [migrate]", 0), 0u) << help.describe();
  EXPECT_NE(text.find("--server.port"), std::string::npos) << help.describe();
  EXPECT_NE(text.find("config/cqrsd.conf"), std::string::npos) << help.describe();
}

}  // namespace
}  // namespace cqrs::system_test
