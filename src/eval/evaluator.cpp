#include "genrec/eval/evaluator.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "genrec/core/error.h"
#include "genrec/eval/metrics.h"

namespace genrec {

nlohmann::json EvalResult::to_json() const {
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : metrics) m[k] = v;
  return {{"split", split_part_name(part)}, {"protocol", protocol}, {"users", n_users}, {"metrics", m}};
}

std::vector<int32_t> top_k_items(const float* scores, int32_t n_items, int64_t k, const uint8_t* exclude) {
  // A heap whose top is the worst kept item; "better" = higher score, or equal score and lower id.
  auto better = [&](int32_t a, int32_t b) {
    float sa = scores[a], sb = scores[b];
    return sa > sb || (sa == sb && a < b);
  };
  std::vector<int32_t> heap;
  if (k <= 0) return heap;
  heap.reserve(static_cast<size_t>(k));
  for (int32_t i = 1; i <= n_items; ++i) {
    if (exclude && exclude[i]) continue;
    if (std::isnan(scores[i])) throw InternalError("scorer produced NaN for item " + std::to_string(i));
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back(i);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(i, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = i;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  return heap;
}

RankInfo rank_of_target(const float* scores, int32_t n_items, int32_t target, const uint8_t* exclude) {
  GENREC_ASSERT(target >= 1 && target <= n_items);
  const float t = scores[target];
  if (std::isnan(t)) throw InternalError("scorer produced NaN for item " + std::to_string(target));
  RankInfo r;
  for (int32_t i = 1; i <= n_items; ++i) {
    if (i == target || (exclude && exclude[i])) continue;
    float s = scores[i];
    r.greater += s > t;
    r.ties += s == t;
    if (std::isnan(s)) throw InternalError("scorer produced NaN for item " + std::to_string(i));
  }
  return r;
}

namespace {

std::string protocol_string(const Split& split, const EvalOptions& o, int32_t n_items) {
  std::string p = split.describe() + "; ";
  if (o.negatives > 0)
    p += "sampled: target vs " + std::to_string(o.negatives) + " " + o.negative_sampling +
         " negatives (not full ranking)";
  else
    p += "full ranking over " + std::to_string(n_items) + " items";
  p += o.exclude_seen ? "; seen items excluded" : "; seen items included";
  p += "; ties: expected value over random order";
  return p;
}

}  // namespace

EvalResult evaluate(Scorer& scorer, const Dataset& ds, const Split& split, SplitPart part,
                    const EvalOptions& o, const ProgressCallback& progress) {
  auto t_start = std::chrono::steady_clock::now();
  const int32_t n_items = ds.n_items();
  if (scorer.n_items() != n_items)
    throw InvalidInput("evaluate: model has " + std::to_string(scorer.n_items()) + " items, dataset has " +
                       std::to_string(n_items));
  if (o.batch_size < 1) throw InvalidInput("evaluate: batch_size must be >= 1");
  if (o.negatives < 0) throw InvalidInput("evaluate: negatives must be >= 0");
  if (o.negatives > 0 && o.negative_sampling != "uniform" && o.negative_sampling != "popularity")
    throw InvalidInput("evaluate: negative_sampling must be uniform or popularity, got '" + o.negative_sampling + "'");

  std::vector<int32_t> users;
  const auto& targets = split.targets(part);
  for (int32_t u = 1; u <= ds.n_users(); ++u)
    if (targets[static_cast<size_t>(u)] >= 0) users.push_back(u);
  if (o.max_users > 0 && static_cast<int64_t>(users.size()) > o.max_users) {
    // An evenly spaced subset, so a quick check is not biased towards the lowest user ids.
    std::vector<int32_t> subset;
    const auto n = static_cast<int64_t>(users.size());
    for (int64_t i = 0; i < o.max_users; ++i) subset.push_back(users[static_cast<size_t>(i * n / o.max_users)]);
    users = std::move(subset);
  }

  // Popularity over training events, for popularity-sampled negatives.
  std::vector<double> pop_cdf;
  if (o.negatives > 0 && o.negative_sampling == "popularity") {
    std::vector<double> counts = train_item_counts(ds, split);
    pop_cdf.resize(counts.size());
    double acc = 0;
    for (size_t i = 0; i < counts.size(); ++i) pop_cdf[i] = acc += (i == 0 ? 0.0 : counts[i] + 1e-9);
  }
  if (o.negatives > 0 && o.negatives >= n_items)
    throw InvalidInput("evaluate: negatives (" + std::to_string(o.negatives) + ") must be below the item count (" +
                       std::to_string(n_items) + ")");

  const bool sampled = o.negatives > 0;
  MetricAccumulator acc(o.ks, sampled ? 0 : n_items);
  const int64_t kmax = *std::max_element(o.ks.begin(), o.ks.end());
  ProgressTracker tracker(std::string("eval ") + split_part_name(part), static_cast<int64_t>(users.size()), "users",
                          progress);

  for (size_t b0 = 0; b0 < users.size(); b0 += static_cast<size_t>(o.batch_size)) {
    size_t b1 = std::min(users.size(), b0 + static_cast<size_t>(o.batch_size));
    std::vector<History> batch;
    std::vector<int32_t> batch_targets;
    for (size_t b = b0; b < b1; ++b) {
      int32_t u = users[b];
      UserEvents ev = ds.user(u);
      int64_t t = targets[static_cast<size_t>(u)];
      batch.push_back(History{u, ev.items, ev.timestamps, t, ev.timestamps ? ev.timestamps[t] : -1});
      batch_targets.push_back(ev.items[t]);
    }
    torch::Tensor scores = scorer.score(batch).to(torch::kCPU, torch::kFloat).contiguous();
    const auto B = static_cast<int64_t>(batch.size());
    if (scores.dim() != 2 || scores.size(0) != B || scores.size(1) != n_items + 1)
      throw InternalError("scorer returned shape " + std::to_string(scores.size(0)) + "x" +
                          std::to_string(scores.dim() > 1 ? scores.size(1) : 0) + ", expected " + std::to_string(B) +
                          "x" + std::to_string(n_items + 1));
    const float* data = scores.data_ptr<float>();
    std::vector<RankInfo> ranks(static_cast<size_t>(B));
    std::vector<std::vector<int32_t>> tops(static_cast<size_t>(B));
    at::parallel_for(0, B, 8, [&](int64_t lo, int64_t hi) {
      std::vector<uint8_t> exclude(static_cast<size_t>(n_items) + 1, 0);
      for (int64_t r = lo; r < hi; ++r) {
        const float* row = data + r * (n_items + 1);
        const History& h = batch[static_cast<size_t>(r)];
        const int32_t target = batch_targets[static_cast<size_t>(r)];
        if (!sampled) {
          if (o.exclude_seen)
            for (int64_t k = 0; k < h.size; ++k) exclude[static_cast<size_t>(h.items[k])] = 1;
          exclude[static_cast<size_t>(target)] = 0;
          ranks[static_cast<size_t>(r)] = rank_of_target(row, n_items, target, o.exclude_seen ? exclude.data() : nullptr);
          tops[static_cast<size_t>(r)] = top_k_items(row, n_items, kmax, o.exclude_seen ? exclude.data() : nullptr);
          if (o.exclude_seen)
            for (int64_t k = 0; k < h.size; ++k) exclude[static_cast<size_t>(h.items[k])] = 0;
        } else {
          // Negatives: distinct items outside the history and != target, seeded per user.
          std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(h.user));
          for (int64_t k = 0; k < h.size; ++k) exclude[static_cast<size_t>(h.items[k])] = 1;
          exclude[static_cast<size_t>(target)] = 1;
          std::vector<int32_t> negs;
          int64_t available = n_items;
          for (int32_t i = 1; i <= n_items; ++i) available -= exclude[static_cast<size_t>(i)];
          int64_t want = std::min<int64_t>(o.negatives, available);
          std::uniform_int_distribution<int32_t> unif(1, n_items);
          while (static_cast<int64_t>(negs.size()) < want) {
            int32_t c;
            if (pop_cdf.empty()) {
              c = unif(rng);
            } else {
              double x = std::uniform_real_distribution<double>(0.0, pop_cdf.back())(rng);
              c = static_cast<int32_t>(std::upper_bound(pop_cdf.begin(), pop_cdf.end(), x) - pop_cdf.begin());
              c = std::clamp(c, 1, n_items);
            }
            if (exclude[static_cast<size_t>(c)]) continue;
            exclude[static_cast<size_t>(c)] = 1;
            negs.push_back(c);
          }
          const float t = row[target];
          if (std::isnan(t)) throw InternalError("scorer produced NaN for item " + std::to_string(target));
          RankInfo ri;
          for (int32_t c : negs) {
            ri.greater += row[c] > t;
            ri.ties += row[c] == t;
          }
          ranks[static_cast<size_t>(r)] = ri;
          std::fill(exclude.begin(), exclude.end(), 0);
        }
      }
    });
    for (int64_t r = 0; r < B; ++r) {
      acc.add(ranks[static_cast<size_t>(r)]);
      const auto& top = tops[static_cast<size_t>(r)];
      if (!top.empty()) acc.add_top_list(top.data(), static_cast<int64_t>(top.size()));
    }
    tracker.advance(B);
  }
  tracker.finish();

  EvalResult res;
  res.part = part;
  res.protocol = protocol_string(split, o, n_items);
  res.n_users = static_cast<int64_t>(users.size());
  res.metrics = acc.result();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace genrec
