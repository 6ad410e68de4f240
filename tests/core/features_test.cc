#include "core/features.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cohort {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Schema: id, age (numeric), income (numeric), job (categorical).
Schema TestSchema() {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId},
                    {"age", ColumnType::kNumeric},
                    {"job", ColumnType::kCategorical},
                    {"income", ColumnType::kNumeric}};
  return schema;
}

struct TestRow {
  std::string id;
  double age;
  double income;
  std::string job;
};

RawShard MakeShard(int shard_id, const std::vector<TestRow>& rows) {
  RawShard shard;
  shard.shard_id = shard_id;
  shard.numeric = NumericMatrix(2);
  shard.categorical.resize(1);
  for (const TestRow& row : rows) {
    shard.ids.push_back(row.id);
    float* values = shard.numeric.AppendRow();
    values[0] = static_cast<float>(row.age);
    values[1] = static_cast<float>(row.income);
    shard.categorical[0].push_back(row.job);
  }
  return shard;
}

// age: 1, 2, 3, 4 → mean 2.5, population std sqrt(1.25).
// income: 10, missing, 30, 50 → mean 30, population std sqrt(800/3).
// job: a, b, a, c.
std::vector<TestRow> SmallRows() {
  return {{"u1", 1, 10, "a"}, {"u2", 2, kNaN, "b"}, {"u3", 3, 30, "a"}, {"u4", 4, 50, "c"}};
}

FeatureTransform FitOrDie(const Schema& schema, const FeatureStats& stats,
                          const FeatureOptions& options = FeatureOptions()) {
  absl::StatusOr<FeatureTransform> transform = FitFeatureTransform(schema, stats, options);
  EXPECT_TRUE(transform.ok()) << transform.status();
  return transform.ok() ? *transform : FeatureTransform();
}

TEST(FeatureOptionsTest, ValidateChecksMaxCategoriesRange) {
  FeatureOptions options;
  options.max_categories = 0;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(options.Validate().message().find("max_categories"), std::string::npos);
  options.max_categories = 10001;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options.max_categories = 1;
  EXPECT_TRUE(options.Validate().ok());
  options.max_categories = 10000;
  EXPECT_TRUE(options.Validate().ok());
}

TEST(FeatureStatsTest, ComputeCountsSumsAndCategories) {
  const FeatureStats stats = ComputeFeatureStats(MakeShard(0, SmallRows()));
  EXPECT_EQ(stats.rows, 4);
  ASSERT_EQ(stats.numeric.size(), 2u);
  EXPECT_EQ(stats.numeric[0].count, 4);
  EXPECT_EQ(stats.numeric[0].missing, 0);
  EXPECT_DOUBLE_EQ(stats.numeric[0].sum, 10);
  EXPECT_DOUBLE_EQ(stats.numeric[0].sum_sq, 30);
  EXPECT_DOUBLE_EQ(stats.numeric[0].min, 1);
  EXPECT_DOUBLE_EQ(stats.numeric[0].max, 4);
  EXPECT_EQ(stats.numeric[1].count, 3);
  EXPECT_EQ(stats.numeric[1].missing, 1);
  EXPECT_DOUBLE_EQ(stats.numeric[1].sum, 90);
  EXPECT_DOUBLE_EQ(stats.numeric[1].sum_sq, 3500);
  ASSERT_EQ(stats.categorical.size(), 1u);
  const std::map<std::string, int64_t> expected = {{"a", 2}, {"b", 1}, {"c", 1}};
  EXPECT_EQ(stats.categorical[0].counts, expected);
}

