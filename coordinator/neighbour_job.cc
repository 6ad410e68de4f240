#include "coordinator/neighbour_job.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/log.h"
#include "core/similarity.h"
#include "core/status_macros.h"
#include "proto/convert.h"
#include "proto/similarity_convert.h"

namespace cohort {
namespace {

// Item ids per ListItems result and per dictionary chunk, and items per totals range.
// Each keeps a message at a few MiB, far below the gRPC limit.
constexpr int kItemsPerChunk = 65536;
constexpr int32_t kTotalsPerRange = 262144;
// Upper bound on the (anchor, partner) cells of one item pair block, so one shard's
// partial stays below about 40 MiB even when every pair occurs.
constexpr int64_t kMaxPairCells = 1 << 19;
// Upper bound on the entries of one shard's top-k result (queries × k), and on the
// queries of one block.
constexpr int64_t kMaxTopKEntries = 1 << 20;
constexpr int kMaxQueriesPerBlock = 1024;

// Progress of one job, sent through input.on_event.
class Progress {
 public:
  explicit Progress(const NeighbourJobInput& input) : input_(input), start_(absl::Now()) {}

  void Report(const std::string& phase, int step, int steps, const std::string& message) {
    if (!input_.on_event) return;
    v1::JobEvent event;
    event.set_job_id(input_.job_id);
    event.set_state(v1::JOB_STATE_RUNNING);
    event.set_phase(phase);
    event.set_iteration(step);
    event.set_max_iter(steps);
    event.set_k(input_.options.k());
    event.set_shards_total(input_.num_shards);
    event.set_shards_done(steps > 0 && step >= steps ? input_.num_shards : 0);
    event.set_message(message);
    event.set_elapsed_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
    input_.on_event(event);
  }

 private:
  const NeighbourJobInput& input_;
  const absl::Time start_;
};

SimilarityOptions ToSimilarityOptions(const v1::NeighbourOptions& options,
                                      SimilarityMeasure measure) {
  SimilarityOptions out;
  out.measure = measure;
  out.k = options.k();
  out.shrinkage = options.shrinkage();
  out.min_support = std::max(1, options.min_support());
  return out;
}

// Queries per block for top-k lists of length k.
int QueriesPerBlock(int k) {
  return static_cast<int>(std::clamp<int64_t>(kMaxTopKEntries / std::max(1, k), 1,
                                              kMaxQueriesPerBlock));
}

// Merges every shard's sorted item list into the dictionary, chunk by chunk. Each round
// requests every shard's next kItemsPerChunk ids after the cursor, keeps the ids up to
// the smallest last id of a shard that has more, and moves the cursor there.
absl::StatusOr<ItemDictionary> BuildDictionary(JobStreams* streams) {
  std::vector<std::string> ids;
  std::string after;
  bool first = true;
  while (true) {
    v1::JobCommand command;
    command.mutable_list_items()->set_after(after);
    command.mutable_list_items()->set_first(first);
    command.mutable_list_items()->set_max_items(kItemsPerChunk);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    const std::string* bound = nullptr;
    for (const v1::ShardResult& result : results) {
      const v1::ItemListChunk& chunk = result.item_list();
      if (chunk.complete() || chunk.item_ids_size() == 0) continue;
      const std::string& last = chunk.item_ids(chunk.item_ids_size() - 1);
      if (bound == nullptr || last < *bound) bound = &last;
    }
    std::vector<std::vector<std::string>> lists;
    for (const v1::ShardResult& result : results) {
      std::vector<std::string> list;
      for (const std::string& id : result.item_list().item_ids()) {
        if (bound != nullptr && *bound < id) break;
        list.push_back(id);
      }
      lists.push_back(std::move(list));
    }
    const ItemDictionary round = MergeItemLists(lists);
    ids.insert(ids.end(), round.ids().begin(), round.ids().end());
    if (bound == nullptr) break;
    after = *bound;
    first = false;
  }
  return ItemDictionary(std::move(ids));
}

absl::Status SendDictionary(const ItemDictionary& dictionary, JobStreams* streams) {
  int32_t first = 0;
  do {
    const int32_t end = std::min<int32_t>(dictionary.size(), first + kItemsPerChunk);
    v1::JobCommand command;
    v1::ItemDictionaryChunk* chunk = command.mutable_item_dictionary();
    chunk->set_first_index(first);
    for (int32_t i = first; i < end; ++i) chunk->add_item_ids(dictionary.id(i));
    chunk->set_last(end == dictionary.size());
    COHORT_RETURN_IF_ERROR(streams->Execute(std::move(command)).status());
    first = end;
  } while (first < dictionary.size());
  return absl::OkStatus();
}

struct ItemStatistics {
  std::vector<VectorTotals> totals;
  std::vector<double> sums;
  int64_t users = 0;
  double min_value = std::numeric_limits<double>::infinity();
  double max_value = -std::numeric_limits<double>::infinity();
};

// Item totals over all shards, added in shard-id order.
absl::StatusOr<ItemStatistics> CollectItemStatistics(int32_t num_items, JobStreams* streams) {
  ItemStatistics stats;
  stats.totals.resize(num_items);
  stats.sums.resize(num_items, 0.0);
  int32_t first = 0;
  do {
    const int32_t end = std::min<int32_t>(num_items, first + kTotalsPerRange);
    v1::JobCommand command;
    command.mutable_item_totals()->set_first_item(first);
    command.mutable_item_totals()->set_end_item(end);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    stats.users = 0;
    for (const v1::ShardResult& result : results) {
      const v1::ItemTotalsPartial& partial = result.item_totals();
      if (partial.counts_size() != end - first || partial.sums_size() != end - first ||
          partial.sum_squares_size() != end - first) {
        return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned ",
                                                partial.counts_size(), " item totals for ",
                                                end - first, " items"));
      }
      for (int32_t i = 0; i < end - first; ++i) {
        stats.totals[first + i].count += partial.counts(i);
        stats.totals[first + i].sum_sq += partial.sum_squares(i);
        stats.sums[first + i] += partial.sums(i);
      }
      stats.users += result.rows();
      stats.min_value = std::min(stats.min_value, partial.min_value());
      stats.max_value = std::max(stats.max_value, partial.max_value());
    }
    first = end;
  } while (first < num_items);
  return stats;
}

