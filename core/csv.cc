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
