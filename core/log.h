// The project's one logging entry point: a thin wrapper over spdlog (Debian 12 has no
// absl/log). Log state changes with numbers; never log raw feature values or secrets.
#ifndef COHORT_CORE_LOG_H_
#define COHORT_CORE_LOG_H_

#include <spdlog/spdlog.h>

#include <cstdint>
#include <string_view>

#include "absl/time/time.h"

namespace cohort {

// Sets the global level from "debug", "info", "warn", "error" or "off" (unknown → info).
void SetLogLevel(std::string_view level);

// Picks which occurrences of a repeating warning to log: the first, then at most one per
// `interval`, and counts the occurrences left out in between. The caller keeps one per
// repeating condition (per worker, say). Thread safety: none; guard it with the lock of
// the state it belongs to.
class LogRateLimit {
 public:
  explicit LogRateLimit(absl::Duration interval) : interval_(interval) {}

  // Returns true when the occurrence at `now` should be logged, and then sets
  // `*suppressed` to the number of occurrences not logged since the last logged one.
  bool ShouldLog(absl::Time now, int64_t* suppressed);
  // Ends the condition: its next occurrence is logged at once.
  void Reset();

 private:
  absl::Duration interval_;
  absl::Time last_logged_ = absl::InfinitePast();
  int64_t suppressed_ = 0;
};

}  // namespace cohort

#define COHORT_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define COHORT_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define COHORT_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define COHORT_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

#endif  // COHORT_CORE_LOG_H_
