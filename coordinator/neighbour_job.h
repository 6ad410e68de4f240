// The driver of one neighbour job (item–item or user–user neighbours over a job's worker
// streams) and the coordinator's in-memory form of its result. Internal to coordinator/.
#ifndef COHORT_COORDINATOR_NEIGHBOUR_JOB_H_
#define COHORT_COORDINATOR_NEIGHBOUR_JOB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/cohort.pb.h"
#include "cohort/v1/similarity.pb.h"
#include "coordinator/job_streams.h"
#include "core/interactions.h"
#include "core/recommend.h"
#include "core/topk.h"

namespace cohort {

// Largest k of a neighbour job.
inline constexpr int kMaxNeighbourK = 10000;

// Checks the options against the dataset kind: kind set, k in [1, kMaxNeighbourK],
// shrinkage finite and >= 0, min_support >= 0, measures and nprobe that the data takes.
// Errors: InvalidArgument naming the field and value.
[[nodiscard]] absl::Status ValidateNeighbourOptions(const v1::NeighbourOptions& options,
                                                    v1::DatasetKind kind);

// Largest number of baseline epochs of a neighbour job.
inline constexpr int kMaxBaselineEpochs = 1000;

// The baseline options of a job: the options' fields, or the defaults of
// BaselineOptions where they are unset.
BaselineOptions ToBaselineOptions(const v1::NeighbourOptions& options);

struct NeighbourJobInput {
  std::string job_id;
  std::string dataset_id;
  v1::DatasetKind kind = v1::DATASET_KIND_INTERACTIONS;
  v1::NeighbourOptions options;  // validated
  int num_shards = 0;
  // Dense jobs: the segment model that gives the transform (and the inverted file).
  std::shared_ptr<const v1::SegmentModel> segment_model;
  // Called on the job thread for every progress event.
  std::function<void(const v1::JobEvent&)> on_event;
};

// Runs the job over `streams` and returns the finished model (model_id = job_id). The
// partial sums and top-k lists of every step are merged in shard-id order, so the model
// does not depend on the number of workers. Errors: InvalidArgument from the data;
// Unavailable when a worker is lost; Cancelled when the streams were cancelled.
[[nodiscard]] absl::StatusOr<v1::NeighbourModel> RunNeighbourJob(const NeighbourJobInput& input,
                                                                 JobStreams* streams);

// A neighbour model with its lookup tables. Immutable once built.
struct NeighbourIndex {
  v1::NeighbourModel model;
  ItemDictionary items;                       // interactions: the model's dictionary
  std::vector<std::vector<Neighbor>> lists;   // by item index or user position
  absl::flat_hash_map<std::string, int64_t> user_position;  // user–user: id → list
  absl::flat_hash_map<int64_t, int64_t> global_position;    // user–user: global id → list

  bool item_item() const { return model.options().kind() == v1::NEIGHBOUR_KIND_ITEM_ITEM; }
  // The user id of a global user id of the model. REQUIRES: the id is in the model.
  const std::string& UserId(int64_t global_id) const {
    return model.user_ids(global_position.at(global_id));
  }
  // Interactions: μ and the item biases (empty in a model without fitted baselines).
  Baselines baselines;
  bool has_baselines() const { return !baselines.item_bias.empty(); }
  // b_u of a user with these ratings: the last ALS user step, 0 without baselines.
  double UserBias(const UserRatings& user) const;
};

// Builds the lookup tables. Errors: InvalidArgument when the model's arrays disagree.
[[nodiscard]] absl::StatusOr<std::shared_ptr<const NeighbourIndex>> IndexNeighbourModel(
    v1::NeighbourModel model);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_NEIGHBOUR_JOB_H_
