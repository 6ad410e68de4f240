#include "core/kmeans_kernels.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cohort {
namespace {

// Uniform floats in [-scale, scale) from raw generator bits, so the data is the same with
// every standard library.
MatrixXfR RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 engine(seed);
  MatrixXfR m(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const double u = static_cast<double>(engine() >> 11) * 0x1.0p-53;
      m(i, j) = static_cast<float>((2 * u - 1) * scale);
    }
  }
  return m;
}

double ExactSquaredDistance(const MatrixXfR& a, int64_t i, const MatrixXfR& b, int64_t j) {
  double sum = 0;
  for (int64_t c = 0; c < a.cols(); ++c) {
    const double t = static_cast<double>(a(i, c)) - static_cast<double>(b(j, c));
    sum += t * t;
  }
  return sum;
}

struct Assignment {
  std::vector<int32_t> labels;
  std::vector<float> sq_dist;
};

Assignment Assign(const MatrixXfR& x, const MatrixXfR& centroids) {
  Assignment a;
  a.labels.assign(x.rows(), -1);
  a.sq_dist.assign(x.rows(), -1.0f);
  AssignNearest(x, RowSquaredNorms(x), centroids, RowSquaredNorms(centroids), a.labels.data(),
                a.sq_dist.data());
  return a;
}

// Restores the OpenMP thread count that a test changes.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(omp_get_max_threads()) {}
  ~ThreadCountGuard() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(RowSquaredNormsKernelTest, MatchesDoubleLoop) {
  const MatrixXfR x = RandomMatrix(300, 19, 1);
  const Eigen::VectorXf norms = RowSquaredNorms(x);
  ASSERT_EQ(norms.size(), 300);
  for (int64_t i = 0; i < x.rows(); ++i) {
    double expected = 0;
    for (int64_t j = 0; j < x.cols(); ++j) expected += static_cast<double>(x(i, j)) * x(i, j);
    EXPECT_NEAR(norms[i], expected, 1e-5 * expected) << "row " << i;
  }
}

TEST(RowSquaredNormsKernelTest, EmptyMatrixGivesEmptyVector) {
  EXPECT_EQ(RowSquaredNorms(MatrixXfR(0, 4)).size(), 0);
}

struct AssignCase {
  int64_t n, d, k;
};

TEST(AssignNearestKernelTest, MatchesDoubleLoop) {
  const AssignCase cases[] = {{1, 1, 1},    {300, 3, 1},   {257, 5, 7},     {1000, 16, 37},
                              {513, 2, 4},  {5000, 33, 600}, {4097, 64, 256}, {100, 300, 9}};
  uint64_t seed = 10;
  for (const AssignCase& c : cases) {
    const MatrixXfR x = RandomMatrix(c.n, c.d, ++seed);
    const MatrixXfR centroids = RandomMatrix(c.k, c.d, ++seed);
    const Assignment got = Assign(x, centroids);
    for (int64_t i = 0; i < c.n; ++i) {
      ASSERT_GE(got.labels[i], 0) << "n=" << c.n << " d=" << c.d << " k=" << c.k << " row " << i;
      ASSERT_LT(got.labels[i], c.k);
      double best = std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < c.k; ++j) best = std::min(best, ExactSquaredDistance(x, i, centroids, j));
      const double chosen = ExactSquaredDistance(x, i, centroids, got.labels[i]);
      // Float rounding of the norm expansion, relative to the norms involved.
      const double tolerance = 1e-5 * (x.row(i).squaredNorm() + 2.0 * c.d);
      EXPECT_LE(chosen, best + tolerance)
          << "n=" << c.n << " d=" << c.d << " k=" << c.k << " row " << i;
      EXPECT_NEAR(got.sq_dist[i], chosen, tolerance)
          << "n=" << c.n << " d=" << c.d << " k=" << c.k << " row " << i;
    }
  }
}

