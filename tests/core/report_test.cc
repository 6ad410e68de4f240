#include "core/report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace cohort {
namespace {

// ----- ProjectPca2 -----

// m points along `direction` (spread 10) plus isotropic noise (spread 0.1).
MatrixXfR PointsAlong(const std::vector<double>& direction, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> along(0, 10);
  std::normal_distribution<double> noise(0, 0.1);
  const int d = static_cast<int>(direction.size());
  MatrixXfR x(m, d);
  for (int r = 0; r < m; ++r) {
    const double t = along(rng);
    for (int c = 0; c < d; ++c) x(r, c) = static_cast<float>(5 + t * direction[c] + noise(rng));
  }
  return x;
}

TEST(ProjectPca2Test, FindsDominantDirection) {
  const double norm = std::sqrt(1.0 + 4.0);
  const std::vector<double> direction = {-1 / norm, -2 / norm, 0};
  const MatrixXfR x = PointsAlong(direction, 500, 1);
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  ASSERT_EQ(pca->components.rows(), 2);
  ASSERT_EQ(pca->components.cols(), 3);
  // The sign rule makes the largest loading (the second) positive.
  EXPECT_NEAR(pca->components(0, 0), 1 / norm, 1e-3);
  EXPECT_NEAR(pca->components(0, 1), 2 / norm, 1e-3);
  EXPECT_NEAR(pca->components(0, 2), 0, 1e-3);
  EXPECT_GT(pca->explained_variance_ratio[0], 0.99);
}

TEST(ProjectPca2Test, ComponentsAreOrthonormal) {
  const MatrixXfR x = PointsAlong({0.6, 0.8, 0, 0}, 300, 2);
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  EXPECT_NEAR(pca->components.row(0).norm(), 1, 1e-9);
  EXPECT_NEAR(pca->components.row(1).norm(), 1, 1e-9);
  EXPECT_NEAR(pca->components.row(0).dot(pca->components.row(1)), 0, 1e-9);
}

TEST(ProjectPca2Test, LargestLoadingIsPositive) {
  const MatrixXfR x = PointsAlong({0.3, -0.9, 0.3}, 200, 3);
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  for (int c = 0; c < 2; ++c) {
    Eigen::Index largest = 0;
    pca->components.row(c).cwiseAbs().maxCoeff(&largest);
    EXPECT_GT(pca->components(c, largest), 0) << "component " << c;
  }
}

TEST(ProjectPca2Test, ProjectsCenteredRows) {
  MatrixXfR x(4, 2);
  x << 1, 0, 3, 0, 5, 1, 7, 1;
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  ASSERT_EQ(pca->x.size(), 4u);
  ASSERT_EQ(pca->y.size(), 4u);
  const double mean_x = 4, mean_y = 0.5;
  for (int r = 0; r < 4; ++r) {
    const double expected_x = (x(r, 0) - mean_x) * pca->components(0, 0) +
                              (x(r, 1) - mean_y) * pca->components(0, 1);
    const double expected_y = (x(r, 0) - mean_x) * pca->components(1, 0) +
                              (x(r, 1) - mean_y) * pca->components(1, 1);
    EXPECT_NEAR(pca->x[r], expected_x, 1e-5) << "row " << r;
    EXPECT_NEAR(pca->y[r], expected_y, 1e-5) << "row " << r;
  }
}

TEST(ProjectPca2Test, ExplainedRatiosSumAtMostOne) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0, 1);
  for (const int d : {1, 2, 3, 8}) {
    MatrixXfR x(50, d);
    for (int r = 0; r < 50; ++r) {
      for (int c = 0; c < d; ++c) x(r, c) = normal(rng) * static_cast<float>(c + 1);
    }
    absl::StatusOr<Projection2D> pca = ProjectPca2(x);
    ASSERT_TRUE(pca.ok()) << pca.status() << " d=" << d;
    ASSERT_EQ(pca->explained_variance_ratio.size(), 2u);
    const double first = pca->explained_variance_ratio[0];
    const double second = pca->explained_variance_ratio[1];
    EXPECT_GE(first, second) << "d=" << d;
    EXPECT_GE(second, 0) << "d=" << d;
    EXPECT_LE(first + second, 1.0) << "d=" << d;
    if (d <= 2) {
      EXPECT_NEAR(first + second, 1.0, 1e-9) << "d=" << d;
    }
  }
}

