// PipelineModel: statistics, fitting and transformation. The spec format and validation
// are in pipeline_spec.cc.
#include "core/pipeline.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/csv.h"

namespace cohort {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Shards with at most this many rows are transformed on one thread.
constexpr int64_t kTransformParallelMinRows = 4096;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Index of each schema column within the storage of its type in RawShard.
int SourceIndex(const Schema& schema, const std::string& name) {
  const int index = schema.IndexOf(name);
  const ColumnType type = schema.columns[static_cast<size_t>(index)].type;
  int within_type = 0;
  for (int j = 0; j < index; ++j) {
    if (schema.columns[static_cast<size_t>(j)].type == type) ++within_type;
  }
  return within_type;
}

std::string NumberKey(double value) { return absl::StrFormat("%.17g", value); }

// The most frequent key; ties go to the smallest value (numerically for numbers), as
// scikit-learn's SimpleImputer(strategy="most_frequent") does.
std::string ModeOf(const std::map<std::string, int64_t>& counts, bool numeric_keys) {
  std::string best;
  int64_t best_count = -1;
  double best_number = 0;
  for (const auto& [key, count] : counts) {
    const double number = numeric_keys ? ParseNumber(key).value_or(0) : 0;
    const bool smaller = numeric_keys ? number < best_number : key < best;
    if (count > best_count || (count == best_count && smaller)) {
      best = key;
      best_count = count;
      best_number = number;
    }
  }
  return best;
}

// Prepared numeric value: the cell after the valid-range clip and log1p, NaN when missing.
// Counts a clip into `clipped` when it is not null.
double PrepareNumeric(const ColumnPipeline& spec, double raw, int64_t* clipped) {
  if (std::isnan(raw)) return kNaN;
  double value = raw;
  if (spec.valid_min.has_value() && (value < *spec.valid_min || value > *spec.valid_max)) {
    value = std::clamp(value, *spec.valid_min, *spec.valid_max);
    if (clipped != nullptr) ++*clipped;
  }
  if (spec.log1p) value = std::log1p(value);
  return value;
}

double RawNumeric(const RawShard& shard, int source, int64_t row) {
  return static_cast<double>(shard.numeric(row, source));
}

// Splits UTF-8 text into code points (as byte ranges), lowering ASCII letters.
std::vector<std::string> CodePoints(std::string_view text) {
  std::vector<std::string> points;
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    size_t length = 1;
    if (lead >= 0xF0) {
      length = 4;
    } else if (lead >= 0xE0) {
      length = 3;
    } else if (lead >= 0xC0) {
      length = 2;
    }
    length = std::min(length, text.size() - i);
    std::string point(text.substr(i, length));
    if (length == 1) point[0] = absl::ascii_tolower(point[0]);
    points.push_back(std::move(point));
    i += length;
  }
  return points;
}