TEST(AssignNearestKernelTest, TieGoesToLowestIndex) {
  // Small integers, so every product and sum is exact and the ties are real.
  MatrixXfR centroids(4, 2);
  centroids << 1, 0,  //
      -1, 0,          //
      5, 5,           //
      5, 5;
  MatrixXfR x(3, 2);
  x << 0, 0,  // equidistant from centroids 0 and 1
      5, 5,   // on centroids 2 and 3
      0, 7;   // equidistant from 2 and 3 only
  const Assignment got = Assign(x, centroids);
  EXPECT_EQ(got.labels[0], 0);
  EXPECT_EQ(got.sq_dist[0], 1.0f);
  EXPECT_EQ(got.labels[1], 2);
  EXPECT_EQ(got.sq_dist[1], 0.0f);
  EXPECT_EQ(got.labels[2], 2);
}

TEST(AssignNearestKernelTest, TieAcrossCentroidBlocksGoesToLowestIndex) {
  const int64_t k = kAssignBlockCentroids + 3;
  MatrixXfR centroids = MatrixXfR::Constant(k, 3, 9.0f);
  centroids.row(kAssignBlockCentroids - 1) << 1, 1, 1;
  centroids.row(kAssignBlockCentroids + 1) << 1, 1, 1;
  const MatrixXfR x = MatrixXfR::Ones(5, 3);
  const Assignment got = Assign(x, centroids);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(got.labels[i], kAssignBlockCentroids - 1) << "row " << i;
    EXPECT_EQ(got.sq_dist[i], 0.0f) << "row " << i;
  }
}

TEST(AssignNearestKernelTest, TieAcrossVectorLanesGoesToLowestIndex) {
  // k = 45 covers every path of the argmin: chunks of 32 centroids, of 8, and a scalar
  // tail of 5. The nearest centroid (1, 1, 1) sits at indices that fall in different
  // lanes and chunks; the lowest of them must win.
  const int64_t k = 45;
  for (const int64_t lowest : {int64_t{3}, int64_t{12}, int64_t{33}, int64_t{41}}) {
    MatrixXfR centroids = MatrixXfR::Constant(k, 3, 9.0f);
    for (int64_t j = lowest; j < k; j += 7) centroids.row(j) << 1, 1, 1;
    const MatrixXfR x = MatrixXfR::Ones(3, 3);
    const Assignment got = Assign(x, centroids);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(got.labels[i], lowest) << "lowest " << lowest << " row " << i;
      EXPECT_EQ(got.sq_dist[i], 0.0f) << "lowest " << lowest << " row " << i;
    }
  }
}

TEST(AssignNearestKernelTest, NegativeRoundingIsClampedToZero) {
  // Large norms and a row equal to its centroid: the expansion cancels to a value near
  // 0 whose sign depends on rounding.
  MatrixXfR x = RandomMatrix(50, 7, 3, 1000.0f);
  const Assignment got = Assign(x, x);
  for (int64_t i = 0; i < x.rows(); ++i) EXPECT_GE(got.sq_dist[i], 0.0f) << "row " << i;
}

TEST(AssignNearestKernelTest, ResultDoesNotDependOnRowPosition) {
  const int64_t ks[] = {1, 5, 13, 600};
  const int64_t ds[] = {3, 17, 64};
  const int64_t prefixes[] = {1, 3, 100, 255, 4500};
  for (int64_t k : ks) {
    for (int64_t d : ds) {
      const MatrixXfR x = RandomMatrix(600, d, 100 + d);
      const MatrixXfR centroids = RandomMatrix(k, d, 200 + k);
      const Assignment alone = Assign(x, centroids);
      for (int64_t prefix : prefixes) {
        MatrixXfR shifted(prefix + x.rows(), d);
        shifted.topRows(prefix) = RandomMatrix(prefix, d, 300 + prefix);
        shifted.bottomRows(x.rows()) = x;
        const Assignment moved = Assign(shifted, centroids);
        for (int64_t i = 0; i < x.rows(); ++i) {
          ASSERT_EQ(moved.labels[prefix + i], alone.labels[i])
              << "k=" << k << " d=" << d << " prefix=" << prefix << " row " << i;
          ASSERT_EQ(moved.sq_dist[prefix + i], alone.sq_dist[i])
              << "k=" << k << " d=" << d << " prefix=" << prefix << " row " << i;
        }
      }
    }
  }
}

