// The segmentation report: one self-contained HTML page (inline SVG and CSS, no script
// or network access needed to open it) built from data the API also serves.
#ifndef COHORT_CORE_REPORT_H_
#define COHORT_CORE_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cluster_metrics.h"
#include "core/matrix.h"
#include "core/segment_summary.h"

namespace cohort {

// The two leading principal components of a sample (rows m×d), and the sample projected.
struct Projection2D {
  std::vector<double> explained_variance_ratio;  // 2 entries
  MatrixXdR components;                          // 2×d, unit rows
  std::vector<float> x;                          // m projected coordinates
  std::vector<float> y;
};

// PCA by the eigen-decomposition of the sample covariance (centered, in double). Signs
// are fixed so that the largest-magnitude loading of each component is positive. With
// d == 1 the second component is a zero row, so every y is 0 and its ratio is 0.
// Errors: InvalidArgument when the sample has fewer than 2 rows, no columns, or a
// non-finite value; Internal when the eigen-decomposition does not converge.
[[nodiscard]] absl::StatusOr<Projection2D> ProjectPca2(const MatrixXfR& sample);

// One k of a k sweep.
struct SweepPoint {
  int k = 0;
  ClusterMetrics metrics;
};

// Picks k from a sweep: the highest exact (squared Euclidean) silhouette; among the k
// within 1 % of that value, the smallest k. Returns the k and a sentence that says why.
// When no silhouette is defined, the smallest k, saying so.
struct KSuggestion {
  int k = 0;
  std::string reason;
};
KSuggestion SuggestK(const std::vector<SweepPoint>& sweep);

// A node of a bisecting K-means tree. The root has parent -1; leaves are segments.
struct SegmentTreeNode {
  int id = 0;
  int parent = -1;
  int depth = 0;
  int64_t size = 0;
  double inertia = 0;
  int segment = -1;  // leaf: index of the final segment; inner node: -1
  std::string description;
};

struct ReportData {
  std::string title;
  std::string subtitle;  // e.g. the data set, users and options
  std::vector<SegmentSummary> segments;
  ClusterMetrics metrics;
  // A sample of users projected on two principal components, with their segments.
  Projection2D projection;
  std::vector<int32_t> projection_segments;
  std::vector<SweepPoint> sweep;  // may be empty
  KSuggestion suggestion;         // meaningful when sweep is not empty
  std::vector<SegmentTreeNode> tree;  // may be empty
};

// Renders the page. Element ids the tests rely on: "sizes", "projection" (only with
// projected points), "heatmap" (only when segments have numeric features), "sweep" (only
// with a sweep), "metrics", "summaries", "tree" (only with a tree). Each of "sizes",
// "projection", "heatmap", "sweep" and "tree" is a <section> with an <svg> chart inside.
// All user-supplied text (titles, column names, categories, descriptions) is
// HTML-escaped.
std::string RenderReportHtml(const ReportData& data);

}  // namespace cohort

#endif  // COHORT_CORE_REPORT_H_
