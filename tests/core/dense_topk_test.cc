// The exact dense top-k with its two first-pass kernels (float32 and int8 VNNI): every
// kernel, row order and thread count gives the same lists, which are the exact ones.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/int8_dot.h"
#include "core/similarity.h"

namespace cohort {
namespace {

MatrixXfR GaussianRows(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MatrixXfR x(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) x(i, j) = normal(rng);
  }
  return x;
}

// Rows near a few centres (so many rows score close to each other), 400 rows that
// differ by less than an int8 step, exact duplicates, a zero row and rows of very
// different norms.
MatrixXfR HardRows(int64_t rows, int64_t cols, uint32_t seed) {
  const MatrixXfR centres = GaussianRows(7, cols, seed + 1);
  MatrixXfR x = GaussianRows(rows, cols, seed) * 0.05f;
  for (int64_t i = 0; i < rows; ++i) x.row(i) += centres.row(i % 7);
  for (int64_t i = 200; i < 600; ++i) x.row(i) = x.row(199) + (x.row(i) - centres.row(i % 7)) * 0.002f;
  for (int64_t i = 0; i + 40 < rows; i += 37) x.row(i + 40) = x.row(i);
  x.row(rows / 2).setZero();
  x.row(3) *= 1000.0f;
  x.row(5) *= 0.001f;
  return x;
}

std::vector<int64_t> Ids(int64_t rows, int64_t first) {
  std::vector<int64_t> ids(static_cast<size_t>(rows));
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

DenseSearchOptions Options(DenseMetric metric, int k, DenseKernel kernel, bool exclude_self) {
  DenseSearchOptions options;
  options.metric = metric;
  options.k = k;
  options.kernel = kernel;
  options.exclude_self = exclude_self;
  return options;
}

std::vector<std::vector<Neighbor>> Search(const MatrixXfR& queries, const std::vector<int64_t>& query_ids,
                                          const MatrixXfR& base, const std::vector<int64_t>& base_ids,
                                          const DenseSearchOptions& options) {
  absl::StatusOr<std::vector<std::vector<Neighbor>>> result =
      ExactDenseTopK(queries, query_ids, base, base_ids, options);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : std::vector<std::vector<Neighbor>>{};
}

// The exact top-k by a separate computation: every score in long double, rounded to
// float, clamped for bounded metrics, sorted best first with ties by id.
std::vector<Neighbor> ReferenceTopK(const MatrixXfR& base, const std::vector<int64_t>& ids,
                                    const float* query, int64_t self_id, bool bounded, int k) {
  std::vector<Neighbor> all;
  for (int64_t r = 0; r < base.rows(); ++r) {
    if (ids[r] == self_id) continue;
    long double sum = 0;
    for (int64_t j = 0; j < base.cols(); ++j) sum += static_cast<long double>(query[j]) * base(r, j);
    float score = static_cast<float>(sum);
    if (bounded) score = std::clamp(score, -1.0f, 1.0f);
    all.push_back({ids[r], score});
  }
  std::sort(all.begin(), all.end(), [](const Neighbor& a, const Neighbor& b) {
    return RanksBefore(a, b, ScoreOrder::kLargerIsBetter);
  });
  if (static_cast<int>(all.size()) > k) all.resize(static_cast<size_t>(k));
  return all;
}

bool HasVnni() { return Int8DotVnniSupported(); }

constexpr const char* kNoVnni =
    "this CPU has no AVX-512 VNNI, so the int8 kernel cannot run here (the float kernel is "
    "tested on its own)";

TEST(DenseTopKTest, FloatKernelEqualsReference) {
  // 2,300 base rows: several base blocks and a partial one; 150 queries: a partial block.
  const MatrixXfR raw = HardRows(2300, 24, 11);
  const std::vector<int64_t> ids = Ids(2300, 500);
  for (DenseMetric metric : {DenseMetric::kCosine, DenseMetric::kPearson, DenseMetric::kInnerProduct}) {
    const MatrixXfR x = PrepareDenseRows(raw, metric);
    const MatrixXfR queries = x.topRows(150);
    const std::vector<int64_t> query_ids(ids.begin(), ids.begin() + 150);
    const auto result = Search(queries, query_ids, x, ids, Options(metric, 10, DenseKernel::kFloat, true));
    ASSERT_EQ(result.size(), 150u);
    int differing = 0;
    for (int64_t q = 0; q < 150; ++q) {
      const std::vector<Neighbor> expected =
          ReferenceTopK(x, ids, queries.row(q).data(), query_ids[q], metric != DenseMetric::kInnerProduct, 10);
      // The search rounds a double sum and the reference a long double one: they can
      // differ by one float step in rare cases, never in the ids beyond such a step.
      ASSERT_EQ(result[q].size(), expected.size());
      for (size_t r = 0; r < expected.size(); ++r) {
        EXPECT_NEAR(result[q][r].score, expected[r].score, 1e-6f * (1 + std::abs(expected[r].score)));
        if (result[q][r].id != expected[r].id) ++differing;
      }
    }
    EXPECT_LE(differing, 2) << "metric " << static_cast<int>(metric);
  }
}

TEST(DenseTopKTest, Int8KernelEqualsFloatKernel) {
  if (!HasVnni()) GTEST_SKIP() << kNoVnni;
  // Sizes that are multiples of no block: 16-row groups, 8-query tiles, 64-query blocks,
  // 256- and 2,048-row kernel calls.
  const MatrixXfR raw = HardRows(4999, 37, 21);
  const std::vector<int64_t> ids = Ids(4999, 0);
  for (DenseMetric metric : {DenseMetric::kCosine, DenseMetric::kPearson, DenseMetric::kInnerProduct}) {
    const MatrixXfR x = PrepareDenseRows(raw, metric);
    for (int64_t q : {1, 7, 77, 203}) {
      const MatrixXfR queries = x.middleRows(100, q);
      const std::vector<int64_t> query_ids(ids.begin() + 100, ids.begin() + 100 + q);
      for (int k : {1, 10, 25}) {
        const auto float_lists = Search(queries, query_ids, x, ids, Options(metric, k, DenseKernel::kFloat, true));
        const auto int8_lists = Search(queries, query_ids, x, ids, Options(metric, k, DenseKernel::kInt8, true));
        EXPECT_EQ(float_lists, int8_lists) << "metric " << static_cast<int>(metric) << ", q " << q << ", k " << k;
      }
    }
  }
}

TEST(DenseTopKTest, Int8KeepsWorstCaseErrorRow) {
  if (!HasVnni()) GTEST_SKIP() << kNoVnni;
  // The query c has c_i = ±1/8, so it quantizes exactly and ‖c‖_1 = √d·‖c‖. Row 0 is the
  // int8 point x̂ = q/127 plus an error of 0.45 steps along sign(c) in 63 coordinates:
  // its int8 score falls short of its true score by 0.45·63/(8·127) ≈ 0.0279, which is
  // the Cauchy–Schwarz bound itself. Row 1 is x̂ and row 2 is x̂ moved one step along
  // sign(c) in 20 coordinates (true score 0.0197 above x̂·c), both quantized exactly. Row 0
  // is the true best, and a bound below about 0.75 of the worst case would drop it for
  // row 2. Rows 3.. are random int8 points far below.
  const int64_t d = 64, n = 100;

  std::mt19937 rng(93);
  std::vector<float> sign(d);
  for (float& s : sign) s = rng() % 2 == 0 ? 1.0f : -1.0f;
  MatrixXfR queries(1, d);
  MatrixXfR base(n, d);
  for (int64_t j = 0; j < d; ++j) {
    queries(0, j) = 0.125f * sign[j];
    const float step = j == 0 ? 127.0f : 100.0f;
    base(0, j) = (step + (j == 0 ? 0.0f : 0.45f)) * sign[j] / 127.0f;
    base(1, j) = step * sign[j] / 127.0f;
    base(2, j) = (step + (j >= 1 && j <= 20 ? 1.0f : 0.0f)) * sign[j] / 127.0f;
  }
  std::uniform_int_distribution<int> level(-127, 127);
  for (int64_t r = 3; r < n; ++r) {
    base(r, 0) = 1.0f;
    for (int64_t j = 1; j < d; ++j) base(r, j) = static_cast<float>(level(rng)) / 127.0f;
  }

  const std::vector<int64_t> ids = Ids(n, 0);
  const auto float_lists = Search(queries, {}, base, ids, Options(DenseMetric::kInnerProduct, 1, DenseKernel::kFloat, false));
  const auto int8_lists = Search(queries, {}, base, ids, Options(DenseMetric::kInnerProduct, 1, DenseKernel::kInt8, false));
  ASSERT_EQ(float_lists.size(), 1u);
  ASSERT_EQ(float_lists[0].size(), 1u);
  EXPECT_EQ(float_lists[0][0].id, 0);
  EXPECT_EQ(int8_lists, float_lists);
}

TEST(DenseTopKTest, ResultIndependentOfOrderAndThreads) {
  const MatrixXfR x = PrepareDenseRows(HardRows(3001, 64, 31), DenseMetric::kCosine);
  const std::vector<int64_t> ids = Ids(3001, 10);
  // The same rows in reverse order, with their ids.
  const MatrixXfR reversed = x.colwise().reverse();
  std::vector<int64_t> reversed_ids(ids.rbegin(), ids.rend());
  const MatrixXfR queries = x.topRows(130);
  const std::vector<int64_t> query_ids(ids.begin(), ids.begin() + 130);

  std::vector<DenseKernel> kernels = {DenseKernel::kFloat, DenseKernel::kAuto};
  if (HasVnni()) kernels.push_back(DenseKernel::kInt8);
  const DenseSearchOptions reference_options = Options(DenseMetric::kCosine, 12, DenseKernel::kFloat, true);
  const auto reference = Search(queries, query_ids, x, ids, reference_options);
  const int threads = omp_get_max_threads();
  for (DenseKernel kernel : kernels) {
    const DenseSearchOptions options = Options(DenseMetric::kCosine, 12, kernel, true);
    omp_set_num_threads(1);
    const auto one = Search(queries, query_ids, reversed, reversed_ids, options);
    omp_set_num_threads(std::max(2, threads));
    const auto many = Search(queries, query_ids, reversed, reversed_ids, options);
    omp_set_num_threads(threads);
    EXPECT_EQ(one, reference) << "kernel " << static_cast<int>(kernel);
    EXPECT_EQ(many, reference) << "kernel " << static_cast<int>(kernel);
  }
}

TEST(DenseTopKTest, HeavyTiesAndLargeK) {
  // 6,000 base rows with only four distinct vectors (one of them zero), so every score
  // is tied thousands of times and the candidate lists are scored in several rounds.
  MatrixXfR distinct = GaussianRows(4, 20, 41);
  distinct.row(3).setZero();
  MatrixXfR base(6000, 20);
  for (int64_t i = 0; i < 6000; ++i) base.row(i) = distinct.row(i % 4);
  // Ids in an order unrelated to the rows.
  std::vector<int64_t> ids(6000);
  for (int64_t i = 0; i < 6000; ++i) ids[i] = (i * 7919) % 6000;
  const MatrixXfR queries = GaussianRows(70, 20, 43);
  std::vector<DenseKernel> kernels = {DenseKernel::kFloat};
  if (HasVnni()) kernels.push_back(DenseKernel::kInt8);
  for (DenseKernel kernel : kernels) {
    const auto lists = Search(queries, {}, base, ids, Options(DenseMetric::kInnerProduct, 50, kernel, false));
    for (int64_t q = 0; q < 70; ++q) {
      const std::vector<Neighbor> expected = ReferenceTopK(base, ids, queries.row(q).data(), -1, false, 50);
      ASSERT_EQ(lists[q].size(), 50u);
      for (size_t r = 0; r < 50; ++r) {
        EXPECT_EQ(lists[q][r].id, expected[r].id) << "query " << q << ", rank " << r;
      }
    }
  }

  // k above the row count: every other row, best first.
  const MatrixXfR small = PrepareDenseRows(GaussianRows(90, 9, 45), DenseMetric::kCosine);
  const std::vector<int64_t> small_ids = Ids(90, 0);
  for (DenseKernel kernel : kernels) {
    const auto lists = Search(small, small_ids, small, small_ids, Options(DenseMetric::kCosine, 500, kernel, true));
    for (int64_t q = 0; q < 90; ++q) {
      EXPECT_EQ(lists[q].size(), 89u);
      EXPECT_TRUE(std::is_sorted(lists[q].begin(), lists[q].end(), [](const Neighbor& a, const Neighbor& b) {
        return RanksBefore(a, b, ScoreOrder::kLargerIsBetter);
      }));
    }
  }
}

TEST(DenseTopKTest, AllPairsEqualsExactSearchOnEveryKernel) {
  const MatrixXfR x = PrepareDenseRows(HardRows(1400, 33, 51), DenseMetric::kPearson);
  std::vector<int64_t> ids(1400);
  for (int64_t i = 0; i < 1400; ++i) ids[i] = 5 * i + 1;
  const auto reference = Search(x, ids, x, ids, Options(DenseMetric::kPearson, 9, DenseKernel::kFloat, true));
  std::vector<DenseKernel> kernels = {DenseKernel::kFloat, DenseKernel::kAuto};
  if (HasVnni()) kernels.push_back(DenseKernel::kInt8);
  for (DenseKernel kernel : kernels) {
    absl::StatusOr<std::vector<std::vector<Neighbor>>> all_pairs =
        ExactDenseAllPairsTopK(x, ids, Options(DenseMetric::kPearson, 9, kernel, false));
    ASSERT_TRUE(all_pairs.ok()) << all_pairs.status();
    EXPECT_EQ(*all_pairs, reference) << "kernel " << static_cast<int>(kernel);
  }
}

TEST(DenseTopKTest, EmptyShapesGiveEmptyLists) {
  std::vector<DenseKernel> kernels = {DenseKernel::kFloat};
  if (HasVnni()) kernels.push_back(DenseKernel::kInt8);
  for (DenseKernel kernel : kernels) {
    const DenseSearchOptions options = Options(DenseMetric::kInnerProduct, 3, kernel, false);
    // No base rows: one empty list per query.
    const auto no_base = Search(GaussianRows(5, 8, 1), {}, MatrixXfR(0, 8), {}, options);
    EXPECT_EQ(no_base, std::vector<std::vector<Neighbor>>(5));
    // No queries.
    EXPECT_TRUE(Search(MatrixXfR(0, 8), {}, GaussianRows(5, 8, 2), Ids(5, 0), options).empty());
    // d = 0: every score is 0, so the lists are the smallest ids.
    const auto no_dims = Search(MatrixXfR(2, 0), {}, MatrixXfR(40, 0), Ids(40, 100), options);
    ASSERT_EQ(no_dims.size(), 2u);
    EXPECT_EQ(no_dims[1], (std::vector<Neighbor>{{100, 0.0f}, {101, 0.0f}, {102, 0.0f}}));
  }
}

TEST(DenseTopKTest, Int8KernelFailsClearlyWithoutVnni) {
  const MatrixXfR x = GaussianRows(20, 4, 61);
  const std::vector<int64_t> ids = Ids(20, 0);
  absl::StatusOr<std::vector<std::vector<Neighbor>>> result =
      ExactDenseTopK(x, ids, x, ids, Options(DenseMetric::kCosine, 3, DenseKernel::kInt8, true));
  if (HasVnni()) {
    EXPECT_TRUE(result.ok()) << result.status();
  } else {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(Int8DotTest, QuantizedRowBoundsHold) {
  const MatrixXfR x = GaussianRows(50, 37, 71);
  std::vector<int8_t> q(40);
  for (int64_t r = 0; r < 50; ++r) {
    const Int8RowInfo info = QuantizeRowInt8(x.row(r).data(), 37, 40, q.data());
    double norm = 0, quantized = 0, error = 0;
    int32_t sum = 0;
    for (int64_t j = 0; j < 37; ++j) {
      ASSERT_GE(q[j], -127);
      const double value = static_cast<double>(q[j]) * info.scale;
      norm += static_cast<double>(x(r, j)) * x(r, j);
      quantized += value * value;
      error += (x(r, j) - value) * (x(r, j) - value);
      sum += q[j];
    }
    for (int64_t j = 37; j < 40; ++j) EXPECT_EQ(q[j], 0);
    EXPECT_GE(info.norm, std::sqrt(norm));
    EXPECT_GE(info.quantized_norm, std::sqrt(quantized));
    EXPECT_GE(info.error_norm, std::sqrt(error));
    // Rounding to nearest keeps each error within half a step.
    EXPECT_LE(info.error_norm, 0.5 * info.scale * std::sqrt(37.0) * 1.001);
    EXPECT_EQ(info.sum, sum);
  }
  std::vector<int8_t> zero(8, 5);
  const float zeros[8] = {};
  const Int8RowInfo info = QuantizeRowInt8(zeros, 8, 8, zero.data());
  EXPECT_EQ(info.scale, 0.0f);
  EXPECT_EQ(info.error_norm, 0.0f);
  EXPECT_EQ(zero, std::vector<int8_t>(8, 0));
}

TEST(Int8DotTest, VnniScanEqualsIntegerReference) {
  if (!HasVnni()) GTEST_SKIP() << kNoVnni;
  // 53 rows (four groups, the last partial) and 11 queries (one full tile and three more).
  const int64_t n = 53, num_queries = 11, d = 13, padded_d = 16;
  const int64_t num_groups = 4, capacity = num_groups * kInt8GroupRows;
  const MatrixXfR base = GaussianRows(n, d, 81);
  const MatrixXfR queries = GaussianRows(num_queries, d, 82);
  std::vector<int8_t> base_q(static_cast<size_t>(capacity * padded_d), 0);
  std::vector<float> row_scales(static_cast<size_t>(capacity), 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    row_scales[r] = QuantizeRowInt8(base.row(r).data(), d, padded_d, base_q.data() + r * padded_d).scale;
  }
  std::vector<uint8_t> groups(static_cast<size_t>(capacity * padded_d));
  for (int64_t g = 0; g < num_groups; ++g) {
    PackInt8Group(base_q.data() + g * kInt8GroupRows * padded_d, padded_d,
                  groups.data() + g * kInt8GroupRows * padded_d);
  }
  std::vector<int8_t> query_q(static_cast<size_t>(num_queries * padded_d));
  std::vector<int32_t> sums(num_queries);
  std::vector<float> scales(num_queries);
  for (int64_t i = 0; i < num_queries; ++i) {
    const Int8RowInfo info = QuantizeRowInt8(queries.row(i).data(), d, padded_d, query_q.data() + i * padded_d);
    sums[i] = info.sum;
    scales[i] = info.scale;
  }
  // Query i keeps the rows whose approximate score reaches a threshold that differs per
  // query (−∞ for query 0).
  std::vector<float> thresholds(num_queries);
  for (int64_t i = 0; i < num_queries; ++i) {
    thresholds[i] = i == 0 ? -std::numeric_limits<float>::infinity() : 0.3f * static_cast<float>(i - 5);
  }
  std::vector<int32_t> hit_rows(static_cast<size_t>(num_queries * capacity));
  std::vector<float> hit_scores(static_cast<size_t>(num_queries * capacity));
  std::vector<int32_t> hit_counts(num_queries, -1);
  Int8ScanBlock block;
  block.groups = groups.data();
  block.row_scales = row_scales.data();
  block.num_groups = num_groups;
  block.valid_rows = n;
  block.padded_d = padded_d;
  Int8ScanQueries scan;
  scan.values = query_q.data();
  scan.sums = sums.data();
  scan.scales = scales.data();
  scan.thresholds = thresholds.data();
  scan.num_queries = num_queries;
  scan.hit_rows = hit_rows.data();
  scan.hit_scores = hit_scores.data();
  scan.hit_counts = hit_counts.data();
  Int8ScanVnni(block, scan);

  for (int64_t i = 0; i < num_queries; ++i) {
    std::vector<int32_t> expected_rows;
    std::vector<float> expected_scores;
    for (int64_t r = 0; r < n; ++r) {
      int32_t dot = 0;
      for (int64_t j = 0; j < padded_d; ++j) dot += base_q[r * padded_d + j] * query_q[i * padded_d + j];
      const float row_score = static_cast<float>(dot) * row_scales[r];
      if (row_score >= thresholds[i] / scales[i]) {
        expected_rows.push_back(static_cast<int32_t>(r));
        expected_scores.push_back(row_score * scales[i]);
      }
    }
    ASSERT_EQ(hit_counts[i], static_cast<int32_t>(expected_rows.size())) << "query " << i;
    for (size_t h = 0; h < expected_rows.size(); ++h) {
      EXPECT_EQ(hit_rows[i * capacity + h], expected_rows[h]) << "query " << i;
      EXPECT_EQ(hit_scores[i * capacity + h], expected_scores[h]) << "query " << i;
    }
  }
  EXPECT_EQ(hit_counts[0], n);
}

}  // namespace
}  // namespace cohort