TEST(AssignNearestKernelTest, OneAndTwoThreadsGiveIdenticalResults) {
  ThreadCountGuard guard;
  // 3000 rows stay below kParallelMinRows, where only Eigen itself could use threads.
  for (int64_t n : {3000, 20000}) {
    const MatrixXfR x = RandomMatrix(n, 300, 7);
    for (int64_t k : {3, 300, 700}) {
      const MatrixXfR centroids = RandomMatrix(k, 300, 8 + k);
      omp_set_num_threads(1);
      const Assignment one = Assign(x, centroids);
      omp_set_num_threads(2);
      const Assignment two = Assign(x, centroids);
      EXPECT_EQ(one.labels, two.labels) << "n=" << n << " k=" << k;
      EXPECT_EQ(one.sq_dist, two.sq_dist) << "n=" << n << " k=" << k;
    }
  }
}

TEST(AssignNearestKernelTest, KeepsCallerThreadCount) {
  ThreadCountGuard guard;
  omp_set_num_threads(2);
  const MatrixXfR x = RandomMatrix(100, 4, 9);
  Assign(x, RandomMatrix(3, 4, 10));
  EXPECT_EQ(omp_get_max_threads(), 2);
}

// AssignmentDistance as its contract states it: fused multiply-adds in 8 lanes by column,
// lanes combined as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)).
float ReferenceAssignmentDistance(const float* x, float x_norm, const float* c, float c_norm,
                                  int64_t d) {
  float lanes[8] = {};
  for (int64_t j = 0; j < d; ++j) lanes[j % 8] = std::fma(x[j], c[j], lanes[j % 8]);
  const float product = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                        ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  return std::max(0.0f, (x_norm - 2.0f * product) + c_norm);
}

// Labels and distances by comparing every centroid: the lowest index with the smallest
// AssignmentDistance.
Assignment ExhaustiveAssign(const MatrixXfR& x, const MatrixXfR& centroids) {
  const Eigen::VectorXf x_norms = RowSquaredNorms(x);
  const Eigen::VectorXf c_norms = RowSquaredNorms(centroids);
  Assignment a;
  a.labels.assign(x.rows(), -1);
  a.sq_dist.assign(x.rows(), std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < x.rows(); ++i) {
    for (int64_t c = 0; c < centroids.rows(); ++c) {
      const float dist = AssignmentDistance(x.row(i).data(), x_norms[i], centroids.row(c).data(),
                                            c_norms[c], x.cols());
      if (a.labels[i] < 0 || dist < a.sq_dist[i]) {
        a.sq_dist[i] = dist;
        a.labels[i] = static_cast<int32_t>(c);
      }
    }
  }
  return a;
}

Assignment AssignWith(AssignKernel kernel, const MatrixXfR& x, const MatrixXfR& centroids) {
  Assignment a;
  a.labels.assign(x.rows(), -1);
  a.sq_dist.assign(x.rows(), -1.0f);
  AssignNearestWithKernel(kernel, x, RowSquaredNorms(x), centroids, RowSquaredNorms(centroids),
                          a.labels.data(), a.sq_dist.data());
  return a;
}

// Checks both kernels against ExhaustiveAssign. The int8 kernel is checked only on a CPU
// with AVX-512 VNNI; elsewhere AssignNearestWithKernel runs the float kernel for it.
void ExpectKernelsMatchExhaustive(const MatrixXfR& x, const MatrixXfR& centroids,
                                  const std::string& what) {
  const Assignment expected = ExhaustiveAssign(x, centroids);
  for (const AssignKernel kernel : {AssignKernel::kFloat, AssignKernel::kInt8}) {
    const char* name = kernel == AssignKernel::kFloat ? "float" : "int8";
    const Assignment got = AssignWith(kernel, x, centroids);
    for (int64_t i = 0; i < x.rows(); ++i) {
      ASSERT_EQ(got.labels[i], expected.labels[i]) << what << ", " << name << " kernel, row " << i;
      ASSERT_EQ(got.sq_dist[i], expected.sq_dist[i]) << what << ", " << name << " kernel, row " << i;
    }
  }
}

