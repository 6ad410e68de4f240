// Renders a report of the synthetic shop in headless Chromium: a screenshot (kept with
// the page as ${COHORT_BINARY_DIR}/artifacts/report.png and report.html) and the DOM
// after parsing, whose SVG marks are counted.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/features.h"
#include "core/raw_table.h"
#include "core/report.h"
#include "core/schema.h"
#include "core/segment_summary.h"
#include "core/synthetic.h"
#include "tests/report/chromium.h"


namespace cohort {
namespace {

namespace fs = std::filesystem;
using ::cohort::testing::Count;
using ::cohort::testing::FindChromium;
using ::cohort::testing::ReadFile;
using ::cohort::testing::RunChromium;
using ::cohort::testing::RunningInCi;
using ::cohort::testing::Section;

constexpr int kSegments = 5;
constexpr int64_t kCustomers = 4000;
// Users drawn on the projection, every kSampleStride-th loaded row.
constexpr int kSampleStride = 4;

// The synthetic shop's customers, labelled by their true segment, summarized and
// projected as the coordinator would do it.
class ReportRenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/cohort_report_render_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr) << "mkdtemp failed: errno " << errno;
    dir_ = pattern;
    BuildReport();
  }

  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void BuildReport() {
    SyntheticShopOptions shop;
    shop.num_customers = kCustomers;
    shop.num_segments = kSegments;
    shop.mean_transactions = 0;
    absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop(dir_ / "shop", shop);
    ASSERT_TRUE(files.ok()) << files.status();

    Schema schema;
    schema.columns = {{"customer_id", ColumnType::kId},
                      {"age", ColumnType::kNumeric},
                      {"income", ColumnType::kNumeric},
                      {"visits_per_month", ColumnType::kNumeric},
                      {"basket_size", ColumnType::kNumeric},
                      {"tenure_months", ColumnType::kNumeric},
                      {"channel", ColumnType::kCategorical},
                      {"region", ColumnType::kCategorical},
                      {"device", ColumnType::kCategorical},
                      {"segment_truth", ColumnType::kCategorical}};
    UserLoadOptions load;
    load.paths = {files->customers_csv};
    load.schema = schema;
    load.num_shards = 1;
    load.shards = {0};
    absl::StatusOr<LoadedShards> loaded = LoadUserShards(load);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->shards.size(), 1u);
    RawShard shard = std::move(loaded->shards[0]);

    // The true segment becomes the label and leaves the table, so that it is not
    // summarized as a feature.
    std::vector<std::string> truth = shard.categorical.back().ToStrings();
    shard.categorical.pop_back();
    schema.columns.back().type = ColumnType::kIgnore;
    std::map<std::string, int32_t> label_of;
    for (const std::string& value : truth) label_of.emplace(value, 0);
    ASSERT_EQ(label_of.size(), static_cast<size_t>(kSegments));
    int32_t next = 0;
    for (auto& [value, label] : label_of) label = next++;
    std::vector<int32_t> labels;
    for (const std::string& value : truth) labels.push_back(label_of[value]);

    absl::StatusOr<FeatureTransform> transform =
        FitFeatureTransform(schema, ComputeFeatureStats(shard), FeatureOptions{});
    ASSERT_TRUE(transform.ok()) << transform.status();
    data_.segments =
        SummarizeSegments(*transform, ComputeGroupStats(shard, labels.data(), kSegments));

    MatrixXfR x;
    TransformShard(*transform, shard, &x);
    const Eigen::Index sample_rows = (x.rows() + kSampleStride - 1) / kSampleStride;
    MatrixXfR sample(sample_rows, x.cols());
    for (Eigen::Index r = 0; r < sample_rows; ++r) {
      sample.row(r) = x.row(r * kSampleStride);
      data_.projection_segments.push_back(labels[static_cast<size_t>(r * kSampleStride)]);
    }
    absl::StatusOr<Projection2D> projection = ProjectPca2(sample);
    ASSERT_TRUE(projection.ok()) << projection.status();
    data_.projection = *std::move(projection);

    data_.title = "Customer segments — synthetic shop";
    data_.subtitle = absl::StrCat(FormatReadable(static_cast<double>(kCustomers)),
                                  " customers · k-means with k = ", kSegments, " · columns: ",
                                  absl::StrJoin(schema.NumericNames(), ", "), ", ",
                                  absl::StrJoin(schema.CategoricalNames(), ", "));
    FillMetricsSweepAndTree();
  }

  // Metrics are set by hand: the render test checks the page, not the metric code.
  void FillMetricsSweepAndTree() {
    data_.metrics.n = kCustomers;
    data_.metrics.k = kSegments;
    data_.metrics.inertia = 21450.7;
    data_.metrics.silhouette = MetricValue{0.412, ""};
    data_.metrics.calinski_harabasz = MetricValue{1893.2, ""};
    data_.metrics.davies_bouldin = MetricValue{0.87, ""};

    const std::vector<double> silhouettes = {0.28, 0.33, 0.39, 0.412, 0.37, 0.35, 0.31};
    for (int k = 2; k <= 8; ++k) {
      SweepPoint point;
      point.k = k;
      point.metrics.n = kCustomers;
      point.metrics.k = k;
      point.metrics.inertia = 60000.0 / (k * 0.8) + 1500.0 * k;
      point.metrics.silhouette = MetricValue{silhouettes[static_cast<size_t>(k - 2)], ""};
      point.metrics.calinski_harabasz = MetricValue{900.0 + 250.0 * std::min(k, 5) - 60.0 * k, ""};
      point.metrics.davies_bouldin = MetricValue{1.4 - 0.1 * std::min(k, 5) + 0.03 * k, ""};
      data_.sweep.push_back(point);
    }
    data_.sweep.front().metrics.davies_bouldin = MetricValue{std::nullopt, "not computed"};
    data_.suggestion = SuggestK(data_.sweep);

    // All users split into segments {0, 1, 2} and {3, 4}. Then {0, 1, 2} splits into 0 and
    // {1, 2}, and the remaining groups split into single segments.
    const auto size_of = [&](std::vector<int> segments) {
      int64_t total = 0;
      for (const int s : segments) total += data_.segments[static_cast<size_t>(s)].size;
      return total;
    };
    const auto leaf = [&](int id, int parent, int depth, int segment) {
      return SegmentTreeNode{
          id, parent, depth, size_of({segment}), 1000.0 + 100 * segment, segment,
          absl::StrJoin(data_.segments[static_cast<size_t>(segment)].distinguishing, ", ")};
    };
    data_.tree = {
        SegmentTreeNode{0, -1, 0, size_of({0, 1, 2, 3, 4}), 60000, -1, "all customers"},
        SegmentTreeNode{1, 0, 1, size_of({0, 1, 2}), 20000, -1, "lower income"},
        SegmentTreeNode{2, 0, 1, size_of({3, 4}), 15000, -1, "higher income"},
        leaf(3, 1, 2, 0),
        SegmentTreeNode{4, 1, 2, size_of({1, 2}), 9000, -1, "frequent visitors"},
        leaf(5, 4, 3, 1),
        leaf(6, 4, 3, 2),
        leaf(7, 2, 2, 3),
        leaf(8, 2, 2, 4),
    };
  }

  fs::path dir_;
  ReportData data_;
};

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  }
  return value;
}

