// A coordinator restart with the same state folder and address: worker processes that
// registered with --coordinator register again on their own, and the restarted
// coordinator runs jobs on the datasets they still hold and serves the stored models.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cohort/v1/state.pb.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/worker_registry.h"
#include "core/log.h"
#include "core/synthetic.h"
#include "tests/integration/job_checks.h"
#include "tests/integration/test_cluster.h"
#include "tests/subprocess.h"
#include "worker/worker_server.h"

namespace cohort::testing {
namespace {

constexpr char kCli[] = COHORT_CLI_PATH;
// Bound on every wait for a process or a registration; the waits end as soon as the
// awaited state is seen.
constexpr absl::Duration kAwaitTimeout = absl::Seconds(60);

// Lines of `text` that contain every one of `parts`.
int CountLines(const std::string& text, const std::vector<std::string>& parts) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    bool all = true;
    for (const std::string& part : parts) all = all && absl::StrContains(line, part);
    if (all) ++count;
  }
  return count;
}

TEST(WorkerRegistryTest, RepeatedRegistrationKeepsChannel) {
  WorkerRegistry registry(absl::Seconds(1), absl::Seconds(1), 3);
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  const std::vector<WorkerRegistry::Info> first = registry.AllWorkers();
  ASSERT_EQ(first.size(), 1u);

  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  const std::vector<WorkerRegistry::Info> repeated = registry.AllWorkers();
  ASSERT_EQ(repeated.size(), 1u);
  EXPECT_EQ(repeated[0].handle.stub, first[0].handle.stub);
  EXPECT_TRUE(repeated[0].live);
}

TEST(WorkerRegistryTest, RestartedWorkerGetsNewChannel) {
  WorkerRegistry registry(absl::Seconds(1), absl::Seconds(1), 3);
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  const std::vector<WorkerRegistry::Info> first = registry.AllWorkers();

  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 8).ok());
  const std::vector<WorkerRegistry::Info> restarted = registry.AllWorkers();
  ASSERT_EQ(restarted.size(), 1u);
  EXPECT_NE(restarted[0].handle.stub, first[0].handle.stub);
}

TEST(WorkerRegistryTest, KnownIdAtNewAddressMoves) {
  WorkerRegistry registry(absl::Seconds(1), absl::Seconds(1), 3);
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:2", 7).ok());
  const std::vector<WorkerRegistry::Info> moved = registry.AllWorkers();
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].handle.address, "127.0.0.1:2");
  EXPECT_TRUE(moved[0].live);
}

TEST(WorkerRegistryTest, SecondProcessWithLiveIdIsRejected) {
  WorkerRegistry registry(absl::Seconds(1), absl::Seconds(1), 3);
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  const absl::Status second = registry.Register("w0", "127.0.0.1:2", 8);
  EXPECT_TRUE(HasError(second, absl::StatusCode::kAlreadyExists, {"127.0.0.1:1", "--id"}))
      << second;
  const std::vector<WorkerRegistry::Info> workers = registry.AllWorkers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].handle.address, "127.0.0.1:1");
  EXPECT_EQ(registry.Instance("w0"), 7u);
}

TEST(WorkerRegistryTest, NewAddressAcceptedAfterFailedProbe) {
  // Nothing listens on port 1, so the probes of the first process fail.
  WorkerRegistry registry(absl::Milliseconds(10), absl::Seconds(1), 1000);
  ASSERT_TRUE(registry.Register("w0", "127.0.0.1:1", 7).ok());
  registry.Start();
  const absl::Time give_up = absl::Now() + kAwaitTimeout;
  while (registry.AllWorkers()[0].consecutive_failures == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(registry.AllWorkers()[0].consecutive_failures, 0);
  const absl::Status restarted = registry.Register("w0", "127.0.0.1:2", 8);
  EXPECT_TRUE(restarted.ok()) << restarted;
  EXPECT_EQ(registry.Instance("w0"), 8u);
  registry.Stop();
}

TEST(WorkerServerTest, ZeroRegisterIntervalIsRejected) {
  WorkerServerOptions options;
  options.coordinator_address = "127.0.0.1:1";
  options.register_interval = absl::ZeroDuration();
  const absl::Status status = options.Validate();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, {"register_interval", "0"}));
}