// Fits μ + b_u + b_i by ALS over the shards (FitBaselines of core/recommend.h,
// distributed): the item step from per-item residual sums added in shard order, the
// user step on every shard after it receives the item biases. The final user step is
// left to prediction, which recomputes b_u from the user's row. Returns the item biases.
absl::StatusOr<std::vector<double>> FitItemBiases(const ItemStatistics& stats,
                                                  double global_mean,
                                                  const BaselineOptions& options,
                                                  Progress* progress, JobStreams* streams) {
  const int32_t num_items = static_cast<int32_t>(stats.totals.size());
  std::vector<double> item_bias(static_cast<size_t>(num_items), 0.0);
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    if (epoch > 0) {
      // The user step of the previous epoch.
      int32_t first = 0;
      do {
        const int32_t end = std::min<int32_t>(num_items, first + kTotalsPerRange);
        v1::JobCommand command;
        v1::ItemBiasChunk* chunk = command.mutable_item_bias();
        chunk->set_first_index(first);
        chunk->mutable_item_bias()->Assign(item_bias.begin() + first, item_bias.begin() + end);
        chunk->set_last(end == num_items);
        chunk->set_global_mean(global_mean);
        chunk->set_reg_user(options.reg_user);
        COHORT_RETURN_IF_ERROR(streams->Execute(std::move(command)).status());
        first = end;
      } while (first < num_items);
    }
    int32_t first = 0;
    do {
      const int32_t end = std::min<int32_t>(num_items, first + kTotalsPerRange);
      v1::JobCommand command;
      command.mutable_item_bias_sums()->set_first_item(first);
      command.mutable_item_bias_sums()->set_end_item(end);
      command.mutable_item_bias_sums()->set_global_mean(global_mean);
      COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                              streams->Execute(std::move(command)));
      std::vector<double> residual_sum(static_cast<size_t>(end - first), 0.0);
      for (const v1::ShardResult& result : results) {
        const v1::ItemBiasSumsPartial& partial = result.item_bias_sums();
        if (partial.residual_sums_size() != end - first) {
          return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned ",
                                                  partial.residual_sums_size(),
                                                  " item bias sums for ", end - first, " items"));
        }
        for (int32_t i = 0; i < end - first; ++i) residual_sum[i] += partial.residual_sums(i);
      }
      for (int32_t i = first; i < end; ++i) {
        item_bias[i] = residual_sum[i - first] /
                       (options.reg_item + static_cast<double>(stats.totals[i].count));
      }
      first = end;
    } while (first < num_items);
    progress->Report("baselines", epoch + 1, options.epochs,
                     absl::StrCat("baseline epoch ", epoch + 1, " of ", options.epochs));
  }
  return item_bias;
}

