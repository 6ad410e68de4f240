// The `cohort` command: services, client mode, local mode and data generation.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/flag_checks.h"
#include "cli/profile_commands.h"
#include "cli/recommend_client.h"
#include "cli/segment_client.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "core/allocator.h"
#include "core/log.h"
#include "core/synthetic.h"
#include "worker/worker_server.h"

namespace cohort {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "cohort: %s (%s)\n", std::string(status.message()).c_str(),
               absl::StatusCodeToString(status.code()).c_str());
  return 1;
}

// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts later,
// so that WaitForStopSignal receives them. Call it before starting servers.
void BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// Blocks until SIGINT or SIGTERM arrives and returns the signal number.
int WaitForStopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int signal = 0;
  sigwait(&set, &signal);
  return signal;
}

void AddSegmentFlags(CLI::App* command, SegmentCommandOptions* options) {
  command->add_option("--data", options->users, "CSV file or glob of users (one row per user)");
  command->add_option("--transactions", options->transactions,
                      "CSV file or glob of a transaction log (Online Retail layout by default); "
                      "per-user RFM features are computed from it");
  command->add_option("--delimiter", options->delimiter, "CSV field separator (default ,)");
  command->add_option("--id-column", options->id_column,
                      "id column of a user CSV (default: a column named *id, else the first)");
  command->add_option("--ignore", options->ignore_columns, "columns to ignore")->delimiter(',');
  command->add_option("--weight", options->weight_column,
                      "column of per-user sample weights (numbers >= 0) for K-means training; "
                      "segment sizes and summaries still count each user once");
  command->add_option("--categorical", options->categorical_columns,
                      "columns to treat as categorical")
      ->delimiter(',');
  command->add_option("--numeric", options->numeric_columns, "columns to treat as numeric")
      ->delimiter(',');
  command->add_option("--tx-column", options->transaction_columns,
                      "transaction column names as role=name, roles: user invoice item "
                      "quantity price time")
      ->delimiter(',');
  command->add_option("--shards", options->num_shards, "virtual shards (default 64)")
      ->check(AtLeast(1));
  command->add_option("--duplicate-ids", options->duplicate_ids,
                      "what to do with a user id that appears again: reject (fail the load, "
                      "naming both lines) or keep-first (keep the first row, count the rest)")
      ->capture_default_str();
  command->add_option("-k,--k", options->k, "number of segments")->capture_default_str();
  command->add_option("--max-iter", options->max_iter, "maximum Lloyd iterations (default 300)")
      ->check(AtLeast(1));
  command->add_option("--tol", options->tol,
                      "convergence tolerance relative to the data scale (default 1e-4; 0 iterates "
                      "until no centroid moves)");
  command->add_option("--seed", options->seed, "random seed (default 42)");
  command->add_option("--n-init", options->n_init,
                      "independent seedings; the lowest inertia wins (default 1)")
      ->check(AtLeast(1));
  command->add_option("--max-categories", options->max_categories,
                      "values one-hot encoded per categorical column (default 16)")
      ->check(AtLeast(1));
  command->add_option("--log1p", options->log1p_columns,
                      "numeric columns to transform with log1p before standardizing (default: "
                      "none for --data, every RFM column for --transactions)")
      ->delimiter(',');
  command->add_flag("--raw-numeric", options->raw_numeric,
                    "with --transactions: standardize the RFM columns without log1p");
  command->add_option("--algorithm", options->algorithm,
                      "kmeans (default, Lloyd iterations), minibatch (mini-batch K-means) or "
                      "bisecting (a segment tree split by 2-means)");
  command->add_option("--init", options->init,
                      "seeding: kmeans++ (default) or kmeans|| (k-means parallel, a few "
                      "sampling rounds on the workers)");
  command->add_option("--oversampling", options->oversampling,
                      "kmeans||: expected candidates per round (default 2 x k)")
      ->check(Above(0));
  command->add_option("--init-rounds", options->init_rounds,
                      "kmeans||: sampling rounds (default 5)")
      ->check(AtLeast(1));
  command->add_option("--batch-size", options->batch_size,
                      "minibatch: users per step (default 4096)")
      ->check(AtLeast(1));
  command->add_option("--max-no-improvement", options->max_no_improvement,
                      "minibatch: stop after this many steps without a lower smoothed batch "
                      "inertia (default 10)")
      ->check(AtLeast(1));
  command->add_option("--reassignment-ratio", options->reassignment_ratio,
                      "minibatch: centroids whose weight is below this ratio of the largest "
                      "move to a batch user (default 0.01)")
      ->check(Above(0));
  command->add_option("--distance", options->distance,
                      "sqeuclidean (default) or cosine (features scaled to unit norm; not "
                      "with bisecting)");
  command->add_option("--split-rule", options->split_rule,
                      "bisecting: largest (default) or highest_inertia");
  command->add_option("--min-divisible-size", options->min_divisible_size,
                      "bisecting: leaves with fewer users are not split (default 2)")
      ->check(AtLeast(2));
  command->add_option("--out", options->out_dir, "output folder")->capture_default_str();
  command->add_flag("!--no-assignments", options->write_assignments,
                    "do not write assignments.csv");
  command->add_flag("!--no-progress", options->progress_bar, "do not draw the progress bar");
}

