#include "coordinator/cohort_service.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "coordinator/placement.h"
#include "coordinator/replicated_write.h"
#include "coordinator/segmentation_job.h"
#include "coordinator/shard_moves.h"
#include "coordinator/state_file.h"
#include "core/features.h"
#include "core/log.h"
#include "core/raw_table.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"
#include "core/transactions.h"
#include "proto/convert.h"
#include "proto/similarity_convert.h"

namespace cohort {
namespace {

constexpr int kDefaultShards = 64;
constexpr int kMaxShards = 4096;
constexpr size_t kMaxIdLength = 64;
// How long a WatchJob handler waits for a new event before it checks for cancellation.
constexpr absl::Duration kWatchPoll = absl::Milliseconds(500);

bool IsValidId(const std::string& id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

grpc::Status Error(absl::StatusCode code, const std::string& message) {
  return ToGrpcStatus(absl::Status(code, message));
}

absl::Status NoLiveWorkerError() {
  return absl::UnavailableError(
      "no worker is live; start workers with 'cohort worker --coordinator ADDRESS' and retry. "
      "After a coordinator restart, such workers register again within their "
      "--register-interval; workers given in --workers are probed at once");
}

std::string ModelPath(const std::string& state_dir, const std::string& model_id) {
  return absl::StrCat(state_dir, "/models/", model_id, ".segment_model.pb");
}

// The input position a load error names as "<path>:<line>: ", or nullopt when its
// message does not start with one. Workers read the files in sorted path order, so
// comparing positions orders errors by where they occur in the input.
std::optional<std::pair<std::string, int64_t>> LoadErrorPosition(std::string_view message) {
  for (size_t colon = message.find(':'); colon != std::string_view::npos;
       colon = message.find(':', colon + 1)) {
    size_t end = colon + 1;
    while (end < message.size() && absl::ascii_isdigit(static_cast<unsigned char>(message[end]))) {
      ++end;
    }
    if (end == colon + 1 || message.substr(end, 2) != ": ") continue;
    int64_t line = 0;
    if (!absl::SimpleAtoi(std::string(message.substr(colon + 1, end - colon - 1)), &line)) {
      continue;
    }
    return std::make_pair(std::string(message.substr(0, colon)), line);
  }
  return std::nullopt;
}

}  // namespace

CohortServiceImpl::CohortServiceImpl(WorkerRegistry* registry, CohortServiceOptions options)
    : registry_(registry), options_(std::move(options)) {
  registration_listener_ = registry_->AddRegistrationListener(
      [this](const std::string& worker_id, uint64_t instance) {
        CheckOwnerInstance(worker_id, instance);
      });
}

CohortServiceImpl::~CohortServiceImpl() {
  registry_->RemoveRegistrationListener(registration_listener_);
  CancelAllJobs();
}

void CohortServiceImpl::CheckOwnerInstance(const std::string& worker_id, uint64_t instance) {
  if (instance == 0) return;
  absl::MutexLock lock(&mutex_);
  for (auto& [dataset_id, record] : datasets_) {
    // NOTE: streamed datasets are left out: their shards would have to be promoted from
    // replicas, and the replicas the restarted worker held are gone too. A job on them
    // fails with NotFound from that worker.
    if (record.load.source().empty()) continue;
    if (std::find(record.owners.begin(), record.owners.end(), worker_id) ==
        record.owners.end()) {
      continue;
    }
    uint64_t& loaded_by = record.owner_instances[worker_id];
    if (loaded_by == instance || record.restarted_owners.count(worker_id) > 0) continue;
    if (loaded_by == 0) {
      loaded_by = instance;
      SaveDataset(record);
      continue;
    }
    record.restarted_owners.insert(worker_id);
    SaveDataset(record);
    COHORT_LOG_INFO("dataset {}: worker {} restarted, so the next job moves its shards to "
                    "the other live workers",
                    dataset_id, worker_id);
  }
}

std::chrono::system_clock::time_point CohortServiceImpl::WorkerDeadline() const {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(options_.worker_call_timeout);
}

absl::Status CohortServiceImpl::AppendFailure(const grpc::Status& status,
                                              const std::string& worker_id,
                                              absl::string_view action) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::UnavailableError(absl::StrCat("worker ", worker_id, " did not ", action, ": ",
                                               status.error_message(), "; retry"));
  }
  return FromGrpcStatus(status);
}

absl::Status CohortServiceImpl::LoadState() {
  if (options_.state_dir.empty()) return absl::OkStatus();
  std::error_code error;
  const std::filesystem::path models_dir = std::filesystem::path(options_.state_dir) / "models";
  std::filesystem::create_directories(models_dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create state folder ", models_dir.string(),
                                            ": ", error.message()));
  }
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir)) {
    const std::string path = entry.path().string();
    if (!absl::EndsWith(path, ".segment_model.pb")) continue;
    std::ifstream in(path, std::ios::binary);
    auto model = std::make_shared<v1::SegmentModel>();
    if (!in || !model->ParseFromIstream(&in)) {
      return absl::InternalError(absl::StrCat("state file ", path,
                                              " is not a readable segment model; move it away"));
    }
    absl::MutexLock lock(&mutex_);
    // New jobs continue after the highest stored id, so a restarted coordinator never
    // overwrites a model that clients may still hold.
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::StripPrefix(model->model_id(), "job-"), &number)) {
      next_job_ = std::max(next_job_, number + 1);
    }
    models_[model->model_id()] = std::move(model);
    ++loaded;
  }
  COHORT_LOG_INFO("coordinator state: {} segment models loaded from {}", loaded,
                  options_.state_dir);
  COHORT_RETURN_IF_ERROR(LoadNeighbourModels());
  COHORT_RETURN_IF_ERROR(LoadProfileModels(models_dir.string()));
  return LoadDatasets();
}

absl::Status CohortServiceImpl::PersistModel(const v1::SegmentModel& model) const {
  if (options_.state_dir.empty()) return absl::OkStatus();
  return WriteMessageAtomically(ModelPath(options_.state_dir, model.model_id()), model);
}

absl::Status CohortServiceImpl::WriteStateFile(const std::string& path,
                                               const google::protobuf::Message& message) {
  return WriteMessageAtomically(path, message);
}

