// cohort_kmeans_quality: builds the feature matrix of a public data set exactly as a
// segmentation job does, runs K-means on it in this process and writes the matrix, so
// that bench/compare_sklearn_kmeans.py can run scikit-learn on the same numbers.
//
// The job's steps, repeated here: rows grouped into virtual shards by ShardOfUser,
// FeatureStats per shard merged in shard-id order, one FitFeatureTransform,
// TransformShard per shard, then RunKMeans over the shards in shard-id order.
//
// Output: PREFIX.f32 contains the n×d matrix as raw little-endian float32, rows of shard 0
// first, then shard 1, and so on. PREFIX.json describes it and the K-means result.
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/csv.h"
#include "core/features.h"
#include "core/kmeans.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"
#include "core/raw_table.h"
#include "core/schema.h"
#include "core/status_macros.h"
#include "core/transactions.h"

namespace cohort {
namespace {

// Rows read to infer a schema. The worker's InferSchema reads as many by default.
constexpr int kSchemaSampleRows = 1000;

struct RawData {
  bool transactions = false;  // per-user features aggregated from a transaction log
  Schema schema;
  std::vector<RawShard> shards;  // all num_shards shards, sorted by shard id
  std::string source;            // the file read
};

struct Features {
  FeatureTransform transform;
  std::vector<MatrixXfR> shards;  // one n_s×d matrix per shard, in shard-id order
  int64_t rows = 0;
};

std::vector<int> AllShardIds(int num_shards) {
  std::vector<int> ids(num_shards);
  for (int s = 0; s < num_shards; ++s) ids[s] = s;
  return ids;
}

// Online Retail: the transaction log aggregated into per-user RFM features with the
// default TransactionOptions (the Online Retail column names).
absl::StatusOr<RawData> LoadOnlineRetail(const std::string& data_dir, int num_shards) {
  RawData data;
  data.source = data_dir + "/online-retail/OnlineRetail.csv.gz";
  COHORT_ASSIGN_OR_RETURN(TransactionShards loaded,
                          LoadTransactionShards({data.source}, TransactionOptions(), num_shards,
                                                AllShardIds(num_shards)));
  data.transactions = true;
  data.schema = TransactionFeatureSchema();
  data.shards = std::move(loaded.loaded.shards);
  return data;
}

// A user table read as a job loads it: column types inferred from the first rows of
// the file (as the worker's InferSchema does), then LoadUserShards.
absl::StatusOr<RawData> LoadUserCsv(const std::string& path, const CsvOptions& csv,
                                    const std::string& id_column, int num_shards) {
  RawData data;
  data.source = path;
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CsvReader> reader, CsvReader::Open(path, csv));
  std::vector<std::vector<std::string>> sample;
  std::vector<std::string> fields;
  while (static_cast<int>(sample.size()) < kSchemaSampleRows) {
    COHORT_ASSIGN_OR_RETURN(bool more, reader->Next(&fields));
    if (!more) break;
    sample.push_back(fields);
  }
  SchemaOverrides overrides;
  overrides.id_column = id_column;
  COHORT_ASSIGN_OR_RETURN(data.schema, InferSchema(reader->header(), sample, overrides));

