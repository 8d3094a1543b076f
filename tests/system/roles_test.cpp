// config/roles.sql: cqrsd runs with a role that may only do what the daemon does (no DDL, no
// UPDATE/DELETE of events), and a reader role sees the read models and nothing else.
#include <gtest/gtest.h>

#include "cqrs/uuid.hpp"
#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;

class RolesTest : public SystemTest {
 protected:
  void SetUp() override {
    SystemTest::SetUp();
    if (HasFatalFailure()) return;
    std::string suffix = Uuid::random().to_string().substr(0, 8);
    app_role_ = "cqrsd_app_" + suffix;
    reader_role_ = "cqrsd_reader_" + suffix;
    password_ = Uuid::random().to_string();
    ProcessResult psql = run_process(
        {"/usr/bin/env", "psql", "-X", "-q", "-d", db_->url(), "-v", "app_role=" + app_role_, "-v",
         "reader_role=" + reader_role_, "-f", std::string(CQRS_SOURCE_DIR) + "/config/roles.sql"},
        "", 60s);
    ASSERT_EQ(psql.exit_code, 0) << psql.describe();
    created_ = true;
    for (const auto& role : {app_role_, reader_role_}) {
      // Whatever authentication the server uses: trust ignores it, password methods need it.
      // (The password is a UUID: nothing to escape.)
      ASSERT_TRUE(
          sql_->exec("ALTER ROLE " + pg::quote_identifier(role) + " PASSWORD '" + password_ + "'")
              .ok());
    }
  }

  void TearDown() override {
    if (daemon_) daemon_->stop();
    daemon_.reset();
    if (!created_) return;
    for (const auto& role : {app_role_, reader_role_}) {
      // Roles are cluster-wide: remove this database's grants, then the role.
      (void)sql_->exec("DROP OWNED BY " + pg::quote_identifier(role));
      (void)sql_->exec("REVOKE CONNECT ON DATABASE " + pg::quote_identifier(db_name()) + " FROM " +
                       pg::quote_identifier(role));
      auto dropped = sql_->exec("DROP ROLE " + pg::quote_identifier(role));
      EXPECT_TRUE(dropped.ok()) << dropped.error().to_string();
    }
  }

  std::string db_name() { return scalar("SELECT current_database()"); }
  std::string url_as(const std::string& role) const {
    return db_->url() + " user=" + role + " password=" + password_;
  }

  std::string app_role_;
  std::string reader_role_;
  std::string password_;
  bool created_ = false;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(RolesTest, DaemonRunsEverythingWithTheAppRole) {
  daemon_ = Daemon::start(url_as(app_role_));
  ASSERT_NE(daemon_, nullptr);
  uint16_t port = daemon_->port();
  auto ok = [&](std::string_view type, const json& data) {
    CtlReply reply = dispatch(port, type, data);
    EXPECT_EQ(reply.exit_code(), kExitOk) << type << ": " << reply.describe();
  };
  ok("IssueGiftCard", {{"card_id", "r1"}, {"amount", 100}});
  ok("RedeemGiftCard", {{"card_id", "r1"}, {"amount", 30}});
  ok("OpenAccount",
     {{"account_id", "ra"}, {"owner", "a"}, {"email", "a@example.com"}, {"initial_balance", 500}});
  ok("OpenAccount",
     {{"account_id", "rb"}, {"owner", "b"}, {"email", "b@example.com"}, {"initial_balance", 0}});
  ok("TransferMoney",
     {{"transfer_id", "rt"}, {"from_account", "ra"}, {"to_account", "rb"}, {"amount", 200}});
  // Projectors and the process manager ran with it too.
  EXPECT_TRUE(wait_until(
      [&] {
        return scalar("SELECT status FROM bank_transfers WHERE transfer_id = 'rt'") ==
                   "completed" &&
               scalar("SELECT remaining_value FROM giftcard_summary WHERE card_id = 'r1'") == "70";
      },
      30s))
      << daemon_->stderr_text();
  EXPECT_EQ(scalar("SELECT balance FROM bank_accounts WHERE account_id = 'rb'"), "200");
  // The correlation index followed the appends.
  EXPECT_TRUE(wait_until([&] { return scalar(kRunsNotCorrelated) == "0"; }, 30s))
      << daemon_->stderr_text();
  // A rebuild truncates and replays.
  ProcessResult reset = run_cqrsctl(port, {"handler", "reset", "giftcard_summary"});
  EXPECT_EQ(reset.exit_code, kExitOk) << reset.describe();
  EXPECT_EQ(scalar("SELECT remaining_value FROM giftcard_summary WHERE card_id = 'r1'"), "70");
  EXPECT_EQ(daemon_->stderr_text().find("permission denied"), std::string::npos)
      << daemon_->stderr_text();

  // The role cannot change the schema or rewrite history.
  auto app = pg::Connection::open(url_as(app_role_));
  ASSERT_TRUE(app.ok()) << app.error().to_string();
  auto created = (*app)->exec("CREATE TABLE cqrs.intruder (id int)");
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.error().message().find("permission denied"), std::string::npos)
      << created.error().message();
  auto deleted = (*app)->exec("DELETE FROM cqrs.events");
  ASSERT_FALSE(deleted.ok());
  EXPECT_NE(deleted.error().message().find("permission denied"), std::string::npos)
      << deleted.error().message();
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events WHERE stream_id = 'giftcard-r1'"), "2");
}

TEST_F(RolesTest, ReaderSeesTheReadModelsOnly) {
  ASSERT_TRUE(
      sql_->exec("INSERT INTO giftcard_summary VALUES ('x', 5, 5, 'active', now(), now())").ok());
  auto reader = pg::Connection::open(url_as(reader_role_));
  ASSERT_TRUE(reader.ok()) << reader.error().to_string();
  auto rows = (*reader)->exec("SELECT remaining_value FROM giftcard_summary WHERE card_id = 'x'");
  ASSERT_TRUE(rows.ok()) << rows.error().to_string();
  EXPECT_EQ(rows->text(0, 0), "5");
  for (const char* forbidden :
       {"SELECT count(*) FROM cqrs.events", "SELECT count(*) FROM cqrs.command_results",
        "UPDATE giftcard_summary SET remaining_value = 0", "TRUNCATE bank_accounts"}) {
    auto denied = (*reader)->exec(forbidden);
    ASSERT_FALSE(denied.ok()) << forbidden;
    EXPECT_NE(denied.error().message().find("permission denied"), std::string::npos)
        << forbidden << ": " << denied.error().message();
  }
}

TEST_F(RolesTest, AppRoleCannotMigrateAndSaysWhatToDo) {
  // A database nobody migrated: the app role has nothing to create it with.
  auto fresh = cqrs::testing::TestDatabase::create(/*migrated=*/false);
  ASSERT_NE(fresh, nullptr);
  ProcessResult run =
      run_process({CQRSD_BIN, "migrate",
                   "--db.url=" + fresh->url() + " user=" + app_role_ + " password=" + password_},
                  "", 60s);
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_NE(run.stderr_text.find("run `cqrsd migrate` as the schema's owner role"),
            std::string::npos)
      << run.describe();
}

}  // namespace
}  // namespace cqrs::system_test
