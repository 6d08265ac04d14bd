// Ranking metrics for one held-out target per user, with ties handled exactly.
//
// A target's position is described by RankInfo: `greater` competing items scored strictly
// higher, `ties` other competing items scored equal. Metrics are their expected value when
// tied items are ordered uniformly at random, so a scorer that gives every item the same score
// gets exactly the random-ranking value, and no tie-breaking rule favours a model:
//   rank r = greater + U (0-based), U uniform on {0..ties}
//   recall@K = P(r < K)           (= HR@K with one target)
//   ndcg@K   = E[1/log2(r + 2) if r < K else 0]
//   mrr      = E[1/(r + 1)]       (untruncated)
// coverage@K = share of the catalogue that appears in at least one user's top-K list, where
// the list orders by score and breaks ties by the lower item id (what `recommend` returns).
//
// Example:
//   MetricAccumulator acc({5, 10}, n_items);
//   acc.add(RankInfo{3, 0});             // target ranked 4th
//   acc.add_top_list(top_items, 10);     // for coverage
//   auto m = acc.result();                // {"recall@5": ..., "ndcg@5": ..., "mrr": ..., ...}
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace genrec {

struct RankInfo {
  int64_t greater = 0;  // competitors scored strictly higher than the target
  int64_t ties = 0;     // competitors scored equal to the target
};

double expected_recall_at(int64_t k, const RankInfo& r);
double expected_ndcg_at(int64_t k, const RankInfo& r);
double expected_reciprocal_rank(const RankInfo& r);

class MetricAccumulator {
 public:
  // ks: cut-offs (each >= 1); n_items: catalogue size for coverage (0 disables coverage).
  MetricAccumulator(std::vector<int64_t> ks, int64_t n_items);
  void add(const RankInfo& r);
  // Top list of one user, best first, dense ids 1..n_items; only the first max(ks) count.
  void add_top_list(const int32_t* items, int64_t n);
  int64_t count() const { return n_; }
  // Means over added targets: recall@K, ndcg@K for each K, mrr, and coverage@K when enabled.
  std::map<std::string, double> result() const;

 private:
  std::vector<int64_t> ks_;
  int64_t n_items_;
  int64_t n_ = 0;
  std::vector<double> recall_sum_, ndcg_sum_;
  double mrr_sum_ = 0;
  std::vector<std::vector<uint8_t>> covered_;  // per K: [n_items + 1]
};

}  // namespace genrec
