#include "worker/shard_store.h"

#include <malloc.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/csv.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "core/transactions.h"
#include "proto/convert.h"

namespace cohort {
namespace {

// Assignments per export message: about 1 MB for short ids.
constexpr int kExportChunkRows = 16384;
// Rows per ReadShards message: about 1 MB for rows of 40 short cells.
constexpr int64_t kReadChunkRows = 2048;

absl::Status CheckShardIds(const google::protobuf::RepeatedField<int32_t>& shards,
                           int num_shards) {
  if (num_shards < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_shards ", num_shards, " must be >= 1"));
  }
  for (int shard : shards) {
    if (shard < 0 || shard >= num_shards) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard ", shard, " is outside [0, ", num_shards, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

ShardAssignments::ShardAssignments(std::shared_ptr<HostedDataset> source, int shard_id,
                                   std::vector<int32_t> segments,
                                   std::vector<float> squared_distances)
    : shard_id_(shard_id),
      segments_(std::move(segments)),
      squared_distances_(std::move(squared_distances)),
      source_(std::move(source)) {}

absl::Status ShardAssignments::ReadIds(
    int64_t begin, int64_t end, absl::FunctionRef<void(int64_t, std::string_view)> fn) const {
  std::shared_ptr<HostedDataset> source;
  {
    absl::MutexLock lock(&ids_mutex_);
    source = source_;
    if (source == nullptr) return ReadOwnIdsLocked(begin, end, fn);
  }
  absl::ReaderMutexLock dataset_lock(&source->mutex);
  absl::MutexLock lock(&ids_mutex_);
  if (source_ == nullptr) return ReadOwnIdsLocked(begin, end, fn);  // copied meanwhile
  auto it = source->shards.find(shard_id_);
  if (it == source->shards.end() || it->second.num_rows() < size()) {
    return absl::InternalError(absl::StrCat("the rows of shard ", shard_id_,
                                            " changed under its stored assignments"));
  }
  const IdColumn& ids = it->second.ids;
  for (int64_t row = begin; row < end; ++row) fn(row, ids[row]);
  return absl::OkStatus();
}

absl::Status ShardAssignments::ReadOwnIdsLocked(
    int64_t begin, int64_t end, absl::FunctionRef<void(int64_t, std::string_view)> fn) const {
  if (own_ids_.size() < end) {
    return absl::InternalError(absl::StrCat("shard ", shard_id_, " has ", size(),
                                            " stored assignments but ", own_ids_.size(),
                                            " copied ids"));
  }
  for (int64_t row = begin; row < end; ++row) fn(row, own_ids_[row]);
  return absl::OkStatus();
}

bool ShardAssignments::ReadsFrom(const HostedDataset* dataset) const {
  absl::MutexLock lock(&ids_mutex_);
  return source_.get() == dataset;
}

void ShardAssignments::DetachFrom(const HostedDataset& dataset, int shard_id) const {
  absl::MutexLock lock(&ids_mutex_);
  if (source_.get() == &dataset && shard_id == shard_id_) CopyIdsLocked();
}

void ShardAssignments::DetachFromAll() const {
  absl::MutexLock lock(&ids_mutex_);
  CopyIdsLocked();
}

bool ShardAssignments::reads_hosted_ids() const {
  absl::MutexLock lock(&ids_mutex_);
  return source_ != nullptr;
}

void ShardAssignments::CopyIdsLocked() const {
  if (source_ == nullptr) return;
  auto it = source_->shards.find(shard_id_);
  if (it != source_->shards.end()) {
    const IdColumn& ids = it->second.ids;
    const int64_t n = std::min(size(), ids.size());
    int64_t chars = 0;
    for (int64_t row = 0; row < n; ++row) chars += static_cast<int64_t>(ids[row].size());
    own_ids_.Reserve(n, chars);
    for (int64_t row = 0; row < n; ++row) own_ids_.push_back(ids[row]);
  }
  source_.reset();
}

int ShardStore::HostedShardCount() const {
  // The store's lock is released before any dataset lock is taken: jobs hold a dataset
  // lock while they call StoreAssignments, which takes the store's lock.
  std::vector<std::shared_ptr<HostedDataset>> datasets;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, dataset] : datasets_) datasets.push_back(dataset);
  }
  int count = 0;
  for (const auto& dataset : datasets) {
    absl::ReaderMutexLock dataset_lock(&dataset->mutex);
    count += static_cast<int>(dataset->shards.size());
  }
  return count;
}

absl::Status ShardStore::Load(const v1::LoadShardsRequest& request,
                              v1::LoadShardsResponse* response) {
  COHORT_RETURN_IF_ERROR(CheckShardIds(request.shards(), request.num_shards()));
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> paths, ExpandPaths(request.source()));
  const std::vector<int> shards(request.shards().begin(), request.shards().end());

