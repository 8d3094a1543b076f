// Mutual TLS on the gateway's port: with --tls.* set, only a client whose certificate the
// configured CA signed gets through; anyone else is refused before a command is executed.
// Certificates are made with the openssl command for each run (no key is committed).
#include <gtest/gtest.h>

#include <filesystem>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

namespace fs = std::filesystem;

constexpr int kExitOk = 0;
constexpr int kExitError = 2;
constexpr auto kOpensslTimeout = std::chrono::seconds(30);

// A CA, a server and a client certificate signed by it, and a client certificate signed by a
// second, unrelated CA (EC P-256 keys: quick to make).
class Certificates {
 public:
  static std::unique_ptr<Certificates> make() {
    auto certs = std::unique_ptr<Certificates>(new Certificates());
    certs->dir_ = fs::temp_directory_path() / ("cqrsd-tls-" + new_command_id());
    fs::create_directories(certs->dir_);
    if (!certs->make_ca("ca") || !certs->make_signed("server", "ca") ||
        !certs->make_signed("client", "ca") || !certs->make_ca("other-ca") ||
        !certs->make_signed("stranger", "other-ca")) {
      return nullptr;
    }
    return certs;
  }
  ~Certificates() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string pem(const std::string& name) const { return (dir_ / (name + ".pem")).string(); }
  std::string key(const std::string& name) const { return (dir_ / (name + ".key")).string(); }

  // cqrsctl's TLS options presenting `name`'s certificate and trusting `ca`.
  std::vector<std::string> client_args(const std::string& name,
                                       const std::string& ca = "ca") const {
    return {"--tls.cert", pem(name), "--tls.key", key(name), "--tls.ca", pem(ca)};
  }
  // cqrsd's TLS options.
  std::vector<std::string> server_args() const {
    return {"--tls.cert=" + pem("server"), "--tls.key=" + key("server"), "--tls.ca=" + pem("ca")};
  }

 private:
  Certificates() = default;

  bool openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult result = run_process(argv, "", kOpensslTimeout);
    EXPECT_EQ(result.exit_code, 0) << result.describe();
    return result.exit_code == 0;
  }

  bool make_ca(const std::string& name) {
    return openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key(name), "-out", pem(name), "-days", "2", "-subj",
                    "/CN=cqrsd test " + name});
  }

  bool make_signed(const std::string& name, const std::string& ca) {
    std::string csr = (dir_ / (name + ".csr")).string();
    return openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key(name), "-out", csr, "-subj", "/CN=" + name}) &&
           openssl({"x509", "-req", "-in", csr, "-CA", pem(ca), "-CAkey", key(ca),
                    "-CAcreateserial", "-out", pem(name), "-days", "2"});
  }

  fs::path dir_;
};

class TlsTest : public SystemTest {
 protected:
  static void SetUpTestSuite() { certs_ = Certificates::make().release(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(certs_, nullptr) << "could not make test certificates with openssl";
    SystemTest::SetUp();
  }

  // cqrsctl dispatch IssueGiftCard for `card_id` with `tls_args` before the subcommand.
  ProcessResult issue(uint16_t port, const std::vector<std::string>& tls_args,
                      const std::string& card_id) {
    std::vector<std::string> args = tls_args;
    args.insert(args.end(), {"--timeout-ms", "3000", "dispatch", "IssueGiftCard",
                             json{{"card_id", card_id}, {"amount", 100}}.dump()});
    return run_cqrsctl(port, args);
  }

  using json = nlohmann::json;
  static inline Certificates* certs_ = nullptr;
};

TEST_F(TlsTest, ClientSignedByTheCaDispatches) {
  auto daemon = start_daemon(certs_->server_args());
  ASSERT_NE(daemon, nullptr);
  ProcessResult result = issue(daemon->port(), certs_->client_args("client"), "tls-ok");
  EXPECT_EQ(result.exit_code, kExitOk) << result.describe();
  auto stored = events("giftcard-tls-ok");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].type, "GiftCardIssued");
  daemon->stop();
}

TEST_F(TlsTest, PlainClientIsRefusedAndNothingRuns) {
  auto daemon = start_daemon(certs_->server_args());
  ASSERT_NE(daemon, nullptr);
  ProcessResult result = issue(daemon->port(), {}, "tls-plain");
  EXPECT_EQ(result.exit_code, kExitError) << result.describe();
  EXPECT_TRUE(events("giftcard-tls-plain").empty());
  // The refused peer did not disturb the daemon: a proper client still gets through.
  ProcessResult after = issue(daemon->port(), certs_->client_args("client"), "tls-after-plain");
  EXPECT_EQ(after.exit_code, kExitOk) << after.describe();
  daemon->stop();
}

TEST_F(TlsTest, ClientSignedByAnotherCaIsRefusedAndNothingRuns) {
  auto daemon = start_daemon(certs_->server_args());
  ASSERT_NE(daemon, nullptr);
  // The stranger trusts the server's CA, but its own certificate comes from another CA.
  ProcessResult result = issue(daemon->port(), certs_->client_args("stranger"), "tls-stranger");
  EXPECT_EQ(result.exit_code, kExitError) << result.describe();
  EXPECT_TRUE(events("giftcard-tls-stranger").empty());
  ProcessResult after = issue(daemon->port(), certs_->client_args("client"), "tls-after-stranger");
  EXPECT_EQ(after.exit_code, kExitOk) << after.describe();
  daemon->stop();
}

TEST_F(TlsTest, ClientRefusesAServerItsCaDidNotSign) {
  auto daemon = start_daemon(certs_->server_args());
  ASSERT_NE(daemon, nullptr);
  // A valid client certificate, but it trusts only the other CA, which did not sign the server.
  ProcessResult result =
      issue(daemon->port(), certs_->client_args("client", "other-ca"), "tls-wrong-server");
  EXPECT_EQ(result.exit_code, kExitError) << result.describe();
  EXPECT_TRUE(events("giftcard-tls-wrong-server").empty());
  daemon->stop();
}

TEST_F(TlsTest, IncompleteTlsOptionsAreUsageErrors) {
  ProcessResult ctl = run_cqrsctl(4242, {"--tls.cert", certs_->pem("client"), "dispatch",
                                         "IssueGiftCard", R"({"card_id":"x","amount":1})"});
  EXPECT_EQ(ctl.exit_code, kExitError) << ctl.describe();
  EXPECT_NE(ctl.stderr_text.find("tls.key is missing"), std::string::npos) << ctl.describe();

  ProcessResult daemon =
      run_process({CQRSD_BIN, "--db.url=" + db_->url(), "--server.port=0",
                   "--tls.cert=" + certs_->pem("server"), "--tls.key=/nonexistent/server.key",
                   "--tls.ca=" + certs_->pem("ca")},
                  "", std::chrono::seconds(30));
  EXPECT_EQ(daemon.exit_code, kExitError) << daemon.describe();
  EXPECT_NE(daemon.stderr_text.find("tls.key: cannot read '/nonexistent/server.key'"),
            std::string::npos)
      << daemon.describe();
}

}  // namespace
}  // namespace cqrs::system_test
