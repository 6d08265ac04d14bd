#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <string>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/data/split.h"
#include "genrec/rank/rank_data.h"
#include "test_expect.h"

using namespace genrec;

namespace {

struct Ev {
  int32_t item = 1;
  int64_t ts = 0;
  float rating = 0;
  int32_t action = 0;  // dense action id
};

// A dataset built field by field: users 1..n in order, items "1".."n_items".
Dataset make(const std::vector<std::vector<Ev>>& users, bool time, bool ratings, std::vector<std::string> actions = {},
             int32_t n_items = 5) {
  Dataset ds;
  for (int32_t i = 1; i <= n_items; ++i) ds.items.add(std::to_string(i));
  for (const auto& a : actions) ds.actions.add(a);
  ds.user_offsets = {0, 0};
  for (size_t u = 0; u < users.size(); ++u) {
    ds.users.add(std::to_string(u + 1));
    for (const Ev& e : users[u]) {
      ds.event_items.push_back(e.item);
      if (time) ds.event_timestamps.push_back(e.ts);
      if (ratings) ds.event_ratings.push_back(e.rating);
      if (!actions.empty()) ds.event_actions.push_back(e.action);
    }
    ds.user_offsets.push_back(ds.n_events());
  }
  ds.validate();
  return ds;
}

Split temporal(int64_t c1, int64_t c2) {
  Split s;
  s.kind = "temporal";
  s.valid_cut = c1;
  s.test_cut = c2;
  return s;
}

}  // namespace

TEST(RankData, RatingTasksAndRatingLevels) {
  // No actions: feedback = rating level (distinct values ascending -> 1..R).
  Dataset ds = make({{{1, 0, 5}, {2, 0, 3}, {3, 0, 4.5f}}, {{4, 0, 3}, {5, 0, 1}}}, false, true);
  RankData rd = make_rank_data(ds, RankDataOptions{{"like", "rating"}, 4.0});
  ASSERT_EQ(rd.n_tasks(), 2u);
  EXPECT_EQ(rd.tasks[0].name, "like");
  EXPECT_TRUE(rd.tasks[0].binary);
  EXPECT_EQ(rd.tasks[1].name, "rating");
  EXPECT_FALSE(rd.tasks[1].binary);
  EXPECT_EQ(rd.n_feedback, 4);
  EXPECT_EQ(rd.feedback, (std::vector<int32_t>{4, 2, 3, 2, 1}));
  EXPECT_EQ(rd.feedback_names, (std::vector<std::string>{"1", "3", "4.5", "5"}));
  EXPECT_EQ(rd.labels, (std::vector<float>{1, 5, 0, 3, 1, 4.5f, 0, 3, 0, 1}));
  EXPECT_EQ(rd.label(2, 1), 4.5f);
  EXPECT_EQ(rd.label(0, 0), 1.0f);
  // Both tasks read off the rating level (model.output = "feedback"): like per level, rating value.
  EXPECT_EQ(rd.readable, (std::vector<uint8_t>{1, 1}));
  EXPECT_EQ(rd.readout, (std::vector<float>{0, 0, 1, 1,  //
                                            1, 3, 4.5f, 5}));

  // Threshold is inclusive and task order follows the option.
  RankData r2 = make_rank_data(ds, RankDataOptions{{"rating", "like"}, 4.5});
  EXPECT_EQ(r2.tasks[0].name, "rating");
  EXPECT_EQ(r2.labels, (std::vector<float>{5, 1, 3, 0, 4.5f, 1, 3, 0, 1, 0}));
  EXPECT_EQ(r2.readout, (std::vector<float>{1, 3, 4.5f, 5,  //
                                            0, 0, 1, 1}));  // 4.5 >= 4.5
}

