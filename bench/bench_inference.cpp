// Inference cost of recommending: item search (exact, flat, ivf, hnsw) and the sequence encoder,
// printed as one JSON document on stdout (progress on stderr).
//
//   bench_inference [--large-items N] [--queries N] [--skip-large] [--threads N] [--large-hnsw]
//                   [--large-hnsw-m M] [--large-ef-construction E] [--kinds exact,flat,ivf,hnsw]
//
// The large catalogue's hnsw is built only with --large-hnsw: building it (M = 16,
// efConstruction = 40) over 1M items took ~6 minutes on the 2-core VM, far beyond the rest of
// the run (~1.5 minutes).
// Catalogues: 12,101 items (Amazon Beauty's size) and N generated items (default 1,000,000),
// D = 64. Item vectors have cluster structure: 1,000 Gaussian centres (unit length), each item a
// centre plus Gaussian noise, L2-normalised (so inner product = cosine, as for models trained
// with l2_norm). Queries are made the same way from random centres.
// Per index kind: build seconds; top-10 latency of ONE query per call (p50 / p99, 1 OpenMP
// thread, wall-clock and thread CPU time); batched throughput (batches of 256 queries, on 1
// thread and on every core); recall@10 against exact.
// Encoder: one forward of a random-weight SASRec and HSTU (d_model 64, 2 blocks, 1 head) for a
// single user with a history of 50 over 12,101 items (query_embeddings), next to the search.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <dlfcn.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/index/item_index.h"
#include "genrec/models/recommender.h"

using namespace genrec;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kDim = 64;
constexpr int64_t kCentres = 1000;
constexpr float kNoise = 0.6f;  // per-dimension noise std relative to a unit centre's 1/sqrt(D) scale
constexpr int64_t kK = 10;
constexpr int64_t kBatch = 256;

double since_ms(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

nlohmann::json summary_ms(const std::vector<double>& ms) {
  return {{"p50", percentile(ms, 0.5)}, {"p99", percentile(ms, 0.99)}, {"calls", ms.size()}};
}

void normalise(float* x) {
  double n = 0;
  for (int64_t d = 0; d < kDim; ++d) n += static_cast<double>(x[d]) * x[d];
  const auto inv = static_cast<float>(1.0 / std::sqrt(std::max(n, 1e-30)));
  for (int64_t d = 0; d < kDim; ++d) x[d] *= inv;
}

// Unit-length centres, then rows = normalise(centre + noise).
std::vector<float> make_centres(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> c(static_cast<size_t>(kCentres * kDim));
  for (auto& x : c) x = g(rng);
  for (int64_t i = 0; i < kCentres; ++i) normalise(c.data() + i * kDim);
  return c;
}

std::vector<float> make_rows(const std::vector<float>& centres, int64_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, kNoise / std::sqrt(static_cast<float>(kDim)));
  std::uniform_int_distribution<int64_t> pick(0, kCentres - 1);
  std::vector<float> m(static_cast<size_t>(rows * kDim));
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = centres.data() + pick(rng) * kDim;
    float* x = m.data() + r * kDim;
    for (int64_t d = 0; d < kDim; ++d) x[d] = c[d] + g(rng);
    normalise(x);
  }
  return m;
}

double recall(const SearchResult& found, const SearchResult& reference) {
  double sum = 0;
  for (int64_t q = 0; q < reference.n_queries; ++q) {
    std::set<int32_t> got(found.ids.begin() + q * kK, found.ids.begin() + (q + 1) * kK);
    int hit = 0;
    for (int64_t r = 0; r < kK; ++r) hit += got.count(reference.id(q, r)) ? 1 : 0;
    sum += hit / static_cast<double>(kK);
  }
  return sum / static_cast<double>(reference.n_queries);
}

// All queries in batches of kBatch; returns the concatenated results and queries/second.
SearchResult search_batched(const ItemIndex& index, const std::vector<float>& queries, int64_t n_queries, double* qps) {
  SearchResult all;
  all.n_queries = n_queries;
  all.k = kK;
  index.search(queries.data(), std::min(kBatch, n_queries), kK);  // warm-up (first-touch of buffers)
  auto t0 = Clock::now();
  for (int64_t q0 = 0; q0 < n_queries; q0 += kBatch) {
    const int64_t n = std::min(kBatch, n_queries - q0);
    SearchResult part = index.search(queries.data() + q0 * kDim, n, kK);
    all.ids.insert(all.ids.end(), part.ids.begin(), part.ids.end());
    all.scores.insert(all.scores.end(), part.scores.begin(), part.scores.end());
  }
  *qps = static_cast<double>(n_queries) / (since_ms(t0) / 1e3);
  return all;
}

