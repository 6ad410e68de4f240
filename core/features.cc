#include "core/features.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort {
namespace {

constexpr int kMinCategories = 1;
constexpr int kMaxCategories = 10000;

// Feature name suffixes for the "other" bucket and for the empty (missing) value.
constexpr char kOtherLabel[] = "(other)";
constexpr char kMissingLabel[] = "(missing)";

void MergeNumeric(const NumericStats& from, NumericStats* into) {
  if (from.count > 0) {
    if (into->count == 0) {
      into->min = from.min;
      into->max = from.max;
    } else {
      into->min = std::min(into->min, from.min);
      into->max = std::max(into->max, from.max);
    }
  }
  into->count += from.count;
  into->missing += from.missing;
  into->sum += from.sum;
  into->sum_sq += from.sum_sq;
}

// Population standard deviation from count, sum and sum of squares. A column whose
// minimum equals its maximum has std 0 exactly. The moment formula alone leaves
// rounding noise there (about 2e-9 for ten cells of 0.1), and dividing by that noise
// would turn equal cells into large features.
double PopulationStd(const NumericStats& stats) {
  if (stats.min == stats.max) return 0;
  const double n = static_cast<double>(stats.count);
  const double mean = stats.sum / n;
  const double variance = std::max(0.0, stats.sum_sq / n - mean * mean);
  return std::sqrt(variance);
}

// Values of one categorical column ordered by descending count, ties by ascending value.
std::vector<std::string> TopValues(const CategoricalStats& stats, int max_values) {
  std::vector<std::pair<std::string, int64_t>> ranked(stats.counts.begin(), stats.counts.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    if (a.second != b.second) return a.second > b.second;
    return a.first < b.first;
  });
  const size_t kept_count = std::min(ranked.size(), static_cast<size_t>(max_values));
  std::vector<std::string> values;
  values.reserve(kept_count);
  for (size_t i = 0; i < kept_count; ++i) values.push_back(std::move(ranked[i].first));
  return values;
}

int CategoricalWidth(const CategoricalTransform& column) {
  return static_cast<int>(column.values.size()) + (column.has_other ? 1 : 0);
}

// Position of each kept value inside its column's one-hot block.
absl::flat_hash_map<std::string, int> ValueIndex(const CategoricalTransform& column) {
  absl::flat_hash_map<std::string, int> index;
  index.reserve(column.values.size());
  for (size_t i = 0; i < column.values.size(); ++i) {
    index.emplace(column.values[i], static_cast<int>(i));
  }
  return index;
}

// Writes the one-hot block of `value` at `out`, which has CategoricalWidth(column)
// zero-initialized slots. A value that is not kept goes to "other". A column without an
// "other" slot kept every value seen at fit time, so a value missing from it was never
// seen, and its block stays all zero.
void EncodeCategory(const CategoricalTransform& column,
                    const absl::flat_hash_map<std::string, int>& index, const std::string& value,
                    float* out) {
  auto it = index.find(value);
  if (it != index.end()) {
    out[it->second] = 1.0f;
  } else if (column.has_other) {
    out[column.values.size()] = 1.0f;
  }
}

// REQUIRES: value > −1 for a log1p column (checked at fit time and in TransformUser).
float Standardize(const NumericTransform& column, double value) {
  if (std::isnan(value)) return 0.0f;  // missing → mean → 0
  if (column.log1p) value = std::log1p(value);
  return static_cast<float>((value - column.mean) / column.scale);
}

void AccumulateNumeric(double value, bool log1p, NumericStats* column) {
  if (std::isnan(value)) {
    ++column->missing;
    return;
  }
  if (column->count == 0) {
    column->min = value;
    column->max = value;
  } else {
    column->min = std::min(column->min, value);
    column->max = std::max(column->max, value);
  }
  ++column->count;
  if (log1p) {
    if (value <= -1) return;  // reported through min at fit time
    value = std::log1p(value);
  }
  column->sum += value;
  column->sum_sq += value * value;
}

}  // namespace

