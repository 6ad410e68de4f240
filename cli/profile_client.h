// Client side of `cohort profile`, `cohort audience` and `cohort score`: trains a profile
// model through the public API and prints it, selects audiences into CSV files and
// scores new users.
#ifndef COHORT_CLI_PROFILE_CLIENT_H_
#define COHORT_CLI_PROFILE_CLIENT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort {

struct ProfileCommandOptions {
  // Exactly one of `users`, a CSV of users with a label column, and `dataset_id`, a
  // dataset already loaded on the coordinator with its label column of type LABEL (as
  // an earlier `cohort profile` loads it). With `dataset_id` the loading flags (columns,
  // weight, shards and cell rules) must stay at their defaults.
  std::string users;
  std::string dataset_id;
  std::string delimiter;  // empty: ","
  std::string id_column;
  // The label column (loaded as a LABEL column) and its positive value. A pipeline spec
  // file that declares `label` fills both when they are empty.
  std::string label_column;
  std::string positive_label;
  std::vector<std::string> ignore_columns;
  std::vector<std::string> categorical_columns;
  std::vector<std::string> numeric_columns;
  std::vector<std::string> boolean_columns;
  std::vector<std::string> text_columns;
  std::vector<std::string> embedding_columns;
  std::string weight_column;
  // Pipeline spec file (see core/pipeline.h for the format); empty: the default pipeline.
  std::string spec_file;
  int num_shards = 0;
  // Loading rules: "reject" or "keep-first" for a repeated user id, "reject" or
  // "missing" for a numeric, boolean or embedding cell that does not parse.
  std::string duplicate_ids = "reject";
  std::string unparsable_cells = "reject";

  // Training options; 0 or empty means the coordinator's default.
  double c = 0;
  double l2 = 0;
  std::string class_weight;  // "", "balanced" or "explicit"
  double negative_weight = 0;
  double positive_weight = 0;
  double test_fraction = 0;
  bool no_test_split = false;
  uint64_t seed = 0;
  int max_iter = 0;
  double tol = 0;

  int top_coefficients = 10;  // coefficients printed
  bool progress_bar = true;
  absl::Duration deadline = absl::Hours(24);

  // Errors: InvalidArgument naming the flag and value.
  [[nodiscard]] absl::Status Validate() const;
};

// Loads the users, trains a profile model and prints its metrics, top coefficients and
// cleaning counts to `out`. Returns the model id. Errors: the first failing call's
// status, with the step named.
[[nodiscard]] absl::StatusOr<std::string> RunProfileCommand(const std::string& address,
                                                            const ProfileCommandOptions& options,
                                                            std::ostream& out);

struct AudienceCommandOptions {
  std::string profile_model_id;
  std::string segment_model_id;
  std::vector<int> segments;
  bool has_min_score = false;
  double min_score = 0;
  int64_t top_n = 0;
  int64_t per_segment_cap = 0;
  std::vector<std::string> exclude_user_ids;
  // A file of user ids to exclude, one per line.
  std::string exclude_file;
  // CSV file for the audience (user_id,propensity,segment); empty: only the count.
  std::string out_path;
  absl::Duration deadline = absl::Hours(1);
};

// Selects the audience and writes it to options.out_path; prints the count to `out`.
// Errors: the call's status, or Internal naming a file that cannot be read or written.
[[nodiscard]] absl::Status RunAudienceCommand(const std::string& address,
                                              const AudienceCommandOptions& options,
                                              std::ostream& out);

struct ScoreCommandOptions {
  std::string profile_model_id;
  std::string segment_model_id;
  // Raw columns of the user as name=value.
  std::vector<std::string> columns;
  absl::Duration deadline = absl::Minutes(1);
};

// Scores one new user and prints the propensity, decile, segment and top features.
// Errors: InvalidArgument for a column without '='; the call's status.
[[nodiscard]] absl::Status RunScoreCommand(const std::string& address,
                                           const ScoreCommandOptions& options, std::ostream& out);

// Writes the synthetic shop's customers (core/synthetic.h) with a seeded yes/no label
// column "responded", drawn from a logistic model of their visits, tenure, basket size
// and channel, to <directory>/customers_labelled.csv. Returns that path. Errors: those
// of WriteSyntheticShop, or Internal naming a file that cannot be read or written.
[[nodiscard]] absl::StatusOr<std::string> WriteLabelledShop(const std::string& directory);

}  // namespace cohort

#endif  // COHORT_CLI_PROFILE_CLIENT_H_
