// Training throughput of the sequential recommenders (sasrec, hstu), jagged vs padded batches,
// printed as one JSON document on stdout (progress on stderr).
//
//   bench_train [--threads N] [--quick] [--shapes beauty,ml-1m] [--batches N] [--repeats R] [--trace]
//
// --threads: torch intra-op threads (default 2; OpenBLAS kept single-threaded, as
// genrec::set_threads does). --batches: measured batches per fit (default 50 for beauty, 16 for
// ml-1m; --quick: 8 and 3, 1 warm-up batch instead of 3). --repeats: fit each mode R times,
// alternating jagged and padded, and report the best. --trace: fit()'s progress on stderr.
// On cores shared with other work, run with OMP_WAIT_POLICY=passive or --threads 1: spinning
// OpenMP threads made 2-thread training ~10x slower on the 2-core VM beside two training jobs.
//
// Data: generate_dataset() at two real-data shapes (lengths: min_len + a geometric tail, which
// gives the long tail of real logs), leave-one-out split:
//   beauty: 22,363 users, 12,101 items, mean length ~8.9 (min 5), model max_len 50;
//   ml-1m:  6,040 users, 3,706 items, mean length ~165 (min 20, ~30% of users longer than
//           200), model max_len 200.
// Models: the settings of configs/<shape>/<model>.toml (d_model, 2 blocks, 1 head, dropout,
// batch 128), full-softmax loss; extra rows: beauty with sampled softmax (512 uniform
// negatives) and ml-1m with the configs' own loss (sampled softmax, 128 negatives, temperature
// 0.05, L2-normalised).
// Method: everything goes through the public API. For each (shape, model, loss, jagged|padded)
// one SequentialRecommender (epochs 1) is fitted on a random subset of users sized to give the
// wanted number of batches (a Split whose train_end is 0 for every other user; fit() skips
// users with fewer than two training events); the same subset serves jagged and padded. A
// throwaway model of the same settings is fitted first on other users (warm-up batches). fit()
// ends the epoch with a validation evaluation (here on 32 users only); the numbers reported are
// those of fit()'s validation log line, measured over the training part alone: epoch_seconds,
// seqs_per_second, tokens_per_second (valid target positions per second).
// Also reported: the batches' fill (valid positions / positions computed, as fit() pads: jagged
// = length-sorted batches padded to their longest row, padded = every row to max_len), process
// CPU seconds per fit (CPU / wall below the thread count means waiting for a core) and the
// process's peak RSS (getrusage) after each fit, cumulative over the run.
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/data/generator.h"
#include "genrec/data/split.h"
#include "genrec/models/sequential.h"
#include "genrec/train/runner.h"

using namespace genrec;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kBatchSize = 128;   // train.batch_size of every config
constexpr int64_t kValidUsers = 32;   // fit()'s end-of-epoch evaluation, kept negligible

