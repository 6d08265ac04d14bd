#include "genrec/data/stats.h"

#include <algorithm>
#include <cmath>

namespace genrec {

nlohmann::json dataset_stats(const Dataset& ds) {
  std::vector<int64_t> lens;
  lens.reserve(static_cast<size_t>(ds.n_users()));
  for (int32_t u = 1; u <= ds.n_users(); ++u) lens.push_back(ds.user(u).size);
  std::sort(lens.begin(), lens.end());
  auto pct = [&](double q) -> int64_t {
    if (lens.empty()) return 0;
    // Nearest-rank percentile.
    auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(lens.size())));
    return lens[std::min(lens.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  double mean = lens.empty() ? 0.0 : static_cast<double>(ds.n_events()) / static_cast<double>(lens.size());
  double median = 0;
  if (!lens.empty()) {
    size_t m = lens.size() / 2;
    median = lens.size() % 2 ? static_cast<double>(lens[m]) : 0.5 * static_cast<double>(lens[m - 1] + lens[m]);
  }
  std::vector<uint8_t> item_seen(static_cast<size_t>(ds.n_items()) + 1, 0);
  for (int32_t it : ds.event_items) item_seen[static_cast<size_t>(it)] = 1;
  int64_t items_without_events = 0;
  for (int32_t i = 1; i <= ds.n_items(); ++i) items_without_events += !item_seen[static_cast<size_t>(i)];

  nlohmann::json j;
  j["users"] = ds.n_users();
  j["items"] = ds.n_items();
  j["interactions"] = ds.n_events();
  j["items_without_events"] = items_without_events;
  j["density"] = (ds.n_users() > 0 && ds.n_items() > 0)
                     ? static_cast<double>(ds.n_events()) / (static_cast<double>(ds.n_users()) * ds.n_items())
                     : 0.0;
  j["sequence_length"] = {{"min", lens.empty() ? 0 : lens.front()},
                          {"median", median},
                          {"p90", pct(0.9)},
                          {"max", lens.empty() ? 0 : lens.back()},
                          {"mean", mean}};
  j["has"] = {{"timestamps", ds.has_timestamps()}, {"ratings", ds.has_ratings()}, {"actions", ds.has_actions()}};
  if (ds.has_timestamps() && ds.n_events() > 0) {
    auto [mn, mx] = std::minmax_element(ds.event_timestamps.begin(), ds.event_timestamps.end());
    j["time_range"] = {{"min", *mn}, {"max", *mx}};
  }
  if (ds.has_ratings() && ds.n_events() > 0) {
    auto [mn, mx] = std::minmax_element(ds.event_ratings.begin(), ds.event_ratings.end());
    double sum = 0;
    for (float r : ds.event_ratings) sum += r;
    j["ratings"] = {{"min", *mn}, {"max", *mx}, {"mean", sum / static_cast<double>(ds.n_events())}};
  }
  if (ds.has_actions()) {
    std::vector<int64_t> counts(static_cast<size_t>(ds.actions.size()) + 1, 0);
    for (int32_t a : ds.event_actions) ++counts[static_cast<size_t>(a)];
    nlohmann::json acts = nlohmann::json::object();
    for (int32_t a = 1; a <= ds.actions.size(); ++a) acts[ds.actions.raw(a)] = counts[static_cast<size_t>(a)];
    j["actions"] = acts;
  }
  nlohmann::json side = {{"attributes", nullptr}, {"text", nullptr}};
  if (ds.has_attributes()) {
    int64_t with = 0;
    for (int32_t i = 1; i <= ds.n_items(); ++i)
      with += ds.attribute_offsets[static_cast<size_t>(i) + 1] > ds.attribute_offsets[static_cast<size_t>(i)];
    side["attributes"] = {{"items", with},
                          {"vocabulary", ds.attributes.size()},
                          {"values", static_cast<int64_t>(ds.attribute_values.size())}};
  }
  if (ds.n_items_with_text() > 0) side["text"] = {{"items", ds.n_items_with_text()}};
  j["side_information"] = side;
  if (ds.provenance.contains("format")) j["format"] = ds.provenance["format"];
  return j;
}

}  // namespace genrec
