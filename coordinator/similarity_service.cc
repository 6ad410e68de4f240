// The similarity and recommendation RPCs of CohortServiceImpl: interaction ingestion,
// neighbour jobs, neighbour lookups, recommendations and rating prediction.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "coordinator/cohort_service.h"
#include "coordinator/neighbour_job.h"
#include "coordinator/replicated_write.h"
#include "core/csv.h"
#include "core/log.h"
#include "core/recommend.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"
#include "proto/convert.h"
#include "proto/similarity_convert.h"

namespace cohort {
namespace {

constexpr int kMaxRecommendations = 10000;
constexpr int kMaxBatchUsers = 100000;
// Users per FetchUsers command, so one result stays small.
constexpr int kUsersPerFetch = 1000;
// Users of a RecommendBatch whose rows are fetched together before they are scored.
constexpr int kUsersPerBatchBlock = 256;
// Neighbours used by PredictRating when the request gives no k.
constexpr int kDefaultPredictionK = 40;
constexpr char kNeighbourModelSuffix[] = ".neighbour_model.pb";

grpc::Status Error(absl::StatusCode code, const std::string& message) {
  return ToGrpcStatus(absl::Status(code, message));
}

std::string NeighbourModelPath(const std::string& state_dir, const std::string& model_id) {
  return absl::StrCat(state_dir, "/models/", model_id, kNeighbourModelSuffix);
}

// Checks one streamed interaction. Errors: InvalidArgument naming its position.
absl::Status ValidateInteraction(const v1::Interaction& interaction, int64_t position) {
  for (const auto& [name, id] : {std::pair<const char*, const std::string*>{
                                     "user_id", &interaction.user_id()},
                                 {"item_id", &interaction.item_id()}}) {
    if (id->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("interaction ", position, " has an empty ", name));
    }
    if (!IsValidUtf8(*id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("interaction ", position, " has a ", name, " that is not UTF-8"));
    }
  }
  if (!std::isfinite(interaction.value())) {
    return absl::InvalidArgumentError(absl::StrCat("interaction ", position, " has value ",
                                                   interaction.value(),
                                                   "; use a finite number"));
  }
  if (interaction.time() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("interaction ", position, " has time ",
                                                   interaction.time(),
                                                   "; use Unix seconds >= 0 (0: none)"));
  }
  return absl::OkStatus();
}

