// Residual quantisers (tokenizers/rq.h): k-means recovers separated clusters, balanced sizes,
// encode/decode round trips against the reported errors, exactness with a codebook per item,
// RQ-VAE training, dead-code resets, determinism, save/load, option validation, cancellation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "genrec/core/error.h"
#include "genrec/tokenizers/rq.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;

namespace {

std::vector<float> gaussian(int64_t rows, int64_t dim, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> v(0.0f, stddev);
  std::vector<float> m(static_cast<size_t>(rows * dim));
  for (auto& x : m) x = v(rng);
  return m;
}

// `clusters` well-separated blobs (centres ~N(0, 10²), noise 0.01), points shuffled; label[i] is
// row i's blob.
std::vector<float> blobs(int64_t clusters, int64_t per_cluster, int64_t dim, uint64_t seed, std::vector<int>& label) {
  std::vector<float> centres = gaussian(clusters, dim, seed, 10.0f);
  std::vector<float> noise = gaussian(clusters * per_cluster, dim, seed + 1, 0.01f);
  std::vector<int> order(static_cast<size_t>(clusters * per_cluster));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::mt19937_64 rng(seed + 2);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<float> x(order.size() * static_cast<size_t>(dim));
  label.assign(order.size(), 0);
  for (size_t row = 0; row < order.size(); ++row) {
    const int64_t src = order[row], c = src / per_cluster;
    label[row] = static_cast<int>(c);
    for (int64_t d = 0; d < dim; ++d)
      x[row * dim + d] = centres[c * dim + d] + noise[src * dim + d];
  }
  return x;
}

// Codes of SemanticIds rows 1..n as [n, levels].
std::vector<int32_t> item_codes(const SemanticIds& sid) {
  return std::vector<int32_t>(sid.codes.begin() + sid.levels, sid.codes.end());
}

double sse(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s;
}

double sst(const std::vector<float>& x, int64_t n, int64_t dim) {
  std::vector<double> mean(static_cast<size_t>(dim), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) mean[d] += x[i * dim + d] / double(n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) s += (x[i * dim + d] - mean[d]) * (x[i * dim + d] - mean[d]);
  return s;
}

RQOptions small_vae() {
  RQOptions o;
  o.method = "rq-vae";
  o.levels = 2;
  o.codebook_size = 16;
  o.latent_dim = 8;
  o.hidden = {32, 16};
  o.epochs = 30;
  o.batch_size = 64;
  o.lr = 3e-3;
  o.kmeans_iters = 10;
  o.threads = 1;
  return o;
}

}  // namespace

TEST(RQKMeans, RecoversWellSeparatedClusters) {
  std::vector<int> label;
  const int64_t K = 8, per = 40, dim = 16, n = K * per;
  std::vector<float> x = blobs(K, per, dim, 7, label);
  RQOptions o;
  o.levels = 1;
  o.codebook_size = K;
  for (uint64_t seed : {1, 2, 3}) {
    o.seed = seed;
    RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
    ASSERT_EQ(r.sid.n_items, n);
    ASSERT_EQ(r.sid.levels, 1);
    // Codes and blobs are the same partition: a one-to-one map between them.
    std::map<int, int32_t> code_of_label;
    std::set<int32_t> codes;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t c = r.sid.item_codes(static_cast<int32_t>(i + 1))[0];
      auto [it, fresh] = code_of_label.emplace(label[i], c);
      EXPECT_EQ(it->second, c) << "seed " << seed << " row " << i;
      codes.insert(c);
    }
    EXPECT_EQ(codes.size(), static_cast<size_t>(K)) << "seed " << seed;
    EXPECT_LT(r.report["relative_mse"].get<double>(), 1e-5);
    EXPECT_EQ(r.report["per_level"][0]["used_codes"].get<int64_t>(), K);
    EXPECT_TRUE(r.report["per_level"][0]["converged"].get<bool>());
  }
}

