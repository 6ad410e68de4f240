#include "core/csv.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

// Bytes read from the file (or decompressed) per refill. Large chunks keep the number
// of read(2) and gzread calls small. A record longer than a chunk spans refills.
constexpr size_t kChunkBytes = size_t{1} << 20;
// zlib's internal input buffer for gzip files (its default is 8 KiB).
constexpr unsigned kGzipBufferBytes = 1u << 17;
// Maximum length of a record excerpt quoted in an error message.
constexpr size_t kMaxQuotedTextBytes = 80;

// Formats one byte for an error message: printable ASCII as itself, anything else as
// a \xNN escape.
std::string DescribeByte(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return std::string(1, c);
  return absl::StrFormat("\\x%02x", byte);
}

std::string TruncateForMessage(absl::string_view text) {
  if (text.size() <= kMaxQuotedTextBytes) return std::string(text);
  return absl::StrCat(text.substr(0, kMaxQuotedTextBytes), "...");
}

// The byte source behind a reader: a plain file descriptor or a zlib gzFile.
class ByteSource {
 public:
  ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;
  ~ByteSource() {
    if (gz_ != nullptr) gzclose(gz_);
    if (fd_ >= 0) close(fd_);
  }

  [[nodiscard]] absl::Status Open(const std::string& path) {
    path_ = path;
    struct stat info;
    if (stat(path.c_str(), &info) != 0) return OpenError(errno);
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "' is a directory; expected a CSV file"));
    }
    if (absl::EndsWith(path, ".gz")) {
      gz_ = gzopen(path.c_str(), "rb");
      if (gz_ == nullptr) return OpenError(errno);
      gzbuffer(gz_, kGzipBufferBytes);
      return absl::OkStatus();
    }
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return OpenError(errno);
    posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    return absl::OkStatus();
  }

  // Reads up to `capacity` bytes into `buffer`. Returns the byte count, 0 at end of file.
  [[nodiscard]] absl::StatusOr<size_t> Read(char* buffer, size_t capacity) {
    if (gz_ != nullptr) {
      const int n = gzread(gz_, buffer, static_cast<unsigned>(capacity));
      if (n < 0) {
        int zlib_error = 0;
        const char* message = gzerror(gz_, &zlib_error);
        return absl::InternalError(absl::StrCat("failed to decompress '", path_,
                                                "': ", message, "; check the gzip file"));
      }
      return static_cast<size_t>(n);
    }
    while (true) {
      const ssize_t n = read(fd_, buffer, capacity);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("failed to read '", path_, "': ", std::strerror(errno)));
    }
  }

 private:
  absl::Status OpenError(int error) const {
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat("file '", path_, "' not found"));
    }
    return absl::InternalError(
        absl::StrCat("failed to open '", path_, "': ", std::strerror(error)));
  }

  std::string path_;
  int fd_ = -1;
  gzFile gz_ = nullptr;
};

class CsvReaderImpl final : public CsvReader {
 public:
  CsvReaderImpl(std::string path, const CsvOptions& options)
      : path_(std::move(path)), options_(options), buffer_(new char[kChunkBytes]) {
    stops_.fill(false);
    stops_[static_cast<unsigned char>(options_.delimiter)] = true;
    stops_[static_cast<unsigned char>('\n')] = true;
    stops_[static_cast<unsigned char>('\r')] = true;
  }

