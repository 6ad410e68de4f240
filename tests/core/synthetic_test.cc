#include "core/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "core/csv.h"

namespace cohort {
namespace {

constexpr char kCustomersHeader[] =
    "customer_id,age,income,visits_per_month,basket_size,tenure_months,channel,region,device,"
    "segment_truth";
constexpr char kTransactionsHeader[] =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";

// Segment indices of the named templates, in the order the generator defines them.
constexpr int kBargainHunters = 0;
constexpr int kAffluentLoyal = 1;
constexpr int kOccasional = 2;
constexpr int kFamilies = 3;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

int64_t CountLines(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

// Reads every record of a CSV file with its header.
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> records;
};

CsvTable ReadCsv(const std::string& path) {
  CsvTable table;
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, CsvOptions());
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return table;
  table.header = (*reader)->header();
  std::vector<std::string> fields;
  while (true) {
    absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
    EXPECT_TRUE(has_record.ok()) << has_record.status();
    if (!has_record.ok() || !*has_record) break;
    table.records.push_back(fields);
  }
  return table;
}

double ParseDouble(const std::string& text) {
  double value = 0;
  EXPECT_TRUE(absl::SimpleAtod(text, &value)) << "not a number: '" << text << "'";
  return value;
}

// Day of 2025 (0 = 1 January) of a "2025-MM-DD HH:MM:SS" time.
int DayOfYear(const std::string& time) {
  static constexpr std::array<int, 12> kDaysBeforeMonth = {0,   31,  59,  90,  120, 151,
                                                           181, 212, 243, 273, 304, 334};
  const int month = std::stoi(time.substr(5, 2));
  const int day = std::stoi(time.substr(8, 2));
  return kDaysBeforeMonth[static_cast<size_t>(month - 1)] + day - 1;
}

class SyntheticShopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = std::filesystem::path(::testing::TempDir()) /
            (std::string("synthetic_test_") + info->name());
    std::filesystem::remove_all(root_);
  }

  void TearDown() override { std::filesystem::remove_all(root_); }

  // A fresh output folder under this test's root.
  std::string Folder(const std::string& name) const { return (root_ / name).string(); }

  SyntheticShopFiles Write(const std::string& name, const SyntheticShopOptions& options) {
    absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop(Folder(name), options);
    EXPECT_TRUE(files.ok()) << files.status();
    return files.ok() ? *files : SyntheticShopFiles();
  }

  std::filesystem::path root_;
};

TEST_F(SyntheticShopTest, SameOptionsGiveIdenticalBytes) {
  SyntheticShopOptions options;
  options.num_customers = 3000;
  const SyntheticShopFiles first = Write("first", options);
  const SyntheticShopFiles second = Write("second", options);

  EXPECT_EQ(ReadFile(first.customers_csv), ReadFile(second.customers_csv));
  EXPECT_EQ(ReadFile(first.transactions_csv), ReadFile(second.transactions_csv));
  EXPECT_EQ(first.transactions, second.transactions);
}

TEST_F(SyntheticShopTest, DifferentSeedChangesBytes) {
  SyntheticShopOptions options;
  options.num_customers = 3000;
  const SyntheticShopFiles first = Write("first", options);
  options.seed += 1;
  const SyntheticShopFiles second = Write("second", options);

  EXPECT_NE(ReadFile(first.customers_csv), ReadFile(second.customers_csv));
  EXPECT_NE(ReadFile(first.transactions_csv), ReadFile(second.transactions_csv));
}

TEST_F(SyntheticShopTest, TransactionOptionsLeaveCustomersUnchanged) {
  SyntheticShopOptions options;
  options.num_customers = 2000;
  const SyntheticShopFiles first = Write("first", options);
  options.mean_transactions = 3;
  options.cancelled_share = 0.1;
  const SyntheticShopFiles second = Write("second", options);

  EXPECT_EQ(ReadFile(first.customers_csv), ReadFile(second.customers_csv));
}

TEST_F(SyntheticShopTest, HeaderLinesAreExact) {
  SyntheticShopOptions options;
  options.num_customers = 10;
  const SyntheticShopFiles files = Write("out", options);

  EXPECT_EQ(FirstLine(ReadFile(files.customers_csv)), kCustomersHeader);
  EXPECT_EQ(FirstLine(ReadFile(files.transactions_csv)), kTransactionsHeader);
}

