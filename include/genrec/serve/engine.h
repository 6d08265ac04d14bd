// The serving engine without HTTP (torch-free interface; the torch side is in
// src/serve/engine.cpp): a loaded retrieval run (and optionally a ranking run), live user state
// in a UserStore, a bounded cache of per-user encoder state (the HSTU KV cache) and a
// micro-batcher that scores concurrent recommend requests together.
//
// A user's serving history = the run dataset's events of that user (when the user is in the
// dataset) followed by the events posted online (UserStore), oldest first; the model reads its
// last max_len events, exactly as `genrec recommend --history` would with the same items and
// timestamps.
//
// Every method is thread-safe. Methods throw InvalidInput for a bad request (the HTTP layer maps
// it to 400 with the message) and other genrec errors for failures (500).
//
// Example:
//   serve::Engine engine(serve::EngineOptions{"runs/beauty-hstu"});
//   serve::RecommendQuery q;  q.user = "A1YJEY40YUW4SE";  q.k = 10;
//   serve::RecommendReply r = engine.recommend(q);
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"

namespace genrec::serve {

using Clock = std::chrono::steady_clock;

// Thrown when a request's deadline passes before it is scored (the HTTP layer answers 503).
class DeadlineExceeded : public Error {
 public:
  using Error::Error;
};

struct EngineOptions {
  std::filesystem::path run_dir;      // retrieval run: checkpoints/best.ckpt, config.toml, its dataset
  std::filesystem::path rank_run;     // optional ranking run (genrank / din) for rank(); empty = none
  std::filesystem::path state_dir;    // UserStore directory; empty = run_dir / "serve_state"
  int64_t cache_users = 100000;       // KV-cache capacity in users (least recently used evicted); 0 = off
  int64_t max_batch = 32;             // micro-batching: most recommend requests scored together
  int64_t max_wait_us = 0;            // micro-batching: longest wait for a batch to fill (0: take what is queued)
  int64_t threads = 0;                // torch intra-op threads; 0 = the run's setting
  bool sync_writes = true;            // fsync each event append (false only for benchmarks)
  int64_t fallback_items = 1000;      // size of the popular-items fallback list
};

struct Event {
  std::string user;        // raw user id (a new user is created by its first event)
  std::string item;        // raw item id; must be in the run's item vocabulary
  int64_t timestamp = -1;  // seconds; -1 = the server's clock at arrival
  std::string action;      // optional action name, stored as given
};

// Shared by recommend and rank: whose history.
struct HistorySpec {
  std::optional<std::string> user;               // the user's serving history
  std::optional<std::vector<std::string>> items;  // or an ad-hoc history of raw item ids, oldest first
  std::optional<std::vector<int64_t>> times;     // its timestamps (same length), optional
};

struct RecommendQuery {
  HistorySpec history;
  int64_t k = 10;                     // 1 .. 1000
  bool exclude_seen = true;           // skip items in the history
  int64_t at = -1;                    // request time (seconds) for time-aware models; -1 = unknown
  bool ignore_unknown_items = false;  // drop unknown ids of an ad-hoc history instead of failing
  std::optional<Clock::time_point> deadline;  // not scored after this: DeadlineExceeded
};

struct ScoredItem {
  std::string item;
  double score = 0;
};

struct RecommendReply {
  std::vector<ScoredItem> items;
  int64_t history_length = 0;
  // Unknown user without online events, or an empty history: the most popular items of the
  // run's training data instead, with fallback = true and the reason ("unknown_user" |
  // "empty_history"); scores are then training counts.
  bool fallback = false;
  std::string fallback_reason;
  std::vector<std::string> ignored_items;  // unknown ids dropped (ignore_unknown_items)
  bool cache_hit = false;                  // the user's encoder state came from the KV cache
  std::string model;                       // model type of the run
  int64_t batch_size = 1;                  // how many requests were scored together with this one
};

struct RankQuery {
  HistorySpec history;
  std::vector<std::string> candidates;  // raw item ids, 1 .. 10000
  int64_t at = -1;
  bool ignore_unknown_items = false;    // drop unknown candidates / history ids instead of failing
  std::optional<Clock::time_point> deadline;
};

struct RankedCandidate {
  std::string item;
  std::map<std::string, double> scores;  // task name -> probability (binary tasks) or value
  // Ranking runs with model.output = "feedback": feedback name (action or rating level) ->
  // predicted probability; empty otherwise.
  std::map<std::string, double> feedback;
};

struct RankReply {
  std::vector<RankedCandidate> candidates;  // in request order
  std::vector<std::string> tasks;
  std::string model;       // "genrank" / "din" (ranking run) or the retrieval model's type
  bool m_falcon = false;   // candidates scored in one M-FALCON pass
  bool fallback = false;   // no history: scores from an empty history (reason as in recommend)
  std::string fallback_reason;
  std::vector<std::string> ignored_items;
};

struct EventsReply {
  int64_t accepted = 0;
  std::vector<std::string> ignored_items;  // unknown ids dropped (ignore_unknown_items)
};

class Engine {
 public:
  // Loads the run(s), opens the user store and starts the micro-batcher. Throws InvalidInput /
  // IOError naming the file that is missing or bad.
  explicit Engine(EngineOptions options);
  ~Engine();  // drains queued requests, then stops
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  RecommendReply recommend(const RecommendQuery& query);
  RankReply rank(const RankQuery& query);
  // Validates every event first (unknown items: InvalidInput listing them, nothing stored, unless
  // ignore_unknown_items), then appends all durably in one batch; returns after the write is
  // synced. The next recommend for those users reflects the events.
  EventsReply add_events(const std::vector<Event>& events, bool ignore_unknown_items = false);
  // Loads another retrieval run (same options otherwise) and swaps it in; requests in flight
  // finish on the old model, later ones use the new one. The KV cache is cleared. On failure the
  // old model stays and the error is thrown.
  void reload(const std::filesystem::path& run_dir);
  // What is loaded: {"retrieval": {run, type, version, n_items, loaded_at, kv_cache}, "ranking": ...}.
  nlohmann::json models() const;
  // Counters for /metrics: {"cache_hits", "cache_misses", "cache_users", "batches",
  // "batched_requests", "events_stored", "users_stored", "reloads"}.
  nlohmann::json stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace genrec::serve
