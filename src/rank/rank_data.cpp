#include "genrec/rank/rank_data.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <set>

#include "genrec/core/error.h"

namespace genrec {

namespace {

constexpr int64_t kMaxRatingLevels = 64;

void require_ratings(const Dataset& ds, const std::string& task) {
  if (!ds.has_ratings()) throw InvalidInput("model.tasks: task '" + task + "' needs ratings but dataset has none");
}

std::string known_actions(const Dataset& ds) {
  std::string s;
  for (int32_t a = 1; a <= ds.actions.size(); ++a) s += (a > 1 ? ", " : "") + ds.actions.raw(a);
  return s;
}

// The user's events before `cut` end at the returned global index (events are in time order).
int64_t first_at_or_after(const Dataset& ds, int32_t u, int64_t cut) {
  int64_t k = ds.user_offsets[static_cast<size_t>(u)];
  const int64_t e = ds.user_offsets[static_cast<size_t>(u) + 1];
  while (k < e && ds.event_timestamps[static_cast<size_t>(k)] < cut) ++k;
  return k;
}

void check_request_args(const Dataset& ds, const Split& split, int64_t max_len) {
  if (split.kind != "temporal") throw InvalidInput("ranking needs data.split = \"temporal\", got \"" + split.kind + "\"");
  if (!ds.has_timestamps()) throw InvalidInput("ranking needs timestamps, and this dataset has none");
  if (max_len < 1) throw InvalidInput("ranking: max_len must be >= 1, got " + std::to_string(max_len));
}

}  // namespace

RankData make_rank_data(const Dataset& ds, const RankDataOptions& options) {
  if (options.tasks.empty()) throw InvalidInput("model.tasks: empty (give at least one of like | rating | action:NAME)");
  if (!std::isfinite(options.like_threshold)) throw InvalidInput("model.like_threshold: must be finite");

  RankData rd;
  // Per task: which column and, for actions, which action id.
  enum class Kind { Like, Rating, Action };
  std::vector<Kind> kinds;
  std::vector<int32_t> action_ids;
  std::set<std::string> seen;
  for (const auto& name : options.tasks) {
    if (!seen.insert(name).second) throw InvalidInput("model.tasks: duplicate task '" + name + "'");
    if (name == "like" || name == "rating") {
      require_ratings(ds, name);
      kinds.push_back(name == "like" ? Kind::Like : Kind::Rating);
      action_ids.push_back(0);
      rd.tasks.push_back(RankTask{name, name == "like"});
    } else if (name.rfind("action:", 0) == 0) {
      std::string action = name.substr(7);
      if (!ds.has_actions()) throw InvalidInput("model.tasks: task '" + name + "' needs actions but dataset has none");
      auto id = ds.actions.find(action);
      if (!id) throw InvalidInput("model.tasks: unknown action '" + action + "' (known: " + known_actions(ds) + ")");
      kinds.push_back(Kind::Action);
      action_ids.push_back(*id);
      rd.tasks.push_back(RankTask{name, true});
    } else {
      throw InvalidInput("model.tasks: unknown task '" + name + "' (like | rating | action:NAME)");
    }
  }

  const auto n = static_cast<size_t>(ds.n_events());
  const size_t nt = rd.tasks.size();
  // Ratings feed labels and (without actions) feedback levels: they must be numbers.
  for (size_t e = 0; e < ds.event_ratings.size(); ++e)
    if (!std::isfinite(ds.event_ratings[e]))
      throw InvalidInput("ranking: rating of event " + std::to_string(e) + " is not finite");

  // Feedback tokens: action ids, else rating levels, else 1.
  std::vector<float> levels;  // the rating value of each token when the tokens are rating levels
  if (ds.has_actions()) {
    rd.n_feedback = ds.actions.size();
    rd.feedback.assign(ds.event_actions.begin(), ds.event_actions.end());
    for (int32_t a = 1; a <= ds.actions.size(); ++a) rd.feedback_names.push_back(ds.actions.raw(a));
  } else if (ds.has_ratings()) {
    levels = ds.event_ratings;
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    if (static_cast<int64_t>(levels.size()) > kMaxRatingLevels)
      throw InvalidInput("ranking: ratings take " + std::to_string(levels.size()) + " distinct values, more than " +
                         std::to_string(kMaxRatingLevels) + " feedback levels; bin them (e.g. round) before import");
    rd.n_feedback = std::max<int64_t>(1, static_cast<int64_t>(levels.size()));
    for (float level : levels) {
      std::ostringstream name;  // shortest form: "4", "4.5"
      name << level;
      rd.feedback_names.push_back(name.str());
    }
    rd.feedback.resize(n);
    for (size_t e = 0; e < n; ++e)
      rd.feedback[e] = static_cast<int32_t>(std::lower_bound(levels.begin(), levels.end(), ds.event_ratings[e]) -
                                            levels.begin()) + 1;
  } else {
    rd.n_feedback = 1;
    rd.feedback.assign(n, 1);
    rd.feedback_names = {"event"};
  }

  rd.labels.assign(n * nt, std::numeric_limits<float>::quiet_NaN());
  for (size_t t = 0; t < nt; ++t) {
    for (size_t e = 0; e < n; ++e) {
      float& y = rd.labels[e * nt + t];
      switch (kinds[t]) {
        case Kind::Like: y = ds.event_ratings[e] >= options.like_threshold ? 1.0f : 0.0f; break;
        case Kind::Rating: y = ds.event_ratings[e]; break;
        case Kind::Action: y = ds.event_actions[e] == action_ids[t] ? 1.0f : 0.0f; break;
      }
    }
  }

  const auto nf = static_cast<size_t>(rd.n_feedback);
  rd.readout.assign(nt * nf, 0.0f);
  rd.readable.assign(nt, 0);
  for (size_t t = 0; t < nt; ++t) {
    const bool by_level = kinds[t] != Kind::Action && !ds.has_actions() && levels.size() == nf;
    rd.readable[t] = kinds[t] == Kind::Action || by_level ? 1 : 0;
    for (size_t f = 0; f < nf && rd.readable[t]; ++f) {
      float& y = rd.readout[t * nf + f];
      switch (kinds[t]) {
        case Kind::Like: y = levels[f] >= options.like_threshold ? 1.0f : 0.0f; break;
        case Kind::Rating: y = levels[f]; break;
        case Kind::Action: y = static_cast<int32_t>(f) + 1 == action_ids[t] ? 1.0f : 0.0f; break;
      }
    }
  }
  return rd;
}

std::vector<RankRequest> rank_requests(const Dataset& ds, const Split& split, SplitPart part, int64_t max_len,
                                       bool streaming) {
  check_request_args(ds, split, max_len);
  if (part == SplitPart::Valid && split.train_on_valid)
    throw InvalidInput("ranking: the validation period was trained on (data.train_on_valid = true): only the test "
                       "period measures this model");
  std::vector<RankRequest> out;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const int64_t b = ds.user_offsets[static_cast<size_t>(u)];
    const int64_t e = ds.user_offsets[static_cast<size_t>(u) + 1];
    const int64_t p1 = first_at_or_after(ds, u, split.valid_cut);
    const int64_t p2 = std::max(p1, first_at_or_after(ds, u, split.test_cut));
    RankRequest r;
    r.user = u;
    if (part == SplitPart::Valid) {
      r.hist_end = p1;
      r.cand_begin = p1;
      r.cand_end = p2;
    } else {
      r.hist_end = p2;
      r.cand_begin = p2;
      r.cand_end = e;
    }
    if (r.cand_end <= r.cand_begin) continue;
    if (!streaming) {
      r.hist_begin = std::max(b, r.hist_end - max_len);
      out.push_back(r);
      continue;
    }
    // One request per distinct timestamp: events are in time order and every event before the
    // period is earlier than it, so the history of a group starting at i ends at i.
    const int64_t cand_end = r.cand_end;
    for (int64_t i = r.cand_begin; i < cand_end;) {
      int64_t j = i + 1;
      const int64_t t = ds.event_timestamps[static_cast<size_t>(i)];
      while (j < cand_end && ds.event_timestamps[static_cast<size_t>(j)] == t) ++j;
      RankRequest g;
      g.user = u;
      g.hist_end = i;
      g.hist_begin = std::max(b, i - max_len);
      g.cand_begin = i;
      g.cand_end = j;
      out.push_back(g);
      i = j;
    }
  }
  return out;
}

