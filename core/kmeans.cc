#include "core/kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace cohort {
namespace {

constexpr int kMaxK = 100000;
constexpr int kMaxIter = 100000;
constexpr int kMaxNInit = 100;
constexpr int kMaxLocalTrials = 1000;
constexpr double kMaxOversampling = 1e7;
constexpr int kMaxInitRounds = 100;
// k-means‖ rounds run past init_rounds while fewer than k candidates were found.
constexpr int kMaxExtraInitRounds = 100;
constexpr int kMaxBatchSize = 100000000;
constexpr int kMaxNoImprovement = 100000;

absl::Status CheckRange(const char* field, int value, int min, int max) {
  if (value >= min && value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s = %d is invalid; %s must be in [%d, %d]", field, value, field, min, max));
}

// splitmix64 finalizer (Steele, Lea and Flood 2014): spreads nearby seeds apart.
uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The random draws of one run. std::uniform_real_distribution is not used because its
// output is implementation-defined; this one gives the same doubles on every platform.
class RunRandom {
 public:
  RunRandom(uint64_t seed, int run)
      : engine_(SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(run))) {}

  // Uniform in [0, 1), 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

 private:
  std::mt19937_64 engine_;
};

absl::Status InternalBackendError(const char* call, size_t got, size_t expected) {
  return absl::InternalError(absl::StrFormat(
      "backend %s returned %d results, expected %d", call, got, expected));
}

struct DataStats {
  int64_t num_rows = 0;
  double data_scale = 0;
  std::vector<ShardBatchRows> shard_rows;  // rows per shard, in shard order
};

// Merges the per-shard moments in shard order. data_scale is the square root of the mean
// over features of the population variance.
absl::StatusOr<DataStats> ComputeDataStats(KMeansBackend& backend) {
  COHORT_ASSIGN_OR_RETURN(std::vector<ShardMoments> moments, backend.Moments());
  const int d = backend.dim();
  if (d < 1) {
    return absl::FailedPreconditionError(
        absl::StrFormat("dataset has %d feature columns; K-means needs at least 1", d));
  }
  std::vector<double> sum(d, 0.0);
  std::vector<double> sum_sq(d, 0.0);
  DataStats stats;
  for (const ShardMoments& shard : moments) {
    stats.shard_rows.push_back(ShardBatchRows{shard.shard_id, shard.rows});
    if (shard.rows == 0) continue;
    if (shard.sum.size() != static_cast<size_t>(d) || shard.sum_sq.size() != sum.size()) {
      return InternalBackendError("Moments column sums", shard.sum.size(), d);
    }
    stats.num_rows += shard.rows;
    for (int j = 0; j < d; ++j) {
      sum[j] += shard.sum[j];
      sum_sq[j] += shard.sum_sq[j];
    }
  }
  if (stats.num_rows == 0) return absl::FailedPreconditionError("dataset has no rows");

  const double n = static_cast<double>(stats.num_rows);
  double variance_sum = 0;
  for (int j = 0; j < d; ++j) {
    const double mean = sum[j] / n;
    variance_sum += std::max(0.0, sum_sq[j] / n - mean * mean);
  }
  stats.data_scale = std::sqrt(variance_sum / d);
  return stats;
}

double TotalWeight(const std::vector<ShardSum>& sums) {
  double total = 0;
  for (const ShardSum& shard : sums) total += shard.value;
  return total;
}

// Checks that some row can become a center. Errors: FailedPrecondition when the
// sampling weights of a reset state sum to 0.
absl::Status CheckSomeRowWeighs(const std::vector<ShardSum>& sums) {
  if (TotalWeight(sums) > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "every row has sample weight 0, or is all zero under the cosine distance, so no row "
      "can become a center; give some users a positive weight");
}

// Maps a global offset in [0, total) to a shard and an offset inside it, walking the
// shards in shard order. An offset at or past the end (rounding) maps to the end of the
// last shard with weight, where PickByOffset returns its last row with weight.
ShardOffset LocateOffset(const std::vector<ShardSum>& sums, double offset) {
  double before = 0;
  const ShardSum* last_with_weight = nullptr;
  for (const ShardSum& shard : sums) {
    if (shard.value <= 0) continue;
    last_with_weight = &shard;
    if (offset < before + shard.value) {
      return ShardOffset{shard.shard_id, std::max(0.0, offset - before)};
    }
    before += shard.value;
  }
  if (last_with_weight == nullptr) return ShardOffset{sums.front().shard_id, 0};
  return ShardOffset{last_with_weight->shard_id, last_with_weight->value};
}

// Draws `count` points with probability proportional to their weight.
absl::StatusOr<MatrixXfR> DrawPoints(KMeansBackend& backend, const std::vector<ShardSum>& sums,
                                     int count, RunRandom& random) {
  const double total = TotalWeight(sums);
  std::vector<ShardOffset> offsets;
  offsets.reserve(count);
  for (int i = 0; i < count; ++i) offsets.push_back(LocateOffset(sums, random.Uniform() * total));

  COHORT_ASSIGN_OR_RETURN(std::vector<ShardPoint> points, backend.Pick(offsets));
  if (points.size() != offsets.size()) {
    return InternalBackendError("Pick", points.size(), offsets.size());
  }
  const int d = backend.dim();
  MatrixXfR values(count, d);
  for (int i = 0; i < count; ++i) {
    if (points[i].row < 0 || points[i].values.size() != static_cast<size_t>(d)) {
      return absl::InternalError(absl::StrFormat(
          "backend Pick returned no point for offset %g in shard %d, whose weight is positive",
          offsets[i].offset, offsets[i].shard_id));
    }
    values.row(i) = Eigen::Map<const Eigen::RowVectorXf>(points[i].values.data(), d);
  }
  return values;
}

// Greedy k-means++ (Arthur and Vassilvitskii 2007, with the local trials of
// scikit-learn's _kmeans_plusplus in sklearn/cluster/_kmeans.py). The first center is a
// uniformly random row. Each next center is the best, by resulting potential, of
// `local_trials` rows drawn with probability proportional to D². Stops early when the
// potential is 0, because then every row equals a chosen center. Returns the centers
// chosen, which are all distinct.
absl::StatusOr<MatrixXfR> SeedKMeansPlusPlus(KMeansBackend& backend, int k, int local_trials,
                                             int run, RunRandom& random,
                                             const KMeansProgressCallback& progress) {
  const int d = backend.dim();
  MatrixXfR centers(k, d);

  // With no center chosen, every row weighs its sample weight, so this draw is uniform
  // over rows of equal weight.
  COHORT_ASSIGN_OR_RETURN(std::vector<ShardSum> sums,
                          backend.AddCenters(MatrixXfR(0, d), /*reset=*/true));
  COHORT_RETURN_IF_ERROR(CheckSomeRowWeighs(sums));
  COHORT_ASSIGN_OR_RETURN(MatrixXfR first, DrawPoints(backend, sums, 1, random));
  centers.row(0) = first.row(0);
  COHORT_ASSIGN_OR_RETURN(sums, backend.AddCenters(first, /*reset=*/false));
  int chosen = 1;

  KMeansProgress event;
  event.phase = "init";
  event.run = run;
  event.centers_chosen = chosen;
  event.inertia = TotalWeight(sums);
  if (progress) progress(event);

  while (chosen < k && TotalWeight(sums) > 0) {
    COHORT_ASSIGN_OR_RETURN(MatrixXfR candidates,
                            DrawPoints(backend, sums, local_trials, random));
    COHORT_ASSIGN_OR_RETURN(std::vector<std::vector<double>> per_shard,
                            backend.TrialPotentials(candidates));
    std::vector<double> potentials(local_trials, 0.0);
    for (const std::vector<double>& shard : per_shard) {
      if (shard.size() != potentials.size()) {
        return InternalBackendError("TrialPotentials", shard.size(), potentials.size());
      }
      for (int c = 0; c < local_trials; ++c) potentials[c] += shard[c];
    }
    // min_element returns the first of equal minima.
    const int best = static_cast<int>(std::min_element(potentials.begin(), potentials.end()) -
                                      potentials.begin());

    centers.row(chosen) = candidates.row(best);
    COHORT_ASSIGN_OR_RETURN(sums, backend.AddCenters(candidates.middleRows(best, 1),
                                                     /*reset=*/false));
    ++chosen;

    event.centers_chosen = chosen;
    event.inertia = TotalWeight(sums);
    if (progress) progress(event);
  }
  return MatrixXfR(centers.topRows(chosen));
}

// The partial results of one LloydStep merged in shard order.
struct MergedStep {
  MatrixXdR sums;               // k×d
  std::vector<int64_t> counts;  // k
  std::vector<double> weighted_counts;  // k
  double inertia = 0;
  // The farthest rows of all shards by (sq_dist desc, shard asc, row asc).
  std::vector<ShardPoint> farthest;
};

absl::StatusOr<MergedStep> MergedLloydStep(KMeansBackend& backend, const MatrixXfR& centroids,
                                           int num_farthest) {
  COHORT_ASSIGN_OR_RETURN(std::vector<LloydPartial> partials,
                          backend.LloydStep(centroids, num_farthest));
  const int64_t k = centroids.rows();
  MergedStep merged;
  merged.sums = MatrixXdR::Zero(k, centroids.cols());
  merged.counts.assign(k, 0);
  merged.weighted_counts.assign(k, 0.0);
  for (LloydPartial& partial : partials) {
    if (partial.sums.rows() != k || partial.sums.cols() != centroids.cols() ||
        partial.counts.size() != static_cast<size_t>(k)) {
      return InternalBackendError("LloydStep centroid sums", partial.counts.size(), k);
    }
    if (!partial.weighted_counts.empty() &&
        partial.weighted_counts.size() != static_cast<size_t>(k)) {
      return InternalBackendError("LloydStep weighted counts", partial.weighted_counts.size(), k);
    }
    merged.sums += partial.sums;
    for (int64_t j = 0; j < k; ++j) {
      merged.counts[j] += partial.counts[j];
      merged.weighted_counts[j] += partial.weighted_counts.empty()
                                       ? static_cast<double>(partial.counts[j])
                                       : partial.weighted_counts[j];
    }
    merged.inertia += partial.inertia;
    for (ShardPoint& point : partial.farthest) merged.farthest.push_back(std::move(point));
  }
  std::stable_sort(merged.farthest.begin(), merged.farthest.end(),
                   [](const ShardPoint& a, const ShardPoint& b) {
                     if (a.sq_dist != b.sq_dist) return a.sq_dist > b.sq_dist;
                     if (a.shard_id != b.shard_id) return a.shard_id < b.shard_id;
                     return a.row < b.row;
                   });
  return merged;
}

// Moves each empty cluster, in index order, to the next of the farthest rows from their
// centroids. Skips rows at distance 0 and rows equal to a row already used, so no two
// reseeded centroids coincide. A cluster stays empty, at its old centroid, when the
// farthest rows run out. Returns the number of clusters reseeded.
// NOTE: unlike scikit-learn, the cluster a row leaves keeps its mean until the next
// iteration, because ShardPoint does not carry the row's label.
int64_t ReseedEmptyClusters(const std::vector<int64_t>& counts,
                            const std::vector<ShardPoint>& farthest, MatrixXfR* centroids) {
  const int d = static_cast<int>(centroids->cols());
  std::vector<const ShardPoint*> used;
  size_t next = 0;
  int64_t reseeded = 0;
  for (size_t j = 0; j < counts.size(); ++j) {
    if (counts[j] > 0) continue;
    while (next < farthest.size()) {
      const ShardPoint& point = farthest[next++];
      if (point.sq_dist <= 0) {
        next = farthest.size();
        break;
      }
      const bool duplicate = std::any_of(used.begin(), used.end(), [&point](const ShardPoint* p) {
        return p->values == point.values;
      });
      if (duplicate) continue;
      used.push_back(&point);
      centroids->row(j) = Eigen::Map<const Eigen::RowVectorXf>(point.values.data(), d);
      ++reseeded;
      break;
    }
  }
  return reseeded;
}

// __extension__ keeps -Wpedantic quiet about the GCC 128-bit integer.
__extension__ using Int128 = __int128;

// k-means‖ seeding (Bahmani et al. 2012, "Scalable K-Means++"). The first candidate is a
// row drawn with probability proportional to its weight. Each round, every shard picks
// each row with probability min(1, ℓ w D² / φ), where φ is the global Σ w D², and the
// picks join the candidates in shard order. Each candidate then weighs the total weight
// of the rows nearest to it, and a weighted greedy k-means++ over the candidates,
// run at the driver with the run's generator, chooses the k centers.
absl::StatusOr<MatrixXfR> SeedKMeansParallel(KMeansBackend& backend, const KMeansOptions& options,
                                             int local_trials, int run, RunRandom& random,
                                             const KMeansProgressCallback& progress) {
  const int d = backend.dim();
  const int k = options.k;
  const double oversampling = options.oversampling > 0 ? options.oversampling : 2.0 * k;

  COHORT_ASSIGN_OR_RETURN(std::vector<ShardSum> sums,
                          backend.AddCenters(MatrixXfR(0, d), /*reset=*/true));
  COHORT_RETURN_IF_ERROR(CheckSomeRowWeighs(sums));
  COHORT_ASSIGN_OR_RETURN(MatrixXfR candidates, DrawPoints(backend, sums, 1, random));
  COHORT_ASSIGN_OR_RETURN(sums, backend.AddCenters(candidates, /*reset=*/false));
  double potential = TotalWeight(sums);

  KMeansProgress event;
  event.phase = "init";
  event.run = run;
  for (int round = 0; potential > 0; ++round) {
    const bool enough = candidates.rows() >= k;
    if (round >= options.init_rounds + (enough ? 0 : kMaxExtraInitRounds)) break;

    COHORT_ASSIGN_OR_RETURN(
        std::vector<ShardCandidates> picks,
        backend.SampleCandidates(options.seed, run, round, oversampling, potential));
    int64_t num_picks = 0;
    for (const ShardCandidates& shard : picks) num_picks += shard.points.size();
    if (num_picks == 0) continue;

    MatrixXfR added(num_picks, d);
    int64_t next = 0;
    for (const ShardCandidates& shard : picks) {
      for (const ShardPoint& point : shard.points) {
        if (point.values.size() != static_cast<size_t>(d)) {
          return InternalBackendError("SampleCandidates point values", point.values.size(), d);
        }
        added.row(next++) = Eigen::Map<const Eigen::RowVectorXf>(point.values.data(), d);
      }
    }
    MatrixXfR joined(candidates.rows() + num_picks, d);
    joined << candidates, added;
    candidates = std::move(joined);
    COHORT_ASSIGN_OR_RETURN(sums, backend.AddCenters(added, /*reset=*/false));
    potential = TotalWeight(sums);

    event.centers_chosen = static_cast<int>(candidates.rows());
    event.inertia = potential;
    if (progress) progress(event);
  }

  // Ties go to the lower index, so of two equal candidates the later one weighs 0 and is
  // never chosen.
  COHORT_ASSIGN_OR_RETURN(MergedStep step, MergedLloydStep(backend, candidates, 0));
  std::vector<float> weights(step.weighted_counts.begin(), step.weighted_counts.end());
  KMeansShard local(0, &candidates, &weights);
  InProcessKMeansBackend local_backend({&local});
  return SeedKMeansPlusPlus(local_backend, k, local_trials, run, random, nullptr);
}

// Splits `batch_size` rows over the shards in proportion to their rows (Hamilton's
// largest remainders; equal remainders go to the lower shard id). The batch is at most
// the total row count.
std::vector<ShardBatchRows> SplitBatch(const std::vector<ShardBatchRows>& shard_rows,
                                       int64_t num_rows, int64_t batch_size) {
  const int64_t batch = std::min(batch_size, num_rows);
  std::vector<ShardBatchRows> shares;
  std::vector<std::pair<int64_t, size_t>> remainders;  // (remainder, index)
  int64_t assigned = 0;
  for (size_t s = 0; s < shard_rows.size(); ++s) {
    // batch × rows can pass 2^63, so the product is 128-bit.
    const Int128 product = static_cast<Int128>(batch) * shard_rows[s].rows;
    const int64_t share = static_cast<int64_t>(product / num_rows);
    remainders.emplace_back(static_cast<int64_t>(product % num_rows), s);
    shares.push_back(ShardBatchRows{shard_rows[s].shard_id, share});
    assigned += share;
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t r = 0; assigned < batch && r < remainders.size(); ++r, ++assigned) {
    ++shares[remainders[r].second].rows;
  }
  return shares;
}

struct LloydRun {
  MatrixXfR centroids;
  int iterations = 0;
  bool converged = false;
  int64_t reseeded_clusters = 0;
};

// Lloyd iterations from `centroids` until the largest centroid move is at most
// `max_shift_tol` or max_iter iterations have run.
// Scales centroid row j to unit norm; a zero row keeps `fallback`, the centroid before
// the update, because a mean of opposite unit rows has no direction.
void NormalizeCentroid(const Eigen::RowVectorXf& fallback, int64_t j, MatrixXfR* centroids) {
  const double norm = centroids->row(j).cast<double>().norm();
  if (norm > 0) {
    centroids->row(j) = (centroids->row(j).cast<double>() / norm).cast<float>();
  } else {
    centroids->row(j) = fallback;
  }
}

// The objective reported for the distance: inertia from squared distances, halved for
// cosine because ‖x − c‖² = 2 (1 − x·c) for unit x and c.
double ReportedInertia(double sq_inertia, bool cosine) {
  return cosine ? 0.5 * sq_inertia : sq_inertia;
}

absl::StatusOr<LloydRun> IterateLloyd(KMeansBackend& backend, MatrixXfR centroids, int max_iter,
                                      double max_shift_tol, bool cosine, int run,
                                      const KMeansProgressCallback& progress) {
  const int64_t k = centroids.rows();
  LloydRun result;
  // Farthest rows requested with each pass. Empty clusters tend to come in consecutive
  // iterations, so the pass after one requests candidates up front. That saves the
  // second pass when they suffice.
  int farthest_per_pass = 0;
  for (int iteration = 1; iteration <= max_iter; ++iteration) {
    COHORT_ASSIGN_OR_RETURN(MergedStep step,
                            MergedLloydStep(backend, centroids, farthest_per_pass));

    MatrixXfR updated = centroids;
    int num_empty = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (step.counts[j] == 0) {
        ++num_empty;
        continue;
      }
      updated.row(j) = (step.sums.row(j) / step.weighted_counts[j]).cast<float>();
      if (cosine) NormalizeCentroid(centroids.row(j), j, &updated);
    }
    // Empty clusters are rare, so their farthest rows come from a second pass with the
    // same centroids unless this pass already requested enough. Each shard returns its
    // own farthest rows, so the first num_empty of the merged list are the same rows a
    // pass asking for num_empty returns.
    if (num_empty > 0) {
      if (num_empty <= farthest_per_pass) {
        step.farthest.resize(std::min(step.farthest.size(), static_cast<size_t>(num_empty)));
      } else {
        COHORT_ASSIGN_OR_RETURN(step, MergedLloydStep(backend, centroids, num_empty));
      }
      result.reseeded_clusters += ReseedEmptyClusters(step.counts, step.farthest, &updated);
    }
    farthest_per_pass = num_empty > 0 ? std::min<int>(static_cast<int>(k), 2 * num_empty) : 0;

    double max_shift = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double shift =
          (updated.row(j).cast<double>() - centroids.row(j).cast<double>()).norm();
      max_shift = std::max(max_shift, shift);
    }
    centroids = std::move(updated);
    result.iterations = iteration;

