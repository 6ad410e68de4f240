// Integration tests of the coordinator and workers: real servers on loopback ports in
// this process, driven through the public Cohort API.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "cohort/v1/worker.grpc.pb.h"
#include "core/csv.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "core/synthetic.h"
#include "tests/integration/job_checks.h"
#include "tests/integration/test_cluster.h"
#include "tests/test_data.h"

extern char** environ;

namespace cohort::testing {
namespace {

// Environment variables of the child process started by the OpenMP thread-count test.
constexpr char kChildOutputEnv[] = "COHORT_OMP_CHILD_OUTPUT";
constexpr char kChildDataEnv[] = "COHORT_OMP_CHILD_DATA";

// Users in the synthetic shop of most tests.
constexpr int64_t kShopCustomers = 5000;

// Options that keep a job of 20000 users running for many seconds: 100 k-means++
// seedings, each followed by Lloyd iterations that stop only at a tiny tolerance.
v1::SegmentationOptions LongJobOptions() {
  v1::SegmentationOptions options;
  options.set_k(20);
  options.set_n_init(100);
  options.set_max_iter(100000);
  options.set_tol(1e-9);
  return options;
}

// 300 distinct users with two numeric columns and one categorical column.
std::string SmallUsersCsv() {
  static const char* const kColors[] = {"red", "green", "blue"};
  std::string csv = "id,x,y,color\n";
  for (int i = 0; i < 300; ++i) {
    absl::StrAppend(&csv, "u", i, ",", (i * 37) % 101, ".5,", (i * 53) % 97, ",", kColors[i % 3],
                    "\n");
  }
  return csv;
}

// The raw columns of every synthetic shop customer by id, as AssignSegment takes them:
// every column but customer_id and segment_truth.
std::map<std::string, std::map<std::string, std::string>> ShopColumnsByUser(
    const CsvTable& table) {
  std::map<std::string, std::map<std::string, std::string>> users;
  for (const std::vector<std::string>& row : table.rows) {
    std::map<std::string, std::string> columns;
    std::string user;
    for (size_t j = 0; j < row.size(); ++j) {
      const std::string& name = table.header[j];
      if (name == "customer_id") {
        user = row[j];
      } else if (name != "segment_truth") {
        columns[name] = row[j];
      }
    }
    users[user] = std::move(columns);
  }
  return users;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel("warn");
    small_users_csv_ = temp_.WriteFile("small_users.csv", SmallUsersCsv());
  }

  // Starts a cluster; a failure to start is a test failure and returns null.
  static std::unique_ptr<TestCluster> StartCluster(const TestClusterOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<TestCluster>> cluster = TestCluster::Start(options);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    return cluster.ok() ? std::move(*cluster) : nullptr;
  }

  // Starts a cluster of `workers` workers and creates and loads a dataset on it.
  static absl::StatusOr<v1::Dataset> LoadOnWorkers(int workers,
                                                   const v1::CreateDatasetRequest& create,
                                                   const v1::LoadDatasetRequest& load) {
    TestClusterOptions options;
    options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(options);
    if (cluster == nullptr) return absl::UnavailableError("the cluster did not start");
    return cluster->CreateAndLoad(create, load);
  }

  // Writes the synthetic shop with `customers` customers into the temp folder.
  SyntheticShopFiles WriteShop(int64_t customers) {
    SyntheticShopOptions options;
    options.num_customers = customers;
    absl::StatusOr<SyntheticShopFiles> files =
        WriteSyntheticShop((std::filesystem::path(temp_.path()) / "shop").string(), options);
    EXPECT_TRUE(files.ok()) << files.status();
    return files.ok() ? *files : SyntheticShopFiles();
  }

  // Checks that the cluster still serves after a rejected request: a fresh dataset loads
  // and a job on it succeeds.
  void ExpectStillServes(TestCluster& cluster) {
    absl::StatusOr<v1::Dataset> dataset = cluster.LoadUsers(small_users_csv_, "id");
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    EXPECT_EQ(dataset->num_users(), 300);
    absl::StatusOr<JobOutput> output = Segment(cluster, dataset->dataset_id(), WithK(3));
    ASSERT_TRUE(output.ok()) << output.status();
    EXPECT_EQ(output->model.effective_k(), 3);
  }

  TempDir temp_;
  std::string small_users_csv_;
};

// ---------------------------------------------------------------------------------------
// Determinism

TEST_F(ClusterTest, UsersModelSameOnOneAndThreeWorkers) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::vector<JobOutput> outputs;
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    TestClusterOptions options;
    options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(options);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset =
        cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    EXPECT_EQ(dataset->num_users(), kShopCustomers);
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
    ASSERT_TRUE(output.ok()) << output.status();
    EXPECT_EQ(output->model.effective_k(), 5);
    EXPECT_EQ(output->assignments.size(), static_cast<size_t>(kShopCustomers));
    outputs.push_back(*std::move(output));
  }
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);
}

TEST_F(ClusterTest, TransactionsModelSameOnOneAndThreeWorkers) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::vector<JobOutput> outputs;
  std::vector<v1::Dataset> datasets;
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    TestClusterOptions options;
    options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(options);
    ASSERT_NE(cluster, nullptr);
    v1::CreateDatasetRequest create;
    create.set_kind(v1::DATASET_KIND_TRANSACTIONS);
    v1::LoadDatasetRequest load;
    load.set_source(shop.transactions_csv);
    absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    EXPECT_GT(dataset->num_users(), 0);
    EXPECT_EQ(dataset->rows_read(), shop.transactions);
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
    ASSERT_TRUE(output.ok()) << output.status();
    datasets.push_back(*dataset);
    outputs.push_back(*std::move(output));
  }
  EXPECT_EQ(datasets[1].num_users(), datasets[0].num_users());
  EXPECT_EQ(datasets[1].dropped().anonymous_rows(), datasets[0].dropped().anonymous_rows());
  EXPECT_EQ(datasets[1].dropped().cancelled_rows(), datasets[0].dropped().cancelled_rows());
  EXPECT_EQ(datasets[1].dropped().non_positive_rows(), datasets[0].dropped().non_positive_rows());
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);
}

// Runs only as the child process of OneAndTwoOmpThreadsGiveSameModel. libgomp keeps
// the OpenMP thread count per thread. The gRPC threads that run the worker kernels start
// from the process-wide value that OMP_NUM_THREADS sets, so omp_set_num_threads() in the
// test thread does not reach them, but a child process started with that variable does.
TEST_F(ClusterTest, OmpChildWritesModel) {
  const char* output_path = std::getenv(kChildOutputEnv);
  const char* data_path = std::getenv(kChildDataEnv);
  if (output_path == nullptr || data_path == nullptr) {
    GTEST_SKIP() << "runs only as the child process of OneAndTwoOmpThreadsGiveSameModel";
  }
  TestClusterOptions options;
  options.num_workers = 2;
  std::unique_ptr<TestCluster> cluster = StartCluster(options);
  ASSERT_NE(cluster, nullptr);
  // Two shards of 10000 rows each, so the kernels pass their parallel threshold of
  // 4096 rows and really split the rows over threads.
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(data_path, "customer_id", {"segment_truth"}, /*num_shards=*/2);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();

  v1::AssignmentChunk assignments;
  for (const v1::Assignment& assignment : output->assignments) {
    *assignments.add_assignments() = assignment;
  }
  const std::string base = output_path;
  std::ofstream model_file(base + ".model", std::ios::binary);
  ASSERT_TRUE(output->model.SerializeToOstream(&model_file));
  std::ofstream assignments_file(base + ".assignments", std::ios::binary);
  ASSERT_TRUE(assignments.SerializeToOstream(&assignments_file));
  std::ofstream threads_file(base + ".threads");
  threads_file << omp_get_max_threads();
  ASSERT_TRUE(threads_file.good());
}

// Runs this test binary's OmpChildWritesModel with OMP_NUM_THREADS = `threads` and
// waits up to 180 s. Returns the exit status text on failure.
absl::Status RunOmpChild(int threads, const std::string& data, const std::string& output,
                         const std::string& log) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    if (absl::StartsWith(text, "OMP_NUM_THREADS=") || absl::StartsWith(text, kChildOutputEnv) ||
        absl::StartsWith(text, kChildDataEnv) || absl::StartsWith(text, "GTEST_")) {
      continue;
    }
    env.push_back(text);
  }
  env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
  env.push_back(absl::StrCat(kChildOutputEnv, "=", output));
  env.push_back(absl::StrCat(kChildDataEnv, "=", data));
  std::vector<std::string> args = {"/proc/self/exe",
                                   "--gtest_filter=ClusterTest.OmpChildWritesModel"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& entry : env) envp.push_back(entry.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(),
                                  envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return absl::InternalError(absl::StrCat("posix_spawn failed: ", std::strerror(spawned)));
  }
  const absl::Time give_up = absl::Now() + absl::Seconds(180);
  int wait_status = 0;
  while (waitpid(pid, &wait_status, WNOHANG) == 0) {
    if (absl::Now() > give_up) {
      kill(pid, SIGKILL);
      waitpid(pid, &wait_status, 0);
      return absl::DeadlineExceededError("the child test did not end within 180 s");
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    return absl::InternalError(absl::StrCat("the child test failed (wait status ", wait_status,
                                            "); its output is in ", log));
  }
  return absl::OkStatus();
}