// Word tokens: runs of characters other than ASCII whitespace and punctuation, with ASCII
// letters lowered. Text without spaces (such as Chinese) is one token per run.
std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x80 && (absl::ascii_isspace(u) || absl::ascii_ispunct(u))) {
      if (!current.empty()) words.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(absl::ascii_tolower(u));
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

uint64_t Hash(std::string_view text) { return XXH64(text.data(), text.size(), 0); }

// Adds the unit-L2-normalised n-gram counts of `text` to out[0 .. buckets).
void AddNgrams(const ColumnPipeline& spec, std::string_view text, float* out) {
  const std::vector<std::string> units =
      spec.ngrams == NgramKind::kWords ? Words(text) : CodePoints(text);
  const std::string separator = spec.ngrams == NgramKind::kWords ? " " : "";
  std::vector<double> counts(static_cast<size_t>(spec.ngram_buckets), 0.0);
  std::vector<size_t> touched;
  std::string gram;
  for (int n = spec.ngram_min; n <= spec.ngram_max; ++n) {
    for (size_t start = 0; start + static_cast<size_t>(n) <= units.size(); ++start) {
      gram.clear();
      for (int k = 0; k < n; ++k) {
        if (k > 0) gram += separator;
        gram += units[start + static_cast<size_t>(k)];
      }
      const size_t bucket = Hash(gram) % static_cast<uint64_t>(spec.ngram_buckets);
      if (counts[bucket] == 0) touched.push_back(bucket);
      counts[bucket] += 1;
    }
  }
  double norm_sq = 0;
  std::sort(touched.begin(), touched.end());
  for (size_t bucket : touched) norm_sq += counts[bucket] * counts[bucket];
  if (norm_sq == 0) return;
  const double norm = std::sqrt(norm_sq);
  for (size_t bucket : touched) out[bucket] = static_cast<float>(counts[bucket] / norm);
}

// One cell in the form the transform reads, whether it comes from a shard or a new user.
struct Cell {
  double number = kNaN;              // numeric (raw) and boolean (0/1); NaN when missing
  const std::string* text = nullptr;  // categorical and text
  const float* vector = nullptr;      // embedding; null when missing
};

// One-hot value → position, so that a shard's transform does not search the value list.
using CategoryIndex = absl::flat_hash_map<std::string_view, int>;

CategoryIndex IndexCategories(const FittedColumn& column) {
  CategoryIndex index;
  for (size_t i = 0; i < column.categories.size(); ++i) {
    index.emplace(column.categories[i], static_cast<int>(i));
  }
  return index;
}

// Writes the features of one cell to out[0 .. width()), counting clips and imputations.
// `index` is IndexCategories(column) or null, in which case one-hot values are searched.
void TransformCell(const FittedColumn& column, const Cell& cell, float* out,
                   int64_t* clipped, int64_t* imputed, const CategoryIndex* index) {
  const ColumnPipeline& spec = column.spec;
  switch (column.type) {
    case ColumnType::kNumeric:
    case ColumnType::kBoolean: {
      double value = column.type == ColumnType::kNumeric
                         ? PrepareNumeric(spec, cell.number, clipped)
                         : cell.number;
      const bool missing = std::isnan(value);
      if (missing && !std::isnan(column.impute_value)) {
        value = column.impute_value;
        ++*imputed;
      }
      if (std::isnan(value)) {
        out[0] = 0.0f;
      } else {
        value = std::clamp(value, column.clip_low, column.clip_high);
        out[0] = static_cast<float>((value - column.shift) / column.scale);
      }
      if (spec.missing_indicator) out[1] = missing ? 1.0f : 0.0f;
      return;
    }
    case ColumnType::kCategorical: {
      std::string_view value = *cell.text;
      const bool missing = value.empty();
      if (missing && spec.impute != ImputeRule::kNone) {
        value = column.impute_category;
        ++*imputed;
      }
      int width = 0;
      if (spec.encoding == CategoryEncoding::kHash) {
        width = spec.hash_buckets;
        std::fill(out, out + width, 0.0f);
        out[Hash(value) % static_cast<uint64_t>(spec.hash_buckets)] = 1.0f;
      } else {
        width = static_cast<int>(column.categories.size()) + (column.has_other ? 1 : 0);
        std::fill(out, out + width, 0.0f);
        int position = -1;
        if (index != nullptr) {
          const auto it = index->find(value);
          if (it != index->end()) position = it->second;
        } else {
          const auto it = std::find(column.categories.begin(), column.categories.end(), value);
          if (it != column.categories.end()) position = static_cast<int>(it - column.categories.begin());
        }
        if (position >= 0) {
          out[position] = 1.0f;
        } else if (column.has_other) {
          out[width - 1] = 1.0f;
        }
      }
      if (spec.missing_indicator) out[width] = missing ? 1.0f : 0.0f;
      return;
    }
    case ColumnType::kText:
      std::fill(out, out + spec.ngram_buckets, 0.0f);
      if (cell.text != nullptr && !cell.text->empty()) AddNgrams(spec, *cell.text, out);
      return;
    case ColumnType::kEmbedding: {
      const int dim = column.embedding_dim;
      const bool missing = cell.vector == nullptr;
      for (int j = 0; j < dim; ++j) {
        if (!missing) {
          out[j] = cell.vector[j];
        } else if (!column.impute_vector.empty()) {
          out[j] = static_cast<float>(column.impute_vector[static_cast<size_t>(j)]);
        } else {
          out[j] = 0.0f;
        }
      }
      if (missing && !column.impute_vector.empty()) ++*imputed;
      if (spec.missing_indicator) out[dim] = missing ? 1.0f : 0.0f;
      return;
    }
    default:
      return;
  }
}

Cell ShardCell(const FittedColumn& column, const RawShard& shard, int64_t row) {
  Cell cell;
  const size_t source = static_cast<size_t>(column.source_index);
  const size_t r = static_cast<size_t>(row);
  switch (column.type) {
    case ColumnType::kNumeric:
      cell.number = RawNumeric(shard, column.source_index, row);
      break;
    case ColumnType::kBoolean: {
      const int8_t value = shard.profile.boolean[source][r];
      cell.number = value == kMissingBoolean ? kNaN : static_cast<double>(value);
      break;
    }
    case ColumnType::kCategorical:
      cell.text = &shard.categorical[source].dictionary()[shard.categorical[source].codes()[r]];
      break;
    case ColumnType::kText:
      cell.text = &shard.profile.text[source][r];
      break;
    case ColumnType::kEmbedding: {
      const EmbeddingColumn& embedding = shard.profile.embedding[source];
      if (embedding.missing[r] == 0) {
        cell.vector = embedding.values.data() + r * static_cast<size_t>(embedding.dim);
      }
      break;
    }
    default:
      break;
  }
  return cell;
}

// Checks that `shard` stores every column the model reads.
absl::Status CheckShardColumns(const PipelineModel& model, const RawShard& shard) {
  for (const FittedColumn& column : model.columns) {
    const size_t source = static_cast<size_t>(column.source_index);
    size_t available = 0;
    switch (column.type) {
      case ColumnType::kNumeric:
        available = static_cast<size_t>(shard.numeric.cols());
        break;
      case ColumnType::kBoolean:
        available = shard.profile.boolean.size();
        break;
      case ColumnType::kCategorical:
        available = shard.categorical.size();
        break;
      case ColumnType::kText:
        available = shard.profile.text.size();
        break;
      case ColumnType::kEmbedding:
        available = shard.profile.embedding.size();
        if (source < available && shard.profile.embedding[source].dim != column.embedding_dim) {
          available = 0;
        }
        break;
      default:
        break;
    }
    if (source >= available) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard.shard_id, " has no column '", column.spec.column,
          "' as the pipeline was fitted; load the data with the model's schema"));
    }
  }
  if (!model.label_column.empty() && static_cast<int64_t>(shard.profile.labels.size()) != shard.ids.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard.shard_id, " has no label column '", model.label_column,
        "'; load the data with the model's schema"));
  }
  return absl::OkStatus();
}

}  // namespace

