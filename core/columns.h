// Compact column containers of a RawShard, one per column type. User ids share one
// character buffer, numeric cells form a row-major float32 matrix, and categorical cells
// are int32 codes into a per-shard dictionary. UserIdSet finds a user id without a copy.
#ifndef COHORT_CORE_COLUMNS_H_
#define COHORT_CORE_COLUMNS_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace cohort {

// Ascending offsets into a buffer of up to 2^64 bytes, each stored in one Word: the
// low bits of the offset. The few entries where the full value passes a multiple of
// 2^(bits of Word) since the entry before are listed apart, and at(i) adds them back.
// REQUIRES of push_back: an offset exceeds the one before by less than 2^(bits of Word).
template <typename Word>
class PackedOffsets {
 public:
  static constexpr int kWordBits = 8 * sizeof(Word);

  int64_t size() const { return static_cast<int64_t>(low_.size()); }
  uint64_t at(int64_t i) const {
    uint64_t high = 0;
    if (!wraps_.empty()) {
      high = static_cast<uint64_t>(std::upper_bound(wraps_.begin(), wraps_.end(), i) -
                                   wraps_.begin());
    }
    return (high << kWordBits) | low_[i];
  }
  uint64_t back() const { return at(size() - 1); }
  void push_back(uint64_t offset) {
    if (!low_.empty() && (offset >> kWordBits) != (back() >> kWordBits)) wraps_.push_back(size());
    low_.push_back(static_cast<Word>(offset));
  }
  void pop_back() {
    if (!wraps_.empty() && wraps_.back() == size() - 1) wraps_.pop_back();
    low_.pop_back();
  }
  void reserve(size_t n) { low_.reserve(n); }
  void ShrinkToFit() {
    if (low_.capacity() > low_.size() + low_.size() / 32) low_.shrink_to_fit();
  }
  int64_t MemoryBytes() const {
    return static_cast<int64_t>(low_.capacity() * sizeof(Word) +
                                wraps_.capacity() * sizeof(int64_t));
  }
  bool operator==(const PackedOffsets& other) const {
    return low_ == other.low_ && wraps_ == other.wraps_;
  }

 private:
  std::vector<Word> low_;
  // Ascending indices of the entries that passed a multiple of 2^kWordBits.
  std::vector<int64_t> wraps_;
};

// The user ids of one shard: id i is chars[offsets[i], offsets[i + 1]), with 32-bit
// packed offsets. So a user costs the id length plus 4 bytes, against 32 bytes plus the
// heap text of a std::string.
class IdColumn {
 public:
  IdColumn() { offsets_.push_back(0); }

  int64_t size() const { return offsets_.size() - 1; }
  bool empty() const { return size() == 0; }
  std::string_view operator[](int64_t i) const {
    const uint64_t begin = offsets_.at(i);
    return std::string_view(chars_.data() + begin, offsets_.at(i + 1) - begin);
  }
  // REQUIRES: id.size() < 2^32.
  void push_back(std::string_view id) {
    chars_.append(id.data(), id.size());
    offsets_.push_back(chars_.size());
  }
  void pop_back() {
    offsets_.pop_back();
    chars_.resize(offsets_.back());
  }
  // Reserves room for `ids` more ids of `chars` more bytes in total.
  void Reserve(int64_t ids, int64_t chars);
  // Releases the capacity beyond the current size when it exceeds 1/32 of the size.
  void ShrinkToFit();
  // Heap bytes held, capacity included.
  int64_t MemoryBytes() const;
  // The ids as strings, for tests and small outputs.
  std::vector<std::string> ToStrings() const;

  bool operator==(const IdColumn& other) const {
    return chars_ == other.chars_ && offsets_ == other.offsets_;
  }

 private:
  std::string chars_;
  PackedOffsets<uint32_t> offsets_;  // size() + 1 entries, the first 0
};

// Numeric cells of one shard: n rows × `cols` columns, row-major float32. NaN marks a
// missing cell. Values are rounded to float32 when stored (about 7 significant digits).
class NumericMatrix {
 public:
  NumericMatrix() = default;
  explicit NumericMatrix(int cols) : cols_(cols) {}

