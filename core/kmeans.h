// K-means driver: k-means++ (greedy, with local trials) or k-means‖ seeding, then Lloyd
// or mini-batch iterations, over a set of shards reached through a backend (in-process
// shards or cluster workers), with the squared Euclidean or the cosine distance.
//
// Merge rule: every backend call returns one result per shard, sorted by shard id; the
// driver merges them in that order in double precision. The driver's random draws come
// from a generator seeded by (seed, run). Draws made by shards (k-means‖ candidates,
// mini-batch samples) are keyed by (seed, run, round or step, shard id, row or draw), see
// KeyedUniform. So the result does not depend on the number of workers, on which worker
// hosts which shard, or on thread counts.
#ifndef COHORT_CORE_KMEANS_H_
#define COHORT_CORE_KMEANS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"

namespace cohort {

enum class KMeansInit {
  kKMeansPlusPlus,  // greedy k-means++ over all rows (one backend round trip per center)
  kKMeansParallel,  // k-means‖ (Bahmani et al. 2012): a few sampling rounds, then a
                    // weighted k-means++ over the candidates at the driver
};

enum class KMeansAlgorithm {
  kLloyd,      // full passes over all rows
  kMiniBatch,  // mini-batch K-means (Sculley 2010) with per-centroid learning rates
};

enum class KMeansDistance {
  kSquaredEuclidean,
  // Spherical K-means: rows and centroids are scaled to unit norm, and the objective is
  // Σ w (1 − x·c). Zero rows follow the rule of kZeroRowCosineDistance.
  kCosine,
};

struct KMeansOptions {
  // Number of segments requested. Range [1, 100000].
  int k = 8;
  // Maximum Lloyd iterations per run. Range [1, 100000].
  int max_iter = 300;
  // Convergence: stop when the largest centroid move in one iteration is at most
  // tol × data_scale, where data_scale = sqrt(mean per-feature variance of the data).
  // Range [0, 1].
  double tol = 1e-4;
  // Seed of the driver's random generator.
  uint64_t seed = 42;
  // Independent seedings + Lloyd runs; the run with the lowest inertia wins. Range [1, 100].
  int n_init = 1;
  // Candidates tried per k-means++ step; 0 means 2 + floor(ln k). Range [0, 1000].
  // Also used by the weighted k-means++ that ends a k-means‖ seeding.
  int local_trials = 0;

  KMeansInit init = KMeansInit::kKMeansPlusPlus;
  // k-means‖: expected candidates per round (ℓ); 0 means 2·k. Range [0, 1e7].
  double oversampling = 0;
  // k-means‖: sampling rounds. More rounds run while fewer than k candidates were found
  // and some row is not yet a candidate, up to 100 extra rounds. Range [1, 100].
  int init_rounds = 5;

  KMeansAlgorithm algorithm = KMeansAlgorithm::kLloyd;
  // Mini-batch: rows per step over all shards (at most the row count); each shard draws
  // a share proportional to its rows (largest remainders). Steps are limited to
  // max_iter × ceil(rows / batch_size); tol is not used. Range [1, 1e8].
  int batch_size = 4096;
  // Mini-batch: stop when the smoothed batch inertia has not improved for this many
  // steps; 0 disables the rule. Range [0, 100000].
  int max_no_improvement = 10;
  // Mini-batch: a centroid whose cumulative weight is below this ratio × the largest one
  // moves to a batch row. Range [0, 1].
  double reassignment_ratio = 0.01;

  KMeansDistance distance = KMeansDistance::kSquaredEuclidean;

