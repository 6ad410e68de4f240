// K-means driver: k-means++ seeding (greedy, with local trials) and Lloyd iterations
// over a set of shards reached through a backend (in-process shards or cluster workers).
//
// Merge rule: every backend call returns one result per shard, sorted by shard id; the
// driver merges them in that order in double precision. Random draws happen only in the
// driver, from a generator seeded by (seed, run). So the result does not depend on the
// number of workers, on which worker hosts which shard, or on thread counts.
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
  int local_trials = 0;

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
};

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

 private:
  std::vector<KMeansShard*> shards_;
};

// A progress event of the driver.
struct KMeansProgress {
  std::string phase;  // "init", "lloyd" or "final"
  int run = 0;        // 0-based run of n_init
  int iteration = 0;  // 1-based Lloyd iteration within the run; 0 during init
  int centers_chosen = 0;  // during "init"
  double inertia = 0;      // of the assignment in this iteration
  double max_shift = 0;    // largest centroid move, in feature units
};

struct KMeansResult {
  int requested_k = 0;
  // Equals requested_k unless the data has fewer distinct points; then it is the number
  // of distinct points and `centroids` has that many rows, all distinct.
  int effective_k = 0;
  bool fewer_distinct_points = false;
  MatrixXfR centroids;           // effective_k × d
  std::vector<int64_t> sizes;    // users per centroid for the final centroids
  double inertia = 0;            // for the final centroids (an extra assignment pass)
  int iterations = 0;            // Lloyd iterations of the winning run
  bool converged = false;        // the tol rule stopped the winning run
  int best_run = 0;
  int64_t num_rows = 0;
  double data_scale = 0;
  int64_t reseeded_clusters = 0;  // empty clusters reseeded over the winning run
};

using KMeansProgressCallback = std::function<void(const KMeansProgress&)>;

// Runs K-means. Errors: InvalidArgument from options; FailedPrecondition when the data
// has no rows; any backend error unchanged. `progress` may be null.
[[nodiscard]] absl::StatusOr<KMeansResult> RunKMeans(KMeansBackend& backend,
                                                     const KMeansOptions& options,
                                                     const KMeansProgressCallback& progress);

// Runs Lloyd iterations from initial_centroids (k×d) instead of a k-means++ seeding, so
// that several tools can start from the same centroids. Uses options.max_iter and
// options.tol; options.k, seed, n_init and local_trials are ignored, and k is
// initial_centroids.rows(). The result has effective_k = requested_k = k and
// best_run = 0. Errors: as RunKMeans, plus InvalidArgument when initial_centroids has no
// rows, more than 100000 rows, or a column count other than backend.dim().
[[nodiscard]] absl::StatusOr<KMeansResult> RunLloyd(KMeansBackend& backend,
                                                    const MatrixXfR& initial_centroids,
                                                    const KMeansOptions& options,
                                                    const KMeansProgressCallback& progress);

}  // namespace cohort

#endif  // COHORT_CORE_KMEANS_H_
