// M-FALCON against one forward pass per candidate, for the HSTU generative ranker, printed as one
// JSON document on stdout (progress on stderr).
//
//   bench_rank [--threads N] [--quick]
//
// A random-weight GenRank (action layout, d_model 64, 2 blocks, 2 heads, time bias, eval mode)
// scores candidates for ONE user:
//   1. 1,000 candidates after a 200-event and a 1,000-event history: M-FALCON (micro-batches of
//      256) vs the reference that runs history + candidate through the encoder once per
//      candidate (GenRankImpl::forward_candidates_naive); seconds each, the speed-up, and the
//      largest difference between their scores. The reference runs on the first 100 candidates
//      (--reference-candidates) and its time is scaled to all of them: its cost is exactly one
//      identical forward pass per candidate, so it is linear in their number.
//   2. How M-FALCON's time grows with the candidate count (100 → 10,000, 200-event history) and
//      with the history length (50 → 2,000 events, 1,000 candidates).
// Each M-FALCON figure is the median of 3 runs after one warm-up; the reference runs once.
// --quick uses 100 candidates (and 20 for the reference).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/rank/genrank.h"

using namespace genrec;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kItems = 10000, kFeedback = 5, kTasks = 2;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Request {
  RankSeq history;
  RankCandidates candidates;
};

Request make_request(int64_t T, int64_t M) {
  Request r;
  r.history.items = torch::randint(1, kItems + 1, {1, T}, torch::kLong);
  r.history.feedback = torch::randint(1, kFeedback + 1, {1, T}, torch::kLong);
  r.history.times = torch::cumsum(torch::randint(1, 100000, {1, T}, torch::kLong), 1);
  r.history.lengths = torch::tensor({T});
  r.candidates.items = torch::randint(1, kItems + 1, {1, M}, torch::kLong);
  r.candidates.times = torch::full({1, M}, r.history.times[0][T - 1].item<int64_t>() + 3600, torch::kLong);
  r.candidates.counts = torch::tensor({M});
  return r;
}

GenRank make_net(int64_t max_len) {
  GenRank net(GenRankOptions(kItems, kFeedback, kTasks).max_len(max_len).micro_batch(256));
  net->eval();
  return net;
}

double median_seconds(const std::function<void()>& f, int runs = 3) {
  f();  // warm-up
  std::vector<double> s;
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    f();
    s.push_back(seconds_since(t0));
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  genrec::select_blas_kernels();  // before any tensor work (core/blas.h)
  int64_t threads = 1, reference_candidates = 100;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoll(argv[++i]);
    } else if (a == "--quick") {
      quick = true;
      reference_candidates = 20;
    } else if (a == "--reference-candidates" && i + 1 < argc) {
      reference_candidates = std::max<int64_t>(1, std::atoll(argv[++i]));
    } else {
      std::cerr << "usage: bench_rank [--threads N] [--quick] [--reference-candidates N]\n";
      return 2;
    }
  }
  at::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads)));
  torch::manual_seed(1);
  torch::NoGradGuard ng;
  nlohmann::json out = {{"threads", threads}, {"blas_core", genrec::openblas_core()}, {"model", "genrank action layout, d_model 64, 2 blocks, 2 heads, time bias"}};

  // 1. M-FALCON vs one pass per candidate.
  const int64_t M = quick ? 100 : 1000;
  nlohmann::json cmp = nlohmann::json::array();
  for (int64_t T : {200, 1000}) {
    GenRank net = make_net(T);
    Request r = make_request(T, M);
    std::cerr << "history " << T << ", " << M << " candidates: M-FALCON ...\n";
    torch::Tensor fast;
    const double fast_s = median_seconds([&] { fast = net->forward_candidates(r.history, r.candidates); });
    const int64_t R = std::min(M, reference_candidates);
    std::cerr << "  reference (one pass per candidate) on " << R << " candidates ...\n";
    RankCandidates some{r.candidates.items.narrow(1, 0, R), r.candidates.times.narrow(1, 0, R), torch::tensor({R})};
    auto t0 = Clock::now();
    torch::Tensor slow = net->forward_candidates_naive(r.history, some);
    const double slow_s = seconds_since(t0) * static_cast<double>(M) / static_cast<double>(R);
    cmp.push_back({{"history", T},
                   {"candidates", M},
                   {"mfalcon_seconds", fast_s},
                   {"per_candidate_seconds", slow_s},
                   {"per_candidate_measured_on", R},
                   {"speedup", slow_s / fast_s},
                   {"max_abs_diff", (fast.narrow(1, 0, R) - slow).abs().max().item<double>()}});
  }
  out["mfalcon_vs_per_candidate"] = cmp;

  // 2. Growth with candidates and with history length.
  nlohmann::json by_m = nlohmann::json::array(), by_t = nlohmann::json::array();
  {
    GenRank net = make_net(200);
    for (int64_t m : {100, 1000, 10000}) {
      Request r = make_request(200, m);
      std::cerr << "M-FALCON, history 200, " << m << " candidates\n";
      const double s = median_seconds([&] { net->forward_candidates(r.history, r.candidates); });
      by_m.push_back({{"history", 200}, {"candidates", m}, {"seconds", s}, {"us_per_candidate", 1e6 * s / m}});
    }
  }
  for (int64_t T : {50, 200, 1000, 2000}) {
    GenRank net = make_net(T);
    Request r = make_request(T, 1000);
    std::cerr << "M-FALCON, history " << T << ", 1000 candidates\n";
    const double s = median_seconds([&] { net->forward_candidates(r.history, r.candidates); });
    by_t.push_back({{"history", T}, {"candidates", 1000}, {"seconds", s}});
  }
  out["mfalcon_by_candidates"] = by_m;
  out["mfalcon_by_history"] = by_t;
  std::cout << out.dump(2) << std::endl;
  return 0;
}
