// A streaming CSV reader (RFC 4180 quoting) for plain and gzip-compressed files.
#ifndef COHORT_CORE_CSV_H_
#define COHORT_CORE_CSV_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

struct CsvOptions {
  // Field separator, for example ',' ';' or '\t'. Must differ from `quote` and from
  // '\r' and '\n'.
  char delimiter = ',';
  // Quote character. Inside a quoted field a doubled quote stands for one quote.
  char quote = '"';
  // When true, the first record is the header and names the columns.
  bool has_header = true;

  // Returns InvalidArgument naming the field when a value is unusable.
  [[nodiscard]] absl::Status Validate() const;
};

// Reads one file record by record. Accepts LF and CRLF line ends, a missing final
// newline, quoted fields that contain delimiters, quotes and line breaks, a UTF-8 byte
// order mark before the header, and files ending in ".gz" (decompressed with zlib).
// Every record must have as many fields as the header (or the first record).
//
// Thread safety: a reader is used by one thread at a time.
class CsvReader {
 public:
  // Opens `path`. Errors: NotFound when the file does not exist, InvalidArgument for
  // bad options or a malformed header, Internal for an I/O failure.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CsvReader>> Open(
      const std::string& path, const CsvOptions& options);

  virtual ~CsvReader() = default;

  // Column names from the header row; empty when `has_header` is false.
  virtual const std::vector<std::string>& header() const = 0;

  // Reads the next record into `fields` (resized to the column count). Returns false
  // at end of file. Errors: InvalidArgument naming the file, line and column for an
  // unterminated quote, a character after a closing quote, or a wrong field count.
  [[nodiscard]] virtual absl::StatusOr<bool> Next(std::vector<std::string>* fields) = 0;

  // 1-based line number where the record last returned by Next() starts.
  virtual int64_t line() const = 0;

  virtual const std::string& path() const = 0;
};

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points
// above U+10FFFF). Ids, category values and column names travel in protobuf string
// fields, which must be UTF-8.
bool IsValidUtf8(std::string_view text);

// Expands a path or a glob pattern into the sorted list of matching regular files.
// Errors: NotFound when nothing matches, naming the pattern.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ExpandPaths(const std::string& pattern);

}  // namespace cohort

#endif  // COHORT_CORE_CSV_H_
