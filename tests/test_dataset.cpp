#include <gtest/gtest.h>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/data/dataset.h"
#include "genrec/data/import.h"
#include "genrec/data/stats.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;

namespace {

void add_row(RawLog& log, const std::string& u, const std::string& i, int64_t ts, float rating = 0) {
  log.row_user.push_back(log.users.add(u));
  log.row_item.push_back(log.items.add(i));
  if (log.has_timestamps) log.row_timestamp.push_back(ts);
  if (log.has_ratings) log.row_rating.push_back(rating);
}

std::vector<std::string> user_items(const Dataset& ds, const std::string& raw_user) {
  auto u = ds.users.find(raw_user);
  EXPECT_TRUE(u.has_value()) << raw_user;
  std::vector<std::string> out;
  if (!u) return out;
  UserEvents ev = ds.user(*u);
  for (int64_t k = 0; k < ev.size; ++k) out.push_back(ds.items.raw(ev.items[k]));
  return out;
}

Dataset small_dataset() {
  RawLog log;
  log.has_timestamps = true;
  log.has_ratings = true;
  add_row(log, "10", "3", 300, 5);
  add_row(log, "10", "1", 100, 4);
  add_row(log, "2", "3", 50, 3);
  add_row(log, "10", "2", 200, 2);
  add_row(log, "2", "20", 60, 1);
  SideInfo side;
  side.attributes = {{"3", {"red", "big"}}, {"20", {"red"}}, {"999", {"x"}}};
  side.text = {{"1", ItemText{"one", "first item", "acme", {"a", "b"}}}};
  nlohmann::json report;
  return build_dataset(std::move(log), side, CleaningOptions{}, IdKind::Numeric, report);
}

}  // namespace

TEST(Dataset, BuildSortsIdsNumericallyAndEventsChronologically) {
  Dataset ds = small_dataset();
  ASSERT_EQ(ds.n_users(), 2);
  ASSERT_EQ(ds.n_items(), 4);
  // Numeric ids sort by value: "2" < "10", "3" < "20".
  EXPECT_EQ(ds.users.raw(1), "2");
  EXPECT_EQ(ds.users.raw(2), "10");
  EXPECT_EQ(ds.items.raw(1), "1");
  EXPECT_EQ(ds.items.raw(4), "20");
  EXPECT_EQ(user_items(ds, "10"), (std::vector<std::string>{"1", "2", "3"}));
  UserEvents ev = ds.user(*ds.users.find("10"));
  EXPECT_EQ(ev.timestamps[0], 100);
  EXPECT_FLOAT_EQ(ev.ratings[2], 5.0f);
  // Side information matched by raw id; "999" has no events and is dropped.
  ASSERT_TRUE(ds.has_attributes());
  int32_t item3 = *ds.items.find("3");
  EXPECT_EQ(ds.attribute_offsets[item3 + 1] - ds.attribute_offsets[item3], 2);
  EXPECT_EQ(ds.attributes.raw(ds.attribute_values[ds.attribute_offsets[item3]]), "red");
  EXPECT_EQ(ds.n_items_with_text(), 1);
  EXPECT_EQ(ds.item_text[*ds.items.find("1")].description, "first item");
}

TEST(Dataset, TiesKeepInputOrder) {
  RawLog log;
  log.has_timestamps = true;
  add_row(log, "u", "c", 5);
  add_row(log, "u", "a", 5);
  add_row(log, "u", "b", 1);
  add_row(log, "u", "d", 5);
  nlohmann::json report;
  Dataset ds = build_dataset(std::move(log), SideInfo{}, CleaningOptions{}, IdKind::String, report);
  EXPECT_EQ(user_items(ds, "u"), (std::vector<std::string>{"b", "c", "a", "d"}));
}

