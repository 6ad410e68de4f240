// The segmentation job's correctness matrix: every K-means variant gives equal models
// and assignments on 1, 2 and 4 worker processes with 1 and 2 OpenMP threads each, and
// edge inputs get their exact status or typed result through the cluster.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/placement.h"
#include "core/log.h"
#include "core/shard_hash.h"
#include "core/synthetic.h"
#include "tests/integration/job_checks.h"
#include "tests/integration/process_cluster.h"

namespace cohort::testing {
namespace {

constexpr char kCli[] = COHORT_CLI_PATH;
// 24000 users on 4 shards: 6000 rows per shard, above the kernels' parallel threshold
// of 4096 rows, so 2 OpenMP threads really split the rows.
constexpr int64_t kUsers = 24000;
constexpr int kShards = 4;

struct ClusterShape {
  int workers;
  int threads;
};
// Index 0 is the reference; kFourWorkers is used by the edge-input tests.
constexpr ClusterShape kShapes[] = {{1, 1}, {2, 1}, {4, 1}, {1, 2}, {2, 2}, {4, 2}};
constexpr int kOneWorker = 0;
constexpr int kFourWorkers = 2;

// Sample weights of the weighted copy of the shop, by row: weight 0 included.
constexpr double kRowWeights[] = {1, 2, 0.5, 3, 0};

v1::SegmentationOptions Options(int k, const std::string& algorithm, const std::string& init,
                                const std::string& distance) {
  v1::SegmentationOptions options = WithK(k);
  options.set_algorithm(algorithm);
  options.set_init(init);
  options.set_distance(distance);
  if (algorithm == "minibatch") options.set_batch_size(1024);
  return options;
}

// Writes `csv` with the column "w" added: kRowWeights by row.
absl::StatusOr<std::string> WriteWeightedCopy(const std::string& csv, const TempDir& dir) {
  COHORT_ASSIGN_OR_RETURN(CsvTable table, ReadCsv(csv));
  std::string text = absl::StrJoin(table.header, ",") + ",w\n";
  for (size_t i = 0; i < table.rows.size(); ++i) {
    absl::StrAppend(&text, absl::StrJoin(table.rows[i], ","), ",",
                    kRowWeights[i % std::size(kRowWeights)], "\n");
  }
  return dir.WriteFile("weighted_customers.csv", text);
}

// One cluster of the matrix with the shop and its weighted copy loaded.
struct MatrixCluster {
  ClusterShape shape;
  std::unique_ptr<ProcessCluster> cluster;
  std::string shop_id;
  std::string weighted_id;
};

class SegmentationMatrixTest : public ::testing::Test {
 protected:
  // Starts every cluster of the matrix once for all tests of the suite.
  static void SetUpTestSuite() {
    SetLogLevel("warn");
    temp_ = new TempDir();
    SyntheticShopOptions shop_options;
    shop_options.num_customers = kUsers;
    shop_options.mean_transactions = 0;
    absl::StatusOr<SyntheticShopFiles> shop =
        WriteSyntheticShop((std::filesystem::path(temp_->path()) / "shop").string(), shop_options);
    if (!shop.ok()) {
      setup_error_ = new std::string(shop.status().ToString());
      return;
    }
    absl::StatusOr<std::string> weighted = WriteWeightedCopy(shop->customers_csv, *temp_);
    if (!weighted.ok()) {
      setup_error_ = new std::string(weighted.status().ToString());
      return;
    }
    clusters_ = new std::vector<MatrixCluster>();
    for (const ClusterShape& shape : kShapes) {
      ProcessClusterOptions options;
      options.num_workers = shape.workers;
      options.omp_threads = shape.threads;
      absl::StatusOr<std::unique_ptr<ProcessCluster>> started =
          ProcessCluster::Start(kCli, temp_->path(), options);
      absl::Status status = started.status();
      MatrixCluster entry{shape, nullptr, "", ""};
      if (status.ok()) {
        entry.cluster = std::move(*started);
        TestCluster& client = entry.cluster->client();
        absl::StatusOr<v1::Dataset> plain =
            client.LoadUsers(shop->customers_csv, "customer_id", {"segment_truth"}, kShards);
        absl::StatusOr<v1::Dataset> with_weights =
            client.LoadUsers(*weighted, "customer_id", {"segment_truth"}, kShards, "w");
        status = !plain.ok() ? plain.status() : with_weights.status();
        if (status.ok()) {
          entry.shop_id = plain->dataset_id();
          entry.weighted_id = with_weights->dataset_id();
        }
      }
      if (!status.ok()) {
        setup_error_ = new std::string(absl::StrCat(shape.workers, " workers, ", shape.threads,
                                                    " threads: ", status.ToString()));
        return;
      }
      clusters_->push_back(std::move(entry));
    }
  }

