// Serving KV cache: the cost of one new event for a user with a long history, incremental
// (SequentialRecommender::query_embedding_incremental, only the new positions encoded over the
// cached keys/values) against a full recompute of the history (query_embeddings), printed as one
// JSON document on stdout.
//
//   bench_serve [--threads N] [--reps R]
//
// Model: HSTU as configs/beauty/hstu.toml (d_model 64, 2 blocks, 1 head) but max_len 1024 so
// that a 1,000-event history fits one window, trained for one epoch on a small generated dataset
// (so the weights are not degenerate and the time bias is active), eval mode, 12,102 items.
// For history lengths 200 and 1,000 and query_time own | next: the cache holds the first n - 1
// events; then event n arrives and the query vector is computed (own: 1 new position; next: the
// previous last position is finalised and the new one encoded, 2 positions). Each figure is the
// median of --reps runs (default 30) after one warm-up, each on a fresh copy of the n - 1 cache;
// "max_abs_diff" compares the two query vectors. The allocator is configured as in the CLI
// (configure_allocator_for_tensors): without it, page faults on fresh multi-megabyte
// intermediates make the 1,000-event full recompute ~10x slower and erratic on this VM.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/core/io.h"
#include "genrec/data/generator.h"
#include "genrec/data/split.h"
#include "genrec/models/sequential.h"

using namespace genrec;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  genrec::select_blas_kernels();  // before any tensor work (core/blas.h)
  int threads = 1, reps = 30;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::cerr << "usage: bench_serve [--threads N] [--reps R]\n";
      return 2;
    }
  }
  configure_allocator_for_tensors();  // as the genrec CLI (core/io.h)
  at::set_num_threads(threads);
  GeneratorOptions g;
  g.n_users = 200;
  g.n_items = 12101;
  g.n_clusters = 20;
  Dataset ds = generate_dataset(g);
  Split split = make_split(ds, SplitOptions{});

  nlohmann::json out;
  out["threads"] = threads;
  out["blas_core"] = genrec::openblas_core();
  out["reps"] = reps;
  out["model"] = {{"encoder", "hstu"}, {"d_model", 64}, {"n_blocks", 2}, {"n_heads", 1}, {"max_len", 1024},
                  {"n_items", ds.n_items()}};
  nlohmann::json rows = nlohmann::json::array();
  for (const char* query_time : {"own", "next"}) {
    SequentialOptions o;
    o.encoder = "hstu";
    o.d_model = 64;
    o.max_len = 1024;
    o.n_blocks = 2;
    o.n_heads = 1;
    o.query_time = query_time;
    o.epochs = 1;
    o.batch_size = 64;
    SequentialRecommender model(ds.n_items(), o);
    std::cerr << "bench_serve: training one epoch (query_time " << query_time << ")\n";
    model.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
    torch::NoGradGuard ng;
    for (int64_t n : {200, 1000}) {
      std::vector<int32_t> items;
      std::vector<int64_t> times;
      int64_t t = 1600000000;
      for (int64_t i = 0; i < n; ++i) {
        items.push_back(static_cast<int32_t>(1 + (i * 7919) % ds.n_items()));
        times.push_back(t += 600 + (i * 37) % 86400);
      }
      History before{0, items.data(), times.data(), n - 1, times[static_cast<size_t>(n - 2)] + 60};
      History after{0, items.data(), times.data(), n, times[static_cast<size_t>(n - 1)] + 60};
      IncrementalCache base;
      model.query_embedding_incremental(before, base);
      std::vector<double> inc_s, full_s;
      torch::Tensor q_inc, q_full;
      int64_t computed = 0;
      for (int r = 0; r <= reps; ++r) {
        IncrementalCache c = base;  // extend() never writes into cached tensors: a shallow copy is a snapshot
        auto t0 = Clock::now();
        q_inc = model.query_embedding_incremental(after, c, &computed);
        const double a = seconds_since(t0);
        t0 = Clock::now();
        q_full = model.query_embeddings({after})[0];
        const double b = seconds_since(t0);
        if (r > 0) {
          inc_s.push_back(a);
          full_s.push_back(b);
        }
      }
      const double mi = median(inc_s), mf = median(full_s);
      rows.push_back({{"query_time", query_time},
                      {"history", n},
                      {"positions_encoded_incremental", computed},
                      {"incremental_ms", mi * 1e3},
                      {"full_recompute_ms", mf * 1e3},
                      {"speedup", mf / mi},
                      {"max_abs_diff", (q_inc - q_full).abs().max().item<double>()}});
      std::cerr << "bench_serve: " << query_time << " history " << n << ": incremental " << mi * 1e3 << " ms, full "
                << mf * 1e3 << " ms\n";
    }
  }
  out["one_new_event"] = rows;
  std::cout << out.dump(2) << std::endl;
  return 0;
}
