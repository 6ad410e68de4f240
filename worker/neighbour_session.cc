#include "worker/neighbour_session.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/recommend.h"
#include "core/status_macros.h"
#include "proto/convert.h"
#include "proto/similarity_convert.h"

namespace cohort {
namespace {

// Copies `local` with its item indices mapped to `dictionary`. Errors: InvalidArgument
// for an item the dictionary does not have (the coordinator sent an incomplete one).
absl::StatusOr<InteractionMatrix> ToGlobalItems(const ShardInteractions& local,
                                                const ItemDictionary& dictionary) {
  std::vector<int32_t> global_of_local(local.items.size());
  for (int32_t l = 0; l < local.items.size(); ++l) {
    global_of_local[l] = dictionary.Find(local.items.id(l));
    if (global_of_local[l] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "item '", local.items.id(l), "' of shard ", local.matrix.shard_id,
          " is missing from the item dictionary"));
    }
  }
  InteractionMatrix global = local.matrix;
  global.num_items = dictionary.size();
  // Both dictionaries are sorted, so the mapping keeps each row's columns ascending.
  for (int32_t& item : global.item_index) item = global_of_local[item];
  return global;
}

InteractionMatrix EmptyMatrix(int shard_id, int32_t num_items) {
  InteractionMatrix matrix;
  matrix.shard_id = shard_id;
  matrix.num_items = num_items;
  matrix.row_ptr = {0};
  return matrix;
}

absl::StatusOr<DenseMetric> ToDenseMetric(v1::SimilarityMeasure measure) {
  switch (measure) {
    case v1::SIMILARITY_MEASURE_UNSPECIFIED:
    case v1::SIMILARITY_MEASURE_COSINE:
      return DenseMetric::kCosine;
    case v1::SIMILARITY_MEASURE_PEARSON:
      return DenseMetric::kPearson;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "measure ", v1::SimilarityMeasure_Name(measure),
          " does not apply to feature vectors; use COSINE or PEARSON"));
  }
}

// Returns the nearest centroid of every row of `x`. A cosine model takes the largest
// cosine, any other model the smallest squared Euclidean distance. Ties go to the lower
// index.
std::vector<int32_t> NearestCentroids(const MatrixXfR& x, const MatrixXfR& centroids,
                                      bool cosine) {
  std::vector<int32_t> labels(x.rows(), 0);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const Eigen::VectorXd row = x.row(r).cast<double>().transpose();
    const double row_norm = row.norm();
    double best = std::numeric_limits<double>::infinity();
    for (Eigen::Index c = 0; c < centroids.rows(); ++c) {
      const Eigen::VectorXd centroid = centroids.row(c).cast<double>().transpose();
      double cost = 0;
      if (cosine) {
        const double norms = row_norm * centroid.norm();
        cost = norms > 0 ? -row.dot(centroid) / norms : 0.0;
      } else {
        cost = (row - centroid).squaredNorm();
      }
      if (cost < best) {
        best = cost;
        labels[r] = static_cast<int32_t>(c);
      }
    }
  }
  return labels;
}

}  // namespace

bool NeighbourSession::IsNeighbourCommand(const v1::JobCommand& command) {
  return (command.command_case() >= 40 && command.command_case() < 60) ||
         command.command_case() == v1::JobCommand::kItemBias ||
         command.command_case() == v1::JobCommand::kItemBiasSums;
}

absl::StatusOr<std::unique_ptr<NeighbourSession>> NeighbourSession::OpenInteractions(
    const InteractionStore& store, const v1::OpenJob& open) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<HostedInteractions> dataset,
                          store.Dataset(open.dataset_id()));
  std::unique_ptr<NeighbourSession> session(new NeighbourSession(open.job_id()));
  absl::MutexLock lock(&dataset->mutex);
  for (int shard_id : open.shards()) {
    if (shard_id < 0 || shard_id >= dataset->num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("job ", open.job_id(), ": shard ",
                                                     shard_id, " is outside [0, ",
                                                     dataset->num_shards, ")"));
    }
    SparseShard shard;
    shard.shard_id = shard_id;
    auto it = dataset->shards.find(shard_id);
    if (it != dataset->shards.end()) shard.local = it->second;
    session->sparse_.push_back(std::move(shard));
  }
  return session;
}

