// User–item interactions of one virtual shard stored as CSR, their loading from CSV and
// the global item dictionary.
#ifndef COHORT_CORE_INTERACTIONS_H_
#define COHORT_CORE_INTERACTIONS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/csv.h"

namespace cohort {

// Time value of an interaction that has none.
inline constexpr int64_t kNoTime = INT64_MIN;

// One input row: a user acted on an item with a value at a time.
struct InteractionRow {
  std::string user_id;
  std::string item_id;
  // An explicit rating, or 1 for an implicit event without a value column.
  double value = 1.0;
  // Seconds since the Unix epoch (UTC), or kNoTime.
  int64_t time = kNoTime;
};

// The rows of one virtual shard in input order (files in the given order, then lines).
struct InteractionRows {
  int shard_id = 0;
  std::vector<InteractionRow> rows;
};

// Rule for several rows with the same (user, item). Every rule is applied after the
// whole input is read, so it does not depend on how rows are spread over files.
enum class DuplicateRule {
  // Keep the row with the latest time; among equal times (or without times) the row read
  // last. Value and time are that row's. For explicit ratings (a re-rating replaces the
  // old rating).
  kKeepLatest,
  // Sum the values and keep the latest time. For implicit events (a count of purchases,
  // plays or clicks).
  kSum,
  // Keep the largest value and the latest time.
  kMax,
  // Reject the input with InvalidArgument naming the user and item.
  kReject,
};

// The global item dictionary: every item id of the dataset, sorted by byte order, so
// that a dictionary index is the same on every worker. Built by merging the sorted item
// lists of all shards (MergeItemLists).
//
// Thread safety: immutable after construction, so any thread may read it.
class ItemDictionary {
 public:
  ItemDictionary() = default;
  // REQUIRES: `sorted_ids` is sorted ascending without repeats.
  explicit ItemDictionary(std::vector<std::string> sorted_ids);

  int32_t size() const { return static_cast<int32_t>(ids_.size()); }
  const std::string& id(int32_t index) const { return ids_[index]; }
  const std::vector<std::string>& ids() const { return ids_; }
  // Returns the index of `item_id`, or -1 when it is not in the dictionary.
  int32_t Find(std::string_view item_id) const;

 private:
  std::vector<std::string> ids_;
};

// Returns the sorted distinct item ids of `rows` (one shard's item list).
std::vector<std::string> DistinctItems(const InteractionRows& rows);

// Merges sorted item lists (one per shard, any order) into the dictionary.
// REQUIRES: each list is sorted ascending without repeats.
ItemDictionary MergeItemLists(const std::vector<std::vector<std::string>>& sorted_lists);

// Counts of a CSR build, additive over shards.
struct InteractionBuildCounts {
  int64_t rows_in = 0;            // rows given to the build
  int64_t duplicate_rows = 0;     // rows folded into another row by the DuplicateRule
  int64_t interactions = 0;       // stored (user, item) entries = rows_in − duplicate_rows
  int64_t users = 0;
};

// The interactions of one shard as CSR: one row per user (users sorted by id), columns
// are ItemDictionary indices sorted ascending within a row, one value per entry and,
// when the input has times, one time per entry.
//
// Global user id: GlobalUserId(shard_id, row), stable for a given dataset and shard
// count and independent of worker placement.
struct InteractionMatrix {
  int shard_id = 0;
  int32_t num_items = 0;              // dictionary size (number of columns)
  std::vector<std::string> user_ids;  // [row]
  std::vector<int64_t> row_ptr;       // [row + 1], row_ptr[0] = 0
  std::vector<int32_t> item_index;    // [entry]
  std::vector<float> values;          // [entry]
  std::vector<int64_t> times;         // [entry], or empty when no time is known

