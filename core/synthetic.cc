#include "core/synthetic.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

constexpr int64_t kMaxCustomers = 100000000;
constexpr int kMaxSegments = 64;
constexpr double kMaxMeanTransactions = 1000;
constexpr double kMaxShare = 0.5;

// Share of customers whose income cell is left empty, so imputation has work to do.
constexpr double kMissingIncomeShare = 0.01;

// First invoice number. Cancellations carry the "C" prefix before their own number.
constexpr int64_t kFirstInvoiceNumber = 500001;

// Output buffers are written to disk whenever they grow past this size.
constexpr size_t kFlushBytes = size_t{4} << 20;

constexpr int kDaysInYear = 365;  // 2025 is not a leap year.
constexpr int kSecondsPerDay = 86400;
// Shop opening hours: invoices fall between 08:00:00 and 20:59:59.
constexpr int kOpeningSecond = 8 * 3600;
constexpr int kClosingSecond = 21 * 3600;

constexpr std::array<absl::string_view, 3> kChannels = {"web", "app", "store"};
constexpr std::array<absl::string_view, 5> kRegions = {"north", "south", "east", "west", "central"};
constexpr std::array<absl::string_view, 3> kDevices = {"ios", "android", "desktop"};

constexpr std::array<absl::string_view, 8> kCountries = {
    "United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Portugal"};
constexpr std::array<double, 8> kCountryProbabilities = {0.88, 0.03, 0.03, 0.02,
                                                         0.01, 0.01, 0.01, 0.01};

// A normal distribution given by its mean and standard deviation.
struct Spread {
  double mean = 0;
  double sd = 0;
};

// The hidden segment a customer is drawn from: the distribution of every customer column
// and of the customer's purchases.
struct SegmentProfile {
  // Share of customers in this segment before normalisation over all segments.
  double weight = 0;
  Spread age;  // years
  // Income is log-normal: `income.mean` is its mean in currency units and `income.sd`
  // the standard deviation of log(income).
  Spread income;
  Spread visits_per_month;
  Spread basket_size;  // currency units
  Spread tenure_months;
  std::array<double, kChannels.size()> channel = {};
  std::array<double, kRegions.size()> region = {};
  std::array<double, kDevices.size()> device = {};

  // Transaction rows per customer relative to options.mean_transactions. Rescaled so the
  // weighted mean over the segments is 1.
  double row_multiplier = 1;
  // Mean rows (distinct lines) per invoice, at least 1.
  double rows_per_invoice = 1;
  // Mean quantity per row, at least 1.
  double quantity = 1;
  // Items are drawn from the catalogue sorted by price at index floor(n · u^price_exponent)
  // for uniform u: an exponent above 1 favours cheap items, below 1 expensive ones.
  double price_exponent = 1;
  // Mean days from a customer's last purchase to the end of 2025 (exponential).
  double recency_days = 30;
};

