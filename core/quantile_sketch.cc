#include "core/quantile_sketch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace cohort {
namespace {

constexpr int kMinCapacity = 16;
constexpr int kMaxCapacity = 65536;
// Capacities shrink by 2/3 per level below the top one, down to this floor.
constexpr int64_t kMinLevelCapacity = 8;
// An item of level h has weight 2^h, and the total weight (the count) is an int64_t.
constexpr size_t kMaxLevels = 62;

// Serialized form, every field little-endian:
//   4 bytes  magic "CQSK"
//   u32      format version (kFormatVersion)
//   u32      capacity
//   u32      number of levels L
//   i64      count
//   u64      compaction parities (bit h: parity of the compactions of level h)
//   f64      min, f64 max (NaN when the sketch is empty)
//   L times: u32 number of items m, then m items: f64 in version 1, f32 in version 2.
// Serialize writes version 2 when every item is a float32 value, as the raw feature cells
// are. That halves the size. Otherwise it writes version 1.
constexpr char kMagic[4] = {'C', 'Q', 'S', 'K'};
constexpr uint32_t kDoubleItemsVersion = 1;
constexpr uint32_t kFloatItemsVersion = 2;
constexpr size_t kHeaderBytes = 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8;

// The capacity of `level` in a sketch of `num_levels` levels: `capacity` for the top
// level, times 2/3 (rounded down) per level below it, and at least kMinLevelCapacity.
// Integer arithmetic, so every machine gets the same capacities.
int64_t LevelCapacity(int capacity, size_t num_levels, size_t level) {
  int64_t result = capacity;
  for (size_t depth = num_levels - 1 - level; depth > 0 && result > kMinLevelCapacity; --depth) {
    result = result * 2 / 3;
  }
  return std::max(result, kMinLevelCapacity);
}

void AppendU32(std::string& out, uint32_t v) {
  for (int byte = 0; byte < 4; ++byte) out.push_back(static_cast<char>((v >> (8 * byte)) & 0xff));
}

void AppendU64(std::string& out, uint64_t v) {
  for (int byte = 0; byte < 8; ++byte) out.push_back(static_cast<char>((v >> (8 * byte)) & 0xff));
}

void AppendF32(std::string& out, float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof(v));
  AppendU32(out, bits);
}

void AppendF64(std::string& out, double v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(bits));
  AppendU64(out, bits);
}

// Reads little-endian fields from a byte string. The caller checks Remaining() before
// each read.
class ByteReader {
 public:
  explicit ByteReader(const std::string& bytes) : bytes_(bytes) {}

  size_t Remaining() const { return bytes_.size() - position_; }

  uint64_t ReadUnsigned(int num_bytes) {
    uint64_t v = 0;
    for (int byte = 0; byte < num_bytes; ++byte) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(bytes_[position_ + byte]))
           << (8 * byte);
    }
    position_ += num_bytes;
    return v;
  }

  double ReadF64() {
    const uint64_t bits = ReadUnsigned(8);
    double v = 0;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }

  double ReadF32() {
    const auto bits = static_cast<uint32_t>(ReadUnsigned(4));
    float v = 0;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }

 private:
  const std::string& bytes_;
  size_t position_ = 0;
};

absl::Status Invalid(const std::string& detail) {
  return absl::InvalidArgumentError("invalid serialized quantile sketch: " + detail);
}

}  // namespace

QuantileSketch::QuantileSketch(int capacity)
    : capacity_(std::clamp(capacity, kMinCapacity, kMaxCapacity)), levels_(1) {
  UpdateCapacities();
}

void QuantileSketch::UpdateCapacities() {
  level_capacities_.resize(levels_.size());
  total_capacity_ = 0;
  for (size_t h = 0; h < levels_.size(); ++h) {
    level_capacities_[h] = LevelCapacity(capacity_, levels_.size(), h);
    total_capacity_ += level_capacities_[h];
  }
}

void QuantileSketch::Add(double value) {
  if (std::isnan(value)) return;
  if (count_ == 0) {
    min_ = value;
    max_ = value;
  } else {
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }
  ++count_;
  levels_[0].push_back(value);
  if (++num_items_ > total_capacity_) Compact();
}

QuantileSketch QuantileSketch::FromSorted(const std::vector<double>& sorted, int capacity) {
  QuantileSketch sketch(capacity);
  if (sorted.empty()) return sketch;
  sketch.count_ = static_cast<int64_t>(sorted.size());
  sketch.min_ = sorted.front();
  sketch.max_ = sorted.back();
  sketch.levels_[0] = sorted;
  sketch.num_items_ = sketch.count_;
  sketch.Compact();
  return sketch;
}

