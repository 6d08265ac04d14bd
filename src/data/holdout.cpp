// Item hold-out for cold-start evaluation (see holdout.h).
#include "genrec/data/holdout.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"

namespace genrec {

namespace {

// Uniform integer in [0, bound) from raw 64-bit draws: rejection of the top partial block, so
// every value is equally likely and the sequence depends only on the engine (which the standard
// specifies exactly), not on the library's distributions.
uint64_t uniform_index(std::mt19937_64& rng, uint64_t bound) {
  GENREC_ASSERT(bound > 0);
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = max - (max % bound + 1) % bound;  // largest multiple of bound, minus 1
  for (;;) {
    const uint64_t x = rng();
    if (x <= limit) return x % bound;
  }
}

std::string format_fraction(double fraction) {
  std::ostringstream s;
  s << fraction;
  return s.str();
}

void check_fraction(double fraction) {
  if (!(fraction > 0.0 && fraction < 1.0))
    throw InvalidInput("holdout-items: --fraction must be in (0, 1), got " + format_fraction(fraction));
}

}  // namespace

std::vector<int32_t> pick_holdout_items(int32_t n_items, double fraction, uint64_t seed) {
  check_fraction(fraction);
  const auto count = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n_items)));
  if (count < 1)
    throw InvalidInput("holdout-items: --fraction " + format_fraction(fraction) + " of " + std::to_string(n_items) +
                       " items rounds to no item; raise --fraction");
  if (count >= n_items)
    throw InvalidInput("holdout-items: --fraction " + format_fraction(fraction) + " of " + std::to_string(n_items) +
                       " items rounds to every item; lower --fraction");
  std::vector<int32_t> ids(static_cast<size_t>(n_items));
  for (int32_t i = 0; i < n_items; ++i) ids[static_cast<size_t>(i)] = i + 1;
  // Partial Fisher-Yates: positions [0, count) end up holding a uniform random subset.
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    const auto j = i + static_cast<int64_t>(uniform_index(rng, static_cast<uint64_t>(n_items - i)));
    std::swap(ids[static_cast<size_t>(i)], ids[static_cast<size_t>(j)]);
  }
  ids.resize(static_cast<size_t>(count));
  std::sort(ids.begin(), ids.end());
  return ids;
}

HoldoutResult hold_out_item_set(const Dataset& ds, const std::vector<int32_t>& items) {
  const int32_t n_items = ds.n_items();
  std::vector<uint8_t> held(static_cast<size_t>(n_items) + 1, 0);
  for (int32_t it : items) {
    if (it < 1 || it > n_items)
      throw InvalidInput("holdout-items: item id " + std::to_string(it) + " is outside 1.." + std::to_string(n_items));
    held[static_cast<size_t>(it)] = 1;
  }

  HoldoutResult r;
  for (int32_t it = 1; it <= n_items; ++it)
    if (held[static_cast<size_t>(it)]) r.held_out.push_back(it);

  // A copy with the events rebuilt below: vocabularies, side information and provenance stay
  // as they were, so ids and content line up with the source.
  Dataset& out = r.dataset;
  out = ds;
  out.event_items.clear();
  out.event_timestamps.clear();
  out.event_ratings.clear();
  out.event_actions.clear();
  out.user_offsets.assign(static_cast<size_t>(ds.n_users()) + 2, 0);
  std::vector<int64_t> keep;  // event indices (within the user) kept
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    UserEvents ev = ds.user(u);
    keep.clear();
    for (int64_t k = 0; k + 1 < ev.size; ++k)
      if (!held[static_cast<size_t>(ev.items[k])]) keep.push_back(k);
    if (ev.size > 0) {
      const int64_t last = ev.size - 1;
      if (!held[static_cast<size_t>(ev.items[last])]) {
        keep.push_back(last);
      } else if (keep.size() + 1 >= 3) {
        // Still the leave-one-out test target (>= 3 events): the only place a held-out item stays.
        keep.push_back(last);
        ++r.users_with_held_out_target;
      } else {
        ++r.targets_removed_short;
      }
    }
    r.events_removed += ev.size - static_cast<int64_t>(keep.size());
    if (keep.empty() && ev.size > 0) ++r.users_emptied;
    for (int64_t k : keep) {
      out.event_items.push_back(ev.items[k]);
      if (ev.timestamps) out.event_timestamps.push_back(ev.timestamps[k]);
      if (ev.ratings) out.event_ratings.push_back(ev.ratings[k]);
      if (ev.actions) out.event_actions.push_back(ev.actions[k]);
    }
    out.user_offsets[static_cast<size_t>(u) + 1] = static_cast<int64_t>(out.event_items.size());
  }
  out.validate();
  return r;
}