  static void TearDownTestSuite() {
    delete clusters_;
    clusters_ = nullptr;
    delete setup_error_;
    setup_error_ = nullptr;
    delete temp_;
    temp_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(setup_error_, nullptr) << "the matrix clusters did not start: " << *setup_error_;
  }

  static TestCluster& Client(int index) { return (*clusters_)[index].cluster->client(); }

  // Runs `options` on the shop (or its weighted copy) on every cluster and checks that
  // models and assignments equal those of the first cluster. Fills `outputs` by cluster.
  static void ExpectSameOnEveryCluster(const v1::SegmentationOptions& options, bool weighted,
                                       std::vector<JobOutput>* outputs) {
    for (const MatrixCluster& entry : *clusters_) {
      SCOPED_TRACE(absl::StrCat(entry.shape.workers, " workers, ", entry.shape.threads,
                                " OpenMP threads"));
      absl::StatusOr<JobOutput> output = Segment(
          entry.cluster->client(), weighted ? entry.weighted_id : entry.shop_id, options);
      ASSERT_TRUE(output.ok()) << output.status();
      EXPECT_EQ(output->assignments.size(), static_cast<size_t>(kUsers));
      if (!outputs->empty()) {
        ExpectSameModel(outputs->front().model, output->model);
        ExpectSameAssignments(outputs->front().assignments, output->assignments);
        ASSERT_EQ(output->model.tree_size(), outputs->front().model.tree_size());
        for (int id = 0; id < output->model.tree_size(); ++id) {
          const v1::SegmentTreeNode& want = outputs->front().model.tree(id);
          const v1::SegmentTreeNode& got = output->model.tree(id);
          EXPECT_EQ(got.size(), want.size()) << "node " << id;
          EXPECT_EQ(got.weight(), want.weight()) << "node " << id;
          EXPECT_EQ(got.inertia(), want.inertia()) << "node " << id;
          EXPECT_EQ(got.segment(), want.segment()) << "node " << id;
        }
      }
      outputs->push_back(*std::move(output));
    }
  }

  // The inertia of Lloyd iterations after k-means++ seeding with k segments, on the
  // shop on the first cluster.
  static double LloydInertia(int k) {
    absl::StatusOr<JobOutput> output =
        Segment(Client(kOneWorker), (*clusters_)[kOneWorker].shop_id, WithK(k));
    EXPECT_TRUE(output.ok()) << output.status();
    return output.ok() ? output->model.inertia() : 0;
  }

  static TempDir* temp_;
  static std::vector<MatrixCluster>* clusters_;
  static std::string* setup_error_;
};

TempDir* SegmentationMatrixTest::temp_ = nullptr;
std::vector<MatrixCluster>* SegmentationMatrixTest::clusters_ = nullptr;
std::string* SegmentationMatrixTest::setup_error_ = nullptr;

// ---------------------------------------------------------------------------------------
// Determinism over worker processes and OpenMP threads

TEST_F(SegmentationMatrixTest, LloydKMeansPlusPlusSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "kmeans", "kmeans++", ""), false, &outputs);
  ASSERT_FALSE(outputs.empty());
  EXPECT_EQ(outputs[0].model.effective_k(), 5);
}

TEST_F(SegmentationMatrixTest, LloydKMeansParallelSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "kmeans", "kmeans||", ""), false, &outputs);
  ASSERT_FALSE(outputs.empty());
  EXPECT_EQ(outputs[0].model.options().init(), "kmeans||");
  const double lloyd = LloydInertia(5);
  ASSERT_GT(lloyd, 0);
  EXPECT_LE(outputs[0].model.inertia(), 1.02 * lloyd);
}