TEST_F(ClusterTest, OneAndTwoOmpThreadsGiveSameModel) {
  SyntheticShopOptions shop_options;
  shop_options.num_customers = 20000;
  absl::StatusOr<SyntheticShopFiles> shop =
      WriteSyntheticShop((std::filesystem::path(temp_.path()) / "shop").string(), shop_options);
  ASSERT_TRUE(shop.ok()) << shop.status();

  std::vector<v1::SegmentModel> models;
  std::vector<std::vector<v1::Assignment>> assignments;
  for (int threads : {1, 2}) {
    SCOPED_TRACE(absl::StrCat("OMP_NUM_THREADS=", threads));
    const std::string base = (std::filesystem::path(temp_.path()) / absl::StrCat("omp", threads))
                                 .string();
    const absl::Status ran = RunOmpChild(threads, shop->customers_csv, base, base + ".log");
    if (!ran.ok()) {
      std::ifstream log(base + ".log");
      const std::string text((std::istreambuf_iterator<char>(log)),
                             std::istreambuf_iterator<char>());
      FAIL() << ran << "\n" << text;
    }
    std::ifstream threads_file(base + ".threads");
    int reported = 0;
    threads_file >> reported;
    EXPECT_EQ(reported, threads) << "the child ran with another OpenMP thread count";

    v1::SegmentModel model;
    std::ifstream model_file(base + ".model", std::ios::binary);
    ASSERT_TRUE(model.ParseFromIstream(&model_file));
    v1::AssignmentChunk chunk;
    std::ifstream assignments_file(base + ".assignments", std::ios::binary);
    ASSERT_TRUE(chunk.ParseFromIstream(&assignments_file));
    EXPECT_EQ(chunk.assignments_size(), 20000);
    models.push_back(model);
    assignments.emplace_back(chunk.assignments().begin(), chunk.assignments().end());
  }
  ExpectSameModel(models[0], models[1]);
  ExpectSameAssignments(assignments[0], assignments[1]);
}

// ---------------------------------------------------------------------------------------
// Streamed ingest

TEST_F(ClusterTest, StreamedRowsGiveSameModelAsFile) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  constexpr int kShards = 16;
  absl::StatusOr<v1::Dataset> from_file =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"}, kShards);
  ASSERT_TRUE(from_file.ok()) << from_file.status();

  v1::CreateDatasetRequest create;
  create.set_dataset_id("streamed-shop");
  create.set_num_shards(kShards);
  *create.mutable_schema() = from_file->schema();
  absl::StatusOr<v1::Dataset> streamed = cluster->CreateDataset(create);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->state(), v1::DATASET_STATE_CREATED);

  absl::StatusOr<CsvTable> table = ReadCsv(shop.customers_csv);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->rows.size(), static_cast<size_t>(kShopCustomers));
  absl::StatusOr<int64_t> accepted = StreamTable(*cluster, "streamed-shop", *table);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(*accepted, kShopCustomers);

  absl::StatusOr<v1::Dataset> ready = cluster->GetDataset("streamed-shop");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->state(), v1::DATASET_STATE_READY);
  EXPECT_EQ(ready->num_users(), kShopCustomers);

  absl::StatusOr<JobOutput> file_output = Segment(*cluster, from_file->dataset_id(), WithK(5));
  ASSERT_TRUE(file_output.ok()) << file_output.status();
  absl::StatusOr<JobOutput> stream_output = Segment(*cluster, "streamed-shop", WithK(5));
  ASSERT_TRUE(stream_output.ok()) << stream_output.status();
  ExpectSameModel(file_output->model, stream_output->model);
  ExpectSameAssignments(file_output->assignments, stream_output->assignments);
}

TEST_F(ClusterTest, IngestBadCellKeepsEarlierBatches) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  create.set_dataset_id("streamed-bad");
  v1::Column* id = create.mutable_schema()->add_columns();
  id->set_name("id");
  id->set_type(v1::COLUMN_TYPE_ID);
  v1::Column* x = create.mutable_schema()->add_columns();
  x->set_name("x");
  x->set_type(v1::COLUMN_TYPE_NUMERIC);
  ASSERT_TRUE(cluster->CreateDataset(create).ok());

  // Two valid rows in the first batch; the second batch starts with an invalid cell,
  // which is row 2 of the stream.
  v1::IngestUsersRequest first;
  first.set_dataset_id("streamed-bad");
  v1::IngestUsersRequest second;
  for (const char* value : {"1", "2"}) {
    v1::UserRow* row = first.add_rows();
    row->add_cells(absl::StrCat("user-", value));
    row->add_cells(value);
  }
  v1::UserRow* bad = second.add_rows();
  bad->add_cells("user-3");
  bad->add_cells("oops");
  v1::IngestUsersResponse response;
  auto context = TestCluster::Context();
  auto writer = cluster->stub().IngestUsers(context.get(), &response);
  ASSERT_TRUE(writer->Write(first));
  // The coordinator may end the call as soon as it reads the bad row, so this write
  // can fail. Finish() still returns the status.
  writer->Write(second);
  writer->WritesDone();
  const absl::Status status = FromGrpcStatus(writer->Finish());
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, {"row 2", "'x'", "'oops'"}));

  absl::StatusOr<v1::Dataset> dataset = cluster->GetDataset("streamed-bad");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), 2);
  EXPECT_EQ(dataset->state(), v1::DATASET_STATE_READY);
  absl::StatusOr<JobOutput> output = Segment(*cluster, "streamed-bad", WithK(2));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->assignments.size(), 2u);

  ExpectStillServes(*cluster);
}

// ---------------------------------------------------------------------------------------
// Rejected input: the documented code and message, and the service keeps serving.

TEST_F(ClusterTest, UnterminatedQuoteNamesFileAndLine) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  // Schema inference samples the first 1000 rows, so the bad record on line 1502 is
  // found while loading.
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 1500; ++i) absl::StrAppend(&csv, "u", i, ",", i, ",", i % 7, "\n");
  absl::StrAppend(&csv, "u1500,\"4,5\n");
  const std::string path = temp_.WriteFile("bad_quote.csv", csv);

  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                       {"bad_quote.csv:1502", "quoted field is not closed"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, NanCellNamesColumnAndValue) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const std::string path = temp_.WriteFile("nan.csv", "id,x,y\nu1,1,2\nu2,nan,3\nu3,4,5\n");
  v1::CreateDatasetRequest create;
  create.set_dataset_id("with-nan");
  v1::LoadDatasetRequest load;
  load.set_source(path);
  load.set_id_column("id");
  (*load.mutable_overrides())["x"] = v1::COLUMN_TYPE_NUMERIC;

  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                       {"nan.csv:3", "column 'x'", "'nan'"}));
  absl::StatusOr<v1::Dataset> failed = cluster->GetDataset("with-nan");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state(), v1::DATASET_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(failed->error(), "'nan'")) << failed->error();

  ExpectStillServes(*cluster);
}


