// Item hold-out for cold-start evaluation: selection, event removal, the item-list reader, and
// the CLI flow `data holdout-items` -> train -> `eval --target-items`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/data/dataset.h"
#include "genrec/data/holdout.h"
#include "genrec/data/split.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::run_cli;
using genrec::test::TempDir;
using genrec::test::write_text;
namespace fs = std::filesystem;

namespace {

// Items i1..i9 (dense 1..9; i9 has no events), users u1..u6 with these sequences (dense ids).
// Timestamps 100*u + k, ratings k + 0.5, actions 1 + k % 2; item i has attribute 1 + i % 2;
// item 2 has text.
const std::vector<std::vector<int32_t>> kSequences = {
    {1, 2, 3, 4, 5},  // u1
    {2, 1, 2, 6},     // u2
    {1, 5, 3},        // u3
    {3, 2},           // u4
    {5, 2},           // u5
    {6, 7, 8, 2},     // u6
};

Dataset hand_dataset() {
  Dataset ds;
  for (int i = 1; i <= 9; ++i) ds.items.add("i" + std::to_string(i));
  ds.actions.add("click");
  ds.actions.add("like");
  ds.attributes.add("odd");
  ds.attributes.add("even");
  ds.user_offsets = {0, 0};
  for (size_t u = 0; u < kSequences.size(); ++u) {
    ds.users.add("u" + std::to_string(u + 1));
    for (size_t k = 0; k < kSequences[u].size(); ++k) {
      ds.event_items.push_back(kSequences[u][k]);
      ds.event_timestamps.push_back(100 * static_cast<int64_t>(u + 1) + static_cast<int64_t>(k));
      ds.event_ratings.push_back(static_cast<float>(k) + 0.5f);
      ds.event_actions.push_back(1 + static_cast<int32_t>(k % 2));
    }
    ds.user_offsets.push_back(static_cast<int64_t>(ds.event_items.size()));
  }
  ds.attribute_offsets = {0, 0};
  for (int i = 1; i <= 9; ++i) {
    ds.attribute_values.push_back(1 + i % 2);
    ds.attribute_offsets.push_back(static_cast<int64_t>(ds.attribute_values.size()));
  }
  ds.item_text.assign(10, ItemText{});
  ds.has_item_text.assign(10, 0);
  ds.item_text[2] = ItemText{"two", "the second item", "acme", {"x"}};
  ds.has_item_text[2] = 1;
  ds.provenance = {{"source", "hand"}};
  ds.validate();
  return ds;
}

std::vector<int32_t> items_of(const Dataset& ds, int32_t u) {
  UserEvents ev = ds.user(u);
  return std::vector<int32_t>(ev.items, ev.items + ev.size);
}
std::vector<int64_t> times_of(const Dataset& ds, int32_t u) {
  UserEvents ev = ds.user(u);
  return std::vector<int64_t>(ev.timestamps, ev.timestamps + ev.size);
}

std::string message_of(const std::function<void()>& f) {
  return genrec::test::invalid_message(f);
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json json_of(const genrec::test::CliResult& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception&) {
    ADD_FAILURE() << "stdout is not JSON: " << r.out << "\nstderr: " << r.err;
    return nullptr;
  }
}

}  // namespace