  [[nodiscard]] absl::Status Init() {
    if (absl::Status status = source_.Open(path_); !status.ok()) return status;
    Refill();
    if (!read_status_.ok()) return read_status_;
    // A UTF-8 byte order mark is metadata, not part of the first column name.
    if (end_ >= 3 && std::memcmp(buffer_.get(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;
    if (!options_.has_header) return absl::OkStatus();

    bool has_record = false;
    if (absl::Status status = ReadRecord(&header_, &has_record); !status.ok()) {
      return status;
    }
    if (!has_record) {
      return absl::InvalidArgumentError(
          absl::StrCat("file '", path_, "' is empty; expected a header row"));
    }
    expected_fields_ = header_.size();
    return absl::OkStatus();
  }

  const std::vector<std::string>& header() const override { return header_; }
  int64_t line() const override { return record_line_; }
  const std::string& path() const override { return path_; }

  absl::StatusOr<bool> Next(std::vector<std::string>* fields) override {
    if (!sticky_error_.ok()) return sticky_error_;
    bool has_record = false;
    absl::Status status = ReadRecord(fields, &has_record);
    if (status.ok() && has_record) status = CheckFieldCount(*fields);
    if (!status.ok()) {
      sticky_error_ = status;
      return status;
    }
    return has_record;
  }

 private:
  // Makes at least one unread byte available. Returns false at end of file or on a
  // read error (stored in read_status_).
  bool Refill() {
    if (pos_ < end_) return true;
    if (at_eof_) return false;
    absl::StatusOr<size_t> n = source_.Read(buffer_.get(), kChunkBytes);
    if (!n.ok()) {
      read_status_ = n.status();
      at_eof_ = true;
      return false;
    }
    pos_ = 0;
    end_ = *n;
    if (end_ == 0) at_eof_ = true;
    return end_ > 0;
  }

  bool HasByte() { return pos_ < end_ || Refill(); }

  std::string Where(int64_t line, size_t column) const {
    return absl::StrCat(path_, ":", line, ": column ", column, ": ");
  }

  // Consumes the line end at pos_ ('\n', "\r\n" or a lone '\r').
  void ConsumeLineEnd() {
    const char c = buffer_[pos_++];
    if (c == '\r' && HasByte() && buffer_[pos_] == '\n') ++pos_;
    ++line_;
  }

  // Reads one record into `fields`, reusing the capacity of its strings. Blank lines
  // before the record are skipped. Sets *has_record to false at end of file.
  absl::Status ReadRecord(std::vector<std::string>* fields, bool* has_record) {
    *has_record = false;
    while (true) {
      if (!HasByte()) return read_status_;
      const char c = buffer_[pos_];
      if (c != '\n' && c != '\r') break;
      ConsumeLineEnd();
    }
    record_line_ = line_;

    size_t count = 0;
    while (true) {
      if (count == fields->size()) fields->emplace_back();
      std::string& field = (*fields)[count];
      field.clear();
      ++count;

      absl::Status status = (HasByte() && buffer_[pos_] == options_.quote)
                                ? ReadQuotedField(count, &field)
                                : ReadPlainField(&field);
      if (!status.ok()) return status;
      if (!read_status_.ok()) return read_status_;

      if (!HasByte()) break;
      if (buffer_[pos_] == options_.delimiter) {
        ++pos_;
        continue;
      }
      ConsumeLineEnd();
      break;
    }
    if (!read_status_.ok()) return read_status_;
    fields->resize(count);
    *has_record = true;
    return absl::OkStatus();
  }

  // Appends bytes up to the next delimiter or line end. A quote inside an unquoted
  // field is kept as a literal character.
  absl::Status ReadPlainField(std::string* field) {
    while (HasByte()) {
      const char* data = buffer_.get();
      size_t p = pos_;
      while (p < end_ && !stops_[static_cast<unsigned char>(data[p])]) ++p;
      field->append(data + pos_, p - pos_);
      pos_ = p;
      if (p < end_) break;
    }
    return absl::OkStatus();
  }

  // Reads a field that starts with the quote at pos_. `column` is its 1-based index.
  absl::Status ReadQuotedField(size_t column, std::string* field) {
    const int64_t start_line = line_;
    const char quote = options_.quote;
    ++pos_;
    while (true) {
      if (!HasByte()) {
        if (!read_status_.ok()) return read_status_;
        return absl::InvalidArgumentError(absl::StrCat(
            Where(start_line, column), "quoted field is not closed before the end of the file;",
            " close it, and double every quote (", std::string(2, quote),
            ") inside a quoted field"));
      }
      const char* data = buffer_.get();
      size_t p = pos_;
      while (p < end_ && data[p] != quote) {
        if (data[p] == '\n') ++line_;
        ++p;
      }
      field->append(data + pos_, p - pos_);
      pos_ = p;
      if (p == end_) continue;

      // data[p] is a quote: either the first of a doubled quote or the closing one.
      ++pos_;
      if (HasByte() && buffer_[pos_] == quote) {
        field->push_back(quote);
        ++pos_;
        continue;
      }
      break;
    }
    if (!HasByte()) return read_status_;
    const char next = buffer_[pos_];
    if (next == options_.delimiter || next == '\n' || next == '\r') return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        Where(line_, column), "unexpected character '", DescribeByte(next),
        "' after closing quote; field so far: '", TruncateForMessage(*field),
        "'; double every quote (", std::string(2, quote), ") inside a quoted field"));
  }

  absl::Status CheckFieldCount(const std::vector<std::string>& fields) {
    if (expected_fields_ == 0) {
      expected_fields_ = fields.size();
      return absl::OkStatus();
    }
    if (fields.size() == expected_fields_) return absl::OkStatus();
    const std::string text =
        absl::StrJoin(fields, absl::string_view(&options_.delimiter, 1));
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s:%d: expected %d fields (as in the %s) but found %d in '%s'; check the "
        "delimiter '%s' and the quoting of this record",
        path_, record_line_, expected_fields_,
        options_.has_header ? "header" : "first record", fields.size(),
        TruncateForMessage(text), DescribeByte(options_.delimiter)));
  }

  const std::string path_;
  const CsvOptions options_;
  ByteSource source_;
  // Bytes that end an unquoted field: the delimiter, '\n' and '\r'.
  std::array<bool, 256> stops_;

  std::unique_ptr<char[]> buffer_;
  size_t pos_ = 0;  // next unread byte in buffer_
  size_t end_ = 0;  // one past the last valid byte in buffer_
  bool at_eof_ = false;
  absl::Status read_status_;

  std::vector<std::string> header_;
  // Field count every record must have; 0 until the header or first record is read.
  size_t expected_fields_ = 0;
  int64_t line_ = 1;  // physical line of the byte at pos_
  int64_t record_line_ = 0;
  // The first parse error; later calls of Next() return it again.
  absl::Status sticky_error_;
};

