// Helpers shared by the test files: temporary directories, fixture files, the built CLI.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "genrec/data/import.h"

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

}  // namespace genrec::test
