// A seeded synthetic shop: customers with mixed numeric and categorical columns drawn
// from known segments, and their transactions. It is the built-in default data, so the
// product runs end to end with no download.
#ifndef COHORT_CORE_SYNTHETIC_H_
#define COHORT_CORE_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

struct SyntheticShopOptions {
  // Customers to generate. Range [1, 100000000].
  int64_t num_customers = 20000;
  // Hidden segments the customers are drawn from. Range [1, 64].
  int num_segments = 5;
  // Average transactions per customer (Poisson-like, segment dependent). Range [0, 1000].
  double mean_transactions = 8;
  // Share of transactions written as cancellations ("C" invoice prefix) and of rows with
  // no customer id, to exercise the cleaning rules. Range [0, 0.5] each.
  double cancelled_share = 0.02;
  double anonymous_share = 0.05;
  uint64_t seed = 7;

  [[nodiscard]] absl::Status Validate() const;
};

struct SyntheticShopFiles {
  std::string customers_csv;     // customer_id,age,income,visits_per_month,basket_size,
                                 // tenure_months,channel,region,device,segment_truth
  std::string transactions_csv;  // InvoiceNo,StockCode,Description,Quantity,InvoiceDate,
                                 // UnitPrice,CustomerID,Country (Online Retail layout)
  int64_t customers = 0;
  int64_t transactions = 0;
};

// Writes customers.csv and transactions.csv into `directory` (created when missing).
// The output depends only on the options. Errors: InvalidArgument for bad options,
// Internal (with the path and errno text) when a file cannot be written.
[[nodiscard]] absl::StatusOr<SyntheticShopFiles> WriteSyntheticShop(
    const std::string& directory, const SyntheticShopOptions& options);

}  // namespace cohort

#endif  // COHORT_CORE_SYNTHETIC_H_