// The user's interactions as dictionary indices, ascending; items the dictionary does
// not have (added after the model's job) are left out.
UserRatings ToRatings(const std::vector<std::string>& item_ids, const std::vector<float>& values,
                      const ItemDictionary& dictionary) {
  std::vector<std::pair<int32_t, float>> entries;
  for (size_t e = 0; e < item_ids.size(); ++e) {
    const int32_t index = dictionary.Find(item_ids[e]);
    if (index >= 0) entries.emplace_back(index, values[e]);
  }
  std::sort(entries.begin(), entries.end());
  UserRatings ratings;
  for (const auto& [index, value] : entries) {
    ratings.items.push_back(index);
    ratings.values.push_back(value);
  }
  return ratings;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Ingestion

grpc::Status CohortServiceImpl::IngestInteractions(
    grpc::ServerContext* context, grpc::ServerReader<v1::IngestInteractionsRequest>* reader,
    v1::IngestInteractionsResponse* response) {
  v1::IngestInteractionsRequest batch;
  if (!reader->Read(&batch)) {
    return Error(absl::StatusCode::kInvalidArgument, "the ingest stream has no message");
  }
  const std::string dataset_id = batch.dataset_id();
  v1::Dataset info;
  {
    absl::MutexLock lock(&mutex_);
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return Error(absl::StatusCode::kNotFound,
                   absl::StrCat("dataset '", dataset_id, "' does not exist"));
    }
    DatasetRecord& record = it->second;
    if (record.info.kind() != v1::DATASET_KIND_INTERACTIONS) {
      return Error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("dataset '", dataset_id, "' is of kind ",
                                v1::DatasetKind_Name(record.info.kind()),
                                "; stream interactions into an INTERACTIONS dataset"));
    }
    if (record.info.state() == v1::DATASET_STATE_LOADING) {
      return Error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("dataset '", dataset_id, "' is loading; retry when it is READY"));
    }
    info = record.info;
  }
  // A worker lost since the last batch or job: its shards move before new rows arrive.
  if (absl::Status repaired = RepairStreamedPlacement(dataset_id); !repaired.ok()) {
    return ToGrpcStatus(repaired);
  }
  absl::StatusOr<std::shared_ptr<absl::Mutex>> placement_mutex = PlacementMutex(dataset_id);
  if (!placement_mutex.ok()) return ToGrpcStatus(placement_mutex.status());

  using Group = WriteGroup<v1::AppendInteractionsRequest, v1::AppendInteractionsResponse>;
  const AppendCall<v1::AppendInteractionsRequest, v1::AppendInteractionsResponse> append =
      [](const WorkerHandle& worker, grpc::ClientContext* call, const v1::AppendInteractionsRequest& request,
         v1::AppendInteractionsResponse* stored) { return worker.stub->AppendInteractions(call, request, stored); };
  const FindLiveWorker find_live = [this](const std::string& worker_id,
                                          const std::vector<int>& shards) {
    return LiveOwner(worker_id, shards);
  };
  int64_t accepted = 0;
  int64_t unreplicated = 0;
  int64_t users_added = 0;
  int64_t entries_added = 0;
  absl::Status status;
  do {
    std::vector<std::pair<int, const v1::Interaction*>> valid;  // (shard, interaction)
    for (int i = 0; i < batch.interactions_size() && status.ok(); ++i) {
      const v1::Interaction& interaction = batch.interactions(i);
      status = ValidateInteraction(interaction, accepted + i);
      if (!status.ok()) break;
      valid.emplace_back(ShardOfUser(interaction.user_id(), info.num_shards()), &interaction);
    }

    // The valid interactions before an invalid one are stored, as the API promises.
    absl::MutexLock placement_lock(placement_mutex->get());
    bool placed = false;
    absl::StatusOr<StreamedPlacement> placement = BatchPlacement(dataset_id, &placed);
    if (!placement.ok()) {
      status = placement.status();
      break;
    }
    // Every owner creates its part of the dataset with the first batch, even without
    // interactions, so that a job finds the dataset on every worker, and every replica
    // starts empty, which promotion needs.
    std::vector<Group> primaries;
    std::vector<Group> replicas;
    GroupBatch<v1::AppendInteractionsRequest, v1::AppendInteractionsResponse>(
        *placement, placed, valid,
        [](v1::AppendInteractionsRequest* request, int shard, const v1::Interaction& row) {
          request->add_shard_ids(shard);
          *request->add_interactions() = row;
        },
        &primaries, &replicas);
    for (std::vector<Group>* groups : {&primaries, &replicas}) {
      for (Group& group : *groups) {
        group.request.set_dataset_id(dataset_id);
        group.request.set_num_shards(info.num_shards());
        group.request.set_duplicate_rule(info.duplicate_rule());
      }
    }
    const absl::Status written =
        WriteReplicated(&primaries, &replicas, append, find_live, WorkerDeadline());
    for (const Group& group : primaries) {
      if (!group.written) continue;
      accepted += group.stored.interactions_stored();
      users_added += group.stored.users_added();
      entries_added += group.stored.entries_added();
      if (!group.replicated) unreplicated += group.stored.interactions_stored();
    }
    if (!written.ok()) status = written;
    if (!status.ok()) break;
    if (context->IsCancelled()) {
      status = absl::CancelledError("ingest stream cancelled by the caller");
      break;
    }
  } while (reader->Read(&batch));

  {
    absl::MutexLock lock(&mutex_);
    DatasetRecord& record = datasets_[dataset_id];
    record.info.set_num_users(record.info.num_users() + users_added);
    record.info.set_num_interactions(record.info.num_interactions() + entries_added);
    if (record.info.num_users() > 0) record.info.set_state(v1::DATASET_STATE_READY);
    if (accepted > 0 && !record.load.source().empty()) record.loaded_and_streamed = true;
    SaveDataset(record);
  }
  response->set_interactions_accepted(accepted);
  response->set_unreplicated_interactions(unreplicated);
  if (unreplicated > 0) {
    COHORT_LOG_WARN("dataset {}: {} streamed interactions stored without a replica, because "
                    "no second worker was live or the dataset was loaded from files",
                    dataset_id, unreplicated);
  }
  COHORT_LOG_INFO("dataset {}: {} streamed interactions stored", dataset_id, accepted);
  return ToGrpcStatus(status);
}

// ---------------------------------------------------------------------------------------
// Neighbour jobs

