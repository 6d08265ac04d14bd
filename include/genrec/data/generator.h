// Synthetic interaction data with the structure real logs have, for the demo and the tests:
//  - items fall into interest clusters and have Zipf-skewed popularity within a cluster;
//  - each user likes a few clusters (mixture weights);
//  - sequences follow item-to-item transitions: with probability p_transition the next item is
//    one of the current item's few successors, otherwise a popular item from one of the user's
//    clusters.
// A model that learns sequences clearly beats popularity on this data; popularity still beats
// random. Items get attributes (cluster, brand) and a title, users timestamps and ratings.
//
// Feedback with a known ground truth (for ranking), off by default. Everything below is drawn
// from side generators seeded from `seed`, never from the main stream, so the items, timestamps
// and everything else are the same with or without it (and the defaults' data is unchanged).
//   item quality      q_i ~ N(0, 1), one per item
//   dominant cluster  d_u = the user's liked cluster with the largest mixture weight (a cluster
//                     liked twice adds its weights; ties to the lower cluster); an event is
//                     in-cluster (in = 1) when its item's cluster is d_u, else in = 0. A user's
//                     history shows d_u (it is the cluster most of its events come from).
//   user biases       b_u ~ N(0, 0.5) (rating generosity), s_u ~ N(0, 1) (share propensity)
//   item traits       t_{i,k} ~ Bernoulli(0.2) for action k >= 4 (index from 0)
//   n_action_types = K > 0: each event gets exactly one action, drawn with
//     P(action k) = softmax over k < K of these logits:
//       0 "skip"     2.0 * (1 - in) - 0.5 * q_i - 1.0   (out-of-cluster items; low quality)
//       1 "click"    0                                  (the default)
//       2 "like"     2.0 * in + 1.0 * q_i - 1.5         (in-cluster, high quality)
//       3 "share"    1.5 * q_i + 1.0 * s_u - 1.5        (high quality regardless of cluster)
//       4 "comment", 5 "save", k >= 6 "a<k+1>" (a7, a8, ...): 3.0 * t_{i,k} - 2.0 (item traits)
//     actions.vocab lists the K names in that order (dense ids 1..K).
//   ratings = true: rating = clamp(round(3 + 1.5 * a + b_u + e), 1, 5) (round: half away from 0),
//     affinity a = (in ? 0.5 : -0.5) + 0.5 * q_i, noise e ~ N(0, 0.5). With ratings = false the rating
//     column is the legacy one: uniform in 2..5, independent of user and item (kept so that
//     default data stays bit-identical).
// Pass a GeneratorTruth to receive q, d, b, s and the item clusters.
//
// Example:
//   GeneratorOptions opt;  opt.n_users = 500;  opt.seed = 7;
//   Dataset ds = generate_dataset(opt);
#pragma once

#include <cstdint>
#include <vector>

#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"

namespace genrec {

struct GeneratorOptions {
  int64_t n_users = 2000;       // users
  int64_t n_items = 1000;       // items
  int64_t n_clusters = 20;      // interest clusters
  int64_t min_len = 5;          // shortest sequence (events)
  int64_t max_len = 60;         // longest sequence
  double mean_len = 20;         // mean sequence length (geometric tail above min_len)
  int64_t n_successors = 3;     // successors per item
  double p_transition = 0.6;    // chance that the next item follows the transition graph
  double zipf_exponent = 1.0;   // popularity skew within a cluster
  uint64_t seed = 42;
  int64_t n_action_types = 0;   // 0 = no action column; else 1..64 action types (see above)
  bool ratings = false;         // ground-truth ratings 1..5 (see above) instead of the legacy ones
};

// The hidden variables behind the feedback (index 0 = padding).
struct GeneratorTruth {
  std::vector<int32_t> item_cluster;           // [n_items + 1] cluster of each item (0-based)
  std::vector<double> item_quality;            // [n_items + 1] q_i
  std::vector<int32_t> user_dominant_cluster;  // [n_users + 1] d_u
  std::vector<double> user_rating_bias;        // [n_users + 1] b_u
  std::vector<double> user_share_propensity;   // [n_users + 1] s_u
};

Dataset generate_dataset(const GeneratorOptions& options, const ProgressCallback& progress = nullptr,
                         GeneratorTruth* truth = nullptr);

}  // namespace genrec
