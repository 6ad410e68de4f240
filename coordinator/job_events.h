// Progress events of a job driver, rate-limited and completed with the job's common
// fields before they reach the job's watchers.
#ifndef COHORT_COORDINATOR_JOB_EVENTS_H_
#define COHORT_COORDINATOR_JOB_EVENTS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.pb.h"

namespace cohort {

// Thread safety: used by the one thread that drives the job.
class JobEvents {
 public:
  // Events are rate-limited so that a fast job does not flood its watchers. Phase
  // changes and forced events always go out.
  static constexpr absl::Duration kMinInterval = absl::Milliseconds(100);

  JobEvents(std::string job_id, std::function<void(const v1::JobEvent&)> on_event, int shards)
      : job_id_(std::move(job_id)),
        on_event_(std::move(on_event)),
        shards_(shards),
        start_(absl::Now()) {}

  // Sets the job id, state, shard counts, elapsed time and rows per second, then passes
  // `event` on unless it repeats the last phase within kMinInterval and `force` is false.
  void Emit(v1::JobEvent event, bool force) {
    const absl::Time now = absl::Now();
    if (!force && event.phase() == last_phase_ && now - last_sent_ < kMinInterval) return;
    last_phase_ = event.phase();
    last_sent_ = now;
    event.set_job_id(job_id_);
    event.set_state(v1::JOB_STATE_RUNNING);
    event.set_shards_total(shards_);
    if (event.shards_done() == 0) event.set_shards_done(shards_);
    const double elapsed = absl::ToDoubleSeconds(now - start_);
    event.set_elapsed_seconds(elapsed);
    if (elapsed > 0 && passes_ > 0) {
      event.set_rows_per_second(static_cast<double>(users_) * passes_ / elapsed);
    }
    if (on_event_) on_event_(event);
  }

  // Sends a forced event with only a phase and a message.
  void Message(const std::string& phase, const std::string& message) {
    v1::JobEvent event;
    event.set_phase(phase);
    event.set_message(message);
    Emit(event, true);
  }

  // Counts one pass over every user, for the rows-per-second figure.
  void CountPass() { ++passes_; }

  void set_users(int64_t users) { users_ = users; }

 private:
  const std::string job_id_;
  const std::function<void(const v1::JobEvent&)> on_event_;
  const int shards_;
  const absl::Time start_;
  absl::Time last_sent_ = absl::InfinitePast();
  std::string last_phase_;
  int64_t users_ = 0;
  int64_t passes_ = 0;
};

}  // namespace cohort

#endif  // COHORT_COORDINATOR_JOB_EVENTS_H_