// The named segments. Segments beyond these are perturbed copies (MakeDerivedSegment).
// The first five differ pairwise by at least 5 years of mean age or 20000 of mean income.
const std::array<SegmentProfile, 5> kSegmentTemplates = {{
    // Young bargain hunters: low income, frequent small app purchases of cheap items.
    {.weight = 0.22,
     .age = {24, 4},
     .income = {28000, 0.30},
     .visits_per_month = {7, 2},
     .basket_size = {18, 6},
     .tenure_months = {14, 8},
     .channel = {0.30, 0.60, 0.10},
     .region = {0.15, 0.20, 0.15, 0.15, 0.35},
     .device = {0.20, 0.70, 0.10},
     .row_multiplier = 1.0,
     .rows_per_invoice = 2.5,
     .quantity = 4,
     .price_exponent = 2.5,
     .recency_days = 25},
    // Affluent loyal: high income, long tenure, buy expensive items often and recently.
    {.weight = 0.12,
     .age = {49, 8},
     .income = {125000, 0.25},
     .visits_per_month = {10, 2.5},
     .basket_size = {95, 25},
     .tenure_months = {96, 30},
     .channel = {0.30, 0.15, 0.55},
     .region = {0.10, 0.15, 0.20, 0.40, 0.15},
     .device = {0.55, 0.15, 0.30},
     .row_multiplier = 2.2,
     .rows_per_invoice = 3,
     .quantity = 2,
     .price_exponent = 0.45,
     .recency_days = 6},
    // Occasional: middle income, rare visits, long since the last purchase.
    {.weight = 0.30,
     .age = {42, 12},
     .income = {50000, 0.30},
     .visits_per_month = {1.2, 0.6},
     .basket_size = {35, 12},
     .tenure_months = {36, 24},
     .channel = {0.40, 0.10, 0.50},
     .region = {0.30, 0.20, 0.20, 0.15, 0.15},
     .device = {0.25, 0.35, 0.40},
     .row_multiplier = 0.35,
     .rows_per_invoice = 2,
     .quantity = 2,
     .price_exponent = 1,
     .recency_days = 120},
    // Families: large baskets with many rows and high quantities, mostly in store.
    {.weight = 0.20,
     .age = {38, 5},
     .income = {78000, 0.20},
     .visits_per_month = {5, 1.5},
     .basket_size = {140, 35},
     .tenure_months = {60, 24},
     .channel = {0.25, 0.20, 0.55},
     .region = {0.20, 0.30, 0.20, 0.15, 0.15},
     .device = {0.35, 0.45, 0.20},
     .row_multiplier = 1.4,
     .rows_per_invoice = 5,
     .quantity = 8,
     .price_exponent = 1.4,
     .recency_days = 20},
    // New online: short tenure, web on desktop, recent first purchases.
    {.weight = 0.16,
     .age = {29, 5},
     .income = {58000, 0.25},
     .visits_per_month = {3, 1},
     .basket_size = {45, 15},
     .tenure_months = {3, 2},
     .channel = {0.70, 0.28, 0.02},
     .region = {0.20, 0.20, 0.30, 0.15, 0.15},
     .device = {0.30, 0.20, 0.50},
     .row_multiplier = 0.7,
     .rows_per_invoice = 2,
     .quantity = 2,
     .price_exponent = 0.9,
     .recency_days = 10},
}};

// Stream numbers, so each part of the output has its own random sequence. The customers
// file therefore does not change when only the transaction options change.
constexpr uint64_t kCustomerStream = 1;
constexpr uint64_t kTransactionStream = 2;
constexpr uint64_t kCatalogueStream = 3;
constexpr uint64_t kSegmentStreamBase = 1000;  // plus the segment index

