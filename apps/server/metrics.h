// Server metrics in the Prometheus text exposition format (version 0.0.4), torch-free, no
// dependency on httplib. Thread-safe: counters and histogram buckets are atomics; the
// per-(route, status code) counters sit behind one mutex per route.
//
// Exposed (see docs/serving.md):
//   genrec_http_requests_total{route,code}            counter
//   genrec_http_errors_total{route,type}              counter (bad_request, unauthorized, ...)
//   genrec_http_request_duration_seconds{route}       histogram (0.0005 .. 5 s)
//   genrec_http_requests_in_flight                    gauge
//   genrec_engine_*                                   engine.stats() counters and gauges
//
// Example:
//   Metrics m;
//   m.observe(Route::Recommend, 200, 0.004);
//   std::string text = m.render(engine.stats());
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace genrec::server {

// The routes a request is accounted to; paths outside the API count as Other.
enum class Route { Recommend, Rank, Events, Reload, Models, Healthz, Metrics, Other, kCount };

const char* route_name(Route r);
// "/v1/recommend" -> Recommend, ...; anything else -> Other.
Route route_of_path(const std::string& path);

// Upper bounds (seconds) of the latency histogram buckets (+Inf is implicit).
inline constexpr std::array<double, 13> kLatencyBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1,    0.25,  0.5,    1.0,   2.5,   5.0};

// Error type label of a status code: bad_request, unauthorized, not_found, method_not_allowed,
// payload_too_large, unavailable, internal, other_4xx, other_5xx; nullptr for < 400.
const char* error_type(int status);

class Metrics {
 public:
  Metrics();
  // One finished request: its route, final status code and, when known (>= 0), its duration.
  void observe(Route route, int status, double seconds);
  void inc_in_flight() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void dec_in_flight() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  // Total requests answered so far (all routes and codes).
  uint64_t requests_total() const;

  // The exposition text: the HTTP metrics above plus `engine_stats` (Engine::stats()): known
  // counters as genrec_engine_<key>_total, other numbers as gauges genrec_engine_<key>, and
  // genrec_engine_cache_hit_ratio = hits / (hits + misses).
  std::string render(const nlohmann::json& engine_stats) const;

 private:
  struct RouteStats {
    mutable std::mutex mu;
    std::map<int, uint64_t> by_code;
    std::array<std::atomic<uint64_t>, kLatencyBuckets.size() + 1> buckets{};  // last = +Inf
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_ns{0};
  };
  std::array<RouteStats, static_cast<size_t>(Route::kCount)> routes_;
  std::atomic<int64_t> in_flight_{0};
  double start_time_;  // Unix seconds, for genrec_process_start_time_seconds
};

}  // namespace genrec::server
