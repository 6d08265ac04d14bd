// Item hold-out for cold-start evaluation: items that never appear in training.
//
// hold_out_items() picks round(fraction * n_items) items at random and removes every event of
// them from every user's sequence, except a user's last event when it stays the user's
// leave-one-out test target (the kept sequence has >= 3 events). A held-out item is then only
// ever a test target: never in a training prefix, a validation target or a history. A held-out
// last event of a user left with fewer than 3 events is removed too (leave-one-out would train
// on it). Vocabularies (users, items, actions, attributes) and item side information are kept
// as they are, so dense ids and content line up with the source dataset and content-based
// tokenisers (semantic IDs) can still encode the held-out items. The guarantee is about the
// leave-one-out split: under a temporal split a user's last event may fall in training.
//
// Files: `genrec data holdout-items` writes the dataset directory plus `holdout_items.txt` (raw
// ids, one per line, by dense id, after a '#' comment line); `genrec eval --target-items FILE`
// reads such a list with read_item_list().
//
// Example:
//   HoldoutResult h = hold_out_items(load_dataset("data/beauty"), 0.05, 1);
//   save_dataset(h.dataset, "data/beauty-cold");
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/dataset.h"

namespace genrec {

struct HoldoutResult {
  Dataset dataset;                       // the source minus the held-out items' events
  std::vector<int32_t> held_out;         // dense item ids, ascending
  int64_t events_removed = 0;
  int64_t users_with_held_out_target = 0;  // users whose (kept) last event is a held-out item
  int64_t targets_removed_short = 0;     // held-out last events removed: < 3 events would remain
  int64_t users_emptied = 0;             // users left without any event (kept, with zero events)
};

// round(fraction * n_items) distinct dense ids in 1..n_items, ascending: a partial Fisher-Yates
// shuffle driven by std::mt19937_64(seed) with an unbiased bounded draw of our own (no
// std::*_distribution), so a seed picks the same items on every platform. Throws InvalidInput
// (naming --fraction) unless 0 < fraction < 1 and the count is between 1 and n_items - 1.
std::vector<int32_t> pick_holdout_items(int32_t n_items, double fraction, uint64_t seed);

// Removes the events of `items` (dense ids, any order, duplicates allowed) as described above.
// Records nothing in provenance. Throws InvalidInput for an id outside 1..n_items.
HoldoutResult hold_out_item_set(const Dataset& ds, const std::vector<int32_t>& items);

// pick_holdout_items + hold_out_item_set; records {"fraction", "seed", "n_items", "events_removed",
// "users_with_held_out_target", "targets_removed_short", "users_emptied"} as
// dataset.provenance["holdout_items"] (an earlier hold-out's record moves under "previous").
HoldoutResult hold_out_items(const Dataset& ds, double fraction, uint64_t seed);

// `genrec data holdout-items`: loads `data`, holds out items, saves the result to `out` (refuses
// an existing `out` unless `overwrite`), then writes out/holdout_items.txt atomically. The
// provenance record also names the source directory ("source"). Returns the JSON summary: the
// provenance record plus "out" and "holdout_file".
nlohmann::json holdout_items_run(const std::filesystem::path& data, double fraction, uint64_t seed,
                                 const std::filesystem::path& out, bool overwrite);

// Reads a list of raw item ids (one per line; blank lines and lines starting with '#' skipped;
// trailing whitespace trimmed) and maps them to dense ids of `ds`: ascending, duplicates
// removed; an empty list gives an empty vector. Throws InvalidInput naming file and line for an
// id that is not in ds.items, and naming the file when it cannot be read.
std::vector<int32_t> read_item_list(const std::filesystem::path& file, const Dataset& ds);

}  // namespace genrec
