#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "genrec/core/error.h"
#include "genrec/eval/ranking_metrics.h"
#include "test_expect.h"

using namespace genrec;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// O(n^2) reference: pairs positive > negative count 1, ties 1/2.
double brute_auc(const std::vector<float>& s, const std::vector<float>& y) {
  double wins = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j)
      if (y[i] == 1 && y[j] == 0) {
        pairs += 1;
        wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
      }
  return wins / pairs;
}

double direct_log_loss(double z, double y) {
  double p = 1.0 / (1.0 + std::exp(-z));
  return -(y * std::log(p) + (1 - y) * std::log(1 - p));
}

}  // namespace

TEST(RankingMetrics, AucByHandWithTies) {
  // Positives 0.35, 0.8, 0.4; negatives 0.1, 0.4.
  // Pairs: (0.35 > 0.1) 1, (0.35 < 0.4) 0, (0.8 > both) 2, (0.4 > 0.1) 1, (0.4 = 0.4) 1/2 -> 4.5 / 6.
  EXPECT_DOUBLE_EQ(auc({0.1f, 0.4f, 0.35f, 0.8f, 0.4f}, {0, 0, 1, 1, 1}), 0.75);
  EXPECT_DOUBLE_EQ(auc({1, 2, 3, 4}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(auc({4, 3, 2, 1}, {0, 0, 1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(auc({7, 7, 7, 7, 7}, {0, 1, 0, 1, 1}), 0.5);  // all tied
}

TEST(RankingMetrics, AucMatchesPairCountingOnRandomData) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> s(200), y(200);
    for (size_t i = 0; i < s.size(); ++i) {
      s[i] = static_cast<float>(rng() % 10);  // many ties
      y[i] = static_cast<float>(rng() % 3 == 0);
    }
    ASSERT_NEAR(auc(s, y), brute_auc(s, y), 1e-12);
  }
}

TEST(RankingMetrics, AucIsNaNWithOneClass) {
  EXPECT_TRUE(std::isnan(auc({0.1f, 0.2f}, {1, 1})));
  EXPECT_TRUE(std::isnan(auc({0.1f, 0.2f}, {0, 0})));
  EXPECT_TRUE(std::isnan(auc({}, {})));
  EXPECT_TRUE(std::isnan(auc({0.1f, kNaN}, {0, 1})));  // a NaN score
}

TEST(RankingMetrics, GaucWeightsUsersByLabelledEvents) {
  // User 1: 4 events, AUC 1. User 2: 2 events, AUC 0. User 3: positives only (left out).
  // Rows interleaved: the users need not be grouped. GAUC = (4 * 1 + 2 * 0) / 6.
  std::vector<int32_t> users = {1, 2, 3, 1, 2, 1, 3, 1};
  std::vector<float> scores = {0.9f, 0.3f, 0.5f, 0.1f, 0.6f, 0.8f, 0.2f, 0.2f};
  std::vector<float> labels = {1, 1, 1, 0, 0, 1, 1, 0};
  GaucResult g = gauc(users, scores, labels);
  EXPECT_DOUBLE_EQ(g.gauc, 4.0 / 6.0);
  EXPECT_EQ(g.users, 2);

  GaucResult none = gauc({1, 2}, {0.1f, 0.2f}, {1, 0});
  EXPECT_TRUE(std::isnan(none.gauc));
  EXPECT_EQ(none.users, 0);

  // With ties inside a user: AUC 0.5 for user 5.
  GaucResult tied = gauc({5, 5, 5}, {1, 1, 1}, {1, 0, 0});
  EXPECT_DOUBLE_EQ(tied.gauc, 0.5);
  EXPECT_EQ(tied.users, 1);
}

TEST(RankingMetrics, LogLossFromLogits) {
  for (double z : {-3.0, -0.5, 0.0, 0.25, 2.0, 8.0})
    for (double y : {0.0, 1.0}) EXPECT_NEAR(log_loss_from_logit(z, y), direct_log_loss(z, y), 1e-12) << z << " " << y;
  EXPECT_NEAR(log_loss_from_logit(0.0, 1.0), std::log(2.0), 1e-15);
  // Extreme logits stay finite and exact.
  EXPECT_NEAR(log_loss_from_logit(50, 1), std::exp(-50.0), 1e-30);
  EXPECT_NEAR(log_loss_from_logit(-50, 0), std::exp(-50.0), 1e-30);
  EXPECT_NEAR(log_loss_from_logit(50, 0), 50.0, 1e-12);
  EXPECT_NEAR(log_loss_from_logit(-50, 1), 50.0, 1e-12);
  EXPECT_TRUE(std::isfinite(log_loss_from_logit(1000, 0)));
  EXPECT_NEAR(log_loss_from_logit(1000, 0), 1000.0, 1e-9);

  std::vector<float> z = {2.0f, -1.0f, 50.0f, -50.0f};
  std::vector<float> y = {1, 0, 0, 0};
  double expected = (direct_log_loss(2, 1) + direct_log_loss(-1, 0) + 50.0 + std::log1p(std::exp(-50.0))) / 4.0;
  EXPECT_NEAR(mean_log_loss(z, y), expected, 1e-12);
  EXPECT_TRUE(std::isnan(mean_log_loss({}, {})));
}

TEST(RankingMetrics, RmseAndMae) {
  // Errors -1, 0, -2.
  EXPECT_DOUBLE_EQ(rmse({1, 2, 3}, {2, 2, 5}), std::sqrt(5.0 / 3.0));
  EXPECT_DOUBLE_EQ(mae({1, 2, 3}, {2, 2, 5}), 1.0);
  EXPECT_DOUBLE_EQ(rmse({4}, {4}), 0.0);
  EXPECT_TRUE(std::isnan(rmse({}, {})));
  EXPECT_TRUE(std::isnan(mae({}, {})));
}

TEST(RankingMetrics, AllTasksWithMissingLabels) {
  std::vector<RankTask> tasks = {{"like", true}, {"rating", false}};
  // 5 rows x 2 tasks; row 2 has no like label, row 4 no rating.
  std::vector<int32_t> users = {1, 1, 1, 2, 2};
  std::vector<float> outputs = {2.0f, 4.0f,   //
                                -1.0f, 2.0f,  //
                                9.0f, 3.0f,   //
                                0.5f, 5.0f,   //
                                1.0f, 7.0f};
  std::vector<float> labels = {1, 5,     //
                               0, 3,     //
                               kNaN, 3,  //
                               0, 4,     //
                               1, kNaN};
  auto m = ranking_metrics(tasks, users, outputs, labels);
  std::vector<std::string> keys;
  for (const auto& [k, v] : m) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"like/auc", "like/gauc", "like/gauc_users", "like/logloss", "like/n",
                                            "like/positive_rate", "rating/mae", "rating/n", "rating/rmse"}));
  // like over rows 0, 1, 3, 4: scores 2, -1, 0.5, 1; labels 1, 0, 0, 1 -> AUC 1.
  EXPECT_DOUBLE_EQ(m["like/n"], 4);
  EXPECT_DOUBLE_EQ(m["like/auc"], 1.0);
  EXPECT_DOUBLE_EQ(m["like/gauc"], 1.0);
  EXPECT_DOUBLE_EQ(m["like/gauc_users"], 2);
  EXPECT_DOUBLE_EQ(m["like/positive_rate"], 0.5);
  double ll = (direct_log_loss(2, 1) + direct_log_loss(-1, 0) + direct_log_loss(0.5, 0) + direct_log_loss(1, 1)) / 4;
  EXPECT_NEAR(m["like/logloss"], ll, 1e-12);
  // rating over rows 0..3: errors -1, -1, 0, 1.
  EXPECT_DOUBLE_EQ(m["rating/n"], 4);
  EXPECT_DOUBLE_EQ(m["rating/rmse"], std::sqrt(3.0 / 4.0));
  EXPECT_DOUBLE_EQ(m["rating/mae"], 0.75);
}

