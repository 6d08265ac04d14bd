// TIGER: trie-constrained beam search (with the decoder KV cache) against exhaustive scoring of
// every item's code sequence, validity and distinctness of results, training and checkpoints.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/data/split.h"
#include "genrec/models/tiger.h"
#include "genrec/serve/engine.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;
namespace fs = std::filesystem;

namespace {

// n items with `levels` random codes each, collisions resolved by an extra level.
SemanticIds random_sid(int32_t n, std::vector<int32_t> sizes, uint64_t seed) {
  SemanticIds s;
  s.n_items = n;
  s.levels = static_cast<int32_t>(sizes.size());
  s.codebook_sizes = sizes;
  s.codes.assign(static_cast<size_t>(n + 1) * sizes.size(), 0);
  std::mt19937_64 rng(seed);
  for (int32_t i = 1; i <= n; ++i)
    for (size_t l = 0; l < sizes.size(); ++l)
      s.codes[static_cast<size_t>(i) * sizes.size() + l] = static_cast<int32_t>(rng() % static_cast<uint64_t>(sizes[l]));
  resolve_collisions(s, true);
  return s;
}

TigerOptions tiny_options() {
  TigerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.d_kv = 8;
  o.d_ff = 32;
  o.enc_layers = 1;
  o.dec_layers = 2;
  o.dropout = 0.1;
  o.max_items = 5;
  o.user_buckets = 7;
  o.seed = 3;
  return o;
}

std::vector<History> histories(const std::vector<std::vector<int32_t>>& items) {
  std::vector<History> out;
  for (size_t b = 0; b < items.size(); ++b)
    out.push_back(History{static_cast<int32_t>(b + 1), items[b].data(), nullptr, static_cast<int64_t>(items[b].size())});
  return out;
}

// Building a model with options o must fail with an InvalidInput naming `key`.
void expect_refused(const TigerOptions& o, const SemanticIds& sid, const std::string& key) {
  EXPECT_INVALID(TigerRecommender(sid.n_items, o, sid), key);
}

// Log-likelihood of the training transitions under the item distribution p(i) e^{b h(i)} / Z,
// from exhaustive scoring (the reference for the history-bias estimate).
double history_bias_log_lik(TigerRecommender& model, const Dataset& ds, const Split& split, double b) {
  double ll = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const UserEvents ev = ds.user(u);
    for (int64_t t = 1; t < split.train_end[static_cast<size_t>(u)]; ++t) {
      torch::Tensor lp = model.exhaustive_log_probs({History{u, ev.items, nullptr, t}})[0];
      std::set<int32_t> h(ev.items, ev.items + t);
      double p = 0;
      for (int32_t i : h) p += std::exp(lp[i].item<double>());
      const bool hit = h.count(ev.items[t]) > 0;
      ll += lp[ev.items[t]].item<double>() + (hit ? b : 0.0) - std::log(1.0 - p + std::exp(b) * p);
    }
  }
  return ll;
}

}  // namespace

TEST(Tiger, WideBeamSearchEqualsExhaustiveScoring) {
  SemanticIds sid = random_sid(30, {4, 3, 3}, 1);
  for (const bool trie_softmax : {false, true})
  for (const std::string input : {"codes", "items"}) {
  SCOPED_TRACE("encoder_input " + input + (trie_softmax ? ", trie softmax" : ""));
  TigerOptions o = tiny_options();
  o.encoder_input = input;
  o.trie_softmax = trie_softmax;
  TigerRecommender model(30, o, sid);
  std::vector<std::vector<int32_t>> items = {{1, 2, 3}, {7}, {30, 29, 28, 27, 26, 25, 24}};
  std::vector<History> hs = histories(items);
  torch::Tensor exact = model.exhaustive_log_probs(hs);  // [B, 31]
  // Item probabilities: a distribution over the real items with the trie softmax; without it
  // the codebook softmax also gives mass to code sequences that are no item.
  for (int64_t b = 0; b < exact.size(0); ++b) {
    const double mass = exact[b].narrow(0, 1, 30).exp().sum().item<double>();
    if (trie_softmax) {
      EXPECT_NEAR(mass, 1.0, 1e-5);
    } else {
      EXPECT_LT(mass, 0.999);
    }
  }
  // item_log_probs agrees with exhaustive scoring.
  const std::vector<std::vector<double>> some = model.item_log_probs(hs, {{4, 9}, {1}, {30}});
  EXPECT_NEAR(some[0][1], exact[0][9].item<double>(), 1e-5);
  EXPECT_NEAR(some[2][0], exact[2][30].item<double>(), 1e-5);
  // A beam at least as wide as any trie level is exact.
  std::vector<BeamResult> res = model.beam_search(hs, 40);
  for (size_t b = 0; b < hs.size(); ++b) {
    ASSERT_EQ(res[b].items.size(), 30u);
    torch::Tensor row = exact[static_cast<int64_t>(b)].narrow(0, 1, 30);
    torch::Tensor order = std::get<1>(row.sort(0, true));
    for (int64_t r = 0; r < 30; ++r) {
      const int32_t item = res[b].items[static_cast<size_t>(r)];
      EXPECT_NEAR(res[b].scores[static_cast<size_t>(r)], exact[static_cast<int64_t>(b)][item].item<float>(), 1e-4);
      // Same ranking (up to exact ties).
      const int32_t want = static_cast<int32_t>(order[r].item<int64_t>()) + 1;
      if (want != item) {
        EXPECT_NEAR(exact[static_cast<int64_t>(b)][want].item<float>(), exact[static_cast<int64_t>(b)][item].item<float>(), 1e-5);
      }
    }
  }
  }
}

