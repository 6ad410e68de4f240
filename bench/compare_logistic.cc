// cohort_logistic_quality: builds the design matrix of a labelled public data set with the
// profile pipeline (bench/profile_data.h), fits cohort's logistic regression on the
// training split and prints its test ROC-AUC and coefficients. With --out it also writes
// the matrix, so that bench/compare_sklearn_logistic.py fits scikit-learn on the same
// numbers and split.
//
// Output file: CSV with the header "split,label,<feature names>" and one row per user,
// training rows first (shard by shard), then test rows. Every feature is the float32 value
// printed with 9 significant digits, which reads back as the same float32.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "bench/profile_data.h"
#include "core/binary_metrics.h"

namespace cohort {
namespace {

int Run(int argc, char** argv) {
  CLI::App app("Fit cohort's logistic regression on a public data set");
  std::string data_dir = COHORT_DEFAULT_DATA_DIR;
  std::string dataset = "bank-marketing";
  std::string out;
  double c = 1.0;
  app.add_option("--data-dir", data_dir, "folder with the public data sets");
  app.add_option("--dataset", dataset, "bank-marketing or telco-churn")
      ->check(CLI::IsMember({"bank-marketing", "telco-churn"}));
  app.add_option("--c", c, "inverse L2 strength, as scikit-learn's C");
  app.add_option("--out", out, "CSV file to write the design matrix and split to");
  CLI11_PARSE(app, argc, argv);

  const bench::ProfileDataOptions options = dataset == "bank-marketing"
                                                ? bench::BankMarketingOptions(data_dir)
                                                : bench::TelcoChurnOptions(data_dir);
  absl::StatusOr<bench::ProfileData> data = bench::LoadProfileData(options);
  if (!data.ok()) {
    std::fprintf(stderr, "cohort_logistic_quality: %s\n", data.status().ToString().c_str());
    return 1;
  }
  LogisticOptions logistic;
  logistic.c = c;
  logistic.gradient_tolerance = 1e-8;
  logistic.max_iterations = 10000;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<LogisticModel> model = bench::FitProfileModel(*data, logistic);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!model.ok()) {
    std::fprintf(stderr, "cohort_logistic_quality: %s\n", model.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<BinaryMetrics> metrics =
      ComputeBinaryMetrics(data->test_labels, model->PredictProbabilities(data->test_x));
  if (!metrics.ok()) {
    std::fprintf(stderr, "cohort_logistic_quality: %s\n", metrics.status().ToString().c_str());
    return 1;
  }
  const std::vector<std::string> names = data->model.FeatureNames();
  std::printf("dataset %s: %lld train rows, %lld test rows, %d features, C %g\n", dataset.c_str(),
              static_cast<long long>(data->train_rows),
              static_cast<long long>(data->test_x.rows()), data->model.dim(), c);
  std::printf("cleaning: %s", data->report.ToString().c_str());
  std::printf("fit: %d iterations, %d evaluations, %.3f s, objective %.12g, gradient max %.2e, %s\n",
              model->iterations, model->evaluations, seconds, model->objective,
              model->gradient_max, model->stop_reason.c_str());
  std::printf("test ROC-AUC %.6f  PR-AUC %.6f  log loss %.6f  accuracy %.6f\n",
              metrics->roc_auc.value, metrics->pr_auc.value, metrics->log_loss.value,
              metrics->accuracy.value);
  std::printf("intercept %.9f\n", model->intercept);
  for (size_t j = 0; j < names.size(); ++j) {
    std::printf("coef %-32s %.9f\n", names[j].c_str(), model->coefficients[j]);
  }

  if (!out.empty()) {
    std::ofstream file(out);
    file << "split,label";
    for (const std::string& name : names) file << ",\"" << name << "\"";
    file << "\n";
    auto write_row = [&file](const char* split, int label, const float* row, int d) {
      file << split << "," << label;
      for (int j = 0; j < d; ++j) file << "," << absl::StrFormat("%.9g", row[j]);
      file << "\n";
    };
    for (size_t s = 0; s < data->train_x.size(); ++s) {
      for (Eigen::Index i = 0; i < data->train_x[s].rows(); ++i) {
        write_row("train", data->train_labels[s][static_cast<size_t>(i)],
                  data->train_x[s].row(i).data(), data->model.dim());
      }
    }
    for (Eigen::Index i = 0; i < data->test_x.rows(); ++i) {
      write_row("test", data->test_labels[static_cast<size_t>(i)], data->test_x.row(i).data(),
                data->model.dim());
    }
    if (!file) {
      std::fprintf(stderr, "cohort_logistic_quality: writing %s failed\n", out.c_str());
      return 1;
    }
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) { return cohort::Run(argc, argv); }
