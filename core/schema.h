// Column types of a user table and their inference from a CSV header and sample.
#ifndef COHORT_CORE_SCHEMA_H_
#define COHORT_CORE_SCHEMA_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

// kWeight is a per-user sample weight for K-means training (at most one column, never
// inferred, so it is only set by a SchemaOverrides type). The profiling types are never
// inferred either, so only a SchemaOverrides type sets them:
//   kBoolean:   true/false, yes/no, y/n, t/f or 1/0 (any letter case); empty is missing.
//   kText:      free UTF-8 text, encoded by the feature pipeline as hashed n-grams.
//   kEmbedding: a fixed-length float vector per cell, written as decimal numbers separated
//               by one or more spaces ("0.12 -3.5 1e-2"); empty is missing. Its length is
//               ColumnSpec::embedding_dim.
//   kLabel:     the binary training label of a profile model (at most one column), kept as
//               text; the pipeline spec names the positive value.
enum class ColumnType {
  kId,
  kNumeric,
  kCategorical,
  kIgnore,
  kWeight,
  kBoolean,
  kText,
  kEmbedding,
  kLabel,
};

// Returns "id", "numeric", "categorical", "ignore", "weight", "boolean", "text",
// "embedding" or "label".
std::string_view ColumnTypeName(ColumnType type);
// Parses the names above. Errors: InvalidArgument listing the accepted names.
[[nodiscard]] absl::StatusOr<ColumnType> ParseColumnType(std::string_view name);

struct ColumnSpec {
  std::string name;
  ColumnType type = ColumnType::kIgnore;
  // Values per cell of a kEmbedding column (>= 1); 0 for every other type. InferSchema
  // sets it from the first non-empty sample cell of the column.
  int embedding_dim = 0;
};

// The typed columns of a user table, in file order. Exactly one column is the id.
struct Schema {
  std::vector<ColumnSpec> columns;

  // Index of the id column, or -1 when there is none.
  int IdIndex() const;
  // Index of the weight column, or -1 when there is none.
  int WeightIndex() const;
  // Index of the label column, or -1 when there is none.
  int LabelIndex() const;
  // Index of the column called `name`, or -1.
  int IndexOf(std::string_view name) const;
  // Names of the numeric columns, then of the categorical ones, each in file order. The
  // id, weight and ignored columns are in neither list.
  std::vector<std::string> NumericNames() const;
  std::vector<std::string> CategoricalNames() const;

  // Names of the columns of `type`, in file order.
  std::vector<std::string> NamesOfType(ColumnType type) const;

  // Checks: at least one column, unique non-empty names, exactly one id column, at most
  // one weight column, at most one label column, at least one numeric, categorical,
  // boolean, text or embedding column, embedding_dim >= 1 exactly on embedding columns.
  // Errors: InvalidArgument naming the column (both columns for two ids, two weights or
  // two labels).
  [[nodiscard]] absl::Status Validate() const;
};

// An id column with this name is not read from the files: the user id of a record is
// its 1-based line number, prefixed by "<file index>:" for every file after the first
// (files in sorted path order). For data without an id column, such as survey exports.
inline constexpr std::string_view kLineNumberIdColumn = "@line";

// Choices that inference must respect: the id column and per-column types.
struct SchemaOverrides {
  // Name of the id column, or kLineNumberIdColumn. When empty, the first column whose
  // lower-cased name is "id" or ends in "id" is used, else the first column.
  std::string id_column;
  // Column name → type. Every name must exist in the header.
  std::map<std::string, ColumnType> types;
};

// Infers a schema from `header` and up to all of `sample_rows`: a column is numeric
// when every non-empty cell parses as a number (NaN and infinities count as numbers so
// that loading reports them), else categorical. An override wins over inference, and an
// embedding override takes its embedding_dim from the first non-empty sample cell.
// Errors: InvalidArgument for an override naming an unknown column (listing the
// header), for an embedding column without a non-empty sample cell, for an empty header,
// or when the result fails Schema::Validate().
[[nodiscard]] absl::StatusOr<Schema> InferSchema(
    const std::vector<std::string>& header,
    const std::vector<std::vector<std::string>>& sample_rows,
    const SchemaOverrides& overrides);

// Parses a decimal or scientific number with surrounding spaces allowed. Returns
// nullopt when `text` is not a number. "nan", "inf" and "-inf" parse (as non-finite).
std::optional<double> ParseNumber(std::string_view text);

}  // namespace cohort

#endif  // COHORT_CORE_SCHEMA_H_
