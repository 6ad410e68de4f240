#include "core/columns.h"

#include "absl/hash/hash.h"

namespace cohort {

void IdColumn::Reserve(int64_t ids, int64_t chars) {
  offsets_.reserve(static_cast<size_t>(offsets_.size() + ids));
  chars_.reserve(chars_.size() + static_cast<size_t>(chars));
}

namespace {

// Capacity beyond the size that ShrinkToFit leaves in place: copying a column to drop
// less than 1/32 of it costs more time than the memory is worth.
template <typename Container>
void ShrinkIfSlack(Container& container) {
  if (container.capacity() > container.size() + container.size() / 32) container.shrink_to_fit();
}

}  // namespace

void IdColumn::ShrinkToFit() {
  offsets_.ShrinkToFit();
  ShrinkIfSlack(chars_);
}

int64_t IdColumn::MemoryBytes() const {
  return static_cast<int64_t>(chars_.capacity()) + offsets_.MemoryBytes();
}

std::vector<std::string> IdColumn::ToStrings() const {
  std::vector<std::string> ids;
  ids.reserve(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) ids.emplace_back((*this)[i]);
  return ids;
}

float* NumericMatrix::AppendRow() {
  if (cols_ == 0) {
    ++rows_;
    return values_.data();
  }
  values_.resize(values_.size() + cols_);
  return values_.data() + values_.size() - cols_;
}

void NumericMatrix::AppendRows(const float* values, int64_t count) {
  if (cols_ == 0) {
    rows_ += count;
    return;
  }
  values_.insert(values_.end(), values, values + count * cols_);
}

void NumericMatrix::PopRow() {
  if (cols_ == 0) {
    --rows_;
    return;
  }
  values_.resize(values_.size() - cols_);
}

void NumericMatrix::ShrinkToFit() { ShrinkIfSlack(values_); }

std::vector<double> NumericMatrix::Column(int col) const {
  std::vector<double> column(static_cast<size_t>(rows()));
  for (int64_t r = 0; r < rows(); ++r) column[r] = (*this)(r, col);
  return column;
}

void CategoricalColumn::push_back(std::string_view value) {
  auto [it, inserted] =
      code_of_value_.try_emplace(std::string(value), static_cast<int32_t>(dictionary_.size()));
  if (inserted) dictionary_.emplace_back(value);
  codes_.push_back(it->second);
}

void CategoricalColumn::ShrinkToFit() { ShrinkIfSlack(codes_); }

int64_t CategoricalColumn::MemoryBytes() const {
  int64_t bytes = static_cast<int64_t>(codes_.capacity() * sizeof(int32_t));
  for (const std::string& value : dictionary_) {
    // Each value is held twice (dictionary and index) plus the index slot.
    bytes += 2 * static_cast<int64_t>(sizeof(std::string) + value.capacity()) + 8;
  }
  return bytes;
}

std::vector<std::string> CategoricalColumn::ToStrings() const {
  std::vector<std::string> values;
  values.reserve(codes_.size());
  for (int32_t code : codes_) values.push_back(dictionary_[code]);
  return values;
}

UserIdSet::UserIdSet(const IdColumn* ids) : rows_(0, Hash{ids}, Eq{ids}) {}

size_t UserIdSet::Hash::operator()(uint32_t row) const {
  return absl::Hash<std::string_view>()((*ids)[row]);
}

size_t UserIdSet::Hash::operator()(std::string_view id) const {
  return absl::Hash<std::string_view>()(id);
}

int64_t UserIdSet::Insert(int64_t row) {
  auto [it, inserted] = rows_.insert(static_cast<uint32_t>(row));
  return inserted ? -1 : static_cast<int64_t>(*it);
}

int64_t UserIdSet::Find(std::string_view id) const {
  auto it = rows_.find(id);
  return it == rows_.end() ? -1 : static_cast<int64_t>(*it);
}

int64_t UserIdSet::MemoryBytes() const {
  return static_cast<int64_t>(rows_.capacity() * (sizeof(uint32_t) + 1));
}

}  // namespace cohort
