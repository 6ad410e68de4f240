// protobuf ↔ core conversions of the similarity and recommendation messages, used by the
// worker and the coordinator at their edges.
#ifndef COHORT_PROTO_SIMILARITY_CONVERT_H_
#define COHORT_PROTO_SIMILARITY_CONVERT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/cohort.pb.h"
#include "cohort/v1/similarity.pb.h"
#include "cohort/v1/worker_similarity.pb.h"
#include "core/interactions.h"
#include "core/similarity.h"
#include "core/topk.h"

namespace cohort {

// UNSPECIFIED means KEEP_LATEST. Errors: InvalidArgument naming the value.
[[nodiscard]] absl::StatusOr<DuplicateRule> ToDuplicateRule(v1::DuplicateRule rule);

// UNSPECIFIED means COSINE. Errors: InvalidArgument naming the value.
[[nodiscard]] absl::StatusOr<SimilarityMeasure> ToSimilarityMeasure(v1::SimilarityMeasure measure);

// The load options of an interaction file: column defaults ("user_id", "item_id",
// "value", or "0", "1", "2" without a header), implicit values, min_value. Paths, shards
// and the shard count are left to the caller. Errors: InvalidArgument for bad CSV options.
[[nodiscard]] absl::StatusOr<InteractionLoadOptions> ToInteractionLoadOptions(
    const v1::CsvOptions& csv, const v1::InteractionColumns& columns);

void ToProto(const ItemPairPartial& partial, v1::ItemPairPartialProto* proto);
// Errors: InvalidArgument when the arrays' sizes disagree.
[[nodiscard]] absl::StatusOr<ItemPairPartial> FromProto(const v1::ItemPairPartialProto& proto);

// Rows [first_row, end_row) of `matrix` with their global ids.
// REQUIRES: 0 <= first_row <= end_row <= matrix.num_users().
void ToProto(const InteractionMatrix& matrix, int64_t first_row, int64_t end_row,
             v1::SparseRows* proto);
// The rows as a query block over `num_items` items. Errors: InvalidArgument for sizes that
// disagree or an item index outside [0, num_items).
[[nodiscard]] absl::StatusOr<UserQueryBlock> FromProto(const v1::SparseRows& proto,
                                                       int32_t num_items);

// `lists[q]` for every query; `user_ids[id]` is looked up by `user_id_of`.
void ToProto(const std::vector<std::vector<Neighbor>>& lists,
             const std::function<const std::string&(int64_t)>& user_id_of, v1::TopKLists* proto);
// Errors: InvalidArgument when the arrays' sizes disagree.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> FromProto(
    const v1::TopKLists& proto);

}  // namespace cohort

#endif  // COHORT_PROTO_SIMILARITY_CONVERT_H_