  auto dataset = std::make_shared<HostedDataset>();
  dataset->kind = request.kind();
  dataset->num_shards = request.num_shards();
  LoadedShards loaded;
  if (request.kind() == v1::DATASET_KIND_TRANSACTIONS) {
    COHORT_ASSIGN_OR_RETURN(TransactionOptions options,
                            FromProto(request.transactions(), request.csv()));
    COHORT_ASSIGN_OR_RETURN(
        TransactionShards result,
        LoadTransactionShards(paths, options, request.num_shards(), shards));
    dataset->schema = TransactionFeatureSchema();
    response->set_rows_read(result.counts.rows_read);
    response->set_anonymous_rows(result.counts.anonymous_rows);
    response->set_reference_time(result.counts.reference_time);
    loaded = std::move(result.loaded);
    // Shard-level drop counts are reported in total on the first shard entry; the
    // coordinator only sums them.
    v1::ShardRows* first = nullptr;
    for (const RawShard& shard : loaded.shards) {
      v1::ShardRows* out = response->add_shards();
      out->set_shard_id(shard.shard_id);
      out->set_rows(shard.num_rows());
      if (first == nullptr) first = out;
    }
    if (first != nullptr) {
      first->set_cancelled_rows(result.counts.cancelled_rows);
      first->set_non_positive_rows(result.counts.non_positive_rows);
    }
  } else {
    UserLoadOptions options;
    options.paths = paths;
    COHORT_ASSIGN_OR_RETURN(options.csv, FromProto(request.csv()));
    COHORT_ASSIGN_OR_RETURN(options.schema, FromProto(request.schema()));
    options.num_shards = request.num_shards();
    options.shards = shards;
    COHORT_ASSIGN_OR_RETURN(options.duplicate_ids, FromProto(request.duplicate_ids()));
    switch (request.unparsable_cells()) {
      case v1::UNPARSABLE_CELL_RULE_UNSPECIFIED:
      case v1::UNPARSABLE_CELL_RULE_REJECT:
        break;
      case v1::UNPARSABLE_CELL_RULE_MISSING:
        options.cleaning.unparsable_cells = CleaningRules::UnparsableCells::kMissing;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "unparsable_cells = ", request.unparsable_cells(), " is invalid; use REJECT or MISSING"));
    }
    COHORT_ASSIGN_OR_RETURN(loaded, LoadUserShards(options));
    int64_t unparsable_cells = 0;
    for (const auto& [column, count] : loaded.cleaning_report.unparsable_cells) {
      unparsable_cells += count;
    }
    response->set_unparsable_cells(unparsable_cells);
    dataset->schema = options.schema;
    response->set_rows_read(loaded.rows_read);
    for (size_t i = 0; i < loaded.shards.size(); ++i) {
      v1::ShardRows* out = response->add_shards();
      out->set_shard_id(loaded.shards[i].shard_id);
      out->set_rows(loaded.shards[i].num_rows());
      out->set_duplicate_rows(loaded.duplicate_rows[i]);
    }
  }
  if (request.keep_held_shards()) {
    // Shards moved here from a lost worker join the dataset's other shards on this
    // worker, which running jobs keep reading.
    std::shared_ptr<HostedDataset> existing;
    {
      absl::MutexLock lock(&mutex_);
      auto it = datasets_.find(request.dataset_id());
      if (it != datasets_.end()) existing = it->second;
    }
    if (existing != nullptr) dataset = std::move(existing);
  }
  {
    absl::MutexLock dataset_lock(&dataset->mutex);
    for (RawShard& shard : loaded.shards) {
      const int id = shard.shard_id;
      DetachAssignments(*dataset, id);
      // The id set of a replaced shard indexes its old rows; the next append builds a
      // new one from the loaded rows.
      dataset->id_sets.erase(id);
      dataset->shards.insert_or_assign(id, std::move(shard));
    }
  }
  // The load's block buffers and column growth leave free heap pages that glibc keeps.
  // Returning them brings the resident size close to what the shards store.
  malloc_trim(0);
  std::shared_ptr<HostedDataset> replaced;
  {
    absl::MutexLock lock(&mutex_);
    auto it = datasets_.find(request.dataset_id());
    if (it != datasets_.end() && it->second != dataset) replaced = it->second;
  }
  if (replaced == nullptr) {
    absl::MutexLock lock(&mutex_);
    datasets_[request.dataset_id()] = std::move(dataset);
    return absl::OkStatus();
  }
  // Jobs that finished on the replaced dataset copy their ids now, so they do not keep
  // its rows alive. A job still running on it stores its labels after the swap below,
  // and StoreAssignments then finds that the dataset is no longer hosted.
  absl::MutexLock replaced_lock(&replaced->mutex);
  DetachAssignments(*replaced, -1);
  absl::MutexLock lock(&mutex_);
  datasets_[request.dataset_id()] = std::move(dataset);
  return absl::OkStatus();
}