double since_s(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double load_average() {
  std::ifstream in("/proc/loadavg");
  double l = -1;
  in >> l;
  return l;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown";
}

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Peak resident set of the process so far, MiB (getrusage).
double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

struct ModelSpec {
  std::string encoder;
  double dropout;
  double lr;
};

struct LossSpec {
  std::string name;  // row label
  std::string loss;
  int64_t negatives = 128;
  double temperature = 1.0;
  bool l2_norm = false;
};

struct ShapeSpec {
  std::string name;
  GeneratorOptions gen;
  int64_t max_len;       // model.max_len
  int64_t d_model;       // model.d_model of the shape's configs
  int64_t batches;       // measured batches per fit
  std::vector<ModelSpec> models;
  std::vector<LossSpec> losses;  // first = the main table's (full softmax)
};

// Training positions of a user as fit() sees them: min(train_end - 1, max_len).
int64_t positions(const Split& split, int32_t user, int64_t max_len) {
  return std::min<int64_t>(split.train_end[static_cast<size_t>(user)] - 1, max_len);
}

// Valid positions / positions computed over fit()'s batches of `users` (padding included).
double batch_fill(const Split& split, const std::vector<int32_t>& users, int64_t max_len, bool jagged) {
  std::vector<int64_t> lens;
  for (int32_t u : users) lens.push_back(positions(split, u, max_len));
  if (jagged) std::stable_sort(lens.begin(), lens.end());
  double valid = 0, computed = 0;
  for (size_t lo = 0; lo < lens.size(); lo += static_cast<size_t>(kBatchSize)) {
    const size_t hi = std::min(lens.size(), lo + static_cast<size_t>(kBatchSize));
    const int64_t width = jagged ? *std::max_element(lens.begin() + static_cast<long>(lo), lens.begin() + static_cast<long>(hi))
                                 : max_len;
    for (size_t i = lo; i < hi; ++i) valid += static_cast<double>(lens[i]);
    computed += static_cast<double>(width) * static_cast<double>(hi - lo);
  }
  return computed > 0 ? valid / computed : 0;
}

// The split with training restricted to `users` (everyone else gets train_end 0, which fit()
// skips).
Split restrict_training(const Split& base, const std::vector<int32_t>& users) {
  Split s = base;
  std::fill(s.train_end.begin(), s.train_end.end(), 0);
  for (int32_t u : users) s.train_end[static_cast<size_t>(u)] = base.train_end[static_cast<size_t>(u)];
  return s;
}

nlohmann::json length_summary(const Dataset& ds, const Split& split, int64_t max_len) {
  std::vector<int64_t> lens;
  int64_t truncated = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    lens.push_back(ds.user_offsets[static_cast<size_t>(u) + 1] - ds.user_offsets[static_cast<size_t>(u)]);
    if (split.train_end[static_cast<size_t>(u)] - 1 > max_len) ++truncated;
  }
  std::sort(lens.begin(), lens.end());
  auto pct = [&](double p) { return lens[std::min(lens.size() - 1, static_cast<size_t>(p * static_cast<double>(lens.size())))]; };
  const double mean = static_cast<double>(std::accumulate(lens.begin(), lens.end(), int64_t{0})) / static_cast<double>(lens.size());
  return {{"users", ds.n_users()},
          {"items", ds.n_items()},
          {"events", ds.n_events()},
          {"length", {{"mean", mean}, {"min", lens.front()}, {"p50", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)},
                      {"max", lens.back()}}},
          {"users_with_more_than_max_len_training_targets", truncated}};
}

struct RunResult {
  nlohmann::json json;
  double seqs_per_second = 0, tokens_per_second = 0;
};

// Fits a warm-up model on warm_split, then the measured one on measure_split; `trace` prints
// fit()'s progress events of the measured fit to stderr.
RunResult run_one(const Dataset& ds, const Split& warm_split, const Split& measure_split, const SequentialOptions& o,
                  bool trace) {
  EvalOptions eval;
  eval.ks = {10};
  eval.max_users = kValidUsers;
  {  // warm-up: a throwaway model of the same settings on other users
    SequentialRecommender warm(ds.n_items(), o);
    warm.fit(TrainContext{ds, warm_split, nullptr, &eval, nullptr});
  }
  SequentialRecommender model(ds.n_items(), o);
  nlohmann::json line;
  ProgressCallback progress;
  if (trace)
    progress = [](const ProgressEvent& e) {
      std::cerr << "  [trace] " << e.stage << " " << e.done << "/" << e.total << " " << e.elapsed_s << " s\n";
      return true;
    };
  TrainContext ctx{ds, measure_split, progress, &eval,
                   [&line](const Recommender&, const nlohmann::json& l, bool) { line = l; }};
  const double cpu0 = process_cpu_seconds();
  const auto t0 = Clock::now();
  model.fit(ctx);
  const double fit_wall = since_s(t0), fit_cpu = process_cpu_seconds() - cpu0;
  if (line.is_null()) throw std::runtime_error("fit() reported no validation line");
  RunResult r;
  r.seqs_per_second = line.at("seqs_per_second").get<double>();
  r.tokens_per_second = line.at("tokens_per_second").get<double>();
  r.json = {{"batches", line.at("step")},
            {"train_seconds", line.at("epoch_seconds")},
            {"seqs_per_second", r.seqs_per_second},
            {"tokens_per_second", r.tokens_per_second},
            {"train_loss", line.at("loss")},
            {"fit_wall_seconds", fit_wall},
            {"fit_cpu_seconds", fit_cpu},
            {"valid_seconds", line.at("valid_seconds")},
            {"process_peak_rss_mib", peak_rss_mib()}};
  return r;
}