// CPU time of the calling thread: with one thread, what a call costs regardless of what else
// runs on the machine (wall-clock latency includes waiting for a core).
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Wall-clock and thread CPU milliseconds of single-query calls (1 OpenMP thread).
void single_query_ms(const ItemIndex& index, const std::vector<float>& queries, int64_t n, std::vector<double>* wall,
                     std::vector<double>* cpu) {
  for (int64_t q = 0; q < std::min<int64_t>(n, 5); ++q) index.search(queries.data() + q * kDim, 1, kK);  // warm-up
  for (int64_t q = 0; q < n; ++q) {
    const double c0 = thread_cpu_ms();
    auto t0 = Clock::now();
    index.search(queries.data() + q * kDim, 1, kK);
    wall->push_back(since_ms(t0));
    cpu->push_back(thread_cpu_ms() - c0);
  }
}

double load_average() {
  std::ifstream in("/proc/loadavg");
  double l = -1;
  in >> l;
  return l;
}

struct Catalogue {
  std::string name;
  int64_t n_items;
  int64_t latency_queries_exhaustive;  // single-query calls for exact / flat (a full scan each)
  std::vector<ItemIndexOptions> kinds;
};

nlohmann::json bench_catalogue(const Catalogue& cat, const std::vector<float>& centres, const std::vector<float>& queries,
                               int64_t n_queries, int hw_threads, nlohmann::json* e2e_search_ms) {
  std::cerr << "[bench] " << cat.name << ": generating " << cat.n_items << " items\n";
  auto t0 = Clock::now();
  const std::vector<float> items = make_rows(centres, cat.n_items, 7 + static_cast<uint64_t>(cat.n_items));
  nlohmann::json out = {{"n_items", cat.n_items}, {"generate_seconds", since_ms(t0) / 1e3}};
  SearchResult reference;
  nlohmann::json kinds = nlohmann::json::object();
  for (const ItemIndexOptions& o : cat.kinds) {
    std::cerr << "[bench] " << cat.name << ": " << o.kind << " build" << std::flush;
    set_index_threads(hw_threads);
    ItemIndex index(items.data(), cat.n_items, kDim, o);
    std::cerr << " " << index.build_seconds() << " s; batched search" << std::flush;
    // Batched throughput on 1 thread and on every core (OpenMP over queries).
    nlohmann::json qps_by_threads = nlohmann::json::object();
    SearchResult found;
    for (int threads : std::set<int>{1, hw_threads}) {
      set_index_threads(threads);
      double qps = 0;
      found = search_batched(index, queries, n_queries, &qps);
      qps_by_threads["threads_" + std::to_string(threads)] = qps;
    }
    set_index_threads(hw_threads);
    if (o.kind == "exact") reference = found;
    const bool exhaustive = o.kind == "exact" || o.kind == "flat";
    const int64_t n_single = exhaustive ? std::min(n_queries, cat.latency_queries_exhaustive) : n_queries;
    std::cerr << "; " << n_single << " single queries\n";
    set_index_threads(1);
    std::vector<double> ms, cpu_ms;
    single_query_ms(index, queries, n_single, &ms, &cpu_ms);
    set_index_threads(hw_threads);
    nlohmann::json k = {{"options", o.to_json(cat.n_items)},
                        {"build_seconds", index.build_seconds()},
                        {"latency_ms", summary_ms(ms)},
                        {"latency_cpu_ms", summary_ms(cpu_ms)},
                        {"batch_queries_per_second", qps_by_threads},
                        {"recall_at_10_vs_exact", recall(found, reference)}};
    kinds[o.kind] = k;
    if (e2e_search_ms) (*e2e_search_ms)[o.kind] = percentile(ms, 0.5);
  }
  out["kinds"] = kinds;
  return out;
}

