#include "core/csv.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace cohort {
namespace {

using Fields = std::vector<std::string>;

// A fresh directory under the test temp dir, removed with the fixture.
class CsvReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("cohort_csv_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteFile(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out << bytes;
    return path;
  }

  std::string WriteGzipFile(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr);
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }

  // Reads every record after the header. Fails the test on an error.
  std::vector<Fields> ReadAll(const std::string& path, const CsvOptions& options = {}) {
    auto reader = CsvReader::Open(path, options);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!reader.ok()) return {};
    std::vector<Fields> records;
    Fields fields;
    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      EXPECT_TRUE(has_record.ok()) << has_record.status();
      if (!has_record.ok() || !*has_record) break;
      records.push_back(fields);
    }
    return records;
  }

  // Returns the first error of reading `path` to the end, or OK.
  absl::Status FirstError(const std::string& path, const CsvOptions& options = {}) {
    auto reader = CsvReader::Open(path, options);
    if (!reader.ok()) return reader.status();
    Fields fields;
    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      if (!has_record.ok()) return has_record.status();
      if (!*has_record) return absl::OkStatus();
    }
  }

  std::filesystem::path dir_;
};

TEST_F(CsvReaderTest, ReadsHeaderAndRecords) {
  const std::string path = WriteFile("plain.csv", "id,age,city\n1,30,Paris\n2,41,Lyon\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->header(), (Fields{"id", "age", "city"}));
  EXPECT_EQ((*reader)->path(), path);

  Fields fields;
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"1", "30", "Paris"}));
  EXPECT_EQ((*reader)->line(), 2);
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"2", "41", "Lyon"}));
  EXPECT_EQ((*reader)->line(), 3);
  EXPECT_FALSE(*(*reader)->Next(&fields));
  EXPECT_FALSE(*(*reader)->Next(&fields));
}

TEST_F(CsvReaderTest, QuotedFieldKeepsDelimiter) {
  const std::string path = WriteFile("q.csv", "a,b\n\"x,y\",\"\"\n");
  EXPECT_EQ(ReadAll(path), (std::vector<Fields>{{"x,y", ""}}));
}

TEST_F(CsvReaderTest, DoubledQuoteIsOneQuote) {
  const std::string path = WriteFile("dq.csv", "a,b\n\"say \"\"hi\"\"\",\"\"\"\"\n");
  EXPECT_EQ(ReadAll(path), (std::vector<Fields>{{"say \"hi\"", "\""}}));
}

TEST_F(CsvReaderTest, QuoteInsideUnquotedFieldIsLiteral) {
  const std::string path = WriteFile("lit.csv", "h,w\n5'10\",70\n");
  EXPECT_EQ(ReadAll(path), (std::vector<Fields>{{"5'10\"", "70"}}));
}

TEST_F(CsvReaderTest, EmbeddedNewlineStaysInField) {
  const std::string path = WriteFile("nl.csv", "a,b\n\"line1\nline2\",x\n3,y\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  Fields fields;
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"line1\nline2", "x"}));
  EXPECT_EQ((*reader)->line(), 2);
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"3", "y"}));
  // The record after the two-line field starts on physical line 4.
  EXPECT_EQ((*reader)->line(), 4);
}

TEST_F(CsvReaderTest, CrlfLineEnds) {
  const std::string path = WriteFile("crlf.csv", "a,b\r\n1,2\r\n\"3\r\n4\",5\r\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->header(), (Fields{"a", "b"}));
  Fields fields;
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"1", "2"}));
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"3\r\n4", "5"}));
  EXPECT_EQ((*reader)->line(), 3);
  EXPECT_FALSE(*(*reader)->Next(&fields));
}

TEST_F(CsvReaderTest, MissingFinalNewline) {
  EXPECT_EQ(ReadAll(WriteFile("nofinal.csv", "a,b\n1,2\n3,4")),
            (std::vector<Fields>{{"1", "2"}, {"3", "4"}}));
  EXPECT_EQ(ReadAll(WriteFile("nofinal_crlf.csv", "a,b\r\n1,\"2\"")),
            (std::vector<Fields>{{"1", "2"}}));
  EXPECT_EQ(ReadAll(WriteFile("trailing_empty.csv", "a,b\n1,")),
            (std::vector<Fields>{{"1", ""}}));
}