TEST(FeatureStatsTest, MergeOfShardsEqualsStatsOfUnion) {
  const std::vector<TestRow> rows = {{"u1", 1.5, 10, "a"},  {"u2", -2, kNaN, "b"},
                                     {"u3", 3.25, 30, "a"}, {"u4", 40, 50, "c"},
                                     {"u5", 0.1, kNaN, ""}, {"u6", 7, -5, "b"}};
  const FeatureStats whole = ComputeFeatureStats(MakeShard(0, rows));

  FeatureStats merged;
  merged.Merge(ComputeFeatureStats(MakeShard(0, {rows[0], rows[1]})));
  merged.Merge(ComputeFeatureStats(MakeShard(1, {})));
  merged.Merge(ComputeFeatureStats(MakeShard(2, {rows[2], rows[3], rows[4]})));
  merged.Merge(ComputeFeatureStats(MakeShard(3, {rows[5]})));

  EXPECT_EQ(merged.rows, whole.rows);
  ASSERT_EQ(merged.numeric.size(), whole.numeric.size());
  for (size_t c = 0; c < whole.numeric.size(); ++c) {
    EXPECT_EQ(merged.numeric[c].count, whole.numeric[c].count) << "column " << c;
    EXPECT_EQ(merged.numeric[c].missing, whole.numeric[c].missing) << "column " << c;
    EXPECT_NEAR(merged.numeric[c].sum, whole.numeric[c].sum, 1e-12) << "column " << c;
    EXPECT_NEAR(merged.numeric[c].sum_sq, whole.numeric[c].sum_sq, 1e-9) << "column " << c;
    EXPECT_EQ(merged.numeric[c].min, whole.numeric[c].min) << "column " << c;
    EXPECT_EQ(merged.numeric[c].max, whole.numeric[c].max) << "column " << c;
  }
  ASSERT_EQ(merged.categorical.size(), 1u);
  EXPECT_EQ(merged.categorical[0].counts, whole.categorical[0].counts);
}

TEST(FeatureStatsTest, MergeIntoEmptyShardStatsKeepsMinMax) {
  // The first shard has only missing ages, so its min and max are not meaningful and
  // must not leak into the merged range.
  FeatureStats merged = ComputeFeatureStats(MakeShard(0, {{"u1", kNaN, 1, "a"}}));
  merged.Merge(ComputeFeatureStats(MakeShard(1, {{"u2", 5, 2, "a"}, {"u3", 9, 3, "a"}})));
  EXPECT_EQ(merged.numeric[0].count, 2);
  EXPECT_EQ(merged.numeric[0].missing, 1);
  EXPECT_DOUBLE_EQ(merged.numeric[0].min, 5);
  EXPECT_DOUBLE_EQ(merged.numeric[0].max, 9);
}

TEST(FitFeatureTransformTest, UsesMeanAndPopulationStd) {
  const FeatureTransform transform =
      FitOrDie(TestSchema(), ComputeFeatureStats(MakeShard(0, SmallRows())));
  ASSERT_EQ(transform.numeric.size(), 2u);
  EXPECT_EQ(transform.numeric[0].name, "age");
  EXPECT_DOUBLE_EQ(transform.numeric[0].mean, 2.5);
  EXPECT_NEAR(transform.numeric[0].scale, std::sqrt(1.25), 1e-12);
  EXPECT_EQ(transform.numeric[1].name, "income");
  EXPECT_DOUBLE_EQ(transform.numeric[1].mean, 30);
  EXPECT_NEAR(transform.numeric[1].scale, std::sqrt(800.0 / 3.0), 1e-12);
}

TEST(TransformShardTest, StandardizesAndImputesMean) {
  const RawShard shard = MakeShard(0, SmallRows());
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard));
  MatrixXfR x;
  TransformShard(transform, shard, &x);
  ASSERT_EQ(x.rows(), 4);
  ASSERT_EQ(x.cols(), 5);  // age, income, job=a, job=b, job=c

  const double age_std = std::sqrt(1.25);
  const double income_std = std::sqrt(800.0 / 3.0);
  const double expected_age[] = {-1.5 / age_std, -0.5 / age_std, 0.5 / age_std, 1.5 / age_std};
  const double expected_income[] = {-20 / income_std, 0, 0, 20 / income_std};
  for (int row = 0; row < 4; ++row) {
    EXPECT_NEAR(x(row, 0), expected_age[row], 1e-6) << "row " << row;
    EXPECT_NEAR(x(row, 1), expected_income[row], 1e-6) << "row " << row;
  }
  // The missing income (row 1) is imputed with the mean, which standardizes to 0.
  EXPECT_EQ(x(1, 1), 0.0f);
}

