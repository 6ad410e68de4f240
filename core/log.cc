#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace cohort {

void SetLogLevel(std::string_view level) {
  // Logs go to stderr so that stdout stays free for results.
  static const bool kStderrSink = [] {
    spdlog::set_default_logger(spdlog::stderr_color_mt("cohort"));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
    return true;
  }();
  (void)kStderrSink;
  // spdlog maps an unknown name to "off"; this function promises "info".
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  spdlog::set_level(parsed == spdlog::level::off && level != "off" ? spdlog::level::info
                                                                    : parsed);
}

bool LogRateLimit::ShouldLog(absl::Time now, int64_t* suppressed) {
  if (now - last_logged_ < interval_) {
    ++suppressed_;
    return false;
  }
  *suppressed = suppressed_;
  suppressed_ = 0;
  last_logged_ = now;
  return true;
}

void LogRateLimit::Reset() {
  last_logged_ = absl::InfinitePast();
  suppressed_ = 0;
}

}  // namespace cohort