// Appends one list per owner to the model's packed arrays.
void AppendList(const std::vector<Neighbor>& list, v1::NeighbourModel* model) {
  for (const Neighbor& neighbor : list) {
    model->add_neighbour_ids(neighbor.id);
    model->add_scores(neighbor.score);
  }
  model->add_list_ptr(model->neighbour_ids_size());
}

absl::Status ItemNeighbours(const NeighbourJobInput& input, SimilarityMeasure measure,
                            const ItemStatistics& stats, int32_t num_items, Progress* progress,
                            JobStreams* streams, v1::NeighbourModel* model) {
  const SimilarityOptions options = ToSimilarityOptions(input.options, measure);
  const int32_t block = static_cast<int32_t>(
      std::clamp<int64_t>(kMaxPairCells / std::max<int32_t>(1, num_items), 1,
                          std::max<int32_t>(1, num_items)));
  const int blocks = num_items == 0 ? 0 : (num_items + block - 1) / block;
  for (int b = 0; b < blocks; ++b) {
    const int32_t first = b * block;
    const int32_t end = std::min(num_items, first + block);
    v1::JobCommand command;
    command.mutable_item_pairs()->set_measure(input.options.measure());
    command.mutable_item_pairs()->set_first_item(first);
    command.mutable_item_pairs()->set_end_item(end);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    ItemPairPartial merged;
    for (const v1::ShardResult& result : results) {
      COHORT_ASSIGN_OR_RETURN(ItemPairPartial partial, FromProto(result.item_pairs()));
      COHORT_RETURN_IF_ERROR(MergeItemPairPartial(partial, &merged));
    }
    COHORT_ASSIGN_OR_RETURN(std::vector<std::vector<Neighbor>> lists,
                            FinishItemNeighbors(merged, stats.totals, options));
    for (const std::vector<Neighbor>& list : lists) AppendList(list, model);
    progress->Report("pairs", b + 1, blocks,
                     absl::StrCat("items ", end, " of ", num_items));
  }
  return absl::OkStatus();
}

// The query users of one block and their per-shard top-k lists merged in shard order.
struct QueryBlock {
  std::vector<int64_t> global_ids;
  std::vector<std::string> user_ids;
};

// Fetches every shard's rows in steps and runs `search` on blocks of at most
// `per_block` fetched users, in shard then row order. `append` adds one fetched shard
// answer's users to the pending block and returns how many it added.
template <typename Rows>
absl::Status ForEachUserBlock(
    JobStreams* streams, int per_block,
    const std::function<const Rows&(const v1::ShardResult&)>& rows_of,
    const std::function<absl::Status(std::vector<const Rows*>&)>& search) {
  const int per_shard = std::max(1, per_block / std::max(1, streams->num_shards()));
  for (int64_t first_row = 0;; first_row += per_shard) {
    v1::JobCommand command;
    command.mutable_fetch_rows()->set_first_row(first_row);
    command.mutable_fetch_rows()->set_max_rows(per_shard);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    std::vector<const Rows*> fetched;
    for (const v1::ShardResult& result : results) {
      if (rows_of(result).global_ids_size() > 0) fetched.push_back(&rows_of(result));
    }
    if (fetched.empty()) return absl::OkStatus();
    COHORT_RETURN_IF_ERROR(search(fetched));
  }
}