absl::StatusOr<std::shared_ptr<CohortServiceImpl::JobRecord>>
CohortServiceImpl::CreateNeighbourJob(const std::string& dataset_id,
                                      const v1::NeighbourOptions& options) {
  auto record = std::make_shared<JobRecord>();
  {
    absl::MutexLock lock(&mutex_);
    if (shutting_down_) return absl::UnavailableError("the coordinator is shutting down; retry");
    JoinEndedJobs();
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' does not exist"));
    }
    const DatasetRecord& dataset = it->second;
    COHORT_RETURN_IF_ERROR(ValidateNeighbourOptions(options, dataset.info.kind()));
    if (dataset.info.state() != v1::DATASET_STATE_READY || dataset.info.num_users() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset '", dataset_id, "' is ", v1::DatasetState_Name(dataset.info.state()),
          " with ", dataset.info.num_users(), " users; load rows before computing neighbours"));
    }
    // TODO: a job on a file dataset with shards on a lost worker is rejected here, since
    // reloading interaction shards when a neighbour job starts is untested. Streamed
    // datasets promote their replicas.
    for (const std::string& owner : dataset.owners) {
      if (!registry_->IsLive(owner) && !dataset.load.source().empty()) {
        return absl::UnavailableError(absl::StrCat(
            "worker ", owner, " holding shards of dataset '", dataset_id,
            "' is not live and its shards are not moved yet; load the data into a new "
            "dataset and retry"));
      }
    }
    COHORT_RETURN_IF_ERROR(CheckShardsCanMove(dataset));
    if (dataset.info.kind() != v1::DATASET_KIND_INTERACTIONS) {
      const std::string& model_id = options.segment_model_id();
      auto model = models_.find(model_id);
      if (model == models_.end()) {
        if (jobs_.count(model_id) > 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "options.segment_model_id '", model_id, "' is a job that has not succeeded"));
        }
        return absl::NotFoundError(
            absl::StrCat("options.segment_model_id '", model_id, "' does not exist"));
      }
      if (model->second->dataset_id() != dataset_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "segment model '", model_id, "' was trained on dataset '",
            model->second->dataset_id(), "', not '", dataset_id, "'"));
      }
      if (options.nprobe() > model->second->centroids().rows()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "options.nprobe = ", options.nprobe(), " exceeds the ",
            model->second->centroids().rows(), " segments of model '", model_id, "'"));
      }
      record->segment_model = model->second;
    }
    record->job_id = absl::StrFormat("job-%06d", next_job_++);
    record->dataset_id = dataset_id;
    record->created = absl::Now();
    record->owners = dataset.owners;
    record->kind = dataset.info.kind();
    record->num_users = dataset.info.num_users();
    record->num_shards = dataset.info.num_shards();
    record->neighbour_job = true;
    record->neighbour_options = options;
    jobs_[record->job_id] = record;
  }
  {
    absl::MutexLock lock(&record->mutex);
    record->job.set_job_id(record->job_id);
    record->job.set_dataset_id(record->dataset_id);
    record->job.set_state(v1::JOB_STATE_PENDING);
    *record->job.mutable_neighbour_options() = options;
    record->job.mutable_last_event()->set_job_id(record->job_id);
    record->job.mutable_last_event()->set_state(v1::JOB_STATE_PENDING);
  }
  record->thread = std::thread(&CohortServiceImpl::RunJob, this, record);
  return record;
}

grpc::Status CohortServiceImpl::StartNeighbourJob(grpc::ServerContext*,
                                                  const v1::StartNeighbourJobRequest* request,
                                                  v1::Job* response) {
  absl::StatusOr<std::shared_ptr<JobRecord>> record =
      CreateNeighbourJob(request->dataset_id(), request->options());
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::MutexLock lock(&(*record)->mutex);
  *response = (*record)->job;
  COHORT_LOG_INFO("neighbour job {} started on dataset {}: {} {} k = {}", (*record)->job_id,
                  (*record)->dataset_id, v1::NeighbourKind_Name(request->options().kind()),
                  v1::SimilarityMeasure_Name(request->options().measure()),
                  request->options().k());
  return grpc::Status::OK;
}

absl::StatusOr<std::string> CohortServiceImpl::RunNeighbourJobOnStreams(JobRecord* record,
                                                                        JobStreams* streams) {
  NeighbourJobInput input;
  input.job_id = record->job_id;
  input.dataset_id = record->dataset_id;
  input.kind = record->kind;
  input.options = record->neighbour_options;
  input.num_shards = record->num_shards;
  input.segment_model = record->segment_model;
  input.on_event = [record](const v1::JobEvent& event) {
    absl::MutexLock lock(&record->mutex);
    *record->job.mutable_last_event() = event;
    ++record->event_seq;
  };
  COHORT_ASSIGN_OR_RETURN(v1::NeighbourModel model, RunNeighbourJob(input, streams));
  COHORT_RETURN_IF_ERROR(PersistNeighbourModel(model));
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const NeighbourIndex> index,
                          IndexNeighbourModel(std::move(model)));
  absl::MutexLock lock(&mutex_);
  neighbour_models_[record->job_id] = std::move(index);
  return record->job_id;
}

absl::Status CohortServiceImpl::PersistNeighbourModel(const v1::NeighbourModel& model) const {
  if (options_.state_dir.empty()) return absl::OkStatus();
  return WriteStateFile(NeighbourModelPath(options_.state_dir, model.model_id()), model);
}

absl::Status CohortServiceImpl::LoadNeighbourModels() {
  const std::filesystem::path models_dir = std::filesystem::path(options_.state_dir) / "models";
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir)) {
    const std::string path = entry.path().string();
    if (!absl::EndsWith(path, kNeighbourModelSuffix)) continue;
    std::ifstream in(path, std::ios::binary);
    v1::NeighbourModel model;
    if (!in || !model.ParseFromIstream(&in)) {
      return absl::InternalError(absl::StrCat("state file ", path,
                                              " is not a readable neighbour model; move it away"));
    }
    absl::StatusOr<std::shared_ptr<const NeighbourIndex>> index =
        IndexNeighbourModel(std::move(model));
    if (!index.ok()) {
      return absl::InternalError(absl::StrCat("state file ", path, ": ",
                                              index.status().message(), "; move it away"));
    }
    absl::MutexLock lock(&mutex_);
    const std::string& model_id = (*index)->model.model_id();
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::StripPrefix(model_id, "job-"), &number)) {
      next_job_ = std::max(next_job_, number + 1);
    }
    neighbour_models_[model_id] = *std::move(index);
    ++loaded;
  }
  COHORT_LOG_INFO("coordinator state: {} neighbour models loaded", loaded);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const NeighbourIndex>> CohortServiceImpl::FindNeighbourModel(
    const std::string& id) const {
  absl::MutexLock lock(&mutex_);
  auto model = neighbour_models_.find(id);
  if (model != neighbour_models_.end()) return model->second;
  if (models_.count(id) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", id, "' is a segment model, not a neighbour model"));
  }
  auto job = jobs_.find(id);
  if (job != jobs_.end()) {
    absl::MutexLock job_lock(&job->second->mutex);
    return absl::FailedPreconditionError(
        absl::StrCat("job '", id, "' is ", v1::JobState_Name(job->second->job.state()),
                     "; its neighbours exist once the job has succeeded"));
  }
  return absl::NotFoundError(absl::StrCat("neighbour model '", id, "' does not exist"));
}

