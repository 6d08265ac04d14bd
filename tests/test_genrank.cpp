// The HSTU generative ranker (rank/genrank.h), M-FALCON (HSTUImpl::forward_candidates), the
// Ranker training/evaluation path (rank/ranker.h) and `genrec rank`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/eval/ranking_metrics.h"
#include "genrec/rank/genrank.h"
#include "genrec/rank/ranker.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
namespace fs = std::filesystem;
using genrec::test::run_cli;
using genrec::test::TempDir;

namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Random histories of the given lengths (right-padded to the longest) and M candidates each.
struct Request {
  RankSeq history;
  RankCandidates candidates;
};
Request random_request(const std::vector<int64_t>& lens, int64_t M, int64_t n_items, int64_t n_feedback, bool times) {
  const auto B = static_cast<int64_t>(lens.size());
  int64_t T = 0;
  for (int64_t l : lens) T = std::max(T, l);
  Request r;
  r.history.items = torch::randint(1, n_items + 1, {B, T}, torch::kLong);
  r.history.feedback = torch::randint(1, n_feedback + 1, {B, T}, torch::kLong);
  r.history.lengths = torch::tensor(lens, torch::kLong);
  torch::Tensor pad = torch::arange(T).unsqueeze(0) >= r.history.lengths.unsqueeze(1);
  r.history.items.masked_fill_(pad, 0);
  r.history.feedback.masked_fill_(pad, 0);
  if (times) {
    // Increasing times with gaps from seconds to months.
    torch::Tensor gaps = torch::exp(torch::rand({B, T}) * 15).to(torch::kLong);
    r.history.times = torch::cumsum(gaps, 1) + 1000000000;
    r.candidates.times = r.history.times.max() + torch::exp(torch::rand({B, M}) * 12).to(torch::kLong);
  }
  r.candidates.items = torch::randint(1, n_items + 1, {B, M}, torch::kLong);
  r.candidates.counts = torch::full({B}, M, torch::kLong);
  return r;
}

GenRank make_net(const std::string& layout, const std::string& scale, int64_t micro_batch, bool time_bias,
                 bool head_item = false) {
  GenRank net(GenRankOptions(50, 5, 3)
                  .d_model(16)
                  .max_len(24)
                  .n_blocks(2)
                  .n_heads(2)
                  .dropout(0.0)
                  .layout(layout)
                  .time_bias(time_bias)
                  .attn_scale(scale)
                  .micro_batch(micro_batch)
                  .head_item(head_item));
  // Non-trivial relative biases (they start near zero).
  torch::NoGradGuard ng;
  for (auto& p : net->named_parameters())
    if (p.key().find("bias") != std::string::npos && p.value().dim() == 2) p.value().normal_(0, 0.5);
  net->eval();
  return net;
}

}  // namespace

TEST(GenRankMFalcon, EqualsOneForwardPassPerCandidate) {
  torch::manual_seed(11);
  torch::NoGradGuard ng;
  struct Case {
    std::string layout, scale;
    bool times;
    int64_t micro_batch;
    bool head_item = false;
  };
  // Every layout, normaliser, with and without times, micro-batches of 1, a divisor-free 3 and
  // more than the candidates.
  const std::vector<Case> cases{{"action", "max_len", true, 3},      {"action", "count", false, 1},
                                {"action", "count", true, 64},       {"interleaved", "max_len", false, 3},
                                {"interleaved", "count", true, 1},   {"interleaved", "max_len", true, 64},
                                {"action", "max_len", true, 3, true}, {"interleaved", "count", true, 1, true}};
  for (const Case& k : cases) {
    GenRank net = make_net(k.layout, k.scale, k.micro_batch, true, k.head_item);
    for (const auto& lens : std::vector<std::vector<int64_t>>{{7}, {1, 12, 0, 5}, {24, 3}}) {
      for (int64_t M : {1, 10}) {
        Request r = random_request(lens, M, 50, 5, k.times);
        torch::Tensor fast = net->forward_candidates(r.history, r.candidates);
        torch::Tensor slow = net->forward_candidates_naive(r.history, r.candidates);
        ASSERT_EQ(fast.sizes(), (std::vector<int64_t>{static_cast<int64_t>(lens.size()), M, 3}));
        EXPECT_LE(max_diff(fast, slow), 1e-5) << k.layout << " scale=" << k.scale << " times=" << k.times
                                              << " micro_batch=" << k.micro_batch << " head_item=" << k.head_item << " M=" << M
                                              << " B=" << lens.size();
      }
    }
  }
}

TEST(GenRankMFalcon, CandidatesDoNotSeeEachOther) {
  torch::manual_seed(12);
  torch::NoGradGuard ng;
  GenRank net = make_net("action", "max_len", 4, true);
  Request r = random_request({9, 4}, 10, 50, 5, true);
  torch::Tensor a = net->forward_candidates(r.history, r.candidates);
  Request r2 = r;
  r2.candidates.items = r.candidates.items.clone();
  r2.candidates.items.narrow(1, 1, 9).random_(1, 51);  // every candidate but the first changes
  torch::Tensor b = net->forward_candidates(r2.history, r2.candidates);
  EXPECT_LE(max_diff(a.narrow(1, 0, 1), b.narrow(1, 0, 1)), 1e-6);
  EXPECT_GT(max_diff(a.narrow(1, 1, 9), b.narrow(1, 1, 9)), 1e-4);
}

