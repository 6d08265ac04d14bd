// Synthetic interaction data with the structure real logs have, for the demo and the tests:
//  - items fall into interest clusters and have Zipf-skewed popularity within a cluster;
//  - each user likes a few clusters (mixture weights);
//  - sequences follow item-to-item transitions: with probability p_transition the next item is
//    one of the current item's few successors, otherwise a popular item from one of the user's
//    clusters.
// A model that learns sequences clearly beats popularity on this data; popularity still beats
// random. Items get attributes (cluster, brand) and a title, users timestamps and ratings.
//
// Example:
//   GeneratorOptions opt;  opt.n_users = 500;  opt.seed = 7;
//   Dataset ds = generate_dataset(opt);
#pragma once

#include <cstdint>

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
};

Dataset generate_dataset(const GeneratorOptions& options, const ProgressCallback& progress = nullptr);

}  // namespace genrec
