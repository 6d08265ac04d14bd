// Evaluation options and results: the torch-free part of the evaluator's interface, so
// programs that only pass them around need not include libtorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/split.h"

namespace genrec {

struct EvalOptions {
  std::vector<int64_t> ks = {5, 10, 20};  // cut-offs for recall@K, ndcg@K, coverage@K
  bool exclude_seen = false;    // drop the user's history items (except the target) from ranking
  int64_t batch_size = 256;     // users per scorer call
  int64_t negatives = 0;        // > 0: sampled protocol, rank the target among this many negatives
  std::string negative_sampling = "uniform";  // uniform | popularity (training-event counts)
  uint64_t seed = 2024;         // for negative sampling
  int64_t max_users = 0;        // > 0: evaluate an evenly spaced subset of max_users targets (quick checks)
};

struct EvalResult {
  SplitPart part = SplitPart::Test;
  std::string protocol;
  int64_t n_users = 0;
  std::map<std::string, double> metrics;
  double seconds = 0;

  // {"split", "protocol", "users", "metrics": {...}} — the metrics.json shape.
  nlohmann::json to_json() const;
};

}  // namespace genrec