TEST_F(ClusterTest, HugeBadCellKeepsCodeAndLine) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  // The error names the 1 MB cell, which is far beyond gRPC's 8 KiB metadata limit for the
  // status message on both hops (worker to coordinator, coordinator to client).
  const std::string path = temp_.WriteFile(
      "huge_cell.csv", absl::StrCat("id,x,y\nu1,1,2\nu2,", std::string(1 << 20, '9'), "e9x,3\n"));
  v1::CreateDatasetRequest create;
  create.set_dataset_id("huge-cell");
  v1::LoadDatasetRequest load;
  load.set_source(path);
  load.set_id_column("id");
  (*load.mutable_overrides())["x"] = v1::COLUMN_TYPE_NUMERIC;

  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                       {"huge_cell.csv:3", "column 'x'", "message cut"}));
  EXPECT_LT(dataset.status().message().size(), 4096u);
  absl::StatusOr<v1::Dataset> failed = cluster->GetDataset("huge-cell");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state(), v1::DATASET_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(failed->error(), "huge_cell.csv:3")) << failed->error();

  ExpectStillServes(*cluster);
}
TEST_F(ClusterTest, OverrideOfUnknownColumnRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  v1::LoadDatasetRequest load;
  load.set_source(small_users_csv_);
  load.set_id_column("id");
  (*load.mutable_overrides())["no_such_column"] = v1::COLUMN_TYPE_NUMERIC;

  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  EXPECT_TRUE(
      HasError(dataset.status(), absl::StatusCode::kInvalidArgument, {"'no_such_column'"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, UnknownIdColumnRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "user_key");
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument, {"'user_key'"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, EmptyFileRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const std::string path = temp_.WriteFile("empty.csv", "");
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  EXPECT_TRUE(
      HasError(dataset.status(), absl::StatusCode::kInvalidArgument, {"empty.csv", "empty"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, MissingFileNotFound) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const std::string path = (std::filesystem::path(temp_.path()) / "missing.csv").string();
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kNotFound, {"missing.csv"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, ZeroTolAndSeedAreRequestable) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  auto run = [&](const std::function<void(v1::SegmentationOptions&)>& change) {
    v1::SegmentationOptions options = WithK(6);
    change(options);
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), options);
    EXPECT_TRUE(output.ok()) << output.status();
    return output.ok() ? output->model : v1::SegmentModel();
  };
  const v1::SegmentModel unset = run([](v1::SegmentationOptions&) {});
  const v1::SegmentModel seed_42 = run([](v1::SegmentationOptions& o) { o.set_seed(42); });
  const v1::SegmentModel seed_0 = run([](v1::SegmentationOptions& o) { o.set_seed(0); });
  const v1::SegmentModel tol_0 = run([](v1::SegmentationOptions& o) { o.set_tol(0); });

  // Unset means 42; 0 is another seed, which seeds these 300 scattered users differently.
  ExpectSameModel(unset, seed_42);
  EXPECT_FALSE(unset.options().has_seed());
  EXPECT_TRUE(seed_0.options().has_seed());
  EXPECT_EQ(seed_0.options().seed(), 0u);
  EXPECT_NE(std::vector<float>(seed_0.centroids().values().begin(),
                               seed_0.centroids().values().end()),
            std::vector<float>(unset.centroids().values().begin(),
                               unset.centroids().values().end()));

  // tol = 0 stops only when no centroid moves, so it never stops earlier than 1e-4.
  EXPECT_TRUE(tol_0.options().has_tol());
  EXPECT_EQ(tol_0.options().tol(), 0);
  EXPECT_TRUE(tol_0.converged());
  EXPECT_GE(tol_0.iterations(), unset.iterations());
  EXPECT_LE(tol_0.inertia(), unset.inertia() * (1 + 1e-12));
}

TEST_F(ClusterTest, KBelowOneRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (int k : {0, -1}) {
    SCOPED_TRACE(absl::StrCat("k = ", k));
    absl::StatusOr<v1::Job> job = cluster->StartSegmentation(dataset->dataset_id(), WithK(k));
    EXPECT_TRUE(HasError(job.status(), absl::StatusCode::kInvalidArgument, {"options.k"}));
  }

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, KAboveUserCountRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<v1::Job> job = cluster->StartSegmentation(dataset->dataset_id(), WithK(301));
  EXPECT_TRUE(HasError(job.status(), absl::StatusCode::kInvalidArgument, {"options.k", "301"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, KAboveDistinctRowsGivesFewerSegments) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  // 30 users whose feature rows take only 3 distinct values.
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 30; ++i) absl::StrAppend(&csv, "u", i, ",", i % 3, ",", 10 * (i % 3), "\n");
  const std::string path = temp_.WriteFile("three_points.csv", csv);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::SegmentModel& model = output->model;
  EXPECT_TRUE(model.fewer_distinct_points());
  EXPECT_EQ(model.requested_k(), 5);
  EXPECT_EQ(model.effective_k(), 3);
  EXPECT_EQ(model.segments_size(), 3);
  ASSERT_EQ(model.centroids().rows(), 3);
  const int d = model.centroids().cols();
  std::set<std::vector<float>> distinct;
  for (int c = 0; c < model.centroids().rows(); ++c) {
    distinct.emplace(model.centroids().values().begin() + c * d,
                     model.centroids().values().begin() + (c + 1) * d);
  }
  EXPECT_EQ(distinct.size(), 3u) << "two centroids are equal";
  EXPECT_EQ(output->assignments.size(), 30u);
}

TEST_F(ClusterTest, UnknownIdsNotFound) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  EXPECT_TRUE(HasError(cluster->GetDataset("no-dataset").status(), absl::StatusCode::kNotFound,
                       {"no-dataset"}));
  v1::LoadDatasetRequest load;
  load.set_dataset_id("no-dataset");
  load.set_source(small_users_csv_);
  EXPECT_TRUE(HasError(cluster->LoadDataset(load).status(), absl::StatusCode::kNotFound,
                       {"no-dataset"}));
  EXPECT_TRUE(HasError(cluster->StartSegmentation("no-dataset", WithK(2)).status(),
                       absl::StatusCode::kNotFound, {"no-dataset"}));
  EXPECT_TRUE(
      HasError(cluster->GetJob("no-job").status(), absl::StatusCode::kNotFound, {"no-job"}));
  EXPECT_TRUE(HasError(cluster->WaitForJob("no-job").status(), absl::StatusCode::kNotFound,
                       {"no-job"}));
  EXPECT_TRUE(
      HasError(cluster->CancelJob("no-job"), absl::StatusCode::kNotFound, {"no-job"}));
  EXPECT_TRUE(HasError(cluster->GetSegmentModel("no-model").status(),
                       absl::StatusCode::kNotFound, {"no-model"}));
  EXPECT_TRUE(HasError(cluster->AssignSegment("no-model", {{"x", "1"}}).status(),
                       absl::StatusCode::kNotFound, {"no-model"}));
  EXPECT_TRUE(HasError(cluster->ExportAssignments("no-model").status(),
                       absl::StatusCode::kNotFound, {"no-model"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, SegmentingUnloadedDatasetFailsPrecondition) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  create.set_dataset_id("not-loaded");
  ASSERT_TRUE(cluster->CreateDataset(create).ok());
  absl::StatusOr<v1::Job> job = cluster->StartSegmentation("not-loaded", WithK(2));
  EXPECT_TRUE(HasError(job.status(), absl::StatusCode::kFailedPrecondition,
                       {"not-loaded", "DATASET_STATE_CREATED"}));

  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, CancelledJobEndsCancelled) {
  const SyntheticShopFiles shop = WriteShop(20000);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<v1::Job> job = cluster->StartSegmentation(dataset->dataset_id(), LongJobOptions());
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Status computing = AwaitJobComputing(*cluster, job->job_id());
  ASSERT_TRUE(computing.ok()) << computing;

  EXPECT_TRUE(cluster->CancelJob(job->job_id()).ok());
  absl::StatusOr<v1::Job> ended = cluster->WaitForJob(job->job_id(), absl::Seconds(30));
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(ended->error_code(), static_cast<int>(absl::StatusCode::kCancelled));
  EXPECT_TRUE(HasError(cluster->CancelJob(job->job_id()), absl::StatusCode::kFailedPrecondition,
                       {"JOB_STATE_CANCELLED"}));
  EXPECT_TRUE(HasError(cluster->GetSegmentModel(job->job_id()).status(),
                       absl::StatusCode::kFailedPrecondition, {job->job_id()}));

  ExpectStillServes(*cluster);
}

// ---------------------------------------------------------------------------------------
// Worker failures

TEST_F(ClusterTest, LoadNamesUnreachableWorkerBeforeProbesFail) {
  TestClusterOptions options;
  options.num_workers = 2;
  // Nothing listens on port 1 of the loopback address. With an hour between probes the
  // coordinator still counts that worker (worker-2) as live.
  options.extra_worker_addresses = {"127.0.0.1:1"};
  options.probe_interval = absl::Hours(1);
  std::unique_ptr<TestCluster> cluster = StartCluster(options);
  ASSERT_NE(cluster, nullptr);

  v1::CreateDatasetRequest create;
  create.set_dataset_id("placed-on-dead");
  v1::LoadDatasetRequest load;
  load.set_source(small_users_csv_);
  load.set_id_column("id");
  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kUnavailable,
                       {"worker-2", "127.0.0.1:1"}));
  absl::StatusOr<v1::Dataset> failed = cluster->GetDataset("placed-on-dead");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state(), v1::DATASET_STATE_FAILED);

  absl::StatusOr<v1::ListWorkersResponse> workers = cluster->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->workers_size(), 3);
  EXPECT_EQ(workers->workers(2).worker_id(), "worker-2");
  EXPECT_TRUE(workers->workers(2).live());
}

TEST_F(ClusterTest, JobMovesShardsOfWorkerLostBeforeStart) {
  TestClusterOptions options;
  options.probe_interval = absl::Milliseconds(50);
  // A stopped worker refuses probes at once, so a long timeout does not slow its loss,
  // while it keeps a live worker on a loaded machine from being declared lost.
  options.probe_timeout = absl::Seconds(2);
  options.probe_failures = 2;
  std::unique_ptr<TestCluster> cluster = StartCluster(options);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> reference = Segment(*cluster, dataset->dataset_id(), WithK(4));
  ASSERT_TRUE(reference.ok()) << reference.status();

  cluster->worker(1).Shutdown(absl::ZeroDuration());
  const absl::Status lost = cluster->AwaitWorkerLive("worker-1", false, absl::Seconds(10));
  ASSERT_TRUE(lost.ok()) << lost;
  absl::StatusOr<JobOutput> moved = Segment(*cluster, dataset->dataset_id(), WithK(4));
  ASSERT_TRUE(moved.ok()) << moved.status();
  ExpectSameModel(reference->model, moved->model);
  ExpectSameAssignments(reference->assignments, moved->assignments);

  absl::StatusOr<v1::ListWorkersResponse> workers = cluster->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->workers_size(), 3);
  EXPECT_EQ(workers->workers(1).hosted_shards(), 0);
  // The model trained before the loss had shards on worker-1, whose assignments are gone.
  EXPECT_TRUE(HasError(cluster->ExportAssignments(reference->model.model_id()).status(),
                       absl::StatusCode::kUnavailable, {"worker-1"}));
}

TEST_F(ClusterTest, LoadSucceedsAfterUnreachableWorkerIsLost) {
  TestClusterOptions options;
  options.num_workers = 2;
  options.extra_worker_addresses = {"127.0.0.1:1"};
  options.probe_interval = absl::Milliseconds(50);
  options.probe_timeout = absl::Milliseconds(500);
  options.probe_failures = 2;
  std::unique_ptr<TestCluster> cluster = StartCluster(options);
  ASSERT_NE(cluster, nullptr);

  const absl::Status lost = cluster->AwaitWorkerLive("worker-2", false, absl::Seconds(10));
  ASSERT_TRUE(lost.ok()) << lost;
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(3));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->assignments.size(), 300u);

  absl::StatusOr<v1::ListWorkersResponse> workers = cluster->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  for (const v1::WorkerInfo& worker : workers->workers()) {
    if (worker.worker_id() == "worker-2") {
      EXPECT_FALSE(worker.live());
      EXPECT_EQ(worker.hosted_shards(), 0);
    } else {
      EXPECT_TRUE(worker.live()) << worker.worker_id();
      EXPECT_GT(worker.hosted_shards(), 0) << worker.worker_id();
    }
  }
}

