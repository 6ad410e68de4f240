// The `cohort local report` command on the public data sets, end to end: a k sweep, the
// K-means model, a bisecting tree, report.html, and the page rendered in headless
// Chromium. The Online Retail screenshot is kept as ${COHORT_BINARY_DIR}/artifacts/
// online-retail-report.png for CI.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/report/chromium.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using ::cohort::testing::Count;
using ::cohort::testing::FindChromium;
using ::cohort::testing::ReadFile;
using ::cohort::testing::RunChromium;
using ::cohort::testing::RunWithTimeout;
using ::cohort::testing::Section;

// A whole sweep of nine k values plus two models on 45,211 bank clients takes well under
// this on 2 cores.
constexpr std::chrono::seconds kCommandTimeout{300};

class ReportE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/cohort_report_e2e_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr) << "mkdtemp failed: errno " << errno;
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Runs `cohort local report` with `args`; returns its stdout and checks exit code 0.
  std::string RunReport(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {COHORT_CLI_PATH, "local", "report", "--no-progress",
                                     "--workers", "3", "--out", (dir_ / "out").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const fs::path out = dir_ / "cohort.stdout";
    const fs::path err = dir_ / "cohort.stderr";
    absl::StatusOr<int> exit_code = RunWithTimeout(argv, out, err, kCommandTimeout);
    EXPECT_TRUE(exit_code.ok()) << exit_code.status();
    EXPECT_EQ(exit_code.value_or(-1), 0) << "stderr:\n" << ReadFile(err);
    return ReadFile(out);
  }

  // Renders report.html; returns the DOM and keeps the screenshot as `artifact` when set.
  std::string Render(const std::string& artifact) {
    const std::optional<std::string> chromium = FindChromium();
    if (!chromium.has_value()) {
      ADD_FAILURE() << "chromium is not installed; deploy/install-deps.sh installs it";
      return "";
    }
    const std::string html = (dir_ / "out" / "report.html").string();
    const fs::path png = dir_ / "report.png";
    std::string ignored;
    absl::StatusOr<int> shot = RunChromium(
        *chromium, dir_, html, {"--window-size=1280,6000", "--screenshot=" + png.string()},
        "screenshot", &ignored);
    EXPECT_TRUE(shot.ok()) << shot.status();
    EXPECT_EQ(shot.value_or(-1), 0);
    EXPECT_GT(fs::exists(png) ? fs::file_size(png) : 0, 100u * 1024) << "screenshot looks empty";
    if (!artifact.empty() && fs::exists(png)) {
      const fs::path artifacts = fs::path(COHORT_BINARY_DIR) / "artifacts";
      fs::create_directories(artifacts);
      fs::copy_file(png, artifacts / artifact, fs::copy_options::overwrite_existing);
    }
    std::string dom;
    absl::StatusOr<int> dumped = RunChromium(*chromium, dir_, html, {"--dump-dom"}, "dom", &dom);
    EXPECT_TRUE(dumped.ok()) << dumped.status();
    EXPECT_EQ(dumped.value_or(-1), 0);
    return dom;
  }

  fs::path dir_;
};

TEST_F(ReportE2eTest, OnlineRetailSweepTreeAndReport) {
  COHORT_REQUIRE_DATA_FILE(path, "online-retail/OnlineRetail.csv.gz");
  const std::string stdout_text =
      RunReport({"--transactions", path, "--sweep", "2-10", "-k", "5", "--tree"});
  EXPECT_NE(stdout_text.find("k sweep: k = "), std::string::npos) << stdout_text;
  EXPECT_NE(stdout_text.find("k = 5, 4,339 users"), std::string::npos) << stdout_text;
  for (int s = 0; s < 5; ++s) {
    EXPECT_NE(stdout_text.find(absl::StrCat("Segment ", s, ": ")), std::string::npos)
        << "segment " << s << " missing:\n" << stdout_text;
  }
  ASSERT_TRUE(fs::exists(dir_ / "out" / "report.html"));

  const std::string dom = Render("online-retail-report.png");
  for (const char* id : {"sizes", "projection", "heatmap", "sweep", "tree"}) {
    EXPECT_NE(Section(dom, id).find("<svg"), std::string::npos) << "no chart in #" << id;
  }
  EXPECT_EQ(Count(Section(dom, "sizes"), "<rect"), 5u);
  // Nine k values on four charts; each chart marks the suggested k with one more circle.
  EXPECT_GE(Count(Section(dom, "sweep"), "<circle"), 4u * 9u);
  EXPECT_FALSE(Section(dom, "metrics").empty());
  EXPECT_FALSE(Section(dom, "summaries").empty());
  EXPECT_EQ(dom.find("http://"), std::string::npos) << "the page must not load anything";
}

TEST_F(ReportE2eTest, BankMarketingSweepAndReport) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  const std::string stdout_text = RunReport(
      {"--data", path, "--delimiter", ";", "--id-column", "@line", "--sweep", "2-10"});
  EXPECT_NE(stdout_text.find("k sweep: k = "), std::string::npos) << stdout_text;
  EXPECT_NE(stdout_text.find("45,211 users"), std::string::npos) << stdout_text;

  const std::string dom = Render("bank-report.png");
  for (const char* id : {"sizes", "projection", "heatmap", "sweep"}) {
    EXPECT_NE(Section(dom, id).find("<svg"), std::string::npos) << "no chart in #" << id;
  }
  EXPECT_TRUE(Section(dom, "tree").empty()) << "no tree was asked for";
}

}  // namespace
}  // namespace cohort
