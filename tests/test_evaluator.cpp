#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/eval/evaluator.h"

using namespace genrec;

namespace {

// Pseudo-random scores that depend only on (user, history length, item), rounded so that
// ties are frequent.
class RandomScorer : public Scorer {
 public:
  explicit RandomScorer(int32_t n) : n_(n) {}
  int32_t n_items() const override { return n_; }
  torch::Tensor score(const std::vector<History>& batch) override {
    auto out = torch::empty({static_cast<int64_t>(batch.size()), n_ + 1});
    for (size_t b = 0; b < batch.size(); ++b) {
      std::mt19937 rng(static_cast<uint32_t>(batch[b].user * 7919 + batch[b].size));
      for (int32_t i = 0; i <= n_; ++i) out[b][i] = static_cast<float>(rng() % 20);
    }
    return out;
  }
  int32_t n_;
};

// Knows the answer: scores the target 1, everything else 0.
class OracleScorer : public Scorer {
 public:
  explicit OracleScorer(const Dataset& ds) : ds_(ds) {}
  int32_t n_items() const override { return ds_.n_items(); }
  torch::Tensor score(const std::vector<History>& batch) override {
    auto out = torch::zeros({static_cast<int64_t>(batch.size()), ds_.n_items() + 1});
    for (size_t b = 0; b < batch.size(); ++b) out[b][ds_.user(batch[b].user).items[batch[b].size]] = 1.0f;
    return out;
  }
  const Dataset& ds_;
};

class ConstScorer : public Scorer {
 public:
  ConstScorer(int32_t n, float v) : n_(n), v_(v) {}
  int32_t n_items() const override { return n_; }
  torch::Tensor score(const std::vector<History>& batch) override {
    return torch::full({static_cast<int64_t>(batch.size()), n_ + 1}, v_);
  }
  int32_t n_;
  float v_;
};

// Straightforward reference: sorts nothing clever, averages each metric over every possible
// position of the target among its ties.
std::map<std::string, double> reference_metrics(Scorer& s, const Dataset& ds, const Split& split, bool exclude_seen,
                                                const std::vector<int64_t>& ks) {
  std::map<std::string, double> sum;
  int64_t n = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    int64_t t = split.test_index[u];
    if (t < 0) continue;
    UserEvents ev = ds.user(u);
    History h{u, ev.items, ev.timestamps, t};
    torch::Tensor sc = s.score({h});
    int32_t target = ev.items[t];
    std::set<int32_t> seen(ev.items, ev.items + t);
    float ts = sc[0][target].item<float>();
    int64_t greater = 0, ties = 0;
    for (int32_t i = 1; i <= ds.n_items(); ++i) {
      if (i == target || (exclude_seen && seen.count(i))) continue;
      float v = sc[0][i].item<float>();
      greater += v > ts;
      ties += v == ts;
    }
    for (int64_t pos = greater; pos <= greater + ties; ++pos) {
      double w = 1.0 / static_cast<double>(ties + 1);
      for (auto k : ks) {
        sum["recall@" + std::to_string(k)] += w * (pos < k);
        sum["ndcg@" + std::to_string(k)] += w * (pos < k ? 1.0 / std::log2(pos + 2.0) : 0.0);
      }
      sum["mrr"] += w / static_cast<double>(pos + 1);
    }
    ++n;
  }
  for (auto& [k, v] : sum) v /= static_cast<double>(n);
  return sum;
}

Dataset small_generated() {
  GeneratorOptions o;
  o.n_users = 120;
  o.n_items = 80;
  o.n_clusters = 5;
  o.seed = 3;
  return generate_dataset(o);
}

}  // namespace

TEST(Evaluator, MatchesReferenceWithTies) {
  Dataset ds = small_generated();
  Split split = make_split(ds, SplitOptions{});
  RandomScorer scorer(ds.n_items());
  for (bool exclude : {false, true}) {
    EvalOptions o;
    o.ks = {1, 5, 10};
    o.exclude_seen = exclude;
    o.batch_size = 7;
    EvalResult r = evaluate(scorer, ds, split, SplitPart::Test, o);
    auto ref = reference_metrics(scorer, ds, split, exclude, o.ks);
    EXPECT_EQ(r.n_users, split.n_targets(SplitPart::Test));
    for (const auto& [key, value] : ref) EXPECT_NEAR(r.metrics.at(key), value, 1e-9) << key << " exclude=" << exclude;
    EXPECT_NE(r.protocol.find(exclude ? "seen items excluded" : "seen items included"), std::string::npos);
  }
}

TEST(Evaluator, DeterministicAcrossBatchSizesAndThreads) {
  Dataset ds = small_generated();
  Split split = make_split(ds, SplitOptions{});
  RandomScorer scorer(ds.n_items());
  EvalOptions a;
  a.batch_size = 1;
  EvalOptions b;
  b.batch_size = 1000;
  int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto ra = evaluate(scorer, ds, split, SplitPart::Valid, a).metrics;
  at::set_num_threads(2);
  auto rb = evaluate(scorer, ds, split, SplitPart::Valid, b).metrics;
  at::set_num_threads(threads);
  EXPECT_EQ(ra, rb);  // bit-identical
}