TEST(TransformShardTest, OneHotKeepsTopValuesAndOther) {
  // Counts: a 3, b 2, c 2, d 1. With two kept values the tie between b and c goes to the
  // smaller value b; c and d share "other".
  const RawShard shard = MakeShard(0, {{"u1", 1, 1, "a"},
                                       {"u2", 1, 1, "c"},
                                       {"u3", 1, 1, "b"},
                                       {"u4", 1, 1, "a"},
                                       {"u5", 1, 1, "d"},
                                       {"u6", 1, 1, "b"},
                                       {"u7", 1, 1, "a"},
                                       {"u8", 1, 1, "c"}});
  FeatureOptions options;
  options.max_categories = 2;
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard), options);
  ASSERT_EQ(transform.categorical.size(), 1u);
  EXPECT_EQ(transform.categorical[0].values, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(transform.categorical[0].has_other);
  EXPECT_EQ(transform.dim(), 5);
  EXPECT_EQ(transform.FeatureNames(),
            (std::vector<std::string>{"age", "income", "job=a", "job=b", "job=(other)"}));

  MatrixXfR x;
  TransformShard(transform, shard, &x);
  const char* jobs = "acbadbac";
  for (int row = 0; row < 8; ++row) {
    int hot = 4;  // job=(other)
    if (jobs[row] == 'a') hot = 2;
    if (jobs[row] == 'b') hot = 3;
    for (int col = 2; col < 5; ++col) {
      EXPECT_EQ(x(row, col), col == hot ? 1.0f : 0.0f) << "row " << row << " col " << col;
    }
  }
}

TEST(TransformShardTest, UnseenValueWithoutOtherIsAllZero) {
  const RawShard train = MakeShard(0, SmallRows());
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(train));
  ASSERT_FALSE(transform.categorical[0].has_other);

  const RawShard serve = MakeShard(1, {{"u9", 2, 20, "never-seen"}});
  MatrixXfR x;
  TransformShard(transform, serve, &x);
  ASSERT_EQ(x.cols(), 5);
  EXPECT_EQ(x(0, 2), 0.0f);
  EXPECT_EQ(x(0, 3), 0.0f);
  EXPECT_EQ(x(0, 4), 0.0f);
}

TEST(FeatureTransformTest, EmptyValueIsNamedMissing) {
  const RawShard shard = MakeShard(0, {{"u1", 1, 1, ""}, {"u2", 2, 2, ""}, {"u3", 3, 3, "x"}});
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard));
  EXPECT_EQ(transform.FeatureNames(),
            (std::vector<std::string>{"age", "income", "job=(missing)", "job=x"}));
}

TEST(FitFeatureTransformTest, ZeroVarianceColumnHasScaleOne) {
  // Ten equal cells of 0.1: the moment formula leaves a variance of about 5e-18, which
  // must not become the scale.
  std::vector<TestRow> rows;
  for (int i = 0; i < 10; ++i) rows.push_back({"u" + std::to_string(i), 0.1, double(i), "a"});
  const RawShard shard = MakeShard(0, rows);
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard));
  EXPECT_EQ(transform.numeric[0].scale, 1.0);
  MatrixXfR x;
  TransformShard(transform, shard, &x);
  for (int row = 0; row < 10; ++row) EXPECT_NEAR(x(row, 0), 0.0f, 1e-6) << "row " << row;
}