void CohortServiceImpl::CancelAllJobs() {
  std::vector<std::shared_ptr<JobRecord>> jobs;
  {
    absl::MutexLock lock(&mutex_);
    shutting_down_ = true;
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  for (auto& job : jobs) {
    {
      absl::MutexLock lock(&job->mutex);
      job->cancel_requested = true;
      if (job->streams != nullptr) job->streams->Cancel();
    }
    if (job->thread.joinable()) job->thread.join();
  }
}

// ---------------------------------------------------------------------------------------
// Datasets

absl::StatusOr<std::vector<std::string>> CohortServiceImpl::PlaceDataset(int num_shards) const {
  std::vector<WorkerHandle> live = registry_->LiveWorkers();
  if (live.empty()) {
    return NoLiveWorkerError();
  }
  std::vector<std::string> ids;
  for (const WorkerHandle& worker : live) ids.push_back(worker.worker_id);
  std::vector<std::string> owners;
  for (int index : PlaceShards(num_shards, ids)) owners.push_back(ids[index]);
  return owners;
}

absl::StatusOr<WorkerHandle> CohortServiceImpl::LiveOwner(const std::string& worker_id,
                                                          const std::vector<int>& shards) const {
  for (const WorkerHandle& worker : registry_->LiveWorkers()) {
    if (worker.worker_id == worker_id) return worker;
  }
  return absl::UnavailableError(absl::StrCat(
      "worker ", worker_id, " holding shards ", absl::StrJoin(shards, ","),
      " is not live and its shards are not moved yet; load the data into a new dataset "
      "(CreateDataset + LoadDataset) and retry"));
}

grpc::Status CohortServiceImpl::CreateDataset(grpc::ServerContext*,
                                              const v1::CreateDatasetRequest* request,
                                              v1::Dataset* response) {
  v1::Dataset info;
  info.set_kind(request->kind() == v1::DATASET_KIND_UNSPECIFIED ? v1::DATASET_KIND_USERS
                                                                 : request->kind());
  if (info.kind() != v1::DATASET_KIND_USERS && info.kind() != v1::DATASET_KIND_TRANSACTIONS &&
      info.kind() != v1::DATASET_KIND_INTERACTIONS) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("kind ", request->kind(),
                              " is invalid; use USERS, TRANSACTIONS or INTERACTIONS"));
  }
  const int num_shards = request->num_shards() == 0 ? kDefaultShards : request->num_shards();
  if (num_shards < 1 || num_shards > kMaxShards) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("num_shards = ", request->num_shards(), " is invalid; use 1..",
                              kMaxShards, " (0 means ", kDefaultShards, ")"));
  }
  info.set_num_shards(num_shards);
  if (absl::StatusOr<DuplicateIdRule> rule = FromProto(request->duplicate_ids()); !rule.ok()) {
    return ToGrpcStatus(rule.status());
  }
  if (info.kind() != v1::DATASET_KIND_USERS &&
      request->duplicate_ids() == v1::DUPLICATE_ID_RULE_KEEP_FIRST) {
    return Error(absl::StatusCode::kInvalidArgument,
                 "duplicate_ids KEEP_FIRST applies to USERS datasets; a TRANSACTIONS dataset "
                 "sums the rows of each user and an INTERACTIONS dataset uses duplicate_rule");
  }
  info.set_duplicate_ids(request->duplicate_ids());
  if (info.kind() == v1::DATASET_KIND_INTERACTIONS) {
    if (request->schema().columns_size() > 0) {
      return Error(absl::StatusCode::kInvalidArgument,
                   "an INTERACTIONS dataset takes no schema; its columns are named in "
                   "LoadDatasetRequest.interactions");
    }
    absl::StatusOr<DuplicateRule> rule = ToDuplicateRule(request->duplicate_rule());
    if (!rule.ok()) return ToGrpcStatus(rule.status());
    info.set_duplicate_rule(request->duplicate_rule() == v1::DUPLICATE_RULE_UNSPECIFIED
                                ? v1::DUPLICATE_RULE_KEEP_LATEST
                                : request->duplicate_rule());
  } else if (info.kind() == v1::DATASET_KIND_TRANSACTIONS) {
    if (request->schema().columns_size() > 0) {
      return Error(absl::StatusCode::kInvalidArgument,
                   "a TRANSACTIONS dataset takes no schema; its per-user columns are fixed "
                   "(recency_days, frequency, monetary, distinct_items, mean_basket_value)");
    }
    ToProto(TransactionFeatureSchema(), info.mutable_schema());
  } else if (request->schema().columns_size() > 0) {
    absl::StatusOr<Schema> schema = FromProto(request->schema());
    if (!schema.ok()) return ToGrpcStatus(schema.status());
    ToProto(*schema, info.mutable_schema());
  }
  info.set_state(v1::DATASET_STATE_CREATED);

  absl::MutexLock lock(&mutex_);
  std::string id = request->dataset_id();
  if (id.empty()) {
    do {
      id = absl::StrFormat("dataset-%06d", next_dataset_++);
    } while (datasets_.count(id) > 0);
  } else if (!IsValidId(id)) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("dataset_id '", id,
                              "' is invalid; use 1 to 64 characters from [a-zA-Z0-9_.-]"));
  }
  if (datasets_.count(id) > 0) {
    return Error(absl::StatusCode::kAlreadyExists,
                 absl::StrCat("dataset '", id, "' already exists; pick another id"));
  }
  info.set_dataset_id(id);
  datasets_[id].info = info;
  SaveDataset(datasets_[id]);
  *response = info;
  COHORT_LOG_INFO("dataset {} created ({} shards)", id, num_shards);
  return grpc::Status::OK;
}

absl::Status CohortServiceImpl::LoadOnWorkers(const v1::LoadDatasetRequest& request,
                                              v1::Dataset* info,
                                              const std::vector<std::string>& owners,
                                              std::vector<int64_t>* shard_rows) {
  shard_rows->assign(owners.size(), 0);
  std::map<std::string, std::vector<int>> shards_by_worker;
  for (int shard = 0; shard < static_cast<int>(owners.size()); ++shard) {
    shards_by_worker[owners[shard]].push_back(shard);
  }
  struct Call {
    WorkerHandle worker;
    v1::LoadShardsRequest request;
    v1::LoadShardsResponse response;
    grpc::Status status;
  };
  std::vector<Call> calls;
  for (const auto& [worker_id, shards] : shards_by_worker) {
    COHORT_ASSIGN_OR_RETURN(WorkerHandle worker, LiveOwner(worker_id, shards));
    Call call;
    call.worker = worker;
    call.request.set_dataset_id(info->dataset_id());
    call.request.set_kind(info->kind());
    *call.request.mutable_schema() = info->schema();
    call.request.set_source(request.source());
    *call.request.mutable_csv() = request.csv();
    *call.request.mutable_transactions() = request.transactions();
    *call.request.mutable_interactions() = request.interactions();
    call.request.set_duplicate_rule(info->duplicate_rule());
    call.request.set_num_shards(info->num_shards());
    call.request.set_duplicate_ids(info->duplicate_ids());
    call.request.set_unparsable_cells(request.unparsable_cells());
    for (int shard : shards) call.request.add_shards(shard);
    calls.push_back(std::move(call));
  }
  std::vector<std::thread> threads;
  for (Call& call : calls) {
    threads.emplace_back([this, &call] {
      grpc::ClientContext context;
      context.set_deadline(WorkerDeadline());
      call.status = call.worker.stub->LoadShards(&context, call.request, &call.response);
    });
  }
  for (std::thread& thread : threads) thread.join();

  int64_t users = 0;
  int64_t interactions = 0;
  v1::DropCounts dropped;
  // Each worker reports the first failing row among the rows it hosts, so the earliest
  // of their errors in the input is the first failing row of the load, whatever the
  // placement. An error that names no position wins, as it did not come from a row.
  const Call* failed = nullptr;
  std::optional<std::pair<std::string, int64_t>> failed_at;
  for (const Call& call : calls) {
    if (call.status.ok()) continue;
    if (call.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        call.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(absl::StrCat(
          "worker ", call.worker.worker_id, " at ", call.worker.address,
          " did not answer the load: ", call.status.error_message(),
          "; check the worker and retry"));
    }
    std::optional<std::pair<std::string, int64_t>> at =
        LoadErrorPosition(call.status.error_message());
    if (failed == nullptr) {
      failed = &call;
      failed_at = std::move(at);
    } else if (failed_at.has_value() && (!at.has_value() || *at < *failed_at)) {
      failed = &call;
      failed_at = std::move(at);
    }
  }
  if (failed != nullptr) return FromGrpcStatus(failed->status);
  for (const Call& call : calls) {
    for (const v1::ShardRows& shard : call.response.shards()) {
      users += shard.rows();
      if (shard.shard_id() >= 0 && shard.shard_id() < static_cast<int>(shard_rows->size())) {
        (*shard_rows)[shard.shard_id()] = shard.rows();
      }
      interactions += shard.interactions();
      dropped.set_cancelled_rows(dropped.cancelled_rows() + shard.cancelled_rows());
      dropped.set_non_positive_rows(dropped.non_positive_rows() + shard.non_positive_rows());
      dropped.set_duplicate_rows(dropped.duplicate_rows() + shard.duplicate_rows());
    }
    dropped.set_unparsable_cells(dropped.unparsable_cells() + call.response.unparsable_cells());
  }
  // File-level counts are the same on every worker, since each reads every row.
  info->set_rows_read(calls.empty() ? 0 : calls.front().response.rows_read());
  dropped.set_anonymous_rows(calls.empty() ? 0 : calls.front().response.anonymous_rows());
  dropped.set_empty_item_rows(calls.empty() ? 0 : calls.front().response.empty_item_rows());
  info->set_num_users(users);
  info->set_num_interactions(interactions);
  *info->mutable_dropped() = dropped;
  return absl::OkStatus();
}

