// The datasets of the coordinator's state folder: one StoredDataset file per dataset,
// <state dir>/datasets/<dataset id>.dataset.pb, rewritten after every change.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "cohort/v1/state.pb.h"
#include "coordinator/cohort_service.h"
#include "coordinator/state_file.h"
#include "core/log.h"

namespace cohort {
namespace {

std::filesystem::path DatasetsDir(const std::string& state_dir) {
  return std::filesystem::path(state_dir) / "datasets";
}

}  // namespace

void CohortServiceImpl::SaveDataset(const DatasetRecord& record) const {
  if (options_.state_dir.empty()) return;
  v1::StoredDataset stored;
  *stored.mutable_info() = record.info;
  *stored.mutable_owners() = {record.owners.begin(), record.owners.end()};
  *stored.mutable_load() = record.load;
  *stored.mutable_shard_rows() = {record.shard_rows.begin(), record.shard_rows.end()};
  *stored.mutable_replicas() = {record.replicas.begin(), record.replicas.end()};
  stored.set_loaded_and_streamed(record.loaded_and_streamed);
  *stored.mutable_restarted_owners() = {record.restarted_owners.begin(),
                                        record.restarted_owners.end()};
  stored.mutable_owner_instances()->insert(record.owner_instances.begin(),
                                           record.owner_instances.end());
  const std::string& dataset_id = record.info.dataset_id();
  const std::string path =
      (DatasetsDir(options_.state_dir) / absl::StrCat(dataset_id, ".dataset.pb")).string();
  const absl::Status written = WriteMessageAtomically(path, stored);
  if (!written.ok()) {
    COHORT_LOG_WARN("dataset {}: its state was not saved, so a restarted coordinator would "
                    "use an older state or not know the dataset: {}",
                    dataset_id, written.ToString());
  }
}

absl::Status CohortServiceImpl::LoadDatasets() {
  const std::filesystem::path dir = DatasetsDir(options_.state_dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create state folder ", dir.string(), ": ", error.message()));
  }
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    if (!absl::EndsWith(path, ".dataset.pb")) continue;
    std::ifstream in(path, std::ios::binary);
    v1::StoredDataset stored;
    if (!in || !stored.ParseFromIstream(&in) || stored.info().dataset_id().empty()) {
      return absl::InternalError(
          absl::StrCat("state file ", path, " is not a readable dataset; move it away"));
    }
    DatasetRecord record;
    record.info = stored.info();
    record.owners.assign(stored.owners().begin(), stored.owners().end());
    record.load = stored.load();
    record.shard_rows.assign(stored.shard_rows().begin(), stored.shard_rows().end());
    record.replicas.assign(stored.replicas().begin(), stored.replicas().end());
    record.loaded_and_streamed = stored.loaded_and_streamed();
    record.restarted_owners.insert(stored.restarted_owners().begin(),
                                   stored.restarted_owners().end());
    record.owner_instances.insert(stored.owner_instances().begin(),
                                  stored.owner_instances().end());
    if (record.info.state() == v1::DATASET_STATE_LOADING) {
      record.info.set_state(v1::DATASET_STATE_FAILED);
      record.info.set_error(
          "the coordinator restarted while the dataset was loading; load it again");
    }
    const std::string dataset_id = record.info.dataset_id();
    absl::MutexLock lock(&mutex_);
    // Generated ids continue after the highest stored one, so a new dataset never takes
    // the id of a dataset that workers still hold.
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::StripPrefix(dataset_id, "dataset-"), &number)) {
      next_dataset_ = std::max(next_dataset_, number + 1);
    }
    datasets_[dataset_id] = std::move(record);
    ++loaded;
  }
  COHORT_LOG_INFO("coordinator state: {} datasets loaded from {}", loaded, options_.state_dir);
  return absl::OkStatus();
}

}  // namespace cohort