// Bytes read per refill of a CsvBlockReader.
constexpr size_t kBlockReadBytes = size_t{4} << 20;

// Record ends of data[0, size), which starts at a record boundary: the position after
// the line end of the last complete record, and for each target offset (ascending) the
// first record end at or after it. A lone '\r' or a quote as the last byte is not
// decided until more bytes arrive, unless `at_eof`. A quote that opens a field starts a
// quoted field; a quote inside an unquoted field is a literal, as in CsvReader.
struct RecordEnds {
  size_t last_end = 0;
  std::vector<size_t> at_targets;
};

RecordEnds ScanQuotedRecordEnds(std::string_view data, bool at_eof,
                                const std::vector<size_t>& targets, const CsvOptions& options) {
  RecordEnds ends;
  const char* bytes = data.data();
  const size_t size = data.size();
  size_t next_target = 0;
  auto mark_end = [&](size_t end) {
    ends.last_end = end;
    while (next_target < targets.size() && end >= targets[next_target]) {
      ends.at_targets.push_back(end);
      ++next_target;
    }
  };
  bool field_start = true;
  size_t p = 0;
  while (p < size) {
    const char c = bytes[p];
    if (field_start && c == options.quote) {
      size_t q = p + 1;
      while (true) {
        const void* found = q < size ? std::memchr(bytes + q, options.quote, size - q) : nullptr;
        if (found == nullptr) return ends;  // the quoted field continues past the data
        q = static_cast<size_t>(static_cast<const char*>(found) - bytes);
        if (q + 1 == size && !at_eof) return ends;  // a doubled quote may follow
        if (q + 1 < size && bytes[q + 1] == options.quote) {
          q += 2;
          continue;
        }
        break;
      }
      p = q + 1;
      field_start = false;
      continue;
    }
    if (c == '\n') {
      mark_end(++p);
      field_start = true;
    } else if (c == '\r') {
      if (p + 1 == size && !at_eof) return ends;  // a '\n' may follow
      p += (p + 1 < size && bytes[p + 1] == '\n') ? 2 : 1;
      mark_end(p);
      field_start = true;
    } else {
      field_start = c == options.delimiter;
      ++p;
    }
  }
  if (at_eof) mark_end(size);
  return ends;
}