TEST(Tiger, NarrowBeamReturnsValidDistinctItemsScoredExactly) {
  SemanticIds sid = random_sid(200, {8, 8, 4}, 2);
  TigerRecommender model(200, tiny_options(), sid);
  std::vector<std::vector<int32_t>> items = {{5, 6}, {}, {199, 1, 77, 150, 3, 3, 9}};
  std::vector<History> hs = histories(items);
  torch::Tensor exact = model.exhaustive_log_probs(hs);
  for (int64_t beam : {1, 5, 20}) {
    std::vector<BeamResult> res = model.beam_search(hs, beam);
    for (size_t b = 0; b < hs.size(); ++b) {
      ASSERT_EQ(static_cast<int64_t>(res[b].items.size()), beam);
      std::set<int32_t> seen;
      for (size_t r = 0; r < res[b].items.size(); ++r) {
        const int32_t item = res[b].items[r];
        ASSERT_GE(item, 1);
        ASSERT_LE(item, 200);
        EXPECT_TRUE(seen.insert(item).second) << "duplicate item " << item;
        EXPECT_NEAR(res[b].scores[r], exact[static_cast<int64_t>(b)][item].item<float>(), 1e-4);
        if (r > 0) {
          EXPECT_GE(res[b].scores[r - 1], res[b].scores[r]);
        }
      }
    }
  }
  // score(): the beam's items keep their scores, every other item is far below.
  torch::Tensor s = model.score(hs);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{3, 201}));
  EXPECT_EQ((s[0] > -1e29).sum().item<int64_t>(), 20);
}

// model.level_weights: the beam scores an item by the weighted sum of its levels' log-probabilities;
// a beam as wide as the trie equals exhaustive scoring under the same weights, all-ones weights
// change nothing, and bad weights are refused.
TEST(Tiger, LevelWeightsScaleEachLevelsTermOfTheBeamScore) {
  SemanticIds sid = random_sid(30, {4, 3, 3}, 1);
  const int32_t L = sid.levels;
  std::vector<std::vector<int32_t>> items = {{1, 2, 3}, {7}, {30, 29, 28, 27, 26, 25, 24}};
  std::vector<History> hs = histories(items);
  TigerRecommender model(30, tiny_options(), sid);
  torch::Tensor plain = model.exhaustive_log_probs(hs);
  std::vector<BeamResult> plain_beam = model.beam_search(hs, 5);
  model.set_level_weights(std::vector<double>(static_cast<size_t>(L), 1.0));
  std::vector<BeamResult> ones_beam = model.beam_search(hs, 5);
  for (size_t b = 0; b < hs.size(); ++b) {
    EXPECT_EQ(ones_beam[b].items, plain_beam[b].items);
    EXPECT_EQ(ones_beam[b].scores, plain_beam[b].scores);
  }
  // Level 0 weighted 3, level 1 dropped, the rest halved.
  std::vector<double> w(static_cast<size_t>(L), 0.5);
  w[0] = 3.0;
  w[1] = 0.0;
  model.set_level_weights(w);
  EXPECT_EQ(model.options()["level_weights"].get<std::vector<double>>(), w);
  torch::Tensor weighted = model.exhaustive_log_probs(hs);
  EXPECT_GT((weighted.narrow(1, 1, 30) - plain.narrow(1, 1, 30)).abs().max().item<float>(), 0.1f);  // it changed
  std::vector<BeamResult> res = model.beam_search(hs, 40);
  for (size_t b = 0; b < hs.size(); ++b) {
    ASSERT_EQ(res[b].items.size(), 30u);
    for (size_t r = 0; r < res[b].items.size(); ++r) {
      const int32_t item = res[b].items[r];
      EXPECT_NEAR(res[b].scores[r], weighted[static_cast<int64_t>(b)][item].item<float>(), 1e-4);
      if (r > 0) {
        EXPECT_GE(res[b].scores[r - 1], res[b].scores[r]);
      }
    }
  }
  // Options round trip, and refusals naming the key.
  TigerOptions o = tiny_options();
  o.level_weights = w;
  o.levels = L;
  EXPECT_EQ(TigerOptions::from_json(o.to_json()).level_weights, w);
  EXPECT_TRUE(TigerOptions::from_json(tiny_options().to_json()).level_weights.empty());
  EXPECT_INVALID(model.set_level_weights(std::vector<double>(static_cast<size_t>(L) + 1, 1.0)), "level_weights");
  std::vector<double> negative(static_cast<size_t>(L), 1.0);
  negative[1] = -0.5;
  EXPECT_INVALID(model.set_level_weights(negative), "level_weights");
  EXPECT_EQ(model.options()["level_weights"].get<std::vector<double>>(), w);  // kept
  TigerOptions bad = tiny_options();
  bad.level_weights = {1.0};
  expect_refused(bad, sid, "level_weights");
}

// Batches are padded only to their longest history: a history's scores must not depend on what
// else is in its batch (longer or shorter rows, more than max_items items, an empty one).
TEST(Tiger, ScoresDoNotDependOnTheRestOfTheBatch) {
  SemanticIds sid = random_sid(60, {6, 5, 4}, 4);
  for (const std::string input : {"codes", "items"})
  for (const std::string positions : {"start", "recency"}) {
  SCOPED_TRACE("encoder_input " + input + ", encoder_positions " + positions);
  TigerOptions o = tiny_options();
  o.encoder_input = input;
  o.encoder_positions = positions;
  TigerRecommender model(60, o, sid);  // max_items 5
  std::vector<std::vector<int32_t>> items = {{3}, {10, 11, 12, 13, 14, 15, 16, 17}, {}, {60, 2}};
  std::vector<History> all = histories(items);
  torch::Tensor together = model.exhaustive_log_probs(all);
  std::vector<BeamResult> beams = model.beam_search(all, 7);
  for (size_t b = 0; b < all.size(); ++b) {
    std::vector<History> one = {all[b]};
    torch::Tensor alone = model.exhaustive_log_probs(one);
    EXPECT_LT((alone[0] - together[static_cast<int64_t>(b)]).narrow(0, 1, 60).abs().max().item<float>(), 1e-5) << "row " << b;
    BeamResult br = model.beam_search(one, 7)[0];
    EXPECT_EQ(br.items, beams[b].items) << "row " << b;
    for (size_t r = 0; r < br.scores.size(); ++r) EXPECT_NEAR(br.scores[r], beams[b].scores[r], 1e-5);
  }
  // Only the last max_items items are read: a longer history with the same tail scores the same.
  std::vector<int32_t> tail = {13, 14, 15, 16, 17};
  torch::Tensor t = model.exhaustive_log_probs({History{2, tail.data(), nullptr, 5}});  // same user as row 1
  EXPECT_LT((t[0] - together[1]).narrow(0, 1, 60).abs().max().item<float>(), 1e-5);
  // The user token is read (it is its own encoder position with "items"), and so is every item.
  std::vector<int32_t> same = {10, 11};
  std::vector<History> users;  // users 1..4: at least two hash buckets of 7
  for (int32_t u = 1; u <= 4; ++u) users.push_back(History{u, same.data(), nullptr, 2});
  torch::Tensor by_user = model.exhaustive_log_probs(users);
  EXPECT_GT((by_user.narrow(0, 1, 3) - by_user[0]).narrow(1, 1, 60).abs().max().item<float>(), 1e-4);
  std::vector<int32_t> other = {10, 12};
  torch::Tensor by_item = model.exhaustive_log_probs({History{1, other.data(), nullptr, 2}});
  EXPECT_GT((by_user[0] - by_item[0]).narrow(0, 1, 60).abs().max().item<float>(), 1e-4);
  }
}