TEST(Dataset, DedupKcoreAndMinLength) {
  auto make = [] {
    RawLog log;
    // u1: a a b a c ; u2: a b ; u3: a b c ; u4: z
    for (auto i : {"a", "a", "b", "a", "c"}) add_row(log, "u1", i, 0);
    for (auto i : {"a", "b"}) add_row(log, "u2", i, 0);
    for (auto i : {"a", "b", "c"}) add_row(log, "u3", i, 0);
    add_row(log, "u4", "z", 0);
    return log;
  };
  nlohmann::json report;
  CleaningOptions c;
  c.dedup = "consecutive";
  Dataset d1 = build_dataset(make(), SideInfo{}, c, IdKind::String, report);
  EXPECT_EQ(user_items(d1, "u1"), (std::vector<std::string>{"a", "b", "a", "c"}));
  EXPECT_EQ(report["dropped_duplicates"], 1);
  c.dedup = "all";
  Dataset d2 = build_dataset(make(), SideInfo{}, c, IdKind::String, report);
  EXPECT_EQ(user_items(d2, "u1"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(report["dropped_duplicates"], 2);
  c.k_core_users = 2;
  c.k_core_items = 2;
  Dataset d3 = build_dataset(make(), SideInfo{}, c, IdKind::String, report);
  // u4 (1 event) and item z (1 event) are dropped; everything else has >= 2.
  EXPECT_EQ(d3.n_users(), 3);
  EXPECT_FALSE(d3.items.find("z").has_value());
  EXPECT_EQ(report["dropped_by_k_core"], 1);
  CleaningOptions m;
  m.min_seq_len = 3;
  Dataset d4 = build_dataset(make(), SideInfo{}, m, IdKind::String, report);
  EXPECT_EQ(d4.n_users(), 2);  // u1 (5) and u3 (3)
  EXPECT_FALSE(d4.users.find("u2").has_value());
  EXPECT_EQ(report["users_dropped_short"], 2);
}

TEST(Dataset, MinRatingAndColdItems) {
  RawLog log;
  log.has_ratings = true;
  add_row(log, "u", "a", 0, 5);
  add_row(log, "u", "b", 0, 1);
  SideInfo side;
  side.text = {{"cold", ItemText{"Cold item", "", "", {}}}};
  CleaningOptions c;
  c.min_rating = 3;
  c.include_cold_items = true;
  nlohmann::json report;
  Dataset ds = build_dataset(std::move(log), side, c, IdKind::String, report);
  EXPECT_EQ(user_items(ds, "u"), (std::vector<std::string>{"a"}));
  EXPECT_EQ(ds.n_items(), 2);  // a and the cold item; b was filtered out
  EXPECT_TRUE(ds.items.find("cold").has_value());
  EXPECT_EQ(report["cold_items_added"], 1);
  nlohmann::json stats = dataset_stats(ds);
  EXPECT_EQ(stats["items_without_events"], 1);
}

TEST(Dataset, SaveLoadRoundTrip) {
  TempDir tmp;
  Dataset ds = small_dataset();
  ds.provenance = {{"format", "test"}};
  save_dataset(ds, tmp / "ds");
  Dataset back = load_dataset(tmp / "ds");
  EXPECT_EQ(back.users.serialize(), ds.users.serialize());
  EXPECT_EQ(back.items.serialize(), ds.items.serialize());
  EXPECT_EQ(back.user_offsets, ds.user_offsets);
  EXPECT_EQ(back.event_items, ds.event_items);
  EXPECT_EQ(back.event_timestamps, ds.event_timestamps);
  EXPECT_EQ(back.event_ratings, ds.event_ratings);
  EXPECT_EQ(back.attribute_offsets, ds.attribute_offsets);
  EXPECT_EQ(back.attribute_values, ds.attribute_values);
  EXPECT_EQ(back.attributes.serialize(), ds.attributes.serialize());
  EXPECT_EQ(back.n_items_with_text(), 1);
  EXPECT_EQ(back.item_text[*back.items.find("1")].categories, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(back.provenance["format"], "test");
  // Existing directory: refused without overwrite.
  EXPECT_THROW(save_dataset(ds, tmp / "ds"), InvalidInput);
  save_dataset(ds, tmp / "ds", true);
}

namespace {
std::string load_error(const std::filesystem::path& dir) {
  return genrec::test::invalid_message([&] { load_dataset(dir); });
}
}  // namespace

TEST(Dataset, CorruptedFilesAreRejectedWithTheFileName) {
  TempDir tmp;
  save_dataset(small_dataset(), tmp / "ds");
  const auto events = tmp / "ds" / "events.bin";
  std::string good = read_file(events);

  // A flipped byte: checksum mismatch.
  std::string bad = good;
  bad[bad.size() - 3] ^= 0x5A;
  genrec::test::write_text(events, bad);
  std::string err = load_error(tmp / "ds");
  EXPECT_NE(err.find("events.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;

  // Truncated: size differs from the manifest.
  genrec::test::write_text(events, good.substr(0, good.size() - 10));
  err = load_error(tmp / "ds");
  EXPECT_NE(err.find("events.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;

  // Truncated with a manifest that agrees (so only the layout check can catch it).
  std::string cut = good.substr(0, good.size() - 8);
  genrec::test::write_text(events, cut);
  nlohmann::json m = nlohmann::json::parse(read_file(tmp / "ds" / "manifest.json"));
  m["files"]["events.bin"] = {{"bytes", cut.size()}, {"crc32", crc32_hex(crc32_of(cut))}};
  genrec::test::write_text(tmp / "ds" / "manifest.json", m.dump());
  err = load_error(tmp / "ds");
  EXPECT_NE(err.find("events.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated while reading"), std::string::npos) << err;

  // Bad magic.
  std::string wrong = good;
  wrong[0] = 'X';
  genrec::test::write_text(events, wrong);
  m["files"]["events.bin"] = {{"bytes", wrong.size()}, {"crc32", crc32_hex(crc32_of(wrong))}};
  genrec::test::write_text(tmp / "ds" / "manifest.json", m.dump());
  err = load_error(tmp / "ds");
  EXPECT_NE(err.find("bad magic"), std::string::npos) << err;
}

TEST(Dataset, ManifestChecksumMismatchAndMissingPieces) {
  TempDir tmp;
  save_dataset(small_dataset(), tmp / "ds");
  nlohmann::json m = nlohmann::json::parse(read_file(tmp / "ds" / "manifest.json"));
  m["files"]["items.vocab"]["crc32"] = "00000000";
  genrec::test::write_text(tmp / "ds" / "manifest.json", m.dump());
  std::string err = load_error(tmp / "ds");
  EXPECT_NE(err.find("items.vocab"), std::string::npos) << err;
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;

  genrec::test::write_text(tmp / "ds" / "manifest.json", "{not json");
  err = load_error(tmp / "ds");
  EXPECT_NE(err.find("manifest.json"), std::string::npos) << err;

  std::filesystem::remove(tmp / "ds" / "manifest.json");
  err = load_error(tmp / "ds");
  EXPECT_NE(err.find("manifest.json"), std::string::npos) << err;
  EXPECT_NE(load_error(tmp / "nothing_here").find("nothing_here"), std::string::npos);
}

TEST(Dataset, StatsOnHandBuiltData) {
  Dataset ds = small_dataset();
  nlohmann::json s = dataset_stats(ds);
  EXPECT_EQ(s["users"], 2);
  EXPECT_EQ(s["items"], 4);
  EXPECT_EQ(s["interactions"], 5);
  EXPECT_EQ(s["sequence_length"]["min"], 2);
  EXPECT_EQ(s["sequence_length"]["max"], 3);
  EXPECT_DOUBLE_EQ(s["sequence_length"]["median"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(s["density"].get<double>(), 5.0 / 8.0);
  EXPECT_EQ(s["side_information"]["attributes"]["items"], 2);
  EXPECT_EQ(s["side_information"]["text"]["items"], 1);
  EXPECT_TRUE(s["has"]["timestamps"].get<bool>());
}
