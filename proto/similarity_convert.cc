#include "proto/similarity_convert.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

// Copies `values` into `out` unless every value is zero (an empty array means zeros).
template <typename T, typename Field>
void AssignUnlessZero(const std::vector<T>& values, Field* out) {
  for (const T& value : values) {
    if (value != 0) {
      out->Assign(values.begin(), values.end());
      return;
    }
  }
}

}  // namespace

absl::StatusOr<DuplicateRule> ToDuplicateRule(v1::DuplicateRule rule) {
  switch (rule) {
    case v1::DUPLICATE_RULE_UNSPECIFIED:
    case v1::DUPLICATE_RULE_KEEP_LATEST:
      return DuplicateRule::kKeepLatest;
    case v1::DUPLICATE_RULE_SUM:
      return DuplicateRule::kSum;
    case v1::DUPLICATE_RULE_MAX:
      return DuplicateRule::kMax;
    case v1::DUPLICATE_RULE_REJECT:
      return DuplicateRule::kReject;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "duplicate_rule ", static_cast<int>(rule),
          " is unknown; use KEEP_LATEST, SUM, MAX or REJECT"));
  }
}

absl::StatusOr<SimilarityMeasure> ToSimilarityMeasure(v1::SimilarityMeasure measure) {
  switch (measure) {
    case v1::SIMILARITY_MEASURE_UNSPECIFIED:
    case v1::SIMILARITY_MEASURE_COSINE:
      return SimilarityMeasure::kCosine;
    case v1::SIMILARITY_MEASURE_PEARSON:
      return SimilarityMeasure::kPearson;
    case v1::SIMILARITY_MEASURE_ADJUSTED_COSINE:
      return SimilarityMeasure::kAdjustedCosine;
    case v1::SIMILARITY_MEASURE_JACCARD:
      return SimilarityMeasure::kJaccard;
    case v1::SIMILARITY_MEASURE_MSD:
      return SimilarityMeasure::kMsd;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "measure ", static_cast<int>(measure),
          " is unknown; use COSINE, PEARSON, ADJUSTED_COSINE, JACCARD or MSD"));
  }
}

absl::StatusOr<InteractionLoadOptions> ToInteractionLoadOptions(
    const v1::CsvOptions& csv, const v1::InteractionColumns& columns) {
  InteractionLoadOptions options;
  COHORT_ASSIGN_OR_RETURN(options.csv, FromProto(csv));
  // Without a header, columns are 0-based numbers.
  const bool header = options.csv.has_header;
  options.user_column = header ? "user_id" : "0";
  if (!columns.user().empty()) options.user_column = columns.user();
  options.item_column = header ? "item_id" : "1";
  if (!columns.item().empty()) options.item_column = columns.item();
  if (columns.implicit()) {
    // A value column of an implicit dataset only filters rows by min_value.
    options.value_column = columns.value();
    options.binarize = !columns.value().empty();
  } else {
    options.value_column = header ? "value" : "2";
    if (!columns.value().empty()) options.value_column = columns.value();
  }
  options.time_column = columns.time();
  if (columns.has_min_value()) options.min_value = columns.min_value();
  return options;
}

void ToProto(const ItemPairPartial& partial, v1::ItemPairPartialProto* proto) {
  proto->set_first_item(partial.first_item);
  proto->set_end_item(partial.end_item);
  proto->mutable_anchor_ptr()->Assign(partial.anchor_ptr.begin(), partial.anchor_ptr.end());
  proto->mutable_partner()->Assign(partial.partner.begin(), partial.partner.end());
  const size_t size = partial.sums.size();
  std::vector<int64_t> n(size);
  std::vector<double> columns[8];
  for (auto& column : columns) column.resize(size);
  for (size_t e = 0; e < size; ++e) {
    const PairSums& sums = partial.sums[e];
    n[e] = sums.n;
    columns[0][e] = sums.sum_x;
    columns[1][e] = sums.sum_y;
    columns[2][e] = sums.sum_xy;
    columns[3][e] = sums.sum_xx;
    columns[4][e] = sums.sum_yy;
    columns[5][e] = sums.sum_xy_centred;
    columns[6][e] = sums.sum_xx_centred;
    columns[7][e] = sums.sum_yy_centred;
  }
  proto->mutable_n()->Assign(n.begin(), n.end());
  AssignUnlessZero(columns[0], proto->mutable_sum_x());
  AssignUnlessZero(columns[1], proto->mutable_sum_y());
  AssignUnlessZero(columns[2], proto->mutable_sum_xy());
  AssignUnlessZero(columns[3], proto->mutable_sum_xx());
  AssignUnlessZero(columns[4], proto->mutable_sum_yy());
  AssignUnlessZero(columns[5], proto->mutable_sum_xy_centred());
  AssignUnlessZero(columns[6], proto->mutable_sum_xx_centred());
  AssignUnlessZero(columns[7], proto->mutable_sum_yy_centred());
}