TEST_F(SyntheticShopTest, RowCountsMatchOptions) {
  SyntheticShopOptions options;
  options.num_customers = 20000;
  options.mean_transactions = 8;
  const SyntheticShopFiles files = Write("out", options);

  EXPECT_EQ(files.customers, 20000);
  EXPECT_EQ(CountLines(ReadFile(files.customers_csv)), 20000 + 1);
  EXPECT_EQ(CountLines(ReadFile(files.transactions_csv)), files.transactions + 1);
  // The row count sums 20000 Poisson draws whose means average 8. With the spread of
  // means between segments its standard deviation is about 0.5% of 160000, so a 5%
  // tolerance is far outside sampling noise and still catches a wrong scale.
  EXPECT_NEAR(static_cast<double>(files.transactions), 160000.0, 0.05 * 160000.0);
}

TEST_F(SyntheticShopTest, ZeroMeanTransactionsWritesOnlyHeader) {
  SyntheticShopOptions options;
  options.num_customers = 100;
  options.mean_transactions = 0;
  const SyntheticShopFiles files = Write("out", options);

  EXPECT_EQ(files.transactions, 0);
  EXPECT_EQ(ReadFile(files.transactions_csv), std::string(kTransactionsHeader) + "\n");
}

TEST_F(SyntheticShopTest, CustomersLoadThroughCsvReader) {
  SyntheticShopOptions options;
  options.num_customers = 20000;
  const SyntheticShopFiles files = Write("out", options);
  const CsvTable table = ReadCsv(files.customers_csv);

  ASSERT_EQ(table.header.size(), 10u);
  ASSERT_EQ(table.records.size(), 20000u);
  EXPECT_EQ(table.records.front()[0], "C000001");
  EXPECT_EQ(table.records.back()[0], "C020000");

  const std::set<std::string> channels = {"web", "app", "store"};
  const std::set<std::string> regions = {"north", "south", "east", "west", "central"};
  const std::set<std::string> devices = {"ios", "android", "desktop"};
  int64_t missing_income = 0;
  std::set<std::string> segments_seen;
  for (const std::vector<std::string>& record : table.records) {
    ASSERT_EQ(record.size(), 10u);
    const double age = ParseDouble(record[1]);
    EXPECT_GE(age, 18);
    EXPECT_LE(age, 90);
    if (record[2].empty()) {
      ++missing_income;
    } else {
      EXPECT_GT(ParseDouble(record[2]), 0);
    }
    EXPECT_GE(ParseDouble(record[3]), 0);
    EXPECT_GE(ParseDouble(record[4]), 1);
    EXPECT_GE(ParseDouble(record[5]), 0);
    EXPECT_TRUE(channels.count(record[6])) << record[6];
    EXPECT_TRUE(regions.count(record[7])) << record[7];
    EXPECT_TRUE(devices.count(record[8])) << record[8];
    segments_seen.insert(record[9]);
  }
  EXPECT_EQ(segments_seen, (std::set<std::string>{"0", "1", "2", "3", "4"}));
  // 1% of 20000 is 200 with a binomial standard deviation of 14, so [100, 300] spans
  // 7 standard deviations each side.
  EXPECT_GE(missing_income, 100);
  EXPECT_LE(missing_income, 300);
}

TEST_F(SyntheticShopTest, SegmentsDifferInAgeOrIncome) {
  SyntheticShopOptions options;
  options.num_customers = 20000;
  const SyntheticShopFiles files = Write("out", options);
  const CsvTable table = ReadCsv(files.customers_csv);
  ASSERT_EQ(table.records.size(), 20000u);

  std::map<int, std::vector<double>> ages;
  std::map<int, std::vector<double>> incomes;
  for (const std::vector<std::string>& record : table.records) {
    const int segment = std::stoi(record[9]);
    ages[segment].push_back(ParseDouble(record[1]));
    if (!record[2].empty()) incomes[segment].push_back(ParseDouble(record[2]));
  }
  auto mean = [](const std::vector<double>& values) {
    double sum = 0;
    for (double v : values) sum += v;
    return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
  };

  ASSERT_EQ(ages.size(), 5u);
  // The smallest segment has about 2400 customers, so the standard error of a mean age is
  // below 0.4 years and of a mean income below 1200. These margins are real differences.
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) {
      const double age_gap = std::abs(mean(ages[a]) - mean(ages[b]));
      const double income_gap = std::abs(mean(incomes[a]) - mean(incomes[b]));
      EXPECT_TRUE(age_gap >= 4 || income_gap >= 15000)
          << "segments " << a << " and " << b << ": mean ages differ by " << age_gap
          << " years and mean incomes by " << income_gap;
    }
  }
  EXPECT_GT(mean(incomes[kAffluentLoyal]), 2 * mean(incomes[kBargainHunters]));
  EXPECT_LT(mean(ages[kBargainHunters]), mean(ages[kAffluentLoyal]) - 15);
}

