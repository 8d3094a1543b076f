// cqrsd as a child process of a benchmark: started in an empty temporary directory (so no
// config/cqrsd.conf is read), its port read from the "listening" line, stopped with SIGTERM
// (SIGKILL after a timeout) when the object goes away. cqrsd follows the benchmark if it dies.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace cqrs::bench {

class BenchDaemon {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kStartTimeout = std::chrono::seconds(90);  // cqrsd retries Postgres 30 s
  static constexpr auto kStopTimeout = std::chrono::seconds(45);   // and drains up to 30 s

  // Starts `binary` with `args`; waits for its "listening" line (or `*interrupted`).
  static std::unique_ptr<BenchDaemon> start(const std::string& binary,
                                            const std::vector<std::string>& args,
                                            const std::atomic<bool>* interrupted,
                                            std::string& error) {
    char dir_template[] = "/tmp/cqrs_bench.XXXXXX";
    if (mkdtemp(dir_template) == nullptr) {
      error = std::string("mkdtemp: ") + std::strerror(errno);
      return nullptr;
    }
    std::unique_ptr<BenchDaemon> daemon(new BenchDaemon(dir_template, interrupted));
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      error = std::string("pipe: ") + std::strerror(errno);
      return nullptr;
    }
    // Everything the child needs is prepared before fork(): after it, only async-signal-safe calls.
    std::vector<std::string> argv_strings{binary};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& arg : argv_strings) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
      error = std::string("fork: ") + std::strerror(errno);
      close(fds[0]);
      close(fds[1]);
      return nullptr;
    }
    if (pid == 0) {
      setpgid(0, 0);                     // Ctrl-C goes to the benchmark, which stops cqrsd itself
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // and if the benchmark dies, cqrsd follows
      if (getppid() != parent) _exit(127);
      dup2(fds[1], STDOUT_FILENO);
      if (chdir(daemon->dir_.c_str()) != 0) _exit(127);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    daemon->pid_ = pid;
    daemon->out_fd_ = fds[0];
    if (!daemon->wait_listening(error)) return nullptr;
    return daemon;
  }

  ~BenchDaemon() {
    (void)stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }

  // SIGTERM, then waits (cqrsd drains in-flight commands); SIGKILL after kStopTimeout. Returns a
  // description of how it ended, empty when it exited 0 (or was already stopped).
  std::string stop() {
    if (pid_ <= 0) return "";
    kill(pid_, SIGTERM);
    auto deadline = Clock::now() + kStopTimeout;
    int status = 0;
    std::string outcome;
    while (true) {
      pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) break;
      if (done < 0) {
        outcome = std::string("waitpid: ") + std::strerror(errno);
        break;
      }
      if (Clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        outcome =
            "did not stop within " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kStopTimeout).count()) +
            " s of SIGTERM; killed";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (outcome.empty() && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      outcome = "exited with status " + std::to_string(WEXITSTATUS(status));
    } else if (outcome.empty() && WIFSIGNALED(status)) {
      outcome = std::string("ended by signal ") + strsignal(WTERMSIG(status));
    }
    pid_ = -1;
    if (drain_.joinable()) drain_.join();  // EOF once cqrsd is gone
    if (out_fd_ >= 0) close(out_fd_);
    out_fd_ = -1;
    return outcome;
  }

 private:
  BenchDaemon(std::string dir, const std::atomic<bool>* interrupted)
      : dir_(std::move(dir)), interrupted_(interrupted) {}

  bool wait_listening(std::string& error) {
    constexpr std::string_view kMarker = ": listening on ";  // "cqrsd: listening on ..."
    std::string output;
    auto deadline = Clock::now() + kStartTimeout;
    while (true) {
      size_t at = output.find(kMarker);
      size_t end = at == std::string::npos ? std::string::npos : output.find('\n', at);
      if (end != std::string::npos) {
        std::string address = output.substr(at + kMarker.size(), end - at - kMarker.size());
        port_ = static_cast<uint16_t>(std::atoi(address.c_str() + address.rfind(':') + 1));
        break;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error = "the server exited before listening (see its messages above)";
        return false;
      }
      if (*interrupted_ || Clock::now() >= deadline) {
        error = *interrupted_ ? "interrupted" : "the server did not report listening in time";
        return false;
      }
      pollfd poller{out_fd_, POLLIN, 0};
      if (poll(&poller, 1, 100) > 0) {
        char buffer[4096];
        ssize_t got = read(out_fd_, buffer, sizeof buffer);
        if (got > 0) output.append(buffer, static_cast<size_t>(got));
      }
    }
    // Keep reading (and dropping) cqrsd's stdout so that it never blocks on a full pipe.
    drain_ = std::thread([fd = out_fd_] {
      char buffer[4096];
      while (read(fd, buffer, sizeof buffer) > 0) {
      }
    });
    if (port_ == 0) error = "cannot read the port from the server's output";
    return port_ != 0;
  }

  std::string dir_;
  const std::atomic<bool>* interrupted_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  uint16_t port_ = 0;
  std::thread drain_;
};

}  // namespace cqrs::bench
