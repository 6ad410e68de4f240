// The `cohort neighbours`, `cohort recommend` and `cohort local recommend` commands: load
// an interactions CSV through the public API, run neighbour jobs and print neighbour
// lists or recommendations.
#ifndef COHORT_CLI_RECOMMEND_CLIENT_H_
#define COHORT_CLI_RECOMMEND_CLIENT_H_

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cohort {

struct InteractionFileFlags {
  std::string path;       // a CSV path or glob that the workers can read
  std::string delimiter;  // empty: ","
  bool no_header = false;
  // Column names, or 0-based numbers without a header; empty fields take the API's
  // defaults (user_id, item_id, value).
  std::string user_column;
  std::string item_column;
  std::string value_column;
  std::string time_column;
  bool implicit = false;
  std::string min_value;   // empty: no filter
  std::string duplicates;  // keep_latest (default), sum, max or reject
  int num_shards = 0;
};

struct NeighbourFlags {
  std::string measure = "cosine";
  int k = 20;
  double shrinkage = 0;
  int min_support = 0;
  // ALS baselines stored with the model; unset means the API's defaults (10, 10, 15).
  std::optional<int> baseline_epochs;
  std::optional<double> baseline_reg_item;
  std::optional<double> baseline_reg_user;
};

struct RecommendCommandOptions {
  InteractionFileFlags file;
  NeighbourFlags neighbours;
  // neighbours: "item" or "user"; the ids whose lists are printed.
  std::string kind = "item";
  std::vector<std::string> show;
  // recommend: the users, the method ("item", "user", "hybrid" or "content") and the
  // list length.
  std::vector<std::string> users;
  std::string method = "item";
  int n = 10;
  std::vector<std::string> exclude;
  double hybrid_weight = 0.5;
  // content, and hybrid with content_weight > 0: a user–user neighbour model on feature
  // vectors that already exists on the coordinator.
  std::string content_model;
  double content_weight = 0;
  bool progress = true;
};

// The three commands, registered on the `cohort` app and its `local` subcommand.
class RecommendCommands {
 public:
  // Adds `neighbours` and `recommend` to `app` and `recommend` to `local`.
  RecommendCommands(CLI::App* app, CLI::App* local);

  // True when the command line selected one of the three commands.
  bool parsed() const;

  // Runs the selected command, printing results to `out`. Errors: the first failing
  // call's status, or InvalidArgument naming a bad flag.
  [[nodiscard]] absl::Status Run(std::ostream& out);

 private:
  CLI::App* neighbours_;
  CLI::App* recommend_;
  CLI::App* local_recommend_;
  RecommendCommandOptions neighbour_options_;
  RecommendCommandOptions recommend_options_;
  RecommendCommandOptions local_options_;
  int local_workers_ = 3;
  std::string neighbours_coordinator_ = "127.0.0.1:7070";
  std::string recommend_coordinator_ = "127.0.0.1:7070";
};

}  // namespace cohort

#endif  // COHORT_CLI_RECOMMEND_CLIENT_H_
