#include "core/recommend.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

// Index of `item` in the user's sorted items, or −1.
int64_t FindRating(const UserRatings& user, int32_t item) {
  const auto it = std::lower_bound(user.items.begin(), user.items.end(), item);
  if (it == user.items.end() || *it != item) return -1;
  return it - user.items.begin();
}

double ItemBias(const Baselines& baselines, int32_t item) {
  if (item < 0 || static_cast<size_t>(item) >= baselines.item_bias.size()) return 0.0;
  return baselines.item_bias[item];
}

}  // namespace

// ----------------------------------------------------------------------------------------
// Baselines.

absl::Status BaselineOptions::Validate() const {
  if (epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("epochs is ", epochs, "; it must be at least 1"));
  }
  if (!std::isfinite(reg_item) || reg_item < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reg_item is ", reg_item, "; it must be a finite number >= 0"));
  }
  if (!std::isfinite(reg_user) || reg_user < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reg_user is ", reg_user, "; it must be a finite number >= 0"));
  }
  return absl::OkStatus();
}

ItemBiasSums ComputeItemBiasSums(const InteractionMatrix& shard, double global_mean,
                                 const std::vector<double>& user_bias) {
  ItemBiasSums sums;
  sums.residual_sum.assign(static_cast<size_t>(shard.num_items), 0.0);
  sums.count.assign(static_cast<size_t>(shard.num_items), 0);
  for (int64_t r = 0; r < shard.num_users(); ++r) {
    for (int64_t e = shard.row_ptr[r]; e < shard.row_ptr[r + 1]; ++e) {
      const int32_t item = shard.item_index[e];
      sums.residual_sum[item] += shard.values[e] - global_mean - user_bias[r];
      ++sums.count[item];
    }
  }
  return sums;
}

namespace {

// b_u = Σ (r_ui − μ − b_i) / (reg_user + |I_u|) over one row's `count` entries.
double UserBiasOfRow(const int32_t* items, const float* values, int64_t count,
                     double global_mean, const std::vector<double>& item_bias,
                     double reg_user) {
  double residual = 0.0;
  for (int64_t e = 0; e < count; ++e) {
    residual += values[e] - global_mean - item_bias[items[e]];
  }
  return residual / (reg_user + static_cast<double>(count));
}

}  // namespace

std::vector<double> ComputeUserBiases(const InteractionMatrix& shard, double global_mean,
                                      const std::vector<double>& item_bias, double reg_user) {
  std::vector<double> user_bias(static_cast<size_t>(shard.num_users()), 0.0);
  for (int64_t r = 0; r < shard.num_users(); ++r) {
    const int64_t begin = shard.row_ptr[r];
    user_bias[r] = UserBiasOfRow(shard.item_index.data() + begin, shard.values.data() + begin,
                                 shard.row_ptr[r + 1] - begin, global_mean, item_bias, reg_user);
  }
  return user_bias;
}

double ComputeUserBias(const UserRatings& user, double global_mean,
                       const std::vector<double>& item_bias, double reg_user) {
  return UserBiasOfRow(user.items.data(), user.values.data(),
                       static_cast<int64_t>(user.items.size()), global_mean, item_bias, reg_user);
}

