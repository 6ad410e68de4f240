#include "core/bisecting.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/core/random_data.h"

namespace cohort {
namespace {

using ::cohort::testing::Normal;
using ::cohort::testing::Uniform;

struct Blobs {
  MatrixXfR x;
  std::vector<int> truth;  // blob of each row
};

// sizes[b] rows around means.row(b) with per-blob noise sigmas[b], rows shuffled. When
// `grid` is set, values are rounded to multiples of 1/256, so every double sum of them is
// exact and the order in which shards merge sums cannot change a bit.
Blobs MakeBlobs(const MatrixXfR& means, const std::vector<int>& sizes,
                const std::vector<double>& sigmas, uint64_t seed, bool grid) {
  std::mt19937_64 engine(seed);
  std::vector<int> order;
  for (size_t b = 0; b < sizes.size(); ++b) order.insert(order.end(), sizes[b], static_cast<int>(b));
  const int64_t n = static_cast<int64_t>(order.size());
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(order[i], order[static_cast<int64_t>(Uniform(engine) * (i + 1))]);
  }
  Blobs blobs;
  blobs.x.resize(n, means.cols());
  blobs.truth = order;
  for (int64_t i = 0; i < n; ++i) {
    const int blob = order[i];
    for (int64_t j = 0; j < means.cols(); ++j) {
      double v = means(blob, j) + sigmas[blob] * Normal(engine);
      if (grid) v = std::round(v * 256) / 256;
      blobs.x(i, j) = static_cast<float>(v);
    }
  }
  return blobs;
}

Blobs MakeEqualBlobs(const MatrixXfR& means, int per_blob, double sigma, uint64_t seed,
                     bool grid) {
  const std::vector<int> sizes(means.rows(), per_blob);
  const std::vector<double> sigmas(means.rows(), sigma);
  return MakeBlobs(means, sizes, sigmas, seed, grid);
}

// x split into `num_shards` contiguous row ranges (shard s gets rows
// [s·n/S, (s+1)·n/S)), so walking the shards in order visits the rows in their global
// order, as a single shard does.
class ShardedData {
 public:
  // `weights` (one per row of x) may be empty: every row then has weight 1.
  ShardedData(const MatrixXfR& x, int num_shards, const std::vector<float>& weights = {}) {
    const int64_t n = x.rows();
    std::vector<BisectingShard*> pointers;
    for (int s = 0; s < num_shards; ++s) {
      const int64_t begin = n * s / num_shards;
      const int64_t end = n * (s + 1) / num_shards;
      parts_.push_back(std::make_unique<MatrixXfR>(x.middleRows(begin, end - begin)));
      weight_parts_.push_back(std::make_unique<std::vector<float>>());
      if (!weights.empty()) {
        weight_parts_.back()->assign(weights.begin() + begin, weights.begin() + end);
      }
      shards_.push_back(std::make_unique<BisectingShard>(
          s, parts_.back().get(), weights.empty() ? nullptr : weight_parts_.back().get()));
      pointers.push_back(shards_.back().get());
    }
    backend_ = std::make_unique<InProcessBisectingBackend>(pointers);
  }

  InProcessBisectingBackend& backend() { return *backend_; }

  // Tree node of every row, in global row order.
  std::vector<int32_t> Nodes() const {
    std::vector<int32_t> all;
    for (const auto& shard : shards_) {
      all.insert(all.end(), shard->nodes().begin(), shard->nodes().end());
    }
    return all;
  }

