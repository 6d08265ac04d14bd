#include "genrec/core/progress.h"

#include "genrec/core/error.h"

namespace genrec {

ProgressTracker::ProgressTracker(std::string stage, int64_t total, std::string unit,
                                 ProgressCallback callback, double min_interval_s)
    : callback_(std::move(callback)), min_interval_s_(min_interval_s) {
  event_.stage = std::move(stage);
  event_.total = total;
  event_.unit = std::move(unit);
  start_ = std::chrono::steady_clock::now();
  last_emit_ = start_ - std::chrono::hours(1);
}

void ProgressTracker::advance(int64_t n) {
  event_.done += n;
  emit(false);
}

void ProgressTracker::set_done(int64_t done) {
  event_.done = done;
  emit(false);
}

void ProgressTracker::finish() {
  if (event_.finished) return;
  event_.finished = true;
  emit(true);
}

void ProgressTracker::emit(bool force) {
  if (!callback_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && std::chrono::duration<double>(now - last_emit_).count() < min_interval_s_) return;
  last_emit_ = now;
  event_.elapsed_s = std::chrono::duration<double>(now - start_).count();
  event_.rate = event_.elapsed_s > 0 ? static_cast<double>(event_.done) / event_.elapsed_s : 0.0;
  event_.eta_s = (event_.total > 0 && event_.rate > 0)
                     ? static_cast<double>(event_.total - event_.done) / event_.rate
                     : -1.0;
  if (!callback_(event_)) throw Cancelled(event_.stage + ": cancelled");
}

}  // namespace genrec