TEST(AssignmentDistanceTest, FollowsTheFixedOrder) {
  for (const int64_t d : {1, 3, 7, 8, 9, 16, 17, 64, 100}) {
    const MatrixXfR x = RandomMatrix(20, d, 500 + d, 3.0f);
    const MatrixXfR c = RandomMatrix(20, d, 600 + d, 3.0f);
    const Eigen::VectorXf x_norms = RowSquaredNorms(x);
    const Eigen::VectorXf c_norms = RowSquaredNorms(c);
    for (int64_t i = 0; i < 20; ++i) {
      EXPECT_EQ(AssignmentDistance(x.row(i).data(), x_norms[i], c.row(i).data(), c_norms[i], d),
                ReferenceAssignmentDistance(x.row(i).data(), x_norms[i], c.row(i).data(),
                                            c_norms[i], d))
          << "d=" << d << " row " << i;
    }
  }
}

TEST(AssignKernelTest, RandomDataMatchesExhaustive) {
  const AssignCase cases[] = {{1, 1, 1},      {300, 3, 1},    {257, 5, 7},   {1000, 16, 37},
                              {513, 2, 4},    {2001, 33, 600}, {4097, 64, 256}, {100, 300, 9},
                              {259, 64, 17},  {70, 1100, 5}};
  uint64_t seed = 40;
  for (const AssignCase& c : cases) {
    const MatrixXfR x = RandomMatrix(c.n, c.d, ++seed);
    const MatrixXfR centroids = RandomMatrix(c.k, c.d, ++seed);
    ExpectKernelsMatchExhaustive(
        x, centroids, "n=" + std::to_string(c.n) + " d=" + std::to_string(c.d) +
                          " k=" + std::to_string(c.k));
  }
}

TEST(AssignKernelTest, NearTiesMatchExhaustive) {
  // Centroids in pairs 1e-6 to 1e-3 apart, far below the int8 quantization step (about
  // 1/127 of the largest value), so the first pass cannot separate them and the exact
  // distances decide. Rows sit next to the centroids.
  const int64_t k = 64;
  const int64_t d = 24;
  const MatrixXfR base = RandomMatrix(k / 2, d, 71, 2.0f);
  MatrixXfR centroids(k, d);
  const MatrixXfR shifts = RandomMatrix(k / 2, d, 72, 1.0f);
  for (int64_t c = 0; c < k / 2; ++c) {
    const float size = std::pow(10.0f, -6.0f + 3.0f * static_cast<float>(c) / (k / 2));
    centroids.row(2 * c) = base.row(c);
    centroids.row(2 * c + 1) = base.row(c) + size * shifts.row(c);
  }
  MatrixXfR x(3 * k, d);
  const MatrixXfR noise = RandomMatrix(3 * k, d, 73, 1e-3f);
  for (int64_t i = 0; i < 3 * k; ++i) x.row(i) = centroids.row(i % k) + noise.row(i);
  ExpectKernelsMatchExhaustive(x, centroids, "near ties");
}

TEST(AssignKernelTest, SpecialRowsMatchExhaustive) {
  const int64_t d = 13;
  const MatrixXfR centroids = RandomMatrix(21, d, 81);
  MatrixXfR x = RandomMatrix(40, d, 82);
  x.row(0).setZero();
  x.row(1) = centroids.row(5);               // on a centroid
  x.row(2) = centroids.row(20);              // on the last centroid
  x.row(3) = x.row(4);                       // duplicate rows
  x.row(6) = 1e4f * x.row(6);                // large values
  x.row(7) = 1e-30f * x.row(7);              // tiny values
  x(8, 0) = std::numeric_limits<float>::quiet_NaN();
  x(9, 3) = std::numeric_limits<float>::infinity();
  ExpectKernelsMatchExhaustive(x, centroids, "special rows");
}

