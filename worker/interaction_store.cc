#include "worker/interaction_store.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/csv.h"
#include "core/status_macros.h"
#include "proto/similarity_convert.h"

namespace cohort {
namespace {

// Builds a shard from its rows over the shard's own item dictionary.
absl::StatusOr<std::shared_ptr<const ShardInteractions>> BuildShard(const InteractionRows& rows,
                                                                    DuplicateRule rule,
                                                                    InteractionBuildCounts* counts) {
  auto shard = std::make_shared<ShardInteractions>();
  shard->items = ItemDictionary(DistinctItems(rows));
  COHORT_ASSIGN_OR_RETURN(shard->matrix,
                          BuildInteractionMatrix(rows, shard->items, rule, counts));
  return shard;
}

// The stored entries of a shard as rows again, users in CSR order, so that a rebuild
// with appended rows applies the duplicate rule to old and new entries alike.
void AppendStoredRows(const ShardInteractions& shard, InteractionRows* rows) {
  const InteractionMatrix& matrix = shard.matrix;
  for (int64_t row = 0; row < matrix.num_users(); ++row) {
    for (int64_t e = matrix.row_ptr[row]; e < matrix.row_ptr[row + 1]; ++e) {
      InteractionRow out;
      out.user_id = matrix.user_ids[row];
      out.item_id = shard.items.id(matrix.item_index[e]);
      out.value = matrix.values[e];
      out.time = matrix.has_times() ? matrix.times[e] : kNoTime;
      rows->rows.push_back(std::move(out));
    }
  }
}

}  // namespace

absl::Status InteractionStore::Load(const v1::LoadShardsRequest& request,
                                    v1::LoadShardsResponse* response) {
  COHORT_ASSIGN_OR_RETURN(DuplicateRule rule, ToDuplicateRule(request.duplicate_rule()));
  COHORT_ASSIGN_OR_RETURN(InteractionLoadOptions options,
                          ToInteractionLoadOptions(request.csv(), request.interactions()));
  COHORT_ASSIGN_OR_RETURN(options.paths, ExpandPaths(request.source()));
  options.num_shards = request.num_shards();
  options.shards.assign(request.shards().begin(), request.shards().end());
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_ASSIGN_OR_RETURN(LoadedInteractions loaded, LoadInteractionRows(options));

  auto dataset = std::make_shared<HostedInteractions>();
  dataset->num_shards = request.num_shards();
  dataset->rule = rule;
  {
    absl::MutexLock lock(&dataset->mutex);
    for (const InteractionRows& rows : loaded.shards) {
      InteractionBuildCounts counts;
      absl::StatusOr<std::shared_ptr<const ShardInteractions>> shard =
          BuildShard(rows, rule, &counts);
      if (!shard.ok()) {
        return absl::Status(shard.status().code(),
                            absl::StrCat(request.source(), ": ", shard.status().message()));
      }
      dataset->shards[rows.shard_id] = *std::move(shard);
      v1::ShardRows* out = response->add_shards();
      out->set_shard_id(rows.shard_id);
      out->set_rows(counts.users);
      out->set_interactions(counts.interactions);
    }
  }
  // Rows dropped below min_value are counted over this worker's shards only. The count
  // goes on its first shard, so the coordinator's sum over shards counts each row once.
  if (response->shards_size() > 0) {
    response->mutable_shards(0)->set_non_positive_rows(loaded.counts.below_min_rows);
  }
  response->set_rows_read(loaded.counts.rows_read);
  response->set_anonymous_rows(loaded.counts.empty_user_rows);
  response->set_empty_item_rows(loaded.counts.empty_item_rows);

  absl::MutexLock lock(&mutex_);
  datasets_[request.dataset_id()] = std::move(dataset);
  return absl::OkStatus();
}

absl::Status InteractionStore::Append(const v1::AppendInteractionsRequest& request,
                                      v1::AppendInteractionsResponse* response) {
  if (request.shard_ids_size() != request.interactions_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AppendInteractions has ", request.shard_ids_size(), " shard ids for ",
        request.interactions_size(), " interactions"));
  }
  COHORT_ASSIGN_OR_RETURN(DuplicateRule rule, ToDuplicateRule(request.duplicate_rule()));
  std::shared_ptr<HostedInteractions> dataset;
  {
    absl::MutexLock lock(&mutex_);
    std::shared_ptr<HostedInteractions>& slot = datasets_[request.dataset_id()];
    if (slot == nullptr) {
      slot = std::make_shared<HostedInteractions>();
      slot->num_shards = request.num_shards();
      slot->rule = rule;
    }
    dataset = slot;
  }

  // New rows per shard, validated before anything is stored.
  std::map<int, InteractionRows> added;
  for (int i = 0; i < request.interactions_size(); ++i) {
    const v1::Interaction& in = request.interactions(i);
    const int shard_id = request.shard_ids(i);
    if (shard_id < 0 || shard_id >= dataset->num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("interaction ", i, ": shard ", shard_id,
                                                     " is outside [0, ", dataset->num_shards,
                                                     ")"));
    }
    InteractionRow row;
    row.user_id = in.user_id();
    row.item_id = in.item_id();
    row.value = in.value();
    row.time = in.time() == 0 ? kNoTime : in.time();
    InteractionRows& rows = added[shard_id];
    rows.shard_id = shard_id;
    rows.rows.push_back(std::move(row));
  }

  for (int shard_id : request.reset_shards()) {
    if (shard_id < 0 || shard_id >= dataset->num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("reset shard ", shard_id,
                                                     " is outside [0, ", dataset->num_shards,
                                                     ")"));
    }
  }

  absl::MutexLock lock(&dataset->mutex);
  std::map<int, std::shared_ptr<const ShardInteractions>>& target =
      request.replica() ? dataset->replicas : dataset->shards;
  for (int shard_id : request.reset_shards()) {
    InteractionRows none;
    none.shard_id = shard_id;
    InteractionBuildCounts counts;
    COHORT_ASSIGN_OR_RETURN(target[shard_id], BuildShard(none, dataset->rule, &counts));
  }
  std::map<int, std::shared_ptr<const ShardInteractions>> rebuilt;
  int64_t users_before = 0;
  int64_t entries_before = 0;
  for (auto& [shard_id, rows] : added) {
    InteractionRows all;
    all.shard_id = shard_id;
    auto it = target.find(shard_id);
    if (it != target.end()) {
      AppendStoredRows(*it->second, &all);
      users_before += it->second->matrix.num_users();
      entries_before += it->second->matrix.num_entries();
    }
    for (InteractionRow& row : rows.rows) all.rows.push_back(std::move(row));
    InteractionBuildCounts counts;
    COHORT_ASSIGN_OR_RETURN(rebuilt[shard_id], BuildShard(all, dataset->rule, &counts));
  }
  int64_t users_after = 0;
  int64_t entries_after = 0;
  for (auto& [shard_id, shard] : rebuilt) {
    users_after += shard->matrix.num_users();
    entries_after += shard->matrix.num_entries();
    target[shard_id] = std::move(shard);
  }
  response->set_interactions_stored(request.interactions_size());
  response->set_users_added(users_after - users_before);
  response->set_entries_added(entries_after - entries_before);
  return absl::OkStatus();
}