grpc::Status CohortServiceImpl::LoadDataset(grpc::ServerContext*,
                                            const v1::LoadDatasetRequest* request,
                                            v1::Dataset* response) {
  if (request->source().empty()) {
    return Error(absl::StatusCode::kInvalidArgument,
                 "source is empty; give a path or glob that every worker can read");
  }
  if (!v1::UnparsableCellRule_IsValid(request->unparsable_cells())) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("unparsable_cells = ", request->unparsable_cells(),
                              " is invalid; use REJECT or MISSING"));
  }
  v1::Dataset info;
  {
    absl::MutexLock lock(&mutex_);
    auto it = datasets_.find(request->dataset_id());
    if (it == datasets_.end()) {
      return Error(absl::StatusCode::kNotFound,
                   absl::StrCat("dataset '", request->dataset_id(), "' does not exist"));
    }
    const v1::DatasetState state = it->second.info.state();
    if (state != v1::DATASET_STATE_CREATED && state != v1::DATASET_STATE_FAILED) {
      return Error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("dataset '", request->dataset_id(), "' is ",
                                v1::DatasetState_Name(state),
                                "; load into a new dataset instead"));
    }
    it->second.info.set_state(v1::DATASET_STATE_LOADING);
    it->second.info.clear_error();
    SaveDataset(it->second);
    info = it->second.info;
  }

  absl::Status status = [&]() -> absl::Status {
    if (info.kind() == v1::DATASET_KIND_USERS && info.schema().columns_size() == 0) {
      std::vector<WorkerHandle> live = registry_->LiveWorkers();
      if (live.empty()) {
        return NoLiveWorkerError();
      }
      v1::InferSchemaRequest infer;
      infer.set_source(request->source());
      *infer.mutable_csv() = request->csv();
      infer.set_id_column(request->id_column());
      *infer.mutable_overrides() = request->overrides();
      grpc::ClientContext context;
      context.set_deadline(WorkerDeadline());
      const grpc::Status inferred =
          live.front().stub->InferSchema(&context, infer, info.mutable_schema());
      if (!inferred.ok()) return FromGrpcStatus(inferred);
    }
    COHORT_ASSIGN_OR_RETURN(std::vector<std::string> owners, PlaceDataset(info.num_shards()));
    std::vector<int64_t> shard_rows;
    COHORT_RETURN_IF_ERROR(LoadOnWorkers(*request, &info, owners, &shard_rows));
    info.add_sources(request->source());
    absl::MutexLock lock(&mutex_);
    DatasetRecord& loaded = datasets_[info.dataset_id()];
    loaded.owners = owners;
    loaded.load = *request;
    loaded.shard_rows = std::move(shard_rows);
    RecordOwnerInstances(&loaded);
    return absl::OkStatus();
  }();

  absl::MutexLock lock(&mutex_);
  DatasetRecord& record = datasets_[info.dataset_id()];
  if (!status.ok()) {
    record.info.set_state(v1::DATASET_STATE_FAILED);
    record.info.set_error(std::string(status.message()));
    SaveDataset(record);
    COHORT_LOG_WARN("dataset {} failed to load from {}: {}", info.dataset_id(), request->source(),
                    status.ToString());
    return ToGrpcStatus(status);
  }
  info.set_state(v1::DATASET_STATE_READY);
  record.info = info;
  SaveDataset(record);
  *response = info;
  COHORT_LOG_INFO("dataset {} ready: {} users from {} rows", info.dataset_id(), info.num_users(),
                  info.rows_read());
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::IngestUsers(grpc::ServerContext* context,
                                            grpc::ServerReader<v1::IngestUsersRequest>* reader,
                                            v1::IngestUsersResponse* response) {
  v1::IngestUsersRequest batch;
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
    if (record.info.kind() != v1::DATASET_KIND_USERS || record.info.schema().columns_size() == 0) {
      return Error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("dataset '", dataset_id,
                                "' takes no streamed rows: only USERS datasets created with a "
                                "schema do"));
    }
    if (record.info.state() == v1::DATASET_STATE_LOADING) {
      return Error(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("dataset '", dataset_id, "' is loading; retry when it is READY"));
    }
    info = record.info;
  }
  absl::StatusOr<Schema> schema = FromProto(info.schema());
  if (!schema.ok()) return ToGrpcStatus(schema.status());
  const int id_index = schema->IdIndex();
  // A worker lost since the last batch or job: its shards move before new rows arrive.
  if (absl::Status repaired = RepairStreamedPlacement(dataset_id); !repaired.ok()) {
    return ToGrpcStatus(repaired);
  }
  absl::StatusOr<std::shared_ptr<absl::Mutex>> placement_mutex = PlacementMutex(dataset_id);
  if (!placement_mutex.ok()) return ToGrpcStatus(placement_mutex.status());

  using Group = WriteGroup<v1::AppendRowsRequest, v1::AppendRowsResponse>;
  const AppendCall<v1::AppendRowsRequest, v1::AppendRowsResponse> append =
      [](const WorkerHandle& worker, grpc::ClientContext* call, const v1::AppendRowsRequest& request,
         v1::AppendRowsResponse* stored) { return worker.stub->AppendRows(call, request, stored); };
  const FindLiveWorker find_live = [this](const std::string& worker_id,
                                          const std::vector<int>& shards) {
    return LiveOwner(worker_id, shards);
  };
  int64_t accepted = 0;      // rows stored on their workers
  int64_t duplicates = 0;    // rows dropped by the keep-first rule for duplicate ids
  int64_t unreplicated = 0;  // rows stored without a replica
  bool marked_streamed = false;  // the dataset record is marked as containing streamed rows
  absl::Status status;
  do {
    // Validate every row here first so the error names its position in the stream.
    RawShard scratch = MakeEmptyShard(*schema, 0);
    std::vector<std::pair<int, const v1::UserRow*>> rows;  // (shard, row)
    std::vector<std::string> cells;
    for (int i = 0; i < batch.rows_size() && status.ok(); ++i) {
      const v1::UserRow& row = batch.rows(i);
      const int64_t position = accepted + duplicates + i;
      if (row.cells_size() != static_cast<int>(schema->columns.size())) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "row ", position, " has ", row.cells_size(), " cells but the schema has ",
            schema->columns.size(), " columns; send one cell per column in schema order"));
        break;
      }
      cells.assign(row.cells().begin(), row.cells().end());
      absl::Status valid = AppendUserRow(*schema, cells, &scratch);
      if (!valid.ok()) {
        status = absl::Status(valid.code(), absl::StrCat("row ", position, ": ", valid.message()));
        break;
      }
      rows.emplace_back(ShardOfUser(row.cells(id_index), info.num_shards()), &row);
    }

    // Rows before an invalid row are still stored, as the API promises.
    absl::MutexLock placement_lock(placement_mutex->get());
    if (!rows.empty() && !marked_streamed) {
      // Saved before the first rows reach a worker: a coordinator that stops mid-stream
      // must not later move this dataset's shards by reloading its files, which would
      // drop the streamed rows.
      marked_streamed = true;
      absl::MutexLock lock(&mutex_);
      DatasetRecord& record = datasets_[dataset_id];
      if (!record.load.source().empty() && !record.loaded_and_streamed) {
        record.loaded_and_streamed = true;
        SaveDataset(record);
      }
    }
    bool placed = false;
    absl::StatusOr<StreamedPlacement> placement = BatchPlacement(dataset_id, &placed);
    if (!placement.ok()) {
      status = placement.status();
      break;
    }
    // A worker creates its part of the dataset on its first AppendRows. With the first
    // batch every owner gets one, even with no rows, because a job fails with NotFound on
    // an owner that never received one, and every replica starts empty, which promotion
    // needs.
    std::vector<Group> primaries;
    std::vector<Group> replicas;
    GroupBatch<v1::AppendRowsRequest, v1::AppendRowsResponse>(
        *placement, placed, rows,
        [](v1::AppendRowsRequest* request, int shard, const v1::UserRow& row) {
          request->add_shard_ids(shard);
          *request->add_rows() = row;
        },
        &primaries, &replicas);
    for (std::vector<Group>* groups : {&primaries, &replicas}) {
      for (Group& group : *groups) {
        group.request.set_dataset_id(dataset_id);
        *group.request.mutable_schema() = info.schema();
        group.request.set_num_shards(info.num_shards());
        group.request.set_duplicate_ids(info.duplicate_ids());
      }
    }
    const absl::Status written =
        WriteReplicated(&primaries, &replicas, append, find_live, WorkerDeadline());
    for (const Group& group : primaries) {
      if (!group.written) continue;
      accepted += group.stored.rows_stored();
      duplicates += group.stored.duplicate_rows();
      if (!group.replicated) unreplicated += group.stored.rows_stored();
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
    record.info.set_num_users(record.info.num_users() + accepted);
    record.info.mutable_dropped()->set_duplicate_rows(record.info.dropped().duplicate_rows() +
                                                      duplicates);
    if (record.info.num_users() > 0) record.info.set_state(v1::DATASET_STATE_READY);
    if (accepted > 0 && !record.load.source().empty()) record.loaded_and_streamed = true;
    SaveDataset(record);
  }
  response->set_rows_accepted(accepted);
  response->set_duplicate_rows(duplicates);
  response->set_unreplicated_rows(unreplicated);
  if (unreplicated > 0) {
    COHORT_LOG_WARN("dataset {}: {} streamed rows stored without a replica, because no second "
                    "worker was live or the dataset was loaded from files",
                    dataset_id, unreplicated);
  }
  COHORT_LOG_INFO("dataset {}: {} streamed rows stored, {} duplicate rows dropped", dataset_id,
                  accepted, duplicates);
  return ToGrpcStatus(status);
}