int FittedColumn::width() const {
  const int indicator = spec.missing_indicator ? 1 : 0;
  switch (type) {
    case ColumnType::kNumeric:
    case ColumnType::kBoolean:
      return 1 + indicator;
    case ColumnType::kCategorical:
      if (spec.encoding == CategoryEncoding::kHash) return spec.hash_buckets + indicator;
      return static_cast<int>(categories.size()) + (has_other ? 1 : 0) + indicator;
    case ColumnType::kText:
      return spec.ngram_buckets;
    case ColumnType::kEmbedding:
      return embedding_dim + indicator;
    default:
      return 0;
  }
}

int PipelineModel::dim() const {
  int total = 0;
  for (const FittedColumn& column : columns) total += column.width();
  return total;
}

std::vector<std::string> PipelineModel::FeatureNames() const {
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(dim()));
  for (const FittedColumn& column : columns) {
    const std::string& name = column.spec.column;
    switch (column.type) {
      case ColumnType::kNumeric:
      case ColumnType::kBoolean:
        names.push_back(name);
        break;
      case ColumnType::kCategorical:
        if (column.spec.encoding == CategoryEncoding::kHash) {
          for (int b = 0; b < column.spec.hash_buckets; ++b) names.push_back(absl::StrCat(name, "#", b));
        } else {
          for (const std::string& value : column.categories) {
            names.push_back(absl::StrCat(name, "=", value.empty() ? "(missing)" : value));
          }
          if (column.has_other) names.push_back(absl::StrCat(name, "=(other)"));
        }
        break;
      case ColumnType::kText: {
        const std::string kind = column.spec.ngrams == NgramKind::kWords ? "words" : "chars";
        for (int b = 0; b < column.spec.ngram_buckets; ++b) {
          names.push_back(absl::StrCat(name, "~", kind, "[", column.spec.ngram_min, ",",
                                       column.spec.ngram_max, "]#", b));
        }
        break;
      }
      case ColumnType::kEmbedding:
        for (int j = 0; j < column.embedding_dim; ++j) names.push_back(absl::StrCat(name, "[", j, "]"));
        break;
      default:
        break;
    }
    if (column.spec.missing_indicator) names.push_back(absl::StrCat(name, "=(missing)"));
  }
  return names;
}