TEST_F(SegmentationMatrixTest, MiniBatchSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "minibatch", "", ""), false, &outputs);
  ASSERT_FALSE(outputs.empty());
  EXPECT_GT(outputs[0].model.iterations(), 0);
  const double lloyd = LloydInertia(5);
  ASSERT_GT(lloyd, 0);
  EXPECT_LE(outputs[0].model.inertia(), 1.02 * lloyd);
}

TEST_F(SegmentationMatrixTest, CosineSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "kmeans", "", "cosine"), false, &outputs);
  ASSERT_FALSE(outputs.empty());
  const v1::Matrix& centroids = outputs[0].model.centroids();
  const int d = centroids.cols();
  for (int c = 0; c < centroids.rows(); ++c) {
    double sq_norm = 0;
    for (int j = 0; j < d; ++j) sq_norm += std::pow(centroids.values(c * d + j), 2);
    EXPECT_NEAR(std::sqrt(sq_norm), 1.0, 1e-5) << "centroid " << c;
  }
}

TEST_F(SegmentationMatrixTest, WeightedSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "kmeans", "", ""), true, &outputs);
}

TEST_F(SegmentationMatrixTest, BisectingSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "bisecting", "", ""), false, &outputs);
  ASSERT_FALSE(outputs.empty());
  EXPECT_EQ(outputs[0].model.tree_size(), 9);
}

TEST_F(SegmentationMatrixTest, WeightedBisectingSameEverywhere) {
  std::vector<JobOutput> outputs;
  ExpectSameOnEveryCluster(Options(5, "bisecting", "", ""), true, &outputs);
  ASSERT_FALSE(outputs.empty());
  const v1::SegmentModel& model = outputs[0].model;
  ASSERT_GT(model.tree_size(), 0);
  // Σ kRowWeights over each group of five rows is 6.5.
  EXPECT_EQ(model.tree(0).size(), kUsers);
  EXPECT_EQ(model.tree(0).weight(), 6.5 * kUsers / 5);
}

// ---------------------------------------------------------------------------------------
// Edge inputs

// Variants of the edge-input tests, by name.
std::vector<std::pair<std::string, v1::SegmentationOptions>> EdgeVariants(int k) {
  return {{"kmeans++", Options(k, "kmeans", "kmeans++", "")},
          {"kmeans||", Options(k, "kmeans", "kmeans||", "")},
          {"minibatch", Options(k, "minibatch", "", "")},
          {"bisecting", Options(k, "bisecting", "", "")}};
}

TEST_F(SegmentationMatrixTest, KEqualToUserCountGivesOneUserPerSegment) {
  constexpr int kDistinct = 12;
  std::string csv = "id,x,y\n";
  for (int i = 0; i < kDistinct; ++i) absl::StrAppend(&csv, "u", i, ",", i, ",", (i * i) % 7, "\n");
  TestCluster& cluster = Client(kFourWorkers);
  absl::StatusOr<v1::Dataset> dataset =
      cluster.LoadUsers(temp_->WriteFile("k_equals_n.csv", csv), "id", {}, kShards);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const auto& [name, options] : EdgeVariants(kDistinct)) {
    SCOPED_TRACE(name);
    absl::StatusOr<JobOutput> output = Segment(cluster, dataset->dataset_id(), options);
    ASSERT_TRUE(output.ok()) << output.status();
    EXPECT_EQ(output->model.effective_k(), kDistinct);
    EXPECT_FALSE(output->model.fewer_distinct_points());
    EXPECT_EQ(output->model.inertia(), 0);
    for (const v1::Segment& segment : output->model.segments()) {
      EXPECT_EQ(segment.size(), 1) << "segment " << segment.index();
    }
    std::set<int> segments;
    for (const v1::Assignment& assignment : output->assignments) {
      segments.insert(assignment.segment());
      EXPECT_NEAR(assignment.squared_distance(), 0, 1e-5) << "user " << assignment.user_id();
    }
    EXPECT_EQ(segments.size(), static_cast<size_t>(kDistinct));
  }
  // One more segment than users is rejected before the job starts.
  absl::StatusOr<v1::Job> too_many =
      cluster.StartSegmentation(dataset->dataset_id(), WithK(kDistinct + 1));
  EXPECT_TRUE(HasError(too_many.status(), absl::StatusCode::kInvalidArgument,
                       {"options.k = 13", "exceeds the 12 users"}));
}

