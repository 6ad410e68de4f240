// Cell checks and parsers shared by AppendUserRow and the parallel file loader, so both
// accept the same cells and word their errors the same way. Internal to core/.
#ifndef COHORT_CORE_RAW_CELLS_H_
#define COHORT_CORE_RAW_CELLS_H_

#include <cstddef>
#include <cstdint>
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

// LoadUserShards one record at a time on one thread, through AppendUserRow: the loader
// for schemas with profiling columns (boolean, text, embedding, label) and for
// non-default cleaning rules, which the block parser does not handle.
[[nodiscard]] absl::StatusOr<LoadedShards> LoadUserShardsRowByRow(
    const UserLoadOptions& options);

// Maps each schema column to its index in `header`; the line-number id column maps to
// kNotInFile. Errors: InvalidArgument, naming `path`, when a schema column is missing
// from the header or appears in it twice.
[[nodiscard]] absl::StatusOr<std::vector<size_t>> MapSchemaToHeader(
    const Schema& schema, const std::vector<std::string>& header, const std::string& path);

// Parses a plain decimal, [+-]digits[.digits][(e|E)[+-]digits], with at most 19 digits
// (leading zeros included) and a decimal exponent within ±22 whose digits form an integer
// of at most 2^53. Then the digits and the power of ten are exact doubles, and one IEEE
// multiplication or division rounds the result correctly (Clinger's fast path), so the
// value equals what std::from_chars returns. Returns false for any other text, which
// ParseNumber then handles.
inline bool ParsePlainDecimal(std::string_view text, double* value) {
  static constexpr double kPowersOfTen[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  constexpr uint64_t kMaxExactMantissa = uint64_t{1} << 53;
  const char* p = text.data();
  const char* const end = p + text.size();
  bool negative = false;
  if (p < end && (*p == '-' || *p == '+')) negative = *p++ == '-';
  // Digits accumulate without a per-digit bound check: a 64-bit overflow past 19 digits
  // wraps harmlessly, because the digit count rejects such text below.
  uint64_t mantissa = 0;
  const char* const integer_start = p;
  for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
    mantissa = mantissa * 10 + digit;
  }
  const ptrdiff_t integer_digits = p - integer_start;
  if (integer_digits == 0) return false;
  ptrdiff_t fraction_digits = 0;
  if (p < end && *p == '.') {
    const char* const fraction_start = ++p;
    for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
      mantissa = mantissa * 10 + digit;
    }
    fraction_digits = p - fraction_start;
    if (fraction_digits == 0) return false;
  }
  if (integer_digits + fraction_digits > 19) return false;
  int exponent = -static_cast<int>(fraction_digits);
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool negative_exponent = false;
    if (p < end && (*p == '-' || *p == '+')) negative_exponent = *p++ == '-';
    const char* const exponent_start = p;
    int written = 0;
    for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
      if (written > 1000) return false;
      written = written * 10 + static_cast<int>(digit);
    }
    if (p == exponent_start) return false;
    exponent += negative_exponent ? -written : written;
  }
  if (p != end || mantissa > kMaxExactMantissa) return false;
  double result = static_cast<double>(mantissa);
  if (mantissa != 0) {
    if (exponent < -22 || exponent > 22) return false;
    result = exponent < 0 ? result / kPowersOfTen[-exponent] : result * kPowersOfTen[exponent];
  }
  *value = negative ? -result : result;
  return true;
}

// Parses the plain decimal that starts at `begin` and ends at the first character that
// cannot continue it (or at `end`), as ParsePlainDecimalFloat below does. Returns a
// pointer past the number, or null when the text there is not a number the float path
// accepts. Loaders use it to parse a cell while they look for the cell's end.
inline const char* ParsePlainDecimalFloatPrefix(const char* begin, const char* end,
                                                float* value) {
  static constexpr float kPowersOfTen[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                           1e6f, 1e7f, 1e8f, 1e9f, 1e10f};
  constexpr uint32_t kMaxExactMantissa = uint32_t{1} << 24;
  // More digits than this cannot form a mantissa <= 2^24 (unless they are leading
  // zeros, which are left to the double path), and cannot overflow 32 bits.
  constexpr ptrdiff_t kMaxDigits = 9;
  const char* p = begin;
  bool negative = false;
  if (p < end && (*p == '-' || *p == '+')) negative = *p++ == '-';
  uint32_t mantissa = 0;
  const char* const integer_start = p;
  for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
    mantissa = mantissa * 10 + digit;
  }
  const ptrdiff_t integer_digits = p - integer_start;
  if (integer_digits == 0 || integer_digits > kMaxDigits) return nullptr;
  ptrdiff_t fraction_digits = 0;
  if (p < end && *p == '.') {
    const char* const fraction_start = ++p;
    for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
      mantissa = mantissa * 10 + digit;
    }
    fraction_digits = p - fraction_start;
    if (fraction_digits == 0) return nullptr;
  }
  if (integer_digits + fraction_digits > kMaxDigits) return nullptr;
  int exponent = -static_cast<int>(fraction_digits);
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool negative_exponent = false;
    if (p < end && (*p == '-' || *p == '+')) negative_exponent = *p++ == '-';
    const char* const exponent_start = p;
    int written = 0;
    for (unsigned digit; p < end && (digit = static_cast<unsigned char>(*p) - '0') <= 9; ++p) {
      if (written > 1000) return nullptr;
      written = written * 10 + static_cast<int>(digit);
    }
    if (p == exponent_start) return nullptr;
    exponent += negative_exponent ? -written : written;
  }
  if (mantissa > kMaxExactMantissa) return nullptr;
  float result = static_cast<float>(mantissa);
  if (mantissa != 0) {
    if (exponent < -10 || exponent > 10) return nullptr;
    result = exponent < 0 ? result / kPowersOfTen[-exponent] : result * kPowersOfTen[exponent];
  }
  *value = negative ? -result : result;
  return p;
}

// Parses a plain decimal as ParsePlainDecimal does, in float arithmetic, when its digits
// form an integer m <= 2^24 and its decimal exponent e is within ±10. Then m and 10^|e|
// are exact floats, so one float multiplication or division rounds m·10^e correctly, and
// the result equals static_cast<float> of ParsePlainDecimal's double for every such m
// and e (an exhaustive test in raw_table_test checks the division cases, where the
// double is rounded twice). Returns false for any other text.
inline bool ParsePlainDecimalFloat(std::string_view text, float* value) {
  const char* const end = text.data() + text.size();
  float parsed = 0;
  const char* const parsed_end = ParsePlainDecimalFloatPrefix(text.data(), end, &parsed);
  if (parsed_end == nullptr || parsed_end != end) return false;
  *value = parsed;
  return true;
}

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
