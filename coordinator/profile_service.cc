// The profiling RPCs of CohortServiceImpl: profile jobs and models, user profiles,
// audience selection and online scoring.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "coordinator/cohort_service.h"
#include "coordinator/profile_job.h"
#include "coordinator/state_file.h"
#include "core/log.h"
#include "core/logistic.h"
#include "core/pipeline.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

constexpr int kDefaultTopFeatures = 5;
constexpr int kMaxTopFeatures = 1000;
// Audience members per streamed message.
constexpr int kAudienceChunkMembers = 1000;
constexpr char kProfileModelSuffix[] = ".profile_model.pb";

grpc::Status Fail(absl::StatusCode code, const std::string& message) {
  return ToGrpcStatus(absl::Status(code, message));
}

// The job streams of one query (an audience or a profile lookup) to the owners of
// `shards`. A worker declared lost while the query runs breaks its stream, so the query
// returns Unavailable instead of waiting. A worker that returns no result for a command
// within `step_timeout` fails the query the same way.
class QueryStreams {
 public:
  // Errors: Unavailable when an owner is not live or its stream cannot be opened.
  static absl::StatusOr<std::unique_ptr<QueryStreams>> Open(
      WorkerRegistry* registry, const std::string& query_id, const std::string& dataset_id,
      const std::vector<std::string>& owners, const std::vector<int>& shards,
      absl::Duration step_timeout) {
    std::map<std::string, std::vector<int>> shards_by_worker;
    for (int shard : shards) shards_by_worker[owners[shard]].push_back(shard);
    const std::vector<WorkerHandle> live = registry->LiveWorkers();
    std::vector<JobStreams::Member> members;
    for (const auto& [worker_id, worker_shards] : shards_by_worker) {
      auto worker = std::find_if(live.begin(), live.end(), [&](const WorkerHandle& handle) {
        return handle.worker_id == worker_id;
      });
      if (worker == live.end()) {
        return absl::UnavailableError(absl::StrCat(
            "worker ", worker_id, " holding shard ", worker_shards.front(),
            " is not live; load the data into a new dataset and rerun the profile job"));
      }
      members.push_back(JobStreams::Member{*worker, worker_shards});
    }
    JobStreams::Options stream_options;
    stream_options.step_timeout = step_timeout;
    COHORT_ASSIGN_OR_RETURN(
        std::unique_ptr<JobStreams> streams,
        JobStreams::Open(query_id, dataset_id, std::move(members), std::move(stream_options)));
    std::unique_ptr<QueryStreams> query(new QueryStreams(registry, std::move(streams)));
    JobStreams* raw = query->streams_.get();
    query->listener_ = registry->AddLossListener([raw](const std::string& worker_id) {
      if (raw->HasWorker(worker_id)) raw->MarkLost(worker_id);
    });
    return query;
  }

  ~QueryStreams() {
    registry_->RemoveLossListener(listener_);
    streams_->Close();
  }

  JobStreams* streams() { return streams_.get(); }

 private:
  QueryStreams(WorkerRegistry* registry, std::unique_ptr<JobStreams> streams)
      : registry_(registry), streams_(std::move(streams)) {}

  WorkerRegistry* registry_;
  std::unique_ptr<JobStreams> streams_;
  int listener_ = -1;
};

// The column names a fitted pipeline reads.
std::set<std::string> PipelineColumns(const PipelineModel& pipeline) {
  std::set<std::string> names;
  for (const FittedColumn& column : pipeline.columns) names.insert(column.spec.column);
  return names;
}

// The segment model `segment_model_id` (found or not, as FindModel returned it) after a
// check that it is of the profile model's dataset. Errors: the lookup's, or
// InvalidArgument for a model of another dataset.
absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> SameDatasetSegments(
    absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> segments,
    const std::string& segment_model_id, const v1::ProfileModel& model) {
  if (!segments.ok()) return segments.status();
  if ((*segments)->dataset_id() != model.dataset_id()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment_model_id '", segment_model_id, "' is a model of dataset '",
        (*segments)->dataset_id(), "' but the profile model is of dataset '", model.dataset_id(),
        "'; use a segment model of the same dataset"));
  }
  return segments;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Profile jobs and models

