#include "core/report.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <numbers>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Eigenvalues>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

// ---------------------------------------------------------------------------------------
// Text and number formatting
// ---------------------------------------------------------------------------------------

// Escapes the five characters that are special in HTML text and attribute values.
std::string EscapeHtml(absl::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': escaped += "&amp;"; break;
      case '<': escaped += "&lt;"; break;
      case '>': escaped += "&gt;"; break;
      case '"': escaped += "&quot;"; break;
      case '\'': escaped += "&#39;"; break;
      default: escaped.push_back(c);
    }
  }
  return escaped;
}

size_t CodePoints(absl::string_view text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

// Cuts UTF-8 `text` to at most `max_chars` code points, ending with "…" when cut.
std::string TruncateUtf8(absl::string_view text, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool continuation = (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
    if (continuation) continue;
    if (chars == max_chars - 1) {
      // Cut only when at least two more code points follow, so the ellipsis saves space.
      size_t rest = 0;
      for (size_t j = i; j < text.size(); ++j) {
        if ((static_cast<unsigned char>(text[j]) & 0xC0) != 0x80) ++rest;
      }
      if (rest <= 1) return std::string(text);
      return absl::StrCat(text.substr(0, i), "…");
    }
    ++chars;
  }
  return std::string(text);
}

// Cuts UTF-8 `text` to at most `max_chars` code points by replacing its middle with "…",
// which keeps the distinguishing ends of names such as "spend_in_category_3".
std::string TruncateMiddleUtf8(absl::string_view text, size_t max_chars) {
  std::vector<size_t> starts;  // byte offset of each code point
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  if (starts.size() <= max_chars || max_chars < 3) return std::string(text);
  const size_t head = (max_chars - 1) / 2;
  const size_t tail = max_chars - 1 - head;
  return absl::StrCat(text.substr(0, starts[head]), "…",
                      text.substr(starts[starts.size() - tail]));
}

// Numbers and their units are joined by a no-break space (U+00A0) so that a line never
// breaks between them.
constexpr absl::string_view kNoBreakSpace = "\u00a0";

std::string Percent(double share) {
  return absl::StrFormat("%.1f%s%%", 100.0 * share, kNoBreakSpace);
}

std::string WholePercent(double share) {
  return absl::StrFormat("%.0f%s%%", 100.0 * share, kNoBreakSpace);
}

std::string Coordinate(double value) { return absl::StrFormat("%.1f", value); }

std::string Fixed3(double value) { return absl::StrFormat("%.3f", value); }

// A z-score with one decimal and its sign; values that round to zero print as "0.0".
std::string SignedZ(double z) {
  if (std::fabs(z) < 0.05) return "0.0";
  return absl::StrFormat("%+.1f", z);
}

std::string SegmentName(int index) { return absl::StrCat("Segment ", index); }

// ---------------------------------------------------------------------------------------
// Colours
// ---------------------------------------------------------------------------------------

// Okabe–Ito qualitative palette, which stays distinguishable under the common forms of
// colour blindness. Black comes last so that the first segments get the lighter hues.
constexpr std::array<const char*, 8> kSegmentColors = {
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"};
constexpr const char* kUnknownSegmentColor = "#9AA5B1";

std::string SegmentColor(int segment) {
  if (segment < 0) return kUnknownSegmentColor;
  return kSegmentColors[static_cast<size_t>(segment) % kSegmentColors.size()];
}

// SVG fill and stroke of a segment's marks. With more than 8 segments the colours repeat,
// so the second round of segments is drawn hollow and the third half-transparent.
std::string SegmentMarkStyle(int segment) {
  const std::string color = SegmentColor(segment);
  const int round = segment < 0 ? 0 : segment / static_cast<int>(kSegmentColors.size());
  switch (round % 3) {
    case 0: return absl::StrCat("fill=\"", color, "\" stroke=\"#1f2933\" stroke-opacity=\"0.25\"");
    case 1: return absl::StrCat("fill=\"#ffffff\" stroke=\"", color, "\" stroke-width=\"2\"");
    default: return absl::StrCat("fill=\"", color, "\" fill-opacity=\"0.45\" stroke=\"", color, "\"");
  }
}

struct Rgb {
  double r, g, b;
};

// Diverging scale for z-scores (ColorBrewer RdBu, 7 classes): blue below the average of
// all users, white at the average, red above it. t is in [-1, 1].
Rgb DivergingColor(double t) {
  static constexpr std::array<Rgb, 7> kStops = {{{33, 102, 172},
                                                 {103, 169, 207},
                                                 {209, 229, 240},
                                                 {247, 247, 247},
                                                 {253, 219, 199},
                                                 {239, 138, 98},
                                                 {178, 24, 43}}};
  const double position = (std::clamp(t, -1.0, 1.0) + 1) / 2 * (kStops.size() - 1);
  const size_t lower = std::min(static_cast<size_t>(position), kStops.size() - 2);
  const double f = position - static_cast<double>(lower);
  const Rgb& a = kStops[lower];
  const Rgb& b = kStops[lower + 1];
  return {a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f};
}

std::string CssColor(const Rgb& c) {
  return absl::StrFormat("#%02x%02x%02x", static_cast<int>(std::lround(c.r)),
                         static_cast<int>(std::lround(c.g)), static_cast<int>(std::lround(c.b)));
}

// ---------------------------------------------------------------------------------------
// Axes
// ---------------------------------------------------------------------------------------

// Maps the domain [d0, d1] linearly onto the range [r0, r1] (pixels).
struct LinearScale {
  double d0, d1, r0, r1;

  double operator()(double v) const {
    if (d1 == d0) return (r0 + r1) / 2;
    return r0 + (v - d0) / (d1 - d0) * (r1 - r0);
  }
};

// Round tick values (1, 2 or 5 times a power of ten) inside [lo, hi], about `target` of them.
std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (!(hi > lo)) return {lo};
  const double raw_step = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  const double normalized = raw_step / magnitude;
  double multiple = 10;
  if (normalized < 1.5) {
    multiple = 1;
  } else if (normalized < 3) {
    multiple = 2;
  } else if (normalized < 7) {
    multiple = 5;
  }
  const double step = multiple * magnitude;
  std::vector<double> ticks;
  // Multiples of step, computed from integers so that rounding errors do not accumulate.
  const double first = std::ceil(lo / step - 1e-9);
  for (double i = first; i * step <= hi + step * 1e-9; ++i) {
    const double tick = i * step;
    ticks.push_back(tick == 0 ? 0.0 : tick);  // no "-0"
  }
  return ticks;
}

// Labels for evenly spaced ticks, all with the decimals that the step needs.
std::vector<std::string> TickLabels(const std::vector<double>& ticks) {
  const double step = ticks.size() >= 2 ? ticks[1] - ticks[0] : 1;
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  std::vector<std::string> labels;
  for (const double tick : ticks) {
    if (std::fabs(tick) < step * 1e-9) {
      labels.push_back("0");
    } else if (decimals == 0) {
      labels.push_back(FormatReadable(std::round(tick)));
    } else {
      labels.push_back(absl::StrFormat("%.*f", decimals, tick));
    }
  }
  return labels;
}

// [min, max] of the finite values, widened by `pad` of the span on both sides.
std::pair<double, double> PaddedRange(const std::vector<double>& values, double pad) {
  double lo = INFINITY;
  double hi = -INFINITY;
  for (const double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (lo > hi) return {0, 1};
  if (lo == hi) {
    const double half = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    return {lo - half, hi + half};
  }
  const double margin = (hi - lo) * pad;
  return {lo - margin, hi + margin};
}

void AppendSvgOpen(int width, int height, absl::string_view label, std::string& out) {
  absl::StrAppendFormat(&out,
                        "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
                        "aria-label=\"%s\">\n",
                        width, height, width, height, EscapeHtml(label));
}

void AppendText(double x, double y, absl::string_view attributes, absl::string_view text,
                std::string& out) {
  absl::StrAppend(&out, "<text x=\"", Coordinate(x), "\" y=\"", Coordinate(y), "\" ", attributes,
                  ">", EscapeHtml(text), "</text>\n");
}

// A plot's frame in SVG pixels.
struct PlotArea {
  double left, top, right, bottom;
};

// Draws the frame of `area`, grid lines at the ticks and the tick labels.
void AppendAxes(const PlotArea& area, const LinearScale& x, const LinearScale& y,
                const std::vector<double>& x_ticks, const std::vector<double>& y_ticks,
                std::string& out) {
  absl::StrAppend(&out, "<g class=\"grid\">\n");
  const std::vector<std::string> y_labels = TickLabels(y_ticks);
  for (size_t i = 0; i < y_ticks.size(); ++i) {
    const double py = y(y_ticks[i]);
    absl::StrAppend(&out, "<line x1=\"", Coordinate(area.left), "\" x2=\"",
                    Coordinate(area.right), "\" y1=\"", Coordinate(py), "\" y2=\"",
                    Coordinate(py), "\"/>\n");
    AppendText(area.left - 6, py + 4, "class=\"tick\" text-anchor=\"end\"", y_labels[i], out);
  }
  const std::vector<std::string> x_labels = TickLabels(x_ticks);
  for (size_t i = 0; i < x_ticks.size(); ++i) {
    const double px = x(x_ticks[i]);
    absl::StrAppend(&out, "<line x1=\"", Coordinate(px), "\" x2=\"", Coordinate(px), "\" y1=\"",
                    Coordinate(area.top), "\" y2=\"", Coordinate(area.bottom), "\"/>\n");
    AppendText(px, area.bottom + 16, "class=\"tick\" text-anchor=\"middle\"", x_labels[i], out);
  }
  absl::StrAppend(&out, "</g>\n");
  absl::StrAppend(&out, "<rect class=\"frame\" x=\"", Coordinate(area.left), "\" y=\"",
                  Coordinate(area.top), "\" width=\"", Coordinate(area.right - area.left),
                  "\" height=\"", Coordinate(area.bottom - area.top), "\"/>\n");
}

// ---------------------------------------------------------------------------------------
// Page sections
// ---------------------------------------------------------------------------------------

constexpr absl::string_view kStyle = R"css(
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --paper: #ffffff; --bg: #f3f5f8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 24px 64px; }
header h1 { font-size: 30px; line-height: 1.2; margin: 0 0 6px; }
header .subtitle { color: var(--muted); margin: 0 0 14px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 0; padding: 0; list-style: none; }
.facts li { background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 14px; }
.facts b { font-size: 20px; display: block; line-height: 1.2; }
.facts span { color: var(--muted); font-size: 13px; }
section { background: var(--paper); border: 1px solid var(--line); border-radius: 10px;
  padding: 20px 24px; margin: 20px 0; }
h2 { font-size: 20px; margin: 0 0 4px; }
h3 { font-size: 17px; margin: 0; }
h4 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  margin: 14px 0 6px; }
.lead { color: var(--muted); margin: 0 0 14px; max-width: 80ch; }
svg { display: block; width: 100%; height: auto; font-family: inherit; overflow: visible; }
svg text { fill: var(--ink); font-size: 13px; }
svg .tick { fill: var(--muted); font-size: 12px; }
svg .axis-label { font-size: 13px; font-weight: 600; }
svg .panel-title { font-size: 14px; font-weight: 600; }
svg .note { fill: var(--muted); font-size: 12px; }
svg .grid line { stroke: #e4e9f0; stroke-width: 1; }
svg .frame { fill: none; stroke: #bcccdc; }
svg .marker { stroke: #52606d; stroke-dasharray: 5 4; stroke-width: 1.5; }
svg .curve { fill: none; stroke: #0072B2; stroke-width: 2.5; }
svg .tree-link { fill: none; stroke: #9aa5b1; stroke-width: 1.5; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.undefined { color: #9a3412; }
.reason { background: #f0f7ff; border-left: 4px solid #0072B2; padding: 8px 12px;
  margin: 0 0 14px; }
.segment { border: 1px solid var(--line); border-left: 8px solid var(--segment-color);
  border-radius: 8px; padding: 14px 18px; margin: 14px 0 0; }
.segment .size { color: var(--muted); margin-left: 8px; }
.segment .description { margin: 6px 0 8px; }
.segment-body { display: grid; grid-template-columns: 3fr 2fr; gap: 24px; }
.segment-body.single { grid-template-columns: 1fr; }
.chip { display: inline-block; background: #eef2f7; border-radius: 999px; padding: 2px 10px;
  margin: 2px 6px 2px 0; font-size: 13px; }
.higher { color: #b2182b; }
.lower { color: #2166ac; }
.category-column { font-weight: 600; margin: 8px 0 2px; font-size: 14px; }
.categories { margin: 0; padding: 0 0 0 12px; list-style: none; font-size: 14px; }
.categories li { margin: 0; }
.muted { color: var(--muted); }
)css";

void AppendHeader(const ReportData& data, std::string& out) {
  absl::StrAppend(&out, "<header>\n<h1>", EscapeHtml(data.title.empty() ? "Segmentation report"
                                                                        : data.title),
                  "</h1>\n");
  if (!data.subtitle.empty()) {
    absl::StrAppend(&out, "<p class=\"subtitle\">", EscapeHtml(data.subtitle), "</p>\n");
  }
  int64_t users = 0;
  const SegmentSummary* largest = nullptr;
  for (const SegmentSummary& segment : data.segments) {
    users += segment.size;
    if (largest == nullptr || segment.size > largest->size) largest = &segment;
  }
  absl::StrAppend(&out, "<ul class=\"facts\">\n");
  absl::StrAppend(&out, "<li><b>", FormatReadable(static_cast<double>(users)),
                  "</b><span>users</span></li>\n");
  absl::StrAppend(&out, "<li><b>", data.segments.size(), "</b><span>segments</span></li>\n");
  if (largest != nullptr) {
    absl::StrAppend(&out, "<li><b>", Percent(largest->share), "</b><span>largest: ",
                    SegmentName(largest->index), "</span></li>\n");
  }
  if (data.metrics.silhouette.value.has_value()) {
    absl::StrAppend(&out, "<li><b>", Fixed3(*data.metrics.silhouette.value),
                    "</b><span>silhouette (−1 to 1, higher is better)</span></li>\n");
  }
  if (!data.sweep.empty() && data.suggestion.k > 0) {
    absl::StrAppend(&out, "<li><b>", data.suggestion.k,
                    "</b><span>suggested number of segments</span></li>\n");
  }
  absl::StrAppend(&out, "</ul>\n</header>\n");
}

void AppendSizes(const std::vector<SegmentSummary>& segments, std::string& out) {
  absl::StrAppend(&out, "<section id=\"sizes\">\n<h2>Segment sizes</h2>\n",
                  "<p class=\"lead\">How many users fall into each segment, and their share of "
                  "all users.</p>\n");
  constexpr int kWidth = 1000, kRowHeight = 30, kLabelWidth = 110, kValueWidth = 190;
  const int height = std::max(1, static_cast<int>(segments.size())) * kRowHeight + 8;
  AppendSvgOpen(kWidth, height, "Bar chart of segment sizes", out);
  if (segments.empty()) {
    AppendText(0, 20, "class=\"note\"", "No segments.", out);
  }
  int64_t max_size = 1;
  for (const SegmentSummary& segment : segments) max_size = std::max(max_size, segment.size);
  const LinearScale bar{0, static_cast<double>(max_size), 0, kWidth - kLabelWidth - kValueWidth};
  for (size_t row = 0; row < segments.size(); ++row) {
    const SegmentSummary& segment = segments[row];
    const double top = 4 + static_cast<double>(row) * kRowHeight;
    const double width = std::max(1.0, bar(static_cast<double>(segment.size)));
    AppendText(0, top + 19, "", SegmentName(segment.index), out);
    absl::StrAppend(&out, "<rect x=\"", kLabelWidth, "\" y=\"", Coordinate(top + 3),
                    "\" width=\"", Coordinate(width), "\" height=\"", kRowHeight - 8,
                    "\" rx=\"3\" ", SegmentMarkStyle(segment.index), "><title>",
                    EscapeHtml(SegmentName(segment.index)), ": ",
                    FormatReadable(static_cast<double>(segment.size)), " users</title></rect>\n");
    AppendText(kLabelWidth + width + 8, top + 19, "",
               absl::StrCat(FormatReadable(static_cast<double>(segment.size)), " users · ",
                            Percent(segment.share)),
               out);
  }
  absl::StrAppend(&out, "</svg>\n</section>\n");
}

// Legend entries for the segments, in rows of at most `per_row` entries 24 pixels apart.
void AppendSegmentLegend(const std::vector<SegmentSummary>& segments, double left, double top,
                        int per_row, std::string& out) {
  constexpr int kItemWidth = 180, kRowHeight = 24;
  for (size_t i = 0; i < segments.size(); ++i) {
    const double x = left + static_cast<double>(i % per_row) * kItemWidth;
    const double y = top + static_cast<double>(i / per_row) * kRowHeight;
    absl::StrAppend(&out, "<circle cx=\"", Coordinate(x + 6), "\" cy=\"", Coordinate(y + 8),
                    "\" r=\"6\" ", SegmentMarkStyle(segments[i].index), "/>\n");
    AppendText(x + 18, y + 13, "",
               absl::StrCat(SegmentName(segments[i].index), " (", Percent(segments[i].share), ")"),
               out);
  }
}

void AppendProjection(const ReportData& data, std::string& out) {
  const Projection2D& projection = data.projection;
  const size_t points = std::min(projection.x.size(), projection.y.size());
  const std::vector<double>& ratios = projection.explained_variance_ratio;
  const double pc1 = ratios.size() > 0 ? ratios[0] : 0;
  const double pc2 = ratios.size() > 1 ? ratios[1] : 0;
  absl::StrAppend(&out, "<section id=\"projection\">\n<h2>Map of users</h2>\n",
                  "<p class=\"lead\">Each dot is one sampled user (",
                  FormatReadable(static_cast<double>(points)),
                  " shown), placed along the two directions in which users differ most "
                  "(principal components). Dots close together behave alike. Together the two "
                  "axes show ",
                  Percent(pc1 + pc2), " of the variation between users.</p>\n");

  constexpr int kWidth = 1000, kPerRow = 5, kPlotHeight = 480;
  constexpr double kLeft = 70, kRight = 985;
  const int legend_rows = (static_cast<int>(data.segments.size()) + kPerRow - 1) / kPerRow;
  const double plot_top = legend_rows * 24 + 16;
  const double plot_bottom = plot_top + kPlotHeight;
  AppendSvgOpen(kWidth, static_cast<int>(plot_bottom) + 50,
                "Scatter plot of sampled users on the first two principal components", out);
  AppendSegmentLegend(data.segments, kLeft, 0, kPerRow, out);

  std::vector<double> xs(projection.x.begin(), projection.x.begin() + static_cast<long>(points));
  std::vector<double> ys(projection.y.begin(), projection.y.begin() + static_cast<long>(points));
  const auto [x_lo, x_hi] = PaddedRange(xs, 0.04);
  const auto [y_lo, y_hi] = PaddedRange(ys, 0.06);
  const LinearScale x{x_lo, x_hi, kLeft, kRight};
  const LinearScale y{y_lo, y_hi, plot_bottom, plot_top};
  AppendAxes(PlotArea{kLeft, plot_top, kRight, plot_bottom}, x, y, NiceTicks(x_lo, x_hi, 10),
             NiceTicks(y_lo, y_hi, 6), out);

  absl::StrAppend(&out, "<g class=\"points\">\n");
  for (size_t i = 0; i < points; ++i) {
    if (!std::isfinite(xs[i]) || !std::isfinite(ys[i])) continue;
    const int segment =
        i < data.projection_segments.size() ? data.projection_segments[i] : -1;
    absl::StrAppend(&out, "<circle cx=\"", Coordinate(x(xs[i])), "\" cy=\"",
                    Coordinate(y(ys[i])), "\" r=\"3\" fill-opacity=\"0.75\" ",
                    SegmentMarkStyle(segment), "/>\n");
  }
  absl::StrAppend(&out, "</g>\n");

  AppendText((kLeft + kRight) / 2, plot_bottom + 40, "class=\"axis-label\" text-anchor=\"middle\"",
             absl::StrCat("Principal component 1 (", Percent(pc1), " of the variance)"), out);
  const double y_mid = (plot_top + plot_bottom) / 2;
  AppendText(18, y_mid,
             absl::StrCat("class=\"axis-label\" text-anchor=\"middle\" transform=\"rotate(-90 18 ",
                          Coordinate(y_mid), ")\""),
             absl::StrCat("Principal component 2 (", Percent(pc2), " of the variance)"), out);
  absl::StrAppend(&out, "</svg>\n</section>\n");
}

// Numeric column names in the order of the first segment that lists them.
std::vector<std::string> NumericColumns(const std::vector<SegmentSummary>& segments) {
  std::vector<std::string> columns;
  std::set<std::string> seen;
  for (const SegmentSummary& segment : segments) {
    for (const NumericSegmentStat& stat : segment.numeric) {
      if (seen.insert(stat.column).second) columns.push_back(stat.column);
    }
  }
  return columns;
}

const NumericSegmentStat* FindNumeric(const SegmentSummary& segment, const std::string& column) {
  for (const NumericSegmentStat& stat : segment.numeric) {
    if (stat.column == column) return &stat;
  }
  return nullptr;
}

// z-scores at or beyond this many standard deviations get the end colours of the scale.
constexpr double kHeatmapSaturationZ = 2.0;

void AppendHeatmapScale(double left, double top, std::string& out) {
  constexpr double kBarWidth = 480;
  absl::StrAppend(&out, "<defs><linearGradient id=\"heatmap-scale\">");
  for (int i = 0; i <= 8; ++i) {
    const double t = -1 + i / 4.0;
    absl::StrAppend(&out, "<stop offset=\"", i * 12.5, "%\" stop-color=\"",
                    CssColor(DivergingColor(t)), "\"/>");
  }
  absl::StrAppend(&out, "</linearGradient></defs>\n");
  absl::StrAppend(&out, "<rect x=\"", Coordinate(left), "\" y=\"", Coordinate(top),
                  "\" width=\"", kBarWidth, "\" height=\"12\" fill=\"url(#heatmap-scale)\" "
                  "stroke=\"#bcccdc\"/>\n");
  const std::string format = "class=\"note\" text-anchor=\"";
  AppendText(left, top + 28, absl::StrCat(format, "start\""),
             absl::StrFormat("−%.0fσ: lower than all users", kHeatmapSaturationZ), out);
  AppendText(left + kBarWidth / 2, top + 28, absl::StrCat(format, "middle\""), "average", out);
  AppendText(left + kBarWidth, top + 28, absl::StrCat(format, "end\""),
             absl::StrFormat("+%.0fσ: higher", kHeatmapSaturationZ), out);
}

void AppendHeatmap(const std::vector<SegmentSummary>& segments,
                   const std::vector<std::string>& columns, std::string& out) {
  absl::StrAppend(
      &out, "<section id=\"heatmap\">\n<h2>How segments differ</h2>\n",
      "<p class=\"lead\">Each cell compares a segment's average with the average of all users, "
      "in standard deviations (σ) of all users: red is higher, blue is lower, white is "
      "typical. The small number is the segment's average in the column's own units.</p>\n");

  constexpr int kWidth = 1000, kLabelWidth = 110, kCellHeight = 46;
  constexpr double kCharWidth = 7.4;  // a generous average width of a 13px character
  constexpr double kMaxCellWidth = 160;
  // Column names that do not fit their cell are drawn at this angle, cut in the middle
  // to kMaxRotatedChars characters.
  constexpr double kLabelAngleDegrees = 50;
  constexpr size_t kMaxRotatedChars = 32;
  const double angle = kLabelAngleDegrees * std::numbers::pi / 180;

  const double columns_count = static_cast<double>(columns.size());
  double cell_width = std::min(kMaxCellWidth, (kWidth - kLabelWidth) / columns_count);
  size_t longest = 0;
  for (const std::string& column : columns) longest = std::max(longest, CodePoints(column));
  const size_t fit_chars = static_cast<size_t>(cell_width / kCharWidth);
  const bool rotate = longest > fit_chars;
  const double label_length = static_cast<double>(std::min(longest, kMaxRotatedChars)) * kCharWidth;
  if (rotate) {
    // Room on the right for the last label, which leans past its column.
    const double overhang = std::max(0.0, label_length * std::cos(angle) - cell_width / 2);
    cell_width = std::min(cell_width, (kWidth - kLabelWidth - overhang) / columns_count);
  }
  const double grid_top = rotate ? label_length * std::sin(angle) + 16 : 26;
  const double grid_bottom = grid_top + static_cast<double>(segments.size()) * kCellHeight;
  AppendSvgOpen(kWidth, static_cast<int>(grid_bottom) + 48,
                "Heat map of segment averages compared with all users", out);

  for (size_t c = 0; c < columns.size(); ++c) {
    const double center = kLabelWidth + (static_cast<double>(c) + 0.5) * cell_width;
    const std::string label = TruncateMiddleUtf8(columns[c], rotate ? kMaxRotatedChars : fit_chars);
    if (rotate) {
      const double base = grid_top - 8;
      absl::StrAppend(&out, "<text x=\"", Coordinate(center), "\" y=\"", Coordinate(base),
                      "\" transform=\"rotate(-", kLabelAngleDegrees, " ", Coordinate(center), " ",
                      Coordinate(base), ")\"><title>", EscapeHtml(columns[c]), "</title>",
                      EscapeHtml(label), "</text>\n");
    } else {
      absl::StrAppend(&out, "<text x=\"", Coordinate(center), "\" y=\"",
                      Coordinate(grid_top - 8), "\" text-anchor=\"middle\"><title>",
                      EscapeHtml(columns[c]), "</title>", EscapeHtml(label), "</text>\n");
    }
  }

  for (size_t row = 0; row < segments.size(); ++row) {
    const SegmentSummary& segment = segments[row];
    const double top = grid_top + static_cast<double>(row) * kCellHeight;
    absl::StrAppend(&out, "<rect x=\"0\" y=\"", Coordinate(top + kCellHeight / 2.0 - 6),
                    "\" width=\"12\" height=\"12\" rx=\"2\" ", SegmentMarkStyle(segment.index),
                    "/>\n");
    AppendText(18, top + kCellHeight / 2.0 + 5, "", SegmentName(segment.index), out);
    for (size_t c = 0; c < columns.size(); ++c) {
      const double left = kLabelWidth + static_cast<double>(c) * cell_width;
      const NumericSegmentStat* stat = FindNumeric(segment, columns[c]);
      const double t = stat == nullptr ? 0 : stat->z / kHeatmapSaturationZ;
      const std::string fill = stat == nullptr ? "#eef2f7" : CssColor(DivergingColor(t));
      const std::string tooltip =
          stat == nullptr
              ? absl::StrCat(SegmentName(segment.index), " · ", columns[c], ": no data")
              : absl::StrCat(SegmentName(segment.index), " · ", columns[c], ": average ",
                             FormatReadable(stat->mean), " vs ", FormatReadable(stat->overall_mean),
                             " for all users (", SignedZ(stat->z), "σ)");
      absl::StrAppend(&out, "<rect x=\"", Coordinate(left), "\" y=\"", Coordinate(top),
                      "\" width=\"", Coordinate(cell_width), "\" height=\"", kCellHeight,
                      "\" fill=\"", fill, "\" stroke=\"#ffffff\" stroke-width=\"2\"><title>",
                      EscapeHtml(tooltip), "</title></rect>\n");
      const double center = left + cell_width / 2;
      if (stat == nullptr) {
        AppendText(center, top + 28, "class=\"note\" text-anchor=\"middle\"", "–", out);
        continue;
      }
      const std::string ink = std::fabs(t) > 0.55 ? "#ffffff" : "#1f2933";
      absl::StrAppend(&out, "<text x=\"", Coordinate(center), "\" y=\"", Coordinate(top + 20),
                      "\" text-anchor=\"middle\" font-weight=\"600\" style=\"fill:", ink, "\">",
                      EscapeHtml(absl::StrCat(SignedZ(stat->z), "σ")), "</text>\n");
      if (cell_width >= 60) {
        absl::StrAppend(&out, "<text x=\"", Coordinate(center), "\" y=\"",
                        Coordinate(top + 37), "\" text-anchor=\"middle\" style=\"fill:", ink,
                        ";font-size:11px\">", EscapeHtml(FormatReadable(stat->mean)),
                        "</text>\n");
      }
    }
  }
  AppendHeatmapScale(kLabelWidth, grid_bottom + 12, out);
  absl::StrAppend(&out, "</svg>\n</section>\n");
}

// One metric of the k sweep, for one small-multiple panel.
struct SweepSeries {
  std::string title;
  std::vector<std::pair<int, std::optional<double>>> points;  // (k, value), ascending k
};

void AppendSweepPanel(const SweepSeries& series, double left, double top, double width,
                      double height, int suggested_k, std::string& out) {
  AppendText(left, top + 14, "class=\"panel-title\"", series.title, out);
  const double plot_left = left + 62, plot_right = left + width - 12;
  const double plot_top = top + 42, plot_bottom = top + height - 40;

  const int k_min = series.points.front().first;
  const int k_max = series.points.back().first;
  std::vector<double> values;
  std::vector<int> undefined_k;
  for (const auto& [k, value] : series.points) {
    if (value.has_value() && std::isfinite(*value)) {
      values.push_back(*value);
    } else {
      undefined_k.push_back(k);
    }
  }
  const LinearScale x{static_cast<double>(k_min), static_cast<double>(k_max),
                      plot_left + 14, plot_right - 14};
  const auto [y_lo, y_hi] = PaddedRange(values, 0.1);
  const LinearScale y{y_lo, y_hi, plot_bottom, plot_top};
  std::vector<double> k_ticks;
  if (k_max - k_min <= 16) {
    for (int k = k_min; k <= k_max; ++k) k_ticks.push_back(k);
  } else {
    for (const double tick : NiceTicks(k_min, k_max, 8)) {
      if (tick == std::round(tick)) k_ticks.push_back(tick);
    }
  }
  AppendAxes(PlotArea{plot_left, plot_top, plot_right, plot_bottom}, x, y, k_ticks,
             NiceTicks(y_lo, y_hi, 4), out);

  if (suggested_k >= k_min && suggested_k <= k_max) {
    const double px = x(suggested_k);
    absl::StrAppend(&out, "<line class=\"marker\" x1=\"", Coordinate(px), "\" x2=\"",
                    Coordinate(px), "\" y1=\"", Coordinate(plot_top - 16), "\" y2=\"",
                    Coordinate(plot_bottom), "\"/>\n");
    // The label sits above the frame, on the side of the line with more room, so that it
    // never covers a point.
    const bool right_half = px > (plot_left + plot_right) / 2;
    AppendText(right_half ? px - 5 : px + 5, plot_top - 6,
               right_half ? "class=\"note\" text-anchor=\"end\"" : "class=\"note\"",
               absl::StrCat("suggested k = ", suggested_k), out);
  }

  // The curve breaks where a value is undefined.
  std::string path;
  bool pen_down = false;
  for (const auto& [k, value] : series.points) {
    if (!value.has_value() || !std::isfinite(*value)) {
      pen_down = false;
      continue;
    }
    absl::StrAppend(&path, pen_down ? " L" : " M", Coordinate(x(k)), " ", Coordinate(y(*value)));
    pen_down = true;
  }
  if (!path.empty()) absl::StrAppend(&out, "<path class=\"curve\" d=\"", path.substr(1), "\"/>\n");
  for (const auto& [k, value] : series.points) {
    if (!value.has_value() || !std::isfinite(*value)) continue;
    const bool suggested = k == suggested_k;
    absl::StrAppend(&out, "<circle cx=\"", Coordinate(x(k)), "\" cy=\"", Coordinate(y(*value)),
                    "\" r=\"", suggested ? 6 : 4, "\" fill=\"", suggested ? "#D55E00" : "#0072B2",
                    "\" stroke=\"#ffffff\" stroke-width=\"1.5\"><title>k = ", k, ": ",
                    EscapeHtml(FormatReadable(*value)), "</title></circle>\n");
  }

  std::string x_label = "number of segments (k)";
  if (!undefined_k.empty()) {
    absl::StrAppend(&x_label, " · undefined at k = ", absl::StrJoin(undefined_k, ", "));
  }
  AppendText((plot_left + plot_right) / 2, plot_bottom + 34,
             "class=\"note\" text-anchor=\"middle\"", x_label, out);
}

void AppendSweep(const ReportData& data, std::string& out) {
  std::vector<const SweepPoint*> sorted;
  for (const SweepPoint& point : data.sweep) sorted.push_back(&point);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const SweepPoint* a, const SweepPoint* b) { return a->k < b->k; });
  SweepSeries inertia{"Inertia (lower is tighter; look for the bend)", {}};
  SweepSeries silhouette{"Silhouette (higher is better)", {}};
  SweepSeries calinski{"Calinski–Harabasz (higher is better)", {}};
  SweepSeries davies{"Davies–Bouldin (lower is better)", {}};
  for (const SweepPoint* point : sorted) {
    inertia.points.push_back({point->k, point->metrics.inertia});
    silhouette.points.push_back({point->k, point->metrics.silhouette.value});
    calinski.points.push_back({point->k, point->metrics.calinski_harabasz.value});
    davies.points.push_back({point->k, point->metrics.davies_bouldin.value});
  }

  absl::StrAppend(&out, "<section id=\"sweep\">\n<h2>Choosing the number of segments</h2>\n",
                  "<p class=\"lead\">The same users were segmented with each number of segments "
                  "k. The charts show how four quality measures change with k; the dashed line "
                  "marks the suggested k.</p>\n");
  if (!data.suggestion.reason.empty()) {
    absl::StrAppend(&out, "<p class=\"reason\">", EscapeHtml(data.suggestion.reason), "</p>\n");
  }
  constexpr int kWidth = 1000, kGap = 24, kLargeHeight = 270, kSmallHeight = 210;
  constexpr double kPanelWidth = (kWidth - kGap) / 2.0;
  AppendSvgOpen(kWidth, kLargeHeight + kGap + kSmallHeight,
                "Quality measures for each number of segments", out);
  AppendSweepPanel(inertia, 0, 0, kPanelWidth, kLargeHeight, data.suggestion.k, out);
  AppendSweepPanel(silhouette, kPanelWidth + kGap, 0, kPanelWidth, kLargeHeight,
                   data.suggestion.k, out);
  AppendSweepPanel(calinski, 0, kLargeHeight + kGap, kPanelWidth, kSmallHeight,
                   data.suggestion.k, out);
  AppendSweepPanel(davies, kPanelWidth + kGap, kLargeHeight + kGap, kPanelWidth, kSmallHeight,
                   data.suggestion.k, out);
  absl::StrAppend(&out, "</svg>\n</section>\n");
}

std::string MetricCell(const MetricValue& metric, bool readable) {
  if (!metric.value.has_value()) {
    return absl::StrCat("<span class=\"undefined\">undefined: ",
                        EscapeHtml(metric.undefined_reason.empty() ? "no reason recorded"
                                                                   : metric.undefined_reason),
                        "</span>");
  }
  return readable ? FormatReadable(*metric.value) : Fixed3(*metric.value);
}

void AppendMetrics(const ClusterMetrics& metrics, std::string& out) {
  absl::StrAppend(&out, "<section id=\"metrics\">\n<h2>Quality of the segmentation</h2>\n",
                  "<p class=\"lead\">Standard measures of how compact and well separated the "
                  "segments are, computed on all users with squared Euclidean distances between "
                  "the scaled features.</p>\n");
  const std::vector<std::array<std::string, 3>> rows = {
      {"Users", FormatReadable(static_cast<double>(metrics.n)), "Users that were segmented."},
      {"Segments", absl::StrCat(metrics.k), "Segments with at least one user."},
      {"Inertia", FormatReadable(metrics.inertia),
       "Sum of squared distances from each user to the centre of their segment. Lower means "
       "tighter segments; it always falls as the number of segments grows."},
      {"Silhouette", MetricCell(metrics.silhouette, false),
       "From −1 to 1. Higher means users are closer to their own segment than to the nearest "
       "other one; values near 0 mean overlapping segments."},
      {"Calinski–Harabasz", MetricCell(metrics.calinski_harabasz, true),
       "Spread between segments relative to spread within them. Higher is better."},
      {"Davies–Bouldin", MetricCell(metrics.davies_bouldin, false),
       "0 or more: the average similarity of each segment to its most similar one. Lower is "
       "better."},
  };
  absl::StrAppend(&out, "<table>\n<thead><tr><th>Measure</th><th class=\"num\">Value</th>"
                        "<th>How to read it</th></tr></thead>\n<tbody>\n");
  for (const auto& [name, value, help] : rows) {
    // `value` is already HTML: numbers, or an escaped reason inside a span.
    absl::StrAppend(&out, "<tr><td>", EscapeHtml(name), "</td><td class=\"num\">", value,
                    "</td><td class=\"muted\">", EscapeHtml(help), "</td></tr>\n");
  }
  absl::StrAppend(&out, "</tbody>\n</table>\n</section>\n");
}

void AppendNumericTable(const SegmentSummary& segment, std::string& out) {
  bool any_missing = false;
  bool any_median = false;
  for (const NumericSegmentStat& stat : segment.numeric) {
    any_missing |= stat.missing > 0;
    any_median |= !std::isnan(stat.median);
  }
  absl::StrAppend(&out, "<h4>Averages</h4>\n<table>\n<thead><tr><th>Feature</th>"
                        "<th class=\"num\">Segment</th>");
  if (any_median) absl::StrAppend(&out, "<th class=\"num\">Median</th>");
  absl::StrAppend(&out, "<th class=\"num\">All users</th>"
                        "<th class=\"num\">Difference</th><th class=\"num\">Range</th>");
  if (any_missing) absl::StrAppend(&out, "<th class=\"num\">Missing</th>");
  absl::StrAppend(&out, "</tr></thead>\n<tbody>\n");
  for (const NumericSegmentStat& stat : segment.numeric) {
    // CSS class that colours the difference; none for a difference that prints as 0.0.
    std::string direction;
    if (SignedZ(stat.z) != "0.0") direction = stat.z > 0 ? "higher" : "lower";
    absl::StrAppend(&out, "<tr><td>", EscapeHtml(stat.column), "</td><td class=\"num\">",
                    FormatReadable(stat.mean), "</td>");
    if (any_median) {
      absl::StrAppend(&out, "<td class=\"num\">",
                      std::isnan(stat.median) ? "–" : FormatReadable(stat.median), "</td>");
    }
    absl::StrAppend(&out, "<td class=\"num\">",
                    FormatReadable(stat.overall_mean), "</td><td class=\"num ", direction, "\">",
                    EscapeHtml(SignedZ(stat.z)), "σ</td><td class=\"num\">",
                    FormatReadable(stat.min), " – ", FormatReadable(stat.max), "</td>");
    if (any_missing) {
      absl::StrAppend(&out, "<td class=\"num\">", FormatReadable(static_cast<double>(stat.missing)),
                      "</td>");
    }
    absl::StrAppend(&out, "</tr>\n");
  }
  absl::StrAppend(&out, "</tbody>\n</table>\n");
}

void AppendCategories(const SegmentSummary& segment, std::string& out) {
  constexpr size_t kShownCategories = 3;
  absl::StrAppend(&out, "<h4>Top categories</h4>\n");
  for (const CategoricalSegmentStat& stat : segment.categorical) {
    absl::StrAppend(&out, "<p class=\"category-column\">", EscapeHtml(stat.column), "</p>\n",
                    "<ul class=\"categories\">\n");
    if (stat.top.empty()) absl::StrAppend(&out, "<li class=\"muted\">no values</li>\n");
    for (size_t i = 0; i < stat.top.size() && i < kShownCategories; ++i) {
      const CategoryShareStat& category = stat.top[i];
      absl::StrAppend(&out, "<li>", EscapeHtml(category.value), " <b>",
                      WholePercent(category.share), "</b> <span class=\"muted\">(all users ",
                      WholePercent(category.overall_share), ")</span></li>\n");
    }
    absl::StrAppend(&out, "</ul>\n");
  }
}

void AppendSummaries(const std::vector<SegmentSummary>& segments, std::string& out) {
  absl::StrAppend(&out, "<section id=\"summaries\">\n<h2>Segment profiles</h2>\n",
                  "<p class=\"lead\">What sets each segment apart, with its averages and most "
                  "common categories next to those of all users.</p>\n");
  if (segments.empty()) absl::StrAppend(&out, "<p class=\"muted\">No segments.</p>\n");
  for (const SegmentSummary& segment : segments) {
    absl::StrAppend(&out, "<article class=\"segment\" style=\"--segment-color:",
                    SegmentColor(segment.index), "\">\n<h3>",
                    EscapeHtml(SegmentName(segment.index)), "<span class=\"size\">",
                    FormatReadable(static_cast<double>(segment.size)), " users · ",
                    Percent(segment.share), "</span></h3>\n");
    if (!segment.description.empty()) {
      absl::StrAppend(&out, "<p class=\"description\">", EscapeHtml(segment.description),
                      "</p>\n");
    }
    if (!segment.distinguishing.empty()) {
      absl::StrAppend(&out, "<div>");
      for (const std::string& feature : segment.distinguishing) {
        absl::StrAppend(&out, "<span class=\"chip\">", EscapeHtml(feature), "</span>");
      }
      absl::StrAppend(&out, "</div>\n");
    }
    // Numeric averages and top categories side by side, or one of them full width.
    const bool both = !segment.numeric.empty() && !segment.categorical.empty();
    absl::StrAppend(&out, "<div class=\"segment-body", both ? "" : " single", "\">\n");
    if (!segment.numeric.empty()) {
      absl::StrAppend(&out, "<div>\n");
      AppendNumericTable(segment, out);
      absl::StrAppend(&out, "</div>\n");
    }
    if (!segment.categorical.empty()) {
      absl::StrAppend(&out, "<div>\n");
      AppendCategories(segment, out);
      absl::StrAppend(&out, "</div>\n");
    }
    absl::StrAppend(&out, "</div>\n</article>\n");
  }
  absl::StrAppend(&out, "</section>\n");
}

// Nodes of the bisecting tree in depth-first order, each with its depth in that walk.
// Children follow their parent in ascending id order. A node whose parent is not in the
// tree is drawn as a root, and a node reached twice (a cycle in the input) is drawn once.
std::vector<std::pair<const SegmentTreeNode*, int>> WalkTree(
    const std::vector<SegmentTreeNode>& tree) {
  std::map<int, const SegmentTreeNode*> by_id;
  for (const SegmentTreeNode& node : tree) by_id.emplace(node.id, &node);
  std::map<int, std::vector<const SegmentTreeNode*>> children;
  std::vector<const SegmentTreeNode*> roots;
  for (const SegmentTreeNode& node : tree) {
    if (node.parent >= 0 && node.parent != node.id && by_id.count(node.parent) > 0) {
      children[node.parent].push_back(&node);
    } else {
      roots.push_back(&node);
    }
  }
  const auto by_node_id = [](const SegmentTreeNode* a, const SegmentTreeNode* b) {
    return a->id < b->id;
  };
  for (auto& [id, list] : children) std::sort(list.begin(), list.end(), by_node_id);
  std::sort(roots.begin(), roots.end(), by_node_id);

  std::vector<std::pair<const SegmentTreeNode*, int>> order;
  std::set<const SegmentTreeNode*> visited;
  std::vector<std::pair<const SegmentTreeNode*, int>> stack;
  for (auto it = roots.rbegin(); it != roots.rend(); ++it) stack.push_back({*it, 0});
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    if (!visited.insert(node).second) continue;
    order.push_back({node, depth});
    const auto found = children.find(node->id);
    if (found == children.end()) continue;
    for (auto it = found->second.rbegin(); it != found->second.rend(); ++it) {
      stack.push_back({*it, depth + 1});
    }
  }
  return order;
}

void AppendTree(const std::vector<SegmentTreeNode>& tree, std::string& out) {
  absl::StrAppend(&out, "<section id=\"tree\">\n<h2>How the segments were split</h2>\n",
                  "<p class=\"lead\">Bisecting K-means starts from all users and repeatedly "
                  "splits one group in two. Each row is a group; the bar on the left shows its "
                  "size, and the last splits give the final segments.</p>\n");
  const std::vector<std::pair<const SegmentTreeNode*, int>> order = WalkTree(tree);
  constexpr int kWidth = 1000, kRowHeight = 30, kBarWidth = 120, kIndent = 26;
  constexpr double kTreeLeft = kBarWidth + 24;
  // A generous average width of a 13px character, so that truncated text stays inside.
  constexpr double kCharWidth = 7.4;
  int64_t max_size = 1;
  for (const SegmentTreeNode& node : tree) max_size = std::max(max_size, node.size);
  AppendSvgOpen(kWidth, static_cast<int>(order.size()) * kRowHeight + 6,
                "Tree of the bisecting splits", out);

  std::map<const SegmentTreeNode*, std::pair<double, double>> positions;
  std::map<int, const SegmentTreeNode*> by_id;
  for (const SegmentTreeNode& node : tree) by_id.emplace(node.id, &node);
  for (size_t row = 0; row < order.size(); ++row) {
    const auto [node, depth] = order[row];
    const double cy = static_cast<double>(row) * kRowHeight + kRowHeight / 2.0 + 3;
    const double cx = kTreeLeft + depth * kIndent + 6;
    positions[node] = {cx, cy};
    const auto parent = by_id.find(node->parent);
    if (parent != by_id.end() && positions.count(parent->second) > 0 && depth > 0) {
      const auto [px, py] = positions[parent->second];
      absl::StrAppend(&out, "<path class=\"tree-link\" d=\"M", Coordinate(px), " ",
                      Coordinate(py + 6), " V", Coordinate(cy), " H", Coordinate(cx - 6),
                      "\"/>\n");
    }
  }
  for (size_t row = 0; row < order.size(); ++row) {
    const auto [node, depth] = order[row];
    const auto [cx, cy] = positions[node];
    const bool leaf = node->segment >= 0;
    const double share = static_cast<double>(node->size) / static_cast<double>(max_size);
    absl::StrAppend(&out, "<rect x=\"0\" y=\"", Coordinate(cy - 7), "\" width=\"", kBarWidth,
                    "\" height=\"14\" rx=\"2\" fill=\"#eef2f7\"/>\n");
    absl::StrAppend(&out, "<rect x=\"0\" y=\"", Coordinate(cy - 7), "\" width=\"",
                    Coordinate(std::max(1.0, share * kBarWidth)), "\" height=\"14\" rx=\"2\" ",
                    leaf ? SegmentMarkStyle(node->segment) : "fill=\"#9aa5b1\"", "/>\n");
    absl::StrAppend(&out, "<circle cx=\"", Coordinate(cx), "\" cy=\"", Coordinate(cy),
                    "\" r=\"6\" ", leaf ? SegmentMarkStyle(node->segment) : "fill=\"#52606d\"",
                    "/>\n");

    const std::string name = leaf ? SegmentName(node->segment)
                              : node->parent < 0 ? "All users"
                                                 : absl::StrCat("Group ", node->id);
    const std::string size = absl::StrCat(FormatReadable(static_cast<double>(node->size)),
                                          " users");
    const double text_left = cx + 14;
    const double free_chars =
        (kWidth - text_left) / kCharWidth - static_cast<double>(name.size() + size.size() + 6);
    const std::string tooltip = absl::StrCat(name, " · ", size, " · inertia ",
                                             FormatReadable(node->inertia),
                                             node->description.empty() ? "" : " · ",
                                             node->description);
    absl::StrAppend(&out, "<text x=\"", Coordinate(text_left), "\" y=\"", Coordinate(cy + 4),
                    "\"><title>", EscapeHtml(tooltip), "</title><tspan font-weight=\"600\">",
                    EscapeHtml(name), "</tspan> <tspan class=\"muted\" style=\"fill:#52606d\">· ",
                    EscapeHtml(size));
    if (!node->description.empty() && free_chars >= 12) {
      absl::StrAppend(&out, " · ",
                      EscapeHtml(TruncateUtf8(node->description, static_cast<size_t>(free_chars))));
    }
    absl::StrAppend(&out, "</tspan></text>\n");
  }
  absl::StrAppend(&out, "</svg>\n</section>\n");
}

}  // namespace

// Up to this many columns the covariance is decomposed exactly; wider samples use power
// iteration.
constexpr Eigen::Index kExactPcaMaxColumns = 256;
// Power-iteration steps per component; the projection only draws a picture.
constexpr int kPowerIterations = 200;

absl::StatusOr<Projection2D> ProjectPca2(const MatrixXfR& sample) {
  const Eigen::Index m = sample.rows();
  const Eigen::Index d = sample.cols();
  if (m < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("PCA needs a sample of at least 2 rows, got ", m));
  }
  if (d < 1) return absl::InvalidArgumentError("PCA needs a sample with at least 1 column, got 0");
  for (Eigen::Index r = 0; r < m; ++r) {
    for (Eigen::Index c = 0; c < d; ++c) {
      if (!std::isfinite(sample(r, c))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "PCA sample has a non-finite value at row ", r, ", column ", c, ": ", sample(r, c)));
      }
    }
  }

  MatrixXdR centered = sample.cast<double>();
  const Eigen::RowVectorXd mean = centered.colwise().mean();
  centered.rowwise() -= mean;

  // Every product below is a plain loop in a fixed order: Eigen's own products may split
  // work over OpenMP threads, which would make the report depend on the thread count.
  Projection2D result;
  result.components = MatrixXdR::Zero(2, d);
  result.explained_variance_ratio = {0, 0};
  double total_variance = 0;
  for (Eigen::Index r = 0; r < m; ++r) {
    for (Eigen::Index c = 0; c < d; ++c) total_variance += centered(r, c) * centered(r, c);
  }
  total_variance /= static_cast<double>(m - 1);
  const Eigen::Index kept = std::min<Eigen::Index>(2, d);
  std::vector<double> eigenvalues(2, 0.0);

  if (d <= kExactPcaMaxColumns) {
    Eigen::MatrixXd covariance(d, d);
    for (Eigen::Index i = 0; i < d; ++i) {
      for (Eigen::Index j = 0; j <= i; ++j) {
        double sum = 0;
        for (Eigen::Index r = 0; r < m; ++r) sum += centered(r, i) * centered(r, j);
        covariance(i, j) = covariance(j, i) = sum / static_cast<double>(m - 1);
      }
    }
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(covariance);
    if (solver.info() != Eigen::Success) {
      return absl::InternalError(absl::StrCat("PCA eigen-decomposition of the ", d, "×", d,
                                              " covariance matrix did not converge"));
    }
    // Eigenvalues come in ascending order. Rounding can leave tiny negative ones.
    for (Eigen::Index c = 0; c < kept; ++c) {
      const Eigen::Index column = d - 1 - c;
      result.components.row(c) = solver.eigenvectors().col(column).transpose();
      eigenvalues[static_cast<size_t>(c)] = std::max(0.0, solver.eigenvalues()(column));
    }
  } else {
    // Wide samples (many one-hot columns): power iteration on C v = Xcᵀ (Xc v) / (m − 1),
    // O(m·d) per step, instead of an O(d³) eigen-decomposition of the d×d covariance.
    for (Eigen::Index c = 0; c < kept; ++c) {
      Eigen::VectorXd v(d);
      for (Eigen::Index j = 0; j < d; ++j) v(j) = 1.0 + 1e-3 * static_cast<double>(j % 7);
      Eigen::VectorXd scores(m);
      for (int step = 0; step < kPowerIterations; ++step) {
        if (c == 1) v -= v.dot(result.components.row(0).transpose()) * result.components.row(0).transpose();
        const double norm = v.norm();
        if (norm == 0) break;
        v /= norm;
        for (Eigen::Index r = 0; r < m; ++r) {
          double dot = 0;
          for (Eigen::Index j = 0; j < d; ++j) dot += centered(r, j) * v(j);
          scores(r) = dot;
        }
        Eigen::VectorXd next = Eigen::VectorXd::Zero(d);
        for (Eigen::Index r = 0; r < m; ++r) {
          for (Eigen::Index j = 0; j < d; ++j) next(j) += centered(r, j) * scores(r);
        }
        next /= static_cast<double>(m - 1);
        eigenvalues[static_cast<size_t>(c)] = std::max(0.0, v.dot(next));
        v = next;
      }
      if (c == 1) v -= v.dot(result.components.row(0).transpose()) * result.components.row(0).transpose();
      const double norm = v.norm();
      if (norm > 0) result.components.row(c) = (v / norm).transpose();
    }
  }

  for (Eigen::Index c = 0; c < kept; ++c) {
    Eigen::Index largest = 0;
    result.components.row(c).cwiseAbs().maxCoeff(&largest);
    if (result.components(c, largest) < 0) result.components.row(c) *= -1;
    if (total_variance > 0) {
      result.explained_variance_ratio[static_cast<size_t>(c)] =
          std::min(1.0, eigenvalues[static_cast<size_t>(c)] / total_variance);
    }
  }
  // The two ratios can exceed 1 by a rounding error when d == 2.
  result.explained_variance_ratio[1] = std::min(result.explained_variance_ratio[1],
                                                1 - result.explained_variance_ratio[0]);

  result.x.resize(static_cast<size_t>(m));
  result.y.resize(static_cast<size_t>(m));
  for (Eigen::Index r = 0; r < m; ++r) {
    double x = 0;
    double y = 0;
    for (Eigen::Index j = 0; j < d; ++j) {
      x += centered(r, j) * result.components(0, j);
      y += centered(r, j) * result.components(1, j);
    }
    result.x[static_cast<size_t>(r)] = static_cast<float>(x);
    result.y[static_cast<size_t>(r)] = static_cast<float>(y);
  }
  return result;
}

