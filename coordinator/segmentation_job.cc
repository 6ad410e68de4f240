#include "coordinator/segmentation_job.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "coordinator/job_events.h"
#include "core/bisecting.h"
#include "core/cluster_metrics.h"
#include "core/features.h"
#include "core/log.h"
#include "core/quantile_sketch.h"
#include "core/report.h"
#include "core/segment_summary.h"
#include "core/status_macros.h"
#include "core/transactions.h"
#include "proto/convert.h"

namespace cohort {
namespace {

constexpr int kDefaultSampleSize = 2000;
constexpr int kMaxSampleSize = 20000;
// Seed of the user sample; fixed so that reports of the same data are comparable.
constexpr uint64_t kSampleSeed = 20240611;

class EventSink : public JobEvents {
 public:
  EventSink(const SegmentationJobInput& input, int shards)
      : JobEvents(input.job_id, input.on_event, shards) {}

  // Forwards K-means progress; `prefix` names the sweep step or the split.
  void KMeans(const KMeansProgress& progress, const KMeansOptions& options,
              const std::string& prefix) {
    v1::JobEvent out;
    out.set_phase(progress.phase);
    out.set_run(progress.run);
    out.set_iteration(progress.iteration);
    out.set_max_iter(options.max_iter);
    out.set_centers_chosen(progress.centers_chosen);
    out.set_k(options.k);
    out.set_inertia(progress.inertia);
    out.set_max_shift(progress.max_shift);
    out.set_message(prefix);
    if (progress.phase != "init") CountPass();
    Emit(out, progress.phase == "final");
  }
};

struct PreparedFeatures {
  FeatureTransform transform;
  FeatureStats stats;
  std::vector<ShardSum> shard_rows;  // rows per shard, shard order
};

// Statistics per shard, merged in shard order, one fitted transform, and the feature
// matrices built on the workers.
absl::StatusOr<PreparedFeatures> PrepareFeatures(const SegmentationJobInput& input,
                                                 JobStreams* streams, EventSink& events) {
  const FeatureOptions feature_options = ToFeatureOptions(input.options, input.kind);
  events.Message("features", "computing feature statistics");
  v1::JobCommand stats_command;
  stats_command.mutable_stats();
  for (const std::string& name : feature_options.log1p_columns) {
    stats_command.mutable_stats()->add_log1p_columns(name);
  }
  COHORT_ASSIGN_OR_RETURN(auto stats_results, streams->Execute(std::move(stats_command)));
  PreparedFeatures prepared;
  for (const v1::ShardResult& result : stats_results) {
    prepared.stats.Merge(FromProto(result.stats()));
    prepared.shard_rows.push_back(ShardSum{result.shard_id(), result.rows(), 0});
  }
  if (prepared.stats.rows != input.expected_users) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the workers hold ", prepared.stats.rows, " users of dataset '", input.dataset_id,
        "' but it has ", input.expected_users,
        "; a worker was replaced or reloaded, so load the data into a new dataset"));
  }
  events.set_users(prepared.stats.rows);
  COHORT_ASSIGN_OR_RETURN(prepared.transform,
                          FitFeatureTransform(input.schema, prepared.stats, feature_options));
  COHORT_LOG_INFO("job {}: {} users, {} features", input.job_id, prepared.stats.rows,
                  prepared.transform.dim());

  v1::JobCommand build_command;
  ToProto(prepared.transform, build_command.mutable_build_features()->mutable_transform());
  COHORT_RETURN_IF_ERROR(streams->Execute(std::move(build_command)).status());
  events.Message("features", absl::StrCat("built ", prepared.transform.dim(), " features for ",
                                          prepared.stats.rows, " users"));
  return prepared;
}

// The two metric passes over the workers' current labels.
absl::StatusOr<ClusterMetrics> ComputeMetrics(JobStreams* streams) {
  v1::JobCommand first;
  first.mutable_metrics();
  COHORT_ASSIGN_OR_RETURN(auto aggregate_results, streams->Execute(std::move(first)));
  ClusterAggregates merged;
  for (const v1::ShardResult& result : aggregate_results) {
    COHORT_ASSIGN_OR_RETURN(ClusterAggregates shard, FromProto(result.aggregates()));
    merged.Merge(shard);
  }
  v1::JobCommand second;
  ToProto(merged, second.mutable_metrics()->mutable_merged());
  COHORT_ASSIGN_OR_RETURN(auto spread_results, streams->Execute(std::move(second)));
  SpreadPartial spread;
  for (const v1::ShardResult& result : spread_results) spread.Merge(FromProto(result.spread()));
  return FinishClusterMetrics(merged, spread);
}

