// build_dataset / import_dataset: from rows read by the readers to a Dataset.
#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "genrec/core/error.h"
#include "genrec/core/log.h"
#include "genrec/data/import.h"

namespace genrec {

namespace {

// Numeric ids are canonical decimal strings: shorter is smaller, then lexicographic.
bool id_less(const std::string& a, const std::string& b, IdKind kind) {
  if (kind == IdKind::Numeric && a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

// Dense vocabulary from the raw ids whose interned id is flagged in `used`, sorted.
// Returns the vocabulary and fills `remap` (interned id -> dense id, 0 when unused).
Vocabulary sorted_vocab(const Vocabulary& interned, const std::vector<uint8_t>& used, IdKind kind,
                        std::vector<int32_t>& remap) {
  std::vector<int32_t> ids;
  for (int32_t i = 1; i <= interned.size(); ++i)
    if (used[static_cast<size_t>(i)]) ids.push_back(i);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return id_less(interned.raw(a), interned.raw(b), kind); });
  Vocabulary out;
  remap.assign(static_cast<size_t>(interned.size()) + 1, 0);
  for (int32_t id : ids) remap[static_cast<size_t>(id)] = out.add(interned.raw(id));
  return out;
}

}  // namespace

Dataset build_dataset(RawLog&& log, const SideInfo& side, const CleaningOptions& cleaning, IdKind ids,
                      nlohmann::json& report) {
  if (cleaning.dedup != "none" && cleaning.dedup != "consecutive" && cleaning.dedup != "all")
    throw InvalidInput("dedup: unknown mode '" + cleaning.dedup + "' (expected none, consecutive or all)");
  if (cleaning.k_core_users < 0 || cleaning.k_core_items < 0 || cleaning.min_seq_len < 0)
    throw InvalidInput("k-core and minimum sequence length must be >= 0");
  const int64_t n_rows = log.n_rows();
  const size_t n_users_raw = static_cast<size_t>(log.users.size()) + 1;
  const size_t n_items_raw = static_cast<size_t>(log.items.size()) + 1;
  report = nlohmann::json::object();
  report["rows_read"] = n_rows + log.rows_skipped;
  report["rows_skipped_bad"] = log.rows_skipped;
  if (!log.skip_examples.empty()) report["skipped_examples"] = log.skip_examples;

  // 1. Rating filter.
  std::vector<uint8_t> keep(static_cast<size_t>(n_rows), 1);
  int64_t dropped_rating = 0;
  if (log.has_ratings && cleaning.min_rating > -1e299) {
    for (int64_t r = 0; r < n_rows; ++r)
      if (log.row_rating[static_cast<size_t>(r)] < cleaning.min_rating) {
        keep[static_cast<size_t>(r)] = 0;
        ++dropped_rating;
      }
  }
  report["dropped_below_min_rating"] = dropped_rating;

  // 2. Group rows by user in input order (counting sort), then stable chronological order.
  std::vector<int64_t> user_start(n_users_raw + 1, 0);
  for (int64_t r = 0; r < n_rows; ++r) ++user_start[static_cast<size_t>(log.row_user[static_cast<size_t>(r)]) + 1];
  std::partial_sum(user_start.begin(), user_start.end(), user_start.begin());
  std::vector<int64_t> order(static_cast<size_t>(n_rows));
  {
    std::vector<int64_t> fill(user_start.begin(), user_start.end() - 1);
    for (int64_t r = 0; r < n_rows; ++r) order[static_cast<size_t>(fill[static_cast<size_t>(log.row_user[static_cast<size_t>(r)])]++)] = r;
  }
  if (log.has_timestamps) {
    for (size_t u = 1; u < n_users_raw; ++u)
      std::stable_sort(order.begin() + user_start[u], order.begin() + user_start[u + 1], [&](int64_t a, int64_t b) {
        return log.row_timestamp[static_cast<size_t>(a)] < log.row_timestamp[static_cast<size_t>(b)];
      });
  }

  // 3. De-duplication, in chronological order.
  int64_t dropped_dup = 0;
  if (cleaning.dedup != "none") {
    std::unordered_map<int32_t, int> seen;
    for (size_t u = 1; u < n_users_raw; ++u) {
      seen.clear();
      int32_t prev = 0;
      for (int64_t k = user_start[u]; k < user_start[u + 1]; ++k) {
        auto r = static_cast<size_t>(order[static_cast<size_t>(k)]);
        if (!keep[r]) continue;
        int32_t item = log.row_item[r];
        bool dup = cleaning.dedup == "all" ? !seen.emplace(item, 1).second : item == prev;
        if (dup) {
          keep[r] = 0;
          ++dropped_dup;
        }
        prev = item;
      }
    }
  }
  report["dropped_duplicates"] = dropped_dup;

  // 4. k-core, iterated to a fixed point; 5. minimum sequence length.
  std::vector<int64_t> user_count(n_users_raw, 0), item_count(n_items_raw, 0);
  auto recount = [&]() {
    std::fill(user_count.begin(), user_count.end(), 0);
    std::fill(item_count.begin(), item_count.end(), 0);
    for (int64_t r = 0; r < n_rows; ++r)
      if (keep[static_cast<size_t>(r)]) {
        ++user_count[static_cast<size_t>(log.row_user[static_cast<size_t>(r)])];
        ++item_count[static_cast<size_t>(log.row_item[static_cast<size_t>(r)])];
      }
  };
  recount();
  int64_t dropped_kcore = 0, kcore_rounds = 0;
  if (cleaning.k_core_users > 0 || cleaning.k_core_items > 0) {
    while (true) {
      int64_t removed = 0;
      for (int64_t r = 0; r < n_rows; ++r) {
        auto ri = static_cast<size_t>(r);
        if (!keep[ri]) continue;
        if (user_count[static_cast<size_t>(log.row_user[ri])] < cleaning.k_core_users ||
            item_count[static_cast<size_t>(log.row_item[ri])] < cleaning.k_core_items) {
          keep[ri] = 0;
          ++removed;
        }
      }
      ++kcore_rounds;
      recount();
      dropped_kcore += removed;
      if (removed == 0) break;
    }
  }
  report["dropped_by_k_core"] = dropped_kcore;
  report["k_core_rounds"] = kcore_rounds;
  int64_t dropped_short = 0, users_short = 0;
  if (cleaning.min_seq_len > 0) {
    for (int64_t r = 0; r < n_rows; ++r) {
      auto ri = static_cast<size_t>(r);
      if (keep[ri] && user_count[static_cast<size_t>(log.row_user[ri])] < cleaning.min_seq_len) {
        keep[ri] = 0;
        ++dropped_short;
      }
    }
    for (size_t u = 1; u < n_users_raw; ++u) users_short += user_count[u] > 0 && user_count[u] < cleaning.min_seq_len;
    recount();
  }
  report["dropped_short_sequences"] = dropped_short;
  report["users_dropped_short"] = users_short;

  // 6. Vocabularies. Cold items (side information only) join when asked.
  Dataset ds;
  std::vector<uint8_t> user_used(n_users_raw, 0), item_used(n_items_raw, 0);
  for (size_t u = 1; u < n_users_raw; ++u) user_used[u] = user_count[u] > 0;
  for (size_t i = 1; i < n_items_raw; ++i) item_used[i] = item_count[i] > 0;
  int64_t cold_items = 0;
  if (cleaning.include_cold_items) {
    auto mark = [&](const std::string& raw) {
      auto id = log.items.find(raw);
      if (!id) {
        id = log.items.add(raw);
        item_used.push_back(0);
      }
      if (!item_used[static_cast<size_t>(*id)]) {
        item_used[static_cast<size_t>(*id)] = 1;
        ++cold_items;
      }
    };
    for (const auto& [raw, attrs] : side.attributes) mark(raw);
    for (const auto& [raw, text] : side.text) mark(raw);
  }
  report["cold_items_added"] = cold_items;
  std::vector<int32_t> user_map, item_map;
  ds.users = sorted_vocab(log.users, user_used, ids, user_map);
  ds.items = sorted_vocab(log.items, item_used, ids, item_map);
  if (log.has_actions) ds.actions = log.actions;

  // 7. Events in CSR order of dense users.
  ds.user_offsets.assign(static_cast<size_t>(ds.n_users()) + 2, 0);
  std::vector<size_t> raw_of_dense(static_cast<size_t>(ds.n_users()) + 1, 0);
  for (size_t u = 1; u < n_users_raw; ++u)
    if (user_map[u]) raw_of_dense[static_cast<size_t>(user_map[u])] = u;
  for (int32_t du = 1; du <= ds.n_users(); ++du) {
    size_t u = raw_of_dense[static_cast<size_t>(du)];
    for (int64_t k = user_start[u]; k < user_start[u + 1]; ++k) {
      auto r = static_cast<size_t>(order[static_cast<size_t>(k)]);
      if (!keep[r]) continue;
      ds.event_items.push_back(item_map[static_cast<size_t>(log.row_item[r])]);
      if (log.has_timestamps) ds.event_timestamps.push_back(log.row_timestamp[r]);
      if (log.has_ratings) ds.event_ratings.push_back(log.row_rating[r]);
      if (log.has_actions) ds.event_actions.push_back(log.row_action[r]);
    }
    ds.user_offsets[static_cast<size_t>(du) + 1] = ds.n_events();
  }

  // 8. Side information, matched by raw item id; the last entry for an item wins.
  int64_t attr_matched = 0, attr_unmatched = 0, text_matched = 0, text_unmatched = 0;
  if (!side.attributes.empty()) {
    std::vector<const std::vector<std::string>*> per_item(static_cast<size_t>(ds.n_items()) + 1, nullptr);
    for (const auto& [raw, attrs] : side.attributes) {
      auto id = ds.items.find(raw);
      if (!id) {
        ++attr_unmatched;
        continue;
      }
      per_item[static_cast<size_t>(*id)] = &attrs;
    }
    ds.attribute_offsets.assign(static_cast<size_t>(ds.n_items()) + 2, 0);
    for (int32_t i = 1; i <= ds.n_items(); ++i) {
      if (const auto* attrs = per_item[static_cast<size_t>(i)]) {
        ++attr_matched;
        for (const auto& a : *attrs) ds.attribute_values.push_back(ds.attributes.add(a));
      }
      ds.attribute_offsets[static_cast<size_t>(i) + 1] = static_cast<int64_t>(ds.attribute_values.size());
    }
  }
  if (!side.text.empty()) {
    ds.item_text.assign(static_cast<size_t>(ds.n_items()) + 1, ItemText{});
    ds.has_item_text.assign(static_cast<size_t>(ds.n_items()) + 1, 0);
    for (const auto& [raw, text] : side.text) {
      auto id = ds.items.find(raw);
      if (!id) {
        ++text_unmatched;
        continue;
      }
      ds.item_text[static_cast<size_t>(*id)] = text;
      ds.has_item_text[static_cast<size_t>(*id)] = 1;
    }
    text_matched = ds.n_items_with_text();
  }
  if (!side.attributes.empty())
    report["attributes"] = {{"items_matched", attr_matched}, {"entries_without_item", attr_unmatched}};
  if (!side.text.empty())
    report["text"] = {{"items_matched", text_matched}, {"entries_without_item", text_unmatched}};
  ds.validate();
  return ds;
}

Dataset import_dataset(const ImportOptions& options, const ProgressCallback& progress) {
  if (options.inputs.empty()) throw InvalidInput("import: no input file given (--input)");
  RawLog log;
  for (const auto& path : options.inputs) read_interactions(path, options.reader, log, progress);
  SideInfo side;
  for (const auto& path : options.item_files) read_item_info(path, options.item_format, options.reader, side);
  if (log.rows_skipped > 0)
    GENREC_LOG_WARN("skipped %lld bad rows (first: %s)", static_cast<long long>(log.rows_skipped),
                    log.skip_examples.empty() ? "" : log.skip_examples.front().c_str());
  nlohmann::json report;
  const int64_t rows_read = log.n_rows();
  Dataset ds = build_dataset(std::move(log), side, options.cleaning, options.reader.ids, report);
  if (ds.n_events() == 0)
    throw InvalidInput("import: no interactions left (" + std::to_string(rows_read) +
                       " rows read; cleaning removed " +
                       std::to_string(report.value("dropped_below_min_rating", int64_t{0}) +
                                      report.value("dropped_duplicates", int64_t{0}) +
                                      report.value("dropped_by_k_core", int64_t{0}) +
                                      report.value("dropped_short_sequences", int64_t{0})) +
                       "); relax --min-rating, --k-core or --min-seq-len");
  nlohmann::json inputs = nlohmann::json::array(), items = nlohmann::json::array();
  for (const auto& p : options.inputs) inputs.push_back(p.string());
  for (const auto& p : options.item_files) items.push_back(p.string());
  ds.provenance = {
      {"format", options.reader.format},
      {"inputs", inputs},
      {"item_files", items},
      {"ids", options.reader.ids == IdKind::Numeric ? "numeric" : "string"},
      {"cleaning",
       {{"dedup", options.cleaning.dedup},
        {"min_rating", options.cleaning.min_rating > -1e299 ? nlohmann::json(options.cleaning.min_rating) : nlohmann::json()},
        {"k_core_users", options.cleaning.k_core_users},
        {"k_core_items", options.cleaning.k_core_items},
        {"min_seq_len", options.cleaning.min_seq_len},
        {"include_cold_items", options.cleaning.include_cold_items}}},
      {"report", report}};
  return ds;
}

}  // namespace genrec
