// cohort_cf_bench: times the similarity kernels on inputs that bench/compare_cf.py
// writes, so the script can run scipy and FAISS on the same numbers in the same run.
//
// Subcommands (every file is raw little-endian, shapes given on the command line):
//   sparse  --triplets F --nnz N --users U --items I: int32 user, int32 item, float32
//           value per entry (12 bytes). Builds the CSR as a job does (users sharded by
//           ShardOfUser, item dictionary merged from the shards), then times
//           ComputeAllItemNeighbors. Writes the neighbour ids (items × k int64, −1 pad).
//   exact   --base F --n N --queries F --q Q --d D: float32 rows. Times ExactDenseTopK
//           with the inner product. Writes the ids (q × k int64). With --all-pairs, times
//           ExactDenseAllPairsTopK of the base rows instead and writes n × k ids.
//           --kernel auto|float|int8 picks the first pass (DenseSearchOptions::kernel).
//   ivf     as exact, plus --centroids F --lists L --assign F (int32 label per base row)
//           and --nprobe P...: builds an IvfIndex and times Search per nprobe. Writes
//           OUT.nprobe<P> per nprobe.
// The timing and sizes go to stdout as one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/interactions.h"
#include "core/matrix.h"
#include "core/similarity.h"

namespace cohort {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename T>
bool ReadRaw(const std::string& path, size_t count, std::vector<T>* out) {
  out->resize(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(count * sizeof(T)));
  return static_cast<size_t>(in.gcount()) == count * sizeof(T);
}

bool ReadMatrix(const std::string& path, int64_t rows, int64_t cols, MatrixXfR* out) {
  out->resize(rows, cols);
  std::ifstream in(path, std::ios::binary);
  const std::streamsize bytes = static_cast<std::streamsize>(rows * cols * sizeof(float));
  in.read(reinterpret_cast<char*>(out->data()), bytes);
  return in.gcount() == bytes;
}

void WriteIds(const std::string& path, const std::vector<std::vector<Neighbor>>& lists, int k) {
  std::vector<int64_t> ids(lists.size() * static_cast<size_t>(k), -1);
  for (size_t i = 0; i < lists.size(); ++i) {
    for (size_t r = 0; r < lists[i].size() && r < static_cast<size_t>(k); ++r) {
      ids[i * k + r] = lists[i][r].id;
    }
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(ids.data()),
             static_cast<std::streamsize>(ids.size() * sizeof(int64_t)));
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "cohort_cf_bench: %s\n", message.c_str());
  return 2;
}

struct Args {
  std::string triplets, base, queries, centroids, assign, out;
  int64_t nnz = 0, users = 0, items = 0, n = 0, q = 0, d = 0, lists = 0;
  int k = 10, shards = 1, repeats = 1;
  bool all_pairs = false;
  std::string kernel = "auto";
  std::string measure = "cosine";
  std::vector<int> nprobe;
};