nlohmann::json bench_encoder(const std::string& type, int32_t n_items, int64_t history, int64_t calls) {
  torch::manual_seed(1);
  nlohmann::json options = {{"d_model", 64}, {"max_len", 50}, {"n_blocks", 2}, {"n_heads", 1}, {"dropout", 0.5}};
  std::unique_ptr<Recommender> model = make_recommender(type, options, n_items);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int32_t> item(1, n_items);
  std::vector<int32_t> items(static_cast<size_t>(history));
  std::vector<int64_t> times(static_cast<size_t>(history));
  for (int64_t i = 0; i < history; ++i) {
    items[static_cast<size_t>(i)] = item(rng);
    times[static_cast<size_t>(i)] = 1'500'000'000 + 3600 * i;
  }
  const std::vector<History> one = {History{1, items.data(), times.data(), history}};
  for (int w = 0; w < 10; ++w) model->score(one);  // warm-up
  std::vector<double> encode_ms, score_ms;
  for (int64_t c = 0; c < calls; ++c) {
    auto t0 = Clock::now();
    torch::Tensor qv = model->query_embeddings(one);
    encode_ms.push_back(since_ms(t0));
    t0 = Clock::now();
    // The exact path of `genrec recommend` today: encoder, scores over the catalogue, top-10.
    torch::Tensor s = model->score(one).contiguous();
    auto top = std::get<1>(torch::topk(s.select(0, 0).slice(0, 1), kK));
    score_ms.push_back(since_ms(t0));
    (void)top;
  }
  return {{"options", options},
          {"query_embeddings_ms", summary_ms(encode_ms)},
          {"score_all_items_and_top10_ms", summary_ms(score_ms)}};
}

}  // namespace

