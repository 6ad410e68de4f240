// Dense user–user top-k: the exact blocked search and the inverted file (IvfIndex)
// declared in core/similarity.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include <immintrin.h>
#include <omp.h>

#include "absl/strings/str_cat.h"
#include "core/similarity.h"

namespace cohort {
namespace {

// Query rows per block of the exact search. A block's score buffer holds
// kDenseQueryBlock × kDenseBaseBlock floats (256 KiB), which stays in the L2 cache while
// the fused top-k scan reads it.
constexpr int64_t kDenseQueryBlock = 64;

// Base rows per matrix product of the exact search.
constexpr int64_t kDenseBaseBlock = 1024;
// Rows per block of the all-pairs search: a block pair's scores take 512 × 512 floats
// (1 MiB, the L2 cache of one Zen 4 core).
constexpr int64_t kAllPairsBlock = 512;
// Below this many rows, the per-row merge of the all-pairs search stays serial.
constexpr int64_t kParallelMinQueries = 4096;
// Queries grouped per block of the inverted-file search: each probed list is read once
// per block and multiplied with all the block's queries that probe it.
constexpr int64_t kIvfQueryBlock = 512;

bool IsBounded(DenseMetric metric) { return metric != DenseMetric::kInnerProduct; }

// Pushes one row of scores into `top`, skipping the base row whose id is `self_id` when
// `exclude_self` is set. Scores of a bounded metric are clamped to [−1, 1].
void ScanScores(const float* scores, int64_t count, const int64_t* ids, int64_t self_id,
                bool exclude_self, bool bounded, TopKAccumulator* top) {
  float worst = top->full() ? top->worst_score() : -std::numeric_limits<float>::infinity();
  auto consider = [&](int64_t j) {
    float score = scores[j];
    if (!(score >= worst)) return;
    if (exclude_self && ids[j] == self_id) return;
    if (bounded) score = std::clamp(score, -1.0f, 1.0f);
    top->Push(ids[j], score);
    if (top->full()) worst = top->worst_score();
  };
  // Once the accumulator is full almost no score reaches the worst kept one, so eight
  // scores are compared at once and only the lanes that pass are looked at.
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    const __m256 block = _mm256_loadu_ps(scores + j);
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(block, _mm256_set1_ps(worst), _CMP_GE_OQ));
    if (mask == 0) continue;
    for (int lane = 0; lane < 8; ++lane) {
      if (mask & (1 << lane)) consider(j + lane);
    }
  }
  for (; j < count; ++j) consider(j);
}

// Pushes every score of an off-diagonal block pair into both directions: S(r, c) is the
// score of row r of block i for column c of block j and the reverse. One pass over S
// compares eight scores with both the row's worst kept score and the eight columns'
// worst kept scores, so no transposed copy is needed.
void ScanBothDirections(const MatrixXfR& scores, int64_t rows, int64_t columns,
                        const int64_t* row_ids, const int64_t* column_ids, bool bounded,
                        TopKAccumulator* row_tops, TopKAccumulator* column_tops,
                        std::vector<float>* column_worst) {
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  column_worst->resize(static_cast<size_t>(columns));
  for (int64_t c = 0; c < columns; ++c) {
    (*column_worst)[c] = column_tops[c].full() ? column_tops[c].worst_score() : kNone;
  }
  float* worst_of_column = column_worst->data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores.row(r).data();
    TopKAccumulator& row_top = row_tops[r];
    float row_worst = row_top.full() ? row_top.worst_score() : kNone;
    auto consider = [&](int64_t c) {
      float score = row[c];
      if (bounded) score = std::clamp(score, -1.0f, 1.0f);
      if (row[c] >= row_worst) {
        row_top.Push(column_ids[c], score);
        if (row_top.full()) row_worst = row_top.worst_score();
      }
      if (row[c] >= worst_of_column[c]) {
        column_tops[c].Push(row_ids[r], score);
        if (column_tops[c].full()) worst_of_column[c] = column_tops[c].worst_score();
      }
    };
    int64_t c = 0;
    for (; c + 8 <= columns; c += 8) {
      const __m256 block = _mm256_loadu_ps(row + c);
      const __m256 row_pass = _mm256_cmp_ps(block, _mm256_set1_ps(row_worst), _CMP_GE_OQ);
      const __m256 column_pass = _mm256_cmp_ps(block, _mm256_loadu_ps(worst_of_column + c), _CMP_GE_OQ);
      const int mask = _mm256_movemask_ps(_mm256_or_ps(row_pass, column_pass));
      if (mask == 0) continue;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask & (1 << lane)) consider(c + lane);
      }
    }
    for (; c < columns; ++c) consider(c);
  }
}