TEST_F(CsvReaderTest, BlankLinesAreSkipped) {
  const std::string path = WriteFile("blank.csv", "a,b\n\n1,2\r\n\r\n3,4\n\n");
  EXPECT_EQ(ReadAll(path), (std::vector<Fields>{{"1", "2"}, {"3", "4"}}));
}

TEST_F(CsvReaderTest, SemicolonDelimiter) {
  CsvOptions options;
  options.delimiter = ';';
  const std::string path = WriteFile("semi.csv", "\"a\";\"b\"\n1,5;\"x;y\"\n");
  auto reader = CsvReader::Open(path, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->header(), (Fields{"a", "b"}));
  EXPECT_EQ(ReadAll(path, options), (std::vector<Fields>{{"1,5", "x;y"}}));
}

TEST_F(CsvReaderTest, TabDelimiterWithoutHeader) {
  CsvOptions options;
  options.delimiter = '\t';
  options.has_header = false;
  const std::string path = WriteFile("tab.tsv", "1\t2\t3\n4\t5\t6\n");
  auto reader = CsvReader::Open(path, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->header().empty());
  EXPECT_EQ(ReadAll(path, options), (std::vector<Fields>{{"1", "2", "3"}, {"4", "5", "6"}}));
}

TEST_F(CsvReaderTest, Utf8BomIsSkipped) {
  const std::string path = WriteFile("bom.csv", "\xEF\xBB\xBFid,name\n1,\xE5\xBC\xA0\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->header(), (Fields{"id", "name"}));
  EXPECT_EQ(ReadAll(path), (std::vector<Fields>{{"1", "\xE5\xBC\xA0"}}));
}

TEST_F(CsvReaderTest, GzipFileIsDecompressed) {
  std::string text = "id,value,note\n";
  for (int i = 0; i < 50000; ++i) {
    text += std::to_string(i) + "," + std::to_string(i * 2) + ",\"n, " + std::to_string(i) + "\"\n";
  }
  const std::string path = WriteGzipFile("big.csv.gz", text);
  ASSERT_LT(std::filesystem::file_size(path), text.size());

  const std::vector<Fields> records = ReadAll(path);
  ASSERT_EQ(records.size(), 50000u);
  EXPECT_EQ(records[0], (Fields{"0", "0", "n, 0"}));
  EXPECT_EQ(records[49999], (Fields{"49999", "99998", "n, 49999"}));
}

TEST_F(CsvReaderTest, RecordsSpanningReadChunks) {
  // Fields longer than one 1 MiB read chunk, quoted and unquoted, cross buffer refills.
  const std::string long_plain(3 << 20, 'p');
  std::string long_quoted(3 << 20, 'q');
  long_quoted[1 << 20] = '\n';
  const std::string path = WriteFile(
      "long.csv", "a,b\n" + long_plain + ",\"" + long_quoted + "\"\nx,\"y\"\"\"\n");
  const std::vector<Fields> records = ReadAll(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0][0], long_plain);
  EXPECT_EQ(records[0][1], long_quoted);
  EXPECT_EQ(records[1], (Fields{"x", "y\""}));
}

TEST_F(CsvReaderTest, UnterminatedQuoteNamesLineAndColumn) {
  const std::string path = WriteFile("unterminated.csv", "a,b\n1,2\n3,\"open\n4,5\n");
  const absl::Status status = FirstError(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(path + ":3: column 2: "), std::string::npos) << status;
  EXPECT_NE(status.message().find("not closed"), std::string::npos) << status;
}

TEST_F(CsvReaderTest, CharacterAfterClosingQuoteIsRejected) {
  const std::string path = WriteFile("after.csv", "a,b,c\n1,2,3\n4,5,\"six\"x\n");
  const absl::Status status = FirstError(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(path + ":3: column 3: unexpected character 'x' after closing quote"),
            std::string::npos)
      << status;
}

