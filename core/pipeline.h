// Feature pipeline v2 for profiling: a declared transform per column, fitted from
// statistics computed per shard and merged in shard-id order, stored with the model.
//
// Per column the steps run in this fixed order (each one optional):
//   numeric:    valid-range clip (cleaning, counted) → missing indicator → imputation →
//               log1p → quantile clip → standardize or min–max
//   boolean:    missing indicator → imputation → 0/1
//   categorical: imputation by mode or constant (without one, "" is a value of its own),
//               then one-hot of the top N values plus "other", or hashing into B buckets
//   text:       hashed word or character n-grams (UTF-8 code points) into B buckets,
//               counts scaled to unit L2 norm per cell; a missing cell is all zeros
//   embedding:  missing indicator → imputation (mean per component, or a constant) → copy
// Imputation statistics are taken over the non-missing values after the valid-range clip
// and log1p (log1p is monotone, so the median commutes with it). The median is the KLL
// sketch's 0.5-quantile: with at most 256 values it is the lower middle value, where
// scikit-learn's SimpleImputer averages the two middle values of an even count. Scaling moments are taken
// over the non-missing values after log1p and the quantile clip, as scikit-learn's
// StandardScaler and MinMaxScaler ignore NaN, and the imputed value then goes through the
// same steps. So "impute mean + standardize" puts a missing cell at exactly 0.
//
// Fitting takes two rounds over the shards, because the scaling moments depend on the
// quantile clip bounds fitted in round one:
//   1. stats = Σ ComputeFirstPassStats(spec, shard)          (merge in shard-id order)
//   2. model = FitFirstPass(spec, schema, stats)
//   3. moments = Σ ComputeSecondPassStats(model, shard)       (merge in shard-id order)
//   4. FinishFit(moments, &model)
// Statistics are sums in double, KLL quantile sketches (core/quantile_sketch.h) and exact
// value counts, so the fitted model does not depend on how shards are spread over workers.
//
// Spec file format (ParsePipelineSpec): one declaration per line, and a line whose first
// non-blank character is '#' is a comment:
//   label <column> positive <value>       the label column and its positive value
//   cleaning duplicate_ids keep_first|reject
//   cleaning unparsable missing|reject
//   column <name> = <step> | <step> | ...
// A column name runs to the '=' and is trimmed, so it may contain spaces but not '='. The
// label line's column and value are single words. A constant runs to the next '|', so it
// may not contain '|'. Steps:
//   range <min> <max>                 numeric: clip values to [min, max] (counted)
//   impute mean|median|mode|constant <value>
//   missing_indicator                 adds a "<name>=(missing)" 0/1 feature
//   log1p                             numeric: v → log1p(v); every value must be > −1
//   clip <lower q> <upper q>          numeric: clip to fitted quantiles, 0 <= lower < upper <= 1
//   standardize | minmax              numeric: (v − mean) / std, or (v − min) / (max − min)
//   onehot <N>                        categorical: top N values plus "other"
//   hash <B>                          categorical: B buckets of XXH64 of the value
//   words <min n> <max n> <B>         text: hashed word n-grams into B buckets
//   chars <min n> <max n> <B>         text: hashed code-point n-grams into B buckets
// Example:
//   label Churn positive Yes
//   column TotalCharges = impute median | missing_indicator | standardize
//   column Contract = onehot 8
//   column notes = chars 1 2 1024
// Columns of the schema that the spec does not name are not features.
//
// Thread safety: the functions below are reentrant and share no state. A finished
// PipelineModel is not modified by transforming, so threads may share one.
#ifndef COHORT_CORE_PIPELINE_H_
#define COHORT_CORE_PIPELINE_H_

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cleaning.h"
#include "core/features.h"
#include "core/matrix.h"
#include "core/quantile_sketch.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {

enum class ImputeRule { kNone, kMean, kMedian, kMode, kConstant };
enum class ScaleRule { kNone, kStandardize, kMinMax };
enum class CategoryEncoding { kOneHot, kHash };
enum class NgramKind { kNone, kWords, kChars };

// The declared transform of one column. Which fields apply depends on the column's schema
// type (see the file comment); PipelineSpec::Validate rejects a field set on a type it
// does not apply to.
struct ColumnPipeline {
  std::string column;

  // Numeric: values outside [valid_min, valid_max] are clipped and counted.
  std::optional<double> valid_min;
  std::optional<double> valid_max;
  ImputeRule impute = ImputeRule::kNone;
  // The kConstant value as cell text: a number for numeric, boolean and embedding
  // columns (every component of an embedding), any text for categorical ones.
  std::string impute_constant;
  bool missing_indicator = false;
  bool log1p = false;
  // Quantile clip: both set or neither, 0 <= lower < upper <= 1.
  std::optional<double> clip_lower_quantile;
  std::optional<double> clip_upper_quantile;
  ScaleRule scale = ScaleRule::kNone;