absl::Status CheckIds(const std::vector<int64_t>& ids, int64_t rows, const char* name) {
  if (static_cast<int64_t>(ids.size()) != rows) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has ", ids.size(), " ids for ", rows,
                                                   " rows; give one id per row"));
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(const MatrixXfR& x, const char* name) {
  if (!x.allFinite()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " contains NaN or infinite values; fix or impute them first"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DenseSearchOptions::Validate() const {
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; it must be at least 1"));
  }
  return absl::OkStatus();
}

MatrixXfR PrepareDenseRows(const MatrixXfR& x, DenseMetric metric) {
  MatrixXfR prepared = x;
  if (metric == DenseMetric::kInnerProduct) return prepared;
  const int64_t d = x.cols();
  for (int64_t i = 0; i < x.rows(); ++i) {
    float* row = prepared.row(i).data();
    if (metric == DenseMetric::kPearson && d > 0) {
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += row[j];
      const float mean = static_cast<float>(sum / static_cast<double>(d));
      for (int64_t j = 0; j < d; ++j) row[j] -= mean;
    }
    double sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += static_cast<double>(row[j]) * row[j];
    // The zero rule: a zero row (or a constant row under Pearson) stays zero, so its
    // similarity to every row is 0.
    if (!(sum_sq > 0)) {
      std::fill(row, row + d, 0.0f);
      continue;
    }
    const float inverse = static_cast<float>(1.0 / std::sqrt(sum_sq));
    for (int64_t j = 0; j < d; ++j) row[j] *= inverse;
  }
  return prepared;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseTopK(
    const MatrixXfR& queries, const std::vector<int64_t>& query_ids, const MatrixXfR& base,
    const std::vector<int64_t>& base_ids, const DenseSearchOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (queries.cols() != base.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("queries have d = ", queries.cols(),
                                                   " but base rows have d = ", base.cols()));
  }
  if (absl::Status status = CheckIds(base_ids, base.rows(), "base_ids"); !status.ok()) {
    return status;
  }
  if (options.exclude_self) {
    if (absl::Status status = CheckIds(query_ids, queries.rows(), "query_ids"); !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckFinite(queries, "queries"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(base, "base"); !status.ok()) return status;

  const int64_t q = queries.rows();
  const int64_t n = base.rows();
  const bool bounded = IsBounded(options.metric);
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(q));
  const int64_t num_blocks = (q + kDenseQueryBlock - 1) / kDenseQueryBlock;

#pragma omp parallel if (num_blocks > 1)
  {
    MatrixXfR scores(kDenseQueryBlock, kDenseBaseBlock);
    std::vector<TopKAccumulator> tops;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < num_blocks; ++block) {
      const int64_t q0 = block * kDenseQueryBlock;
      const int64_t bq = std::min(kDenseQueryBlock, q - q0);
      tops.assign(static_cast<size_t>(bq), TopKAccumulator(options.k, ScoreOrder::kLargerIsBetter));
      for (int64_t b0 = 0; b0 < n; b0 += kDenseBaseBlock) {
        const int64_t bn = std::min(kDenseBaseBlock, n - b0);
        auto block_scores = scores.topLeftCorner(bq, bn);
        block_scores.noalias() = queries.middleRows(q0, bq) * base.middleRows(b0, bn).transpose();
        for (int64_t r = 0; r < bq; ++r) {
          const int64_t self_id = options.exclude_self ? query_ids[q0 + r] : -1;
          ScanScores(scores.row(r).data(), bn, base_ids.data() + b0, self_id, options.exclude_self,
                     bounded, &tops[r]);
        }
      }
      for (int64_t r = 0; r < bq; ++r) result[q0 + r] = tops[r].TakeSorted();
    }
  }
  return result;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseAllPairsTopK(
    const MatrixXfR& x, const std::vector<int64_t>& ids, const DenseSearchOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (absl::Status status = CheckIds(ids, x.rows(), "ids"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(x, "x"); !status.ok()) return status;

  const int64_t n = x.rows();
  const bool bounded = IsBounded(options.metric);
  const int64_t num_blocks = (n + kAllPairsBlock - 1) / kAllPairsBlock;
  // The block pairs (i, j) with i <= j, row-major.
  std::vector<std::pair<int64_t, int64_t>> tasks;
  for (int64_t i = 0; i < num_blocks; ++i) {
    for (int64_t j = i; j < num_blocks; ++j) tasks.emplace_back(i, j);
  }
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  const int num_threads = num_tasks > 1 ? omp_get_max_threads() : 1;
  // per_thread[t][r]: the top-k of row r among the pairs thread t scanned.
  std::vector<std::vector<std::vector<Neighbor>>> per_thread(static_cast<size_t>(num_threads));

#pragma omp parallel num_threads(num_threads)
  {
    std::vector<TopKAccumulator> tops(static_cast<size_t>(n),
                                      TopKAccumulator(options.k, ScoreOrder::kLargerIsBetter));
    MatrixXfR scores(kAllPairsBlock, kAllPairsBlock);
    std::vector<float> column_worst;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < num_tasks; ++task) {
      const int64_t i0 = tasks[task].first * kAllPairsBlock;
      const int64_t j0 = tasks[task].second * kAllPairsBlock;
      const int64_t bi = std::min(kAllPairsBlock, n - i0);
      const int64_t bj = std::min(kAllPairsBlock, n - j0);
      auto block_scores = scores.topLeftCorner(bi, bj);
      block_scores.noalias() = x.middleRows(i0, bi) * x.middleRows(j0, bj).transpose();
      if (i0 == j0) {
        // A diagonal block already contains both directions of its pairs.
        for (int64_t r = 0; r < bi; ++r) {
          ScanScores(scores.row(r).data(), bj, ids.data() + j0, ids[i0 + r], true, bounded,
                     &tops[i0 + r]);
        }
      } else {
        ScanBothDirections(scores, bi, bj, ids.data() + i0, ids.data() + j0, bounded,
                           tops.data() + i0, tops.data() + j0, &column_worst);
      }
    }
    std::vector<std::vector<Neighbor>>& lists = per_thread[omp_get_thread_num()];
    lists.resize(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) lists[r] = tops[r].TakeSorted();
  }

  // Each pair was scanned by exactly one thread, and the top-k of a set under the total
  // order of RanksBefore is unique, so merging gives the same lists for any thread count.
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n >= kParallelMinQueries)
  for (int64_t r = 0; r < n; ++r) {
    std::vector<std::vector<Neighbor>> lists;
    lists.reserve(per_thread.size());
    for (const auto& thread_lists : per_thread) {
      // A thread the runtime did not start left its lists empty.
      if (!thread_lists.empty()) lists.push_back(thread_lists[r]);
    }
    result[r] = MergeTopK(lists, options.k, ScoreOrder::kLargerIsBetter);
  }
  return result;
}

// ----------------------------------------------------------------------------------------
// Inverted file.

absl::StatusOr<IvfIndex> IvfIndex::Build(const MatrixXfR& centroids, bool cosine_centroids,
                                         const std::vector<int32_t>& assignments,
                                         const MatrixXfR& base,
                                         const std::vector<int64_t>& base_ids,
                                         DenseMetric metric) {
  const int64_t k = centroids.rows();
  if (k < 1) return absl::InvalidArgumentError("the model has no centroids");
  if (centroids.cols() != base.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("centroids have d = ", centroids.cols(),
                                                   " but base rows have d = ", base.cols()));
  }
  if (static_cast<int64_t>(assignments.size()) != base.rows()) {
    return absl::InvalidArgumentError(absl::StrCat("assignments has ", assignments.size(),
                                                   " labels for ", base.rows(), " rows"));
  }
  if (absl::Status status = CheckIds(base_ids, base.rows(), "base_ids"); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckFinite(centroids, "centroids"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(base, "base"); !status.ok()) return status;
  for (size_t r = 0; r < assignments.size(); ++r) {
    if (assignments[r] < 0 || assignments[r] >= k) {
      return absl::InvalidArgumentError(absl::StrCat("assignment of row ", r, " is ",
                                                     assignments[r], ", outside [0, ", k, ")"));
    }
  }

  IvfIndex index;
  index.cosine_centroids_ = cosine_centroids;
  index.metric_ = metric;
  index.centroids_ = cosine_centroids ? PrepareDenseRows(centroids, DenseMetric::kCosine)
                                      : centroids;
  index.list_ptr_.assign(static_cast<size_t>(k) + 1, 0);
  for (int32_t label : assignments) ++index.list_ptr_[static_cast<size_t>(label) + 1];
  for (int64_t c = 0; c < k; ++c) index.list_ptr_[c + 1] += index.list_ptr_[c];
  std::vector<int64_t> next(index.list_ptr_.begin(), index.list_ptr_.end() - 1);
  index.rows_.resize(base.rows(), base.cols());
  index.ids_.resize(static_cast<size_t>(base.rows()));
  for (int64_t r = 0; r < base.rows(); ++r) {
    const int64_t slot = next[assignments[r]]++;
    index.rows_.row(slot) = base.row(r);
    index.ids_[slot] = base_ids[r];
  }
  return index;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> IvfIndex::Search(
    const MatrixXfR& raw_queries, const MatrixXfR& prepared_queries,
    const std::vector<int64_t>& query_ids, const DenseSearchOptions& options, int nprobe) const {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (options.metric != metric_) {
    return absl::InvalidArgumentError(
        "the search metric differs from the metric the index was built for; rebuild the index");
  }
  if (nprobe < 1) {
    return absl::InvalidArgumentError(absl::StrCat("nprobe is ", nprobe, "; it must be at least 1"));
  }
  const int64_t d = centroids_.cols();
  if (raw_queries.cols() != d || prepared_queries.cols() != d ||
      raw_queries.rows() != prepared_queries.rows()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "queries are ", raw_queries.rows(), "×", raw_queries.cols(), " (raw) and ",
        prepared_queries.rows(), "×", prepared_queries.cols(), " (prepared); both must be q×", d));
  }
  if (options.exclude_self) {
    if (absl::Status status = CheckIds(query_ids, raw_queries.rows(), "query_ids");
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckFinite(raw_queries, "queries"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(prepared_queries, "queries"); !status.ok()) return status;

  const int64_t q = raw_queries.rows();
  const int64_t k = centroids_.rows();
  const int64_t probes = std::min<int64_t>(nprobe, k);
  const bool bounded = IsBounded(metric_);
  Eigen::VectorXf centroid_sq_norms = centroids_.rowwise().squaredNorm();
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(q));
  const int64_t num_blocks = (q + kIvfQueryBlock - 1) / kIvfQueryBlock;

#pragma omp parallel if (num_blocks > 1)
  {
    std::vector<TopKAccumulator> tops;
    std::vector<int32_t> order(static_cast<size_t>(k));
    std::vector<std::vector<int32_t>> queries_of_list(static_cast<size_t>(k));
    MatrixXfR gathered;
    MatrixXfR scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < num_blocks; ++block) {
      const int64_t q0 = block * kIvfQueryBlock;
      const int64_t bq = std::min(kIvfQueryBlock, q - q0);
      tops.assign(static_cast<size_t>(bq), TopKAccumulator(options.k, ScoreOrder::kLargerIsBetter));
      for (std::vector<int32_t>& list : queries_of_list) list.clear();

      // Probes: the nprobe nearest centroids of each query under the model's distance,
      // ties by centroid index.
      MatrixXfR raw_block = raw_queries.middleRows(q0, bq);
      if (cosine_centroids_) raw_block = PrepareDenseRows(raw_block, DenseMetric::kCosine);
      const MatrixXfR centroid_dots = raw_block * centroids_.transpose();
      for (int64_t r = 0; r < bq; ++r) {
        auto distance = [&](int32_t c) {
          return cosine_centroids_ ? 1.0f - centroid_dots(r, c)
                                   : centroid_sq_norms[c] - 2.0f * centroid_dots(r, c);
        };
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + probes, order.end(),
                          [&](int32_t a, int32_t b) {
                            const float da = distance(a);
                            const float db = distance(b);
                            return da != db ? da < db : a < b;
                          });
        for (int64_t p = 0; p < probes; ++p) queries_of_list[order[p]].push_back(static_cast<int32_t>(r));
      }

      // Each probed list is multiplied once with all the block's queries that probe it.
      for (int64_t c = 0; c < k; ++c) {
        const std::vector<int32_t>& members = queries_of_list[c];
        const int64_t list_begin = list_ptr_[c];
        const int64_t list_size = list_ptr_[c + 1] - list_begin;
        if (members.empty() || list_size == 0) continue;
        const int64_t m = static_cast<int64_t>(members.size());
        gathered.resize(m, d);
        for (int64_t i = 0; i < m; ++i) gathered.row(i) = prepared_queries.row(q0 + members[i]);
        // Long lists are read in chunks, so the score buffer stays bounded.
        for (int64_t c0 = 0; c0 < list_size; c0 += kDenseBaseBlock) {
          const int64_t chunk = std::min(kDenseBaseBlock, list_size - c0);
          scores.resize(m, chunk);
          scores.noalias() = gathered * rows_.middleRows(list_begin + c0, chunk).transpose();
          for (int64_t i = 0; i < m; ++i) {
            const int64_t query = q0 + members[i];
            const int64_t self_id = options.exclude_self ? query_ids[query] : -1;
            ScanScores(scores.row(i).data(), chunk, ids_.data() + list_begin + c0, self_id,
                       options.exclude_self, bounded, &tops[members[i]]);
          }
        }
      }
      for (int64_t r = 0; r < bq; ++r) result[q0 + r] = tops[r].TakeSorted();
    }
  }
  return result;
}

}  // namespace cohort