// ---------------------------------------------------------------------------------------
// Neighbour lookups

grpc::Status CohortServiceImpl::SimilarItems(grpc::ServerContext*,
                                             const v1::SimilarItemsRequest* request,
                                             v1::NeighboursResponse* response) {
  if (request->n() < 0) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("n = ", request->n(), " is invalid; use 0 (the model's k) or more"));
  }
  absl::StatusOr<std::shared_ptr<const NeighbourIndex>> found =
      FindNeighbourModel(request->model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const NeighbourIndex& index = **found;
  if (!index.item_item()) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("model '", request->model_id(),
                              "' contains user–user neighbours; use SimilarUsers"));
  }
  const int32_t item = index.items.Find(request->item_id());
  if (item < 0) {
    return Error(absl::StatusCode::kNotFound,
                 absl::StrCat("item '", request->item_id(), "' is not in model '",
                              request->model_id(), "'"));
  }
  const std::vector<Neighbor>& list = index.lists[item];
  const size_t n = request->n() == 0 ? list.size() : std::min<size_t>(request->n(), list.size());
  for (size_t i = 0; i < n; ++i) {
    v1::Neighbour* out = response->add_neighbours();
    out->set_id(index.items.id(static_cast<int32_t>(list[i].id)));
    out->set_score(list[i].score);
  }
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::SimilarUsers(grpc::ServerContext*,
                                             const v1::SimilarUsersRequest* request,
                                             v1::NeighboursResponse* response) {
  if (request->n() < 0) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("n = ", request->n(), " is invalid; use 0 (the model's k) or more"));
  }
  absl::StatusOr<std::shared_ptr<const NeighbourIndex>> found =
      FindNeighbourModel(request->model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const NeighbourIndex& index = **found;
  if (index.item_item()) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("model '", request->model_id(),
                              "' contains item–item neighbours; use SimilarItems"));
  }
  auto position = index.user_position.find(request->user_id());
  if (position == index.user_position.end()) {
    return Error(absl::StatusCode::kNotFound,
                 absl::StrCat("user '", request->user_id(), "' is not in model '",
                              request->model_id(), "'"));
  }
  const std::vector<Neighbor>& list = index.lists[position->second];
  const size_t n = request->n() == 0 ? list.size() : std::min<size_t>(request->n(), list.size());
  for (size_t i = 0; i < n; ++i) {
    v1::Neighbour* out = response->add_neighbours();
    out->set_id(index.UserId(list[i].id));
    out->set_score(list[i].score);
  }
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------
// Recommendations

// The plan of one Recommend request: its validated options and models, shared by every
// user of a batch.
struct RecommendPlan {
  v1::RecommendMethod method = v1::RECOMMEND_METHOD_ITEM_BASED;
  double weight = 0.5;
  // The models whose scores count: item-based, user-based and content (by features).
  std::shared_ptr<const NeighbourIndex> item_model;
  std::shared_ptr<const NeighbourIndex> user_model;
  std::shared_ptr<const NeighbourIndex> content_model;
  double content_weight = 0;  // HYBRID only
  // The interaction model that gives the item dictionary and popularity.
  std::shared_ptr<const NeighbourIndex> catalogue;
  const NeighbourIndex* base = nullptr;  // catalogue.get()
  RecommendOptions options;
  std::vector<int64_t> popularity;
};

absl::StatusOr<std::unique_ptr<JobStreams>> CohortServiceImpl::OpenRowFetch(
    const std::string& dataset_id, const std::vector<std::string>& user_ids) {
  // The shards of a worker lost since the last job move to their replicas first.
  COHORT_RETURN_IF_ERROR(RepairStreamedPlacement(dataset_id));
  std::vector<std::string> owners;
  int num_shards = 0;
  std::string fetch_id;
  {
    absl::MutexLock lock(&mutex_);
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' does not exist"));
    }
    if (it->second.info.kind() != v1::DATASET_KIND_INTERACTIONS) {
      return absl::FailedPreconditionError(
          absl::StrCat("dataset '", dataset_id, "' contains no interactions"));
    }
    owners = it->second.owners;
    num_shards = it->second.info.num_shards();
    fetch_id = absl::StrFormat("fetch-%06d", next_fetch_++);
  }
  if (owners.empty()) return std::unique_ptr<JobStreams>();
  std::set<int> shards;
  if (user_ids.empty()) {
    for (int shard = 0; shard < num_shards; ++shard) shards.insert(shard);
  } else {
    for (const std::string& user_id : user_ids) shards.insert(ShardOfUser(user_id, num_shards));
  }
  std::map<std::string, std::vector<int>> shards_by_worker;
  for (int shard : shards) shards_by_worker[owners[shard]].push_back(shard);
  std::vector<JobStreams::Member> members;
  for (const auto& [worker_id, worker_shards] : shards_by_worker) {
    COHORT_ASSIGN_OR_RETURN(WorkerHandle worker, LiveOwner(worker_id, worker_shards));
    members.push_back(JobStreams::Member{worker, worker_shards});
  }
  // A fetch has no shard moves: a lost worker fails it with Unavailable.
  JobStreams::Options stream_options;
  stream_options.step_timeout = options_.step_timeout;
  return JobStreams::Open(fetch_id, dataset_id, std::move(members), std::move(stream_options));
}

