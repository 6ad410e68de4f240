// Replicas of streamed rows with real worker processes. Every streamed row is stored on
// its shard's primary and replica worker. So after SIGKILL of a worker, or of two one
// after the other, jobs on streamed users and interactions give the no-failure result.
// A batch is acknowledged only once both copies store it.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "coordinator/placement.h"
#include "core/log.h"
#include "core/shard_hash.h"
#include "core/synthetic.h"
#include "tests/integration/job_checks.h"
#include "tests/integration/process_cluster.h"

namespace cohort::testing {
namespace {

constexpr char kCli[] = COHORT_CLI_PATH;
constexpr int64_t kUsers = 6000;
constexpr int kShards = 64;
// How long the probes may take to declare a killed worker lost.
constexpr absl::Duration kLossTimeout = absl::Seconds(60);

v1::SegmentationOptions ShortJob() {
  v1::SegmentationOptions options = WithK(6);
  options.set_n_init(2);
  options.set_max_iter(50);
  options.set_tol(0);
  return options;
}

// The result of IngestUsers or IngestInteractions: the response and the stream status.
template <typename Response>
struct Ingested {
  grpc::Status status;
  Response response;
};

class ReplicaTest : public ::testing::Test {
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
    absl::StatusOr<CsvTable> table = ReadCsv(shop_csv_);
    ASSERT_TRUE(table.ok()) << table.status();
    table_ = *std::move(table);
  }

  // A cluster of `num_workers` worker processes whose probes declare a killed worker
  // lost within seconds, or, with `slow_probes`, not for an hour.
  std::unique_ptr<ProcessCluster> StartCluster(int num_workers, bool slow_probes = false) {
    ProcessClusterOptions options;
    options.num_workers = num_workers;
    options.probe_interval = slow_probes ? absl::Hours(1) : absl::Milliseconds(200);
    options.probe_timeout = absl::Seconds(2);
    options.probe_failures = 2;
    absl::StatusOr<std::unique_ptr<ProcessCluster>> cluster =
        ProcessCluster::Start(kCli, temp_.path(), options);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    return cluster.ok() ? std::move(*cluster) : nullptr;
  }

  // Creates a USERS dataset with the shop's schema (inferred by a file load).
  absl::StatusOr<std::string> CreateUsers(
      TestCluster& client, v1::DuplicateIdRule rule = v1::DUPLICATE_ID_RULE_UNSPECIFIED) {
    COHORT_ASSIGN_OR_RETURN(v1::Dataset from_file,
                            client.LoadUsers(shop_csv_, "customer_id", {"segment_truth"}));
    v1::CreateDatasetRequest create;
    *create.mutable_schema() = from_file.schema();
    create.set_num_shards(kShards);
    create.set_duplicate_ids(rule);
    COHORT_ASSIGN_OR_RETURN(v1::Dataset created, client.CreateDataset(create));
    return created.dataset_id();
  }

  // Streams table rows [begin, end) in batches of 500.
  Ingested<v1::IngestUsersResponse> StreamRows(TestCluster& client, const std::string& dataset_id,
                                               size_t begin, size_t end) {
    Ingested<v1::IngestUsersResponse> out;
    auto context = TestCluster::Context();
    auto writer = client.stub().IngestUsers(context.get(), &out.response);
    for (size_t first = begin; first < end; first += 500) {
      v1::IngestUsersRequest batch;
      batch.set_dataset_id(dataset_id);
      for (size_t i = first; i < std::min(end, first + 500); ++i) {
        v1::UserRow* row = batch.add_rows();
        for (const std::string& cell : table_.rows[i]) row->add_cells(cell);
      }
      if (!writer->Write(batch)) break;  // Finish() returns the reason
    }
    writer->WritesDone();
    out.status = writer->Finish();
    return out;
  }

