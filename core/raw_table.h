// Raw (untransformed) user rows grouped by virtual shard, and their loading from CSV.
#ifndef COHORT_CORE_RAW_TABLE_H_
#define COHORT_CORE_RAW_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/columns.h"
#include "core/cleaning.h"
#include "core/csv.h"
#include "core/profile_columns.h"
#include "core/schema.h"

namespace cohort {

// The rows of one virtual shard in input order (files in sorted path order, then line
// order), in one container per column type. Numeric columns follow
// Schema::NumericNames() and categorical columns Schema::CategoricalNames(). A new
// column type gets its own container here, filled by AppendUserRow and the loader.
//
// Precision: numeric cells are stored as float32, so a value keeps about 7 significant
// digits (1234567.89 is stored as 1234567.875). Statistics are summed in double from
// the stored values.
struct RawShard {
  int shard_id = 0;
  IdColumn ids;
  // n × (numeric columns), row-major; NaN marks a missing (empty) cell.
  NumericMatrix numeric;
  // [categorical column]; the empty string is the missing value.
  std::vector<CategoricalColumn> categorical;
  // [row] sample weight of each user, finite and >= 0. Empty when the schema has no
  // weight column.
  std::vector<float> weights;
  // Boolean, text, embedding and label columns.
  ProfileColumns profile;

  int64_t num_rows() const { return ids.size(); }
  // Heap bytes held by the columns, capacity included.
  int64_t MemoryBytes() const;
  // Releases the capacity beyond the current size of every column where it exceeds 1/32
  // of the size.
  void ShrinkToFit();
};
// Returns an empty shard with the column vectors of `schema`.
RawShard MakeEmptyShard(const Schema& schema, int shard_id);

// Appends one user to `shard`. `cells` contains one cell per schema column, in schema
// order. Errors: InvalidArgument when the id is empty, when a numeric cell is not a
// number, is NaN or infinite, or is outside the float32 range, when the weight cell
// is empty, not a number, not finite, negative or above the float maximum, and for a
// profiling cell that AppendProfileCells rejects. The message names the column and the
// value, and the caller adds the file and line. On error the shard is unchanged.
[[nodiscard]] absl::Status AppendUserRow(const Schema& schema, const std::vector<std::string>& cells,
                                         RawShard* shard);

// Returns the cells of row `row` of `shard` in schema order, which AppendUserRow turns
// back into the same stored row: numbers are printed with 17 significant digits, so
// every float32 value parses back exactly. Missing cells are empty, and so are the
// cells of ignored columns, which a shard does not store.
// REQUIRES: `shard` was made by MakeEmptyShard(schema) and 0 <= row < num_rows().
std::vector<std::string> UserRowCells(const Schema& schema, const RawShard& shard, int64_t row);

// The rule for a user id that appears again in a dataset's input.
enum class DuplicateIdRule {
  kReject,     // the load or the streamed batch fails, naming both places
  kKeepFirst,  // the first row in input order is kept, later ones are dropped and counted
};

struct UserLoadOptions {
  // Files to read, in this order (see ExpandPaths).
  std::vector<std::string> paths;
  CsvOptions csv;
  // Every schema column must appear in each file's header; other header columns are
  // ignored.
  Schema schema;
  // Total number of virtual shards S (>= 1).
  int num_shards = 64;
  // Shards to keep, each in [0, num_shards). Rows of other shards are split into fields
  // and their id is hashed, but their cells are not parsed.
  std::vector<int> shards;
  DuplicateIdRule duplicate_ids = DuplicateIdRule::kReject;
  // OpenMP threads that parse blocks of lines; 0 means omp_get_max_threads(). The result
  // does not depend on it. Range [0, 1024].
  int threads = 0;
  // Rules for repeated ids and unparsable cells. The default rejects both.
  CleaningRules cleaning;
};

struct LoadedShards {
  // One entry per requested shard, sorted by shard id; a shard without rows is empty.
  std::vector<RawShard> shards;
  // Data rows read from all files, including those of shards not requested.
  int64_t rows_read = 0;
  // Rows dropped by DuplicateIdRule::kKeepFirst, per entry of `shards`.
  std::vector<int64_t> duplicate_rows;
  // Rows dropped and cells blanked by `cleaning` in the requested shards.
  CleaningReport cleaning_report;
};

// Reads the files and keeps the rows of the requested shards (user → shard by
// ShardOfUser). Errors are InvalidArgument, naming file, line, column and value, for a
// schema column missing from a header, a malformed line, a non-numeric, NaN or infinite
// cell in a numeric column or one outside the float32 range, an empty or invalid weight
// (see AppendUserRow), an empty id, a user id that appears twice under
// DuplicateIdRule::kReject (both lines named) or a file with no header. NotFound for a
// missing file. ResourceExhausted for a shard above kMaxShardRows rows.
// options.cleaning can instead drop repeated ids and blank unparsable numeric, boolean
// and embedding cells, counting both in cleaning_report.
[[nodiscard]] absl::StatusOr<LoadedShards> LoadUserShards(const UserLoadOptions& options);

}  // namespace cohort

#endif  // COHORT_CORE_RAW_TABLE_H_