    if (progress) {
      KMeansProgress event;
      event.phase = "lloyd";
      event.run = run;
      event.iteration = iteration;
      event.centers_chosen = static_cast<int>(k);
      event.inertia = ReportedInertia(step.inertia, cosine);
      event.max_shift = max_shift;
      event.centroids = &centroids;
      progress(event);
    }
    if (max_shift <= max_shift_tol) {
      result.converged = true;
      break;
    }
  }
  result.centroids = std::move(centroids);
  return result;
}

// Mini-batch K-means (Sculley 2010, "Web-Scale K-Means Clustering"). The centroid
// update, smoothed-inertia early stop and random reassignment follow scikit-learn's
// MiniBatchKMeans as recalled, not checked against its source. Each centroid with batch
// weight b and cumulative weight n moves to (n c + batch sum) / (n + b), that is by the
// learning rate b / (n + b) towards the batch mean.
absl::StatusOr<LloydRun> IterateMiniBatch(KMeansBackend& backend, MatrixXfR centroids,
                                          const KMeansOptions& options, const DataStats& stats,
                                          int run, RunRandom& random,
                                          const KMeansProgressCallback& progress) {
  const int64_t k = centroids.rows();
  const int64_t d = centroids.cols();
  const bool cosine = options.distance == KMeansDistance::kCosine;
  const std::vector<ShardBatchRows> shares =
      SplitBatch(stats.shard_rows, stats.num_rows, options.batch_size);
  const int64_t batch = std::min<int64_t>(options.batch_size, stats.num_rows);
  const int64_t max_steps =
      options.max_iter * ((stats.num_rows + options.batch_size - 1) / options.batch_size);
  // Smoothing factor of the batch inertia: 2 / (batches per pass + 1).
  const double alpha =
      std::min(1.0, 2.0 * static_cast<double>(batch) / (static_cast<double>(stats.num_rows) + 1));

  MatrixXdR current = centroids.cast<double>();
  std::vector<double> cumulative(k, 0.0);
  int64_t rows_since_reassign = 0;
  double smoothed = 0;
  double best_smoothed = 0;
  int no_improvement = 0;
  LloydRun result;

  for (int64_t step = 0; step < max_steps; ++step) {
    // Reassign once 10·k rows have been drawn since the last time. scikit-learn's
    // MiniBatchKMeans._random_reassign also reassigns whenever a centroid has no weight
    // yet. That moves centroids that no batch has reached so far onto rows that other
    // centroids already hold, and with k near the batch size it moves most of them after
    // the first step (k = n then leaves segments empty), so this driver does not.
    const bool reassign_step =
        options.reassignment_ratio > 0 && step > 0 && rows_since_reassign >= 10 * k;
    const int num_points = reassign_step ? static_cast<int>(k) : 0;

    COHORT_ASSIGN_OR_RETURN(std::vector<MiniBatchPartial> partials,
                            backend.MiniBatchStep(centroids, options.seed, run, step, shares,
                                                  num_points));
    MatrixXdR sums = MatrixXdR::Zero(k, d);
    std::vector<double> batch_weights(k, 0.0);
    double inertia = 0;
    std::vector<const ShardPoint*> points;
    for (const MiniBatchPartial& partial : partials) {
      if (partial.sums.rows() != k || partial.sums.cols() != d ||
          partial.weighted_counts.size() != static_cast<size_t>(k)) {
        return InternalBackendError("MiniBatchStep centroid sums", partial.weighted_counts.size(), k);
      }
      sums += partial.sums;
      for (int64_t j = 0; j < k; ++j) batch_weights[j] += partial.weighted_counts[j];
      inertia += partial.inertia;
      for (const ShardPoint& point : partial.points) {
        if (point.values.size() == static_cast<size_t>(d)) points.push_back(&point);
      }
    }

    MatrixXfR updated = centroids;
    for (int64_t j = 0; j < k; ++j) {
      if (batch_weights[j] <= 0) continue;
      const double total = cumulative[j] + batch_weights[j];
      current.row(j) = (current.row(j) * cumulative[j] + sums.row(j)) / total;
      cumulative[j] = total;
      updated.row(j) = current.row(j).cast<float>();
      if (cosine) {
        NormalizeCentroid(centroids.row(j), j, &updated);
        current.row(j) = updated.row(j).cast<double>();
      }
    }
    rows_since_reassign += batch;

    if (reassign_step) {
      rows_since_reassign = 0;
      const double max_weight = *std::max_element(cumulative.begin(), cumulative.end());
      const double threshold = options.reassignment_ratio * max_weight;
      double min_kept = max_weight;
      std::vector<int64_t> low;
      for (int64_t j = 0; j < k; ++j) {
        if (cumulative[j] < threshold) {
          low.push_back(j);
        } else {
          min_kept = std::min(min_kept, cumulative[j]);
        }
      }
      // Each low centroid takes a distinct batch row drawn uniformly with the run's
      // generator. The reassigned weight becomes the smallest kept weight, so the centroid
      // is not reassigned again at once.
      for (int64_t j : low) {
        if (points.empty()) break;
        const size_t pick = std::min(points.size() - 1,
                                     static_cast<size_t>(random.Uniform() * points.size()));
        updated.row(j) =
            Eigen::Map<const Eigen::RowVectorXf>(points[pick]->values.data(), d);
        current.row(j) = updated.row(j).cast<double>();
        cumulative[j] = min_kept;
        points.erase(points.begin() + static_cast<std::ptrdiff_t>(pick));
        ++result.reseeded_clusters;
      }
    }
    centroids = std::move(updated);
    result.iterations = static_cast<int>(std::min<int64_t>(step + 1, INT32_MAX));

    const double batch_inertia = inertia / static_cast<double>(batch);
    smoothed = step == 0 ? batch_inertia : smoothed * (1 - alpha) + batch_inertia * alpha;
    if (progress) {
      KMeansProgress event;
      event.phase = "minibatch";
      event.run = run;
      event.iteration = result.iterations;
      event.centers_chosen = static_cast<int>(k);
      event.inertia = ReportedInertia(inertia, cosine);
      event.centroids = &centroids;
      progress(event);
    }
    if (step == 0 || smoothed < best_smoothed) {
      best_smoothed = smoothed;
      no_improvement = 0;
    } else if (options.max_no_improvement > 0 && ++no_improvement >= options.max_no_improvement) {
      result.converged = true;
      break;
    }
  }
  result.centroids = std::move(centroids);
  return result;
}