void PipelineFirstPassStats::Merge(const PipelineFirstPassStats& other) {
  if (columns.empty()) {
    const int64_t own_rows = rows;
    CleaningReport own_report = report;
    std::map<std::string, int64_t> own_labels = label_counts;
    *this = other;
    rows += own_rows;
    report.Merge(own_report);
    for (const auto& [label, count] : own_labels) label_counts[label] += count;
    return;
  }
  rows += other.rows;
  report.Merge(other.report);
  for (const auto& [label, count] : other.label_counts) label_counts[label] += count;
  for (size_t c = 0; c < columns.size() && c < other.columns.size(); ++c) {
    ColumnFirstPassStats& to = columns[c];
    const ColumnFirstPassStats& from = other.columns[c];
    to.min = std::min(to.min, from.min);
    to.max = std::max(to.max, from.max);
    to.min_before_log1p = std::min(to.min_before_log1p, from.min_before_log1p);
    to.present += from.present;
    to.missing += from.missing;
    to.sum += from.sum;
    to.sum_sq += from.sum_sq;
    to.sketch.Merge(from.sketch);
    for (const auto& [value, count] : from.value_counts) to.value_counts[value] += count;
    if (to.component_sums.size() < from.component_sums.size()) {
      to.component_sums.resize(from.component_sums.size(), 0.0);
    }
    for (size_t j = 0; j < from.component_sums.size(); ++j) {
      to.component_sums[j] += from.component_sums[j];
    }
  }
}

absl::StatusOr<PipelineFirstPassStats> ComputeFirstPassStats(const PipelineSpec& spec,
                                                             const Schema& schema,
                                                             const RawShard& shard) {
  if (absl::Status status = spec.Validate(schema); !status.ok()) return status;
  // A model skeleton gives the source indices and the shard check.
  PipelineModel skeleton;
  for (const ColumnPipeline& column : spec.columns) {
    FittedColumn fitted;
    fitted.spec = column;
    fitted.type = schema.columns[static_cast<size_t>(schema.IndexOf(column.column))].type;
    fitted.source_index = SourceIndex(schema, column.column);
    fitted.embedding_dim =
        schema.columns[static_cast<size_t>(schema.IndexOf(column.column))].embedding_dim;
    skeleton.columns.push_back(std::move(fitted));
  }
  skeleton.label_column = spec.label_column;
  if (absl::Status status = CheckShardColumns(skeleton, shard); !status.ok()) return status;

  PipelineFirstPassStats stats;
  stats.rows = shard.num_rows();
  stats.columns.resize(spec.columns.size());
  for (const std::string& label : shard.profile.labels) {
    if (!spec.label_column.empty()) ++stats.label_counts[label];
  }
  for (size_t c = 0; c < skeleton.columns.size(); ++c) {
    const FittedColumn& column = skeleton.columns[c];
    ColumnFirstPassStats& out = stats.columns[c];
    int64_t clipped = 0;
    if (column.type == ColumnType::kEmbedding) {
      out.component_sums.assign(static_cast<size_t>(column.embedding_dim), 0.0);
    }
    for (int64_t row = 0; row < shard.num_rows(); ++row) {
      const Cell cell = ShardCell(column, shard, row);
      switch (column.type) {
        case ColumnType::kNumeric:
        case ColumnType::kBoolean: {
          const double raw = cell.number;
          if (std::isnan(raw)) {
            ++out.missing;
            break;
          }
          const double value = column.type == ColumnType::kNumeric
                                   ? PrepareNumeric(column.spec, raw, &clipped)
                                   : raw;
          const double before_log = column.spec.valid_min.has_value()
                                        ? std::clamp(raw, *column.spec.valid_min, *column.spec.valid_max)
                                        : raw;
          out.min_before_log1p = std::min(out.min_before_log1p, before_log);
          ++out.present;
          // log1p of a value <= -1 is not finite; FitFirstPass rejects such a column.
          if (!std::isfinite(value)) break;
          out.min = std::min(out.min, value);
          out.max = std::max(out.max, value);
          out.sum += value;
          out.sum_sq += value * value;
          // Only a median or quantile clip reads the sketch, and feeding it costs about a
          // quarter of the fit, so other columns skip it.
          const bool needs_quantiles = column.spec.impute == ImputeRule::kMedian ||
                                       column.spec.clip_lower_quantile.has_value();
          if (column.type == ColumnType::kNumeric && needs_quantiles) out.sketch.Add(value);
          if (column.spec.impute == ImputeRule::kMode) ++out.value_counts[NumberKey(value)];
          break;
        }
        case ColumnType::kCategorical: {
          // Hashing needs no counts, which keeps high-cardinality columns cheap, unless
          // the mode is imputed.
          const bool count = column.spec.encoding == CategoryEncoding::kOneHot ||
                             column.spec.impute == ImputeRule::kMode;
          if (cell.text->empty()) {
            ++out.missing;
            // Without imputation "" is a value of its own and is counted for the top N.
            if (count && column.spec.impute == ImputeRule::kNone) ++out.value_counts[*cell.text];
          } else {
            ++out.present;
            if (count) ++out.value_counts[*cell.text];
          }
          break;
        }
        case ColumnType::kText:
          ++(cell.text->empty() ? out.missing : out.present);
          break;
        case ColumnType::kEmbedding:
          if (cell.vector == nullptr) {
            ++out.missing;
          } else {
            ++out.present;
            for (int j = 0; j < column.embedding_dim; ++j) {
              out.component_sums[static_cast<size_t>(j)] += static_cast<double>(cell.vector[j]);
            }
          }
          break;
        default:
          break;
      }
    }
    if (clipped > 0) stats.report.clipped_values[column.spec.column] += clipped;
  }
  return stats;
}