TEST(WorkerServerTest, MillisecondRegisterIntervalIsRejected) {
  WorkerServerOptions options;
  options.coordinator_address = "127.0.0.1:1";
  options.register_interval = absl::Milliseconds(1);
  const absl::Status status = options.Validate();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, {"1ms", "at least 10ms"}));
}

// Options of an in-process worker "w0" on a free loopback port that registers with
// `coordinator` every `interval`.
WorkerServerOptions RegisteringWorker(const CoordinatorServer& coordinator,
                                      absl::Duration interval) {
  WorkerServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.worker_id = "w0";
  options.coordinator_address = coordinator.address();
  options.register_interval = interval;
  return options;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> StartInProcessCoordinator() {
  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  return CoordinatorServer::Start(options);
}

TEST(WorkerServerTest, ShutdownEndsRepeatedRegistration) {
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator = StartInProcessCoordinator();
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();

  const WorkerServerOptions options = RegisteringWorker(**coordinator, absl::Milliseconds(10));
  absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  std::unique_ptr<TestCluster> client = TestCluster::Connect((*coordinator)->address());
  ASSERT_TRUE(client->AwaitWorkerLive("w0", true, kAwaitTimeout).ok());

  // Returns only after the registration thread has ended.
  (*worker)->Shutdown(absl::Seconds(1));
  (*worker)->Wait();
  (*coordinator)->Shutdown(absl::Seconds(1));
}

TEST(WorkerServerTest, SameIdSecondWorkerFailsToStart) {
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator = StartInProcessCoordinator();
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  WorkerServerOptions options = RegisteringWorker(**coordinator, absl::Milliseconds(50));
  absl::StatusOr<std::unique_ptr<WorkerServer>> first = WorkerServer::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();

  options.register_timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<WorkerServer>> second = WorkerServer::Start(options);
  EXPECT_TRUE(HasError(second.status(), absl::StatusCode::kAlreadyExists,
                       {"w0", (*first)->address(), "--id"}))
      << second.status();
  EXPECT_FALSE(absl::StrContains(second.status().message(), "check that the coordinator runs"));
  std::unique_ptr<TestCluster> client = TestCluster::Connect((*coordinator)->address());
  absl::StatusOr<v1::ListWorkersResponse> workers = client->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->workers_size(), 1);
  EXPECT_EQ(workers->workers(0).address(), (*first)->address());

  (*first)->Shutdown(absl::Seconds(1));
  (*first)->Wait();
  (*coordinator)->Shutdown(absl::Seconds(1));
}

class CoordinatorRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel("warn");
    SyntheticShopOptions shop_options;
    shop_options.num_customers = 3000;
    shop_options.mean_transactions = 0;
    absl::StatusOr<SyntheticShopFiles> shop =
        WriteSyntheticShop((std::filesystem::path(temp_.path()) / "shop").string(), shop_options);
    ASSERT_TRUE(shop.ok()) << shop.status();
    shop_csv_ = shop->customers_csv;
    state_dir_ = (std::filesystem::path(temp_.path()) / "state").string();
  }

  // Starts `cohort coordinator` on `listen` with the test's state folder and returns it
  // with its bound address, or null after a test failure.
  std::unique_ptr<Subprocess> StartCoordinator(const std::string& listen, std::string* address) {
    const std::string log = absl::StrCat(temp_.path(), "/coordinator", coordinators_++);
    std::unique_ptr<Subprocess> coordinator = Subprocess::Start(
        {kCli, "--log-level", "info", "coordinator", "--listen", listen, "--state-dir",
         state_dir_},
        log + ".stdout", log + ".stderr", temp_.path());
    if (coordinator == nullptr) return nullptr;
    const std::optional<std::string> bound =
        coordinator->AwaitStderrLine("coordinator listening on ", kAwaitTimeout);
    if (!bound.has_value()) {
      ADD_FAILURE() << "the coordinator did not print its address; stderr:\n"
                    << coordinator->Stderr();
      return nullptr;
    }
    *address = *bound;
    return coordinator;
  }

  // Starts `cohort worker` registering with `coordinator` every 50 ms, or returns null
  // after a test failure.
  std::unique_ptr<Subprocess> StartWorker(const std::string& id, const std::string& coordinator) {
    const std::string log = absl::StrCat(temp_.path(), "/", id);
    std::unique_ptr<Subprocess> worker = Subprocess::Start(
        {kCli, "--log-level", "info", "worker", "--listen", "127.0.0.1:0", "--id", id,
         "--coordinator", coordinator, "--register-interval", "0.05"},
        log + ".stdout", log + ".stderr", temp_.path(), {"OMP_NUM_THREADS=1"});
    if (worker == nullptr) return nullptr;
    if (!worker->AwaitStderrLine(absl::StrCat("worker ", id, " listening on "), kAwaitTimeout)) {
      ADD_FAILURE() << id << " did not print its address; stderr:\n" << worker->Stderr();
      return nullptr;
    }
    return worker;
  }

  // Sends SIGTERM and expects a clean exit.
  static void Stop(Subprocess& process) {
    process.Signal(SIGTERM);
    EXPECT_EQ(process.WaitForExit(kAwaitTimeout), std::optional<int>(0)) << process.Stderr();
  }

  // A coordinator with worker-a and worker-b registered, the shop loaded into 8 shards
  // and segmented once.
  struct Cluster {
    std::string address;
    std::unique_ptr<Subprocess> coordinator;
    std::unique_ptr<Subprocess> worker_a;
    std::unique_ptr<Subprocess> worker_b;
    std::unique_ptr<TestCluster> client;
    v1::Dataset dataset;
    JobOutput first;
  };

  // Fills `cluster`; failures are test failures, so call it in ASSERT_NO_FATAL_FAILURE.
  void StartAndSegment(Cluster* cluster) {
    cluster->coordinator = StartCoordinator("127.0.0.1:0", &cluster->address);
    ASSERT_NE(cluster->coordinator, nullptr);
    cluster->worker_a = StartWorker("worker-a", cluster->address);
    cluster->worker_b = StartWorker("worker-b", cluster->address);
    ASSERT_NE(cluster->worker_a, nullptr);
    ASSERT_NE(cluster->worker_b, nullptr);
    cluster->client = TestCluster::Connect(cluster->address);
    ASSERT_TRUE(cluster->client->AwaitWorkerLive("worker-a", true, kAwaitTimeout).ok());
    ASSERT_TRUE(cluster->client->AwaitWorkerLive("worker-b", true, kAwaitTimeout).ok());
    absl::StatusOr<v1::Dataset> dataset =
        cluster->client->LoadUsers(shop_csv_, "customer_id", {"segment_truth"}, 8);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    cluster->dataset = *dataset;
    absl::StatusOr<JobOutput> first = Segment(*cluster->client, dataset->dataset_id(), WithK(4));
    ASSERT_TRUE(first.ok()) << first.status();
    cluster->first = *first;
  }

  // Stops the coordinator and both workers, expecting clean exits.
  static void StopAll(Cluster& cluster) {
    Stop(*cluster.coordinator);
    Stop(*cluster.worker_a);
    Stop(*cluster.worker_b);
  }

  TempDir temp_;
  std::string shop_csv_;
  std::string state_dir_;
  int coordinators_ = 0;
};