TEST(AssignKernelTest, EveryRowACentroidMatchesExhaustive) {
  // k = n with duplicate centroids: each row is at distance 0 from its own centroid and
  // from every copy; the lowest index must win.
  MatrixXfR x = RandomMatrix(300, 10, 91);
  for (int64_t i = 1; i < 300; i += 7) x.row(i) = x.row(i - 1);
  ExpectKernelsMatchExhaustive(x, x, "k = n");
}

TEST(AssignKernelTest, ZeroCentroidsAndInfiniteCentroidMatchExhaustive) {
  const MatrixXfR x = RandomMatrix(100, 8, 101);
  ExpectKernelsMatchExhaustive(x, MatrixXfR::Zero(5, 8), "all centroids zero");
  MatrixXfR centroids = RandomMatrix(5, 8, 102);
  centroids(3, 2) = std::numeric_limits<float>::infinity();
  ExpectKernelsMatchExhaustive(x, centroids, "an infinite centroid");
}

TEST(AssignKernelTest, Int8KernelRunsOnThisCpu) {
  if (!Int8AssignKernelSupported()) {
    GTEST_SKIP() << "this CPU has no AVX-512 VNNI; AssignKernel::kInt8 runs the float kernel";
  }
  EXPECT_EQ(DefaultAssignKernel(), std::getenv("COHORT_ASSIGN_KERNEL") != nullptr &&
                                           std::string(std::getenv("COHORT_ASSIGN_KERNEL")) == "float"
                                       ? AssignKernel::kFloat
                                       : AssignKernel::kInt8);
}

TEST(AssignKernelTest, BothKernelsIgnoreThreadCount) {
  ThreadCountGuard guard;
  const MatrixXfR x = RandomMatrix(20000, 40, 111);
  const MatrixXfR centroids = RandomMatrix(300, 40, 112);
  for (const AssignKernel kernel : {AssignKernel::kFloat, AssignKernel::kInt8}) {
    omp_set_num_threads(1);
    const Assignment one = AssignWith(kernel, x, centroids);
    omp_set_num_threads(2);
    const Assignment two = AssignWith(kernel, x, centroids);
    EXPECT_EQ(one.labels, two.labels);
    EXPECT_EQ(one.sq_dist, two.sq_dist);
  }
}

TEST(KMeansShardTest, LloydStepMatchesDoubleLoop) {
  const MatrixXfR x = RandomMatrix(5000, 11, 21);
  const MatrixXfR centroids = RandomMatrix(9, 11, 22);
  KMeansShard shard(4, &x);
  const LloydPartial partial = shard.LloydStep(centroids, 0);

  std::vector<int32_t> labels;
  std::vector<float> sq_dist;
  shard.Assign(centroids, &labels, &sq_dist);
  MatrixXdR sums = MatrixXdR::Zero(9, 11);
  std::vector<int64_t> counts(9, 0);
  double inertia = 0;
  double exact_inertia = 0;
  for (int64_t i = 0; i < x.rows(); ++i) {
    sums.row(labels[i]) += x.row(i).cast<double>();
    ++counts[labels[i]];
    inertia += sq_dist[i];
    exact_inertia += ExactSquaredDistance(x, i, centroids, labels[i]);
  }

  EXPECT_EQ(partial.shard_id, 4);
  EXPECT_EQ(partial.counts, counts);
  EXPECT_EQ(partial.sums, sums);
  EXPECT_EQ(partial.inertia, inertia);
  EXPECT_NEAR(partial.inertia, exact_inertia, 1e-5 * exact_inertia);
  EXPECT_TRUE(partial.farthest.empty());
}