void QuantileSketch::Merge(const QuantileSketch& other) {
  if (other.count_ == 0) return;
  if (&other == this) {
    const QuantileSketch copy = other;
    Merge(copy);
    return;
  }
  if (count_ == 0) {
    min_ = other.min_;
    max_ = other.max_;
  } else {
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }
  count_ += other.count_;
  if (levels_.size() < other.levels_.size()) {
    levels_.resize(other.levels_.size());
    UpdateCapacities();
  }
  for (size_t h = 0; h < other.levels_.size(); ++h) {
    levels_[h].insert(levels_[h].end(), other.levels_[h].begin(), other.levels_[h].end());
  }
  num_items_ += other.num_items_;
  Compact();
}

// While the sketch contains more items than the sum of its level capacities, compacts the
// lowest level that is at or above its capacity (lazy compaction, as in KLL): its items
// are sorted and split into adjacent pairs, and one item of each pair moves up a level
// with twice the weight. Which item of the pair moves alternates per level, the lower one
// on even and the upper one on odd compactions of that level, so the rank errors of
// successive compactions tend to cancel. With an odd number of items, the largest stays.
void QuantileSketch::Compact() {
  while (num_items_ > total_capacity_) {
    // More items than the levels hold together: some level is at or above its capacity.
    size_t h = 0;
    while (static_cast<int64_t>(levels_[h].size()) < level_capacities_[h]) ++h;
    if (h + 1 == levels_.size()) {
      levels_.emplace_back();
      UpdateCapacities();
    }

    std::vector<double>& level = levels_[h];
    std::vector<double>& up = levels_[h + 1];
    // Levels built from sorted input (FromSorted) and their compactions are sorted already.
    if (!std::is_sorted(level.begin(), level.end())) std::sort(level.begin(), level.end());
    const size_t offset = (compaction_parities_ >> h) & 1;
    const size_t num_pairs = level.size() / 2;
    for (size_t pair = 0; pair < num_pairs; ++pair) up.push_back(level[2 * pair + offset]);
    if (level.size() % 2 == 1) {
      level.front() = level.back();
      level.resize(1);
    } else {
      level.clear();
    }
    num_items_ -= static_cast<int64_t>(num_pairs);
    compaction_parities_ ^= uint64_t{1} << h;
  }
}

double QuantileSketch::Quantile(double q) const {
  if (count_ == 0 || !(q >= 0.0 && q <= 1.0)) return std::numeric_limits<double>::quiet_NaN();
  if (q == 0.0) return min_;
  if (q == 1.0) return max_;

  std::vector<std::pair<double, int64_t>> items;
  for (size_t h = 0; h < levels_.size(); ++h) {
    for (double v : levels_[h]) items.emplace_back(v, int64_t{1} << h);
  }
  std::sort(items.begin(), items.end());

  // The smallest item whose cumulative weight reaches q · count. Without compactions every
  // weight is 1, and this is the value of rank ceil(q · n) of the sorted input.
  const double target = q * static_cast<double>(count_);
  int64_t cumulative = 0;
  for (const auto& [value, weight] : items) {
    cumulative += weight;
    if (static_cast<double>(cumulative) >= target) return value;
  }
  return max_;
}

std::string QuantileSketch::Serialize() const {
  bool float_items = true;
  size_t num_items = 0;
  for (const std::vector<double>& level : levels_) {
    num_items += level.size();
    for (double v : level) {
      if (static_cast<double>(static_cast<float>(v)) != v) float_items = false;
    }
  }
  std::string out(kMagic, sizeof(kMagic));
  out.reserve(kHeaderBytes + 4 * levels_.size() + (float_items ? 4 : 8) * num_items);
  AppendU32(out, float_items ? kFloatItemsVersion : kDoubleItemsVersion);
  AppendU32(out, static_cast<uint32_t>(capacity_));
  AppendU32(out, static_cast<uint32_t>(levels_.size()));
  AppendU64(out, static_cast<uint64_t>(count_));
  AppendU64(out, compaction_parities_);
  AppendF64(out, min_);
  AppendF64(out, max_);
  for (const std::vector<double>& level : levels_) {
    AppendU32(out, static_cast<uint32_t>(level.size()));
    for (double v : level) {
      if (float_items) {
        AppendF32(out, static_cast<float>(v));
      } else {
        AppendF64(out, v);
      }
    }
  }
  return out;
}