  TempDir temp_;
  std::string shop_csv_;
  CsvTable table_;
};

void Kill(ProcessCluster& cluster, int worker) {
  cluster.worker(worker).Signal(SIGKILL);
  const absl::Status lost =
      cluster.client().AwaitWorkerLive(absl::StrCat("worker-", worker), false, kLossTimeout);
  ASSERT_TRUE(lost.ok()) << lost;
}

void ExpectSameOutput(const JobOutput& expected, const absl::StatusOr<JobOutput>& actual) {
  ASSERT_TRUE(actual.ok()) << actual.status();
  ExpectSameModel(expected.model, actual->model);
  ExpectSameAssignments(expected.assignments, actual->assignments);
}

TEST_F(ReplicaTest, KilledWorkerKeepsStreamedUsersAndResult) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id =
      CreateUsers(client, v1::DUPLICATE_ID_RULE_KEEP_FIRST);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();
  const Ingested<v1::IngestUsersResponse> ingested =
      StreamRows(client, *dataset_id, 0, table_.rows.size());
  ASSERT_TRUE(ingested.status.ok()) << ingested.status.error_message();
  EXPECT_EQ(ingested.response.rows_accepted(), kUsers);
  EXPECT_EQ(ingested.response.unreplicated_rows(), 0);
  // Repeated users are dropped once, by the primaries' count.
  const Ingested<v1::IngestUsersResponse> repeated = StreamRows(client, *dataset_id, 0, 300);
  ASSERT_TRUE(repeated.status.ok()) << repeated.status.error_message();
  EXPECT_EQ(repeated.response.rows_accepted(), 0);
  EXPECT_EQ(repeated.response.duplicate_rows(), 300);
  absl::StatusOr<JobOutput> reference = Segment(client, *dataset_id, ShortJob());
  ASSERT_TRUE(reference.ok()) << reference.status();

  Kill(*cluster, 1);
  ExpectSameOutput(*reference, Segment(client, *dataset_id, ShortJob()));

  // The promoted replicas know their users, so repeats are still dropped.
  const Ingested<v1::IngestUsersResponse> again = StreamRows(client, *dataset_id, 0, 300);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.response.rows_accepted(), 0);
  EXPECT_EQ(again.response.duplicate_rows(), 300);
  EXPECT_EQ(again.response.unreplicated_rows(), 0);

  // The replicas did not change the dataset's counts.
  absl::StatusOr<v1::Dataset> dataset = client.GetDataset(*dataset_id);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), kUsers);
  EXPECT_EQ(dataset->dropped().duplicate_rows(), 600);
  ExpectSameOutput(*reference, Segment(client, *dataset_id, ShortJob()));
}

TEST_F(ReplicaTest, TwoKillsWithJobBetweenKeepResult) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id = CreateUsers(client);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();
  const Ingested<v1::IngestUsersResponse> ingested =
      StreamRows(client, *dataset_id, 0, table_.rows.size());
  ASSERT_TRUE(ingested.status.ok()) << ingested.status.error_message();
  absl::StatusOr<JobOutput> reference = Segment(client, *dataset_id, ShortJob());
  ASSERT_TRUE(reference.ok()) << reference.status();

  // The job after the first loss promotes its replicas and makes new ones, so the
  // second loss loses nothing either.
  Kill(*cluster, 1);
  ExpectSameOutput(*reference, Segment(client, *dataset_id, ShortJob()));
  Kill(*cluster, 2);
  ExpectSameOutput(*reference, Segment(client, *dataset_id, ShortJob()));
}

TEST_F(ReplicaTest, WorkerKilledDuringJobKeepsResult) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(3, /*slow_probes=*/true);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id = CreateUsers(client);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();
  const Ingested<v1::IngestUsersResponse> ingested =
      StreamRows(client, *dataset_id, 0, table_.rows.size());
  ASSERT_TRUE(ingested.status.ok()) << ingested.status.error_message();
  v1::SegmentationOptions options = ShortJob();
  options.set_n_init(8);
  options.set_max_iter(100);
  absl::StatusOr<JobOutput> reference = Segment(client, *dataset_id, options);
  ASSERT_TRUE(reference.ok()) << reference.status();

  // Probes run once an hour, so the job itself finds the loss and promotes replicas.
  absl::StatusOr<v1::Job> job = client.StartSegmentation(*dataset_id, options);
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Status computing = AwaitJobComputing(client, job->job_id());
  ASSERT_TRUE(computing.ok()) << computing;
  cluster->worker(2).Signal(SIGKILL);
  absl::StatusOr<v1::Job> ended = client.WaitForJob(job->job_id(), absl::Seconds(120));
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_EQ(ended->state(), v1::JOB_STATE_SUCCEEDED) << ended->error_message();
  JobOutput after;
  absl::StatusOr<v1::SegmentModel> model = client.GetSegmentModel(ended->model_id());
  ASSERT_TRUE(model.ok()) << model.status();
  after.model = *model;
  absl::StatusOr<std::vector<v1::Assignment>> assignments =
      client.ExportAssignments(ended->model_id());
  ASSERT_TRUE(assignments.ok()) << assignments.status();
  after.assignments = *assignments;
  ExpectSameOutput(*reference, after);
}