absl::StatusOr<std::shared_ptr<absl::Mutex>> CohortServiceImpl::PlacementMutex(
    const std::string& dataset_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(dataset_id);
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' does not exist"));
  }
  return it->second.placement_mutex;
}

absl::StatusOr<StreamedPlacement> CohortServiceImpl::BatchPlacement(const std::string& dataset_id,
                                                                    bool* placed) {
  *placed = false;
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(dataset_id);
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' does not exist"));
  }
  DatasetRecord& record = it->second;
  if (record.owners.empty()) {
    COHORT_ASSIGN_OR_RETURN(record.owners, PlaceDataset(record.info.num_shards()));
    std::vector<std::string> ids;
    for (const WorkerHandle& worker : registry_->LiveWorkers()) ids.push_back(worker.worker_id);
    record.replicas.clear();
    for (int index : PlaceReplicas(record.info.num_shards(), ids, record.owners)) {
      record.replicas.push_back(index < 0 ? std::string() : ids[index]);
    }
    *placed = true;
  }
  return StreamedPlacement{record.owners, record.replicas};
}

absl::Status CohortServiceImpl::RepairStreamedPlacement(const std::string& dataset_id) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<absl::Mutex> placement_mutex,
                          PlacementMutex(dataset_id));
  absl::MutexLock placement_lock(placement_mutex.get());
  v1::Dataset info;
  StreamedPlacement placement;
  {
    absl::MutexLock lock(&mutex_);
    const DatasetRecord& record = datasets_.at(dataset_id);
    if (!record.load.source().empty() || record.owners.empty()) return absl::OkStatus();
    info = record.info;
    placement = StreamedPlacement{record.owners, record.replicas};
  }
  const std::vector<WorkerHandle> live = registry_->LiveWorkers();
  std::vector<std::string> lost;
  std::vector<int> lost_shards;
  for (int shard = 0; shard < static_cast<int>(placement.owners.size()); ++shard) {
    const std::string& owner = placement.owners[shard];
    if (registry_->IsLive(owner)) continue;
    if (std::find(lost.begin(), lost.end(), owner) == lost.end()) lost.push_back(owner);
    lost_shards.push_back(shard);
  }
  absl::Status status;
  if (!lost_shards.empty()) {
    status = PromoteReplicas(info, live, lost, lost_shards, &placement,
                             options_.worker_call_timeout)
                 .status();
  } else {
    status = RestoreReplicas(info, live, &placement, options_.worker_call_timeout);
    if (!status.ok()) {
      // The rows still have their primary copy, so ingest and jobs go on.
      COHORT_LOG_WARN("dataset {}: {}", dataset_id, status.ToString());
      status = absl::OkStatus();
    }
  }
  absl::MutexLock lock(&mutex_);
  DatasetRecord& record = datasets_.at(dataset_id);
  record.owners = std::move(placement.owners);
  record.replicas = std::move(placement.replicas);
  SaveDataset(record);
  return status;
}