// Streamed rows have no replica, so the shards of a lost worker cannot move; shards of
// datasets loaded from files do (see worker_failure_test.cc).
TEST_F(ClusterTest, WorkerShutdownKeepsJobOnStreamedRows) {
  const SyntheticShopFiles shop = WriteShop(20000);
  TestClusterOptions options;
  options.probe_interval = absl::Milliseconds(100);
  options.probe_timeout = absl::Milliseconds(500);
  options.probe_failures = 2;
  std::unique_ptr<TestCluster> cluster = StartCluster(options);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> from_file =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  v1::CreateDatasetRequest create;
  *create.mutable_schema() = from_file->schema();
  absl::StatusOr<v1::Dataset> dataset = cluster->CreateDataset(create);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<CsvTable> table = ReadCsv(shop.customers_csv);
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<int64_t> accepted = StreamTable(*cluster, dataset->dataset_id(), *table);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  absl::StatusOr<v1::Job> job = cluster->StartSegmentation(dataset->dataset_id(), LongJobOptions());
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Status computing = AwaitJobComputing(*cluster, job->job_id());
  ASSERT_TRUE(computing.ok()) << computing;

  cluster->worker(1).Shutdown(absl::ZeroDuration());
  absl::StatusOr<v1::Job> ended = cluster->WaitForJob(job->job_id(), absl::Seconds(120));
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::JOB_STATE_SUCCEEDED) << ended->error_message();

  // The coordinator keeps serving reads, and probing declares the worker lost.
  absl::StatusOr<v1::Job> read = cluster->GetJob(job->job_id());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->state(), v1::JOB_STATE_SUCCEEDED);
  const absl::Status lost = cluster->AwaitWorkerLive("worker-1", false, absl::Seconds(10));
  EXPECT_TRUE(lost.ok()) << lost;
  absl::StatusOr<v1::ListWorkersResponse> workers = cluster->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status();
  EXPECT_EQ(workers->workers_size(), 3);

  // The promoted replicas contain every streamed row, so a new job runs on them.
  absl::StatusOr<JobOutput> again = Segment(*cluster, dataset->dataset_id(), WithK(3));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->assignments.size(), table->rows.size());
  // A dataset loaded after the loss is placed on the live workers only.
  ExpectStillServes(*cluster);
}

// ---------------------------------------------------------------------------------------
// Serving

TEST_F(ClusterTest, AssignSegmentMatchesExportForTrainingUsers) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  const std::map<std::string, v1::Assignment> exported = ByUser(output->assignments);

  absl::StatusOr<CsvTable> table = ReadCsv(shop.customers_csv);
  ASSERT_TRUE(table.ok()) << table.status();
  int mismatches = 0;
  for (const auto& [user, columns] : ShopColumnsByUser(*table)) {
    absl::StatusOr<v1::AssignSegmentResponse> assigned =
        cluster->AssignSegment(output->model.model_id(), columns);
    ASSERT_TRUE(assigned.ok()) << "user " << user << ": " << assigned.status();
    auto it = exported.find(user);
    ASSERT_NE(it, exported.end()) << "user " << user << " is not exported";
    EXPECT_NEAR(assigned->squared_distance(), it->second.squared_distance(),
                1e-4 * (1 + it->second.squared_distance()))
        << "user " << user;
    if (assigned->segment() != it->second.segment() && ++mismatches <= 5) {
      ADD_FAILURE() << "user " << user << ": AssignSegment gives segment " << assigned->segment()
                    << ", the export " << it->second.segment() << "; distances "
                    << absl::StrJoin(assigned->squared_distances(), ", ");
    }
  }
  EXPECT_EQ(mismatches, 0) << "users whose served segment differs from the exported one";

  absl::StatusOr<v1::AssignSegmentResponse> unknown =
      cluster->AssignSegment(output->model.model_id(), {{"age", "40"}, {"bogus", "1"}});
  EXPECT_TRUE(HasError(unknown.status(), absl::StatusCode::kInvalidArgument, {"'bogus'"}));
  absl::StatusOr<v1::AssignSegmentResponse> not_finite =
      cluster->AssignSegment(output->model.model_id(), {{"age", "inf"}});
  EXPECT_TRUE(
      HasError(not_finite.status(), absl::StatusCode::kInvalidArgument, {"'age'", "'inf'"}));
  absl::StatusOr<v1::AssignSegmentResponse> all_missing =
      cluster->AssignSegment(output->model.model_id(), {});
  ASSERT_TRUE(all_missing.ok()) << all_missing.status();
  EXPECT_EQ(all_missing->imputed_columns_size(), table->header.size() - 2);

  ExpectStillServes(*cluster);
}

// ---------------------------------------------------------------------------------------
// Public data sets through a 3-worker cluster

TEST_F(ClusterTest, OnlineRetailTransactionsGiveFiveSegments) {
  COHORT_REQUIRE_DATA_FILE(path, "online-retail/OnlineRetail.csv.gz");
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_TRANSACTIONS);
  v1::LoadDatasetRequest load;
  load.set_source(path);
  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->rows_read(), 541909);
  EXPECT_EQ(dataset->num_users(), 4339);
  EXPECT_EQ(dataset->dropped().anonymous_rows(), 135080);
  EXPECT_EQ(dataset->dropped().cancelled_rows(), 8905);

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->model.effective_k(), 5);
  ASSERT_EQ(output->model.segments_size(), 5);
  int64_t users = 0;
  for (const v1::Segment& segment : output->model.segments()) {
    EXPECT_GT(segment.size(), 0) << "segment " << segment.index();
    users += segment.size();
  }
  EXPECT_EQ(users, 4339);
  EXPECT_EQ(output->assignments.size(), 4339u);
}

TEST_F(ClusterTest, MallCustomersGiveFiveSegments) {
  COHORT_REQUIRE_DATA_FILE(path, "mall-customers/Mall_Customers.csv");
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "CustomerID");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), 200);

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->model.effective_k(), 5);
  EXPECT_EQ(output->model.segments_size(), 5);
  EXPECT_EQ(output->assignments.size(), 200u);
}

TEST_F(ClusterTest, BankMarketingWithLineIdsGivesSixSegments) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  v1::LoadDatasetRequest load;
  load.set_source(path);
  load.mutable_csv()->set_delimiter(";");
  // The file has no id column: "@line" makes each record's line number its user id.
  load.set_id_column("@line");
  absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(create, load);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), 45211);

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(6));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->model.effective_k(), 6);
  EXPECT_EQ(output->model.segments_size(), 6);
  ASSERT_EQ(output->assignments.size(), 45211u);
  std::set<int64_t> lines;
  for (const v1::Assignment& assignment : output->assignments) {
    int64_t line = 0;
    ASSERT_TRUE(absl::SimpleAtoi(assignment.user_id(), &line))
        << "user id '" << assignment.user_id() << "' is not a line number";
    EXPECT_GE(line, 1);
    EXPECT_LE(line, 45212);  // 45211 records after the header line
    lines.insert(line);
  }
  EXPECT_EQ(lines.size(), 45211u) << "line-number ids repeat";
}


// ---------------------------------------------------------------------------------------
// Bisecting trees, metrics and sweeps through the cluster

v1::SegmentationOptions Bisecting(int k) {
  v1::SegmentationOptions options = WithK(k);
  options.set_algorithm("bisecting");
  return options;
}

// Starts a sweep and waits for it. Errors: the start call's, or the job's own error.
absl::StatusOr<v1::Sweep> RunSweep(TestCluster& cluster, const std::string& dataset_id,
                                   const std::vector<int>& ks) {
  v1::StartSweepRequest request;
  request.set_dataset_id(dataset_id);
  for (int k : ks) request.add_ks(k);
  v1::Job job;
  const grpc::Status started =
      cluster.stub().StartSweep(TestCluster::Context().get(), request, &job);
  if (!started.ok()) return FromGrpcStatus(started);
  COHORT_ASSIGN_OR_RETURN(job, cluster.WaitForJob(job.job_id()));
  if (job.state() != v1::JOB_STATE_SUCCEEDED) return JobError(job);
  v1::GetSweepRequest get;
  get.set_job_id(job.job_id());
  v1::Sweep sweep;
  const grpc::Status got = cluster.stub().GetSweep(TestCluster::Context().get(), get, &sweep);
  if (!got.ok()) return FromGrpcStatus(got);
  return sweep;
}

TEST_F(ClusterTest, BisectingTreeSameOnOneAndThreeWorkers) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::vector<JobOutput> outputs;
  for (int workers : {1, 3}) {
    TestClusterOptions options;
    options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(options);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset =
        cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), Bisecting(5));
    ASSERT_TRUE(output.ok()) << output.status();
    outputs.push_back(std::move(*output));
  }
  const v1::SegmentModel& model = outputs[0].model;
  EXPECT_EQ(model.effective_k(), 5);
  ASSERT_EQ(model.tree_size(), 9) << "a binary tree with 5 leaves has 9 nodes";
  ExpectSameModel(model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);
  ASSERT_EQ(outputs[1].model.tree_size(), model.tree_size());
  for (int id = 0; id < model.tree_size(); ++id) {
    EXPECT_EQ(outputs[1].model.tree(id).size(), model.tree(id).size()) << "node " << id;
    EXPECT_EQ(outputs[1].model.tree(id).segment(), model.tree(id).segment()) << "node " << id;
  }
  // Leaf sizes are the exported segment sizes; inner nodes add up their children.
  std::map<int, int64_t> exported_sizes;
  for (const v1::Assignment& assignment : outputs[0].assignments) {
    ++exported_sizes[assignment.segment()];
  }
  for (const v1::SegmentTreeNode& node : model.tree()) {
    EXPECT_FALSE(node.description().empty()) << "node " << node.id();
    if (node.segment() >= 0) {
      EXPECT_EQ(node.size(), exported_sizes[node.segment()]) << "leaf " << node.id();
    } else {
      EXPECT_EQ(node.size(), model.tree(node.left()).size() + model.tree(node.right()).size())
          << "node " << node.id();
    }
  }
}