int run(int argc, char** argv) {
  int threads = 2;
  bool quick = false, trace = false;
  int64_t batches_override = 0, repeats = 1;
  std::string shapes_arg = "beauty,ml-1m";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else if (a == "--quick") quick = true;
    else if (a == "--trace") trace = true;
    else if (a == "--repeats" && i + 1 < argc) repeats = std::max<int64_t>(1, std::atoll(argv[++i]));
    else if (a == "--shapes" && i + 1 < argc) shapes_arg = argv[++i];
    else if (a == "--batches" && i + 1 < argc) batches_override = std::max<int64_t>(1, std::atoll(argv[++i]));
    else {
      std::cerr << "usage: bench_train [--threads N] [--quick] [--shapes beauty,ml-1m] [--batches N] [--repeats R]\n"
                   "                   [--trace]\n";
      return 2;
    }
  }
  auto wanted = [&](const std::string& s) { return ("," + shapes_arg + ",").find("," + s + ",") != std::string::npos; };
  if (!wanted("beauty") && !wanted("ml-1m")) {
    std::cerr << "bench_train: --shapes takes beauty and/or ml-1m, got '" << shapes_arg << "'\n";
    return 2;
  }
  configure_allocator_for_tensors();
  set_threads(threads);  // torch intra-op threads; OpenBLAS single-threaded
  set_log_sink([](LogLevel level, const std::string& msg) {
    if (level >= LogLevel::Warn) std::cerr << "[genrec] " << msg << "\n";
  });
  const auto t_start = Clock::now();
  const int64_t warmup_batches = quick ? 1 : 3;

  std::vector<ShapeSpec> shapes;
  if (wanted("beauty")) {
    ShapeSpec s;
    s.name = "beauty";
    s.gen.n_users = 22363;
    s.gen.n_items = 12101;
    s.gen.n_clusters = 100;
    s.gen.min_len = 5;
    s.gen.mean_len = 8.9;
    s.gen.max_len = 200;  // Beauty's longest user has ~200 events
    s.gen.seed = 1;
    s.max_len = 50;
    s.d_model = 64;
    s.batches = quick ? 8 : 50;
    s.models = {{"sasrec", 0.5, 0.003}, {"hstu", 0.5, 0.002}};  // configs/beauty/*.toml
    s.losses = {{"softmax", "softmax"}, {"sampled_softmax_512", "sampled_softmax", 512}};
    shapes.push_back(s);
  }
  if (wanted("ml-1m")) {
    ShapeSpec s;
    s.name = "ml-1m";
    s.gen.n_users = 6040;
    s.gen.n_items = 3706;
    s.gen.n_clusters = 18;  // ML-1M's genres
    s.gen.min_len = 20;
    s.gen.mean_len = 165;
    s.gen.max_len = 2314;  // ML-1M's most active user
    s.gen.seed = 2;
    s.max_len = 200;
    s.d_model = 50;
    s.batches = quick ? 3 : 16;
    s.models = {{"sasrec", 0.2, 0.001}, {"hstu", 0.2, 0.001}};  // configs/ml-1m/*.toml
    s.losses = {{"softmax", "softmax"}, {"config_sampled_softmax_128", "sampled_softmax", 128, 0.05, true}};
    shapes.push_back(s);
  }

  const bool openblas = dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr;
  nlohmann::json doc;
  doc["bench"] = "train";
  doc["machine"] = {{"cpu", cpu_model()},
                    {"blas_core", genrec::openblas_core()},
                    {"hardware_threads", std::thread::hardware_concurrency()},
                    {"load_average_1m_at_start", load_average()}};
  doc["threads"] = {{"torch_intra_op", at::get_num_threads()},
                    {"torch_inter_op", at::get_num_interop_threads()},
                    {"openblas_single_threaded", openblas},
                    {"set_by", "genrec::set_threads(--threads)"}};
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  doc["threads"]["OMP_WAIT_POLICY"] = wait_policy ? wait_policy : "";
  // With other work on the cores, OpenMP threads that spin at barriers while a sibling waits for
  // a core made 2-thread training ~10x slower on the 2-core VM (two training jobs running);
  // OMP_WAIT_POLICY=passive (read at start-up, so set it in the environment) or --threads 1
  // avoids that.
  nlohmann::json warnings = nlohmann::json::array();
  const double load0 = doc["machine"]["load_average_1m_at_start"].get<double>();
  if (load0 >= 0.5)
    warnings.push_back("machine busy at start (1-minute load average " + std::to_string(load0) +
                       "): absolute numbers are depressed" +
                       (threads > 1 && !wait_policy ? std::string("; with --threads > 1 set OMP_WAIT_POLICY=passive "
                                                                  "or use --threads 1 (spinning OpenMP threads "
                                                                  "collapse throughput on shared cores)")
                                                    : std::string()));
  for (const auto& w : warnings) std::cerr << "[bench_train] warning: " << w.get<std::string>() << "\n";
  doc["warnings"] = warnings;
  doc["torch_version"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                         std::to_string(TORCH_VERSION_PATCH);
  doc["method"] = {
      {"batch_size", kBatchSize},
      {"warmup_batches", warmup_batches},
      {"quick", quick},
      {"repeats", repeats},
      {"measure", "SequentialRecommender::fit, epochs 1, on a random user subset of batches x batch_size users "
                  "(same subset for jagged and padded); numbers from fit()'s validation log line, training part "
                  "only (the end-of-epoch validation on " + std::to_string(kValidUsers) + " users is excluded)"},
      {"tokens", "valid next-item target positions"},
      {"fill", "valid positions / positions computed (padding included) over fit()'s batches"},
      {"ratio", "jagged / padded throughput on the same users (seqs/s and tokens/s ratios are equal)"},
      {"table", "best of the repeats per mode"},
      {"process_peak_rss_mib", "getrusage peak of the whole process up to the end of that fit (cumulative: "
                               "freed tensor memory is kept by the allocator)"}};

  nlohmann::json shapes_out = nlohmann::json::object();
  nlohmann::json table = nlohmann::json::array();
  for (const ShapeSpec& s : shapes) {
    std::cerr << "[bench_train] " << s.name << ": generating " << s.gen.n_users << " users, " << s.gen.n_items
              << " items\n";
    const Dataset ds = generate_dataset(s.gen);
    const Split split = make_split(ds, SplitOptions{});
    const int64_t batches = batches_override > 0 ? batches_override : s.batches;

    // Users in random order: the first warm-up batches' worth warm up, the next measure.
    std::vector<int32_t> users;
    for (int32_t u = 1; u <= ds.n_users(); ++u)
      if (split.train_end[static_cast<size_t>(u)] >= 2) users.push_back(u);
    std::mt19937_64 rng(11);
    std::shuffle(users.begin(), users.end(), rng);
    const auto n_warm = static_cast<size_t>(std::min<int64_t>(warmup_batches * kBatchSize, static_cast<int64_t>(users.size()) / 2));
    const auto n_measure = std::min(users.size() - n_warm, static_cast<size_t>(batches * kBatchSize));
    const std::vector<int32_t> warm_users(users.begin(), users.begin() + static_cast<long>(n_warm));
    const std::vector<int32_t> measure_users(users.begin() + static_cast<long>(n_warm),
                                             users.begin() + static_cast<long>(n_warm + n_measure));
    const Split warm_split = restrict_training(split, warm_users);
    const Split measure_split = restrict_training(split, measure_users);
    int64_t measure_positions = 0;
    for (int32_t u : measure_users) measure_positions += positions(split, u, s.max_len);

    nlohmann::json shape_out;
    shape_out["generator"] = ds.provenance["generator"];
    shape_out["data"] = length_summary(ds, split, s.max_len);
    shape_out["max_len"] = s.max_len;
    shape_out["measured"] = {{"users", n_measure},
                             {"batches", (static_cast<int64_t>(n_measure) + kBatchSize - 1) / kBatchSize},
                             {"valid_positions", measure_positions},
                             {"mean_positions_per_user", static_cast<double>(measure_positions) / static_cast<double>(n_measure)},
                             {"fill_jagged", batch_fill(split, measure_users, s.max_len, true)},
                             {"fill_padded", batch_fill(split, measure_users, s.max_len, false)}};
    nlohmann::json runs = nlohmann::json::array();
    for (const LossSpec& loss : s.losses) {
      for (const ModelSpec& m : s.models) {
        SequentialOptions o;
        o.encoder = m.encoder;
        o.d_model = s.d_model;
        o.max_len = s.max_len;
        o.n_blocks = 2;
        o.n_heads = 1;
        o.dropout = m.dropout;
        o.loss = loss.loss;
        o.negatives = loss.negatives;
        o.temperature = loss.temperature;
        o.l2_norm = loss.l2_norm;
        o.epochs = 1;
        o.batch_size = kBatchSize;
        o.lr = m.lr;
        o.eval_every = 1000;
        o.patience = 1000;
        o.seed = 42;
        double seqs[2] = {0, 0}, tokens[2] = {0, 0};  // best of the repeats: [jagged, padded]
        nlohmann::json samples = {{"jagged", nlohmann::json::array()}, {"padded", nlohmann::json::array()}};
        nlohmann::json row = {{"shape", s.name}, {"model", m.encoder}, {"loss", loss.name}};
        // Jagged and padded alternate, so that slow phases of other load hit both.
        for (int64_t fit_idx = 0; fit_idx < 2 * repeats; ++fit_idx) {
          const bool jagged = fit_idx % 2 == 0;
          const int64_t r_i = fit_idx / 2;
          o.jagged = jagged;
          const char* mode = jagged ? "jagged" : "padded";
          std::cerr << "[bench_train] " << s.name << " " << m.encoder << " " << loss.name << " " << mode << ": "
                    << std::flush;
          RunResult r = run_one(ds, warm_split, measure_split, o, trace);
          std::cerr << r.json["batches"] << " batches, " << static_cast<int64_t>(r.seqs_per_second) << " seqs/s, "
                    << static_cast<int64_t>(r.tokens_per_second) << " tokens/s (train "
                    << r.json["train_seconds"].get<double>() << " s, fit " << r.json["fit_wall_seconds"].get<double>()
                    << " s)\n";
          nlohmann::json run = {{"model", m.encoder}, {"loss", loss.name}, {"mode", mode}, {"repeat", r_i}};
          if (r_i == 0) run["options"] = o.to_json();
          run.update(r.json);
          runs.push_back(run);
          samples[mode].push_back(r.seqs_per_second);
          const int k = jagged ? 0 : 1;
          if (r.seqs_per_second > seqs[k]) {
            seqs[k] = r.seqs_per_second;
            tokens[k] = r.tokens_per_second;
          }
        }
        row["jagged_seqs_per_second"] = seqs[0];
        row["padded_seqs_per_second"] = seqs[1];
        row["jagged_tokens_per_second"] = tokens[0];
        row["padded_tokens_per_second"] = tokens[1];
        row["ratio_jagged_over_padded"] = seqs[0] / seqs[1];
        if (repeats > 1) row["seqs_per_second_samples"] = samples;
        table.push_back(row);
      }
    }
    shape_out["runs"] = runs;
    shapes_out[s.name] = shape_out;
  }
  doc["shapes"] = shapes_out;
  doc["table"] = table;
  doc["peak_rss_mib_process"] = peak_rss_mib();
  doc["machine"]["load_average_1m_at_end"] = load_average();
  doc["total_seconds"] = since_s(t_start);
  std::cout << doc.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  genrec::select_blas_kernels();  // before any tensor work (core/blas.h)
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_train: " << e.what() << "\n";
    return 1;
  }
}
