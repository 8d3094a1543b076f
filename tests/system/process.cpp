// Daemon and run_cqrsctl: fork/exec and posix_spawn with pipes, poll() loops with deadlines, and
// waitpid by PID only (other threads may be running their own children at the same time).
#include "system/process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>

extern char** environ;

namespace cqrs::system_test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Writing to a child that already exited must fail with EPIPE, not kill the test binary.
const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

struct Pipe {
  int read = -1;
  int write = -1;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return {fds[0], fds[1]};
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

// Reaps `pid` if it exited before `deadline`; Daemon::kStillRunning otherwise.
int wait_until(pid_t pid, Clock::time_point deadline) {
  while (true) {
    int status = 0;
    pid_t reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == pid) return decode_status(status);
    if (reaped < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) return Daemon::kStillRunning;
    std::this_thread::sleep_for(5ms);
  }
}

int wait_blocking(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return decode_status(status);
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> out;
  for (auto& arg : args) out.push_back(arg.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::filesystem::path make_work_dir() {
  static std::atomic<int> counter{0};
  std::random_device random;
  auto dir = std::filesystem::temp_directory_path() /
             ("cqrsd_system_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
              std::to_string(random()));
  std::filesystem::create_directories(dir);
  return dir;
}

// The port in "cqrsd: listening on 127.0.0.1:40123", or 0.
uint16_t parse_listening_port(const std::string& line) {
  constexpr std::string_view kMarker = "listening on ";
  auto at = line.find(kMarker);
  if (at == std::string::npos) return 0;
  auto colon = line.rfind(':');
  if (colon == std::string::npos || colon < at) return 0;
  try {
    int port = std::stoi(line.substr(colon + 1));
    return port > 0 && port < 65536 ? static_cast<uint16_t>(port) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

std::string ProcessResult::describe() const {
  std::string out = "exit code " + std::to_string(exit_code) + (timed_out ? " (timed out)" : "");
  out += "\nstdout:\n";
  for (const auto& line : stdout_lines) out += "  " + line.substr(0, 2000) + "\n";
  out += "stderr:\n" + stderr_text.substr(0, 4000);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Daemon

std::unique_ptr<Daemon> Daemon::start(const std::string& db_url,
                                      const std::vector<std::string>& extra_args) {
  std::unique_ptr<Daemon> daemon(new Daemon());
  daemon->work_dir_ = make_work_dir();
  auto config = daemon->work_dir_ / "cqrsd.conf";
  std::ofstream(config).close();  // empty: built-in defaults plus our flags
  auto stderr_path = daemon->work_dir_ / "stderr.log";

  std::vector<std::string> args = {CQRSD_BIN, "--config-file=" + config.string(),
                                   "--db.url=" + db_url, "--server.port=0", "--log.level=warn"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv = c_argv(args);
  std::string dir = daemon->work_dir_.string();

  Pipe out = make_pipe();
  Pipe exec_error = make_pipe();  // the child writes errno here when execv fails
  int err_fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (err_fd < 0) throw_errno("open " + stderr_path.string());
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(out.write, STDOUT_FILENO) < 0 ||
        ::dup2(err_fd, STDERR_FILENO) < 0 || ::chdir(dir.c_str()) != 0) {
      int code = errno;
      (void)!::write(exec_error.write, &code, sizeof code);
      ::_exit(127);
    }
    ::execv(argv[0], argv.data());
    int code = errno;
    (void)!::write(exec_error.write, &code, sizeof code);
    ::_exit(127);
  }
  daemon->pid_ = pid;
  close_fd(out.write);
  close_fd(exec_error.write);
  ::close(err_fd);
  daemon->stdout_fd_ = out.read;

  int code = 0;
  ssize_t got = ::read(exec_error.read, &code, sizeof code);
  close_fd(exec_error.read);
  if (got == sizeof code) {
    ADD_FAILURE() << "cannot start " << CQRSD_BIN << ": " << std::strerror(code);
    return nullptr;
  }

  // Read stdout until the "listening on" line, the process exits, or the deadline passes.
  auto deadline = Clock::now() + kDaemonStartTimeout;
  std::string pending;
  while (daemon->port_ == 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) {
      ADD_FAILURE() << "cqrsd did not print 'listening on' within " << kDaemonStartTimeout.count()
                    << " s; stderr:\n"
                    << daemon->stderr_text();
      return nullptr;  // the destructor kills it
    }
    pollfd fd{daemon->stdout_fd_, POLLIN, 0};
    int ready = ::poll(&fd, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (ready < 0 && errno != EINTR) throw_errno("poll");
    if (ready <= 0) continue;
    char buffer[4096];
    ssize_t count = ::read(daemon->stdout_fd_, buffer, sizeof buffer);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      int status = daemon->wait_exit(5s);
      ADD_FAILURE() << "cqrsd exited before listening (exit code " << status << "); stderr:\n"
                    << daemon->stderr_text();
      return nullptr;
    }
    pending.append(buffer, static_cast<size_t>(count));
    size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      if (daemon->port_ == 0) daemon->port_ = parse_listening_port(line);
      std::lock_guard lock(daemon->mutex_);
      daemon->stdout_lines_.push_back(std::move(line));
    }
  }
  // Keep draining stdout so the daemon never blocks on a full pipe.
  daemon->reader_ = std::thread([raw = daemon.get()] { raw->read_stdout(); });
  return daemon;
}

void Daemon::read_stdout() {
  char buffer[4096];
  std::string pending;
  while (true) {
    ssize_t count = ::read(stdout_fd_, buffer, sizeof buffer);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) break;
    pending.append(buffer, static_cast<size_t>(count));
    size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      std::lock_guard lock(mutex_);
      stdout_lines_.push_back(pending.substr(0, newline));
      pending.erase(0, newline + 1);
    }
  }
}