TEST_F(ClusterTest, BisectingAssignSegmentWalksTree) {
  const SyntheticShopFiles shop = WriteShop(2000);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), Bisecting(6));
  ASSERT_TRUE(output.ok()) << output.status();
  const std::map<std::string, v1::Assignment> exported = ByUser(output->assignments);

  absl::StatusOr<CsvTable> table = ReadCsv(shop.customers_csv);
  ASSERT_TRUE(table.ok()) << table.status();
  int mismatches = 0;
  for (const auto& [user, columns] : ShopColumnsByUser(*table)) {
    absl::StatusOr<v1::AssignSegmentResponse> assigned =
        cluster->AssignSegment(output->model.model_id(), columns);
    ASSERT_TRUE(assigned.ok()) << "user " << user << ": " << assigned.status();
    if (assigned->segment() != exported.at(user).segment()) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0) << "users whose served segment differs from the tree's";
}

TEST_F(ClusterTest, ModelCarriesMetricsAndProjection) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::ClusterMetrics& metrics = output->model.metrics();
  EXPECT_EQ(metrics.num_users(), kShopCustomers);
  EXPECT_EQ(metrics.num_segments(), 5);
  ASSERT_TRUE(metrics.silhouette().defined()) << metrics.silhouette().undefined_reason();
  EXPECT_GT(metrics.silhouette().value(), 0.0);
  EXPECT_LE(metrics.silhouette().value(), 1.0);
  EXPECT_TRUE(metrics.calinski_harabasz().defined());
  EXPECT_TRUE(metrics.davies_bouldin().defined());
  EXPECT_TRUE(metrics.silhouette_euclidean_sampled().defined());
  EXPECT_TRUE(metrics.silhouette_cosine_sampled().defined());
  EXPECT_EQ(metrics.sample_size(), 2000);
  EXPECT_EQ(output->model.projection().x_size(), 2000);
  EXPECT_EQ(output->model.projection().segments_size(), 2000);
  // At convergence the centroids are the segment means, so the inertia of the metrics
  // equals the sum of the exported squared distances up to float rounding.
  double exported = 0;
  for (const v1::Assignment& assignment : output->assignments) {
    exported += assignment.squared_distance();
  }
  EXPECT_NEAR(metrics.inertia(), exported, 1e-3 * exported);
  for (const v1::Segment& segment : output->model.segments()) {
    for (const v1::NumericSummary& numeric : segment.numeric()) {
      EXPECT_GE(numeric.median(), numeric.min()) << numeric.column();
      EXPECT_LE(numeric.median(), numeric.max()) << numeric.column();
    }
  }
}

TEST_F(ClusterTest, SweepMatchesSegmentationMetrics) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<v1::Sweep> sweep = RunSweep(*cluster, dataset->dataset_id(), {2, 3, 4, 5, 6});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  ASSERT_EQ(sweep->points_size(), 5);
  EXPECT_GE(sweep->suggested_k(), 2);
  EXPECT_LE(sweep->suggested_k(), 6);
  EXPECT_NE(sweep->reason().find("silhouette"), std::string::npos) << sweep->reason();

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(5));
  ASSERT_TRUE(output.ok()) << output.status();
  const v1::SweepPoint& five = sweep->points(3);
  ASSERT_EQ(five.k(), 5);
  EXPECT_EQ(five.metrics().inertia(), output->model.metrics().inertia());
  EXPECT_EQ(five.metrics().silhouette().value(), output->model.metrics().silhouette().value());
}

TEST_F(ClusterTest, SweepAndAlgorithmErrorsNameTheField) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  v1::StartSweepRequest empty;
  empty.set_dataset_id(dataset->dataset_id());
  v1::Job job;
  grpc::Status status = cluster->stub().StartSweep(TestCluster::Context().get(), empty, &job);
  EXPECT_TRUE(HasError(FromGrpcStatus(status), absl::StatusCode::kInvalidArgument, {"k range"}));

  absl::StatusOr<v1::Sweep> too_big = RunSweep(*cluster, dataset->dataset_id(), {2, 400});
  EXPECT_TRUE(HasError(too_big.status(), absl::StatusCode::kInvalidArgument, {"400"}));

  v1::SegmentationOptions unknown = WithK(3);
  unknown.set_algorithm("dbscan");
  absl::StatusOr<v1::Job> started = cluster->StartSegmentation(dataset->dataset_id(), unknown);
  EXPECT_TRUE(
      HasError(started.status(), absl::StatusCode::kInvalidArgument, {"algorithm", "'dbscan'"}));

  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(3));
  ASSERT_TRUE(output.ok()) << output.status();
  v1::GetSweepRequest get;
  get.set_job_id(output->job.job_id());
  v1::Sweep sweep;
  status = cluster->stub().GetSweep(TestCluster::Context().get(), get, &sweep);
  EXPECT_TRUE(HasError(FromGrpcStatus(status), absl::StatusCode::kFailedPrecondition,
                       {"not a sweep"}));
  ExpectStillServes(*cluster);
}


// ---------------------------------------------------------------------------------------
// k-means||, mini-batch and cosine options through the cluster

v1::SegmentationOptions KMeansParallel(int k) {
  v1::SegmentationOptions options = WithK(k);
  options.set_init("kmeans||");
  return options;
}

v1::SegmentationOptions MiniBatch(int k) {
  v1::SegmentationOptions options = WithK(k);
  options.set_algorithm("minibatch");
  options.set_batch_size(1024);
  return options;
}

v1::SegmentationOptions Cosine(int k) {
  v1::SegmentationOptions options = WithK(k);
  options.set_distance("cosine");
  return options;
}

class ClusterVariantTest : public ClusterTest {
 protected:
  // Runs `options` on the shop with 1 and with 3 workers; fills `outputs` with both.
  void RunOnOneAndThreeWorkers(const v1::SegmentationOptions& options,
                               std::vector<JobOutput>* outputs) {
    const SyntheticShopFiles shop = WriteShop(kShopCustomers);
    for (int workers : {1, 3}) {
      SCOPED_TRACE(absl::StrCat(workers, " workers"));
      TestClusterOptions cluster_options;
      cluster_options.num_workers = workers;
      std::unique_ptr<TestCluster> cluster = StartCluster(cluster_options);
      ASSERT_NE(cluster, nullptr);
      absl::StatusOr<v1::Dataset> dataset =
          cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
      ASSERT_TRUE(dataset.ok()) << dataset.status();
      absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), options);
      ASSERT_TRUE(output.ok()) << output.status();
      EXPECT_EQ(output->assignments.size(), static_cast<size_t>(kShopCustomers));
      outputs->push_back(*std::move(output));
    }
  }

  // The inertia of plain k-means++ seeding and Lloyd iterations with k segments.
  double LloydInertia(int k) {
    const SyntheticShopFiles shop = WriteShop(kShopCustomers);
    std::unique_ptr<TestCluster> cluster = StartCluster();
    EXPECT_NE(cluster, nullptr);
    if (cluster == nullptr) return 0;
    absl::StatusOr<v1::Dataset> dataset =
        cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
    EXPECT_TRUE(dataset.ok()) << dataset.status();
    if (!dataset.ok()) return 0;
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), WithK(k));
    EXPECT_TRUE(output.ok()) << output.status();
    return output.ok() ? output->model.inertia() : 0;
  }
};

TEST_F(ClusterVariantTest, KMeansParallelSameOnOneAndThreeWorkers) {
  std::vector<JobOutput> outputs;
  ASSERT_NO_FATAL_FAILURE(RunOnOneAndThreeWorkers(KMeansParallel(5), &outputs));
  ASSERT_EQ(outputs.size(), 2u);
  EXPECT_EQ(outputs[0].model.effective_k(), 5);
  EXPECT_EQ(outputs[0].model.options().init(), "kmeans||");
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);

  const double lloyd = LloydInertia(5);
  ASSERT_GT(lloyd, 0);
  EXPECT_LE(outputs[0].model.inertia(), 1.02 * lloyd);
}

TEST_F(ClusterVariantTest, MiniBatchSameOnOneAndThreeWorkers) {
  std::vector<JobOutput> outputs;
  ASSERT_NO_FATAL_FAILURE(RunOnOneAndThreeWorkers(MiniBatch(5), &outputs));
  ASSERT_EQ(outputs.size(), 2u);
  EXPECT_EQ(outputs[0].model.effective_k(), 5);
  EXPECT_GT(outputs[0].model.iterations(), 0);
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);

  const double lloyd = LloydInertia(5);
  ASSERT_GT(lloyd, 0);
  EXPECT_LE(outputs[0].model.inertia(), 1.02 * lloyd);
}

TEST_F(ClusterVariantTest, KMeansParallelMiniBatchSameOnOneAndThreeWorkers) {
  v1::SegmentationOptions options = MiniBatch(5);
  options.set_init("kmeans||");
  std::vector<JobOutput> outputs;
  ASSERT_NO_FATAL_FAILURE(RunOnOneAndThreeWorkers(options, &outputs));
  ASSERT_EQ(outputs.size(), 2u);
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);
}