// Merges the shards' top-k results of one query block into `lists`, keyed by the
// query's global id, and records the neighbours' user ids.
absl::Status MergeQueryAnswers(const std::vector<v1::ShardResult>& results,
                               const std::vector<int64_t>& query_ids, int k,
                               std::map<int64_t, std::vector<Neighbor>>* lists,
                               std::map<int64_t, std::string>* user_ids) {
  std::vector<std::vector<std::vector<Neighbor>>> per_shard;
  for (const v1::ShardResult& result : results) {
    COHORT_ASSIGN_OR_RETURN(std::vector<std::vector<Neighbor>> shard_lists,
                            FromProto(result.top_k()));
    if (shard_lists.size() != query_ids.size()) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned lists for ",
                                              shard_lists.size(), " queries of ",
                                              query_ids.size()));
    }
    for (int e = 0; e < result.top_k().ids_size(); ++e) {
      (*user_ids)[result.top_k().ids(e)] = result.top_k().user_ids(e);
    }
    per_shard.push_back(std::move(shard_lists));
  }
  for (size_t q = 0; q < query_ids.size(); ++q) {
    std::vector<std::vector<Neighbor>> candidates;
    for (auto& shard_lists : per_shard) candidates.push_back(std::move(shard_lists[q]));
    // Equal scores rank by user id, which (shard, row) ids follow only within a shard.
    (*lists)[query_ids[q]] =
        MergeTopKByKey(candidates, k, ScoreOrder::kLargerIsBetter,
                       [user_ids](int64_t id) -> std::string_view { return user_ids->at(id); });
  }
  return absl::OkStatus();
}

void StoreUserLists(const std::map<int64_t, std::vector<Neighbor>>& lists,
                    const std::map<int64_t, std::string>& user_ids, v1::NeighbourModel* model) {
  for (const auto& [global_id, list] : lists) {
    model->add_user_global_ids(global_id);
    model->add_user_ids(user_ids.at(global_id));
    AppendList(list, model);
  }
  model->set_num_users(static_cast<int64_t>(lists.size()));
}

absl::Status SparseUserNeighbours(const NeighbourJobInput& input, const ItemStatistics& stats,
                                  Progress* progress, JobStreams* streams,
                                  v1::NeighbourModel* model) {
  const int k = input.options.k();
  std::vector<double> item_means;
  if (input.options.measure() == v1::SIMILARITY_MEASURE_ADJUSTED_COSINE) {
    item_means = ComputeItemMeans(stats.totals, stats.sums);
  }
  std::map<int64_t, std::vector<Neighbor>> lists;
  std::map<int64_t, std::string> user_ids;
  int64_t done = 0;
  auto search = [&](std::vector<const v1::SparseRows*>& fetched) -> absl::Status {
    // One query command per fetch step: the fetched rows of all shards, in shard order.
    v1::JobCommand command;
    v1::SparseUserQueries* queries = command.mutable_sparse_queries();
    queries->set_measure(input.options.measure());
    queries->set_k(k);
    queries->set_shrinkage(input.options.shrinkage());
    queries->set_min_support(std::max(1, input.options.min_support()));
    queries->mutable_item_means()->Assign(item_means.begin(), item_means.end());
    v1::SparseRows* rows = queries->mutable_queries();
    rows->add_row_ptr(0);
    std::vector<int64_t> query_ids;
    for (const v1::SparseRows* part : fetched) {
      const int64_t offset = rows->item_index_size();
      for (int r = 0; r < part->global_ids_size(); ++r) {
        rows->add_global_ids(part->global_ids(r));
        rows->add_user_ids(part->user_ids(r));
        rows->add_row_ptr(offset + part->row_ptr(r + 1));
        query_ids.push_back(part->global_ids(r));
        user_ids[part->global_ids(r)] = part->user_ids(r);
      }
      rows->mutable_item_index()->MergeFrom(part->item_index());
      rows->mutable_values()->MergeFrom(part->values());
    }
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    COHORT_RETURN_IF_ERROR(MergeQueryAnswers(results, query_ids, k, &lists, &user_ids));
    done += static_cast<int64_t>(query_ids.size());
    progress->Report("queries", 0, 0, absl::StrCat(done, " users searched"));
    return absl::OkStatus();
  };
  COHORT_RETURN_IF_ERROR(ForEachUserBlock<v1::SparseRows>(
      streams, QueriesPerBlock(k),
      [](const v1::ShardResult& result) -> const v1::SparseRows& { return result.sparse_rows(); },
      search));
  StoreUserLists(lists, user_ids, model);
  return absl::OkStatus();
}

