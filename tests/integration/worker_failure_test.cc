// The failure model with real worker processes. The per-step deadline catches a stopped
// worker (SIGSTOP). The shards of a stopped or killed worker move to the live workers, so
// a job on a dataset loaded from files, or on streamed rows with their replicas, ends
// with the no-failure result.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/log.h"
#include "core/synthetic.h"
#include "tests/integration/job_checks.h"
#include "tests/integration/process_cluster.h"

namespace cohort::testing {
namespace {

constexpr char kCli[] = COHORT_CLI_PATH;
constexpr int64_t kUsers = 20000;
// Deadline of one job step in these tests. Probes run once an hour, so only the step
// deadline can notice a stopped worker.
constexpr absl::Duration kStepTimeout = absl::Seconds(2);

// A job of a few seconds whose result does not depend on timing: 8 seedings, each
// followed by up to 100 Lloyd iterations that stop only when no centroid moves (tol 0).
v1::SegmentationOptions SeveralSecondsJob() {
  v1::SegmentationOptions options = WithK(8);
  options.set_n_init(8);
  options.set_max_iter(100);
  options.set_tol(0);
  return options;
}

class WorkerFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel("warn");
    SyntheticShopOptions shop_options;
    shop_options.num_customers = kUsers;
    shop_options.mean_transactions = 0;
    absl::StatusOr<SyntheticShopFiles> shop =
        WriteSyntheticShop((std::filesystem::path(temp_.path()) / "shop").string(), shop_options);
    ASSERT_TRUE(shop.ok()) << shop.status();
    shop_csv_ = shop->customers_csv;
  }

  std::unique_ptr<ProcessCluster> StartCluster() {
    ProcessClusterOptions options;
    options.num_workers = 3;
    options.probe_interval = absl::Hours(1);
    options.step_timeout = kStepTimeout;
    absl::StatusOr<std::unique_ptr<ProcessCluster>> cluster =
        ProcessCluster::Start(kCli, temp_.path(), options);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    return cluster.ok() ? std::move(*cluster) : nullptr;
  }

  absl::StatusOr<v1::Dataset> LoadShop(TestCluster& cluster) {
    return cluster.LoadUsers(shop_csv_, "customer_id", {"segment_truth"});
  }

  // Runs `options` on the shop of a new 3-worker cluster twice: once without a failure,
  // then sending `signal` to worker `victim` while the job computes. Checks that both
  // jobs give the same model and assignments, and that a later job runs.
  void ExpectSameResultAfterSignal(const v1::SegmentationOptions& options, int victim,
                                   int signal) {
    std::unique_ptr<ProcessCluster> cluster = StartCluster();
    ASSERT_NE(cluster, nullptr);
    TestCluster& client = cluster->client();
    absl::StatusOr<v1::Dataset> dataset = LoadShop(client);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    const std::string& dataset_id = dataset->dataset_id();
    absl::StatusOr<JobOutput> reference = Segment(client, dataset_id, options);
    ASSERT_TRUE(reference.ok()) << reference.status();

    absl::StatusOr<v1::Job> job = client.StartSegmentation(dataset_id, options);
    ASSERT_TRUE(job.ok()) << job.status();
    const absl::Status computing = AwaitJobComputing(client, job->job_id());
    ASSERT_TRUE(computing.ok()) << computing;
    cluster->worker(victim).Signal(signal);

    absl::StatusOr<v1::Job> ended = client.WaitForJob(job->job_id(), absl::Seconds(120));
    ASSERT_TRUE(ended.ok()) << ended.status();
    ASSERT_EQ(ended->state(), v1::JOB_STATE_SUCCEEDED) << ended->error_message();
    absl::StatusOr<v1::SegmentModel> model = client.GetSegmentModel(ended->model_id());
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<std::vector<v1::Assignment>> assignments =
        client.ExportAssignments(ended->model_id());
    ASSERT_TRUE(assignments.ok()) << assignments.status();
    ExpectSameModel(reference->model, *model);
    ExpectSameAssignments(reference->assignments, *assignments);

    // The victim's shards moved, and later jobs run on the new placement without it.
    absl::StatusOr<v1::ListWorkersResponse> workers = client.ListWorkers();
    ASSERT_TRUE(workers.ok()) << workers.status();
    ASSERT_EQ(workers->workers_size(), 3);
    EXPECT_EQ(workers->workers(victim).hosted_shards(), 0);
    absl::StatusOr<JobOutput> again = Segment(client, dataset_id, WithK(3));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->assignments.size(), static_cast<size_t>(kUsers));
  }

  TempDir temp_;
  std::string shop_csv_;
};

TEST_F(WorkerFailureTest, StoppedWorkerStreamedJobKeepsResult) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<v1::Dataset> from_file = LoadShop(client);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  v1::CreateDatasetRequest create;
  *create.mutable_schema() = from_file->schema();
  absl::StatusOr<v1::Dataset> streamed = client.CreateDataset(create);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  absl::StatusOr<CsvTable> table = ReadCsv(shop_csv_);
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<int64_t> accepted = StreamTable(client, streamed->dataset_id(), *table);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  absl::StatusOr<JobOutput> reference =
      Segment(client, streamed->dataset_id(), SeveralSecondsJob());
  ASSERT_TRUE(reference.ok()) << reference.status();

  absl::StatusOr<v1::Job> job =
      client.StartSegmentation(streamed->dataset_id(), SeveralSecondsJob());
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Status computing = AwaitJobComputing(client, job->job_id());
  ASSERT_TRUE(computing.ok()) << computing;
  cluster->worker(1).Signal(SIGSTOP);

  // The worker keeps its connection and probes run once an hour: without the step
  // deadline the job would wait for ever, so ending within 60 s proves the deadline.
  // The replicas of the stopped worker's shards are promoted, so the result is kept.
  absl::StatusOr<v1::Job> ended = client.WaitForJob(job->job_id(), absl::Seconds(60));
  cluster->worker(1).Signal(SIGCONT);
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_EQ(ended->state(), v1::JOB_STATE_SUCCEEDED) << ended->error_message();
  absl::StatusOr<v1::SegmentModel> model = client.GetSegmentModel(ended->model_id());
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::vector<v1::Assignment>> assignments =
      client.ExportAssignments(ended->model_id());
  ASSERT_TRUE(assignments.ok()) << assignments.status();
  ExpectSameModel(reference->model, *model);
  ExpectSameAssignments(reference->assignments, *assignments);
}

TEST_F(WorkerFailureTest, StoppedWorkerShardsMoveAndJobKeepsResult) {
  ExpectSameResultAfterSignal(SeveralSecondsJob(), 1, SIGSTOP);
}

TEST_F(WorkerFailureTest, KilledWorkerShardsMoveAndJobKeepsResult) {
  ExpectSameResultAfterSignal(SeveralSecondsJob(), 1, SIGKILL);
}

TEST_F(WorkerFailureTest, KilledWorkerBisectingJobKeepsResult) {
  v1::SegmentationOptions options = SeveralSecondsJob();
  options.set_algorithm("bisecting");
  options.set_k(12);
  options.set_n_init(2);
  ExpectSameResultAfterSignal(options, 2, SIGKILL);
}

}  // namespace
}  // namespace cohort::testing