TEST_F(SegmentationMatrixTest, IdenticalRowsGiveFewerDistinctPoints) {
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&csv, "u", i, ",3.5,-2\n");
  TestCluster& cluster = Client(kFourWorkers);
  absl::StatusOr<v1::Dataset> dataset =
      cluster.LoadUsers(temp_->WriteFile("identical.csv", csv), "id", {}, kShards);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const auto& [name, options] : EdgeVariants(3)) {
    SCOPED_TRACE(name);
    absl::StatusOr<JobOutput> output = Segment(cluster, dataset->dataset_id(), options);
    ASSERT_TRUE(output.ok()) << output.status();
    const v1::SegmentModel& model = output->model;
    EXPECT_EQ(model.requested_k(), 3);
    EXPECT_EQ(model.effective_k(), 1);
    ASSERT_EQ(model.segments_size(), 1);
    EXPECT_EQ(model.segments(0).size(), 20);
    EXPECT_EQ(model.inertia(), 0);
    if (name == "bisecting") {
      EXPECT_TRUE(absl::StrContains(model.stop_reason(), "all identical: 1"))
          << model.stop_reason();
    } else {
      EXPECT_TRUE(model.fewer_distinct_points());
    }
  }
  // Standardized, every row is all zero, so the cosine distance has no row to seed with.
  absl::StatusOr<JobOutput> cosine =
      Segment(cluster, dataset->dataset_id(), Options(3, "kmeans", "", "cosine"));
  EXPECT_TRUE(HasError(cosine.status(), absl::StatusCode::kFailedPrecondition,
                       {"all zero under the cosine distance"}));
}

TEST_F(SegmentationMatrixTest, EmptyShardsAndShardlessWorkerKeepResult) {
  // 8 shards over worker-0..3. Users go only to shards that worker-3 does not host, and
  // never to shard `empty`, so worker-3 holds only empty shards and one more is empty.
  constexpr int kEightShards = 8;
  const std::vector<int> owners =
      PlaceShards(kEightShards, {"worker-0", "worker-1", "worker-2", "worker-3"});
  std::set<int> excluded;
  for (int shard = 0; shard < kEightShards; ++shard) {
    if (owners[shard] == 3) excluded.insert(shard);
  }
  ASSERT_FALSE(excluded.empty()) << "worker-3 hosts no shard of 8; choose another count";
  for (int shard = 0; shard < kEightShards; ++shard) {
    if (excluded.count(shard) == 0) {
      excluded.insert(shard);
      break;
    }
  }
  std::string csv = "id,x,y\n";
  int users = 0;
  for (int i = 0; users < 300; ++i) {
    const std::string id = absl::StrCat("user-", i);
    if (excluded.count(ShardOfUser(id, kEightShards)) > 0) continue;
    absl::StrAppend(&csv, id, ",", (i * 37) % 101, ",", (i * 53) % 97, "\n");
    ++users;
  }
  const std::string path = temp_->WriteFile("empty_shards.csv", csv);
  std::vector<JobOutput> outputs;
  for (int index : {kOneWorker, kFourWorkers}) {
    SCOPED_TRACE(absl::StrCat("cluster ", index));
    absl::StatusOr<v1::Dataset> dataset = Client(index).LoadUsers(path, "id", {}, kEightShards);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    for (const auto& [name, options] : EdgeVariants(4)) {
      SCOPED_TRACE(name);
      absl::StatusOr<JobOutput> output = Segment(Client(index), dataset->dataset_id(), options);
      ASSERT_TRUE(output.ok()) << output.status();
      outputs.push_back(*std::move(output));
    }
  }
  const size_t variants = outputs.size() / 2;
  for (size_t v = 0; v < variants; ++v) {
    SCOPED_TRACE(absl::StrCat("variant ", v));
    ExpectSameModel(outputs[v].model, outputs[variants + v].model);
    ExpectSameAssignments(outputs[v].assignments, outputs[variants + v].assignments);
  }
}