  int cols() const { return cols_; }
  int64_t rows() const { return cols_ == 0 ? rows_ : static_cast<int64_t>(values_.size()) / cols_; }
  float operator()(int64_t row, int col) const { return values_[row * cols_ + col]; }
  const float* row(int64_t r) const { return values_.data() + r * cols_; }
  const float* data() const { return values_.data(); }

  // Appends one row of cols() values. Returns a pointer to the new row.
  float* AppendRow();
  // Appends `count` rows copied from `values` (count × cols(), row-major).
  void AppendRows(const float* values, int64_t count);
  void PopRow();
  void Reserve(int64_t rows) { values_.reserve(static_cast<size_t>(rows) * cols_); }
  // As IdColumn::ShrinkToFit.
  void ShrinkToFit();
  int64_t MemoryBytes() const { return static_cast<int64_t>(values_.capacity() * sizeof(float)); }

  // The values of column `col`, as doubles, for tests.
  std::vector<double> Column(int col) const;

 private:
  int cols_ = 0;
  // Row count when there are no columns (values_ is then empty).
  int64_t rows_ = 0;
  std::vector<float> values_;
};

// Categorical cells of one column of a shard: codes[row] indexes `dictionary`, which
// contains each distinct value once in first-seen order. The empty string is the missing
// value and is coded like any other value.
class CategoricalColumn {
 public:
  int64_t size() const { return static_cast<int64_t>(codes_.size()); }
  std::string_view operator[](int64_t row) const { return dictionary_[codes_[row]]; }
  const std::vector<int32_t>& codes() const { return codes_; }
  const std::vector<std::string>& dictionary() const { return dictionary_; }

  // Appends `value`, adding it to the dictionary when new.
  void push_back(std::string_view value);
  void pop_back() { codes_.pop_back(); }
  void Reserve(int64_t rows) { codes_.reserve(static_cast<size_t>(rows)); }
  // As IdColumn::ShrinkToFit.
  void ShrinkToFit();
  // Heap bytes held: the codes plus the dictionary and its index.
  int64_t MemoryBytes() const;
  // The values as strings, for tests.
  std::vector<std::string> ToStrings() const;

 private:
  std::vector<int32_t> codes_;
  std::vector<std::string> dictionary_;
  absl::flat_hash_map<std::string, int32_t> code_of_value_;
};

// A set of rows of an IdColumn, looked up by id text. It stores 4-byte row indices and
// hashes the text in the column, so ids are not copied. The column must outlive the
// set and stay at the same address; rows are only added, never changed.
// Thread safety: not thread-safe.
class UserIdSet {
 public:
  explicit UserIdSet(const IdColumn* ids);

  // Adds row `row` of the column (already appended). Returns -1 when it was added, or
  // the earlier row with the same id, leaving the set unchanged.
  // REQUIRES: row < 2^32 − 1.
  int64_t Insert(int64_t row);
  // The row holding `id`, or -1.
  int64_t Find(std::string_view id) const;
  int64_t size() const { return static_cast<int64_t>(rows_.size()); }
  void Reserve(int64_t rows) { rows_.reserve(static_cast<size_t>(rows)); }
  // Heap bytes held: about 5 bytes per slot, and 1 to 2 slots per row.
  int64_t MemoryBytes() const;

 private:
  // Hash and equality of rows by their id text, usable with string_view keys too.
  struct Hash {
    using is_transparent = void;
    const IdColumn* ids;
    size_t operator()(uint32_t row) const;
    size_t operator()(std::string_view id) const;
  };
  struct Eq {
    using is_transparent = void;
    const IdColumn* ids;
    bool operator()(uint32_t a, uint32_t b) const { return (*ids)[a] == (*ids)[b]; }
    bool operator()(uint32_t a, std::string_view b) const { return (*ids)[a] == b; }
    bool operator()(std::string_view a, uint32_t b) const { return a == (*ids)[b]; }
  };

  absl::flat_hash_set<uint32_t, Hash, Eq> rows_;
};

// Largest row count of one shard, because UserIdSet keeps 4-byte row indices.
inline constexpr int64_t kMaxShardRows = (int64_t{1} << 32) - 2;

}  // namespace cohort

#endif  // COHORT_CORE_COLUMNS_H_