TEST(RankData, ActionTasksAndActionFeedback) {
  // With actions, feedback = action id even when ratings exist.
  Dataset ds = make({{{1, 0, 5, 3}, {2, 0, 2, 1}}, {{3, 0, 4, 2}, {4, 0, 1, 3}}}, false, true, {"click", "like", "share"});
  RankData rd = make_rank_data(ds, RankDataOptions{{"action:share", "like", "action:click"}, 4.0});
  ASSERT_EQ(rd.n_tasks(), 3u);
  EXPECT_EQ(rd.tasks[0].name, "action:share");
  EXPECT_TRUE(rd.tasks[0].binary);
  EXPECT_TRUE(rd.tasks[2].binary);
  EXPECT_EQ(rd.n_feedback, 3);
  EXPECT_EQ(rd.feedback, (std::vector<int32_t>{3, 1, 2, 3}));
  EXPECT_EQ(rd.feedback_names, (std::vector<std::string>{"click", "like", "share"}));
  EXPECT_EQ(rd.labels, (std::vector<float>{1, 1, 0,  //
                                           0, 0, 1,  //
                                           0, 1, 0,  //
                                           1, 0, 0}));
  // Action tasks read off the action token; like is not a function of the action.
  EXPECT_EQ(rd.readable, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(std::vector<float>(rd.readout.begin(), rd.readout.begin() + 3), (std::vector<float>{0, 0, 1}));
  EXPECT_EQ(std::vector<float>(rd.readout.begin() + 6, rd.readout.end()), (std::vector<float>{1, 0, 0}));

  // Actions without ratings.
  Dataset no_ratings = make({{{1, 0, 0, 2}, {2, 0, 0, 1}}}, false, false, {"skip", "click"});
  RankData r2 = make_rank_data(no_ratings, RankDataOptions{{"action:skip"}, 4.0});
  EXPECT_EQ(r2.n_feedback, 2);
  EXPECT_EQ(r2.feedback, (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(r2.labels, (std::vector<float>{0, 1}));
}

TEST(RankData, TaskErrors) {
  Dataset ratings = make({{{1, 0, 5}, {2, 0, 3}}}, false, true);
  Dataset actions = make({{{1, 0, 0, 1}, {2, 0, 0, 2}}}, false, false, {"click", "like"});
  auto with = [](std::vector<std::string> tasks) { return RankDataOptions{std::move(tasks), 4.0}; };
  EXPECT_INVALID(make_rank_data(ratings, with({})), "model.tasks: empty");
  EXPECT_INVALID(make_rank_data(ratings, with({"like", "rating", "like"})), "model.tasks: duplicate task 'like'");
  EXPECT_INVALID(make_rank_data(ratings, with({"foo"})), "model.tasks: unknown task 'foo' (like | rating | action:NAME)");
  EXPECT_INVALID(make_rank_data(actions, with({"like"})), "model.tasks: task 'like' needs ratings but dataset has none");
  EXPECT_INVALID(make_rank_data(actions, with({"rating"})), "task 'rating' needs ratings");
  EXPECT_INVALID(make_rank_data(ratings, with({"action:click"})), "task 'action:click' needs actions but dataset has none");
  EXPECT_INVALID(make_rank_data(actions, with({"action:x"})), "model.tasks: unknown action 'x' (known: click, like)");
  EXPECT_INVALID(make_rank_data(actions, with({"action:"})), "unknown action ''");
  EXPECT_INVALID(make_rank_data(ratings, (RankDataOptions{{"like"}, std::nan("")})), "model.like_threshold");

  Dataset nan_rating = make({{{1, 0, 5}, {2, 0, std::nanf("")}}}, false, true);
  EXPECT_INVALID(make_rank_data(nan_rating, with({"rating"})), "rating of event 1 is not finite");
}

TEST(RankData, TooManyRatingLevels) {
  std::vector<Ev> evs;
  for (int k = 0; k < 65; ++k) evs.push_back(Ev{1, 0, 0.5f * static_cast<float>(k)});
  Dataset ds = make({evs}, false, true);
  EXPECT_INVALID(make_rank_data(ds, RankDataOptions{{"rating"}, 4.0}), "ratings take 65 distinct values");
  EXPECT_INVALID(make_rank_data(ds, RankDataOptions{{"rating"}, 4.0}), "bin them");
  evs.pop_back();  // 64 levels are fine
  RankData rd = make_rank_data(make({evs}, false, true), RankDataOptions{{"rating"}, 4.0});
  EXPECT_EQ(rd.n_feedback, 64);
  EXPECT_EQ(rd.feedback.front(), 1);
  EXPECT_EQ(rd.feedback.back(), 64);
  // With actions the rating levels do not matter.
  for (auto& e : evs) e.action = 1;
  evs.push_back(Ev{1, 0, 99.0f, 1});
  EXPECT_NO_THROW(make_rank_data(make({evs}, false, true, {"click"}), RankDataOptions{{"rating"}, 4.0}));
}

namespace {
// Cuts c1 = 7, c2 = 9.
//  user 1: t = 1..10        events 0..9    train 0..5, valid 6..7, test 8..9
//  user 2: t = 5, 6, 20     events 10..12  train 10..11, no valid, test 12
//  user 3: t = 9, 11        events 13..14  no train, test 13..14 (empty history)
//  user 4: t = 2, 3         events 15..16  train only
//  user 5: t = 7, 8         events 17..18  valid only (empty history)
Dataset requests_dataset() {
  std::vector<Ev> u1;
  for (int64_t t = 1; t <= 10; ++t) u1.push_back(Ev{1, t});
  return make({u1, {{1, 5}, {2, 6}, {3, 20}}, {{1, 9}, {2, 11}}, {{1, 2}, {2, 3}}, {{4, 7}, {5, 8}}}, true, false);
}

std::vector<std::array<int64_t, 5>> flat(const std::vector<RankRequest>& rs) {
  std::vector<std::array<int64_t, 5>> out;
  for (const auto& r : rs) out.push_back({r.user, r.hist_begin, r.hist_end, r.cand_begin, r.cand_end});
  return out;
}
std::vector<std::array<int64_t, 3>> flat(const std::vector<RankWindow>& ws) {
  std::vector<std::array<int64_t, 3>> out;
  for (const auto& w : ws) out.push_back({w.user, w.begin, w.end});
  return out;
}
using R = std::array<int64_t, 5>;
using W = std::array<int64_t, 3>;
}  // namespace

TEST(RankData, RequestsOnATemporalSplit) {
  Dataset ds = requests_dataset();
  Split s = temporal(7, 9);
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Valid, 3)),
            (std::vector<R>{{1, 3, 6, 6, 8}, {5, 17, 17, 17, 19}}));
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Test, 3)),
            (std::vector<R>{{1, 5, 8, 8, 10}, {2, 10, 12, 12, 13}, {3, 13, 13, 13, 15}}));
  // A long max_len takes the whole past; test history includes the valid period.
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Test, 100)),
            (std::vector<R>{{1, 0, 8, 8, 10}, {2, 10, 12, 12, 13}, {3, 13, 13, 13, 15}}));
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Valid, 1)),
            (std::vector<R>{{1, 5, 6, 6, 8}, {5, 17, 17, 17, 19}}));
}

