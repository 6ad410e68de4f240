#include "worker/profile_session.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/logistic.h"
#include "core/quantile_sketch.h"
#include "core/status_macros.h"
#include "proto/profile_convert.h"

namespace cohort {
namespace {

// True when `ids` contains exactly `strings`, in the same order.
bool SameIds(const IdColumn& ids, const std::vector<std::string>& strings) {
  if (ids.size() != static_cast<int64_t>(strings.size())) return false;
  for (int64_t i = 0; i < ids.size(); ++i) {
    if (ids[i] != strings[static_cast<size_t>(i)]) return false;
  }
  return true;
}

// Shortest text that parses back to `value`; empty for NaN (a missing cell).
std::string FormatNumber(double value) {
  if (std::isnan(value)) return "";
  char buffer[64];
  const auto end = std::to_chars(buffer, buffer + sizeof(buffer), value).ptr;
  return std::string(buffer, end);
}

// The cells of one row of `raw` by schema column, as text; ignored columns are not
// stored on the worker and are left out.
void RawCells(const Schema& schema, const RawShard& raw, int64_t row,
              v1::LookupUserResult* out) {
  int numeric = 0;
  int categorical = 0;
  int boolean = 0;
  int text = 0;
  int embedding = 0;
  for (const ColumnSpec& column : schema.columns) {
    std::string cell;
    switch (column.type) {
      case ColumnType::kId:
        cell = std::string(raw.ids[row]);
        break;
      case ColumnType::kNumeric:
        cell = FormatNumber(raw.numeric(row, numeric++));
        break;
      case ColumnType::kCategorical:
        cell = std::string(raw.categorical[categorical++][row]);
        break;
      case ColumnType::kWeight:
        cell = raw.weights.empty() ? "" : FormatNumber(raw.weights[row]);
        break;
      case ColumnType::kBoolean: {
        const int8_t value = raw.profile.boolean[boolean++][row];
        cell = value == kMissingBoolean ? "" : (value == 1 ? "true" : "false");
        break;
      }
      case ColumnType::kText:
        cell = raw.profile.text[text++][row];
        break;
      case ColumnType::kEmbedding: {
        const EmbeddingColumn& values = raw.profile.embedding[embedding++];
        if (values.missing[row] != 0) break;
        for (int j = 0; j < values.dim; ++j) {
          if (j > 0) cell += ' ';
          cell += FormatNumber(values.values[row * values.dim + j]);
        }
        break;
      }
      case ColumnType::kLabel:
        cell = raw.profile.labels[row];
        break;
      case ColumnType::kIgnore:
        continue;
    }
    out->add_column_names(column.name);
    out->add_cells(std::move(cell));
  }
}

// The logistic model whose parameters are `params`: d weights, then the intercept.
LogisticModel ModelOf(const google::protobuf::RepeatedField<double>& params) {
  LogisticModel model;
  model.coefficients.assign(params.begin(), params.end() - 1);
  model.intercept = params[params.size() - 1];
  return model;
}

struct Candidate {
  double score = 0;
  const std::string* user_id = nullptr;
  int32_t segment = -1;
};

}  // namespace

ProfileSession::ProfileSession(ShardStore* store, std::shared_ptr<HostedDataset> dataset,
                               std::string job_id, std::vector<int> shard_ids)
    : store_(store), dataset_(std::move(dataset)), job_id_(std::move(job_id)) {
  for (int shard_id : shard_ids) {
    ShardDesign shard;
    shard.shard_id = shard_id;
    shards_.push_back(std::move(shard));
  }
}

bool ProfileSession::Handles(const v1::JobCommand& command) {
  switch (command.command_case()) {
    case v1::JobCommand::kPipelineStats:
    case v1::JobCommand::kPipelineMoments:
    case v1::JobCommand::kBuildDesign:
    case v1::JobCommand::kLossGradient:
    case v1::JobCommand::kSplitScores:
    case v1::JobCommand::kStoreScores:
    case v1::JobCommand::kSelectAudience:
    case v1::JobCommand::kLookupUser:
      return true;
    default:
      return false;
  }
}

absl::Status ProfileSession::Handle(const v1::JobCommand& command,
                                    std::vector<v1::ShardResult>* results) {
  const int64_t seq = command.seq();
  switch (command.command_case()) {
    case v1::JobCommand::kPipelineStats:
      return PipelineStats(command.pipeline_stats(), seq, results);
    case v1::JobCommand::kPipelineMoments:
      return PipelineMoments(command.pipeline_moments(), seq, results);
    case v1::JobCommand::kBuildDesign:
      return BuildDesign(command.build_design(), seq, results);
    case v1::JobCommand::kLossGradient:
      return LossGradient(command.loss_gradient(), seq, results);
    case v1::JobCommand::kSplitScores:
      return SplitScores(command.split_scores(), seq, results);
    case v1::JobCommand::kStoreScores:
      return StoreScores(command.store_scores(), seq, results);
    case v1::JobCommand::kSelectAudience:
      return SelectAudience(command.select_audience(), seq, results);
    case v1::JobCommand::kLookupUser:
      return LookupUser(command.lookup_user(), seq, results);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job command ", seq, " is not a profile command"));
  }
}

v1::ShardResult ProfileSession::NewResult(int64_t seq, int shard_id, int64_t rows) const {
  v1::ShardResult result;
  result.set_seq(seq);
  result.set_shard_id(shard_id);
  result.set_rows(rows);
  return result;
}

absl::StatusOr<const RawShard*> ProfileSession::CurrentRaw(ShardDesign& shard,
                                                           RawShard* empty) const {
  auto it = dataset_->shards.find(shard.shard_id);
  const RawShard* raw = it == dataset_->shards.end() ? nullptr : &it->second;
  if (raw == nullptr) {
    *empty = MakeEmptyShard(dataset_->schema, shard.shard_id);
    raw = empty;
  }
  if (shard.user_ids.empty() && shard.in_test.empty()) {
    shard.user_ids = raw->ids.ToStrings();
    return raw;
  }
  if (!SameIds(raw->ids, shard.user_ids)) {
    return absl::AbortedError(absl::StrCat("job ", job_id_, ": shard ", shard.shard_id,
                                           " changed while the job ran; rerun the job"));
  }
  return raw;
}

absl::Status ProfileSession::CheckParams(int size) const {
  if (dim_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id_, ": the design matrix is not built; send BuildDesign first"));
  }
  if (size != dim_ + 1) {
    return absl::InvalidArgumentError(absl::StrCat("job ", job_id_, ": ", size,
                                                   " parameters for ", dim_,
                                                   " features; send d weights and the intercept"));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::PipelineStats(const v1::ComputePipelineStats& command, int64_t seq,
                                           std::vector<v1::ShardResult>* results) {
  PipelineSpec spec;
  COHORT_ASSIGN_OR_RETURN(spec.columns, FromProto(command.pipeline()));
  spec.label_column = command.label_column();
  spec.positive_label = command.positive_label();
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardDesign& shard : shards_) {
    RawShard empty;
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard, &empty));
    COHORT_ASSIGN_OR_RETURN(PipelineFirstPassStats stats,
                            ComputeFirstPassStats(spec, dataset_->schema, *raw));
    v1::ShardResult result = NewResult(seq, shard.shard_id, raw->num_rows());
    ToProto(stats, result.mutable_pipeline_stats());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::PipelineMoments(const v1::ComputePipelineMoments& command,
                                             int64_t seq, std::vector<v1::ShardResult>* results) {
  COHORT_ASSIGN_OR_RETURN(PipelineModel model,
                          PipelineModel::Deserialize(command.pipeline_model()));
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardDesign& shard : shards_) {
    RawShard empty;
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard, &empty));
    v1::ShardResult result = NewResult(seq, shard.shard_id, raw->num_rows());
    ToProto(ComputeSecondPassStats(model, *raw), result.mutable_pipeline_moments());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::BuildDesign(const v1::BuildDesign& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  COHORT_ASSIGN_OR_RETURN(PipelineModel model,
                          PipelineModel::Deserialize(command.pipeline_model()));
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardDesign& shard : shards_) {
    RawShard empty;
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard, &empty));
    MatrixXfR x;
    std::vector<uint8_t> labels;
    CleaningReport report;
    COHORT_RETURN_IF_ERROR(TransformShardPipeline(model, *raw, &x, &labels, &report));
    const int64_t n = raw->num_rows();
    if (static_cast<int64_t>(labels.size()) != n) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id_, ": the pipeline has no label column"));
    }
    shard.in_test.assign(n, 0);
    int64_t n_test = 0;
    for (int64_t i = 0; i < n; ++i) {
      shard.in_test[i] = InTestSplit(raw->ids[i], command.test_fraction(), command.seed()) ? 1 : 0;
      n_test += shard.in_test[i];
    }
    const int64_t n_train = n - n_test;
    const bool weighted = !raw->weights.empty();
    shard.x_train.resize(n_train, x.cols());
    shard.x_test.resize(n_test, x.cols());
    shard.y_train.clear();
    shard.y_test.clear();
    shard.weights_train.clear();
    int64_t train_row = 0;
    int64_t test_row = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (shard.in_test[i] != 0) {
        shard.x_test.row(test_row++) = x.row(i);
        shard.y_test.push_back(labels[i]);
      } else {
        shard.x_train.row(train_row++) = x.row(i);
        shard.y_train.push_back(labels[i]);
        if (weighted) shard.weights_train.push_back(raw->weights[i]);
      }
    }
    const ClassCounts counts = CountClasses(shard.y_train, shard.weights_train);
    v1::ShardResult result = NewResult(seq, shard.shard_id, n);
    v1::DesignResult* out = result.mutable_design();
    out->set_d(static_cast<int32_t>(x.cols()));
    out->set_train_rows(n_train);
    out->set_test_rows(n_test);
    out->add_train_class_rows(counts.rows[0]);
    out->add_train_class_rows(counts.rows[1]);
    out->set_train_weight_sum(counts.weight_sum);
    out->set_test_positives(std::count(shard.y_test.begin(), shard.y_test.end(), uint8_t{1}));
    ToProto(report, out->mutable_report());
    results->push_back(std::move(result));
  }
  dim_ = model.dim();
  return absl::OkStatus();
}