TEST(FitFeatureTransformTest, AllMissingNumericColumnIsFailedPrecondition) {
  const RawShard shard = MakeShard(0, {{"u1", 1, kNaN, "a"}, {"u2", 2, kNaN, "b"}});
  const absl::StatusOr<FeatureTransform> transform =
      FitFeatureTransform(TestSchema(), ComputeFeatureStats(shard), FeatureOptions());
  ASSERT_EQ(transform.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(transform.status().message().find("'income'"), std::string::npos)
      << transform.status();
}

TEST(FitFeatureTransformTest, NoRowsIsInvalidArgument) {
  const absl::StatusOr<FeatureTransform> transform =
      FitFeatureTransform(TestSchema(), ComputeFeatureStats(MakeShard(0, {})), FeatureOptions());
  EXPECT_EQ(transform.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FitFeatureTransformTest, BadOptionsAreInvalidArgument) {
  FeatureOptions options;
  options.max_categories = 0;
  const absl::StatusOr<FeatureTransform> transform =
      FitFeatureTransform(TestSchema(), ComputeFeatureStats(MakeShard(0, SmallRows())), options);
  EXPECT_EQ(transform.status().code(), absl::StatusCode::kInvalidArgument);
}

// The row source computes, for any block of rows, exactly the rows TransformShard
// stores: standardized, imputed, log1p and one-hot columns, including "other" and a
// value never seen at fit time.
TEST(TransformedRowSourceTest, BlocksEqualTransformShard) {
  std::vector<TestRow> rows;
  const char* jobs[] = {"a", "b", "c", "a", "d", ""};
  for (int i = 0; i < 300; ++i) {
    rows.push_back({"u" + std::to_string(i), i % 7 == 0 ? kNaN : 0.5 * i,
                    i % 11 == 0 ? kNaN : 1.0 + i * i, jobs[i % 6]});
  }
  const RawShard train = MakeShard(0, rows);
  rows.push_back({"new", 3, 4, "never-seen"});
  const RawShard shard = MakeShard(0, rows);
  for (const bool log1p : {false, true}) {
    SCOPED_TRACE(log1p ? "log1p income" : "no log1p");
    FeatureOptions options;
    options.max_categories = 3;
    if (log1p) options.log1p_columns = {"income"};
    const FeatureTransform transform =
        FitOrDie(TestSchema(), ComputeFeatureStats(train, Log1pFlags(TestSchema(), options).value()),
                 options);
    MatrixXfR expected;
    TransformShard(transform, shard, &expected);
    const TransformedRowSource source(transform, &shard);
    ASSERT_EQ(source.rows(), expected.rows());
    ASSERT_EQ(source.cols(), expected.cols());
    for (int64_t count : {int64_t{1}, int64_t{7}, source.rows()}) {
      for (int64_t begin = 0; begin < source.rows(); begin += count) {
        const int64_t rows_in_block = std::min(count, source.rows() - begin);
        MatrixXfR block;
        source.CopyBlock(begin, rows_in_block, &block);
        for (int64_t r = 0; r < rows_in_block; ++r) {
          for (int64_t c = 0; c < block.cols(); ++c) {
            ASSERT_EQ(block(r, c), expected(begin + r, c))
                << "row " << begin + r << " col " << c << " block of " << count;
          }
        }
      }
    }
  }
}

TEST(TransformUserTest, MatchesTransformShardForSameRow) {
  const std::vector<TestRow> rows = {{"u1", 1, 10, "a"}, {"u2", 2, kNaN, "b"},
                                     {"u3", 3, 30, "a"}, {"u4", 4, 50, "c"},
                                     {"u5", 2.5, 12, "d"}};
  const RawShard shard = MakeShard(0, rows);
  FeatureOptions options;
  options.max_categories = 2;
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard), options);
  MatrixXfR x;
  TransformShard(transform, shard, &x);

  const std::vector<std::map<std::string, std::string>> users = {
      {{"age", "1"}, {"income", "10"}, {"job", "a"}},
      {{"age", "2"}, {"income", ""}, {"job", "b"}},
      {{"age", "3"}, {"income", "30"}, {"job", "a"}},
      {{"age", "4"}, {"income", "50"}, {"job", "c"}},
      {{"age", "2.5"}, {"income", "12"}, {"job", "d"}}};
  for (size_t row = 0; row < users.size(); ++row) {
    const absl::StatusOr<std::vector<float>> features = TransformUser(transform, users[row]);
    ASSERT_TRUE(features.ok()) << features.status();
    ASSERT_EQ(features->size(), static_cast<size_t>(x.cols()));
    for (int col = 0; col < x.cols(); ++col) {
      EXPECT_EQ((*features)[col], x(static_cast<Eigen::Index>(row), col))
          << "row " << row << " col " << col;
    }
  }
}

TEST(TransformUserTest, AbsentColumnsAreMissing) {
  // Training has an empty job, so "" is a kept value and an absent job selects it.
  const RawShard shard = MakeShard(0, {{"u1", 1, 1, ""}, {"u2", 3, 5, "x"}});
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard));
  const absl::StatusOr<std::vector<float>> features = TransformUser(transform, {});
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(*features, (std::vector<float>{0, 0, 1, 0}));
}

