// The public Cohort service and the Registry service of the coordinator. Internal to
// coordinator/; other folders use coordinator_server.h.
#ifndef COHORT_COORDINATOR_COHORT_SERVICE_H_
#define COHORT_COORDINATOR_COHORT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "cohort/v1/worker.grpc.pb.h"
#include "coordinator/job_streams.h"
#include "coordinator/neighbour_job.h"
#include "coordinator/replicas.h"
#include "coordinator/worker_registry.h"
#include "core/schema.h"

namespace cohort {

struct RecommendPlan;  // similarity_service.cc

struct CohortServiceOptions {
  std::string state_dir;
  absl::Duration worker_call_timeout = absl::Minutes(30);
  // Time a worker has to return one job step's results; see CoordinatorServerOptions.
  absl::Duration step_timeout = absl::Minutes(10);
};

// Thread safety: gRPC calls any method from its threads; state is guarded by mutex_,
// and per-job state by the job's own mutex. Jobs run on threads of their own, never on
// a gRPC thread.
class CohortServiceImpl final : public v1::Cohort::Service {
 public:
  CohortServiceImpl(WorkerRegistry* registry, CohortServiceOptions options);
  ~CohortServiceImpl() override;

  // Reads finished models and datasets from the state folder. Errors: Internal naming
  // the file.
  [[nodiscard]] absl::Status LoadState();
  // Cancels every running job and waits for their threads.
  void CancelAllJobs();