absl::Status CohortServiceImpl::FetchRowsOnStreams(JobStreams* streams,
                                                   const std::vector<std::string>& user_ids,
                                                   std::map<std::string, FetchedRow>* rows) {
  if (streams == nullptr) return absl::OkStatus();
  for (size_t first = 0; first < user_ids.size(); first += kUsersPerFetch) {
    v1::JobCommand command;
    const size_t end = std::min(user_ids.size(), first + kUsersPerFetch);
    for (size_t i = first; i < end; ++i) command.mutable_fetch_users()->add_user_ids(user_ids[i]);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    for (const v1::ShardResult& result : results) {
      for (const v1::UserRowsResult::Row& row : result.user_rows().rows()) {
        FetchedRow& out = (*rows)[row.user_id()];
        out.item_ids.assign(row.item_ids().begin(), row.item_ids().end());
        out.values.assign(row.values().begin(), row.values().end());
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, CohortServiceImpl::FetchedRow>>
CohortServiceImpl::FetchUserRows(const std::string& dataset_id,
                                 const std::vector<std::string>& user_ids) {
  std::map<std::string, FetchedRow> rows;
  if (user_ids.empty()) return rows;
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<JobStreams> streams,
                          OpenRowFetch(dataset_id, user_ids));
  COHORT_RETURN_IF_ERROR(FetchRowsOnStreams(streams.get(), user_ids, &rows));
  if (streams != nullptr) streams->Close();
  return rows;
}

absl::StatusOr<std::shared_ptr<const RecommendPlan>> CohortServiceImpl::PlanRecommendation(
    const v1::RecommendRequest& request) {
  if (request.n() < 1 || request.n() > kMaxRecommendations) {
    return absl::InvalidArgumentError(absl::StrCat("n = ", request.n(), " is invalid; use 1..",
                                                   kMaxRecommendations));
  }
  auto plan = std::make_shared<RecommendPlan>();
  plan->method = request.method() == v1::RECOMMEND_METHOD_UNSPECIFIED
                     ? v1::RECOMMEND_METHOD_ITEM_BASED
                     : request.method();
  const v1::RecommendMethod method = plan->method;
  if (!v1::RecommendMethod_IsValid(method)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method ", static_cast<int>(method),
        " is unknown; use ITEM_BASED, USER_BASED, HYBRID or CONTENT"));
  }
  plan->weight = request.has_hybrid_weight() ? request.hybrid_weight() : 0.5;
  if (!(plan->weight >= 0 && plan->weight <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("hybrid_weight = ", request.hybrid_weight(),
                                                   " is invalid; use a number in [0, 1]"));
  }
  const bool content = method == v1::RECOMMEND_METHOD_CONTENT;
  if (!(request.content_weight() >= 0 && request.content_weight() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("content_weight = ", request.content_weight(),
                                                   " is invalid; use a number in [0, 1]"));
  }
  if (request.content_weight() != 0 && method != v1::RECOMMEND_METHOD_HYBRID) {
    return absl::InvalidArgumentError(absl::StrCat(
        "content_weight = ", request.content_weight(), " applies to HYBRID, not to ",
        v1::RecommendMethod_Name(method), "; leave it 0"));
  }
  plan->content_weight = request.content_weight();
  if (content || plan->content_weight > 0) {
    if (request.content_model_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "content_model_id is empty; ", v1::RecommendMethod_Name(method),
          content ? "" : " with content_weight > 0",
          " needs a user–user neighbour model on feature vectors"));
    }
    COHORT_ASSIGN_OR_RETURN(plan->content_model, FindNeighbourModel(request.content_model_id()));
    if (plan->content_model->item_item() ||
        plan->content_model->model.options().segment_model_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "content_model_id '", request.content_model_id(),
          "' is not a user–user neighbour model on feature vectors (USERS or TRANSACTIONS)"));
    }
  }
  const bool item_scores =
      method == v1::RECOMMEND_METHOD_ITEM_BASED || method == v1::RECOMMEND_METHOD_HYBRID;
  const bool user_scores =
      method == v1::RECOMMEND_METHOD_USER_BASED || method == v1::RECOMMEND_METHOD_HYBRID;
  // CONTENT reads the catalogue of whichever interaction model is given.
  const bool need_item_model = item_scores || (content && !request.item_model_id().empty());
  const bool need_user_model =
      user_scores || (content && request.item_model_id().empty() && !request.user_model_id().empty());
  if (content && request.item_model_id().empty() && request.user_model_id().empty()) {
    return absl::InvalidArgumentError(
        "item_model_id and user_model_id are empty; CONTENT takes the item catalogue from a "
        "neighbour model on the interactions, so give one of them");
  }
  std::shared_ptr<const NeighbourIndex> item_model;
  std::shared_ptr<const NeighbourIndex> user_model;
  if (need_item_model) {
    if (request.item_model_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "item_model_id is empty; ", v1::RecommendMethod_Name(method),
          " needs an item–item neighbour model"));
    }
    COHORT_ASSIGN_OR_RETURN(item_model, FindNeighbourModel(request.item_model_id()));
    if (!item_model->item_item()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "item_model_id '", request.item_model_id(), "' contains user–user neighbours"));
    }
  }
  if (need_user_model) {
    if (request.user_model_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "user_model_id is empty; ", v1::RecommendMethod_Name(method),
          " needs a user–user neighbour model on interactions"));
    }
    COHORT_ASSIGN_OR_RETURN(user_model, FindNeighbourModel(request.user_model_id()));
    if (user_model->item_item() || user_model->model.item_ids_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "user_model_id '", request.user_model_id(),
          "' is not a user–user neighbour model on interactions"));
    }
  }
  if (item_model != nullptr && user_model != nullptr &&
      item_model->model.dataset_id() != user_model->model.dataset_id()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "item_model_id '", request.item_model_id(), "' and user_model_id '",
        request.user_model_id(), "' belong to different datasets"));
  }
  plan->catalogue = item_model != nullptr ? item_model : user_model;
  plan->base = plan->catalogue.get();
  if (item_scores) plan->item_model = std::move(item_model);
  if (user_scores) plan->user_model = std::move(user_model);
  const ItemDictionary& items = plan->base->items;
  plan->options.n = request.n();
  plan->options.cf_weight = plan->weight;
  for (const std::string& id : request.exclude_item_ids()) {
    const int32_t index = items.Find(id);
    if (index >= 0) plan->options.excluded_items.push_back(index);
  }
  COHORT_RETURN_IF_ERROR(plan->options.Validate(items.size()));
  plan->popularity.assign(plan->base->model.item_popularity().begin(),
                          plan->base->model.item_popularity().end());
  return std::shared_ptr<const RecommendPlan>(std::move(plan));
}

