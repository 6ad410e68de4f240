#include <gtest/gtest.h>

#include <vector>

#include "bench/profile_data.h"
#include "core/binary_metrics.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

// scikit-learn 1.2.1 numbers printed by
//   /usr/bin/python3 bench/compare_sklearn_logistic.py --print-cpp
// on the same design matrix and split (C = 1): the test ROC-AUC of LogisticRegression's
// fit, and the coefficients of the optimum of its objective (its own fit stops up to 1e-2
// short of that along the flat direction of a full one-hot block beside the intercept).
struct SklearnReference {
  double auc;
  double intercept;
  std::vector<double> coefficients;
};

const SklearnReference kBankMarketing{
    0.7556963585276368, -1.371741919585511, {
      0.03181269520686332, 0.04748704211577401, 0.01662349625383999, -0.21519832605942596,
      0.011736371668319576, 0.1192119050199468, -0.09486127423049737, -0.5281354156316757,
      -0.41333334558116136, -0.13710170053647816, -0.012432178716499034, -0.04684771929775432,
      0.06983270695707762, -0.060570479833370695, 0.4521230618584083, -0.009557743966023411,
      -0.18045842360604972, 0.15572379389734375, -0.28865354603829463, 0.352656591231106,
      -0.29470067646658915, -0.17909437226822122, 0.11580649264889997, 0.06330156510230368,
      -0.011868804307260365, 0.15668444543191035, -0.1762764431212869, 0.03147448747975454,
      0.5271570363704682, -0.7647610603354617, 0.23761770944798138, -0.3978463103387757,
      -0.5923388628922818, -0.7833563315446537, 0.20871332509831925, -0.8304386770252066,
      0.12494734287183239, -0.2679519213754037, -0.9495146313052449, 0.7887809029999692,
      0.741707822825652, 1.1650268574186669, 0.7922841687500495, -0.36821680009172486,
      -0.739679437864578, -0.4014277074726767, 1.5093376309117643}};

const SklearnReference kTelcoChurn{
    0.8536630434782608, -2.3030262177678003, {
      -0.9250956360099287, -0.18310880828140708, -0.08136231170606796, 0.24861412956703016,
      0.21000056400779857, 0.0599972524429994, -0.09768106584771497, -0.1333661347686799,
      0.35784112381648425, -0.0311937685032992, 0.03119630951165355, -0.2479941592542677,
      0.11462802448558448, 0.13336867577703704, 0.5603253105053297, -0.40402884504421027,
      -0.1562939244527631, 0.23039756067914519, -0.07410109521803603, -0.1562939244527631,
      0.1129082943971369, 0.043388171063981844, -0.1562939244527631, 0.05208352985394347,
      0.1042129356071677, -0.1562939244527631, 0.1897315076792751, -0.03343504221815253,
      -0.1562939244527631, -0.08657288992362017, 0.24286935538473683, -0.1562939244527631,
      -0.061009209934307466, 0.21730567539542625, -0.1562939244527631, 0.7678740013314722,
      -0.7997863515529712, 0.031914891229851305, 0.23292149508946103, -0.12629724570777603,
      0.0004977578930408134, -0.10711946626636958}};

void ExpectMatchesSklearn(const bench::ProfileData& data, const SklearnReference& reference) {
  LogisticOptions options;
  options.c = 1.0;
  options.gradient_tolerance = 1e-8;
  options.max_iterations = 10000;
  absl::StatusOr<LogisticModel> model = bench::FitProfileModel(data, options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(model->converged) << model->stop_reason;
  absl::StatusOr<BinaryMetrics> metrics =
      ComputeBinaryMetrics(data.test_labels, model->PredictProbabilities(data.test_x));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ASSERT_TRUE(metrics->roc_auc.defined);
  EXPECT_NEAR(metrics->roc_auc.value, reference.auc, 0.002);
  ASSERT_EQ(model->coefficients.size(), reference.coefficients.size());
  const std::vector<std::string> names = data.model.FeatureNames();
  for (size_t j = 0; j < reference.coefficients.size(); ++j) {
    EXPECT_NEAR(model->coefficients[j], reference.coefficients[j], 1e-3) << names[j];
  }
  EXPECT_NEAR(model->intercept, reference.intercept, 1e-3);
}

TEST(ProfileDataTest, BankMarketingMatchesScikitLearn) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  absl::StatusOr<bench::ProfileData> data =
      bench::LoadProfileData(bench::BankMarketingOptions(::cohort::testing::DataDir()));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train_rows + data->test_x.rows(), 45211);
  EXPECT_EQ(data->train_rows, 36080);
  ExpectMatchesSklearn(*data, kBankMarketing);
}

TEST(ProfileDataTest, TelcoChurnImputesBlankTotalCharges) {
  COHORT_REQUIRE_DATA_FILE(path, "telco-churn/WA_Fn-UseC_-Telco-Customer-Churn.csv");
  absl::StatusOr<bench::ProfileData> data =
      bench::LoadProfileData(bench::TelcoChurnOptions(::cohort::testing::DataDir()));
  ASSERT_TRUE(data.ok()) << data.status();
  // The 11 blank (" ") TotalCharges cells load as missing and the spec imputes them.
  EXPECT_EQ(data->report.imputed_cells["TotalCharges"], 11) << data->report.ToString();
  EXPECT_EQ(data->report.imputed_cells.count("tenure"), 0u);
  EXPECT_EQ(data->train_rows + data->test_x.rows(), 7043);
  ExpectMatchesSklearn(*data, kTelcoChurn);
}

}  // namespace
}  // namespace cohort
