// An in-process cohort cluster for integration tests: real WorkerServer and
// CoordinatorServer instances on loopback ports, and a public-API client whose every call
// carries a deadline.
#ifndef COHORT_TESTS_INTEGRATION_TEST_CLUSTER_H_
#define COHORT_TESTS_INTEGRATION_TEST_CLUSTER_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "proto/convert.h"
#include "worker/worker_server.h"

namespace cohort::testing {

// Deadline of one unary call, or of one whole server stream, in these tests.
inline constexpr absl::Duration kCallTimeout = absl::Seconds(60);
// Deadline of the WatchJob stream that waits for a job to end.
inline constexpr absl::Duration kJobTimeout = absl::Seconds(180);

inline bool IsFinal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

// The error of a job that ended FAILED or CANCELLED, as a status (OK when it succeeded).
inline absl::Status JobError(const v1::Job& job) {
  return absl::Status(static_cast<absl::StatusCode>(job.error_code()), job.error_message());
}

// A folder under the system temp folder, removed with its content on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "cohort-test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp(" << pattern << ") failed";
      return;
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code error;
    if (!path_.empty()) std::filesystem::remove_all(path_, error);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  // Writes `text` to the file `name` in this folder and returns its full path.
  std::string WriteFile(const std::string& name, const std::string& text) const {
    const std::string file = (std::filesystem::path(path_) / name).string();
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) ADD_FAILURE() << "cannot write " << file;
    return file;
  }

 private:
  std::string path_;
};

struct TestClusterOptions {
  int num_workers = 3;
  // Worker addresses given to the coordinator after the live workers' addresses, for
  // example an address where nothing listens. Their ids continue the "worker-<i>" list.
  std::vector<std::string> extra_worker_addresses;
  absl::Duration probe_interval = absl::Seconds(1);
  absl::Duration probe_timeout = absl::Seconds(2);
  int probe_failures = 3;
  absl::Duration step_timeout = absl::Minutes(10);
};

// Thread safety: the call helpers may be used from several threads; Start and the
// destructor may not run concurrently with them.
class TestCluster {
 public:
  // Starts the workers on 127.0.0.1:0, then a coordinator that is given their addresses,
  // so the coordinator names worker i "worker-<i>".
  static absl::StatusOr<std::unique_ptr<TestCluster>> Start(const TestClusterOptions& options) {
    std::unique_ptr<TestCluster> cluster(new TestCluster());
    CoordinatorServerOptions coordinator_options;
    for (int i = 0; i < options.num_workers; ++i) {
      WorkerServerOptions worker_options;
      worker_options.listen_address = "127.0.0.1:0";
      worker_options.worker_id = absl::StrCat("worker-", i);
      absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(worker_options);
      if (!worker.ok()) return worker.status();
      coordinator_options.worker_addresses.push_back((*worker)->address());
      cluster->workers_.push_back(std::move(*worker));
    }
    for (const std::string& address : options.extra_worker_addresses) {
      coordinator_options.worker_addresses.push_back(address);
    }
    coordinator_options.listen_address = "127.0.0.1:0";
    coordinator_options.probe_interval = options.probe_interval;
    coordinator_options.probe_timeout = options.probe_timeout;
    coordinator_options.probe_failures = options.probe_failures;
    coordinator_options.step_timeout = options.step_timeout;
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator =
        CoordinatorServer::Start(coordinator_options);
    if (!coordinator.ok()) return coordinator.status();
    cluster->coordinator_ = std::move(*coordinator);
    cluster->stub_ = v1::Cohort::NewStub(grpc::CreateChannel(
        cluster->coordinator_->address(), grpc::InsecureChannelCredentials()));
    return cluster;
  }

  // A client of a coordinator that runs elsewhere, at `coordinator_address`. It has no
  // in-process coordinator or workers, so coordinator() and worker() must not be called.
  static std::unique_ptr<TestCluster> Connect(const std::string& coordinator_address) {
    std::unique_ptr<TestCluster> cluster(new TestCluster());
    cluster->stub_ = v1::Cohort::NewStub(
        grpc::CreateChannel(coordinator_address, grpc::InsecureChannelCredentials()));
    return cluster;
  }

