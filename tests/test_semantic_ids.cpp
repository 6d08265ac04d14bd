// Semantic IDs: collision resolution, codebook report, codes.json / codes.bin, code-map import,
// and the prefix trie.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/tokenizers/semantic_ids.h"
#include "test_util.h"

using genrec::CodeTrie;
using genrec::InvalidInput;
using genrec::SemanticIds;
using genrec::Vocabulary;
using genrec::test::TempDir;
using genrec::test::read_text;
using genrec::test::write_text;
namespace fs = std::filesystem;

namespace {

SemanticIds make_sid(const std::vector<std::vector<int32_t>>& rows, std::vector<int32_t> sizes) {
  SemanticIds sid;
  sid.n_items = static_cast<int32_t>(rows.size());
  sid.levels = static_cast<int32_t>(sizes.size());
  sid.codebook_sizes = std::move(sizes);
  sid.codes.assign(static_cast<size_t>(sid.levels), 0);  // row 0
  for (const auto& r : rows) sid.codes.insert(sid.codes.end(), r.begin(), r.end());
  return sid;
}

std::vector<int32_t> row(const SemanticIds& sid, int32_t item) {
  return std::vector<int32_t>(sid.item_codes(item), sid.item_codes(item) + sid.levels);
}

Vocabulary vocab_of(const std::vector<std::string>& raws) {
  Vocabulary v;
  for (const auto& r : raws) v.add(r);
  return v;
}

// Six items, two levels: (0,1) x3 (items 1, 3, 5), (2,3) x2 (items 2, 6), (1,0) once (item 4).
SemanticIds colliding() {
  return make_sid({{0, 1}, {2, 3}, {0, 1}, {1, 0}, {0, 1}, {2, 3}}, {3, 4});
}


std::string bytes_of(const fs::path& p) { return read_text(p); }

void put_u32(std::string& data, size_t pos, uint32_t v) { std::memcpy(&data[pos], &v, 4); }

// Rewrites the trailing CRC so that only the intended corruption is seen.
void fix_crc(std::string& data) {
  put_u32(data, data.size() - 4, genrec::crc32_of(std::string_view(data.data(), data.size() - 4)));
}

}  // namespace

