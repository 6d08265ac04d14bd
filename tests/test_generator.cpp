#include <gtest/gtest.h>

#include <set>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/data/stats.h"
#include "test_util.h"

using namespace genrec;

namespace {
// FNV-1a over the dataset's arrays and provenance: a fingerprint of generated data.
uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= c[i];
    h *= 1099511628211ULL;
  }
  return h;
}
template <class T>
uint64_t fnv(uint64_t h, const std::vector<T>& v) {
  return fnv(h, v.data(), v.size() * sizeof(T));
}
uint64_t fingerprint(const Dataset& ds) {
  uint64_t h = 1469598103934665603ULL;
  h = fnv(h, ds.user_offsets);
  h = fnv(h, ds.event_items);
  h = fnv(h, ds.event_timestamps);
  h = fnv(h, ds.event_ratings);
  h = fnv(h, ds.event_actions);
  h = fnv(h, ds.attribute_offsets);
  h = fnv(h, ds.attribute_values);
  std::string p = ds.provenance.dump();
  return fnv(h, p.data(), p.size());
}
}  // namespace

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

TEST(Generator, DefaultDataUnchangedByFeedbackOptions) {
  // Fingerprints recorded before n_action_types / ratings existed: default data must not change.
  Dataset full = generate_dataset(GeneratorOptions{});
  EXPECT_FALSE(full.has_actions());
  EXPECT_EQ(full.actions.size(), 0);
  EXPECT_EQ(full.n_events(), 39274);
  EXPECT_EQ(fingerprint(full), 11501113949082019745ULL);

  GeneratorOptions o;
  o.n_users = 300;
  o.n_items = 200;
  o.seed = 5;
  Dataset small = generate_dataset(o);
  EXPECT_FALSE(small.has_actions());
  ASSERT_EQ(small.n_events(), 5962);
  EXPECT_EQ(small.event_items[0], 90);
  EXPECT_EQ(small.event_items[1], 135);
  EXPECT_EQ(small.event_items[2], 145);
  EXPECT_EQ(small.event_timestamps[0], 1603387905);
  EXPECT_EQ(small.event_ratings[0], 3.0f);
  EXPECT_EQ(fingerprint(small), 1663254090516787269ULL);
}