  // Errors: InvalidArgument naming the field, its value and the accepted range.
  [[nodiscard]] absl::Status Validate() const;
};

// Sums of one shard (k-means++ and moments).
struct ShardSum {
  int shard_id = 0;
  int64_t rows = 0;
  double value = 0;
};

struct ShardMoments {
  int shard_id = 0;
  int64_t rows = 0;
  std::vector<double> sum;
  std::vector<double> sum_sq;
};

struct ShardOffset {
  int shard_id = 0;
  double offset = 0;
};

// The k-means‖ picks of one shard.
struct ShardCandidates {
  int shard_id = 0;
  std::vector<ShardPoint> points;
};

// A shard's share of a mini-batch.
struct ShardBatchRows {
  int shard_id = 0;
  int64_t rows = 0;
};

// The shards of one dataset as the driver sees them. Every method returns one entry per
// shard (empty shards included), sorted by shard id, or an error (for a cluster:
// Unavailable when a worker is lost).
class KMeansBackend {
 public:
  virtual ~KMeansBackend() = default;
  virtual int dim() const = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardMoments>> Moments() = 0;
  // Resets (when `reset`) then adds centers (m×d, m may be 0). Returns per shard the sum
  // of the sampling weights (see KMeansShard::AddCenters): the row count while no center
  // has been added since the reset, otherwise Σ D².
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers,
                                                                         bool reset) = 0;
  // Per shard, per candidate: the potential (see KMeansShard::TrialPotentials).
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) = 0;
  // The points at the given offsets, in the order asked.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardPoint>> Pick(
      const std::vector<ShardOffset>& offsets) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<LloydPartial>> LloydStep(
      const MatrixXfR& centroids, int num_farthest) = 0;

  // The methods below have default implementations, so that a backend without them
  // still runs the default options (k-means++, Lloyd, squared Euclidean).

  // Selects the distance of all later calls, before any other call of a job. For
  // kCosine every shard normalizes its rows (see KMeansShard::UseCosineDistance) and
  // returns points and distances of the normalized rows. Returns no per-shard result.
  // Default: OK for kSquaredEuclidean, Unimplemented for kCosine.
  [[nodiscard]] virtual absl::Status SetDistance(KMeansDistance distance);
  // k-means‖ round: per shard, the rows picked by KMeansShard::SampleCandidates with
  // these arguments, against the centers added since the last AddCenters reset.
  // `potential` is the merged Σ w D² of the last AddCenters. Default: Unimplemented.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardCandidates>> SampleCandidates(
      uint64_t seed, int run, int round, double oversampling, double potential);
  // Mini-batch step: per shard, KMeansShard::MiniBatchStep with the shard's entry of
  // `batch_rows` (one per shard, sorted by shard id). Default: Unimplemented.
  [[nodiscard]] virtual absl::StatusOr<std::vector<MiniBatchPartial>> MiniBatchStep(
      const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
      const std::vector<ShardBatchRows>& batch_rows, int num_points);
};

// Selects the distance of one shard's later steps, the per-shard part of
// KMeansBackend::SetDistance: kCosine calls UseCosineDistance, and kSquaredEuclidean on
// a shard that already uses the cosine distance is FailedPrecondition.
[[nodiscard]] absl::Status SetShardDistance(KMeansShard& shard, KMeansDistance distance);

// Runs the driver's steps over KMeansShard objects in this process.
class InProcessKMeansBackend final : public KMeansBackend {
 public:
  // REQUIRES: shards sorted by shard id, same dim, and non-empty list.
  explicit InProcessKMeansBackend(std::vector<KMeansShard*> shards);
  int dim() const override;
  absl::StatusOr<std::vector<ShardMoments>> Moments() override;
  absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers, bool reset) override;
  absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) override;
  absl::StatusOr<std::vector<ShardPoint>> Pick(const std::vector<ShardOffset>& offsets) override;
  absl::StatusOr<std::vector<LloydPartial>> LloydStep(const MatrixXfR& centroids,
                                                      int num_farthest) override;
  // kCosine switches every shard for good; kSquaredEuclidean after that is
  // FailedPrecondition.
  absl::Status SetDistance(KMeansDistance distance) override;
  absl::StatusOr<std::vector<ShardCandidates>> SampleCandidates(uint64_t seed, int run,
                                                                int round, double oversampling,
                                                                double potential) override;
  absl::StatusOr<std::vector<MiniBatchPartial>> MiniBatchStep(
      const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
      const std::vector<ShardBatchRows>& batch_rows, int num_points) override;

 private:
  std::vector<KMeansShard*> shards_;
};