// Runs the extra assignment pass for the final centroids and fills the result.
absl::StatusOr<KMeansResult> FinishRun(KMeansBackend& backend, LloydRun lloyd, bool cosine,
                                       int run, const KMeansProgressCallback& progress) {
  COHORT_ASSIGN_OR_RETURN(MergedStep step, MergedLloydStep(backend, lloyd.centroids, 0));
  KMeansResult result;
  result.effective_k = static_cast<int>(lloyd.centroids.rows());
  result.requested_k = result.effective_k;
  result.centroids = std::move(lloyd.centroids);
  result.sizes = std::move(step.counts);
  result.inertia = ReportedInertia(step.inertia, cosine);
  result.iterations = lloyd.iterations;
  result.converged = lloyd.converged;
  result.best_run = run;
  result.reseeded_clusters = lloyd.reseeded_clusters;

  if (progress) {
    KMeansProgress event;
    event.phase = "final";
    event.run = run;
    event.iteration = lloyd.iterations;
    event.centers_chosen = result.effective_k;
    event.inertia = result.inertia;
    progress(event);
  }
  return result;
}

}  // namespace

absl::Status KMeansOptions::Validate() const {
  COHORT_RETURN_IF_ERROR(CheckRange("k", k, 1, kMaxK));
  COHORT_RETURN_IF_ERROR(CheckRange("max_iter", max_iter, 1, kMaxIter));
  if (!(tol >= 0 && tol <= 1)) {  // also rejects NaN
    return absl::InvalidArgumentError(
        absl::StrFormat("tol = %g is invalid; tol must be in [0, 1]", tol));
  }
  COHORT_RETURN_IF_ERROR(CheckRange("n_init", n_init, 1, kMaxNInit));
  COHORT_RETURN_IF_ERROR(CheckRange("local_trials", local_trials, 0, kMaxLocalTrials));
  if (init != KMeansInit::kKMeansPlusPlus && init != KMeansInit::kKMeansParallel) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "init = %d is invalid; init must be kKMeansPlusPlus or kKMeansParallel",
        static_cast<int>(init)));
  }
  if (!(oversampling >= 0 && oversampling <= kMaxOversampling)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "oversampling = %g is invalid; oversampling must be in [0, %g] (0 means 2·k)",
        oversampling, kMaxOversampling));
  }
  COHORT_RETURN_IF_ERROR(CheckRange("init_rounds", init_rounds, 1, kMaxInitRounds));
  if (algorithm != KMeansAlgorithm::kLloyd && algorithm != KMeansAlgorithm::kMiniBatch) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "algorithm = %d is invalid; algorithm must be kLloyd or kMiniBatch",
        static_cast<int>(algorithm)));
  }
  COHORT_RETURN_IF_ERROR(CheckRange("batch_size", batch_size, 1, kMaxBatchSize));
  COHORT_RETURN_IF_ERROR(
      CheckRange("max_no_improvement", max_no_improvement, 0, kMaxNoImprovement));
  if (!(reassignment_ratio >= 0 && reassignment_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reassignment_ratio = %g is invalid; reassignment_ratio must be in [0, 1]",
        reassignment_ratio));
  }
  if (distance != KMeansDistance::kSquaredEuclidean && distance != KMeansDistance::kCosine) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "distance = %d is invalid; distance must be kSquaredEuclidean or kCosine",
        static_cast<int>(distance)));
  }
  return absl::OkStatus();
}

