#include "metrics.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

namespace genrec::server {

namespace {

constexpr Route kAllRoutes[] = {Route::Recommend, Route::Rank,    Route::Events, Route::Reload,
                                Route::Models,    Route::Healthz, Route::Metrics, Route::Other};

// Engine counters that only grow (exposed with _total); every other number is a gauge.
const std::set<std::string> kEngineCounters = {"cache_hits", "cache_misses",      "batches", "batched_requests",
                                               "reloads",    "positions_encoded", "fallbacks"};

std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // Shortest representation that round-trips is nicer to read; %.17g is exact but noisy.
  for (int prec = 6; prec < 17; ++prec) {
    char shorter[64];
    std::snprintf(shorter, sizeof shorter, "%.*g", prec, v);
    if (std::strtod(shorter, nullptr) == v) return shorter;
  }
  return buf;
}

std::string sanitize(const std::string& key) {
  std::string out = key;
  for (char& c : out)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) c = '_';
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out = "_" + out;
  return out;
}

}  // namespace

const char* route_name(Route r) {
  switch (r) {
    case Route::Recommend: return "recommend";
    case Route::Rank: return "rank";
    case Route::Events: return "events";
    case Route::Reload: return "reload";
    case Route::Models: return "models";
    case Route::Healthz: return "healthz";
    case Route::Metrics: return "metrics";
    default: return "other";
  }
}

Route route_of_path(const std::string& path) {
  if (path == "/v1/recommend") return Route::Recommend;
  if (path == "/v1/rank") return Route::Rank;
  if (path == "/v1/events") return Route::Events;
  if (path == "/v1/reload") return Route::Reload;
  if (path == "/v1/models") return Route::Models;
  if (path == "/healthz") return Route::Healthz;
  if (path == "/metrics") return Route::Metrics;
  return Route::Other;
}

const char* error_type(int status) {
  switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "timeout";
    case 413: return "payload_too_large";
    case 503: return "unavailable";
    case 500: return "internal";
    default: break;
  }
  if (status >= 500) return "other_5xx";
  if (status >= 400) return "other_4xx";
  return nullptr;
}

Metrics::Metrics()
    : start_time_(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()) {}

void Metrics::observe(Route route, int status, double seconds) {
  RouteStats& s = routes_[static_cast<size_t>(route)];
  {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.by_code[status];
  }
  if (seconds < 0) return;
  size_t b = 0;
  while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
  s.buckets[b].fetch_add(1, std::memory_order_relaxed);
  s.sum_ns.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
  s.count.fetch_add(1, std::memory_order_relaxed);
}

uint64_t Metrics::requests_total() const {
  uint64_t n = 0;
  for (const RouteStats& s : routes_) {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& [code, c] : s.by_code) n += c;
  }
  return n;
}

std::string Metrics::render(const nlohmann::json& engine_stats) const {
  std::ostringstream o;
  // Snapshot the per-code counters first (one lock per route).
  std::array<std::map<int, uint64_t>, static_cast<size_t>(Route::kCount)> codes;
  for (Route r : kAllRoutes) {
    const RouteStats& s = routes_[static_cast<size_t>(r)];
    std::lock_guard<std::mutex> lock(s.mu);
    codes[static_cast<size_t>(r)] = s.by_code;
  }

  o << "# HELP genrec_http_requests_total HTTP requests answered, by route and status code.\n"
       "# TYPE genrec_http_requests_total counter\n";
  for (Route r : kAllRoutes)
    for (const auto& [code, n] : codes[static_cast<size_t>(r)])
      o << "genrec_http_requests_total{route=\"" << route_name(r) << "\",code=\"" << code << "\"} " << n << "\n";

  o << "# HELP genrec_http_errors_total HTTP requests answered with a 4xx or 5xx status, by route and error type.\n"
       "# TYPE genrec_http_errors_total counter\n";
  for (Route r : kAllRoutes) {
    std::map<std::string, uint64_t> by_type;
    for (const auto& [code, n] : codes[static_cast<size_t>(r)])
      if (const char* t = error_type(code)) by_type[t] += n;
    for (const auto& [type, n] : by_type)
      o << "genrec_http_errors_total{route=\"" << route_name(r) << "\",type=\"" << type << "\"} " << n << "\n";
  }

  o << "# HELP genrec_http_request_duration_seconds Time from reading the request line to writing the response.\n"
       "# TYPE genrec_http_request_duration_seconds histogram\n";
  for (Route r : kAllRoutes) {
    const RouteStats& s = routes_[static_cast<size_t>(r)];
    const std::string label = std::string("route=\"") + route_name(r) + "\"";
    uint64_t cum = 0;
    for (size_t b = 0; b < kLatencyBuckets.size(); ++b) {
      cum += s.buckets[b].load(std::memory_order_relaxed);
      o << "genrec_http_request_duration_seconds_bucket{" << label << ",le=\"" << format_double(kLatencyBuckets[b])
        << "\"} " << cum << "\n";
    }
    cum += s.buckets[kLatencyBuckets.size()].load(std::memory_order_relaxed);
    o << "genrec_http_request_duration_seconds_bucket{" << label << ",le=\"+Inf\"} " << cum << "\n";
    o << "genrec_http_request_duration_seconds_sum{" << label << "} "
      << format_double(static_cast<double>(s.sum_ns.load(std::memory_order_relaxed)) * 1e-9) << "\n";
    // _count equals the +Inf bucket by definition (both read from the same per-bucket counters).
    o << "genrec_http_request_duration_seconds_count{" << label << "} " << cum << "\n";
  }

  o << "# HELP genrec_http_requests_in_flight Requests being read, handled or written right now.\n"
       "# TYPE genrec_http_requests_in_flight gauge\n"
       "genrec_http_requests_in_flight "
    << in_flight() << "\n";
  o << "# HELP genrec_process_start_time_seconds Start time of the server, Unix seconds.\n"
       "# TYPE genrec_process_start_time_seconds gauge\n"
       "genrec_process_start_time_seconds "
    << format_double(start_time_) << "\n";

  if (engine_stats.is_object()) {
    for (const auto& [key, value] : engine_stats.items()) {
      if (!value.is_number()) continue;
      const std::string name = "genrec_engine_" + sanitize(key);
      if (kEngineCounters.count(key)) {
        o << "# HELP " << name << "_total Serving engine counter " << key << " (since start).\n"
          << "# TYPE " << name << "_total counter\n"
          << name << "_total " << format_double(value.get<double>()) << "\n";
      } else {
        o << "# HELP " << name << " Serving engine gauge " << key << ".\n"
          << "# TYPE " << name << " gauge\n"
          << name << " " << format_double(value.get<double>()) << "\n";
      }
    }
    const double hits = engine_stats.value("cache_hits", 0.0), misses = engine_stats.value("cache_misses", 0.0);
    o << "# HELP genrec_engine_cache_hit_ratio KV-cache hits / (hits + misses) since start (0 before any lookup).\n"
         "# TYPE genrec_engine_cache_hit_ratio gauge\n"
         "genrec_engine_cache_hit_ratio "
      << format_double(hits + misses > 0 ? hits / (hits + misses) : 0.0) << "\n";
    const double batches = engine_stats.value("batches", 0.0), batched = engine_stats.value("batched_requests", 0.0);
    o << "# HELP genrec_engine_mean_batch_size Recommend requests per micro-batch since start (0 before any batch).\n"
         "# TYPE genrec_engine_mean_batch_size gauge\n"
         "genrec_engine_mean_batch_size "
      << format_double(batches > 0 ? batched / batches : 0.0) << "\n";
  }
  return o.str();
}

}  // namespace genrec::server