// A progress event of the driver.
struct KMeansProgress {
  std::string phase;  // "init", "lloyd", "minibatch" or "final"
  int run = 0;        // 0-based run of n_init
  int iteration = 0;  // 1-based Lloyd iteration or mini-batch step; 0 during init
  int centers_chosen = 0;  // during "init": centers, or k-means‖ candidates so far
  // Of the assignment in this iteration (of the batch for "minibatch"); during "init"
  // the current potential.
  double inertia = 0;
  double max_shift = 0;    // largest centroid move, in feature units
  // During "lloyd" and "minibatch": the centroids after this iteration (k×d). Valid
  // only during the callback; null in the other phases.
  const MatrixXfR* centroids = nullptr;
};

struct KMeansResult {
  int requested_k = 0;
  // Equals requested_k unless the data has fewer distinct points; then it is the number
  // of distinct points and `centroids` has that many rows, all distinct.
  int effective_k = 0;
  bool fewer_distinct_points = false;
  MatrixXfR centroids;           // effective_k × d
  std::vector<int64_t> sizes;    // rows of weight > 0 per centroid for the final centroids
  // For the final centroids (an extra assignment pass): Σ w ‖x − c‖², or Σ w (1 − x·c)
  // for the cosine distance.
  double inertia = 0;
  int iterations = 0;            // Lloyd iterations or mini-batch steps of the winning run
  // The tol rule (Lloyd) or the max_no_improvement rule (mini-batch) stopped the run.
  bool converged = false;
  int best_run = 0;
  int64_t num_rows = 0;
  double data_scale = 0;
  // Empty clusters reseeded (Lloyd) or centroids reassigned (mini-batch) in the winning run.
  int64_t reseeded_clusters = 0;
};

using KMeansProgressCallback = std::function<void(const KMeansProgress&)>;

// Runs K-means. Errors: InvalidArgument from options; FailedPrecondition when the data
// has no rows; any backend error unchanged. `progress` may be null.
[[nodiscard]] absl::StatusOr<KMeansResult> RunKMeans(KMeansBackend& backend,
                                                     const KMeansOptions& options,
                                                     const KMeansProgressCallback& progress);

// Runs Lloyd iterations from initial_centroids (k×d) instead of a k-means++ seeding, so
// that several tools can start from the same centroids. Uses options.max_iter and
// options.tol and options.distance (cosine: the initial centroids are normalized, and a
// zero row is InvalidArgument); the init, algorithm and seeding fields are ignored, and k
// is initial_centroids.rows(). The result has effective_k = requested_k = k and
// best_run = 0. Errors: as RunKMeans, plus InvalidArgument when initial_centroids has no
// rows, more than 100000 rows, or a column count other than backend.dim().
[[nodiscard]] absl::StatusOr<KMeansResult> RunLloyd(KMeansBackend& backend,
                                                    const MatrixXfR& initial_centroids,
                                                    const KMeansOptions& options,
                                                    const KMeansProgressCallback& progress);

// Runs mini-batch steps from initial_centroids (k×d) instead of a k-means++ seeding, so
// that several tools can start from the same centroids. Uses options.max_iter,
// batch_size, max_no_improvement, reassignment_ratio, seed and distance as RunKMeans
// does with algorithm kMiniBatch, for run 0. The init, algorithm, n_init and tol fields
// are ignored. Result and errors: as RunLloyd.
[[nodiscard]] absl::StatusOr<KMeansResult> RunMiniBatch(KMeansBackend& backend,
                                                        const MatrixXfR& initial_centroids,
                                                        const KMeansOptions& options,
                                                        const KMeansProgressCallback& progress);

}  // namespace cohort

#endif  // COHORT_CORE_KMEANS_H_
