// The client commands' helpers for output files and for naming flags in messages.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/flag_names.h"
#include "cli/output_file.h"
#include "tests/subprocess.h"

namespace cohort {
namespace {

using ::cohort::testing::ReadTextFile;

// A folder under the system temp folder, removed with its content on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cohort-cli-XXXXXX").string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

  // Writes `text` to the file `name` in this folder and returns its path.
  std::string WriteFile(const std::string& name, const std::string& text) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << text;
    return file;
  }

 private:
  std::string path_;
};

// Names of the files in `dir`.
std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

TEST(OutputFileTest, CommitMovesFileToPath) {
  TempDir temp;
  const std::string path = temp.path() + "/out.csv";
  absl::StatusOr<std::unique_ptr<OutputFile>> file = OutputFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  (*file)->stream() << "a,b\n1,2\n";
  EXPECT_FALSE(std::filesystem::exists(path));

  ASSERT_TRUE((*file)->Commit().ok());
  EXPECT_EQ(ReadTextFile(path), "a,b\n1,2\n");
  EXPECT_EQ(FileNames(temp.path()), std::vector<std::string>{"out.csv"});
}

TEST(OutputFileTest, UncommittedFileLeavesOldFile) {
  TempDir temp;
  const std::string path = temp.WriteFile("out.csv", "old\n");
  {
    absl::StatusOr<std::unique_ptr<OutputFile>> file = OutputFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    (*file)->stream() << "user_id,propensity,segment\n";
  }
  EXPECT_EQ(ReadTextFile(path), "old\n");
  EXPECT_EQ(FileNames(temp.path()), std::vector<std::string>{"out.csv"});
}

TEST(OutputFileTest, MissingFolderFailsAtOpen) {
  TempDir temp;
  const std::string path = temp.path() + "/no-such-folder/out.csv";
  absl::StatusOr<std::unique_ptr<OutputFile>> file = OutputFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status();
}

TEST(NameFlagsTest, FieldsBecomeFlags) {
  const std::vector<FlagName> flags = {{"max_iter", "--max-iter"}, {"k", "-k"},
                                       {"distance", "--distance"}};
  EXPECT_EQ(NameFlags("options.max_iter = 200000 is invalid; max_iter must be in [1, 100000]",
                      flags),
            "--max-iter = 200000 is invalid; --max-iter must be in [1, 100000]");
  EXPECT_EQ(NameFlags("options.k = 9 exceeds the 5 users of dataset 'd'", flags),
            "-k = 9 exceeds the 5 users of dataset 'd'");
  EXPECT_EQ(NameFlags("distance = 'l1' is invalid; use 'sqeuclidean' or 'cosine'", flags),
            "--distance = 'l1' is invalid; use 'sqeuclidean' or 'cosine'");
}

TEST(NameFlagsTest, UnderscoreNamesBecomeFlagsAnywhere) {
  const std::vector<FlagName> flags = {{"segment_model_id", "--segment-model"},
                                       {"per_segment_cap", "--cap"}};
  EXPECT_EQ(NameFlags("segments and per_segment_cap need segment_model_id; name it", flags),
            "segments and --cap need --segment-model; name it");
}

TEST(NameFlagsTest, OtherWordsStay) {
  const std::vector<FlagName> flags = {{"init", "--init"}, {"k", "-k"},
                                       {"distance", "--distance"}};
  // Parts of longer names, and the words in running text.
  EXPECT_EQ(NameFlags("options.n_init = 0 is invalid", flags), "options.n_init = 0 is invalid");
  EXPECT_EQ(NameFlags("use the cosine distance with k segments", flags),
            "use the cosine distance with k segments");
}

TEST(NameFlagsTest, QuotedValuesStay) {
  const std::vector<FlagName> flags = {{"label_column", "--label"},
                                       {"test_fraction", "--test-fraction"},
                                       {"seed", "--seed"}};
  // Columns the user named like request fields.
  EXPECT_EQ(NameFlags("options.label_column 'test_fraction' is not a column of the dataset; "
                      "its columns are 'id', 'seed', 'test_fraction'",
                      flags),
            "--label 'test_fraction' is not a column of the dataset; its columns are 'id', "
            "'seed', 'test_fraction'");
}

}  // namespace
}  // namespace cohort