TEST(Generator, FeedbackColumnsShapedAndDeterministic) {
  GeneratorOptions o;
  o.n_users = 300;
  o.n_items = 200;
  o.seed = 5;
  Dataset plain = generate_dataset(o);
  o.n_action_types = 4;
  o.ratings = true;
  Dataset a = generate_dataset(o), b = generate_dataset(o);
  EXPECT_EQ(fingerprint(a), fingerprint(b));

  // Everything but the feedback is the default data.
  EXPECT_EQ(a.event_items, plain.event_items);
  EXPECT_EQ(a.event_timestamps, plain.event_timestamps);
  EXPECT_EQ(a.user_offsets, plain.user_offsets);
  EXPECT_EQ(a.attribute_values, plain.attribute_values);
  EXPECT_NE(a.event_ratings, plain.event_ratings);

  ASSERT_TRUE(a.has_actions());
  ASSERT_TRUE(a.has_ratings());
  ASSERT_EQ(a.actions.size(), 4);
  EXPECT_EQ(a.actions.raw(1), "skip");
  EXPECT_EQ(a.actions.raw(2), "click");
  EXPECT_EQ(a.actions.raw(3), "like");
  EXPECT_EQ(a.actions.raw(4), "share");
  std::set<int32_t> actions;
  std::set<float> ratings(a.event_ratings.begin(), a.event_ratings.end());
  for (int32_t x : a.event_actions) actions.insert(x);
  EXPECT_EQ(actions, (std::set<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(ratings, (std::set<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ(a.provenance["generator"]["action_types"], 4);
  EXPECT_EQ(a.provenance["generator"]["ratings"], "ground_truth");

  // Actions do not depend on `ratings`, ratings not on the number of action types.
  GeneratorOptions only_actions = o;
  only_actions.ratings = false;
  Dataset c = generate_dataset(only_actions);
  EXPECT_EQ(c.event_actions, a.event_actions);
  EXPECT_EQ(c.event_ratings, plain.event_ratings);
  GeneratorOptions only_ratings = o;
  only_ratings.n_action_types = 0;
  Dataset d = generate_dataset(only_ratings);
  EXPECT_FALSE(d.has_actions());
  EXPECT_EQ(d.event_ratings, a.event_ratings);

  o.seed = 6;
  EXPECT_NE(generate_dataset(o).event_actions, a.event_actions);
}

TEST(Generator, ActionNamesBeyondTheFixedList) {
  GeneratorOptions o;
  o.n_users = 50;
  o.n_items = 100;
  o.n_action_types = 8;
  Dataset ds = generate_dataset(o);
  std::vector<std::string> names;
  for (int32_t a = 1; a <= ds.actions.size(); ++a) names.push_back(ds.actions.raw(a));
  EXPECT_EQ(names, (std::vector<std::string>{"skip", "click", "like", "share", "comment", "save", "a7", "a8"}));
  for (int32_t x : ds.event_actions) ASSERT_TRUE(x >= 1 && x <= 8);
  o.n_action_types = 1;
  Dataset one = generate_dataset(o);
  EXPECT_EQ(one.actions.size(), 1);
  for (int32_t x : one.event_actions) ASSERT_EQ(x, 1);
}

TEST(Generator, GroundTruthVisibleInFeedback) {
  GeneratorOptions o;
  o.n_users = 1000;
  o.n_items = 500;
  o.n_action_types = 4;
  o.ratings = true;
  o.seed = 3;
  GeneratorTruth t;
  Dataset ds = generate_dataset(o, nullptr, &t);
  ASSERT_EQ(t.item_cluster.size(), 501u);
  ASSERT_EQ(t.item_quality.size(), 501u);
  ASSERT_EQ(t.user_dominant_cluster.size(), 1001u);
  // The truth's clusters are the items' category attributes.
  for (int32_t i = 1; i <= ds.n_items(); ++i) {
    int32_t cat = ds.attribute_values[static_cast<size_t>(ds.attribute_offsets[static_cast<size_t>(i)])];
    ASSERT_EQ(ds.attributes.raw(cat), "category_" + std::to_string(t.item_cluster[static_cast<size_t>(i)]));
  }
  // Rates by in-cluster (dominant cluster) and by item quality.
  const int32_t skip = 1, like = 3, share = 4;
  double n[2] = {0, 0}, n_skip[2] = {0, 0}, n_like[2] = {0, 0}, rating[2] = {0, 0};
  double nq[2] = {0, 0}, n_share[2] = {0, 0};
  int64_t users_modal = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    std::vector<int64_t> per_cluster(static_cast<size_t>(o.n_clusters), 0);
    for (int64_t e = ds.user_offsets[static_cast<size_t>(u)]; e < ds.user_offsets[static_cast<size_t>(u) + 1]; ++e) {
      const auto ev = static_cast<size_t>(e);
      const auto item = static_cast<size_t>(ds.event_items[ev]);
      const int in = t.item_cluster[item] == t.user_dominant_cluster[static_cast<size_t>(u)] ? 1 : 0;
      const int hq = t.item_quality[item] > 0.5 ? 1 : 0;
      n[in] += 1;
      n_skip[in] += ds.event_actions[ev] == skip;
      n_like[in] += ds.event_actions[ev] == like;
      rating[in] += ds.event_ratings[ev];
      nq[hq] += 1;
      n_share[hq] += ds.event_actions[ev] == share;
      ++per_cluster[static_cast<size_t>(t.item_cluster[item])];
    }
    // The dominant cluster can be read off the history: it is mostly the modal cluster.
    auto modal = std::max_element(per_cluster.begin(), per_cluster.end()) - per_cluster.begin();
    users_modal += modal == t.user_dominant_cluster[static_cast<size_t>(u)];
  }
  ASSERT_GT(n[0], 1000);
  ASSERT_GT(n[1], 1000);
  EXPECT_GT(n_skip[0] / n[0], 2.5 * n_skip[1] / n[1]);  // skip: out of the dominant cluster
  EXPECT_GT(n_like[1] / n[1], 3.0 * n_like[0] / n[0]);  // like: in the dominant cluster
  EXPECT_GT(n_share[1] / nq[1], 2.5 * n_share[0] / nq[0]);  // share: high quality, any cluster
  EXPECT_GT(rating[1] / n[1] - rating[0] / n[0], 1.0);     // ratings follow the affinity
  EXPECT_GT(static_cast<double>(users_modal) / static_cast<double>(ds.n_users()), 0.7);  // chance: 1/20
}

TEST(Generator, FeedbackRoundTripsThroughTheDatasetDirectory) {
  GeneratorOptions o;
  o.n_users = 100;
  o.n_items = 80;
  o.n_action_types = 5;
  o.ratings = true;
  Dataset ds = generate_dataset(o);
  genrec::test::TempDir tmp;
  save_dataset(ds, tmp / "ds");
  Dataset back = load_dataset(tmp / "ds");
  ASSERT_EQ(back.actions.size(), 5);
  for (int32_t a = 1; a <= 5; ++a) EXPECT_EQ(back.actions.raw(a), ds.actions.raw(a));
  EXPECT_EQ(back.event_actions, ds.event_actions);
  EXPECT_EQ(back.event_ratings, ds.event_ratings);
  EXPECT_EQ(back.event_items, ds.event_items);
}

TEST(Generator, RejectsBadActionTypes) {
  GeneratorOptions o;
  o.n_users = 10;
  o.n_action_types = -1;
  EXPECT_THROW(generate_dataset(o), InvalidInput);
  o.n_action_types = 65;
  EXPECT_THROW(generate_dataset(o), InvalidInput);
}