absl::StatusOr<QuantileSketch> QuantileSketch::Deserialize(const std::string& bytes) {
  if (bytes.size() < kHeaderBytes) {
    return Invalid(absl::StrFormat("%d bytes is shorter than the %d-byte header", bytes.size(),
                                   kHeaderBytes));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return Invalid("the first 4 bytes are not \"CQSK\"");
  }
  ByteReader reader(bytes);
  reader.ReadUnsigned(4);
  const uint32_t version = static_cast<uint32_t>(reader.ReadUnsigned(4));
  if (version != kDoubleItemsVersion && version != kFloatItemsVersion) {
    return Invalid(absl::StrFormat(
        "format version %d is not supported; this build reads versions %d and %d", version,
        kDoubleItemsVersion, kFloatItemsVersion));
  }
  const size_t item_bytes = version == kFloatItemsVersion ? 4 : 8;
  const uint32_t capacity = static_cast<uint32_t>(reader.ReadUnsigned(4));
  if (capacity < kMinCapacity || capacity > kMaxCapacity) {
    return Invalid(absl::StrFormat("capacity %d is outside [%d, %d]", capacity, kMinCapacity,
                                   kMaxCapacity));
  }
  const uint32_t num_levels = static_cast<uint32_t>(reader.ReadUnsigned(4));
  if (num_levels < 1 || num_levels > kMaxLevels) {
    return Invalid(absl::StrFormat("%d levels is outside [1, %d]", num_levels, kMaxLevels));
  }

  QuantileSketch sketch(static_cast<int>(capacity));
  sketch.count_ = static_cast<int64_t>(reader.ReadUnsigned(8));
  sketch.compaction_parities_ = reader.ReadUnsigned(8);
  sketch.min_ = reader.ReadF64();
  sketch.max_ = reader.ReadF64();
  if (sketch.count_ < 0) return Invalid(absl::StrFormat("count %d is negative", sketch.count_));
  if (sketch.count_ > 0 && !(sketch.min_ <= sketch.max_)) {
    return Invalid(absl::StrFormat("min %g and max %g are not ordered", sketch.min_, sketch.max_));
  }

  sketch.levels_.assign(num_levels, {});
  sketch.UpdateCapacities();
  int64_t total_weight = 0;
  int64_t num_items = 0;
  int64_t total_capacity = 0;
  for (uint32_t h = 0; h < num_levels; ++h) {
    if (reader.Remaining() < 4) return Invalid(absl::StrFormat("level %d is truncated", h));
    const uint64_t size = reader.ReadUnsigned(4);
    if (reader.Remaining() / item_bytes < size) {
      return Invalid(absl::StrFormat("level %d declares %d items but %d bytes remain", h, size,
                                     reader.Remaining()));
    }
    num_items += static_cast<int64_t>(size);
    total_capacity += LevelCapacity(sketch.capacity_, num_levels, h);
    std::vector<double>& level = sketch.levels_[h];
    level.reserve(size);
    for (uint64_t i = 0; i < size; ++i) {
      const double v = item_bytes == 4 ? reader.ReadF32() : reader.ReadF64();
      if (!(v >= sketch.min_ && v <= sketch.max_)) {
        return Invalid(absl::StrFormat("item %g of level %d is outside [min %g, max %g]", v, h,
                                       sketch.min_, sketch.max_));
      }
      level.push_back(v);
    }
    // size · 2^h <= remaining exactly when size <= floor(remaining / 2^h). Comparing this
    // way keeps size · 2^h from overflowing.
    const int64_t remaining_weight = sketch.count_ - total_weight;
    if (static_cast<int64_t>(size) > (remaining_weight >> h)) {
      return Invalid(absl::StrFormat("the item weights exceed the count %d", sketch.count_));
    }
    total_weight += static_cast<int64_t>(size) << h;
  }
  if (num_items > total_capacity) {
    return Invalid(absl::StrFormat("%d items exceed the total capacity %d of %d levels",
                                   num_items, total_capacity, num_levels));
  }
  if (reader.Remaining() != 0) {
    return Invalid(absl::StrFormat("%d bytes follow the last level", reader.Remaining()));
  }
  if (total_weight != sketch.count_) {
    return Invalid(absl::StrFormat("the item weights sum to %d, not to the count %d",
                                   total_weight, sketch.count_));
  }
  sketch.num_items_ = num_items;
  if (sketch.count_ == 0) {
    sketch.min_ = std::numeric_limits<double>::quiet_NaN();
    sketch.max_ = std::numeric_limits<double>::quiet_NaN();
  }
  return sketch;
}

}  // namespace cohort