TEST_F(ReportRenderTest, ChromiumRendersEveryChart) {
  const std::optional<std::string> chromium = FindChromium();
  if (!chromium.has_value()) {
    if (RunningInCi()) {
      FAIL() << "chromium is not installed (not on PATH, no /usr/bin/chromium); "
                "run deploy/install-deps.sh";
    }
    GTEST_SKIP() << "chromium is not installed; install the Debian package chromium to run";
  }

  const fs::path html_path = dir_ / "report.html";
  {
    std::ofstream html(html_path, std::ios::binary);
    html << RenderReportHtml(data_);
    ASSERT_TRUE(html.good()) << "failed to write " << html_path;
  }

  const fs::path png_path = dir_ / "report.png";
  std::string ignored;
  absl::StatusOr<int> shot =
      RunChromium(*chromium, dir_, html_path,
                  {"--window-size=1280,4000", "--screenshot=" + png_path.string()}, "screenshot",
                  &ignored);
  ASSERT_TRUE(shot.ok()) << shot.status();
  ASSERT_EQ(*shot, 0);
  ASSERT_TRUE(fs::exists(png_path)) << "chromium wrote no screenshot";

  const std::string png = ReadFile(png_path);
  // PNG signature, then the IHDR chunk with width and height at bytes 16-23.
  ASSERT_GE(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(BigEndian32(png, 16), 1280u);
  EXPECT_EQ(BigEndian32(png, 20), 4000u);
  // Measured with Chromium 156 on Debian 12: a blank page at this size is about 23 KB and
  // this report about 650 KB.
  EXPECT_GT(png.size(), 100u * 1024) << "screenshot looks empty";
  const fs::path artifacts = fs::path(COHORT_BINARY_DIR) / "artifacts";
  fs::create_directories(artifacts);
  fs::copy_file(png_path, artifacts / "report.png", fs::copy_options::overwrite_existing);
  fs::copy_file(html_path, artifacts / "report.html", fs::copy_options::overwrite_existing);

  std::string dom;
  absl::StatusOr<int> dumped = RunChromium(*chromium, dir_, html_path, {"--dump-dom"}, "dom", &dom);
  ASSERT_TRUE(dumped.ok()) << dumped.status();
  ASSERT_EQ(*dumped, 0);
  for (const std::string id : {"sizes", "projection", "heatmap", "sweep", "tree"}) {
    EXPECT_NE(Section(dom, id).find("<svg"), std::string::npos) << "no <svg> in #" << id;
  }
  EXPECT_FALSE(Section(dom, "metrics").empty());
  EXPECT_FALSE(Section(dom, "summaries").empty());

  const size_t points = data_.projection.x.size();
  EXPECT_EQ(Count(Section(dom, "projection"), "<circle"), points + kSegments);
  EXPECT_EQ(Count(Section(dom, "sizes"), "<rect"), static_cast<size_t>(kSegments));
  const size_t numeric_columns = data_.segments[0].numeric.size();
  ASSERT_EQ(numeric_columns, 5u);
  // One cell per segment and column, a swatch per segment, and the colour scale.
  EXPECT_EQ(Count(Section(dom, "heatmap"), "<rect"), kSegments * numeric_columns + kSegments + 1);
  // Four panels with one point per defined value; Davies–Bouldin is undefined at k = 2.
  EXPECT_EQ(Count(Section(dom, "sweep"), "<circle"), 4 * data_.sweep.size() - 1);
  EXPECT_EQ(Count(Section(dom, "tree"), "<circle"), data_.tree.size());
  EXPECT_EQ(Count(Section(dom, "summaries"), "<article"), static_cast<size_t>(kSegments));
}

}  // namespace
}  // namespace cohort
