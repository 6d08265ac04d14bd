// Run-level entry points behind `genrec train`, `eval` and `recommend`.
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
//   data.test_fraction [0.1]
//   model.type ["markov"]  model.* (per model, see models/baselines.h)
//   eval.ks [[5, 10, 20]]  eval.exclude_seen [false]  eval.batch_size [256]  eval.negatives [0]
//   eval.negative_sampling ["uniform"]  eval.seed [2024]
//   train.seed [42]  train.threads [0 = all cores]
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
EvalResult eval_run(const std::filesystem::path& run_dir, SplitPart part,
                    const std::vector<std::string>& overrides = {}, const ProgressCallback& progress = nullptr);

struct RecommendRequest {
  std::optional<std::string> user;                 // raw user id: its whole history
  std::optional<std::vector<std::string>> history; // raw item ids, oldest first
  int64_t k = 10;
  bool exclude_seen = false;
};
// {"user": ..., "history_length": n, "model": type, "items": [{"item", "score", "rank"}, ...]}
nlohmann::json recommend_run(const std::filesystem::path& run_dir, const RecommendRequest& request);

// Sets torch's intra-op threads: n > 0 as given, 0 = the machine's cores.
void set_threads(int64_t n);

}  // namespace genrec