HoldoutResult hold_out_items(const Dataset& ds, double fraction, uint64_t seed) {
  HoldoutResult r = hold_out_item_set(ds, pick_holdout_items(ds.n_items(), fraction, seed));
  nlohmann::json record = {{"fraction", fraction},
                           {"seed", seed},
                           {"n_items", r.held_out.size()},
                           {"events_removed", r.events_removed},
                           {"users_with_held_out_target", r.users_with_held_out_target},
                           {"targets_removed_short", r.targets_removed_short},
                           {"users_emptied", r.users_emptied}};
  nlohmann::json& prov = r.dataset.provenance;
  if (!prov.is_object()) prov = nlohmann::json::object();
  if (prov.contains("holdout_items")) record["previous"] = prov["holdout_items"];
  prov["holdout_items"] = record;
  if (r.users_emptied > 0)
    GENREC_LOG_WARN("%lld users have no events left (kept in the vocabulary with empty sequences)",
                    static_cast<long long>(r.users_emptied));
  return r;
}

nlohmann::json holdout_items_run(const std::filesystem::path& data, double fraction, uint64_t seed,
                                 const std::filesystem::path& out, bool overwrite) {
  // Check the arguments and the destination before reading anything.
  check_fraction(fraction);
  std::error_code ec;
  if (fs::exists(out, ec) && !overwrite)
    throw InvalidInput(out.string() + ": already exists (use --overwrite to replace it)");
  const fs::path source = fs::absolute(data).lexically_normal();
  Dataset ds;
  try {
    ds = load_dataset(data);
  } catch (...) {
    rethrow_with_stage("loading dataset");
  }
  HoldoutResult r = hold_out_items(ds, fraction, seed);
  nlohmann::json& record = r.dataset.provenance["holdout_items"];
  record["source"] = source.string();
  save_dataset(r.dataset, out, overwrite);

  // After save_dataset: the directory is in place under its final name.
  std::string list = "# " + std::to_string(r.held_out.size()) + " held-out items (raw ids, by dense id): fraction " +
                     format_fraction(fraction) + " of " + std::to_string(ds.n_items()) + " items, seed " +
                     std::to_string(seed) + ", from " + source.string() + " by genrec data holdout-items\n";
  for (int32_t it : r.held_out) list += ds.items.raw(it) + "\n";
  const fs::path list_path = out / "holdout_items.txt";
  write_file_atomic(list_path, list);

  GENREC_LOG_INFO("%zu of %d items held out, %lld events removed, %lld users with a held-out test target",
                  r.held_out.size(), ds.n_items(), static_cast<long long>(r.events_removed),
                  static_cast<long long>(r.users_with_held_out_target));
  nlohmann::json summary = record;
  summary.erase("previous");
  summary["items_total"] = ds.n_items();
  summary["out"] = out.string();
  summary["holdout_file"] = list_path.string();
  return summary;
}

std::vector<int32_t> read_item_list(const std::filesystem::path& file, const Dataset& ds) {
  const std::string text = read_file(file);
  std::vector<int32_t> ids;
  LineReader lines(text);
  std::string_view line;
  while (lines.next(line)) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    auto id = ds.items.find(line);
    if (!id)
      throw InvalidInput(SourceLocation{file.string(), lines.line_number(), ""},
                         "unknown item id '" + std::string(line) + "' (not in the dataset's items.vocab)");
    ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace genrec