absl::StatusOr<v1::NeighbourModel> RunInteractionJob(const NeighbourJobInput& input,
                                                     Progress* progress, JobStreams* streams) {
  COHORT_ASSIGN_OR_RETURN(SimilarityMeasure measure, ToSimilarityMeasure(input.options.measure()));
  COHORT_RETURN_IF_ERROR(ToSimilarityOptions(input.options, measure).Validate());
  progress->Report("items", 0, 0, "merging the item lists");
  COHORT_ASSIGN_OR_RETURN(ItemDictionary dictionary, BuildDictionary(streams));
  COHORT_RETURN_IF_ERROR(SendDictionary(dictionary, streams));
  COHORT_ASSIGN_OR_RETURN(ItemStatistics stats,
                          CollectItemStatistics(dictionary.size(), streams));
  COHORT_LOG_INFO("job {}: {} items, {} users", input.job_id, dictionary.size(), stats.users);

  v1::NeighbourModel model;
  model.set_num_items(dictionary.size());
  model.set_num_users(stats.users);
  int64_t interactions = 0;
  double sum = 0;
  for (int32_t i = 0; i < dictionary.size(); ++i) {
    model.add_item_ids(dictionary.id(i));
    model.add_item_popularity(stats.totals[i].count);
    interactions += stats.totals[i].count;
    sum += stats.sums[i];
  }
  model.set_num_interactions(interactions);
  model.set_global_mean(interactions > 0 ? sum / static_cast<double>(interactions) : 0.0);
  model.set_min_value(interactions > 0 ? stats.min_value : 0.0);
  model.set_max_value(interactions > 0 ? stats.max_value : 0.0);
  if (interactions > 0) {
    COHORT_ASSIGN_OR_RETURN(std::vector<double> item_bias,
                            FitItemBiases(stats, model.global_mean(),
                                          ToBaselineOptions(input.options), progress, streams));
    model.mutable_item_bias()->Assign(item_bias.begin(), item_bias.end());
  }
  model.add_list_ptr(0);
  if (input.options.kind() == v1::NEIGHBOUR_KIND_ITEM_ITEM) {
    COHORT_RETURN_IF_ERROR(ItemNeighbours(input, measure, stats, dictionary.size(), progress,
                                          streams, &model));
  } else {
    COHORT_RETURN_IF_ERROR(SparseUserNeighbours(input, stats, progress, streams, &model));
    model.set_num_users(model.user_ids_size());
  }
  return model;
}

absl::StatusOr<v1::NeighbourModel> RunDenseJob(const NeighbourJobInput& input,
                                               Progress* progress, JobStreams* streams) {
  const v1::SegmentModel& segment_model = *input.segment_model;
  progress->Report("features", 0, 0, "building features with the model's transform");
  {
    // BuildFeatures reads the shards that ComputeStats recorded; the statistics
    // themselves are not needed, since the model's transform is used as it is.
    v1::JobCommand stats;
    stats.mutable_stats();
    COHORT_RETURN_IF_ERROR(streams->Execute(std::move(stats)).status());
    v1::JobCommand build;
    *build.mutable_build_features()->mutable_transform() = segment_model.transform();
    COHORT_RETURN_IF_ERROR(streams->Execute(std::move(build)).status());
  }
  {
    v1::JobCommand index;
    index.mutable_dense_index()->set_measure(input.options.measure());
    if (input.options.nprobe() > 0) {
      *index.mutable_dense_index()->mutable_centroids() = segment_model.centroids();
      index.mutable_dense_index()->set_cosine_centroids(segment_model.options().distance() ==
                                                        "cosine");
    }
    COHORT_RETURN_IF_ERROR(streams->Execute(std::move(index)).status());
  }
  const int k = input.options.k();
  std::map<int64_t, std::vector<Neighbor>> lists;
  std::map<int64_t, std::string> user_ids;
  int64_t done = 0;
  auto search = [&](std::vector<const v1::DenseRows*>& fetched) -> absl::Status {
    v1::JobCommand command;
    v1::DenseUserQueries* queries = command.mutable_dense_queries();
    queries->set_k(k);
    queries->set_nprobe(input.options.nprobe());
    v1::DenseRows* rows = queries->mutable_queries();
    std::vector<int64_t> query_ids;
    int rows_total = 0;
    for (const v1::DenseRows* part : fetched) {
      for (int r = 0; r < part->global_ids_size(); ++r) {
        rows->add_global_ids(part->global_ids(r));
        rows->add_user_ids(part->user_ids(r));
        query_ids.push_back(part->global_ids(r));
        user_ids[part->global_ids(r)] = part->user_ids(r);
      }
      rows->mutable_rows()->set_cols(part->rows().cols());
      rows->mutable_rows()->mutable_values()->MergeFrom(part->rows().values());
      rows_total += part->rows().rows();
    }
    rows->mutable_rows()->set_rows(rows_total);
    COHORT_ASSIGN_OR_RETURN(std::vector<v1::ShardResult> results,
                            streams->Execute(std::move(command)));
    COHORT_RETURN_IF_ERROR(MergeQueryAnswers(results, query_ids, k, &lists, &user_ids));
    done += static_cast<int64_t>(query_ids.size());
    progress->Report("queries", 0, 0, absl::StrCat(done, " users searched"));
    return absl::OkStatus();
  };
  v1::NeighbourModel model;
  model.add_list_ptr(0);
  COHORT_RETURN_IF_ERROR(ForEachUserBlock<v1::DenseRows>(
      streams, QueriesPerBlock(k),
      [](const v1::ShardResult& result) -> const v1::DenseRows& { return result.dense_rows(); },
      search));
  StoreUserLists(lists, user_ids, &model);
  return model;
}

}  // namespace

