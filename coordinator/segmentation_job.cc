#include "coordinator/segmentation_job.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/features.h"
#include "core/log.h"
#include "core/transactions.h"
#include "core/segment_summary.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

// Events are rate-limited so that a fast job does not flood its watchers; phase changes
// and the last iteration always go out.
constexpr absl::Duration kMinEventInterval = absl::Milliseconds(100);

class EventSink {
 public:
  EventSink(const SegmentationJobInput& input, int shards, int64_t users)
      : input_(input), shards_(shards), users_(users), start_(absl::Now()) {}

  void Emit(v1::JobEvent event, bool force) {
    const absl::Time now = absl::Now();
    if (!force && event.phase() == last_phase_ && now - last_sent_ < kMinEventInterval) return;
    last_phase_ = event.phase();
    last_sent_ = now;
    event.set_job_id(input_.job_id);
    event.set_state(v1::JOB_STATE_RUNNING);
    event.set_shards_total(shards_);
    if (event.shards_done() == 0) event.set_shards_done(shards_);
    const double elapsed = absl::ToDoubleSeconds(now - start_);
    event.set_elapsed_seconds(elapsed);
    if (elapsed > 0 && passes_ > 0) {
      event.set_rows_per_second(static_cast<double>(users_) * passes_ / elapsed);
    }
    if (input_.on_event) input_.on_event(event);
  }

  void CountPass() { ++passes_; }
  void set_users(int64_t users) { users_ = users; }

 private:
  const SegmentationJobInput& input_;
  const int shards_;
  int64_t users_;
  const absl::Time start_;
  absl::Time last_sent_ = absl::InfinitePast();
  std::string last_phase_;
  int64_t passes_ = 0;
};

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
  if (options.tol() != 0) out.tol = options.tol();
  if (options.seed() != 0) out.seed = options.seed();
  if (options.n_init() != 0) out.n_init = options.n_init();
  COHORT_RETURN_IF_ERROR(out.Validate());
  COHORT_RETURN_IF_ERROR(ToFeatureOptions(options, v1::DATASET_KIND_USERS).Validate());
  return out;
}

absl::StatusOr<v1::SegmentModel> RunSegmentationJob(const SegmentationJobInput& input,
                                                    JobStreams* streams) {
  COHORT_ASSIGN_OR_RETURN(KMeansOptions kmeans_options, ToKMeansOptions(input.options));
  const FeatureOptions feature_options = ToFeatureOptions(input.options, input.kind);
  EventSink events(input, streams->num_shards(), 0);

  // Feature statistics per shard, merged in shard order, then one fitted transform.
  v1::JobEvent event;
  event.set_phase("features");
  event.set_message("computing feature statistics");
  events.Emit(event, true);
  v1::JobCommand stats_command;
  for (const std::string& name : feature_options.log1p_columns) {
    stats_command.mutable_stats()->add_log1p_columns(name);
  }
  stats_command.mutable_stats();
  COHORT_ASSIGN_OR_RETURN(auto stats_results, streams->Execute(std::move(stats_command)));
  FeatureStats stats;
  for (const v1::ShardResult& result : stats_results) stats.Merge(FromProto(result.stats()));
  events.set_users(stats.rows);
  COHORT_ASSIGN_OR_RETURN(FeatureTransform transform,
                          FitFeatureTransform(input.schema, stats, feature_options));
  COHORT_LOG_INFO("job {}: {} users, {} features", input.job_id, stats.rows, transform.dim());

  v1::JobCommand build_command;
  ToProto(transform, build_command.mutable_build_features()->mutable_transform());
  COHORT_RETURN_IF_ERROR(streams->Execute(std::move(build_command)).status());
  event.set_message(absl::StrCat("built ", transform.dim(), " features for ", stats.rows, " users"));
  events.Emit(event, true);

  GrpcKMeansBackend backend(streams, transform.dim());
  auto on_progress = [&](const KMeansProgress& progress) {
    v1::JobEvent out;
    out.set_phase(progress.phase);
    out.set_run(progress.run);
    out.set_iteration(progress.iteration);
    out.set_max_iter(kmeans_options.max_iter);
    out.set_centers_chosen(progress.centers_chosen);
    out.set_k(kmeans_options.k);
    out.set_inertia(progress.inertia);
    out.set_max_shift(progress.max_shift);
    if (progress.phase != "init") events.CountPass();
    events.Emit(out, progress.phase == "final");
  };
  COHORT_ASSIGN_OR_RETURN(KMeansResult result, RunKMeans(backend, kmeans_options, on_progress));
  COHORT_LOG_INFO("job {}: k-means done, effective k {}, inertia {}, {} iterations, converged {}",
                  input.job_id, result.effective_k, result.inertia, result.iterations,
                  result.converged);

  v1::JobCommand store_command;
  ToProto(result.centroids, store_command.mutable_store_assignments()->mutable_centroids());
  COHORT_ASSIGN_OR_RETURN(auto stored, streams->Execute(std::move(store_command)));
  // Raw-value statistics per segment, merged in shard order, for the summaries.
  std::vector<FeatureStats> segment_stats(result.effective_k);
  for (const v1::ShardResult& shard : stored) {
    if (shard.segment_stats_size() == 0) continue;  // a shard without rows
    if (shard.segment_stats_size() != result.effective_k) {
      return absl::InternalError(absl::StrCat("shard ", shard.shard_id(), " returned ",
                                              shard.segment_stats_size(),
                                              " segment statistics for ", result.effective_k,
                                              " segments"));
    }
    for (int s = 0; s < result.effective_k; ++s) {
      segment_stats[s].Merge(FromProto(shard.segment_stats(s)));
    }
  }

  v1::SegmentModel model;
  model.set_model_id(input.job_id);
  model.set_job_id(input.job_id);
  model.set_dataset_id(input.dataset_id);
  model.set_requested_k(result.requested_k);
  model.set_effective_k(result.effective_k);
  model.set_fewer_distinct_points(result.fewer_distinct_points);
  for (const std::string& name : transform.FeatureNames()) model.add_feature_names(name);
  ToProto(result.centroids, model.mutable_centroids());
  ToProto(transform, model.mutable_transform());
  model.set_inertia(result.inertia);
  model.set_iterations(result.iterations);
  model.set_converged(result.converged);
  model.set_data_scale(result.data_scale);
  model.set_num_users(result.num_rows);
  model.set_reseeded_clusters(result.reseeded_clusters);
  *model.mutable_options() = input.options;
  for (const SegmentSummary& summary : SummarizeSegments(transform, segment_stats)) {
    v1::Segment* segment = model.add_segments();
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
  return model;
}

}  // namespace cohort
