// Evaluation of any scorer on a split: batched over users, full ranking over the catalogue by
// default, sampled negatives only on request (and then labelled in `protocol`). Deterministic:
// the same scorer, data and options give the same numbers for any thread count.
//
// Example:
//   EvalOptions opt;  opt.ks = {5, 10};
//   EvalResult r = evaluate(model, ds, split, SplitPart::Test, opt);
//   std::cout << r.to_json().dump(2);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"
#include "genrec/data/split.h"
#include "genrec/eval/eval_result.h"
#include "genrec/eval/metrics.h"

namespace genrec {

// A user's history as a model sees it: the events before the target, oldest first.
struct History {
  int32_t user = 0;                     // dense user id, 0 for an ad-hoc history
  const int32_t* items = nullptr;       // [size] dense item ids
  const int64_t* timestamps = nullptr;  // [size] or nullptr
  int64_t size = 0;
  // When the recommendation is wanted (seconds, same clock as timestamps), or -1 if unknown.
  // Evaluation passes the held-out event's time: the request time of that recommendation (its
  // item stays hidden). Only time-aware models read it (HSTU with model.query_time = "next").
  int64_t request_time = -1;
};

// Anything that scores the whole catalogue for a batch of histories.
class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual int32_t n_items() const = 0;
  // Returns float scores [B, n_items + 1] on the CPU; column 0 (padding) is ignored.
  // Higher is better. NaN is an error.
  virtual torch::Tensor score(const std::vector<History>& batch) = 0;
};

EvalResult evaluate(Scorer& scorer, const Dataset& ds, const Split& split, SplitPart part,
                    const EvalOptions& options, const ProgressCallback& progress = nullptr);

// Top-k items of one score row [n_items + 1] by score, ties broken by the lower id; items with
// exclude[item] != 0 (when exclude is non-null, size n_items + 1) are skipped. Column 0 never
// appears. Returns at most k dense ids, best first.
std::vector<int32_t> top_k_items(const float* scores, int32_t n_items, int64_t k, const uint8_t* exclude);

// Position of `target` among the candidates of one score row: items 1..n_items not excluded
// (exclude may be null), the target itself not counted. Throws InternalError on NaN.
RankInfo rank_of_target(const float* scores, int32_t n_items, int32_t target, const uint8_t* exclude);

}  // namespace genrec