namespace {

// The user's neighbours in a user–user model (null: none), in global id (shard, then
// row) order, which is the order of the user-based sums. Empty for a user outside it.
std::vector<Neighbor> SortedUserNeighbours(const NeighbourIndex* model,
                                           const std::string& user_id) {
  std::vector<Neighbor> neighbours;
  if (model == nullptr) return neighbours;
  auto position = model->user_position.find(user_id);
  if (position == model->user_position.end()) return neighbours;
  neighbours = model->lists[position->second];
  std::sort(neighbours.begin(), neighbours.end(),
            [](const Neighbor& a, const Neighbor& b) { return a.id < b.id; });
  return neighbours;
}

// The users whose rows a recommendation for `user_id` reads: the user, then its
// neighbours for user-based and content scores.
std::vector<std::string> RowsToFetch(const RecommendPlan& plan, const std::string& user_id) {
  std::vector<std::string> wanted = {user_id};
  for (const NeighbourIndex* model : {plan.user_model.get(), plan.content_model.get()}) {
    for (const Neighbor& neighbour : SortedUserNeighbours(model, user_id)) {
      wanted.push_back(model->UserId(neighbour.id));
    }
  }
  return wanted;
}

// Σ s_uv · r_vi over the user's neighbours v in `model` whose rows were fetched.
// `Rows` maps user ids to rows with item_ids and values.
template <typename Rows>
std::vector<double> NeighbourScores(const NeighbourIndex& model, const std::string& user_id,
                                    const ItemDictionary& items, const Rows& rows) {
  std::vector<double> scores(items.size(), 0.0);
  for (const Neighbor& neighbour : SortedUserNeighbours(&model, user_id)) {
    auto row = rows.find(model.UserId(neighbour.id));
    if (row == rows.end()) continue;
    for (size_t e = 0; e < row->second.item_ids.size(); ++e) {
      const int32_t index = items.Find(row->second.item_ids[e]);
      if (index >= 0) scores[index] += double{neighbour.score} * row->second.values[e];
    }
  }
  return scores;
}

// Scales scores to [0, 1] by their maximum; scores <= 0 (or all, when none is > 0)
// become 0.
void ScaleByMax(std::vector<double>* scores) {
  double max_score = 0;
  for (double score : *scores) max_score = std::max(max_score, score);
  for (double& score : *scores) score = max_score > 0 ? std::max(0.0, score) / max_score : 0.0;
}

}  // namespace