  UserLoadOptions options;
  options.paths = {path};
  options.csv = csv;
  options.schema = data.schema;
  options.num_shards = num_shards;
  options.shards = AllShardIds(num_shards);
  COHORT_ASSIGN_OR_RETURN(LoadedShards loaded, LoadUserShards(options));
  data.shards = std::move(loaded.shards);
  return data;
}

// Mall Customers: one row per customer, id column CustomerID.
absl::StatusOr<RawData> LoadMall(const std::string& data_dir, int num_shards) {
  return LoadUserCsv(data_dir + "/mall-customers/Mall_Customers.csv", CsvOptions(),
                     "CustomerID", num_shards);
}

// Bank Marketing (bank-full.csv): ';'-separated with no id column, so user ids are line
// numbers (kLineNumberIdColumn). Every other column is a feature, the label "y" included,
// because a job without ignored columns uses them all.
absl::StatusOr<RawData> LoadBank(const std::string& data_dir, int num_shards) {
  CsvOptions csv;
  csv.delimiter = ';';
  return LoadUserCsv(data_dir + "/bank-marketing/bank-full.csv", csv,
                     std::string(kLineNumberIdColumn), num_shards);
}

absl::StatusOr<RawData> LoadDataset(const std::string& name, const std::string& data_dir,
                                    int num_shards) {
  if (name == "online-retail") return LoadOnlineRetail(data_dir, num_shards);
  if (name == "bank") return LoadBank(data_dir, num_shards);
  if (name == "mall") return LoadMall(data_dir, num_shards);
  return absl::InvalidArgumentError(
      absl::StrCat("data set '", name, "' is unknown; use online-retail, bank or mall"));
}

// Fits the transform from per-shard statistics merged in shard-id order and transforms
// every shard, as the coordinator and the workers of a segmentation job do.
absl::StatusOr<Features> BuildFeatures(const RawData& data, const FeatureOptions& options) {
  COHORT_ASSIGN_OR_RETURN(std::vector<bool> log1p, Log1pFlags(data.schema, options));
  FeatureStats stats;
  for (const RawShard& shard : data.shards) stats.Merge(ComputeFeatureStats(shard, log1p));
  Features features;
  COHORT_ASSIGN_OR_RETURN(features.transform,
                          FitFeatureTransform(data.schema, stats, options));
  features.shards.resize(data.shards.size());
  for (size_t s = 0; s < data.shards.size(); ++s) {
    TransformShard(features.transform, data.shards[s], &features.shards[s]);
    features.rows += features.shards[s].rows();
  }
  return features;
}

// Returns Σ over rows of the smallest squared distance to a centroid, computed from exact
// differences in double with a plain loop, so that it can be compared with the value the
// comparison script computes for scikit-learn's centroids.
double ExactInertia(const std::vector<MatrixXfR>& shards, const MatrixXfR& centroids) {
  double total = 0;
  for (const MatrixXfR& x : shards) {
    for (int64_t i = 0; i < x.rows(); ++i) {
      double best = std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < centroids.rows(); ++c) {
        double sq_dist = 0;
        for (int64_t j = 0; j < x.cols(); ++j) {
          const double diff = static_cast<double>(x(i, j)) - static_cast<double>(centroids(c, j));
          sq_dist += diff * diff;
        }
        if (sq_dist < best) best = sq_dist;
      }
      total += best;
    }
  }
  return total;
}

absl::Status WriteMatrix(const std::string& path, const std::vector<MatrixXfR>& shards) {
  static_assert(std::endian::native == std::endian::little,
                "the .f32 output is little-endian; add a byte swap for this target");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("failed to open ", path, " for writing"));
  for (const MatrixXfR& x : shards) {
    out.write(reinterpret_cast<const char*>(x.data()),
              static_cast<std::streamsize>(x.size() * sizeof(float)));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

absl::Status WriteJson(const std::string& path, const nlohmann::json& json) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("failed to open ", path, " for writing"));
  out << json.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

struct ToolOptions {
  std::string dataset;
  std::string data_dir;
  std::string out_prefix;
  int num_shards = 64;
  // With an empty features.log1p_columns: keep the RFM columns of a transaction log in
  // raw units instead of applying the job's default log1p.
  bool raw_numeric = false;
  FeatureOptions features;
  KMeansOptions kmeans;
};

