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

  // With no center chosen, every row weighs 1, so this draw is uniform over rows.
  COHORT_ASSIGN_OR_RETURN(std::vector<ShardSum> sums,
                          backend.AddCenters(MatrixXfR(0, d), /*reset=*/true));
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
  for (LloydPartial& partial : partials) {
    if (partial.sums.rows() != k || partial.sums.cols() != centroids.cols() ||
        partial.counts.size() != static_cast<size_t>(k)) {
      return InternalBackendError("LloydStep centroid sums", partial.counts.size(), k);
    }
    merged.sums += partial.sums;
    for (int64_t j = 0; j < k; ++j) merged.counts[j] += partial.counts[j];
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

struct LloydRun {
  MatrixXfR centroids;
  int iterations = 0;
  bool converged = false;
  int64_t reseeded_clusters = 0;
};

// Lloyd iterations from `centroids` until the largest centroid move is at most
// `max_shift_tol` or max_iter iterations have run.
absl::StatusOr<LloydRun> IterateLloyd(KMeansBackend& backend, MatrixXfR centroids, int max_iter,
                                      double max_shift_tol, int run,
                                      const KMeansProgressCallback& progress) {
  const int64_t k = centroids.rows();
  LloydRun result;
  for (int iteration = 1; iteration <= max_iter; ++iteration) {
    COHORT_ASSIGN_OR_RETURN(MergedStep step, MergedLloydStep(backend, centroids, 0));

    MatrixXfR updated = centroids;
    int num_empty = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (step.counts[j] == 0) {
        ++num_empty;
        continue;
      }
      updated.row(j) = (step.sums.row(j) / static_cast<double>(step.counts[j])).cast<float>();
    }
    // Empty clusters are rare, so their farthest rows come from a second pass with the
    // same centroids instead of a candidate list on every pass.
    if (num_empty > 0) {
      COHORT_ASSIGN_OR_RETURN(MergedStep with_farthest,
                              MergedLloydStep(backend, centroids, num_empty));
      result.reseeded_clusters +=
          ReseedEmptyClusters(step.counts, with_farthest.farthest, &updated);
    }

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
      event.inertia = step.inertia;
      event.max_shift = max_shift;
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

// Runs the extra assignment pass for the final centroids and fills the result.
absl::StatusOr<KMeansResult> FinishRun(KMeansBackend& backend, LloydRun lloyd, int run,
                                       const KMeansProgressCallback& progress) {
  COHORT_ASSIGN_OR_RETURN(MergedStep step, MergedLloydStep(backend, lloyd.centroids, 0));
  KMeansResult result;
  result.effective_k = static_cast<int>(lloyd.centroids.rows());
  result.requested_k = result.effective_k;
  result.centroids = std::move(lloyd.centroids);
  result.sizes = std::move(step.counts);
  result.inertia = step.inertia;
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
  return absl::OkStatus();
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

absl::StatusOr<KMeansResult> RunKMeans(KMeansBackend& backend, const KMeansOptions& options,
                                       const KMeansProgressCallback& progress) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_ASSIGN_OR_RETURN(const DataStats stats, ComputeDataStats(backend));
  const int local_trials = options.local_trials > 0
                               ? options.local_trials
                               : 2 + static_cast<int>(std::floor(std::log(options.k)));
  const double max_shift_tol = options.tol * stats.data_scale;

  KMeansResult best;
  for (int run = 0; run < options.n_init; ++run) {
    RunRandom random(options.seed, run);
    COHORT_ASSIGN_OR_RETURN(
        MatrixXfR seeds,
        SeedKMeansPlusPlus(backend, options.k, local_trials, run, random, progress));
    COHORT_ASSIGN_OR_RETURN(
        LloydRun lloyd,
        IterateLloyd(backend, std::move(seeds), options.max_iter, max_shift_tol, run, progress));
    COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                            FinishRun(backend, std::move(lloyd), run, progress));
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

absl::StatusOr<KMeansResult> RunLloyd(KMeansBackend& backend, const MatrixXfR& initial_centroids,
                                      const KMeansOptions& options,
                                      const KMeansProgressCallback& progress) {
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
  COHORT_ASSIGN_OR_RETURN(const DataStats stats, ComputeDataStats(backend));

  COHORT_ASSIGN_OR_RETURN(LloydRun lloyd,
                          IterateLloyd(backend, initial_centroids, options.max_iter,
                                       options.tol * stats.data_scale, /*run=*/0, progress));
  COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                          FinishRun(backend, std::move(lloyd), /*run=*/0, progress));
  result.num_rows = stats.num_rows;
  result.data_scale = stats.data_scale;
  return result;
}

}  // namespace cohort
