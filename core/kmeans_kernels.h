// Distance kernels and per-shard K-means steps. Every function here is deterministic:
// results do not depend on the number of OpenMP threads.
#ifndef COHORT_CORE_KMEANS_KERNELS_H_
#define COHORT_CORE_KMEANS_KERNELS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "core/matrix.h"
#include "core/row_source.h"

namespace cohort {

// Rows per block of the assignment kernel. The float kernel computes one (block × k)
// matrix product per block.
inline constexpr int64_t kAssignBlockRows = 256;
// Centroids per matrix product of the float assignment kernel. A product buffer holds
// kAssignBlockRows × kAssignBlockCentroids floats (512 KiB), whatever k is.
inline constexpr int64_t kAssignBlockCentroids = 512;
// Below this many rows, the kernels stay on the calling thread.
inline constexpr int64_t kParallelMinRows = 4096;
// AssignNearest runs on the OpenMP threads when n·k·d reaches this many multiply-adds
// (and x has more than one block of rows), whatever n is: a mini-batch of 4096 rows
// against 256 centroids of 64 columns is 67M multiply-adds.
inline constexpr int64_t kAssignParallelMinMacs = int64_t{1} << 23;
// Widest rows the int8 kernel takes: its int32 dot products of 8-bit values convert to
// float exactly while d · 127 · 127 < 2^24.
inline constexpr int64_t kInt8AssignMaxDim = 1024;

// Squared Euclidean norms of the rows of x (n×d), accumulated in float.
Eigen::VectorXf RowSquaredNorms(const MatrixXfR& x);

// The squared distance that decides an assignment:
//   max(0, (x_sq_norm − 2 x·c) + c_sq_norm)
// in float, where x·c sums fused multiply-adds in 8 lanes by column index (lane j % 8)
// combined in a fixed tree. Every build and CPU computes the same value.
// REQUIRES: x_row and centroid hold d values.
float AssignmentDistance(const float* x_row, float x_sq_norm, const float* centroid,
                         float c_sq_norm, int64_t d);

// The D² of k-means++ seeding: Σ (a_j − b_j)² in float, summed in 8 lanes by column
// index (lane j % 8) that are combined in a fixed tree. It is exactly 0 when a and b are
// equal, and the same on every build and CPU.
float SeedingSquaredDistance(const float* a, const float* b, int64_t d);

// An upper bound on |computed − exact| of any float evaluation of ‖x‖² − 2x·c + ‖c‖²
// for d columns (a GEMM product or any summation order included), given
// norm_sum >= ‖x‖ + ‖c‖.
float ExpansionErrorBound(int64_t d, float norm_sum);

// First pass of AssignNearest, which finds the centroids worth an exact distance. Both
// kernels give the same labels and distances.
enum class AssignKernel {
  // Float matrix products (GEMM, COHORT_GEMM in CMake). Any CPU with AVX2 and FMA.
  kFloat,
  // Int8 dot products of quantized rows and centroids (AVX-512 VNNI), about 4 times
  // cheaper than float multiply-adds. Runs kFloat on a CPU without AVX-512 VNNI, for
  // d > kInt8AssignMaxDim and when a centroid has an infinite or NaN value.
  kInt8,
};

// Whether this CPU can run AssignKernel::kInt8.
bool Int8AssignKernelSupported();

// The kernel of AssignNearest: kInt8 when the CPU supports it, unless the environment
// variable COHORT_ASSIGN_KERNEL is "float" (read at the first call).
AssignKernel DefaultAssignKernel();

// For each row i of x (n×d) finds the nearest centroid among centroids (k×d):
// labels[i] is the lowest index c in [0, k) that minimizes
// sq_dist[i] = AssignmentDistance(x_i, x_sq_norms[i], c, c_sq_norms[c], d).
// A first pass (float GEMM or int8 dot products, see AssignKernel) bounds every distance
// within its rounding or quantization error, and AssignmentDistance is computed for each
// centroid that the bounds do not rule out. So the result is the same with both kernels,
// on every CPU and with every GEMM library. It depends only on that row and the
// centroids: not on its position in x and not on the number of OpenMP threads.
// x_sq_norms and c_sq_norms are RowSquaredNorms of x and centroids: the error bounds
// assume norms computed in float from the same values.
// REQUIRES: k >= 1, x.cols() == centroids.cols(), labels and sq_dist hold n entries.
void AssignNearest(const MatrixXfR& x, const Eigen::VectorXf& x_sq_norms,
                   const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms,
                   int32_t* labels, float* sq_dist);

// AssignNearest with the given kernel instead of DefaultAssignKernel(). Same result.
void AssignNearestWithKernel(AssignKernel kernel, const MatrixXfR& x,
                             const Eigen::VectorXf& x_sq_norms, const MatrixXfR& centroids,
                             const Eigen::VectorXf& c_sq_norms, int32_t* labels,
                             float* sq_dist);

// The search of AssignNearest for one set of centroids, prepared once (the int8 kernel
// quantizes the centroids) and applied to any ranges of rows: Assign over consecutive
// ranges gives what AssignNearest gives for all of them.
// Thread safety: Assign may run on several threads at once.
class CentroidAssigner {
 public:
  // centroids (k×d, k >= 1) and c_sq_norms (their RowSquaredNorms) must outlive the
  // assigner and stay unchanged.
  CentroidAssigner(const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms,
                   AssignKernel kernel = DefaultAssignKernel());
  ~CentroidAssigner();
  CentroidAssigner(const CentroidAssigner&) = delete;
  CentroidAssigner& operator=(const CentroidAssigner&) = delete;