TEST_F(ReplicaTest, OneLiveWorkerCountsUnreplicatedRows) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(2);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id = CreateUsers(client);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();
  const size_t held_back = 1000;
  const size_t first_part = table_.rows.size() - held_back;
  const Ingested<v1::IngestUsersResponse> replicated =
      StreamRows(client, *dataset_id, 0, first_part);
  ASSERT_TRUE(replicated.status.ok()) << replicated.status.error_message();
  EXPECT_EQ(replicated.response.unreplicated_rows(), 0);

  // With one live worker left, rows are accepted and counted as unreplicated.
  Kill(*cluster, 1);
  const Ingested<v1::IngestUsersResponse> single =
      StreamRows(client, *dataset_id, first_part, table_.rows.size());
  ASSERT_TRUE(single.status.ok()) << single.status.error_message();
  EXPECT_EQ(single.response.rows_accepted(), static_cast<int64_t>(held_back));
  EXPECT_EQ(single.response.unreplicated_rows(), static_cast<int64_t>(held_back));

  absl::StatusOr<JobOutput> output = Segment(client, *dataset_id, ShortJob());
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->model.num_users(), kUsers);
  EXPECT_EQ(output->assignments.size(), static_cast<size_t>(kUsers));
}

TEST_F(ReplicaTest, SingleWorkerClusterReportsUnreplicatedRows) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(1);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id = CreateUsers(client);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();
  const Ingested<v1::IngestUsersResponse> ingested =
      StreamRows(client, *dataset_id, 0, table_.rows.size());
  ASSERT_TRUE(ingested.status.ok()) << ingested.status.error_message();
  EXPECT_EQ(ingested.response.rows_accepted(), kUsers);
  EXPECT_EQ(ingested.response.unreplicated_rows(), kUsers);
}

TEST_F(ReplicaTest, ReplicaLostBeforeAckRejectsBatch) {
  // Probes run once an hour, so the coordinator still counts worker-1 as live and sends
  // the batch to it after the primary stored it.
  std::unique_ptr<ProcessCluster> cluster = StartCluster(2, /*slow_probes=*/true);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  absl::StatusOr<std::string> dataset_id = CreateUsers(client);
  ASSERT_TRUE(dataset_id.ok()) << dataset_id.status();

  // Rows whose shard has worker-0 as primary and worker-1 as replica.
  const size_t id_column =
      std::find(table_.header.begin(), table_.header.end(), "customer_id") - table_.header.begin();
  ASSERT_LT(id_column, table_.header.size());
  const std::vector<int> owners = PlaceShards(kShards, {"worker-0", "worker-1"});
  std::vector<size_t> primary_on_0;
  std::vector<size_t> others;
  for (size_t i = 0; i < table_.rows.size(); ++i) {
    const int shard = ShardOfUser(table_.rows[i][id_column], kShards);
    (owners[shard] == 0 ? primary_on_0 : others).push_back(i);
  }
  ASSERT_GT(primary_on_0.size(), 10u);
  {
    v1::IngestUsersResponse response;
    auto context = TestCluster::Context();
    auto writer = client.stub().IngestUsers(context.get(), &response);
    v1::IngestUsersRequest batch;
    batch.set_dataset_id(*dataset_id);
    for (size_t i : others) {
      v1::UserRow* row = batch.add_rows();
      for (const std::string& cell : table_.rows[i]) row->add_cells(cell);
    }
    ASSERT_TRUE(writer->Write(batch));
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.unreplicated_rows(), 0);
  }

  cluster->worker(1).Signal(SIGKILL);
  v1::IngestUsersResponse response;
  auto context = TestCluster::Context();
  auto writer = client.stub().IngestUsers(context.get(), &response);
  v1::IngestUsersRequest batch;
  batch.set_dataset_id(*dataset_id);
  for (size_t i : primary_on_0) {
    v1::UserRow* row = batch.add_rows();
    for (const std::string& cell : table_.rows[i]) row->add_cells(cell);
  }
  writer->Write(batch);
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_TRUE(HasError(FromGrpcStatus(status), absl::StatusCode::kUnavailable,
                       {"worker-1", "replica copy", "not acknowledged", "primary workers"}));
}

// Interactions of `users` users with 8 of 120 items each, rated 1 to 5, the same on
// every call.
std::vector<v1::Interaction> MakeInteractions(int users) {
  std::vector<v1::Interaction> out;
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  for (int u = 0; u < users; ++u) {
    for (int j = 0; j < 8; ++j) {
      v1::Interaction& interaction = out.emplace_back();
      interaction.set_user_id(absl::StrCat("u", u));
      // Users of the same tenth prefer the same items, so item lists have structure.
      interaction.set_item_id(absl::StrCat("i", (u % 10) * 12 + next() % 24 % 120));
      interaction.set_value(1 + static_cast<double>(next() % 5));
    }
  }
  return out;
}

