#include "cli/output_file.h"

#include <unistd.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort {

absl::StatusOr<std::unique_ptr<OutputFile>> OutputFile::Open(const std::string& path) {
  // The process id keeps two commands that write the same path from sharing a temporary
  // file; the same folder makes the final rename atomic.
  std::unique_ptr<OutputFile> file(
      new OutputFile(path, absl::StrCat(path, ".", getpid(), ".tmp")));
  if (!file->stream_) return absl::InternalError(absl::StrCat("cannot write ", path));
  return file;
}

OutputFile::OutputFile(std::string path, std::string temp_path)
    : path_(std::move(path)),
      temp_path_(std::move(temp_path)),
      stream_(temp_path_, std::ios::binary | std::ios::trunc) {}

OutputFile::~OutputFile() {
  if (committed_) return;
  stream_.close();
  std::error_code ignored;
  std::filesystem::remove(temp_path_, ignored);
}

absl::Status OutputFile::Commit() {
  stream_.close();
  if (!stream_) return absl::InternalError(absl::StrCat("cannot write ", path_));
  std::error_code error;
  std::filesystem::rename(temp_path_, path_, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot write ", path_, ": renaming ", temp_path_, " failed: ",
                     error.message()));
  }
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace cohort