TEST(Tiger, ItemEncoderInputOptionRoundTripsAndIsChecked) {
  TigerOptions o = tiny_options();
  EXPECT_EQ(o.encoder_input, "codes");  // TIGER's layout by default
  o.encoder_input = "items";
  EXPECT_EQ(TigerOptions::from_json(o.to_json()).encoder_input, "items");
  o.encoder_input = "tokens";
  expect_refused(o, random_sid(30, {4, 3}, 1), "model.encoder_input");
}

// train.label_smoothing: (1 - eps) * NLL + eps * the mean over the codebook of -log p, i.e. the
// cross-entropy against (1 - eps) one-hot + eps uniform. Hand-computed on two rows of three codes.
TEST(Tiger, LabelSmoothedLevelLossMatchesHandComputedValues) {
  torch::Tensor p = torch::tensor({{0.5, 0.25, 0.25}, {0.1, 0.6, 0.3}}, torch::kFloat32);
  torch::Tensor lp = p.log();
  torch::Tensor target = torch::tensor({0, 1}, torch::kInt64);
  // NLL = (ln 2 + ln(1/0.6)) / 2 = 0.601986; mean -log p per row: 1.155245 and 1.339128.
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.0).item<double>(), 0.601986, 1e-5);
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.2).item<double>(), 0.8 * 0.601986 + 0.2 * 1.247187, 1e-5);
  // The same against the smoothed target distribution written out.
  torch::Tensor q = torch::full({2, 3}, 0.2 / 3.0);
  q[0][0] += 0.8;
  q[1][1] += 0.8;
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.2).item<double>(), -(q * lp).sum(-1).mean().item<double>(), 1e-6);
  // Its gradient wrt the logits is softmax - q (per row, divided by the batch size).
  torch::Tensor logits = torch::tensor({{0.3, -1.0, 2.0}, {1.5, 0.2, -0.4}}, torch::kFloat32).requires_grad_(true);
  tiger_level_loss(torch::log_softmax(logits, -1), target, 0.2).backward();
  EXPECT_TRUE(torch::allclose(logits.grad(), (torch::softmax(logits.detach(), -1) - q) / 2.0, 1e-5, 1e-6));

  TigerOptions o = tiny_options();
  EXPECT_EQ(o.label_smoothing, 0.0);
  o.label_smoothing = 0.1;
  EXPECT_EQ(TigerOptions::from_json(o.to_json()).label_smoothing, 0.1);
  o.label_smoothing = 1.0;
  expect_refused(o, random_sid(30, {4, 3}, 1), "train.label_smoothing");
  o.label_smoothing = -0.1;
  expect_refused(o, random_sid(30, {4, 3}, 1), "train.label_smoothing");
}