TEST(KMeansShardTest, LloydStepReturnsFarthestRowsInOrder) {
  MatrixXfR x(6, 1);
  x << 0, 3, -3, 1, 2, -1;
  const MatrixXfR centroids = MatrixXfR::Zero(1, 1);
  KMeansShard shard(2, &x);
  const LloydPartial partial = shard.LloydStep(centroids, 4);
  ASSERT_EQ(partial.farthest.size(), 4u);
  const int64_t expected_rows[] = {1, 2, 4, 3};  // 9, 9 (row order), 4, 1
  const double expected_dist[] = {9, 9, 4, 1};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(partial.farthest[r].row, expected_rows[r]) << "rank " << r;
    EXPECT_EQ(partial.farthest[r].sq_dist, expected_dist[r]) << "rank " << r;
    EXPECT_EQ(partial.farthest[r].shard_id, 2);
    ASSERT_EQ(partial.farthest[r].values.size(), 1u);
    EXPECT_EQ(partial.farthest[r].values[0], x(expected_rows[r], 0));
  }
  EXPECT_EQ(shard.LloydStep(centroids, 50).farthest.size(), 6u);
}

TEST(KMeansShardTest, OneAndTwoThreadsGiveIdenticalSteps) {
  ThreadCountGuard guard;
  const MatrixXfR x = RandomMatrix(30000, 24, 31);
  const MatrixXfR centroids = RandomMatrix(50, 24, 32);
  const MatrixXfR candidates = RandomMatrix(4, 24, 33);
  KMeansShard shard(0, &x);

  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    shard.ResetMinDistances();
    const double added = shard.AddCenters(centroids.topRows(3));
    const std::vector<double> trials = shard.TrialPotentials(candidates);
    const LloydPartial partial = shard.LloydStep(centroids, 5);
    return std::make_tuple(added, trials, partial);
  };
  const auto [added1, trials1, partial1] = run(1);
  const auto [added2, trials2, partial2] = run(2);
  EXPECT_EQ(added1, added2);
  EXPECT_EQ(trials1, trials2);
  EXPECT_EQ(partial1.sums, partial2.sums);
  EXPECT_EQ(partial1.counts, partial2.counts);
  EXPECT_EQ(partial1.inertia, partial2.inertia);
  ASSERT_EQ(partial1.farthest.size(), partial2.farthest.size());
  for (size_t r = 0; r < partial1.farthest.size(); ++r) {
    EXPECT_EQ(partial1.farthest[r].row, partial2.farthest[r].row) << "rank " << r;
  }
}

TEST(KMeansShardTest, AddCentersMatchesDoubleLoop) {
  const MatrixXfR x = RandomMatrix(2000, 13, 41);
  const MatrixXfR centers = RandomMatrix(5, 13, 42);
  KMeansShard shard(0, &x);
  shard.ResetMinDistances();
  const double first = shard.AddCenters(centers.topRows(2));
  const double second = shard.AddCenters(centers.bottomRows(3));

  double expected_first = 0;
  double expected_second = 0;
  for (int64_t i = 0; i < x.rows(); ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < 5; ++c) {
      best = std::min(best, ExactSquaredDistance(x, i, centers, c));
      if (c == 1) expected_first += best;
    }
    expected_second += best;
  }
  EXPECT_NEAR(first, expected_first, 1e-5 * expected_first);
  EXPECT_NEAR(second, expected_second, 1e-5 * expected_second);
}

TEST(KMeansShardTest, AddCentersWithoutCentersReturnsRowCount) {
  const MatrixXfR x = RandomMatrix(37, 3, 43);
  KMeansShard shard(0, &x);
  EXPECT_EQ(shard.AddCenters(MatrixXfR(0, 3)), 37.0);
  shard.AddCenters(x.topRows(1));
  shard.ResetMinDistances();
  EXPECT_EQ(shard.AddCenters(MatrixXfR(0, 3)), 37.0);
}