// Per-customer RFM summary, and the cleaning counts, of a transactions file.
struct TransactionSummary {
  int64_t rows = 0;
  int64_t cancelled_rows = 0;
  int64_t anonymous_rows = 0;
  std::map<std::string, int> last_day;
  std::map<std::string, std::set<std::string>> invoices;
  std::map<std::string, double> monetary;
};

TransactionSummary SummarizeTransactions(const std::string& path) {
  TransactionSummary summary;
  const CsvTable table = ReadCsv(path);
  EXPECT_EQ(table.header.size(), 8u);
  for (const std::vector<std::string>& record : table.records) {
    ++summary.rows;
    const std::string& invoice = record[0];
    const double quantity = ParseDouble(record[3]);
    const bool cancelled = !invoice.empty() && invoice[0] == 'C';
    EXPECT_EQ(cancelled, quantity < 0) << "invoice " << invoice << " quantity " << record[3];
    EXPECT_EQ(record[4].size(), 19u) << record[4];
    EXPECT_EQ(record[4].substr(0, 5), "2025-") << record[4];
    if (cancelled) ++summary.cancelled_rows;
    const std::string& customer = record[6];
    if (customer.empty()) {
      ++summary.anonymous_rows;
      continue;
    }
    if (cancelled) continue;
    int& last = summary.last_day.try_emplace(customer, 0).first->second;
    last = std::max(last, DayOfYear(record[4]));
    summary.invoices[customer].insert(invoice);
    summary.monetary[customer] += quantity * ParseDouble(record[5]);
  }
  return summary;
}

TEST_F(SyntheticShopTest, CancelledAndAnonymousSharesMatchOptions) {
  SyntheticShopOptions options;
  options.num_customers = 20000;
  options.cancelled_share = 0.02;
  options.anonymous_share = 0.05;
  const SyntheticShopFiles files = Write("out", options);
  const TransactionSummary summary = SummarizeTransactions(files.transactions_csv);
  ASSERT_EQ(summary.rows, files.transactions);
  ASSERT_GT(summary.rows, 100000);

  // Both flags are drawn per invoice (about 64000 here, of 2.5 rows on average), so the
  // row share has a standard deviation of at most 5% of the option. A tolerance of 25%
  // of the option is at least 5 standard deviations.
  const double rows = static_cast<double>(summary.rows);
  EXPECT_NEAR(static_cast<double>(summary.cancelled_rows) / rows, 0.02, 0.25 * 0.02);
  EXPECT_NEAR(static_cast<double>(summary.anonymous_rows) / rows, 0.05, 0.25 * 0.05);
}

TEST_F(SyntheticShopTest, ZeroSharesWriteNoCancelledOrAnonymousRows) {
  SyntheticShopOptions options;
  options.num_customers = 2000;
  options.cancelled_share = 0;
  options.anonymous_share = 0;
  const SyntheticShopFiles files = Write("out", options);
  const TransactionSummary summary = SummarizeTransactions(files.transactions_csv);

  EXPECT_GT(summary.rows, 0);
  EXPECT_EQ(summary.cancelled_rows, 0);
  EXPECT_EQ(summary.anonymous_rows, 0);
}

TEST_F(SyntheticShopTest, RfmFeaturesSeparateSegments) {
  SyntheticShopOptions options;
  options.num_customers = 20000;
  const SyntheticShopFiles files = Write("out", options);
  const CsvTable customers = ReadCsv(files.customers_csv);
  const TransactionSummary summary = SummarizeTransactions(files.transactions_csv);

  // Mean recency (days before 31 December), frequency (invoices) and monetary value per
  // segment, over the customers with at least one kept purchase.
  std::map<int, double> recency;
  std::map<int, double> frequency;
  std::map<int, double> basket_value;
  std::map<int, int> buyers;
  for (const std::vector<std::string>& record : customers.records) {
    const auto last = summary.last_day.find(record[0]);
    if (last == summary.last_day.end()) continue;
    const int segment = std::stoi(record[9]);
    const double invoices = static_cast<double>(summary.invoices.at(record[0]).size());
    recency[segment] += 364 - last->second;
    frequency[segment] += invoices;
    basket_value[segment] += summary.monetary.at(record[0]) / invoices;
    ++buyers[segment];
  }
  for (auto& [segment, count] : buyers) {
    ASSERT_GT(count, 500) << "segment " << segment;
    recency[segment] /= count;
    frequency[segment] /= count;
    basket_value[segment] /= count;
  }

  EXPECT_LT(recency[kAffluentLoyal] * 4, recency[kOccasional]);
  EXPECT_GT(frequency[kAffluentLoyal], 2 * frequency[kOccasional]);
  EXPECT_GT(basket_value[kFamilies], 2 * basket_value[kBargainHunters]);
  EXPECT_GT(basket_value[kAffluentLoyal], basket_value[kOccasional]);
}