  // Stops the coordinator first, which cancels its running jobs, then the workers.
  ~TestCluster() {
    if (coordinator_ != nullptr) coordinator_->Shutdown(absl::Seconds(1));
    for (auto& worker : workers_) worker->Shutdown(absl::Seconds(1));
  }

  v1::Cohort::Stub& stub() { return *stub_; }
  CoordinatorServer& coordinator() { return *coordinator_; }
  WorkerServer& worker(int i) { return *workers_.at(i); }
  int num_workers() const { return static_cast<int>(workers_.size()); }

  // A client context whose deadline is `timeout` from now.
  static std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = kCallTimeout) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
    return context;
  }

  absl::StatusOr<v1::Dataset> CreateDataset(const v1::CreateDatasetRequest& request) {
    v1::Dataset dataset;
    const grpc::Status status = stub_->CreateDataset(Context().get(), request, &dataset);
    if (!status.ok()) return FromGrpcStatus(status);
    return dataset;
  }

  absl::StatusOr<v1::Dataset> LoadDataset(const v1::LoadDatasetRequest& request) {
    v1::Dataset dataset;
    const grpc::Status status = stub_->LoadDataset(Context().get(), request, &dataset);
    if (!status.ok()) return FromGrpcStatus(status);
    return dataset;
  }

  absl::StatusOr<v1::Dataset> GetDataset(const std::string& dataset_id) {
    v1::GetDatasetRequest request;
    request.set_dataset_id(dataset_id);
    v1::Dataset dataset;
    const grpc::Status status = stub_->GetDataset(Context().get(), request, &dataset);
    if (!status.ok()) return FromGrpcStatus(status);
    return dataset;
  }

  // Creates a dataset from `create` and loads `load` into it (load.dataset_id is set to
  // the created id). Returns the loaded dataset, or the first failing call's status.
  absl::StatusOr<v1::Dataset> CreateAndLoad(const v1::CreateDatasetRequest& create,
                                            v1::LoadDatasetRequest load) {
    absl::StatusOr<v1::Dataset> created = CreateDataset(create);
    if (!created.ok()) return created.status();
    load.set_dataset_id(created->dataset_id());
    return LoadDataset(load);
  }

  // Creates a USERS dataset with an inferred schema and loads the CSV file `path`;
  // `weight_column`, when not empty, is the column of sample weights.
  absl::StatusOr<v1::Dataset> LoadUsers(const std::string& path, const std::string& id_column,
                                        const std::vector<std::string>& ignore = {},
                                        int num_shards = 0,
                                        const std::string& weight_column = "") {
    v1::CreateDatasetRequest create;
    create.set_kind(v1::DATASET_KIND_USERS);
    create.set_num_shards(num_shards);
    v1::LoadDatasetRequest load;
    load.set_source(path);
    load.set_id_column(id_column);
    for (const std::string& name : ignore) {
      (*load.mutable_overrides())[name] = v1::COLUMN_TYPE_IGNORE;
    }
    if (!weight_column.empty()) {
      (*load.mutable_overrides())[weight_column] = v1::COLUMN_TYPE_WEIGHT;
    }
    return CreateAndLoad(create, load);
  }

  absl::StatusOr<v1::Job> StartSegmentation(const std::string& dataset_id,
                                            const v1::SegmentationOptions& options) {
    v1::StartSegmentationRequest request;
    request.set_dataset_id(dataset_id);
    *request.mutable_options() = options;
    v1::Job job;
    const grpc::Status status = stub_->StartSegmentation(Context().get(), request, &job);
    if (!status.ok()) return FromGrpcStatus(status);
    return job;
  }

  absl::StatusOr<v1::Job> GetJob(const std::string& job_id) {
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    const grpc::Status status = stub_->GetJob(Context().get(), request, &job);
    if (!status.ok()) return FromGrpcStatus(status);
    return job;
  }

  // Watches the job until an event with a final state arrives, then returns GetJob.
  // Errors: the WatchJob status, or FailedPrecondition when the stream ended without a
  // final event.
  absl::StatusOr<v1::Job> WaitForJob(const std::string& job_id,
                                     absl::Duration timeout = kJobTimeout) {
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto context = Context(timeout);
    auto reader = stub_->WatchJob(context.get(), request);
    v1::JobEvent event;
    bool saw_final = false;
    while (reader->Read(&event)) {
      if (IsFinal(event.state())) saw_final = true;
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return FromGrpcStatus(status);
    if (!saw_final) {
      return absl::FailedPreconditionError(
          absl::StrCat("WatchJob of ", job_id, " ended without a final event"));
    }
    return GetJob(job_id);
  }

  // Starts a job and waits for it to end in any final state.
  absl::StatusOr<v1::Job> RunSegmentation(const std::string& dataset_id,
                                          const v1::SegmentationOptions& options) {
    absl::StatusOr<v1::Job> job = StartSegmentation(dataset_id, options);
    if (!job.ok()) return job.status();
    return WaitForJob(job->job_id());
  }

  absl::Status CancelJob(const std::string& job_id) {
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    return FromGrpcStatus(stub_->CancelJob(Context().get(), request, &job));
  }

  absl::StatusOr<v1::SegmentModel> GetSegmentModel(const std::string& model_id) {
    v1::GetSegmentModelRequest request;
    request.set_model_id(model_id);
    v1::SegmentModel model;
    const grpc::Status status = stub_->GetSegmentModel(Context().get(), request, &model);
    if (!status.ok()) return FromGrpcStatus(status);
    return model;
  }

  absl::StatusOr<v1::AssignSegmentResponse> AssignSegment(
      const std::string& model_id, const std::map<std::string, std::string>& columns) {
    v1::AssignSegmentRequest request;
    request.set_model_id(model_id);
    for (const auto& [name, value] : columns) (*request.mutable_columns())[name] = value;
    v1::AssignSegmentResponse response;
    const grpc::Status status = stub_->AssignSegment(Context().get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  // Every user's assignment, in the order the stream sends them.
  absl::StatusOr<std::vector<v1::Assignment>> ExportAssignments(const std::string& model_id) {
    v1::ExportAssignmentsRequest request;
    request.set_model_id(model_id);
    auto context = Context();
    auto reader = stub_->ExportAssignments(context.get(), request);
    std::vector<v1::Assignment> assignments;
    v1::AssignmentChunk chunk;
    while (reader->Read(&chunk)) {
      for (const v1::Assignment& assignment : chunk.assignments()) {
        assignments.push_back(assignment);
      }
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return FromGrpcStatus(status);
    return assignments;
  }

  absl::StatusOr<v1::ListWorkersResponse> ListWorkers() {
    v1::ListWorkersResponse response;
    const grpc::Status status =
        stub_->ListWorkers(Context().get(), v1::ListWorkersRequest(), &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  // Polls ListWorkers until worker `worker_id` is reported with `live`. Errors:
  // DeadlineExceeded after `timeout`, or the ListWorkers status.
  absl::Status AwaitWorkerLive(const std::string& worker_id, bool live, absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (true) {
      absl::StatusOr<v1::ListWorkersResponse> workers = ListWorkers();
      if (!workers.ok()) return workers.status();
      for (const v1::WorkerInfo& info : workers->workers()) {
        if (info.worker_id() == worker_id && info.live() == live) return absl::OkStatus();
      }
      if (absl::Now() > give_up) {
        return absl::DeadlineExceededError(absl::StrCat("worker ", worker_id, " was not ",
                                                        live ? "live" : "lost", " within ",
                                                        absl::FormatDuration(timeout)));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

 private:
  TestCluster() = default;

  std::vector<std::unique_ptr<WorkerServer>> workers_;
  std::unique_ptr<CoordinatorServer> coordinator_;
  std::unique_ptr<v1::Cohort::Stub> stub_;
};

}  // namespace cohort::testing

#endif  // COHORT_TESTS_INTEGRATION_TEST_CLUSTER_H_