absl::Status FeatureOptions::Validate() const {
  if (max_categories < kMinCategories || max_categories > kMaxCategories) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_categories is ", max_categories, "; it must be in [", kMinCategories,
                     ", ", kMaxCategories, "]"));
  }
  return absl::OkStatus();
}

void FeatureStats::Merge(const FeatureStats& other) {
  if (rows == 0 && numeric.empty() && categorical.empty()) {
    *this = other;
    return;
  }
  if (other.rows == 0 && other.numeric.empty() && other.categorical.empty()) return;
  assert(numeric.size() == other.numeric.size());
  assert(categorical.size() == other.categorical.size());

  rows += other.rows;
  for (size_t c = 0; c < numeric.size(); ++c) MergeNumeric(other.numeric[c], &numeric[c]);
  for (size_t c = 0; c < categorical.size(); ++c) {
    for (const auto& [value, count] : other.categorical[c].counts) {
      categorical[c].counts[value] += count;
    }
  }
}

FeatureStats ComputeFeatureStats(const RawShard& shard, const std::vector<bool>& log1p) {
  FeatureStats stats;
  stats.rows = shard.num_rows();

  const int num_numeric = shard.numeric.cols();
  stats.numeric.resize(static_cast<size_t>(num_numeric));
  for (int c = 0; c < num_numeric; ++c) {
    const bool use_log = static_cast<size_t>(c) < log1p.size() && log1p[c];
    for (int64_t row = 0; row < stats.rows; ++row) {
      AccumulateNumeric(shard.numeric(row, c), use_log, &stats.numeric[c]);
    }
  }

  stats.categorical.resize(shard.categorical.size());
  for (size_t c = 0; c < shard.categorical.size(); ++c) {
    // Count per dictionary code first: one std::map insertion per distinct value.
    const CategoricalColumn& column = shard.categorical[c];
    std::vector<int64_t> counts(column.dictionary().size(), 0);
    for (int32_t code : column.codes()) ++counts[code];
    for (size_t code = 0; code < counts.size(); ++code) {
      if (counts[code] > 0) stats.categorical[c].counts.emplace(column.dictionary()[code], counts[code]);
    }
  }
  return stats;
}

std::vector<FeatureStats> ComputeGroupStats(const RawShard& shard, const int32_t* labels,
                                            int num_groups) {
  std::vector<FeatureStats> groups(num_groups);
  for (FeatureStats& group : groups) {
    group.numeric.resize(static_cast<size_t>(shard.numeric.cols()));
    group.categorical.resize(shard.categorical.size());
  }
  const int64_t n = shard.num_rows();
  for (int64_t row = 0; row < n; ++row) ++groups[labels[row]].rows;
  const int cols = shard.numeric.cols();
  // Each column goes to one thread, which adds its rows in order into its own
  // statistics (neighbouring columns would share cache lines), so the sums do not
  // depend on the thread count. AccumulateNumeric does not throw.
#pragma omp parallel for schedule(dynamic, 1) if (n * cols > 65536)
  for (int c = 0; c < cols; ++c) {
    std::vector<NumericStats> column(static_cast<size_t>(num_groups));
    for (int64_t row = 0; row < n; ++row) {
      AccumulateNumeric(shard.numeric(row, c), false, &column[labels[row]]);
    }
    for (int g = 0; g < num_groups; ++g) groups[g].numeric[c] = column[g];
  }
  for (size_t c = 0; c < shard.categorical.size(); ++c) {
    const CategoricalColumn& column = shard.categorical[c];
    const size_t values = column.dictionary().size();
    // counts[g * values + code]: rows of group g with that value.
    std::vector<int64_t> counts(static_cast<size_t>(num_groups) * values, 0);
    for (int64_t row = 0; row < n; ++row) ++counts[labels[row] * values + column.codes()[row]];
    for (int g = 0; g < num_groups; ++g) {
      for (size_t code = 0; code < values; ++code) {
        const int64_t count = counts[g * values + code];
        if (count > 0) groups[g].categorical[c].counts.emplace(column.dictionary()[code], count);
      }
    }
  }
  return groups;
}

