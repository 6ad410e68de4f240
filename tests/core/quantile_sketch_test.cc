#include "core/quantile_sketch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cohort {
namespace {

// The rank error bound these tests check, for capacity 256: the true rank of the returned
// value is within kRankErrorFraction · n of q · n.
constexpr double kRankErrorFraction = 0.01;
const std::vector<double> kProbabilities = {0.001, 0.01, 0.05, 0.1, 0.25, 0.5,
                                            0.75,  0.9,  0.95, 0.99, 0.999};

// Uniform doubles in [0, 1) from raw generator bits, the same with every standard library.
std::vector<double> UniformValues(int64_t n, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::vector<double> values(n);
  for (double& v : values) v = static_cast<double>(engine() >> 11) * 0x1.0p-53;
  return values;
}

// exp(8u): a long right tail over about 3.5 orders of magnitude.
std::vector<double> SkewedValues(int64_t n, uint64_t seed) {
  std::vector<double> values = UniformValues(n, seed);
  for (double& v : values) v = std::exp(8.0 * v);
  return values;
}

// Distance from q · n to the range of ranks that `value` has in sorted_values:
// [number of values < value, number of values <= value].
double RankError(const std::vector<double>& sorted_values, double value, double q) {
  const double below = static_cast<double>(
      std::lower_bound(sorted_values.begin(), sorted_values.end(), value) - sorted_values.begin());
  const double at_or_below = static_cast<double>(
      std::upper_bound(sorted_values.begin(), sorted_values.end(), value) - sorted_values.begin());
  const double target = q * static_cast<double>(sorted_values.size());
  if (target < below) return below - target;
  if (target > at_or_below) return target - at_or_below;
  return 0.0;
}

// The largest rank error over kProbabilities, as a fraction of n.
double MaxRankErrorFraction(const QuantileSketch& sketch, std::vector<double> values) {
  std::sort(values.begin(), values.end());
  double worst = 0;
  for (double q : kProbabilities) {
    worst = std::max(worst, RankError(values, sketch.Quantile(q), q));
  }
  return worst / static_cast<double>(values.size());
}

QuantileSketch SketchOf(const std::vector<double>& values, int capacity = 256) {
  QuantileSketch sketch(capacity);
  for (double v : values) sketch.Add(v);
  return sketch;
}

void ExpectWithinBound(const std::vector<double>& values, const std::string& name) {
  const QuantileSketch sketch = SketchOf(values);
  EXPECT_EQ(sketch.count(), static_cast<int64_t>(values.size())) << name;
  EXPECT_EQ(sketch.min(), *std::min_element(values.begin(), values.end())) << name;
  EXPECT_EQ(sketch.max(), *std::max_element(values.begin(), values.end())) << name;
  EXPECT_LE(MaxRankErrorFraction(sketch, values), kRankErrorFraction) << name;
}

TEST(QuantileSketchTest, FromSortedIsWithinBound) {
  for (const auto& [name, values] :
       {std::pair{std::string("uniform"), UniformValues(200000, 31)},
        std::pair{std::string("skewed"), SkewedValues(100000, 32)}}) {
    std::vector<double> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    const QuantileSketch sketch = QuantileSketch::FromSorted(sorted);
    EXPECT_EQ(sketch.count(), static_cast<int64_t>(values.size())) << name;
    EXPECT_EQ(sketch.min(), sorted.front()) << name;
    EXPECT_EQ(sketch.max(), sorted.back()) << name;
    EXPECT_LE(MaxRankErrorFraction(sketch, values), kRankErrorFraction) << name;
    const absl::StatusOr<QuantileSketch> restored =
        QuantileSketch::Deserialize(sketch.Serialize());
    EXPECT_TRUE(restored.ok()) << name << ": " << restored.status();
  }
}

TEST(QuantileSketchTest, FromSortedSmallInputMatchesAdd) {
  std::vector<double> values = SkewedValues(200, 33);
  const QuantileSketch added = SketchOf(values);
  std::sort(values.begin(), values.end());
  const QuantileSketch built = QuantileSketch::FromSorted(values);
  for (double q : kProbabilities) EXPECT_EQ(built.Quantile(q), added.Quantile(q)) << q;
  EXPECT_EQ(QuantileSketch::FromSorted({}).count(), 0);
}

TEST(QuantileSketchTest, SmallInputIsExact) {
  // 200 values <= capacity 256: nothing is compacted, so the q-quantile is the value of
  // rank ceil(q · n) (1-based) of the sorted input.
  std::vector<double> values = SkewedValues(200, 1);
  const QuantileSketch sketch = SketchOf(values);
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  for (double q : {0.0, 0.001, 0.1, 0.25, 0.3, 0.5, 0.7, 0.999, 1.0}) {
    int64_t index = 0;
    while (static_cast<double>(index + 1) < q * n) ++index;
    EXPECT_EQ(sketch.Quantile(q), values[index]) << "q=" << q;
  }
}

TEST(QuantileSketchTest, ExactUpToCapacity) {
  std::vector<double> values(256);
  for (int i = 0; i < 256; ++i) values[i] = 255 - i;
  const QuantileSketch sketch = SketchOf(values);
  EXPECT_EQ(sketch.Quantile(0.5), 127.0);
  EXPECT_EQ(sketch.Quantile(1.0 / 256), 0.0);
  EXPECT_EQ(sketch.Quantile(0.25), 63.0);
}

TEST(QuantileSketchTest, UniformWithinRankBound) {
  ExpectWithinBound(UniformValues(1000000, 2), "uniform 1e6");
  ExpectWithinBound(UniformValues(100000, 3), "uniform 1e5");
}

TEST(QuantileSketchTest, SkewedWithinRankBound) {
  ExpectWithinBound(SkewedValues(1000000, 4), "skewed 1e6");
}

TEST(QuantileSketchTest, SortedWithinRankBound) {
  std::vector<double> values = UniformValues(1000000, 5);
  std::sort(values.begin(), values.end());
  ExpectWithinBound(values, "sorted 1e6");
}

TEST(QuantileSketchTest, ReverseSortedWithinRankBound) {
  std::vector<double> values = UniformValues(1000000, 6);
  std::sort(values.begin(), values.end(), [](double a, double b) { return a > b; });
  ExpectWithinBound(values, "reverse sorted 1e6");
}

TEST(QuantileSketchTest, ManyDuplicatesWithinRankBound) {
  // Values 0 to 9 only, so each value covers a wide range of ranks.
  std::vector<double> values = UniformValues(300000, 7);
  for (double& v : values) v = std::floor(v * 10);
  ExpectWithinBound(values, "ten distinct values");
}

TEST(QuantileSketchTest, MergedPartialsWithinRankBound) {
  const std::vector<double> values = SkewedValues(800000, 8);
  QuantileSketch merged;
  for (int part = 0; part < 8; ++part) {
    QuantileSketch partial;
    for (int64_t i = part * 100000; i < (part + 1) * 100000; ++i) partial.Add(values[i]);
    merged.Merge(partial);
  }
  EXPECT_EQ(merged.count(), 800000);
  EXPECT_EQ(merged.min(), *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(merged.max(), *std::max_element(values.begin(), values.end()));
  EXPECT_LE(MaxRankErrorFraction(merged, values), kRankErrorFraction);
}

TEST(QuantileSketchTest, MergeOfSmallSketchesIsExact) {
  QuantileSketch a;
  QuantileSketch b;
  for (int i = 0; i < 50; ++i) a.Add(2 * i);
  for (int i = 0; i < 50; ++i) b.Add(2 * i + 1);
  a.Merge(b);
  EXPECT_EQ(a.count(), 100);
  EXPECT_EQ(a.Quantile(0.5), 49.0);
  EXPECT_EQ(a.Quantile(0.1), 9.0);
  EXPECT_EQ(a.min(), 0.0);
  EXPECT_EQ(a.max(), 99.0);
}

TEST(QuantileSketchTest, MergeWithEmptyAndSelf) {
  QuantileSketch sketch = SketchOf({3, 1, 2});
  sketch.Merge(QuantileSketch());
  EXPECT_EQ(sketch.count(), 3);

  QuantileSketch empty;
  empty.Merge(sketch);
  EXPECT_EQ(empty.Serialize(), sketch.Serialize());

  sketch.Merge(sketch);
  EXPECT_EQ(sketch.count(), 6);
  EXPECT_EQ(sketch.Quantile(0.5), 2.0);
}

TEST(QuantileSketchTest, SameInputsGiveIdenticalSerialization) {
  const std::vector<double> values = UniformValues(200000, 9);
  const QuantileSketch first = SketchOf(values);
  const QuantileSketch second = SketchOf(values);
  EXPECT_EQ(first.Serialize(), second.Serialize());

  QuantileSketch merged_first;
  QuantileSketch merged_second;
  for (int part = 0; part < 4; ++part) {
    const std::vector<double> slice(values.begin() + part * 50000,
                                    values.begin() + (part + 1) * 50000);
    merged_first.Merge(SketchOf(slice));
    merged_second.Merge(SketchOf(slice));
  }
  EXPECT_EQ(merged_first.Serialize(), merged_second.Serialize());
}

TEST(QuantileSketchTest, SerializationRoundTrips) {
  const std::vector<double> values = SkewedValues(123457, 10);
  const QuantileSketch sketch = SketchOf(values, 100);
  const std::string bytes = sketch.Serialize();

  const absl::StatusOr<QuantileSketch> restored = QuantileSketch::Deserialize(bytes);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->Serialize(), bytes);
  EXPECT_EQ(restored->count(), sketch.count());
  EXPECT_EQ(restored->min(), sketch.min());
  EXPECT_EQ(restored->max(), sketch.max());
  for (double q : kProbabilities) EXPECT_EQ(restored->Quantile(q), sketch.Quantile(q)) << q;

  // A restored sketch keeps compacting as the original does.
  QuantileSketch continued = *restored;
  QuantileSketch original = sketch;
  for (double v : UniformValues(5000, 11)) {
    continued.Add(v);
    original.Add(v);
  }
  EXPECT_EQ(continued.Serialize(), original.Serialize());
}

TEST(QuantileSketchTest, EmptySketchRoundTrips) {
  const QuantileSketch empty(64);
  const absl::StatusOr<QuantileSketch> restored = QuantileSketch::Deserialize(empty.Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->count(), 0);
  EXPECT_TRUE(std::isnan(restored->Quantile(0.5)));
  EXPECT_TRUE(std::isnan(restored->min()));
}

TEST(QuantileSketchTest, SerializationIsLittleEndian) {
  const std::string bytes = SketchOf({0.1}, 300).Serialize();
  ASSERT_GE(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(0, 4), "CQSK");
  EXPECT_EQ(bytes.substr(4, 4), std::string("\x01\x00\x00\x00", 4));  // version 1
  EXPECT_EQ(bytes.substr(8, 4), std::string("\x2c\x01\x00\x00", 4));  // capacity 300
}

TEST(QuantileSketchTest, FloatValuesSerializeAtHalfSize) {
  std::vector<double> values = UniformValues(5000, 21);
  for (double& v : values) v = static_cast<float>(v);
  const QuantileSketch as_floats = SketchOf(values);
  const std::string bytes = as_floats.Serialize();
  EXPECT_EQ(bytes.substr(4, 4), std::string("\x02\x00\x00\x00", 4));  // version 2

  const absl::StatusOr<QuantileSketch> restored = QuantileSketch::Deserialize(bytes);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->Serialize(), bytes);
  for (double q : {0.01, 0.5, 0.99}) EXPECT_EQ(restored->Quantile(q), as_floats.Quantile(q));

