#include "coordinator/replicas.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/placement.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

// Interactions sent to a new replica in one AppendInteractions call. The worker rebuilds
// a shard's CSR on every append, so a shard goes in as few calls as this allows.
constexpr int kCopyInteractionsPerCall = 1 << 20;

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
}

absl::Status CallFailure(const grpc::Status& status, const WorkerHandle& worker,
                         absl::string_view action) {
  return absl::UnavailableError(absl::StrCat("worker ", worker.worker_id, " at ",
                                             worker.address, " failed to ", action, ": ",
                                             status.error_message()));
}

absl::Status AppendUserCopy(const v1::Dataset& info, const WorkerHandle& target,
                            v1::AppendRowsRequest* request, absl::Duration timeout) {
  request->set_dataset_id(info.dataset_id());
  *request->mutable_schema() = info.schema();
  request->set_num_shards(info.num_shards());
  request->set_duplicate_ids(info.duplicate_ids());
  request->set_replica(true);
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::AppendRowsResponse response;
  const grpc::Status status = target.stub->AppendRows(&context, *request, &response);
  request->Clear();
  if (!status.ok()) return CallFailure(status, target, "store a replica copy");
  return absl::OkStatus();
}

absl::Status AppendInteractionCopy(const v1::Dataset& info, const WorkerHandle& target,
                                   v1::AppendInteractionsRequest* request,
                                   absl::Duration timeout) {
  request->set_dataset_id(info.dataset_id());
  request->set_num_shards(info.num_shards());
  request->set_duplicate_rule(info.duplicate_rule());
  request->set_replica(true);
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::AppendInteractionsResponse response;
  const grpc::Status status = target.stub->AppendInteractions(&context, *request, &response);
  request->Clear();
  if (!status.ok()) return CallFailure(status, target, "store a replica copy");
  return absl::OkStatus();
}

// Copies the hosted rows of `shards` on `source` into the replica copies on `target`,
// replacing what `target` held as their replica.
absl::Status CopyShards(const v1::Dataset& info, const WorkerHandle& source,
                        const WorkerHandle& target, const std::vector<int>& shards,
                        absl::Duration timeout) {
  const bool interactions = info.kind() == v1::DATASET_KIND_INTERACTIONS;
  // The first call resets every copied shard, so shards without rows get an empty
  // replica, which promotion needs.
  v1::AppendRowsRequest rows;
  v1::AppendInteractionsRequest entries;
  for (int shard : shards) {
    if (interactions) {
      entries.add_reset_shards(shard);
    } else {
      rows.add_reset_shards(shard);
    }
  }
  v1::ReadShardsRequest read;
  read.set_dataset_id(info.dataset_id());
  read.set_kind(info.kind());
  for (int shard : shards) read.add_shards(shard);
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  std::unique_ptr<grpc::ClientReader<v1::ShardRowsChunk>> reader =
      source.stub->ReadShards(&context, read);
  v1::ShardRowsChunk chunk;
  absl::Status status;
  while (status.ok() && reader->Read(&chunk)) {
    if (interactions) {
      for (v1::Interaction& interaction : *chunk.mutable_interactions()) {
        entries.add_shard_ids(chunk.shard_id());
        *entries.add_interactions() = std::move(interaction);
      }
      if (entries.interactions_size() >= kCopyInteractionsPerCall) {
        status = AppendInteractionCopy(info, target, &entries, timeout);
      }
    } else {
      for (v1::UserRow& row : *chunk.mutable_rows()) {
        rows.add_shard_ids(chunk.shard_id());
        *rows.add_rows() = std::move(row);
      }
      status = AppendUserCopy(info, target, &rows, timeout);
    }
  }
  if (!status.ok()) {
    context.TryCancel();
    reader->Finish();
    return status;
  }
  const grpc::Status finished = reader->Finish();
  if (!finished.ok()) return CallFailure(finished, source, "send the rows of its shards");
  // The rest, or the reset alone when no chunk had rows.
  if (interactions && (entries.interactions_size() > 0 || entries.reset_shards_size() > 0)) {
    return AppendInteractionCopy(info, target, &entries, timeout);
  }
  if (!interactions && (rows.rows_size() > 0 || rows.reset_shards_size() > 0)) {
    return AppendUserCopy(info, target, &rows, timeout);
  }
  return absl::OkStatus();
}

const WorkerHandle* FindWorker(const std::vector<WorkerHandle>& workers, const std::string& id) {
  for (const WorkerHandle& worker : workers) {
    if (worker.worker_id == id) return &worker;
  }
  return nullptr;
}

}  // namespace

