#include "core/interactions.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/schema.h"
#include "core/shard_hash.h"
#include "core/transactions.h"

namespace cohort {
namespace {

// Largest number of users in one shard: a global user id keeps the row in 32 bits.
constexpr int64_t kMaxUsersPerShard = int64_t{1} << 31;

// Parses a time cell: an integer (Unix seconds) or a TransactionOptions time format.
std::optional<int64_t> ParseInteractionTime(const std::string& cell) {
  int64_t seconds = 0;
  if (absl::SimpleAtoi(cell, &seconds)) return seconds;
  return ParseTransactionTime(cell);
}

// Position of `column` in a file: a header name, or a decimal column number when the
// file has no header. Returns -1 when an optional (empty) column is not requested.
absl::StatusOr<int> ResolveColumn(const std::string& column, const std::string& field,
                                  const std::vector<std::string>& header, bool has_header,
                                  const std::string& path) {
  if (column.empty()) return -1;
  if (has_header) {
    const auto it = std::find(header.begin(), header.end(), column);
    if (it == header.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: ", field, " '", column, "' is missing from the header; the ",
                       "header has columns '", absl::StrJoin(header, "', '"), "'"));
    }
    return static_cast<int>(it - header.begin());
  }
  int index = 0;
  if (!absl::SimpleAtoi(column, &index) || index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is '", column, "', but files without a header need a 0-based ",
                     "column number"));
  }
  return index;
}

struct ColumnPositions {
  int user = -1;
  int item = -1;
  int value = -1;
  int time = -1;
};

absl::StatusOr<ColumnPositions> ResolveColumns(const InteractionLoadOptions& options,
                                               const CsvReader& reader) {
  const std::vector<std::string>& header = reader.header();
  const bool has_header = options.csv.has_header;
  ColumnPositions positions;
  const struct {
    const std::string& column;
    const char* field;
    int* position;
  } columns[] = {{options.user_column, "user_column", &positions.user},
                 {options.item_column, "item_column", &positions.item},
                 {options.value_column, "value_column", &positions.value},
                 {options.time_column, "time_column", &positions.time}};
  for (const auto& column : columns) {
    absl::StatusOr<int> index =
        ResolveColumn(column.column, column.field, header, has_header, reader.path());
    if (!index.ok()) return index.status();
    *column.position = *index;
  }
  return positions;
}

// Reads the value and time of one kept row. Errors name the column and the cell; the
// caller adds the file and line.
absl::Status ParseValueAndTime(const InteractionLoadOptions& options,
                               const ColumnPositions& positions,
                               const std::vector<std::string>& fields, InteractionRow* row) {
  row->value = 1.0;
  row->time = kNoTime;
  if (positions.value >= 0) {
    const std::string& cell = fields[positions.value];
    const std::optional<double> value = ParseNumber(cell);
    if (!value.has_value() || !std::isfinite(*value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", options.value_column, "': value '", cell,
          "' is not a finite number; fix the cell or drop the row"));
    }
    row->value = *value;
  }
  if (positions.time >= 0) {
    const std::string& cell = fields[positions.time];
    const std::optional<int64_t> time = ParseInteractionTime(cell);
    if (!time.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", options.time_column, "': time '", cell,
          "' is not Unix seconds or one of YYYY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM, ",
          "YYYY-MM-DD, M/D/YYYY H:MM"));
    }
    row->time = *time;
  }
  return absl::OkStatus();
}

// Folds `row` into the kept entry `kept` with the same (user, item) under `rule`.
// `row` was read after `kept`.
void FoldDuplicate(const InteractionRow& row, DuplicateRule rule, InteractionRow* kept) {
  switch (rule) {
    case DuplicateRule::kKeepLatest:
      if (row.time >= kept->time) {
        kept->value = row.value;
        kept->time = row.time;
      }
      return;
    case DuplicateRule::kSum:
      kept->value += row.value;
      kept->time = std::max(kept->time, row.time);
      return;
    case DuplicateRule::kMax:
      kept->value = std::max(kept->value, row.value);
      kept->time = std::max(kept->time, row.time);
      return;
    case DuplicateRule::kReject:
      return;
  }
}

}  // namespace

