#include "genrec/data/generator.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "genrec/core/error.h"

namespace genrec {

namespace {

// Samples an index from cumulative weights.
size_t sample_cdf(const std::vector<double>& cdf, std::mt19937_64& rng) {
  double x = std::uniform_real_distribution<double>(0.0, cdf.back())(rng);
  return static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), x) - cdf.begin()) % cdf.size();
}

}  // namespace

Dataset generate_dataset(const GeneratorOptions& o, const ProgressCallback& progress) {
  if (o.n_users < 1 || o.n_items < 2) throw InvalidInput("generate: need at least 1 user and 2 items");
  if (o.n_clusters < 1 || o.n_clusters > o.n_items) throw InvalidInput("generate: need 1 <= clusters <= items");
  if (o.min_len < 1 || o.max_len < o.min_len) throw InvalidInput("generate: need 1 <= min_len <= max_len");
  if (o.mean_len < static_cast<double>(o.min_len)) throw InvalidInput("generate: mean_len must be >= min_len");
  if (!(o.p_transition >= 0 && o.p_transition <= 1)) throw InvalidInput("generate: p_transition must be in [0, 1]");
  if (o.n_successors < 1) throw InvalidInput("generate: n_successors must be >= 1");

  std::mt19937_64 rng(o.seed);
  const auto n_items = static_cast<size_t>(o.n_items);
  const auto n_clusters = static_cast<size_t>(o.n_clusters);

  // Items 1..n_items in clusters (shuffled assignment), popularity rank within cluster.
  std::vector<size_t> perm(n_items);
  for (size_t i = 0; i < n_items; ++i) perm[i] = i + 1;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<std::vector<size_t>> members(n_clusters);
  std::vector<size_t> cluster_of(n_items + 1);
  for (size_t k = 0; k < n_items; ++k) {
    members[k % n_clusters].push_back(perm[k]);
    cluster_of[perm[k]] = k % n_clusters;
  }
  std::vector<std::vector<double>> cluster_cdf(n_clusters);
  for (size_t c = 0; c < n_clusters; ++c) {
    double acc = 0;
    for (size_t r = 0; r < members[c].size(); ++r) {
      acc += 1.0 / std::pow(static_cast<double>(r + 1), o.zipf_exponent);
      cluster_cdf[c].push_back(acc);
    }
  }
  // Successors: a few items of the same cluster (any popularity), weights decaying.
  std::vector<std::vector<size_t>> successors(n_items + 1);
  std::vector<double> succ_cdf;
  {
    double acc = 0;
    for (int64_t s = 0; s < o.n_successors; ++s) {
      acc += std::pow(0.5, static_cast<double>(s));
      succ_cdf.push_back(acc);
    }
  }
  for (size_t i = 1; i <= n_items; ++i) {
    const auto& m = members[cluster_of[i]];
    for (int64_t s = 0; s < o.n_successors; ++s) {
      size_t j = i;
      for (int tries = 0; tries < 16 && (j == i); ++tries) j = m[std::uniform_int_distribution<size_t>(0, m.size() - 1)(rng)];
      if (j == i) j = perm[std::uniform_int_distribution<size_t>(0, n_items - 1)(rng)];
      if (j == i) j = i % n_items + 1;
      successors[i].push_back(j);
    }
  }

  Dataset ds;
  for (size_t i = 1; i <= n_items; ++i) ds.items.add(std::to_string(i));
  for (int64_t u = 1; u <= o.n_users; ++u) ds.users.add(std::to_string(u));
  ds.user_offsets.assign(static_cast<size_t>(o.n_users) + 2, 0);

  ProgressTracker tracker("generate", o.n_users, "users", progress);
  std::geometric_distribution<int64_t> extra_len(1.0 / (o.mean_len - static_cast<double>(o.min_len) + 1.0));
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::exponential_distribution<double> gap(1.0 / 86400.0);  // mean one day between events
  const int64_t t0 = 1577836800;                            // 2020-01-01
  for (int64_t u = 1; u <= o.n_users; ++u) {
    // 1-3 liked clusters with random weights.
    int n_liked = 1 + static_cast<int>(std::uniform_int_distribution<int>(0, 2)(rng));
    std::vector<size_t> liked;
    std::vector<double> liked_cdf;
    double acc = 0;
    for (int k = 0; k < n_liked; ++k) {
      liked.push_back(std::uniform_int_distribution<size_t>(0, n_clusters - 1)(rng));
      acc += 0.2 + unif(rng);
      liked_cdf.push_back(acc);
    }
    int64_t len = std::min(o.max_len, o.min_len + extra_len(rng));
    auto ts = static_cast<double>(t0) + unif(rng) * 365.0 * 86400.0;
    size_t cur = 0;
    for (int64_t e = 0; e < len; ++e) {
      size_t next;
      if (cur != 0 && unif(rng) < o.p_transition) {
        next = successors[cur][sample_cdf(succ_cdf, rng)];
      } else {
        size_t c = liked[sample_cdf(liked_cdf, rng)];
        next = members[c][sample_cdf(cluster_cdf[c], rng)];
      }
      if (next == cur) next = successors[cur][0];
      cur = next;
      ts += gap(rng);
      ds.event_items.push_back(static_cast<int32_t>(cur));
      ds.event_timestamps.push_back(static_cast<int64_t>(ts));
      // Ratings lean high for items reached by a transition-friendly path; 1..5.
      ds.event_ratings.push_back(static_cast<float>(std::min(5, 2 + static_cast<int>(unif(rng) * 4.0))));
    }
    ds.user_offsets[static_cast<size_t>(u) + 1] = ds.n_events();
    tracker.advance();
  }
  tracker.finish();

  // Side information: cluster and brand attributes, a title.
  ds.attribute_offsets.assign(n_items + 2, 0);
  ds.item_text.assign(n_items + 1, ItemText{});
  ds.has_item_text.assign(n_items + 1, 1);
  ds.has_item_text[0] = 0;
  for (size_t i = 1; i <= n_items; ++i) {
    std::string cluster = "category_" + std::to_string(cluster_of[i]);
    std::string brand = "brand_" + std::to_string((i * 7) % (n_clusters * 3));
    ds.attribute_values.push_back(ds.attributes.add(cluster));
    ds.attribute_values.push_back(ds.attributes.add(brand));
    ds.attribute_offsets[i + 1] = static_cast<int64_t>(ds.attribute_values.size());
    ItemText& t = ds.item_text[i];
    t.title = "Item " + std::to_string(i) + " of " + cluster;
    t.brand = brand;
    t.categories = {cluster};
  }
  ds.provenance = {{"format", "generated"},
                   {"generator",
                    {{"users", o.n_users},
                     {"items", o.n_items},
                     {"clusters", o.n_clusters},
                     {"min_len", o.min_len},
                     {"max_len", o.max_len},
                     {"mean_len", o.mean_len},
                     {"successors", o.n_successors},
                     {"p_transition", o.p_transition},
                     {"zipf_exponent", o.zipf_exponent},
                     {"seed", o.seed}}}};
  ds.validate();
  return ds;
}

}  // namespace genrec