absl::StatusOr<std::vector<bool>> Log1pFlags(const Schema& schema, const FeatureOptions& options) {
  const std::vector<std::string> numeric_names = schema.NumericNames();
  std::vector<bool> flags(numeric_names.size(), false);
  for (const std::string& name : options.log1p_columns) {
    auto it = std::find(numeric_names.begin(), numeric_names.end(), name);
    if (it == numeric_names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "log1p column '", name, "' is not a numeric column; the numeric columns are ",
          absl::StrJoin(numeric_names, ", ")));
    }
    flags[it - numeric_names.begin()] = true;
  }
  return flags;
}

absl::StatusOr<FeatureTransform> FitFeatureTransform(const Schema& schema,
                                                     const FeatureStats& stats,
                                                     const FeatureOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (stats.rows == 0) {
    return absl::InvalidArgumentError(
        "cannot fit the feature transform: the statistics cover no rows; load at least one user");
  }
  const std::vector<std::string> numeric_names = schema.NumericNames();
  const std::vector<std::string> categorical_names = schema.CategoricalNames();
  if (numeric_names.size() != stats.numeric.size() ||
      categorical_names.size() != stats.categorical.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the statistics have ", stats.numeric.size(), " numeric and ", stats.categorical.size(),
        " categorical columns but the schema has ", numeric_names.size(), " and ",
        categorical_names.size(), "; compute the statistics with the same schema"));
  }

  absl::StatusOr<std::vector<bool>> log1p = Log1pFlags(schema, options);
  if (!log1p.ok()) return log1p.status();

  FeatureTransform transform;
  transform.numeric.reserve(numeric_names.size());
  for (size_t c = 0; c < numeric_names.size(); ++c) {
    const NumericStats& column = stats.numeric[c];
    if (column.count == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "numeric column '", numeric_names[c], "' has no non-missing value in ", stats.rows,
          " rows, so its mean is undefined; fill some cells or mark the column as ignore"));
    }
    NumericTransform numeric;
    numeric.name = numeric_names[c];
    numeric.log1p = (*log1p)[c];
    if (numeric.log1p && column.min <= -1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "numeric column '", numeric_names[c], "' has the value ", column.min,
          ", but log1p needs values > -1; remove the column from log1p_columns"));
    }
    numeric.mean = column.sum / static_cast<double>(column.count);
    const double std_dev = PopulationStd(column);
    if (!std::isfinite(numeric.mean) || !std::isfinite(std_dev)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "numeric column '", numeric_names[c], "' has values too large to standardize (from ",
          column.min, " to ", column.max, "); rescale the column or use log1p"));
    }
    numeric.scale = std_dev > 0 ? std_dev : 1.0;
    transform.numeric.push_back(std::move(numeric));
  }

  transform.categorical.reserve(categorical_names.size());
  for (size_t c = 0; c < categorical_names.size(); ++c) {
    CategoricalTransform categorical;
    categorical.name = categorical_names[c];
    categorical.values = TopValues(stats.categorical[c], options.max_categories);
    categorical.has_other = stats.categorical[c].counts.size() > categorical.values.size();
    transform.categorical.push_back(std::move(categorical));
  }
  return transform;
}

int FeatureTransform::dim() const {
  int total = static_cast<int>(numeric.size());
  for (const CategoricalTransform& column : categorical) total += CategoricalWidth(column);
  return total;
}

std::vector<std::string> FeatureTransform::FeatureNames() const {
  std::vector<std::string> names;
  names.reserve(dim());
  for (const NumericTransform& column : numeric) names.push_back(column.name);
  for (const CategoricalTransform& column : categorical) {
    for (const std::string& value : column.values) {
      names.push_back(absl::StrCat(column.name, "=", value.empty() ? kMissingLabel : value));
    }
    if (column.has_other) names.push_back(absl::StrCat(column.name, "=", kOtherLabel));
  }
  return names;
}