absl::Status KMeansBackend::SetDistance(KMeansDistance distance) {
  if (distance == KMeansDistance::kSquaredEuclidean) return absl::OkStatus();
  return absl::UnimplementedError("this K-means backend does not support the cosine distance");
}

absl::StatusOr<std::vector<ShardCandidates>> KMeansBackend::SampleCandidates(
    uint64_t /*seed*/, int /*run*/, int /*round*/, double /*oversampling*/,
    double /*potential*/) {
  return absl::UnimplementedError("this K-means backend does not support k-means|| seeding");
}

absl::StatusOr<std::vector<MiniBatchPartial>> KMeansBackend::MiniBatchStep(
    const MatrixXfR& /*centroids*/, uint64_t /*seed*/, int /*run*/, int64_t /*step*/,
    const std::vector<ShardBatchRows>& /*batch_rows*/, int /*num_points*/) {
  return absl::UnimplementedError("this K-means backend does not support mini-batch K-means");
}

InProcessKMeansBackend::InProcessKMeansBackend(std::vector<KMeansShard*> shards)
    : shards_(std::move(shards)) {}

int InProcessKMeansBackend::dim() const { return shards_.front()->dim(); }

absl::StatusOr<std::vector<ShardMoments>> InProcessKMeansBackend::Moments() {
  std::vector<ShardMoments> moments;
  moments.reserve(shards_.size());
  for (const KMeansShard* shard : shards_) {
    ShardMoments m;
    m.shard_id = shard->shard_id();
    m.rows = shard->num_rows();
    shard->ColumnMoments(&m.sum, &m.sum_sq);
    moments.push_back(std::move(m));
  }
  return moments;
}

