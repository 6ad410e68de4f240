// The `cohort profile`, `cohort audience`, `cohort score` and `cohort local profile`
// subcommands: their flags and their runs.
#ifndef COHORT_CLI_PROFILE_COMMANDS_H_
#define COHORT_CLI_PROFILE_COMMANDS_H_

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "cli/profile_client.h"

namespace cohort {

// The parsed flags of the profile subcommands; the subcommand pointers are owned by the
// CLI::App they were added to.
struct ProfileCommands {
  CLI::App* profile = nullptr;
  CLI::App* audience = nullptr;
  CLI::App* score = nullptr;
  CLI::App* local_profile = nullptr;
  std::string coordinator = "127.0.0.1:7070";
  ProfileCommandOptions train;
  AudienceCommandOptions select;
  ScoreCommandOptions scoring;
  double min_score = 0;
  int local_workers = 3;
  std::string local_out = "cohort-out";
};

// Adds the subcommands to `app`, and `profile` under the existing `local` subcommand.
void AddProfileCommands(CLI::App& app, CLI::App& local, ProfileCommands* commands);

// Runs the parsed subcommand, if one of these was parsed, and returns the exit code
// (0 on success; errors are printed by `fail`).
std::optional<int> RunProfileCommands(ProfileCommands& commands,
                                      int (*fail)(const absl::Status& status));

}  // namespace cohort

#endif  // COHORT_CLI_PROFILE_COMMANDS_H_