TEST_F(ClusterVariantTest, CosineSameOnOneAndThreeWorkers) {
  std::vector<JobOutput> outputs;
  ASSERT_NO_FATAL_FAILURE(RunOnOneAndThreeWorkers(Cosine(5), &outputs));
  ASSERT_EQ(outputs.size(), 2u);
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);

  const v1::Matrix& centroids = outputs[0].model.centroids();
  ASSERT_EQ(centroids.rows(), 5);
  const int d = centroids.cols();
  for (int c = 0; c < centroids.rows(); ++c) {
    double sq_norm = 0;
    for (int j = 0; j < d; ++j) {
      const double value = centroids.values(c * d + j);
      sq_norm += value * value;
    }
    EXPECT_NEAR(std::sqrt(sq_norm), 1.0, 1e-5) << "centroid " << c;
  }
  // The exported distance is the cosine distance, which lies in [0, 2].
  for (const v1::Assignment& assignment : outputs[0].assignments) {
    EXPECT_GE(assignment.squared_distance(), 0.0f) << "user " << assignment.user_id();
    EXPECT_LE(assignment.squared_distance(), 2.0f) << "user " << assignment.user_id();
  }
}

TEST_F(ClusterVariantTest, CosineMiniBatchSameOnOneAndThreeWorkers) {
  v1::SegmentationOptions options = MiniBatch(5);
  options.set_distance("cosine");
  std::vector<JobOutput> outputs;
  ASSERT_NO_FATAL_FAILURE(RunOnOneAndThreeWorkers(options, &outputs));
  ASSERT_EQ(outputs.size(), 2u);
  ExpectSameModel(outputs[0].model, outputs[1].model);
  ExpectSameAssignments(outputs[0].assignments, outputs[1].assignments);
}

TEST_F(ClusterVariantTest, CosineAssignSegmentMatchesExport) {
  const SyntheticShopFiles shop = WriteShop(kShopCustomers);
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster->LoadUsers(shop.customers_csv, "customer_id", {"segment_truth"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), Cosine(5));
  ASSERT_TRUE(output.ok()) << output.status();
  const std::map<std::string, v1::Assignment> exported = ByUser(output->assignments);

  absl::StatusOr<CsvTable> table = ReadCsv(shop.customers_csv);
  ASSERT_TRUE(table.ok()) << table.status();
  int mismatches = 0;
  for (const auto& [user, columns] : ShopColumnsByUser(*table)) {
    absl::StatusOr<v1::AssignSegmentResponse> assigned =
        cluster->AssignSegment(output->model.model_id(), columns);
    ASSERT_TRUE(assigned.ok()) << "user " << user << ": " << assigned.status();
    auto it = exported.find(user);
    ASSERT_NE(it, exported.end()) << "user " << user << " is not exported";
    EXPECT_NEAR(assigned->squared_distance(), it->second.squared_distance(), 1e-5)
        << "user " << user;
    ASSERT_EQ(assigned->squared_distances_size(), 5) << "user " << user;
    EXPECT_NEAR(assigned->squared_distances(assigned->segment()), assigned->squared_distance(),
                1e-5)
        << "user " << user;
    if (assigned->segment() != it->second.segment() && ++mismatches <= 5) {
      ADD_FAILURE() << "user " << user << ": AssignSegment gives segment " << assigned->segment()
                    << ", the export " << it->second.segment() << "; distances "
                    << absl::StrJoin(assigned->squared_distances(), ", ");
    }
  }
  EXPECT_EQ(mismatches, 0) << "users whose served segment differs from the exported one";
}

TEST_F(ClusterVariantTest, InvalidVariantOptionsNameTheField) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(small_users_csv_, "id");
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  struct Case {
    std::string name;
    v1::SegmentationOptions options;
    std::vector<std::string> parts;
  };
  std::vector<Case> cases;
  auto add = [&cases](const std::string& name, const std::vector<std::string>& parts,
                      const std::function<void(v1::SegmentationOptions&)>& change) {
    Case entry{name, WithK(3), parts};
    change(entry.options);
    cases.push_back(std::move(entry));
  };
  add("init", {"options.init", "'kmeans+'"},
      [](v1::SegmentationOptions& o) { o.set_init("kmeans+"); });
  add("oversampling", {"options.oversampling", "-1"},
      [](v1::SegmentationOptions& o) { o.set_oversampling(-1); });
  add("init_rounds", {"options.init_rounds", "101"},
      [](v1::SegmentationOptions& o) { o.set_init_rounds(101); });
  add("algorithm", {"options.algorithm", "'mini-batch'"},
      [](v1::SegmentationOptions& o) { o.set_algorithm("mini-batch"); });
  add("batch_size", {"options.batch_size", "-5"},
      [](v1::SegmentationOptions& o) { o.set_batch_size(-5); });
  add("max_no_improvement", {"options.max_no_improvement", "-1"},
      [](v1::SegmentationOptions& o) { o.set_max_no_improvement(-1); });
  add("reassignment_ratio", {"options.reassignment_ratio", "1.5"},
      [](v1::SegmentationOptions& o) { o.set_reassignment_ratio(1.5); });
  add("distance", {"options.distance", "'manhattan'"},
      [](v1::SegmentationOptions& o) { o.set_distance("manhattan"); });
  add("bisecting cosine", {"options.distance", "'cosine'", "bisecting"},
      [](v1::SegmentationOptions& o) {
        o.set_algorithm("bisecting");
        o.set_distance("cosine");
      });
  for (const Case& entry : cases) {
    SCOPED_TRACE(entry.name);
    absl::StatusOr<v1::Job> started =
        cluster->StartSegmentation(dataset->dataset_id(), entry.options);
    EXPECT_TRUE(HasError(started.status(), absl::StatusCode::kInvalidArgument, entry.parts));
  }
  ExpectStillServes(*cluster);
}


// ---------------------------------------------------------------------------------------
// Data integrity: duplicate streamed ids, non-UTF-8 cells, restarts, re-registration

// Creates a USERS dataset with columns id and x, and streams `batches` of (id, x) rows.
absl::Status StreamRows(TestCluster& cluster, const std::string& dataset_id,
                        const std::vector<std::vector<std::pair<std::string, std::string>>>& batches,
                        int64_t* accepted,
                        v1::DuplicateIdRule rule = v1::DUPLICATE_ID_RULE_UNSPECIFIED,
                        int64_t* duplicates = nullptr) {
  v1::CreateDatasetRequest create;
  create.set_dataset_id(dataset_id);
  create.set_duplicate_ids(rule);
  v1::Column* id = create.mutable_schema()->add_columns();
  id->set_name("id");
  id->set_type(v1::COLUMN_TYPE_ID);
  v1::Column* x = create.mutable_schema()->add_columns();
  x->set_name("x");
  x->set_type(v1::COLUMN_TYPE_NUMERIC);
  COHORT_RETURN_IF_ERROR(cluster.CreateDataset(create).status());
  v1::IngestUsersResponse response;
  auto context = TestCluster::Context();
  auto writer = cluster.stub().IngestUsers(context.get(), &response);
  for (const auto& batch : batches) {
    v1::IngestUsersRequest request;
    request.set_dataset_id(dataset_id);
    for (const auto& [user, value] : batch) {
      v1::UserRow* row = request.add_rows();
      row->add_cells(user);
      row->add_cells(value);
    }
    // The coordinator may end the call at a bad row; Finish() still returns the status.
    if (!writer->Write(request)) break;
  }
  writer->WritesDone();
  const absl::Status status = FromGrpcStatus(writer->Finish());
  *accepted = response.rows_accepted();
  if (duplicates != nullptr) *duplicates = response.duplicate_rows();
  return status;
}

TEST_F(ClusterTest, StreamedDuplicateIdIsRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  int64_t accepted = -1;
  const absl::Status status = StreamRows(
      *cluster, "dupes", {{{"a", "1"}, {"b", "2"}}, {{"c", "3"}, {"a", "4"}}}, &accepted);
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, {"'a'", "unique"}));
  absl::StatusOr<v1::Dataset> dataset = cluster->GetDataset("dupes");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  // The first batch is stored; of the second, whatever its worker stored whole.
  EXPECT_GE(dataset->num_users(), 2);
  EXPECT_LE(dataset->num_users(), 3);
  // gRPC sends no response body with an error status, so the count is not returned.
  EXPECT_EQ(accepted, 0);
  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, StreamedDuplicatesKeepFirstAreCounted) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  int64_t accepted = -1;
  int64_t duplicates = -1;
  const absl::Status status =
      StreamRows(*cluster, "dupes-kept", {{{"a", "1"}, {"b", "2"}}, {{"c", "3"}, {"a", "4"}, {"c", "5"}}},
                 &accepted, v1::DUPLICATE_ID_RULE_KEEP_FIRST, &duplicates);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(duplicates, 2);
  absl::StatusOr<v1::Dataset> dataset = cluster->GetDataset("dupes-kept");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), 3);
  EXPECT_EQ(dataset->dropped().duplicate_rows(), 2);
  EXPECT_EQ(dataset->duplicate_ids(), v1::DUPLICATE_ID_RULE_KEEP_FIRST);
  ExpectStillServes(*cluster);
}

// 200 users, then users 0, 5, 10, ... again with other values.
std::string UsersWithRepeatedIds() {
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 200; ++i) absl::StrAppend(&csv, "u", i, ",", i, ",", i % 7, "\n");
  for (int i = 0; i < 200; i += 5) absl::StrAppend(&csv, "u", i, ",", -i, ",9\n");
  return csv;
}