// A seeded sample of users with their labels, split over the shards in proportion to
// their rows (largest remainders, ties to the lower shard id).
absl::StatusOr<std::pair<MatrixXfR, std::vector<int32_t>>> SampleUsers(
    JobStreams* streams, const std::vector<ShardSum>& shard_rows, int64_t sample_size, int d) {
  int64_t total = 0;
  for (const ShardSum& shard : shard_rows) total += shard.rows;
  const int64_t m = std::min(sample_size, total);
  v1::JobCommand command;
  command.mutable_sample()->set_seed(kSampleSeed);
  std::vector<std::pair<double, int>> remainders;
  int64_t assigned = 0;
  std::vector<int64_t> quotas(shard_rows.size(), 0);
  for (size_t i = 0; i < shard_rows.size() && total > 0; ++i) {
    const double exact = static_cast<double>(m) * shard_rows[i].rows / static_cast<double>(total);
    quotas[i] = static_cast<int64_t>(std::floor(exact));
    assigned += quotas[i];
    remainders.push_back({-(exact - quotas[i]), static_cast<int>(i)});
  }
  std::sort(remainders.begin(), remainders.end());
  for (size_t r = 0; r < remainders.size() && assigned < m; ++r, ++assigned) {
    ++quotas[remainders[r].second];
  }
  for (size_t i = 0; i < shard_rows.size(); ++i) {
    v1::SampleRows::Quota* quota = command.mutable_sample()->add_quotas();
    quota->set_shard_id(shard_rows[i].shard_id);
    quota->set_count(quotas[i]);
  }
  COHORT_ASSIGN_OR_RETURN(auto results, streams->Execute(std::move(command)));
  MatrixXfR sample(m, d);
  std::vector<int32_t> labels;
  int64_t row = 0;
  for (const v1::ShardResult& result : results) {
    const v1::SampleResult& part = result.sample();
    const int64_t rows = part.labels_size();
    if (part.d() != d || part.values_size() != rows * d || row + rows > m) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                              " returned a malformed sample"));
    }
    std::copy(part.values().begin(), part.values().end(), sample.row(row).data());
    labels.insert(labels.end(), part.labels().begin(), part.labels().end());
    row += rows;
  }
  sample.conservativeResize(row, d);
  return std::make_pair(std::move(sample), std::move(labels));
}

void FillModelSegments(const std::vector<SegmentSummary>& summaries, v1::SegmentModel* model) {
  for (const SegmentSummary& summary : summaries) {
    v1::Segment* segment = model->add_segments();
    segment->set_index(summary.index);
    segment->set_size(summary.size);
    segment->set_share(summary.share);
    for (const NumericSegmentStat& stat : summary.numeric) {
      v1::NumericSummary* out = segment->add_numeric();
      out->set_column(stat.column);
      out->set_mean(stat.mean);
      out->set_overall_mean(stat.overall_mean);
      out->set_z(stat.z);
      out->set_min(stat.min);
      out->set_max(stat.max);
      out->set_missing(stat.missing);
      out->set_median(stat.median);
    }
    for (const CategoricalSegmentStat& stat : summary.categorical) {
      v1::CategoricalSummary* out = segment->add_categorical();
      out->set_column(stat.column);
      for (const CategoryShareStat& share : stat.top) {
        v1::CategoryShare* top = out->add_top();
        top->set_value(share.value);
        top->set_share(share.share);
        top->set_overall_share(share.overall_share);
      }
    }
    for (const std::string& text : summary.distinguishing) segment->add_distinguishing(text);
    segment->set_description(summary.description);
  }
}

int SampleSize(const v1::SegmentationOptions& options) {
  return options.sample_size() == 0 ? kDefaultSampleSize : options.sample_size();
}

}  // namespace

FeatureOptions ToFeatureOptions(const v1::SegmentationOptions& options, v1::DatasetKind kind) {
  FeatureOptions features;
  if (options.max_categories() != 0) features.max_categories = options.max_categories();
  features.log1p_columns.assign(options.log1p_columns().begin(), options.log1p_columns().end());
  if (features.log1p_columns.empty() && kind == v1::DATASET_KIND_TRANSACTIONS &&
      !options.raw_numeric()) {
    features.log1p_columns = TransactionFeatureSchema().NumericNames();
  }
  return features;
}

