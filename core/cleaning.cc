#include "core/cleaning.h"

#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/profile_columns.h"

namespace cohort {
namespace {

void AddCounts(const std::map<std::string, int64_t>& from, std::map<std::string, int64_t>* to) {
  for (const auto& [name, count] : from) (*to)[name] += count;
}

void AppendCounts(const std::map<std::string, int64_t>& counts, absl::string_view what,
                  std::string* out) {
  for (const auto& [name, count] : counts) {
    if (count == 0) continue;
    absl::StrAppend(out, name, ": ", count, " ", what, "\n");
  }
}

}  // namespace

void CleaningReport::Merge(const CleaningReport& other) {
  duplicate_rows_dropped += other.duplicate_rows_dropped;
  AddCounts(other.unparsable_cells, &unparsable_cells);
  AddCounts(other.clipped_values, &clipped_values);
  AddCounts(other.imputed_cells, &imputed_cells);
}

std::string CleaningReport::ToString() const {
  std::string out;
  if (duplicate_rows_dropped > 0) {
    absl::StrAppend(&out, duplicate_rows_dropped, " rows with a repeated user id dropped\n");
  }
  AppendCounts(unparsable_cells, "unparsable cells treated as missing", &out);
  AppendCounts(clipped_values, "values clipped to the valid range", &out);
  AppendCounts(imputed_cells, "missing cells imputed", &out);
  if (out.empty()) return "no cleaning applied\n";
  return out;
}

absl::StatusOr<CleaningRules::DuplicateIds> ParseDuplicateIdsRule(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (lower == "reject") return CleaningRules::DuplicateIds::kReject;
  if (lower == "keep_first") return CleaningRules::DuplicateIds::kKeepFirst;
  return absl::InvalidArgumentError(absl::StrCat("duplicate_ids rule '", std::string(name),
                                                 "' is invalid; expected reject or keep_first"));
}

absl::StatusOr<CleaningRules::UnparsableCells> ParseUnparsableCellsRule(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (lower == "reject") return CleaningRules::UnparsableCells::kReject;
  if (lower == "missing") return CleaningRules::UnparsableCells::kMissing;
  return absl::InvalidArgumentError(absl::StrCat("unparsable rule '", std::string(name),
                                                 "' is invalid; expected reject or missing"));
}

void BlankUnparsableCells(const Schema& schema, const CleaningRules& rules,
                          std::vector<std::string>* cells, CleaningReport* report) {
  if (rules.unparsable_cells != CleaningRules::UnparsableCells::kMissing) return;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    const ColumnSpec& column = schema.columns[j];
    std::string& cell = (*cells)[j];
    bool parses = true;
    switch (column.type) {
      case ColumnType::kNumeric: {
        if (cell.find_first_not_of(" \t") == std::string::npos) break;
        const std::optional<double> value = ParseNumber(cell);
        parses = value.has_value() && std::isfinite(*value);
        break;
      }
      case ColumnType::kBoolean:
        parses = ParseBoolean(cell).has_value();
        break;
      case ColumnType::kEmbedding:
        parses = ParseEmbedding(cell, column.embedding_dim).ok();
        break;
      default:
        break;
    }
    if (!parses) {
      cell.clear();
      ++report->unparsable_cells[column.name];
    }
  }
}

}  // namespace cohort
