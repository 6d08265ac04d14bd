// End-to-end tests of the built `genrec` binary: exit codes, JSON outputs, and that bad input
// leaves nothing behind.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

using genrec::test::run_cli;
using genrec::test::TempDir;
using genrec::test::write_text;
namespace fs = std::filesystem;

namespace {
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json json_of(const genrec::test::CliResult& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not JSON: " << r.out << "\nstderr: " << r.err;
    return nullptr;
  }
}

// Runs an import that must fail: exit 2, message naming `expect` (e.g. "file:line"), and no
// output directory (not even a temporary one) left behind.
void expect_import_fails(const TempDir& tmp, const std::string& args, const std::string& expect) {
  auto r = run_cli("-q data import " + args + " --out " + q(tmp / "out"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(expect), std::string::npos) << "stderr: " << r.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  for (auto& e : fs::directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename().string().find("out.tmp"), std::string::npos) << "left " << e.path();
}
}  // namespace

TEST(Cli, VersionHelpAndUsageErrors) {
  auto v = run_cli("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("genrec "), std::string::npos);
  auto h = run_cli("data import --help");
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--format"), std::string::npos);
  EXPECT_EQ(run_cli("").exit_code, 2);
  EXPECT_EQ(run_cli("frobnicate").exit_code, 2);
  EXPECT_EQ(run_cli("data import --format nope --input x --out y").exit_code, 2);
}

TEST(Cli, GenerateTrainEvalRecommend) {
  TempDir tmp;
  auto g = run_cli("-q data generate --out " + q(tmp / "data") + " --users 300 --items 150 --seed 9");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  auto s = run_cli("data stats " + q(tmp / "data"));
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json stats = json_of(s);
  EXPECT_EQ(stats["users"], 300);
  EXPECT_EQ(stats["items"], 150);
  EXPECT_TRUE(stats["has"]["timestamps"].get<bool>());

  const fs::path config = fs::path(GENREC_SOURCE_DIR) / "configs" / "demo" / "markov.toml";
  auto t = run_cli("-q train --config " + q(config) + " --data " + q(tmp / "data") + " --out " + q(tmp / "run") +
                   " --set eval.ks=[1,10]");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  for (const char* f : {"config.toml", "metrics.json", "train_log.jsonl", "checkpoints/best.ckpt", "checkpoints/last.ckpt"})
    EXPECT_TRUE(fs::exists(tmp / "run" / f)) << f;
  nlohmann::json metrics = nlohmann::json::parse(genrec::test::read_text(tmp / "run" / "metrics.json"));
  EXPECT_EQ(metrics["split"], "test");
  EXPECT_NE(metrics["protocol"].get<std::string>().find("full ranking"), std::string::npos);
  for (const char* k : {"recall@1", "recall@10", "ndcg@10", "mrr", "coverage@10"}) EXPECT_TRUE(metrics["metrics"].contains(k)) << k;
  // The resolved config records the override and the defaults.
  std::string resolved = genrec::test::read_text(tmp / "run" / "config.toml");
  EXPECT_NE(resolved.find("batch_size"), std::string::npos);

  auto e = run_cli("-q eval --run " + q(tmp / "run") + " --split test");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  nlohmann::json ev = json_of(e);
  EXPECT_EQ(ev["metrics"], metrics["metrics"]);  // the saved checkpoint reproduces the metrics exactly
  auto e_last = run_cli("-q eval --run " + q(tmp / "run") + " --split test --checkpoint last");
  ASSERT_EQ(e_last.exit_code, 0) << e_last.err;
  EXPECT_EQ(json_of(e_last)["checkpoint"], "last");
  EXPECT_FALSE(ev.contains("checkpoint"));
  auto e_none = run_cli("-q eval --run " + q(tmp / "run") + " --checkpoint " + q(tmp / "none.ckpt"));
  EXPECT_EQ(e_none.exit_code, 2);
  EXPECT_NE(e_none.err.find("none.ckpt"), std::string::npos) << e_none.err;
  auto ev_valid = run_cli("-q eval --run " + q(tmp / "run") + " --split valid");
  EXPECT_EQ(json_of(ev_valid)["split"], "valid");

  auto r = run_cli("-q recommend --run " + q(tmp / "run") + " --user 5 --k 7 --exclude-seen");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json rec = json_of(r);
  ASSERT_EQ(rec["items"].size(), 7u);
  EXPECT_EQ(rec["items"][0]["rank"], 1);
  EXPECT_GE(rec["items"][0]["score"].get<double>(), rec["items"][6]["score"].get<double>());
  auto rh = run_cli("-q recommend --run " + q(tmp / "run") + " --history 3,4,5 --k 3");
  ASSERT_EQ(rh.exit_code, 0) << rh.err;
  EXPECT_EQ(json_of(rh)["history_length"], 3);

  auto unknown_item = run_cli("-q recommend --run " + q(tmp / "run") + " --history 3,nope");
  EXPECT_EQ(unknown_item.exit_code, 2);
  EXPECT_NE(unknown_item.err.find("nope"), std::string::npos);
  EXPECT_EQ(run_cli("-q recommend --run " + q(tmp / "run") + " --user no_such_user").exit_code, 2);
  EXPECT_EQ(run_cli("-q recommend --run " + q(tmp / "run")).exit_code, 2);
  // --resume takes the run's own config: not together with --config.
  EXPECT_EQ(run_cli("-q train --resume --config " + q(config) + " --out " + q(tmp / "run")).exit_code, 2);
  EXPECT_EQ(run_cli("-q train --resume --out " + q(tmp / "nonexistent_run")).exit_code, 2);
  // Refuses to overwrite a run; typos in config keys are errors.
  EXPECT_EQ(run_cli("-q train --config " + q(config) + " --data " + q(tmp / "data") + " --out " + q(tmp / "run")).exit_code, 2);
  auto typo = run_cli("-q train --config " + q(config) + " --data " + q(tmp / "data") + " --out " + q(tmp / "run2") +
                      " --set model.windw=3");
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("model.windw"), std::string::npos);
}