  // Categorical.
  CategoryEncoding encoding = CategoryEncoding::kOneHot;
  int top_n = 16;        // one-hot values kept, in [1, 10000]
  int hash_buckets = 0;  // kHash buckets, in [1, 1 << 20]

  // Text: n-gram lengths in [1, 8], min <= max, and buckets in [1, 1 << 20].
  NgramKind ngrams = NgramKind::kNone;
  int ngram_min = 1;
  int ngram_max = 1;
  int ngram_buckets = 0;
};

struct PipelineSpec {
  std::vector<ColumnPipeline> columns;  // output order; each column at most once
  // Label column (schema type kLabel) and the cell value that is the positive class. Both
  // empty for a spec without a label (segmentation).
  std::string label_column;
  std::string positive_label;
  CleaningRules cleaning;

  // Checks the spec against `schema`: there is at least one column, and every column
  // exists, is not the id, weight or label column and appears once; each field suits the column type and is in range; a text
  // column has n-grams; the label column has type kLabel. Errors: InvalidArgument naming
  // the column, the field and the value.
  [[nodiscard]] absl::Status Validate(const Schema& schema) const;
};

// Parses the spec file format above. Errors: InvalidArgument naming the line number and
// the text that is wrong (unknown step, missing or non-numeric argument, column twice).
[[nodiscard]] absl::StatusOr<PipelineSpec> ParsePipelineSpec(std::string_view text);
// Writes `spec` in the same format; ParsePipelineSpec(FormatPipelineSpec(s)) equals s.
std::string FormatPipelineSpec(const PipelineSpec& spec);
// Reads and parses a spec file. Errors: NotFound for a missing file, else as above with
// the path in the message.
[[nodiscard]] absl::StatusOr<PipelineSpec> ReadPipelineSpecFile(const std::string& path);

// The segmentation features of core/features.h as a spec: numeric columns impute mean,
// log1p for the columns in options.log1p_columns, standardize; categorical columns one-hot of the top
// max_categories values with "" as a value of its own. Transforming with it gives the
// same matrix as TransformShard with FitFeatureTransform(schema, stats, options).
// Errors: as Log1pFlags.
[[nodiscard]] absl::StatusOr<PipelineSpec> SegmentationSpec(const Schema& schema,
                                                            const FeatureOptions& options);

// Round-one statistics of one column, mergeable.
struct ColumnFirstPassStats {
  int64_t present = 0;  // non-missing cells
  int64_t missing = 0;
  // Numeric and boolean: moments of the values after valid-range clip and log1p.
  double sum = 0;
  double sum_sq = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  // Smallest value before log1p, for the log1p domain check.
  double min_before_log1p = std::numeric_limits<double>::infinity();
  QuantileSketch sketch;
  // Value → count. Numeric and boolean columns count values only for kMode, keyed by their
  // "%.17g" text, which reads back as the same double. Categorical columns count every
  // value for one-hot encoding or kMode, and nothing when hashed without kMode.
  std::map<std::string, int64_t> value_counts;
  // Embedding: per-component sums of the non-missing rows.
  std::vector<double> component_sums;
};

struct PipelineFirstPassStats {
  int64_t rows = 0;
  std::vector<ColumnFirstPassStats> columns;  // PipelineSpec::columns order
  CleaningReport report;                      // valid-range clips so far
  // Label cell → rows, when the spec has a label.
  std::map<std::string, int64_t> label_counts;

  // Adds `other`. Sums are added in call order, so callers merge in shard-id order.
  // REQUIRES: both come from the same spec, or one is default-constructed.
  void Merge(const PipelineFirstPassStats& other);
};

// Computes round-one statistics of `shard`. Errors: InvalidArgument when the spec does
// not validate against `schema`; FailedPrecondition when the shard lacks a column of the
// schema (it was loaded with another schema).
[[nodiscard]] absl::StatusOr<PipelineFirstPassStats> ComputeFirstPassStats(
    const PipelineSpec& spec, const Schema& schema, const RawShard& shard);

// A fitted column: everything needed to transform a cell the same way again.
struct FittedColumn {
  ColumnPipeline spec;
  ColumnType type = ColumnType::kNumeric;
  int source_index = 0;  // index of the column within its type in RawShard storage
  // Numeric and boolean: the value imputed for a missing cell, in the domain after
  // log1p (NaN when there is no imputation: a missing cell then outputs 0 after scaling).
  double impute_value = 0;
  // Quantile clip bounds in the log1p domain; ±infinity when there is no clip.
  double clip_low = 0;
  double clip_high = 0;
  // Output = (v − shift) / scale; shift 0 and scale 1 without scaling.
  double shift = 0;
  double scale = 1;
  // Categorical: imputed value for "", and the one-hot values in output order.
  std::string impute_category;
  std::vector<std::string> categories;
  bool has_other = false;
  // Embedding: the imputed vector (empty without imputation: a missing cell is zeros).
  std::vector<double> impute_vector;
  int embedding_dim = 0;

