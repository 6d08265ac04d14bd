// TIGER inference cost: trie-constrained beam search (beam 20, top-10 kept by the caller) per
// user and batched, printed as one JSON document on stdout.
//
//   bench_tiger [--threads N] [--users U] [--quick]
//
// Model: the TIGER default of configs/beauty/tiger.toml (d_model 128, 6 heads × 64, d_ff 1024,
// 4 + 4 layers, 20 history items, 2000 user buckets), random weights (the cost does not depend
// on them), over 12,101 items with random 3 × 256 semantic IDs plus a disambiguation level
// (Beauty's shape). Histories: 20 random items (the longest the encoder reads). Reported:
// latency per user with one user per call (median and p99 of U calls), and users per second
// with batches of 16, 64 and 256 users; beside it, the exhaustive reference (every item's
// log-probability, what beam search avoids) for one user.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/core/io.h"
#include "genrec/models/tiger.h"

using namespace genrec;
using Clock = std::chrono::steady_clock;

namespace {
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}
}  // namespace

int main(int argc, char** argv) {
  genrec::select_blas_kernels();  // before any tensor work (core/blas.h)
  int threads = 1, users = 100;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--users" && i + 1 < argc) users = std::max(1, std::atoi(argv[++i]));
    else if (a == "--quick") quick = true;
    else {
      std::cerr << "usage: bench_tiger [--threads N] [--users U] [--quick]\n";
      return 2;
    }
  }
  if (quick) users = std::min(users, 10);
  configure_allocator_for_tensors();
  at::set_num_threads(threads);
  const int32_t n_items = 12101;
  SemanticIds sid;
  sid.n_items = n_items;
  sid.levels = 3;
  sid.codebook_sizes = {256, 256, 256};
  sid.codes.assign(static_cast<size_t>(n_items + 1) * 3, 0);
  std::mt19937_64 rng(7);
  for (int32_t i = 1; i <= n_items; ++i)
    for (int l = 0; l < 3; ++l) sid.codes[static_cast<size_t>(i) * 3 + static_cast<size_t>(l)] = static_cast<int32_t>(rng() % 256);
  const double collisions = resolve_collisions(sid, true);
  TigerOptions o;
  o.user_buckets = 2000;
  TigerRecommender model(n_items, o, sid);

  std::vector<std::vector<int32_t>> items(static_cast<size_t>(std::max(users, 256)));
  for (auto& h : items)
    for (int t = 0; t < 20; ++t) h.push_back(static_cast<int32_t>(1 + rng() % n_items));
  auto hist = [&](size_t b) { return History{static_cast<int32_t>(b + 1), items[b].data(), nullptr, 20}; };

  nlohmann::json out;
  out["threads"] = threads;
  out["blas_core"] = genrec::openblas_core();
  out["model"] = {{"d_model", o.d_model}, {"n_heads", o.n_heads}, {"d_kv", o.d_kv}, {"d_ff", o.d_ff},
                  {"enc_layers", o.enc_layers}, {"dec_layers", o.dec_layers}, {"history_items", 20},
                  {"n_items", n_items}, {"levels", sid.levels}, {"codebook_sizes", sid.codebook_sizes},
                  {"collision_rate_before_disambiguation", collisions}};
  model.beam_search({hist(0)}, 20);  // warm-up
  std::vector<double> lat;
  for (int u = 0; u < users; ++u) {
    auto t0 = Clock::now();
    std::vector<BeamResult> r = model.beam_search({hist(static_cast<size_t>(u))}, 20);
    lat.push_back(seconds_since(t0) * 1e3);
  }
  out["single_user"] = {{"beam", 20}, {"calls", users}, {"p50_ms", percentile(lat, 0.5)}, {"p99_ms", percentile(lat, 0.99)}};
  nlohmann::json batched = nlohmann::json::array();
  for (int B : {16, 64, 256}) {
    if (quick && B > 16) break;
    std::vector<History> hs;
    for (int b = 0; b < B; ++b) hs.push_back(hist(static_cast<size_t>(b)));
    auto t0 = Clock::now();
    model.beam_search(hs, 20);
    const double s = seconds_since(t0);
    batched.push_back({{"batch", B}, {"seconds", s}, {"users_per_second", B / s}});
    std::cerr << "bench_tiger: batch " << B << ": " << B / s << " users/s\n";
  }
  out["batched"] = batched;
  {
    auto t0 = Clock::now();
    model.exhaustive_log_probs({hist(0)});
    out["exhaustive_one_user_ms"] = seconds_since(t0) * 1e3;
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