  // AssignNearest for rows [row_begin, row_end) of x: sets labels[i] and sq_dist[i] for
  // those i only (the arrays are indexed by row of x).
  // REQUIRES: 0 <= row_begin <= row_end <= x.rows(), x.cols() == centroids.cols().
  void Assign(const MatrixXfR& x, const Eigen::VectorXf& x_sq_norms, int64_t row_begin,
              int64_t row_end, int32_t* labels, float* sq_dist) const;

 private:
  struct Prepared;
  std::unique_ptr<Prepared> prepared_;
};

// Scales every row of x (n×d) to unit Euclidean norm, in place. A row whose norm is 0
// stays all zero. Returns the number of such zero rows. Training with the cosine distance
// and serving a cosine model both normalize rows with this function.
int64_t NormalizeRows(MatrixXfR* x);

// Cosine distance of an all-zero row to every centroid. Training and AssignNearestCosine
// apply one zero-row rule. A zero row stays zero, has cosine distance 1 to every
// centroid and is assigned to centroid 0. In training it has weight 0, so it adds
// nothing to sums, counts or inertia and never becomes a center.
inline constexpr float kZeroRowCosineDistance = 1.0f;

// For each row i of x_unit (n×d, rows unit or zero, see NormalizeRows) finds the centroid
// of centroids_unit (k×d, unit rows) with the largest dot product: labels[i] in [0, k)
// (ties → lowest index) and cos_dist[i] = max(0, 1 − x_i·c). Zero rows follow the
// zero-row rule above. Deterministic as AssignNearest.
// REQUIRES: k >= 1, x_unit.cols() == centroids_unit.cols(), labels and cos_dist hold n
// entries.
void AssignNearestCosine(const MatrixXfR& x_unit, const MatrixXfR& centroids_unit,
                         int32_t* labels, float* cos_dist);

// Uniform double in [0, 1) that depends only on the five keys (splitmix64 of each key in
// turn), so a draw does not depend on thread count or on which process makes it.
double KeyedUniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c, uint64_t d);

// Checks per-row sample weights for x: one weight per row, each finite and >= 0.
// Errors: InvalidArgument naming `weights` with the row and value.
[[nodiscard]] absl::Status CheckSampleWeights(const MatrixXfR& x, const std::vector<float>& weights);
// As above for a matrix of `rows` rows.
[[nodiscard]] absl::Status CheckSampleWeights(int64_t rows, const std::vector<float>& weights);

// A data row chosen by a shard: where it is and its values.
struct ShardPoint {
  int shard_id = 0;
  int64_t row = 0;          // row index inside the shard
  double sq_dist = 0;       // meaning depends on the producer
  std::vector<float> values;  // length d
};

// One shard's contribution to a Lloyd update.
struct LloydPartial {
  int shard_id = 0;
  MatrixXdR sums;               // k×d: per-centroid sum of assigned rows
  // k: per-centroid number of assigned rows with weight > 0.
  std::vector<int64_t> counts;
  // k: per-centroid sum of row weights. Empty means equal to counts (no sample weights),
  // which is what backends that predate sample weights return.
  std::vector<double> weighted_counts;
  // Sum of weight × squared distance to the nearest centroid.
  double inertia = 0;
  // Up to `num_farthest` rows with the largest distance to their centroid, ordered by
  // distance descending then row ascending.
  std::vector<ShardPoint> farthest;
};

// One shard's sample of a mini-batch step.
struct MiniBatchPartial {
  int shard_id = 0;
  MatrixXdR sums;                      // k×d: per-centroid weighted sum of sampled rows
  std::vector<int64_t> counts;         // k: sampled rows with weight > 0
  std::vector<double> weighted_counts;  // k: per-centroid sum of sampled row weights
  double inertia = 0;                  // Σ weight × squared distance of sampled rows
  // The first `num_points` sampled rows with weight > 0, in draw order (row = -1 never).
  std::vector<ShardPoint> points;
};

// One shard's rows (n×d, row-major) with the per-job state of the K-means steps. The
// rows come from a RowSource, read block by block (kRowBlockRows rows) in every step, so
// a source that computes its rows on demand is never stored whole. The shard does not
// own x or the source, which must outlive it.
//
// Sample weights: a row of weight w counts as w copies of itself in the k-means++ and
// k-means‖ sampling (w × D²), in sums, weighted counts and inertia. A row of weight 0
// never becomes a center, never appears in `farthest`, and adds nothing to sums, counts
// or inertia; for training it is as if the row were absent. Without weights every row
// has weight 1.
//
// Thread safety: not thread-safe; one job step at a time.
class KMeansShard {
 public:
  KMeansShard(int shard_id, const MatrixXfR* x);
  // As above with one weight per row (copied). REQUIRES: CheckSampleWeights(*x, *weights)
  // is OK. A null `weights` means every row has weight 1.
  KMeansShard(int shard_id, const MatrixXfR* x, const std::vector<float>* weights);
  // As above, with the rows of `rows`. REQUIRES: weights, when not null, has one finite
  // weight >= 0 per row.
  KMeansShard(int shard_id, const RowSource* rows, const std::vector<float>* weights);