TEST(Holdout, RemovesEventsKeepingOnlyLeaveOneOutTestTargets) {
  const Dataset ds = hand_dataset();
  HoldoutResult r = hold_out_item_set(ds, {5, 2, 5});  // any order, duplicates allowed
  EXPECT_EQ(r.held_out, (std::vector<int32_t>{2, 5}));
  const Dataset& out = r.dataset;
  // u1: 2 removed; 5 is the last event and 3 events remain before it -> kept as the test target.
  EXPECT_EQ(items_of(out, 1), (std::vector<int32_t>{1, 3, 4, 5}));
  EXPECT_EQ(times_of(out, 1), (std::vector<int64_t>{100, 102, 103, 104}));
  // u2: both 2s removed; its last event is not held out.
  EXPECT_EQ(items_of(out, 2), (std::vector<int32_t>{1, 6}));
  EXPECT_EQ(times_of(out, 2), (std::vector<int64_t>{201, 203}));
  // u3: 5 is not last -> removed.
  EXPECT_EQ(items_of(out, 3), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(times_of(out, 3), (std::vector<int64_t>{300, 302}));
  // u4: last event 2 with only one event before it: leave-one-out would train on it -> removed.
  EXPECT_EQ(items_of(out, 4), (std::vector<int32_t>{3}));
  // u5: everything held out -> no events left (the user stays in the vocabulary).
  EXPECT_EQ(out.user(5).size, 0);
  // u6: last event 2 after three kept events -> test target.
  EXPECT_EQ(items_of(out, 6), (std::vector<int32_t>{6, 7, 8, 2}));
  EXPECT_EQ(times_of(out, 6), (std::vector<int64_t>{600, 601, 602, 603}));

  EXPECT_EQ(r.events_removed, 20 - 13);
  EXPECT_EQ(out.n_events(), 13);
  EXPECT_EQ(r.users_with_held_out_target, 2);  // u1, u6
  EXPECT_EQ(r.targets_removed_short, 2);       // u4, u5
  EXPECT_EQ(r.users_emptied, 1);               // u5

  // Ratings and actions follow their events (original position k -> k + 0.5, 1 + k % 2).
  UserEvents u1 = out.user(1);
  const std::vector<int64_t> orig_pos = {0, 2, 3, 4};
  for (int64_t k = 0; k < u1.size; ++k) {
    EXPECT_FLOAT_EQ(u1.ratings[k], static_cast<float>(orig_pos[static_cast<size_t>(k)]) + 0.5f);
    EXPECT_EQ(u1.actions[k], 1 + static_cast<int32_t>(orig_pos[static_cast<size_t>(k)] % 2));
  }
  EXPECT_EQ(out.event_ratings.size(), out.event_items.size());
  EXPECT_EQ(out.event_actions.size(), out.event_items.size());
  EXPECT_EQ(out.event_timestamps.size(), out.event_items.size());

  // Vocabularies and side information unchanged.
  EXPECT_EQ(out.users.serialize(), ds.users.serialize());
  EXPECT_EQ(out.items.serialize(), ds.items.serialize());
  EXPECT_EQ(out.actions.serialize(), ds.actions.serialize());
  EXPECT_EQ(out.attributes.serialize(), ds.attributes.serialize());
  EXPECT_EQ(out.attribute_offsets, ds.attribute_offsets);
  EXPECT_EQ(out.attribute_values, ds.attribute_values);
  EXPECT_EQ(out.has_item_text, ds.has_item_text);
  EXPECT_EQ(out.item_text[2].title, "two");
  EXPECT_EQ(out.provenance["source"], "hand");

  EXPECT_THROW(hold_out_item_set(ds, {0}), InvalidInput);
  EXPECT_THROW(hold_out_item_set(ds, {10}), InvalidInput);
}

TEST(Holdout, LeaveOneOutNeverTrainsOrValidatesOnHeldOutItems) {
  const Dataset ds = hand_dataset();
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    HoldoutResult r = hold_out_items(ds, 0.3, seed);
    std::vector<uint8_t> held(10, 0);
    for (int32_t it : r.held_out) held[static_cast<size_t>(it)] = 1;
    Split split = make_split(r.dataset, SplitOptions{});
    int64_t held_targets = 0;
    for (int32_t u = 1; u <= r.dataset.n_users(); ++u) {
      UserEvents ev = r.dataset.user(u);
      const auto uu = static_cast<size_t>(u);
      for (int64_t k = 0; k < split.train_end[uu]; ++k) EXPECT_FALSE(held[static_cast<size_t>(ev.items[k])]) << seed;
      if (split.valid_index[uu] >= 0) {
        EXPECT_FALSE(held[static_cast<size_t>(ev.items[split.valid_index[uu]])]) << seed;
      }
      // Every held-out event left is a test target.
      for (int64_t k = 0; k < ev.size; ++k)
        if (held[static_cast<size_t>(ev.items[k])]) {
          EXPECT_EQ(split.test_index[uu], k) << seed;
          ++held_targets;
        }
    }
    EXPECT_EQ(held_targets, r.users_with_held_out_target) << seed;
  }
}