ItemDictionary::ItemDictionary(std::vector<std::string> sorted_ids) : ids_(std::move(sorted_ids)) {}

int32_t ItemDictionary::Find(std::string_view item_id) const {
  const auto it = std::lower_bound(ids_.begin(), ids_.end(), item_id,
                                   [](const std::string& a, std::string_view b) { return a < b; });
  if (it == ids_.end() || *it != item_id) return -1;
  return static_cast<int32_t>(it - ids_.begin());
}

std::vector<std::string> DistinctItems(const InteractionRows& rows) {
  std::vector<std::string> items;
  items.reserve(rows.rows.size());
  for (const InteractionRow& row : rows.rows) items.push_back(row.item_id);
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  return items;
}

ItemDictionary MergeItemLists(const std::vector<std::vector<std::string>>& sorted_lists) {
  std::vector<std::string> merged;
  for (const std::vector<std::string>& list : sorted_lists) {
    std::vector<std::string> next;
    next.reserve(merged.size() + list.size());
    std::set_union(merged.begin(), merged.end(), list.begin(), list.end(),
                   std::back_inserter(next));
    merged = std::move(next);
  }
  return ItemDictionary(std::move(merged));
}

double InteractionMatrix::UserMean(int64_t row) const {
  const int64_t begin = row_ptr[row];
  const int64_t end = row_ptr[row + 1];
  if (end == begin) return 0.0;
  double sum = 0.0;
  for (int64_t e = begin; e < end; ++e) sum += values[e];
  return sum / static_cast<double>(end - begin);
}

absl::StatusOr<InteractionMatrix> BuildInteractionMatrix(const InteractionRows& rows,
                                                         const ItemDictionary& dictionary,
                                                         DuplicateRule rule,
                                                         InteractionBuildCounts* counts) {
  const std::vector<InteractionRow>& input = rows.rows;
  int64_t rows_with_time = 0;
  for (const InteractionRow& row : input) {
    if (row.user_id.empty() || row.item_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "an interaction of shard ", rows.shard_id, " has an empty ",
          row.user_id.empty() ? "user id" : "item id", "; every row needs both ids"));
    }
    if (!std::isfinite(row.value)) {
      return absl::InvalidArgumentError(absl::StrCat("user '", row.user_id, "', item '",
                                                     row.item_id, "': value ", row.value,
                                                     " is not a finite number"));
    }
    if (row.time != kNoTime) ++rows_with_time;
  }
  const int64_t num_rows = static_cast<int64_t>(input.size());
  if (rows_with_time != 0 && rows_with_time != num_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(rows_with_time, " of ", num_rows, " interactions of shard ", rows.shard_id,
                     " have a time; give every row a time or none"));
  }
  const bool has_times = rows_with_time > 0;

  // Resolve items and order the rows by (user, item, input position), so duplicates are
  // adjacent and folded in input order.
  std::vector<int32_t> item_of_row(input.size());
  for (size_t r = 0; r < input.size(); ++r) {
    item_of_row[r] = dictionary.Find(input[r].item_id);
    if (item_of_row[r] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("item '", input[r].item_id, "' of user '", input[r].user_id,
                       "' is not in the item dictionary; build the dictionary from every "
                       "shard's item list"));
    }
  }
  std::vector<int64_t> order(input.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (input[a].user_id != input[b].user_id) return input[a].user_id < input[b].user_id;
    if (item_of_row[a] != item_of_row[b]) return item_of_row[a] < item_of_row[b];
    return a < b;
  });

  InteractionMatrix matrix;
  matrix.shard_id = rows.shard_id;
  matrix.num_items = dictionary.size();
  matrix.row_ptr.push_back(0);
  InteractionBuildCounts local;
  local.rows_in = num_rows;

  size_t i = 0;
  while (i < order.size()) {
    const InteractionRow& first = input[order[i]];
    if (matrix.user_ids.empty() || matrix.user_ids.back() != first.user_id) {
      if (!matrix.user_ids.empty()) matrix.row_ptr.push_back(matrix.num_entries());
      if (static_cast<int64_t>(matrix.user_ids.size()) + 1 >= kMaxUsersPerShard) {
        return absl::InvalidArgumentError(absl::StrCat(
            "shard ", rows.shard_id, " has more than ", kMaxUsersPerShard - 1,
            " users; use more shards"));
      }
      matrix.user_ids.push_back(first.user_id);
    }
    InteractionRow kept = first;
    size_t j = i + 1;
    for (; j < order.size() && input[order[j]].user_id == first.user_id &&
           item_of_row[order[j]] == item_of_row[order[i]];
         ++j) {
      if (rule == DuplicateRule::kReject) {
        return absl::InvalidArgumentError(
            absl::StrCat("user '", first.user_id, "' has more than one interaction with item '",
                         first.item_id, "'; remove the repeats or choose a duplicate rule"));
      }
      FoldDuplicate(input[order[j]], rule, &kept);
      ++local.duplicate_rows;
    }
    if (!std::isfinite(static_cast<float>(kept.value))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "user '", first.user_id, "', item '", first.item_id, "': the combined value ",
          kept.value, " is outside the float range"));
    }
    matrix.item_index.push_back(item_of_row[order[i]]);
    matrix.values.push_back(static_cast<float>(kept.value));
    if (has_times) matrix.times.push_back(kept.time);
    i = j;
  }
  if (!matrix.user_ids.empty()) matrix.row_ptr.push_back(matrix.num_entries());

  local.interactions = matrix.num_entries();
  local.users = matrix.num_users();
  if (counts != nullptr) {
    counts->rows_in += local.rows_in;
    counts->duplicate_rows += local.duplicate_rows;
    counts->interactions += local.interactions;
    counts->users += local.users;
  }
  return matrix;
}

