#include "core/profile_columns.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/csv.h"

namespace cohort {

ProfileColumns MakeEmptyProfileColumns(const Schema& schema) {
  ProfileColumns columns;
  for (const ColumnSpec& column : schema.columns) {
    switch (column.type) {
      case ColumnType::kBoolean:
        columns.boolean.emplace_back();
        break;
      case ColumnType::kText:
        columns.text.emplace_back();
        break;
      case ColumnType::kEmbedding:
        columns.embedding.push_back(EmbeddingColumn{column.embedding_dim, {}, {}});
        break;
      default:
        break;
    }
  }
  return columns;
}

std::optional<int8_t> ParseBoolean(std::string_view cell) {
  const std::string lower = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(cell.data(), cell.size())));
  if (lower.empty()) return kMissingBoolean;
  if (lower == "true" || lower == "yes" || lower == "y" || lower == "t" || lower == "1") return 1;
  if (lower == "false" || lower == "no" || lower == "n" || lower == "f" || lower == "0") return 0;
  return std::nullopt;
}

absl::StatusOr<std::vector<float>> ParseEmbedding(std::string_view cell, int dim) {
  std::vector<float> values;
  size_t pos = 0;
  while (pos < cell.size()) {
    while (pos < cell.size() && (cell[pos] == ' ' || cell[pos] == '\t')) ++pos;
    if (pos == cell.size()) break;
    size_t end = pos;
    while (end < cell.size() && cell[end] != ' ' && cell[end] != '\t') ++end;
    const std::string_view token = cell.substr(pos, end - pos);
    const std::optional<double> value = ParseNumber(token);
    if (!value.has_value() || !std::isfinite(*value) ||
        std::fabs(*value) > std::numeric_limits<float>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedding value '", std::string(token), "' (position ", values.size() + 1,
          ") is not a finite float; write the vector as numbers separated by spaces"));
    }
    values.push_back(static_cast<float>(*value));
    pos = end;
  }
  if (!values.empty() && static_cast<int>(values.size()) != dim) {
    return absl::InvalidArgumentError(absl::StrCat("embedding has ", values.size(),
                                                   " values but the column has length ", dim,
                                                   "; every non-empty cell needs exactly ", dim));
  }
  return values;
}

absl::Status AppendProfileCells(const Schema& schema, const std::vector<std::string>& cells,
                                ProfileColumns* columns) {
  std::vector<int8_t> booleans;
  std::vector<std::vector<float>> embeddings;
  const std::string* label = nullptr;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    const ColumnSpec& column = schema.columns[j];
    const std::string& cell = cells[j];
    switch (column.type) {
      case ColumnType::kBoolean: {
        const std::optional<int8_t> value = ParseBoolean(cell);
        if (!value.has_value()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "column '", column.name, "': value '", cell,
              "' is not a boolean; use true/false, yes/no, y/n, t/f or 1/0, or leave it empty"));
        }
        booleans.push_back(*value);
        break;
      }
      case ColumnType::kText:
        if (!IsValidUtf8(cell)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "column '", column.name,
              "': the cell is not valid UTF-8; convert the file to UTF-8 (e.g. with iconv)"));
        }
        break;
      case ColumnType::kEmbedding: {
        absl::StatusOr<std::vector<float>> values = ParseEmbedding(cell, column.embedding_dim);
        if (!values.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("column '", column.name, "': ", values.status().message()));
        }
        embeddings.push_back(*std::move(values));
        break;
      }
      case ColumnType::kLabel:
        if (absl::StripAsciiWhitespace(cell).empty()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "column '", column.name, "': the label is empty; every row needs a label"));
        }
        if (!IsValidUtf8(cell)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "column '", column.name,
              "': the label is not valid UTF-8; convert the file to UTF-8 (e.g. with iconv)"));
        }
        label = &cell;
        break;
      default:
        break;
    }
  }

  size_t boolean_index = 0;
  size_t text_index = 0;
  size_t embedding_index = 0;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    switch (schema.columns[j].type) {
      case ColumnType::kBoolean:
        columns->boolean[boolean_index].push_back(booleans[boolean_index]);
        ++boolean_index;
        break;
      case ColumnType::kText:
        columns->text[text_index++].push_back(cells[j]);
        break;
      case ColumnType::kEmbedding: {
        EmbeddingColumn& column = columns->embedding[embedding_index];
        const std::vector<float>& values = embeddings[embedding_index];
        ++embedding_index;
        if (values.empty()) {
          column.values.insert(column.values.end(), static_cast<size_t>(column.dim),
                               std::numeric_limits<float>::quiet_NaN());
          column.missing.push_back(1);
        } else {
          column.values.insert(column.values.end(), values.begin(), values.end());
          column.missing.push_back(0);
        }
        break;
      }
      default:
        break;
    }
  }
  if (label != nullptr) columns->labels.push_back(*label);
  return absl::OkStatus();
}

void PopProfileRow(ProfileColumns* columns) {
  for (std::vector<int8_t>& column : columns->boolean) column.pop_back();
  for (std::vector<std::string>& column : columns->text) column.pop_back();
  for (EmbeddingColumn& column : columns->embedding) {
    column.values.resize(column.values.size() - static_cast<size_t>(column.dim));
    column.missing.pop_back();
  }
  if (!columns->labels.empty()) columns->labels.pop_back();
}

}  // namespace cohort