std::unique_ptr<NeighbourSession> NeighbourSession::OpenDense(std::string job_id,
                                                              std::vector<DenseShardView> shards) {
  std::unique_ptr<NeighbourSession> session(new NeighbourSession(std::move(job_id)));
  session->dense_ = true;
  for (DenseShardView& view : shards) {
    DenseShard shard;
    shard.view = view;
    // A user's global id is (shard, rank of its user id in the shard), so that top-k
    // ties, which go to the lower id, go to the lower user id as on interaction shards.
    std::vector<int64_t> order(view.user_ids.size());
    for (size_t row = 0; row < order.size(); ++row) order[row] = static_cast<int64_t>(row);
    std::stable_sort(order.begin(), order.end(), [&view](int64_t a, int64_t b) {
      return view.user_ids[a] < view.user_ids[b];
    });
    shard.global_ids.resize(order.size());
    for (size_t rank = 0; rank < order.size(); ++rank) {
      shard.global_ids[order[rank]] = GlobalUserId(view.shard_id, static_cast<int64_t>(rank));
      shard.user_id_by_rank.push_back(view.user_ids[order[rank]]);
    }
    session->dense_shards_.push_back(std::move(shard));
  }
  return session;
}

v1::ShardResult NeighbourSession::NewResult(int64_t seq, int shard_id, int64_t rows) const {
  v1::ShardResult result;
  result.set_seq(seq);
  result.set_shard_id(shard_id);
  result.set_rows(rows);
  return result;
}

absl::Status NeighbourSession::CheckSparse(const char* command) const {
  if (dense_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", job_id_, ": ", command, " needs an interaction dataset, not feature rows"));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::CheckDictionary(const char* command) const {
  COHORT_RETURN_IF_ERROR(CheckSparse(command));
  if (!dictionary_.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id_, ": ", command, " before the last item dictionary chunk"));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::CheckDense(const char* command) const {
  if (!dense_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", job_id_, ": ", command, " needs feature rows, not an interaction dataset"));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::Handle(const v1::JobCommand& command,
                                      std::vector<v1::ShardResult>* results) {
  const int64_t seq = command.seq();
  switch (command.command_case()) {
    case v1::JobCommand::kListItems:
      return ListItems(command.list_items(), seq, results);
    case v1::JobCommand::kItemDictionary:
      return AddDictionaryChunk(command.item_dictionary(), seq, results);
    case v1::JobCommand::kItemTotals:
      return ItemTotals(command.item_totals(), seq, results);
    case v1::JobCommand::kItemPairs:
      return ItemPairs(command.item_pairs(), seq, results);
    case v1::JobCommand::kFetchRows:
      return FetchRows(command.fetch_rows(), seq, results);
    case v1::JobCommand::kSparseQueries:
      return SparseQueries(command.sparse_queries(), seq, results);
    case v1::JobCommand::kFetchUsers:
      return FetchUsers(command.fetch_users(), seq, results);
    case v1::JobCommand::kItemBias:
      return AddItemBiasChunk(command.item_bias(), seq, results);
    case v1::JobCommand::kItemBiasSums:
      return ItemResidualSums(command.item_bias_sums(), seq, results);
    case v1::JobCommand::kDenseIndex:
      return BuildDenseIndex(command.dense_index(), seq, results);
    case v1::JobCommand::kDenseQueries:
      return DenseQueries(command.dense_queries(), seq, results);
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "job ", job_id_, ": command ", seq, " (field ", command.command_case(),
          ") does not apply to a neighbour job"));
  }
}