TEST(KMeansShardTest, RowEqualToCenterHasZeroDistance) {
  const MatrixXfR x = RandomMatrix(10, 6, 44, 100.0f);
  KMeansShard shard(0, &x);
  shard.ResetMinDistances();
  EXPECT_EQ(shard.AddCenters(x), 0.0);
  EXPECT_EQ(shard.PickByOffset(0).row, -1);
}

TEST(KMeansShardTest, TrialPotentialEqualsSumAfterAddingCandidate) {
  const MatrixXfR x = RandomMatrix(20000, 9, 51);
  const MatrixXfR candidates = RandomMatrix(6, 9, 52);
  KMeansShard shard(0, &x);
  shard.ResetMinDistances();
  shard.AddCenters(x.topRows(2));
  const std::vector<double> trials = shard.TrialPotentials(candidates);
  const std::vector<double> again = shard.TrialPotentials(candidates);
  EXPECT_EQ(trials, again) << "TrialPotentials changed the state";
  ASSERT_EQ(trials.size(), 6u);

  for (int c = 0; c < 6; ++c) {
    KMeansShard copy(0, &x);
    copy.ResetMinDistances();
    copy.AddCenters(x.topRows(2));
    EXPECT_EQ(copy.AddCenters(candidates.middleRows(c, 1)), trials[c]) << "candidate " << c;
  }
}

TEST(KMeansShardTest, PickByOffsetIsUniformBeforeFirstCenter) {
  MatrixXfR x(4, 1);
  x << 10, 20, 30, 40;
  KMeansShard shard(3, &x);
  EXPECT_EQ(shard.PickByOffset(0).row, 0);
  EXPECT_EQ(shard.PickByOffset(2.5).row, 2);
  EXPECT_EQ(shard.PickByOffset(3.999).row, 3);
  const ShardPoint beyond = shard.PickByOffset(4.0);
  EXPECT_EQ(beyond.row, 3);
  EXPECT_EQ(beyond.shard_id, 3);
  EXPECT_EQ(beyond.sq_dist, 1.0);
  EXPECT_EQ(beyond.values, std::vector<float>{40});
}

TEST(KMeansShardTest, PickByOffsetWalksSquaredDistances) {
  MatrixXfR x(4, 1);
  x << 0, 1, 3, 0;
  KMeansShard shard(1, &x);
  shard.ResetMinDistances();
  EXPECT_EQ(shard.AddCenters(MatrixXfR::Zero(1, 1)), 10.0);  // D² = 0, 1, 9, 0
  EXPECT_EQ(shard.PickByOffset(0).row, 1);  // row 0 has D² = 0
  EXPECT_EQ(shard.PickByOffset(0.999).row, 1);
  EXPECT_EQ(shard.PickByOffset(1.0).row, 2);  // the running sum must exceed the offset
  EXPECT_EQ(shard.PickByOffset(9.999).row, 2);
  EXPECT_EQ(shard.PickByOffset(10.0).row, 2);  // at the total: last row with D² > 0
  EXPECT_EQ(shard.PickByOffset(1e9).row, 2);
  const ShardPoint point = shard.PickByOffset(5);
  EXPECT_EQ(point.sq_dist, 9.0);
  EXPECT_EQ(point.values, std::vector<float>{3});
}

TEST(KMeansShardTest, PickByOffsetWithZeroWeights) {
  const MatrixXfR x = MatrixXfR::Constant(5, 2, 1.5f);
  KMeansShard shard(0, &x);
  shard.ResetMinDistances();
  EXPECT_EQ(shard.AddCenters(x.topRows(1)), 0.0);
  EXPECT_EQ(shard.PickByOffset(0).row, -1);

  const MatrixXfR empty(0, 2);
  KMeansShard empty_shard(1, &empty);
  EXPECT_EQ(empty_shard.PickByOffset(0).row, -1);
}

