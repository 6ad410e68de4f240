#include "core/schema.h"

#include <charconv>
#include <cstdlib>
#include <system_error>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/csv.h"

namespace cohort {
namespace {

std::string QuotedList(const std::vector<std::string>& names) {
  return absl::StrCat("'", absl::StrJoin(names, "', '"), "'");
}

bool LooksLikeIdName(const std::string& name) {
  return absl::EndsWithIgnoreCase(name, "id");
}

// Counts the values of the first non-empty cell of column `index` in the sample.
absl::StatusOr<int> InferEmbeddingDim(const std::string& name, size_t index,
                                      const std::vector<std::vector<std::string>>& sample_rows) {
  for (const std::vector<std::string>& row : sample_rows) {
    if (index >= row.size()) continue;
    const std::vector<absl::string_view> values =
        absl::StrSplit(row[index], absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (!values.empty()) return static_cast<int>(values.size());
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "embedding column '", name,
      "' has no non-empty cell in the sample, so its length is unknown; put a full vector in "
      "an early row"));
}

}  // namespace

std::string_view ColumnTypeName(ColumnType type) {
  switch (type) {
    case ColumnType::kId:
      return "id";
    case ColumnType::kNumeric:
      return "numeric";
    case ColumnType::kCategorical:
      return "categorical";
    case ColumnType::kIgnore:
      return "ignore";
    case ColumnType::kWeight:
      return "weight";
    case ColumnType::kBoolean:
      return "boolean";
    case ColumnType::kText:
      return "text";
    case ColumnType::kEmbedding:
      return "embedding";
    case ColumnType::kLabel:
      return "label";
  }
  return "unknown";
}

absl::StatusOr<ColumnType> ParseColumnType(std::string_view name) {
  const std::string lower =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::string_view(name.data(), name.size())));
  for (ColumnType type : {ColumnType::kId, ColumnType::kNumeric, ColumnType::kCategorical,
                          ColumnType::kIgnore, ColumnType::kWeight, ColumnType::kBoolean,
                          ColumnType::kText, ColumnType::kEmbedding, ColumnType::kLabel}) {
    if (lower == ColumnTypeName(type)) return type;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "column type '", std::string(name),
      "' is invalid; expected one of id, numeric, categorical, ignore, weight, boolean, text, "
      "embedding, label"));
}

int Schema::IdIndex() const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].type == ColumnType::kId) return static_cast<int>(i);
  }
  return -1;
}

int Schema::WeightIndex() const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].type == ColumnType::kWeight) return static_cast<int>(i);
  }
  return -1;
}

int Schema::LabelIndex() const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].type == ColumnType::kLabel) return static_cast<int>(i);
  }
  return -1;
}

std::vector<std::string> Schema::NamesOfType(ColumnType type) const {
  std::vector<std::string> names;
  for (const ColumnSpec& column : columns) {
    if (column.type == type) names.push_back(column.name);
  }
  return names;
}

int Schema::IndexOf(std::string_view name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<std::string> Schema::NumericNames() const {
  std::vector<std::string> names;
  for (const ColumnSpec& column : columns) {
    if (column.type == ColumnType::kNumeric) names.push_back(column.name);
  }
  return names;
}

std::vector<std::string> Schema::CategoricalNames() const {
  std::vector<std::string> names;
  for (const ColumnSpec& column : columns) {
    if (column.type == ColumnType::kCategorical) names.push_back(column.name);
  }
  return names;
}

absl::Status Schema::Validate() const {
  if (columns.empty()) return absl::InvalidArgumentError("schema has no columns");

  absl::flat_hash_map<absl::string_view, size_t> position_of_name;
  std::vector<std::string> id_names;
  std::vector<std::string> weight_names;
  std::vector<std::string> label_names;
  size_t feature_count = 0;
  for (size_t i = 0; i < columns.size(); ++i) {
    const ColumnSpec& column = columns[i];
    if (column.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema column ", i + 1, " has an empty name; every column needs a name"));
    }
    auto [it, inserted] = position_of_name.emplace(column.name, i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "schema column '", column.name, "' appears twice (columns ", it->second + 1, " and ",
          i + 1, "); column names must be unique"));
    }
    if (column.type == ColumnType::kId) id_names.push_back(column.name);
    if (column.type == ColumnType::kWeight) weight_names.push_back(column.name);
    if (column.type == ColumnType::kLabel) label_names.push_back(column.name);
    if (column.type == ColumnType::kNumeric || column.type == ColumnType::kCategorical ||
        column.type == ColumnType::kBoolean || column.type == ColumnType::kText ||
        column.type == ColumnType::kEmbedding) {
      ++feature_count;
    }
    if (column.type == ColumnType::kEmbedding && column.embedding_dim < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedding column '", column.name, "' has embedding_dim ", column.embedding_dim,
          "; set the number of values per cell (at least 1)"));
    }
    if (column.type != ColumnType::kEmbedding && column.embedding_dim != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", column.name, "' of type ", std::string(ColumnTypeName(column.type)),
          " has embedding_dim ", column.embedding_dim, "; only embedding columns have one"));
    }
  }
  if (id_names.empty()) {
    return absl::InvalidArgumentError(
        "schema has no id column; mark exactly one column as type 'id'");
  }
  if (id_names.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("schema has ", id_names.size(),
                                                   " id columns (", QuotedList(id_names),
                                                   "); mark exactly one column as type 'id'"));
  }
  if (weight_names.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schema has ", weight_names.size(), " weight columns (", QuotedList(weight_names),
        "); mark at most one column as type 'weight'"));
  }
  if (label_names.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schema has ", label_names.size(), " label columns (", QuotedList(label_names),
        "); mark at most one column as type 'label'"));
  }
  if (feature_count == 0) {
    return absl::InvalidArgumentError(
        "schema has no numeric, categorical, boolean, text or embedding column; at least one "
        "feature column is required");
  }
  return absl::OkStatus();
}