// train.recency_weight: the loss is the mean over rows of weight * cross-entropy, and a user's
// target k places before the last training target weighs 1 + w * 2^(-k / halflife). Also the
// loss of model.trie_softmax: -inf outside the valid codes, smoothing over the valid ones only.
TEST(Tiger, RecencyWeightedLevelLossMatchesHandComputedValues) {
  torch::Tensor lp = torch::tensor({{0.5, 0.25, 0.25}, {0.1, 0.6, 0.3}}, torch::kFloat32).log();
  torch::Tensor target = torch::tensor({0, 1}, torch::kInt64);
  torch::Tensor w = torch::tensor({2.0f, 0.5f});
  // Rows' NLL ln 2 and ln(1/0.6): (2 * 0.693147 + 0.5 * 0.510826) / 2.
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.0, w).item<double>(), 0.820854, 1e-5);
  // Smoothed rows 0.8 * NLL + 0.2 * mean -log p: 0.785567 and 0.676486.
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.2, w).item<double>(), (2 * 0.785567 + 0.5 * 0.676486) / 2, 1e-5);
  // Weights of 1 are the unweighted loss.
  EXPECT_NEAR(tiger_level_loss(lp, target, 0.2, torch::ones({2})).item<double>(),
              tiger_level_loss(lp, target, 0.2).item<double>(), 1e-6);
  // The gradient wrt the logits is row-scaled: w_n (softmax - onehot) / N.
  torch::Tensor logits = torch::tensor({{0.3, -1.0, 2.0}, {1.5, 0.2, -0.4}}, torch::kFloat32).requires_grad_(true);
  tiger_level_loss(torch::log_softmax(logits, -1), target, 0.0, w).backward();
  torch::Tensor onehot = torch::zeros({2, 3});
  onehot[0][0] = 1;
  onehot[1][1] = 1;
  EXPECT_TRUE(torch::allclose(logits.grad(), (torch::softmax(logits.detach(), -1) - onehot) * w.unsqueeze(1) / 2.0, 1e-5, 1e-6));

  // model.trie_softmax: invalid codes get -inf and no smoothing mass. Row 0 allows codes 0 and 1
  // only (p = 2/3, 1/3), row 1 all three (p = 0.1, 0.6, 0.3).
  torch::Tensor tl = torch::tensor({{std::log(2.0f), 0.0f, 5.0f}, {std::log(0.1f), std::log(0.6f), std::log(0.3f)}})
                             .requires_grad_(true);
  torch::Tensor valid = torch::tensor({1, 1, 0, 1, 1, 1}, torch::kBool).view({2, 3});
  torch::Tensor masked = torch::log_softmax(tl.masked_fill(valid.logical_not(), -INFINITY), -1);
  // NLL ln 1.5 and ln(1/0.6); mean -log p over the valid codes (ln 1.5 + ln 3) / 2 and 1.339128.
  EXPECT_NEAR(tiger_level_loss(masked, target, 0.0, {}, valid).item<double>(), (0.405465 + 0.510826) / 2, 1e-5);
  torch::Tensor smoothed = tiger_level_loss(masked, target, 0.2, {}, valid);
  EXPECT_NEAR(smoothed.item<double>(), (0.8 * 0.405465 + 0.2 * 0.752039 + 0.8 * 0.510826 + 0.2 * 1.339128) / 2, 1e-5);
  smoothed.backward();
  EXPECT_TRUE(torch::isfinite(tl.grad()).all().item<bool>());
  EXPECT_EQ(tl.grad()[0][2].item<float>(), 0.0f);  // an invalid code gets no gradient

  EXPECT_DOUBLE_EQ(tiger_recency_weight(0, 3.0, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(tiger_recency_weight(2, 3.0, 1.0), 1.75);
  EXPECT_DOUBLE_EQ(tiger_recency_weight(2, 3.0, 2.0), 2.5);
  EXPECT_DOUBLE_EQ(tiger_recency_weight(5, 0.0, 1.0), 1.0);

  TigerOptions o = tiny_options();
  EXPECT_EQ(o.recency_weight, 0.0);
  o.recency_weight = 2.0;
  o.recency_halflife = 3.0;
  const TigerOptions back = TigerOptions::from_json(o.to_json());
  EXPECT_EQ(back.recency_weight, 2.0);
  EXPECT_EQ(back.recency_halflife, 3.0);
  o.recency_weight = -1.0;
  expect_refused(o, random_sid(30, {4, 3}, 1), "train.recency_weight");
  o.recency_weight = 1.0;
  o.recency_halflife = 0.0;
  expect_refused(o, random_sid(30, {4, 3}, 1), "train.recency_halflife");
  o = tiny_options();
  EXPECT_FALSE(o.trie_softmax);
  o.trie_softmax = true;
  EXPECT_TRUE(TigerOptions::from_json(o.to_json()).trie_softmax);
  EXPECT_FALSE(TigerOptions::from_json(nlohmann::json::object()).trie_softmax);  // checkpoints from before it
}

TEST(Tiger, EncoderPositionsCountFromTheMostRecentItemWithRecency) {
  auto keep = [](std::vector<std::vector<int>> rows) {
    const auto S = static_cast<int64_t>(rows[0].size());
    torch::Tensor t = torch::zeros({static_cast<int64_t>(rows.size()), S}, torch::kBool);
    for (size_t b = 0; b < rows.size(); ++b)
      for (int64_t s = 0; s < S; ++s) t[static_cast<int64_t>(b)][s] = rows[b][static_cast<size_t>(s)] != 0;
    return t;
  };
  auto ids = [](const torch::Tensor& t) {
    EXPECT_EQ(t.scalar_type(), torch::kLong);  // embedding indices
    std::vector<std::vector<int64_t>> out;
    torch::Tensor c = t.contiguous();
    for (int64_t b = 0; b < c.size(0); ++b) {
      std::vector<int64_t> row;
      for (int64_t s = 0; s < c.size(1); ++s) row.push_back(c[b][s].item<int64_t>());
      out.push_back(row);
    }
    return out;
  };
  using V = std::vector<std::vector<int64_t>>;
  // One slot per item, a user slot: rows of 3 items, 1 item, none.
  torch::Tensor k1 = keep({{1, 1, 1, 1}, {1, 1, 0, 0}, {1, 0, 0, 0}});
  EXPECT_EQ(ids(tiger_encoder_positions(k1, 1, 1, true)), (V{{0, 3, 2, 1}, {0, 1, 0, 0}, {0, 0, 0, 0}}));
  EXPECT_EQ(ids(tiger_encoder_positions(k1, 1, 1, false)), (V{{0, 1, 2, 3}}));
  // Two codes per item, no user slot: 3 items, 1 item.
  torch::Tensor k2 = keep({{1, 1, 1, 1, 1, 1}, {1, 1, 0, 0, 0, 0}});
  EXPECT_EQ(ids(tiger_encoder_positions(k2, 0, 2, true)), (V{{4, 5, 2, 3, 0, 1}, {0, 1, 0, 0, 0, 0}}));
  // Two codes per item and a user slot.
  torch::Tensor k3 = keep({{1, 1, 1, 1, 1}, {1, 1, 1, 0, 0}});
  EXPECT_EQ(ids(tiger_encoder_positions(k3, 1, 2, true)), (V{{0, 3, 4, 1, 2}, {0, 1, 2, 0, 0}}));
}

TEST(Tiger, EncoderPositionsOptionRoundTripsAndIsChecked) {
  TigerOptions o = tiny_options();
  o.encoder_positions = "recency";
  EXPECT_EQ(TigerOptions::from_json(o.to_json()).encoder_positions, "recency");
  nlohmann::json old = o.to_json();
  old.erase("encoder_positions");  // a checkpoint from before the option
  EXPECT_EQ(TigerOptions::from_json(old).encoder_positions, "start");
  o.encoder_positions = "end";
  expect_refused(o, random_sid(20, {4, 3}, 5), "model.encoder_positions");
}

// model.code_init: code embeddings start as the quantiser's centroids (one common scale, the
// first code_dim dimensions), so an item's summed code embeddings start as its scaled content
// vector; a quantiser that does not match the codes is refused.
TEST(Tiger, CodeEmbeddingsWarmStartFromTheQuantizersCodebooks) {
  const int64_t n = 40, dim = 6;
  std::vector<float> x(static_cast<size_t>(n * dim));
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  RQOptions ro;
  ro.levels = 2;
  ro.codebook_size = 4;
  RQResult fitted = fit_residual_quantizer(x.data(), n, dim, ro);
  SemanticIds sid = fitted.sid;
  resolve_collisions(sid, true);
  TigerOptions o = tiny_options();  // d_model 16 > dim 6
  TigerRecommender model(static_cast<int32_t>(n), o, sid);
  torch::Tensor before = model.code_embeddings(0);
  model.init_code_embeddings(fitted.quantizer);
  double scale = 0;
  for (int64_t l = 0; l < 2; ++l) {
    torch::Tensor e = model.code_embeddings(l);
    ASSERT_EQ(e.sizes(), (std::vector<int64_t>{4, 16}));
    torch::Tensor book = torch::from_blob(fitted.quantizer.codebook(l).data(), {4, dim}, torch::kFloat).clone();
    if (l == 0) scale = (e.narrow(1, 0, dim).norm() / book.norm()).item<double>();
    EXPECT_LT((e.narrow(1, 0, dim) - book * scale).abs().max().item<float>(), 1e-5) << "level " << l;
  }
  EXPECT_GT(scale, 0.0);
  // Level 0's mean row norm is the random start's; the other dimensions keep 0.1 of it.
  EXPECT_NEAR(model.code_embeddings(0).narrow(1, 0, dim).norm(2, {1}).mean().item<double>(),
              before.norm(2, {1}).mean().item<double>(), 1e-4);
  EXPECT_LT((model.code_embeddings(0).narrow(1, dim, 16 - dim) - before.narrow(1, dim, 16 - dim) * 0.1).abs().max().item<float>(), 1e-6);
  // The disambiguation level has no codebook; a quantiser with other levels or sizes is refused.
  RQOptions other = ro;
  other.levels = 3;
  EXPECT_THROW(model.init_code_embeddings(fit_residual_quantizer(x.data(), n, dim, other).quantizer), InvalidInput);
  other.levels = 2;
  other.codebook_size = 5;
  EXPECT_THROW(model.init_code_embeddings(fit_residual_quantizer(x.data(), n, dim, other).quantizer), InvalidInput);
  // The option round-trips through a checkpoint's options.
  o.code_init = "/nonexistent/rq.safetensors";
  EXPECT_EQ(TigerOptions::from_json(o.to_json()).code_init, o.code_init);
}

// model.history_bias = true: b is the maximum-likelihood offset of history items on the
// training transitions; -inf when no target repeats a history item; score() applies it.
TEST(Tiger, HistoryBiasIsLearnedFromTrainingTransitionsAndApplied) {
  SemanticIds sid = random_sid(30, {4, 3, 3}, 1);
  TigerOptions o = tiny_options();
  o.history_bias = true;
  {
    SCOPED_TRACE("no target repeats a history item");
    Dataset ds = genrec::test::dataset_from_sequences({{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10}, {11, 12, 13, 14, 15}});
    Split split = make_split(ds, SplitOptions{});
    TigerRecommender model(30, o, sid);
    EXPECT_EQ(model.history_bias(), 0.0);  // before estimation
    EXPECT_EQ(model.estimate_history_bias(ds, split), -std::numeric_limits<double>::infinity());
    std::vector<std::vector<int32_t>> items = {{1, 2, 3, 4, 5, 6, 7, 8, 9}, {20}, {}};
    std::vector<History> hs = histories(items);
    torch::Tensor exact = model.exhaustive_log_probs(hs);
    for (int64_t beam : {3, 21}) {
      model.set_beam(beam);
      torch::Tensor s = model.score(hs);
      for (size_t b = 0; b < hs.size(); ++b) {
        const std::set<int32_t> h(items[b].begin(), items[b].end());
        // Exactly `beam` items (the beam is widened by the history), none of them from it.
        std::vector<std::pair<float, int32_t>> got;
        for (int32_t i = 1; i <= 30; ++i)
          if (s[static_cast<int64_t>(b)][i].item<float>() > -1e29) got.emplace_back(s[static_cast<int64_t>(b)][i].item<float>(), i);
        ASSERT_EQ(static_cast<int64_t>(got.size()), std::min<int64_t>(beam, 30 - static_cast<int64_t>(h.size()))) << "row " << b;
        for (const auto& [score, i] : got) {
          EXPECT_EQ(h.count(i), 0u) << "history item " << i << " returned";
          EXPECT_NEAR(score, exact[static_cast<int64_t>(b)][i].item<float>(), 1e-4);
        }
        if (beam == 21) {
          // The widened beam covers the trie: the best non-history items, exactly.
          std::vector<std::pair<float, int32_t>> want;
          for (int32_t i = 1; i <= 30; ++i)
            if (!h.count(i)) want.emplace_back(exact[static_cast<int64_t>(b)][i].item<float>(), i);
          std::sort(want.rbegin(), want.rend());
          std::sort(got.rbegin(), got.rend());
          for (size_t r = 0; r < got.size(); ++r) EXPECT_NEAR(got[r].first, want[r].first, 1e-4) << "rank " << r;
        }
      }
    }
    // Stored with the weights; off drops it.
    TempDir tmp;
    {
      torch::serialize::OutputArchive out;
      model.save(out);
      out.save_to((tmp / "m.ckpt").string());
    }
    SemanticIds shell;  // as a checkpoint's options give it: sizes only, the codes come from load()
    shell.n_items = sid.n_items;
    shell.levels = sid.levels;
    shell.codebook_sizes = sid.codebook_sizes;
    TigerRecommender again(30, o, shell);
    torch::serialize::InputArchive in;
    in.load_from((tmp / "m.ckpt").string());
    again.load(in);
    EXPECT_EQ(again.history_bias(), -std::numeric_limits<double>::infinity());
    again.set_history_bias(false, -1.0);
    EXPECT_EQ(again.history_bias(), 0.0);
    again.set_beam(5);
    torch::Tensor plain = again.score(hs);
    std::vector<BeamResult> beams = again.beam_search(hs, 5);
    for (size_t b = 0; b < hs.size(); ++b)
      for (size_t r = 0; r < beams[b].items.size(); ++r)
        EXPECT_NEAR(plain[static_cast<int64_t>(b)][beams[b].items[r]].item<float>(), beams[b].scores[r], 1e-6);
  }
  {
    SCOPED_TRACE("some targets repeat a history item");
    Dataset ds = genrec::test::dataset_from_sequences({{1, 2, 1, 3, 2, 4, 5}, {6, 7, 6, 7, 8}, {9, 10, 11, 12, 9, 13}, {14, 15, 16, 17, 18}});
    Split split = make_split(ds, SplitOptions{});
    TigerRecommender model(30, o, sid);
    const double b = model.estimate_history_bias(ds, split, 1000);  // every transition
    ASSERT_TRUE(std::isfinite(b));
    // The maximum of the exhaustively computed likelihood.
    const double at = history_bias_log_lik(model, ds, split, b);
    EXPECT_GE(at, history_bias_log_lik(model, ds, split, b - 0.05) - 1e-6);
    EXPECT_GE(at, history_bias_log_lik(model, ds, split, b + 0.05) - 1e-6);
    EXPECT_GT(at, history_bias_log_lik(model, ds, split, 0.0));
    // score(): a history item's score is its log-probability + b; a wide beam is exact.
    std::vector<std::vector<int32_t>> items = {{1, 2, 3}, {6, 7, 6}};
    std::vector<History> hs = histories(items);
    torch::Tensor exact = model.exhaustive_log_probs(hs);
    model.set_beam(30);
    torch::Tensor s = model.score(hs);
    for (size_t r = 0; r < hs.size(); ++r) {
      const std::set<int32_t> h(items[r].begin(), items[r].end());
      for (int32_t i = 1; i <= 30; ++i)
        EXPECT_NEAR(s[static_cast<int64_t>(r)][i].item<float>(), exact[static_cast<int64_t>(r)][i].item<float>() + (h.count(i) ? b : 0.0), 1e-4)
            << "row " << r << " item " << i;
    }
  }
  TigerOptions off = tiny_options();
  TigerRecommender model(30, off, sid);
  Dataset ds = genrec::test::dataset_from_sequences({{1, 2, 3}});
  EXPECT_EQ(model.estimate_history_bias(ds, make_split(ds, SplitOptions{})), 0.0);  // option off
  EXPECT_TRUE(TigerOptions::from_json(o.to_json()).history_bias);
  nlohmann::json old = o.to_json();
  old.erase("history_bias");
  EXPECT_FALSE(TigerOptions::from_json(old).history_bias);  // checkpoints from before the option
}

TEST(Tiger, TrainsSavesAndLoads) {
  TempDir tmp;
  GeneratorOptions g;
  g.n_users = 80;
  g.n_items = 40;
  g.mean_len = 8;
  g.max_len = 12;
  save_dataset(generate_dataset(g), tmp / "data");
  write_semantic_ids_bin(tmp / "codes.bin", random_sid(40, {4, 4}, 5));
  TrainRequest req;
  req.config_text = "[model]\ntype = \"tiger\"\nsid = \"" + (tmp / "codes.bin").string() + R"("
d_model = 16
n_heads = 2
d_kv = 8
d_ff = 32
enc_layers = 1
dec_layers = 1
max_items = 5
beam = 10
history_bias = true
[train]
epochs = 2
batch_size = 64
eval_every = 1
threads = 1
)";
  req.data = tmp / "data";
  req.out = tmp / "run";
  TrainResult r = train_run(req);
  EXPECT_GE(r.test.metrics.at("recall@10"), 0.0);
  // The checkpoint carries the semantic IDs: it loads without the codes file.
  fs::remove(tmp / "codes.bin");
  LoadedCheckpoint c = load_checkpoint(tmp / "run" / "checkpoints" / "best.ckpt");
  ASSERT_EQ(c.model->type(), "tiger");
  // A trained model's beams are real, distinct items too.
  auto* tiger = dynamic_cast<TigerRecommender*>(c.model.get());
  ASSERT_NE(tiger, nullptr);
  // The history bias was fitted on the training data (generated users repeat items: b is finite)
  // and travels with the checkpoint.
  EXPECT_TRUE(std::isfinite(tiger->history_bias()));
  EXPECT_NE(tiger->history_bias(), 0.0);
  {
    std::ifstream log(tmp / "run" / "train_log.jsonl");
    std::string first;
    ASSERT_TRUE(std::getline(log, first));
    const nlohmann::json line = nlohmann::json::parse(first);
    ASSERT_TRUE(line.contains("history_bias")) << first;
    EXPECT_TRUE(line["history_bias"].is_number()) << first;  // finite here; "-inf" when excluded
  }
  std::vector<std::vector<int32_t>> items = {{1, 2, 3}, {40}, {10, 20, 30, 39}};
  for (const BeamResult& br : tiger->beam_search(histories(items), 10)) {
    ASSERT_EQ(br.items.size(), 10u);
    std::set<int32_t> seen(br.items.begin(), br.items.end());
    EXPECT_EQ(seen.size(), 10u);
    EXPECT_GE(*seen.begin(), 1);
    EXPECT_LE(*seen.rbegin(), 40);
  }
  EvalResult again = eval_run(tmp / "run", SplitPart::Test);
  EXPECT_EQ(again.metrics, r.test.metrics);
  // The run evaluates without the bias too (--set model.history_bias=false), which changes the
  // scores of history items; a bad value is refused.
  EvalResult plain = eval_run(tmp / "run", SplitPart::Test, {"model.history_bias=false"});
  EXPECT_NE(plain.metrics, r.test.metrics);
  EXPECT_INVALID(eval_run(tmp / "run", SplitPart::Test, {"model.history_bias=sometimes"}), "history_bias");
  // A training-time option cannot be switched at evaluation: refused, not ignored.
  EXPECT_INVALID(eval_run(tmp / "run", SplitPart::Test, {"model.trie_softmax=true"}), "model.trie_softmax",
                 "fixed when the run is trained");

  // `recommend` widens the beam to k (here above the configured beam of 10), and by the history
  // when seen items are left out, so every returned item is a real beam result.
  auto request = [](bool exclude) {
    RecommendRequest rq;
    rq.history = std::vector<std::string>{"1", "2", "3", "4", "5", "6"};
    rq.k = 15;
    rq.exclude_seen = exclude;
    return rq;
  };
  for (const bool exclude : {false, true}) {
    const RecommendRequest rq = request(exclude);
    nlohmann::json out = recommend_run(tmp / "run", rq);
    ASSERT_EQ(out["items"].size(), 15u) << out.dump();
    std::set<std::string> got;
    for (const auto& e : out["items"]) {
      EXPECT_GT(e["score"].get<double>(), -1e29) << out.dump();
      got.insert(e["item"].get<std::string>());
      if (exclude) {
        EXPECT_EQ(std::count(rq.history->begin(), rq.history->end(), e["item"].get<std::string>()), 0) << out.dump();
      }
    }
    EXPECT_EQ(got.size(), 15u);
  }
  // recommend --set: TIGER's inference keys apply to a trained run as in eval (level weights
  // rescale every item's score; without the history bias the history's items score lower), and
  // the inference key of the run's config gives the same list as no override at all.
  {
    RecommendRequest rq = request(false);
    const nlohmann::json base = recommend_run(tmp / "run", rq);
    rq.overrides = {"model.beam=10"};
    EXPECT_EQ(recommend_run(tmp / "run", rq)["items"], base["items"]);
    auto score_of = [](const nlohmann::json& out, const std::string& item) {
      for (const auto& e : out["items"])
        if (e["item"] == item) return e["score"].get<double>();
      return -1e30;
    };
    std::string twos;
    for (int32_t l = 0; l < tiger->codes().levels; ++l) twos += std::string(l ? ", " : "") + "2.0";
    rq.overrides = {"model.level_weights=[" + twos + "]"};
    const nlohmann::json doubled = recommend_run(tmp / "run", rq);
    ASSERT_EQ(doubled["items"].size(), 15u);
    // Each level's log-probability counts twice: a non-history item's score doubles exactly (the
    // history bias, added once, separates history items).
    int compared = 0;
    for (const auto& e : base["items"]) {
      const std::string item = e["item"].get<std::string>();
      if (std::count(rq.history->begin(), rq.history->end(), item) != 0) continue;
      const double twice = score_of(doubled, item);
      if (twice < -1e29) continue;  // dropped below the top 15
      EXPECT_NEAR(twice, 2 * e["score"].get<double>(), 1e-3) << item;
      ++compared;
    }
    EXPECT_GT(compared, 0);
    rq.overrides = {"model.history_bias=false"};
    const nlohmann::json unbiased = recommend_run(tmp / "run", rq);
    EXPECT_NE(unbiased["items"], base["items"]);
    for (const char* bad : {"model.trie_softmax=true", "model.d_model=8", "train.lr=0.1"}) {
      rq.overrides = {bad};
      EXPECT_INVALID(recommend_run(tmp / "run", rq), "--set takes index.* keys only", "for a TIGER run model.beam");
    }
    rq.overrides = {"model.cold_fraction=1.5"};
    EXPECT_INVALID(recommend_run(tmp / "run", rq), "cold_fraction");
  }
  // The serving engine widens the beam per batch the same way: its answer equals recommend's.
  serve::EngineOptions so;
  so.run_dir = tmp / "run";
  so.state_dir = tmp / "state";
  serve::Engine engine(so);
  for (const bool exclude : {false, true}) {
    const RecommendRequest rq = request(exclude);
    nlohmann::json want = recommend_run(tmp / "run", rq);
    serve::RecommendQuery q;
    q.history.items = *rq.history;
    q.k = 15;
    q.exclude_seen = exclude;
    serve::RecommendReply got = engine.recommend(q);
    ASSERT_EQ(got.items.size(), 15u);
    for (size_t i = 0; i < got.items.size(); ++i) {
      EXPECT_EQ(got.items[i].item, want["items"][i]["item"].get<std::string>()) << "rank " << i + 1;
      EXPECT_NEAR(got.items[i].score, want["items"][i]["score"].get<double>(), 1e-4) << "rank " << i + 1;
    }
  }

  // train.init_from: a second stage starts from this run's weights (a learning rate too small to
  // move them keeps the test metrics, the history bias re-fitted to the same value); other
  // semantic IDs, or a second source of starting weights, are refused before a run is made.
  write_semantic_ids_bin(tmp / "codes.bin", random_sid(40, {4, 4}, 5));
  write_semantic_ids_bin(tmp / "other_codes.bin", random_sid(40, {4, 4}, 6));
  TrainRequest next = req;
  next.out = tmp / "stage2";
  next.overrides = {"train.init_from=\"" + (tmp / "run").string() + "\"", "train.epochs=1", "train.lr=1e-20"};
  EXPECT_EQ(train_run(next).test.metrics, r.test.metrics);
  // Recency weights from the config reach the model (its checkpoint's options) and change what
  // one epoch learns.
  TrainRequest plain_stage = req, weighted = req;
  plain_stage.out = tmp / "plain-stage";
  weighted.out = tmp / "weighted";
  plain_stage.overrides = {"train.init_from=\"" + (tmp / "run").string() + "\"", "train.epochs=1"};
  weighted.overrides = plain_stage.overrides;
  weighted.overrides.push_back("train.recency_weight=3.0");
  train_run(plain_stage);
  train_run(weighted);
  {
    LoadedCheckpoint a = load_checkpoint(tmp / "plain-stage" / "checkpoints" / "last.ckpt");
    LoadedCheckpoint b = load_checkpoint(tmp / "weighted" / "checkpoints" / "last.ckpt");
    EXPECT_EQ(a.model->options()["recency_weight"], 0.0);
    EXPECT_EQ(b.model->options()["recency_weight"], 3.0);
    const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3}, {10, 20, 30, 39}};
    const std::vector<History> h = histories(seqs);
    auto* ta = dynamic_cast<TigerRecommender*>(a.model.get());
    auto* tb = dynamic_cast<TigerRecommender*>(b.model.get());
    ASSERT_NE(ta, nullptr);
    ASSERT_NE(tb, nullptr);
    EXPECT_FALSE(torch::allclose(ta->exhaustive_log_probs(h), tb->exhaustive_log_probs(h), 1e-4, 1e-5));
    // model.trie_softmax (no parameters of its own, so it may start from the run): a trained
    // model's item probabilities are a distribution over the items.
    TrainRequest masked = plain_stage;
    masked.out = tmp / "trie-softmax";
    masked.overrides.push_back("model.trie_softmax=true");
    train_run(masked);
    LoadedCheckpoint c = load_checkpoint(tmp / "trie-softmax" / "checkpoints" / "best.ckpt");
    EXPECT_EQ(c.model->options()["trie_softmax"], true);
    auto* tc = dynamic_cast<TigerRecommender*>(c.model.get());
    ASSERT_NE(tc, nullptr);
    EXPECT_NEAR(tc->exhaustive_log_probs(h).narrow(1, 1, 40).exp().sum(1).min().item<double>(), 1.0, 1e-5);
  }
  // A second stage on the training and validation events (data.train_on_valid): no validation,
  // early stopping cannot end it, its last epoch is kept.
  TrainRequest refit = req;
  refit.out = tmp / "refit";
  refit.overrides = {"train.init_from=\"" + (tmp / "run").string() + "\"", "data.train_on_valid=true", "train.patience=1"};
  genrec::test::expect_trained_on_valid(tmp / "refit", 2, train_run(refit).test);
  for (const auto& [extra, needle] : std::vector<std::pair<std::string, std::string>>{
           {"model.sid=\"" + (tmp / "other_codes.bin").string() + "\"", "semantic IDs differ"},
           {"model.code_init=\"" + (tmp / "rq.safetensors").string() + "\"", "keep one"},
           // a deeper decoder than the checkpoint's, named by its first missing tensor
           {"model.dec_layers=2", "the checkpoint has no parameter dec.1."}}) {
    TrainRequest bad = next;
    bad.out = tmp / "refused";
    bad.overrides.push_back(extra);
    EXPECT_INVALID(train_run(bad), needle);
    EXPECT_FALSE(fs::exists(tmp / "refused"));
  }
}