TEST(RankData, StreamingRequestsReadEachTimestampAfterItsPast) {
  Dataset ds = requests_dataset();
  Split s = temporal(7, 9);
  // One request per candidate timestamp; history = the last max_len events before it.
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Valid, 3, true)),
            (std::vector<R>{{1, 3, 6, 6, 7}, {1, 4, 7, 7, 8}, {5, 17, 17, 17, 18}, {5, 17, 18, 18, 19}}));
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Test, 2, true)),
            (std::vector<R>{{1, 6, 8, 8, 9}, {1, 7, 9, 9, 10}, {2, 10, 12, 12, 13}, {3, 13, 13, 13, 14},
                            {3, 13, 14, 14, 15}}));
  // Events sharing a timestamp are one request: neither reads the other.
  //  user 1: t = 1, 9, 9, 12   (test cut 9): requests at t = 9 (events 1-2) and t = 12 (event 3)
  Dataset tied = make({{{1, 1}, {2, 9}, {3, 9}, {4, 12}}}, true, false);
  EXPECT_EQ(flat(rank_requests(tied, s, SplitPart::Test, 10, true)),
            (std::vector<R>{{1, 0, 1, 1, 3}, {1, 0, 3, 3, 4}}));
  EXPECT_EQ(flat(rank_requests(tied, s, SplitPart::Test, 10, false)), (std::vector<R>{{1, 0, 1, 1, 4}}));
}

TEST(RankData, TrainingWindowsCutFromTheEnd) {
  Dataset ds = requests_dataset();
  Split s = temporal(7, 9);
  EXPECT_EQ(flat(rank_train_windows(ds, s, 3)), (std::vector<W>{{1, 0, 3}, {1, 3, 6}, {2, 10, 12}, {4, 15, 17}}));
  EXPECT_EQ(flat(rank_train_windows(ds, s, 4)), (std::vector<W>{{1, 0, 2}, {1, 2, 6}, {2, 10, 12}, {4, 15, 17}}));
  EXPECT_EQ(flat(rank_train_windows(ds, s, 100)), (std::vector<W>{{1, 0, 6}, {2, 10, 12}, {4, 15, 17}}));
  EXPECT_EQ(flat(rank_train_windows(ds, s, 1)), (std::vector<W>{{1, 0, 1},
                                                                 {1, 1, 2},
                                                                 {1, 2, 3},
                                                                 {1, 3, 4},
                                                                 {1, 4, 5},
                                                                 {1, 5, 6},
                                                                 {2, 10, 11},
                                                                 {2, 11, 12},
                                                                 {4, 15, 16},
                                                                 {4, 16, 17}}));
}