// SplitMix64 finaliser (Steele, Lea and Flood 2014): spreads nearby inputs over the
// whole 64-bit range, so streams seeded from seed + 1 and seed + 2 are unrelated.
uint64_t MixBits(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Random draws built on std::mt19937_64, whose output sequence the C++ standard fixes.
// The transforms are written here because the standard library distributions
// (std::normal_distribution and the others) produce implementation-defined sequences.
// NOTE: the normal, Poisson and exponential draws call std::log, std::exp and std::sqrt,
// so the bytes are reproducible for one libm (glibc on Debian 12) but may differ in the
// last digit on another.
class Random {
 public:
  Random(uint64_t seed, uint64_t stream) : engine_(MixBits(seed ^ MixBits(stream))) {}

  // Uniform in [0, 1), with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  // Uniform in [low, high).
  double Uniform(double low, double high) { return low + (high - low) * Uniform(); }

  // Uniform integer in [0, n) for n >= 1. The modulo bias is below n / 2^64.
  int64_t Index(int64_t n) { return static_cast<int64_t>(engine_() % static_cast<uint64_t>(n)); }

  bool Bernoulli(double p) { return Uniform() < p; }

  // Standard normal by the Marsaglia polar method. The second value of each pair is kept
  // for the next call.
  double StandardNormal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u = 0;
    double v = 0;
    double s = 0;
    do {
      u = Uniform(-1, 1);
      v = Uniform(-1, 1);
      s = u * u + v * v;
    } while (s >= 1 || s == 0);
    const double factor = std::sqrt(-2 * std::log(s) / s);
    spare_ = v * factor;
    has_spare_ = true;
    return u * factor;
  }

  double Normal(const Spread& spread) { return spread.mean + spread.sd * StandardNormal(); }

  // Exponential with the given mean.
  double Exponential(double mean) { return -mean * std::log1p(-Uniform()); }

  // Poisson with mean `lambda` >= 0: Knuth's product of uniforms below 30, and above it a
  // normal approximation rounded to an integer (its skew is then below 0.2).
  int64_t Poisson(double lambda) {
    if (lambda <= 0) return 0;
    if (lambda < 30) {
      const double limit = std::exp(-lambda);
      int64_t count = 0;
      double product = Uniform();
      while (product > limit) {
        ++count;
        product *= Uniform();
      }
      return count;
    }
    const double draw = std::round(lambda + std::sqrt(lambda) * StandardNormal());
    return draw < 0 ? 0 : static_cast<int64_t>(draw);
  }

  // Index drawn with the given probabilities, which must sum to 1 up to rounding. The
  // last index takes what rounding leaves.
  template <size_t N>
  size_t Categorical(const std::array<double, N>& probabilities) {
    double u = Uniform();
    for (size_t i = 0; i + 1 < N; ++i) {
      if (u < probabilities[i]) return i;
      u -= probabilities[i];
    }
    return N - 1;
  }

 private:
  std::mt19937_64 engine_;
  double spare_ = 0;
  bool has_spare_ = false;
};

template <size_t N>
void Normalize(std::array<double, N>* probabilities) {
  double sum = 0;
  for (double p : *probabilities) sum += p;
  for (double& p : *probabilities) p /= sum;
}

// Multiplies each probability by a factor in [0.3, 1.7) and renormalises.
template <size_t N>
void PerturbProbabilities(Random* random, std::array<double, N>* probabilities) {
  for (double& p : *probabilities) p *= random->Uniform(0.3, 1.7);
  Normalize(probabilities);
}

// Segment `index` >= kSegmentTemplates.size(): a copy of one template with every mean and
// probability moved by a random factor. It depends only on the seed and the index, so a
// segment is the same whatever num_segments is.
SegmentProfile MakeDerivedSegment(uint64_t seed, int index) {
  Random random(seed, kSegmentStreamBase + static_cast<uint64_t>(index));
  SegmentProfile segment = kSegmentTemplates[static_cast<size_t>(index) % kSegmentTemplates.size()];
  segment.weight *= random.Uniform(0.5, 1.5);
  segment.age.mean = std::clamp(segment.age.mean + random.Uniform(-8, 8), 20.0, 75.0);
  segment.income.mean *= random.Uniform(0.6, 1.6);
  segment.visits_per_month.mean *= random.Uniform(0.6, 1.6);
  segment.basket_size.mean *= random.Uniform(0.6, 1.6);
  segment.tenure_months.mean *= random.Uniform(0.5, 1.5);
  PerturbProbabilities(&random, &segment.channel);
  PerturbProbabilities(&random, &segment.region);
  PerturbProbabilities(&random, &segment.device);
  segment.row_multiplier *= random.Uniform(0.6, 1.6);
  segment.rows_per_invoice = std::max(1.0, segment.rows_per_invoice * random.Uniform(0.8, 1.25));
  segment.quantity = std::max(1.0, segment.quantity * random.Uniform(0.7, 1.4));
  segment.price_exponent *= random.Uniform(0.7, 1.4);
  segment.recency_days *= random.Uniform(0.5, 2.0);
  return segment;
}