absl::Status CheckSameItemCount(const std::vector<InteractionMatrix>& shards) {
  for (const InteractionMatrix& shard : shards) {
    if (shard.num_items != shards.front().num_items) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shard ", shard.shard_id, " has ", shard.num_items, " items but shard ",
          shards.front().shard_id, " has ", shards.front().num_items,
          "; build every shard with the same item dictionary"));
    }
  }
  return absl::OkStatus();
}

absl::Status InteractionLoadOptions::Validate() const {
  if (absl::Status status = csv.Validate(); !status.ok()) return status;
  if (paths.empty()) {
    return absl::InvalidArgumentError("no input files given; set at least one path");
  }
  if (user_column.empty()) return absl::InvalidArgumentError("user_column is empty; name it");
  if (item_column.empty()) return absl::InvalidArgumentError("item_column is empty; name it");
  if (std::isnan(min_value)) {
    return absl::InvalidArgumentError("min_value is NaN; give a number or -infinity");
  }
  if (binarize && value_column.empty()) {
    return absl::InvalidArgumentError(
        "binarize is set but value_column is empty; name the column to filter by, or clear "
        "binarize (without a value column every value is 1)");
  }
  if (num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards is ", num_shards, "; it must be at least 1"));
  }
  std::vector<bool> seen(static_cast<size_t>(num_shards), false);
  for (int shard : shards) {
    if (shard < 0 || shard >= num_shards) {
      return absl::InvalidArgumentError(
          absl::StrCat("requested shard ", shard, " is outside [0, ", num_shards, ")"));
    }
    if (seen[shard]) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard ", shard, " is requested twice; list each shard once"));
    }
    seen[shard] = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedInteractions> LoadInteractionRows(const InteractionLoadOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;

  std::vector<int> requested = options.shards;
  std::sort(requested.begin(), requested.end());
  LoadedInteractions loaded;
  // slot_of_shard[s] is the index of shard s in loaded.shards, or -1 when not requested.
  std::vector<int> slot_of_shard(static_cast<size_t>(options.num_shards), -1);
  for (size_t slot = 0; slot < requested.size(); ++slot) {
    slot_of_shard[requested[slot]] = static_cast<int>(slot);
    loaded.shards.push_back(InteractionRows{requested[slot], {}});
  }

  std::vector<std::string> fields;
  for (const std::string& path : options.paths) {
    absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, options.csv);
    if (!reader.ok()) return reader.status();
    absl::StatusOr<ColumnPositions> positions = ResolveColumns(options, **reader);
    if (!positions.ok()) return positions.status();
    const int max_position =
        std::max({positions->user, positions->item, positions->value, positions->time});

    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      if (!has_record.ok()) return has_record.status();
      if (!*has_record) break;
      ++loaded.counts.rows_read;
      const int64_t line = (*reader)->line();
      if (max_position >= static_cast<int>(fields.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line, ": the line has ", fields.size(),
                         " columns, but column ", max_position, " is configured"));
      }
      std::string& user = fields[positions->user];
      if (user.empty()) {
        ++loaded.counts.empty_user_rows;
        continue;
      }
      const int slot = slot_of_shard[ShardOfUser(user, options.num_shards)];
      if (slot < 0) continue;
      std::string& item = fields[positions->item];
      if (item.empty()) {
        ++loaded.counts.empty_item_rows;
        continue;
      }
      if (!IsValidUtf8(user) || !IsValidUtf8(item)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line, ": the user or item id is not valid UTF-8; convert the file to ",
            "UTF-8 (e.g. with iconv)"));
      }
      InteractionRow row;
      if (absl::Status status = ParseValueAndTime(options, *positions, fields, &row);
          !status.ok()) {
        return absl::Status(status.code(), absl::StrCat(path, ":", line, ": ", status.message()));
      }
      if (row.value <= options.min_value) {
        ++loaded.counts.below_min_rows;
        continue;
      }
      if (options.binarize) row.value = 1.0;
      row.user_id = std::move(user);
      row.item_id = std::move(item);
      loaded.shards[slot].rows.push_back(std::move(row));
      ++loaded.counts.kept_rows;
    }
  }
  return loaded;
}