std::vector<RankWindow> rank_train_windows(const Dataset& ds, const Split& split, int64_t max_len) {
  check_request_args(ds, split, max_len);
  std::vector<RankWindow> out;
  std::vector<RankWindow> user_windows;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const int64_t b = ds.user_offsets[static_cast<size_t>(u)];
    user_windows.clear();
    for (int64_t end = first_at_or_after(ds, u, split.train_cut()); end > b;) {
      const int64_t begin = std::max(b, end - max_len);
      user_windows.push_back(RankWindow{u, begin, end});
      end = begin;
    }
    out.insert(out.end(), user_windows.rbegin(), user_windows.rend());
  }
  return out;
}

void append_user_history(const Dataset& ds, const RankData& rd, int32_t user, std::vector<int32_t>& items,
                         std::vector<int32_t>& feedback, std::vector<int64_t>& times) {
  const int64_t b = ds.user_offsets[static_cast<size_t>(user)], e = ds.user_offsets[static_cast<size_t>(user) + 1];
  for (int64_t i = b; i < e; ++i) {
    items.push_back(ds.event_items[static_cast<size_t>(i)]);
    feedback.push_back(rd.feedback[static_cast<size_t>(i)]);
    if (ds.has_timestamps()) times.push_back(ds.event_timestamps[static_cast<size_t>(i)]);
  }
}

int32_t feedback_token(const RankData& rd, const std::string& name) {
  auto it = std::find(rd.feedback_names.begin(), rd.feedback_names.end(), name);
  return it == rd.feedback_names.end() ? 0 : static_cast<int32_t>(it - rd.feedback_names.begin()) + 1;
}

}  // namespace genrec