void TransformShard(const FeatureTransform& transform, const RawShard& shard, MatrixXfR* x) {
  assert(static_cast<size_t>(shard.numeric.cols()) == transform.numeric.size());
  assert(shard.categorical.size() == transform.categorical.size());
  const Eigen::Index n = shard.num_rows();
  x->setZero(n, transform.dim());

  for (size_t c = 0; c < transform.numeric.size(); ++c) {
    for (Eigen::Index row = 0; row < n; ++row) {
      (*x)(row, static_cast<Eigen::Index>(c)) =
          Standardize(transform.numeric[c], shard.numeric(row, static_cast<int>(c)));
    }
  }

  Eigen::Index offset = static_cast<Eigen::Index>(transform.numeric.size());
  for (size_t c = 0; c < transform.categorical.size(); ++c) {
    const CategoricalTransform& column = transform.categorical[c];
    const absl::flat_hash_map<std::string, int> index = ValueIndex(column);
    const CategoricalColumn& cells = shard.categorical[c];
    // One-hot slot of each dictionary code: -1 for no slot (a value never seen at fit
    // time in a column without "other").
    std::vector<int> slot_of_code(cells.dictionary().size(), -1);
    for (size_t code = 0; code < slot_of_code.size(); ++code) {
      auto it = index.find(cells.dictionary()[code]);
      if (it != index.end()) {
        slot_of_code[code] = it->second;
      } else if (column.has_other) {
        slot_of_code[code] = static_cast<int>(column.values.size());
      }
    }
    for (Eigen::Index row = 0; row < n; ++row) {
      const int slot = slot_of_code[cells.codes()[row]];
      if (slot >= 0) (*x)(row, offset + slot) = 1.0f;
    }
    offset += CategoricalWidth(column);
  }
}

TransformedRowSource::TransformedRowSource(const FeatureTransform& transform,
                                           const RawShard* shard)
    : transform_(transform), shard_(shard), dim_(transform.dim()) {
  for (const NumericTransform& column : transform.numeric) {
    any_log1p_ = any_log1p_ || column.log1p;
    means_.push_back(column.mean);
    scales_.push_back(column.scale);
  }
  assert(static_cast<size_t>(shard->numeric.cols()) == transform.numeric.size());
  assert(shard->categorical.size() == transform.categorical.size());
  int offset = static_cast<int>(transform.numeric.size());
  for (size_t c = 0; c < transform.categorical.size(); ++c) {
    const CategoricalTransform& column = transform.categorical[c];
    const absl::flat_hash_map<std::string, int> index = ValueIndex(column);
    const CategoricalColumn& cells = shard->categorical[c];
    // As TransformShard: a value never seen at fit time goes to "other", or nowhere.
    std::vector<int> columns(cells.dictionary().size(), -1);
    for (size_t code = 0; code < columns.size(); ++code) {
      auto it = index.find(cells.dictionary()[code]);
      if (it != index.end()) {
        columns[code] = offset + it->second;
      } else if (column.has_other) {
        columns[code] = offset + static_cast<int>(column.values.size());
      }
    }
    column_of_code_.push_back(std::move(columns));
    offset += CategoricalWidth(column);
  }
}