TEST_F(ClusterTest, FileDuplicateIdIsRejectedByDefault) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const std::string path = temp_.WriteFile("repeated.csv", UsersWithRepeatedIds());
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  // The first repeat in the input is u0's second row.
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                       {"repeated.csv:202: user id 'u0' already appeared at ", "repeated.csv:2;",
                        "keep-first"}))
      << dataset.status();
  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, LoadErrorSameOnOneAndThreeWorkers) {
  // The repeat of u0 on line 202 comes before 40 rows of other users with a cell that is
  // not a number, which the other workers report.
  std::string csv = UsersWithRepeatedIds();
  for (int i = 0; i < 40; ++i) absl::StrAppend(&csv, "v", i, ",zz,1\n");
  const std::string path = temp_.WriteFile("repeated_then_bad.csv", csv);
  v1::LoadDatasetRequest load;
  load.set_source(path);
  load.set_id_column("id");
  (*load.mutable_overrides())["x"] = v1::COLUMN_TYPE_NUMERIC;
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    absl::StatusOr<v1::Dataset> dataset = LoadOnWorkers(workers, v1::CreateDatasetRequest(), load);
    EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                         {"repeated_then_bad.csv:202: user id 'u0' already appeared at ",
                          "repeated_then_bad.csv:2;"}))
        << dataset.status();
  }
}

TEST_F(ClusterTest, KeepFirstCountsSameOnOneAndThreeWorkers) {
  const std::string path = temp_.WriteFile("repeated.csv", UsersWithRepeatedIds());
  v1::CreateDatasetRequest create;
  create.set_duplicate_ids(v1::DUPLICATE_ID_RULE_KEEP_FIRST);
  v1::LoadDatasetRequest load;
  load.set_source(path);
  load.set_id_column("id");
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    absl::StatusOr<v1::Dataset> dataset = LoadOnWorkers(workers, create, load);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    EXPECT_EQ(dataset->rows_read(), 240);
    EXPECT_EQ(dataset->num_users(), 200);
    EXPECT_EQ(dataset->dropped().duplicate_rows(), 40);
  }
}

// 60 users; users 3, 13, ... have "n/a" in x and users 7, 17, ... "maybe" in the boolean
// column active.
std::string UsersWithUnparsableCells() {
  std::string csv = "id,x,active\n";
  for (int i = 0; i < 60; ++i) {
    absl::StrAppend(&csv, "u", i, ",", i % 10 == 3 ? "n/a" : absl::StrCat(i), ",",
                    i % 10 == 7 ? "maybe" : (i % 2 == 0 ? "yes" : "no"), "\n");
  }
  return csv;
}

TEST_F(ClusterTest, UnparsableCellsAreRejectedOrCountedAsMissing) {
  const std::string path = temp_.WriteFile("unparsable.csv", UsersWithUnparsableCells());
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    TestClusterOptions options;
    options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(options);
    ASSERT_NE(cluster, nullptr);
    v1::LoadDatasetRequest load;
    load.set_source(path);
    load.set_id_column("id");
    (*load.mutable_overrides())["x"] = v1::COLUMN_TYPE_NUMERIC;
    (*load.mutable_overrides())["active"] = v1::COLUMN_TYPE_BOOLEAN;
    EXPECT_TRUE(HasError(cluster->CreateAndLoad(v1::CreateDatasetRequest(), load).status(),
                         absl::StatusCode::kInvalidArgument, {"unparsable.csv:"}));

    load.set_unparsable_cells(v1::UNPARSABLE_CELL_RULE_MISSING);
    absl::StatusOr<v1::Dataset> dataset = cluster->CreateAndLoad(v1::CreateDatasetRequest(), load);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    EXPECT_EQ(dataset->num_users(), 60);
    EXPECT_EQ(dataset->dropped().unparsable_cells(), 12);

    load.set_unparsable_cells(static_cast<v1::UnparsableCellRule>(7));
    EXPECT_TRUE(HasError(cluster->CreateAndLoad(v1::CreateDatasetRequest(), load).status(),
                         absl::StatusCode::kInvalidArgument, {"unparsable_cells = 7"}));
  }
}

TEST_F(ClusterTest, KeepFirstRuleIsInvalidForTransactions) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_TRANSACTIONS);
  create.set_duplicate_ids(v1::DUPLICATE_ID_RULE_KEEP_FIRST);
  EXPECT_TRUE(HasError(cluster->CreateDataset(create).status(),
                       absl::StatusCode::kInvalidArgument, {"duplicate_ids", "USERS"}));
  create.set_kind(v1::DATASET_KIND_USERS);
  create.set_duplicate_ids(static_cast<v1::DuplicateIdRule>(9));
  EXPECT_TRUE(HasError(cluster->CreateDataset(create).status(),
                       absl::StatusCode::kInvalidArgument, {"duplicate_ids is 9"}));
}

TEST_F(ClusterTest, NonUtf8CellIsRejected) {
  std::unique_ptr<TestCluster> cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  std::string csv = "id,city,x\n";
  for (int i = 0; i < 50; ++i) absl::StrAppend(&csv, "u", i, ",north,", i, "\n");
  absl::StrAppend(&csv, "u50,s\xff\xfeuth,50\n");
  const std::string path = temp_.WriteFile("latin1.csv", csv);
  absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id");
  EXPECT_TRUE(HasError(dataset.status(), absl::StatusCode::kInvalidArgument,
                       {"latin1.csv:52", "'city'", "UTF-8"}));
  ExpectStillServes(*cluster);
}