grpc::Status CohortServiceImpl::GetDataset(grpc::ServerContext*, const v1::GetDatasetRequest* request,
                                           v1::Dataset* response) {
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(request->dataset_id());
  if (it == datasets_.end()) {
    return Error(absl::StatusCode::kNotFound,
                 absl::StrCat("dataset '", request->dataset_id(), "' does not exist"));
  }
  *response = it->second.info;
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------
// Jobs

absl::StatusOr<std::shared_ptr<CohortServiceImpl::JobRecord>> CohortServiceImpl::CreateJob(
    const std::string& dataset_id, const v1::SegmentationOptions& options, int max_k,
    std::vector<int> sweep_ks, std::shared_ptr<const v1::ProfileOptions> profile) {
  auto record = std::make_shared<JobRecord>();
  {
    absl::MutexLock lock(&mutex_);
    if (shutting_down_) {
      return absl::UnavailableError("the coordinator is shutting down; retry");
    }
    JoinEndedJobs();
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' does not exist"));
    }
    const DatasetRecord& dataset = it->second;
    if (dataset.info.state() != v1::DATASET_STATE_READY) {
      return absl::FailedPreconditionError(
          absl::StrCat("dataset '", dataset_id, "' is ",
                       v1::DatasetState_Name(dataset.info.state()),
                       "; load rows before segmenting"));
    }
    if (dataset.info.num_users() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset '", dataset_id, "' has no users; load a file with data rows or stream rows"));
    }
    if (dataset.info.kind() == v1::DATASET_KIND_INTERACTIONS) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset '", dataset_id, "' contains interactions, which have no features to "
          "segment; use StartNeighbourJob, or segment a USERS or TRANSACTIONS dataset"));
    }
    if (max_k > dataset.info.num_users()) {
      return absl::InvalidArgumentError(
          absl::StrCat("options.k = ", max_k, " exceeds the ", dataset.info.num_users(),
                       " users of dataset '", dataset_id, "'; choose k <= ",
                       dataset.info.num_users()));
    }
    // The job moves the shards of a lost worker when it starts: it reloads them from
    // the files or promotes their replicas (see RunJob).
    COHORT_RETURN_IF_ERROR(CheckShardsCanMove(dataset));
    COHORT_ASSIGN_OR_RETURN(record->schema, FromProto(dataset.info.schema()));
    record->kind = dataset.info.kind();
    absl::StatusOr<std::vector<bool>> log1p =
        Log1pFlags(record->schema, ToFeatureOptions(options, record->kind));
    if (!log1p.ok()) {
      return absl::Status(log1p.status().code(),
                          absl::StrCat("options.", log1p.status().message()));
    }
    record->job_id = absl::StrFormat("job-%06d", next_job_++);
    record->dataset_id = dataset_id;
    record->created = absl::Now();
    record->owners = dataset.owners;
    record->options = options;
    record->sweep_ks = std::move(sweep_ks);
    record->num_users = dataset.info.num_users();
    record->profile = std::move(profile);
    jobs_[record->job_id] = record;
  }
  {
    absl::MutexLock lock(&record->mutex);
    record->job.set_job_id(record->job_id);
    record->job.set_dataset_id(record->dataset_id);
    record->job.set_state(v1::JOB_STATE_PENDING);
    if (record->profile != nullptr) {
      *record->job.mutable_profile_options() = *record->profile;
    } else {
      *record->job.mutable_options() = options;
    }
    record->job.mutable_last_event()->set_job_id(record->job_id);
    record->job.mutable_last_event()->set_state(v1::JOB_STATE_PENDING);
  }
  record->thread = std::thread(&CohortServiceImpl::RunJob, this, record);
  return record;
}

void CohortServiceImpl::JoinEndedJobs() {
  // A finished job's thread keeps its stack until it is joined. The threads joined here
  // have ended or are ending.
  for (auto& [id, job] : jobs_) {
    bool ended = false;
    {
      absl::MutexLock job_lock(&job->mutex);
      ended = IsTerminal(job->job.state());
    }
    if (ended && job->thread.joinable()) job->thread.join();
  }
}

absl::StatusOr<std::shared_ptr<CohortServiceImpl::JobRecord>> CohortServiceImpl::FindJob(
    const std::string& job_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job '", job_id, "' does not exist"));
  }
  return it->second;
}

grpc::Status CohortServiceImpl::StartSegmentation(grpc::ServerContext*,
                                                  const v1::StartSegmentationRequest* request,
                                                  v1::Job* response) {
  absl::StatusOr<KMeansOptions> options = ToKMeansOptions(request->options());
  if (!options.ok()) {
    return Error(options.status().code(), absl::StrCat("options.", options.status().message()));
  }
  absl::StatusOr<std::shared_ptr<JobRecord>> record =
      CreateJob(request->dataset_id(), request->options(), options->k, {});
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::MutexLock lock(&(*record)->mutex);
  *response = (*record)->job;
  COHORT_LOG_INFO("job {} started on dataset {} with k = {}", (*record)->job_id,
                  (*record)->dataset_id, options->k);
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::StartSweep(grpc::ServerContext*,
                                           const v1::StartSweepRequest* request,
                                           v1::Job* response) {
  constexpr int kMaxSweepValues = 100;
  std::vector<int> ks(request->ks().begin(), request->ks().end());
  if (ks.empty()) {
    if (request->k_min() < 1 || request->k_max() < request->k_min() ||
        request->k_max() - request->k_min() >= kMaxSweepValues) {
      return Error(absl::StatusCode::kInvalidArgument,
                   absl::StrCat("k range [", request->k_min(), ", ", request->k_max(),
                                "] is invalid; give ks, or 1 <= k_min <= k_max with at most ",
                                kMaxSweepValues, " values"));
    }
    for (int k = request->k_min(); k <= request->k_max(); ++k) ks.push_back(k);
  }
  if (static_cast<int>(ks.size()) > kMaxSweepValues) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat(ks.size(), " k values are too many; use at most ", kMaxSweepValues));
  }
  if (!request->options().algorithm().empty() && request->options().algorithm() != "kmeans") {
    return Error(absl::StatusCode::kInvalidArgument,
                 "options.algorithm must be 'kmeans' or empty for a sweep");
  }
  int max_k = 0;
  for (int k : ks) {
    v1::SegmentationOptions options = request->options();
    options.set_k(k);
    absl::StatusOr<KMeansOptions> validated = ToKMeansOptions(options);
    if (!validated.ok()) {
      return Error(validated.status().code(),
                   absl::StrCat("options.", validated.status().message()));
    }
    max_k = std::max(max_k, k);
  }
  absl::StatusOr<std::shared_ptr<JobRecord>> record =
      CreateJob(request->dataset_id(), request->options(), max_k, ks);
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::MutexLock lock(&(*record)->mutex);
  *response = (*record)->job;
  COHORT_LOG_INFO("sweep job {} started on dataset {} with {} values of k", (*record)->job_id,
                  (*record)->dataset_id, ks.size());
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::GetSweep(grpc::ServerContext*, const v1::GetSweepRequest* request,
                                         v1::Sweep* response) {
  absl::StatusOr<std::shared_ptr<JobRecord>> found = FindJob(request->job_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const std::shared_ptr<JobRecord> record = *std::move(found);
  if (record->sweep_ks.empty()) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("job '", request->job_id(), "' is a segmentation, not a sweep"));
  }
  absl::MutexLock lock(&record->mutex);
  if (record->sweep == nullptr) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("sweep job '", request->job_id(), "' is ",
                              v1::JobState_Name(record->job.state()),
                              "; its result exists once it has succeeded"));
  }
  *response = *record->sweep;
  return grpc::Status::OK;
}