void TransformedRowSource::CopyRows(int64_t begin, int64_t count, float* out) const {
  const size_t num_numeric = transform_.numeric.size();
  std::fill(out, out + count * dim_, 0.0f);
  for (int64_t r = 0; r < count; ++r) {
    const float* raw = shard_->numeric.row(begin + r);
    float* row = out + r * dim_;
    if (!any_log1p_) {
      // Standardize without the log1p branch, in a loop the compiler can vectorize.
      for (size_t c = 0; c < num_numeric; ++c) {
        const double value = raw[c];
        const float standardized = static_cast<float>((value - means_[c]) / scales_[c]);
        row[c] = std::isnan(value) ? 0.0f : standardized;
      }
      continue;
    }
    for (size_t c = 0; c < num_numeric; ++c) row[c] = Standardize(transform_.numeric[c], raw[c]);
  }
  for (size_t c = 0; c < column_of_code_.size(); ++c) {
    const std::vector<int32_t>& codes = shard_->categorical[c].codes();
    const std::vector<int>& columns = column_of_code_[c];
    for (int64_t r = 0; r < count; ++r) {
      const int column = columns[codes[begin + r]];
      if (column >= 0) out[r * dim_ + column] = 1.0f;
    }
  }
}

void TransformedRowSource::PrefetchRow(int64_t row) const {
  PrefetchFloats(shard_->numeric.row(row), static_cast<int64_t>(transform_.numeric.size()));
}

absl::StatusOr<std::vector<float>> TransformUser(
    const FeatureTransform& transform, const std::map<std::string, std::string>& columns) {
  // Column name → position in transform.numeric (>= 0) or in transform.categorical
  // (encoded as -1 - position).
  absl::flat_hash_map<std::string, int> known;
  for (size_t c = 0; c < transform.numeric.size(); ++c) {
    known.emplace(transform.numeric[c].name, static_cast<int>(c));
  }
  for (size_t c = 0; c < transform.categorical.size(); ++c) {
    known.emplace(transform.categorical[c].name, -1 - static_cast<int>(c));
  }

  std::vector<double> numeric(transform.numeric.size(), std::numeric_limits<double>::quiet_NaN());
  std::vector<std::string> categorical(transform.categorical.size());
  for (const auto& [name, text] : columns) {
    auto it = known.find(name);
    if (it == known.end()) {
      std::vector<std::string> names;
      for (const NumericTransform& column : transform.numeric) names.push_back(column.name);
      for (const CategoricalTransform& column : transform.categorical) {
        names.push_back(column.name);
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown column '", name, "'; the feature transform has the columns: ",
                       absl::StrJoin(names, ", ")));
    }
    if (it->second < 0) {
      categorical[-1 - it->second] = text;
      continue;
    }
    if (text.empty()) continue;  // missing
    const std::optional<double> value = ParseNumber(text);
    if (!value.has_value() || !std::isfinite(*value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("column '", name, "': value '", text,
                       "' is not a finite number; send a number or an empty cell for missing"));
    }
    if (transform.numeric[it->second].log1p && *value <= -1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", name, "': value '", text,
          "' is <= -1, but the model takes log1p of this column; send a value > -1"));
    }
    numeric[it->second] = *value;
  }

  std::vector<float> features(transform.dim(), 0.0f);
  for (size_t c = 0; c < transform.numeric.size(); ++c) {
    features[c] = Standardize(transform.numeric[c], numeric[c]);
  }
  size_t offset = transform.numeric.size();
  for (size_t c = 0; c < transform.categorical.size(); ++c) {
    const CategoricalTransform& column = transform.categorical[c];
    EncodeCategory(column, ValueIndex(column), categorical[c], features.data() + offset);
    offset += CategoricalWidth(column);
  }
  return features;
}

OriginalUnits ToOriginalUnits(const FeatureTransform& transform, const float* point) {
  OriginalUnits units;
  units.numeric_means.reserve(transform.numeric.size());
  for (size_t c = 0; c < transform.numeric.size(); ++c) {
    const NumericTransform& column = transform.numeric[c];
    const double value = static_cast<double>(point[c]) * column.scale + column.mean;
    units.numeric_means.push_back(column.log1p ? std::expm1(value) : value);
  }
  size_t offset = transform.numeric.size();
  units.category_shares.reserve(transform.categorical.size());
  for (const CategoricalTransform& column : transform.categorical) {
    const int width = CategoricalWidth(column);
    units.category_shares.emplace_back(point + offset, point + offset + width);
    offset += width;
  }
  return units;
}

}  // namespace cohort