namespace {

absl::Status FitColumn(const ColumnFirstPassStats& stats, FittedColumn* column) {
  const ColumnPipeline& spec = column->spec;
  const std::string& name = spec.column;
  column->impute_value = kNaN;
  column->clip_low = -kInfinity;
  column->clip_high = kInfinity;
  const bool needs_values = spec.impute == ImputeRule::kMean || spec.impute == ImputeRule::kMedian ||
                            spec.impute == ImputeRule::kMode ||
                            spec.clip_lower_quantile.has_value() || spec.scale != ScaleRule::kNone;
  if (needs_values && stats.present == 0 && column->type != ColumnType::kCategorical) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline column '", name, "' has no non-missing value, so its statistics are "
        "undefined; fill some cells, impute a constant or drop the column from the spec"));
  }
  switch (column->type) {
    case ColumnType::kNumeric:
    case ColumnType::kBoolean: {
      if (spec.log1p && stats.present > 0 && stats.min_before_log1p <= -1) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pipeline column '", name, "' has the value ", stats.min_before_log1p,
            ", for which log1p is undefined (values must be > -1); drop log1p or set a range"));
      }
      const double n = static_cast<double>(stats.present);
      switch (spec.impute) {
        case ImputeRule::kNone:
          break;
        case ImputeRule::kMean:
          column->impute_value = stats.sum / n;
          break;
        case ImputeRule::kMedian:
          column->impute_value = stats.sketch.Quantile(0.5);
          break;
        case ImputeRule::kMode:
          column->impute_value = ParseNumber(ModeOf(stats.value_counts, true)).value_or(0);
          break;
        case ImputeRule::kConstant: {
          const double constant = ParseNumber(spec.impute_constant).value_or(0);
          column->impute_value = spec.log1p ? std::log1p(constant) : constant;
          break;
        }
      }
      if (spec.clip_lower_quantile.has_value()) {
        column->clip_low = stats.sketch.Quantile(*spec.clip_lower_quantile);
        column->clip_high = stats.sketch.Quantile(*spec.clip_upper_quantile);
      }
      if (!std::isfinite(stats.sum_sq) && spec.scale == ScaleRule::kStandardize) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pipeline column '", name, "' has values too large to standardize (", stats.min,
            " to ", stats.max, "); rescale the column or use log1p"));
      }
      break;
    }
    case ColumnType::kCategorical: {
      std::map<std::string, int64_t> counts = stats.value_counts;
      if (spec.impute == ImputeRule::kMode) {
        if (counts.empty()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "pipeline column '", name, "' has no non-empty value, so its mode is undefined"));
        }
        column->impute_category = ModeOf(counts, false);
      } else if (spec.impute == ImputeRule::kConstant) {
        column->impute_category = spec.impute_constant;
      }
      // Imputed cells take the imputed value, so they count for the top N as that value.
      if (spec.impute != ImputeRule::kNone && stats.missing > 0) {
        counts[column->impute_category] += stats.missing;
      }
      if (spec.encoding == CategoryEncoding::kOneHot) {
        std::vector<std::pair<std::string, int64_t>> ranked(counts.begin(), counts.end());
        std::stable_sort(ranked.begin(), ranked.end(),
                         [](const auto& a, const auto& b) { return a.second > b.second; });
        const size_t num_kept = std::min(ranked.size(), static_cast<size_t>(spec.top_n));
        for (size_t i = 0; i < num_kept; ++i) column->categories.push_back(ranked[i].first);
        column->has_other = ranked.size() > num_kept;
      }
      break;
    }
    case ColumnType::kEmbedding:
      if (spec.impute == ImputeRule::kMean) {
        for (double sum : stats.component_sums) {
          column->impute_vector.push_back(sum / static_cast<double>(stats.present));
        }
      } else if (spec.impute == ImputeRule::kConstant) {
        column->impute_vector.assign(static_cast<size_t>(column->embedding_dim),
                                     ParseNumber(spec.impute_constant).value_or(0));
      }
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PipelineModel> FitFirstPass(const PipelineSpec& spec, const Schema& schema,
                                           const PipelineFirstPassStats& stats) {
  if (absl::Status status = spec.Validate(schema); !status.ok()) return status;
  if (stats.rows == 0) {
    return absl::InvalidArgumentError("the pipeline has no rows to fit on; load some users first");
  }
  if (stats.columns.size() != spec.columns.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the statistics have ", stats.columns.size(),
                                                   " columns but the spec has ",
                                                   spec.columns.size()));
  }
  PipelineModel model;
  model.label_column = spec.label_column;
  model.positive_label = spec.positive_label;
  model.fitted_rows = stats.rows;
  if (!spec.label_column.empty()) {
    std::vector<std::string> seen;
    for (const auto& [label, count] : stats.label_counts) seen.push_back(label);
    if (seen.size() > 2 || stats.label_counts.count(spec.positive_label) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "label column '", spec.label_column, "' has the values '", absl::StrJoin(seen, "', '"),
          "'; a binary label needs at most two values, one of them the positive value '",
          spec.positive_label, "'"));
    }
  }
  for (size_t c = 0; c < spec.columns.size(); ++c) {
    const ColumnPipeline& column_spec = spec.columns[c];
    const ColumnSpec& schema_column =
        schema.columns[static_cast<size_t>(schema.IndexOf(column_spec.column))];
    FittedColumn column;
    column.spec = column_spec;
    column.type = schema_column.type;
    column.source_index = SourceIndex(schema, column_spec.column);
    column.embedding_dim = schema_column.embedding_dim;
    if (absl::Status status = FitColumn(stats.columns[c], &column); !status.ok()) return status;
    model.columns.push_back(std::move(column));
  }
  return model;
}