absl::Status ShardStore::Append(const v1::AppendRowsRequest& request,
                                v1::AppendRowsResponse* response) {
  if (request.shard_ids_size() != request.rows_size()) {
    return absl::InvalidArgumentError(absl::StrCat("append request has ", request.rows_size(),
                                                   " rows but ", request.shard_ids_size(),
                                                   " shard ids"));
  }
  COHORT_RETURN_IF_ERROR(CheckShardIds(request.shard_ids(), request.num_shards()));
  COHORT_ASSIGN_OR_RETURN(Schema schema, FromProto(request.schema()));
  std::shared_ptr<HostedDataset> dataset;
  {
    absl::MutexLock lock(&mutex_);
    auto& slot = datasets_[request.dataset_id()];
    if (slot == nullptr) {
      slot = std::make_shared<HostedDataset>();
      slot->kind = v1::DATASET_KIND_USERS;
      slot->schema = schema;
      slot->num_shards = request.num_shards();
    }
    dataset = slot;
  }
  absl::MutexLock dataset_lock(&dataset->mutex);
  const int id_index = dataset->schema.IdIndex();
  const bool replica = request.replica();
  COHORT_RETURN_IF_ERROR(CheckShardIds(request.reset_shards(), request.num_shards()));
  std::map<int, RawShard>& target = replica ? dataset->replicas : dataset->shards;
  for (int shard_id : request.reset_shards()) {
    if (!replica) DetachAssignments(*dataset, shard_id);
    (replica ? dataset->replica_id_sets : dataset->id_sets).erase(shard_id);
    target.insert_or_assign(shard_id, MakeEmptyShard(dataset->schema, shard_id));
  }

  // Every row is checked before any is stored, so a request is stored whole or not at
  // all: cells parse, and under the reject rule no user id repeats one already held or
  // one earlier in the request.
  COHORT_ASSIGN_OR_RETURN(const DuplicateIdRule rule, FromProto(request.duplicate_ids()));
  const bool keep_first = rule == DuplicateIdRule::kKeepFirst;
  std::vector<std::string> cells;
  RawShard scratch = MakeEmptyShard(dataset->schema, 0);
  absl::flat_hash_set<absl::string_view> request_ids;
  std::vector<bool> dropped(static_cast<size_t>(request.rows_size()), false);
  int64_t duplicate_rows = 0;
  for (int i = 0; i < request.rows_size(); ++i) {
    const std::string& id = request.rows(i).cells(id_index);
    const UserIdSet& stored_ids = IdsOfShard(*dataset, request.shard_ids(i), replica);
    if (stored_ids.Find(id) >= 0 || !request_ids.insert(id).second) {
      if (!keep_first) {
        return absl::InvalidArgumentError(absl::StrCat(
            "row ", i, " of the batch: user id '", id,
            "' is already stored in this dataset; user ids must be unique, or create the "
            "dataset with the keep-first rule for duplicate ids"));
      }
      dropped[i] = true;
      ++duplicate_rows;
    }
    cells.assign(request.rows(i).cells().begin(), request.rows(i).cells().end());
    absl::Status valid = AppendUserRow(dataset->schema, cells, &scratch);
    if (!valid.ok()) {
      return absl::Status(valid.code(), absl::StrCat("row ", i, " of the batch: ", valid.message()));
    }
  }

  for (int i = 0; i < request.rows_size(); ++i) {
    if (dropped[i]) continue;
    const int shard_id = request.shard_ids(i);
    UserIdSet& stored_ids = IdsOfShard(*dataset, shard_id, replica);
    RawShard& shard = target.at(shard_id);
    cells.assign(request.rows(i).cells().begin(), request.rows(i).cells().end());
    // Cannot fail: the same row passed AppendUserRow above.
    (void)AppendUserRow(dataset->schema, cells, &shard);
    stored_ids.Insert(shard.num_rows() - 1);
  }
  response->set_rows_stored(request.rows_size() - duplicate_rows);
  response->set_duplicate_rows(duplicate_rows);
  return absl::OkStatus();
}