absl::StatusOr<std::vector<ShardSum>> InProcessKMeansBackend::AddCenters(const MatrixXfR& centers,
                                                                         bool reset) {
  std::vector<ShardSum> sums;
  sums.reserve(shards_.size());
  for (KMeansShard* shard : shards_) {
    if (reset) shard->ResetMinDistances();
    const double value = shard->AddCenters(centers);
    sums.push_back(ShardSum{shard->shard_id(), shard->num_rows(), value});
  }
  return sums;
}

absl::StatusOr<std::vector<std::vector<double>>> InProcessKMeansBackend::TrialPotentials(
    const MatrixXfR& candidates) {
  std::vector<std::vector<double>> potentials;
  potentials.reserve(shards_.size());
  for (const KMeansShard* shard : shards_) potentials.push_back(shard->TrialPotentials(candidates));
  return potentials;
}

absl::StatusOr<std::vector<ShardPoint>> InProcessKMeansBackend::Pick(
    const std::vector<ShardOffset>& offsets) {
  std::vector<ShardPoint> points;
  points.reserve(offsets.size());
  for (const ShardOffset& offset : offsets) {
    const auto it = std::lower_bound(
        shards_.begin(), shards_.end(), offset.shard_id,
        [](const KMeansShard* shard, int id) { return shard->shard_id() < id; });
    if (it == shards_.end() || (*it)->shard_id() != offset.shard_id) {
      return absl::NotFoundError(
          absl::StrFormat("shard %d is not in this backend", offset.shard_id));
    }
    points.push_back((*it)->PickByOffset(offset.offset));
  }
  return points;
}