void CohortServiceImpl::RunJob(std::shared_ptr<JobRecord> record) {
  {
    absl::MutexLock lock(&record->mutex);
    record->job.set_state(v1::JOB_STATE_RUNNING);
    record->job.mutable_last_event()->set_state(v1::JOB_STATE_RUNNING);
    ++record->event_seq;
  }
  // Shards of a streamed dataset whose worker was lost move to their replica before the
  // job starts, and shards that lost their replica get a new one.
  const absl::Status repaired = RepairStreamedPlacement(record->dataset_id);
  if (!repaired.ok()) {
    FinishJob(record.get(), repaired, "");
    return;
  }
  std::set<std::string> restarted;
  {
    absl::MutexLock lock(&mutex_);
    auto dataset = datasets_.find(record->dataset_id);
    if (dataset != datasets_.end()) {
      if (dataset->second.load.source().empty()) record->owners = dataset->second.owners;
      restarted = dataset->second.restarted_owners;
    }
  }
  std::map<std::string, std::vector<int>> shards_by_worker;
  for (int shard = 0; shard < static_cast<int>(record->owners.size()); ++shard) {
    shards_by_worker[record->owners[shard]].push_back(shard);
  }
  std::vector<JobStreams::Member> members;
  absl::Status status;
  std::vector<std::string> lost;
  std::vector<int> lost_shards;
  for (const auto& [worker_id, shards] : shards_by_worker) {
    absl::StatusOr<WorkerHandle> worker = LiveOwner(worker_id, shards);
    if (worker.ok() && restarted.count(worker_id) > 0) {
      worker = absl::UnavailableError(absl::StrCat("worker ", worker_id,
                                                   " restarted and no longer holds shards ",
                                                   absl::StrJoin(shards, ",")));
    }
    if (!worker.ok()) {
      lost.push_back(worker_id);
      lost_shards.insert(lost_shards.end(), shards.begin(), shards.end());
      if (status.ok()) status = worker.status();
      continue;
    }
    members.push_back(JobStreams::Member{*worker, shards});
  }
  if (!lost.empty() && registry_->LiveWorkers().empty()) {
    // Typically just after a coordinator restart, before the workers register again.
    status = NoLiveWorkerError();
  } else if (!lost.empty()) {
    // Workers lost before the job started: their shards move now, as they would during
    // the job.
    std::sort(lost_shards.begin(), lost_shards.end());
    absl::StatusOr<std::vector<JobStreams::Member>> hosts =
        ShardMover(record->dataset_id)(lost, lost_shards);
    if (hosts.ok()) {
      std::map<int, std::string> moved;
      for (JobStreams::Member& host : *hosts) {
        for (int shard : host.shards) moved[shard] = host.worker.worker_id;
        members.push_back(std::move(host));
      }
      ApplyMovedShards(record.get(), moved);
      status = absl::OkStatus();
    } else {
      status = absl::Status(hosts.status().code(),
                            absl::StrCat(status.message(), "; ", hosts.status().message()));
    }
  }
  std::unique_ptr<JobStreams> streams;
  if (status.ok()) {
    JobStreams::Options stream_options;
    stream_options.step_timeout = options_.step_timeout;
    stream_options.move_shards = ShardMover(record->dataset_id);
    absl::StatusOr<std::unique_ptr<JobStreams>> opened = JobStreams::Open(
        record->job_id, record->dataset_id, std::move(members), std::move(stream_options));
    if (opened.ok()) {
      streams = std::move(*opened);
    } else {
      status = opened.status();
    }
  }
  int listener = -1;
  if (status.ok()) {
    JobStreams* raw = streams.get();
    listener = registry_->AddLossListener([raw](const std::string& worker_id) {
      if (raw->HasWorker(worker_id)) raw->MarkLost(worker_id);
    });
    absl::MutexLock lock(&record->mutex);
    record->streams = raw;
    if (record->cancel_requested) raw->Cancel();
  }

  std::string model_id;
  if (status.ok()) {
    SegmentationJobInput input;
    input.job_id = record->job_id;
    input.dataset_id = record->dataset_id;
    input.kind = record->kind;
    input.expected_users = record->num_users;
    input.schema = record->schema;
    input.options = record->options;
    JobRecord* raw_record = record.get();
    input.on_event = [raw_record](const v1::JobEvent& event) {
      absl::MutexLock lock(&raw_record->mutex);
      *raw_record->job.mutable_last_event() = event;
      ++raw_record->event_seq;
    };
    if (record->neighbour_job) {
      absl::StatusOr<std::string> neighbour_model = RunNeighbourJobOnStreams(record.get(),
                                                                             streams.get());
      ApplyMovedShards(record.get(), streams->MovedShards());
      status = neighbour_model.status();
      if (status.ok()) model_id = *neighbour_model;
    } else if (record->profile != nullptr) {
      status = RunProfile(*record, input.on_event, streams.get(), &model_id);
      // TODO: the profile model is published inside RunProfile, before the moved shards
      // are recorded here, so a GetProfile in between can ask a lost worker.
      ApplyMovedShards(record.get(), streams->MovedShards());
    } else if (!record->sweep_ks.empty()) {
      absl::StatusOr<v1::Sweep> sweep = RunSweepJob(input, record->sweep_ks, streams.get());
      ApplyMovedShards(record.get(), streams->MovedShards());
      if (sweep.ok()) {
        absl::MutexLock lock(&record->mutex);
        record->sweep = std::make_shared<const v1::Sweep>(std::move(*sweep));
      } else {
        status = sweep.status();
      }
    } else {
      absl::StatusOr<v1::SegmentModel> model = RunSegmentationJob(input, streams.get());
      ApplyMovedShards(record.get(), streams->MovedShards());
      status = model.ok() ? PersistModel(*model) : model.status();
      if (status.ok()) {
        model_id = model->model_id();
        absl::MutexLock lock(&mutex_);
        models_[model_id] = std::make_shared<const v1::SegmentModel>(std::move(*model));
      }
    }
  }
  if (listener >= 0) registry_->RemoveLossListener(listener);
  {
    absl::MutexLock lock(&record->mutex);
    record->streams = nullptr;
    if (record->cancel_requested && !status.ok()) {
      status = absl::CancelledError(absl::StrCat("job ", record->job_id, " was cancelled"));
    }
  }
  if (streams != nullptr) streams->Close();
  FinishJob(record.get(), status, model_id);
}

JobStreams::MoveShards CohortServiceImpl::ShardMover(const std::string& dataset_id) {
  return [this, dataset_id](const std::vector<std::string>& lost,
                            const std::vector<int>& shards)
             -> absl::StatusOr<std::vector<JobStreams::Member>> {
    absl::StatusOr<std::shared_ptr<absl::Mutex>> placement_mutex = PlacementMutex(dataset_id);
    if (!placement_mutex.ok()) {
      return absl::UnavailableError(
          absl::StrCat("dataset '", dataset_id, "' no longer exists, so its shards cannot move"));
    }
    absl::MutexLock placement_lock(placement_mutex->get());
    ShardSource source;
    StreamedPlacement placement;
    {
      absl::MutexLock lock(&mutex_);
      const DatasetRecord& record = datasets_.at(dataset_id);
      COHORT_RETURN_IF_ERROR(CheckShardsCanMove(record));
      source.info = record.info;
      source.load = record.load;
      source.shard_rows = record.shard_rows;
      placement = StreamedPlacement{record.owners, record.replicas};
    }
    if (!source.load.source().empty()) {
      return MoveShards(source, registry_->LiveWorkers(), lost, shards,
                        options_.worker_call_timeout);
    }
    // Another job may have moved some of the shards already; they stay where they are.
    std::map<std::string, std::vector<int>> already_moved;
    std::vector<int> to_promote;
    for (int shard : shards) {
      const std::string& owner = placement.owners[shard];
      if (std::find(lost.begin(), lost.end(), owner) == lost.end() && registry_->IsLive(owner)) {
        already_moved[owner].push_back(shard);
      } else {
        to_promote.push_back(shard);
      }
    }
    std::vector<JobStreams::Member> members;
    if (!to_promote.empty()) {
      absl::StatusOr<std::vector<JobStreams::Member>> promoted =
          PromoteReplicas(source.info, registry_->LiveWorkers(), lost, to_promote, &placement,
                          options_.worker_call_timeout);
      {
        absl::MutexLock lock(&mutex_);
        DatasetRecord& record = datasets_.at(dataset_id);
        record.owners = placement.owners;
        record.replicas = placement.replicas;
        SaveDataset(record);
      }
      if (!promoted.ok()) return promoted.status();
      members = *std::move(promoted);
    }
    for (auto& [owner, owner_shards] : already_moved) {
      COHORT_ASSIGN_OR_RETURN(WorkerHandle worker, LiveOwner(owner, owner_shards));
      members.push_back(JobStreams::Member{worker, owner_shards});
    }
    return members;
  };
}