TEST(RQKMeans, BalancedClusterSizesWithinOne) {
  for (auto [n, K] : {std::pair<int64_t, int64_t>{1000, 16}, {100, 7}, {64, 8}, {5, 8}}) {
    const int64_t dim = 8;
    // Skewed data (one dense blob plus spread points) so unconstrained k-means would be unequal.
    std::vector<float> x = gaussian(n, dim, 11);
    for (int64_t i = 0; i < n / 2; ++i)
      for (int64_t d = 0; d < dim; ++d) x[i * dim + d] *= 0.05f;
    RQOptions o;
    o.levels = 2;
    o.codebook_size = K;
    o.balanced = true;
    o.kmeans_iters = 20;
    RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
    for (int32_t l = 0; l < 2; ++l) {
      std::vector<int64_t> size(static_cast<size_t>(K), 0);
      for (int32_t i = 1; i <= n; ++i) ++size[r.sid.item_codes(i)[l]];
      const int64_t lo = n / K, hi = (n + K - 1) / K;
      for (int64_t k = 0; k < K; ++k) {
        EXPECT_GE(size[k], lo) << "n " << n << " K " << K << " level " << l << " code " << k;
        EXPECT_LE(size[k], hi) << "n " << n << " K " << K << " level " << l << " code " << k;
      }
    }
    // The reported error is the one of the (balanced) codes.
    std::vector<float> back = r.quantizer.decode(item_codes(r.sid).data(), n);
    EXPECT_NEAR(sse(back, x) / sst(x, n, dim), r.report["relative_mse"].get<double>(), 1e-4);
  }
}

TEST(RQKMeans, RoundTripErrorFallsPerLevelAndMatchesReport) {
  const int64_t n = 600, dim = 16, L = 4, K = 16;
  std::vector<float> x = gaussian(n, dim, 5);
  RQOptions o;
  o.levels = L;
  o.codebook_size = K;
  RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
  const ResidualQuantizer& q = r.quantizer;
  ASSERT_TRUE(q.fitted());
  EXPECT_EQ(q.method(), "rq-kmeans");
  EXPECT_EQ(q.levels(), L);
  EXPECT_EQ(q.codebook_size(), K);
  EXPECT_EQ(q.code_dim(), dim);
  std::vector<int32_t> codes = q.encode(x.data(), n);
  EXPECT_EQ(codes, item_codes(r.sid));  // encode = the fitted assignment
  for (int32_t c : codes) {
    EXPECT_GE(c, 0);
    EXPECT_LT(c, K);
  }
  // Reconstruction from the first l + 1 levels: sum of the chosen entries.
  const double total = sst(x, n, dim);
  std::vector<float> partial(x.size(), 0.0f);
  double prev = total;
  for (int64_t l = 0; l < L; ++l) {
    std::vector<float> book = q.codebook(l);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dim; ++d) partial[i * dim + d] += book[codes[i * L + l] * dim + d];
    const double rel = sse(partial, x) / total;
    EXPECT_LT(rel, prev) << "level " << l;
    EXPECT_NEAR(rel, r.report["per_level"][l]["relative_mse"].get<double>(), 1e-4 * std::max(rel, 1e-3)) << "level " << l;
    EXPECT_NEAR(sse(partial, x) / double(n * dim), r.report["per_level"][l]["mse"].get<double>(), 1e-5);
    prev = rel;
  }
  std::vector<float> back = q.decode(codes.data(), n);
  ASSERT_EQ(back.size(), x.size());
  for (size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], partial[i], 1e-4);
  EXPECT_NEAR(sse(back, x) / total, r.report["relative_mse"].get<double>(), 1e-5);
  EXPECT_LT(r.report["relative_mse"].get<double>(), 0.6);
  // New vectors encode too.
  std::vector<float> fresh = gaussian(10, dim, 99);
  std::vector<int32_t> fc = q.encode(fresh.data(), 10);
  EXPECT_EQ(fc.size(), static_cast<size_t>(10 * L));
  EXPECT_THROW(q.decode(std::vector<int32_t>(L, K).data(), 1), InvalidInput);
  std::vector<float> bad = fresh;
  bad[3] = std::nanf("");
  EXPECT_THROW(q.encode(bad.data(), 10), InvalidInput);
}

TEST(RQKMeans, ExactWithACodePerItem) {
  const int64_t n = 50, dim = 12;
  std::vector<float> x = gaussian(n, dim, 3);
  for (int64_t K : {n, n + 14}) {
    RQOptions o;
    o.levels = 1;
    o.codebook_size = K;
    RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
    std::vector<float> back = r.quantizer.decode(item_codes(r.sid).data(), n);
    EXPECT_EQ(back, x) << "K " << K;
    std::vector<float> back2 = r.quantizer.decode(r.quantizer.encode(x.data(), n).data(), n);
    EXPECT_EQ(back2, x) << "K " << K;
    EXPECT_EQ(r.report["relative_mse"].get<double>(), 0.0);
    const std::vector<int32_t> codes = item_codes(r.sid);
    const std::set<int32_t> distinct(codes.begin(), codes.end());
    EXPECT_EQ(distinct.size(), static_cast<size_t>(n));
  }
}

