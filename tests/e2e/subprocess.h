// A test fixture that runs the `cohort` command as child processes in a temp folder.
#ifndef COHORT_TESTS_E2E_SUBPROCESS_H_
#define COHORT_TESTS_E2E_SUBPROCESS_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/subprocess.h"

namespace cohort::testing {

// Runs the `cohort` command (COHORT_CLI_PATH) as child processes in a temp folder, which
// is removed after the test together with every child that still runs.
class CliProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "cohort-e2e-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp(" << pattern << ") failed";
    dir_ = pattern;
  }

  // Kills every child that still runs, then removes the temp folder.
  void TearDown() override {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) it->reset();
    children_.clear();
    std::error_code error;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
  }

  std::string PathIn(const std::string& name) const {
    return (std::filesystem::path(dir_) / name).string();
  }

  // Starts `cohort <args>` in the background; its output goes to <name>.stdout and
  // <name>.stderr in the temp folder.
  Subprocess* Spawn(const std::string& name, std::vector<std::string> args,
                    const std::string& cwd = "") {
    args.insert(args.begin(), COHORT_CLI_PATH);
    std::unique_ptr<Subprocess> child =
        Subprocess::Start(args, PathIn(name + ".stdout"), PathIn(name + ".stderr"),
                          cwd.empty() ? dir_ : cwd);
    if (child == nullptr) return nullptr;
    children_.push_back(std::move(child));
    return children_.back().get();
  }

  struct CommandResult {
    int exit_code = -1;  // -1: still running at the timeout, then killed
    std::string out;
    std::string err;
  };

  // Runs `cohort <args>` to completion, bounded by command_timeout_.
  CommandResult Run(const std::string& name, std::vector<std::string> args,
                    const std::string& cwd = "") {
    CommandResult result;
    Subprocess* child = Spawn(name, std::move(args), cwd);
    if (child == nullptr) return result;
    result.exit_code = child->WaitForExit(command_timeout_).value_or(-1);
    result.out = child->Stdout();
    result.err = child->Stderr();
    return result;
  }

  // Time allowed for one client command; a test may set another in its constructor.
  absl::Duration command_timeout_ = absl::Seconds(180);
  std::string dir_;
  std::vector<std::unique_ptr<Subprocess>> children_;
};

}  // namespace cohort::testing

#endif  // COHORT_TESTS_E2E_SUBPROCESS_H_