 private:
  std::vector<std::unique_ptr<MatrixXfR>> parts_;
  std::vector<std::unique_ptr<std::vector<float>>> weight_parts_;
  std::vector<std::unique_ptr<BisectingShard>> shards_;
  std::unique_ptr<InProcessBisectingBackend> backend_;
};

BisectingResult RunOrDie(ShardedData& data, const BisectingOptions& options) {
  absl::StatusOr<BisectingResult> result = RunBisectingKMeans(data.backend(), options, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : BisectingResult{};
}

// Segment of every row, from the node each shard has recorded for it.
std::vector<int> RowSegments(const ShardedData& data, const BisectingResult& result) {
  std::vector<int> segments;
  for (int32_t node : data.Nodes()) segments.push_back(result.nodes[node].segment);
  return segments;
}

void ExpectIdenticalTrees(const BisectingResult& a, const BisectingResult& b,
                          const std::string& what) {
  ASSERT_EQ(a.nodes.size(), b.nodes.size()) << what;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const BisectingNode& x = a.nodes[i];
    const BisectingNode& y = b.nodes[i];
    EXPECT_EQ(x.parent, y.parent) << what << ", node " << i;
    EXPECT_EQ(x.left, y.left) << what << ", node " << i;
    EXPECT_EQ(x.right, y.right) << what << ", node " << i;
    EXPECT_EQ(x.size, y.size) << what << ", node " << i;
    EXPECT_EQ(x.inertia, y.inertia) << what << ", node " << i;
    EXPECT_EQ(x.mean, y.mean) << what << ", node " << i;
    EXPECT_EQ(x.split_centroids, y.split_centroids) << what << ", node " << i;
    EXPECT_EQ(x.segment, y.segment) << what << ", node " << i;
  }
  EXPECT_EQ(a.leaves, b.leaves) << what;
  EXPECT_EQ(a.leaf_means, b.leaf_means) << what;
  EXPECT_EQ(a.leaf_sizes, b.leaf_sizes) << what;
  EXPECT_EQ(a.inertia, b.inertia) << what;
  EXPECT_EQ(a.stop_reason, b.stop_reason) << what;
}

MatrixXfR FourCorners() {
  MatrixXfR means(4, 3);
  means << 0, 0, 0,
           40, 0, 0,
           0, 40, 0,
           0, 0, 40;
  return means;
}

TEST(BisectingKMeansTest, RecoversFourBlobs) {
  const Blobs blobs = MakeEqualBlobs(FourCorners(), 150, 1.0, 1, /*grid=*/false);
  ShardedData data(blobs.x, 3);
  BisectingOptions options;
  options.k = 4;
  const BisectingResult result = RunOrDie(data, options);

  EXPECT_EQ(result.requested_k, 4);
  EXPECT_EQ(result.leaves, 4);
  EXPECT_TRUE(result.stop_reason.empty()) << result.stop_reason;
  EXPECT_EQ(result.leaf_sizes, (std::vector<int64_t>{150, 150, 150, 150}));

  // Segments equal the true blobs up to a permutation.
  const std::vector<int> segments = RowSegments(data, result);
  std::map<int, int> blob_to_segment;
  std::set<int> used;
  for (size_t i = 0; i < segments.size(); ++i) {
    ASSERT_GE(segments[i], 0) << "row " << i << " is in an inner node";
    auto [it, inserted] = blob_to_segment.emplace(blobs.truth[i], segments[i]);
    ASSERT_EQ(it->second, segments[i]) << "row " << i << " of blob " << blobs.truth[i];
    if (inserted) used.insert(segments[i]);
  }
  EXPECT_EQ(used.size(), 4u);

  // Each leaf mean is its blob's mean, within the noise.
  const MatrixXfR means = FourCorners();
  for (const auto& [blob, segment] : blob_to_segment) {
    const float distance = (result.leaf_means.row(segment) - means.row(blob)).norm();
    EXPECT_LT(distance, 0.5f) << "blob " << blob << ", segment " << segment;
  }
}

TEST(BisectingKMeansTest, TreeStructureIsConsistent) {
  MatrixXfR means(6, 2);
  means << 0, 0, 10, 0, 20, 5, 0, 15, 12, 18, 25, 25;
  const Blobs blobs = MakeEqualBlobs(means, 80, 2.0, 3, /*grid=*/false);
  ShardedData data(blobs.x, 2);
  BisectingOptions options;
  options.k = 6;
  const BisectingResult result = RunOrDie(data, options);
  const int64_t n = blobs.x.rows();

  ASSERT_EQ(result.leaves, 6);
  ASSERT_EQ(result.nodes.size(), 11u);  // a full binary tree with 6 leaves
  const BisectingNode& root = result.nodes[0];
  EXPECT_EQ(root.parent, -1);
  EXPECT_EQ(root.depth, 0);
  EXPECT_EQ(root.size, n);

  int leaves = 0;
  int next_segment = 0;
  double leaf_inertia = 0;
  for (size_t i = 0; i < result.nodes.size(); ++i) {
    const BisectingNode& node = result.nodes[i];
    EXPECT_EQ(node.id, static_cast<int>(i));
    EXPECT_EQ(node.mean.size(), 2u) << "node " << i;
    if (i > 0) {
      ASSERT_GE(node.parent, 0) << "node " << i;
      ASSERT_LT(node.parent, static_cast<int>(i)) << "node " << i;
      const BisectingNode& parent = result.nodes[node.parent];
      EXPECT_TRUE(parent.left == node.id || parent.right == node.id) << "node " << i;
      EXPECT_EQ(node.depth, parent.depth + 1) << "node " << i;
    }
    if (node.left < 0) {
      EXPECT_EQ(node.right, -1) << "node " << i;
      EXPECT_EQ(node.segment, next_segment) << "leaves are numbered in id order, node " << i;
      EXPECT_EQ(node.split_centroids.size(), 0) << "node " << i;
      ++next_segment;
      ++leaves;
      leaf_inertia += node.inertia;
      continue;
    }
    EXPECT_EQ(node.segment, -1) << "node " << i;
    EXPECT_EQ(node.right, node.left + 1) << "node " << i;
    EXPECT_EQ(node.split_centroids.rows(), 2) << "node " << i;
    EXPECT_EQ(node.split_centroids.cols(), 2) << "node " << i;
    const BisectingNode& left = result.nodes[node.left];
    const BisectingNode& right = result.nodes[node.right];
    EXPECT_EQ(left.size + right.size, node.size) << "node " << i;
    EXPECT_GT(left.size, 0) << "node " << i;
    EXPECT_GT(right.size, 0) << "node " << i;
    // Splitting never raises the within-node inertia.
    EXPECT_LE(left.inertia + right.inertia, node.inertia * (1 + 1e-9)) << "node " << i;
    for (int j = 0; j < 2; ++j) {
      const double merged_mean =
          (left.size * static_cast<double>(left.mean[j]) +
           right.size * static_cast<double>(right.mean[j])) / node.size;
      EXPECT_NEAR(merged_mean, node.mean[j], 1e-4) << "node " << i << ", feature " << j;
    }
  }
  EXPECT_EQ(leaves, 6);

  // Leaf tables follow the segment order.
  int64_t total = 0;
  for (int64_t size : result.leaf_sizes) total += size;
  EXPECT_EQ(total, n);
  EXPECT_DOUBLE_EQ(result.inertia, leaf_inertia);
  for (const BisectingNode& node : result.nodes) {
    if (node.segment < 0) continue;
    EXPECT_EQ(result.leaf_sizes[node.segment], node.size);
    EXPECT_EQ(result.leaf_means(node.segment, 0), node.mean[0]);
    EXPECT_EQ(result.leaf_means(node.segment, 1), node.mean[1]);
  }

  // Every row sits in a leaf, and the leaf sizes count them.
  std::vector<int64_t> counted(6, 0);
  for (int segment : RowSegments(data, result)) {
    ASSERT_GE(segment, 0);
    ++counted[segment];
  }
  EXPECT_EQ(counted, result.leaf_sizes);
}

TEST(BisectingKMeansTest, RootStatsMatchData) {
  MatrixXfR x(4, 2);
  x << 0, 0, 2, 0, 0, 4, 2, 4;
  ShardedData data(x, 2);
  BisectingOptions options;
  options.k = 1;
  const BisectingResult result = RunOrDie(data, options);
  ASSERT_EQ(result.nodes.size(), 1u);
  EXPECT_EQ(result.nodes[0].size, 4);
  EXPECT_EQ(result.nodes[0].mean, (std::vector<float>{1, 2}));
  // Σ ‖x − (1, 2)‖² = 4 × (1 + 4).
  EXPECT_DOUBLE_EQ(result.nodes[0].inertia, 20.0);
  EXPECT_EQ(result.leaves, 1);
  EXPECT_TRUE(result.stop_reason.empty());
}

// Two groups: 300 rows in two tight sub-blobs near the origin (small inertia) and 100
// rows in two sub-blobs far apart (large inertia). The first split separates the groups.
Blobs LargeTightAndSmallWideGroups() {
  MatrixXfR means(4, 2);
  means << -0.5, 0, 0.5, 0, 100, 0, 120, 0;
  return MakeBlobs(means, {150, 150, 50, 50}, {0.05, 0.05, 0.5, 0.5}, 5, /*grid=*/false);
}

// The size of the leaf that the second split divided.
int64_t SecondSplitSize(const BisectingResult& result) {
  for (const BisectingNode& node : result.nodes) {
    if (node.id != 0 && node.left >= 0) return node.size;
  }
  return -1;
}

TEST(BisectingKMeansTest, LargestRuleSplitsMostRows) {
  const Blobs blobs = LargeTightAndSmallWideGroups();
  ShardedData data(blobs.x, 1);
  BisectingOptions options;
  options.k = 3;
  options.split_rule = SplitRule::kLargest;
  const BisectingResult result = RunOrDie(data, options);
  ASSERT_EQ(result.leaves, 3);
  const BisectingNode& root = result.nodes[0];
  ASSERT_EQ(std::set<int64_t>({result.nodes[root.left].size, result.nodes[root.right].size}),
            std::set<int64_t>({300, 100}));
  EXPECT_EQ(SecondSplitSize(result), 300);
}

TEST(BisectingKMeansTest, HighestInertiaRuleSplitsWidestLeaf) {
  const Blobs blobs = LargeTightAndSmallWideGroups();
  ShardedData data(blobs.x, 1);
  BisectingOptions options;
  options.k = 3;
  options.split_rule = SplitRule::kHighestInertia;
  const BisectingResult result = RunOrDie(data, options);
  ASSERT_EQ(result.leaves, 3);
  const BisectingNode& root = result.nodes[0];
  const BisectingNode& left = result.nodes[root.left];
  const BisectingNode& right = result.nodes[root.right];
  ASSERT_EQ(std::set<int64_t>({left.size, right.size}), std::set<int64_t>({300, 100}));
  const BisectingNode& small = left.size == 100 ? left : right;
  const BisectingNode& large = left.size == 100 ? right : left;
  EXPECT_GT(small.inertia, large.inertia);
  EXPECT_EQ(SecondSplitSize(result), 100);
}

TEST(BisectingKMeansTest, MinDivisibleSizeStopsSplitting) {
  // Corners of a wide rectangle: the first split cuts along x into 100 + 100 rows, the
  // next two along y into leaves of 50, which are below min_divisible_size.
  MatrixXfR means(4, 2);
  means << 0, 0, 0, 10, 100, 0, 100, 10;
  const Blobs blobs = MakeEqualBlobs(means, 50, 0.5, 6, /*grid=*/false);
  ShardedData data(blobs.x, 2);
  BisectingOptions options;
  options.k = 8;
  options.min_divisible_size = 60;
  const BisectingResult result = RunOrDie(data, options);

  EXPECT_EQ(result.requested_k, 8);
  EXPECT_EQ(result.leaves, 4);
  EXPECT_EQ(result.leaf_sizes, (std::vector<int64_t>{50, 50, 50, 50}));
  EXPECT_NE(result.stop_reason.find("stopped at 4 of 8 requested leaves"), std::string::npos)
      << result.stop_reason;
  EXPECT_NE(result.stop_reason.find("is below min_divisible_size = 60: 4"),
            std::string::npos)
      << result.stop_reason;
}

TEST(BisectingKMeansTest, IdenticalRowsGiveOneLeaf) {
  const MatrixXfR x = MatrixXfR::Constant(40, 3, 1.5f);
  ShardedData data(x, 3);
  BisectingOptions options;
  options.k = 5;
  const BisectingResult result = RunOrDie(data, options);

  EXPECT_EQ(result.leaves, 1);
  ASSERT_EQ(result.nodes.size(), 1u);
  EXPECT_EQ(result.nodes[0].segment, 0);
  EXPECT_EQ(result.nodes[0].inertia, 0.0);
  EXPECT_EQ(result.leaf_sizes, std::vector<int64_t>{40});
  EXPECT_EQ(result.leaf_means, MatrixXfR::Constant(1, 3, 1.5f));
  EXPECT_NE(result.stop_reason.find("leaves whose rows are all identical: 1"), std::string::npos)
      << result.stop_reason;
}

TEST(BisectingKMeansTest, IdenticalLeafIsSkippedForOthers) {
  // 30 copies of one point and a spread-out group of 10: the copies form the largest
  // leaf after the first split, cannot be split, and the other leaf is split instead.
  MatrixXfR x(40, 1);
  for (int i = 0; i < 30; ++i) x(i, 0) = 0;
  for (int i = 0; i < 10; ++i) x(30 + i, 0) = 100 + (i < 5 ? 0.0f : 20.0f) + 0.1f * i;
  ShardedData data(x, 2);
  BisectingOptions options;
  options.k = 3;
  const BisectingResult result = RunOrDie(data, options);
  EXPECT_EQ(result.leaves, 3);
  EXPECT_TRUE(result.stop_reason.empty()) << result.stop_reason;
  std::multiset<int64_t> sizes(result.leaf_sizes.begin(), result.leaf_sizes.end());
  EXPECT_EQ(sizes, (std::multiset<int64_t>{30, 5, 5}));
}

TEST(BisectingKMeansTest, ShardCountDoesNotChangeTree) {
  MatrixXfR means(5, 4);
  means << 0, 0, 0, 0, 6, 1, 0, 2, -3, 5, 2, 0, 2, -4, 4, 1, 5, 5, -5, 3;
  const Blobs blobs = MakeEqualBlobs(means, 200, 1.5, 7, /*grid=*/true);
  BisectingOptions options;
  options.k = 7;
  options.split.seed = 13;
  ShardedData one_shard(blobs.x, 1);
  ShardedData three_shards(blobs.x, 3);
  const BisectingResult from_one_shard = RunOrDie(one_shard, options);
  const BisectingResult from_three_shards = RunOrDie(three_shards, options);
  EXPECT_EQ(from_one_shard.leaves, 7);
  ExpectIdenticalTrees(from_one_shard, from_three_shards, "1 vs 3 shards");
  EXPECT_EQ(one_shard.Nodes(), three_shards.Nodes());
}

TEST(BisectingKMeansTest, ThreadCountDoesNotChangeTree) {
  // Off-grid values and more rows than kParallelMinRows, so the kernels run in parallel.
  MatrixXfR means(6, 8);
  std::mt19937_64 engine(8);
  for (int64_t i = 0; i < means.size(); ++i) {
    means.data()[i] = static_cast<float>(8 * Uniform(engine) - 4);
  }
  const Blobs blobs = MakeEqualBlobs(means, 1000, 1.5, 9, /*grid=*/false);
  ASSERT_GT(blobs.x.rows(), kParallelMinRows);
  BisectingOptions options;
  options.k = 6;
  options.split_rule = SplitRule::kHighestInertia;

  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  ShardedData serial(blobs.x, 1);
  const BisectingResult one_thread = RunOrDie(serial, options);
  omp_set_num_threads(2);
  ShardedData parallel(blobs.x, 1);
  const BisectingResult two_threads = RunOrDie(parallel, options);
  omp_set_num_threads(saved_threads);

  EXPECT_EQ(one_thread.leaves, 6);
  ExpectIdenticalTrees(one_thread, two_threads, "1 vs 2 threads");
  EXPECT_EQ(serial.Nodes(), parallel.Nodes());
}

TEST(BisectingKMeansTest, SameSeedSameTree) {
  const Blobs blobs = MakeEqualBlobs(FourCorners(), 60, 8.0, 10, /*grid=*/false);
  BisectingOptions options;
  options.k = 5;
  ShardedData first(blobs.x, 2);
  ShardedData second(blobs.x, 2);
  ExpectIdenticalTrees(RunOrDie(first, options), RunOrDie(second, options), "same seed");
}

TEST(BisectingKMeansTest, RouteToLeafMatchesTrainingLeaf) {
  MatrixXfR means(5, 3);
  means << 0, 0, 0, 3, 0, 0, 0, 3, 0, 3, 3, 0, 1.5, 1.5, 3;
  // Overlapping blobs, so many rows lie near a split boundary.
  const Blobs blobs = MakeEqualBlobs(means, 200, 1.2, 11, /*grid=*/false);
  ShardedData data(blobs.x, 3);
  BisectingOptions options;
  options.k = 8;
  const BisectingResult result = RunOrDie(data, options);
  ASSERT_EQ(result.leaves, 8);

  const std::vector<int> segments = RowSegments(data, result);
  for (int64_t i = 0; i < blobs.x.rows(); ++i) {
    ASSERT_EQ(RouteToLeaf(result.nodes, blobs.x.data() + i * blobs.x.cols()), segments[i])
        << "row " << i;
  }
}

TEST(BisectingKMeansTest, RouteToLeafSendsTiesLeft) {
  std::vector<BisectingNode> nodes(3);
  nodes[0].left = 1;
  nodes[0].right = 2;
  nodes[0].split_centroids.resize(2, 1);
  nodes[0].split_centroids << -1, 1;
  nodes[1].id = 1;
  nodes[1].segment = 0;
  nodes[2].id = 2;
  nodes[2].segment = 1;
  const float middle = 0;
  const float right = 0.5f;
  const float left = -0.5f;
  EXPECT_EQ(RouteToLeaf(nodes, &middle), 0);
  EXPECT_EQ(RouteToLeaf(nodes, &right), 1);
  EXPECT_EQ(RouteToLeaf(nodes, &left), 0);
}

TEST(BisectingKMeansTest, ReportsProgressPerSplit) {
  const Blobs blobs = MakeEqualBlobs(FourCorners(), 50, 1.0, 12, /*grid=*/false);
  ShardedData data(blobs.x, 2);
  BisectingOptions options;
  options.k = 4;
  std::vector<BisectingProgress> events;
  absl::StatusOr<BisectingResult> result = RunBisectingKMeans(
      data.backend(), options, [&events](const BisectingProgress& e) { events.push_back(e); });
  ASSERT_TRUE(result.ok()) << result.status();

  // One "final" event per split, with the leaf count before that split.
  std::vector<int> final_leaves;
  std::vector<int> final_nodes;
  for (const BisectingProgress& event : events) {
    if (event.split.phase == "final") {
      final_leaves.push_back(event.leaves);
      final_nodes.push_back(event.splitting_node);
    }
  }
  EXPECT_EQ(final_leaves, (std::vector<int>{1, 2, 3}));
  ASSERT_EQ(final_nodes.size(), 3u);
  EXPECT_EQ(final_nodes[0], 0);
  for (int node : final_nodes) EXPECT_GE(result->nodes[node].left, 0) << "node " << node;
}

// Delegates to an InProcessBisectingBackend but gives Split two equal centroids, so every
// row ties and goes left, leaving the right child empty.
class EqualCentroidsBackend final : public BisectingBackend {
 public:
  explicit EqualCentroidsBackend(BisectingBackend* inner) : inner_(inner) {}
  int dim() const override { return inner_->dim(); }
  absl::StatusOr<std::vector<ShardMoments>> Moments() override { return inner_->Moments(); }
  absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers,
                                                   bool reset) override {
    return inner_->AddCenters(centers, reset);
  }
  absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) override {
    return inner_->TrialPotentials(candidates);
  }
  absl::StatusOr<std::vector<ShardPoint>> Pick(const std::vector<ShardOffset>& offsets) override {
    return inner_->Pick(offsets);
  }
  absl::StatusOr<std::vector<LloydPartial>> LloydStep(const MatrixXfR& centroids,
                                                      int num_farthest) override {
    return inner_->LloydStep(centroids, num_farthest);
  }
  absl::StatusOr<std::vector<ShardSum>> Focus(int node) override { return inner_->Focus(node); }
  absl::StatusOr<std::vector<ShardAggregates>> Split(int node, const MatrixXfR& centroids,
                                                     int left, int right) override {
    MatrixXfR same = centroids;
    same.row(1) = same.row(0);
    return inner_->Split(node, same, left, right);
  }

 private:
  BisectingBackend* inner_;
};

