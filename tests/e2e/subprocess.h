// A child process for end-to-end tests, with its stdout and stderr in files.
#ifndef COHORT_TESTS_E2E_SUBPROCESS_H_
#define COHORT_TESTS_E2E_SUBPROCESS_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cohort {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// A child process whose stdout and stderr go to files. The destructor kills it with
// SIGKILL when it still runs, so no child outlives a failed test.
class Subprocess {
 public:
  // Starts `args` (args[0] is the program path) in `cwd`. Errors are test failures and
  // return null.
  static std::unique_ptr<Subprocess> Start(const std::vector<std::string>& args,
                                           const std::string& stdout_path,
                                           const std::string& stderr_path,
                                           const std::string& cwd) {
    // Everything the child needs is prepared before fork(): between fork() and exec()
    // a multithreaded parent may only make async-signal-safe calls.
    std::vector<std::string> owned = args;
    std::vector<char*> argv;
    for (std::string& arg : owned) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      return nullptr;
    }
    if (pid == 0) {
      const int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || err < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0 ||
          chdir(cwd.c_str()) != 0) {
        _exit(126);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
    return std::unique_ptr<Subprocess>(new Subprocess(pid, stdout_path, stderr_path));
  }

  ~Subprocess() {
    if (exit_code_.has_value()) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }

  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  void Signal(int signal) const {
    if (!exit_code_.has_value()) kill(pid_, signal);
  }

  // Waits up to `timeout` for the process to end. Returns its exit code (128 + the
  // signal number when a signal ended it), or nullopt when it still runs.
  std::optional<int> WaitForExit(absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (!exit_code_.has_value()) {
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (absl::Now() > give_up) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return exit_code_;
  }

  // Waits up to `timeout` for a stderr line that starts with `prefix` and returns the
  // rest of that line. Returns nullopt on timeout or when the process ends first.
  std::optional<std::string> AwaitStderrLine(const std::string& prefix, absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      for (absl::string_view line : absl::StrSplit(ReadFile(stderr_path_), '\n')) {
        if (absl::StartsWith(line, prefix)) {
          return std::string(absl::StripAsciiWhitespace(line.substr(prefix.size())));
        }
      }
      if (WaitForExit(absl::ZeroDuration()).has_value()) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  std::string Stdout() const { return ReadFile(stdout_path_); }
  std::string Stderr() const { return ReadFile(stderr_path_); }

 private:
  Subprocess(pid_t pid, std::string stdout_path, std::string stderr_path)
      : pid_(pid), stdout_path_(std::move(stdout_path)), stderr_path_(std::move(stderr_path)) {}

  const pid_t pid_;
  const std::string stdout_path_;
  const std::string stderr_path_;
  std::optional<int> exit_code_;
};

}  // namespace cohort

#endif  // COHORT_TESTS_E2E_SUBPROCESS_H_