TEST(GenRankSequence, PositionTSeesEarlierEventsAndItsOwnItemButNotItsFeedback) {
  torch::manual_seed(13);
  torch::NoGradGuard ng;
  for (const std::string layout : {"action", "interleaved"}) {
    GenRank net = make_net(layout, "max_len", 8, true);
    Request r = random_request({10}, 1, 50, 5, true);
    torch::Tensor base = net->forward_sequence(r.history);
    const int64_t t = 4;
    RankSeq own_fb = r.history, later = r.history, own_item = r.history;
    own_fb.feedback = r.history.feedback.clone();
    own_fb.feedback[0][t] = own_fb.feedback[0][t] % 5 + 1;
    later.items = r.history.items.clone();
    later.items.narrow(1, t + 1, 5).random_(1, 51);
    own_item.items = r.history.items.clone();
    own_item.items[0][t] = own_item.items[0][t] % 50 + 1;
    auto upto = [&](const torch::Tensor& x) { return x.narrow(1, 0, t + 1); };
    EXPECT_LE(max_diff(upto(base), upto(net->forward_sequence(own_fb))), 1e-6) << layout;
    EXPECT_LE(max_diff(upto(base), upto(net->forward_sequence(later))), 1e-6) << layout;
    EXPECT_GT(max_diff(base.select(1, t), net->forward_sequence(own_item).select(1, t)), 1e-4) << layout;
    // The feedback at t reaches t + 1.
    EXPECT_GT(max_diff(base.select(1, t + 1), net->forward_sequence(own_fb).select(1, t + 1)), 1e-5) << layout;
  }
}

TEST(GenRankOptions, BadOptionsNameTheKey) {
  auto expect = [](const GenRankOptions& o, const std::string& needle) { EXPECT_INVALID(GenRank(o), needle); };
  expect(GenRankOptions(10, 3, 2).layout("zigzag"), "model.layout");
  expect(GenRankOptions(10, 3, 2).micro_batch(0), "model.micro_batch");
  expect(GenRankOptions(10, 3, 0), "model.tasks");
}

// ---------------------------------------------------------------------------------------------
// Ranker: training, evaluation, checkpoints

namespace {
Dataset action_dataset() {
  GeneratorOptions g;
  g.n_users = 300;
  g.n_items = 80;
  g.n_clusters = 4;
  g.mean_len = 25;
  g.max_len = 60;
  g.n_action_types = 4;
  g.ratings = true;
  g.seed = 5;
  return generate_dataset(g);
}
Split temporal_split(const Dataset& ds) {
  SplitOptions so;
  so.kind = "temporal";
  return make_split(ds, so);
}
RankerOptions small_ranker(const std::string& type) {
  RankerOptions o;
  o.type = type;
  o.tasks = {"action:like", "action:skip", "rating"};
  o.d_model = 16;
  o.max_len = 30;
  o.n_blocks = 1;
  o.n_heads = 2;
  o.dropout = 0.0;
  o.epochs = 4;
  o.batch_size = 16;
  o.lr = 1e-2;
  o.seed = 3;
  return o;
}
}  // namespace

TEST(Ranker, TrainsEvaluatesAndRoundTripsThroughACheckpoint) {
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  for (const std::string type : {"genrank", "din"}) {
    RankerOptions o = small_ranker(type);
    RankData rd = make_rank_data(ds, o.data_options());
    Ranker r(o, ds.n_items(), rd.n_feedback);
    int validations = 0;
    r.fit(RankTrainContext{ds, rd, split, nullptr, [&](const nlohmann::json& line, bool) {
                             ++validations;
                             EXPECT_TRUE(line.contains("valid"));
                           }});
    EXPECT_EQ(validations, 4) << type;
    EvalResult test = r.evaluate(ds, rd, split, SplitPart::Test);
    for (const char* key : {"action:like/auc", "action:like/gauc", "action:like/logloss", "action:skip/auc", "rating/rmse"})
      ASSERT_TRUE(test.metrics.count(key)) << type << " " << key;
    EXPECT_GT(test.metrics.at("candidates"), 100);
    // The breakdown by whether the user has events before the cut covers every candidate.
    EXPECT_EQ(test.metrics.at("no_history/candidates") + test.metrics.at("with_history/candidates"),
              test.metrics.at("candidates"));
    EXPECT_GT(test.metrics.at("with_history/candidates"), 0);
    EXPECT_TRUE(test.metrics.count("with_history/action:skip/auc")) << type;
    // Skips are out-of-cluster items: visible from the history, so a few epochs rank them.
    EXPECT_GT(test.metrics.at("action:skip/auc"), 0.6) << type;

    TempDir tmp;
    save_ranker_checkpoint(tmp / "r.ckpt", r, ds.items, rd);
    LoadedRanker back = load_ranker_checkpoint(tmp / "r.ckpt");
    EXPECT_EQ(back.ranker->options().type, type);
    EvalResult again = back.ranker->evaluate(ds, rd, split, SplitPart::Test);
    EXPECT_EQ(again.metrics.at("action:like/auc"), test.metrics.at("action:like/auc")) << type;
    torch::Tensor probs = torch::ones({1});
    torch::Tensor s1 = r.score(rd, {3, 4, 5}, {1, 2, 3}, {}, {7, 8}, -1, &probs),
                  s2 = back.ranker->score(rd, {3, 4, 5}, {1, 2, 3}, {}, {7, 8});
    EXPECT_TRUE(torch::equal(s1, s2)) << type;
    EXPECT_FALSE(probs.defined()) << type;  // one head per task: no feedback distribution
  }
}

// What genrec rank and /v1/rank print: binary tasks as the sigmoid of the logit, regression
// tasks as they are, the feedback distribution by name when there is one; candidates in order.
TEST(Ranker, CandidateScoresReadOffTheOutputsByName) {
  RankData rd;
  rd.tasks = {{"like", true}, {"rating", false}};
  rd.n_feedback = 2;
  rd.feedback_names = {"1", "5"};
  const torch::Tensor out = torch::tensor({{0.0f, 2.0f}, {std::log(3.0f), 4.5f}});
  std::vector<CandidateScores> plain = read_candidate_scores(rd, out, torch::Tensor());
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_NEAR(plain[0].tasks.at("like"), 0.5, 1e-7);
  EXPECT_NEAR(plain[1].tasks.at("like"), 0.75, 1e-6);  // sigmoid(ln 3) = 3/4
  EXPECT_EQ(plain[0].tasks.at("rating"), 2.0);
  EXPECT_EQ(plain[1].tasks.at("rating"), 4.5);
  EXPECT_TRUE(plain[0].feedback.empty() && plain[1].feedback.empty());
  const torch::Tensor probs = torch::tensor({{0.25f, 0.75f}, {0.5f, 0.5f}});
  std::vector<CandidateScores> dist = read_candidate_scores(rd, out, probs);
  ASSERT_EQ(dist.size(), 2u);
  EXPECT_EQ(dist[0].feedback.at("1"), 0.25);
  EXPECT_EQ(dist[0].feedback.at("5"), 0.75);
  EXPECT_EQ(dist[1].feedback.at("5"), 0.5);
  EXPECT_EQ(dist[1].tasks, plain[1].tasks);
  EXPECT_TRUE(read_candidate_scores(rd, torch::Tensor(), torch::Tensor()).empty());  // nothing scored
}