TEST_F(CoordinatorRestartTest, JobsRunAgainAfterWorkersRegisterAgain) {
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAndSegment(&cluster));
  TestCluster& client = *cluster.client;
  const std::string dataset_id = cluster.dataset.dataset_id();
  const JobOutput& before = cluster.first;
  absl::StatusOr<v1::ListWorkersResponse> workers_before = client.ListWorkers();
  ASSERT_TRUE(workers_before.ok()) << workers_before.status();

  Stop(*cluster.coordinator);
  std::string restarted_address;
  cluster.coordinator = StartCoordinator(cluster.address, &restarted_address);
  ASSERT_NE(cluster.coordinator, nullptr);
  ASSERT_EQ(restarted_address, cluster.address);
  ASSERT_TRUE(client.AwaitWorkerLive("worker-a", true, kAwaitTimeout).ok())
      << cluster.coordinator->Stderr();
  ASSERT_TRUE(client.AwaitWorkerLive("worker-b", true, kAwaitTimeout).ok())
      << cluster.coordinator->Stderr();

  // The dataset and its placement survive the restart, so no shard moved.
  absl::StatusOr<v1::Dataset> reloaded = client.GetDataset(dataset_id);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->state(), v1::DATASET_STATE_READY);
  EXPECT_EQ(reloaded->num_users(), cluster.dataset.num_users());
  absl::StatusOr<v1::ListWorkersResponse> workers_after = client.ListWorkers();
  ASSERT_TRUE(workers_after.ok()) << workers_after.status();
  ASSERT_EQ(workers_after->workers_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(workers_after->workers(i).worker_id(), workers_before->workers(i).worker_id());
    EXPECT_EQ(workers_after->workers(i).hosted_shards(),
              workers_before->workers(i).hosted_shards());
  }

  // Serving a stored model, and a job on the workers' in-memory shards.
  absl::StatusOr<CsvTable> table = ReadCsv(shop_csv_);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_FALSE(table->rows.empty());
  std::map<std::string, std::string> columns;
  for (size_t j = 0; j < table->header.size(); ++j) {
    const std::string& name = table->header[j];
    if (name != "customer_id" && name != "segment_truth") columns[name] = table->rows[0][j];
  }
  absl::StatusOr<v1::AssignSegmentResponse> assigned =
      client.AssignSegment(before.model.model_id(), columns);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  absl::StatusOr<JobOutput> after = Segment(client, dataset_id, WithK(4));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE(after->job.job_id(), before.job.job_id());
  ExpectSameModel(before.model, after->model);
  ExpectSameAssignments(before.assignments, after->assignments);

  // The workers registered every 50 ms during the job; only the first registration of
  // each is logged.
  const std::string log = cluster.coordinator->Stderr();
  EXPECT_EQ(CountLines(log, {"worker worker-a", "registered"}), 1) << log;
  EXPECT_EQ(CountLines(log, {"worker worker-b", "registered"}), 1) << log;
  EXPECT_EQ(CountLines(log, {"moving shards"}), 0) << log;

  StopAll(cluster);
}

TEST_F(CoordinatorRestartTest, RestartedWorkerShardsMoveToLiveWorkers) {
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAndSegment(&cluster));
  TestCluster& client = *cluster.client;
  const std::string dataset_id = cluster.dataset.dataset_id();
  absl::StatusOr<v1::ListWorkersResponse> placed = client.ListWorkers();
  ASSERT_TRUE(placed.ok()) << placed.status();
  ASSERT_EQ(placed->workers_size(), 2);
  ASSERT_GT(placed->workers(0).hosted_shards(), 0) << "worker-a holds no shard to lose";

  // The same worker id in a new process, whose memory contains no shard.
  cluster.worker_a->Signal(SIGKILL);
  ASSERT_TRUE(cluster.worker_a->WaitForExit(kAwaitTimeout).has_value());
  cluster.worker_a = StartWorker("worker-a", cluster.address);
  ASSERT_NE(cluster.worker_a, nullptr);
  Subprocess& coordinator = *cluster.coordinator;
  const absl::Time give_up = absl::Now() + kAwaitTimeout;
  while (!absl::StrContains(coordinator.Stderr(), "worker worker-a restarted") &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(absl::StrContains(coordinator.Stderr(), "worker worker-a restarted"))
      << coordinator.Stderr();
  ASSERT_TRUE(client.AwaitWorkerLive("worker-a", true, kAwaitTimeout).ok());

  // The job moves worker-a's shards to worker-b, which reloads them from the file.
  absl::StatusOr<JobOutput> after = Segment(client, dataset_id, WithK(4));
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectSameModel(cluster.first.model, after->model);
  ExpectSameAssignments(cluster.first.assignments, after->assignments);
  const std::string marked = absl::StrCat("dataset ", dataset_id, ": worker worker-a restarted");
  EXPECT_TRUE(absl::StrContains(coordinator.Stderr(), marked)) << coordinator.Stderr();
  absl::StatusOr<v1::ListWorkersResponse> workers = client.ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->workers_size(), 2);
  EXPECT_EQ(workers->workers(0).worker_id(), "worker-a");
  EXPECT_EQ(workers->workers(0).hosted_shards(), 0);
  EXPECT_EQ(workers->workers(1).hosted_shards(), 8);

  StopAll(cluster);
}

