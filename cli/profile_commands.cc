#include "cli/profile_commands.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/flag_checks.h"
#include "coordinator/coordinator_server.h"
#include "core/log.h"
#include "worker/worker_server.h"

namespace cohort {
namespace {

void AddTrainFlags(CLI::App* command, ProfileCommandOptions* options) {
  command->add_option("--data", options->users, "CSV file or glob of users with a label column");
  command->add_option("--label", options->label_column, "label column (loaded as LABEL)");
  command->add_option("--positive", options->positive_label,
                      "label value of the positive class, e.g. yes");
  command->add_option("--spec", options->spec_file,
                      "pipeline spec file: one 'column <name> = step | step' line per feature "
                      "(default: every column with a standard transform)");
  command->add_option("--delimiter", options->delimiter, "CSV field separator (default ,)");
  command->add_option("--id-column", options->id_column,
                      "id column (default: a column named *id, else the first; @line for the "
                      "line number)");
  command->add_option("--ignore", options->ignore_columns, "columns to ignore")->delimiter(',');
  command->add_option("--categorical", options->categorical_columns, "categorical columns")
      ->delimiter(',');
  command->add_option("--numeric", options->numeric_columns, "numeric columns")->delimiter(',');
  command->add_option("--boolean", options->boolean_columns,
                      "boolean columns (true/false, yes/no, 1/0)")
      ->delimiter(',');
  command->add_option("--text", options->text_columns, "free-text columns (hashed n-grams)")
      ->delimiter(',');
  command->add_option("--embedding", options->embedding_columns,
                      "vector columns: numbers separated by spaces")
      ->delimiter(',');
  command->add_option("--weight", options->weight_column, "column of per-user sample weights");
  command->add_option("--shards", options->num_shards, "virtual shards (default 64)")
      ->check(AtLeast(1));
  command->add_option("--duplicate-ids", options->duplicate_ids,
                      "a user id that appears again: reject (fail the load) or keep-first "
                      "(keep the first row, count the rest)")
      ->capture_default_str();
  command->add_option("--unparsable-cells", options->unparsable_cells,
                      "a numeric, boolean or embedding cell that does not parse: reject (fail "
                      "the load) or missing (treat it as empty, impute it, count it)")
      ->capture_default_str();

  // Training.
  command->add_option("-C,--c", options->c,
                      "inverse L2 strength as in scikit-learn (default 1)")
      ->check(Above(0));
  command->add_option("--l2", options->l2, "L2 strength, 1 / C (instead of -C)")
      ->check(Above(0));
  command->add_option("--class-weight", options->class_weight,
                      "balanced, or explicit with --negative-weight and --positive-weight");
  command->add_option("--negative-weight", options->negative_weight, "class weight of negatives")
      ->check(Above(0));
  command->add_option("--positive-weight", options->positive_weight, "class weight of positives")
      ->check(Above(0));
  command->add_option("--test-fraction", options->test_fraction,
                      "share of users held out for the metrics (default 0.2; "
                      "--no-test-split holds out none)")
      ->check(Above(0));
  command->add_flag("--no-test-split", options->no_test_split, "train on every user");
  command->add_option("--seed", options->seed, "seed of the train/test split (default 42)")
      ->check(AtLeast(1));
  command->add_option("--max-iter", options->max_iter, "L-BFGS iterations (default 100)")
      ->check(AtLeast(1));
  command->add_option("--tol", options->tol,
                      "stop when the largest gradient component is below this (default 1e-4)")
      ->check(Above(0));
  command->add_option("--top", options->top_coefficients, "coefficients to print")
      ->capture_default_str();
  command->add_flag("!--no-progress", options->progress_bar, "do not draw the progress bar");
}

// Runs `cohort local profile`: workers and a coordinator in this process.
int RunLocalProfile(ProfileCommands& commands, int (*fail)(const absl::Status& status)) {
  if (commands.local_workers < 1 || commands.local_workers > 64) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--workers ", commands.local_workers, " is invalid; use 1..64")));
  }
  ProfileCommandOptions& options = commands.train;
  if (options.users.empty()) {
    const std::string dir = (std::filesystem::path(commands.local_out) / "data").string();
    absl::StatusOr<std::string> path = WriteLabelledShop(dir);
    if (!path.ok()) return fail(path.status());
    std::fprintf(stderr,
                 "no --data given: generated the synthetic shop's customers with a 'responded' "
                 "label in %s\n",
                 path->c_str());
    options.users = *path;
    options.id_column = "customer_id";
    options.ignore_columns.push_back("segment_truth");
    if (options.label_column.empty()) options.label_column = "responded";
    if (options.positive_label.empty()) options.positive_label = "yes";
  }