TEST(Tiger, BadOptionsAndMismatchedCodes) {
  TigerOptions o = tiny_options();
  o.beam = 0;
  EXPECT_THROW(TigerRecommender(30, o, random_sid(30, {4, 3}, 1)), InvalidInput);
  EXPECT_THROW(TigerRecommender(31, tiny_options(), random_sid(30, {4, 3}, 1)), InvalidInput);
}

TEST(Tiger, ColdFractionOpensPlacesToItemsWithoutTrainingEvents) {
  // 200 items under 16 two-code prefixes: a disambiguation level of about 12 siblings each, so
  // the last step has plenty of warm and cold candidates.
  SemanticIds sid = random_sid(200, {4, 4}, 2);
  std::vector<std::vector<int32_t>> items = {{5, 6}, {199, 1, 77, 150, 3, 3, 9}, {42}};
  std::vector<History> hs = histories(items);
  std::vector<double> counts(201, 1.0);
  for (int32_t i = 1; i <= 200; i += 2) counts[static_cast<size_t>(i)] = 0.0;  // odd items: cold
  TigerRecommender model(200, tiny_options(), sid);
  const std::vector<BeamResult> plain = model.beam_search(hs, 20);
  model.set_cold_items(counts);
  // cold_fraction 0 (the default) leaves the search as it was.
  const std::vector<BeamResult> zero = model.beam_search(hs, 20);
  for (size_t b = 0; b < hs.size(); ++b) EXPECT_EQ(zero[b].items, plain[b].items);

  model.set_cold_fraction(0.25);  // 5 of 20 places
  torch::Tensor exact = model.exhaustive_log_probs(hs);
  const std::vector<BeamResult> res = model.beam_search(hs, 20);
  CodeTrie trie(sid);
  for (size_t b = 0; b < hs.size(); ++b) {
    ASSERT_EQ(res[b].items.size(), 20u);
    std::set<int32_t> seen;
    std::map<int32_t, float> cold_score_of_prefix;
    int n_cold = 0;
    for (size_t r = 0; r < res[b].items.size(); ++r) {
      const int32_t item = res[b].items[r];
      ASSERT_GE(item, 1);
      ASSERT_LE(item, 200);
      EXPECT_TRUE(seen.insert(item).second) << "duplicate item " << item;
      if (r > 0) {
        EXPECT_GE(res[b].scores[r - 1], res[b].scores[r]);
      }
      const float e = exact[static_cast<int64_t>(b)][item].item<float>();
      if (counts[static_cast<size_t>(item)] > 0) {
        EXPECT_NEAR(res[b].scores[r], e, 1e-4) << "warm items keep their exact score";
        continue;
      }
      ++n_cold;
      // Cold: the prefix's log-probability minus log(siblings), the same for every cold item
      // under one prefix (their learned last code means nothing).
      const int32_t prefix = sid.item_codes(item)[0];  // levels 0..1 are the prefix; level 0 + 1 below
      const int32_t key = prefix * 16 + sid.item_codes(item)[1];
      auto [it, fresh] = cold_score_of_prefix.emplace(key, res[b].scores[r]);
      if (!fresh) {
        EXPECT_NEAR(it->second, res[b].scores[r], 1e-5);
      }
    }
    EXPECT_EQ(n_cold, 5) << "user " << b << ": cold items fill exactly their 5 places";
  }
  // With the history bias the beam is searched wider, and the cold items still get their 5 of
  // the 20 places, no history item among the 20.
  model.set_history_bias(true, -std::numeric_limits<double>::infinity());
  torch::Tensor s = model.score(hs);
  for (size_t b = 0; b < hs.size(); ++b) {
    int n_cold = 0, n = 0;
    for (int32_t i = 1; i <= 200; ++i) {
      if (s[static_cast<int64_t>(b)][i].item<float>() <= -1e29) continue;
      ++n;
      n_cold += counts[static_cast<size_t>(i)] > 0 ? 0 : 1;
      EXPECT_EQ(std::count(items[b].begin(), items[b].end(), i), 0) << "history item " << i;
    }
    EXPECT_EQ(n, 20) << "user " << b;
    EXPECT_EQ(n_cold, 5) << "user " << b;
  }
  EXPECT_THROW(model.set_cold_fraction(1.5), InvalidInput);
  EXPECT_DOUBLE_EQ(model.options()["cold_fraction"].get<double>(), 0.25);  // a refused value is not kept
  const int64_t beam = model.options()["beam"].get<int64_t>();
  EXPECT_THROW(model.set_beam(0), InvalidInput);
  EXPECT_EQ(model.options()["beam"].get<int64_t>(), beam);
  EXPECT_THROW(model.set_cold_items(std::vector<double>(7, 0.0)), InvalidInput);
}