absl::StatusOr<std::vector<LloydPartial>> InProcessKMeansBackend::LloydStep(
    const MatrixXfR& centroids, int num_farthest) {
  std::vector<LloydPartial> partials;
  partials.reserve(shards_.size());
  for (const KMeansShard* shard : shards_) {
    partials.push_back(shard->LloydStep(centroids, num_farthest));
  }
  return partials;
}

absl::Status SetShardDistance(KMeansShard& shard, KMeansDistance distance) {
  if (distance == KMeansDistance::kCosine) {
    shard.UseCosineDistance();
  } else if (shard.cosine()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "shard %d already uses the cosine distance; build new shards for squared Euclidean",
        shard.shard_id()));
  }
  return absl::OkStatus();
}

absl::Status InProcessKMeansBackend::SetDistance(KMeansDistance distance) {
  for (KMeansShard* shard : shards_) {
    COHORT_RETURN_IF_ERROR(SetShardDistance(*shard, distance));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ShardCandidates>> InProcessKMeansBackend::SampleCandidates(
    uint64_t seed, int run, int round, double oversampling, double potential) {
  std::vector<ShardCandidates> picks;
  picks.reserve(shards_.size());
  for (const KMeansShard* shard : shards_) {
    picks.push_back(ShardCandidates{
        shard->shard_id(), shard->SampleCandidates(seed, run, round, oversampling, potential)});
  }
  return picks;
}

absl::StatusOr<std::vector<MiniBatchPartial>> InProcessKMeansBackend::MiniBatchStep(
    const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
    const std::vector<ShardBatchRows>& batch_rows, int num_points) {
  if (batch_rows.size() != shards_.size()) {
    return InternalBackendError("MiniBatchStep batch shares", batch_rows.size(), shards_.size());
  }
  std::vector<MiniBatchPartial> partials;
  partials.reserve(shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (batch_rows[s].shard_id != shards_[s]->shard_id()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch share %d is for shard %d; expected shard %d", s, batch_rows[s].shard_id,
          shards_[s]->shard_id()));
    }
    partials.push_back(
        shards_[s]->MiniBatchStep(centroids, seed, run, step, batch_rows[s].rows, num_points));
  }
  return partials;
}