absl::StatusOr<KMeansOptions> ToKMeansOptions(const v1::SegmentationOptions& options) {
  KMeansOptions out;
  out.k = options.k();
  if (options.max_iter() != 0) out.max_iter = options.max_iter();
  if (options.has_tol()) out.tol = options.tol();
  if (options.has_seed()) out.seed = options.seed();
  if (options.n_init() != 0) out.n_init = options.n_init();

  if (options.init().empty() || options.init() == "kmeans++") {
    out.init = KMeansInit::kKMeansPlusPlus;
  } else if (options.init() == "kmeans||") {
    out.init = KMeansInit::kKMeansParallel;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "init = '", options.init(), "' is invalid; use 'kmeans++' or 'kmeans||'"));
  }
  if (options.oversampling() != 0) out.oversampling = options.oversampling();
  if (options.init_rounds() != 0) out.init_rounds = options.init_rounds();

  if (options.algorithm().empty() || options.algorithm() == "kmeans" ||
      options.algorithm() == "bisecting") {
    out.algorithm = KMeansAlgorithm::kLloyd;
  } else if (options.algorithm() == "minibatch") {
    out.algorithm = KMeansAlgorithm::kMiniBatch;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("algorithm = '", options.algorithm(),
                     "' is invalid; use 'kmeans', 'minibatch' or 'bisecting'"));
  }
  if (options.batch_size() != 0) out.batch_size = options.batch_size();
  if (options.max_no_improvement() != 0) out.max_no_improvement = options.max_no_improvement();
  if (options.reassignment_ratio() != 0) out.reassignment_ratio = options.reassignment_ratio();

  if (options.distance().empty() || options.distance() == "sqeuclidean") {
    out.distance = KMeansDistance::kSquaredEuclidean;
  } else if (options.distance() == "cosine") {
    out.distance = KMeansDistance::kCosine;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "distance = '", options.distance(), "' is invalid; use 'sqeuclidean' or 'cosine'"));
  }
  if (options.algorithm() == "bisecting" && out.distance == KMeansDistance::kCosine) {
    return absl::InvalidArgumentError(
        "distance = 'cosine' is invalid with algorithm 'bisecting', which supports only "
        "'sqeuclidean'; use algorithm 'kmeans' or 'minibatch' for the cosine distance");
  }

  COHORT_RETURN_IF_ERROR(out.Validate());
  COHORT_RETURN_IF_ERROR(ToFeatureOptions(options, v1::DATASET_KIND_USERS).Validate());
  if (options.algorithm() == "bisecting") {
    COHORT_RETURN_IF_ERROR(ToBisectingOptions(options, out).status());
  }
  if (options.sample_size() < 0 || options.sample_size() > kMaxSampleSize) {
    return absl::InvalidArgumentError(absl::StrCat("sample_size = ", options.sample_size(),
                                                   " is invalid; use 0..", kMaxSampleSize));
  }
  return out;
}

absl::StatusOr<BisectingOptions> ToBisectingOptions(const v1::SegmentationOptions& options,
                                                    const KMeansOptions& kmeans) {
  BisectingOptions bisecting;
  bisecting.k = kmeans.k;
  bisecting.split = kmeans;
  if (options.split_rule().empty() || options.split_rule() == "largest") {
    bisecting.split_rule = SplitRule::kLargest;
  } else if (options.split_rule() == "highest_inertia") {
    bisecting.split_rule = SplitRule::kHighestInertia;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("split_rule = '", options.split_rule(),
                     "' is invalid; use 'largest' or 'highest_inertia'"));
  }
  if (options.min_divisible_size() != 0) {
    bisecting.min_divisible_size = options.min_divisible_size();
  }
  COHORT_RETURN_IF_ERROR(bisecting.Validate());
  return bisecting;
}