TEST_F(ReplicaTest, KilledWorkerKeepsStreamedInteractionsAndNeighbours) {
  std::unique_ptr<ProcessCluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  TestCluster& client = cluster->client();
  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_INTERACTIONS);
  create.set_num_shards(kShards);
  create.set_duplicate_rule(v1::DUPLICATE_RULE_SUM);
  absl::StatusOr<v1::Dataset> dataset = client.CreateDataset(create);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<v1::Interaction> interactions = MakeInteractions(800);
  {
    v1::IngestInteractionsResponse response;
    auto context = TestCluster::Context();
    auto writer = client.stub().IngestInteractions(context.get(), &response);
    for (size_t first = 0; first < interactions.size(); first += 700) {
      v1::IngestInteractionsRequest request;
      request.set_dataset_id(dataset->dataset_id());
      for (size_t i = first; i < std::min(interactions.size(), first + 700); ++i) {
        *request.add_interactions() = interactions[i];
      }
      ASSERT_TRUE(writer->Write(request));
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.interactions_accepted(), static_cast<int64_t>(interactions.size()));
    EXPECT_EQ(response.unreplicated_interactions(), 0);
  }
  absl::StatusOr<v1::Dataset> before = client.GetDataset(dataset->dataset_id());
  ASSERT_TRUE(before.ok()) << before.status();

  v1::NeighbourOptions options;
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  options.set_k(8);
  auto run_job = [&]() -> absl::StatusOr<std::string> {
    v1::StartNeighbourJobRequest request;
    request.set_dataset_id(dataset->dataset_id());
    *request.mutable_options() = options;
    v1::Job job;
    const grpc::Status started =
        client.stub().StartNeighbourJob(TestCluster::Context().get(), request, &job);
    if (!started.ok()) return FromGrpcStatus(started);
    COHORT_ASSIGN_OR_RETURN(v1::Job done, client.WaitForJob(job.job_id()));
    if (done.state() != v1::JOB_STATE_SUCCEEDED) return JobError(done);
    return done.model_id();
  };
  // Every item's list and the recommendations of some users, read through the API.
  using Lists = std::map<std::string, std::vector<std::pair<std::string, double>>>;
  auto read_lists = [&](const std::string& model_id) {
    Lists lists;
    for (int item = 0; item < 120; ++item) {
      const std::string item_id = absl::StrCat("i", item);
      v1::SimilarItemsRequest request;
      request.set_model_id(model_id);
      request.set_item_id(item_id);
      v1::NeighboursResponse response;
      const grpc::Status status =
          client.stub().SimilarItems(TestCluster::Context().get(), request, &response);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) continue;
      EXPECT_TRUE(status.ok()) << item_id << ": " << status.error_message();
      for (const v1::Neighbour& neighbour : response.neighbours()) {
        lists[item_id].emplace_back(neighbour.id(), neighbour.score());
      }
    }
    for (int user = 0; user < 800; user += 97) {
      v1::RecommendRequest request;
      request.set_user_id(absl::StrCat("u", user));
      request.set_item_model_id(model_id);
      request.set_n(5);
      v1::RecommendResponse response;
      const grpc::Status status =
          client.stub().Recommend(TestCluster::Context().get(), request, &response);
      EXPECT_TRUE(status.ok()) << request.user_id() << ": " << status.error_message();
      for (const v1::RecommendedItem& item : response.items()) {
        lists[request.user_id()].emplace_back(item.item_id(), item.score());
      }
    }
    return lists;
  };
  absl::StatusOr<std::string> reference_model = run_job();
  ASSERT_TRUE(reference_model.ok()) << reference_model.status();
  const Lists reference = read_lists(*reference_model);
  ASSERT_FALSE(reference.empty());

  Kill(*cluster, 1);
  absl::StatusOr<std::string> after_model = run_job();
  ASSERT_TRUE(after_model.ok()) << after_model.status();
  EXPECT_EQ(read_lists(*after_model), reference);
  // Recommendations of the reference model read the users' rows from the moved shards.
  EXPECT_EQ(read_lists(*reference_model), reference);
  absl::StatusOr<v1::Dataset> after = client.GetDataset(dataset->dataset_id());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->num_users(), before->num_users());
  EXPECT_EQ(after->num_interactions(), before->num_interactions());
}

}  // namespace
}  // namespace cohort::testing