TEST(RQKMeans, DeterministicForASeedAndSavesLoads) {
  const int64_t n = 400, dim = 10;
  std::vector<float> x = gaussian(n, dim, 21);
  RQOptions o;
  o.levels = 3;
  o.codebook_size = 12;
  o.threads = 1;
  RQResult a = fit_residual_quantizer(x.data(), n, dim, o);
  RQResult b = fit_residual_quantizer(x.data(), n, dim, o);
  EXPECT_EQ(a.sid.codes, b.sid.codes);
  for (int64_t l = 0; l < 3; ++l) EXPECT_EQ(a.quantizer.codebook(l), b.quantizer.codebook(l));
  o.seed = 43;
  RQResult c = fit_residual_quantizer(x.data(), n, dim, o);
  EXPECT_NE(a.quantizer.codebook(0), c.quantizer.codebook(0));

  TempDir dir;
  a.quantizer.save(dir / "rq.safetensors");
  ResidualQuantizer back = ResidualQuantizer::load(dir / "rq.safetensors");
  EXPECT_EQ(back.method(), "rq-kmeans");
  EXPECT_EQ(back.dim(), dim);
  EXPECT_EQ(back.encode(x.data(), n), item_codes(a.sid));
  std::vector<int32_t> codes = item_codes(a.sid);
  EXPECT_EQ(back.decode(codes.data(), n), a.quantizer.decode(codes.data(), n));
  genrec::test::write_text(dir / "junk.safetensors", "not a safetensors file");
  EXPECT_THROW(ResidualQuantizer::load(dir / "junk.safetensors"), InvalidInput);
}

TEST(RQVAE, TrainsAndEncodesDeterministically) {
  std::vector<int> label;
  const int64_t dim = 16;
  std::vector<float> x = blobs(12, 25, dim, 31, label);
  const int64_t n = 300;
  for (auto& v : x) v *= 0.1f;  // any scale: the input is normalised inside
  RQOptions o = small_vae();
  RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
  const auto& rep = r.report;
  EXPECT_EQ(rep["method"], "rq-vae");
  EXPECT_LT(rep["loss"]["last"].get<double>(), rep["loss"]["first"].get<double>());
  EXPECT_LE(rep["loss"]["curve"].size(), 50u);
  EXPECT_LT(rep["relative_mse"].get<double>(), 0.5);
  ASSERT_EQ(r.sid.levels, 2);
  ASSERT_EQ(r.sid.codebook_sizes, (std::vector<int32_t>{16, 16}));
  for (int32_t i = 1; i <= n; ++i)
    for (int32_t l = 0; l < 2; ++l) {
      EXPECT_GE(r.sid.item_codes(i)[l], 0);
      EXPECT_LT(r.sid.item_codes(i)[l], 16);
    }
  // encode reproduces the fitted codes, every time.
  std::vector<int32_t> e1 = r.quantizer.encode(x.data(), n), e2 = r.quantizer.encode(x.data(), n);
  EXPECT_EQ(e1, item_codes(r.sid));
  EXPECT_EQ(e1, e2);
  EXPECT_EQ(r.quantizer.code_dim(), 8);
  std::vector<float> back = r.quantizer.decode(e1.data(), n);
  ASSERT_EQ(back.size(), x.size());
  EXPECT_NEAR(sse(back, x) / sst(x, n, dim), rep["relative_mse"].get<double>(), 1e-4);
  int64_t per_level_resets = 0;
  for (const auto& lv : rep["per_level"]) per_level_resets += lv["dead_codes_reset"].get<int64_t>();
  EXPECT_EQ(per_level_resets, rep["dead_codes_reset"].get<int64_t>());

  // Same seed and threads: the same model.
  RQResult again = fit_residual_quantizer(x.data(), n, dim, o);
  EXPECT_EQ(again.sid.codes, r.sid.codes);
  EXPECT_EQ(again.report["loss"], rep["loss"]);

  TempDir dir;
  r.quantizer.save(dir / "vae.safetensors");
  ResidualQuantizer loaded = ResidualQuantizer::load(dir / "vae.safetensors");
  EXPECT_EQ(loaded.method(), "rq-vae");
  EXPECT_EQ(loaded.encode(x.data(), n), e1);
  EXPECT_EQ(loaded.decode(e1.data(), n), back);
}

