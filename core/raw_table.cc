#include "core/raw_table.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/raw_cells.h"
#include "core/shard_hash.h"

namespace cohort {
namespace {

// Largest OpenMP thread count a load may ask for.
constexpr int kMaxLoadThreads = 1024;

size_t CountColumns(const Schema& schema, ColumnType type) {
  return static_cast<size_t>(std::count_if(schema.columns.begin(), schema.columns.end(),
                                           [type](const ColumnSpec& c) { return c.type == type; }));
}

bool IsBlank(std::string_view cell) { return cell.find_first_not_of(" \t") == std::string_view::npos; }

}  // namespace

absl::Status ValidateLoadOptions(const UserLoadOptions& options) {
  if (absl::Status status = options.schema.Validate(); !status.ok()) return status;
  if (absl::Status status = options.csv.Validate(); !status.ok()) return status;
  if (!options.csv.has_header) {
    return absl::InvalidArgumentError(
        "user files must have a header row, because schema columns are matched by name; set "
        "has_header");
  }
  if (options.paths.empty()) {
    return absl::InvalidArgumentError("no input files given; set at least one path");
  }
  if (options.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards is ", options.num_shards, "; it must be at least 1"));
  }
  if (options.threads < 0 || options.threads > kMaxLoadThreads) {
    return absl::InvalidArgumentError(absl::StrCat("threads is ", options.threads,
                                                   "; it must be in [0, ", kMaxLoadThreads, "]"));
  }
  std::vector<bool> seen(static_cast<size_t>(options.num_shards), false);
  for (int shard : options.shards) {
    if (shard < 0 || shard >= options.num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("requested shard ", shard,
                                                     " is outside [0, ", options.num_shards, ")"));
    }
    if (seen[shard]) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard ", shard, " is requested twice; list each shard once"));
    }
    seen[shard] = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<size_t>> MapSchemaToHeader(const Schema& schema,
                                                      const std::vector<std::string>& header,
                                                      const std::string& path) {
  absl::flat_hash_map<absl::string_view, size_t> index_of_name;
  std::vector<absl::string_view> repeated;
  for (size_t i = 0; i < header.size(); ++i) {
    if (!index_of_name.emplace(header[i], i).second) repeated.push_back(header[i]);
  }
  std::vector<size_t> header_index(schema.columns.size());
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    const std::string& name = schema.columns[j].name;
    if (name == kLineNumberIdColumn && schema.columns[j].type == ColumnType::kId) {
      header_index[j] = kNotInFile;
      continue;
    }
    auto it = index_of_name.find(name);
    if (it == index_of_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":1: column '", name, "' of the schema is missing from the header; the header has ",
          "columns '", absl::StrJoin(header, "', '"), "'"));
    }
    if (std::find(repeated.begin(), repeated.end(), name) != repeated.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":1: column '", name, "' appears more than once in the header; rename one of them"));
    }
    header_index[j] = it->second;
  }
  return header_index;
}

absl::Status CheckIdCell(std::string_view column, std::string_view id) {
  if (!id.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("column '", AsAbsl(column), "': user id is empty; every row needs a user id"));
}

absl::Status CheckTextCell(std::string_view column, std::string_view cell) {
  if (IsValidUtf8(cell)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("column '", AsAbsl(column),
                   "': the cell is not valid UTF-8; convert the file to UTF-8 (e.g. with iconv)"));
}

absl::StatusOr<float> ParseNumericCell(std::string_view column, std::string_view cell) {
  if (float value = 0; ParsePlainDecimalFloat(cell, &value)) return value;
  // Every value of the fast path is below 2^53 × 10^22, inside the float32 range.
  if (double value = 0; ParsePlainDecimal(cell, &value)) return static_cast<float>(value);
  if (IsBlank(cell)) return std::numeric_limits<float>::quiet_NaN();
  const std::optional<double> parsed = ParseNumber(cell);
  absl::string_view problem;
  if (!parsed.has_value()) {
    problem = "is not a number; fix or blank the cell (blank cells are imputed)";
  } else if (!std::isfinite(*parsed)) {
    problem = "is not a finite number; fix or blank the cell (blank cells are imputed)";
  } else if (std::abs(*parsed) > std::numeric_limits<float>::max()) {
    problem =
        "is outside the float32 range (about ±3.4e38), in which numeric cells are stored; "
        "rescale the column";
  } else {
    return static_cast<float>(*parsed);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("column '", AsAbsl(column), "': value '", AsAbsl(cell), "' ", problem));
}

absl::StatusOr<float> ParseWeightCell(std::string_view column, std::string_view cell) {
  absl::string_view problem;
  float weight = 0.0f;
  if (IsBlank(cell)) {
    problem = "is missing";
  } else if (const std::optional<double> parsed = ParseNumber(cell); !parsed.has_value()) {
    problem = "is not a number";
  } else if (!std::isfinite(*parsed)) {
    problem = "is not a finite number";
  } else if (*parsed < 0) {
    problem = "is negative";
  } else if (*parsed > std::numeric_limits<float>::max()) {
    problem = "is larger than the float maximum";
  } else {
    weight = static_cast<float>(*parsed);
  }
  if (!problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("column '", AsAbsl(column), "': weight '", AsAbsl(cell), "' ",
                                                   problem, "; give every row a weight ≥ 0"));
  }
  return weight;
}