absl::StatusOr<Baselines> FitBaselines(const std::vector<InteractionMatrix>& shards,
                                       const BaselineOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (shards.empty()) return absl::InvalidArgumentError("no shards given");
  if (absl::Status status = CheckSameItemCount(shards); !status.ok()) return status;

  double sum = 0.0;
  int64_t count = 0;
  for (const InteractionMatrix& shard : shards) {
    for (float value : shard.values) sum += value;
    count += shard.num_entries();
  }
  if (count == 0) {
    return absl::InvalidArgumentError("the shards have no interactions, so no baseline can be fitted");
  }

  const int32_t num_items = shards.front().num_items;
  Baselines baselines;
  baselines.global_mean = sum / static_cast<double>(count);
  baselines.item_bias.assign(static_cast<size_t>(num_items), 0.0);
  for (const InteractionMatrix& shard : shards) {
    baselines.user_bias.emplace_back(static_cast<size_t>(shard.num_users()), 0.0);
  }
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    std::vector<double> residual_sum(static_cast<size_t>(num_items), 0.0);
    std::vector<int64_t> item_count(static_cast<size_t>(num_items), 0);
    for (size_t s = 0; s < shards.size(); ++s) {
      const ItemBiasSums partial =
          ComputeItemBiasSums(shards[s], baselines.global_mean, baselines.user_bias[s]);
      for (int32_t i = 0; i < num_items; ++i) {
        residual_sum[i] += partial.residual_sum[i];
        item_count[i] += partial.count[i];
      }
    }
    for (int32_t i = 0; i < num_items; ++i) {
      baselines.item_bias[i] =
          residual_sum[i] / (options.reg_item + static_cast<double>(item_count[i]));
    }
    for (size_t s = 0; s < shards.size(); ++s) {
      baselines.user_bias[s] = ComputeUserBiases(shards[s], baselines.global_mean,
                                                 baselines.item_bias, options.reg_user);
    }
  }
  return baselines;
}

// ----------------------------------------------------------------------------------------
// Rating prediction.

absl::Status PredictionOptions::Validate() const {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; it must be at least 1"));
  if (min_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("min_k is ", min_k, "; it must be >= 0"));
  }
  if (!std::isfinite(min_rating) || !std::isfinite(max_rating) || min_rating > max_rating) {
    return absl::InvalidArgumentError(absl::StrCat("rating range [", min_rating, ", ", max_rating,
                                                   "] is empty or not finite"));
  }
  return absl::OkStatus();
}

UserRatings RowRatings(const InteractionMatrix& shard, int64_t row) {
  UserRatings ratings;
  const int64_t begin = shard.row_ptr[row];
  const int64_t end = shard.row_ptr[row + 1];
  ratings.items.assign(shard.item_index.begin() + begin, shard.item_index.begin() + end);
  ratings.values.assign(shard.values.begin() + begin, shard.values.begin() + end);
  return ratings;
}

double PredictItemBased(const UserRatings& user, double user_bias, int32_t item,
                        const Baselines& baselines,
                        const std::vector<std::vector<Neighbor>>& item_neighbors,
                        const PredictionOptions& options) {
  const double baseline_ui = baselines.global_mean + user_bias + ItemBias(baselines, item);
  double weighted = 0.0;
  double similarity_sum = 0.0;
  int used = 0;
  if (item >= 0 && static_cast<size_t>(item) < item_neighbors.size()) {
    int rated = 0;
    for (const Neighbor& neighbor : item_neighbors[item]) {
      if (rated == options.k) break;
      const int64_t position = FindRating(user, static_cast<int32_t>(neighbor.id));
      if (position < 0) continue;
      ++rated;
      if (!(neighbor.score > 0)) continue;
      const double baseline_uj =
          baselines.global_mean + user_bias + ItemBias(baselines, static_cast<int32_t>(neighbor.id));
      weighted += neighbor.score * (user.values[position] - baseline_uj);
      similarity_sum += neighbor.score;
      ++used;
    }
  }
  double estimate = baseline_ui;
  if (used >= options.min_k && similarity_sum > 0) estimate += weighted / similarity_sum;
  return std::clamp(estimate, options.min_rating, options.max_rating);
}

namespace {

// Σ s (r − b) / Σ s over the first k neighbours with s > 0, where b is the neighbour's
// baseline when `around_baseline` and 0 otherwise. Returns false with fewer than min_k
// such neighbours or a zero similarity sum.
bool WeightedNeighborMean(const std::vector<RatedNeighbor>& neighbors, bool around_baseline,
                          const PredictionOptions& options, double* mean) {
  double weighted = 0.0;
  double similarity_sum = 0.0;
  int used = 0;
  for (size_t i = 0; i < neighbors.size() && static_cast<int>(i) < options.k; ++i) {
    if (!(neighbors[i].similarity > 0)) continue;
    const double offset = around_baseline ? neighbors[i].baseline : 0.0;
    weighted += neighbors[i].similarity * (neighbors[i].rating - offset);
    similarity_sum += neighbors[i].similarity;
    ++used;
  }
  if (used < options.min_k || !(similarity_sum > 0)) return false;
  *mean = weighted / similarity_sum;
  return true;
}

}  // namespace