void PipelineSecondPassStats::Merge(const PipelineSecondPassStats& other) {
  if (columns.empty()) {
    columns = other.columns;
    return;
  }
  for (size_t c = 0; c < columns.size() && c < other.columns.size(); ++c) {
    Moments& to = columns[c];
    const Moments& from = other.columns[c];
    if (from.count > 0) {
      to.min = to.count > 0 ? std::min(to.min, from.min) : from.min;
      to.max = to.count > 0 ? std::max(to.max, from.max) : from.max;
    }
    to.count += from.count;
    to.sum += from.sum;
    to.sum_sq += from.sum_sq;
  }
}

PipelineSecondPassStats ComputeSecondPassStats(const PipelineModel& model, const RawShard& shard) {
  PipelineSecondPassStats stats;
  stats.columns.resize(model.columns.size());
  for (size_t c = 0; c < model.columns.size(); ++c) {
    const FittedColumn& column = model.columns[c];
    if (column.type != ColumnType::kNumeric || column.spec.scale == ScaleRule::kNone) continue;
    PipelineSecondPassStats::Moments& out = stats.columns[c];
    for (int64_t row = 0; row < shard.num_rows(); ++row) {
      double value = PrepareNumeric(column.spec, RawNumeric(shard, column.source_index, row), nullptr);
      if (std::isnan(value)) continue;
      value = std::clamp(value, column.clip_low, column.clip_high);
      out.min = out.count > 0 ? std::min(out.min, value) : value;
      out.max = out.count > 0 ? std::max(out.max, value) : value;
      ++out.count;
      out.sum += value;
      out.sum_sq += value * value;
    }
  }
  return stats;
}