// As ScanQuotedRecordEnds for data without any quote character: every line end is a
// record end, so only the last one and those after the targets are looked for.
RecordEnds ScanPlainRecordEnds(std::string_view data, bool at_eof,
                               const std::vector<size_t>& targets) {
  RecordEnds ends;
  const size_t size = data.size();
  if (at_eof) {
    ends.last_end = size;
  } else {
    for (size_t p = size; p > 0; --p) {
      const char c = data[p - 1];
      if (c == '\n' || (c == '\r' && p < size)) {
        ends.last_end = p;
        break;
      }
    }
  }
  for (size_t target : targets) {
    if (target >= ends.last_end) break;
    const size_t newline = data.find('\n', target);
    if (newline == std::string_view::npos || newline + 1 > ends.last_end) break;
    if (!ends.at_targets.empty() && ends.at_targets.back() >= newline + 1) continue;
    ends.at_targets.push_back(newline + 1);
  }
  return ends;
}

RecordEnds ScanRecordEnds(std::string_view data, bool at_eof, const std::vector<size_t>& targets,
                          const CsvOptions& options) {
  if (data.find(options.quote) != std::string_view::npos) {
    return ScanQuotedRecordEnds(data, at_eof, targets, options);
  }
  return ScanPlainRecordEnds(data, at_eof, targets);
}

class CsvBlockReaderImpl final : public CsvBlockReader {
 public:
  CsvBlockReaderImpl(std::string path, const CsvOptions& options)
      : path_(std::move(path)), options_(options), parser_(options) {}

  [[nodiscard]] absl::Status Init() {
    if (absl::Status status = source_.Open(path_); !status.ok()) return status;
    // Reads until the data contains the header record. Only blank lines are consumed by
    // an attempt that finds no record, so a retry parses unchanged bytes.
    size_t pos = 0;
    int64_t lines = 0;
    int64_t record_line = 0;
    std::vector<std::string_view> fields;
    while (true) {
      if (absl::Status status = ReadMore(kBlockReadBytes); !status.ok()) return status;
      const RecordEnds ends = ScanRecordEnds(pending_, at_eof_, {}, options_);
      // A UTF-8 byte order mark is metadata, not part of the first column name.
      pos = pending_.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
      lines = 0;
      const size_t end = at_eof_ ? pending_.size() : std::max(ends.last_end, pos);
      const CsvRecordParser::Result result =
          parser_.Next(pending_.data(), end, &pos, &fields, &lines, &record_line);
      if (result == CsvRecordParser::Result::kRecord) break;
      if (result == CsvRecordParser::Result::kMalformed) {
        // CsvReader reports the malformed header with its exact message.
        absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path_, options_);
        if (!reader.ok()) return reader.status();
        return absl::InternalError(absl::StrCat("failed to parse the header of '", path_, "'"));
      }
      if (at_eof_) {
        return absl::InvalidArgumentError(
            absl::StrCat("file '", path_, "' is empty; expected a header row"));
      }
    }
    header_.assign(fields.begin(), fields.end());
    first_data_line_ = 1 + lines;
    pending_.erase(0, pos);
    return absl::OkStatus();
  }

  const std::vector<std::string>& header() const override { return header_; }
  int64_t first_data_line() const override { return first_data_line_; }

  absl::StatusOr<bool> NextBlock(size_t target_bytes, std::string* block) override {
    size_t want = std::max<size_t>(target_bytes, 1);
    while (true) {
      while (!at_eof_ && pending_.size() < want) {
        if (absl::Status status = ReadMore(want - pending_.size()); !status.ok()) return status;
      }
      if (pending_.empty()) return false;
      // At the end of the file the rest is one block, even when a quoted field does not
      // close: the parser then reports the record.
      const size_t end = at_eof_ ? pending_.size()
                                 : ScanRecordEnds(pending_, at_eof_, {}, options_).last_end;
      if (end > 0) {
        block->swap(pending_);
        pending_.assign(block->data() + end, block->size() - end);
        block->resize(end);
        return true;
      }
      // One record is longer than the bytes read so far.
      want = pending_.size() * 2;
    }
  }

 private:
  absl::Status ReadMore(size_t bytes) {
    const size_t old_size = pending_.size();
    const size_t chunk = std::max(bytes, kChunkBytes);
    pending_.resize(old_size + chunk);
    absl::StatusOr<size_t> n = source_.Read(pending_.data() + old_size, chunk);
    if (!n.ok()) {
      pending_.resize(old_size);
      return n.status();
    }
    pending_.resize(old_size + *n);
    if (*n == 0) at_eof_ = true;
    return absl::OkStatus();
  }

  const std::string path_;
  const CsvOptions options_;
  const CsvRecordParser parser_;
  ByteSource source_;
  // Bytes read from the file and not yet returned.
  std::string pending_;
  bool at_eof_ = false;
  std::vector<std::string> header_;
  int64_t first_data_line_ = 2;
};

}  // namespace