// Returns the feature options a segmentation job uses. As in the coordinator, every RFM
// column of a transaction log gets log1p unless columns are named or raw_numeric is set.
FeatureOptions JobFeatureOptions(const ToolOptions& options, const RawData& data) {
  FeatureOptions features = options.features;
  if (features.log1p_columns.empty() && data.transactions && !options.raw_numeric) {
    features.log1p_columns = TransactionFeatureSchema().NumericNames();
  }
  return features;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::Status Run(const ToolOptions& options) {
  COHORT_RETURN_IF_ERROR(options.features.Validate());
  COHORT_RETURN_IF_ERROR(options.kmeans.Validate());
  if (options.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards ", options.num_shards, " is invalid; use at least 1"));
  }

  const auto load_start = std::chrono::steady_clock::now();
  COHORT_ASSIGN_OR_RETURN(RawData data,
                          LoadDataset(options.dataset, options.data_dir, options.num_shards));
  const FeatureOptions feature_options = JobFeatureOptions(options, data);
  COHORT_ASSIGN_OR_RETURN(Features features, BuildFeatures(data, feature_options));
  const double feature_seconds = SecondsSince(load_start);

  std::vector<std::unique_ptr<KMeansShard>> kmeans_shards;
  std::vector<KMeansShard*> pointers;
  for (size_t s = 0; s < features.shards.size(); ++s) {
    kmeans_shards.push_back(
        std::make_unique<KMeansShard>(data.shards[s].shard_id, &features.shards[s]));
    pointers.push_back(kmeans_shards.back().get());
  }
  InProcessKMeansBackend backend(pointers);
  const auto kmeans_start = std::chrono::steady_clock::now();
  COHORT_ASSIGN_OR_RETURN(KMeansResult result, RunKMeans(backend, options.kmeans, nullptr));
  const double kmeans_seconds = SecondsSince(kmeans_start);
  const double inertia = ExactInertia(features.shards, result.centroids);

  const std::string matrix_path = options.out_prefix + ".f32";
  const std::string json_path = options.out_prefix + ".json";
  COHORT_RETURN_IF_ERROR(WriteMatrix(matrix_path, features.shards));
  nlohmann::json json;
  json["dataset"] = options.dataset;
  json["source"] = data.source;
  json["matrix"] = matrix_path;
  json["dtype"] = "float32, little-endian, row-major";
  json["n"] = features.rows;
  json["d"] = features.transform.dim();
  json["feature_names"] = features.transform.FeatureNames();
  json["num_shards"] = options.num_shards;
  json["max_categories"] = feature_options.max_categories;
  json["log1p_columns"] = feature_options.log1p_columns;
  json["k"] = options.kmeans.k;
  json["effective_k"] = result.effective_k;
  json["n_init"] = options.kmeans.n_init;
  json["seed"] = options.kmeans.seed;
  json["max_iter"] = options.kmeans.max_iter;
  json["tol"] = options.kmeans.tol;
  json["inertia"] = inertia;
  json["inertia_reported"] = result.inertia;
  json["iterations"] = result.iterations;
  json["converged"] = result.converged;
  json["best_run"] = result.best_run;
  json["kmeans_seconds"] = kmeans_seconds;
  json["feature_seconds"] = feature_seconds;
  COHORT_RETURN_IF_ERROR(WriteJson(json_path, json));

  std::printf(
      "%s: n=%lld d=%d k=%d n_init=%d inertia=%.10g iterations=%d converged=%s "
      "kmeans=%.3fs features=%.3fs -> %s\n",
      options.dataset.c_str(), static_cast<long long>(features.rows), features.transform.dim(),
      options.kmeans.k, options.kmeans.n_init, inertia, result.iterations,
      result.converged ? "yes" : "no", kmeans_seconds, feature_seconds, json_path.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::ToolOptions options;
  const char* env_data_dir = std::getenv("COHORT_DATA_DIR");
  options.data_dir = (env_data_dir != nullptr && env_data_dir[0] != '\0')
                         ? env_data_dir
                         : COHORT_DEFAULT_DATA_DIR;

  CLI::App app{
      "Build a data set's segmentation features, run cohort K-means on them and write the "
      "feature matrix (PREFIX.f32) and a JSON description (PREFIX.json)"};
  app.add_option("--dataset", options.dataset, "online-retail, bank or mall")
      ->required()
      ->check(CLI::IsMember({"online-retail", "bank", "mall"}));
  app.add_option("--data-dir", options.data_dir,
                 "folder of the public data sets (default: $COHORT_DATA_DIR, else the "
                 "folder configured at build time)")
      ->capture_default_str();
  app.add_option("--out", options.out_prefix, "output path prefix")->required();
  app.add_option("--shards", options.num_shards, "virtual shards S")->capture_default_str();
  app.add_option("--max-categories", options.features.max_categories,
                 "values one-hot encoded per categorical column")
      ->capture_default_str();
  app.add_option("--log1p", options.features.log1p_columns,
                 "numeric columns to transform with log1p before standardizing (default: all "
                 "RFM columns for online-retail, none otherwise)")
      ->delimiter(',');
  app.add_flag("--raw-numeric", options.raw_numeric,
               "online-retail: standardize the RFM columns without log1p");
  app.add_option("-k,--k", options.kmeans.k, "number of segments")->capture_default_str();
  app.add_option("--n-init", options.kmeans.n_init,
                 "independent seedings; the lowest inertia wins")
      ->capture_default_str();
  app.add_option("--seed", options.kmeans.seed, "random seed")->capture_default_str();
  app.add_option("--max-iter", options.kmeans.max_iter, "maximum Lloyd iterations per run")
      ->capture_default_str();
  app.add_option("--tol", options.kmeans.tol,
                 "convergence tolerance relative to the data scale")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const absl::Status status = cohort::Run(options);
  if (!status.ok()) {
    std::fprintf(stderr, "cohort_kmeans_quality: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