TEST(Cli, EveryShippedConfigTrains) {
  TempDir tmp;
  ASSERT_EQ(run_cli("-q data generate --out " + q(tmp / "data") + " --users 100 --items 60 --actions 4 --ratings").exit_code, 0);
  int n = 0;
  for (auto& entry : fs::recursive_directory_iterator(fs::path(GENREC_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".toml") continue;
    ++n;
    fs::path run = tmp / ("run" + std::to_string(n));
    // Neural models: one epoch is enough to show the config parses and trains.
    std::string text = genrec::test::read_text(entry.path());
    bool neural = false;
    for (const char* type : {"sasrec", "hstu", "genrank", "din"})
      neural = neural || text.find(std::string("type = \"") + type + "\"") != std::string::npos;
    std::string extra = neural ? " --set train.epochs=1 --set model.max_len=20" : "";
    if (text.find("\ncontext = ") != std::string::npos) extra += " --set train.context=5";  // < max_len
    if (text.find("type = \"tiger\"") != std::string::npos) {
      // TIGER needs semantic IDs of this dataset; a small model keeps it quick.
      auto sid = run_cli("-q sid build --data " + q(tmp / "data") + " --features attributes:8 --levels 2 --codebook 8 --out " +
                         q(tmp / ("sid" + std::to_string(n))));
      ASSERT_EQ(sid.exit_code, 0) << sid.err;
      extra = " --set model.sid=" + q(tmp / ("sid" + std::to_string(n)) / "codes.bin") +
              " --set model.d_model=16 --set model.n_heads=2 --set model.d_kv=8 --set model.d_ff=32"
              " --set model.enc_layers=1 --set model.dec_layers=1 --set model.user_buckets=10 --set train.epochs=1";
      if (text.find("\ncode_init = ") != std::string::npos)  // the warm start reads this build's quantiser
        extra += " --set model.code_init=" + q(tmp / ("sid" + std::to_string(n)) / "rq.safetensors");
    }
    if (text.find("\ninit_from = ") != std::string::npos) {  // a second stage: first a run to start from
      const fs::path first = tmp / ("first" + std::to_string(n));
      auto r1 = run_cli("-q train --config " + q(entry.path()) + " --data " + q(tmp / "data") + " --out " + q(first) +
                        extra + " --set " + q("train.init_from=\"\""));
      ASSERT_EQ(r1.exit_code, 0) << entry.path() << " (first stage): " << r1.err;
      extra += " --set train.init_from=" + q(first);
    }
    auto r = run_cli("-q train --config " + q(entry.path()) + " --data " + q(tmp / "data") + " --out " + q(run) + extra);
    EXPECT_EQ(r.exit_code, 0) << entry.path() << ": " << r.err;
  }
  EXPECT_GE(n, 10);
}

TEST(Cli, BadInputIsRejectedWithFileLineAndNothingWritten) {
  TempDir tmp;
  write_text(tmp / "cols.txt", "1 10\n2 20 30\n");
  expect_import_fails(tmp, "--format sasrec --input " + q(tmp / "cols.txt"), "cols.txt:2");
  write_text(tmp / "ids.txt", "1 10 11\n2 20 x1\n");
  expect_import_fails(tmp, "--format s3rec --input " + q(tmp / "ids.txt"), "ids.txt:2");
  write_text(tmp / "empty.txt", "");
  expect_import_fails(tmp, "--format s3rec --input " + q(tmp / "empty.txt"), "empty");
  expect_import_fails(tmp, "--format s3rec --input " + q(tmp / "missing.txt"), "missing.txt");
  write_text(tmp / "ok.txt", "1 10 11 12\n2 11 12 13\n");
  write_text(tmp / "text.json", "{\"10\": {\"title\": \"fine\"},\n \"11\": {\"title\": \"bad \xff\xfe\"}}\n");
  expect_import_fails(tmp, "--format s3rec --input " + q(tmp / "ok.txt") + " --items " + q(tmp / "text.json"), "text.json:2");
  write_text(tmp / "log.csv", "user_id,item_id,timestamp\nu1,i1,100\nu1,i2,not-a-time\n");
  expect_import_fails(tmp, "--format csv --input " + q(tmp / "log.csv"), "log.csv:3");

  // Cleaning that removes everything is an error, not an empty dataset.
  expect_import_fails(tmp, "--format s3rec --input " + q(tmp / "ok.txt") + " --k-core 5", "no interactions left");

  // --skip-bad-rows keeps the good rows and reports what it skipped.
  auto r = run_cli("-q data import --format s3rec --input " + q(tmp / "ids.txt") + " --skip-bad-rows --out " + q(tmp / "skipped"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = json_of(r);
  EXPECT_EQ(j["users"], 1);
  EXPECT_EQ(j["import"]["rows_skipped_bad"], 1);
  EXPECT_NE(r.err.find("skipped 1 bad rows"), std::string::npos) << r.err;
}

TEST(Cli, ImportIsDeterministic) {
  TempDir tmp;
  write_text(tmp / "log.csv",
             "user_id,item_id,timestamp,rating\n"
             "u2,b,5,4\nu1,a,3,5\nu1,c,3,1\nu2,a,1,2\n\"u 3\",\"x,y\",2,3\nu1,b,1,4\n");
  for (const char* name : {"a", "b"})
    ASSERT_EQ(run_cli("-q data import --format csv --input " + q(tmp / "log.csv") + " --out " + q(tmp / name)).exit_code, 0);
  for (const char* f : {"manifest.json", "users.vocab", "items.vocab", "events.bin"})
    EXPECT_EQ(genrec::test::read_text(tmp / "a" / f), genrec::test::read_text(tmp / "b" / f)) << f;
  // String ids sort lexicographically; u1's events sort by time with the tie (t=3) in input order.
  EXPECT_EQ(genrec::test::read_text(tmp / "a" / "users.vocab"), "u 3\nu1\nu2\n");
  EXPECT_EQ(genrec::test::read_text(tmp / "a" / "items.vocab"), "a\nb\nc\nx,y\n");
}

TEST(Cli, CorruptedDatasetIsRejected) {
  TempDir tmp;
  ASSERT_EQ(run_cli("-q data generate --out " + q(tmp / "data") + " --users 50 --items 40").exit_code, 0);
  std::string bytes = genrec::test::read_text(tmp / "data" / "events.bin");
  bytes[bytes.size() - 1] ^= 1;
  write_text(tmp / "data" / "events.bin", bytes);
  auto r = run_cli("data stats " + q(tmp / "data"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("events.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("checksum"), std::string::npos) << r.err;
}

TEST(Cli, DemoRuns) {
  TempDir tmp;
  auto r = run_cli("-q demo --out " + q(tmp / "demo") + " --users 300 --items 120");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = json_of(r);
  EXPECT_GT(j["test_metrics"]["markov"]["recall@10"].get<double>(), j["test_metrics"]["pop"]["recall@10"].get<double>());
  EXPECT_GT(j["test_metrics"]["sasrec"]["recall@10"].get<double>(), j["test_metrics"]["pop"]["recall@10"].get<double>());
  EXPECT_EQ(j["recommend_user_1"]["items"].size(), 5u);
  // Running it again replaces its own folder.
  EXPECT_EQ(run_cli("-q demo --out " + q(tmp / "demo") + " --users 300 --items 120").exit_code, 0);
  // ... but never a folder it did not make.
  write_text(tmp / "mine" / "keep.txt", "x");
  EXPECT_EQ(run_cli("-q demo --out " + q(tmp / "mine")).exit_code, 2);
  EXPECT_TRUE(fs::exists(tmp / "mine" / "keep.txt"));
}
