// The worker side of a neighbour job: the commands of worker_similarity.proto on the
// shards of one job stream. On an interaction dataset it maps each shard's CSR to the
// global item dictionary and computes item totals, item pair sums and user top-k lists.
// On a users dataset it searches the feature rows the JobSession built. Internal to
// worker/.
#ifndef COHORT_WORKER_NEIGHBOUR_SESSION_H_
#define COHORT_WORKER_NEIGHBOUR_SESSION_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/worker.pb.h"
#include "core/interactions.h"
#include "core/matrix.h"
#include "core/similarity.h"
#include "worker/interaction_store.h"

namespace cohort {

// One shard's feature rows of a dense job; the pointers are owned by the JobSession and
// outlive the NeighbourSession.
struct DenseShardView {
  int shard_id = 0;
  const MatrixXfR* x = nullptr;                     // n×d features
  std::vector<std::string> user_ids;                 // n, copied when the job opens
};

// Thread safety: used by the one thread that serves its stream.
class NeighbourSession {
 public:
  // True for the commands this class serves (JobCommand fields 40–59, 100 and 101).
  static bool IsNeighbourCommand(const v1::JobCommand& command);

  // A session over the job's shards of an interaction dataset, on a snapshot of their
  // current content. Errors: NotFound for an unknown dataset, InvalidArgument for a
  // shard outside the dataset.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NeighbourSession>> OpenInteractions(
      const InteractionStore& store, const v1::OpenJob& open);

  // A session over feature rows built by a JobSession.
  static std::unique_ptr<NeighbourSession> OpenDense(std::string job_id,
                                                     std::vector<DenseShardView> shards);

  // Runs one command and appends one result per shard, in shard-id order. Errors end the
  // stream: InvalidArgument for a malformed command or one of the wrong dataset kind,
  // FailedPrecondition for a command sent before the step it needs.
  [[nodiscard]] absl::Status Handle(const v1::JobCommand& command,
                                    std::vector<v1::ShardResult>* results);

 private:
  struct SparseShard {
    int shard_id = 0;
    std::shared_ptr<const ShardInteractions> local;  // null for a shard without rows
    InteractionMatrix global;  // columns are global dictionary indices once mapped
    std::vector<VectorTotals> totals;
    std::vector<double> item_sums;
    std::vector<double> user_bias;  // one per row after the first user step, else empty
  };
  struct DenseShard {
    DenseShardView view;
    std::vector<int64_t> global_ids;            // by row: GlobalUserId(shard, rank)
    std::vector<std::string> user_id_by_rank;   // the user ids, ascending
    MatrixXfR prepared;
    std::optional<IvfIndex> index;
  };

  explicit NeighbourSession(std::string job_id) : job_id_(std::move(job_id)) {}

  v1::ShardResult NewResult(int64_t seq, int shard_id, int64_t rows) const;
  absl::Status CheckSparse(const char* command) const;
  absl::Status CheckDictionary(const char* command) const;
  absl::Status CheckDense(const char* command) const;

  absl::Status ListItems(const v1::ListItems& command, int64_t seq,
                         std::vector<v1::ShardResult>* results);
  absl::Status AddDictionaryChunk(const v1::ItemDictionaryChunk& command, int64_t seq,
                                  std::vector<v1::ShardResult>* results);
  absl::Status ItemTotals(const v1::ItemTotalsRange& command, int64_t seq,
                          std::vector<v1::ShardResult>* results);
  absl::Status ItemPairs(const v1::ItemPairBlock& command, int64_t seq,
                         std::vector<v1::ShardResult>* results);
  absl::Status FetchRows(const v1::FetchRows& command, int64_t seq,
                         std::vector<v1::ShardResult>* results);
  absl::Status SparseQueries(const v1::SparseUserQueries& command, int64_t seq,
                             std::vector<v1::ShardResult>* results);
  absl::Status FetchUsers(const v1::FetchUsers& command, int64_t seq,
                          std::vector<v1::ShardResult>* results);
  absl::Status AddItemBiasChunk(const v1::ItemBiasChunk& command, int64_t seq,
                                std::vector<v1::ShardResult>* results);
  absl::Status ItemResidualSums(const v1::ItemBiasSumsRange& command, int64_t seq,
                                std::vector<v1::ShardResult>* results);
  absl::Status BuildDenseIndex(const v1::BuildDenseIndex& command, int64_t seq,
                               std::vector<v1::ShardResult>* results);
  absl::Status DenseQueries(const v1::DenseUserQueries& command, int64_t seq,
                            std::vector<v1::ShardResult>* results);

  const std::string job_id_;
  bool dense_ = false;
  std::vector<SparseShard> sparse_;
  std::vector<std::string> dictionary_ids_;  // chunks received so far
  std::optional<ItemDictionary> dictionary_;
  std::vector<double> item_bias_;  // chunks of the current item biases received so far
  std::vector<DenseShard> dense_shards_;
  std::optional<DenseMetric> dense_metric_;
};

}  // namespace cohort

#endif  // COHORT_WORKER_NEIGHBOUR_SESSION_H_