  int64_t num_users() const { return static_cast<int64_t>(user_ids.size()); }
  int64_t num_entries() const { return static_cast<int64_t>(item_index.size()); }
  bool has_times() const { return !times.empty(); }
  // Mean value of a user's entries; 0 for a user without entries.
  double UserMean(int64_t row) const;
};

// Checks that every shard has the same num_items, as shards built with one dictionary
// do. Errors: InvalidArgument naming two shards that differ.
[[nodiscard]] absl::Status CheckSameItemCount(const std::vector<InteractionMatrix>& shards);

// Global id of a user: shard in the high 32 bits, CSR row in the low 32 bits.
inline int64_t GlobalUserId(int shard_id, int64_t row) {
  return (static_cast<int64_t>(shard_id) << 32) | row;
}
inline int ShardOfGlobalUserId(int64_t id) { return static_cast<int>(id >> 32); }
inline int64_t RowOfGlobalUserId(int64_t id) { return id & 0xffffffffLL; }

// Builds the CSR of one shard. Times are kept when every row has one, dropped when no row
// has one. Errors are InvalidArgument, naming the ids. They cover rows of which only
// some have a time, an empty id, a NaN or infinite value, an item missing from
// `dictionary`, a shard with 2^31 or more users, and (kReject) a duplicate (user, item).
[[nodiscard]] absl::StatusOr<InteractionMatrix> BuildInteractionMatrix(
    const InteractionRows& rows, const ItemDictionary& dictionary, DuplicateRule rule,
    InteractionBuildCounts* counts);

struct InteractionLoadOptions {
  // Files to read, in this order (see ExpandPaths).
  std::vector<std::string> paths;
  CsvOptions csv;
  // Column names when has_header is true; otherwise 0-based column numbers in decimal
  // (MovieLens u.data: "0", "1", "2", "3" with delimiter '\t' and has_header false).
  std::string user_column = "user_id";
  std::string item_column = "item_id";
  // Empty: implicit events, every value is 1.
  std::string value_column;
  // Empty: no time. Accepted cell formats: Unix seconds (an integer), and the formats of
  // TransactionOptions::time_column, read as UTC.
  std::string time_column;
  // Rows whose value is <= this are skipped and counted (for example returns with a
  // negative quantity). The default keeps every finite value.
  double min_value = -std::numeric_limits<double>::infinity();
  // Implicit events with a value column: the value column only filters rows (min_value),
  // and every kept row gets value 1 (a purchase log whose quantity is not a rating).
  bool binarize = false;
  // Total number of virtual shards S (>= 1).
  int num_shards = 64;
  // Shards to keep, each in [0, num_shards), each once. Rows of other shards are counted
  // but not parsed beyond the user id.
  std::vector<int> shards;

  // Errors: InvalidArgument naming the field and value.
  [[nodiscard]] absl::Status Validate() const;
};

struct InteractionLoadCounts {
  int64_t rows_read = 0;         // data rows of all files, every shard
  int64_t empty_user_rows = 0;   // dropped: empty user id
  int64_t empty_item_rows = 0;   // dropped: empty item id
  int64_t below_min_rows = 0;    // dropped: value <= min_value (requested shards only)
  int64_t kept_rows = 0;         // rows of the requested shards kept
};

struct LoadedInteractions {
  // One entry per requested shard, sorted by shard id.
  std::vector<InteractionRows> shards;
  InteractionLoadCounts counts;
};

// Reads the files and keeps the rows of the requested shards (user → shard by
// ShardOfUser). Errors: NotFound for a missing file; InvalidArgument naming file, line,
// column and value for a missing column, a malformed line, a value that is not a finite
// number or a time that cannot be parsed.
[[nodiscard]] absl::StatusOr<LoadedInteractions> LoadInteractionRows(
    const InteractionLoadOptions& options);

// One process, every shard: loads all shards of the files (options.shards is ignored),
// merges their item lists into the dictionary and builds every shard's CSR (shards
// 0..num_shards−1, in order). For
// tests, benchmarks and local mode. Errors: those of LoadInteractionRows and
// BuildInteractionMatrix.
struct InteractionDataset {
  ItemDictionary dictionary;
  std::vector<InteractionMatrix> shards;
  InteractionLoadCounts load_counts;
  InteractionBuildCounts build_counts;
};
[[nodiscard]] absl::StatusOr<InteractionDataset> LoadInteractionDataset(
    const InteractionLoadOptions& options, DuplicateRule rule);

// Builds a dataset from in-memory rows, users sharded by ShardOfUser. Errors: those of
// BuildInteractionMatrix, InvalidArgument for num_shards < 1.
[[nodiscard]] absl::StatusOr<InteractionDataset> BuildInteractionDataset(
    const std::vector<InteractionRow>& rows, int num_shards, DuplicateRule rule);

}  // namespace cohort

#endif  // COHORT_CORE_INTERACTIONS_H_