absl::Status ProfileSession::LossGradient(const v1::LossGradient& command, int64_t seq,
                                          std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckParams(command.weights_size()));
  const Eigen::VectorXd params =
      Eigen::Map<const Eigen::VectorXd>(command.weights().data(), command.weights_size());
  const std::array<double, 2> class_weights = {command.negative_weight(),
                                               command.positive_weight()};
  for (const ShardDesign& shard : shards_) {
    const cohort::LossGradient partial = ShardLossGradient(
        shard.x_train, shard.y_train, shard.weights_train, class_weights, params);
    v1::ShardResult result = NewResult(seq, shard.shard_id, shard.x_train.rows());
    result.mutable_loss_gradient()->set_loss(partial.loss);
    result.mutable_loss_gradient()->mutable_gradient()->Assign(
        partial.gradient.data(), partial.gradient.data() + partial.gradient.size());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::SplitScores(const v1::SplitScores& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckParams(command.weights_size()));
  if (command.offset() < 0 || command.max_rows() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("SplitScores offset ", command.offset(),
                                                   " or max_rows ", command.max_rows(),
                                                   " is invalid"));
  }
  const LogisticModel model = ModelOf(command.weights());
  const bool test = command.split() == v1::SPLIT_KIND_TEST;
  for (const ShardDesign& shard : shards_) {
    const MatrixXfR& x = test ? shard.x_test : shard.x_train;
    const std::vector<uint8_t>& y = test ? shard.y_test : shard.y_train;
    const int64_t n = x.rows();
    const int64_t begin = std::min(n, command.offset());
    const int64_t end = std::min(n, begin + command.max_rows());
    v1::ShardResult result = NewResult(seq, shard.shard_id, end - begin);
    v1::SplitScoresResult* out = result.mutable_split_scores();
    for (int64_t i = begin; i < end; ++i) {
      out->add_scores(model.Probability(x.row(i).data()));
      out->add_labels(y[i] != 0);
    }
    out->set_done(end == n);
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::StoreScores(const v1::StoreScores& command, int64_t seq,
                                         std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckParams(command.weights_size()));
  const LogisticModel model = ModelOf(command.weights());
  for (const ShardDesign& shard : shards_) {
    ShardScores scores;
    scores.user_ids = shard.user_ids;
    scores.scores.reserve(shard.user_ids.size());
    QuantileSketch sketch;
    int64_t train_row = 0;
    int64_t test_row = 0;
    for (size_t i = 0; i < shard.user_ids.size(); ++i) {
      const float* row = shard.in_test[i] != 0 ? shard.x_test.row(test_row++).data()
                                               : shard.x_train.row(train_row++).data();
      const double score = model.Probability(row);
      scores.scores.push_back(score);
      sketch.Add(score);
    }
    v1::ShardResult result =
        NewResult(seq, shard.shard_id, static_cast<int64_t>(scores.scores.size()));
    result.mutable_stored_scores()->set_sketch(sketch.Serialize());
    result.mutable_stored_scores()->set_rows(static_cast<int64_t>(scores.scores.size()));
    store_->scores().Store(job_id_, shard.shard_id, std::move(scores));
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::SelectAudience(const v1::SelectAudienceShard& command, int64_t seq,
                                            std::vector<v1::ShardResult>* results) {
  const absl::flat_hash_set<std::string> excluded(command.exclude_user_ids().begin(),
                                                  command.exclude_user_ids().end());
  const absl::flat_hash_set<int32_t> segments(command.segments().begin(),
                                              command.segments().end());
  const bool with_segments = !command.segment_job_id().empty();
  for (const ShardDesign& shard : shards_) {
    COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const ShardScores> scores,
                            store_->scores().Find(command.profile_job_id(), shard.shard_id));
    std::shared_ptr<const ShardAssignments> assignments;
    absl::flat_hash_map<std::string, int32_t> segment_of;
    bool aligned = false;
    if (with_segments) {
      COHORT_ASSIGN_OR_RETURN(assignments,
                              store_->FindAssignments(command.segment_job_id(), shard.shard_id));
      // Both jobs read the same shard, so the rows usually line up. Rows streamed in
      // between the jobs are matched by id, and a user the segment job never saw gets
      // segment -1.
      aligned = assignments->size() == static_cast<int64_t>(scores->user_ids.size());
      COHORT_RETURN_IF_ERROR(assignments->ReadIds(
          0, assignments->size(), [&](int64_t row, std::string_view id) {
            if (aligned && id != scores->user_ids[static_cast<size_t>(row)]) aligned = false;
          }));
      if (!aligned) {
        const std::vector<int32_t>& stored = assignments->segments();
        COHORT_RETURN_IF_ERROR(assignments->ReadIds(
            0, assignments->size(),
            [&](int64_t row, std::string_view id) { segment_of[std::string(id)] = stored[row]; }));
      }
    }
    std::vector<Candidate> candidates;
    for (size_t i = 0; i < scores->user_ids.size(); ++i) {
      const double score = scores->scores[i];
      if (command.has_min_score() && !(score >= command.min_score())) continue;
      const std::string& user_id = scores->user_ids[i];
      int32_t segment = -1;
      if (with_segments) {
        if (aligned) {
          segment = assignments->segments()[i];
        } else if (auto it = segment_of.find(user_id); it != segment_of.end()) {
          segment = it->second;
        }
      }
      if (!segments.empty() && !segments.contains(segment)) continue;
      if (excluded.contains(user_id)) continue;
      candidates.push_back(Candidate{score, &user_id, segment});
    }
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      if (a.score != b.score) return a.score > b.score;
      return *a.user_id < *b.user_id;
    });
    v1::ShardResult result = NewResult(seq, shard.shard_id, 0);
    v1::AudienceShardResult* out = result.mutable_audience();
    absl::flat_hash_map<int32_t, int64_t> per_segment;
    int64_t selected = 0;
    for (const Candidate& candidate : candidates) {
      if (command.top_n() > 0 && selected >= command.top_n()) break;
      if (command.per_segment_cap() > 0 &&
          per_segment[candidate.segment] >= command.per_segment_cap()) {
        continue;
      }
      ++per_segment[candidate.segment];
      ++selected;
      out->add_user_ids(*candidate.user_id);
      out->add_scores(candidate.score);
      out->add_segments(candidate.segment);
    }
    result.set_rows(selected);
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status ProfileSession::LookupUser(const v1::LookupUser& command, int64_t seq,
                                        std::vector<v1::ShardResult>* results) {
  for (const ShardDesign& shard : shards_) {
    v1::ShardResult result = NewResult(seq, shard.shard_id, 0);
    v1::LookupUserResult* out = result.mutable_lookup_user();
    {
      absl::ReaderMutexLock lock(&dataset_->mutex);
      auto it = dataset_->shards.find(shard.shard_id);
      if (it != dataset_->shards.end()) {
        const RawShard& raw = it->second;
        for (int64_t row = 0; row < raw.ids.size(); ++row) {
          if (raw.ids[row] != command.user_id()) continue;
          out->set_found(true);
          RawCells(dataset_->schema, raw, row, out);
          break;
        }
      }
    }
    if (out->found()) {
      COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const ShardScores> scores,
                              store_->scores().Find(command.profile_job_id(), shard.shard_id));
      const auto row =
          std::find(scores->user_ids.begin(), scores->user_ids.end(), command.user_id());
      if (row == scores->user_ids.end()) {
        return absl::NotFoundError(absl::StrCat("user '", command.user_id(),
                                                "' was added after profile job ",
                                                command.profile_job_id(),
                                                " and has no stored score; rerun the job"));
      }
      out->set_score(scores->scores[row - scores->user_ids.begin()]);
      if (!command.segment_job_id().empty()) {
        COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const ShardAssignments> assignments,
                                store_->FindAssignments(command.segment_job_id(), shard.shard_id));
        int64_t index = -1;
        COHORT_RETURN_IF_ERROR(assignments->ReadIds(
            0, assignments->size(), [&](int64_t row, std::string_view id) {
              if (index < 0 && id == command.user_id()) index = row;
            }));
        if (index >= 0) {
          out->set_has_segment(true);
          out->set_segment(assignments->segments()[index]);
          out->set_segment_distance(assignments->squared_distances()[index]);
        }
      }
    }
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

}  // namespace cohort