Daemon::~Daemon() {
  if (running()) kill9();
  if (reader_.joinable()) reader_.join();
  close_fd(stdout_fd_);
  std::error_code ignored;
  std::filesystem::remove_all(work_dir_, ignored);
}

bool Daemon::running() {
  if (pid_ <= 0 || exit_code_ != kStillRunning) return false;
  exit_code_ = wait_until(pid_, Clock::now());
  return exit_code_ == kStillRunning;
}

void Daemon::terminate() {
  if (running()) ::kill(pid_, SIGTERM);
}

int Daemon::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  if (exit_code_ == kStillRunning) exit_code_ = wait_until(pid_, Clock::now() + timeout);
  return exit_code_;
}

int Daemon::stop(bool expect_success, std::chrono::milliseconds timeout) {
  terminate();
  int code = wait_exit(timeout);
  if (code == kStillRunning) {
    ADD_FAILURE() << "cqrsd (pid " << pid_ << ") did not exit within " << timeout.count()
                  << " ms of SIGTERM; killing it. stderr:\n"
                  << stderr_text();
    kill9();
    return kStillRunning;
  }
  if (expect_success && code != 0) {
    ADD_FAILURE() << "cqrsd exited with " << code << " after SIGTERM; stderr:\n" << stderr_text();
  }
  return code;
}

void Daemon::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  exit_code_ = wait_blocking(pid_);
}

std::string Daemon::stderr_text() const {
  std::ifstream in(work_dir_ / "stderr.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Daemon::stdout_lines() const {
  std::lock_guard lock(mutex_);
  return stdout_lines_;
}

// ---------------------------------------------------------------------------------------------
// One-shot processes

ProcessResult run_process(const std::vector<std::string>& argv_in, const std::string& stdin_text,
                          std::chrono::milliseconds timeout) {
  std::vector<std::string> args = argv_in;
  std::vector<char*> argv = c_argv(args);
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  Pipe err = make_pipe();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.read, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.write, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write, STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  pid_t pid = -1;
  int spawned = ::posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  close_fd(in.read);
  close_fd(out.write);
  close_fd(err.write);
  ProcessResult result;
  if (spawned != 0) {
    close_fd(in.write);
    close_fd(out.read);
    close_fd(err.read);
    result.stderr_text = "posix_spawn " + args[0] + ": " + std::strerror(spawned);
    return result;
  }

  ::fcntl(in.write, F_SETFL, ::fcntl(in.write, F_GETFL) | O_NONBLOCK);
  size_t written = 0;
  if (stdin_text.empty()) close_fd(in.write);
  std::string out_text;
  auto deadline = Clock::now() + timeout;
  bool killed = false;
  while (out.read >= 0 || err.read >= 0) {
    if (!killed && Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      killed = true;
      result.timed_out = true;
      close_fd(in.write);
    }
    pollfd fds[3] = {{in.write, POLLOUT, 0}, {out.read, POLLIN, 0}, {err.read, POLLIN, 0}};
    int ready = ::poll(fds, 3, 50);
    if (ready < 0 && errno != EINTR) throw_errno("poll");
    if (ready <= 0) continue;
    if (in.write >= 0 && (fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t count = ::write(in.write, stdin_text.data() + written, stdin_text.size() - written);
      if (count > 0) written += static_cast<size_t>(count);
      if ((count < 0 && errno != EAGAIN && errno != EINTR) || written == stdin_text.size()) {
        close_fd(in.write);
      }
    }
    struct Sink {
      int* fd;
      short revents;
      std::string* text;
    };
    for (Sink sink : {Sink{&out.read, fds[1].revents, &out_text},
                      Sink{&err.read, fds[2].revents, &result.stderr_text}}) {
      if (*sink.fd < 0 || !(sink.revents & (POLLIN | POLLERR | POLLHUP))) continue;
      char buffer[65536];
      ssize_t count = ::read(*sink.fd, buffer, sizeof buffer);
      if (count > 0) {
        sink.text->append(buffer, static_cast<size_t>(count));
      } else if (count == 0 || errno != EINTR) {
        close_fd(*sink.fd);
      }
    }
  }
  close_fd(in.write);
  result.exit_code = wait_blocking(pid);
  result.stdout_lines = split_lines(out_text);
  return result;
}

ProcessResult run_cqrsctl(uint16_t port, const std::vector<std::string>& args,
                          const std::string& stdin_text, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {CQRSCTL_BIN, "--port", std::to_string(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, stdin_text, timeout);
}

uint16_t free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace cqrs::system_test