absl::Status FinishFit(const PipelineSecondPassStats& moments, PipelineModel* model) {
  if (moments.columns.size() != model->columns.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the second-pass statistics have ", moments.columns.size(), " columns but the model has ",
        model->columns.size(), "; compute them with ComputeSecondPassStats on this model"));
  }
  for (size_t c = 0; c < model->columns.size(); ++c) {
    FittedColumn& column = model->columns[c];
    column.shift = 0;
    column.scale = 1;
    if (column.type != ColumnType::kNumeric || column.spec.scale == ScaleRule::kNone) continue;
    const PipelineSecondPassStats::Moments& m = moments.columns[c];
    if (m.count == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pipeline column '", column.spec.column, "' has no non-missing value to scale by"));
    }
    const double n = static_cast<double>(m.count);
    if (column.spec.scale == ScaleRule::kStandardize) {
      const double mean = m.sum / n;
      const double deviation = std::sqrt(std::max(0.0, m.sum_sq / n - mean * mean));
      column.shift = mean;
      column.scale = deviation > 0 ? deviation : 1.0;
    } else {
      column.shift = m.min;
      column.scale = m.max > m.min ? m.max - m.min : 1.0;
    }
  }
  model->finished = true;
  return absl::OkStatus();
}

absl::StatusOr<PipelineModel> FitPipeline(const PipelineSpec& spec, const Schema& schema,
                                          const std::vector<RawShard>& shards,
                                          CleaningReport* report) {
  PipelineFirstPassStats first;
  for (const RawShard& shard : shards) {
    absl::StatusOr<PipelineFirstPassStats> stats = ComputeFirstPassStats(spec, schema, shard);
    if (!stats.ok()) return stats.status();
    first.Merge(*stats);
  }
  absl::StatusOr<PipelineModel> model = FitFirstPass(spec, schema, first);
  if (!model.ok()) return model.status();
  PipelineSecondPassStats second;
  for (const RawShard& shard : shards) second.Merge(ComputeSecondPassStats(*model, shard));
  if (absl::Status status = FinishFit(second, &*model); !status.ok()) return status;
  if (report != nullptr) report->Merge(first.report);
  return model;
}