TEST_F(CsvReaderTest, WrongFieldCountNamesLineAndCounts) {
  const std::string path = WriteFile("count.csv", "a,b,c\n1,2,3\n4,5\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  Fields fields;
  ASSERT_TRUE(*(*reader)->Next(&fields));
  const absl::StatusOr<bool> second = (*reader)->Next(&fields);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(second.status().message().find(path + ":3: expected 3 fields"), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("found 2"), std::string::npos) << second.status();
  // The error is sticky: the reader does not resume after a malformed record.
  EXPECT_EQ((*reader)->Next(&fields).status(), second.status());
}

TEST_F(CsvReaderTest, FieldCountWithoutHeaderFollowsFirstRecord) {
  CsvOptions options;
  options.has_header = false;
  const std::string path = WriteFile("count_nohdr.csv", "1,2\n3,4,5\n");
  const absl::Status status = FirstError(path, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(path + ":2: expected 2 fields (as in the first record)"),
            std::string::npos)
      << status;
}

TEST_F(CsvReaderTest, EmptyFileWithHeaderIsInvalid) {
  const std::string path = WriteFile("empty.csv", "");
  auto reader = CsvReader::Open(path, {});
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(reader.status().message().find("file '" + path + "' is empty; expected a header row"),
            std::string::npos)
      << reader.status();
}

TEST_F(CsvReaderTest, EmptyFileWithoutHeaderHasNoRecords) {
  CsvOptions options;
  options.has_header = false;
  EXPECT_TRUE(ReadAll(WriteFile("empty_nohdr.csv", ""), options).empty());
}

TEST_F(CsvReaderTest, HeaderOnlyFileHasNoRecords) {
  EXPECT_TRUE(ReadAll(WriteFile("header_only.csv", "a,b\n")).empty());
}

TEST_F(CsvReaderTest, MissingFileIsNotFound) {
  auto reader = CsvReader::Open((dir_ / "absent.csv").string(), {});
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  auto gz_reader = CsvReader::Open((dir_ / "absent.csv.gz").string(), {});
  EXPECT_EQ(gz_reader.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CsvReaderTest, InvalidOptionsAreRejected) {
  const std::string path = WriteFile("opts.csv", "a\n1\n");
  CsvOptions same;
  same.delimiter = '"';
  EXPECT_EQ(CsvReader::Open(path, same).status().code(), absl::StatusCode::kInvalidArgument);
  CsvOptions newline;
  newline.delimiter = '\n';
  EXPECT_EQ(newline.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CsvOptions{}.Validate().ok());
}

TEST_F(CsvReaderTest, NextReusesFieldsVector) {
  const std::string path = WriteFile("reuse.csv", "a,b\n1,2\n3,4\n");
  auto reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  Fields fields = {"stale", "values", "and", "more"};
  ASSERT_TRUE(*(*reader)->Next(&fields));
  EXPECT_EQ(fields, (Fields{"1", "2"}));
}

TEST_F(CsvReaderTest, ExpandPathsSortsGlobMatches) {
  WriteFile("part-10.csv", "a\n");
  WriteFile("part-02.csv", "a\n");
  WriteFile("part-01.csv", "a\n");
  WriteFile("other.txt", "a\n");
  std::filesystem::create_directories(dir_ / "part-99.csv");  // directories are not files

  auto paths = ExpandPaths((dir_ / "part-*.csv").string());
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, (std::vector<std::string>{(dir_ / "part-01.csv").string(),
                                              (dir_ / "part-02.csv").string(),
                                              (dir_ / "part-10.csv").string()}));
}

TEST_F(CsvReaderTest, ExpandPathsReturnsExistingPlainPath) {
  const std::string path = WriteFile("single.csv", "a\n");
  auto paths = ExpandPaths(path);
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, std::vector<std::string>{path});
}

TEST_F(CsvReaderTest, ExpandPathsWithoutMatchIsNotFound) {
  const std::string pattern = (dir_ / "nothing-*.csv").string();
  auto paths = ExpandPaths(pattern);
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(paths.status().message().find(pattern), std::string::npos) << paths.status();

  const std::string plain = (dir_ / "missing.csv").string();
  auto missing = ExpandPaths(plain);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(plain), std::string::npos) << missing.status();
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("用户画像"));
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80"));  // U+1F600, four bytes
}

TEST(Utf8Test, RejectsMalformedBytes) {
  EXPECT_FALSE(IsValidUtf8("s\xff" "uth"));           // never valid in UTF-8
  EXPECT_FALSE(IsValidUtf8("caf\xe9"));               // Latin-1 é
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));              // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));          // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));      // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE7\x94"));              // truncated sequence
}

}  // namespace
}  // namespace cohort