namespace {

absl::StatusOr<InteractionDataset> BuildDatasetFromShards(std::vector<InteractionRows> shards,
                                                          DuplicateRule rule) {
  InteractionDataset dataset;
  std::vector<std::vector<std::string>> item_lists;
  item_lists.reserve(shards.size());
  for (const InteractionRows& shard : shards) item_lists.push_back(DistinctItems(shard));
  dataset.dictionary = MergeItemLists(item_lists);
  for (const InteractionRows& shard : shards) {
    absl::StatusOr<InteractionMatrix> matrix =
        BuildInteractionMatrix(shard, dataset.dictionary, rule, &dataset.build_counts);
    if (!matrix.ok()) return matrix.status();
    dataset.shards.push_back(*std::move(matrix));
  }
  return dataset;
}

}  // namespace

absl::StatusOr<InteractionDataset> LoadInteractionDataset(const InteractionLoadOptions& options,
                                                          DuplicateRule rule) {
  InteractionLoadOptions all = options;
  all.shards.resize(static_cast<size_t>(std::max(options.num_shards, 0)));
  std::iota(all.shards.begin(), all.shards.end(), 0);
  absl::StatusOr<LoadedInteractions> loaded = LoadInteractionRows(all);
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<InteractionDataset> dataset =
      BuildDatasetFromShards(std::move(loaded->shards), rule);
  if (!dataset.ok()) return dataset.status();
  dataset->load_counts = loaded->counts;
  return dataset;
}

absl::StatusOr<InteractionDataset> BuildInteractionDataset(const std::vector<InteractionRow>& rows,
                                                           int num_shards, DuplicateRule rule) {
  if (num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards is ", num_shards, "; it must be at least 1"));
  }
  std::vector<InteractionRows> shards(static_cast<size_t>(num_shards));
  for (int s = 0; s < num_shards; ++s) shards[s].shard_id = s;
  for (const InteractionRow& row : rows) {
    shards[ShardOfUser(row.user_id, num_shards)].rows.push_back(row);
  }
  InteractionDataset dataset;
  absl::StatusOr<InteractionDataset> built = BuildDatasetFromShards(std::move(shards), rule);
  if (!built.ok()) return built.status();
  built->load_counts.rows_read = static_cast<int64_t>(rows.size());
  built->load_counts.kept_rows = static_cast<int64_t>(rows.size());
  return built;
}

}  // namespace cohort
