// Storage and parsing of the profiling column types (boolean, text, embedding, label) of a
// raw shard. Kept apart from the numeric and categorical storage of RawShard so that each
// can change without the other.
#ifndef COHORT_CORE_PROFILE_COLUMNS_H_
#define COHORT_CORE_PROFILE_COLUMNS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/schema.h"

namespace cohort {

// One embedding column: row-major values, num_rows × dim.
struct EmbeddingColumn {
  int dim = 0;
  // [row * dim + j]. A missing row contains dim NaNs.
  std::vector<float> values;
  // [row] 1 when the cell was empty.
  std::vector<uint8_t> missing;
};

// Cell value of a missing boolean cell.
inline constexpr int8_t kMissingBoolean = -1;

// The profiling columns of one shard, each in Schema::NamesOfType() order, one entry per
// row of the shard.
struct ProfileColumns {
  // [boolean column][row]: 1, 0 or kMissingBoolean.
  std::vector<std::vector<int8_t>> boolean;
  // [text column][row]; an empty string is a missing cell.
  std::vector<std::vector<std::string>> text;
  std::vector<EmbeddingColumn> embedding;
  // [row] cell of the label column, as text. Empty when the schema has no label column.
  std::vector<std::string> labels;
};

// Returns empty columns for the profiling columns of `schema`.
ProfileColumns MakeEmptyProfileColumns(const Schema& schema);

// Parses a boolean cell: true/false, yes/no, y/n, t/f, 1/0 in any letter case, with
// surrounding spaces. Returns 1 or 0, kMissingBoolean for an empty cell, and nullopt for
// any other text.
std::optional<int8_t> ParseBoolean(std::string_view cell);

// Parses an embedding cell: exactly `dim` finite numbers separated by spaces or tabs.
// Returns an empty vector for an empty cell. Errors: InvalidArgument naming the value
// that is not a finite number, or the number of values found and `dim`.
[[nodiscard]] absl::StatusOr<std::vector<float>> ParseEmbedding(std::string_view cell, int dim);

// Appends the profiling cells of one row (`cells` in schema order) to `columns`. All cells
// are parsed before anything is appended, so on error `columns` is unchanged. Errors:
// InvalidArgument naming the column and value. A boolean cell must be a boolean, and an
// embedding cell must have the column's length and only numbers. Text and labels must be
// valid UTF-8, and a label must not be empty. The caller adds the file and line.
// REQUIRES: `columns` was made by MakeEmptyProfileColumns(schema).
[[nodiscard]] absl::Status AppendProfileCells(const Schema& schema,
                                              const std::vector<std::string>& cells,
                                              ProfileColumns* columns);

// Removes the last row from every column. REQUIRES: every column has a row.
void PopProfileRow(ProfileColumns* columns);

}  // namespace cohort

#endif  // COHORT_CORE_PROFILE_COLUMNS_H_