// Adds the report flags; `sweep` receives the raw --sweep text.
void AddReportFlags(CLI::App* command, SegmentCommandOptions* options, std::string* sweep) {
  command->add_option("--sweep", *sweep,
                      "k values to try first, as a range 2-10 or a list 3,5,8; the suggested "
                      "k is used unless -k is given");
  command->add_flag("--tree", options->tree, "also grow a bisecting segment tree with the same k");
}

// Parses "2-10" or "3,5,8". Errors: InvalidArgument naming the text.
absl::StatusOr<std::vector<int>> ParseSweep(const std::string& text) {
  std::vector<int> ks;
  const auto fail = [&text]() {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sweep '", text, "' is invalid; use a range such as 2-10 or a list such as 3,5,8"));
  };
  const size_t dash = text.find('-');
  if (dash != std::string::npos) {
    int low = 0;
    int high = 0;
    if (!absl::SimpleAtoi(text.substr(0, dash), &low) ||
        !absl::SimpleAtoi(text.substr(dash + 1), &high) || low < 1 || high < low) {
      return fail();
    }
    for (int k = low; k <= high; ++k) ks.push_back(k);
    return ks;
  }
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int k = 0;
    if (!absl::SimpleAtoi(part, &k) || k < 1) return fail();
    ks.push_back(k);
  }
  return ks;
}