absl::Status CsvOptions::Validate() const {
  auto printable = [](char c) { return absl::StrCat("'", DescribeByte(c), "'"); };
  if (delimiter == '\n' || delimiter == '\r') {
    return absl::InvalidArgumentError(absl::StrCat(
        "CSV delimiter ", printable(delimiter), " is invalid; a line break cannot separate fields"));
  }
  if (quote == '\n' || quote == '\r') {
    return absl::InvalidArgumentError(
        absl::StrCat("CSV quote ", printable(quote), " is invalid; it cannot be a line break"));
  }
  if (delimiter == quote) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CSV delimiter and quote are both ", printable(quote), "; they must differ"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CsvReader>> CsvReader::Open(const std::string& path,
                                                           const CsvOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  auto reader = std::make_unique<CsvReaderImpl>(path, options);
  if (absl::Status status = reader->Init(); !status.ok()) return status;
  return std::unique_ptr<CsvReader>(std::move(reader));
}

absl::StatusOr<std::unique_ptr<CsvBlockReader>> CsvBlockReader::Open(const std::string& path,
                                                                     const CsvOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (!options.has_header) {
    return absl::InvalidArgumentError(
        "block reading needs a header row, because columns are matched by name; set has_header");
  }
  auto reader = std::make_unique<CsvBlockReaderImpl>(path, options);
  if (absl::Status status = reader->Init(); !status.ok()) return status;
  return std::unique_ptr<CsvBlockReader>(std::move(reader));
}

std::vector<size_t> SplitCsvRecords(std::string_view block, int pieces,
                                    const CsvOptions& options) {
  std::vector<size_t> targets;
  for (int i = 1; i < pieces; ++i) targets.push_back(block.size() * i / pieces);
  const RecordEnds ends = ScanRecordEnds(block, /*at_eof=*/true, targets, options);
  std::vector<size_t> starts = {0};
  for (size_t end : ends.at_targets) {
    if (end > starts.back() && end < block.size()) starts.push_back(end);
  }
  starts.push_back(block.size());
  return starts;
}

CsvRecordParser::CsvRecordParser(const CsvOptions& options) : options_(options) {
  stops_.fill(false);
  stops_[static_cast<unsigned char>(options_.delimiter)] = true;
  stops_[static_cast<unsigned char>('\n')] = true;
  stops_[static_cast<unsigned char>('\r')] = true;
}

