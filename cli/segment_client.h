// Client side of `cohort segment`: creates and loads a dataset through the public API,
// runs a segmentation job, draws its progress and writes the results.
#ifndef COHORT_CLI_SEGMENT_CLIENT_H_
#define COHORT_CLI_SEGMENT_CLIENT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort {

struct SegmentCommandOptions {
  // Exactly one of `users` (a CSV of users), `transactions` (a transaction log) and
  // `dataset_id` (a dataset already loaded on the coordinator, which the flags below up
  // to duplicate_ids must then leave at their defaults).
  std::string users;
  std::string transactions;
  std::string dataset_id;
  std::string delimiter;  // empty: ","
  std::string id_column;
  std::vector<std::string> ignore_columns;
  // Column of per-user sample weights (finite, >= 0); empty for unweighted users.
  std::string weight_column;
  std::vector<std::string> categorical_columns;
  std::vector<std::string> numeric_columns;
  // Transaction log column names; empty fields keep the Online Retail defaults.
  // "role=name" entries; roles: user, invoice, item, quantity, price, time.
  std::vector<std::string> transaction_columns;
  int num_shards = 0;  // 0: the coordinator's default
  // Rule for a user id that appears again: "reject" (default) or "keep-first".
  std::string duplicate_ids = "reject";

  int k = 5;
  int max_iter = 0;
  // Unset: the coordinator's default. 0 is a valid value of both.
  std::optional<double> tol;
  std::optional<uint64_t> seed;
  int n_init = 0;
  int max_categories = 0;
  std::vector<std::string> log1p_columns;
  bool raw_numeric = false;
  std::string algorithm;  // "kmeans" (default), "minibatch" or "bisecting"
  std::string split_rule;
  int64_t min_divisible_size = 0;
  // Seeding, mini-batch and distance options; 0 or empty means the coordinator's default.
  std::string init;  // "kmeans++" or "kmeans||"
  double oversampling = 0;
  int init_rounds = 0;
  int batch_size = 0;
  int max_no_improvement = 0;
  double reassignment_ratio = 0;
  std::string distance;  // "sqeuclidean" or "cosine"

  // Report only: k values to sweep (the suggested k is used unless k_given), and
  // whether to grow a bisecting segment tree too.
  std::vector<int> sweep_ks;
  bool k_given = false;
  bool tree = false;

  // Output folder for model.json, segments.csv, centroids.csv and assignments.csv.
  std::string out_dir = "cohort-out";
  bool write_assignments = true;
  bool progress_bar = true;
  absl::Duration deadline = absl::Hours(24);

  // Errors: InvalidArgument naming the flag and value.
  [[nodiscard]] absl::Status Validate() const;
};

// Runs the whole segmentation against the coordinator at `address` and prints the
// segment table to `out`. Errors: the first failing call's status, with the step named.
[[nodiscard]] absl::Status RunSegmentCommand(const std::string& address,
                                             const SegmentCommandOptions& options,
                                             std::ostream& out);

// Like RunSegmentCommand, then writes report.html to the output folder: an optional k
// sweep first (its suggested k is used unless options.k_given), the K-means model, and
// an optional bisecting tree with the same k.
[[nodiscard]] absl::Status RunReportCommand(const std::string& address,
                                            const SegmentCommandOptions& options,
                                            std::ostream& out);

}  // namespace cohort

#endif  // COHORT_CLI_SEGMENT_CLIENT_H_