  // One value that float32 cannot hold keeps the 8-byte form.
  values.push_back(0.1);
  const std::string as_doubles = SketchOf(values).Serialize();
  EXPECT_EQ(as_doubles.substr(4, 4), std::string("\x01\x00\x00\x00", 4));
  EXPECT_GT(as_doubles.size(), bytes.size() * 3 / 2);
}

TEST(QuantileSketchTest, DeserializeRejectsCorruptInput) {
  const std::string good = SketchOf(UniformValues(1000, 12)).Serialize();
  ASSERT_TRUE(QuantileSketch::Deserialize(good).ok());

  struct Case {
    std::string name;
    std::string bytes;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", ""});
  cases.push_back({"truncated header", good.substr(0, 20)});
  cases.push_back({"truncated level", good.substr(0, good.size() - 3)});
  cases.push_back({"trailing bytes", good + "x"});
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  cases.push_back({"magic", bad_magic});
  std::string bad_version = good;
  bad_version[4] = 3;
  cases.push_back({"version", bad_version});
  std::string bad_capacity = good;
  bad_capacity[8] = 3;
  bad_capacity[9] = 0;
  cases.push_back({"capacity below 16", bad_capacity});
  // 200 items at level 0, but capacity 100 allows at most 100 items in one level.
  std::string too_many_items = SketchOf(UniformValues(200, 14)).Serialize();
  too_many_items[8] = 100;
  too_many_items[9] = 0;
  cases.push_back({"more items than capacity", too_many_items});
  std::string bad_levels = good;
  bad_levels[12] = 100;
  cases.push_back({"100 levels", bad_levels});
  std::string bad_count = good;
  bad_count[16] = static_cast<char>(bad_count[16] + 1);
  cases.push_back({"count differs from weights", bad_count});
  std::string bad_item = good;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  bad_item.replace(bad_item.size() - 8, 8, reinterpret_cast<const char*>(&nan), 8);
  cases.push_back({"NaN item", bad_item});

  for (const Case& c : cases) {
    const absl::StatusOr<QuantileSketch> result = QuantileSketch::Deserialize(c.bytes);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
  }
}

TEST(QuantileSketchTest, NanIsIgnored) {
  QuantileSketch sketch;
  sketch.Add(std::numeric_limits<double>::quiet_NaN());
  sketch.Add(2.0);
  sketch.Add(std::numeric_limits<double>::quiet_NaN());
  sketch.Add(1.0);
  EXPECT_EQ(sketch.count(), 2);
  EXPECT_EQ(sketch.min(), 1.0);
  EXPECT_EQ(sketch.max(), 2.0);
  EXPECT_EQ(sketch.Quantile(0.5), 1.0);
}

TEST(QuantileSketchTest, EmptyIsNan) {
  const QuantileSketch sketch;
  EXPECT_EQ(sketch.count(), 0);
  EXPECT_TRUE(std::isnan(sketch.Quantile(0.5)));
  EXPECT_TRUE(std::isnan(sketch.min()));
  EXPECT_TRUE(std::isnan(sketch.max()));
}

TEST(QuantileSketchTest, ProbabilityOutsideUnitIntervalIsNan) {
  const QuantileSketch sketch = SketchOf({1, 2, 3});
  EXPECT_TRUE(std::isnan(sketch.Quantile(-0.1)));
  EXPECT_TRUE(std::isnan(sketch.Quantile(1.5)));
  EXPECT_TRUE(std::isnan(sketch.Quantile(std::numeric_limits<double>::quiet_NaN())));
}

TEST(QuantileSketchTest, ExtremesAreExactAfterCompaction) {
  std::vector<double> values = UniformValues(100000, 13);
  values[54321] = -5.0;
  values[777] = 9.0;
  const QuantileSketch sketch = SketchOf(values);
  EXPECT_EQ(sketch.Quantile(0.0), -5.0);
  EXPECT_EQ(sketch.Quantile(1.0), 9.0);
}

}  // namespace
}  // namespace cohort