absl::Status NeighbourSession::ListItems(const v1::ListItems& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckSparse("ListItems"));
  if (command.max_items() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ListItems.max_items = ", command.max_items(), " must be >= 1"));
  }
  for (const SparseShard& shard : sparse_) {
    static const std::vector<std::string> kNone;
    const std::vector<std::string>& ids = shard.local ? shard.local->items.ids() : kNone;
    auto begin = command.first() ? ids.begin()
                                 : std::upper_bound(ids.begin(), ids.end(), command.after());
    auto end = ids.end() - begin > command.max_items() ? begin + command.max_items() : ids.end();
    v1::ShardResult result =
        NewResult(seq, shard.shard_id, shard.local ? shard.local->matrix.num_users() : 0);
    v1::ItemListChunk* chunk = result.mutable_item_list();
    for (auto it = begin; it != end; ++it) chunk->add_item_ids(*it);
    chunk->set_complete(end == ids.end());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::AddDictionaryChunk(const v1::ItemDictionaryChunk& command,
                                                  int64_t seq,
                                                  std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckSparse("ItemDictionaryChunk"));
  if (dictionary_.has_value() ||
      command.first_index() != static_cast<int64_t>(dictionary_ids_.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", job_id_, ": item dictionary chunk starts at ", command.first_index(), " but ",
        dictionary_.has_value() ? "the dictionary is complete" : "the next index is ",
        dictionary_.has_value() ? std::string() : absl::StrCat(dictionary_ids_.size())));
  }
  for (const std::string& id : command.item_ids()) {
    if (!dictionary_ids_.empty() && !(dictionary_ids_.back() < id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job ", job_id_, ": item dictionary is not sorted at '", id, "'"));
    }
    dictionary_ids_.push_back(id);
  }
  if (command.last()) {
    dictionary_.emplace(std::move(dictionary_ids_));
    dictionary_ids_.clear();
    for (SparseShard& shard : sparse_) {
      if (shard.local == nullptr) {
        shard.global = EmptyMatrix(shard.shard_id, dictionary_->size());
      } else {
        COHORT_ASSIGN_OR_RETURN(shard.global, ToGlobalItems(*shard.local, *dictionary_));
      }
      shard.totals = ComputeItemTotals(shard.global);
      shard.item_sums = ComputeItemSums(shard.global);
    }
  }
  for (const SparseShard& shard : sparse_) {
    results->push_back(NewResult(seq, shard.shard_id, shard.global.num_users()));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::ItemTotals(const v1::ItemTotalsRange& command, int64_t seq,
                                          std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDictionary("ItemTotalsRange"));
  const int32_t first = command.first_item();
  const int32_t end = command.end_item();
  if (first < 0 || end < first || end > dictionary_->size()) {
    return absl::InvalidArgumentError(absl::StrCat("item range [", first, ", ", end,
                                                   ") is outside the dictionary of ",
                                                   dictionary_->size(), " items"));
  }
  for (const SparseShard& shard : sparse_) {
    v1::ShardResult result = NewResult(seq, shard.shard_id, shard.global.num_users());
    v1::ItemTotalsPartial* out = result.mutable_item_totals();
    out->set_first_item(first);
    out->set_min_value(std::numeric_limits<double>::infinity());
    out->set_max_value(-std::numeric_limits<double>::infinity());
    for (float value : shard.global.values) {
      out->set_min_value(std::min<double>(out->min_value(), value));
      out->set_max_value(std::max<double>(out->max_value(), value));
    }
    for (int32_t item = first; item < end; ++item) {
      out->add_counts(shard.totals[item].count);
      out->add_sum_squares(shard.totals[item].sum_sq);
      out->add_sums(shard.item_sums[item]);
    }
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::AddItemBiasChunk(const v1::ItemBiasChunk& command, int64_t seq,
                                                std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDictionary("ItemBiasChunk"));
  const int64_t end = command.first_index() + static_cast<int64_t>(command.item_bias_size());
  if (command.first_index() != static_cast<int64_t>(item_bias_.size()) ||
      end > dictionary_->size() || (command.last() && end != dictionary_->size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", job_id_, ": item bias chunk [", command.first_index(), ", ", end,
        ") does not continue the ", item_bias_.size(), " biases received for ",
        dictionary_->size(), " items"));
  }
  item_bias_.insert(item_bias_.end(), command.item_bias().begin(), command.item_bias().end());
  if (command.last()) {
    for (SparseShard& shard : sparse_) {
      shard.user_bias = ComputeUserBiases(shard.global, command.global_mean(), item_bias_,
                                          command.reg_user());
    }
    item_bias_.clear();
  }
  for (const SparseShard& shard : sparse_) {
    results->push_back(NewResult(seq, shard.shard_id, shard.global.num_users()));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::ItemResidualSums(const v1::ItemBiasSumsRange& command, int64_t seq,
                                                std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDictionary("ItemBiasSumsRange"));
  const int32_t first = command.first_item();
  const int32_t end = command.end_item();
  if (first < 0 || end < first || end > dictionary_->size()) {
    return absl::InvalidArgumentError(absl::StrCat("item range [", first, ", ", end,
                                                   ") is outside the dictionary of ",
                                                   dictionary_->size(), " items"));
  }
  for (const SparseShard& shard : sparse_) {
    const std::vector<double> zeros(static_cast<size_t>(shard.global.num_users()), 0.0);
    const ItemBiasSums sums = ComputeItemBiasSums(
        shard.global, command.global_mean(), shard.user_bias.empty() ? zeros : shard.user_bias);
    v1::ShardResult result = NewResult(seq, shard.shard_id, shard.global.num_users());
    v1::ItemBiasSumsPartial* out = result.mutable_item_bias_sums();
    out->set_first_item(first);
    out->mutable_residual_sums()->Assign(sums.residual_sum.begin() + first,
                                         sums.residual_sum.begin() + end);
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::ItemPairs(const v1::ItemPairBlock& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDictionary("ItemPairBlock"));
  COHORT_ASSIGN_OR_RETURN(SimilarityMeasure measure, ToSimilarityMeasure(command.measure()));
  for (const SparseShard& shard : sparse_) {
    COHORT_ASSIGN_OR_RETURN(ItemPairPartial partial,
                            ComputeItemPairPartial(shard.global, measure, command.first_item(),
                                                   command.end_item()));
    v1::ShardResult result = NewResult(seq, shard.shard_id, shard.global.num_users());
    ToProto(partial, result.mutable_item_pairs());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::FetchRows(const v1::FetchRows& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  if (command.first_row() < 0 || command.max_rows() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("FetchRows of ", command.max_rows(),
                                                   " rows from row ", command.first_row(),
                                                   " is invalid"));
  }
  if (dense_) {
    for (const DenseShard& shard : dense_shards_) {
      const int64_t n = static_cast<int64_t>(shard.global_ids.size());
      const int64_t first = std::min(command.first_row(), n);
      const int64_t end = std::min(first + command.max_rows(), n);
      v1::ShardResult result = NewResult(seq, shard.view.shard_id, n);
      v1::DenseRows* out = result.mutable_dense_rows();
      for (int64_t row = first; row < end; ++row) {
        out->add_global_ids(shard.global_ids[row]);
        out->add_user_ids(shard.view.user_ids[row]);
      }
      ToProto(MatrixXfR(shard.view.x->middleRows(first, end - first)), out->mutable_rows());
      results->push_back(std::move(result));
    }
    return absl::OkStatus();
  }
  COHORT_RETURN_IF_ERROR(CheckDictionary("FetchRows"));
  for (const SparseShard& shard : sparse_) {
    const int64_t n = shard.global.num_users();
    const int64_t first = std::min(command.first_row(), n);
    const int64_t end = std::min(first + command.max_rows(), n);
    v1::ShardResult result = NewResult(seq, shard.shard_id, n);
    ToProto(shard.global, first, end, result.mutable_sparse_rows());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::SparseQueries(const v1::SparseUserQueries& command, int64_t seq,
                                             std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDictionary("SparseUserQueries"));
  SimilarityOptions options;
  COHORT_ASSIGN_OR_RETURN(options.measure, ToSimilarityMeasure(command.measure()));
  options.k = command.k();
  options.shrinkage = command.shrinkage();
  options.min_support = command.min_support();
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_ASSIGN_OR_RETURN(UserQueryBlock queries,
                          FromProto(command.queries(), dictionary_->size()));
  const std::vector<double> item_means(command.item_means().begin(),
                                       command.item_means().end());
  for (const SparseShard& shard : sparse_) {
    COHORT_ASSIGN_OR_RETURN(std::vector<std::vector<Neighbor>> lists,
                            UserNeighborsInShard(queries, shard.global, item_means, options));
    v1::ShardResult result = NewResult(seq, shard.shard_id, shard.global.num_users());
    const std::vector<std::string>& user_ids = shard.global.user_ids;
    ToProto(
        lists, [&user_ids](int64_t id) -> const std::string& { return user_ids[RowOfGlobalUserId(id)]; },
        result.mutable_top_k());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::FetchUsers(const v1::FetchUsers& command, int64_t seq,
                                          std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckSparse("FetchUsers"));
  for (const SparseShard& shard : sparse_) {
    v1::ShardResult result =
        NewResult(seq, shard.shard_id, shard.local ? shard.local->matrix.num_users() : 0);
    v1::UserRowsResult* out = result.mutable_user_rows();
    if (shard.local != nullptr) {
      // CSR rows are sorted by user id.
      const InteractionMatrix& matrix = shard.local->matrix;
      for (const std::string& user_id : command.user_ids()) {
        auto it = std::lower_bound(matrix.user_ids.begin(), matrix.user_ids.end(), user_id);
        if (it == matrix.user_ids.end() || *it != user_id) continue;
        const int64_t row = it - matrix.user_ids.begin();
        v1::UserRowsResult::Row* row_out = out->add_rows();
        row_out->set_user_id(user_id);
        for (int64_t e = matrix.row_ptr[row]; e < matrix.row_ptr[row + 1]; ++e) {
          row_out->add_item_ids(shard.local->items.id(matrix.item_index[e]));
          row_out->add_values(matrix.values[e]);
        }
      }
    }
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status NeighbourSession::BuildDenseIndex(const v1::BuildDenseIndex& command, int64_t seq,
                                               std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDense("BuildDenseIndex"));
  COHORT_ASSIGN_OR_RETURN(DenseMetric metric, ToDenseMetric(command.measure()));
  MatrixXfR centroids;
  if (command.centroids().rows() > 0) {
    COHORT_ASSIGN_OR_RETURN(centroids, FromProto(command.centroids()));
  }
  for (DenseShard& shard : dense_shards_) {
    const MatrixXfR& x = *shard.view.x;
    if (centroids.rows() > 0 && x.rows() > 0 && centroids.cols() != x.cols()) {
      return absl::InvalidArgumentError(absl::StrCat("job ", job_id_, ": centroids have ",
                                                     centroids.cols(), " columns but the ",
                                                     "features have ", x.cols()));
    }
    shard.prepared = PrepareDenseRows(x, metric);
    shard.index.reset();
    if (centroids.rows() > 0) {
      const std::vector<int32_t> labels =
          NearestCentroids(x, centroids, command.cosine_centroids());
      COHORT_ASSIGN_OR_RETURN(IvfIndex index,
                              IvfIndex::Build(centroids, command.cosine_centroids(), labels,
                                              shard.prepared, shard.global_ids, metric));
      shard.index.emplace(std::move(index));
    }
    results->push_back(NewResult(seq, shard.view.shard_id, x.rows()));
  }
  dense_metric_ = metric;
  return absl::OkStatus();
}

absl::Status NeighbourSession::DenseQueries(const v1::DenseUserQueries& command, int64_t seq,
                                            std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckDense("DenseUserQueries"));
  if (!dense_metric_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id_, ": DenseUserQueries before BuildDenseIndex"));
  }
  COHORT_ASSIGN_OR_RETURN(MatrixXfR raw, FromProto(command.queries().rows()));
  const std::vector<int64_t> query_ids(command.queries().global_ids().begin(),
                                       command.queries().global_ids().end());
  const MatrixXfR prepared = PrepareDenseRows(raw, *dense_metric_);
  DenseSearchOptions options;
  options.metric = *dense_metric_;
  options.k = command.k();
  options.exclude_self = true;
  COHORT_RETURN_IF_ERROR(options.Validate());
  for (const DenseShard& shard : dense_shards_) {
    std::vector<std::vector<Neighbor>> lists;
    if (command.nprobe() > 0) {
      if (!shard.index.has_value()) {
        return absl::FailedPreconditionError(
            absl::StrCat("job ", job_id_, ": nprobe > 0 but the index has no centroids"));
      }
      COHORT_ASSIGN_OR_RETURN(lists, shard.index->Search(raw, prepared, query_ids, options,
                                                         command.nprobe()));
    } else {
      COHORT_ASSIGN_OR_RETURN(lists, ExactDenseTopK(prepared, query_ids, shard.prepared,
                                                    shard.global_ids, options));
    }
    v1::ShardResult result =
        NewResult(seq, shard.view.shard_id, static_cast<int64_t>(shard.global_ids.size()));
    const std::vector<std::string>& user_ids = shard.user_id_by_rank;
    ToProto(
        lists, [&user_ids](int64_t id) -> const std::string& { return user_ids[RowOfGlobalUserId(id)]; },
        result.mutable_top_k());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

}  // namespace cohort