TEST(Ranker, FeedbackOutputReadsEveryTaskOffOneSoftmax) {
  // model.output = "feedback": the net's outputs are logits over the feedback tokens (here the
  // rating levels 1..5); like and rating are read off that distribution.
  GeneratorOptions g;
  g.n_users = 200;
  g.n_items = 60;
  g.n_clusters = 4;
  g.mean_len = 20;
  g.max_len = 40;
  g.ratings = true;
  g.seed = 9;
  Dataset ds = generate_dataset(g);
  for (const std::string type : {"genrank", "din"}) {
    RankerOptions o = small_ranker(type);
    o.tasks = {"like", "rating"};
    o.output = "feedback";
    RankData rd = make_rank_data(ds, o.data_options());
    ASSERT_EQ(rd.n_feedback, 5);
    Ranker r(o, ds.n_items(), rd.n_feedback);
    r.net().eval();
    const std::vector<int32_t> hist = {3, 4, 5}, fb = {1, 4, 5}, cands = {7, 8, 9};
    torch::Tensor probs;
    torch::Tensor s = r.score(rd, hist, fb, {}, cands, -1, &probs);  // [3, 2]
    ASSERT_EQ(s.sizes(), (std::vector<int64_t>{3, 2}));
    ASSERT_TRUE(probs.defined()) << type;
    ASSERT_EQ(probs.sizes(), (std::vector<int64_t>{3, 5})) << type;
    RankSeq h;
    h.items = torch::tensor({3, 4, 5}, torch::kLong).view({1, 3});
    h.feedback = torch::tensor({1, 4, 5}, torch::kLong).view({1, 3});
    h.lengths = torch::tensor({3}, torch::kLong);
    RankCandidates c;
    c.items = torch::tensor({7, 8, 9}, torch::kLong).view({1, 3});
    c.counts = torch::tensor({3}, torch::kLong);
    torch::Tensor logits;
    {
      torch::NoGradGuard ng;
      logits = r.net().forward_candidates(h, c).squeeze(0);  // [3, 5]
    }
    ASSERT_EQ(logits.size(1), 5) << type;
    for (int64_t m = 0; m < 3; ++m) {
      double z = 0, like = 0, mean = 0;
      for (int64_t f = 0; f < 5; ++f) z += std::exp(logits[m][f].item<double>());
      for (int64_t f = 0; f < 5; ++f) {
        const double p = std::exp(logits[m][f].item<double>()) / z;
        if (f + 1 >= 4) like += p;  // levels 4 and 5 are likes (like_threshold 4)
        mean += p * static_cast<double>(f + 1);
      }
      EXPECT_NEAR(s[m][0].item<double>(), std::log(like / (1 - like)), 1e-5) << type;
      EXPECT_NEAR(s[m][1].item<double>(), mean, 1e-5) << type;
      for (int64_t f = 0; f < 5; ++f)  // the distribution score() hands out is that softmax
        EXPECT_NEAR(probs[m][f].item<double>(), std::exp(logits[m][f].item<double>()) / z, 1e-6) << type << " " << f;
    }

    // Trained by the feedback token's cross-entropy (logged beside the read-off tasks' losses),
    // the rating read off the softmax beats the training mean on the test period.
    Split split = temporal_split(ds);
    double train_sum = 0, n_train = 0;
    for (size_t e = 0; e < ds.event_ratings.size(); ++e)
      if (ds.event_timestamps[e] < split.valid_cut) train_sum += ds.event_ratings[e], ++n_train;
    double feedback_loss = 0;
    r.fit(RankTrainContext{ds, rd, split, nullptr, [&](const nlohmann::json& line, bool) {
                             feedback_loss = line.at("task_loss").at("feedback").get<double>();
                             EXPECT_TRUE(line.at("task_loss").contains("rating")) << type;
                           }});
    EXPECT_GT(feedback_loss, 0) << type;
    EXPECT_LT(feedback_loss, std::log(5.0)) << type;  // below the uniform softmax
    EvalResult test = r.evaluate(ds, rd, split, SplitPart::Test);
    double se = 0, n = 0;
    for (size_t e = 0; e < ds.event_ratings.size(); ++e)
      if (ds.event_timestamps[e] >= split.test_cut) se += std::pow(ds.event_ratings[e] - train_sum / n_train, 2), ++n;
    EXPECT_LT(test.metrics.at("rating/rmse"), std::sqrt(se / n)) << type;
    EXPECT_GT(test.metrics.at("like/auc"), 0.6) << type;

    TempDir tmp;
    save_ranker_checkpoint(tmp / "r.ckpt", r, ds.items, rd);
    LoadedRanker back = load_ranker_checkpoint(tmp / "r.ckpt");
    EXPECT_EQ(back.ranker->options().output, "feedback");
    EXPECT_EQ(back.ranker->evaluate(ds, rd, split, SplitPart::Test).metrics.at("rating/rmse"),
              test.metrics.at("rating/rmse")) << type;
  }

  // Tasks the tokens do not determine: with actions, the tokens are actions, not ratings.
  Dataset actions = action_dataset();
  RankerOptions o = small_ranker("genrank");
  o.output = "feedback";
  RankData rd = make_rank_data(actions, o.data_options());
  Ranker r(o, actions.n_items(), rd.n_feedback);
  EXPECT_INVALID(r.fit(RankTrainContext{actions, rd, temporal_split(actions), nullptr, nullptr}),
                 "model.output = \"feedback\": task 'rating' is not determined by the feedback tokens");
  EXPECT_INVALID(r.evaluate(actions, rd, temporal_split(actions), SplitPart::Test), "task 'rating' is not determined");
  o.tasks = {"action:like", "action:skip"};
  RankData readable = make_rank_data(actions, o.data_options());
  Ranker by_action(o, actions.n_items(), readable.n_feedback);
  by_action.fit(RankTrainContext{actions, readable, temporal_split(actions), nullptr, nullptr});
  // Skips are out-of-cluster items, visible from the history (as with one head per task).
  EXPECT_GT(by_action.evaluate(actions, readable, temporal_split(actions), SplitPart::Test).metrics.at("action:skip/auc"), 0.6);
}