int64_t RawShard::MemoryBytes() const {
  int64_t bytes = ids.MemoryBytes() + numeric.MemoryBytes() +
                  static_cast<int64_t>(weights.capacity() * sizeof(float));
  for (const CategoricalColumn& column : categorical) bytes += column.MemoryBytes();
  return bytes;
}

void RawShard::ShrinkToFit() {
  ids.ShrinkToFit();
  numeric.ShrinkToFit();
  for (CategoricalColumn& column : categorical) column.ShrinkToFit();
  if (weights.capacity() > weights.size() + weights.size() / 32) weights.shrink_to_fit();
}

RawShard MakeEmptyShard(const Schema& schema, int shard_id) {
  RawShard shard;
  shard.shard_id = shard_id;
  shard.numeric = NumericMatrix(static_cast<int>(CountColumns(schema, ColumnType::kNumeric)));
  shard.categorical.resize(CountColumns(schema, ColumnType::kCategorical));
  shard.profile = MakeEmptyProfileColumns(schema);
  return shard;
}

absl::Status AppendUserRow(const Schema& schema, const std::vector<std::string>& cells,
                           RawShard* shard) {
  if (cells.size() != schema.columns.size()) {
    return absl::InvalidArgumentError(absl::StrCat("row has ", cells.size(),
                                                   " cells but the schema has ",
                                                   schema.columns.size(), " columns"));
  }
  if (static_cast<size_t>(shard->numeric.cols()) != CountColumns(schema, ColumnType::kNumeric) ||
      shard->categorical.size() != CountColumns(schema, ColumnType::kCategorical)) {
    return absl::InvalidArgumentError(
        "shard columns do not match the schema; create the shard with MakeEmptyShard");
  }
  const int weight_index = schema.WeightIndex();
  if (weight_index >= 0 && static_cast<int64_t>(shard->weights.size()) != shard->num_rows()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard has ", shard->weights.size(), " weights for ", shard->num_rows(),
        " rows; create the shard with MakeEmptyShard and append rows with AppendUserRow"));
  }
  const int id_index = schema.IdIndex();
  if (id_index < 0) {
    return absl::InvalidArgumentError("schema has no id column; mark one column as type 'id'");
  }
  if (absl::Status status = CheckIdCell(schema.columns[id_index].name, cells[id_index]);
      !status.ok()) {
    return status;
  }
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    const ColumnType type = schema.columns[j].type;
    if (type == ColumnType::kId || type == ColumnType::kCategorical) {
      if (absl::Status status = CheckTextCell(schema.columns[j].name, cells[j]); !status.ok()) {
        return status;
      }
    }
  }

  // Every cell is parsed before any is appended, so a rejected cell leaves the shard
  // unchanged.
  float weight = 1.0f;
  if (weight_index >= 0) {
    absl::StatusOr<float> parsed =
        ParseWeightCell(schema.columns[weight_index].name, cells[weight_index]);
    if (!parsed.ok()) return parsed.status();
    weight = *parsed;
  }
  std::vector<float> numeric;
  numeric.reserve(static_cast<size_t>(shard->numeric.cols()));
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    if (schema.columns[j].type != ColumnType::kNumeric) continue;
    absl::StatusOr<float> value = ParseNumericCell(schema.columns[j].name, cells[j]);
    if (!value.ok()) return value.status();
    numeric.push_back(*value);
  }
  // The profiling cells are the last that can be rejected; AppendProfileCells leaves the
  // columns unchanged on error, so nothing has been appended yet when it fails.
  if (absl::Status status = AppendProfileCells(schema, cells, &shard->profile); !status.ok()) {
    return status;
  }

  shard->numeric.AppendRows(numeric.data(), 1);
  size_t categorical_index = 0;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    if (schema.columns[j].type == ColumnType::kCategorical) {
      shard->categorical[categorical_index++].push_back(cells[j]);
    }
  }
  if (weight_index >= 0) shard->weights.push_back(weight);
  shard->ids.push_back(cells[id_index]);
  return absl::OkStatus();
}

namespace {

std::string FloatCell(float value) {
  return std::isnan(value) ? std::string() : absl::StrFormat("%.17g", double{value});
}

}  // namespace