TEST(BisectingKMeansTest, EmptyChildKeepsNodeALeaf) {
  const Blobs blobs = MakeEqualBlobs(FourCorners(), 20, 1.0, 14, /*grid=*/false);
  ShardedData data(blobs.x, 2);
  EqualCentroidsBackend backend(&data.backend());
  BisectingOptions options;
  options.k = 3;
  absl::StatusOr<BisectingResult> result = RunBisectingKMeans(backend, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->leaves, 1);
  ASSERT_EQ(result->nodes.size(), 1u);
  EXPECT_EQ(result->leaf_sizes, std::vector<int64_t>{80});
  EXPECT_NE(result->stop_reason.find("leaves whose 2-means split left a child empty: 1"),
            std::string::npos)
      << result->stop_reason;
  // The rows were moved back to the root.
  for (int32_t node : data.Nodes()) ASSERT_EQ(node, 0);
}

TEST(BisectingShardTest, FocusCopiesNodeRowsInOrder) {
  MatrixXfR x(5, 2);
  x << 0, 1, 10, 11, 2, 3, 12, 13, 4, 5;
  BisectingShard shard(4, &x);
  EXPECT_EQ(shard.shard_id(), 4);
  EXPECT_EQ(shard.nodes(), (std::vector<int32_t>{0, 0, 0, 0, 0}));

  MatrixXfR centroids(2, 2);
  centroids << 2, 3, 11, 12;
  const ClusterAggregates aggregates = shard.Split(0, centroids, 1, 2);
  EXPECT_EQ(shard.nodes(), (std::vector<int32_t>{1, 2, 1, 2, 1}));
  EXPECT_EQ(aggregates.k, 2);
  EXPECT_EQ(aggregates.d, 2);
  EXPECT_EQ(aggregates.counts, (std::vector<int64_t>{3, 2}));
  MatrixXdR sums(2, 2);
  sums << 6, 9, 22, 24;
  EXPECT_EQ(aggregates.sums, sums);
  EXPECT_EQ(aggregates.sq_norm_sums, (std::vector<double>{0 + 1 + 4 + 9 + 16 + 25,
                                                          100 + 121 + 144 + 169}));

  EXPECT_EQ(shard.Focus(2), 2);
  ASSERT_EQ(shard.focused().num_rows(), 2);
  std::vector<double> sum;
  std::vector<double> sum_sq;
  shard.focused().ColumnMoments(&sum, &sum_sq);
  EXPECT_EQ(sum, (std::vector<double>{22, 24}));

  EXPECT_EQ(shard.Focus(7), 0);
  EXPECT_EQ(shard.focused().num_rows(), 0);
  EXPECT_EQ(shard.focused().dim(), 2);
}