TEST(RQVAE, DeadCodesAreResetAndCounted) {
  const int64_t n = 200, dim = 8;
  std::vector<float> x = gaussian(n, dim, 41);
  RQOptions o = small_vae();
  o.codebook_size = 64;  // random codebooks, more entries than a batch uses: many start dead
  o.kmeans_init = false;
  o.epochs = 5;
  RQResult r = fit_residual_quantizer(x.data(), n, dim, o);
  EXPECT_GT(r.report["dead_codes_reset"].get<int64_t>(), 0);
  EXPECT_GT(r.report["per_level"][0]["dead_codes_reset"].get<int64_t>(), 0);
  o.reset_dead_codes = false;
  RQResult off = fit_residual_quantizer(x.data(), n, dim, o);
  EXPECT_EQ(off.report["dead_codes_reset"].get<int64_t>(), 0);
  // Resets spread the codes: more of the codebook in use.
  EXPECT_GE(r.report["per_level"][0]["used_codes"].get<int64_t>(),
            off.report["per_level"][0]["used_codes"].get<int64_t>());
}

TEST(RQOptions, ValidationNamesTheKey) {
  auto message = [](RQOptions o) { return genrec::test::invalid_message([&] { o.validate(); }); };
  RQOptions o;
  EXPECT_NO_THROW(o.validate());
  o.method = "pq";
  EXPECT_NE(message(o).find("sid.method"), std::string::npos);
  o = RQOptions();
  o.levels = 0;
  EXPECT_NE(message(o).find("sid.levels"), std::string::npos);
  o = RQOptions();
  o.codebook_size = 0;
  EXPECT_NE(message(o).find("sid.codebook_size"), std::string::npos);
  o = RQOptions();
  o.kmeans_iters = -1;
  EXPECT_NE(message(o).find("sid.kmeans_iters"), std::string::npos);
  o = RQOptions();
  o.threads = -2;
  EXPECT_NE(message(o).find("sid.threads"), std::string::npos);
  RQOptions v;
  v.method = "rq-vae";
  EXPECT_NO_THROW(v.validate());
  o = v;
  o.latent_dim = 0;
  EXPECT_NE(message(o).find("sid.latent_dim"), std::string::npos);
  o = v;
  o.hidden = {64, 0};
  EXPECT_NE(message(o).find("sid.hidden[1]"), std::string::npos);
  o = v;
  o.beta = -1;
  EXPECT_NE(message(o).find("sid.beta"), std::string::npos);
  o = v;
  o.lr = 0;
  EXPECT_NE(message(o).find("sid.lr"), std::string::npos);
  o = v;
  o.batch_size = 0;
  EXPECT_NE(message(o).find("sid.batch_size"), std::string::npos);
  o = v;
  o.epochs = -1;
  EXPECT_NE(message(o).find("sid.epochs"), std::string::npos);

  std::vector<float> x = gaussian(4, 3, 1);
  o = RQOptions();
  o.levels = 0;
  EXPECT_THROW(fit_residual_quantizer(x.data(), 4, 3, o), InvalidInput);
  EXPECT_THROW(fit_residual_quantizer(x.data(), 0, 3, RQOptions()), InvalidInput);
  x[5] = INFINITY;
  EXPECT_THROW(fit_residual_quantizer(x.data(), 4, 3, RQOptions()), InvalidInput);
  EXPECT_THROW(ResidualQuantizer().encode(x.data(), 1), InternalError);
}

TEST(RQKMeans, ProgressCanCancel) {
  std::vector<float> x = gaussian(100, 4, 2);
  RQOptions o;
  o.codebook_size = 4;
  int calls = 0;
  auto cancel = [&](const ProgressEvent& e) {
    ++calls;
    EXPECT_EQ(e.stage, "rq-kmeans");
    return false;
  };
  EXPECT_THROW(fit_residual_quantizer(x.data(), 100, 4, o, cancel), Cancelled);
  EXPECT_EQ(calls, 1);
}