BaselineOptions ToBaselineOptions(const v1::NeighbourOptions& options) {
  BaselineOptions out;
  if (options.has_baseline_epochs()) out.epochs = options.baseline_epochs();
  if (options.has_baseline_reg_item()) out.reg_item = options.baseline_reg_item();
  if (options.has_baseline_reg_user()) out.reg_user = options.baseline_reg_user();
  return out;
}

double NeighbourIndex::UserBias(const UserRatings& user) const {
  if (!has_baselines() || user.items.empty()) return 0.0;
  return ComputeUserBias(user, baselines.global_mean, baselines.item_bias,
                         ToBaselineOptions(model.options()).reg_user);
}

absl::Status ValidateNeighbourOptions(const v1::NeighbourOptions& options, v1::DatasetKind kind) {
  if (options.kind() != v1::NEIGHBOUR_KIND_ITEM_ITEM &&
      options.kind() != v1::NEIGHBOUR_KIND_USER_USER) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.kind = ", v1::NeighbourKind_Name(options.kind()),
        " is invalid; use NEIGHBOUR_KIND_ITEM_ITEM or NEIGHBOUR_KIND_USER_USER"));
  }
  if (!v1::SimilarityMeasure_IsValid(options.measure())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.measure = ", static_cast<int>(options.measure()),
        " is unknown; use COSINE, PEARSON, ADJUSTED_COSINE, JACCARD or MSD"));
  }
  if (options.k() < 1 || options.k() > kMaxNeighbourK) {
    return absl::InvalidArgumentError(absl::StrCat("options.k = ", options.k(),
                                                   " is invalid; use 1..", kMaxNeighbourK));
  }
  if (!std::isfinite(options.shrinkage()) || options.shrinkage() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.shrinkage = ", options.shrinkage(),
                                                   " is invalid; use a finite number >= 0"));
  }
  if (options.min_support() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.min_support = ",
                                                   options.min_support(),
                                                   " is invalid; use 0 (meaning 1) or more"));
  }
  if (options.nprobe() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.nprobe = ", options.nprobe(),
                                                   " is invalid; use 0 (exact) or more"));
  }
  if (options.has_baseline_epochs() &&
      (options.baseline_epochs() < 1 || options.baseline_epochs() > kMaxBaselineEpochs)) {
    return absl::InvalidArgumentError(absl::StrCat("options.baseline_epochs = ",
                                                   options.baseline_epochs(),
                                                   " is invalid; use 1..", kMaxBaselineEpochs));
  }
  for (const auto& [name, has, value] :
       {std::tuple<const char*, bool, double>{"baseline_reg_item", options.has_baseline_reg_item(),
                                              options.baseline_reg_item()},
        {"baseline_reg_user", options.has_baseline_reg_user(), options.baseline_reg_user()}}) {
    if (has && !(std::isfinite(value) && value >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.", name, " = ", value, " is invalid; use a finite number >= 0"));
    }
  }
  const bool baseline_set = options.has_baseline_epochs() || options.has_baseline_reg_item() ||
                            options.has_baseline_reg_user();
  if (kind == v1::DATASET_KIND_INTERACTIONS) {
    if (!options.segment_model_id().empty() || options.nprobe() != 0) {
      return absl::InvalidArgumentError(
          "options.segment_model_id and options.nprobe apply to user–user neighbours on "
          "feature vectors (USERS or TRANSACTIONS datasets), not to interactions");
    }
    return absl::OkStatus();
  }
  if (baseline_set) {
    return absl::InvalidArgumentError(
        "options.baseline_epochs, baseline_reg_item and baseline_reg_user apply to "
        "interactions, not to feature vectors");
  }
  if (options.kind() != v1::NEIGHBOUR_KIND_USER_USER) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.kind = ", v1::NeighbourKind_Name(options.kind()), " needs an INTERACTIONS ",
        "dataset; a ", v1::DatasetKind_Name(kind), " dataset only takes USER_USER"));
  }
  if (options.measure() != v1::SIMILARITY_MEASURE_UNSPECIFIED &&
      options.measure() != v1::SIMILARITY_MEASURE_COSINE &&
      options.measure() != v1::SIMILARITY_MEASURE_PEARSON) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.measure = ", v1::SimilarityMeasure_Name(options.measure()),
        " does not apply to feature vectors; use COSINE or PEARSON"));
  }
  if (options.segment_model_id().empty()) {
    return absl::InvalidArgumentError(
        "options.segment_model_id is empty; user–user neighbours on feature vectors need "
        "the segment model whose transform builds the vectors");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::NeighbourModel> RunNeighbourJob(const NeighbourJobInput& input,
                                                   JobStreams* streams) {
  Progress progress(input);
  absl::StatusOr<v1::NeighbourModel> model =
      input.kind == v1::DATASET_KIND_INTERACTIONS ? RunInteractionJob(input, &progress, streams)
                                                  : RunDenseJob(input, &progress, streams);
  if (!model.ok()) return model.status();
  model->set_model_id(input.job_id);
  model->set_job_id(input.job_id);
  model->set_dataset_id(input.dataset_id);
  *model->mutable_options() = input.options;
  model->set_num_shards(input.num_shards);
  return model;
}

absl::StatusOr<std::shared_ptr<const NeighbourIndex>> IndexNeighbourModel(
    v1::NeighbourModel model) {
  auto index = std::make_shared<NeighbourIndex>();
  const bool items = model.options().kind() == v1::NEIGHBOUR_KIND_ITEM_ITEM;
  const int64_t owners = items ? model.item_ids_size() : model.user_ids_size();
  if (model.list_ptr_size() != owners + 1 ||
      model.neighbour_ids_size() != model.scores_size() ||
      model.list_ptr(owners) != model.neighbour_ids_size() ||
      (!items && model.user_global_ids_size() != model.user_ids_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "neighbour model ", model.model_id(), " has ", model.list_ptr_size(),
        " list offsets for ", owners, " lists; the model is damaged"));
  }
  index->lists.resize(owners);
  for (int64_t i = 0; i < owners; ++i) {
    for (int64_t e = model.list_ptr(i); e < model.list_ptr(i + 1); ++e) {
      index->lists[i].push_back(Neighbor{model.neighbour_ids(e), model.scores(e)});
    }
  }
  index->items = ItemDictionary(
      std::vector<std::string>(model.item_ids().begin(), model.item_ids().end()));
  for (int64_t i = 0; i < model.user_ids_size(); ++i) {
    index->user_position[model.user_ids(i)] = i;
    index->global_position[model.user_global_ids(i)] = i;
  }
  if (model.item_bias_size() > 0) {
    if (model.item_bias_size() != model.item_ids_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "neighbour model ", model.model_id(), " has ", model.item_bias_size(),
          " item biases for ", model.item_ids_size(), " items; the model is damaged"));
    }
    index->baselines.global_mean = model.global_mean();
    index->baselines.item_bias.assign(model.item_bias().begin(), model.item_bias().end());
  }
  index->model = std::move(model);
  return std::shared_ptr<const NeighbourIndex>(std::move(index));
}

}  // namespace cohort