TEST(BisectingShardTest, SplitLeavesOtherNodesAlone) {
  MatrixXfR x(4, 1);
  x << 0, 10, 1, 11;
  BisectingShard shard(0, &x);
  MatrixXfR first(2, 1);
  first << 0, 10;
  (void)shard.Split(0, first, 1, 2);
  ASSERT_EQ(shard.nodes(), (std::vector<int32_t>{1, 2, 1, 2}));

  MatrixXfR second(2, 1);
  second << 9, 12;
  const ClusterAggregates aggregates = shard.Split(2, second, 3, 4);
  EXPECT_EQ(shard.nodes(), (std::vector<int32_t>{1, 3, 1, 4}));
  EXPECT_EQ(aggregates.counts, (std::vector<int64_t>{1, 1}));
}

struct BadOption {
  BisectingOptions options;
  std::string message;
};

TEST(BisectingOptionsTest, ValidateNamesFieldValueAndRange) {
  std::vector<BadOption> cases;
  auto add = [&cases](auto change, std::string message) {
    BisectingOptions options;
    change(options);
    cases.push_back({options, std::move(message)});
  };
  add([](BisectingOptions& o) { o.k = 0; }, "k = 0 is invalid; k must be in [1, 10000]");
  add([](BisectingOptions& o) { o.k = 10001; }, "k = 10001 is invalid; k must be in [1, 10000]");
  add([](BisectingOptions& o) { o.min_divisible_size = 1; },
      "min_divisible_size = 1 is invalid; min_divisible_size must be in [2, 2^62]");
  add([](BisectingOptions& o) { o.min_divisible_size = (int64_t{1} << 62) + 1; },
      "min_divisible_size = 4611686018427387905 is invalid");
  add([](BisectingOptions& o) { o.split.max_iter = 0; }, "split.max_iter = 0 is invalid");
  add([](BisectingOptions& o) { o.split.tol = -1; }, "split.tol = -1 is invalid");
  add([](BisectingOptions& o) { o.split.n_init = 0; }, "split.n_init = 0 is invalid");

  for (const BadOption& c : cases) {
    const absl::Status status = c.options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(status.message().find(c.message), std::string::npos)
        << "got: " << status.message() << "\nexpected: " << c.message;
  }

  BisectingOptions ignored_split_k;
  ignored_split_k.split.k = 0;
  EXPECT_TRUE(ignored_split_k.Validate().ok()) << "split.k is ignored";
  EXPECT_TRUE(BisectingOptions().Validate().ok());
}

