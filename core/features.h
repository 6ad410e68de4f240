// Feature pipeline v1: raw user columns → a dense float feature vector.
//   numeric:      optionally v → log1p(v) first (for heavy-tailed columns such as spend);
//                 missing → column mean, then (v − mean) / std (std 0 → divide by 1)
//   categorical:  one-hot over the most frequent values, plus "other" for the rest;
//                 an empty cell is the value "" and is counted like any other value
// Statistics are computed per shard, merged, and fitted once; the fitted transform is
// stored with the model so that a new user is transformed exactly as training did.
#ifndef COHORT_CORE_FEATURES_H_
#define COHORT_CORE_FEATURES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/matrix.h"
#include "core/raw_table.h"
#include "core/row_source.h"

namespace cohort {

struct FeatureOptions {
  // Values kept per categorical column, by descending count (ties by value); the rest
  // share the "other" feature. Range [1, 10000].
  int max_categories = 16;
  // Numeric columns transformed by log1p before standardization. Every value of such a
  // column must be > −1.
  std::vector<std::string> log1p_columns;

  [[nodiscard]] absl::Status Validate() const;
};

struct NumericStats {
  int64_t count = 0;    // non-missing cells
  int64_t missing = 0;  // missing cells
  // Sums of the values, or of log1p(value) for a column computed with log1p; min and
  // max are always of the raw values.
  double sum = 0;
  double sum_sq = 0;
  double min = 0;       // meaningful only when count > 0
  double max = 0;
};

struct CategoricalStats {
  std::map<std::string, int64_t> counts;  // value → rows
};

// Mergeable per-column statistics. Merging is exact for counts; sums are merged in the
// order Merge() is called, so callers merge shards in shard-id order.
struct FeatureStats {
  int64_t rows = 0;
  std::vector<NumericStats> numeric;          // Schema::NumericNames() order
  std::vector<CategoricalStats> categorical;  // Schema::CategoricalNames() order

  // REQUIRES: both were computed for the same schema (or one is default-constructed).
  void Merge(const FeatureStats& other);
};

// Computes the statistics of one shard. `log1p` (empty, or one flag per numeric column)
// selects the columns whose sums are of log1p(value); values <= −1 are left out of those
// sums and only show in min.
FeatureStats ComputeFeatureStats(const RawShard& shard, const std::vector<bool>& log1p = {});

// Raw-value statistics of the rows of each group: labels[i] in [0, num_groups) is the
// group of row i. Returns num_groups entries; used for per-segment summaries.
std::vector<FeatureStats> ComputeGroupStats(const RawShard& shard, const int32_t* labels,
                                            int num_groups);

// The per-numeric-column log1p flags of `options` for `schema`. Errors: InvalidArgument
// for a name that is not a numeric column of the schema (listing those).
[[nodiscard]] absl::StatusOr<std::vector<bool>> Log1pFlags(const Schema& schema,
                                                           const FeatureOptions& options);

struct NumericTransform {
  std::string name;
  bool log1p = false;  // the value is replaced by log1p(value) first
  double mean = 0;     // imputed for missing cells (in the log1p domain when log1p)
  double scale = 1;    // population standard deviation, or 1 when it is 0
};

struct CategoricalTransform {
  std::string name;
  std::vector<std::string> values;  // one feature each, in output order
  bool has_other = false;           // true when some value is not in `values`
};

// A fitted transform. Output layout: numeric columns first (in order), then for each
// categorical column its values then "other" when has_other.
struct FeatureTransform {
  std::vector<NumericTransform> numeric;
  std::vector<CategoricalTransform> categorical;

  int dim() const;
  // Output feature names: "age", "job=admin.", "job=(other)", "job=(missing)" for "".
  std::vector<std::string> FeatureNames() const;
};

// Fits the transform from merged statistics computed with Log1pFlags(schema, options).
// Errors: InvalidArgument when there are no rows or a log1p column is unknown;
// FailedPrecondition when a numeric column has no non-missing value, or a log1p column
// has a value <= −1 (naming it and the value).
[[nodiscard]] absl::StatusOr<FeatureTransform> FitFeatureTransform(
    const Schema& schema, const FeatureStats& stats, const FeatureOptions& options);

// Transforms every row of `shard` into `x` (resized to num_rows × dim). A categorical
// value that is not kept goes to "other". A column without an "other" feature kept
// every value seen at fit time, so any other value was never seen and its one-hot block
// is all zero.
// REQUIRES: `shard` has the columns the transform was fitted on.
void TransformShard(const FeatureTransform& transform, const RawShard& shard, MatrixXfR* x);

// The rows TransformShard would write for `shard`, computed block by block when a kernel
// reads them, so the n×d feature matrix is never stored. Keeps a copy of the transform;
// the shard is not owned and must outlive the source, unchanged.
// REQUIRES: `shard` has the columns the transform was fitted on.
class TransformedRowSource final : public RowSource {
 public:
  TransformedRowSource(const FeatureTransform& transform, const RawShard* shard);

  int64_t rows() const override { return shard_->num_rows(); }
  int cols() const override { return dim_; }
  void CopyRows(int64_t begin, int64_t count, float* out) const override;
  void PrefetchRow(int64_t row) const override;

 private:
  FeatureTransform transform_;
  const RawShard* shard_;
  int dim_;
  // The numeric columns' means and scales, and whether any of them takes log1p first.
  std::vector<double> means_;
  std::vector<double> scales_;
  bool any_log1p_ = false;
  // Per categorical column: the output column of each dictionary code, or -1 for none.
  std::vector<std::vector<int>> column_of_code_;
};

// Transforms one new user given as column name → cell text. A column of the transform
// that is absent, or an empty cell, is treated as missing (a categorical column then
// takes the value ""). Categories are encoded as in TransformShard. Errors:
// InvalidArgument for a name the transform does not know (listing the known ones), or
// for a numeric cell that is not a finite number or is <= −1 in a log1p column.
[[nodiscard]] absl::StatusOr<std::vector<float>> TransformUser(
    const FeatureTransform& transform, const std::map<std::string, std::string>& columns);

// A centroid expressed in original units: numeric means and per-value shares.
struct OriginalUnits {
  // Per numeric column; for a log1p column, expm1 of the point's log-domain value (a
  // typical value like a geometric mean, not the arithmetic mean).
  std::vector<double> numeric_means;
  std::vector<std::vector<double>> category_shares;  // per categorical column, per output value
};

// Maps a point of the feature space (length dim()) back to original units.
OriginalUnits ToOriginalUnits(const FeatureTransform& transform, const float* point);

}  // namespace cohort

#endif  // COHORT_CORE_FEATURES_H_
