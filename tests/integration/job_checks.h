// Checks shared by the integration tests: statuses, running a job through the public
// API, and comparisons of models and assignments.
#ifndef COHORT_TESTS_INTEGRATION_JOB_CHECKS_H_
#define COHORT_TESTS_INTEGRATION_JOB_CHECKS_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.pb.h"
#include "core/csv.h"
#include "core/status_macros.h"
#include "tests/integration/test_cluster.h"

namespace cohort::testing {

// Checks the code of `status` and that its message contains every one of `parts`.
inline ::testing::AssertionResult HasError(const absl::Status& status, absl::StatusCode code,
                                    const std::vector<std::string>& parts) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected code " << absl::StatusCodeToString(code) << ", got " << status;
  }
  for (const std::string& part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure() << "message lacks '" << part << "': " << status;
    }
  }
  return ::testing::AssertionSuccess();
}

inline v1::SegmentationOptions WithK(int k) {
  v1::SegmentationOptions options;
  options.set_k(k);
  return options;
}


// Polls GetJob until the job is RUNNING in its seeding or Lloyd phase.
inline absl::Status AwaitJobComputing(TestCluster& cluster, const std::string& job_id) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (absl::Now() < give_up) {
    COHORT_ASSIGN_OR_RETURN(v1::Job job, cluster.GetJob(job_id));
    if (IsFinal(job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " ended ", v1::JobState_Name(job.state()),
                       " before the test could act; make the job longer"));
    }
    const std::string& phase = job.last_event().phase();
    if (job.state() == v1::JOB_STATE_RUNNING && (phase == "init" || phase == "lloyd")) {
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("job ", job_id, " did not reach seeding or Lloyd within 60 s"));
}

// What one successful job produced.
struct JobOutput {
  v1::Job job;
  v1::SegmentModel model;
  std::vector<v1::Assignment> assignments;
};

// Runs a job on `dataset_id` and reads its model and assignments. Errors: the first
// failing call, or the job's own error when it did not succeed.
inline absl::StatusOr<JobOutput> Segment(TestCluster& cluster, const std::string& dataset_id,
                                  const v1::SegmentationOptions& options) {
  JobOutput output;
  COHORT_ASSIGN_OR_RETURN(output.job, cluster.RunSegmentation(dataset_id, options));
  if (output.job.state() != v1::JOB_STATE_SUCCEEDED) {
    const absl::StatusCode code = output.job.error_code() == 0
                                      ? absl::StatusCode::kUnknown
                                      : static_cast<absl::StatusCode>(output.job.error_code());
    return absl::Status(code, absl::StrCat("job ", output.job.job_id(), " ended ",
                                           v1::JobState_Name(output.job.state()), ": ",
                                           output.job.error_message()));
  }
  COHORT_ASSIGN_OR_RETURN(output.model, cluster.GetSegmentModel(output.job.model_id()));
  COHORT_ASSIGN_OR_RETURN(output.assignments, cluster.ExportAssignments(output.job.model_id()));
  return output;
}

// Asserts equality, not closeness: the merge rule makes results independent of the
// worker count, the placement and the OpenMP thread count.
inline void ExpectSameModel(const v1::SegmentModel& expected, const v1::SegmentModel& actual) {
  EXPECT_EQ(actual.requested_k(), expected.requested_k());
  EXPECT_EQ(actual.effective_k(), expected.effective_k());
  EXPECT_EQ(std::vector<std::string>(actual.feature_names().begin(), actual.feature_names().end()),
            std::vector<std::string>(expected.feature_names().begin(),
                                     expected.feature_names().end()));
  ASSERT_EQ(actual.centroids().rows(), expected.centroids().rows());
  ASSERT_EQ(actual.centroids().cols(), expected.centroids().cols());
  ASSERT_EQ(actual.centroids().values_size(), expected.centroids().values_size());
  const int d = expected.centroids().cols();
  for (int i = 0; i < expected.centroids().values_size(); ++i) {
    EXPECT_EQ(actual.centroids().values(i), expected.centroids().values(i))
        << "centroid " << i / d << ", feature " << expected.feature_names(i % d);
  }
  EXPECT_EQ(actual.inertia(), expected.inertia());
  EXPECT_EQ(actual.iterations(), expected.iterations());
  EXPECT_EQ(actual.num_users(), expected.num_users());
  ASSERT_EQ(actual.segments_size(), expected.segments_size());
  for (int s = 0; s < expected.segments_size(); ++s) {
    EXPECT_EQ(actual.segments(s).size(), expected.segments(s).size()) << "segment " << s;
  }
}