absl::Status CohortServiceImpl::CheckShardsCanMove(const DatasetRecord& dataset) const {
  const std::string& dataset_id = dataset.info.dataset_id();
  for (int shard = 0; shard < static_cast<int>(dataset.owners.size()); ++shard) {
    const std::string& owner = dataset.owners[shard];
    const bool restarted = dataset.restarted_owners.count(owner) > 0;
    if (registry_->IsLive(owner) && !restarted) continue;
    if (dataset.loaded_and_streamed) {
      return absl::UnavailableError(absl::StrCat(
          "worker ", owner, " holding shard ", shard, " of dataset '", dataset_id, "' ",
          restarted ? "restarted" : "is not live",
          ", and the dataset was loaded from files and then received streamed rows, which "
          "only that worker held; load and stream the data into a new dataset and retry"));
    }
    if (!dataset.load.source().empty()) continue;
    const std::string replica =
        shard < static_cast<int>(dataset.replicas.size()) ? dataset.replicas[shard] : "";
    if (replica.empty() || !registry_->IsLive(replica)) {
      return absl::UnavailableError(absl::StrCat(
          "worker ", owner, " holding shard ", shard, " of dataset '", dataset_id,
          "' is not live, and the shard has no live replica (",
          replica.empty() ? std::string("none was made, because only one worker was live")
                          : absl::StrCat("worker ", replica, " is not live either"),
          "), so its streamed rows are lost; stream the rows into a new dataset and retry"));
    }
  }
  return absl::OkStatus();
}

void CohortServiceImpl::ApplyMovedShards(JobRecord* record,
                                         const std::map<int, std::string>& moved) {
  if (moved.empty()) return;
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(record->dataset_id);
  for (const auto& [shard, worker_id] : moved) {
    if (shard < static_cast<int>(record->owners.size())) record->owners[shard] = worker_id;
    if (it != datasets_.end() && shard < static_cast<int>(it->second.owners.size())) {
      it->second.owners[shard] = worker_id;
    }
  }
  if (it == datasets_.end()) return;
  DatasetRecord& dataset = it->second;
  for (auto owner = dataset.restarted_owners.begin(); owner != dataset.restarted_owners.end();) {
    const bool holds_shards =
        std::find(dataset.owners.begin(), dataset.owners.end(), *owner) != dataset.owners.end();
    owner = holds_shards ? std::next(owner) : dataset.restarted_owners.erase(owner);
  }
  for (auto owner = dataset.owner_instances.begin(); owner != dataset.owner_instances.end();) {
    const bool holds_shards = std::find(dataset.owners.begin(), dataset.owners.end(),
                                        owner->first) != dataset.owners.end();
    owner = holds_shards ? std::next(owner) : dataset.owner_instances.erase(owner);
  }
  RecordOwnerInstances(&dataset);
  SaveDataset(dataset);
}

void CohortServiceImpl::RecordOwnerInstances(DatasetRecord* record) const {
  for (const std::string& owner : record->owners) {
    uint64_t& instance = record->owner_instances[owner];
    if (instance == 0) instance = registry_->Instance(owner);
  }
}

void CohortServiceImpl::FinishJob(JobRecord* record, const absl::Status& status,
                                  const std::string& model_id) {
  absl::MutexLock lock(&record->mutex);
  v1::JobEvent* event = record->job.mutable_last_event();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - record->created);
  record->job.set_elapsed_seconds(elapsed);
  event->set_elapsed_seconds(elapsed);
  event->set_phase("done");
  if (status.ok()) {
    record->job.set_state(v1::JOB_STATE_SUCCEEDED);
    record->job.set_model_id(model_id);
    event->set_message(absl::StrCat("model ", model_id, " ready"));
    COHORT_LOG_INFO("job {} succeeded in {:.2f} s", record->job_id, elapsed);
  } else {
    record->job.set_state(status.code() == absl::StatusCode::kCancelled ? v1::JOB_STATE_CANCELLED
                                                                         : v1::JOB_STATE_FAILED);
    record->job.set_error_code(static_cast<int>(status.code()));
    record->job.set_error_message(std::string(status.message()));
    event->set_message(std::string(status.message()));
    COHORT_LOG_WARN("job {} ended {}: {}", record->job_id,
                    v1::JobState_Name(record->job.state()), status.ToString());
  }
  event->set_state(record->job.state());
  ++record->event_seq;
}