absl::StatusOr<v1::RecommendResponse> CohortServiceImpl::ScoreRecommendation(
    const RecommendPlan& plan, const std::string& user_id,
    const std::map<std::string, FetchedRow>& rows) {
  const ItemDictionary& items = plan.base->items;
  UserRatings seen;
  auto own = rows.find(user_id);
  if (own != rows.end()) {
    seen = ToRatings(own->second.item_ids, own->second.values, items);
  } else if (plan.method != v1::RECOMMEND_METHOD_CONTENT ||
             plan.content_model->user_position.count(user_id) == 0) {
    // Only CONTENT serves a user without interactions, from the user's features.
    return absl::NotFoundError(absl::StrCat("user '", user_id, "' has no interactions in dataset '",
                                            plan.base->model.dataset_id(), "'"));
  }

  std::vector<double> scores;
  if (plan.item_model != nullptr) {
    scores = ItemBasedScores(seen, plan.item_model->lists, items.size());
  }
  if (plan.user_model != nullptr) {
    std::vector<double> user_scores = NeighbourScores(*plan.user_model, user_id, items, rows);
    if (plan.item_model == nullptr) {
      scores = std::move(user_scores);
    } else {
      ScaleByMax(&user_scores);
      COHORT_ASSIGN_OR_RETURN(scores, HybridScores(scores, user_scores, plan.weight));
    }
  }
  if (plan.content_model != nullptr) {
    std::vector<double> content_scores =
        NeighbourScores(*plan.content_model, user_id, items, rows);
    if (plan.method == v1::RECOMMEND_METHOD_CONTENT) {
      scores = std::move(content_scores);
    } else {
      // HYBRID: HybridScores scales the item and user mix by its maximum, and the
      // content scores are scaled here.
      ScaleByMax(&content_scores);
      COHORT_ASSIGN_OR_RETURN(
          scores, HybridScores(scores, content_scores, 1.0 - plan.content_weight));
    }
  }

  COHORT_ASSIGN_OR_RETURN(RecommendationList list,
                          RankRecommendations(scores, seen, plan.popularity, plan.options));
  v1::RecommendResponse response;
  response.set_user_id(user_id);
  for (const Recommendation& item : list.items) {
    v1::RecommendedItem* out = response.add_items();
    out->set_item_id(items.id(item.item));
    out->set_score(item.score);
    out->set_from_neighbours(item.from_neighbors);
  }
  response.set_fewer_than_n(list.fewer_than_requested);
  return response;
}

absl::StatusOr<v1::RecommendResponse> CohortServiceImpl::RecommendOne(
    const v1::RecommendRequest& request) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const RecommendPlan> plan, PlanRecommendation(request));
  COHORT_ASSIGN_OR_RETURN(auto rows, FetchUserRows(plan->base->model.dataset_id(),
                                                   RowsToFetch(*plan, request.user_id())));
  return ScoreRecommendation(*plan, request.user_id(), rows);
}