TEST(SemanticIds, ResolveCollisionsAddsRankLevel) {
  SemanticIds sid = colliding();
  EXPECT_DOUBLE_EQ(genrec::resolve_collisions(sid), 5.0 / 6.0);
  EXPECT_EQ(sid.levels, 3);
  EXPECT_TRUE(sid.disambiguation_level);
  EXPECT_EQ(sid.codebook_sizes, (std::vector<int32_t>{3, 4, 3}));  // largest group: 3
  EXPECT_EQ(row(sid, 1), (std::vector<int32_t>{0, 1, 0}));
  EXPECT_EQ(row(sid, 2), (std::vector<int32_t>{2, 3, 0}));
  EXPECT_EQ(row(sid, 3), (std::vector<int32_t>{0, 1, 1}));
  EXPECT_EQ(row(sid, 4), (std::vector<int32_t>{1, 0, 0}));
  EXPECT_EQ(row(sid, 5), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(row(sid, 6), (std::vector<int32_t>{2, 3, 1}));
  EXPECT_EQ(row(sid, 0), (std::vector<int32_t>{0, 0, 0}));
  EXPECT_NO_THROW(sid.validate());
  // Already unique now: nothing more to do.
  EXPECT_DOUBLE_EQ(genrec::resolve_collisions(sid), 0.0);
  EXPECT_EQ(sid.levels, 3);
}

TEST(SemanticIds, ResolveCollisionsWithoutCollisions) {
  SemanticIds sid = make_sid({{0, 1}, {1, 1}, {2, 0}}, {3, 2});
  EXPECT_DOUBLE_EQ(genrec::resolve_collisions(sid), 0.0);
  EXPECT_EQ(sid.levels, 2);
  EXPECT_FALSE(sid.disambiguation_level);

  EXPECT_DOUBLE_EQ(genrec::resolve_collisions(sid, /*always=*/true), 0.0);
  EXPECT_EQ(sid.levels, 3);
  EXPECT_TRUE(sid.disambiguation_level);
  EXPECT_EQ(sid.codebook_sizes, (std::vector<int32_t>{3, 2, 1}));
  EXPECT_EQ(row(sid, 2), (std::vector<int32_t>{1, 1, 0}));
}

TEST(SemanticIds, ValidateCatchesBadSizesAndCodes) {
  SemanticIds sid = colliding();
  sid.codes[2 * 2 + 1] = 4;  // item 2, level 1: codebook size 4
  EXPECT_THROW(sid.validate(), genrec::InternalError);
  sid = colliding();
  sid.codes.pop_back();
  EXPECT_THROW(sid.validate(), genrec::InternalError);
  sid = colliding();
  sid.codebook_sizes.push_back(2);
  EXPECT_THROW(sid.validate(), genrec::InternalError);
}

TEST(SemanticIds, CodebookReport) {
  SemanticIds sid = colliding();
  nlohmann::json r = genrec::codebook_report(sid);
  ASSERT_EQ(r["levels"].size(), 2u);
  EXPECT_EQ(r["levels"][0]["level"], 0);
  EXPECT_EQ(r["levels"][0]["codebook_size"], 3);
  EXPECT_EQ(r["levels"][0]["used"], 3);
  EXPECT_DOUBLE_EQ(r["levels"][0]["usage"].get<double>(), 1.0);
  EXPECT_EQ(r["levels"][1]["codebook_size"], 4);
  EXPECT_EQ(r["levels"][1]["used"], 3);  // codes 0, 1, 3
  EXPECT_DOUBLE_EQ(r["levels"][1]["usage"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(r["collision_rate"].get<double>(), 5.0 / 6.0);
  EXPECT_EQ(r["distinct_sequences"], 3);
  EXPECT_EQ(r["n_items"], 6);
  EXPECT_FALSE(r.contains("collision_rate_before_disambiguation"));

  genrec::resolve_collisions(sid);
  r = genrec::codebook_report(sid);
  ASSERT_EQ(r["levels"].size(), 3u);
  EXPECT_EQ(r["levels"][2]["codebook_size"], 3);
  EXPECT_EQ(r["levels"][2]["used"], 3);
  EXPECT_DOUBLE_EQ(r["collision_rate"].get<double>(), 0.0);
  EXPECT_EQ(r["distinct_sequences"], 6);
  EXPECT_DOUBLE_EQ(r["collision_rate_before_disambiguation"].get<double>(), 5.0 / 6.0);
}

TEST(SemanticIds, JsonRoundTrip) {
  TempDir tmp;
  SemanticIds sid = colliding();
  genrec::resolve_collisions(sid);
  sid.report = genrec::codebook_report(sid);
  Vocabulary items = vocab_of({"B001", "x\"y", "ü", "42", "a b", "last"});
  fs::path p = tmp / "codes.json";
  genrec::write_semantic_ids_json(p, sid, items);
  nlohmann::json j = nlohmann::json::parse(read_text(p));
  EXPECT_EQ(j["format"], "genrec-sid 1");
  EXPECT_EQ(j["items"]["x\"y"], (std::vector<int32_t>{2, 3, 0}));

  SemanticIds back = genrec::read_semantic_ids_json(p, items);
  EXPECT_EQ(back.n_items, sid.n_items);
  EXPECT_EQ(back.levels, sid.levels);
  EXPECT_EQ(back.codebook_sizes, sid.codebook_sizes);
  EXPECT_EQ(back.disambiguation_level, sid.disambiguation_level);
  EXPECT_EQ(back.codes, sid.codes);
  EXPECT_EQ(back.report, sid.report);
  // The same through the extension dispatch.
  EXPECT_EQ(genrec::read_semantic_ids(p, items).codes, sid.codes);

  // Items in another order in the vocabulary: codes follow the raw ids.
  Vocabulary other = vocab_of({"last", "a b", "42", "ü", "x\"y", "B001"});
  SemanticIds moved = genrec::read_semantic_ids_json(p, other);
  for (int32_t i = 1; i <= 6; ++i) EXPECT_EQ(row(moved, 7 - i), row(sid, i));
}

TEST(SemanticIds, BinRoundTrip) {
  TempDir tmp;
  SemanticIds sid = colliding();
  genrec::resolve_collisions(sid);
  fs::path p = tmp / "codes.bin";
  genrec::write_semantic_ids_bin(p, sid);
  const std::string data = bytes_of(p);
  EXPECT_EQ(data.size(), 8u + 4 + 4 + 3 * 4 + 1 + 7 * 3 * 4 + 4);
  EXPECT_EQ(data.substr(0, 8), "GRECSID1");
  SemanticIds back = genrec::read_semantic_ids_bin(p);
  EXPECT_EQ(back.n_items, 6);
  EXPECT_EQ(back.levels, 3);
  EXPECT_EQ(back.codebook_sizes, sid.codebook_sizes);
  EXPECT_TRUE(back.disambiguation_level);
  EXPECT_EQ(back.codes, sid.codes);
  Vocabulary items = vocab_of({"a", "b", "c", "d", "e", "f"});
  EXPECT_EQ(genrec::read_semantic_ids(p, items).codes, sid.codes);
  EXPECT_INVALID(genrec::read_semantic_ids(p, vocab_of({"a", "b"})), p.string(), "6 items");
}

TEST(SemanticIds, BinCorruptionsAreInvalidInput) {
  TempDir tmp;
  SemanticIds sid = colliding();
  fs::path good = tmp / "good.bin";
  genrec::write_semantic_ids_bin(good, sid);
  const std::string data = bytes_of(good);
  fs::path p = tmp / "bad.bin";
  auto read = [&] { genrec::read_semantic_ids_bin(p); };

  std::string d = data;
  d[0] = 'X';
  write_text(p, d);
  EXPECT_INVALID(read(), p.string(), "magic");

  write_text(p, data.substr(0, data.size() - 5));
  EXPECT_INVALID(read(), p.string(), "truncated");

  write_text(p, data.substr(0, 10));
  EXPECT_INVALID(read(), p.string(), "truncated");

  d = data;
  d[8 + 4 + 4 + 2 * 4 + 1 + 2 * 4] ^= 0x01;  // a code of item 1 (after row 0)
  write_text(p, d);
  EXPECT_INVALID(read(), p.string(), "checksum");

  d = data;
  put_u32(d, 8 + 4 + 4 + 2 * 4 + 1 + 4 * 2 * 4 + 4, 4);  // item 4, level 1: size 4 -> out of range
  fix_crc(d);
  write_text(p, d);
  EXPECT_INVALID(read(), p.string(), "item 4", "outside [0, 4)");

  d = data;
  put_u32(d, 8 + 4 + 4 + 2 * 4 + 1 + 3 * 2 * 4, static_cast<uint32_t>(-1));  // item 3 level 0 = -1
  fix_crc(d);
  write_text(p, d);
  EXPECT_INVALID(read(), p.string(), "item 3");

  d = data;
  put_u32(d, 8, 0);  // zero levels
  write_text(p, d);
  EXPECT_INVALID(read(), p.string(), "levels");

  write_text(p, data + "x");
  EXPECT_INVALID(read(), p.string(), "trailing");

  EXPECT_INVALID(genrec::read_semantic_ids_bin(tmp / "missing.bin"), "missing.bin");
}

TEST(SemanticIds, JsonCorruptionsAreInvalidInput) {
  TempDir tmp;
  SemanticIds sid = colliding();
  Vocabulary items = vocab_of({"a", "b", "c", "d", "e", "f"});
  fs::path p = tmp / "codes.json";
  auto read = [&] { genrec::read_semantic_ids_json(p, items); };
  const std::string head = R"({"format": "genrec-sid 1", "levels": 2, "codebook_sizes": [3, 4], "disambiguation_level": false, )";
  const std::string five = R"("a": [0, 1], "b": [2, 3], "c": [0, 1], "d": [1, 0], "e": [0, 1])";

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2, 3]}})");
  EXPECT_EQ(genrec::read_semantic_ids_json(p, items).codes, sid.codes);

  write_text(p, head + R"("items": {)" + five + "}}");
  EXPECT_INVALID(read(), p.string(), "\"f\"", "no codes");

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2, 4]}})");
  EXPECT_INVALID(read(), p.string(), "items.f", "outside [0, 4)");

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2, -1]}})");
  EXPECT_INVALID(read(), p.string(), "items.f");

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2]}})");
  EXPECT_INVALID(read(), p.string(), "items.f", "2 codes");

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2, 3], "g": [0, 0]}})");
  EXPECT_INVALID(read(), p.string(), "\"g\"", "not in the item vocabulary");

  write_text(p, head + R"("items": {)" + five + R"(, "f": [2, 3], "a": [0, 0]}})");
  EXPECT_INVALID(read(), p.string(), "items.a", "\"a\"", "more than once");

  write_text(p, R"({"format": "other", "items": {}})");
  EXPECT_INVALID(read(), p.string(), "format");

  write_text(p, head + R"("items": {)" + five);
  EXPECT_INVALID(read(), p.string(), "invalid JSON");

  write_text(p, R"({"format": "genrec-sid 1", "levels": 2, "codebook_sizes": [3], "disambiguation_level": false, "items": {}})");
  EXPECT_INVALID(read(), p.string(), "codebook_sizes");
}