  // Number of output features.
  int width() const;
};

// A fitted pipeline: the model's input transform.
struct PipelineModel {
  std::vector<FittedColumn> columns;
  std::string label_column;
  std::string positive_label;
  int64_t fitted_rows = 0;
  // True once FinishFit has run; Transform* require it.
  bool finished = false;

  int dim() const;
  // Output feature names, dim() entries: "age", "age=(missing)", "job=admin.",
  // "job=(other)", "job=(missing)" for "", "zip#17" for hash bucket 17,
  // "notes~chars[1,2]#901" for n-gram bucket 901, "emb[3]" for component 3.
  std::vector<std::string> FeatureNames() const;

  // Text encoding of the model: one line per field with doubles in shortest round-trip
  // form, so Deserialize(Serialize()) transforms every row bit for bit as this model.
  std::string Serialize() const;
  // Errors: InvalidArgument naming the line that is truncated, of an unknown version or
  // inconsistent (for example a column spec that PipelineSpec::Validate rejects, or more
  // one-hot values than the spec keeps).
  [[nodiscard]] static absl::StatusOr<PipelineModel> Deserialize(std::string_view text);
};

// Fits everything but the scaling moments. Errors: InvalidArgument when the spec does not
// validate or there are no rows; FailedPrecondition when the label has more than two
// distinct values or none equal to the positive value (listing the values seen), or
// naming the column when a numeric
// column with imputation, scaling or clipping has no non-missing value, when a log1p
// column has a value <= −1, or when kMode/kMedian is asked of a column with no value.
[[nodiscard]] absl::StatusOr<PipelineModel> FitFirstPass(const PipelineSpec& spec,
                                                         const Schema& schema,
                                                         const PipelineFirstPassStats& stats);

// Round-two statistics: moments of each scaled column's values after the quantile clip.
struct PipelineSecondPassStats {
  // Per model column: count, sum, sum of squares, min, max of non-missing values.
  struct Moments {
    int64_t count = 0;
    double sum = 0;
    double sum_sq = 0;
    double min = 0;
    double max = 0;
  };
  std::vector<Moments> columns;
  void Merge(const PipelineSecondPassStats& other);
};

// REQUIRES: `model` came from FitFirstPass on a spec for `shard`'s schema.
PipelineSecondPassStats ComputeSecondPassStats(const PipelineModel& model,
                                               const RawShard& shard);

// Sets shift and scale of each scaled column and marks the model finished. A zero
// standard deviation or range gives scale 1. Errors: FailedPrecondition when `moments`
// has another number of columns than the model.
[[nodiscard]] absl::Status FinishFit(const PipelineSecondPassStats& moments,
                                     PipelineModel* model);

// Runs both rounds over `shards` in the given order: the single-process path and the
// reference for the distributed one.
[[nodiscard]] absl::StatusOr<PipelineModel> FitPipeline(const PipelineSpec& spec,
                                                        const Schema& schema,
                                                        const std::vector<RawShard>& shards,
                                                        CleaningReport* report = nullptr);

// Transforms every row of `shard` into `x` (num_rows × dim, row-major) and, when the model
// has a label, `labels` (num_rows; 1 for the positive value, else 0). Counts valid-range
// clips and imputations into `report` when it is not null. Rows are split over OpenMP
// threads above 4096 rows, with the same result for any thread count. Errors:
// FailedPrecondition when the model is not finished or the shard lacks one of its columns.
[[nodiscard]] absl::Status TransformShardPipeline(const PipelineModel& model,
                                                  const RawShard& shard, MatrixXfR* x,
                                                  std::vector<uint8_t>* labels,
                                                  CleaningReport* report = nullptr);

// Transforms one new user given as column name → cell text, exactly as TransformShard
// would transform the same cells. An absent column or empty cell is missing. Errors:
// InvalidArgument naming the column and value for a cell that does not parse for its
// type (a number, a boolean, an embedding of the fitted length) or is <= −1 in a log1p
// column, and for a name the model does not know.
[[nodiscard]] absl::StatusOr<std::vector<float>> TransformUserPipeline(
    const PipelineModel& model, const std::map<std::string, std::string>& cells);

// Label of a cell: 1 when it equals the positive value, else 0.
inline uint8_t LabelOf(const PipelineModel& model, std::string_view cell) {
  return cell == model.positive_label ? 1 : 0;
}

}  // namespace cohort

#endif  // COHORT_CORE_PIPELINE_H_