absl::StatusOr<ItemPairPartial> FromProto(const v1::ItemPairPartialProto& proto) {
  ItemPairPartial partial;
  partial.first_item = proto.first_item();
  partial.end_item = proto.end_item();
  const int64_t anchors = int64_t{partial.end_item} - partial.first_item;
  const int size = proto.partner_size();
  if (anchors < 0 || proto.anchor_ptr_size() != anchors + 1 || proto.n_size() != size ||
      (proto.anchor_ptr_size() > 0 && proto.anchor_ptr(anchors) != size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "item pair partial of block [", partial.first_item, ", ", partial.end_item,
        ") has ", proto.anchor_ptr_size(), " anchor offsets and ", size,
        " partners; the sizes disagree"));
  }
  const google::protobuf::RepeatedField<double>* columns[8] = {
      &proto.sum_x(),          &proto.sum_y(),          &proto.sum_xy(),
      &proto.sum_xx(),         &proto.sum_yy(),         &proto.sum_xy_centred(),
      &proto.sum_xx_centred(), &proto.sum_yy_centred()};
  for (const auto* column : columns) {
    if (column->size() != 0 && column->size() != size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "item pair partial has a sum array of ", column->size(), " entries for ", size,
          " partners"));
    }
  }

  auto at = [](const google::protobuf::RepeatedField<double>& column, int e) {
    return column.empty() ? 0.0 : column.Get(e);
  };
  partial.anchor_ptr.assign(proto.anchor_ptr().begin(), proto.anchor_ptr().end());
  partial.partner.assign(proto.partner().begin(), proto.partner().end());
  partial.sums.resize(size);
  for (int e = 0; e < size; ++e) {
    PairSums& sums = partial.sums[e];
    sums.n = proto.n(e);
    sums.sum_x = at(proto.sum_x(), e);
    sums.sum_y = at(proto.sum_y(), e);
    sums.sum_xy = at(proto.sum_xy(), e);
    sums.sum_xx = at(proto.sum_xx(), e);
    sums.sum_yy = at(proto.sum_yy(), e);
    sums.sum_xy_centred = at(proto.sum_xy_centred(), e);
    sums.sum_xx_centred = at(proto.sum_xx_centred(), e);
    sums.sum_yy_centred = at(proto.sum_yy_centred(), e);
  }
  return partial;
}

void ToProto(const InteractionMatrix& matrix, int64_t first_row, int64_t end_row,
             v1::SparseRows* proto) {
  const int64_t first_entry = matrix.row_ptr[first_row];
  for (int64_t row = first_row; row < end_row; ++row) {
    proto->add_global_ids(GlobalUserId(matrix.shard_id, row));
    proto->add_user_ids(matrix.user_ids[row]);
  }
  for (int64_t row = first_row; row <= end_row; ++row) {
    proto->add_row_ptr(matrix.row_ptr[row] - first_entry);
  }
  const int64_t end_entry = matrix.row_ptr[end_row];
  proto->mutable_item_index()->Assign(matrix.item_index.begin() + first_entry,
                                      matrix.item_index.begin() + end_entry);
  proto->mutable_values()->Assign(matrix.values.begin() + first_entry,
                                  matrix.values.begin() + end_entry);
}

absl::StatusOr<UserQueryBlock> FromProto(const v1::SparseRows& proto, int32_t num_items) {
  const int rows = proto.global_ids_size();
  const int entries = proto.item_index_size();
  if (proto.user_ids_size() != rows || proto.row_ptr_size() != rows + 1 ||
      proto.values_size() != entries || proto.row_ptr(0) != 0 ||
      proto.row_ptr(rows) != entries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sparse rows have ", rows, " ids, ", proto.user_ids_size(), " user ids, ",
        proto.row_ptr_size(), " row offsets and ", entries, " entries; the sizes disagree"));
  }
  UserQueryBlock block;
  block.rows.num_items = num_items;
  block.rows.user_ids.assign(proto.user_ids().begin(), proto.user_ids().end());
  block.rows.row_ptr.assign(proto.row_ptr().begin(), proto.row_ptr().end());
  block.rows.item_index.assign(proto.item_index().begin(), proto.item_index().end());
  block.rows.values.assign(proto.values().begin(), proto.values().end());
  block.global_ids.assign(proto.global_ids().begin(), proto.global_ids().end());
  for (int r = 0; r < rows; ++r) {
    if (block.rows.row_ptr[r] > block.rows.row_ptr[r + 1]) {
      return absl::InvalidArgumentError(absl::StrCat("sparse row ", r, " has a negative size"));
    }
  }
  for (int32_t item : block.rows.item_index) {
    if (item < 0 || item >= num_items) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparse rows name item index ", item, " outside the dictionary of ", num_items,
          " items"));
    }
  }
  return block;
}

void ToProto(const std::vector<std::vector<Neighbor>>& lists,
             const std::function<const std::string&(int64_t)>& user_id_of,
             v1::TopKLists* proto) {
  proto->add_list_ptr(0);
  for (const std::vector<Neighbor>& list : lists) {
    for (const Neighbor& neighbor : list) {
      proto->add_ids(neighbor.id);
      proto->add_scores(neighbor.score);
      proto->add_user_ids(user_id_of(neighbor.id));
    }
    proto->add_list_ptr(proto->ids_size());
  }
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> FromProto(const v1::TopKLists& proto) {
  const int size = proto.ids_size();
  if (proto.list_ptr_size() < 1 || proto.scores_size() != size ||
      proto.list_ptr(proto.list_ptr_size() - 1) != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top-k lists have ", proto.list_ptr_size(), " offsets, ", size, " ids and ",
        proto.scores_size(), " scores; the sizes disagree"));
  }
  std::vector<std::vector<Neighbor>> lists(proto.list_ptr_size() - 1);
  for (size_t q = 0; q < lists.size(); ++q) {
    const int64_t begin = proto.list_ptr(q);
    const int64_t end = proto.list_ptr(q + 1);
    if (begin > end || begin < 0 || end > size) {
      return absl::InvalidArgumentError(absl::StrCat("top-k list ", q, " has bad offsets"));
    }
    for (int64_t e = begin; e < end; ++e) {
      lists[q].push_back(Neighbor{proto.ids(e), proto.scores(e)});
    }
  }
  return lists;
}

}  // namespace cohort