absl::StatusOr<Schema> InferSchema(const std::vector<std::string>& header,
                                   const std::vector<std::vector<std::string>>& sample_rows,
                                   const SchemaOverrides& overrides) {
  if (header.empty()) return absl::InvalidArgumentError("header has no columns");
  for (size_t i = 0; i < header.size(); ++i) {
    if (!IsValidUtf8(header[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column ", i + 1, " of the header is not valid UTF-8; convert the file to UTF-8"));
    }
  }

  auto index_of = [&header](std::string_view name) -> int {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return static_cast<int>(i);
    }
    return -1;
  };
  for (const auto& [name, type] : overrides.types) {
    if (index_of(name) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("type override names column '", name,
                       "', which is not in the header; the header has ", QuotedList(header)));
    }
  }

  Schema schema;
  schema.columns.resize(header.size());
  for (size_t i = 0; i < header.size(); ++i) schema.columns[i].name = header[i];

  // The id column: the named one, else an override of type id, else the first column
  // without an override whose name is "id" or ends in "id", else the first column
  // without an override.
  int id_index = -1;
  const bool line_ids = overrides.id_column == kLineNumberIdColumn;
  if (line_ids) {
    for (const auto& [name, type] : overrides.types) {
      if (type == ColumnType::kId) {
        return absl::InvalidArgumentError(absl::StrCat(
            "column '", name, "' has type id but the id column is '", std::string(kLineNumberIdColumn),
            "' (line numbers); remove one of the two"));
      }
    }
  } else if (!overrides.id_column.empty()) {
    id_index = index_of(overrides.id_column);
    if (id_index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("id column '", overrides.id_column,
                       "' is not in the header; the header has ", QuotedList(header)));
    }
  }
  bool id_overridden = false;
  for (const auto& [name, type] : overrides.types) {
    if (type == ColumnType::kId) id_overridden = true;
  }
  if (id_index < 0 && !id_overridden && !line_ids) {
    for (size_t i = 0; i < header.size() && id_index < 0; ++i) {
      if (!overrides.types.contains(header[i]) && LooksLikeIdName(header[i])) {
        id_index = static_cast<int>(i);
      }
    }
    for (size_t i = 0; i < header.size() && id_index < 0; ++i) {
      if (!overrides.types.contains(header[i])) id_index = static_cast<int>(i);
    }
  }
  if (id_index >= 0) {
    auto it = overrides.types.find(header[id_index]);
    if (it != overrides.types.end() && it->second != ColumnType::kId) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", header[id_index], "' is named as the id column but its type override is '",
          std::string(ColumnTypeName(it->second)), "'; remove one of the two"));
    }
  }

  for (size_t i = 0; i < header.size(); ++i) {
    ColumnSpec& column = schema.columns[i];
    if (auto it = overrides.types.find(column.name); it != overrides.types.end()) {
      column.type = it->second;
      if (column.type == ColumnType::kEmbedding) {
        absl::StatusOr<int> dim = InferEmbeddingDim(column.name, i, sample_rows);
        if (!dim.ok()) return dim.status();
        column.embedding_dim = *dim;
      }
      continue;
    }
    if (static_cast<int>(i) == id_index) {
      column.type = ColumnType::kId;
      continue;
    }
    // A column with no non-empty cell in the sample is categorical, because
    // categorical loading accepts whatever later rows hold.
    bool any_value = false;
    bool all_numbers = true;
    for (const std::vector<std::string>& row : sample_rows) {
      if (i >= row.size()) continue;
      const absl::string_view cell = absl::StripAsciiWhitespace(row[i]);
      if (cell.empty()) continue;
      any_value = true;
      if (!ParseNumber(std::string_view(cell.data(), cell.size())).has_value()) {
        all_numbers = false;
        break;
      }
    }
    column.type = any_value && all_numbers ? ColumnType::kNumeric : ColumnType::kCategorical;
  }
  if (line_ids) {
    schema.columns.insert(schema.columns.begin(),
                          ColumnSpec{std::string(kLineNumberIdColumn), ColumnType::kId});
  }

  if (absl::Status status = schema.Validate(); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("inferred schema is invalid: ", status.message()));
  }
  return schema;
}

std::optional<double> ParseNumber(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  // std::from_chars rejects a leading '+', so it is dropped here, but "+-1" stays invalid.
  if (text.size() > 1 && text.front() == '+' && text[1] != '-') text.remove_prefix(1);
  if (text.empty()) return std::nullopt;

  const char* first = text.data();
  const char* last = text.data() + text.size();
  double value = 0.0;
  const std::from_chars_result result =
      std::from_chars(first, last, value, std::chars_format::general);
  if (result.ptr != last) return std::nullopt;
  if (result.ec == std::errc::result_out_of_range) {
    // from_chars leaves `value` unset when the number overflows or underflows a double,
    // so strtod supplies the rounded result (±HUGE_VAL, or a denormal or zero).
    return std::strtod(std::string(text).c_str(), nullptr);
  }
  if (result.ec != std::errc()) return std::nullopt;
  return value;
}

}  // namespace cohort