absl::StatusOr<v1::SegmentModel> RunSegmentationJob(const SegmentationJobInput& input,
                                                    JobStreams* streams) {
  COHORT_ASSIGN_OR_RETURN(KMeansOptions kmeans_options, ToKMeansOptions(input.options));
  EventSink events(input, streams->num_shards());
  COHORT_ASSIGN_OR_RETURN(PreparedFeatures prepared, PrepareFeatures(input, streams, events));
  const FeatureTransform& transform = prepared.transform;
  const int d = transform.dim();

  v1::SegmentModel model;
  MatrixXfR centroids;
  v1::JobCommand store_command;
  if (input.options.algorithm() == "bisecting") {
    COHORT_ASSIGN_OR_RETURN(BisectingOptions options,
                            ToBisectingOptions(input.options, kmeans_options));
    GrpcBisectingBackend backend(streams, d);
    auto on_progress = [&](const BisectingProgress& progress) {
      events.KMeans(progress.split, options.split,
                    absl::StrCat("splitting node ", progress.splitting_node, " (", progress.leaves,
                                 " of ", options.k, " segments)"));
    };
    COHORT_ASSIGN_OR_RETURN(BisectingResult tree, RunBisectingKMeans(backend, options, on_progress));
    centroids = tree.leaf_means;
    for (const BisectingNode& node : tree.nodes) {
      store_command.mutable_store_assignments()->add_node_segments(node.segment);
      v1::SegmentTreeNode* out = model.add_tree();
      out->set_id(node.id);
      out->set_parent(node.parent);
      out->set_left(node.left);
      out->set_right(node.right);
      out->set_depth(node.depth);
      out->set_size(node.size);
      out->set_weight(node.weight);
      out->set_inertia(node.inertia);
      out->set_segment(node.segment);
      if (node.left >= 0) ToProto(node.split_centroids, out->mutable_split_centroids());
    }
    model.set_requested_k(tree.requested_k);
    model.set_effective_k(tree.leaves);
    model.set_fewer_distinct_points(false);
    model.set_stop_reason(tree.stop_reason);
    model.set_converged(true);
  } else {
    GrpcKMeansBackend backend(streams, d);
    auto on_progress = [&](const KMeansProgress& progress) {
      events.KMeans(progress, kmeans_options, "");
    };
    COHORT_ASSIGN_OR_RETURN(KMeansResult result, RunKMeans(backend, kmeans_options, on_progress));
    COHORT_LOG_INFO("job {}: k-means done, effective k {}, inertia {}, {} iterations, converged {}",
                    input.job_id, result.effective_k, result.inertia, result.iterations,
                    result.converged);
    centroids = result.centroids;
    model.set_requested_k(result.requested_k);
    model.set_effective_k(result.effective_k);
    model.set_fewer_distinct_points(result.fewer_distinct_points);
    model.set_iterations(result.iterations);
    model.set_converged(result.converged);
    model.set_data_scale(result.data_scale);
    model.set_reseeded_clusters(result.reseeded_clusters);
  }
  const int k = static_cast<int>(centroids.rows());

  // Final assignment of every user; raw-value statistics and sketches per segment come
  // back with it, merged in shard order for the summaries.
  events.Message("summaries", "assigning users and summarizing segments");
  ToProto(centroids, store_command.mutable_store_assignments()->mutable_centroids());
  COHORT_ASSIGN_OR_RETURN(auto stored, streams->Execute(std::move(store_command)));
  std::vector<FeatureStats> segment_stats(k);
  std::vector<std::vector<QuantileSketch>> sketches(
      k, std::vector<QuantileSketch>(transform.numeric.size()));
  for (const v1::ShardResult& shard : stored) {
    if (shard.segment_stats_size() == 0) continue;  // a shard without rows
    if (shard.segment_stats_size() != k) {
      return absl::InternalError(absl::StrCat("shard ", shard.shard_id(), " returned ",
                                              shard.segment_stats_size(),
                                              " segment statistics for ", k, " segments"));
    }
    for (int s = 0; s < k; ++s) {
      const v1::FeatureStatsProto& part = shard.segment_stats(s);
      segment_stats[s].Merge(FromProto(part));
      for (int c = 0; c < part.numeric_sketches_size() && c < static_cast<int>(sketches[s].size());
           ++c) {
        COHORT_ASSIGN_OR_RETURN(QuantileSketch sketch,
                                QuantileSketch::Deserialize(part.numeric_sketches(c)));
        sketches[s][c].Merge(sketch);
      }
    }
  }
  const std::vector<SegmentSummary> summaries = SummarizeSegments(transform, segment_stats, sketches);
  FillModelSegments(summaries, &model);
  if (model.tree_size() > 0) {
    // Every node of the tree gets a summary: its statistics are the merge of its
    // children's, and children have larger ids than their parent.
    std::vector<FeatureStats> node_stats(model.tree_size());
    for (int id = model.tree_size() - 1; id >= 0; --id) {
      const v1::SegmentTreeNode& node = model.tree(id);
      if (node.segment() >= 0) {
        node_stats[id] = segment_stats[node.segment()];
      } else {
        node_stats[id].Merge(node_stats[node.left()]);
        node_stats[id].Merge(node_stats[node.right()]);
      }
    }
    const std::vector<SegmentSummary> node_summaries =
        SummarizeSegments(transform, node_stats, {}, &node_stats[0]);
    for (int id = 0; id < model.tree_size(); ++id) {
      model.mutable_tree(id)->set_description(node_summaries[id].description);
    }
  }

  events.Message("metrics", "computing cluster quality metrics");
  COHORT_ASSIGN_OR_RETURN(ClusterMetrics metrics, ComputeMetrics(streams));
  v1::ClusterMetrics* metrics_proto = model.mutable_metrics();
  ToProto(metrics, metrics_proto);

  COHORT_ASSIGN_OR_RETURN(auto sample,
                          SampleUsers(streams, prepared.shard_rows, SampleSize(input.options), d));
  metrics_proto->set_sample_size(static_cast<int32_t>(sample.first.rows()));
  ToProto(SampledSilhouette(sample.first, sample.second, "euclidean"),
          metrics_proto->mutable_silhouette_euclidean_sampled());
  ToProto(SampledSilhouette(sample.first, sample.second, "cosine"),
          metrics_proto->mutable_silhouette_cosine_sampled());
  absl::StatusOr<Projection2D> projection = ProjectPca2(sample.first);
  if (projection.ok()) {
    v1::Projection* out = model.mutable_projection();
    out->mutable_explained_variance_ratio()->Assign(projection->explained_variance_ratio.begin(),
                                                    projection->explained_variance_ratio.end());
    out->mutable_x()->Assign(projection->x.begin(), projection->x.end());
    out->mutable_y()->Assign(projection->y.begin(), projection->y.end());
    out->mutable_segments()->Assign(sample.second.begin(), sample.second.end());
  }

  model.set_model_id(input.job_id);
  model.set_job_id(input.job_id);
  model.set_dataset_id(input.dataset_id);
  for (const std::string& name : transform.FeatureNames()) model.add_feature_names(name);
  ToProto(centroids, model.mutable_centroids());
  ToProto(transform, model.mutable_transform());
  model.set_inertia(metrics.inertia);
  model.set_num_users(prepared.stats.rows);
  *model.mutable_options() = input.options;
  return model;
}