  // Switches the shard to the cosine distance: later steps see the rows normalized as
  // NormalizeRows normalizes them (block by block as they are read), and zero rows get
  // weight 0 (the zero-row rule, see kZeroRowCosineDistance). Resets the
  // k-means++ state. Calling it again does nothing.
  void UseCosineDistance();
  bool cosine() const { return normalized_rows_ != nullptr; }

  int shard_id() const { return shard_id_; }
  int64_t num_rows() const { return rows_->rows(); }
  bool has_weights() const { return !weights_.empty(); }
  int dim() const { return rows_->cols(); }

  // Per-column sums and sums of squares in double (for the data scale).
  void ColumnMoments(std::vector<double>* sum, std::vector<double>* sum_sq) const;

  // k-means++ seeding. Each row has a sampling weight: 1 while no center has been added
  // since the last reset (uniform choice of the first center), then D², its squared
  // distance to the nearest chosen center. D² is computed from exact differences
  // (Σ (x − c)²), so a row equal to a center has D² = 0 and is never picked again.
  //
  // ResetMinDistances() clears all centers (every D² becomes +infinity) and frees the
  // per-row D² (4 bytes per row) until the next AddCenters. AddCenters
  // (centers m×d, m may be 0) lowers each row's D² to the nearest new center. It returns
  // the sum of the sampling weights in double, rows summed in order. That sum is Σ w (the
  // row count without weights) while no center has been added, and Σ w·D² after.
  void ResetMinDistances();
  double AddCenters(const MatrixXfR& centers);

  // For each candidate c (rows of candidates, m×d) returns Σ_i min(D²_i, ‖x_i − c‖²),
  // the potential if c were added. Does not change the state.
  std::vector<double> TrialPotentials(const MatrixXfR& candidates) const;

  // Returns the row where the running sum of the weights (rows in order, in double, as
  // AddCenters sums them) first exceeds `offset`, with its values and its weight as
  // sq_dist. A row with weight 0 is never returned. When offset is at or beyond the total
  // (rounding), returns the last row with weight > 0. Returns row = -1 when every weight
  // is 0 or the shard has no rows.
  ShardPoint PickByOffset(double offset) const;

  // k-means‖ sampling round: picks each row independently with probability
  // min(1, oversampling × w × D² / potential), where D² is the state left by AddCenters
  // and `potential` is the global Σ w × D². The uniform draw of a row is
  // KeyedUniform(seed, run, round, shard_id, row), so the picks do not depend on threads
  // or placement. Returns the picks in row order, sq_dist = D². Picks nothing when
  // potential <= 0 or no center has been added since the last reset.
  std::vector<ShardPoint> SampleCandidates(uint64_t seed, int run, int round,
                                           double oversampling, double potential) const;

  // Assigns every row to centroids (k×d) and returns the partial sums.
  LloydPartial LloydStep(const MatrixXfR& centroids, int num_farthest) const;

  // Mini-batch step: draws `batch_rows` rows uniformly with replacement, draw j picking
  // row floor(KeyedUniform(seed, run, step, shard_id, j) × n), assigns them to centroids
  // (k×d) and returns their sums. Rows of weight 0 are drawn but add nothing.
  MiniBatchPartial MiniBatchStep(const MatrixXfR& centroids, uint64_t seed, int run,
                                 int64_t step, int64_t batch_rows, int num_points) const;

  // Labels and distances of every row for centroids (k×d): squared Euclidean distances,
  // or after UseCosineDistance the cosine distances of AssignNearestCosine (centroids
  // must then have unit rows).
  void Assign(const MatrixXfR& centroids, std::vector<int32_t>* labels,
              std::vector<float>* sq_dist) const;

 private:
  // Weight of row i: 1 without weights.
  float Weight(int64_t i) const { return weights_.empty() ? 1.0f : weights_[i]; }
  // The values of row `row` as the steps see them.
  std::vector<float> RowValues(int64_t row) const;
  // D² of row i: +infinity while min_sq_dist_ is empty.
  float MinSqDist(int64_t i) const;

  int shard_id_;
  // A source over the caller's matrix, for the constructors that take one.
  std::unique_ptr<RowSource> owned_rows_;
  // The rows the steps read: the caller's, or normalized_rows_ after UseCosineDistance.
  const RowSource* rows_;
  std::unique_ptr<RowSource> normalized_rows_;
  std::vector<float> weights_;  // empty: every row has weight 1
  std::vector<float> min_sq_dist_;  // k-means++ state: n entries, or none (all +infinity)
  bool has_centers_ = false;        // a center was added since the last reset
};

}  // namespace cohort

#endif  // COHORT_CORE_KMEANS_KERNELS_H_