TEST(TransformUserTest, UnknownColumnIsInvalidArgumentListingKnown) {
  const FeatureTransform transform =
      FitOrDie(TestSchema(), ComputeFeatureStats(MakeShard(0, SmallRows())));
  const absl::StatusOr<std::vector<float>> features =
      TransformUser(transform, {{"age", "3"}, {"height", "180"}});
  ASSERT_EQ(features.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(features.status().message());
  EXPECT_NE(message.find("'height'"), std::string::npos) << message;
  EXPECT_NE(message.find("age, income, job"), std::string::npos) << message;
}

TEST(TransformUserTest, NonNumericCellIsInvalidArgument) {
  const FeatureTransform transform =
      FitOrDie(TestSchema(), ComputeFeatureStats(MakeShard(0, SmallRows())));
  for (const std::string text : {"nan", "NaN", "inf", "-inf", "abc", "1.5x"}) {
    const absl::StatusOr<std::vector<float>> features =
        TransformUser(transform, {{"income", text}});
    ASSERT_EQ(features.status().code(), absl::StatusCode::kInvalidArgument) << text;
    const std::string message(features.status().message());
    EXPECT_NE(message.find("'income'"), std::string::npos) << message;
    EXPECT_NE(message.find("'" + text + "'"), std::string::npos) << message;
  }
}

TEST(ToOriginalUnitsTest, InvertsStandardization) {
  const RawShard shard = MakeShard(0, SmallRows());
  FeatureOptions options;
  options.max_categories = 1;
  const FeatureTransform transform = FitOrDie(TestSchema(), ComputeFeatureStats(shard), options);
  MatrixXfR x;
  TransformShard(transform, shard, &x);
  ASSERT_EQ(x.cols(), 4);  // age, income, job=a, job=(other)

  for (int row = 0; row < 4; ++row) {
    const OriginalUnits units = ToOriginalUnits(transform, x.row(row).data());
    ASSERT_EQ(units.numeric_means.size(), 2u);
    EXPECT_NEAR(units.numeric_means[0], shard.numeric(row, 0), 1e-5) << "row " << row;
    const double income = std::isnan(shard.numeric(row, 1)) ? 30.0 : shard.numeric(row, 1);
    EXPECT_NEAR(units.numeric_means[1], income, 1e-4) << "row " << row;
  }

  // The mean of all rows maps back to the column means and the category shares.
  const Eigen::RowVectorXf centroid = x.colwise().mean();
  const OriginalUnits units = ToOriginalUnits(transform, centroid.data());
  EXPECT_NEAR(units.numeric_means[0], 2.5, 1e-5);
  EXPECT_NEAR(units.numeric_means[1], 30.0, 1e-4);
  ASSERT_EQ(units.category_shares.size(), 1u);
  ASSERT_EQ(units.category_shares[0].size(), 2u);
  EXPECT_NEAR(units.category_shares[0][0], 0.5, 1e-6);  // a
  EXPECT_NEAR(units.category_shares[0][1], 0.5, 1e-6);  // b and c
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

TEST(FitFeatureTransformOverflowTest, HugeValuesAreFailedPrecondition) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"spend", ColumnType::kNumeric}};
  // Loading keeps cells within the float32 range, but statistics can also arrive merged
  // from many shards. A sum of squares that overflowed must not become a transform.
  FeatureStats stats;
  stats.rows = 2;
  stats.numeric.resize(1);
  stats.numeric[0].count = 2;
  stats.numeric[0].sum = 0;
  stats.numeric[0].sum_sq = std::numeric_limits<double>::infinity();
  stats.numeric[0].min = -4e307;
  stats.numeric[0].max = 4e307;
  absl::StatusOr<FeatureTransform> transform =
      FitFeatureTransform(schema, stats, FeatureOptions{});
  ASSERT_FALSE(transform.ok());
  EXPECT_EQ(transform.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(transform.status().message().find("'spend'"), std::string::npos)
      << transform.status();
}

TEST(FitFeatureTransformOverflowTest, CellBeyondFloatRangeIsRejectedAtLoad) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"spend", ColumnType::kNumeric}};
  RawShard shard = MakeEmptyShard(schema, 0);
  const absl::Status status = AppendUserRow(schema, {"a", "4e307"}, &shard);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("column 'spend': value '4e307' is outside the float32 range"),
            std::string::npos)
      << status;
  EXPECT_EQ(shard.num_rows(), 0);
}

}  // namespace
}  // namespace cohort
