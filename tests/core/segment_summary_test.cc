#include "core/segment_summary.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/features.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {
namespace {

// Two segments of a table with one numeric column (spend) and one categorical column
// (channel): segment 0 spends little on the web, segment 1 spends a lot in the app.
class SegmentSummaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    schema_.columns = {{"user", ColumnType::kId},
                       {"spend", ColumnType::kNumeric},
                       {"channel", ColumnType::kCategorical}};
    RawShard shard = MakeEmptyShard(schema_, 0);
    const std::vector<std::vector<std::string>> rows = {
        {"a", "10", "web"}, {"b", "20", "web"}, {"c", "", "app"},
        {"d", "100", "app"}, {"e", "200", "app"}, {"f", "300", "web"}};
    for (const auto& row : rows) ASSERT_TRUE(AppendUserRow(schema_, row, &shard).ok());
    const std::vector<int32_t> labels = {0, 0, 0, 1, 1, 1};
    segment_stats_ = ComputeGroupStats(shard, labels.data(), 2);
    absl::StatusOr<FeatureTransform> transform =
        FitFeatureTransform(schema_, ComputeFeatureStats(shard), FeatureOptions{});
    ASSERT_TRUE(transform.ok()) << transform.status();
    transform_ = *transform;
  }

  Schema schema_;
  FeatureTransform transform_;
  std::vector<FeatureStats> segment_stats_;
};

TEST_F(SegmentSummaryTest, NumericMeansSkipMissingCells) {
  const std::vector<SegmentSummary> summaries = SummarizeSegments(transform_, segment_stats_);
  ASSERT_EQ(summaries.size(), 2u);
  EXPECT_EQ(summaries[0].size, 3);
  EXPECT_DOUBLE_EQ(summaries[0].share, 0.5);
  ASSERT_EQ(summaries[0].numeric.size(), 1u);
  EXPECT_DOUBLE_EQ(summaries[0].numeric[0].mean, 15.0);
  EXPECT_EQ(summaries[0].numeric[0].missing, 1);
  EXPECT_DOUBLE_EQ(summaries[0].numeric[0].min, 10.0);
  EXPECT_DOUBLE_EQ(summaries[0].numeric[0].max, 20.0);
  EXPECT_DOUBLE_EQ(summaries[1].numeric[0].mean, 200.0);
  EXPECT_DOUBLE_EQ(summaries[1].numeric[0].overall_mean, 126.0);
}

TEST_F(SegmentSummaryTest, ZScoreUsesOverallPopulationStd) {
  const std::vector<SegmentSummary> summaries = SummarizeSegments(transform_, segment_stats_);
  // Overall non-missing values: 10 20 100 200 300, mean 126.
  const double variance = (116.0 * 116 + 106.0 * 106 + 26.0 * 26 + 74.0 * 74 + 174.0 * 174) / 5;
  EXPECT_NEAR(summaries[1].numeric[0].z, (200.0 - 126.0) / std::sqrt(variance), 1e-12);
  EXPECT_LT(summaries[0].numeric[0].z, 0);
}

TEST_F(SegmentSummaryTest, CategorySharesAreWithinSegment) {
  const std::vector<SegmentSummary> summaries = SummarizeSegments(transform_, segment_stats_);
  ASSERT_EQ(summaries[0].categorical.size(), 1u);
  const CategoricalSegmentStat& channel = summaries[0].categorical[0];
  ASSERT_EQ(channel.top.size(), 2u);
  EXPECT_EQ(channel.top[0].value, "web");
  EXPECT_DOUBLE_EQ(channel.top[0].share, 2.0 / 3);
  EXPECT_DOUBLE_EQ(channel.top[0].overall_share, 0.5);
}

TEST_F(SegmentSummaryTest, DescriptionNamesStrongestFeatures) {
  const std::vector<SegmentSummary> summaries = SummarizeSegments(transform_, segment_stats_);
  EXPECT_EQ(summaries[1].description.rfind("3 users (50.0%): high spend (200 vs 126)", 0), 0u)
      << summaries[1].description;
  ASSERT_FALSE(summaries[1].distinguishing.empty());
  EXPECT_EQ(summaries[1].distinguishing[0], "spend +0.7σ") << summaries[1].distinguishing[0];
}

TEST(FormatReadableTest, GroupsThousandsAndTrimsDecimals) {
  EXPECT_EQ(FormatReadable(1234567.4), "1,234,567");
  EXPECT_EQ(FormatReadable(-4321.0), "-4,321");
  EXPECT_EQ(FormatReadable(445.0), "445");
  EXPECT_EQ(FormatReadable(419.04), "419.0");
  EXPECT_EQ(FormatReadable(4.271), "4.27");
  EXPECT_EQ(FormatReadable(0.04712), "0.0471");
}

}  // namespace
}  // namespace cohort
