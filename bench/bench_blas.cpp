// OpenBLAS kernel choice (core/blas.h): the float32 matrix products of genrec's training steps
// timed on each OpenBLAS core type this CPU supports, side by side in one process, printed as
// one JSON document on stdout.
//
//   bench_blas [--quick]
//
// Shapes (one thread): the TIGER items recipe on Beauty (batch 256 x 11 encoder positions,
// d_model 128, d_ff 512: feed-forward up / down, fused q/k/v), SASRec's full-softmax logits on
// Beauty (1,024 target positions x 12,102 items, d 64), the per-head attention products of the
// TIGER encoder (1,024 batched 11 x 32 x 11), and one forward + backward pass of the TIGER
// feed-forward block (Linear 128→512, ReLU, Linear 512→128, with the weight gradients). Each
// figure is the median of 7 timings of a loop of at least 50 ms. "Prescott" is OpenBLAS's
// generic SSE3 fallback, what it picks for a CPU model it does not know; "selected" is the core
// select_blas_kernels() leaves in use; the ratios are Prescott time / each core's time.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/train/runner.h"

using Clock = std::chrono::steady_clock;

namespace {

double median_seconds(const std::function<void()>& fn, int reps) {
  fn();  // warm-up
  int64_t loops = 1;
  for (;;) {  // loops per timing: enough for 50 ms
    auto t0 = Clock::now();
    for (int64_t i = 0; i < loops; ++i) fn();
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s >= 0.05 || loops >= (1 << 20)) break;
    loops *= 2;
  }
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    for (int64_t i = 0; i < loops; ++i) fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / loops);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Case {
  std::string name;
  double flops;  // per call
  std::function<void()> run;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string note = genrec::select_blas_kernels();  // as the CLI does
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else {
      std::cerr << "usage: bench_blas [--quick]\n";
      return 2;
    }
  }
  const int reps = quick ? 3 : 7;
  genrec::set_threads(1);
  torch::NoGradGuard no_grad_outside_the_training_case;
  nlohmann::json out;
  const std::string selected = genrec::openblas_core();
  out["selected"] = selected;
  out["selection_note"] = note;
  out["threads"] = 1;
  if (selected.empty()) {
    out["error"] = "the BLAS is not a DYNAMIC_ARCH OpenBLAS: there are no kernel sets to compare";
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  const genrec::CpuVectorFeatures cpu = genrec::detect_cpu_vector_features();
  std::vector<std::string> cores = {"Prescott"};
  if (cpu.avx2_fma) cores.push_back("Haswell");
  if (cpu.avx512) cores.push_back("SkylakeX");
  out["cpu"] = {{"avx2_fma", cpu.avx2_fma}, {"avx512", cpu.avx512}};

  torch::manual_seed(0);
  auto mm_case = [](const std::string& name, int64_t m, int64_t k, int64_t n) {
    auto a = torch::randn({m, k}), b = torch::randn({k, n});
    return Case{name, 2.0 * m * k * n, [a, b] { torch::mm(a, b); }};
  };
  std::vector<Case> cases = {
      mm_case("tiger_ff_up [2816x128]x[128x512]", 2816, 128, 512),
      mm_case("tiger_ff_down [2816x512]x[512x128]", 2816, 512, 128),
      mm_case("tiger_qkv [2816x128]x[128x384]", 2816, 128, 384),
      mm_case("sasrec_logits [1024x64]x[64x12102]", 1024, 64, 12102),
  };
  {
    auto q = torch::randn({1024, 11, 32}), k = torch::randn({1024, 32, 11});
    cases.push_back({"attention_bmm 1024 x [11x32]x[32x11]", 2.0 * 1024 * 11 * 32 * 11, [q, k] { torch::bmm(q, k); }});
  }
  {
    auto x = torch::randn({2816, 128});
    auto w1 = (torch::randn({512, 128}) * 0.05).requires_grad_(), w2 = (torch::randn({128, 512}) * 0.05).requires_grad_();
    // forward 2 products, backward 4 (input and weight gradients of both layers; the first
    // layer's input gradient is not needed: x does not require it)
    const double f = 2.0 * 2816 * 128 * 512;
    cases.push_back({"tiger_ff_block forward+backward", 5 * f, [x, w1, w2] {
                       torch::AutoGradMode grad(true);
                       auto y = torch::relu(torch::mm(x, w1.t()));
                       auto z = torch::mm(y, w2.t());
                       z.sum().backward();
                       w1.mutable_grad().reset();
                       w2.mutable_grad().reset();
                     }});
  }

  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::vector<double>> secs(cases.size());
  for (const auto& core : cores) {
    const std::string in_use = genrec::force_openblas_core(core);
    std::cerr << "core " << core << " (in use: " << in_use << ")\n";
    for (size_t c = 0; c < cases.size(); ++c) secs[c].push_back(median_seconds(cases[c].run, reps));
  }
  genrec::force_openblas_core(selected);  // leave the process as select_blas_kernels() did
  for (size_t c = 0; c < cases.size(); ++c) {
    nlohmann::json row = {{"case", cases[c].name}};
    for (size_t i = 0; i < cores.size(); ++i) {
      row["seconds"][cores[i]] = secs[c][i];
      row["gflops"][cores[i]] = cases[c].flops / secs[c][i] / 1e9;
      row["speedup_vs_Prescott"][cores[i]] = secs[c][0] / secs[c][i];
    }
    rows.push_back(row);
  }
  out["cores"] = cores;
  out["cases"] = rows;
  std::cout << out.dump(2) << std::endl;
  return 0;
}