TEST(Ranker, RequestModeTrainsOnHistoryCandidatePairs) {
  // train.mode = requests: candidates after a random cut, scored as evaluation scores them.
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  for (const std::string type : {"genrank", "din"}) {
    RankerOptions o = small_ranker(type);
    o.train_mode = "requests";
    RankData rd = make_rank_data(ds, o.data_options());
    Ranker r(o, ds.n_items(), rd.n_feedback);
    std::vector<double> losses;
    r.fit(RankTrainContext{ds, rd, split, nullptr,
                           [&](const nlohmann::json& line, bool) { losses.push_back(line["loss"].get<double>()); }});
    ASSERT_EQ(losses.size(), 4u) << type;
    EXPECT_LT(losses.back(), losses.front()) << type;
    EXPECT_GT(r.evaluate(ds, rd, split, SplitPart::Test).metrics.at("action:skip/auc"), 0.6) << type;
  }
}

TEST(Ranker, ColdWeightTeachesTheEmptyHistoryPrior) {
  // train.cold_weight: every training event is also scored after an empty history. A new user's
  // predicted rating of an item (history empty) should then track the item's mean training
  // rating far better than when only the first event of each training window teaches that case.
  // (genrank: its empty-history path is the candidate token alone; DIN's prediction for an empty
  // history comes from its target-item path, which every event trains anyway.)
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  std::vector<double> sum(static_cast<size_t>(ds.n_items() + 1), 0.0), n(sum.size(), 0.0);
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    UserEvents ev = ds.user(u);
    for (int64_t t = 0; t < split.train_end[static_cast<size_t>(u)]; ++t) {
      sum[static_cast<size_t>(ev.items[t])] += ev.ratings[t];
      n[static_cast<size_t>(ev.items[t])] += 1;
    }
  }
  std::vector<int32_t> items;
  for (int32_t i = 1; i <= ds.n_items(); ++i)
    if (n[static_cast<size_t>(i)] >= 20) items.push_back(i);
  ASSERT_GT(items.size(), 30u);
  for (const std::string type : {"genrank"}) {
    std::vector<double> err;
    for (double w : {0.0, 1.0}) {
      RankerOptions o = small_ranker(type);
      o.tasks = {"rating"};
      o.cold_weight = w;
      RankData rd = make_rank_data(ds, o.data_options());
      Ranker r(o, ds.n_items(), rd.n_feedback);
      r.fit(RankTrainContext{ds, rd, split, nullptr, nullptr});
      torch::Tensor s = r.score(rd, {}, {}, {}, items);  // [M, 1]: ratings predicted for a new user
      double e = 0;
      for (size_t m = 0; m < items.size(); ++m) {
        const double mean = sum[static_cast<size_t>(items[m])] / n[static_cast<size_t>(items[m])];
        e += std::pow(s[static_cast<int64_t>(m)][0].item<float>() - mean, 2);
      }
      err.push_back(std::sqrt(e / static_cast<double>(items.size())));
    }
    std::printf("%s: RMSE to the item means %.4f without, %.4f with\n", type.c_str(), err[0], err[1]);
    EXPECT_LT(err[1], 0.7 * err[0]) << type << ": RMSE to the item means without " << err[0] << ", with " << err[1];
  }
}

TEST(Ranker, PriorBiasSetsEachOutputToTheTrainingTargetsPrior) {
  // train.prior_bias, recomputed by hand over every event before each user's training end:
  // binary tasks log((pos + 0.5) / (neg + 0.5)), rating its mean, feedback tokens
  // log((count + 1) / (n + F)); the networks' output biases must then hold exactly these.
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  for (const std::string type : {"genrank", "din"}) {
    for (const std::string output : {"tasks", "feedback"}) {
      RankerOptions o = small_ranker(type);
      o.output = output;
      if (output == "feedback") o.tasks = {"action:like", "action:skip"};  // rating: not read off action tokens
      RankData rd = make_rank_data(ds, o.data_options());
      const size_t K = rd.n_tasks(), F = static_cast<size_t>(rd.n_feedback);
      std::vector<double> sum(K, 0.0), cnt(K, 0.0), tok(F, 0.0);
      double n = 0;
      for (int32_t u = 1; u <= ds.n_users(); ++u) {
        UserEvents ev = ds.user(u);
        for (int64_t t = 0; t < split.train_end[static_cast<size_t>(u)]; ++t) {
          const int64_t e = ds.user_offsets[static_cast<size_t>(u)] + t;
          n += 1;
          tok[static_cast<size_t>(ev.actions[t] - 1)] += 1;
          for (size_t k = 0; k < K; ++k) {
            sum[k] += rd.label(e, k);
            cnt[k] += 1;
          }
        }
      }
      std::vector<double> want;
      if (output == "feedback")
        for (size_t f = 0; f < F; ++f) want.push_back(std::log((tok[f] + 1) / (n + static_cast<double>(F))));
      else
        for (size_t k = 0; k < K; ++k)
          want.push_back(rd.tasks[k].binary ? std::log((sum[k] + 0.5) / (cnt[k] - sum[k] + 0.5)) : sum[k] / cnt[k]);
      ASSERT_GT(n, 1000);
      Ranker r(o, ds.n_items(), rd.n_feedback);
      const std::vector<double> got = r.set_prior_bias(ds, rd, split);
      ASSERT_EQ(got.size(), want.size()) << type << " " << output;
      std::vector<float> held;
      for (const torch::Tensor& b : r.net().output_biases())
        for (int64_t i = 0; i < b.numel(); ++i) held.push_back(b[i].item<float>());
      ASSERT_EQ(held.size(), want.size()) << type << " " << output;
      for (size_t j = 0; j < want.size(); ++j) {
        EXPECT_NEAR(got[j], want[j], 1e-9) << type << " " << output << " output " << j;
        EXPECT_NEAR(held[j], want[j], 1e-6) << type << " " << output << " output " << j;
      }
      if (output == "tasks") {
        EXPECT_GT(want[2], 1.0) << "the rating mean";  // far from the initialiser's bias
      }
    }
  }
}