TEST(RankingMetrics, OneClassAndNoLabels) {
  std::vector<RankTask> tasks = {{"action:share", true}, {"rating", false}};
  auto m = ranking_metrics(tasks, {1, 2, 3}, {0.1f, 1.0f, 0.2f, 2.0f, 0.3f, 3.0f}, {1, kNaN, 1, kNaN, 1, kNaN});
  EXPECT_TRUE(std::isnan(m["action:share/auc"]));
  EXPECT_TRUE(std::isnan(m["action:share/gauc"]));
  EXPECT_DOUBLE_EQ(m["action:share/gauc_users"], 0);
  EXPECT_DOUBLE_EQ(m["action:share/positive_rate"], 1.0);
  EXPECT_TRUE(std::isfinite(m["action:share/logloss"]));
  EXPECT_DOUBLE_EQ(m["action:share/n"], 3);
  EXPECT_DOUBLE_EQ(m["rating/n"], 0);
  EXPECT_TRUE(std::isnan(m["rating/rmse"]));
  EXPECT_TRUE(std::isnan(m["rating/mae"]));

  auto empty = ranking_metrics(tasks, {}, {}, {});
  EXPECT_DOUBLE_EQ(empty["action:share/n"], 0);
  EXPECT_TRUE(std::isnan(empty["action:share/positive_rate"]));
  EXPECT_TRUE(std::isnan(empty["action:share/logloss"]));
}

TEST(RankingMetrics, RejectsBadInput) {
  std::vector<RankTask> tasks = {{"like", true}, {"rating", false}};
  EXPECT_THROW(ranking_metrics(tasks, {1, 2}, {0, 0, 0}, {0, 0, 0, 0}), InvalidInput);  // outputs
  EXPECT_THROW(ranking_metrics(tasks, {1, 2}, {0, 0, 0, 0}, {0, 0, 0}), InvalidInput);  // labels
  EXPECT_THROW(ranking_metrics(tasks, {1}, {0, 0, 0, 0}, {0, 0, 0, 0}), InvalidInput);  // users
  EXPECT_THROW(ranking_metrics({}, {}, {}, {}), InvalidInput);
  // A binary label must be 0, 1 or NaN; a regression label may be anything.
  EXPECT_THROW(ranking_metrics(tasks, {1}, {0, 0}, {0.5f, 3}), InvalidInput);
  EXPECT_NO_THROW(ranking_metrics(tasks, {1}, {0, 0}, {1, 3.5f}));
  EXPECT_INVALID(ranking_metrics(tasks, {1, 2}, {0, 0, 0}, {0, 0, 0, 0}), "outputs has 3 values, expected 2 rows * 2 tasks");
  EXPECT_THROW(auc({1, 2}, {1}), InvalidInput);
  EXPECT_THROW(auc({1, 2}, {1, 2}), InvalidInput);
  EXPECT_THROW(gauc({1}, {1, 2}, {1, 0}), InvalidInput);
  EXPECT_THROW(mean_log_loss({1}, {1, 0}), InvalidInput);
  EXPECT_THROW(rmse({1}, {}), InvalidInput);
  EXPECT_THROW(mae({}, {1}), InvalidInput);
}