TEST(Evaluator, OracleAndConstantScorers) {
  Dataset ds = small_generated();
  Split split = make_split(ds, SplitOptions{});
  OracleScorer oracle(ds);
  auto m = evaluate(oracle, ds, split, SplitPart::Test, EvalOptions{}).metrics;
  EXPECT_DOUBLE_EQ(m.at("recall@5"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("ndcg@5"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("mrr"), 1.0);
  ConstScorer flat(ds.n_items(), 0.5f);
  auto f = evaluate(flat, ds, split, SplitPart::Test, EvalOptions{}).metrics;
  EXPECT_NEAR(f.at("recall@10"), 10.0 / ds.n_items(), 1e-12);  // exactly random
  EXPECT_NEAR(f.at("coverage@10"), 10.0 / ds.n_items(), 1e-12);  // ties -> lowest ids, same for all
}

TEST(Evaluator, SampledProtocolIsLabelledAndRanksAmongNegatives) {
  Dataset ds = small_generated();
  Split split = make_split(ds, SplitOptions{});
  EvalOptions o;
  o.ks = {1, 5, 10};
  o.negatives = 20;
  OracleScorer oracle(ds);
  EvalResult r = evaluate(oracle, ds, split, SplitPart::Test, o);
  EXPECT_NE(r.protocol.find("sampled"), std::string::npos);
  EXPECT_DOUBLE_EQ(r.metrics.at("recall@1"), 1.0);
  EXPECT_DOUBLE_EQ(r.metrics.at("mrr"), 1.0);
  EXPECT_EQ(r.metrics.count("coverage@10"), 0u);
  // A constant scorer among 20 negatives: recall@K = K / 21.
  ConstScorer flat(ds.n_items(), 0.0f);
  EvalResult f = evaluate(flat, ds, split, SplitPart::Test, o);
  EXPECT_NEAR(f.metrics.at("recall@5"), 5.0 / 21.0, 1e-12);
  // Popularity sampling works too and stays deterministic.
  o.negative_sampling = "popularity";
  RandomScorer rnd(ds.n_items());
  EXPECT_EQ(evaluate(rnd, ds, split, SplitPart::Test, o).metrics, evaluate(rnd, ds, split, SplitPart::Test, o).metrics);
  o.negatives = ds.n_items();
  EXPECT_THROW(evaluate(rnd, ds, split, SplitPart::Test, o), InvalidInput);
}

namespace {
class NanScorer : public ConstScorer {
 public:
  using ConstScorer::ConstScorer;
  torch::Tensor score(const std::vector<History>& batch) override {
    auto t = ConstScorer::score(batch);
    t[0][3] = std::nanf("");
    return t;
  }
};
class WrongShapeScorer : public ConstScorer {
 public:
  using ConstScorer::ConstScorer;
  torch::Tensor score(const std::vector<History>& batch) override { return torch::zeros({static_cast<int64_t>(batch.size()), 3}); }
};
}  // namespace

TEST(Evaluator, BadScorersAreReported) {
  Dataset ds = small_generated();
  Split split = make_split(ds, SplitOptions{});
  NanScorer nan(ds.n_items(), 0.0f);
  EXPECT_THROW(evaluate(nan, ds, split, SplitPart::Test, EvalOptions{}), InternalError);
  WrongShapeScorer wrong(ds.n_items(), 0.0f);
  EXPECT_THROW(evaluate(wrong, ds, split, SplitPart::Test, EvalOptions{}), InternalError);
  ConstScorer other(ds.n_items() + 1, 0.0f);
  EXPECT_THROW(evaluate(other, ds, split, SplitPart::Test, EvalOptions{}), InvalidInput);
}

TEST(Evaluator, TopKBreaksTiesByLowerIdAndSkipsExcluded) {
  // ids:            0    1    2    3    4    5
  float scores[] = {9.f, 1.f, 3.f, 3.f, 2.f, 3.f};
  auto top = top_k_items(scores, 5, 4, nullptr);
  EXPECT_EQ(top, (std::vector<int32_t>{2, 3, 5, 4}));  // column 0 never appears
  uint8_t exclude[] = {0, 0, 0, 1, 0, 0};
  EXPECT_EQ(top_k_items(scores, 5, 2, exclude), (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(top_k_items(scores, 5, 10, nullptr).size(), 5u);
  RankInfo r = rank_of_target(scores, 5, 4, nullptr);
  EXPECT_EQ(r.greater, 3);
  EXPECT_EQ(r.ties, 0);
  r = rank_of_target(scores, 5, 3, exclude);  // target itself is never excluded by the caller here
  EXPECT_EQ(r.greater, 0);
  EXPECT_EQ(r.ties, 2);
}