TEST(Ranker, TrainingSequencesLabelEveryEventOnceAfterTheirContext) {
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  int64_t n_train = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) n_train += split.train_end[static_cast<size_t>(u)];
  struct Case {
    std::string type;
    int64_t context, reach, span;  // train.context; context read before a window; targets per window
  };
  // genrank: max_len 30 = context + targets; din: windows of max_len targets after max_len events.
  for (const Case& c : {Case{"genrank", 0, 0, 30}, Case{"genrank", 10, 10, 20}, Case{"din", 0, 30, 30}}) {
    RankerOptions o = small_ranker(c.type);
    o.train_context = c.context;
    RankData rd = make_rank_data(ds, o.data_options());
    Ranker r(o, ds.n_items(), rd.n_feedback);
    std::vector<RankTrainSeq> seqs = r.train_sequences(ds, split);
    std::vector<int> labelled(ds.event_items.size(), 0);
    int64_t prev_len = 0;
    for (const RankTrainSeq& q : seqs) {
      const int64_t first = ds.user_offsets[static_cast<size_t>(q.user)];
      ASSERT_LE(q.read_begin, q.label_begin);
      ASSERT_LT(q.label_begin, q.end);
      ASSERT_LE(q.end, first + split.train_end[static_cast<size_t>(q.user)]);
      EXPECT_LE(q.end - q.label_begin, c.span) << c.type;
      EXPECT_EQ(q.label_begin - q.read_begin, std::min(c.reach, q.label_begin - first)) << c.type << " " << c.context;
      EXPECT_GE(q.end - q.label_begin, prev_len) << "shortest first";
      prev_len = q.end - q.label_begin;
      for (int64_t e = q.label_begin; e < q.end; ++e) ++labelled[static_cast<size_t>(e)];
    }
    int64_t once = 0;
    for (int v : labelled) {
      ASSERT_LE(v, 1);
      once += v;
    }
    EXPECT_EQ(once, n_train) << c.type << " " << c.context;
  }
  // With context the model still trains and evaluates.
  RankerOptions o = small_ranker("genrank");
  o.train_context = 10;
  o.epochs = 2;
  RankData rd = make_rank_data(ds, o.data_options());
  Ranker r(o, ds.n_items(), rd.n_feedback);
  r.fit(RankTrainContext{ds, rd, split, nullptr, nullptr});
  EXPECT_GT(r.evaluate(ds, rd, split, SplitPart::Test).metrics.at("action:skip/auc"), 0.6);
}

TEST(Ranker, StreamingEvaluationScoresEachCandidateAfterItsOwnPast) {
  // eval.history = streaming: a candidate is read after the user's events before its timestamp
  // (the period's earlier events included). The batched evaluation must give the metrics of one
  // score() call per candidate with exactly that history.
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  for (const std::string type : {"genrank", "din"}) {
    RankerOptions o = small_ranker(type);
    o.eval_history = "streaming";
    RankData rd = make_rank_data(ds, o.data_options());
    o.epochs = 1;
    Ranker r(o, ds.n_items(), rd.n_feedback);
    r.fit(RankTrainContext{ds, rd, split, nullptr, nullptr});  // spread scores: fewer near-ties in the AUCs
    EvalResult fast = r.evaluate(ds, rd, split, SplitPart::Test);
    std::vector<int32_t> users;
    std::vector<float> outputs, labels;
    int64_t with_history = 0;
    for (int32_t u = 1; u <= ds.n_users(); ++u) {
      const int64_t b = ds.user_offsets[static_cast<size_t>(u)], e = ds.user_offsets[static_cast<size_t>(u) + 1];
      for (int64_t c = b; c < e; ++c) {
        const int64_t t = ds.event_timestamps[static_cast<size_t>(c)];
        if (t < split.test_cut) continue;
        std::vector<int32_t> items, feedback;
        std::vector<int64_t> times;
        for (int64_t h = b; h < e && ds.event_timestamps[static_cast<size_t>(h)] < t; ++h) {
          items.push_back(ds.event_items[static_cast<size_t>(h)]);
          feedback.push_back(rd.feedback[static_cast<size_t>(h)]);
          times.push_back(ds.event_timestamps[static_cast<size_t>(h)]);
        }
        with_history += items.empty() ? 0 : 1;
        torch::Tensor s = r.score(rd, items, feedback, times, {ds.event_items[static_cast<size_t>(c)]}, t);
        users.push_back(u);
        for (size_t k = 0; k < rd.n_tasks(); ++k) {
          outputs.push_back(s[0][static_cast<int64_t>(k)].item<float>());
          labels.push_back(rd.label(c, k));
        }
      }
    }
    auto slow = ranking_metrics(rd.tasks, users, outputs, labels);
    EXPECT_EQ(fast.metrics.at("candidates"), static_cast<double>(users.size())) << type;
    EXPECT_EQ(fast.metrics.at("with_history/candidates"), static_cast<double>(with_history)) << type;
    // Batched and one-by-one passes differ by float rounding only; a wrong history moves these
    // metrics by far more (see the cut protocol below).
    for (const char* key : {"action:like/auc", "action:like/gauc", "action:like/logloss", "rating/rmse"})
      EXPECT_NEAR(fast.metrics.at(key), slow.at(key), 1e-6) << type << " " << key;
    EXPECT_NE(fast.protocol.find("streaming"), std::string::npos);
    // The cut protocol reads older histories for the same candidates: other scores.
    r.set_eval_history("cut");
    EvalResult cut = r.evaluate(ds, rd, split, SplitPart::Test);
    EXPECT_EQ(cut.metrics.at("candidates"), fast.metrics.at("candidates"));
    EXPECT_LT(cut.metrics.at("with_history/candidates"), fast.metrics.at("with_history/candidates")) << type;
    EXPECT_NE(cut.metrics.at("rating/rmse"), fast.metrics.at("rating/rmse")) << type;
  }
}

