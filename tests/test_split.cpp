#include <gtest/gtest.h>

#include "genrec/core/error.h"
#include "genrec/data/import.h"
#include "genrec/data/split.h"

using namespace genrec;

namespace {
// Users with given (item, timestamp) sequences; items named by number.
Dataset make(const std::vector<std::vector<std::pair<int, int64_t>>>& users, bool with_time) {
  RawLog log;
  log.has_timestamps = with_time;
  for (size_t u = 0; u < users.size(); ++u)
    for (auto [item, ts] : users[u]) {
      log.row_user.push_back(log.users.add(std::to_string(u + 1)));
      log.row_item.push_back(log.items.add(std::to_string(item)));
      if (with_time) log.row_timestamp.push_back(ts);
    }
  nlohmann::json report;
  return build_dataset(std::move(log), SideInfo{}, CleaningOptions{}, IdKind::Numeric, report);
}
}  // namespace

TEST(Split, LeaveOneOut) {
  Dataset ds = make({{{1, 0}, {2, 0}, {3, 0}, {4, 0}}, {{1, 0}, {2, 0}}, {{5, 0}, {6, 0}, {7, 0}}}, false);
  Split s = make_split(ds, SplitOptions{});
  EXPECT_EQ(s.train_end[1], 2);
  EXPECT_EQ(s.valid_index[1], 2);
  EXPECT_EQ(s.test_index[1], 3);
  // Fewer than 3 events: training only.
  EXPECT_EQ(s.train_end[2], 2);
  EXPECT_EQ(s.valid_index[2], -1);
  EXPECT_EQ(s.test_index[2], -1);
  EXPECT_EQ(s.train_end[3], 1);
  EXPECT_EQ(s.n_targets(SplitPart::Valid), 2);
  EXPECT_EQ(s.n_targets(SplitPart::Test), 2);
  EXPECT_EQ(s.n_train_events(), 2 + 2 + 1);
}

TEST(Split, TemporalCutsByGlobalTime) {
  // 10 events at t = 1..10: with 0.2 / 0.2 the cuts fall at t=7 (index 6) and t=9 (index 8).
  Dataset ds = make({{{1, 1}, {2, 2}, {3, 7}, {4, 8}, {5, 9}}, {{6, 3}, {7, 4}, {8, 5}, {9, 6}, {10, 10}}}, true);
  SplitOptions o;
  o.kind = "temporal";
  o.valid_fraction = 0.2;
  o.test_fraction = 0.2;
  Split s = make_split(ds, o);
  EXPECT_EQ(s.valid_cut, 7);
  EXPECT_EQ(s.test_cut, 9);
  // User 1: train t=1,2; valid = first event in [7, 9) = index 2; test = first at >= 9 = index 4.
  EXPECT_EQ(s.train_end[1], 2);
  EXPECT_EQ(s.valid_index[1], 2);
  EXPECT_EQ(s.test_index[1], 4);
  // User 2: trains on t=3..6, nothing in [7, 9), test at t=10.
  EXPECT_EQ(s.train_end[2], 4);
  EXPECT_EQ(s.valid_index[2], -1);
  EXPECT_EQ(s.test_index[2], 4);
}

// data.train_on_valid: the validation events join training, no validation targets remain, the
// test targets are unchanged.
TEST(Split, TrainOnValidMovesValidationEventsIntoTraining) {
  Dataset ds = make({{{1, 0}, {2, 0}, {3, 0}, {4, 0}}, {{1, 0}, {2, 0}}, {{5, 0}, {6, 0}, {7, 0}}}, false);
  SplitOptions o;
  o.train_on_valid = true;
  Split s = make_split(ds, o);
  EXPECT_EQ(s.train_end[1], 3);
  EXPECT_EQ(s.test_index[1], 3);
  EXPECT_EQ(s.train_end[2], 2);
  EXPECT_EQ(s.test_index[2], -1);
  EXPECT_EQ(s.train_end[3], 2);
  EXPECT_EQ(s.test_index[3], 2);
  EXPECT_EQ(s.n_targets(SplitPart::Valid), 0);
  EXPECT_EQ(s.n_targets(SplitPart::Test), 2);
  EXPECT_EQ(s.describe(), "leave-one-out, validation events trained on");

  // Temporal (the data of TemporalCutsByGlobalTime): training runs up to the test cut.
  Dataset timed = make({{{1, 1}, {2, 2}, {3, 7}, {4, 8}, {5, 9}}, {{6, 3}, {7, 4}, {8, 5}, {9, 6}, {10, 10}}}, true);
  o.kind = "temporal";
  o.valid_fraction = 0.2;
  o.test_fraction = 0.2;
  Split t = make_split(timed, o);
  EXPECT_EQ(t.train_end[1], 4);  // t = 1, 2, 7, 8
  EXPECT_EQ(t.test_index[1], 4);
  EXPECT_EQ(t.train_end[2], 4);
  EXPECT_EQ(t.test_index[2], 4);
  EXPECT_EQ(t.n_targets(SplitPart::Valid), 0);
  EXPECT_NE(t.describe().find("validation events trained on"), std::string::npos);
}

TEST(Split, Errors) {
  Dataset no_time = make({{{1, 0}, {2, 0}, {3, 0}}}, false);
  SplitOptions o;
  o.kind = "temporal";
  EXPECT_THROW(make_split(no_time, o), InvalidInput);
  o.kind = "random";
  EXPECT_THROW(make_split(no_time, o), InvalidInput);
  EXPECT_THROW(parse_split_part("train"), InvalidInput);
  EXPECT_EQ(parse_split_part("valid"), SplitPart::Valid);
}
