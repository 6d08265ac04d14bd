// What ranking models learn from a Dataset: per-event feedback tokens and task labels, and the
// requests (history + candidates) of a global temporal split.
//
// Tasks (model.tasks):
//   "like"          binary: rating >= like_threshold        (needs ratings)
//   "rating"        regression on the rating value           (needs ratings)
//   "action:NAME"   binary: the event's action is NAME       (needs actions; NAME in actions.vocab)
// Feedback token of an event (what the model reads for past events): its action id when the
// data has actions, else its rating level (distinct rating values in ascending order -> 1..R,
// R <= 64), else 1 for every event.
//
// Requests on a temporal split (data.split = "temporal", cuts c1 < c2):
//   training windows: each user's events before c1, cut into windows of at most max_len events
//                     from the end backwards (so only a user's first window can be short);
//                     every event of a window is a target. Listed by user, then oldest first.
//   valid requests:   history = the user's last max_len events before c1,
//                     candidates = the user's events in [c1, c2)
//   test requests:    history = the user's last max_len events before c2,
//                     candidates = the user's events at or after c2
//   streaming (eval.history = "streaming"): every candidate is instead read after the user's
//                     last max_len events before its own timestamp (so later events of the
//                     period see the earlier ones, as a live ranker would); candidates with the
//                     same timestamp share one request and never see each other.
// Users without candidates in a part have no request there; an empty history is allowed.
// Requests are listed by user. "Before c" means timestamp < c (as in make_split).
//
// Example:
//   RankData rd = make_rank_data(ds, RankDataOptions{{"like", "rating"}, 4.0});
//   auto reqs = rank_requests(ds, split, SplitPart::Test, 200);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "genrec/data/dataset.h"
#include "genrec/data/split.h"

namespace genrec {

struct RankTask {
  std::string name;  // as configured, e.g. "like", "action:share"
  bool binary = true;
};

struct RankDataOptions {
  std::vector<std::string> tasks = {"like", "rating"};
  double like_threshold = 4.0;
};

struct RankData {
  std::vector<RankTask> tasks;
  int64_t n_feedback = 1;           // feedback tokens are 1..n_feedback
  std::vector<int32_t> feedback;    // [n_events]
  std::vector<std::string> feedback_names;  // [n_feedback]: token i + 1's action name or rating value
  std::vector<float> labels;        // [n_events * n_tasks], NaN where undefined
  // Each task's label as a function of the feedback token, for rankers that predict the token
  // (model.output = "feedback"): readout[k * n_feedback + f - 1] = task k's label of an event
  // with token f (like: 0/1 by the rating level, rating: the level's value, action:NAME: 0/1).
  // readable[k] = 0 where the token does not determine the label (like and rating when the
  // feedback tokens are actions).
  std::vector<float> readout;       // [n_tasks * n_feedback]
  std::vector<uint8_t> readable;    // [n_tasks]
  size_t n_tasks() const { return tasks.size(); }
  float label(int64_t event, size_t task) const { return labels[static_cast<size_t>(event) * tasks.size() + task]; }
};

// Throws InvalidInput naming the task when a task needs a column the dataset lacks, or is unknown
// (also: an empty or duplicated task list, a non-finite like_threshold or rating, more than 64
// distinct rating values when ratings are the feedback tokens).
RankData make_rank_data(const Dataset& ds, const RankDataOptions& options);

// Ranker input for serving a known user: appends dense user `user`'s events (items, feedback
// tokens and, when the dataset has timestamps, times), oldest first.
void append_user_history(const Dataset& ds, const RankData& rd, int32_t user, std::vector<int32_t>& items,
                         std::vector<int32_t>& feedback, std::vector<int64_t>& times);
// The feedback token (1..n_feedback) of an action name or rating value, or 0 when unknown.
int32_t feedback_token(const RankData& rd, const std::string& name);

// Global event indices (into ds.event_*), [begin, end) ranges.
struct RankRequest {
  int32_t user = 0;
  int64_t hist_begin = 0, hist_end = 0;  // history events
  int64_t cand_begin = 0, cand_end = 0;  // candidate events
};
struct RankWindow {
  int32_t user = 0;
  int64_t begin = 0, end = 0;  // training events, every one a target
};

// Throw InvalidInput unless split.kind == "temporal", the dataset has timestamps and max_len >= 1.
std::vector<RankRequest> rank_requests(const Dataset& ds, const Split& split, SplitPart part, int64_t max_len,
                                       bool streaming = false);
std::vector<RankWindow> rank_train_windows(const Dataset& ds, const Split& split, int64_t max_len);

}  // namespace genrec
