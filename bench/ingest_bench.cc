// cohort_ingest_bench: load speed and worker memory per user for a generated CSV of
// users with numeric columns.
//
// It writes (or reuses) a file of `--rows` users, each with an id "u<i>" and `--cols`
// numeric columns of 6 significant digits, then:
//   1. reads the file with CsvReader alone, as a reference for the CSV parsing speed;
//   2. loads it with LoadUserShards into all `--shards` shards on each of `--threads`
//      (best of `--repeat` runs each), as a worker does for the shards it hosts, and
//      reports rows per wall second, per core (wall seconds × threads) and per CPU
//      second of all threads;
//   3. keeps one load and reports what it stores per user: the RawShard accounting
//      (RawShard::MemoryBytes), the growth of VmRSS from /proc/self/status and the peak
//      (VmHWM, reset before the load);
//   4. adds what a segmentation job holds per shard (a TransformedRowSource and the
//      KMeansShard state), runs AddCenters, LloydStep and Assign on every shard, and
//      reports VmRSS and its peak again.
// Ratios are against the raw feature bytes per user: 4 bytes per numeric cell plus the
// id's characters.
//
// Run: cohort_ingest_bench --rows 2000000 --cols 32 --file /tmp/ingest.csv
#include <malloc.h>
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/allocator.h"
#include "core/csv.h"
#include "core/features.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {
namespace {

struct BenchOptions {
  int64_t rows = 2000000;
  int cols = 32;
  int num_shards = 64;
  int repeat = 3;
  std::string file = "/tmp/cohort_ingest_bench.csv";
  std::vector<int> threads = {1, 2};
  bool speed_only = false;
};

// A field of /proc/self/status in bytes ("VmRSS", the resident size, or "VmHWM", its
// peak), or -1 when unknown.
int64_t StatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

int64_t ResidentBytes() { return StatusBytes("VmRSS"); }

// Resets VmHWM to the current resident size (Linux 4.0 and later).
void ResetPeakResident() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Writes rows of "u<i>" and `cols` values such as 1234.56 or -0.0123456, so the numbers
// take the text length of typical exported features.
absl::Status WriteUsers(const BenchOptions& options) {
  std::FILE* out = std::fopen(options.file.c_str(), "w");
  if (out == nullptr) return absl::InternalError(absl::StrCat("cannot write ", options.file));
  std::fputs("user_id", out);
  for (int c = 0; c < options.cols; ++c) std::fprintf(out, ",f%d", c);
  std::fputc('\n', out);
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < options.rows; ++i) {
    std::fprintf(out, "u%lld", static_cast<long long>(i));
    for (int c = 0; c < options.cols; ++c) {
      const double value = normal(rng) * (c % 4 == 0 ? 1000.0 : 1.0) + c;
      std::fprintf(out, ",%.6g", value);
    }
    std::fputc('\n', out);
  }
  return std::fclose(out) == 0 ? absl::OkStatus()
                               : absl::InternalError(absl::StrCat("cannot write ", options.file));
}

Schema UserSchema(int cols) {
  Schema schema;
  schema.columns.push_back({"user_id", ColumnType::kId});
  for (int c = 0; c < cols; ++c) schema.columns.push_back({absl::StrCat("f", c), ColumnType::kNumeric});
  return schema;
}

UserLoadOptions LoadOptions(const BenchOptions& options, int threads) {
  UserLoadOptions load;
  load.paths = {options.file};
  load.schema = UserSchema(options.cols);
  load.num_shards = options.num_shards;
  for (int s = 0; s < options.num_shards; ++s) load.shards.push_back(s);
  load.threads = threads;
  return load;
}

// Rows per second of CsvReader alone (fields copied into strings, nothing parsed).
double CsvReaderRowsPerSecond(const BenchOptions& options) {
  double best = 0;
  for (int r = 0; r < options.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(options.file, {});
    if (!reader.ok()) return 0;
    std::vector<std::string> fields;
    int64_t rows = 0;
    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      if (!has_record.ok() || !*has_record) break;
      ++rows;
    }
    best = std::max(best, static_cast<double>(rows) / Seconds(start));
  }
  return best;
}

// CPU seconds used by all threads of this process so far.
double ProcessCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

struct LoadRate {
  double rows_per_second = 0;      // rows / wall seconds
  double rows_per_cpu_second = 0;  // rows / CPU seconds of all threads
};

// The best of `repeat` loads on `threads` threads, by wall time and by CPU time.
LoadRate MeasureLoad(const BenchOptions& options, int threads) {
  LoadRate best;
  for (int r = 0; r < options.repeat; ++r) {
    const double cpu_start = ProcessCpuSeconds();
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<LoadedShards> loaded = LoadUserShards(LoadOptions(options, threads));
    const double wall = Seconds(start);
    const double cpu = ProcessCpuSeconds() - cpu_start;
    if (!loaded.ok()) {
      std::fprintf(stderr, "load failed: %s\n", std::string(loaded.status().message()).c_str());
      return {};
    }
    const auto rows = static_cast<double>(loaded->rows_read);
    best.rows_per_second = std::max(best.rows_per_second, rows / wall);
    best.rows_per_cpu_second = std::max(best.rows_per_cpu_second, rows / cpu);
  }
  return best;
}