// The first `options.num_segments` segments with weights summing to 1 and row
// multipliers whose weighted mean is 1, so the expected rows per customer is
// options.mean_transactions.
std::vector<SegmentProfile> BuildSegments(const SyntheticShopOptions& options) {
  std::vector<SegmentProfile> segments;
  segments.reserve(static_cast<size_t>(options.num_segments));
  for (int s = 0; s < options.num_segments; ++s) {
    if (static_cast<size_t>(s) < kSegmentTemplates.size()) {
      segments.push_back(kSegmentTemplates[static_cast<size_t>(s)]);
    } else {
      segments.push_back(MakeDerivedSegment(options.seed, s));
    }
  }
  double total_weight = 0;
  for (const SegmentProfile& segment : segments) total_weight += segment.weight;
  double mean_multiplier = 0;
  for (SegmentProfile& segment : segments) {
    segment.weight /= total_weight;
    mean_multiplier += segment.weight * segment.row_multiplier;
  }
  for (SegmentProfile& segment : segments) segment.row_multiplier /= mean_multiplier;
  return segments;
}

// One stock item. `description_field` is already CSV-quoted where needed.
struct CatalogueItem {
  std::string stock_code;
  std::string description_field;
  int64_t price_cents = 0;
};

struct ProductKind {
  absl::string_view noun;
  int64_t base_price_cents;
};

// 10 variants × 20 kinds = 200 items. Two kinds contain a comma and one a quote, so
// readers of the transactions file meet quoted fields.
constexpr std::array<absl::string_view, 10> kVariants = {
    "WHITE", "RED", "PINK", "BLUE", "GREEN", "VINTAGE", "RETRO", "REGENCY", "JUMBO", "MINI"};
constexpr std::array<ProductKind, 20> kProductKinds = {{
    {"HANGING HEART T-LIGHT HOLDER", 295},
    {"LUNCH BAG", 165},
    {"CAKE TINS, SET OF 3", 495},
    {"ALARM CLOCK", 375},
    {"TEA CUP AND SAUCER", 295},
    {"PAPER CHAIN KIT", 285},
    {"WATER BOTTLE", 425},
    {"PARTY BUNTING", 495},
    {"SHOPPER BAG", 125},
    {"CERAMIC MUG", 145},
    {"PHOTO FRAME", 255},
    {"GLASS STAR LANTERN", 795},
    {"CUSHION COVER", 375},
    {"\"WELCOME\" DOORMAT", 795},
    {"NAPKINS, PACK OF 20", 85},
    {"WALL CLOCK", 850},
    {"JEWELLERY BOX", 1250},
    {"TRINKET DISH", 65},
    {"PICNIC HAMPER", 1995},
    {"WOODEN BIRD HOUSE", 595},
}};

// Appends `text` to `out`. Abseil 20220623 as built for Debian 12 has its own
// string_view type, which std::string::append does not take.
void AppendText(absl::string_view text, std::string* out) { out->append(text.data(), text.size()); }

// Appends `field` to `out`, quoted (RFC 4180) only when it contains a comma, a quote or
// a line break.
void AppendCsvField(absl::string_view field, std::string* out) {
  if (field.find_first_of(",\"\r\n") == absl::string_view::npos) {
    AppendText(field, out);
    return;
  }
  out->push_back('"');
  for (char c : field) {
    if (c == '"') out->push_back('"');
    out->push_back(c);
  }
  out->push_back('"');
}