TEST(BisectingKMeansTest, InvalidOptionsAreRejected) {
  const MatrixXfR x = MatrixXfR::Ones(10, 2);
  ShardedData data(x, 1);
  BisectingOptions options;
  options.min_divisible_size = 0;
  absl::StatusOr<BisectingResult> result = RunBisectingKMeans(data.backend(), options, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("min_divisible_size"), std::string::npos)
      << result.status();
}

TEST(BisectingKMeansTest, NoRowsIsFailedPrecondition) {
  const MatrixXfR empty(0, 3);
  ShardedData data(empty, 2);
  absl::StatusOr<BisectingResult> result =
      RunBisectingKMeans(data.backend(), BisectingOptions(), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.status().message(), "dataset has no rows");
}

// ---------------------------------------------------------------------------------------
// Sample weights

// Rows on three groups along x (0, 10 and 100, spread ±1 in x and y), so every 2-means
// seeding converges to the same split: first {0, 10} against {100}, then 0 against 10.
// Every third row is "heavy". Values are multiples of 1/4, so double sums are exact in
// any order.
struct WeightCase {
  MatrixXfR x;
  std::vector<float> weights;
};

// kWeighted: heavy rows have weight 2. kDuplicated: every row has weight 1 and heavy rows
// appear twice. kZeroOutlier: as kWeighted plus a row at (1000, 1000) of weight 0.
enum class WeightMode { kWeighted, kDuplicated, kZeroOutlier };