std::vector<std::string> UserRowCells(const Schema& schema, const RawShard& shard, int64_t row) {
  std::vector<std::string> cells(schema.columns.size());
  int numeric = 0;
  int categorical = 0;
  int boolean = 0;
  int text = 0;
  int embedding = 0;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    std::string& cell = cells[j];
    switch (schema.columns[j].type) {
      case ColumnType::kId:
        cell = std::string(shard.ids[row]);
        break;
      case ColumnType::kNumeric:
        cell = FloatCell(shard.numeric(row, numeric++));
        break;
      case ColumnType::kCategorical:
        cell = std::string(shard.categorical[categorical++][row]);
        break;
      case ColumnType::kWeight:
        cell = FloatCell(shard.weights[row]);
        break;
      case ColumnType::kBoolean: {
        const int8_t value = shard.profile.boolean[boolean++][row];
        cell = value == kMissingBoolean ? "" : (value != 0 ? "1" : "0");
        break;
      }
      case ColumnType::kText:
        cell = shard.profile.text[text++][row];
        break;
      case ColumnType::kEmbedding: {
        const EmbeddingColumn& column = shard.profile.embedding[embedding++];
        if (column.missing[row] != 0) break;
        for (int k = 0; k < column.dim; ++k) {
          if (k > 0) cell += ' ';
          cell += FloatCell(column.values[row * column.dim + k]);
        }
        break;
      }
      case ColumnType::kLabel:
        cell = shard.profile.labels[row];
        break;
      case ColumnType::kIgnore:
        break;
    }
  }
  return cells;
}

namespace {

// The file and line of a user id's first row, named in the message about its repeat.
struct RowLocation {
  size_t file_index = 0;
  int64_t line = 0;
};

}  // namespace

absl::StatusOr<LoadedShards> LoadUserShardsRowByRow(const UserLoadOptions& options) {
  if (absl::Status status = ValidateLoadOptions(options); !status.ok()) return status;
  const Schema& schema = options.schema;
  const size_t id_column = static_cast<size_t>(schema.IdIndex());

  std::vector<int> requested = options.shards;
  std::sort(requested.begin(), requested.end());
  LoadedShards loaded;
  // slot_of_shard[s] is the index of shard s in loaded.shards, or -1 when not requested.
  std::vector<int> slot_of_shard(static_cast<size_t>(options.num_shards), -1);
  for (size_t slot = 0; slot < requested.size(); ++slot) {
    slot_of_shard[requested[slot]] = static_cast<int>(slot);
    loaded.shards.push_back(MakeEmptyShard(schema, requested[slot]));
  }
  loaded.duplicate_rows.assign(requested.size(), 0);
  const bool keep_first =
      options.duplicate_ids == DuplicateIdRule::kKeepFirst ||
      options.cleaning.duplicate_ids == CleaningRules::DuplicateIds::kKeepFirst;

  // First location of every id of the requested shards. An id maps to exactly one
  // shard, so every duplicate of a hosted id is caught here. Duplicates in other shards
  // are caught by the loader that hosts them.
  absl::flat_hash_map<std::string, RowLocation> first_seen;
  std::vector<std::string> fields;
  std::vector<std::string> cells(schema.columns.size());

  for (size_t file_index = 0; file_index < options.paths.size(); ++file_index) {
    const std::string& path = options.paths[file_index];
    absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, options.csv);
    if (!reader.ok()) return reader.status();
    absl::StatusOr<std::vector<size_t>> header_index =
        MapSchemaToHeader(schema, (*reader)->header(), path);
    if (!header_index.ok()) return header_index.status();
    const size_t id_field = (*header_index)[id_column];
    const std::string line_id_prefix = file_index == 0 ? "" : absl::StrCat(file_index, ":");
    std::string line_id;

    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      if (!has_record.ok()) return has_record.status();
      if (!*has_record) break;
      ++loaded.rows_read;
      const int64_t line = (*reader)->line();

      if (id_field == kNotInFile) line_id = absl::StrCat(line_id_prefix, line);
      const std::string& id = id_field == kNotInFile ? line_id : fields[id_field];
      if (id.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line, ": column '", schema.columns[id_column].name,
                         "': user id is empty; every row needs a user id"));
      }
      const int slot = slot_of_shard[ShardOfUser(id, options.num_shards)];
      if (slot < 0) continue;

      auto [it, inserted] = first_seen.try_emplace(id, RowLocation{file_index, line});
      if (!inserted && keep_first) {
        ++loaded.cleaning_report.duplicate_rows_dropped;
        ++loaded.duplicate_rows[slot];
        continue;
      }
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line, ": user id '", id, "' already appeared at ",
            options.paths[it->second.file_index], ":", it->second.line,
            "; user ids must be unique"));
      }

      // The cells are swapped in and back out, so no string is copied and `fields`
      // keeps its buffers for the next record.
      for (size_t j = 0; j < cells.size(); ++j) {
        if ((*header_index)[j] == kNotInFile) {
          cells[j] = line_id;
        } else {
          cells[j].swap(fields[(*header_index)[j]]);
        }
      }
      BlankUnparsableCells(schema, options.cleaning, &cells, &loaded.cleaning_report);
      absl::Status status = AppendUserRow(schema, cells, &loaded.shards[slot]);
      for (size_t j = 0; j < cells.size(); ++j) {
        if ((*header_index)[j] != kNotInFile) cells[j].swap(fields[(*header_index)[j]]);
      }
      if (!status.ok()) {
        return absl::Status(status.code(), absl::StrCat(path, ":", line, ": ", status.message()));
      }
    }
  }
  for (RawShard& shard : loaded.shards) shard.ShrinkToFit();
  return loaded;
}

}  // namespace cohort