TEST(ProjectPca2Test, SingleColumnHasZeroSecondComponent) {
  MatrixXfR x(3, 1);
  x << 1, 2, 6;
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  EXPECT_DOUBLE_EQ(pca->components(0, 0), 1);
  EXPECT_DOUBLE_EQ(pca->components(1, 0), 0);
  EXPECT_DOUBLE_EQ(pca->explained_variance_ratio[0], 1);
  EXPECT_DOUBLE_EQ(pca->explained_variance_ratio[1], 0);
  EXPECT_FLOAT_EQ(pca->x[2], 3);
  EXPECT_FLOAT_EQ(pca->y[2], 0);
}

TEST(ProjectPca2Test, ConstantSampleHasZeroRatios) {
  const MatrixXfR x = MatrixXfR::Constant(5, 3, 2.5f);
  absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  ASSERT_TRUE(pca.ok()) << pca.status();
  EXPECT_EQ(pca->explained_variance_ratio[0], 0);
  EXPECT_EQ(pca->explained_variance_ratio[1], 0);
  EXPECT_FLOAT_EQ(pca->x[0], 0);
}

TEST(ProjectPca2Test, RejectsFewerThanTwoRows) {
  const absl::StatusOr<Projection2D> pca = ProjectPca2(MatrixXfR::Zero(1, 3));
  EXPECT_EQ(pca.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ProjectPca2Test, RejectsNoColumns) {
  const absl::StatusOr<Projection2D> pca = ProjectPca2(MatrixXfR::Zero(4, 0));
  EXPECT_EQ(pca.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ProjectPca2Test, RejectsNonFiniteValue) {
  MatrixXfR x = MatrixXfR::Zero(4, 2);
  x(2, 1) = NAN;
  const absl::StatusOr<Projection2D> pca = ProjectPca2(x);
  EXPECT_EQ(pca.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(pca.status().message().find("row 2, column 1"), std::string::npos)
      << pca.status();
}

// ----- SuggestK -----

MetricValue Defined(double value) { return MetricValue{value, ""}; }

MetricValue Undefined(const std::string& reason) { return MetricValue{std::nullopt, reason}; }

SweepPoint Point(int k, MetricValue silhouette) {
  SweepPoint point;
  point.k = k;
  point.metrics.k = k;
  point.metrics.silhouette = std::move(silhouette);
  return point;
}

TEST(SuggestKTest, HighestSilhouetteWins) {
  const KSuggestion suggestion = SuggestK(
      {Point(2, Defined(0.30)), Point(3, Defined(0.35)), Point(4, Defined(0.412)),
       Point(5, Defined(0.38))});
  EXPECT_EQ(suggestion.k, 4);
  EXPECT_EQ(suggestion.reason,
            "k = 4 has the highest silhouette (0.412); no smaller k is within 1 % of it.");
}

TEST(SuggestKTest, SmallerKWithinOnePercentWins) {
  // 0.4951 is within 1 % of 0.5 (threshold 0.495); 0.49 at k = 2 is not.
  const KSuggestion suggestion = SuggestK(
      {Point(2, Defined(0.49)), Point(3, Defined(0.4951)), Point(6, Defined(0.5))});
  EXPECT_EQ(suggestion.k, 3);
  EXPECT_EQ(suggestion.reason,
            "k = 3 has a silhouette of 0.495, within 1 % of the highest (0.500 at k = 6), and "
            "is the smallest such k.");
}

TEST(SuggestKTest, JustOutsideOnePercentLoses) {
  const KSuggestion suggestion = SuggestK({Point(3, Defined(0.4949)), Point(6, Defined(0.5))});
  EXPECT_EQ(suggestion.k, 6);
}

TEST(SuggestKTest, ExactTiePicksSmallerK) {
  const KSuggestion suggestion =
      SuggestK({Point(7, Defined(0.4)), Point(5, Defined(0.4)), Point(6, Defined(0.2))});
  EXPECT_EQ(suggestion.k, 5);
  EXPECT_EQ(suggestion.reason,
            "k = 5 has the highest silhouette (0.400); no smaller k is within 1 % of it.");
}

TEST(SuggestKTest, UnsortedSweepStillPicksSmallestWithinTolerance) {
  const KSuggestion suggestion =
      SuggestK({Point(8, Defined(0.3)), Point(4, Defined(0.2995)), Point(2, Defined(0.1))});
  EXPECT_EQ(suggestion.k, 4);
}

TEST(SuggestKTest, NegativeSilhouettesUseRelativeTolerance) {
  // Best −0.1, threshold −0.101: −0.1005 qualifies, −0.102 does not.
  const KSuggestion suggestion = SuggestK(
      {Point(2, Defined(-0.102)), Point(3, Defined(-0.1005)), Point(4, Defined(-0.1))});
  EXPECT_EQ(suggestion.k, 3);
}

TEST(SuggestKTest, UndefinedSilhouettesAreSkipped) {
  const KSuggestion suggestion =
      SuggestK({Point(1, Undefined("fewer than 2 clusters")), Point(2, Defined(0.25)),
                Point(3, Defined(0.31))});
  EXPECT_EQ(suggestion.k, 3);
  EXPECT_EQ(suggestion.reason,
            "k = 3 has the highest silhouette (0.310); no smaller k is within 1 % of it. Not "
            "considered because the silhouette is undefined: k = 1.");
}

TEST(SuggestKTest, AllUndefinedPicksSmallestK) {
  const KSuggestion suggestion =
      SuggestK({Point(3, Undefined("as many clusters as rows")),
                Point(2, Undefined("as many clusters as rows"))});
  EXPECT_EQ(suggestion.k, 2);
  EXPECT_EQ(suggestion.reason,
            "No k in the sweep has a defined silhouette (at k = 2: as many clusters as rows), "
            "so the smallest k, 2, is suggested.");
}

TEST(SuggestKTest, EmptySweepSuggestsNothing) {
  const KSuggestion suggestion = SuggestK({});
  EXPECT_EQ(suggestion.k, 0);
  EXPECT_FALSE(suggestion.reason.empty());
}

// ----- RenderReportHtml -----

constexpr const char* kHostileColumn = "<b>&\"x\"";

SegmentSummary MakeSegment(int index, int64_t size, double share, double z) {
  SegmentSummary segment;
  segment.index = index;
  segment.size = size;
  segment.share = share;
  segment.numeric = {
      NumericSegmentStat{"income", 40000 + 10000 * z, 40000, z, 1000, 90000, 0},
      NumericSegmentStat{kHostileColumn, 3 - z, 3, -z, 0, 9, 2}};
  segment.categorical = {CategoricalSegmentStat{
      "channel", {CategoryShareStat{"app", 0.7, 0.4}, CategoryShareStat{"web", 0.3, 0.6}}}};
  segment.distinguishing = {"income +1.0σ", "channel=app 70% vs 40%"};
  segment.description = "Users who <script>alert(1)</script> spend more";
  return segment;
}

ReportData MakeReport() {
  ReportData data;
  data.title = "Shop & friends";
  data.subtitle = "synthetic shop, 300 users";
  data.segments = {MakeSegment(0, 100, 1.0 / 3, 1.0), MakeSegment(1, 200, 2.0 / 3, -0.5)};
  data.metrics.n = 300;
  data.metrics.k = 2;
  data.metrics.inertia = 1234.5;
  data.metrics.silhouette = Defined(0.41);
  data.metrics.calinski_harabasz = Defined(210.0);
  data.metrics.davies_bouldin = Undefined("a cluster has zero spread");
  data.projection.explained_variance_ratio = {0.6, 0.3};
  data.projection.components = MatrixXdR::Identity(2, 2);
  data.projection.x = {0, 1, 2, 3, 4};
  data.projection.y = {1, 0, 1, 0, 1};
  data.projection_segments = {0, 0, 1, 1, 1};
  for (int k = 2; k <= 5; ++k) {
    SweepPoint point = Point(k, Defined(0.3 + 0.01 * k));
    point.metrics.inertia = 1000.0 / k;
    point.metrics.calinski_harabasz = Defined(100.0 + k);
    point.metrics.davies_bouldin = Defined(1.0 / k);
    data.sweep.push_back(point);
  }
  data.suggestion = SuggestK(data.sweep);
  data.tree = {SegmentTreeNode{0, -1, 0, 300, 900, -1, "all users"},
               SegmentTreeNode{1, 0, 1, 100, 200, 0, "high income"},
               SegmentTreeNode{2, 0, 1, 200, 300, 1, "low income"}};
  return data;
}

// The text of <section id="id"> … </section>, or "" when the page has no such section.
std::string Section(const std::string& html, const std::string& id) {
  const size_t start = html.find("<section id=\"" + id + "\"");
  if (start == std::string::npos) return "";
  const size_t end = html.find("</section>", start);
  return html.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST(RenderReportHtmlTest, EveryChartSectionHasSvg) {
  const std::string html = RenderReportHtml(MakeReport());
  for (const std::string id : {"sizes", "projection", "heatmap", "sweep", "tree"}) {
    const std::string section = Section(html, id);
    ASSERT_FALSE(section.empty()) << "missing section " << id;
    EXPECT_NE(section.find("<svg"), std::string::npos) << "no <svg> in " << id;
  }
  EXPECT_FALSE(Section(html, "metrics").empty());
  EXPECT_FALSE(Section(html, "summaries").empty());
}

TEST(RenderReportHtmlTest, IsSelfContained) {
  const std::string html = RenderReportHtml(MakeReport());
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
}

TEST(RenderReportHtmlTest, EscapesUserText) {
  const std::string html = RenderReportHtml(MakeReport());
  EXPECT_EQ(html.find(kHostileColumn), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;&amp;&quot;x&quot;"), std::string::npos);
  EXPECT_NE(Section(html, "heatmap").find("&lt;b&gt;&amp;&quot;x&quot;"), std::string::npos);
  EXPECT_NE(Section(html, "summaries").find("&lt;b&gt;&amp;&quot;x&quot;"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("<h1>Shop &amp; friends</h1>"), std::string::npos);
}

TEST(RenderReportHtmlTest, ChartsHaveOneMarkPerItem) {
  const std::string html = RenderReportHtml(MakeReport());
  // Five points plus one legend entry per segment.
  EXPECT_EQ(Count(Section(html, "projection"), "<circle"), 5u + 2u);
  EXPECT_EQ(Count(Section(html, "sizes"), "<rect"), 2u);
  // Two segments × two numeric columns, plus the colour scale and two row swatches.
  EXPECT_EQ(Count(Section(html, "heatmap"), "<rect"), 4u + 1u + 2u);
}

TEST(RenderReportHtmlTest, ShowsUndefinedMetricWithReason) {
  const std::string metrics = Section(RenderReportHtml(MakeReport()), "metrics");
  EXPECT_NE(metrics.find("undefined: a cluster has zero spread"), std::string::npos);
  EXPECT_NE(metrics.find("0.410"), std::string::npos);
}

TEST(RenderReportHtmlTest, MarksSuggestedK) {
  const ReportData data = MakeReport();
  ASSERT_EQ(data.suggestion.k, 5);
  const std::string sweep = Section(RenderReportHtml(data), "sweep");
  EXPECT_NE(sweep.find("suggested k = 5"), std::string::npos);
  EXPECT_NE(sweep.find("k = 5 has the highest silhouette (0.350)"), std::string::npos);
}

TEST(RenderReportHtmlTest, OmitsSectionsWithoutData) {
  ReportData data = MakeReport();
  data.sweep.clear();
  data.tree.clear();
  data.projection = Projection2D{};
  data.projection_segments.clear();
  for (SegmentSummary& segment : data.segments) segment.numeric.clear();
  const std::string html = RenderReportHtml(data);
  for (const std::string id : {"sweep", "tree", "projection", "heatmap"}) {
    EXPECT_EQ(html.find("id=\"" + id + "\""), std::string::npos) << id;
  }
  EXPECT_FALSE(Section(html, "sizes").empty());
  EXPECT_FALSE(Section(html, "metrics").empty());
  EXPECT_FALSE(Section(html, "summaries").empty());
}

TEST(RenderReportHtmlTest, EmptyReportStillRenders) {
  const std::string html = RenderReportHtml(ReportData{});
  EXPECT_NE(html.find("<title>Segmentation report</title>"), std::string::npos);
  EXPECT_FALSE(Section(html, "sizes").empty());
  EXPECT_NE(Section(html, "metrics").find("undefined: no reason recorded"), std::string::npos);
}

TEST(RenderReportHtmlTest, TreeCutsLongDescriptionsKeepingTooltip) {
  ReportData data = MakeReport();
  const std::string long_description = "σ" + std::string(400, 'x');
  data.tree[1].description = long_description;
  const std::string tree = Section(RenderReportHtml(data), "tree");
  EXPECT_NE(tree.find("<title>Segment 0 · 100 users · inertia 200 · " + long_description +
                      "</title>"),
            std::string::npos);
  EXPECT_NE(tree.find("x…</tspan>"), std::string::npos);
  EXPECT_EQ(Count(tree, "<circle"), 3u);
}

// Names longer than 32 characters keep their first 15 and last 16 characters.
TEST(RenderReportHtmlTest, HeatmapCutsLongColumnNamesInTheMiddle) {
  ReportData data = MakeReport();
  const std::string long_name = "average_monthly_spend_in_category_" + std::string(20, 'z') + "_7";
  data.segments[0].numeric[0].column = long_name;
  data.segments[1].numeric[0].column = long_name;
  const std::string heatmap = Section(RenderReportHtml(data), "heatmap");
  EXPECT_NE(heatmap.find("<title>" + long_name + "</title>average_monthly…zzzzzzzzzzzzzz_7"),
            std::string::npos)
      << heatmap;
}

TEST(RenderReportHtmlTest, PaletteCyclesBeyondEightSegments) {
  ReportData data;
  for (int s = 0; s < 10; ++s) data.segments.push_back(MakeSegment(s, 10, 0.1, 0));
  const std::string sizes = Section(RenderReportHtml(data), "sizes");
  // Segment 8 reuses segment 0's colour, drawn hollow.
  EXPECT_NE(sizes.find("fill=\"#ffffff\" stroke=\"#E69F00\""), std::string::npos);
  EXPECT_EQ(Count(sizes, "<rect"), 10u);
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

TEST(ProjectPca2WideTest, PowerIterationFindsDominantDirection) {
  // 300 columns take the power-iteration path. Rows are t·u + s·w + small noise with
  // unit directions u and w, so the components must be ±u and ±w.
  constexpr int kRows = 400;
  constexpr int kColumns = 300;
  Eigen::VectorXd u = Eigen::VectorXd::Zero(kColumns);
  Eigen::VectorXd w = Eigen::VectorXd::Zero(kColumns);
  for (int j = 0; j < kColumns; ++j) (j % 2 == 0 ? u : w)(j) = 1.0;
  u.normalize();
  w.normalize();
  MatrixXfR sample(kRows, kColumns);
  uint64_t state = 12345;
  auto noise = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) * 0x1.0p-53 - 0.5;
  };
  for (int r = 0; r < kRows; ++r) {
    const double t = 10.0 * noise();
    const double s = 3.0 * noise();
    for (int j = 0; j < kColumns; ++j) {
      sample(r, j) = static_cast<float>(t * u(j) + s * w(j) + 0.01 * noise());
    }
  }
  absl::StatusOr<Projection2D> projection = ProjectPca2(sample);
  ASSERT_TRUE(projection.ok()) << projection.status();
  EXPECT_GT(std::fabs(projection->components.row(0).dot(u.transpose())), 0.999);
  EXPECT_GT(std::fabs(projection->components.row(1).dot(w.transpose())), 0.999);
  EXPECT_GT(projection->explained_variance_ratio[0], projection->explained_variance_ratio[1]);
  EXPECT_LE(projection->explained_variance_ratio[0] + projection->explained_variance_ratio[1],
            1.0);
  EXPECT_EQ(projection->x.size(), static_cast<size_t>(kRows));
}

}  // namespace
}  // namespace cohort