absl::Status InteractionStore::PromoteReplicas(const v1::PromoteReplicasRequest& request,
                                               v1::PromoteReplicasResponse* response) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<HostedInteractions> dataset,
                          Dataset(request.dataset_id()));
  absl::MutexLock lock(&dataset->mutex);
  for (int shard_id : request.shards()) {
    if (dataset->replicas.count(shard_id) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard_id, " of dataset '", request.dataset_id(),
          "' has no replica copy on this worker, so it cannot be promoted; the worker may "
          "have restarted since the copy was made"));
    }
  }
  for (int shard_id : request.shards()) {
    std::shared_ptr<const ShardInteractions> shard = std::move(dataset->replicas[shard_id]);
    dataset->replicas.erase(shard_id);
    v1::ShardRows* out = response->add_shards();
    out->set_shard_id(shard_id);
    out->set_rows(shard->matrix.num_users());
    out->set_interactions(shard->matrix.num_entries());
    dataset->shards[shard_id] = std::move(shard);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Interaction>> InteractionStore::ShardInteractionRows(
    const std::string& dataset_id, int shard_id) const {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<HostedInteractions> dataset, Dataset(dataset_id));
  std::shared_ptr<const ShardInteractions> shard;
  {
    absl::MutexLock lock(&dataset->mutex);
    auto it = dataset->shards.find(shard_id);
    if (it != dataset->shards.end()) shard = it->second;
  }
  std::vector<v1::Interaction> out;
  if (shard == nullptr) return out;
  InteractionRows rows;
  AppendStoredRows(*shard, &rows);
  out.reserve(rows.rows.size());
  for (const InteractionRow& row : rows.rows) {
    v1::Interaction& interaction = out.emplace_back();
    interaction.set_user_id(row.user_id);
    interaction.set_item_id(row.item_id);
    interaction.set_value(row.value);
    interaction.set_time(row.time == kNoTime ? 0 : row.time);
  }
  return out;
}

absl::StatusOr<std::shared_ptr<HostedInteractions>> InteractionStore::Dataset(
    const std::string& dataset_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = datasets_.find(dataset_id);
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("this worker has no shard of dataset '",
                                            dataset_id, "'; load it first"));
  }
  return it->second;
}

bool InteractionStore::Holds(const std::string& dataset_id) const {
  absl::MutexLock lock(&mutex_);
  return datasets_.count(dataset_id) > 0;
}

int InteractionStore::HostedShardCount() const {
  absl::MutexLock lock(&mutex_);
  int count = 0;
  for (const auto& [id, dataset] : datasets_) {
    absl::MutexLock dataset_lock(&dataset->mutex);
    count += static_cast<int>(dataset->shards.size());
  }
  return count;
}

}  // namespace cohort
