#include <gtest/gtest.h>

#include <set>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/data/stats.h"

using namespace genrec;

TEST(Generator, DeterministicForASeedAndShaped) {
  GeneratorOptions o;
  o.n_users = 300;
  o.n_items = 200;
  o.seed = 5;
  Dataset a = generate_dataset(o), b = generate_dataset(o);
  EXPECT_EQ(a.event_items, b.event_items);
  EXPECT_EQ(a.event_timestamps, b.event_timestamps);
  o.seed = 6;
  Dataset c = generate_dataset(o);
  EXPECT_NE(a.event_items, c.event_items);

  EXPECT_EQ(a.n_users(), 300);
  EXPECT_EQ(a.n_items(), 200);
  for (int32_t u = 1; u <= a.n_users(); ++u) {
    UserEvents ev = a.user(u);
    ASSERT_GE(ev.size, o.min_len);
    ASSERT_LE(ev.size, o.max_len);
    for (int64_t k = 1; k < ev.size; ++k) {
      ASSERT_GE(ev.timestamps[k], ev.timestamps[k - 1]);
      ASSERT_NE(ev.items[k], ev.items[k - 1]) << "no immediate repeats";
    }
  }
  nlohmann::json s = dataset_stats(a);
  EXPECT_NEAR(s["sequence_length"]["mean"].get<double>(), o.mean_len, 3.0);
  EXPECT_EQ(s["side_information"]["text"]["items"], 200);
  EXPECT_EQ(s["side_information"]["attributes"]["items"], 200);
}

TEST(Generator, PopularityIsSkewed) {
  GeneratorOptions o;
  o.n_users = 1000;
  o.n_items = 500;
  Dataset ds = generate_dataset(o);
  std::vector<int64_t> counts(501, 0);
  for (int32_t it : ds.event_items) ++counts[it];
  std::sort(counts.begin(), counts.end(), std::greater<>());
  int64_t top = 0;
  for (int k = 0; k < 50; ++k) top += counts[k];
  // The top 10% of items take well over 10% of the events.
  EXPECT_GT(static_cast<double>(top) / static_cast<double>(ds.n_events()), 0.25);
}

TEST(Generator, RejectsBadOptions) {
  GeneratorOptions o;
  o.n_items = 1;
  EXPECT_THROW(generate_dataset(o), InvalidInput);
  o = GeneratorOptions{};
  o.min_len = 10;
  o.max_len = 5;
  EXPECT_THROW(generate_dataset(o), InvalidInput);
  o = GeneratorOptions{};
  o.p_transition = 1.5;
  EXPECT_THROW(generate_dataset(o), InvalidInput);
}