TEST(Ranker, EmaValidatesTheAveragedWeights) {
  // train.ema: validation and the final weights are the moving average. A vanishing decay
  // reproduces the raw weights (the raw trajectory does not depend on the average); a real one
  // gives other weights, still a working model.
  Dataset ds = action_dataset();
  Split split = temporal_split(ds);
  auto train = [&](double ema) {
    RankerOptions o = small_ranker("genrank");
    o.eval_every = o.epochs;  // one validation, at the end: the final weights are the best
    o.ema = ema;
    RankData rd = make_rank_data(ds, o.data_options());
    auto r = std::make_unique<Ranker>(o, ds.n_items(), rd.n_feedback);
    r->fit(RankTrainContext{ds, rd, split, nullptr, nullptr});
    std::vector<torch::Tensor> w;
    for (const auto& p : r->net().parameters()) w.push_back(p.detach().clone());
    return std::make_pair(std::move(r), w);
  };
  auto raw = train(0.0), tiny = train(1e-12), avg = train(0.9);
  double tiny_diff = 0, avg_diff = 0;
  for (size_t i = 0; i < raw.second.size(); ++i) {
    tiny_diff = std::max(tiny_diff, (raw.second[i] - tiny.second[i]).abs().max().item<double>());
    avg_diff = std::max(avg_diff, (raw.second[i] - avg.second[i]).abs().max().item<double>());
  }
  EXPECT_LT(tiny_diff, 1e-6);
  EXPECT_GT(avg_diff, 1e-3);
  RankData rd = make_rank_data(ds, small_ranker("genrank").data_options());
  EXPECT_GT(avg.first->evaluate(ds, rd, split, SplitPart::Test).metrics.at("action:skip/auc"), 0.6);
}

TEST(Ranker, BadOptionsAreRejectedWithTheKey) {
  auto expect = [](RankerOptions o, const std::string& needle) { EXPECT_INVALID(o.validate(), needle); };
  RankerOptions o;
  o.tasks = {};
  expect(o, "model.tasks");
  o = RankerOptions{};
  o.task_weights = {1.0};
  expect(o, "model.task_weights");
  o = RankerOptions{};
  o.metric = "like/ndcg";
  expect(o, "train.metric");
  o = RankerOptions{};
  o.metric = "share/auc";
  expect(o, "train.metric");
  o = RankerOptions{};
  o.type = "sasrec";
  expect(o, "model.type");
  o = RankerOptions{};
  o.train_mode = "online";
  expect(o, "train.mode");
  o = RankerOptions{};
  o.cold_weight = -1;
  expect(o, "train.cold_weight");
  o = RankerOptions{};
  o.train_context = o.max_len;
  expect(o, "train.context");
  o = RankerOptions{};
  o.ema = 1.0;
  expect(o, "train.ema");
  o = RankerOptions{};
  o.eval_history = "live";
  expect(o, "eval.history");
  o = RankerOptions{};
  o.output = "logits";
  expect(o, "model.output must be tasks or feedback, got 'logits'");
  o = RankerOptions{};
  o.output = "feedback";
  o.task_weights = {1.0, 0.5};
  expect(o, "model.task_weights: with model.output = \"feedback\"");
  RankerOptions good = small_ranker("genrank");
  Ranker named(good, 10, 3);
  EXPECT_THROW(named.set_eval_history("sliding"), InvalidInput);
  EXPECT_EQ(named.options().eval_history, "cut");
  // A leave-one-out split is not a ranking split.
  Dataset ds = action_dataset();
  Split loo = make_split(ds, SplitOptions{});
  RankerOptions ok = small_ranker("din");
  RankData rd = make_rank_data(ds, ok.data_options());
  Ranker r(ok, ds.n_items(), rd.n_feedback);
  EXPECT_THROW(r.fit(RankTrainContext{ds, rd, loo, nullptr, nullptr}), InvalidInput);
}

namespace {
// A ranking run through train_run on action_dataset(): genrank with dropout and train.ema (so
// the random stream, the averaged and the raw weights all have to survive a checkpoint), or din.
TrainRequest ranking_run(const std::filesystem::path& data, const std::filesystem::path& out, const std::string& type,
                         int epochs) {
  TrainRequest req;
  req.config_text = "[data]\nsplit = \"temporal\"\n[model]\ntype = \"" + type +
                    "\"\ntasks = [\"action:like\", \"rating\"]\nd_model = 16\nmax_len = 30\ndropout = 0.2\n" +
                    (type == "genrank" ? "n_blocks = 1\n" : "") + "[train]\nepochs = " + std::to_string(epochs) +
                    "\nbatch_size = 16\nlr = 0.005\nthreads = 1\nseed = 11\npatience = 10\n" +
                    (type == "genrank" ? "ema = 0.9\n" : "");
  req.data = data;
  req.out = out;
  return req;
}
}  // namespace