// Without --data or --transactions, local mode generates the synthetic shop and segments
// its customers.
absl::Status UseDefaultShop(SegmentCommandOptions* options) {
  const std::string dir = (std::filesystem::path(options->out_dir) / "data").string();
  SyntheticShopOptions shop;
  absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop(dir, shop);
  if (!files.ok()) return files.status();
  std::fprintf(stderr,
               "no --data or --transactions given: generated a synthetic shop of %lld customers "
               "and %lld transactions in %s\n",
               static_cast<long long>(files->customers),
               static_cast<long long>(files->transactions), dir.c_str());
  options->users = files->customers_csv;
  options->id_column = "customer_id";
  options->ignore_columns.push_back("segment_truth");
  return absl::OkStatus();
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  using namespace cohort;  // NOLINT: a command's main function
  ReturnLargeBlocksWhenFreed();
  CLI::App app{"cohort: user segmentation on a coordinator and workers over gRPC"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn, error or off")
      ->capture_default_str();

  // cohort generate
  CLI::App* generate = app.add_subcommand("generate", "write the seeded synthetic shop");
  std::string generate_dir = "cohort-data";
  SyntheticShopOptions shop;
  generate->add_option("--out", generate_dir, "output folder")->capture_default_str();
  generate->add_option("--customers", shop.num_customers, "customers")->capture_default_str();
  generate->add_option("--segments", shop.num_segments, "hidden segments")->capture_default_str();
  generate->add_option("--transactions-per-customer", shop.mean_transactions,
                       "mean transactions per customer")
      ->capture_default_str();
  generate->add_option("--seed", shop.seed, "random seed")->capture_default_str();

  // cohort coordinator
  CLI::App* coordinator = app.add_subcommand("coordinator", "run the coordinator service");
  CoordinatorServerOptions coordinator_options;
  coordinator_options.listen_address = "127.0.0.1:7070";
  coordinator->add_option("--listen", coordinator_options.listen_address, "host:port")
      ->capture_default_str();
  coordinator->add_option("--workers", coordinator_options.worker_addresses,
                          "worker addresses host:port (more may register themselves)")
      ->delimiter(',');
  coordinator->add_option("--state-dir", coordinator_options.state_dir,
                          "folder for finished models and dataset records, read back at "
                          "start (default: memory only)");
  double step_timeout_seconds = absl::ToDoubleSeconds(coordinator_options.step_timeout);
  coordinator->add_option("--step-timeout", step_timeout_seconds,
                          "seconds a worker may take to answer one job step before it is "
                          "declared lost")
      ->check(Above(0))
      ->capture_default_str();

  // cohort worker
  CLI::App* worker = app.add_subcommand("worker", "run a worker service");
  WorkerServerOptions worker_options;
  worker_options.listen_address = "127.0.0.1:7071";
  worker->add_option("--listen", worker_options.listen_address, "host:port")
      ->capture_default_str();
  worker->add_option("--id", worker_options.worker_id, "worker id (default worker-<port>)");
  worker->add_option("--coordinator", worker_options.coordinator_address,
                     "coordinator host:port to register with");
  worker->add_option("--advertise", worker_options.advertise_address,
                     "address the coordinator should dial (default: the listen address)");
  double register_interval_seconds = absl::ToDoubleSeconds(worker_options.register_interval);
  worker->add_option("--register-interval", register_interval_seconds,
                     "seconds between the registrations that follow the first, so a restarted "
                     "coordinator learns this worker again")
      ->check(Above(0))
      ->capture_default_str();

  // cohort segment
  CLI::App* segment = app.add_subcommand("segment", "segment a dataset on a running coordinator");
  SegmentCommandOptions segment_options;
  std::string coordinator_address = "127.0.0.1:7070";
  segment->add_option("--coordinator", coordinator_address, "coordinator host:port")
      ->capture_default_str();
  AddSegmentFlags(segment, &segment_options);
  segment->add_option("--dataset", segment_options.dataset_id,
                      "id of a dataset already loaded on the coordinator (for example by "
                      "cohort profile), instead of --data or --transactions");

  // cohort report
  CLI::App* report = app.add_subcommand(
      "report", "segment a dataset on a running coordinator and write report.html");
  SegmentCommandOptions report_options;
  std::string report_sweep;
  report->add_option("--coordinator", coordinator_address, "coordinator host:port")
      ->capture_default_str();
  AddSegmentFlags(report, &report_options);
  report->add_option("--dataset", report_options.dataset_id,
                     "id of a dataset already loaded on the coordinator, instead of --data or "
                     "--transactions");
  AddReportFlags(report, &report_options, &report_sweep);

  // cohort local segment
  CLI::App* local = app.add_subcommand("local", "run a coordinator and workers in this process");
  local->require_subcommand(1);
  CLI::App* local_segment = local->add_subcommand(
      "segment", "segment a dataset (default: the synthetic shop) on a local cluster");
  SegmentCommandOptions local_options;
  int local_workers = 3;
  local_segment->add_option("--workers", local_workers, "workers to start")->capture_default_str();
  AddSegmentFlags(local_segment, &local_options);
  CLI::App* local_report = local->add_subcommand(
      "report", "segment a dataset (default: the synthetic shop) locally and write report.html");
  std::string local_sweep;
  local_report->add_option("--workers", local_workers, "workers to start")->capture_default_str();
  AddSegmentFlags(local_report, &local_options);
  AddReportFlags(local_report, &local_options, &local_sweep);

  // cohort neighbours, cohort recommend, cohort local recommend
  RecommendCommands recommend_commands(&app, local);
  // cohort profile, audience, score and local profile
  ProfileCommands profile_commands;
  AddProfileCommands(app, *local, &profile_commands);

  CLI11_PARSE(app, argc, argv);
  SetLogLevel(log_level);
  if (profile_commands.local_profile->parsed() && log_level == "info") SetLogLevel("warn");
  if (std::optional<int> code = RunProfileCommands(profile_commands, Fail)) return *code;

  if (generate->parsed()) {
    absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop(generate_dir, shop);
    if (!files.ok()) return Fail(files.status());
    std::printf("wrote %s (%lld customers) and %s (%lld transactions)\n",
                files->customers_csv.c_str(), static_cast<long long>(files->customers),
                files->transactions_csv.c_str(), static_cast<long long>(files->transactions));
    return 0;
  }
  if (coordinator->parsed()) {
    coordinator_options.step_timeout = absl::Seconds(step_timeout_seconds);
    BlockStopSignals();
    auto server = CoordinatorServer::Start(coordinator_options);
    if (!server.ok()) return Fail(server.status());
    std::fprintf(stderr, "coordinator listening on %s\n", (*server)->address().c_str());
    const int signal = WaitForStopSignal();
    COHORT_LOG_INFO("signal {} received; draining", signal);
    (*server)->Shutdown(absl::Seconds(10));
    return 0;
  }
  if (worker->parsed()) {
    worker_options.register_interval = absl::Seconds(register_interval_seconds);
    BlockStopSignals();
    auto server = WorkerServer::Start(worker_options);
    if (!server.ok()) return Fail(server.status());
    std::fprintf(stderr, "worker %s listening on %s\n", (*server)->worker_id().c_str(),
                 (*server)->address().c_str());
    const int signal = WaitForStopSignal();
    COHORT_LOG_INFO("signal {} received; draining", signal);
    (*server)->Shutdown(absl::Seconds(10));
    return 0;
  }
  if (segment->parsed()) {
    absl::Status status = RunSegmentCommand(coordinator_address, segment_options, std::cout);
    return status.ok() ? 0 : Fail(status);
  }
  if (report->parsed()) {
    if (!report_sweep.empty()) {
      absl::StatusOr<std::vector<int>> ks = ParseSweep(report_sweep);
      if (!ks.ok()) return Fail(ks.status());
      report_options.sweep_ks = *ks;
    }
    report_options.k_given = report->count("-k") > 0;
    absl::Status status = RunReportCommand(coordinator_address, report_options, std::cout);
    return status.ok() ? 0 : Fail(status);
  }
  if (recommend_commands.parsed()) {
    if (local->parsed() && log_level == "info") SetLogLevel("warn");
    absl::Status status = recommend_commands.Run(std::cout);
    return status.ok() ? 0 : Fail(status);
  }
  if (local_segment->parsed() || local_report->parsed()) {
    if (local_report->parsed()) {
      if (!local_sweep.empty()) {
        absl::StatusOr<std::vector<int>> ks = ParseSweep(local_sweep);
        if (!ks.ok()) return Fail(ks.status());
        local_options.sweep_ks = *ks;
      }
      local_options.k_given = local_report->count("-k") > 0;
    }
    if (local_workers < 1 || local_workers > 64) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--workers ", local_workers, " is invalid; use 1..64")));
    }
    if (local_options.users.empty() && local_options.transactions.empty()) {
      absl::Status status = UseDefaultShop(&local_options);
      if (!status.ok()) return Fail(status);
    }
    if (log_level == "info") SetLogLevel("warn");  // keep the terminal for the result
    std::vector<std::unique_ptr<WorkerServer>> workers;
    CoordinatorServerOptions options;
    for (int i = 0; i < local_workers; ++i) {
      WorkerServerOptions worker_options_local;
      worker_options_local.worker_id = absl::StrCat("local-", i);
      auto started = WorkerServer::Start(worker_options_local);
      if (!started.ok()) return Fail(started.status());
      options.worker_addresses.push_back((*started)->address());
      workers.push_back(std::move(*started));
    }
    auto server = CoordinatorServer::Start(options);
    if (!server.ok()) return Fail(server.status());
    std::fprintf(stderr, "local cluster: coordinator %s, %d workers\n",
                 (*server)->address().c_str(), local_workers);
    absl::Status status =
        local_report->parsed()
            ? RunReportCommand((*server)->address(), local_options, std::cout)
            : RunSegmentCommand((*server)->address(), local_options, std::cout);
    (*server)->Shutdown(absl::Seconds(1));
    for (auto& w : workers) w->Shutdown(absl::Seconds(1));
    return status.ok() ? 0 : Fail(status);
  }
  return 0;
}