TEST_F(CoordinatorRestartTest, WorkerRestartedWhileCoordinatorDownLosesNoJob) {
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAndSegment(&cluster));
  TestCluster& client = *cluster.client;
  const std::string dataset_id = cluster.dataset.dataset_id();

  // worker-a dies while the coordinator is down, and its new process registers with the
  // new coordinator, which never saw the old one.
  Stop(*cluster.coordinator);
  cluster.worker_a->Signal(SIGKILL);
  ASSERT_TRUE(cluster.worker_a->WaitForExit(kAwaitTimeout).has_value());
  cluster.coordinator = StartCoordinator(cluster.address, &cluster.address);
  ASSERT_NE(cluster.coordinator, nullptr);
  cluster.worker_a = StartWorker("worker-a", cluster.address);
  ASSERT_NE(cluster.worker_a, nullptr);
  ASSERT_TRUE(client.AwaitWorkerLive("worker-a", true, kAwaitTimeout).ok());
  ASSERT_TRUE(client.AwaitWorkerLive("worker-b", true, kAwaitTimeout).ok());

  absl::StatusOr<JobOutput> after = Segment(client, dataset_id, WithK(4));
  const std::string log = cluster.coordinator->Stderr();
  ASSERT_TRUE(after.ok()) << after.status() << "\n" << log;
  ExpectSameModel(cluster.first.model, after->model);
  ExpectSameAssignments(cluster.first.assignments, after->assignments);
  EXPECT_TRUE(
      absl::StrContains(log, absl::StrCat("dataset ", dataset_id, ": worker worker-a restarted")))
      << log;

  StopAll(cluster);
}

TEST_F(CoordinatorRestartTest, EarlyJobReportsNoLiveWorker) {
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAndSegment(&cluster));
  TestCluster& client = *cluster.client;

  // No worker is running when the coordinator comes back, as in the first seconds after
  // a restart, before the workers' next registration.
  Stop(*cluster.coordinator);
  Stop(*cluster.worker_a);
  Stop(*cluster.worker_b);
  cluster.coordinator = StartCoordinator(cluster.address, &cluster.address);
  ASSERT_NE(cluster.coordinator, nullptr);

  absl::StatusOr<JobOutput> job = Segment(client, cluster.dataset.dataset_id(), WithK(4));
  EXPECT_TRUE(HasError(job.status(), absl::StatusCode::kUnavailable,
                       {"no worker is live", "--register-interval"}))
      << job.status();
  EXPECT_FALSE(absl::StrContains(job.status().message(), "load the data into a new dataset"))
      << job.status();
  Stop(*cluster.coordinator);
}

TEST_F(CoordinatorRestartTest, NewDatasetIdsContinueAfterStoredOnes) {
  std::string address;
  std::unique_ptr<Subprocess> coordinator = StartCoordinator("127.0.0.1:0", &address);
  ASSERT_NE(coordinator, nullptr);
  std::unique_ptr<TestCluster> client = TestCluster::Connect(address);
  absl::StatusOr<v1::Dataset> first = client->CreateDataset(v1::CreateDatasetRequest());
  ASSERT_TRUE(first.ok()) << first.status();

  Stop(*coordinator);
  coordinator = StartCoordinator(address, &address);
  ASSERT_NE(coordinator, nullptr);
  absl::StatusOr<v1::Dataset> kept = client->GetDataset(first->dataset_id());
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->state(), v1::DATASET_STATE_CREATED);
  absl::StatusOr<v1::Dataset> second = client->CreateDataset(v1::CreateDatasetRequest());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(second->dataset_id(), first->dataset_id());
  Stop(*coordinator);
}