TEST(Holdout, SelectionCountDeterminismAndSeeds) {
  // round(fraction * n_items), half away from zero.
  EXPECT_EQ(pick_holdout_items(10, 0.05, 1).size(), 1u);  // 0.5 -> 1
  EXPECT_EQ(pick_holdout_items(10, 0.25, 1).size(), 3u);  // 2.5 -> 3
  EXPECT_EQ(pick_holdout_items(40, 0.05, 1).size(), 2u);
  EXPECT_EQ(pick_holdout_items(1000, 0.123, 1).size(), 123u);
  EXPECT_EQ(pick_holdout_items(150, 0.1, 1).size(), 15u);

  const auto a = pick_holdout_items(20, 0.25, 7);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end());
  EXPECT_GE(a.front(), 1);
  EXPECT_LE(a.back(), 20);
  EXPECT_EQ(pick_holdout_items(20, 0.25, 7), a);  // same seed, same items
  EXPECT_NE(pick_holdout_items(20, 0.25, 8), a);
  EXPECT_NE(pick_holdout_items(20, 0.25, 1), pick_holdout_items(20, 0.25, 2));
  // The selection depends only on std::mt19937_64 (specified exactly by the standard) and our own
  // bounded draw: pinned so that a change of algorithm is noticed.
  EXPECT_EQ(pick_holdout_items(20, 0.25, 1), (std::vector<int32_t>{3, 5, 9, 13, 19}));

  // Uniform: each of 10 items is picked by about 30% of 3000 seeds (sd ~ 25).
  std::vector<int> hits(11, 0);
  for (uint64_t seed = 0; seed < 3000; ++seed)
    for (int32_t it : pick_holdout_items(10, 0.3, seed)) ++hits[static_cast<size_t>(it)];
  for (int i = 1; i <= 10; ++i) {
    EXPECT_GT(hits[static_cast<size_t>(i)], 800) << i;
    EXPECT_LT(hits[static_cast<size_t>(i)], 1000) << i;
  }

  // hold_out_items uses exactly this selection, deterministically, and records it.
  const Dataset ds = hand_dataset();
  HoldoutResult r1 = hold_out_items(ds, 0.3, 5), r2 = hold_out_items(ds, 0.3, 5);
  EXPECT_EQ(r1.held_out, pick_holdout_items(9, 0.3, 5));
  EXPECT_EQ(r1.held_out, r2.held_out);
  EXPECT_EQ(r1.dataset.event_items, r2.dataset.event_items);
  const nlohmann::json& rec = r1.dataset.provenance["holdout_items"];
  EXPECT_EQ(rec["fraction"], 0.3);
  EXPECT_EQ(rec["seed"], 5);
  EXPECT_EQ(rec["n_items"], 3);
  EXPECT_EQ(rec["events_removed"], r1.events_removed);
  EXPECT_EQ(rec["users_with_held_out_target"], r1.users_with_held_out_target);
  EXPECT_EQ(r1.dataset.provenance["source"], "hand");
  // Holding out again keeps the earlier record.
  HoldoutResult twice = hold_out_items(r1.dataset, 0.3, 6);
  EXPECT_EQ(twice.dataset.provenance["holdout_items"]["previous"], rec);
}