TEST(SemanticIds, ImportIntegerArrays) {
  TempDir tmp;
  fs::path p = write_text(tmp / "map.json", R"({"x": [3, 0, 1], "y": [0, 5, 1], "z": [3, 0, 0]})");
  Vocabulary items = vocab_of({"z", "x", "y"});
  SemanticIds sid = genrec::import_code_map(p, items);
  EXPECT_EQ(sid.n_items, 3);
  EXPECT_EQ(sid.levels, 3);
  EXPECT_FALSE(sid.disambiguation_level);
  EXPECT_EQ(sid.codebook_sizes, (std::vector<int32_t>{4, 6, 2}));
  EXPECT_EQ(row(sid, 1), (std::vector<int32_t>{3, 0, 0}));
  EXPECT_EQ(row(sid, 2), (std::vector<int32_t>{3, 0, 1}));
  EXPECT_EQ(row(sid, 3), (std::vector<int32_t>{0, 5, 1}));

  // Non-numeric keys with an offset.
  EXPECT_INVALID(genrec::import_code_map(p, items, 1), p.string(), "not an integer");
  // A missing item, an unknown one.
  EXPECT_INVALID(genrec::import_code_map(p, vocab_of({"z", "x", "y", "w"})), p.string(), "\"w\"", "missing");
  EXPECT_INVALID(genrec::import_code_map(p, vocab_of({"z", "x"})), p.string(), "\"y\"", "not in the item vocabulary");
  // Level counts that differ.
  write_text(p, R"({"x": [3, 0, 1], "y": [0, 5], "z": [3, 0, 0]})");
  EXPECT_INVALID(genrec::import_code_map(p, items), p.string(), "y", "same number of levels");
  write_text(p, R"({"x": [3, 0, 1], "y": [0, -5, 1], "z": [3, 0, 0]})");
  EXPECT_INVALID(genrec::import_code_map(p, items), p.string(), "y", "-5");
  write_text(p, R"({"x": [3, 0, 1], "y": [0, 5, 1], "x": [3, 0, 0]})");
  EXPECT_INVALID(genrec::import_code_map(p, items), p.string(), "\"x\"", "more than once");
}

