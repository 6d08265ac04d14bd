#include "genrec/data/generator.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "genrec/core/error.h"

namespace genrec {

namespace {

// Samples an index from cumulative weights.
size_t sample_cdf(const std::vector<double>& cdf, std::mt19937_64& rng) {
  double x = std::uniform_real_distribution<double>(0.0, cdf.back())(rng);
  return static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), x) - cdf.begin()) % cdf.size();
}

// Seed of side stream `stream` (splitmix64 of the seed): feedback randomness never touches the
// main stream, so turning feedback on changes nothing else.
uint64_t side_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + stream * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::string action_name(int64_t k) {
  static const char* const kNames[] = {"skip", "click", "like", "share", "comment", "save"};
  return k < 6 ? kNames[k] : "a" + std::to_string(k + 1);
}

// Hidden variables and the feedback columns (see generator.h for the rule).
void add_feedback(const GeneratorOptions& o, const std::vector<size_t>& cluster_of,
                  const std::vector<int32_t>& dominant, Dataset& ds, GeneratorTruth* truth) {
  const auto n_items = static_cast<size_t>(o.n_items), n_users = static_cast<size_t>(o.n_users);
  const auto n_actions = static_cast<size_t>(o.n_action_types);
  std::vector<double> quality(n_items + 1, 0.0), rating_bias(n_users + 1, 0.0), share(n_users + 1, 0.0);
  {
    std::mt19937_64 rng(side_seed(o.seed, 1));
    std::normal_distribution<double> normal(0.0, 1.0);
    for (size_t i = 1; i <= n_items; ++i) quality[i] = normal(rng);
  }
  {
    std::mt19937_64 rng(side_seed(o.seed, 3));
    std::normal_distribution<double> bias(0.0, 0.5), prop(0.0, 1.0);
    for (size_t u = 1; u <= n_users; ++u) {
      rating_bias[u] = bias(rng);
      share[u] = prop(rng);
    }
  }
  if (truth) {
    truth->item_cluster.assign(n_items + 1, 0);
    for (size_t i = 1; i <= n_items; ++i) truth->item_cluster[i] = static_cast<int32_t>(cluster_of[i]);
    truth->item_quality = quality;
    truth->user_dominant_cluster = dominant;
    truth->user_rating_bias = rating_bias;
    truth->user_share_propensity = share;
  }
  if (n_actions == 0 && !o.ratings) return;

  // Item traits of actions k >= 4, action-major so that a trait does not depend on K.
  std::vector<std::vector<uint8_t>> trait(n_actions);
  {
    std::mt19937_64 rng(side_seed(o.seed, 2));
    std::bernoulli_distribution coin(0.2);
    for (size_t k = 4; k < n_actions; ++k) {
      trait[k].assign(n_items + 1, 0);
      for (size_t i = 1; i <= n_items; ++i) trait[k][i] = coin(rng) ? 1 : 0;
    }
  }
  for (size_t k = 0; k < n_actions; ++k) ds.actions.add(action_name(static_cast<int64_t>(k)));

  std::mt19937_64 rng(side_seed(o.seed, 4));
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 0.5);
  std::vector<double> weight(n_actions);
  if (n_actions > 0) ds.event_actions.resize(static_cast<size_t>(ds.n_events()));
  for (size_t u = 1; u <= n_users; ++u) {
    for (int64_t e = ds.user_offsets[u]; e < ds.user_offsets[u + 1]; ++e) {
      const auto ev = static_cast<size_t>(e);
      const auto item = static_cast<size_t>(ds.event_items[ev]);
      const double in = static_cast<int32_t>(cluster_of[item]) == dominant[u] ? 1.0 : 0.0;
      const double q = quality[item];
      // Both draws happen for every event, so actions do not depend on `ratings` and vice versa.
      const double x = unif(rng);
      const double eps = noise(rng);
      if (n_actions > 0) {
        double total = 0;
        for (size_t k = 0; k < n_actions; ++k) {
          double logit = 0;
          switch (k) {
            case 0: logit = 2.0 * (1.0 - in) - 0.5 * q - 1.0; break;
            case 1: logit = 0.0; break;
            case 2: logit = 2.0 * in + 1.0 * q - 1.5; break;
            case 3: logit = 1.5 * q + 1.0 * share[u] - 1.5; break;
            default: logit = 3.0 * trait[k][item] - 2.0; break;
          }
          weight[k] = std::exp(logit);
          total += weight[k];
        }
        const double target = x * total;
        double acc = 0;
        size_t k = 0;
        for (; k + 1 < n_actions; ++k) {
          acc += weight[k];
          if (target < acc) break;
        }
        ds.event_actions[ev] = static_cast<int32_t>(k) + 1;
      }
      if (o.ratings) {
        const double affinity = (in > 0 ? 0.5 : -0.5) + 0.5 * q;
        const double r = std::round(3.0 + 1.5 * affinity + rating_bias[u] + eps);
        ds.event_ratings[ev] = static_cast<float>(std::clamp(r, 1.0, 5.0));
      }
    }
  }
}

}  // namespace

Dataset generate_dataset(const GeneratorOptions& o, const ProgressCallback& progress, GeneratorTruth* truth) {
  if (o.n_users < 1 || o.n_items < 2) throw InvalidInput("generate: need at least 1 user and 2 items");
  if (o.n_clusters < 1 || o.n_clusters > o.n_items) throw InvalidInput("generate: need 1 <= clusters <= items");
  if (o.min_len < 1 || o.max_len < o.min_len) throw InvalidInput("generate: need 1 <= min_len <= max_len");
  if (o.mean_len < static_cast<double>(o.min_len)) throw InvalidInput("generate: mean_len must be >= min_len");
  if (!(o.p_transition >= 0 && o.p_transition <= 1)) throw InvalidInput("generate: p_transition must be in [0, 1]");
  if (o.n_successors < 1) throw InvalidInput("generate: n_successors must be >= 1");
  if (o.n_action_types < 0 || o.n_action_types > 64) throw InvalidInput("generate: n_action_types must be in 0..64");

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
  std::vector<int32_t> dominant(static_cast<size_t>(o.n_users) + 1, 0);  // no draws: feedback only
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
    {
      // Dominant cluster: largest total weight (a cluster liked twice adds up), ties to the lower id.
      double best = -1;
      for (int k = 0; k < n_liked; ++k) {
        double w = 0;
        for (int j = 0; j < n_liked; ++j)
          if (liked[j] == liked[k]) w += liked_cdf[j] - (j > 0 ? liked_cdf[j - 1] : 0.0);
        auto c = static_cast<int32_t>(liked[k]);
        if (w > best || (w == best && c < dominant[static_cast<size_t>(u)])) {
          best = w;
          dominant[static_cast<size_t>(u)] = c;
        }
      }
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
  add_feedback(o, cluster_of, dominant, ds, truth);

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
  // Only when set, so that default data (manifest included) stays as it was.
  if (o.n_action_types > 0) ds.provenance["generator"]["action_types"] = o.n_action_types;
  if (o.ratings) ds.provenance["generator"]["ratings"] = "ground_truth";
  ds.validate();
  return ds;
}

}  // namespace genrec