WeightCase MakeWeightCase(WeightMode mode) {
  constexpr double kGroups[] = {0, 10, 100};
  constexpr int kPerGroup = 30;
  std::vector<std::vector<float>> rows;
  std::vector<float> weights;
  for (double center : kGroups) {
    for (int i = 0; i < kPerGroup; ++i) {
      const std::vector<float> row = {static_cast<float>(center + ((i * 7) % 9 - 4) / 4.0),
                                      static_cast<float>(((i * 5) % 9 - 4) / 4.0)};
      const bool heavy = i % 3 == 0;
      rows.push_back(row);
      weights.push_back(heavy && mode != WeightMode::kDuplicated ? 2.0f : 1.0f);
      if (heavy && mode == WeightMode::kDuplicated) {
        rows.push_back(row);
        weights.push_back(1.0f);
      }
    }
  }
  if (mode == WeightMode::kZeroOutlier) {
    rows.push_back({1000.0f, 1000.0f});
    weights.push_back(0.0f);
  }
  WeightCase out;
  out.x.resize(static_cast<int64_t>(rows.size()), 2);
  for (size_t i = 0; i < rows.size(); ++i) {
    out.x(static_cast<int64_t>(i), 0) = rows[i][0];
    out.x(static_cast<int64_t>(i), 1) = rows[i][1];
  }
  out.weights = std::move(weights);
  return out;
}