int main(int argc, char** argv) {
  genrec::select_blas_kernels();  // before any tensor work (core/blas.h)
  int64_t large_items = 1'000'000, n_queries = 1000, large_hnsw_m = 16, large_ef_construction = 40;
  int hw_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool skip_large = false, large_hnsw = false;
  std::string kinds_arg = "exact,flat,ivf,hnsw";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--large-items" && i + 1 < argc) large_items = std::atoll(argv[++i]);
    else if (a == "--queries" && i + 1 < argc) n_queries = std::atoll(argv[++i]);
    else if (a == "--skip-large") skip_large = true;
    else if (a == "--large-hnsw") large_hnsw = true;
    else if (a == "--threads" && i + 1 < argc) hw_threads = std::max(1, std::atoi(argv[++i]));
    else if (a == "--large-hnsw-m" && i + 1 < argc) large_hnsw_m = std::atoll(argv[++i]);
    else if (a == "--large-ef-construction" && i + 1 < argc) large_ef_construction = std::atoll(argv[++i]);
    else if (a == "--kinds" && i + 1 < argc) kinds_arg = argv[++i];
    else {
      std::cerr << "usage: bench_inference [--large-items N] [--queries N] [--skip-large] [--threads N] [--large-hnsw]\n"
                   "                       [--large-hnsw-m M] [--large-ef-construction E] [--kinds exact,flat,ivf,hnsw]\n";
      return 2;
    }
  }
  auto wanted = [&](const std::string& kind) { return ("," + kinds_arg + ",").find("," + kind + ",") != std::string::npos; };
  const auto t_start = Clock::now();
  // OpenBLAS (behind FAISS's flat / k-means) and OpenMP would both start a thread per core;
  // keep BLAS single-threaded inside OpenMP-parallel FAISS code, as genrec's set_threads does.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(1);

  nlohmann::json doc;
  doc["bench"] = "inference";
  doc["machine"] = {{"hardware_threads", hw_threads}, {"load_average_1m_at_start", load_average()}, {"blas_core", genrec::openblas_core()}};
  doc["threads"] = {{"build", hw_threads},
                    {"batched_search", {1, hw_threads}},
                    {"single_query_latency", 1},
                    {"encoder", 1},
                    {"note", "OpenMP threads (FAISS and exact): single-query latency with 1 thread (wall-clock and "
                             "thread CPU time), batched search with 1 thread and with every core, index building "
                             "with every core; OpenBLAS single-threaded; torch intra-op 1 thread"}};
  doc["data"] = {{"dim", kDim},
                 {"centres", kCentres},
                 {"item_vectors", "unit-length Gaussian centre + N(0, (0.6/sqrt(D))^2) noise per dimension, "
                                  "then L2-normalised (inner product = cosine)"},
                 {"queries", n_queries},
                 {"query_vectors", "same generator from random centres, other seed"},
                 {"k", kK},
                 {"batch_size", kBatch}};

  const std::vector<float> centres = make_centres(1);
  const std::vector<float> queries = make_rows(centres, n_queries, 99);

  ItemIndexOptions exact, flat, ivf, hnsw;
  flat.kind = "flat";
  ivf.kind = "ivf";
  hnsw.kind = "hnsw";
  nlohmann::json search_p50_12k = nlohmann::json::object();
  nlohmann::json catalogues = nlohmann::json::object();
  // exact always runs first: it is the recall reference.
  auto select = [&](std::vector<ItemIndexOptions> all) {
    std::vector<ItemIndexOptions> out;
    for (auto& o : all)
      if (o.kind == "exact" || wanted(o.kind)) out.push_back(o);
    return out;
  };
  catalogues["beauty_12101"] = bench_catalogue({"beauty_12101", 12101, n_queries, select({exact, flat, ivf, hnsw})},
                                               centres, queries, n_queries, hw_threads, &search_p50_12k);
  if (!skip_large) {
    // Large catalogue: ivf with sqrt(N) lists (k-means over the default 4·sqrt(N) = 4,000
    // centroids costs minutes on 2 cores); hnsw with M = 16 (M = 32 takes ~6 minutes to build
    // here); exhaustive kinds time 100 single queries (each scans 256 MB).
    ItemIndexOptions ivf_large = ivf, hnsw_large = hnsw;
    ivf_large.nlist = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(large_items))));
    hnsw_large.hnsw_m = large_hnsw_m;
    hnsw_large.ef_construction = large_ef_construction;
    std::vector<ItemIndexOptions> large_kinds = select({exact, flat, ivf_large, hnsw_large});
    if (!large_hnsw)
      large_kinds.erase(std::remove_if(large_kinds.begin(), large_kinds.end(),
                                       [](const ItemIndexOptions& o) { return o.kind == "hnsw"; }),
                        large_kinds.end());
    const std::string name = "generated_" + std::to_string(large_items);
    catalogues[name] = bench_catalogue({"large", large_items, 100, large_kinds}, centres, queries, n_queries,
                                       hw_threads, nullptr);
    if (!large_hnsw && wanted("hnsw"))
      catalogues[name]["kinds"]["hnsw"] = {
          {"options", hnsw_large.to_json(large_items)},
          {"skipped", "building takes minutes (about 6 on the 2-core VM, M 16, efConstruction 40); "
                      "run with --large-hnsw to include it"}};
  }
  doc["catalogues"] = catalogues;

  // Encoder: one user, history 50, over Beauty's catalogue, random weights.
  std::cerr << "[bench] encoders\n";
  at::set_num_threads(1);
  nlohmann::json enc = {{"n_items", 12101}, {"history_length", 50}, {"torch_threads", 1},
                        {"note", "random weights via make_recommender; HSTU without time bias (no dataset timestamps seen)"}};
  nlohmann::json e2e = nlohmann::json::object();
  for (const char* type : {"sasrec", "hstu"}) {
    enc[type] = bench_encoder(type, 12101, 50, 200);
    const double encode = enc[type]["query_embeddings_ms"]["p50"].get<double>();
    nlohmann::json row = {{"encoder_p50_ms", encode},
                          {"model_score_and_top10_p50_ms", enc[type]["score_all_items_and_top10_ms"]["p50"]}};
    for (auto& [kind, ms] : search_p50_12k.items()) row["encoder_plus_" + kind + "_p50_ms"] = encode + ms.get<double>();
    e2e[type] = row;
  }
  doc["encoder"] = enc;
  doc["end_to_end_one_user_12101_items"] = e2e;
  doc["machine"]["load_average_1m_at_end"] = load_average();
  doc["total_seconds"] = since_ms(t_start) / 1e3;
  std::cout << doc.dump(2) << std::endl;
  return 0;
}
