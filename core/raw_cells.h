// Cell checks and parsers shared by AppendUserRow and the parallel file loader, so both
// accept the same cells and word their errors the same way. Internal to core/.
#ifndef COHORT_CORE_RAW_CELLS_H_
#define COHORT_CORE_RAW_CELLS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {

// Debian's Abseil has its own string_view type, which StrCat takes.
inline absl::string_view AsAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Header position of the line-number id column, which is not read from the file.
inline constexpr size_t kNotInFile = static_cast<size_t>(-1);

// Errors: InvalidArgument for bad paths, CSV options, schema, shard list or threads.
[[nodiscard]] absl::Status ValidateLoadOptions(const UserLoadOptions& options);

// Maps each schema column to its index in `header`; the line-number id column maps to
// kNotInFile. Errors: InvalidArgument, naming `path`, when a schema column is missing
// from the header or appears in it twice.
[[nodiscard]] absl::StatusOr<std::vector<size_t>> MapSchemaToHeader(
    const Schema& schema, const std::vector<std::string>& header, const std::string& path);

// Errors: InvalidArgument "column '<column>': user id is empty; ..." for an empty id.
[[nodiscard]] absl::Status CheckIdCell(std::string_view column, std::string_view id);
// Errors: InvalidArgument naming the column when `cell` is not valid UTF-8.
[[nodiscard]] absl::Status CheckTextCell(std::string_view column, std::string_view cell);
// A numeric cell as stored: NaN for a blank cell. Errors: InvalidArgument naming the
// column and value when the cell is not a number, not finite, or outside the float32
// range.
[[nodiscard]] absl::StatusOr<float> ParseNumericCell(std::string_view column,
                                                     std::string_view cell);
// Errors: InvalidArgument naming the column and the value when the cell is empty, not a
// number, not finite, negative or above the float range (training keeps weights as
// float).
[[nodiscard]] absl::StatusOr<float> ParseWeightCell(std::string_view column,
                                                    std::string_view cell);

}  // namespace cohort

#endif  // COHORT_CORE_RAW_CELLS_H_