TEST_F(CoordinatorRestartTest, DatasetLoadingAtStopComesBackFailed) {
  // The record a coordinator leaves when it stops during a load.
  std::filesystem::create_directories(state_dir_ + "/datasets");
  v1::StoredDataset stored;
  stored.mutable_info()->set_dataset_id("dataset-000007");
  stored.mutable_info()->set_num_shards(4);
  stored.mutable_info()->set_state(v1::DATASET_STATE_LOADING);
  {
    std::ofstream out(state_dir_ + "/datasets/dataset-000007.dataset.pb", std::ios::binary);
    ASSERT_TRUE(stored.SerializeToOstream(&out));
  }

  std::string address;
  std::unique_ptr<Subprocess> coordinator = StartCoordinator("127.0.0.1:0", &address);
  ASSERT_NE(coordinator, nullptr);
  std::unique_ptr<TestCluster> client = TestCluster::Connect(address);
  absl::StatusOr<v1::Dataset> failed = client->GetDataset("dataset-000007");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state(), v1::DATASET_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(failed->error(), "load it again")) << failed->error();
  absl::StatusOr<v1::Dataset> next = client->CreateDataset(v1::CreateDatasetRequest());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->dataset_id(), "dataset-000008");
  Stop(*coordinator);
}

TEST_F(CoordinatorRestartTest, UnreadableDatasetFileStopsStart) {
  std::filesystem::create_directories(state_dir_ + "/datasets");
  const std::string path = state_dir_ + "/datasets/broken.dataset.pb";
  std::ofstream(path, std::ios::binary) << "not a protobuf message";

  const std::string log = temp_.path() + "/broken-coordinator";
  std::unique_ptr<Subprocess> coordinator = Subprocess::Start(
      {kCli, "coordinator", "--listen", "127.0.0.1:0", "--state-dir", state_dir_},
      log + ".stdout", log + ".stderr", temp_.path());
  ASSERT_NE(coordinator, nullptr);
  const std::optional<int> code = coordinator->WaitForExit(kAwaitTimeout);
  ASSERT_TRUE(code.has_value()) << "the coordinator did not stop";
  EXPECT_NE(*code, 0);
  EXPECT_TRUE(absl::StrContains(coordinator->Stderr(), path)) << coordinator->Stderr();
}

}  // namespace
}  // namespace cohort::testing

namespace cohort::testing {
namespace {

// Whether the saved record of `dataset_id` marks it as containing streamed rows; false
// while the file is missing or partly written.
bool RecordMarksStreamed(const std::string& state_dir, const std::string& dataset_id) {
  std::ifstream in(state_dir + "/datasets/" + dataset_id + ".dataset.pb", std::ios::binary);
  v1::StoredDataset stored;
  return in && stored.ParseFromIstream(&in) && stored.loaded_and_streamed();
}

TEST_F(CoordinatorRestartTest, StreamedFlagIsSavedBeforeStreamEnds) {
  Cluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAndSegment(&cluster));
  const std::string dataset_id = cluster.dataset.dataset_id();
  ASSERT_FALSE(RecordMarksStreamed(state_dir_, dataset_id));

  absl::StatusOr<CsvTable> table = ReadCsv(shop_csv_);
  ASSERT_TRUE(table.ok()) << table.status();
  const int id_column = static_cast<int>(
      std::find(table->header.begin(), table->header.end(), "customer_id") -
      table->header.begin());
  v1::IngestUsersRequest batch;
  batch.set_dataset_id(dataset_id);
  v1::UserRow* row = batch.add_rows();
  for (size_t c = 0; c < table->rows[0].size(); ++c) {
    row->add_cells(static_cast<int>(c) == id_column ? "streamed-user" : table->rows[0][c]);
  }

  v1::IngestUsersResponse response;
  auto context = TestCluster::Context();
  auto writer = cluster.client->stub().IngestUsers(context.get(), &response);
  ASSERT_TRUE(writer->Write(batch));
  // The stream stays open: a coordinator stopped now must already know that reloading
  // the files would drop this row.
  bool saved = false;
  for (const absl::Time give_up = absl::Now() + kAwaitTimeout; !saved && absl::Now() < give_up;) {
    saved = RecordMarksStreamed(state_dir_, dataset_id);
    if (!saved) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(saved);
  writer->WritesDone();
  const grpc::Status finished = writer->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  EXPECT_EQ(response.rows_accepted(), 1);
  StopAll(cluster);
}

}  // namespace
}  // namespace cohort::testing