// The 200 catalogue items sorted by price, cheapest first (ties by stock code).
std::vector<CatalogueItem> BuildCatalogue(uint64_t seed) {
  Random random(seed, kCatalogueStream);
  std::vector<CatalogueItem> catalogue;
  catalogue.reserve(kVariants.size() * kProductKinds.size());
  for (size_t k = 0; k < kProductKinds.size(); ++k) {
    for (size_t v = 0; v < kVariants.size(); ++v) {
      CatalogueItem item;
      item.stock_code = absl::StrCat(20000 + 100 * k + v);
      AppendCsvField(absl::StrCat(kVariants[v], " ", kProductKinds[k].noun),
                     &item.description_field);
      const double price =
          static_cast<double>(kProductKinds[k].base_price_cents) * random.Uniform(0.6, 1.8);
      item.price_cents = std::max<int64_t>(10, std::llround(price));
      catalogue.push_back(std::move(item));
    }
  }
  std::sort(catalogue.begin(), catalogue.end(), [](const CatalogueItem& a, const CatalogueItem& b) {
    return a.price_cents != b.price_cents ? a.price_cents < b.price_cents
                                          : a.stock_code < b.stock_code;
  });
  return catalogue;
}

void AppendInt(int64_t value, std::string* out) {
  char digits[24];
  uint64_t magnitude = value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  int length = 0;
  do {
    digits[length++] = static_cast<char>('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  if (value < 0) out->push_back('-');
  while (length > 0) out->push_back(digits[--length]);
}

// Appends `value` >= 0, left-padded with zeros to `width` digits.
void AppendPadded(int64_t value, int width, std::string* out) {
  char digits[24];
  int length = 0;
  do {
    digits[length++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (int i = length; i < width; ++i) out->push_back('0');
  while (length > 0) out->push_back(digits[--length]);
}

// Appends `value` rounded to `decimals` digits after the point (1 or 2), for
// example "3.4" or "45.27".
void AppendFixed(double value, int decimals, std::string* out) {
  const int64_t scale = decimals == 1 ? 10 : 100;
  const int64_t scaled = std::llround(value * static_cast<double>(scale));
  const int64_t magnitude = scaled < 0 ? -scaled : scaled;
  if (scaled < 0) out->push_back('-');
  AppendInt(magnitude / scale, out);
  out->push_back('.');
  AppendPadded(magnitude % scale, decimals, out);
}

// Appends "2025-MM-DD HH:MM:SS" for `second_of_year` in [0, 365 · 86400).
void AppendTimestamp(int64_t second_of_year, std::string* out) {
  static constexpr std::array<int, 12> kDaysInMonth = {31, 28, 31, 30, 31, 30,
                                                       31, 31, 30, 31, 30, 31};
  int64_t day = second_of_year / kSecondsPerDay;
  const int64_t second_of_day = second_of_year % kSecondsPerDay;
  int month = 0;
  while (day >= kDaysInMonth[static_cast<size_t>(month)]) {
    day -= kDaysInMonth[static_cast<size_t>(month)];
    ++month;
  }
  out->append("2025-");
  AppendPadded(month + 1, 2, out);
  out->push_back('-');
  AppendPadded(day + 1, 2, out);
  out->push_back(' ');
  AppendPadded(second_of_day / 3600, 2, out);
  out->push_back(':');
  AppendPadded(second_of_day / 60 % 60, 2, out);
  out->push_back(':');
  AppendPadded(second_of_day % 60, 2, out);
}

// A file written under a temporary name in the target directory and renamed into place
// by Commit(), so a process that stops half way leaves no partial file under the final
// name. Bytes are collected in `buffer()` and written in chunks of about kFlushBytes.
class StagedFile {
 public:
  StagedFile() = default;
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  // Removes the temporary file unless Commit() succeeded.
  ~StagedFile() {
    if (file_ != nullptr) std::fclose(file_);
    if (!temp_path_.empty() && !committed_) std::remove(temp_path_.c_str());
  }

  [[nodiscard]] absl::Status Open(std::string final_path) {
    final_path_ = std::move(final_path);
    temp_path_ = absl::StrCat(final_path_, ".tmp.", getpid());
    file_ = std::fopen(temp_path_.c_str(), "wb");
    if (file_ == nullptr) return IoError("failed to create", temp_path_);
    buffer_.reserve(kFlushBytes + (size_t{64} << 10));
    return absl::OkStatus();
  }

  std::string* buffer() { return &buffer_; }

  // Writes the buffer out once it has grown past kFlushBytes.
  [[nodiscard]] absl::Status MaybeFlush() {
    if (buffer_.size() < kFlushBytes) return absl::OkStatus();
    return Flush();
  }

  // Writes the rest of the buffer, closes the file and renames it to the final path.
  [[nodiscard]] absl::Status Commit() {
    if (absl::Status status = Flush(); !status.ok()) return status;
    std::FILE* file = file_;
    file_ = nullptr;
    if (std::fclose(file) != 0) return IoError("failed to write", temp_path_);
    if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
      return IoError(absl::StrCat("failed to rename ", temp_path_, " to"), final_path_);
    }
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  [[nodiscard]] absl::Status Flush() {
    if (!buffer_.empty() &&
        std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size()) {
      return IoError("failed to write", temp_path_);
    }
    buffer_.clear();
    return absl::OkStatus();
  }

  static absl::Status IoError(absl::string_view action, const std::string& path) {
    return absl::InternalError(absl::StrCat(action, " ", path, ": ", std::strerror(errno)));
  }

  std::string final_path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  std::string buffer_;
  bool committed_ = false;
};

// The columns of one customer row that the transaction generator also uses.
struct Customer {
  size_t segment = 0;
  int64_t tenure_months = 0;
};

// Draws the segment and columns of one customer and appends them to `out`, starting with
// the comma after the id, which the caller has already written.
Customer AppendCustomerColumns(const std::vector<SegmentProfile>& segments, Random* random,
                               std::string* out) {
  Customer customer;
  {
    double u = random->Uniform();
    customer.segment = segments.size() - 1;
    for (size_t s = 0; s + 1 < segments.size(); ++s) {
      if (u < segments[s].weight) {
        customer.segment = s;
        break;
      }
      u -= segments[s].weight;
    }
  }
  const SegmentProfile& segment = segments[customer.segment];

  const int64_t age = std::clamp<int64_t>(std::llround(random->Normal(segment.age)), 18, 90);
  // Log-normal with mean income.mean: exp(N(log(mean) − sd²/2, sd²)).
  const double log_income = std::log(segment.income.mean) -
                            segment.income.sd * segment.income.sd / 2 +
                            segment.income.sd * random->StandardNormal();
  const int64_t income = std::llround(std::exp(log_income));
  const bool income_missing = random->Bernoulli(kMissingIncomeShare);
  const double visits = std::max(0.1, random->Normal(segment.visits_per_month));
  const double basket = std::max(1.0, random->Normal(segment.basket_size));
  customer.tenure_months =
      std::clamp<int64_t>(std::llround(random->Normal(segment.tenure_months)), 0, 240);
  const size_t channel = random->Categorical(segment.channel);
  const size_t region = random->Categorical(segment.region);
  const size_t device = random->Categorical(segment.device);

  out->push_back(',');
  AppendInt(age, out);
  out->push_back(',');
  if (!income_missing) AppendInt(income, out);
  out->push_back(',');
  AppendFixed(visits, 1, out);
  out->push_back(',');
  AppendFixed(basket, 2, out);
  out->push_back(',');
  AppendInt(customer.tenure_months, out);
  out->push_back(',');
  AppendText(kChannels[channel], out);
  out->push_back(',');
  AppendText(kRegions[region], out);
  out->push_back(',');
  AppendText(kDevices[device], out);
  out->push_back(',');
  AppendInt(static_cast<int64_t>(customer.segment), out);
  out->push_back('\n');
  return customer;
}

// Generates transaction rows customer by customer. Holds the buffers reused across
// customers, and the running invoice number.
class TransactionWriter {
 public:
  TransactionWriter(const SyntheticShopOptions& options, std::vector<SegmentProfile> segments)
      : options_(options),
        segments_(std::move(segments)),
        catalogue_(BuildCatalogue(options.seed)),
        random_(options.seed, kTransactionStream) {}

  // Appends the rows of customer `customer_id` to `out` and returns their count.
  int64_t AppendCustomerRows(absl::string_view customer_id, const Customer& customer,
                             std::string* out) {
    const SegmentProfile& segment = segments_[customer.segment];
    const int64_t rows = random_.Poisson(options_.mean_transactions * segment.row_multiplier);
    if (rows == 0) return 0;
    const absl::string_view country = kCountries[random_.Categorical(kCountryProbabilities)];

    invoice_sizes_.clear();
    for (int64_t left = rows; left > 0;) {
      const int64_t size = std::min(left, 1 + random_.Poisson(segment.rows_per_invoice - 1));
      invoice_sizes_.push_back(size);
      left -= size;
    }
    DrawInvoiceTimes(segment, customer, invoice_sizes_.size());

    for (size_t i = 0; i < invoice_sizes_.size(); ++i) {
      const bool cancelled = random_.Bernoulli(options_.cancelled_share);
      const bool anonymous = random_.Bernoulli(options_.anonymous_share);
      // The prefix is the invoice number with an optional "C" and the comma before
      // StockCode. The suffix runs from the comma before the date to the one after it.
      invoice_prefix_.clear();
      if (cancelled) invoice_prefix_.push_back('C');
      AppendInt(next_invoice_++, &invoice_prefix_);
      invoice_prefix_.push_back(',');
      invoice_suffix_.clear();
      invoice_suffix_.push_back(',');
      AppendTimestamp(invoice_times_[i], &invoice_suffix_);
      invoice_suffix_.push_back(',');

      for (int64_t r = 0; r < invoice_sizes_[i]; ++r) {
        const double u = random_.Uniform();
        const size_t index = std::min(catalogue_.size() - 1,
                                      static_cast<size_t>(static_cast<double>(catalogue_.size()) *
                                                          std::pow(u, segment.price_exponent)));
        const CatalogueItem& item = catalogue_[index];
        const int64_t quantity = 1 + random_.Poisson(segment.quantity - 1);

        out->append(invoice_prefix_);
        out->append(item.stock_code);
        out->push_back(',');
        out->append(item.description_field);
        out->push_back(',');
        AppendInt(cancelled ? -quantity : quantity, out);
        out->append(invoice_suffix_);
        AppendFixed(static_cast<double>(item.price_cents) / 100, 2, out);
        out->push_back(',');
        if (!anonymous) AppendText(customer_id, out);
        out->push_back(',');
        AppendText(country, out);
        out->push_back('\n');
      }
    }
    return rows;
  }

 private:
  // Fills invoice_times_ with `count` sorted seconds of 2025. The last purchase lies an
  // exponential number of days (mean recency_days) before 31 December. The others fall
  // uniformly in the active days before it: the tenure plus two weeks, at most a year.
  void DrawInvoiceTimes(const SegmentProfile& segment, const Customer& customer, size_t count) {
    const int64_t gap = std::min<int64_t>(
        kDaysInYear - 1, static_cast<int64_t>(random_.Exponential(segment.recency_days)));
    const int64_t last_day = kDaysInYear - 1 - gap;
    const int64_t active_days =
        std::min<int64_t>(kDaysInYear - 1, customer.tenure_months * 30 + 14);
    const int64_t first_day = std::max<int64_t>(0, last_day - active_days);

    invoice_times_.clear();
    for (size_t i = 0; i < count; ++i) {
      const int64_t day = i == 0 ? last_day : first_day + random_.Index(last_day - first_day + 1);
      const int64_t second = kOpeningSecond + random_.Index(kClosingSecond - kOpeningSecond);
      invoice_times_.push_back(day * kSecondsPerDay + second);
    }
    std::sort(invoice_times_.begin(), invoice_times_.end());
  }

  const SyntheticShopOptions& options_;
  const std::vector<SegmentProfile> segments_;
  const std::vector<CatalogueItem> catalogue_;
  Random random_;
  int64_t next_invoice_ = kFirstInvoiceNumber;
  std::vector<int64_t> invoice_sizes_;
  std::vector<int64_t> invoice_times_;
  std::string invoice_prefix_;
  std::string invoice_suffix_;
};

std::string RangeError(absl::string_view field, double value, absl::string_view range) {
  return absl::StrCat("invalid ", field, " ", value, ": set a value in ", range);
}

}  // namespace

absl::Status SyntheticShopOptions::Validate() const {
  if (num_customers < 1 || num_customers > kMaxCustomers) {
    return absl::InvalidArgumentError(absl::StrCat("invalid num_customers ", num_customers,
                                                   ": set a value in [1, ", kMaxCustomers, "]"));
  }
  if (num_segments < 1 || num_segments > kMaxSegments) {
    return absl::InvalidArgumentError(absl::StrCat("invalid num_segments ", num_segments,
                                                   ": set a value in [1, ", kMaxSegments, "]"));
  }
  // The negated comparisons also reject NaN.
  if (!(mean_transactions >= 0 && mean_transactions <= kMaxMeanTransactions)) {
    return absl::InvalidArgumentError(
        RangeError("mean_transactions", mean_transactions, "[0, 1000]"));
  }
  if (!(cancelled_share >= 0 && cancelled_share <= kMaxShare)) {
    return absl::InvalidArgumentError(RangeError("cancelled_share", cancelled_share, "[0, 0.5]"));
  }
  if (!(anonymous_share >= 0 && anonymous_share <= kMaxShare)) {
    return absl::InvalidArgumentError(RangeError("anonymous_share", anonymous_share, "[0, 0.5]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SyntheticShopFiles> WriteSyntheticShop(const std::string& directory,
                                                      const SyntheticShopOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (directory.empty()) {
    return absl::InvalidArgumentError(
        "missing output directory: pass the folder for customers.csv and transactions.csv");
  }
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", directory, ": ", error.message()));
  }

  SyntheticShopFiles files;
  files.customers_csv = (std::filesystem::path(directory) / "customers.csv").string();
  files.transactions_csv = (std::filesystem::path(directory) / "transactions.csv").string();
  StagedFile customers_file;
  StagedFile transactions_file;
  if (absl::Status status = customers_file.Open(files.customers_csv); !status.ok()) return status;
  if (absl::Status status = transactions_file.Open(files.transactions_csv); !status.ok()) {
    return status;
  }
  std::string* customers_out = customers_file.buffer();
  std::string* transactions_out = transactions_file.buffer();
  customers_out->append(
      "customer_id,age,income,visits_per_month,basket_size,tenure_months,channel,region,device,"
      "segment_truth\n");
  transactions_out->append(
      "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n");

  // Ids have at least 6 digits and all the same width, so text order is number order.
  int id_width = 6;
  for (int64_t n = options.num_customers; n >= 1000000; n /= 10) ++id_width;

  const std::vector<SegmentProfile> segments = BuildSegments(options);
  Random customer_random(options.seed, kCustomerStream);
  TransactionWriter transaction_writer(options, segments);
  std::string customer_id;
  for (int64_t c = 1; c <= options.num_customers; ++c) {
    customer_id.clear();
    customer_id.push_back('C');
    AppendPadded(c, id_width, &customer_id);
    customers_out->append(customer_id);
    const Customer customer = AppendCustomerColumns(segments, &customer_random, customers_out);
    files.transactions +=
        transaction_writer.AppendCustomerRows(customer_id, customer, transactions_out);
    if (absl::Status status = customers_file.MaybeFlush(); !status.ok()) return status;
    if (absl::Status status = transactions_file.MaybeFlush(); !status.ok()) return status;
  }
  files.customers = options.num_customers;

  if (absl::Status status = customers_file.Commit(); !status.ok()) return status;
  if (absl::Status status = transactions_file.Commit(); !status.ok()) return status;
  return files;
}

}  // namespace cohort