absl::StatusOr<v1::Sweep> RunSweepJob(const SegmentationJobInput& input,
                                      const std::vector<int>& ks, JobStreams* streams) {
  EventSink events(input, streams->num_shards());
  COHORT_ASSIGN_OR_RETURN(PreparedFeatures prepared, PrepareFeatures(input, streams, events));
  GrpcKMeansBackend backend(streams, prepared.transform.dim());
  v1::Sweep sweep;
  sweep.set_job_id(input.job_id);
  sweep.set_dataset_id(input.dataset_id);
  std::vector<SweepPoint> points;
  for (int k : ks) {
    v1::SegmentationOptions options = input.options;
    options.set_k(k);
    COHORT_ASSIGN_OR_RETURN(KMeansOptions kmeans_options, ToKMeansOptions(options));
    if (k > prepared.stats.rows) {
      return absl::InvalidArgumentError(absl::StrCat("k = ", k, " exceeds the ",
                                                     prepared.stats.rows, " users"));
    }
    const std::string step = absl::StrCat("sweep: k = ", k);
    auto on_progress = [&](const KMeansProgress& progress) {
      events.KMeans(progress, kmeans_options, step);
    };
    COHORT_ASSIGN_OR_RETURN(KMeansResult result, RunKMeans(backend, kmeans_options, on_progress));
    v1::JobCommand assign;
    ToProto(result.centroids, assign.mutable_assign_labels()->mutable_centroids());
    COHORT_RETURN_IF_ERROR(streams->Execute(std::move(assign)).status());
    COHORT_ASSIGN_OR_RETURN(ClusterMetrics metrics, ComputeMetrics(streams));
    v1::SweepPoint* point = sweep.add_points();
    point->set_k(k);
    point->set_effective_k(result.effective_k);
    point->set_iterations(result.iterations);
    ToProto(metrics, point->mutable_metrics());
    points.push_back(SweepPoint{k, metrics});
    COHORT_LOG_INFO("job {}: sweep k = {}: inertia {}, silhouette {}", input.job_id, k,
                    metrics.inertia,
                    metrics.silhouette.value.has_value() ? *metrics.silhouette.value : NAN);
  }
  const KSuggestion suggestion = SuggestK(points);
  sweep.set_suggested_k(suggestion.k);
  sweep.set_reason(suggestion.reason);
  return sweep;
}

}  // namespace cohort