TEST(Holdout, FractionErrorsNameTheFlag) {
  const Dataset ds = hand_dataset();
  for (double f : {0.0, 1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    std::string m = message_of([&] { hold_out_items(ds, f, 1); });
    EXPECT_NE(m.find("--fraction"), std::string::npos) << f << ": " << m;
  }
  // Rounds to no item, or to every item.
  EXPECT_NE(message_of([&] { hold_out_items(ds, 0.01, 1); }).find("--fraction"), std::string::npos);
  EXPECT_NE(message_of([&] { hold_out_items(ds, 0.97, 1); }).find("--fraction"), std::string::npos);
}

TEST(Holdout, ReadItemList) {
  TempDir tmp;
  const Dataset ds = hand_dataset();
  write_text(tmp / "list.txt", "# held out\n\ni3  \r\ni1\t\ni3\n");
  EXPECT_EQ(read_item_list(tmp / "list.txt", ds), (std::vector<int32_t>{1, 3}));
  write_text(tmp / "empty.txt", "# nothing\n");
  EXPECT_TRUE(read_item_list(tmp / "empty.txt", ds).empty());

  write_text(tmp / "bad.txt", "i1\n# comment\nnope\n");
  std::string m = message_of([&] { read_item_list(tmp / "bad.txt", ds); });
  EXPECT_NE(m.find("bad.txt:3"), std::string::npos) << m;
  EXPECT_NE(m.find("'nope'"), std::string::npos) << m;
  m = message_of([&] { read_item_list(tmp / "missing.txt", ds); });
  EXPECT_NE(m.find("missing.txt"), std::string::npos) << m;
}

TEST(Holdout, RunWritesDatasetListAndProvenance) {
  TempDir tmp;
  save_dataset(hand_dataset(), tmp / "src");
  nlohmann::json s = holdout_items_run(tmp / "src", 0.25, 3, tmp / "out", false);  // round(2.25) = 2 items
  EXPECT_EQ(s["n_items"], 2);
  EXPECT_EQ(s["items_total"], 9);
  EXPECT_EQ(s["seed"], 3);
  EXPECT_EQ(s["source"], fs::absolute(tmp / "src").lexically_normal().string());
  EXPECT_EQ(s["out"], (tmp / "out").string());

  // The saved dataset loads (zero-event items and users, the extra list file) and matches.
  Dataset loaded = load_dataset(tmp / "out");
  HoldoutResult expect = hold_out_items(hand_dataset(), 0.25, 3);
  EXPECT_EQ(loaded.event_items, expect.dataset.event_items);
  EXPECT_EQ(loaded.event_timestamps, expect.dataset.event_timestamps);
  EXPECT_EQ(loaded.user_offsets, expect.dataset.user_offsets);
  EXPECT_EQ(loaded.n_items(), 9);
  EXPECT_EQ(loaded.n_items_with_text(), 1);
  EXPECT_EQ(loaded.provenance["holdout_items"]["source"], s["source"]);
  EXPECT_EQ(loaded.provenance["holdout_items"]["events_removed"], expect.events_removed);

  // The list: a '#' line, then the raw ids by dense id; read_item_list reads it back.
  std::string list = genrec::test::read_text(tmp / "out" / "holdout_items.txt");
  ASSERT_FALSE(list.empty());
  EXPECT_EQ(list[0], '#');
  std::string expected_list = list.substr(0, list.find('\n') + 1);
  for (int32_t it : expect.held_out) expected_list += "i" + std::to_string(it) + "\n";
  EXPECT_EQ(list, expected_list);
  EXPECT_EQ(read_item_list(tmp / "out" / "holdout_items.txt", loaded), expect.held_out);

  // An existing output needs overwrite; a missing source is named.
  EXPECT_THROW(holdout_items_run(tmp / "src", 0.25, 3, tmp / "out", false), InvalidInput);
  EXPECT_NO_THROW(holdout_items_run(tmp / "src", 0.25, 4, tmp / "out", true));
  std::string m = message_of([&] { holdout_items_run(tmp / "nowhere", 0.25, 3, tmp / "out2", false); });
  EXPECT_NE(m.find("nowhere"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(tmp / "out2"));
}

TEST(HoldoutCli, HoldOutTrainAndEvalOnHeldOutTargets) {
  TempDir tmp;
  ASSERT_EQ(run_cli("-q data generate --out " + q(tmp / "data") + " --users 300 --items 150 --seed 9").exit_code, 0);
  auto h = run_cli("-q data holdout-items --data " + q(tmp / "data") + " --fraction 0.1 --seed 1 --out " + q(tmp / "cold"));
  ASSERT_EQ(h.exit_code, 0) << h.err;
  nlohmann::json hj = json_of(h);
  EXPECT_EQ(hj["n_items"], 15);
  EXPECT_GT(hj["events_removed"].get<int64_t>(), 0);
  EXPECT_GT(hj["users_with_held_out_target"].get<int64_t>(), 0);
  EXPECT_EQ(hj["out"], (tmp / "cold").string());
  const fs::path list = tmp / "cold" / "holdout_items.txt";
  ASSERT_TRUE(fs::exists(list));
  auto st = run_cli("data stats " + q(tmp / "cold"));
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(json_of(st)["items"], 150);

  // Errors: existing output, bad fraction, missing dataset.
  auto again = run_cli("-q data holdout-items --data " + q(tmp / "data") + " --out " + q(tmp / "cold"));
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos) << again.err;
  auto frac = run_cli("-q data holdout-items --data " + q(tmp / "data") + " --fraction 1.5 --out " + q(tmp / "x"));
  EXPECT_EQ(frac.exit_code, 2);
  EXPECT_NE(frac.err.find("--fraction"), std::string::npos) << frac.err;
  auto missing = run_cli("-q data holdout-items --data " + q(tmp / "nope") + " --out " + q(tmp / "x"));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(tmp / "x"));

  const fs::path config = fs::path(GENREC_SOURCE_DIR) / "configs" / "demo" / "pop.toml";
  auto t = run_cli("-q train --config " + q(config) + " --data " + q(tmp / "cold") + " --out " + q(tmp / "run") +
                   " --set eval.ks=[1,10] --set train.threads=1");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  auto all = run_cli("-q eval --run " + q(tmp / "run") + " --split test");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  auto cold = run_cli("-q eval --run " + q(tmp / "run") + " --split test --target-items " + q(list));
  ASSERT_EQ(cold.exit_code, 0) << cold.err;
  nlohmann::json aj = json_of(all), cj = json_of(cold);
  EXPECT_EQ(cj["users"], hj["users_with_held_out_target"]);
  EXPECT_LT(cj["users"].get<int64_t>(), aj["users"].get<int64_t>());
  EXPECT_NE(cj["protocol"].get<std::string>().find("targets restricted to 15 items listed in"), std::string::npos)
      << cj["protocol"];
  // Popularity never saw the held-out items in training: they rank below every seen item.
  EXPECT_EQ(cj["metrics"]["recall@10"], 0.0);

  // Held-out items are never validation targets.
  auto valid = run_cli("-q eval --run " + q(tmp / "run") + " --split valid --target-items " + q(list));
  EXPECT_EQ(valid.exit_code, 2);
  EXPECT_NE(valid.err.find("no valid target is among the 15 items listed in"), std::string::npos) << valid.err;

  // An unknown raw id names the file and line.
  write_text(tmp / "bad.txt", "# list\n" + genrec::test::read_text(list).substr(genrec::test::read_text(list).find('\n') + 1) +
                                  "no_such_item\n");
  auto bad = run_cli("-q eval --run " + q(tmp / "run") + " --split test --target-items " + q(tmp / "bad.txt"));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad.txt:17"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("no_such_item"), std::string::npos) << bad.err;
}

TEST(HoldoutCli, RankingRunsRejectTargetItems) {
  TempDir tmp;
  ASSERT_EQ(run_cli("-q data generate --out " + q(tmp / "data") + " --users 80 --items 40 --actions 4 --ratings").exit_code, 0);
  const fs::path config = fs::path(GENREC_SOURCE_DIR) / "configs" / "ml-100k" / "din.toml";
  auto t = run_cli("-q train --config " + q(config) + " --data " + q(tmp / "data") + " --out " + q(tmp / "run") +
                   " --set train.epochs=1 --set model.max_len=10 --set model.d_model=8 --set train.threads=1");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  write_text(tmp / "list.txt", "1\n");
  auto e = run_cli("-q eval --run " + q(tmp / "run") + " --split test --target-items " + q(tmp / "list.txt"));
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_NE(e.err.find("--target-items applies to retrieval runs"), std::string::npos) << e.err;
}