TEST_F(SegmentationMatrixTest, AllWeightsZeroFailPrecondition) {
  std::string csv = "id,x,y,w\n";
  for (int i = 0; i < 30; ++i) absl::StrAppend(&csv, "u", i, ",", i % 7, ",", i % 5, ",0\n");
  TestCluster& cluster = Client(kFourWorkers);
  absl::StatusOr<v1::Dataset> dataset =
      cluster.LoadUsers(temp_->WriteFile("zero_weights.csv", csv), "id", {}, kShards, "w");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  for (const auto& [name, options] : EdgeVariants(3)) {
    SCOPED_TRACE(name);
    absl::StatusOr<JobOutput> output = Segment(cluster, dataset->dataset_id(), options);
    EXPECT_TRUE(HasError(output.status(), absl::StatusCode::kFailedPrecondition,
                         {"every row has sample weight 0"}));
  }
}

// Users symmetric around (0, 0) plus one user at (0, 0), whose standardized features
// are all zero, so the cosine distance has no direction for it.
std::string SymmetricUsersCsv(bool with_center) {
  std::string csv = "id,x,y\n";
  for (int i = 1; i <= 40; ++i) {
    const int x = (i * 7) % 11 + 1;
    const int y = (i * 5) % 13 - 6;
    absl::StrAppend(&csv, "p", i, ",", x, ",", y, "\n");
    absl::StrAppend(&csv, "n", i, ",", -x, ",", -y, "\n");
  }
  if (with_center) absl::StrAppend(&csv, "center,0,0\n");
  return csv;
}

TEST_F(SegmentationMatrixTest, CosineZeroRowFollowsDocumentedRule) {
  TestCluster& cluster = Client(kFourWorkers);
  absl::StatusOr<v1::Dataset> with_center = cluster.LoadUsers(
      temp_->WriteFile("with_center.csv", SymmetricUsersCsv(true)), "id", {}, kShards);
  ASSERT_TRUE(with_center.ok()) << with_center.status();
  absl::StatusOr<v1::Dataset> without_center = cluster.LoadUsers(
      temp_->WriteFile("without_center.csv", SymmetricUsersCsv(false)), "id", {}, kShards);
  ASSERT_TRUE(without_center.ok()) << without_center.status();
  const v1::SegmentationOptions options = Options(3, "kmeans", "", "cosine");
  absl::StatusOr<JobOutput> trained = Segment(cluster, with_center->dataset_id(), options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  absl::StatusOr<JobOutput> reference = Segment(cluster, without_center->dataset_id(), options);
  ASSERT_TRUE(reference.ok()) << reference.status();

  // Training: the zero row goes to segment 0 at cosine distance 1 and has weight 0, so
  // the centroids equal those of the data without it. Standardization differs between
  // the two datasets only by one factor for every column, which unit rows do not see.
  const std::map<std::string, v1::Assignment> exported = ByUser(trained->assignments);
  ASSERT_EQ(exported.count("center"), 1u);
  EXPECT_EQ(exported.at("center").segment(), 0);
  EXPECT_EQ(exported.at("center").squared_distance(), 1.0f);
  const v1::Matrix& got = trained->model.centroids();
  const v1::Matrix& want = reference->model.centroids();
  ASSERT_EQ(got.values_size(), want.values_size());
  for (int i = 0; i < want.values_size(); ++i) {
    EXPECT_NEAR(got.values(i), want.values(i), 1e-5) << "centroid value " << i;
  }

  // Serving applies the same rule.
  absl::StatusOr<v1::AssignSegmentResponse> served =
      cluster.AssignSegment(trained->model.model_id(), {{"x", "0"}, {"y", "0"}});
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->segment(), 0);
  EXPECT_EQ(served->squared_distance(), 1.0);
  ASSERT_EQ(served->squared_distances_size(), 3);
  for (double distance : served->squared_distances()) EXPECT_EQ(distance, 1.0);
}

}  // namespace
}  // namespace cohort::testing