  grpc::Status CreateDataset(grpc::ServerContext* context, const v1::CreateDatasetRequest* request,
                             v1::Dataset* response) override;
  grpc::Status LoadDataset(grpc::ServerContext* context, const v1::LoadDatasetRequest* request,
                           v1::Dataset* response) override;
  grpc::Status IngestUsers(grpc::ServerContext* context,
                           grpc::ServerReader<v1::IngestUsersRequest>* reader,
                           v1::IngestUsersResponse* response) override;
  grpc::Status GetDataset(grpc::ServerContext* context, const v1::GetDatasetRequest* request,
                          v1::Dataset* response) override;
  grpc::Status StartSegmentation(grpc::ServerContext* context,
                                 const v1::StartSegmentationRequest* request,
                                 v1::Job* response) override;
  grpc::Status StartSweep(grpc::ServerContext* context, const v1::StartSweepRequest* request,
                          v1::Job* response) override;
  grpc::Status GetSweep(grpc::ServerContext* context, const v1::GetSweepRequest* request,
                        v1::Sweep* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetSegmentModel(grpc::ServerContext* context,
                               const v1::GetSegmentModelRequest* request,
                               v1::SegmentModel* response) override;
  grpc::Status AssignSegment(grpc::ServerContext* context, const v1::AssignSegmentRequest* request,
                             v1::AssignSegmentResponse* response) override;
  grpc::Status ExportAssignments(grpc::ServerContext* context,
                                 const v1::ExportAssignmentsRequest* request,
                                 grpc::ServerWriter<v1::AssignmentChunk>* writer) override;
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override;

  // Similarity and recommendation, in similarity_service.cc.
  grpc::Status IngestInteractions(grpc::ServerContext* context,
                                  grpc::ServerReader<v1::IngestInteractionsRequest>* reader,
                                  v1::IngestInteractionsResponse* response) override;
  grpc::Status StartNeighbourJob(grpc::ServerContext* context,
                                 const v1::StartNeighbourJobRequest* request,
                                 v1::Job* response) override;
  grpc::Status SimilarItems(grpc::ServerContext* context, const v1::SimilarItemsRequest* request,
                            v1::NeighboursResponse* response) override;
  grpc::Status SimilarUsers(grpc::ServerContext* context, const v1::SimilarUsersRequest* request,
                            v1::NeighboursResponse* response) override;
  grpc::Status Recommend(grpc::ServerContext* context, const v1::RecommendRequest* request,
                         v1::RecommendResponse* response) override;
  grpc::Status RecommendBatch(grpc::ServerContext* context,
                              const v1::RecommendBatchRequest* request,
                              grpc::ServerWriter<v1::RecommendResponse>* writer) override;
  grpc::Status PredictRating(grpc::ServerContext* context, const v1::PredictRatingRequest* request,
                             v1::PredictRatingResponse* response) override;
  // Profiles, audiences and online scoring; defined in profile_service.cc.
  grpc::Status StartProfileJob(grpc::ServerContext* context,
                               const v1::StartProfileJobRequest* request,
                               v1::Job* response) override;
  grpc::Status GetProfileModel(grpc::ServerContext* context,
                               const v1::GetProfileModelRequest* request,
                               v1::ProfileModel* response) override;
  grpc::Status GetProfile(grpc::ServerContext* context, const v1::GetProfileRequest* request,
                          v1::UserProfile* response) override;
  grpc::Status SelectAudience(grpc::ServerContext* context,
                              const v1::SelectAudienceRequest* request,
                              grpc::ServerWriter<v1::AudienceChunk>* writer) override;
  grpc::Status ScoreUser(grpc::ServerContext* context, const v1::ScoreUserRequest* request,
                         v1::ScoreUserResponse* response) override;

 private:
  struct DatasetRecord {
    v1::Dataset info;
    // Owner worker id per shard, fixed when rows first arrive; a job that moves the
    // shards of a lost worker updates it.
    std::vector<std::string> owners;
    // The request that loaded the dataset from files (empty source for streamed rows)
    // and the rows of each shard then, for reloading shards that move.
    v1::LoadDatasetRequest load;
    std::vector<int64_t> shard_rows;
    // Replica worker id per shard of a streamed dataset, empty when the shard has none
    // (see coordinator/replicas.h). Empty for a dataset loaded from files.
    std::vector<std::string> replicas;
    // Set when rows were streamed into a dataset loaded from files: those rows have no
    // replica and are not in the files, so its shards cannot move.
    bool loaded_and_streamed = false;
    // Owners of a dataset loaded from files that restarted since they loaded their
    // shards, so their memory lost them: jobs treat them as lost and move their shards.
    // An owner leaves the set when no shard is placed on it any more.
    std::set<std::string> restarted_owners;
    // Process number of each owner when it received its shards (0: unknown), by which
    // a registration shows that the owner restarted, even across coordinator restarts.
    std::map<std::string, uint64_t> owner_instances;
    // Held while a streamed batch is written and while the dataset's shards move, so a
    // batch never goes to a copy that is being replaced. Taken before mutex_, never
    // while holding it.
    std::shared_ptr<absl::Mutex> placement_mutex = std::make_shared<absl::Mutex>();
  };

  struct JobRecord {
    // Const after CreateJob returns.
    std::string job_id;
    std::string dataset_id;
    absl::Time created;
    // Placement the job ran on, for export. Shards that moved during the job are
    // updated, under the service's mutex_, before the model is published.
    std::vector<std::string> owners;
    Schema schema;
    v1::DatasetKind kind = v1::DATASET_KIND_USERS;
    v1::SegmentationOptions options;
    std::vector<int> sweep_ks;  // non-empty for a sweep job
    int64_t num_users = 0;      // of the dataset when the job started
    std::shared_ptr<const v1::ProfileOptions> profile;  // set for a profile job

    mutable absl::Mutex mutex;
    v1::Job job ABSL_GUARDED_BY(mutex);
    int64_t event_seq ABSL_GUARDED_BY(mutex) = 0;
    bool cancel_requested ABSL_GUARDED_BY(mutex) = false;
    JobStreams* streams ABSL_GUARDED_BY(mutex) = nullptr;
    std::shared_ptr<const v1::Sweep> sweep ABSL_GUARDED_BY(mutex);
    std::thread thread;
    // Neighbour jobs (const after CreateNeighbourJob returns).
    bool neighbour_job = false;
    v1::NeighbourOptions neighbour_options;
    int num_shards = 0;
    std::shared_ptr<const v1::SegmentModel> segment_model;  // dense user–user only
  };

  // A user's interactions as fetched from its worker: item ids and values.
  struct FetchedRow {
    std::vector<std::string> item_ids;
    std::vector<float> values;
  };

  // Writes the dataset's record to the state folder, when there is one, so a restarted
  // coordinator reads back the dataset and its shard placement. A failed write is
  // logged. Called after every change of a record (dataset_state.cc).
  void SaveDataset(const DatasetRecord& record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Reads the datasets of the state folder. A dataset that was LOADING becomes FAILED.
  // Errors: Internal naming a file that cannot be read.
  absl::Status LoadDatasets() ABSL_LOCKS_EXCLUDED(mutex_);
  // The registry's registration listener: records `worker_id` as restarted in every
  // dataset loaded from files whose shards it received as a process other than
  // `instance`. An owner whose process number is unknown takes `instance`.
  void CheckOwnerInstance(const std::string& worker_id, uint64_t instance)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // Records the current process number of every owner of `record` that has none yet.
  void RecordOwnerInstances(DatasetRecord* record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::StatusOr<std::vector<std::string>> PlaceDataset(int num_shards) const;
  absl::StatusOr<WorkerHandle> LiveOwner(const std::string& worker_id,
                                         const std::vector<int>& shards) const;
  // Fills `shard_rows` (by shard id) with the rows each shard holds.
  absl::Status LoadOnWorkers(const v1::LoadDatasetRequest& request, v1::Dataset* info,
                             const std::vector<std::string>& owners,
                             std::vector<int64_t>* shard_rows);
  // The move_shards hook of a job's streams (see JobStreams::MoveShards).
  JobStreams::MoveShards ShardMover(const std::string& dataset_id);
  // Errors: Unavailable naming a shard whose owner is not live and that can neither be
  // reloaded from files nor promoted from a live replica.
  absl::Status CheckShardsCanMove(const DatasetRecord& dataset) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // For a streamed dataset: promotes the replicas of shards whose owner is not live and
  // gives shards without a live replica a new one. Errors: as PromoteReplicas.
  absl::Status RepairStreamedPlacement(const std::string& dataset_id)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // The owners and replicas a streamed batch goes to. A dataset without owners is placed
  // first, both by rendezvous ranking over the live workers, and `*placed` becomes true.
  // REQUIRES: the dataset's placement_mutex is held. Errors: Unavailable when no worker
  // is live.
  absl::StatusOr<StreamedPlacement> BatchPlacement(const std::string& dataset_id, bool* placed)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // The dataset's placement mutex. Errors: NotFound.
  absl::StatusOr<std::shared_ptr<absl::Mutex>> PlacementMutex(const std::string& dataset_id) const
      ABSL_LOCKS_EXCLUDED(mutex_);
  // Records shards that moved during a job in the dataset's and the job's placement.
  void ApplyMovedShards(JobRecord* record, const std::map<int, std::string>& moved)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // Validates the dataset's state, registers a job and starts its thread.
  // `profile` makes it a profile job.
  absl::StatusOr<std::shared_ptr<JobRecord>> CreateJob(
      const std::string& dataset_id, const v1::SegmentationOptions& options, int max_k,
      std::vector<int> sweep_ks, std::shared_ptr<const v1::ProfileOptions> profile = nullptr);
  void RunJob(std::shared_ptr<JobRecord> record);
  // Errors: NotFound naming the id.
  absl::StatusOr<std::shared_ptr<JobRecord>> FindJob(const std::string& job_id) const;
  void FinishJob(JobRecord* record, const absl::Status& status, const std::string& model_id);
  absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> FindModel(const std::string& id) const;
  absl::Status PersistModel(const v1::SegmentModel& model) const;
  // Writes `message` to `path` through a temporary file and a rename, so a reader never
  // sees a partial file. Errors: Internal naming the file.
  static absl::Status WriteStateFile(const std::string& path,
                                     const google::protobuf::Message& message);
  // Joins the threads of jobs that have ended, so a long-running coordinator does not
  // accumulate them.
  void JoinEndedJobs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::chrono::system_clock::time_point WorkerDeadline() const;
  // The status of a failed append call to `worker_id`: Unavailable ("worker ... did not
  // <action>: ...; retry") when the worker is gone or timed out, else the worker's status.
  static absl::Status AppendFailure(const grpc::Status& status, const std::string& worker_id,
                                    absl::string_view action);

  // Similarity and recommendation helpers, in similarity_service.cc.
  absl::StatusOr<std::shared_ptr<JobRecord>> CreateNeighbourJob(
      const std::string& dataset_id, const v1::NeighbourOptions& options);
  // Runs a neighbour job on the job thread; returns the model id.
  absl::StatusOr<std::string> RunNeighbourJobOnStreams(JobRecord* record, JobStreams* streams);
  absl::Status LoadNeighbourModels();
  absl::Status PersistNeighbourModel(const v1::NeighbourModel& model) const;
  // Errors: NotFound for an unknown id; FailedPrecondition for a job that has not
  // succeeded.
  absl::StatusOr<std::shared_ptr<const NeighbourIndex>> FindNeighbourModel(
      const std::string& id) const;
  // The interactions of `user_ids` in an INTERACTIONS dataset, read from the workers that
  // hold their shards; users without interactions are absent. Shards of a streamed
  // dataset whose worker was lost are first promoted from their replicas. Errors:
  // NotFound for an unknown dataset; Unavailable when a worker is not live or fails.
  absl::StatusOr<std::map<std::string, FetchedRow>> FetchUserRows(
      const std::string& dataset_id, const std::vector<std::string>& user_ids);
  // Opens fetch streams to the owners of the shards of `user_ids` (of every shard when
  // `user_ids` is empty). Returns null for a dataset without placed shards. Errors as
  // FetchUserRows.
  absl::StatusOr<std::unique_ptr<JobStreams>> OpenRowFetch(
      const std::string& dataset_id, const std::vector<std::string>& user_ids);
  // Adds the rows of `user_ids` that exist to `rows`; null `streams` adds nothing.
  static absl::Status FetchRowsOnStreams(JobStreams* streams,
                                         const std::vector<std::string>& user_ids,
                                         std::map<std::string, FetchedRow>* rows);
  // Validates a Recommend request's options and finds its models. Errors as Recommend.
  absl::StatusOr<std::shared_ptr<const RecommendPlan>> PlanRecommendation(
      const v1::RecommendRequest& request);
  // Scores one user from fetched rows (the user's and, user-based, its neighbours').
  // Errors: NotFound when the user has no row.
  static absl::StatusOr<v1::RecommendResponse> ScoreRecommendation(
      const RecommendPlan& plan, const std::string& user_id,
      const std::map<std::string, FetchedRow>& rows);
  absl::StatusOr<v1::RecommendResponse> RecommendOne(const v1::RecommendRequest& request);
  // Profile jobs and models (profile_service.cc). RunProfile trains on the job's streams,
  // then persists and registers the model.
  absl::Status RunProfile(const JobRecord& record,
                          const std::function<void(const v1::JobEvent&)>& on_event,
                          JobStreams* streams, std::string* model_id);
  // Errors: NotFound naming the id; FailedPrecondition for a job that is not a profile
  // job or has not succeeded.
  absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> FindProfileModel(
      const std::string& id) const;
  absl::Status PersistProfileModel(const v1::ProfileModel& model) const;
  // Reads the *.profile_model.pb files of `models_dir`. Errors: Internal naming the file.
  absl::Status LoadProfileModels(const std::string& models_dir);
  // The record of the job that trained `model`, whose owners hold its per-user scores.
  // Errors: FailedPrecondition when the coordinator restarted since the job ran.
  absl::StatusOr<std::shared_ptr<JobRecord>> ScoredJob(const v1::ProfileModel& model) const;

  WorkerRegistry* registry_;
  const CohortServiceOptions options_;
  int registration_listener_ = -1;  // const after construction

  mutable absl::Mutex mutex_;
  std::map<std::string, DatasetRecord> datasets_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::shared_ptr<JobRecord>> jobs_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::shared_ptr<const v1::SegmentModel>> models_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::shared_ptr<const NeighbourIndex>> neighbour_models_
      ABSL_GUARDED_BY(mutex_);
  int64_t next_fetch_ ABSL_GUARDED_BY(mutex_) = 1;
  std::map<std::string, std::shared_ptr<const v1::ProfileModel>> profile_models_
      ABSL_GUARDED_BY(mutex_);
  int64_t next_dataset_ ABSL_GUARDED_BY(mutex_) = 1;
  int64_t next_job_ ABSL_GUARDED_BY(mutex_) = 1;
  bool shutting_down_ ABSL_GUARDED_BY(mutex_) = false;
};

class RegistryServiceImpl final : public v1::Registry::Service {
 public:
  explicit RegistryServiceImpl(WorkerRegistry* registry) : registry_(registry) {}
  grpc::Status RegisterWorker(grpc::ServerContext* context,
                              const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override;

 private:
  WorkerRegistry* registry_;
};

}  // namespace cohort

#endif  // COHORT_COORDINATOR_COHORT_SERVICE_H_