// Leaves as (weight, mean x, mean y, inertia), sorted, so trees whose children are
// ordered differently compare equal.
std::vector<std::vector<double>> LeafSummaries(const BisectingResult& result) {
  std::vector<std::vector<double>> leaves;
  for (const BisectingNode& node : result.nodes) {
    if (node.left >= 0) continue;
    leaves.push_back({node.mean[0], node.mean[1], node.weight, node.inertia});
  }
  std::sort(leaves.begin(), leaves.end());
  return leaves;
}

void ExpectLeavesNear(const BisectingResult& expected, const BisectingResult& actual) {
  const std::vector<std::vector<double>> want = LeafSummaries(expected);
  const std::vector<std::vector<double>> got = LeafSummaries(actual);
  ASSERT_EQ(got.size(), want.size());
  for (size_t l = 0; l < want.size(); ++l) {
    EXPECT_NEAR(got[l][0], want[l][0], 1e-5) << "leaf " << l << " mean x";
    EXPECT_NEAR(got[l][1], want[l][1], 1e-5) << "leaf " << l << " mean y";
    EXPECT_EQ(got[l][2], want[l][2]) << "leaf " << l << " weight";
    EXPECT_NEAR(got[l][3], want[l][3], 1e-6 * std::max(1.0, want[l][3])) << "leaf " << l
                                                                         << " inertia";
  }
}

