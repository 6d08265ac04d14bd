// ItemIndex (index/item_index.h): the exact kind against a brute-force reference (ties,
// exclusions, short rows), FAISS kinds against exact, option validation, and recommend with an
// index / index-eval on tiny trained runs (through the built `genrec` binary and in-process).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/data/dataset.h"
#include "genrec/data/generator.h"
#include "genrec/index/item_index.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::run_cli;
using genrec::test::TempDir;
namespace fs = std::filesystem;

namespace {

// [rows, dim] values drawn uniformly from {-2, ..., 2}: every dot product is a small integer,
// exact in float whatever the summation order, and ties are common.
std::vector<float> integer_matrix(int64_t rows, int64_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> v(-2, 2);
  std::vector<float> m(static_cast<size_t>(rows * dim));
  for (auto& x : m) x = static_cast<float>(v(rng));
  return m;
}

std::vector<float> gaussian_matrix(int64_t rows, int64_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> v(0.0f, 1.0f);
  std::vector<float> m(static_cast<size_t>(rows * dim));
  for (auto& x : m) x = v(rng);
  return m;
}

// Reference: score every item with a plain loop, sort by score descending then id ascending,
// skip excluded ids, keep k; pad with id 0.
std::vector<int32_t> brute_force(const std::vector<float>& items, int64_t n_items, int64_t dim, const float* query,
                                 int64_t k, const std::vector<int32_t>& exclude) {
  std::vector<std::pair<float, int32_t>> all;
  std::set<int32_t> ex(exclude.begin(), exclude.end());
  for (int64_t r = 0; r < n_items; ++r) {
    const auto id = static_cast<int32_t>(r + 1);
    if (ex.count(id)) continue;
    float s = 0;
    for (int64_t d = 0; d < dim; ++d) s += query[d] * items[static_cast<size_t>(r * dim + d)];
    all.push_back({s, id});
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::vector<int32_t> out(static_cast<size_t>(k), 0);
  for (size_t r = 0; r < std::min(all.size(), out.size()); ++r) out[r] = all[r].second;
  return out;
}

std::vector<int32_t> row_ids(const SearchResult& r, int64_t q) {
  return std::vector<int32_t>(r.ids.begin() + q * r.k, r.ids.begin() + (q + 1) * r.k);
}

ItemIndexOptions kind(const std::string& name) {
  ItemIndexOptions o;
  o.kind = name;
  return o;
}

double recall_vs(const SearchResult& found, const SearchResult& reference) {
  double sum = 0;
  for (int64_t q = 0; q < reference.n_queries; ++q) {
    std::vector<int32_t> a = row_ids(found, q), b = row_ids(reference, q);
    std::set<int32_t> sa(a.begin(), a.end());
    int hit = 0;
    for (int32_t id : b) hit += sa.count(id) ? 1 : 0;
    sum += static_cast<double>(hit) / static_cast<double>(b.size());
  }
  return sum / static_cast<double>(reference.n_queries);
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

TEST(ItemIndex, ExactHandComputedTiesGoToLowerId) {
  // items 1..4 in 2-D; query (1, 1) scores 1, 2, 2, -1.
  const std::vector<float> items = {1, 0, 1, 1, 2, 0, -1, 0};
  ItemIndex index(items.data(), 4, 2, kind("exact"));
  const std::vector<float> query = {1, 1};
  SearchResult r = index.search(query.data(), 1, 3);
  EXPECT_EQ(row_ids(r, 0), (std::vector<int32_t>{2, 3, 1}));
  EXPECT_FLOAT_EQ(r.score(0, 0), 2.0f);
  EXPECT_FLOAT_EQ(r.score(0, 2), 1.0f);
  // Excluding item 2 (and ids outside 1..4, which are ignored); k larger than what is left pads with 0.
  SearchResult e = index.search(query.data(), 1, 5, {{2, 0, 99, 2}});
  EXPECT_EQ(row_ids(e, 0), (std::vector<int32_t>{3, 1, 4, 0, 0}));
  EXPECT_EQ(e.score(0, 4), -std::numeric_limits<float>::infinity());
}

TEST(ItemIndex, ExactEqualsBruteForceWithTiesAndExclusions) {
  const int64_t n = 1003, dim = 7, n_queries = 37;  // n not a multiple of the 8-item blocks
  std::vector<float> items = integer_matrix(n, dim, 1), queries = integer_matrix(n_queries, dim, 2);
  ItemIndex index(items.data(), n, dim, kind("exact"));
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int32_t> any_id(-3, static_cast<int32_t>(n) + 3);
  std::vector<std::vector<int32_t>> exclude(static_cast<size_t>(n_queries));
  for (auto& ex : exclude)
    for (int j = 0; j < 40; ++j) ex.push_back(any_id(rng));
  for (int64_t k : {1, 10, 25}) {
    SearchResult plain = index.search(queries.data(), n_queries, k);
    SearchResult excl = index.search(queries.data(), n_queries, k, exclude);
    ASSERT_EQ(plain.ids.size(), static_cast<size_t>(n_queries * k));
    for (int64_t qi = 0; qi < n_queries; ++qi) {
      const float* query = queries.data() + qi * dim;
      EXPECT_EQ(row_ids(plain, qi), brute_force(items, n, dim, query, k, {})) << "k " << k << " query " << qi;
      EXPECT_EQ(row_ids(excl, qi), brute_force(items, n, dim, query, k, exclude[static_cast<size_t>(qi)]))
          << "k " << k << " query " << qi;
    }
  }
  // Single-query calls agree with the batched call.
  SearchResult batched = index.search(queries.data(), n_queries, 10);
  for (int64_t qi = 0; qi < n_queries; ++qi)
    EXPECT_EQ(row_ids(index.search(queries.data() + qi * dim, 1, 10), 0), row_ids(batched, qi));
}

TEST(ItemIndex, FlatEqualsExact) {
  const int64_t n = 2000, dim = 32, n_queries = 50;
  std::vector<float> items = gaussian_matrix(n, dim, 11), queries = gaussian_matrix(n_queries, dim, 12);
  ItemIndex exact(items.data(), n, dim, kind("exact"));
  ItemIndex flat(items.data(), n, dim, kind("flat"));
  // Batched (FAISS uses BLAS) and one query at a time (FAISS's own loop).
  SearchResult a = exact.search(queries.data(), n_queries, 10);
  SearchResult b = flat.search(queries.data(), n_queries, 10);
  EXPECT_EQ(a.ids, b.ids);
  for (size_t i = 0; i < a.scores.size(); ++i) EXPECT_NEAR(a.scores[i], b.scores[i], 1e-5 * std::max(1.0f, std::fabs(a.scores[i])));
  for (int64_t qi = 0; qi < 5; ++qi)
    EXPECT_EQ(row_ids(flat.search(queries.data() + qi * dim, 1, 10), 0), row_ids(a, qi));
}

TEST(ItemIndex, IvfProbingEveryListEqualsExact) {
  const int64_t n = 2000, dim = 32, n_queries = 50;
  std::vector<float> items = gaussian_matrix(n, dim, 21), queries = gaussian_matrix(n_queries, dim, 22);
  ItemIndexOptions o = kind("ivf");
  o.nlist = 20;
  o.nprobe = 20;
  ItemIndex ivf(items.data(), n, dim, o);
  ItemIndex exact(items.data(), n, dim, kind("exact"));
  SearchResult a = exact.search(queries.data(), n_queries, 10);
  SearchResult b = ivf.search(queries.data(), n_queries, 10);
  EXPECT_EQ(a.ids, b.ids);
  // nprobe above nlist is capped at nlist; the default nlist follows the catalogue size.
  o.nprobe = 500;
  EXPECT_EQ(ItemIndex(items.data(), n, dim, o).search(queries.data(), n_queries, 10).ids, a.ids);
  EXPECT_EQ(kind("ivf").resolved_nlist(2000), 51);      // min(4·sqrt(2000) = 179, 2000 / 39)
  EXPECT_EQ(kind("ivf").resolved_nlist(1000000), 4000);  // 4·sqrt(N)
  EXPECT_EQ(kind("ivf").resolved_nlist(10), 1);
  // Probing few lists is approximate but still finds most neighbours.
  o.nprobe = 2;
  EXPECT_GT(recall_vs(ItemIndex(items.data(), n, dim, o).search(queries.data(), n_queries, 10), a), 0.3);
}

TEST(ItemIndex, HnswRecallAtTen) {
  const int64_t n = 2000, dim = 32, n_queries = 200;
  std::vector<float> items = gaussian_matrix(n, dim, 31), queries = gaussian_matrix(n_queries, dim, 32);
  ItemIndex exact(items.data(), n, dim, kind("exact"));
  ItemIndex hnsw(items.data(), n, dim, kind("hnsw"));
  const double recall = recall_vs(hnsw.search(queries.data(), n_queries, 10), exact.search(queries.data(), n_queries, 10));
  EXPECT_GE(recall, 0.95);
}

TEST(ItemIndex, ExcludeSeenWithApproximateKinds) {
  const int64_t n = 1500, dim = 16, n_queries = 30, k = 10;
  std::vector<float> items = gaussian_matrix(n, dim, 41), queries = gaussian_matrix(n_queries, dim, 42);
  ItemIndex exact(items.data(), n, dim, kind("exact"));
  // Exclude each query's true top 7 and some random items.
  SearchResult top = exact.search(queries.data(), n_queries, 7);
  std::mt19937_64 rng(43);
  std::uniform_int_distribution<int32_t> id(1, static_cast<int32_t>(n));
  std::vector<std::vector<int32_t>> exclude(static_cast<size_t>(n_queries));
  for (int64_t qi = 0; qi < n_queries; ++qi) {
    exclude[static_cast<size_t>(qi)] = row_ids(top, qi);
    for (int j = 0; j < 20; ++j) exclude[static_cast<size_t>(qi)].push_back(id(rng));
  }
  SearchResult want = exact.search(queries.data(), n_queries, k, exclude);
  ItemIndexOptions ivf = kind("ivf");
  ivf.nlist = 10;
  ivf.nprobe = 10;
  for (const ItemIndexOptions& o : {kind("flat"), ivf, kind("hnsw")}) {
    ItemIndex index(items.data(), n, dim, o);
    SearchResult got = index.search(queries.data(), n_queries, k, exclude);
    for (int64_t qi = 0; qi < n_queries; ++qi) {
      const auto& ex = exclude[static_cast<size_t>(qi)];
      for (int32_t found : row_ids(got, qi)) {
        EXPECT_NE(found, 0) << o.kind << ": fewer than k results";
        EXPECT_EQ(std::count(ex.begin(), ex.end(), found), 0) << o.kind << " returned excluded item " << found;
      }
    }
    if (o.kind != "hnsw") EXPECT_EQ(got.ids, want.ids) << o.kind;
    else EXPECT_GE(recall_vs(got, want), 0.9);
  }
}

TEST(ItemIndex, BadOptionsNameTheKey) {
  auto expect_invalid = [](const ItemIndexOptions& o, const std::string& text) { EXPECT_INVALID(o.validate(), text); };
  ItemIndexOptions o;
  o.kind = "annoy";
  expect_invalid(o, "index.kind must be one of exact, flat, ivf, hnsw, got 'annoy'");
  o = ItemIndexOptions{};
  o.nlist = 0;
  expect_invalid(o, "index.nlist must be >= 1, got 0");
  o = ItemIndexOptions{};
  o.nprobe = 0;
  expect_invalid(o, "index.nprobe");
  o = ItemIndexOptions{};
  o.hnsw_m = 1;
  expect_invalid(o, "index.hnsw_m must be >= 2, got 1");
  o = ItemIndexOptions{};
  o.ef_construction = -4;
  expect_invalid(o, "index.ef_construction");
  o = ItemIndexOptions{};
  o.ef_search = 0;
  expect_invalid(o, "index.ef_search");

  const std::vector<float> items = gaussian_matrix(20, 4, 5);
  ItemIndexOptions big = kind("ivf");
  big.nlist = 21;
  EXPECT_INVALID(ItemIndex(items.data(), 20, 4, big), "index.nlist must be <= the number of items (20), got 21");
  ItemIndexOptions bad_kind = kind("lsh");
  EXPECT_THROW(ItemIndex(items.data(), 20, 4, bad_kind), InvalidInput);
  EXPECT_THROW(ItemIndex(items.data(), 0, 4, kind("exact")), InvalidInput);
  ItemIndex ok(items.data(), 20, 4, kind("flat"));
  EXPECT_THROW(ok.search(items.data(), 1, 0), InvalidInput);
  EXPECT_THROW(ok.search(items.data(), 2, 3, {{1}}), InvalidInput);  // one list for two queries
  std::vector<float> nan_items = items;
  nan_items[9] = std::nanf("");
  EXPECT_THROW(ItemIndex(nan_items.data(), 20, 4, kind("hnsw")), InvalidInput);
}

// A tiny dataset with a one-epoch SASRec run and a pop run, made once for the tests below.
class IndexRuns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    GeneratorOptions g;
    g.n_users = 200;
    g.n_items = 120;
    g.seed = 5;
    save_dataset(generate_dataset(g), *tmp_ / "data");
    TrainRequest sasrec;
    sasrec.config_text =
        "[model]\ntype = \"sasrec\"\nd_model = 16\nmax_len = 20\nn_blocks = 1\nn_heads = 1\n"
        "[train]\nepochs = 1\nbatch_size = 64\nthreads = 1\n[eval]\nks = [10]\n";
    sasrec.data = *tmp_ / "data";
    sasrec.out = *tmp_ / "sasrec";
    train_run(sasrec);
    TrainRequest hb = sasrec;  // with the learned history bias: scores are not pure inner products
    hb.config_text =
        "[model]\ntype = \"hstu\"\nd_model = 16\nmax_len = 20\nn_blocks = 1\nn_heads = 1\nhistory_bias = true\n"
        "[train]\nepochs = 2\nbatch_size = 64\nthreads = 1\nlr = 0.01\n[eval]\nks = [10]\n";
    hb.out = *tmp_ / "hstu-history";
    train_run(hb);
    TrainRequest pop = sasrec;
    pop.config_text = "[model]\ntype = \"pop\"\n[train]\nthreads = 1\n";
    pop.out = *tmp_ / "pop";
    train_run(pop);
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  static fs::path run(const std::string& name) { return *tmp_ / name; }

  static TempDir* tmp_;
};
TempDir* IndexRuns::tmp_ = nullptr;

// The built binary: --index flat (FAISS inner products of query and item vectors) returns the
// items of exact (the model's own scores); pop has no item vectors and refuses hnsw.
TEST_F(IndexRuns, CliFlatMatchesExactAndPopRefusesHnsw) {
  const std::string args = "-q recommend --run " + q(run("sasrec")) + " --user 12 --k 10 --exclude-seen";
  auto e = run_cli(args);
  auto f = run_cli(args + " --index flat");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  ASSERT_EQ(f.exit_code, 0) << f.err;
  nlohmann::json je = nlohmann::json::parse(e.out), jf = nlohmann::json::parse(f.out);
  EXPECT_EQ(je["index"], "exact");
  EXPECT_EQ(jf["index"], "flat");
  ASSERT_EQ(je["items"].size(), 10u);
  ASSERT_EQ(jf["items"].size(), 10u);
  for (size_t r = 0; r < 10; ++r) {
    EXPECT_EQ(je["items"][r]["item"], jf["items"][r]["item"]) << "rank " << r;
    EXPECT_NEAR(je["items"][r]["score"].get<double>(), jf["items"][r]["score"].get<double>(), 1e-4) << "rank " << r;
  }
  auto p = run_cli("-q recommend --run " + q(run("pop")) + " --user 7 --index hnsw");
  EXPECT_EQ(p.exit_code, 2);
  EXPECT_NE(p.err.find("index 'hnsw' searches item vectors, and model 'pop' has none"), std::string::npos) << p.err;
}

// The same flows in-process (no process start per call).
TEST_F(IndexRuns, RecommendWithEachIndexAndOverrides) {
  for (const char* user : {"7", "12"}) {
    for (bool exclude_seen : {false, true}) {
      RecommendRequest req;
      req.user = user;
      req.exclude_seen = exclude_seen;
      nlohmann::json exact = recommend_run(run("sasrec"), req);
      for (const std::string kind_name : {"flat", "ivf"}) {
        RecommendRequest ann = req;
        ann.index = kind_name;
        ann.overrides = {"index.nlist=3", "index.nprobe=3"};  // ivf probing every list is exhaustive
        nlohmann::json got = recommend_run(run("sasrec"), ann);
        EXPECT_EQ(got["index"], kind_name);
        ASSERT_EQ(got["items"].size(), exact["items"].size());
        for (size_t r = 0; r < exact["items"].size(); ++r)
          EXPECT_EQ(got["items"][r]["item"], exact["items"][r]["item"]) << kind_name << " user " << user << " rank " << r;
      }
    }
  }
  // A model with history offsets: the index path re-ranks with them and equals exact search.
  for (const char* user : {"3", "7", "12", "40"}) {
    RecommendRequest req;
    req.user = user;
    req.k = 20;
    nlohmann::json exact = recommend_run(run("hstu-history"), req);
    req.index = "flat";
    nlohmann::json got = recommend_run(run("hstu-history"), req);
    ASSERT_EQ(got["items"].size(), exact["items"].size());
    for (size_t r = 0; r < exact["items"].size(); ++r) {
      EXPECT_EQ(got["items"][r]["item"], exact["items"][r]["item"]) << "user " << user << " rank " << r;
      EXPECT_NEAR(got["items"][r]["score"].get<double>(), exact["items"][r]["score"].get<double>(), 1e-4);
    }
  }
  // --set index.kind chooses the index when --index is absent.
  RecommendRequest hist;
  hist.history = std::vector<std::string>{"3", "4", "5"};
  hist.k = 5;
  hist.overrides = {"index.kind=hnsw"};
  nlohmann::json h = recommend_run(run("sasrec"), hist);
  EXPECT_EQ(h["index"], "hnsw");
  EXPECT_EQ(h["items"].size(), 5u);

  auto expect_invalid = [&](RecommendRequest req, const std::string& text) {
    EXPECT_INVALID(recommend_run(run("sasrec"), req), text);
  };
  RecommendRequest bad = hist;
  bad.overrides = {"model.d_model=8"};
  expect_invalid(bad, "--set takes index.* keys only");
  bad.overrides = {"index.nlist=0"};
  bad.index = "ivf";
  expect_invalid(bad, "index.nlist must be >= 1, got 0");
  bad.overrides = {"index.nlist=500"};  // more lists than the 120 items
  expect_invalid(bad, "index.nlist must be <= the number of items (120), got 500");
  bad.overrides = {};
  bad.index = "annoy";
  expect_invalid(bad, "index.kind must be one of");
}

TEST_F(IndexRuns, IndexEvalReportsRecallAndLatency) {
  IndexEvalRequest req;
  req.index = "hnsw";
  req.users = 50;
  nlohmann::json j = index_eval_run(run("sasrec"), req);
  EXPECT_EQ(j["index"]["kind"], "hnsw");
  EXPECT_EQ(j["index"]["ef_search"], 128);
  EXPECT_EQ(j["users"], 50);
  EXPECT_EQ(j["n_items"], 120);
  EXPECT_EQ(j["dim"], 16);
  EXPECT_GE(j["recall_at_10_vs_exact"].get<double>(), 0.8);
  EXPECT_LE(j["recall_at_10_vs_exact"].get<double>(), 1.0);
  for (const char* key : {"build_seconds", "batch_queries_per_second", "encode_seconds"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_LE(j["latency_ms"]["p50"].get<double>(), j["latency_ms"]["p99"].get<double>());

  IndexEvalRequest flat;
  flat.index = "flat";
  nlohmann::json jf = index_eval_run(run("sasrec"), flat);
  EXPECT_DOUBLE_EQ(jf["recall_at_10_vs_exact"].get<double>(), 1.0);
  EXPECT_GT(jf["users"].get<int64_t>(), 50);  // every test user

  IndexEvalRequest pop;
  pop.index = "flat";
  EXPECT_THROW(index_eval_run(run("pop"), pop), InvalidInput);
}
