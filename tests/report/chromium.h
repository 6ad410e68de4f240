// Headless Chromium for the report tests: finding the binary, running it with a
// bounded time, and reading the rendered DOM.
#ifndef COHORT_TESTS_REPORT_CHROMIUM_H_
#define COHORT_TESTS_REPORT_CHROMIUM_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "tests/test_data.h"

extern char** environ;

namespace cohort::testing {

namespace fs = std::filesystem;

inline constexpr std::chrono::seconds kChromiumTimeout{60};


// Path of the Chromium binary, or nullopt when it is not installed.
inline std::optional<std::string> FindChromium() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path == nullptr ? "" : path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / "chromium";
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  if (access("/usr/bin/chromium", X_OK) == 0) return "/usr/bin/chromium";
  return std::nullopt;
}

// Runs `argv` with stdout and stderr sent to files, and kills it when it outlives
// `timeout`. Returns the exit code; Internal when it cannot start or ends by a signal,
// DeadlineExceeded on timeout.
inline absl::StatusOr<int> RunWithTimeout(const std::vector<std::string>& argv,
                                   const std::string& stdout_path,
                                   const std::string& stderr_path,
                                   std::chrono::seconds timeout) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // A process group of its own, so that a timeout kills Chromium's helper processes too.
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);

  std::vector<char*> raw_argv;
  for (const std::string& arg : argv) raw_argv.push_back(const_cast<char*>(arg.c_str()));
  raw_argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error =
      posix_spawn(&pid, argv[0].c_str(), &actions, &attributes, raw_argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0) {
    return absl::InternalError(absl::StrCat("failed to start ", argv[0], ": errno ", spawn_error));
  }

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int wait_status = 0;
  while (true) {
    const pid_t done = waitpid(pid, &wait_status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &wait_status, 0);
      return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ",
                                                      timeout.count(), " s and was killed"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Helpers that outlive the browser process would keep the user data dir busy.
  kill(-pid, SIGKILL);
  if (!WIFEXITED(wait_status)) {
    return absl::InternalError(absl::StrCat(argv[0], " ended by signal ", WTERMSIG(wait_status)));
  }
  return WEXITSTATUS(wait_status);
}

inline std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs Chromium headless on `html_path` with `extra` flags, using a fresh profile and
// output files named after `name` in `dir`. Returns the exit status; on failure the
// test gets a failure with Chromium's stderr.
inline absl::StatusOr<int> RunChromium(const std::string& chromium, const fs::path& dir,
                                       const std::string& html_path,
                                       const std::vector<std::string>& extra,
                                       const std::string& name, std::string* stdout_text) {
  const fs::path profile = dir / (name + "-profile");
  fs::create_directories(profile);
  std::vector<std::string> argv = {chromium,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--hide-scrollbars",
                                   "--user-data-dir=" + profile.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("file://" + html_path);
  const fs::path out = dir / (name + ".stdout");
  const fs::path err = dir / (name + ".stderr");
  absl::StatusOr<int> exit_code = RunWithTimeout(argv, out, err, kChromiumTimeout);
  *stdout_text = ReadFile(out);
  if (!exit_code.ok() || *exit_code != 0) {
    ADD_FAILURE() << name << " run of chromium failed; stderr:\n" << ReadFile(err);
  }
  return exit_code;
}

// The text of <section id="id"> … </section> in `dom`, or "" when absent.
inline std::string Section(const std::string& dom, const std::string& id) {
  const size_t start = dom.find("<section id=\"" + id + "\"");
  if (start == std::string::npos) return "";
  const size_t end = dom.find("</section>", start);
  return dom.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

inline size_t Count(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_REPORT_CHROMIUM_H_