int Run(const BenchOptions& options) {
  if (!std::filesystem::exists(options.file)) {
    std::fprintf(stderr, "writing %lld rows × %d columns to %s\n",
                 static_cast<long long>(options.rows), options.cols, options.file.c_str());
    if (absl::Status status = WriteUsers(options); !status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return 1;
    }
  }
  const double file_mib = static_cast<double>(std::filesystem::file_size(options.file)) / (1 << 20);
  std::printf("file %s: %.0f MiB, %d numeric columns, %d shards, max threads %d\n",
              options.file.c_str(), file_mib, options.cols, options.num_shards,
              omp_get_max_threads());

  const double reader_rate = CsvReaderRowsPerSecond(options);
  std::printf("CsvReader alone, 1 thread:  %6.2f M rows/s\n", reader_rate / 1e6);
  for (int threads : options.threads) {
    const LoadRate rate = MeasureLoad(options, threads);
    std::printf(
        "LoadUserShards, %d thread%s %6.2f M rows/s, %.2f M rows/s per core "
        "(wall × threads), %.2f M rows per CPU second\n",
        threads, threads == 1 ? ": " : "s:", rate.rows_per_second / 1e6,
        rate.rows_per_second / 1e6 / threads, rate.rows_per_cpu_second / 1e6);
  }
  if (options.speed_only) return 0;

  malloc_trim(0);
  ResetPeakResident();
  const int64_t rss_before = ResidentBytes();
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(LoadOptions(options, 0));
  if (!loaded.ok()) return 1;
  malloc_trim(0);  // as ShardStore::Load does after a load
  const int64_t rss_loaded = ResidentBytes();
  const int64_t peak_load = StatusBytes("VmHWM");
  int64_t users = 0;
  int64_t id_chars = 0;
  int64_t accounted = 0;
  for (const RawShard& shard : loaded->shards) {
    users += shard.num_rows();
    accounted += shard.MemoryBytes();
    for (int64_t i = 0; i < shard.num_rows(); ++i) id_chars += static_cast<int64_t>(shard.ids[i].size());
  }
  const double raw_per_user =
      4.0 * options.cols + static_cast<double>(id_chars) / static_cast<double>(users);
  const auto per_user = [&](int64_t bytes) {
    return static_cast<double>(bytes - rss_before) / static_cast<double>(users);
  };
  const double accounted_per_user = static_cast<double>(accounted) / static_cast<double>(users);
  std::printf("raw feature bytes per user (float32 cells + id chars): %.1f\n", raw_per_user);
  std::printf("after load: accounted %.1f B/user (%.2f×), VmRSS growth %.1f B/user (%.2f×), "
              "peak during the load %.1f B/user (%.2f×)\n",
              accounted_per_user, accounted_per_user / raw_per_user, per_user(rss_loaded),
              per_user(rss_loaded) / raw_per_user, per_user(peak_load),
              per_user(peak_load) / raw_per_user);

  // What a segmentation job adds on the worker, as JobSession builds it: a feature source
  // over each raw shard and the K-means state, then the steps of one Lloyd iteration.
  FeatureStats stats;
  for (const RawShard& shard : loaded->shards) stats.Merge(ComputeFeatureStats(shard));
  const Schema schema = UserSchema(options.cols);
  absl::StatusOr<FeatureTransform> transform = FitFeatureTransform(schema, stats, {});
  if (!transform.ok()) return 1;
  ResetPeakResident();
  std::vector<std::unique_ptr<TransformedRowSource>> features;
  std::vector<std::unique_ptr<KMeansShard>> kmeans;
  for (const RawShard& shard : loaded->shards) {
    features.push_back(std::make_unique<TransformedRowSource>(*transform, &shard));
    kmeans.push_back(std::make_unique<KMeansShard>(shard.shard_id, features.back().get(), nullptr));
  }
  const int64_t rss_job = ResidentBytes();
  constexpr int kBenchK = 10;
  const MatrixXfR centroids = MatrixXfR::Random(kBenchK, transform->dim());
  std::vector<std::vector<int32_t>> labels(kmeans.size());
  for (size_t s = 0; s < kmeans.size(); ++s) {
    (void)kmeans[s]->AddCenters(centroids.topRows(1));
    (void)kmeans[s]->LloydStep(centroids, kBenchK);
    std::vector<float> sq_dist;
    kmeans[s]->Assign(centroids, &labels[s], &sq_dist);
  }
  const int64_t peak_job = StatusBytes("VmHWM");
  std::printf("during a job: VmRSS growth %.1f B/user (%.2f×) with the K-means state, "
              "peak %.1f B/user (%.2f×) through AddCenters, LloydStep and Assign (k = %d)\n",
              per_user(rss_job), per_user(rss_job) / raw_per_user, per_user(peak_job),
              per_user(peak_job) / raw_per_user, kBenchK);
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::ReturnLargeBlocksWhenFreed();  // as the worker process does
  cohort::BenchOptions options;
  CLI::App app{"cohort ingest speed and worker memory per user"};
  app.add_option("--rows", options.rows, "users in a generated file")->capture_default_str();
  app.add_option("--cols", options.cols, "numeric columns")->capture_default_str();
  app.add_option("--shards", options.num_shards, "virtual shards, all loaded")
      ->capture_default_str();
  app.add_option("--repeat", options.repeat, "runs per speed measurement; the best is kept")
      ->capture_default_str();
  app.add_option("--file", options.file, "CSV to read; written first when it does not exist")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "thread counts of the load measurements")
      ->capture_default_str();
  app.add_flag("--speed-only", options.speed_only, "measure the load speed, not the memory");
  CLI11_PARSE(app, argc, argv);
  return cohort::Run(options);
}