absl::Status RestoreReplicas(const v1::Dataset& info, const std::vector<WorkerHandle>& live,
                             StreamedPlacement* placement, absl::Duration call_timeout) {
  std::vector<std::string> ids;
  for (const WorkerHandle& worker : live) ids.push_back(worker.worker_id);
  const int num_shards = static_cast<int>(placement->owners.size());
  placement->replicas.resize(num_shards);
  const std::vector<int> chosen = PlaceReplicas(num_shards, ids, placement->owners);
  // (owner, new replica) → shards to copy, ascending.
  std::map<std::pair<std::string, std::string>, std::vector<int>> copies;
  for (int shard = 0; shard < num_shards; ++shard) {
    const std::string& owner = placement->owners[shard];
    const std::string& replica = placement->replicas[shard];
    if (FindWorker(live, owner) == nullptr) continue;
    if (!replica.empty() && replica != owner && FindWorker(live, replica) != nullptr) continue;
    if (chosen[shard] < 0) {
      // No other live worker: the shard has its primary copy only, and new rows are
      // counted as unreplicated.
      placement->replicas[shard].clear();
      continue;
    }
    copies[{owner, ids[chosen[shard]]}].push_back(shard);
  }
  for (const auto& [pair, shards] : copies) {
    const WorkerHandle& source = *FindWorker(live, pair.first);
    const WorkerHandle& target = *FindWorker(live, pair.second);
    absl::Status copied = CopyShards(info, source, target, shards, call_timeout);
    if (!copied.ok()) {
      return absl::Status(copied.code(),
                          absl::StrCat("copying shards ", absl::StrJoin(shards, ","),
                                       " of dataset '", info.dataset_id(), "' to a new replica: ",
                                       copied.message()));
    }
    for (int shard : shards) placement->replicas[shard] = target.worker_id;
    COHORT_LOG_INFO("dataset {}: shards {} copied from worker {} to a new replica on worker {}",
                    info.dataset_id(), absl::StrJoin(shards, ","), source.worker_id,
                    target.worker_id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobStreams::Member>> PromoteReplicas(
    const v1::Dataset& info, const std::vector<WorkerHandle>& live,
    const std::vector<std::string>& lost, const std::vector<int>& shards,
    StreamedPlacement* placement, absl::Duration call_timeout) {
  std::vector<WorkerHandle> hosts;
  for (const WorkerHandle& worker : live) {
    if (std::find(lost.begin(), lost.end(), worker.worker_id) == lost.end()) {
      hosts.push_back(worker);
    }
  }
  placement->replicas.resize(placement->owners.size());
  std::map<std::string, std::vector<int>> by_holder;
  for (int shard : shards) {
    const std::string& replica = placement->replicas[shard];
    if (replica.empty() || FindWorker(hosts, replica) == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "shard ", shard, " of dataset '", info.dataset_id(), "' lost both copies of its "
          "streamed rows: its worker ", placement->owners[shard], " and its replica ",
          replica.empty() ? std::string("(none; the rows were stored while only one worker "
                                        "was live)")
                          : absl::StrCat("on worker ", replica),
          " are gone; stream the rows into a new dataset and rerun the job"));
    }
    by_holder[replica].push_back(shard);
  }

  std::vector<JobStreams::Member> members;
  for (auto& [holder_id, holder_shards] : by_holder) {
    const WorkerHandle& holder = *FindWorker(hosts, holder_id);
    std::sort(holder_shards.begin(), holder_shards.end());
    v1::PromoteReplicasRequest request;
    request.set_dataset_id(info.dataset_id());
    request.set_kind(info.kind());
    for (int shard : holder_shards) request.add_shards(shard);
    grpc::ClientContext context;
    context.set_deadline(Deadline(call_timeout));
    v1::PromoteReplicasResponse response;
    const grpc::Status status = holder.stub->PromoteReplicas(&context, request, &response);
    if (!status.ok()) {
      return CallFailure(status, holder,
                         absl::StrCat("promote its replicas of shards ",
                                      absl::StrJoin(holder_shards, ",")));
    }
    for (int shard : holder_shards) {
      placement->owners[shard] = holder_id;
      placement->replicas[shard].clear();
    }
    COHORT_LOG_WARN("dataset {}: replicas of shards {} promoted on worker {}", info.dataset_id(),
                    absl::StrJoin(holder_shards, ","), holder_id);
    members.push_back(JobStreams::Member{holder, holder_shards});
  }
  // The promoted shards and those whose replica was on a lost worker get new replicas,
  // so that losing another worker later loses nothing. A failed copy leaves them with
  // one copy but does not fail the job, which has every shard.
  absl::Status restored = RestoreReplicas(info, hosts, placement, call_timeout);
  if (!restored.ok()) {
    COHORT_LOG_WARN("dataset {}: {}; the shards have one copy until the next ingest or job",
                    info.dataset_id(), restored.ToString());
  }
  return members;
}

}  // namespace cohort