TEST(RankData, TrainOnValidTrainsUpToTheTestCut) {
  // data.train_on_valid: training windows reach the test cut (user 1's events at t = 7, 8 and
  // user 5, who has only validation events, join), the test requests stay as they were, and the
  // validation period, now trained on, is refused as an evaluation split.
  Dataset ds = requests_dataset();
  Split s = temporal(7, 9);
  s.train_on_valid = true;
  EXPECT_EQ(flat(rank_train_windows(ds, s, 100)),
            (std::vector<W>{{1, 0, 8}, {2, 10, 12}, {4, 15, 17}, {5, 17, 19}}));
  EXPECT_EQ(flat(rank_train_windows(ds, s, 3)),
            (std::vector<W>{{1, 0, 2}, {1, 2, 5}, {1, 5, 8}, {2, 10, 12}, {4, 15, 17}, {5, 17, 19}}));
  EXPECT_EQ(flat(rank_requests(ds, s, SplitPart::Test, 3)),
            (std::vector<R>{{1, 5, 8, 8, 10}, {2, 10, 12, 12, 13}, {3, 13, 13, 13, 15}}));
  EXPECT_INVALID(rank_requests(ds, s, SplitPart::Valid, 3), "data.train_on_valid", "only the test period");
}

TEST(RankData, RequestErrors) {
  Dataset ds = requests_dataset();
  Split loo = make_split(ds, SplitOptions{});
  EXPECT_INVALID(rank_requests(ds, loo, SplitPart::Test, 10), "ranking needs data.split = \"temporal\"");
  EXPECT_INVALID(rank_train_windows(ds, loo, 10), "ranking needs data.split = \"temporal\"");
  EXPECT_INVALID(rank_requests(ds, temporal(7, 9), SplitPart::Valid, 0), "max_len must be >= 1, got 0");
  EXPECT_INVALID(rank_train_windows(ds, temporal(7, 9), -1), "max_len must be >= 1, got -1");
  Dataset no_time = make({{{1, 0}, {2, 0}}}, false, false);
  EXPECT_INVALID(rank_requests(no_time, temporal(7, 9), SplitPart::Test, 10), "timestamps");
  EXPECT_INVALID(rank_train_windows(no_time, temporal(7, 9), 10), "timestamps");
}

TEST(RankData, AgreesWithMakeSplitOnGeneratedData) {
  GeneratorOptions g;
  g.n_users = 200;
  g.n_items = 100;
  g.n_action_types = 3;
  Dataset ds = generate_dataset(g);
  SplitOptions so;
  so.kind = "temporal";
  so.valid_fraction = 0.15;
  so.test_fraction = 0.15;
  Split s = make_split(ds, so);
  const int64_t max_len = 7;

  // Windows tile each user's training prefix exactly.
  std::vector<int64_t> covered(static_cast<size_t>(ds.n_users()) + 1, 0);
  int64_t prev_end = -1;
  for (const auto& w : rank_train_windows(ds, s, max_len)) {
    const int64_t b = ds.user_offsets[static_cast<size_t>(w.user)];
    ASSERT_GT(w.end, w.begin);
    ASSERT_LE(w.end - w.begin, max_len);
    if (w.begin > b) {
      ASSERT_EQ(w.begin, prev_end);            // contiguous after the user's first window
      ASSERT_EQ(w.end - w.begin, max_len);     // only the first window may be short
    }
    covered[static_cast<size_t>(w.user)] += w.end - w.begin;
    prev_end = w.end;
  }
  for (int32_t u = 1; u <= ds.n_users(); ++u) ASSERT_EQ(covered[static_cast<size_t>(u)], s.train_end[static_cast<size_t>(u)]);

  // The first candidate of a request with history is make_split's target.
  for (SplitPart part : {SplitPart::Valid, SplitPart::Test}) {
    int64_t with_history = 0;
    for (const auto& r : rank_requests(ds, s, part, max_len)) {
      const int64_t b = ds.user_offsets[static_cast<size_t>(r.user)];
      ASSERT_EQ(r.hist_end, r.cand_begin);
      ASSERT_EQ(r.hist_end - r.hist_begin, std::min(max_len, r.hist_end - b));
      if (r.hist_end > b) {
        ASSERT_EQ(r.cand_begin - b, s.targets(part)[static_cast<size_t>(r.user)]);
        ++with_history;
      }
    }
    EXPECT_EQ(with_history, s.n_targets(part));
  }

  RankData rd = make_rank_data(ds, RankDataOptions{{"action:like", "rating"}, 4.0});
  EXPECT_EQ(rd.feedback, ds.event_actions);
  EXPECT_EQ(rd.n_feedback, 3);
  ASSERT_EQ(rd.labels.size(), static_cast<size_t>(ds.n_events()) * 2);
  for (int64_t e = 0; e < ds.n_events(); ++e) {
    ASSERT_EQ(rd.label(e, 0), ds.event_actions[static_cast<size_t>(e)] == 3 ? 1.0f : 0.0f);
    ASSERT_EQ(rd.label(e, 1), ds.event_ratings[static_cast<size_t>(e)]);
  }
}
