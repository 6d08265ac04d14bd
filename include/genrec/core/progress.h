// Progress reporting for long work. The library calls a user-supplied callback; the CLI draws
// a bar. Returning false from the callback cancels the work (the library throws Cancelled).
//
// Example:
//   ProgressTracker tracker("import", total_bytes, callback);
//   for (...) tracker.advance(n);   // throttled: the callback runs at most every 100 ms
//   tracker.finish();
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace genrec {

struct ProgressEvent {
  std::string stage;    // what is running, e.g. "import", "eval valid"
  int64_t done = 0;     // units done so far
  int64_t total = 0;    // units in all; 0 when unknown
  std::string unit;     // "rows", "users", "bytes", ...
  double elapsed_s = 0;  // seconds since the stage started
  double rate = 0;       // units per second so far
  double eta_s = -1;     // seconds left; -1 when unknown
  bool finished = false;  // true on the last event of a stage
};

// Returns false to cancel.
using ProgressCallback = std::function<bool(const ProgressEvent&)>;

class ProgressTracker {
 public:
  ProgressTracker(std::string stage, int64_t total, std::string unit, ProgressCallback callback,
                  double min_interval_s = 0.1);
  // Adds n units; may call the callback. Throws Cancelled when the callback returns false.
  void advance(int64_t n = 1);
  void set_done(int64_t done);
  void finish();
  int64_t done() const { return event_.done; }

 private:
  void emit(bool force);

  ProgressEvent event_;
  ProgressCallback callback_;
  double min_interval_s_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_emit_;
};

}  // namespace genrec