TEST_F(ClusterTest, CoordinatorWithoutWorkersSaysHowToAddThem) {
  // A restarted coordinator is in this state while its old workers still run.
  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator =
      CoordinatorServer::Start(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto stub = v1::Cohort::NewStub(
      grpc::CreateChannel((*coordinator)->address(), grpc::InsecureChannelCredentials()));

  v1::CreateDatasetRequest create;
  v1::Dataset dataset;
  ASSERT_TRUE(stub->CreateDataset(TestCluster::Context().get(), create, &dataset).ok());
  v1::LoadDatasetRequest load;
  load.set_dataset_id(dataset.dataset_id());
  load.set_source(small_users_csv_);
  load.set_id_column("id");
  const grpc::Status status = stub->LoadDataset(TestCluster::Context().get(), load, &dataset);
  EXPECT_TRUE(HasError(FromGrpcStatus(status), absl::StatusCode::kUnavailable,
                       {"no worker is live", "cohort worker --coordinator",
                        "coordinator restart", "--register-interval", "--workers"}));
  (*coordinator)->Shutdown(absl::Seconds(1));
}

TEST_F(ClusterTest, RestartedCoordinatorKeepsModelsAndIds) {
  std::vector<std::unique_ptr<WorkerServer>> workers;
  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.state_dir = (std::filesystem::path(temp_.path()) / "state").string();
  WorkerServerOptions worker_options;
  worker_options.worker_id = "worker-0";
  absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(worker_options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  options.worker_addresses.push_back((*worker)->address());

  std::vector<std::string> model_ids;
  v1::SegmentModel first_model;
  for (int restart = 0; restart < 2; ++restart) {
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator =
        CoordinatorServer::Start(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    auto stub = v1::Cohort::NewStub(
        grpc::CreateChannel((*coordinator)->address(), grpc::InsecureChannelCredentials()));
    if (restart == 1) {
      // The model of the first coordinator is served by the second.
      v1::GetSegmentModelRequest get;
      get.set_model_id(model_ids[0]);
      v1::SegmentModel model;
      ASSERT_TRUE(stub->GetSegmentModel(TestCluster::Context().get(), get, &model).ok());
      EXPECT_EQ(model.SerializeAsString(), first_model.SerializeAsString());
    }
    v1::CreateDatasetRequest create;
    v1::Dataset dataset;
    ASSERT_TRUE(stub->CreateDataset(TestCluster::Context().get(), create, &dataset).ok());
    v1::LoadDatasetRequest load;
    load.set_dataset_id(dataset.dataset_id());
    load.set_source(small_users_csv_);
    load.set_id_column("id");
    ASSERT_TRUE(stub->LoadDataset(TestCluster::Context().get(), load, &dataset).ok());
    v1::StartSegmentationRequest start;
    start.set_dataset_id(dataset.dataset_id());
    *start.mutable_options() = WithK(3);
    v1::Job job;
    ASSERT_TRUE(stub->StartSegmentation(TestCluster::Context().get(), start, &job).ok());
    v1::WatchJobRequest watch;
    watch.set_job_id(job.job_id());
    auto context = TestCluster::Context();
    auto reader = stub->WatchJob(context.get(), watch);
    v1::JobEvent event;
    while (reader->Read(&event)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(event.state(), v1::JOB_STATE_SUCCEEDED) << event.message();
    model_ids.push_back(job.job_id());
    if (restart == 0) {
      v1::GetSegmentModelRequest get;
      get.set_model_id(job.job_id());
      ASSERT_TRUE(stub->GetSegmentModel(TestCluster::Context().get(), get, &first_model).ok());
    }
    (*coordinator)->Shutdown(absl::Seconds(1));
  }
  EXPECT_NE(model_ids[0], model_ids[1]) << "a restarted coordinator reused a job id";
  (*worker)->Shutdown(absl::Seconds(1));
}

TEST_F(ClusterTest, WorkerRegisteringTwiceHostsShardsOnce) {
  // The coordinator is given the worker's address and calls it worker-0; the same process
  // then registers itself under another id. Its shards must not be placed twice.
  WorkerServerOptions worker_options;
  worker_options.worker_id = "self-named";
  absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(worker_options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.worker_addresses.push_back((*worker)->address());
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator = CoordinatorServer::Start(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto channel = grpc::CreateChannel((*coordinator)->address(), grpc::InsecureChannelCredentials());
  auto registry = v1::Registry::NewStub(channel);
  v1::RegisterWorkerRequest request;
  request.set_worker_id("self-named");
  request.set_address((*worker)->address());
  v1::RegisterWorkerResponse response;
  ASSERT_TRUE(registry->RegisterWorker(TestCluster::Context().get(), request, &response).ok());

  auto stub = v1::Cohort::NewStub(channel);
  v1::ListWorkersResponse listed;
  ASSERT_TRUE(stub->ListWorkers(TestCluster::Context().get(), {}, &listed).ok());
  ASSERT_EQ(listed.workers_size(), 1);
  EXPECT_EQ(listed.workers(0).worker_id(), "self-named");

  v1::CreateDatasetRequest create;
  v1::Dataset dataset;
  ASSERT_TRUE(stub->CreateDataset(TestCluster::Context().get(), create, &dataset).ok());
  v1::LoadDatasetRequest load;
  load.set_dataset_id(dataset.dataset_id());
  load.set_source(small_users_csv_);
  load.set_id_column("id");
  ASSERT_TRUE(stub->LoadDataset(TestCluster::Context().get(), load, &dataset).ok());
  EXPECT_EQ(dataset.num_users(), 300);
  (*coordinator)->Shutdown(absl::Seconds(1));
  (*worker)->Shutdown(absl::Seconds(1));
}

// ---------------------------------------------------------------------------------------
// Sample weights

// Blob centers (x, y) of the weighted-users CSVs, 10 apart against a spread of ±0.8, so
// every seeding converges to the same partition.
constexpr double kWeightBlobCenters[][2] = {{0, 0}, {10, 0}, {0, 10}};
constexpr int kWeightRowsPerBlob = 20;

// Writes users "u<i>" of three blobs with the columns id, x, y, w. A user with a positive
// x offset has weight 2 in `weighted` mode. In `duplicated` mode every user has weight 1
// and each of those users appears again as "d<i>". `zero_weight_outlier` adds user
// "zero" at (100, 100) with weight 0.
std::string WeightedUsersCsv(bool duplicated, bool zero_weight_outlier) {
  std::string csv = "id,x,y,w\n";
  int user = 0;
  for (const auto& center : kWeightBlobCenters) {
    for (int i = 0; i < kWeightRowsPerBlob; ++i, ++user) {
      const double dx = ((i * 7) % 9 - 4) / 5.0;
      const double dy = ((i * 5) % 9 - 4) / 5.0;
      const std::string values = absl::StrCat(center[0] + dx, ",", center[1] + dy);
      const bool heavy = dx > 0;
      absl::StrAppend(&csv, "u", user, ",", values, ",", heavy && !duplicated ? 2 : 1, "\n");
      if (heavy && duplicated) absl::StrAppend(&csv, "d", user, ",", values, ",1\n");
    }
  }
  if (zero_weight_outlier) absl::StrAppend(&csv, "zero,100,100,0\n");
  return csv;
}

// The expected centroids of WeightedUsersCsv(false, ...): the weighted mean of each blob.
std::vector<std::vector<double>> WeightedBlobMeans() {
  std::vector<std::vector<double>> means;
  for (const auto& center : kWeightBlobCenters) {
    double sum_x = 0, sum_y = 0, total = 0;
    for (int i = 0; i < kWeightRowsPerBlob; ++i) {
      const double dx = ((i * 7) % 9 - 4) / 5.0;
      const double dy = ((i * 5) % 9 - 4) / 5.0;
      const double weight = dx > 0 ? 2 : 1;
      sum_x += weight * (center[0] + dx);
      sum_y += weight * (center[1] + dy);
      total += weight;
    }
    means.push_back({sum_x / total, sum_y / total});
  }
  std::sort(means.begin(), means.end());
  return means;
}

TEST_F(ClusterTest, WeightColumnActsAsRowCopies) {
  const std::string weighted_csv =
      temp_.WriteFile("weighted.csv", WeightedUsersCsv(false, false));
  const std::string duplicated_csv =
      temp_.WriteFile("duplicated.csv", WeightedUsersCsv(true, false));
  const std::string zero_weight_csv =
      temp_.WriteFile("zero_weight.csv", WeightedUsersCsv(false, true));
  v1::SegmentationOptions options = WithK(3);
  options.set_n_init(3);

  std::vector<JobOutput> weighted;  // on 1, then on 3 workers
  JobOutput duplicated, zero_weight;
  JobOutput bisecting_weighted, bisecting_duplicated, bisecting_zero;
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    TestClusterOptions cluster_options;
    cluster_options.num_workers = workers;
    std::unique_ptr<TestCluster> cluster = StartCluster(cluster_options);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(weighted_csv, "id", {}, 0, "w");
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    absl::StatusOr<JobOutput> output = Segment(*cluster, dataset->dataset_id(), options);
    ASSERT_TRUE(output.ok()) << output.status();
    weighted.push_back(*std::move(output));
    if (workers == 1) continue;

    absl::StatusOr<v1::Dataset> copies = cluster->LoadUsers(duplicated_csv, "id", {}, 0, "w");
    ASSERT_TRUE(copies.ok()) << copies.status();
    absl::StatusOr<JobOutput> copies_output = Segment(*cluster, copies->dataset_id(), options);
    ASSERT_TRUE(copies_output.ok()) << copies_output.status();
    duplicated = *std::move(copies_output);

    absl::StatusOr<v1::Dataset> with_zero = cluster->LoadUsers(zero_weight_csv, "id", {}, 0, "w");
    ASSERT_TRUE(with_zero.ok()) << with_zero.status();
    absl::StatusOr<JobOutput> zero_output = Segment(*cluster, with_zero->dataset_id(), options);
    ASSERT_TRUE(zero_output.ok()) << zero_output.status();
    zero_weight = *std::move(zero_output);

    // Bisecting K-means weighs rows the same way.
    for (const auto& [name, id, out] :
         {std::make_tuple("weighted", dataset->dataset_id(), &bisecting_weighted),
          std::make_tuple("duplicated", copies->dataset_id(), &bisecting_duplicated),
          std::make_tuple("zero weight", with_zero->dataset_id(), &bisecting_zero)}) {
      SCOPED_TRACE(absl::StrCat("bisecting, ", name));
      absl::StatusOr<JobOutput> tree = Segment(*cluster, id, Bisecting(3));
      ASSERT_TRUE(tree.ok()) << tree.status();
      *out = *std::move(tree);
    }
  }

  const v1::SegmentModel& model = weighted[0].model;
  ExpectSameModel(model, weighted[1].model);
  ExpectSameAssignments(weighted[0].assignments, weighted[1].assignments);
  // The weight column is not a feature.
  EXPECT_EQ(std::vector<std::string>(model.feature_names().begin(), model.feature_names().end()),
            (std::vector<std::string>{"x", "y"}));

  // Training counts a weight-2 user twice, but sizes count every user once.
  ASSERT_EQ(model.effective_k(), 3);
  EXPECT_EQ(model.num_users(), 3 * kWeightRowsPerBlob);
  int64_t total_size = 0;
  for (const v1::Segment& segment : model.segments()) total_size += segment.size();
  EXPECT_EQ(total_size, 3 * kWeightRowsPerBlob);
  {
    // Unweighted blob means are about 0.16 away in x, far outside the tolerance.
    SCOPED_TRACE("weighted model against weighted blob means");
    ExpectCentroidsNear(WeightedBlobMeans(), RawCentroids(model), 1e-4);
  }
  {
    // Different row sets give different float sums, hence a tolerance.
    SCOPED_TRACE("weight 2 against duplicated rows");
    EXPECT_GT(duplicated.model.num_users(), model.num_users());
    ExpectCentroidsNear(RawCentroids(model), RawCentroids(duplicated.model), 1e-5);
  }
  {
    SCOPED_TRACE("weight-0 user against no user");
    EXPECT_EQ(zero_weight.model.num_users(), model.num_users() + 1);
    ExpectCentroidsNear(RawCentroids(model), RawCentroids(zero_weight.model), 1e-5);
  }
  {
    SCOPED_TRACE("bisecting: weighted blob means, weight 2 against duplicated rows");
    const v1::SegmentModel& tree = bisecting_weighted.model;
    ASSERT_EQ(tree.effective_k(), 3);
    ExpectCentroidsNear(WeightedBlobMeans(), RawCentroids(tree), 1e-4);
    ExpectCentroidsNear(RawCentroids(tree), RawCentroids(bisecting_duplicated.model), 1e-5);
    ASSERT_GT(tree.tree_size(), 0);
    ASSERT_GT(bisecting_duplicated.model.tree_size(), 0);
    EXPECT_EQ(tree.tree(0).size(), 3 * kWeightRowsPerBlob);
    EXPECT_EQ(tree.tree(0).weight(), bisecting_duplicated.model.tree(0).size());
    EXPECT_EQ(bisecting_duplicated.model.tree(0).weight(),
              bisecting_duplicated.model.tree(0).size());
  }
  {
    SCOPED_TRACE("bisecting: weight-0 user against no user");
    const v1::SegmentModel& tree = bisecting_zero.model;
    ASSERT_EQ(tree.effective_k(), 3) << "the weight-0 outlier must not get a leaf";
    ExpectCentroidsNear(RawCentroids(bisecting_weighted.model), RawCentroids(tree), 1e-5);
    EXPECT_EQ(tree.tree(0).size(), bisecting_weighted.model.tree(0).size() + 1);
    EXPECT_EQ(tree.tree(0).weight(), bisecting_weighted.model.tree(0).weight());
  }
}

}  // namespace
}  // namespace cohort::testing