grpc::Status CohortServiceImpl::StartProfileJob(grpc::ServerContext*,
                                                const v1::StartProfileJobRequest* request,
                                                v1::Job* response) {
  Schema schema;
  {
    absl::MutexLock lock(&mutex_);
    auto it = datasets_.find(request->dataset_id());
    if (it == datasets_.end()) {
      return Fail(absl::StatusCode::kNotFound,
                  absl::StrCat("dataset '", request->dataset_id(), "' does not exist"));
    }
    if (it->second.info.state() != v1::DATASET_STATE_READY) {
      return Fail(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("dataset '", request->dataset_id(), "' is ",
                               v1::DatasetState_Name(it->second.info.state()),
                               "; load rows before training a profile model"));
    }
    absl::StatusOr<Schema> parsed = FromProto(it->second.info.schema());
    if (!parsed.ok()) return ToGrpcStatus(parsed.status());
    schema = *std::move(parsed);
  }
  const absl::Status valid = ValidateProfileOptions(request->options(), schema);
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::StatusOr<std::shared_ptr<JobRecord>> record =
      CreateJob(request->dataset_id(), v1::SegmentationOptions(), 0, {},
                std::make_shared<const v1::ProfileOptions>(request->options()));
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::MutexLock lock(&(*record)->mutex);
  *response = (*record)->job;
  COHORT_LOG_INFO("profile job {} started on dataset {}", (*record)->job_id,
                  (*record)->dataset_id);
  return grpc::Status::OK;
}

absl::Status CohortServiceImpl::RunProfile(
    const JobRecord& record, const std::function<void(const v1::JobEvent&)>& on_event,
    JobStreams* streams, std::string* model_id) {
  ProfileJobInput input;
  input.job_id = record.job_id;
  input.dataset_id = record.dataset_id;
  input.schema = record.schema;
  input.expected_users = record.num_users;
  input.options = *record.profile;
  input.on_event = on_event;
  COHORT_ASSIGN_OR_RETURN(v1::ProfileModel model, RunProfileJob(input, streams));
  {
    absl::MutexLock lock(&mutex_);
    auto dataset = datasets_.find(record.dataset_id);
    if (dataset != datasets_.end()) {
      model.set_load_duplicate_rows(dataset->second.info.dropped().duplicate_rows());
      model.set_load_unparsable_cells(dataset->second.info.dropped().unparsable_cells());
    }
  }
  COHORT_RETURN_IF_ERROR(PersistProfileModel(model));
  *model_id = model.model_id();
  absl::MutexLock lock(&mutex_);
  profile_models_[*model_id] = std::make_shared<const v1::ProfileModel>(std::move(model));
  return absl::OkStatus();
}

absl::Status CohortServiceImpl::PersistProfileModel(const v1::ProfileModel& model) const {
  if (options_.state_dir.empty()) return absl::OkStatus();
  return WriteMessageAtomically(
      absl::StrCat(options_.state_dir, "/models/", model.model_id(), kProfileModelSuffix), model);
}

absl::Status CohortServiceImpl::LoadProfileModels(const std::string& models_dir) {
  int loaded = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir, error)) {
    const std::string path = entry.path().string();
    if (!absl::EndsWith(path, kProfileModelSuffix)) continue;
    std::ifstream in(path, std::ios::binary);
    auto model = std::make_shared<v1::ProfileModel>();
    if (!in || !model->ParseFromIstream(&in)) {
      return absl::InternalError(
          absl::StrCat("state file ", path, " is not a readable profile model; move it away"));
    }
    absl::MutexLock lock(&mutex_);
    // Job ids continue after the highest stored one, as for segment models.
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::StripPrefix(model->model_id(), "job-"), &number)) {
      next_job_ = std::max(next_job_, number + 1);
    }
    profile_models_[model->model_id()] = std::move(model);
    ++loaded;
  }
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot list state folder ", models_dir, ": ", error.message()));
  }
  COHORT_LOG_INFO("coordinator state: {} profile models loaded from {}", loaded, models_dir);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> CohortServiceImpl::FindProfileModel(
    const std::string& id) const {
  absl::MutexLock lock(&mutex_);
  auto model = profile_models_.find(id);
  if (model != profile_models_.end()) return model->second;
  auto job = jobs_.find(id);
  if (job != jobs_.end()) {
    if (job->second->profile == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job '", id, "' is a segmentation job, not a profile job; read it with GetSegmentModel"));
    }
    absl::MutexLock job_lock(&job->second->mutex);
    return absl::FailedPreconditionError(
        absl::StrCat("profile job '", id, "' is ", v1::JobState_Name(job->second->job.state()),
                     "; a model exists only once the job has succeeded"));
  }
  if (models_.count(id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", id, "' is a segment model, not a profile model"));
  }
  return absl::NotFoundError(absl::StrCat("profile model '", id, "' does not exist"));
}

absl::StatusOr<std::shared_ptr<CohortServiceImpl::JobRecord>> CohortServiceImpl::ScoredJob(
    const v1::ProfileModel& model) const {
  absl::MutexLock lock(&mutex_);
  auto it = jobs_.find(model.job_id());
  if (it == jobs_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the per-user scores of profile model '", model.model_id(),
                     "' are gone since the coordinator restarted; rerun the profile job"));
  }
  return it->second;
}

