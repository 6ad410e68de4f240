// Builds the design matrix of a profile model from a labelled CSV file for the
// logistic-regression comparison with scikit-learn and the real-data tests. The steps:
// infer the schema with overrides, load every shard, fit the declared pipeline on all rows,
// transform each shard and split the rows by hashed user id.
#ifndef COHORT_BENCH_PROFILE_DATA_H_
#define COHORT_BENCH_PROFILE_DATA_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/csv.h"
#include "core/logistic.h"
#include "core/pipeline.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort::bench {

// bank-marketing/bank-full.csv: `duration` is left out because it is only known after
// the call and leaks the label, as bank-additional-names.txt in the same folder warns.
inline constexpr std::string_view kBankMarketingSpec = R"(label y positive yes
column age = standardize
column balance = standardize
column day = standardize
column campaign = log1p | standardize
column pdays = standardize
column previous = log1p | standardize
column default = impute mode
column housing = impute mode
column loan = impute mode
column job = onehot 20
column marital = onehot 20
column education = onehot 20
column contact = onehot 20
column month = onehot 20
column poutcome = onehot 20
)";

// telco-churn/WA_Fn-UseC_-Telco-Customer-Churn.csv: TotalCharges is blank (" ") for the
// 11 customers with tenure 0, so the spec imputes it and adds a missing indicator.
inline constexpr std::string_view kTelcoChurnSpec = R"(label Churn positive Yes
column TotalCharges = impute median | missing_indicator | log1p | standardize
column tenure = standardize
column MonthlyCharges = standardize
column SeniorCitizen = impute mode
column Partner = impute mode
column Dependents = impute mode
column PhoneService = impute mode
column PaperlessBilling = impute mode
column gender = onehot 5
column MultipleLines = onehot 5
column InternetService = onehot 5
column OnlineSecurity = onehot 5
column OnlineBackup = onehot 5
column DeviceProtection = onehot 5
column TechSupport = onehot 5
column StreamingTV = onehot 5
column StreamingMovies = onehot 5
column Contract = onehot 5
column PaymentMethod = onehot 5
)";

struct ProfileDataOptions {
  std::string path;
  CsvOptions csv;
  SchemaOverrides overrides;
  std::string spec_text;
  int num_shards = 8;
  double test_fraction = 0.2;
  uint64_t split_seed = 7;
};

// Per-shard training and test rows, in shard-id order.
struct ProfileData {
  Schema schema;
  PipelineModel model;
  CleaningReport report;
  std::vector<MatrixXfR> train_x;
  std::vector<std::vector<uint8_t>> train_labels;
  MatrixXfR test_x;
  std::vector<uint8_t> test_labels;
  // Row order of the training matrices concatenated: shard by shard, rows in file order.
  int64_t train_rows = 0;
};

inline absl::StatusOr<ProfileData> LoadProfileData(const ProfileDataOptions& options) {
  ProfileData data;
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(options.path, options.csv);
  if (!reader.ok()) return reader.status();
  std::vector<std::vector<std::string>> sample;
  std::vector<std::string> fields;
  while (sample.size() < 2000) {
    absl::StatusOr<bool> more = (*reader)->Next(&fields);
    if (!more.ok()) return more.status();
    if (!*more) break;
    sample.push_back(fields);
  }
  absl::StatusOr<Schema> schema = InferSchema((*reader)->header(), sample, options.overrides);
  if (!schema.ok()) return schema.status();
  data.schema = *schema;

  absl::StatusOr<PipelineSpec> spec = ParsePipelineSpec(options.spec_text);
  if (!spec.ok()) return spec.status();
  UserLoadOptions load;
  load.paths = {options.path};
  load.csv = options.csv;
  load.schema = data.schema;
  load.num_shards = options.num_shards;
  for (int s = 0; s < options.num_shards; ++s) load.shards.push_back(s);
  load.cleaning = spec->cleaning;
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(load);
  if (!loaded.ok()) return loaded.status();
  data.report = loaded->cleaning_report;

  absl::StatusOr<PipelineModel> model =
      FitPipeline(*spec, data.schema, loaded->shards, &data.report);
  if (!model.ok()) return model.status();
  data.model = *std::move(model);

  std::vector<std::vector<float>> test_rows;
  for (const RawShard& shard : loaded->shards) {
    MatrixXfR x;
    std::vector<uint8_t> labels;
    if (absl::Status status = TransformShardPipeline(data.model, shard, &x, &labels, &data.report);
        !status.ok()) {
      return status;
    }
    std::vector<Eigen::Index> train;
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      if (InTestSplit(shard.ids[static_cast<size_t>(i)], options.test_fraction, options.split_seed)) {
        test_rows.emplace_back(x.row(i).data(), x.row(i).data() + x.cols());
        data.test_labels.push_back(labels[static_cast<size_t>(i)]);
      } else {
        train.push_back(i);
      }
    }
    MatrixXfR train_x(static_cast<Eigen::Index>(train.size()), x.cols());
    std::vector<uint8_t> train_labels;
    for (size_t r = 0; r < train.size(); ++r) {
      train_x.row(static_cast<Eigen::Index>(r)) = x.row(train[r]);
      train_labels.push_back(labels[static_cast<size_t>(train[r])]);
    }
    data.train_rows += static_cast<int64_t>(train.size());
    data.train_x.push_back(std::move(train_x));
    data.train_labels.push_back(std::move(train_labels));
  }
  data.test_x.resize(static_cast<Eigen::Index>(test_rows.size()), data.model.dim());
  for (size_t r = 0; r < test_rows.size(); ++r) {
    std::copy(test_rows[r].begin(), test_rows[r].end(), data.test_x.row(static_cast<Eigen::Index>(r)).data());
  }
  return data;
}

inline absl::StatusOr<LogisticModel> FitProfileModel(const ProfileData& data,
                                                     const LogisticOptions& options) {
  std::vector<TrainingShard> shards;
  static const std::vector<float> kNoWeights;
  for (size_t s = 0; s < data.train_x.size(); ++s) {
    shards.push_back({&data.train_x[s], &data.train_labels[s], &kNoWeights});
  }
  return FitLogisticOnShards(shards, options);
}

inline ProfileDataOptions BankMarketingOptions(const std::string& data_dir) {
  ProfileDataOptions options;
  options.path = data_dir + "/bank-marketing/bank-full.csv";
  options.csv.delimiter = ';';
  options.overrides.id_column = std::string(kLineNumberIdColumn);
  options.overrides.types = {{"y", ColumnType::kLabel},
                             {"default", ColumnType::kBoolean},
                             {"housing", ColumnType::kBoolean},
                             {"loan", ColumnType::kBoolean}};
  options.spec_text = std::string(kBankMarketingSpec);
  return options;
}

inline ProfileDataOptions TelcoChurnOptions(const std::string& data_dir) {
  ProfileDataOptions options;
  options.path = data_dir + "/telco-churn/WA_Fn-UseC_-Telco-Customer-Churn.csv";
  options.overrides.id_column = "customerID";
  options.overrides.types = {{"Churn", ColumnType::kLabel},
                             {"SeniorCitizen", ColumnType::kBoolean},
                             {"Partner", ColumnType::kBoolean},
                             {"Dependents", ColumnType::kBoolean},
                             {"PhoneService", ColumnType::kBoolean},
                             {"PaperlessBilling", ColumnType::kBoolean}};
  options.spec_text = std::string(kTelcoChurnSpec);
  return options;
}

}  // namespace cohort::bench

#endif  // COHORT_BENCH_PROFILE_DATA_H_