  std::vector<std::unique_ptr<WorkerServer>> workers;
  CoordinatorServerOptions coordinator_options;
  for (int i = 0; i < commands.local_workers; ++i) {
    WorkerServerOptions worker_options;
    worker_options.worker_id = absl::StrCat("local-", i);
    absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(worker_options);
    if (!worker.ok()) return fail(worker.status());
    coordinator_options.worker_addresses.push_back((*worker)->address());
    workers.push_back(std::move(*worker));
  }
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator =
      CoordinatorServer::Start(coordinator_options);
  if (!coordinator.ok()) return fail(coordinator.status());
  std::fprintf(stderr, "local cluster: coordinator %s, %d workers\n",
               (*coordinator)->address().c_str(), commands.local_workers);
  absl::StatusOr<std::string> model = RunProfileCommand((*coordinator)->address(), options,
                                                        std::cout);
  (*coordinator)->Shutdown(absl::Seconds(1));
  for (auto& worker : workers) worker->Shutdown(absl::Seconds(1));
  return model.ok() ? 0 : fail(model.status());
}

}  // namespace

void AddProfileCommands(CLI::App& app, CLI::App& local, ProfileCommands* commands) {
  commands->profile = app.add_subcommand(
      "profile", "train a propensity model on a running coordinator and print its metrics");
  commands->profile->add_option("--coordinator", commands->coordinator, "coordinator host:port")
      ->capture_default_str();
  AddTrainFlags(commands->profile, &commands->train);
  commands->profile->add_option(
      "--dataset", commands->train.dataset_id,
      "id of a dataset loaded by an earlier profile command, instead of --data; a segment "
      "command with the same --dataset then segments the same users");

  commands->audience = app.add_subcommand(
      "audience", "select users by segment and propensity from a profile model");
  CLI::App* audience = commands->audience;
  AudienceCommandOptions& select = commands->select;
  audience->add_option("--coordinator", commands->coordinator, "coordinator host:port")
      ->capture_default_str();
  audience->add_option("--model", select.profile_model_id, "profile model id")->required();
  audience->add_option("--segment-model", select.segment_model_id,
                       "segment model id of the same dataset");
  audience->add_option("--segments", select.segments, "keep users in these segments")
      ->delimiter(',');
  audience->add_option("--min-score", commands->min_score, "keep users with propensity >= this");
  audience->add_option("--top", select.top_n,
                       "keep the N users with the highest propensity (default: every user)")
      ->check(AtLeast(1));
  audience->add_option("--cap", select.per_segment_cap,
                       "at most this many users per segment (default: no cap)")
      ->check(AtLeast(1));
  audience->add_option("--exclude", select.exclude_user_ids, "user ids to leave out")
      ->delimiter(',');
  audience->add_option("--exclude-file", select.exclude_file,
                       "file of user ids to leave out, one per line");
  audience->add_option("--out", select.out_path, "CSV file for user_id,propensity,segment");

  commands->score = app.add_subcommand(
      "score", "score a new user with a profile model (and a segment model) in one call");
  CLI::App* score = commands->score;
  score->add_option("--coordinator", commands->coordinator, "coordinator host:port")
      ->capture_default_str();
  score->add_option("--model", commands->scoring.profile_model_id, "profile model id")
      ->required();
  score->add_option("--segment-model", commands->scoring.segment_model_id, "segment model id");
  score->add_option("--column", commands->scoring.columns,
                    "a raw column of the user as name=value; repeat for each column");

  commands->local_profile = local.add_subcommand(
      "profile",
      "train a propensity model on a local cluster (default: the synthetic shop with a label)");
  commands->local_profile
      ->add_option("--workers", commands->local_workers, "workers to start")
      ->capture_default_str();
  commands->local_profile
      ->add_option("--out", commands->local_out, "folder for the generated data")
      ->capture_default_str();
  AddTrainFlags(commands->local_profile, &commands->train);
}

std::optional<int> RunProfileCommands(ProfileCommands& commands,
                                      int (*fail)(const absl::Status& status)) {
  if (commands.profile->parsed()) {
    absl::StatusOr<std::string> model =
        RunProfileCommand(commands.coordinator, commands.train, std::cout);
    return model.ok() ? 0 : fail(model.status());
  }
  if (commands.audience->parsed()) {
    commands.select.has_min_score = commands.audience->count("--min-score") > 0;
    commands.select.min_score = commands.min_score;
    absl::Status status = RunAudienceCommand(commands.coordinator, commands.select, std::cout);
    return status.ok() ? 0 : fail(status);
  }
  if (commands.score->parsed()) {
    absl::Status status = RunScoreCommand(commands.coordinator, commands.scoring, std::cout);
    return status.ok() ? 0 : fail(status);
  }
  if (commands.local_profile->parsed()) {
    return RunLocalProfile(commands, fail);
  }
  return std::nullopt;
}

}  // namespace cohort
