#include "coordinator/state_file.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace cohort {

absl::Status WriteMessageAtomically(const std::string& path,
                                    const google::protobuf::Message& message) {
  const std::string temp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out || !message.SerializeToOstream(&out)) {
      return absl::InternalError(absl::StrCat("cannot write ", temp));
    }
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot rename ", temp, ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace cohort