TEST_F(SyntheticShopTest, ExtraSegmentsAreDerived) {
  SyntheticShopOptions options;
  options.num_customers = 6000;
  options.num_segments = 12;
  const SyntheticShopFiles files = Write("out", options);
  const CsvTable table = ReadCsv(files.customers_csv);

  std::set<int> segments_seen;
  for (const std::vector<std::string>& record : table.records) {
    segments_seen.insert(std::stoi(record[9]));
  }
  ASSERT_EQ(segments_seen.size(), 12u);
  EXPECT_EQ(*segments_seen.begin(), 0);
  EXPECT_EQ(*segments_seen.rbegin(), 11);
}

TEST_F(SyntheticShopTest, SingleSegmentIsAllowed) {
  SyntheticShopOptions options;
  options.num_customers = 500;
  options.num_segments = 1;
  const SyntheticShopFiles files = Write("out", options);
  const CsvTable table = ReadCsv(files.customers_csv);

  ASSERT_EQ(table.records.size(), 500u);
  for (const std::vector<std::string>& record : table.records) EXPECT_EQ(record[9], "0");
}

TEST_F(SyntheticShopTest, OutputFolderHoldsOnlyTheTwoFiles) {
  SyntheticShopOptions options;
  options.num_customers = 100;
  const std::string folder = Folder("nested/out");
  ASSERT_TRUE(WriteSyntheticShop(folder, options).ok());

  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    names.insert(entry.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"customers.csv", "transactions.csv"}));
}

TEST_F(SyntheticShopTest, FileInPlaceOfFolderIsInternalError) {
  std::filesystem::create_directories(root_);
  const std::string blocker = (root_ / "blocker").string();
  std::ofstream(blocker) << "not a folder\n";

  const absl::StatusOr<SyntheticShopFiles> files =
      WriteSyntheticShop(blocker, SyntheticShopOptions());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(files.status().message().find(blocker), std::string::npos) << files.status();
}

TEST_F(SyntheticShopTest, EmptyDirectoryIsInvalidArgument) {
  const absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop("", SyntheticShopOptions());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticShopOptionsTest, DefaultsAreValid) {
  EXPECT_TRUE(SyntheticShopOptions().Validate().ok());
}

TEST(SyntheticShopOptionsTest, InvalidValuesNameTheField) {
  struct Case {
    std::string field;
    SyntheticShopOptions options;
  };
  std::vector<Case> cases;
  auto add = [&cases](const std::string& field, auto change) {
    SyntheticShopOptions options;
    change(options);
    cases.push_back({field, options});
  };
  add("num_customers", [](SyntheticShopOptions& o) { o.num_customers = 0; });
  add("num_customers", [](SyntheticShopOptions& o) { o.num_customers = 100000001; });
  add("num_segments", [](SyntheticShopOptions& o) { o.num_segments = 0; });
  add("num_segments", [](SyntheticShopOptions& o) { o.num_segments = 65; });
  add("mean_transactions", [](SyntheticShopOptions& o) { o.mean_transactions = -1; });
  add("mean_transactions", [](SyntheticShopOptions& o) { o.mean_transactions = 1001; });
  add("mean_transactions", [](SyntheticShopOptions& o) { o.mean_transactions = std::nan(""); });
  add("cancelled_share", [](SyntheticShopOptions& o) { o.cancelled_share = -0.1; });
  add("cancelled_share", [](SyntheticShopOptions& o) { o.cancelled_share = 0.6; });
  add("anonymous_share", [](SyntheticShopOptions& o) { o.anonymous_share = 0.51; });
  add("anonymous_share", [](SyntheticShopOptions& o) { o.anonymous_share = std::nan(""); });

  for (const Case& c : cases) {
    const absl::Status status = c.options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status;

    const absl::StatusOr<SyntheticShopFiles> files = WriteSyntheticShop("unused", c.options);
    EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
  }
  EXPECT_FALSE(std::filesystem::exists("unused"));
}

TEST(SyntheticShopOptionsTest, BoundaryValuesAreValid) {
  SyntheticShopOptions options;
  options.num_customers = 1;
  options.num_segments = 64;
  options.mean_transactions = 1000;
  options.cancelled_share = 0.5;
  options.anonymous_share = 0;
  EXPECT_TRUE(options.Validate().ok());
}

}  // namespace
}  // namespace cohort