absl::StatusOr<KMeansResult> RunKMeans(KMeansBackend& backend, const KMeansOptions& options,
                                       const KMeansProgressCallback& progress) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_RETURN_IF_ERROR(backend.SetDistance(options.distance));
  COHORT_ASSIGN_OR_RETURN(const DataStats stats, ComputeDataStats(backend));
  const bool cosine = options.distance == KMeansDistance::kCosine;
  const int local_trials = options.local_trials > 0
                               ? options.local_trials
                               : 2 + static_cast<int>(std::floor(std::log(options.k)));
  const double max_shift_tol = options.tol * stats.data_scale;

  KMeansResult best;
  for (int run = 0; run < options.n_init; ++run) {
    RunRandom random(options.seed, run);
    MatrixXfR seeds;
    if (options.init == KMeansInit::kKMeansParallel) {
      COHORT_ASSIGN_OR_RETURN(
          seeds, SeedKMeansParallel(backend, options, local_trials, run, random, progress));
    } else {
      COHORT_ASSIGN_OR_RETURN(
          seeds, SeedKMeansPlusPlus(backend, options.k, local_trials, run, random, progress));
    }
    LloydRun lloyd;
    if (options.algorithm == KMeansAlgorithm::kMiniBatch) {
      COHORT_ASSIGN_OR_RETURN(lloyd, IterateMiniBatch(backend, std::move(seeds), options, stats,
                                                      run, random, progress));
    } else {
      COHORT_ASSIGN_OR_RETURN(lloyd, IterateLloyd(backend, std::move(seeds), options.max_iter,
                                                  max_shift_tol, cosine, run, progress));
    }
    COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                            FinishRun(backend, std::move(lloyd), cosine, run, progress));
    COHORT_LOG_DEBUG("k-means run {}: k {}, {} iterations, inertia {}", run,
                     result.effective_k, result.iterations, result.inertia);
    // Strictly lower, so equal inertia keeps the earliest run.
    if (run == 0 || result.inertia < best.inertia) best = std::move(result);
  }

  best.requested_k = options.k;
  best.fewer_distinct_points = best.effective_k < options.k;
  best.num_rows = stats.num_rows;
  best.data_scale = stats.data_scale;
  return best;
}

