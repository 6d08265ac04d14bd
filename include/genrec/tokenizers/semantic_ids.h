// Semantic IDs: every item is a short sequence of codes (TIGER, Rajput et al. 2023), plus the
// prefix trie of valid code sequences that constrains generation. Torch-free.
//
// A SemanticIds holds, for items 1..n_items (dense ids of a dataset; row 0 = padding, unused),
// `levels` codes each; code c of level l is in [0, codebook_sizes[l]). When the tokenizer's
// levels leave items colliding, a last disambiguation level numbers the items that share a
// prefix (0, 1, 2, ...), so every item has a unique sequence (see resolve_collisions).
//
// Files (written atomically; `genrec sid build` writes both into its output directory):
//   codes.json  {"format": "genrec-sid 1", "levels": L, "codebook_sizes": [...],
//                "disambiguation_level": bool, "items": {"RAW_ID": [c0, c1, ...], ...},
//                "report": {...}}  (raw item ids of the dataset's vocabulary)
//   codes.bin   "GRECSID1", uint32 levels, uint32 n_items, uint32 codebook_sizes[levels],
//               uint8 disambiguation, int32 codes[(n_items + 1) * levels] (row 0 zeros),
//               uint32 CRC-32 of everything before it.
// Reading validates everything (InvalidInput naming the file and, for JSON, the item).
//
// Example:
//   SemanticIds sid = read_semantic_ids("sid/codes.bin");
//   CodeTrie trie(sid);
//   trie.children(trie.root());          // valid first codes
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/vocab.h"

namespace genrec {

struct SemanticIds {
  int32_t n_items = 0;
  int32_t levels = 0;
  std::vector<int32_t> codebook_sizes;  // [levels]
  bool disambiguation_level = false;    // the last level only separates colliding items
  std::vector<int32_t> codes;           // [(n_items + 1) * levels], row 0 unused (zeros)
  nlohmann::json report = nlohmann::json::object();  // tokenizer statistics (see sid build)

  const int32_t* item_codes(int32_t item) const { return codes.data() + static_cast<size_t>(item) * levels; }
  // Throws InternalError when sizes disagree or a code is out of range.
  void validate() const;
};

// Adds a disambiguation level when two or more items share all their codes: the items of each
// group get 0, 1, 2, ... in item-id order (unique items get 0). Returns the fraction of items that
// collided before (0 when none did; then no level is added unless `always` is set).
double resolve_collisions(SemanticIds& sid, bool always = false);
// Per level: how many codes are used, and the fraction of the codebook; the collision rate of the
// full code sequences (items sharing a sequence with another item / items).
//   {"levels": [{"level", "codebook_size", "used", "usage"}, ...], "collision_rate",
//    "distinct_sequences", "largest_group", "n_items", "disambiguation_level"}
// plus, with a disambiguation level, "collision_rate_before_disambiguation" and
// "distinct_sequences_before_disambiguation" (the same over all levels but the last).
nlohmann::json codebook_report(const SemanticIds& sid);

void write_semantic_ids_json(const std::filesystem::path& path, const SemanticIds& sid, const Vocabulary& items);
void write_semantic_ids_bin(const std::filesystem::path& path, const SemanticIds& sid);
SemanticIds read_semantic_ids_bin(const std::filesystem::path& path);
SemanticIds read_semantic_ids_json(const std::filesystem::path& path, const Vocabulary& items);
// By extension: .bin -> binary (whose item count must match `items`), else JSON.
SemanticIds read_semantic_ids(const std::filesystem::path& path, const Vocabulary& items);

// Imports a code map {"ITEM": [codes...]} or {"ITEM": ["<a_12>", "<b_7>", ...]} (LETTER /
// MiniOneRec style: the integer in each token is the code). `id_offset` is added to each
// numeric item key before looking it up in `items` (LETTER's Beauty keys are 0-based: offset 1).
// Every item of the vocabulary must be present (InvalidInput naming the first missing one);
// unknown keys are an error. Codebook sizes = max code + 1 per level. Codes are JSON integers,
// tokens "<x_N>" (N = the integer after the last '_') or plain "N"; every item needs the same
// number of codes. With id_offset != 0 every key must be an integer. No disambiguation level.
SemanticIds import_code_map(const std::filesystem::path& path, const Vocabulary& items, int64_t id_offset = 0);

// Prefix trie of the items' code sequences. Node 0 is the root; a node at depth d < levels has
// children keyed by the code of level d; nodes at depth `levels` are leaves holding one item.
// Construction throws InvalidInput when two items share a full sequence (call
// resolve_collisions first).
class CodeTrie {
 public:
  explicit CodeTrie(const SemanticIds& sid);
  int32_t root() const { return 0; }
  int32_t levels() const { return levels_; }
  // Valid next codes after `node`, ascending, and the child node of each.
  const std::vector<int32_t>& child_codes(int32_t node) const { return child_codes_[static_cast<size_t>(node)]; }
  const std::vector<int32_t>& child_nodes(int32_t node) const { return child_nodes_[static_cast<size_t>(node)]; }
  // The child reached with `code`, or -1 when the code is not valid there (binary search).
  // Throws std::out_of_range for a node that does not exist.
  int32_t child(int32_t node, int32_t code) const;
  // The item at a leaf (0 for inner nodes).
  int32_t item(int32_t node) const { return items_[static_cast<size_t>(node)]; }
  int32_t depth(int32_t node) const { return depth_[static_cast<size_t>(node)]; }
  size_t n_nodes() const { return items_.size(); }

 private:
  int32_t levels_ = 0;
  std::vector<std::vector<int32_t>> child_codes_, child_nodes_;
  std::vector<int32_t> items_, depth_;
};

}  // namespace genrec