inline std::map<std::string, v1::Assignment> ByUser(const std::vector<v1::Assignment>& assignments) {
  std::map<std::string, v1::Assignment> by_user;
  for (const v1::Assignment& assignment : assignments) {
    EXPECT_TRUE(by_user.emplace(assignment.user_id(), assignment).second)
        << "user " << assignment.user_id() << " is exported twice";
  }
  return by_user;
}

inline void ExpectSameAssignments(const std::vector<v1::Assignment>& expected,
                           const std::vector<v1::Assignment>& actual) {
  ASSERT_EQ(actual.size(), expected.size());
  const std::map<std::string, v1::Assignment> expected_by_user = ByUser(expected);
  const std::map<std::string, v1::Assignment> actual_by_user = ByUser(actual);
  int mismatches = 0;
  for (const auto& [user, want] : expected_by_user) {
    auto it = actual_by_user.find(user);
    const bool same = it != actual_by_user.end() && it->second.segment() == want.segment() &&
                      it->second.squared_distance() == want.squared_distance();
    if (same) continue;
    // The first few differences are shown; the count below covers the rest.
    if (++mismatches <= 5) {
      ADD_FAILURE() << "user " << user << ": expected segment " << want.segment() << " at "
                    << want.squared_distance() << ", got "
                    << (it == actual_by_user.end()
                            ? std::string("no assignment")
                            : absl::StrCat("segment ", it->second.segment(), " at ",
                                           it->second.squared_distance()));
    }
  }
  EXPECT_EQ(mismatches, 0) << "users assigned differently";
}


// The model's centroids in the raw units of its numeric columns (scale × value + mean),
// sorted, so models whose standardization or segment order differ can be compared.
inline std::vector<std::vector<double>> RawCentroids(const v1::SegmentModel& model) {
  const int d = model.centroids().cols();
  std::vector<std::vector<double>> centroids(model.centroids().rows(), std::vector<double>(d));
  for (int c = 0; c < model.centroids().rows(); ++c) {
    for (int j = 0; j < d; ++j) {
      const v1::NumericFeature& feature = model.transform().numeric(j);
      centroids[c][j] = feature.scale() * model.centroids().values(c * d + j) + feature.mean();
    }
  }
  std::sort(centroids.begin(), centroids.end());
  return centroids;
}

inline void ExpectCentroidsNear(const std::vector<std::vector<double>>& expected,
                         const std::vector<std::vector<double>>& actual, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t c = 0; c < expected.size(); ++c) {
    ASSERT_EQ(actual[c].size(), expected[c].size()) << "centroid " << c;
    for (size_t j = 0; j < expected[c].size(); ++j) {
      EXPECT_NEAR(actual[c][j], expected[c][j], tolerance) << "centroid " << c << ", column " << j;
    }
  }
}

// A CSV file's header and records.
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

inline absl::StatusOr<CsvTable> ReadCsv(const std::string& path) {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CsvReader> reader, CsvReader::Open(path, CsvOptions()));
  CsvTable table;
  table.header = reader->header();
  std::vector<std::string> fields;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool more, reader->Next(&fields));
    if (!more) break;
    table.rows.push_back(fields);
  }
  return table;
}

// Streams the rows of `table` into the created dataset `dataset_id` in batches of 500.
// Returns the rows the coordinator accepted. Errors: the IngestUsers status.
inline absl::StatusOr<int64_t> StreamTable(TestCluster& cluster, const std::string& dataset_id,
                                    const CsvTable& table) {
  v1::IngestUsersResponse response;
  auto context = TestCluster::Context();
  auto writer = cluster.stub().IngestUsers(context.get(), &response);
  constexpr size_t kBatchRows = 500;
  for (size_t begin = 0; begin < table.rows.size(); begin += kBatchRows) {
    v1::IngestUsersRequest batch;
    if (begin == 0) batch.set_dataset_id(dataset_id);
    for (size_t i = begin; i < std::min(table.rows.size(), begin + kBatchRows); ++i) {
      v1::UserRow* row = batch.add_rows();
      for (const std::string& cell : table.rows[i]) row->add_cells(cell);
    }
    if (!writer->Write(batch)) break;  // Finish() returns the reason
  }
  writer->WritesDone();
  const grpc::Status ingested = writer->Finish();
  if (!ingested.ok()) return FromGrpcStatus(ingested);
  return response.rows_accepted();
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_INTEGRATION_JOB_CHECKS_H_
