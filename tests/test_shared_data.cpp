// Checks on the real public datasets in ../shared/data (skipped when the folder is absent).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

using genrec::test::run_cli;
using genrec::test::TempDir;
namespace fs = std::filesystem;

namespace {
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json import_and_stats(const TempDir& tmp, const std::string& args) {
  auto imp = run_cli("-q data import " + args + " --out " + q(tmp / "ds"));
  EXPECT_EQ(imp.exit_code, 0) << imp.err;
  auto st = run_cli("data stats " + q(tmp / "ds"));
  EXPECT_EQ(st.exit_code, 0) << st.err;
  return nlohmann::json::parse(st.out);
}
}  // namespace

TEST(SharedData, BeautyWithAttributes) {
  GENREC_REQUIRE_SHARED_DATA(data);
  TempDir tmp;
  auto s = import_and_stats(tmp, "--format s3rec --input " + q(data / "amazon2014_s3rec/Beauty.txt") + " --items " +
                                     q(data / "amazon2014_s3rec/Beauty_item2attributes.json"));
  EXPECT_EQ(s["users"], 22363);
  EXPECT_EQ(s["items"], 12101);
  EXPECT_EQ(s["interactions"], 198502);
  EXPECT_EQ(s["sequence_length"]["min"], 5);
  EXPECT_EQ(s["side_information"]["attributes"]["items"], 12101);
}

TEST(SharedData, Sports) {
  GENREC_REQUIRE_SHARED_DATA(data);
  TempDir tmp;
  auto s = import_and_stats(tmp, "--format s3rec --input " + q(data / "amazon2014_s3rec/Sports_and_Outdoors.txt"));
  EXPECT_EQ(s["users"], 35598);
  EXPECT_EQ(s["items"], 18357);
  EXPECT_EQ(s["interactions"], 296337);
}

TEST(SharedData, MovieLens100kWithItems) {
  GENREC_REQUIRE_SHARED_DATA(data);
  TempDir tmp;
  auto s = import_and_stats(tmp, "--format ml-100k --input " + q(data / "movielens/ml-100k/u.data") + " --items " +
                                     q(data / "movielens/ml-100k/u.item"));
  EXPECT_EQ(s["users"], 943);
  EXPECT_EQ(s["items"], 1682);
  EXPECT_EQ(s["interactions"], 100000);
  EXPECT_TRUE(s["has"]["ratings"].get<bool>());
  EXPECT_TRUE(s["has"]["timestamps"].get<bool>());
  EXPECT_EQ(s["side_information"]["text"]["items"], 1682);
}

TEST(SharedData, IndustrialItemText) {
  GENREC_REQUIRE_SHARED_DATA(data);
  TempDir tmp;
  const fs::path dir = data / "amazon2018_minionerec";
  auto s = import_and_stats(tmp, "--format csv --input " + q(dir / "Industrial_and_Scientific.valid.csv") + " --input " +
                                     q(dir / "Industrial_and_Scientific.test.csv") +
                                     " --history-col history_item_id --items " +
                                     q(dir / "Industrial_and_Scientific.item.json") + " --cold-items");
  EXPECT_EQ(s["side_information"]["text"]["items"], 3686);
  EXPECT_EQ(s["items"], 3686);
}

TEST(SharedData, BeautyBaselinesWriteMetrics) {
  GENREC_REQUIRE_SHARED_DATA(data);
  TempDir tmp;
  ASSERT_EQ(run_cli("-q data import --format s3rec --input " + q(data / "amazon2014_s3rec/Beauty.txt") + " --out " +
                    q(tmp / "beauty")).exit_code, 0);
  std::map<std::string, double> r10;
  for (const char* model : {"pop", "markov"}) {
    fs::path cfg = fs::path(GENREC_SOURCE_DIR) / "configs" / "beauty" / (std::string(model) + ".toml");
    auto t = run_cli("-q train --config " + q(cfg) + " --data " + q(tmp / "beauty") + " --out " + q(tmp / model));
    ASSERT_EQ(t.exit_code, 0) << t.err;
    auto m = nlohmann::json::parse(genrec::test::read_text(tmp / model / "metrics.json"));
    for (const char* k : {"recall@10", "ndcg@10", "recall@5", "ndcg@5", "mrr"}) ASSERT_TRUE(m["metrics"].contains(k)) << k;
    EXPECT_EQ(m["users"], 22363);
    r10[model] = m["metrics"]["recall@10"];
  }
  EXPECT_GT(r10["markov"], r10["pop"]);
}