grpc::Status CohortServiceImpl::Recommend(grpc::ServerContext*, const v1::RecommendRequest* request,
                                          v1::RecommendResponse* response) {
  absl::StatusOr<v1::RecommendResponse> result = RecommendOne(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::RecommendBatch(grpc::ServerContext* context,
                                               const v1::RecommendBatchRequest* request,
                                               grpc::ServerWriter<v1::RecommendResponse>* writer) {
  if (request->user_ids_size() < 1 || request->user_ids_size() > kMaxBatchUsers) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("user_ids has ", request->user_ids_size(),
                              " entries; give 1..", kMaxBatchUsers));
  }
  // Errors name the user whose recommendation failed; an error of the options is the
  // first user's, as a loop over Recommend would report it.
  const auto user_error = [](const std::string& user_id, const absl::Status& status) {
    return Error(status.code(), absl::StrCat("user '", user_id, "': ", status.message()));
  };
  absl::StatusOr<std::shared_ptr<const RecommendPlan>> plan =
      PlanRecommendation(request->options());
  if (!plan.ok()) return user_error(request->user_ids(0), plan.status());
  const std::string& dataset_id = (*plan)->base->model.dataset_id();
  // One set of streams serves the whole batch: each block of users sends its rows and
  // its neighbours' rows in one FetchUsers command per kUsersPerFetch ids.
  absl::StatusOr<std::unique_ptr<JobStreams>> streams = OpenRowFetch(dataset_id, {});
  if (!streams.ok()) return user_error(request->user_ids(0), streams.status());
  for (int first = 0; first < request->user_ids_size(); first += kUsersPerBatchBlock) {
    const int end = std::min(request->user_ids_size(), first + kUsersPerBatchBlock);
    std::vector<std::string> wanted;
    std::set<std::string> distinct;
    for (int i = first; i < end; ++i) {
      for (std::string& id : RowsToFetch(**plan, request->user_ids(i))) {
        if (distinct.insert(id).second) wanted.push_back(std::move(id));
      }
    }
    std::map<std::string, FetchedRow> rows;
    const absl::Status fetched = FetchRowsOnStreams(streams->get(), wanted, &rows);
    if (!fetched.ok()) return user_error(request->user_ids(first), fetched);
    for (int i = first; i < end; ++i) {
      const std::string& user_id = request->user_ids(i);
      absl::StatusOr<v1::RecommendResponse> result = ScoreRecommendation(**plan, user_id, rows);
      if (!result.ok()) return user_error(user_id, result.status());
      if (context->IsCancelled() || !writer->Write(*result)) {
        return Error(absl::StatusCode::kCancelled, "the caller closed the recommendation stream");
      }
    }
  }
  if (*streams != nullptr) (*streams)->Close();
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::PredictRating(grpc::ServerContext*,
                                              const v1::PredictRatingRequest* request,
                                              v1::PredictRatingResponse* response) {
  const v1::RecommendMethod method = request->method() == v1::RECOMMEND_METHOD_UNSPECIFIED
                                         ? v1::RECOMMEND_METHOD_ITEM_BASED
                                         : request->method();
  if (method != v1::RECOMMEND_METHOD_ITEM_BASED && method != v1::RECOMMEND_METHOD_USER_BASED) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("method ", v1::RecommendMethod_Name(method),
                              " cannot predict a rating; use ITEM_BASED or USER_BASED"));
  }
  absl::StatusOr<std::shared_ptr<const NeighbourIndex>> found =
      FindNeighbourModel(request->model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const NeighbourIndex& model = **found;
  const bool item_based = method == v1::RECOMMEND_METHOD_ITEM_BASED;
  if (model.item_item() != item_based || model.model.item_ids_size() == 0) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("model '", request->model_id(), "' is not an ",
                              item_based ? "item–item" : "user–user on interactions",
                              " neighbour model, which ", v1::RecommendMethod_Name(method),
                              " needs"));
  }
  PredictionOptions options;
  options.k = request->k() == 0 ? kDefaultPredictionK : request->k();
  options.min_k = request->min_k() == 0 ? 1 : request->min_k();
  options.min_rating = request->min_rating();
  options.max_rating = request->max_rating();
  if (options.min_rating == 0 && options.max_rating == 0) {
    options.min_rating = model.model.min_value();
    options.max_rating = model.model.max_value();
  }
  absl::Status valid = options.Validate();
  if (!valid.ok()) return ToGrpcStatus(valid);
  const int32_t item = model.items.Find(request->item_id());
  if (item < 0) {
    return Error(absl::StatusCode::kNotFound,
                 absl::StrCat("item '", request->item_id(), "' is not in model '",
                              request->model_id(), "'"));
  }

  std::vector<std::string> wanted = {request->user_id()};
  std::vector<Neighbor> user_neighbours;
  if (!item_based) {
    auto position = model.user_position.find(request->user_id());
    if (position == model.user_position.end()) {
      return Error(absl::StatusCode::kNotFound,
                   absl::StrCat("user '", request->user_id(), "' is not in model '",
                                request->model_id(), "'"));
    }
    user_neighbours = model.lists[position->second];
    for (const Neighbor& neighbour : user_neighbours) wanted.push_back(model.UserId(neighbour.id));
  }
  absl::StatusOr<std::map<std::string, FetchedRow>> rows =
      FetchUserRows(model.model.dataset_id(), wanted);
  if (!rows.ok()) return ToGrpcStatus(rows.status());
  auto own = rows->find(request->user_id());
  if (own == rows->end()) {
    return Error(absl::StatusCode::kNotFound,
                 absl::StrCat("user '", request->user_id(), "' has no interactions in dataset '",
                              model.model.dataset_id(), "'"));
  }

  // KNNBaseline around μ + b_u + b_i. A model without fitted baselines predicts around
  // the global mean: item-based with all biases 0, user-based as KNNBasic.
  Baselines zero_biases;
  zero_biases.global_mean = model.model.global_mean();
  zero_biases.item_bias.assign(model.items.size(), 0.0);
  const Baselines& baselines = model.has_baselines() ? model.baselines : zero_biases;
  const UserRatings seen = ToRatings(own->second.item_ids, own->second.values, model.items);
  const double user_bias = model.UserBias(seen);
  int support = 0;
  if (item_based) {
    for (const Neighbor& neighbour : model.lists[item]) {
      if (support >= options.k) break;
      if (neighbour.score > 0 &&
          std::binary_search(seen.items.begin(), seen.items.end(),
                             static_cast<int32_t>(neighbour.id))) {
        ++support;
      }
    }
    response->set_rating(PredictItemBased(seen, user_bias, item, baselines, model.lists, options));
  } else {
    const double item_bias = baselines.item_bias[item];
    std::vector<RatedNeighbor> rated;
    for (const Neighbor& neighbour : user_neighbours) {
      auto row = rows->find(model.UserId(neighbour.id));
      if (row == rows->end()) continue;
      const auto& ids = row->second.item_ids;
      auto it = std::find(ids.begin(), ids.end(), request->item_id());
      if (it == ids.end()) continue;
      const double neighbour_bias =
          model.UserBias(ToRatings(row->second.item_ids, row->second.values, model.items));
      rated.push_back(RatedNeighbor{neighbour.score, row->second.values[it - ids.begin()],
                                    baselines.global_mean + neighbour_bias + item_bias});
      if (neighbour.score > 0 && support < options.k) ++support;
    }
    response->set_rating(
        model.has_baselines()
            ? PredictUserBaseline(rated, baselines.global_mean + user_bias + item_bias, options)
            : PredictUserBasic(rated, baselines.global_mean, options));
  }
  response->set_support(support);
  response->set_fallback(support < options.min_k);
  return grpc::Status::OK;
}

}  // namespace cohort
