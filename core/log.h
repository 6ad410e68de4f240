// The project's one logging entry point: a thin wrapper over spdlog (Debian 12 has no
// absl/log). Log state changes with numbers; never log raw feature values or secrets.
#ifndef COHORT_CORE_LOG_H_
#define COHORT_CORE_LOG_H_

#include <spdlog/spdlog.h>

#include <string_view>

namespace cohort {

// Sets the global level from "debug", "info", "warn", "error" or "off" (unknown → info).
void SetLogLevel(std::string_view level);

}  // namespace cohort

#define COHORT_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define COHORT_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define COHORT_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define COHORT_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

#endif  // COHORT_CORE_LOG_H_