CsvRecordParser::Result CsvRecordParser::Next(char* data, size_t size, size_t* pos,
                                              std::vector<std::string_view>* fields,
                                              int64_t* lines, int64_t* record_line) const {
  size_t p = *pos;
  // Blank lines before the record.
  while (p < size && (data[p] == '\n' || data[p] == '\r')) {
    p += (data[p] == '\r' && p + 1 < size && data[p + 1] == '\n') ? 2 : 1;
    ++*lines;
  }
  *pos = p;
  if (p == size) return Result::kEnd;
  *record_line = *lines;
  fields->clear();
  const char quote = options_.quote;
  while (true) {
    if (p < size && data[p] == quote) {
      // Quoted field: its text is compacted in place when it contains doubled quotes.
      const size_t start = p + 1;
      size_t write = start;
      size_t read = start;
      while (true) {
        const void* found = read < size ? std::memchr(data + read, quote, size - read) : nullptr;
        if (found == nullptr) return Result::kMalformed;
        const size_t q = static_cast<size_t>(static_cast<const char*>(found) - data);
        *lines += std::count(data + read, data + q, '\n');
        if (write != read) std::memmove(data + write, data + read, q - read);
        write += q - read;
        if (q + 1 < size && data[q + 1] == quote) {
          data[write++] = quote;
          read = q + 2;
          continue;
        }
        p = q + 1;
        break;
      }
      fields->emplace_back(data + start, write - start);
      if (p < size && !stops_[static_cast<unsigned char>(data[p])]) return Result::kMalformed;
    } else {
      const size_t start = p;
      while (p < size && !stops_[static_cast<unsigned char>(data[p])]) ++p;
      fields->emplace_back(data + start, p - start);
    }
    if (p == size) break;
    if (data[p] == options_.delimiter) {
      ++p;
      continue;
    }
    // A line end: '\n', "\r\n" or a lone '\r'.
    p += (data[p] == '\r' && p + 1 < size && data[p + 1] == '\n') ? 2 : 1;
    ++*lines;
    break;
  }
  *pos = p;
  return Result::kRecord;
}

absl::StatusOr<std::vector<std::string>> ExpandPaths(const std::string& pattern) {
  if (pattern.empty()) {
    return absl::InvalidArgumentError("input path is empty; give a file path or a glob pattern");
  }
  struct stat info;
  if (stat(pattern.c_str(), &info) == 0) {
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", pattern, "' is a directory; give a file or a glob such as '", pattern, "/*.csv'"));
    }
    return std::vector<std::string>{pattern};
  }

  glob_t matches;
  const int rc = glob(pattern.c_str(), GLOB_ERR, nullptr, &matches);
  if (rc == GLOB_NOMATCH) {
    globfree(&matches);
    return absl::NotFoundError(absl::StrCat("no file matches '", pattern, "'"));
  }
  if (rc != 0) {
    globfree(&matches);
    return absl::InternalError(absl::StrCat("failed to expand '", pattern, "': glob returned ",
                                            rc == GLOB_NOSPACE ? "out of memory" : "a read error"));
  }
  std::vector<std::string> paths;
  for (size_t i = 0; i < matches.gl_pathc; ++i) {
    const char* path = matches.gl_pathv[i];
    if (stat(path, &info) == 0 && S_ISREG(info.st_mode)) paths.emplace_back(path);
  }
  globfree(&matches);
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrCat("no regular file matches '", pattern, "'"));
  }
  // Byte order, so the file order does not depend on the locale's collation.
  std::sort(paths.begin(), paths.end());
  return paths;
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int length = 0;
    uint32_t code = 0;
    if ((lead & 0xE0) == 0xC0) {
      length = 2;
      code = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      code = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      code = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > n) return false;
    for (int k = 1; k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    // The smallest code point each length may encode; below it is an overlong form.
    uint32_t min_code = 0x10000;
    if (length == 2) min_code = 0x80;
    if (length == 3) min_code = 0x800;
    if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

}  // namespace cohort
