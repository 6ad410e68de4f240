// A cohort cluster whose workers are `cohort worker` child processes on loopback ports,
// each with its own OpenMP thread count, and whose coordinator runs in the test process.
// Tests can stop (SIGSTOP) or kill (SIGKILL) a worker process.
#ifndef COHORT_TESTS_INTEGRATION_PROCESS_CLUSTER_H_
#define COHORT_TESTS_INTEGRATION_PROCESS_CLUSTER_H_

#include <signal.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tests/integration/test_cluster.h"
#include "tests/subprocess.h"

namespace cohort::testing {

struct ProcessClusterOptions {
  int num_workers = 3;
  // OMP_NUM_THREADS of every worker process.
  int omp_threads = 1;
  // Coordinator settings; see TestClusterOptions.
  absl::Duration probe_interval = absl::Seconds(1);
  absl::Duration probe_timeout = absl::Seconds(2);
  int probe_failures = 3;
  absl::Duration step_timeout = absl::Minutes(10);
};

class ProcessCluster {
 public:
  // Starts the worker processes (`cli` is the cohort binary) with their logs in
  // `log_dir`, then an in-process coordinator given their addresses, so worker process
  // i is "worker-<i>". Errors: Unavailable when a worker does not print its address
  // within 30 s, or the coordinator's start error.
  static absl::StatusOr<std::unique_ptr<ProcessCluster>> Start(
      const std::string& cli, const std::string& log_dir, const ProcessClusterOptions& options) {
    std::unique_ptr<ProcessCluster> cluster(new ProcessCluster());
    TestClusterOptions coordinator;
    coordinator.num_workers = 0;
    coordinator.probe_interval = options.probe_interval;
    coordinator.probe_timeout = options.probe_timeout;
    coordinator.probe_failures = options.probe_failures;
    coordinator.step_timeout = options.step_timeout;
    static int started = 0;  // distinct log names across clusters of one test binary
    const int cluster_number = started++;
    for (int i = 0; i < options.num_workers; ++i) {
      const std::string id = absl::StrCat("worker-", i);
      const std::string log = absl::StrCat(log_dir, "/cluster", cluster_number, "-", id);
      std::unique_ptr<Subprocess> worker = Subprocess::Start(
          {cli, "--log-level", "warn", "worker", "--listen", "127.0.0.1:0", "--id", id},
          log + ".stdout", log + ".stderr", log_dir,
          {absl::StrCat("OMP_NUM_THREADS=", options.omp_threads)});
      if (worker == nullptr) return absl::InternalError("cannot start a worker process");
      const std::optional<std::string> address =
          worker->AwaitStderrLine(absl::StrCat("worker ", id, " listening on "),
                                  absl::Seconds(30));
      if (!address.has_value()) {
        return absl::UnavailableError(absl::StrCat(id, " did not print its address; stderr:\n",
                                                   worker->Stderr()));
      }
      coordinator.extra_worker_addresses.push_back(*address);
      cluster->workers_.push_back(std::move(worker));
    }
    absl::StatusOr<std::unique_ptr<TestCluster>> client = TestCluster::Start(coordinator);
    if (!client.ok()) return client.status();
    cluster->client_ = std::move(*client);
    return cluster;
  }

  // Resumes stopped workers, stops the coordinator, then kills the worker processes.
  ~ProcessCluster() {
    for (auto& worker : workers_) worker->Signal(SIGCONT);
    client_.reset();
    for (auto& worker : workers_) worker->Signal(SIGKILL);
  }

  // The public API client and the in-process coordinator.
  TestCluster& client() { return *client_; }
  Subprocess& worker(int i) { return *workers_.at(i); }
  int num_workers() const { return static_cast<int>(workers_.size()); }

 private:
  ProcessCluster() = default;

  std::vector<std::unique_ptr<Subprocess>> workers_;
  std::unique_ptr<TestCluster> client_;
};

}  // namespace cohort::testing

#endif  // COHORT_TESTS_INTEGRATION_PROCESS_CLUSTER_H_
