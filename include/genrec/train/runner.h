// Run-level entry points behind `genrec train`, `eval`, `recommend` and `index-eval`.
//
// A run directory holds:
//   config.toml          the resolved configuration (file + --set overrides + defaults;
//                        data.path made absolute)
//   checkpoints/best.ckpt, checkpoints/last.ckpt
//   train_log.jsonl      one JSON line per validation evaluation
//   metrics.json         final test metrics at the best checkpoint
//
// Config keys (defaults in brackets):
//   data.path [""]  data.split ["leave_one_out"|"temporal"]  data.valid_fraction [0.1]
//   data.test_fraction [0.1]  data.train_on_valid [false] (train on the validation events too;
//   no validation: iterative models keep their last epoch; rankers train up to the test cut)
//   model.type ["markov"]  model.* (per model, see models/baselines.h)
//   eval.ks [[5, 10, 20]]  eval.exclude_seen [false]  eval.batch_size [256]  eval.negatives [0]
//   eval.negative_sampling ["uniform"]  eval.seed [2024]
//   train.seed [42]  train.threads [0 = all cores]
//   index.kind ["exact"|"flat"|"ivf"|"hnsw"]  index.nlist [4·sqrt(N), at most N/39; only when set]
//   index.nprobe [16]  index.hnsw_m [32]  index.ef_construction [40]  index.ef_search [128]
//   (how `recommend` searches the catalogue; see index/item_index.h)
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/config.h"
#include "genrec/core/progress.h"
#include "genrec/eval/eval_result.h"

namespace genrec {

class Recommender;
struct Dataset;

struct TrainRequest {
  std::filesystem::path config_path;        // TOML file; empty for an in-memory config
  std::string config_text;                  // used when config_path is empty
  std::vector<std::string> overrides;       // "key=value"
  std::optional<std::filesystem::path> data;  // overrides data.path
  std::filesystem::path out;                // run directory
  bool overwrite = false;                   // replace an existing run directory
  bool resume = false;                      // continue `out` from checkpoints/last.ckpt with its config
};

struct TrainResult {
  std::filesystem::path run_dir;
  EvalResult valid;
  EvalResult test;
  double train_seconds = 0;
};

TrainResult train_run(const TrainRequest& request, const ProgressCallback& progress = nullptr);

// Evaluates the best checkpoint of a run on a split; `overrides` may change eval.* keys.
// `target_items` (optional): a file of raw item ids (data/holdout.h read_item_list, e.g. the
// holdout_items.txt of `genrec data holdout-items`); only users whose target of `part` is one of
// them are evaluated, and the protocol says so. Retrieval runs only (InvalidInput for a ranking
// run, and when no target is among the listed items).
// `predictions` (optional, ranking runs only): every scored candidate is also written there as
// TSV — header "user item timestamp has_history" then per task "TASK TASK_label"; per row raw
// user and item ids, the timestamp (empty without timestamps), has_history 0/1, each task's
// score as a user reads it (probability or value) and its label (empty where undefined) —
// replaced whole only once evaluation has finished.
// `checkpoint` (optional): "best" (the default when empty), "last" (the run's last.ckpt: the
// weights after its last finished epoch) or the path of a checkpoint file of this run's model
// family and items; InvalidInput naming the file when it is missing or does not fit the run.
EvalResult eval_run(const std::filesystem::path& run_dir, SplitPart part,
                    const std::vector<std::string>& overrides = {}, const ProgressCallback& progress = nullptr,
                    const std::filesystem::path& target_items = {}, const std::filesystem::path& predictions = {},
                    const std::filesystem::path& checkpoint = {});

struct RecommendRequest {
  std::optional<std::string> user;                 // raw user id: its whole history
  std::optional<std::vector<std::string>> history; // raw item ids, oldest first; "ITEM@SECONDS" entries
                                                   // (all or none) carry timestamps
  int64_t k = 10;
  bool exclude_seen = false;
  int64_t request_time = -1;  // Unix seconds; -1 = unknown (History::request_time)
  // Search index kind (exact | flat | ivf | hnsw); unset = the run's index.kind (default exact).
  // exact ranks the model's own scores; the others search query · item vectors and need a
  // two-tower model (sasrec, hstu): others throw InvalidInput.
  std::optional<std::string> index;
  std::vector<std::string> overrides;  // "index.key=value" (index.* keys), and for a TIGER run its
                                       // inference keys (model.beam, model.cold_fraction,
                                       // model.level_weights, model.history_bias)
};
// {"user": ..., "history_length": n, "model": type, "index": kind, "exclude_seen": b,
//  "items": [{"item", "score", "rank"}, ...]}
nlohmann::json recommend_run(const std::filesystem::path& run_dir, const RecommendRequest& request);

// `genrec rank`: per-candidate, per-task scores of a ranking run (genrank, din) for a known
// user's whole history or an ad-hoc one ("ITEM" or "ITEM:FEEDBACK", FEEDBACK an action name or
// a rating value of the dataset).
struct RankCliRequest {
  std::optional<std::string> user;
  std::optional<std::vector<std::string>> history;
  std::vector<std::string> candidates;  // raw item ids
  int64_t request_time = -1;            // Unix seconds; -1 = the last history event's time
};
// {"user", "model", "history_length", "tasks", "candidates": [{"item", "scores": {task: value}}]}
// Binary tasks give probabilities, regression tasks predicted values.
nlohmann::json rank_cli_run(const std::filesystem::path& run_dir, const RankCliRequest& request);

struct IndexEvalRequest {
  std::optional<std::string> index;     // as RecommendRequest::index
  std::vector<std::string> overrides;   // "index.key=value" (only index.* keys)
  int64_t users = 0;                    // queries: the first N test users (by user id); 0 = all
};
// Measures a search index against the exact kind on a run's two-tower model. Queries are the
// test users' histories (before the test target), seen items not excluded, k = 10.
// {"run", "model", "index": {kind and its settings}, "n_items", "dim", "users",
//  "recall_at_10_vs_exact", "build_seconds", "latency_ms": {"p50", "p99"} (one query per call,
//  1 OpenMP thread), "exact_latency_ms": {"p50", "p99"}, "batch_queries_per_second" (all
//  queries in one call, the run's train.threads), "encode_seconds"}
nlohmann::json index_eval_run(const std::filesystem::path& run_dir, const IndexEvalRequest& request);

// What serving needs from a run's config.toml: its dataset (data.path) and train.threads.
struct RunInfo {
  std::filesystem::path data_path;
  int64_t threads = 0;
};
RunInfo read_run_info(const std::filesystem::path& run_dir);

// Inference set-up a loaded TIGER model needs from its run: its inference options (model.beam,
// model.cold_fraction, model.level_weights, model.history_bias) from the run's config with
// `overrides` ("key=value", as --set) applied; cold start counts as cold the items without events
// in the training part of the run's split of `ds`. Returns the beam width for TIGER, 0 for other
// models (left unchanged). `ds` must be the run's dataset (events loaded).
int64_t prepare_tiger_inference(const std::filesystem::path& run_dir, Recommender& model, const Dataset& ds,
                                const std::vector<std::string>& overrides = {});
// The beam a TIGER request needs so that every returned item comes from the beam: k, plus the
// history's distinct items when seen items are left out.
int64_t tiger_request_beam(int64_t k, const std::vector<int32_t>& history, bool exclude_seen);

// Sets torch's intra-op threads: n > 0 as given, 0 = the machine's cores.
void set_threads(int64_t n);

}  // namespace genrec