UserIdSet& ShardStore::IdsOfShard(HostedDataset& dataset, int shard_id, bool replica) {
  std::map<int, RawShard>& shards = replica ? dataset.replicas : dataset.shards;
  auto shard = shards.find(shard_id);
  if (shard == shards.end()) {
    shard = shards.emplace(shard_id, MakeEmptyShard(dataset.schema, shard_id)).first;
  }
  std::unique_ptr<UserIdSet>& set = (replica ? dataset.replica_id_sets : dataset.id_sets)[shard_id];
  if (set == nullptr) {
    // Built on first use from the rows a file load stored.
    set = std::make_unique<UserIdSet>(&shard->second.ids);
    set->Reserve(shard->second.num_rows());
    for (int64_t row = 0; row < shard->second.num_rows(); ++row) set->Insert(row);
  }
  return *set;
}

absl::Status ShardStore::PromoteReplicas(const v1::PromoteReplicasRequest& request,
                                         v1::PromoteReplicasResponse* response) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<HostedDataset> dataset, Dataset(request.dataset_id()));
  absl::MutexLock dataset_lock(&dataset->mutex);
  for (int shard_id : request.shards()) {
    if (dataset->replicas.count(shard_id) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard_id, " of dataset '", request.dataset_id(),
          "' has no replica copy on this worker, so it cannot be promoted; the worker may "
          "have restarted since the copy was made"));
    }
  }
  for (int shard_id : request.shards()) {
    // Moving the map nodes keeps each RawShard at its address, so its id set, which
    // points at the shard's ids, stays valid.
    auto shard = dataset->replicas.extract(shard_id);
    auto ids = dataset->replica_id_sets.extract(shard_id);
    DetachAssignments(*dataset, shard_id);
    dataset->shards.erase(shard_id);
    dataset->id_sets.erase(shard_id);
    v1::ShardRows* out = response->add_shards();
    out->set_shard_id(shard_id);
    out->set_rows(shard.mapped().num_rows());
    dataset->shards.insert(std::move(shard));
    if (!ids.empty()) dataset->id_sets.insert(std::move(ids));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::ReadShards(const v1::ReadShardsRequest& request,
                                    grpc::ServerContext* context,
                                    grpc::ServerWriter<v1::ShardRowsChunk>* writer) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<HostedDataset> dataset, Dataset(request.dataset_id()));
  for (int shard_id : request.shards()) {
    int64_t begin = 0;
    while (true) {
      // The lock is held for one chunk only, so appends and jobs are not blocked while
      // the chunk is sent. Rows appended meanwhile are sent as well, because a shard
      // only grows.
      v1::ShardRowsChunk chunk;
      chunk.set_shard_id(shard_id);
      bool last = true;
      {
        absl::ReaderMutexLock lock(&dataset->mutex);
        auto it = dataset->shards.find(shard_id);
        const int64_t rows = it == dataset->shards.end() ? 0 : it->second.num_rows();
        const int64_t end = std::min(rows, begin + kReadChunkRows);
        for (int64_t row = begin; row < end; ++row) {
          const std::vector<std::string> cells = UserRowCells(dataset->schema, it->second, row);
          chunk.add_rows()->mutable_cells()->Assign(cells.begin(), cells.end());
        }
        last = end == rows;
        begin = end;
      }
      if (context->IsCancelled() || !writer->Write(chunk)) {
        return absl::CancelledError("read stream closed by the coordinator");
      }
      if (last) break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<HostedDataset>> ShardStore::Dataset(
    const std::string& dataset_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(dataset_id);
  if (it == datasets_.end()) {
    return absl::NotFoundError(
        absl::StrCat("dataset '", dataset_id, "' is not loaded on this worker"));
  }
  return it->second;
}

std::shared_ptr<const ShardAssignments> ShardStore::StoreAssignments(
    const std::string& job_id, int shard_id, std::unique_ptr<ShardAssignments> assignments) {
  std::shared_ptr<const ShardAssignments> stored = std::move(assignments);
  absl::MutexLock lock(&mutex_);
  bool hosted = false;
  for (const auto& [id, dataset] : datasets_) {
    if (stored->ReadsFrom(dataset.get())) hosted = true;
  }
  // A reload replaced the job's dataset while the job ran: the caller's lock keeps the
  // old rows steady while their ids are copied.
  if (!hosted) stored->DetachFromAll();
  assignments_[job_id][shard_id] = stored;
  return stored;
}

void ShardStore::DetachAssignments(const HostedDataset& dataset, int shard_id) {
  absl::MutexLock lock(&mutex_);
  for (const auto& [job_id, shards] : assignments_) {
    for (const auto& [id, assignments] : shards) {
      if (shard_id >= 0) {
        assignments->DetachFrom(dataset, shard_id);
      } else {
        assignments->DetachFrom(dataset, id);
      }
    }
  }
}

absl::Status ShardStore::ExportAssignments(const v1::ExportRequest& request,
                                           grpc::ServerContext* context,
                                           grpc::ServerWriter<v1::ExportChunk>* writer) {
  std::vector<std::shared_ptr<const ShardAssignments>> shards;
  {
    absl::MutexLock lock(&mutex_);
    auto job = assignments_.find(request.job_id());
    if (job == assignments_.end()) {
      return absl::NotFoundError(
          absl::StrCat("job '", request.job_id(), "' has no stored assignments on this worker"));
    }
    for (int shard_id : request.shards()) {
      auto it = job->second.find(shard_id);
      if (it == job->second.end()) {
        return absl::NotFoundError(absl::StrCat("job '", request.job_id(),
                                                "' has no assignments for shard ", shard_id,
                                                " on this worker"));
      }
      shards.push_back(it->second);
    }
  }
  for (int i = 0; i < request.shards_size(); ++i) {
    const ShardAssignments& shard = *shards[i];
    const int64_t n = shard.size();
    int64_t begin = 0;
    do {
      const int64_t end = std::min(n, begin + kExportChunkRows);
      v1::ExportChunk chunk;
      chunk.set_shard_id(request.shards(i));
      COHORT_RETURN_IF_ERROR(shard.ReadIds(
          begin, end, [&chunk](int64_t, std::string_view id) { chunk.add_user_ids(std::string(id)); }));
      chunk.mutable_segments()->Add(shard.segments().begin() + begin, shard.segments().begin() + end);
      chunk.mutable_squared_distances()->Add(shard.squared_distances().begin() + begin,
                                             shard.squared_distances().begin() + end);
      chunk.set_last_of_shard(end == n);
      if (context->IsCancelled() || !writer->Write(chunk)) {
        return absl::CancelledError("export stream closed by the coordinator");
      }
      begin = end;
    } while (begin < n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ShardAssignments>> ShardStore::FindAssignments(
    const std::string& job_id, int shard_id) const {
  absl::MutexLock lock(&mutex_);
  auto job = assignments_.find(job_id);
  if (job == assignments_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "segment job '", job_id,
        "' has no stored assignments on this worker; the worker may have restarted"));
  }
  auto shard = job->second.find(shard_id);
  if (shard == job->second.end()) {
    return absl::NotFoundError(absl::StrCat("segment job '", job_id,
                                            "' has no assignments for shard ", shard_id,
                                            " on this worker"));
  }
  return shard->second;
}

void ShardStore::DropJob(const std::string& job_id) {
  scores_.Drop(job_id);
  absl::MutexLock lock(&mutex_);
  assignments_.erase(job_id);
}

}  // namespace cohort