BisectingOptions ThreeLeaves() {
  BisectingOptions options;
  options.k = 3;
  return options;
}

TEST(BisectingWeightsTest, WeightTwoActsAsDuplicatedRow) {
  const WeightCase weighted = MakeWeightCase(WeightMode::kWeighted);
  const WeightCase duplicated = MakeWeightCase(WeightMode::kDuplicated);
  ShardedData weighted_data(weighted.x, 3, weighted.weights);
  ShardedData duplicated_data(duplicated.x, 3);
  const BisectingResult a = RunOrDie(weighted_data, ThreeLeaves());
  const BisectingResult b = RunOrDie(duplicated_data, ThreeLeaves());
  ASSERT_EQ(a.leaves, 3);
  ASSERT_EQ(b.leaves, 3);
  ExpectLeavesNear(b, a);
  EXPECT_EQ(a.nodes[0].size, 90);
  EXPECT_EQ(a.nodes[0].weight, 120);
  EXPECT_EQ(b.nodes[0].size, 120);
  EXPECT_NEAR(a.inertia, b.inertia, 1e-6 * b.inertia);
  EXPECT_NEAR(a.nodes[0].inertia, b.nodes[0].inertia, 1e-6 * b.nodes[0].inertia);
}

TEST(BisectingWeightsTest, WeightZeroActsAsDroppedRow) {
  const WeightCase weighted = MakeWeightCase(WeightMode::kWeighted);
  const WeightCase with_zero = MakeWeightCase(WeightMode::kZeroOutlier);
  ShardedData weighted_data(weighted.x, 2, weighted.weights);
  ShardedData zero_data(with_zero.x, 2, with_zero.weights);
  const BisectingResult a = RunOrDie(weighted_data, ThreeLeaves());
  const BisectingResult b = RunOrDie(zero_data, ThreeLeaves());
  ASSERT_EQ(b.leaves, 3);
  // Unweighted, the outlier 1000 away would get a leaf of its own.
  ExpectLeavesNear(a, b);
  EXPECT_EQ(b.nodes[0].size, a.nodes[0].size + 1);
  EXPECT_EQ(b.nodes[0].weight, a.nodes[0].weight);
  EXPECT_NEAR(b.inertia, a.inertia, 1e-6 * a.inertia);
}

TEST(BisectingWeightsTest, WeightedTreeSameOnOneAndFourShards) {
  const WeightCase weighted = MakeWeightCase(WeightMode::kWeighted);
  ShardedData one(weighted.x, 1, weighted.weights);
  ShardedData four(weighted.x, 4, weighted.weights);
  ExpectIdenticalTrees(RunOrDie(one, ThreeLeaves()), RunOrDie(four, ThreeLeaves()),
                       "1 against 4 shards");
}

TEST(BisectingWeightsTest, AllZeroWeightsFailPrecondition) {
  const WeightCase weighted = MakeWeightCase(WeightMode::kWeighted);
  const std::vector<float> zeros(weighted.weights.size(), 0.0f);
  ShardedData data(weighted.x, 2, zeros);
  const absl::StatusOr<BisectingResult> result =
      RunBisectingKMeans(data.backend(), ThreeLeaves(), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_NE(result.status().message().find("every row has sample weight 0"), std::string::npos)
      << result.status();
}

TEST(BisectingWeightsTest, LeafBelowMinDivisibleWeightStays) {
  // 90 rows of weight 0.5 weigh 45, below min_divisible_size = 50.
  const WeightCase weighted = MakeWeightCase(WeightMode::kWeighted);
  const std::vector<float> halves(weighted.weights.size(), 0.5f);
  ShardedData data(weighted.x, 2, halves);
  BisectingOptions options = ThreeLeaves();
  options.min_divisible_size = 50;
  const BisectingResult result = RunOrDie(data, options);
  EXPECT_EQ(result.leaves, 1);
  EXPECT_EQ(result.nodes[0].size, 90);
  EXPECT_EQ(result.nodes[0].weight, 45);
  EXPECT_NE(result.stop_reason.find("is below min_divisible_size = 50: 1"), std::string::npos)
      << result.stop_reason;
}

}  // namespace
}  // namespace cohort