TEST(SemanticIds, ImportTokenStringsWithOffset) {
  TempDir tmp;
  // LETTER style: 0-based keys, tokens "<a_N>"; plain "N" strings accepted too.
  fs::path p = write_text(tmp / "Beauty.index.json",
                          R"({"0": ["<a_12>", "<b_7>"], "1": ["<a_0>", "3"], "2": ["<a_12>", "<b_0>"]})");
  Vocabulary items = vocab_of({"3", "1", "2"});
  SemanticIds sid = genrec::import_code_map(p, items, 1);
  EXPECT_EQ(sid.levels, 2);
  EXPECT_EQ(sid.codebook_sizes, (std::vector<int32_t>{13, 8}));
  EXPECT_EQ(row(sid, 2), (std::vector<int32_t>{12, 7}));  // raw "1" = key "0"
  EXPECT_EQ(row(sid, 3), (std::vector<int32_t>{0, 3}));   // raw "2" = key "1"
  EXPECT_EQ(row(sid, 1), (std::vector<int32_t>{12, 0}));  // raw "3" = key "2"

  // Offset 0 on the same file: keys are raw ids "0", "1", "2"; "0" is unknown.
  EXPECT_INVALID(genrec::import_code_map(p, items, 0), p.string(), "\"0\"");
  // A bad token.
  write_text(p, R"({"0": ["<a_12>", "<b_x>"], "1": ["<a_0>", "3"], "2": ["<a_12>", "<b_0>"]})");
  EXPECT_INVALID(genrec::import_code_map(p, items, 1), p.string(), "<b_x>");
  // Two keys that name the same item after the offset.
  write_text(p, R"({"0": [1], "00": [2], "1": [0], "2": [0]})");
  EXPECT_INVALID(genrec::import_code_map(p, items, 1), p.string(), "both name item");
}