absl::Status TransformShardPipeline(const PipelineModel& model, const RawShard& shard,
                                    MatrixXfR* x, std::vector<uint8_t>* labels,
                                    CleaningReport* report) {
  if (!model.finished) {
    return absl::FailedPreconditionError(
        "the pipeline model is not finished; run FinishFit before transforming");
  }
  if (absl::Status status = CheckShardColumns(model, shard); !status.ok()) return status;
  const int64_t n = shard.num_rows();
  x->resize(n, model.dim());
  const size_t num_columns = model.columns.size();
  std::vector<int64_t> clipped(num_columns, 0);
  std::vector<int64_t> imputed(num_columns, 0);
  std::vector<CategoryIndex> indexes;
  for (const FittedColumn& column : model.columns) indexes.push_back(IndexCategories(column));

  // Rows are independent and each thread writes its own rows, so x does not depend on the
  // thread count. The counts are integer sums, which any order adds to the same total.
#pragma omp parallel if (n > kTransformParallelMinRows)
  {
    std::vector<int64_t> own_clipped(num_columns, 0);
    std::vector<int64_t> own_imputed(num_columns, 0);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n; ++row) {
      float* out = x->row(row).data();
      for (size_t c = 0; c < num_columns; ++c) {
        const FittedColumn& column = model.columns[c];
        TransformCell(column, ShardCell(column, shard, row), out, &own_clipped[c],
                      &own_imputed[c], &indexes[c]);
        out += column.width();
      }
    }
#pragma omp critical(cohort_pipeline_counts)
    for (size_t c = 0; c < num_columns; ++c) {
      clipped[c] += own_clipped[c];
      imputed[c] += own_imputed[c];
    }
  }
  if (labels != nullptr) {
    labels->clear();
    if (!model.label_column.empty()) {
      labels->reserve(static_cast<size_t>(n));
      for (const std::string& label : shard.profile.labels) labels->push_back(LabelOf(model, label));
    }
  }
  if (report != nullptr) {
    for (size_t c = 0; c < model.columns.size(); ++c) {
      if (clipped[c] > 0) report->clipped_values[model.columns[c].spec.column] += clipped[c];
      if (imputed[c] > 0) report->imputed_cells[model.columns[c].spec.column] += imputed[c];
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> TransformUserPipeline(
    const PipelineModel& model, const std::map<std::string, std::string>& cells) {
  if (!model.finished) {
    return absl::FailedPreconditionError(
        "the pipeline model is not finished; run FinishFit before transforming");
  }
  std::map<std::string, const FittedColumn*> by_name;
  for (const FittedColumn& column : model.columns) by_name[column.spec.column] = &column;
  for (const auto& [name, value] : cells) {
    if (by_name.count(name) == 0 && name != model.label_column) {
      std::vector<std::string> known;
      for (const auto& [known_name, column] : by_name) known.push_back(known_name);
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", name, "' is not an input of the pipeline; its columns are '",
          absl::StrJoin(known, "', '"), "'"));
    }
  }
  std::vector<float> features(static_cast<size_t>(model.dim()), 0.0f);
  float* out = features.data();
  static const std::string kEmpty;
  for (const FittedColumn& column : model.columns) {
    const auto it = cells.find(column.spec.column);
    const std::string& text = it == cells.end() ? kEmpty : it->second;
    auto bad_cell = [&column, &text](absl::string_view problem) {
      return absl::InvalidArgumentError(absl::StrCat("column '", column.spec.column, "': value '",
                                                     text, "' ", problem));
    };
    Cell cell;
    std::vector<float> vector;
    switch (column.type) {
      case ColumnType::kNumeric:
        if (text.find_first_not_of(" \t") != std::string::npos) {
          const std::optional<double> value = ParseNumber(text);
          if (!value.has_value() || !std::isfinite(*value)) {
            return bad_cell("is not a finite number; send a number or an empty cell");
          }
          cell.number = *value;
          if (column.spec.log1p && !std::isfinite(PrepareNumeric(column.spec, *value, nullptr))) {
            return bad_cell("is <= -1, for which log1p is undefined");
          }
        }
        break;
      case ColumnType::kBoolean: {
        const std::optional<int8_t> value = ParseBoolean(text);
        if (!value.has_value()) return bad_cell("is not a boolean; use true/false, yes/no or 1/0");
        cell.number = *value == kMissingBoolean ? kNaN : static_cast<double>(*value);
        break;
      }
      case ColumnType::kCategorical:
      case ColumnType::kText:
        if (!IsValidUtf8(text)) return bad_cell("is not valid UTF-8");
        cell.text = &text;
        break;
      case ColumnType::kEmbedding: {
        absl::StatusOr<std::vector<float>> parsed = ParseEmbedding(text, column.embedding_dim);
        if (!parsed.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("column '", column.spec.column, "': ", parsed.status().message()));
        }
        vector = *std::move(parsed);
        if (!vector.empty()) cell.vector = vector.data();
        break;
      }
      default:
        break;
    }
    int64_t clipped = 0;
    int64_t imputed = 0;
    TransformCell(column, cell, out, &clipped, &imputed, nullptr);
    out += column.width();
  }
  return features;
}

}  // namespace cohort