double PredictUserBasic(const std::vector<RatedNeighbor>& neighbors, double global_mean,
                        const PredictionOptions& options) {
  double estimate = global_mean;
  WeightedNeighborMean(neighbors, false, options, &estimate);
  return std::clamp(estimate, options.min_rating, options.max_rating);
}

double PredictUserBaseline(const std::vector<RatedNeighbor>& neighbors, double baseline_ui,
                           const PredictionOptions& options) {
  double deviation = 0.0;
  WeightedNeighborMean(neighbors, true, options, &deviation);
  return std::clamp(baseline_ui + deviation, options.min_rating, options.max_rating);
}

// ----------------------------------------------------------------------------------------
// Top-N recommendations.

absl::Status RecommendOptions::Validate(int32_t num_items) const {
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("n is ", n, "; it must be at least 1"));
  for (int32_t item : excluded_items) {
    if (item < 0 || item >= num_items) {
      return absl::InvalidArgumentError(absl::StrCat(
          "excluded item index ", item, " is outside the catalogue [0, ", num_items, ")"));
    }
  }
  if (!(cf_weight >= 0 && cf_weight <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cf_weight is ", cf_weight, "; it must be in [0, 1]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RecommendationList> RankRecommendations(const std::vector<double>& scores,
                                                       const UserRatings& seen,
                                                       const std::vector<int64_t>& popularity,
                                                       const RecommendOptions& options) {
  const int32_t num_items = static_cast<int32_t>(scores.size());
  if (absl::Status status = options.Validate(num_items); !status.ok()) return status;
  if (popularity.size() != scores.size()) {
    return absl::InvalidArgumentError(absl::StrCat("popularity has ", popularity.size(),
                                                   " items but scores has ", scores.size()));
  }
  for (int32_t item : seen.items) {
    if (item < 0 || item >= num_items) {
      return absl::InvalidArgumentError(
          absl::StrCat("seen item index ", item, " is outside the catalogue [0, ", num_items, ")"));
    }
  }

  std::vector<uint8_t> blocked(static_cast<size_t>(num_items), 0);
  for (int32_t item : seen.items) blocked[item] = 1;
  for (int32_t item : options.excluded_items) blocked[item] = 1;

  std::vector<int32_t> scored;
  std::vector<int32_t> unscored;
  for (int32_t i = 0; i < num_items; ++i) {
    if (blocked[i]) continue;
    if (scores[i] > 0) {
      scored.push_back(i);
    } else {
      unscored.push_back(i);
    }
  }
  const int64_t eligible = static_cast<int64_t>(scored.size() + unscored.size());
  const int64_t count = std::min<int64_t>(options.n, eligible);

  RecommendationList list;
  list.fewer_than_requested = eligible < options.n;
  const int64_t from_scores = std::min<int64_t>(count, static_cast<int64_t>(scored.size()));
  std::partial_sort(scored.begin(), scored.begin() + from_scores, scored.end(),
                    [&](int32_t a, int32_t b) {
                      return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
                    });
  for (int64_t r = 0; r < from_scores; ++r) {
    list.items.push_back({scored[r], static_cast<float>(scores[scored[r]]), true});
  }
  const int64_t from_popularity = count - from_scores;
  std::partial_sort(unscored.begin(), unscored.begin() + from_popularity, unscored.end(),
                    [&](int32_t a, int32_t b) {
                      return popularity[a] != popularity[b] ? popularity[a] > popularity[b] : a < b;
                    });
  for (int64_t r = 0; r < from_popularity; ++r) {
    list.items.push_back({unscored[r], 0.0f, false});
  }
  return list;
}

std::vector<double> ItemBasedScores(const UserRatings& user,
                                    const std::vector<std::vector<Neighbor>>& item_neighbors,
                                    int32_t num_items) {
  std::vector<double> scores(static_cast<size_t>(num_items), 0.0);
  for (size_t s = 0; s < user.items.size(); ++s) {
    const int32_t seen = user.items[s];
    if (seen < 0 || static_cast<size_t>(seen) >= item_neighbors.size()) continue;
    for (const Neighbor& neighbor : item_neighbors[seen]) {
      if (neighbor.id < 0 || neighbor.id >= num_items) continue;
      scores[neighbor.id] += static_cast<double>(neighbor.score) * user.values[s];
    }
  }
  return scores;
}

std::vector<double> UserBasedScoresInShard(const std::vector<Neighbor>& user_neighbors,
                                           const InteractionMatrix& shard) {
  std::vector<double> scores(static_cast<size_t>(shard.num_items), 0.0);
  for (const Neighbor& neighbor : user_neighbors) {
    if (ShardOfGlobalUserId(neighbor.id) != shard.shard_id) continue;
    const int64_t row = RowOfGlobalUserId(neighbor.id);
    if (row >= shard.num_users()) continue;
    for (int64_t e = shard.row_ptr[row]; e < shard.row_ptr[row + 1]; ++e) {
      scores[shard.item_index[e]] += static_cast<double>(neighbor.score) * shard.values[e];
    }
  }
  return scores;
}

absl::StatusOr<std::vector<double>> ContentScores(const UserRatings& user,
                                                  const MatrixXfR& item_features) {
  const int64_t num_items = item_features.rows();
  for (int32_t item : user.items) {
    if (item < 0 || item >= num_items) {
      return absl::InvalidArgumentError(absl::StrCat(
          "seen item index ", item, " has no row in item_features (", num_items, " rows)"));
    }
  }
  if (!item_features.allFinite()) {
    return absl::InvalidArgumentError(
        "item_features contains NaN or infinite values; fix or impute them first");
  }
  const Eigen::VectorXd norms = item_features.cast<double>().rowwise().norm();
  Eigen::VectorXd profile = Eigen::VectorXd::Zero(item_features.cols());
  for (size_t s = 0; s < user.items.size(); ++s) {
    const int32_t item = user.items[s];
    if (norms[item] > 0) {
      profile += (user.values[s] / norms[item]) * item_features.row(item).cast<double>().transpose();
    }
  }
  std::vector<double> scores(static_cast<size_t>(num_items), 0.0);
  const double profile_norm = profile.norm();
  if (!(profile_norm > 0)) return scores;
  for (int64_t i = 0; i < num_items; ++i) {
    if (!(norms[i] > 0)) continue;
    const double cosine =
        item_features.row(i).cast<double>().dot(profile.transpose()) / (norms[i] * profile_norm);
    scores[i] = std::clamp(cosine, -1.0, 1.0);
  }
  return scores;
}

absl::StatusOr<std::vector<double>> HybridScores(const std::vector<double>& cf_scores,
                                                 const std::vector<double>& content_scores,
                                                 double cf_weight) {
  if (cf_scores.size() != content_scores.size()) {
    return absl::InvalidArgumentError(absl::StrCat("cf_scores has ", cf_scores.size(),
                                                   " items but content_scores has ",
                                                   content_scores.size()));
  }
  if (!(cf_weight >= 0 && cf_weight <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cf_weight is ", cf_weight, "; it must be in [0, 1]"));
  }
  double max_cf = 0.0;
  for (double score : cf_scores) {
    if (score > max_cf) max_cf = score;
  }
  std::vector<double> scores(cf_scores.size(), 0.0);
  for (size_t i = 0; i < cf_scores.size(); ++i) {
    const double cf = max_cf > 0 && cf_scores[i] > 0 ? cf_scores[i] / max_cf : 0.0;
    const double content = std::isfinite(content_scores[i]) ? content_scores[i] : 0.0;
    scores[i] = cf_weight * cf + (1.0 - cf_weight) * content;
  }
  return scores;
}

std::vector<int64_t> ItemPopularity(const InteractionMatrix& shard) {
  std::vector<int64_t> counts(static_cast<size_t>(shard.num_items), 0);
  for (int32_t item : shard.item_index) ++counts[item];
  return counts;
}

}  // namespace cohort