TEST(CodeTrie, PathsLeadToLeaves) {
  SemanticIds sid = colliding();
  genrec::resolve_collisions(sid);
  CodeTrie trie(sid);
  EXPECT_EQ(trie.levels(), 3);
  // root: 3 first codes; depth 1: (0,1), (1,0), (2,3); leaves: 6 items.
  EXPECT_EQ(trie.n_nodes(), 1u + 3 + 3 + 6);
  EXPECT_EQ(trie.child_codes(trie.root()), (std::vector<int32_t>{0, 1, 2}));
  for (int32_t item = 1; item <= sid.n_items; ++item) {
    int32_t node = trie.root();
    for (int32_t l = 0; l < sid.levels; ++l) {
      EXPECT_EQ(trie.item(node), 0);
      EXPECT_EQ(trie.depth(node), l);
      node = trie.child(node, sid.item_codes(item)[l]);
      ASSERT_GE(node, 0);
    }
    EXPECT_EQ(trie.item(node), item);
    EXPECT_EQ(trie.depth(node), 3);
    EXPECT_TRUE(trie.child_codes(node).empty());
  }
  for (size_t n = 0; n < trie.n_nodes(); ++n) {
    const auto& cc = trie.child_codes(static_cast<int32_t>(n));
    EXPECT_TRUE(std::is_sorted(cc.begin(), cc.end()));
    EXPECT_EQ(std::set<int32_t>(cc.begin(), cc.end()).size(), cc.size());
    EXPECT_EQ(cc.size(), trie.child_nodes(static_cast<int32_t>(n)).size());
  }
  // (0, 1, *) has three items.
  int32_t n01 = trie.child(trie.child(trie.root(), 0), 1);
  EXPECT_EQ(trie.child_codes(n01), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(trie.item(trie.child(n01, 2)), 5);
}

TEST(CodeTrie, InvalidCodesAndSortedChildren) {
  // Items given out of order: children must still come out ascending.
  SemanticIds sid = make_sid({{1, 2}, {1, 0}, {0, 5}, {1, 1}}, {2, 6});
  CodeTrie trie(sid);
  EXPECT_EQ(trie.n_nodes(), 1u + 2 + 4);
  EXPECT_EQ(trie.child_codes(0), (std::vector<int32_t>{0, 1}));
  int32_t one = trie.child(0, 1);
  ASSERT_GE(one, 0);
  EXPECT_EQ(trie.child_codes(one), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(trie.item(trie.child(one, 0)), 2);
  EXPECT_EQ(trie.item(trie.child(one, 1)), 4);
  EXPECT_EQ(trie.item(trie.child(one, 2)), 1);
  EXPECT_EQ(trie.item(trie.child(trie.child(0, 0), 5)), 3);
  EXPECT_EQ(trie.child(0, 2), -1);
  EXPECT_EQ(trie.child(0, -1), -1);
  EXPECT_EQ(trie.child(one, 3), -1);
  EXPECT_EQ(trie.child(trie.child(0, 0), 4), -1);
  EXPECT_EQ(trie.child(trie.child(one, 0), 0), -1);  // a leaf has no children
}

TEST(CodeTrie, RejectsCollidingItems) {
  SemanticIds sid = colliding();
  EXPECT_INVALID(CodeTrie(sid), "share the code sequence", "resolve collisions");
}

TEST(SemanticIds, SharedLetterBeautyImport) {
  const fs::path data = genrec::test::shared_data_dir();
  const fs::path file = data / "semantic_ids" / "letter_beauty" / "Beauty.index.json";
  std::error_code ec;
  if (data.empty() || !fs::is_regular_file(file, ec))
    GTEST_SKIP() << "shared data semantic_ids/letter_beauty/Beauty.index.json not found (set GENREC_SHARED_DATA); skipping";
  Vocabulary items;
  for (int i = 1; i <= 12101; ++i) items.add(std::to_string(i));
  SemanticIds sid = genrec::import_code_map(file, items, 1);
  EXPECT_EQ(sid.n_items, 12101);
  EXPECT_EQ(sid.levels, 4);
  for (int32_t k : sid.codebook_sizes) EXPECT_LE(k, 256);
  for (int32_t item = 1; item <= sid.n_items; ++item)
    for (int32_t l = 0; l < 4; ++l) {
      ASSERT_GE(sid.item_codes(item)[l], 0);
      ASSERT_LT(sid.item_codes(item)[l], 256);
    }
  nlohmann::json r = genrec::codebook_report(sid);
  EXPECT_EQ(r["distinct_sequences"], 12088);
  // 13 items too many: between 14 (one group of 14) and 26 (13 pairs) items collide.
  const double collided = r["collision_rate"].get<double>() * 12101;
  EXPECT_GE(collided, 14 - 1e-6);
  EXPECT_LE(collided, 26 + 1e-6);
  // Exactly: 9 pairs and 2 triples share a 4-tuple (24 items; counted independently in Python).
  EXPECT_DOUBLE_EQ(r["collision_rate"].get<double>(), 24.0 / 12101.0);

  const double before = genrec::resolve_collisions(sid);
  EXPECT_DOUBLE_EQ(before, r["collision_rate"].get<double>());
  EXPECT_EQ(sid.levels, 5);
  EXPECT_EQ(sid.codebook_sizes[4], 3);  // largest group
  CodeTrie trie(sid);
  EXPECT_EQ(genrec::codebook_report(sid)["distinct_sequences"], 12101);
  int32_t leaves = 0;
  for (size_t n = 0; n < trie.n_nodes(); ++n) leaves += trie.item(static_cast<int32_t>(n)) != 0;
  EXPECT_EQ(leaves, 12101);
}
