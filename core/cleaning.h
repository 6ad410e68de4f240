// Declared cleaning rules for loading user rows, and the counts of what each rule did.
#ifndef COHORT_CORE_CLEANING_H_
#define COHORT_CORE_CLEANING_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <vector>

#include "absl/status/statusor.h"
#include "core/schema.h"

namespace cohort {

struct CleaningRules {
  enum class DuplicateIds {
    kReject,     // a repeated user id fails the load, naming both lines (the default)
    kKeepFirst,  // the first row of an id is kept, later ones are dropped and counted
  };
  enum class UnparsableCells {
    kReject,   // a numeric, boolean or embedding cell that does not parse fails the load
    kMissing,  // such a cell is treated as empty (missing) and counted
  };
  DuplicateIds duplicate_ids = DuplicateIds::kReject;
  UnparsableCells unparsable_cells = UnparsableCells::kReject;
};

// Counts of what the cleaning rules and the pipeline's range clipping did. Counts merge by
// addition, so the report of a data set is the sum of its shards' reports.
struct CleaningReport {
  int64_t duplicate_rows_dropped = 0;
  // Column name → cells turned into missing values because they did not parse.
  std::map<std::string, int64_t> unparsable_cells;
  // Column name → values outside the column's declared valid range, clipped to it.
  std::map<std::string, int64_t> clipped_values;
  // Column name → missing cells filled by the column's imputation rule.
  std::map<std::string, int64_t> imputed_cells;

  void Merge(const CleaningReport& other);
  // One line per non-zero count, e.g. "TotalCharges: 11 missing cells imputed";
  // "no cleaning applied" when every count is zero.
  std::string ToString() const;
};

// Parses "reject" / "keep_first" and "reject" / "missing". Errors: InvalidArgument listing
// the accepted names.
[[nodiscard]] absl::StatusOr<CleaningRules::DuplicateIds> ParseDuplicateIdsRule(
    std::string_view name);
[[nodiscard]] absl::StatusOr<CleaningRules::UnparsableCells> ParseUnparsableCellsRule(
    std::string_view name);

// Under UnparsableCells::kMissing, empties each numeric, boolean or embedding cell of
// `cells` (one per schema column) that would not parse, counting it under its column in
// `report`. Does nothing under kReject.
void BlankUnparsableCells(const Schema& schema, const CleaningRules& rules,
                          std::vector<std::string>* cells, CleaningReport* report);

}  // namespace cohort

#endif  // COHORT_CORE_CLEANING_H_