grpc::Status CohortServiceImpl::GetProfileModel(grpc::ServerContext*,
                                                const v1::GetProfileModelRequest* request,
                                                v1::ProfileModel* response) {
  absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> model =
      FindProfileModel(request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  *response = **model;
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------
// Profiles, audiences and online scoring

grpc::Status CohortServiceImpl::GetProfile(grpc::ServerContext*,
                                           const v1::GetProfileRequest* request,
                                           v1::UserProfile* response) {
  if (request->user_id().empty()) {
    return Fail(absl::StatusCode::kInvalidArgument, "user_id is empty; give the id of a user");
  }
  if (request->top_features() < 0 || request->top_features() > kMaxTopFeatures) {
    return Fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("top_features = ", request->top_features(), " is invalid; use 0..",
                             kMaxTopFeatures, " (0 means ", kDefaultTopFeatures, ")"));
  }
  absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> found =
      FindProfileModel(request->profile_model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const v1::ProfileModel& model = **found;
  std::string segment_job_id;
  if (!request->segment_model_id().empty()) {
    absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> segments = SameDatasetSegments(
        FindModel(request->segment_model_id()), request->segment_model_id(), model);
    if (!segments.ok()) return ToGrpcStatus(segments.status());
    segment_job_id = (*segments)->job_id();
  }
  absl::StatusOr<std::shared_ptr<JobRecord>> record = ScoredJob(model);
  if (!record.ok()) return ToGrpcStatus(record.status());
  const int shard = ShardOfUser(request->user_id(), static_cast<int>((*record)->owners.size()));
  absl::StatusOr<std::unique_ptr<QueryStreams>> query =
      QueryStreams::Open(registry_, absl::StrCat(model.job_id(), "/profile"), model.dataset_id(),
                         (*record)->owners, {shard}, options_.step_timeout);
  if (!query.ok()) return ToGrpcStatus(query.status());
  v1::JobCommand command;
  command.mutable_lookup_user()->set_user_id(request->user_id());
  command.mutable_lookup_user()->set_profile_job_id(model.job_id());
  command.mutable_lookup_user()->set_segment_job_id(segment_job_id);
  absl::StatusOr<std::vector<v1::ShardResult>> results =
      (*query)->streams()->Execute(std::move(command));
  if (!results.ok()) return ToGrpcStatus(results.status());
  const v1::LookupUserResult& user = results->front().lookup_user();
  if (!user.found()) {
    return Fail(absl::StatusCode::kNotFound,
                absl::StrCat("user '", request->user_id(), "' is not in dataset '",
                             model.dataset_id(), "'"));
  }

  absl::StatusOr<PipelineModel> pipeline = PipelineModel::Deserialize(model.fitted_pipeline());
  if (!pipeline.ok()) return ToGrpcStatus(pipeline.status());
  const std::set<std::string> known = PipelineColumns(*pipeline);
  std::map<std::string, std::string> cells;
  for (int i = 0; i < user.column_names_size(); ++i) {
    (*response->mutable_columns())[user.column_names(i)] = user.cells(i);
    if (known.count(user.column_names(i)) > 0) cells[user.column_names(i)] = user.cells(i);
  }
  absl::StatusOr<std::vector<float>> features = TransformUserPipeline(*pipeline, cells);
  if (!features.ok()) return ToGrpcStatus(features.status());
  response->set_user_id(request->user_id());
  response->set_dataset_id(model.dataset_id());
  response->set_propensity(user.score());
  response->set_decile(ScoreDecile(model, user.score()));
  response->set_has_segment(user.has_segment());
  response->set_segment(user.has_segment() ? user.segment() : -1);
  response->set_segment_distance(user.segment_distance());
  const int top = request->top_features() == 0 ? kDefaultTopFeatures : request->top_features();
  for (v1::FeatureContribution& contribution : TopContributions(model, *features, top)) {
    *response->add_top_features() = std::move(contribution);
  }
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::SelectAudience(grpc::ServerContext* context,
                                               const v1::SelectAudienceRequest* request,
                                               grpc::ServerWriter<v1::AudienceChunk>* writer) {
  if (request->top_n() < 0) {
    return Fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("top_n = ", request->top_n(),
                             " is invalid; use 0 (every matching user) or a positive count"));
  }
  if (request->per_segment_cap() < 0) {
    return Fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("per_segment_cap = ", request->per_segment_cap(),
                             " is invalid; use 0 (no cap) or a positive count"));
  }
  if (request->has_min_score() && !std::isfinite(request->min_score())) {
    return Fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("min_score = ", request->min_score(), " is invalid; use a number"));
  }
  if (request->segment_model_id().empty() &&
      (request->segments_size() > 0 || request->per_segment_cap() > 0)) {
    return Fail(absl::StatusCode::kInvalidArgument,
                "segments and per_segment_cap need segment_model_id; name the segment model");
  }
  absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> found =
      FindProfileModel(request->profile_model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const v1::ProfileModel& model = **found;
  std::string segment_job_id;
  if (!request->segment_model_id().empty()) {
    absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> segments = SameDatasetSegments(
        FindModel(request->segment_model_id()), request->segment_model_id(), model);
    if (!segments.ok()) return ToGrpcStatus(segments.status());
    for (int segment : request->segments()) {
      if (segment < 0 || segment >= (*segments)->effective_k()) {
        return Fail(absl::StatusCode::kInvalidArgument,
                    absl::StrCat("segments contains ", segment, ", which is outside [0, ",
                                 (*segments)->effective_k(), ") of segment model '",
                                 request->segment_model_id(), "'"));
      }
    }
    segment_job_id = (*segments)->job_id();
  }
  absl::StatusOr<std::shared_ptr<JobRecord>> record = ScoredJob(model);
  if (!record.ok()) return ToGrpcStatus(record.status());
  std::vector<int> shards((*record)->owners.size());
  for (size_t shard = 0; shard < shards.size(); ++shard) shards[shard] = static_cast<int>(shard);
  absl::StatusOr<std::unique_ptr<QueryStreams>> query =
      QueryStreams::Open(registry_, absl::StrCat(model.job_id(), "/audience"),
                         model.dataset_id(), (*record)->owners, shards, options_.step_timeout);
  if (!query.ok()) return ToGrpcStatus(query.status());

  v1::JobCommand command;
  v1::SelectAudienceShard* filter = command.mutable_select_audience();
  filter->set_profile_job_id(model.job_id());
  filter->set_segment_job_id(segment_job_id);
  *filter->mutable_segments() = request->segments();
  filter->set_has_min_score(request->has_min_score());
  filter->set_min_score(request->min_score());
  filter->set_top_n(request->top_n());
  filter->set_per_segment_cap(request->per_segment_cap());
  *filter->mutable_exclude_user_ids() = request->exclude_user_ids();
  absl::StatusOr<std::vector<v1::ShardResult>> results =
      (*query)->streams()->Execute(std::move(command));
  if (!results.ok()) return ToGrpcStatus(results.status());

  // Each shard sent its best users under the same filters, cap and top_n, so the global
  // selection is the same walk over the merged list.
  std::vector<v1::AudienceMember> merged;
  for (const v1::ShardResult& result : *results) {
    const v1::AudienceShardResult& part = result.audience();
    if (part.scores_size() != part.user_ids_size() || part.segments_size() != part.user_ids_size()) {
      return Fail(absl::StatusCode::kInternal,
                  absl::StrCat("shard ", result.shard_id(), " returned a malformed audience"));
    }
    for (int i = 0; i < part.user_ids_size(); ++i) {
      v1::AudienceMember member;
      member.set_user_id(part.user_ids(i));
      member.set_propensity(part.scores(i));
      member.set_segment(part.segments(i));
      merged.push_back(std::move(member));
    }
  }
  std::sort(merged.begin(), merged.end(),
            [](const v1::AudienceMember& a, const v1::AudienceMember& b) {
              if (a.propensity() != b.propensity()) return a.propensity() > b.propensity();
              return a.user_id() < b.user_id();
            });
  std::vector<const v1::AudienceMember*> selected;
  std::map<int32_t, int64_t> per_segment;
  for (const v1::AudienceMember& member : merged) {
    if (request->top_n() > 0 && static_cast<int64_t>(selected.size()) >= request->top_n()) break;
    if (request->per_segment_cap() > 0 &&
        per_segment[member.segment()] >= request->per_segment_cap()) {
      continue;
    }
    ++per_segment[member.segment()];
    selected.push_back(&member);
  }

  v1::AudienceChunk head;
  head.set_count(static_cast<int64_t>(selected.size()));
  if (!writer->Write(head)) {
    return Fail(absl::StatusCode::kCancelled, "the caller closed the audience stream");
  }
  for (size_t begin = 0; begin < selected.size(); begin += kAudienceChunkMembers) {
    if (context->IsCancelled()) return Fail(absl::StatusCode::kCancelled, "audience cancelled");
    v1::AudienceChunk chunk;
    const size_t end = std::min(selected.size(), begin + kAudienceChunkMembers);
    for (size_t i = begin; i < end; ++i) *chunk.add_members() = *selected[i];
    if (!writer->Write(chunk)) {
      return Fail(absl::StatusCode::kCancelled, "the caller closed the audience stream");
    }
  }
  COHORT_LOG_INFO("audience of profile model {}: {} users", model.model_id(), selected.size());
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::ScoreUser(grpc::ServerContext* context,
                                          const v1::ScoreUserRequest* request,
                                          v1::ScoreUserResponse* response) {
  absl::StatusOr<std::shared_ptr<const v1::ProfileModel>> found =
      FindProfileModel(request->profile_model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const v1::ProfileModel& model = **found;
  absl::StatusOr<PipelineModel> pipeline = PipelineModel::Deserialize(model.fitted_pipeline());
  if (!pipeline.ok()) return ToGrpcStatus(pipeline.status());
  const std::set<std::string> profile_columns = PipelineColumns(*pipeline);

  std::set<std::string> segment_columns;
  if (!request->segment_model_id().empty()) {
    absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> segments =
        FindModel(request->segment_model_id());
    if (!segments.ok()) return ToGrpcStatus(segments.status());
    for (const v1::NumericFeature& numeric : (*segments)->transform().numeric()) {
      segment_columns.insert(numeric.name());
    }
    for (const v1::CategoricalFeature& categorical : (*segments)->transform().categorical()) {
      segment_columns.insert(categorical.name());
    }
  }

  // A column goes to each model that reads it. The label column is accepted and unused,
  // so a full row of the training file can be scored as it is.
  std::map<std::string, std::string> profile_cells;
  v1::AssignSegmentRequest assign;
  assign.set_model_id(request->segment_model_id());
  for (const auto& [name, cell] : request->columns()) {
    const bool profile = profile_columns.count(name) > 0;
    const bool segment = segment_columns.count(name) > 0;
    if (profile) profile_cells[name] = cell;
    if (segment) (*assign.mutable_columns())[name] = cell;
    if (!profile && !segment && name != pipeline->label_column) {
      return Fail(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("columns['", name, "'] is not read by profile model '",
                               model.model_id(), "'",
                               request->segment_model_id().empty()
                                   ? ""
                                   : absl::StrCat(" or segment model '",
                                                  request->segment_model_id(), "'"),
                               "; remove it"));
    }
  }
  absl::StatusOr<std::vector<float>> features = TransformUserPipeline(*pipeline, profile_cells);
  if (!features.ok()) return ToGrpcStatus(features.status());
  LogisticModel logistic;
  logistic.coefficients.assign(model.weights().begin(), model.weights().end());
  logistic.intercept = model.intercept();
  if (static_cast<int>(features->size()) != model.weights_size()) {
    return Fail(absl::StatusCode::kInternal,
                absl::StrCat("profile model ", model.model_id(), " has ", model.weights_size(),
                             " weights but its pipeline gives ", features->size(), " features"));
  }
  const double propensity = logistic.Probability(features->data());
  response->set_propensity(propensity);
  response->set_decile(ScoreDecile(model, propensity));
  for (v1::FeatureContribution& contribution :
       TopContributions(model, *features, kDefaultTopFeatures)) {
    *response->add_top_features() = std::move(contribution);
  }
  response->set_segment(-1);
  if (!request->segment_model_id().empty()) {
    v1::AssignSegmentResponse assigned;
    const grpc::Status status = AssignSegment(context, &assign, &assigned);
    if (!status.ok()) return status;
    response->set_has_segment(true);
    response->set_segment(assigned.segment());
    response->set_segment_distance(assigned.squared_distance());
  }
  return grpc::Status::OK;
}

}  // namespace cohort
