// Import and load time of a dataset, printed as JSON.
//
//   bench_dataset [S3REC_FILE] [--repeats N]
//
// Default input: ../shared/data/amazon2014_s3rec/Sports_and_Outdoors.txt (relative to the
// source tree); when absent, a generated file of the same shape (35,598 users, 18,357 items,
// ~296k interactions). Measures, side by side in one run:
//   import:    genrec's reader + build (text -> Dataset), and save (Dataset -> directory)
//   load:      load_dataset() of the directory, with and without checksum verification
//   reference: a straightforward text parse (ifstream + getline + istringstream into
//              vector<vector<int>>), i.e. what re-reading the text each run would cost
// and reports ratios (reference / load). Times are medians over the repeats.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/data/dataset.h"
#include "genrec/data/import.h"

namespace fs = std::filesystem;
using namespace genrec;

namespace {

double median_seconds(int repeats, const std::function<void()>& fn) {
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

fs::path make_sports_shaped(const fs::path& dir) {
  fs::path p = dir / "sports_shaped.txt";
  std::ofstream out(p);
  std::mt19937_64 rng(1);
  std::geometric_distribution<int> extra(1.0 / 4.3);
  std::uniform_int_distribution<int> item(1, 18357);
  for (int u = 1; u <= 35598; ++u) {
    out << u;
    int len = 5 + extra(rng);
    for (int k = 0; k < len; ++k) out << ' ' << item(rng);
    out << '\n';
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path input;
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--repeats" && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else input = a;
  }
  fs::path work = fs::temp_directory_path() / ("genrec_bench_" + std::to_string(std::random_device{}()));
  fs::create_directories(work);
  std::string source = "file";
  if (input.empty()) {
    fs::path shared = fs::path(GENREC_SOURCE_DIR) / ".." / "shared" / "data" / "amazon2014_s3rec" / "Sports_and_Outdoors.txt";
    if (fs::exists(shared)) {
      input = shared;
      source = "amazon2014_s3rec/Sports_and_Outdoors.txt";
    } else {
      input = make_sports_shaped(work);
      source = "generated (Sports shape)";
    }
  }

  ImportOptions opt;
  opt.reader.format = "s3rec";
  opt.reader.ids = IdKind::Numeric;
  opt.inputs = {input};
  Dataset ds;
  double t_import = median_seconds(repeats, [&] { ds = import_dataset(opt); });
  fs::path dir = work / "ds";
  double t_save = median_seconds(repeats, [&] { save_dataset(ds, dir, true); });
  Dataset loaded;
  double t_load = median_seconds(repeats * 2, [&] { loaded = load_dataset(dir); });
  double t_load_nocheck = median_seconds(repeats * 2, [&] { loaded = load_dataset(dir, LoadOptions{true, false}); });

  size_t ref_events = 0;
  double t_reference = median_seconds(repeats, [&] {
    std::ifstream in(input);
    std::string line;
    std::vector<std::vector<int>> seqs;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      int user, item;
      ls >> user;
      std::vector<int> s;
      while (ls >> item) s.push_back(item);
      seqs.push_back(std::move(s));
    }
    ref_events = 0;
    for (auto& s : seqs) ref_events += s.size();
  });

  uintmax_t dir_bytes = 0;
  for (auto& e : fs::directory_iterator(dir)) dir_bytes += fs::file_size(e.path());
  nlohmann::json out = {
      {"benchmark", "dataset_import_load"},
      {"input", source},
      {"input_bytes", fs::file_size(input)},
      {"users", loaded.n_users()},
      {"items", loaded.n_items()},
      {"interactions", loaded.n_events()},
      {"reference_events", ref_events},
      {"dataset_dir_bytes", dir_bytes},
      {"repeats", repeats},
      {"seconds",
       {{"import_text_to_dataset", t_import},
        {"save_dataset_dir", t_save},
        {"load_dataset_dir", t_load},
        {"load_dataset_dir_no_checksum", t_load_nocheck},
        {"reference_text_parse", t_reference}}},
      {"ratios",
       {{"reference_parse_over_load", t_reference / t_load},
        {"import_over_load", t_import / t_load},
        {"import_over_reference_parse", t_import / t_reference}}}};
  std::cout << out.dump(2) << std::endl;
  fs::remove_all(work);
  return 0;
}
