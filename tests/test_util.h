// Helpers shared by the test files: temporary directories, fixture files, the built CLI.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/import.h"
#include "genrec/train/runner.h"
#include "test_expect.h"

namespace genrec::test {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("genrec_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline fs::path write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  return path;
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A run's train_log.jsonl without its timings: per line the epoch, the training loss, the
// validation metrics and whether it was the best so far (what a resumed run must repeat).
inline std::vector<nlohmann::json> train_log_without_timings(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(run / "train_log.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back({{"epoch", j["epoch"]}, {"loss", j["loss"]}, {"valid", j["valid"]}, {"best", j["best"]}});
  }
  return out;
}

// ../shared/data next to the repository, or $GENREC_SHARED_DATA; empty when absent.
inline fs::path shared_data_dir() {
  if (const char* env = std::getenv("GENREC_SHARED_DATA")) return env;
  fs::path p = fs::path(GENREC_SOURCE_DIR) / ".." / "shared" / "data";
  std::error_code ec;
  return fs::is_directory(p, ec) ? p : fs::path();
}

#define GENREC_REQUIRE_SHARED_DATA(var)                                                       \
  const ::std::filesystem::path var = ::genrec::test::shared_data_dir();                      \
  if (var.empty()) GTEST_SKIP() << "../shared/data not found (set GENREC_SHARED_DATA); skipping"

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the built genrec binary with `args` (already shell-quoted where needed).
inline CliResult run_cli(const std::string& args) {
  TempDir tmp;
  fs::path out = tmp / "stdout", err = tmp / "stderr";
  std::string cmd = std::string("'") + GENREC_CLI_PATH + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

// A dataset from per-user sequences of numbered items (oldest first; users "1", "2", ...).
inline Dataset dataset_from_sequences(const std::vector<std::vector<int>>& seqs) {
  RawLog log;
  for (size_t u = 0; u < seqs.size(); ++u)
    for (int it : seqs[u]) {
      log.row_user.push_back(log.users.add(std::to_string(u + 1)));
      log.row_item.push_back(log.items.add(std::to_string(it)));
    }
  nlohmann::json report;
  return build_dataset(std::move(log), SideInfo{}, CleaningOptions{}, IdKind::Numeric, report);
}

// A run trained with data.train_on_valid for `epochs` epochs, validated every epoch: each log
// line is a new best without validation metrics, metrics.json names the last epoch and holds no
// validation metrics, the run evaluates on test to `test` again (its best weights are its last),
// and evaluating its validation split is refused.
inline void expect_trained_on_valid(const fs::path& run, int64_t epochs, const EvalResult& test) {
  std::istringstream log(read_text(run / "train_log.jsonl"));
  std::string line;
  int64_t n = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("epoch"), ++n) << line;
    EXPECT_TRUE(j.at("best").get<bool>()) << line;
    EXPECT_FALSE(j.contains("valid")) << line;
  }
  EXPECT_EQ(n, epochs);
  const auto metrics = nlohmann::json::parse(read_text(run / "metrics.json"));
  EXPECT_EQ(metrics.at("best_epoch"), epochs);
  EXPECT_TRUE(metrics.at("valid").empty()) << metrics.dump();
  EXPECT_NE(metrics.at("protocol").get<std::string>().find("validation events trained on"), std::string::npos);
  EXPECT_EQ(eval_run(run, SplitPart::Test).metrics, test.metrics);
  EXPECT_INVALID(eval_run(run, SplitPart::Valid), run.string(), "data.train_on_valid");
}

}  // namespace genrec::test