int RunSparse(const Args& args) {
  std::vector<int32_t> raw;
  if (!ReadRaw(args.triplets, static_cast<size_t>(args.nnz) * 3, &raw)) {
    return Fail("cannot read " + args.triplets);
  }
  // Zero-padded ids keep the dictionary (sorted by bytes) in numeric order.
  std::vector<InteractionRow> rows(static_cast<size_t>(args.nnz));
  for (int64_t e = 0; e < args.nnz; ++e) {
    float value = 0;
    std::memcpy(&value, &raw[3 * e + 2], sizeof(float));
    rows[e] = {absl::StrFormat("u%08d", raw[3 * e]), absl::StrFormat("i%08d", raw[3 * e + 1]), value,
               kNoTime};
  }
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<InteractionDataset> dataset =
      BuildInteractionDataset(rows, args.shards, DuplicateRule::kSum);
  if (!dataset.ok()) return Fail(std::string(dataset.status().message()));
  const double build_seconds = Seconds(start);
  rows.clear();
  rows.shrink_to_fit();

  absl::StatusOr<SimilarityMeasure> measure = ParseSimilarityMeasure(args.measure);
  if (!measure.ok()) return Fail(std::string(measure.status().message()));
  SimilarityOptions options;
  options.measure = *measure;
  options.k = args.k;
  std::vector<double> times;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors;
  for (int repeat = 0; repeat < args.repeats; ++repeat) {
    start = std::chrono::steady_clock::now();
    neighbors = ComputeAllItemNeighbors(dataset->shards, options);
    times.push_back(Seconds(start));
    if (!neighbors.ok()) return Fail(std::string(neighbors.status().message()));
  }
  std::sort(times.begin(), times.end());
  if (!args.out.empty()) WriteIds(args.out, *neighbors, args.k);
  nlohmann::json result = {{"build_seconds", build_seconds},
                           {"seconds", times[times.size() / 2]},
                           {"all_seconds", times},
                           {"items", dataset->dictionary.size()},
                           {"interactions", dataset->build_counts.interactions},
                           {"threads", omp_get_max_threads()}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

int RunDense(const Args& args, bool ivf) {
  MatrixXfR base, queries;
  if (!ReadMatrix(args.base, args.n, args.d, &base)) return Fail("cannot read " + args.base);
  if (!ReadMatrix(args.queries, args.q, args.d, &queries)) return Fail("cannot read " + args.queries);
  std::vector<int64_t> base_ids(static_cast<size_t>(args.n));
  for (int64_t i = 0; i < args.n; ++i) base_ids[i] = i;
  DenseSearchOptions options;
  options.metric = DenseMetric::kInnerProduct;
  options.k = args.k;
  options.exclude_self = false;
  if (args.kernel == "float") {
    options.kernel = DenseKernel::kFloat;
  } else if (args.kernel == "int8") {
    options.kernel = DenseKernel::kInt8;
  }
  nlohmann::json result = {{"threads", omp_get_max_threads()}, {"kernel", args.kernel}};

  if (!ivf) {
    std::vector<double> times;
    absl::StatusOr<std::vector<std::vector<Neighbor>>> top;
    for (int repeat = 0; repeat < args.repeats; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      top = args.all_pairs ? ExactDenseAllPairsTopK(base, base_ids, options)
                           : ExactDenseTopK(queries, {}, base, base_ids, options);
      times.push_back(Seconds(start));
      if (!top.ok()) return Fail(std::string(top.status().message()));
    }
    std::sort(times.begin(), times.end());
    if (!args.out.empty()) WriteIds(args.out, *top, args.k);
    result["seconds"] = times[times.size() / 2];
    result["all_seconds"] = times;
    std::printf("%s\n", result.dump().c_str());
    return 0;
  }

  MatrixXfR centroids;
  std::vector<int32_t> assign;
  if (!ReadMatrix(args.centroids, args.lists, args.d, &centroids)) {
    return Fail("cannot read " + args.centroids);
  }
  if (!ReadRaw(args.assign, static_cast<size_t>(args.n), &assign)) return Fail("cannot read " + args.assign);
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<IvfIndex> index =
      IvfIndex::Build(centroids, false, assign, base, base_ids, DenseMetric::kInnerProduct);
  if (!index.ok()) return Fail(std::string(index.status().message()));
  result["build_seconds"] = Seconds(start);
  nlohmann::json per_nprobe = nlohmann::json::object();
  for (int nprobe : args.nprobe) {
    std::vector<double> times;
    absl::StatusOr<std::vector<std::vector<Neighbor>>> top;
    for (int repeat = 0; repeat < args.repeats; ++repeat) {
      start = std::chrono::steady_clock::now();
      top = index->Search(queries, queries, {}, options, nprobe);
      times.push_back(Seconds(start));
      if (!top.ok()) return Fail(std::string(top.status().message()));
    }
    std::sort(times.begin(), times.end());
    if (!args.out.empty()) WriteIds(absl::StrCat(args.out, ".nprobe", nprobe), *top, args.k);
    per_nprobe[std::to_string(nprobe)] = times[times.size() / 2];
  }
  result["seconds_by_nprobe"] = per_nprobe;
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::Args args;
  CLI::App app{"Times cohort's similarity kernels on raw input files (see bench/compare_cf.py)"};
  app.require_subcommand(1);

  CLI::App* sparse = app.add_subcommand("sparse", "all-items item-item top-k on sparse interactions");
  sparse->add_option("--triplets", args.triplets, "int32 user, int32 item, float32 value per entry")->required();
  sparse->add_option("--nnz", args.nnz, "number of entries")->required();
  sparse->add_option("--measure", args.measure, "cosine, pearson, adjusted_cosine, jaccard or msd");
  sparse->add_option("--shards", args.shards, "virtual shards S");
  for (CLI::App* dense : {app.add_subcommand("exact", "exact dense top-k, inner product"),
                          app.add_subcommand("ivf", "inverted-file dense top-k, inner product")}) {
    dense->add_option("--base", args.base, "float32 n×d rows")->required();
    dense->add_option("--n", args.n, "base rows")->required();
    dense->add_option("--queries", args.queries, "float32 q×d rows")->required();
    dense->add_option("--q", args.q, "query rows")->required();
    dense->add_option("--d", args.d, "dimension")->required();
    if (dense->get_name() == "exact") {
      dense->add_flag("--all-pairs", args.all_pairs,
                      "every base row against the other base rows (ExactDenseAllPairsTopK); "
                      "the queries are still read but not used");
      dense->add_option("--kernel", args.kernel, "first pass of the exact search: auto, float or int8")
          ->check(CLI::IsMember({"auto", "float", "int8"}));
    }
    if (dense->get_name() == "ivf") {
      dense->add_option("--centroids", args.centroids, "float32 lists×d centroids")->required();
      dense->add_option("--lists", args.lists, "number of centroids")->required();
      dense->add_option("--assign", args.assign, "int32 list of each base row")->required();
      dense->add_option("--nprobe", args.nprobe, "lists probed per query")->required();
    }
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->add_option("-k,--k", args.k, "neighbours per row");
    sub->add_option("--out", args.out, "file for the neighbour ids (int64, −1 pads)");
    sub->add_option("--repeats", args.repeats, "timed runs; the median is reported");
  }

  CLI11_PARSE(app, argc, argv);
  if (sparse->parsed()) return cohort::RunSparse(args);
  return cohort::RunDense(args, app.get_subcommand("ivf")->parsed());
}
