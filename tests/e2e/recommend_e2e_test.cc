// End-to-end test of `cohort neighbours`, `cohort recommend` and `cohort local recommend`
// on MovieLens 100k: a coordinator and two workers as separate processes on loopback.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/interactions.h"
#include "core/similarity.h"
#include "tests/e2e/subprocess.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

using testing::Subprocess;

constexpr absl::Duration kServerTimeout = absl::Seconds(30);
constexpr absl::Duration kCommandTimeout = absl::Seconds(300);

// The data lines of a command's CSV output ("#" lines and the header left out), split
// into fields.
std::vector<std::vector<std::string>> DataLines(const std::string& text) {
  std::vector<std::vector<std::string>> lines;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    if (header) {
      header = false;
      continue;
    }
    lines.push_back(absl::StrSplit(line, ','));
  }
  return lines;
}

class RecommendEndToEndTest : public testing::CliProcessTest {
 protected:
  RecommendEndToEndTest() { command_timeout_ = kCommandTimeout; }
};

TEST_F(RecommendEndToEndTest, MovieLensNeighboursAndRecommendations) {
  COHORT_REQUIRE_DATA_FILE(ratings, "movielens-100k/u.data");
  const std::vector<std::string> file_flags = {"--interactions", ratings, "--delimiter", "\t",
                                               "--no-header", "--no-progress"};

  Subprocess* coordinator = Spawn("coordinator", {"coordinator", "--listen", "127.0.0.1:0"});
  ASSERT_NE(coordinator, nullptr);
  const std::optional<std::string> address =
      coordinator->AwaitStderrLine("coordinator listening on ", kServerTimeout);
  ASSERT_TRUE(address.has_value()) << coordinator->Stderr();
  for (int i = 0; i < 2; ++i) {
    const std::string id = absl::StrCat("w", i);
    Subprocess* worker = Spawn(absl::StrCat("worker", i), {"worker", "--listen", "127.0.0.1:0",
                                                           "--coordinator", *address, "--id", id});
    ASSERT_NE(worker, nullptr);
    ASSERT_TRUE(worker->AwaitStderrLine(absl::StrCat("worker ", id, " listening on "),
                                        kServerTimeout)
                    .has_value())
        << worker->Stderr();
  }

  // Item–item neighbours of two movies, against the core result on the same 64 shards.
  std::vector<std::string> args = {"neighbours", "--coordinator", *address, "--kind", "item",
                                   "--measure", "cosine", "-k", "20", "--show", "1,50",
                                   "--baseline-epochs", "3", "--baseline-reg-item", "5",
                                   "--baseline-reg-user", "0"};
  args.insert(args.end(), file_flags.begin(), file_flags.end());
  const CommandResult neighbours = Run("neighbours", args);
  ASSERT_EQ(neighbours.exit_code, 0) << neighbours.err;
  const auto lines = DataLines(neighbours.out);
  ASSERT_EQ(lines.size(), 40u) << neighbours.out;

  InteractionLoadOptions load;
  load.paths = {ratings};
  load.csv.delimiter = '\t';
  load.csv.has_header = false;
  load.user_column = "0";
  load.item_column = "1";
  load.value_column = "2";
  load.num_shards = 64;
  absl::StatusOr<InteractionDataset> data = LoadInteractionDataset(load, DuplicateRule::kKeepLatest);
  ASSERT_TRUE(data.ok()) << data.status();
  SimilarityOptions similarity;
  similarity.k = 20;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> expected =
      ComputeAllItemNeighbors(data->shards, similarity);
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const auto& line : lines) {
    ASSERT_EQ(line.size(), 4u);
    int rank = 0;
    double score = 0;
    ASSERT_TRUE(absl::SimpleAtoi(line[1], &rank));
    ASSERT_TRUE(absl::SimpleAtod(line[3], &score));
    const Neighbor& want = (*expected)[data->dictionary.Find(line[0])][rank - 1];
    EXPECT_EQ(line[2], data->dictionary.id(static_cast<int32_t>(want.id))) << line[0];
    EXPECT_NEAR(score, want.score, 1e-5) << line[0];
  }

  // Recommendations of three users in client mode, then in local mode.
  std::map<std::string, std::set<std::string>> seen;
  for (const InteractionMatrix& shard : data->shards) {
    for (int64_t row = 0; row < shard.num_users(); ++row) {
      for (int64_t e = shard.row_ptr[row]; e < shard.row_ptr[row + 1]; ++e) {
        seen[shard.user_ids[row]].insert(data->dictionary.id(shard.item_index[e]));
      }
    }
  }
  for (const std::string& method : {std::string("item"), std::string("hybrid")}) {
    SCOPED_TRACE(method);
    std::vector<std::string> recommend_args = {"recommend", "--coordinator", *address,
                                               "--user", "1,2,3", "-n", "10", "-k", "30",
                                               "--method", method};
    recommend_args.insert(recommend_args.end(), file_flags.begin(), file_flags.end());
    const CommandResult recommend = Run("recommend-" + method, recommend_args);
    ASSERT_EQ(recommend.exit_code, 0) << recommend.err;
    const auto items = DataLines(recommend.out);
    ASSERT_EQ(items.size(), 30u) << recommend.out;
    for (const auto& line : items) {
      ASSERT_EQ(line.size(), 5u);
      EXPECT_EQ(seen[line[0]].count(line[2]), 0u) << "user " << line[0] << " already has "
                                                  << line[2];
    }

    std::vector<std::string> local_args = {"local", "recommend", "--workers", "2",
                                           "--user", "1,2,3", "-n", "10", "-k", "30",
                                           "--method", method};
    local_args.insert(local_args.end(), file_flags.begin(), file_flags.end());
    const CommandResult local = Run("local-" + method, local_args);
    ASSERT_EQ(local.exit_code, 0) << local.err;
    EXPECT_EQ(local.out, recommend.out);
  }

  // A bad flag is reported with its value and a non-zero exit code.
  std::vector<std::string> bad = {"neighbours", "--coordinator", *address, "--measure", "dice"};
  bad.insert(bad.end(), file_flags.begin(), file_flags.end());
  const CommandResult rejected = Run("bad-measure", bad);
  EXPECT_NE(rejected.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(rejected.err, "dice")) << rejected.err;
  std::vector<std::string> bad_epochs = {"neighbours", "--coordinator", *address,
                                         "--baseline-epochs", "0"};
  bad_epochs.insert(bad_epochs.end(), file_flags.begin(), file_flags.end());
  const CommandResult rejected_epochs = Run("bad-epochs", bad_epochs);
  EXPECT_NE(rejected_epochs.exit_code, 0);
  // The message names the flag, not the request field baseline_epochs.
  EXPECT_TRUE(absl::StrContains(rejected_epochs.err, "--baseline-epochs = 0"))
      << rejected_epochs.err;
  std::vector<std::string> content = {"recommend", "--coordinator", *address, "--user", "1",
                                      "--method", "content"};
  content.insert(content.end(), file_flags.begin(), file_flags.end());
  const CommandResult no_content_model = Run("content-without-model", content);
  EXPECT_NE(no_content_model.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(no_content_model.err, "--content-model is missing"))
      << no_content_model.err;
  content.insert(content.end(), {"--content-model", "job-999999"});
  const CommandResult unknown_content_model = Run("content-unknown-model", content);
  EXPECT_NE(unknown_content_model.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(unknown_content_model.err, "job-999999"))
      << unknown_content_model.err;

  // Bad recommendation options fail in the command, before the file is loaded, and the
  // message names the flag (the coordinator names the request field instead).
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"-n", "0"}, {"--hybrid-weight", "2"}}) {
    std::vector<std::string> bad_recommend = {"recommend", "--coordinator", *address, "--user",
                                              "1", "--method", "hybrid", flag, value};
    bad_recommend.insert(bad_recommend.end(), file_flags.begin(), file_flags.end());
    const CommandResult early = Run("bad-recommend" + flag, bad_recommend);
    EXPECT_NE(early.exit_code, 0);
    EXPECT_TRUE(absl::StrContains(early.err, absl::StrCat(flag, " ", value))) << early.err;
  }
}

}  // namespace
}  // namespace cohort
