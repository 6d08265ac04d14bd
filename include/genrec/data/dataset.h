// Dataset: users' chronological event sequences plus optional item side information, and its
// on-disk directory (DESIGN §4):
//   manifest.json     format version, source, options, counts, and a CRC-32 of every file
//   users.vocab       raw user ids, line k = dense id k
//   items.vocab       raw item ids, line k = dense id k
//   events.bin        per-user events, CSR layout (see dataset.cpp for the byte layout)
//   actions.vocab     action names (when the log has actions)
//   attributes.vocab, attributes.bin   per-item attribute ids (when attached)
//   item_text.jsonl   per-item text {"item", "title", "description", "brand", "categories"}
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/vocab.h"

namespace genrec {

// A view of one user's events, oldest first. Pointers stay valid while the Dataset lives.
struct UserEvents {
  const int32_t* items = nullptr;      // [n] dense item ids (1..n_items)
  const int64_t* timestamps = nullptr;  // [n] or nullptr when the dataset has none
  const float* ratings = nullptr;      // [n] or nullptr
  const int32_t* actions = nullptr;    // [n] dense action ids (1..) or nullptr
  int64_t size = 0;
};

struct ItemText {
  std::string title;
  std::string description;
  std::string brand;
  std::vector<std::string> categories;
};

struct Dataset {
  Vocabulary users;
  Vocabulary items;
  Vocabulary actions;  // empty when the log has no action column

  // CSR over dense user ids: user u's events are [user_offsets[u], user_offsets[u+1]).
  // Size n_users + 2; row 0 (padding) is empty.
  std::vector<int64_t> user_offsets;
  std::vector<int32_t> event_items;
  std::vector<int64_t> event_timestamps;  // empty when !has_timestamps()
  std::vector<float> event_ratings;       // empty when !has_ratings()
  std::vector<int32_t> event_actions;     // empty when !has_actions()

  // Item side information. attribute CSR over dense item ids, size n_items + 2 when present.
  Vocabulary attributes;
  std::vector<int64_t> attribute_offsets;
  std::vector<int32_t> attribute_values;
  // Text per dense item id (index 0 unused); empty vector when no text is attached.
  std::vector<ItemText> item_text;
  std::vector<uint8_t> has_item_text;  // [n_items + 1], 1 where item_text[i] is set

  nlohmann::json provenance = nlohmann::json::object();  // source, format, options, cleaning counts

  int32_t n_users() const { return users.size(); }
  int32_t n_items() const { return items.size(); }
  int64_t n_events() const { return static_cast<int64_t>(event_items.size()); }
  bool has_timestamps() const { return !event_timestamps.empty(); }
  bool has_ratings() const { return !event_ratings.empty(); }
  bool has_actions() const { return !event_actions.empty(); }
  bool has_attributes() const { return !attribute_offsets.empty(); }
  int64_t n_items_with_text() const;

  UserEvents user(int32_t user_id) const;
  // Checks internal consistency (sizes, id ranges, monotonic offsets). Throws InternalError.
  void validate() const;
};

// Writes the dataset directory atomically: built under a temporary name, renamed at the end.
// Throws InvalidInput when `dir` exists and !overwrite.
void save_dataset(const Dataset& ds, const std::filesystem::path& dir, bool overwrite = false);

struct LoadOptions {
  bool load_side_info = true;  // attributes and text (skip for speed when not needed)
  bool verify_checksums = true;
};
// Loads a dataset directory. Throws InvalidInput naming the file for a missing file, a bad
// manifest, a checksum mismatch, or a truncated / corrupted binary file.
Dataset load_dataset(const std::filesystem::path& dir, const LoadOptions& options = {});

// The manifest of a dataset directory (parsed, not verified).
nlohmann::json read_manifest(const std::filesystem::path& dir);

}  // namespace genrec
