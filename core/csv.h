// A streaming CSV reader (RFC 4180 quoting) for plain and gzip-compressed files.
#ifndef COHORT_CORE_CSV_H_
#define COHORT_CORE_CSV_H_

#include <array>
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

// Reads a CSV file that has a header in blocks of whole records, for loaders that split
// a block among threads (see SplitCsvRecords and CsvRecordParser). Accepts what
// CsvReader accepts: a byte order mark, LF, CRLF and lone CR line ends, quoted fields
// with line breaks, and ".gz" files.
//
// Thread safety: a reader is used by one thread at a time.
class CsvBlockReader {
 public:
  // Opens `path` and reads its header. Errors: as CsvReader::Open, and InvalidArgument
  // when `options.has_header` is false.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CsvBlockReader>> Open(
      const std::string& path, const CsvOptions& options);

  virtual ~CsvBlockReader() = default;

  virtual const std::vector<std::string>& header() const = 0;
  // Physical line (1-based) of the first byte after the header.
  virtual int64_t first_data_line() const = 0;

  // Replaces `block` with the next whole records (at least `target_bytes` unless the
  // file ends first, more when one record is longer). Returns false at end of file.
  // Errors: Internal for an I/O or decompression failure.
  [[nodiscard]] virtual absl::StatusOr<bool> NextBlock(size_t target_bytes,
                                                       std::string* block) = 0;
};

// Splits `block` (whole records, as NextBlock returns) into up to `pieces` ranges that
// each hold whole records. Returns the range starts followed by block.size(), so range
// i is [result[i], result[i + 1]). A block whose quoted fields do not close may come
// back as fewer ranges; CsvRecordParser then reports it.
std::vector<size_t> SplitCsvRecords(std::string_view block, int pieces,
                                    const CsvOptions& options);

// Splits records of a block into fields without copying them. A quoted field is
// returned without its quotes, and a doubled quote inside it is collapsed in place, so
// the parser writes into the block.
//
// Thread safety: const after construction; each thread passes its own block range.
class CsvRecordParser {
 public:
  enum class Result { kRecord, kEnd, kMalformed };

  explicit CsvRecordParser(const CsvOptions& options);

  // Parses the record at *pos in data[0, size), skipping blank lines before it, into
  // `fields` (views into data). Advances *pos past the record's line end and adds the
  // line breaks it passed to *lines, so *lines counts lines from the start of the range.
  // *record_line gets the value *lines had where the record starts. kMalformed: an
  // unclosed quote or a character after a closing quote; CsvReader reports the same
  // record with its message.
  Result Next(char* data, size_t size, size_t* pos, std::vector<std::string_view>* fields,
              int64_t* lines, int64_t* record_line) const;

 private:
  CsvOptions options_;
  // Bytes that end an unquoted field: the delimiter, '\n' and '\r'.
  std::array<bool, 256> stops_;
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
