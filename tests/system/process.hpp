// Child processes for the system tests: a cqrsd Daemon started on a free port against one
// database, and run_cqrsctl, which runs the client once and collects its exit code and output.
// Every child is waited for by PID; a Daemon still running when its object goes away (a failed
// assertion, say) is killed with SIGKILL.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cqrs::system_test {

inline constexpr std::chrono::seconds kDaemonStartTimeout{20};
inline constexpr std::chrono::seconds kDaemonStopTimeout{30};
inline constexpr std::chrono::seconds kCqrsctlTimeout{30};

// What a finished child left behind. exit_code is the status passed to exit(), or -signal when a
// signal ended it; timed_out means it was killed for running past its deadline.
struct ProcessResult {
  int exit_code = -1;
  bool timed_out = false;
  std::vector<std::string> stdout_lines;
  std::string stderr_text;

  // Everything, for assertion messages.
  std::string describe() const;
};

// A running cqrsd. Its working directory is a fresh temporary directory and it reads an empty
// configuration file, so the repository's config/cqrsd.conf (port 4242) never applies. The child
// gets SIGKILL if the thread that started it ends (PR_SET_PDEATHSIG), so a crashed or killed test
// binary leaves no daemon behind: start daemons from the test's own thread.
class Daemon {
 public:
  // Starts CQRSD_BIN with --db.url=<db_url> --server.port=0 --log.level=warn plus `extra_args`
  // and waits until it prints "cqrsd: listening on <host>:<port>". On failure (the process
  // exits, or no such line within kDaemonStartTimeout) adds a test failure with its stderr and
  // returns nullptr.
  static std::unique_ptr<Daemon> start(const std::string& db_url,
                                       const std::vector<std::string>& extra_args = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // True until the process has been reaped.
  bool running();

  // SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that). Returns the exit code
  // (-signal when killed by one). With `expect_success`, adds a test failure unless it is 0.
  int stop(bool expect_success = true, std::chrono::milliseconds timeout = kDaemonStopTimeout);
  // SIGKILL and reap.
  void kill9();
  // Sends SIGTERM without waiting; wait_exit() collects the status.
  void terminate();
  // Waits up to `timeout` for the exit; returns the exit code, or kStillRunning on timeout.
  int wait_exit(std::chrono::milliseconds timeout);

  // What the daemon wrote to stderr so far (its log), and its stdout lines so far.
  std::string stderr_text() const;
  std::vector<std::string> stdout_lines() const;

  static constexpr int kStillRunning = -1000;

 private:
  Daemon() = default;
  void read_stdout();

  pid_t pid_ = -1;
  int exit_code_ = kStillRunning;
  uint16_t port_ = 0;
  int stdout_fd_ = -1;
  std::filesystem::path work_dir_;
  std::thread reader_;
  mutable std::mutex mutex_;
  std::vector<std::string> stdout_lines_;
};

// Runs CQRSCTL_BIN --port <port> <args...>, writes `stdin_text` to its stdin (then closes it)
// and waits for it; SIGKILL after `timeout`.
ProcessResult run_cqrsctl(uint16_t port, const std::vector<std::string>& args,
                          const std::string& stdin_text = "",
                          std::chrono::milliseconds timeout = kCqrsctlTimeout);

// A loopback TCP port nothing listens on right now (bound to an ephemeral port, then released;
// another process may take it before the caller does). 0 when none could be had.
uint16_t free_local_port();

// Runs any program the same way (argv[0] is the path).
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_text,
                          std::chrono::milliseconds timeout);

}  // namespace cqrs::system_test