namespace {

// The checked start of RunLloyd and RunMiniBatch: the initial centroids (normalized for
// the cosine distance) and the data statistics, after SetDistance.
struct GivenStart {
  MatrixXfR centroids;
  DataStats stats;
};

absl::StatusOr<GivenStart> PrepareGivenStart(KMeansBackend& backend,
                                             const MatrixXfR& initial_centroids,
                                             const KMeansOptions& options) {
  const int64_t k = initial_centroids.rows();
  if (k < 1 || k > kMaxK) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initial_centroids has %d rows; it must have between 1 and %d", k, kMaxK));
  }
  if (initial_centroids.cols() != backend.dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initial_centroids has %d columns; the dataset has %d features",
        initial_centroids.cols(), backend.dim()));
  }
  KMeansOptions checked = options;
  checked.k = static_cast<int>(k);
  COHORT_RETURN_IF_ERROR(checked.Validate());
  GivenStart start;
  start.centroids = initial_centroids;
  if (options.distance == KMeansDistance::kCosine) {
    const Eigen::VectorXf sq_norms = RowSquaredNorms(start.centroids);
    for (int64_t j = 0; j < k; ++j) {
      if (!(sq_norms[j] > 0)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "initial_centroids row %d is all zero; the cosine distance needs a direction", j));
      }
    }
    NormalizeRows(&start.centroids);
  }
  COHORT_RETURN_IF_ERROR(backend.SetDistance(options.distance));
  COHORT_ASSIGN_OR_RETURN(start.stats, ComputeDataStats(backend));
  return start;
}

}  // namespace

absl::StatusOr<KMeansResult> RunLloyd(KMeansBackend& backend, const MatrixXfR& initial_centroids,
                                      const KMeansOptions& options,
                                      const KMeansProgressCallback& progress) {
  COHORT_ASSIGN_OR_RETURN(GivenStart start,
                          PrepareGivenStart(backend, initial_centroids, options));
  const bool cosine = options.distance == KMeansDistance::kCosine;
  COHORT_ASSIGN_OR_RETURN(LloydRun lloyd,
                          IterateLloyd(backend, std::move(start.centroids), options.max_iter,
                                       options.tol * start.stats.data_scale, cosine,
                                       /*run=*/0, progress));
  COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                          FinishRun(backend, std::move(lloyd), cosine, /*run=*/0, progress));
  result.num_rows = start.stats.num_rows;
  result.data_scale = start.stats.data_scale;
  return result;
}

absl::StatusOr<KMeansResult> RunMiniBatch(KMeansBackend& backend,
                                          const MatrixXfR& initial_centroids,
                                          const KMeansOptions& options,
                                          const KMeansProgressCallback& progress) {
  COHORT_ASSIGN_OR_RETURN(GivenStart start,
                          PrepareGivenStart(backend, initial_centroids, options));
  const bool cosine = options.distance == KMeansDistance::kCosine;
  RunRandom random(options.seed, /*run=*/0);
  COHORT_ASSIGN_OR_RETURN(LloydRun lloyd,
                          IterateMiniBatch(backend, std::move(start.centroids), options,
                                           start.stats, /*run=*/0, random, progress));
  COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                          FinishRun(backend, std::move(lloyd), cosine, /*run=*/0, progress));
  result.num_rows = start.stats.num_rows;
  result.data_scale = start.stats.data_scale;
  return result;
}

}  // namespace cohort