TEST(RankRun, ResumeGivesTheSameResultAsAnUninterruptedRun) {
  TempDir tmp;
  save_dataset(action_dataset(), tmp / "data");
  for (const std::string type : {"genrank", "din"}) {
    TrainRequest full = ranking_run(tmp / "data", tmp / ("full-" + type), type, 3);
    TrainResult a = train_run(full);
    TrainRequest cut = full;
    cut.out = tmp / ("cut-" + type);
    // Cancelled when epoch 3 starts: epochs 1-2 are checkpointed.
    auto cancel = [](const ProgressEvent& e) { return e.stage != "train epoch 3"; };
    EXPECT_THROW(train_run(cut, cancel), Cancelled) << type;
    EXPECT_EQ(genrec::test::train_log_without_timings(cut.out).size(), 2u) << type;
    TrainRequest resume;
    resume.out = cut.out;
    resume.resume = true;
    TrainResult b = train_run(resume);
    EXPECT_EQ(a.test.metrics, b.test.metrics) << type;
    EXPECT_EQ(a.valid.metrics, b.valid.metrics) << type;
    EXPECT_EQ(genrec::test::train_log_without_timings(full.out), genrec::test::train_log_without_timings(cut.out)) << type;
    EXPECT_EQ(genrec::test::train_log_without_timings(cut.out).size(), 3u) << type;
    const auto ma = nlohmann::json::parse(genrec::test::read_text(full.out / "metrics.json"));
    const auto mb = nlohmann::json::parse(genrec::test::read_text(cut.out / "metrics.json"));
    EXPECT_EQ(ma["best_epoch"], mb["best_epoch"]) << type;
    // The best checkpoint is what the run reports (with train.ema: the averaged weights).
    EXPECT_EQ(eval_run(cut.out, SplitPart::Test).metrics, b.test.metrics) << type;
  }
  // Refused: a run without last.ckpt, and a checkpoint without training state (as genrec
  // versions before resumable rankers wrote them).
  TrainRequest resume;
  resume.resume = true;
  resume.out = tmp / "empty";
  std::filesystem::create_directories(resume.out);
  genrec::test::write_text(resume.out / "config.toml", genrec::test::read_text(tmp / "full-din" / "config.toml"));
  EXPECT_INVALID(train_run(resume), "no checkpoint to resume from");
  {
    Dataset ds = load_dataset(tmp / "data");
    LoadedRanker done = load_ranker_checkpoint(tmp / "full-din" / "checkpoints" / "last.ckpt");
    RankData rd = make_rank_data(ds, done.ranker->options().data_options());
    Ranker fresh(done.ranker->options(), ds.n_items(), rd.n_feedback);
    std::filesystem::create_directories(resume.out / "checkpoints");
    save_ranker_checkpoint(resume.out / "checkpoints" / "last.ckpt", fresh, ds.items, rd, {{"epoch", 2}});
  }
  EXPECT_INVALID(train_run(resume), "did not save their training state");
}

TEST(RankRun, InitFromStartsAFreshScheduleFromTheSavedWeights) {
  TempDir tmp;
  Dataset ds = action_dataset();
  save_dataset(ds, tmp / "data");
  TrainRequest first = ranking_run(tmp / "data", tmp / "first", "genrank", 2);
  TrainResult a = train_run(first);
  // A second stage whose learning rate cannot move the weights, without train.ema: it starts
  // from the first run's best (averaged) weights, with its own schedule (its log starts at 1).
  TrainRequest second = first;
  second.out = tmp / "second";
  const std::string from = "train.init_from=\"" + first.out.string() + "\"";
  second.overrides = {from, "train.epochs=1", "train.lr=1e-20", "train.ema=0"};
  TrainResult b = train_run(second);
  EXPECT_EQ(a.test.metrics, b.test.metrics);
  EXPECT_EQ(genrec::test::train_log_without_timings(second.out).size(), 1u);
  EXPECT_EQ(genrec::test::train_log_without_timings(second.out)[0]["epoch"], 1);
  EXPECT_NE(genrec::test::read_text(second.out / "config.toml").find("init_from"), std::string::npos);
  // Without init_from the same run starts from random weights: the check above can fail.
  TrainRequest scratch = second;
  scratch.out = tmp / "scratch";
  scratch.overrides = {"train.epochs=1", "train.lr=1e-20", "train.ema=0"};
  EXPECT_NE(train_run(scratch).test.metrics, a.test.metrics);
  // A checkpoint file works like its run directory.
  second.out = tmp / "from-file";
  second.overrides[0] = "train.init_from=\"" + (first.out / "checkpoints" / "best.ckpt").string() + "\"";
  EXPECT_EQ(train_run(second).test.metrics, a.test.metrics);

  // Each mismatch is refused, naming the checkpoint, before a run directory is made.
  Dataset other = ds;
  other.items = Vocabulary();
  for (int32_t i = 1; i <= ds.n_items(); ++i) other.items.add("x" + ds.items.raw(i));
  save_dataset(other, tmp / "other-data");
  auto refused = [&](const std::string& type, std::vector<std::string> overrides, const std::string& data,
                     const std::string& needle) {
    TrainRequest r = ranking_run(tmp / data, tmp / "refused", type, 1);
    r.overrides = std::move(overrides);
    EXPECT_INVALID(train_run(r), needle);
    EXPECT_FALSE(std::filesystem::exists(tmp / "refused"));
  };
  refused("genrank", {"train.init_from=\"" + (tmp / "nowhere").string() + "\""}, "data", "no such checkpoint");
  refused("genrank", {from, "model.d_model=32"}, "data", "wrong shape");
  refused("genrank", {from, "model.n_blocks=2"}, "data", "the checkpoint has no parameter ");
  refused("din", {from}, "data", "holds a 'genrank' model");
  refused("genrank", {from, "model.tasks=[\"action:like\"]"}, "data", "predicts tasks");
  refused("genrank", {from}, "other-data", "another item vocabulary");
  refused("genrank", {from, "model.d_model=32"}, "data", (first.out / "checkpoints" / "best.ckpt").string());
}