KSuggestion SuggestK(const std::vector<SweepPoint>& sweep) {
  // Relative distance from the best silhouette within which a smaller k is preferred.
  constexpr double kTolerance = 0.01;
  if (sweep.empty()) return KSuggestion{0, "The k sweep is empty, so no k can be suggested."};

  const SweepPoint* smallest = &sweep.front();
  const SweepPoint* best = nullptr;
  std::vector<int> undefined_k;
  for (const SweepPoint& point : sweep) {
    if (point.k < smallest->k) smallest = &point;
    const std::optional<double>& value = point.metrics.silhouette.value;
    if (!value.has_value() || !std::isfinite(*value)) {
      undefined_k.push_back(point.k);
      continue;
    }
    if (best == nullptr || *value > *best->metrics.silhouette.value ||
        (*value == *best->metrics.silhouette.value && point.k < best->k)) {
      best = &point;
    }
  }
  std::sort(undefined_k.begin(), undefined_k.end());

  if (best == nullptr) {
    const std::string& why = smallest->metrics.silhouette.undefined_reason;
    return KSuggestion{
        smallest->k,
        absl::StrCat("No k in the sweep has a defined silhouette",
                     why.empty() ? "" : absl::StrCat(" (at k = ", smallest->k, ": ", why, ")"),
                     ", so the smallest k, ", smallest->k, ", is suggested.")};
  }

  const double best_value = *best->metrics.silhouette.value;
  const double threshold = best_value - kTolerance * std::fabs(best_value);
  const SweepPoint* chosen = best;
  for (const SweepPoint& point : sweep) {
    const std::optional<double>& value = point.metrics.silhouette.value;
    if (value.has_value() && std::isfinite(*value) && *value >= threshold &&
        point.k < chosen->k) {
      chosen = &point;
    }
  }

  std::string reason;
  if (chosen == best) {
    reason = absl::StrFormat(
        "k = %d has the highest silhouette (%.3f); no smaller k is within 1 %% of it.", best->k,
        best_value);
  } else {
    reason = absl::StrFormat(
        "k = %d has a silhouette of %.3f, within 1 %% of the highest (%.3f at k = %d), and is "
        "the smallest such k.",
        chosen->k, *chosen->metrics.silhouette.value, best_value, best->k);
  }
  if (!undefined_k.empty()) {
    absl::StrAppend(&reason, " Not considered because the silhouette is undefined: k = ",
                    absl::StrJoin(undefined_k, ", "), ".");
  }
  return KSuggestion{chosen->k, reason};
}

std::string RenderReportHtml(const ReportData& data) {
  const std::string title = data.title.empty() ? "Segmentation report" : data.title;
  std::string out;
  absl::StrAppend(&out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
                  "<title>", EscapeHtml(title), "</title>\n<style>", kStyle,
                  "</style>\n</head>\n<body>\n<main>\n");
  AppendHeader(data, out);
  AppendSizes(data.segments, out);
  if (std::min(data.projection.x.size(), data.projection.y.size()) > 0) {
    AppendProjection(data, out);
  }
  const std::vector<std::string> columns = NumericColumns(data.segments);
  if (!columns.empty()) AppendHeatmap(data.segments, columns, out);
  if (!data.sweep.empty()) AppendSweep(data, out);
  AppendMetrics(data.metrics, out);
  AppendSummaries(data.segments, out);
  if (!data.tree.empty()) AppendTree(data.tree, out);
  absl::StrAppend(&out, "<footer class=\"muted\">Made by cohort. This page is self-contained: "
                        "it loads nothing from the network.</footer>\n</main>\n</body>\n</html>\n");
  return out;
}

}  // namespace cohort