TEST(KMeansShardTest, EmptyShardGivesZeroPartial) {
  const MatrixXfR empty(0, 3);
  KMeansShard shard(5, &empty);
  const LloydPartial partial = shard.LloydStep(MatrixXfR::Ones(2, 3), 3);
  EXPECT_EQ(partial.sums, MatrixXdR::Zero(2, 3));
  EXPECT_EQ(partial.counts, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(partial.inertia, 0.0);
  EXPECT_TRUE(partial.farthest.empty());
  EXPECT_EQ(shard.TrialPotentials(MatrixXfR::Ones(2, 3)), (std::vector<double>{0, 0}));
}

TEST(KMeansShardTest, ColumnMomentsMatchDoubleLoop) {
  MatrixXfR x(3, 2);
  x << 1, -2, 3, 4, 5, 0.5;
  KMeansShard shard(0, &x);
  std::vector<double> sum, sum_sq;
  shard.ColumnMoments(&sum, &sum_sq);
  EXPECT_EQ(sum, (std::vector<double>{9, 2.5}));
  EXPECT_EQ(sum_sq, (std::vector<double>{35, 20.25}));
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

// Rows near centers, on them, far away and one with a huge offset: the cases where the
// first pass of the seeding distances could skip a center it must visit.
MatrixXfR SeedingRows(int64_t n, int64_t d, const MatrixXfR& centers, uint64_t seed) {
  MatrixXfR x = RandomMatrix(n, d, seed, 3.0f);
  std::mt19937_64 engine(seed + 1);
  for (int64_t i = 0; i < n; i += 7) {
    const int64_t c = static_cast<int64_t>(engine() % static_cast<uint64_t>(centers.rows()));
    x.row(i) = centers.row(c);
    if (i + 1 < n) x.row(i + 1) = centers.row(c) * (1.0f + 1e-7f);
  }
  x.row(n - 1).setConstant(1e6f);
  return x;
}

TEST(SeedingDistancesTest, AddCentersEqualsEveryDistance) {
  for (const int64_t d : {3, 32, 37}) {
    const MatrixXfR first = RandomMatrix(1, d, 5);
    const MatrixXfR centers = RandomMatrix(150, d, 6, 2.0f);
    const MatrixXfR x = SeedingRows(5000, d, centers, 7);
    KMeansShard shard(0, &x);
    shard.AddCenters(first);
    const double potential = shard.AddCenters(centers);

    double expected = 0;
    for (int64_t i = 0; i < x.rows(); ++i) {
      float best = SeedingSquaredDistance(x.row(i).data(), first.data(), d);
      for (int64_t c = 0; c < centers.rows(); ++c) {
        best = std::min(best, SeedingSquaredDistance(x.row(i).data(), centers.row(c).data(), d));
      }
      expected += best;
    }
    EXPECT_EQ(potential, expected) << "d " << d;
  }
}

TEST(SeedingDistancesTest, TrialPotentialsEqualEveryDistance) {
  const int64_t d = 32;
  const MatrixXfR first = RandomMatrix(3, d, 8);
  const MatrixXfR candidates = RandomMatrix(70, d, 9, 2.0f);
  const MatrixXfR x = SeedingRows(3000, d, candidates, 10);
  KMeansShard shard(0, &x);
  shard.AddCenters(first);
  const std::vector<double> potentials = shard.TrialPotentials(candidates);
  ASSERT_EQ(potentials.size(), static_cast<size_t>(candidates.rows()));
  for (int64_t c = 0; c < candidates.rows(); ++c) {
    double expected = 0;
    for (int64_t i = 0; i < x.rows(); ++i) {
      float current = std::numeric_limits<float>::infinity();
      for (int64_t f = 0; f < first.rows(); ++f) {
        current = std::min(current, SeedingSquaredDistance(x.row(i).data(), first.row(f).data(), d));
      }
      expected += std::min(current,
                           SeedingSquaredDistance(x.row(i).data(), candidates.row(c).data(), d));
    }
    EXPECT_EQ(potentials[c], expected) << "candidate " << c;
  }
}

}  // namespace
}  // namespace cohort