TEST(RankCli, TrainThenRankAUser) {
  TempDir tmp;
  const std::string q = "'";
  auto gen = run_cli("-q data generate --out " + q + (tmp / "data").string() + q +
                     " --users 200 --items 60 --actions 4 --ratings --seed 9");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  genrec::test::write_text(tmp / "genrank.toml", R"([data]
split = "temporal"
[model]
type = "genrank"
tasks = ["action:like", "rating"]
d_model = 16
max_len = 20
n_blocks = 1
[train]
epochs = 2
batch_size = 32
)");
  auto train = run_cli("-q train --config " + q + (tmp / "genrank.toml").string() + q + " --data " + q +
                       (tmp / "data").string() + q + " --out " + q + (tmp / "run").string() + q);
  ASSERT_EQ(train.exit_code, 0) << train.err;
  auto metrics = nlohmann::json::parse(train.out);
  EXPECT_TRUE(metrics["metrics"].contains("action:like/auc")) << train.out;

  auto ranked = run_cli("rank --run " + q + (tmp / "run").string() + q + " --user 1 --candidates 1,2,3");
  ASSERT_EQ(ranked.exit_code, 0) << ranked.err;
  auto j = nlohmann::json::parse(ranked.out);
  ASSERT_EQ(j["candidates"].size(), 3u);
  const double p = j["candidates"][0]["scores"]["action:like"].get<double>();
  EXPECT_GT(p, 0.0);
  EXPECT_LT(p, 1.0);

  auto adhoc = run_cli("rank --run " + q + (tmp / "run").string() + q + " --history 1:like,2:skip --candidates 3");
  EXPECT_EQ(adhoc.exit_code, 0) << adhoc.err;
  auto bad_fb = run_cli("rank --run " + q + (tmp / "run").string() + q + " --history 1:loved --candidates 3");
  EXPECT_EQ(bad_fb.exit_code, 2);
  EXPECT_NE(bad_fb.err.find("unknown feedback 'loved'"), std::string::npos) << bad_fb.err;
  auto bad_item = run_cli("rank --run " + q + (tmp / "run").string() + q + " --user 1 --candidates nope");
  EXPECT_EQ(bad_item.exit_code, 2);
  EXPECT_NE(bad_item.err.find("nope"), std::string::npos) << bad_item.err;
  auto eval = run_cli("-q eval --run " + q + (tmp / "run").string() + q + " --split valid");
  EXPECT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_NE(eval.out.find("action:like/auc"), std::string::npos);
  EXPECT_FALSE(j["candidates"][0].contains("feedback")) << ranked.out;  // one head per task

  // eval --predictions: every scored candidate as TSV; the metrics recomputed from the file equal
  // the reported ones.
  const fs::path pred = tmp / "pred.tsv";
  auto with_pred = run_cli("-q eval --run " + q + (tmp / "run").string() + q + " --split test --predictions " + q +
                           pred.string() + q);
  ASSERT_EQ(with_pred.exit_code, 0) << with_pred.err;
  const auto m = nlohmann::json::parse(with_pred.out)["metrics"];
  std::istringstream lines(genrec::test::read_text(pred));
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(line, "user\titem\ttimestamp\thas_history\taction:like\taction:like_label\trating\trating_label");
  std::vector<int32_t> users;
  std::vector<float> like, like_label;
  double sq = 0;
  int64_t rows = 0, with_history = 0;
  std::map<std::string, int32_t> user_ids;
  while (std::getline(lines, line)) {
    std::vector<std::string> f;
    std::stringstream cells(line);
    for (std::string c; std::getline(cells, c, '\t');) f.push_back(c);
    ASSERT_EQ(f.size(), 8u) << line;
    EXPECT_FALSE(f[2].empty()) << line;  // generated data has timestamps
    ++rows;
    with_history += f[3] == "1";
    users.push_back(user_ids.emplace(f[0], static_cast<int32_t>(user_ids.size())).first->second);
    like.push_back(std::stof(f[4]));
    like_label.push_back(std::stof(f[5]));
    EXPECT_TRUE(like.back() > 0 && like.back() < 1) << line;  // a probability, not a logit
    sq += std::pow(std::stod(f[6]) - std::stod(f[7]), 2);
  }
  EXPECT_EQ(rows, m["candidates"].get<int64_t>());
  EXPECT_EQ(with_history, m["with_history/candidates"].get<int64_t>());
  EXPECT_NEAR(auc(like, like_label), m["action:like/auc"].get<double>(), 1e-9);
  EXPECT_NEAR(gauc(users, like, like_label).gauc, m["action:like/gauc"].get<double>(), 1e-9);
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(rows)), m["rating/rmse"].get<double>(), 1e-5);
  auto no_dir = run_cli("-q eval --run " + q + (tmp / "run").string() + q + " --predictions " + q +
                        (tmp / "nowhere" / "p.tsv").string() + q);
  EXPECT_EQ(no_dir.exit_code, 2);
  EXPECT_NE(no_dir.err.find("no such directory"), std::string::npos) << no_dir.err;
  genrec::test::write_text(tmp / "pop.toml", "[model]\ntype = \"pop\"\n");
  auto pop = run_cli("-q train --config " + q + (tmp / "pop.toml").string() + q + " --data " + q +
                     (tmp / "data").string() + q + " --out " + q + (tmp / "pop").string() + q);
  ASSERT_EQ(pop.exit_code, 0) << pop.err;
  auto pop_pred = run_cli("-q eval --run " + q + (tmp / "pop").string() + q + " --predictions " + q + pred.string() + q);
  EXPECT_EQ(pop_pred.exit_code, 2);
  EXPECT_NE(pop_pred.err.find("applies to ranking runs"), std::string::npos) << pop_pred.err;

  // model.output = "feedback": each candidate also gets the predicted distribution over the
  // actions, and the task read off it is that distribution's P(like).
  auto fb_train = run_cli("-q train --config " + q + (tmp / "genrank.toml").string() + q + " --data " + q +
                          (tmp / "data").string() + q + " --out " + q + (tmp / "run-fb").string() + q +
                          " --set model.output=feedback --set 'model.tasks=[\"action:like\", \"action:skip\"]'" +
                          " --set train.epochs=1");
  ASSERT_EQ(fb_train.exit_code, 0) << fb_train.err;
  auto fb = run_cli("rank --run " + q + (tmp / "run-fb").string() + q + " --history 1:like,2:skip --candidates 3,4");
  ASSERT_EQ(fb.exit_code, 0) << fb.err;
  auto jf = nlohmann::json::parse(fb.out);
  ASSERT_EQ(jf["candidates"].size(), 2u) << fb.out;
  for (const auto& c : jf["candidates"]) {
    ASSERT_TRUE(c.contains("feedback")) << fb.out;
    double total = 0;
    for (const auto& [name, p] : c["feedback"].items()) total += p.get<double>();
    EXPECT_EQ(c["feedback"].size(), 4u) << fb.out;  // the generated actions
    EXPECT_NEAR(total, 1.0, 1e-5) << fb.out;
    EXPECT_NEAR(c["scores"]["action:like"].get<double>(), c["feedback"]["like"].get<double>(), 1e-5) << fb.out;
    EXPECT_NEAR(c["scores"]["action:skip"].get<double>(), c["feedback"]["skip"].get<double>(), 1e-5) << fb.out;
  }
}
