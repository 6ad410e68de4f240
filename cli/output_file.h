// Output files of the client commands that appear at their path only when complete.
#ifndef COHORT_CLI_OUTPUT_FILE_H_
#define COHORT_CLI_OUTPUT_FILE_H_

#include <fstream>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

// A file written under a temporary name in the folder of its path and renamed to the
// path by Commit(). Destroying an OutputFile that was not committed removes the
// temporary file, so a command that fails halfway leaves no partial file and keeps an
// older file at the path unchanged. Thread safety: none.
class OutputFile {
 public:
  // Creates the temporary file. Errors: Internal naming `path` when it cannot be written.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<OutputFile>> Open(const std::string& path);

  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  std::ostream& stream() { return stream_; }
  const std::string& path() const { return path_; }

  // Closes the file and renames it to its path. Errors: Internal naming the path when a
  // write failed or the rename fails; the temporary file is then removed.
  [[nodiscard]] absl::Status Commit();

 private:
  OutputFile(std::string path, std::string temp_path);

  const std::string path_;
  const std::string temp_path_;
  std::ofstream stream_;
  bool committed_ = false;
};

}  // namespace cohort

#endif  // COHORT_CLI_OUTPUT_FILE_H_