grpc::Status CohortServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                                       v1::Job* response) {
  absl::StatusOr<std::shared_ptr<JobRecord>> found = FindJob(request->job_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const std::shared_ptr<JobRecord> record = *std::move(found);
  absl::MutexLock lock(&record->mutex);
  *response = record->job;
  if (!IsTerminal(record->job.state())) {
    response->set_elapsed_seconds(absl::ToDoubleSeconds(absl::Now() - record->created));
  }
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::WatchJob(grpc::ServerContext* context,
                                         const v1::WatchJobRequest* request,
                                         grpc::ServerWriter<v1::JobEvent>* writer) {
  absl::StatusOr<std::shared_ptr<JobRecord>> found = FindJob(request->job_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const std::shared_ptr<JobRecord> record = *std::move(found);
  int64_t seen = -1;
  while (true) {
    v1::JobEvent event;
    bool terminal = false;
    {
      absl::MutexLock lock(&record->mutex);
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(record->mutex) {
        return record->event_seq != seen;
      };
      record->mutex.AwaitWithTimeout(absl::Condition(&changed), kWatchPoll);
      if (record->event_seq != seen) {
        seen = record->event_seq;
        event = record->job.last_event();
        terminal = IsTerminal(record->job.state());
      } else {
        event.Clear();
      }
    }
    if (context->IsCancelled()) return Error(absl::StatusCode::kCancelled, "watch cancelled");
    if (!event.job_id().empty() && !writer->Write(event)) {
      return Error(absl::StatusCode::kCancelled, "watcher went away");
    }
    if (terminal) return grpc::Status::OK;
  }
}

grpc::Status CohortServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                          v1::Job* response) {
  absl::StatusOr<std::shared_ptr<JobRecord>> found = FindJob(request->job_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const std::shared_ptr<JobRecord> record = *std::move(found);
  absl::MutexLock lock(&record->mutex);
  if (IsTerminal(record->job.state())) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("job '", request->job_id(), "' already ended as ",
                              v1::JobState_Name(record->job.state())));
  }
  record->cancel_requested = true;
  if (record->streams != nullptr) record->streams->Cancel();
  *response = record->job;
  COHORT_LOG_INFO("job {}: cancellation requested", request->job_id());
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------
// Models

absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> CohortServiceImpl::FindModel(
    const std::string& id) const {
  absl::MutexLock lock(&mutex_);
  auto model = models_.find(id);
  if (model != models_.end()) return model->second;
  auto job = jobs_.find(id);
  if (job != jobs_.end()) {
    if (job->second->profile != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job '", id, "' is a profile job, not a segmentation; read it with GetProfileModel"));
    }
    absl::MutexLock job_lock(&job->second->mutex);
    return absl::FailedPreconditionError(
        absl::StrCat("job '", id, "' is ", v1::JobState_Name(job->second->job.state()),
                     "; a model exists only once the job has succeeded"));
  }
  return absl::NotFoundError(absl::StrCat("model '", id, "' does not exist"));
}

grpc::Status CohortServiceImpl::GetSegmentModel(grpc::ServerContext*,
                                                const v1::GetSegmentModelRequest* request,
                                                v1::SegmentModel* response) {
  absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> model = FindModel(request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  *response = **model;
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::AssignSegment(grpc::ServerContext*,
                                              const v1::AssignSegmentRequest* request,
                                              v1::AssignSegmentResponse* response) {
  absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> found = FindModel(request->model_id());
  if (!found.ok()) return ToGrpcStatus(found.status());
  const v1::SegmentModel& model = **found;
  const FeatureTransform transform = FromProto(model.transform());
  std::map<std::string, std::string> columns(request->columns().begin(),
                                             request->columns().end());
  absl::StatusOr<std::vector<float>> features = TransformUser(transform, columns);
  if (!features.ok()) return ToGrpcStatus(features.status());
  auto note_imputed = [&](const std::string& name) {
    auto it = columns.find(name);
    if (it == columns.end() || it->second.empty()) response->add_imputed_columns(name);
  };
  for (const NumericTransform& numeric : transform.numeric) note_imputed(numeric.name);
  for (const CategoricalTransform& categorical : transform.categorical) {
    note_imputed(categorical.name);
  }
  const v1::Matrix& centroids = model.centroids();
  const int d = centroids.cols();
  if (static_cast<int>(features->size()) != d) {
    return Error(absl::StatusCode::kInternal,
                 absl::StrCat("model ", model.model_id(), " has ", d, " centroid columns but its ",
                              "transform gives ", features->size(), " features"));
  }
  if (model.options().distance() == "cosine") {
    // The rule of training and StoreAssignments: the features are scaled to unit norm,
    // the nearest centroid has the largest dot product, and an all-zero feature vector
    // goes to segment 0 at cosine distance 1.
    absl::StatusOr<MatrixXfR> unit_centroids = FromProto(centroids);
    if (!unit_centroids.ok()) return ToGrpcStatus(unit_centroids.status());
    MatrixXfR user = Eigen::Map<const MatrixXfR>(features->data(), 1, d);
    NormalizeRows(&user);
    int32_t segment = 0;
    float cosine_distance = kZeroRowCosineDistance;
    AssignNearestCosine(user, *unit_centroids, &segment, &cosine_distance);
    for (int c = 0; c < unit_centroids->rows(); ++c) {
      const double dot = user.row(0).cast<double>().dot(unit_centroids->row(c).cast<double>());
      response->add_squared_distances(std::max(0.0, 1.0 - dot));
    }
    response->set_segment(segment);
    response->set_squared_distance(cosine_distance);
    return grpc::Status::OK;
  }
  double best = std::numeric_limits<double>::infinity();
  int best_index = 0;
  for (int c = 0; c < centroids.rows(); ++c) {
    double sum = 0;
    for (int j = 0; j < d; ++j) {
      const double diff = double{(*features)[j]} - centroids.values(c * d + j);
      sum += diff * diff;
    }
    response->add_squared_distances(sum);
    if (sum < best) {
      best = sum;
      best_index = c;
    }
  }
  if (model.tree_size() > 0) {
    // A bisecting model routes a user down its tree, as training did.
    int node = 0;
    for (int depth = 0; depth <= model.tree_size() && model.tree(node).left() >= 0; ++depth) {
      const v1::SegmentTreeNode& inner = model.tree(node);
      const v1::Matrix& split = inner.split_centroids();
      double distance[2] = {0, 0};
      for (int side = 0; side < 2; ++side) {
        for (int j = 0; j < d; ++j) {
          const double diff = double{(*features)[j]} - split.values(side * d + j);
          distance[side] += diff * diff;
        }
      }
      node = distance[1] < distance[0] ? inner.right() : inner.left();
    }
    best_index = model.tree(node).segment();
    best = response->squared_distances(best_index);
  }
  response->set_segment(best_index);
  response->set_squared_distance(best);
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::ExportAssignments(grpc::ServerContext* context,
                                                  const v1::ExportAssignmentsRequest* request,
                                                  grpc::ServerWriter<v1::AssignmentChunk>* writer) {
  absl::StatusOr<std::shared_ptr<const v1::SegmentModel>> model = FindModel(request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  std::shared_ptr<JobRecord> record;
  {
    absl::MutexLock lock(&mutex_);
    auto it = jobs_.find((*model)->job_id());
    if (it != jobs_.end()) record = it->second;
  }
  if (record == nullptr) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 absl::StrCat("the per-user assignments of model '", request->model_id(),
                              "' are gone since the coordinator restarted; rerun the job"));
  }
  std::map<std::string, std::vector<int>> shards_by_worker;
  for (int shard = 0; shard < static_cast<int>(record->owners.size()); ++shard) {
    shards_by_worker[record->owners[shard]].push_back(shard);
  }
  struct Source {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReader<v1::ExportChunk>> reader;
    std::string worker_id;
  };
  std::map<std::string, Source> sources;
  for (const auto& [worker_id, shards] : shards_by_worker) {
    absl::StatusOr<WorkerHandle> worker = LiveOwner(worker_id, shards);
    if (!worker.ok()) return ToGrpcStatus(worker.status());
    v1::ExportRequest export_request;
    export_request.set_job_id(record->job_id);
    for (int shard : shards) export_request.add_shards(shard);
    Source source;
    source.context = std::make_unique<grpc::ClientContext>();
    source.context->set_deadline(WorkerDeadline());
    source.reader = worker->stub->ExportAssignments(source.context.get(), export_request);
    source.worker_id = worker_id;
    sources[worker_id] = std::move(source);
  }
  auto cancel_all = [&sources] {
    for (auto& [id, source] : sources) source.context->TryCancel();
  };
  // Each worker streams its shards in ascending order, so reading shard by shard from the
  // owner interleaves the workers' streams into global shard order.
  for (int shard = 0; shard < static_cast<int>(record->owners.size()); ++shard) {
    Source& source = sources[record->owners[shard]];
    while (true) {
      v1::ExportChunk chunk;
      if (!source.reader->Read(&chunk)) {
        const grpc::Status finished = source.reader->Finish();
        cancel_all();
        return Error(finished.ok() ? absl::StatusCode::kInternal
                                   : static_cast<absl::StatusCode>(finished.error_code()),
                     absl::StrCat("worker ", source.worker_id, " stopped the export at shard ",
                                  shard, ": ", finished.error_message()));
      }
      v1::AssignmentChunk out;
      out.set_shard_id(chunk.shard_id());
      for (int i = 0; i < chunk.user_ids_size(); ++i) {
        v1::Assignment* assignment = out.add_assignments();
        assignment->set_user_id(chunk.user_ids(i));
        assignment->set_segment(chunk.segments(i));
        assignment->set_squared_distance(chunk.squared_distances(i));
      }
      if (out.assignments_size() > 0 && !writer->Write(out)) {
        cancel_all();
        return Error(absl::StatusCode::kCancelled, "the caller closed the export stream");
      }
      if (context->IsCancelled()) {
        cancel_all();
        return Error(absl::StatusCode::kCancelled, "export cancelled");
      }
      if (chunk.last_of_shard()) break;
    }
  }
  for (auto& [id, source] : sources) {
    v1::ExportChunk extra;
    while (source.reader->Read(&extra)) {
    }
    source.reader->Finish();
  }
  return grpc::Status::OK;
}

grpc::Status CohortServiceImpl::ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                                            v1::ListWorkersResponse* response) {
  std::map<std::string, int> hosted;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, dataset] : datasets_) {
      for (const std::string& owner : dataset.owners) ++hosted[owner];
    }
  }
  for (const WorkerRegistry::Info& info : registry_->AllWorkers()) {
    v1::WorkerInfo* out = response->add_workers();
    out->set_worker_id(info.handle.worker_id);
    out->set_address(info.handle.address);
    out->set_live(info.live);
    out->set_consecutive_failures(info.consecutive_failures);
    out->set_hosted_shards(hosted[info.handle.worker_id]);
  }
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::RegisterWorker(grpc::ServerContext*,
                                                 const v1::RegisterWorkerRequest* request,
                                                 v1::RegisterWorkerResponse* response) {
  absl::Status status =
      registry_->Register(request->worker_id(), request->address(), request->instance());
  response->set_coordinator_id("cohort-coordinator");
  return ToGrpcStatus(status);
}

}  // namespace cohort
