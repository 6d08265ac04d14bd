#include <gtest/gtest.h>

#include <cmath>

#include "genrec/core/error.h"
#include "genrec/eval/metrics.h"

using namespace genrec;

TEST(Metrics, SingleTargetNoTies) {
  RankInfo first{0, 0};
  EXPECT_DOUBLE_EQ(expected_recall_at(1, first), 1.0);
  EXPECT_DOUBLE_EQ(expected_ndcg_at(1, first), 1.0);
  EXPECT_DOUBLE_EQ(expected_reciprocal_rank(first), 1.0);

  RankInfo fourth{3, 0};  // 0-based position 3 = 4th place
  EXPECT_DOUBLE_EQ(expected_recall_at(3, fourth), 0.0);
  EXPECT_DOUBLE_EQ(expected_recall_at(4, fourth), 1.0);
  EXPECT_DOUBLE_EQ(expected_ndcg_at(3, fourth), 0.0);
  EXPECT_NEAR(expected_ndcg_at(5, fourth), 1.0 / std::log2(5.0), 1e-12);  // 0.430677
  EXPECT_DOUBLE_EQ(expected_reciprocal_rank(fourth), 0.25);
}

TEST(Metrics, TiesAreAveragedOverRandomOrder) {
  // One item above, three tied with the target: positions 1..4 (0-based) equally likely.
  RankInfo r{1, 3};
  EXPECT_DOUBLE_EQ(expected_recall_at(1, r), 0.0);
  EXPECT_DOUBLE_EQ(expected_recall_at(2, r), 0.25);
  EXPECT_DOUBLE_EQ(expected_recall_at(3, r), 0.5);
  EXPECT_DOUBLE_EQ(expected_recall_at(10, r), 1.0);
  EXPECT_NEAR(expected_ndcg_at(3, r), (1.0 / std::log2(3.0) + 1.0 / std::log2(4.0)) / 4.0, 1e-12);  // 0.282732
  EXPECT_NEAR(expected_reciprocal_rank(r), (1.0 / 2 + 1.0 / 3 + 1.0 / 4 + 1.0 / 5) / 4.0, 1e-12);  // 0.320833

  // All 1000 items tied: exactly the random-ranking values.
  RankInfo all{0, 999};
  EXPECT_DOUBLE_EQ(expected_recall_at(10, all), 0.01);
  double h1000 = 0;
  for (int m = 1; m <= 1000; ++m) h1000 += 1.0 / m;
  EXPECT_NEAR(expected_reciprocal_rank(all), h1000 / 1000.0, 1e-12);  // asymptotic branch
  RankInfo mid{50, 200};
  double ref = 0;
  for (int p = 50; p <= 250; ++p) ref += 1.0 / (p + 1);
  EXPECT_NEAR(expected_reciprocal_rank(mid), ref / 201.0, 1e-12);
}

TEST(Metrics, AccumulatorMeansAndCoverage) {
  MetricAccumulator acc({2, 1, 2}, 5);  // duplicates and order do not matter
  acc.add(RankInfo{0, 0});  // hit at 1
  acc.add(RankInfo{1, 0});  // hit at 2
  acc.add(RankInfo{5, 0});  // miss
  const int32_t top_a[] = {1, 2}, top_b[] = {3, 1};
  acc.add_top_list(top_a, 2);
  acc.add_top_list(top_b, 2);
  auto m = acc.result();
  EXPECT_EQ(acc.count(), 3);
  EXPECT_DOUBLE_EQ(m.at("recall@1"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.at("recall@2"), 2.0 / 3);
  EXPECT_NEAR(m.at("ndcg@2"), (1.0 + 1.0 / std::log2(3.0)) / 3, 1e-12);
  EXPECT_NEAR(m.at("mrr"), (1.0 + 0.5 + 1.0 / 6) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(m.at("coverage@1"), 2.0 / 5);  // items 1 and 3
  EXPECT_DOUBLE_EQ(m.at("coverage@2"), 3.0 / 5);  // items 1, 2, 3
  EXPECT_EQ(m.count("coverage@5"), 0u);
}

TEST(Metrics, RejectsBadCutoffs) {
  EXPECT_THROW(MetricAccumulator({}, 10), InvalidInput);
  EXPECT_THROW(MetricAccumulator({0}, 10), InvalidInput);
}
