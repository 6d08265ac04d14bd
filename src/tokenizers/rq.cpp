// Residual quantisers (tokenizers/rq.h): RQ-k-means and RQ-VAE on libtorch.
#include "genrec/tokenizers/rq.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>
#include <random>
#include <utility>

#include "genrec/core/error.h"
#include "genrec/core/log.h"
#include "genrec/models/safetensors_torch.h"

namespace genrec {

// The fitted state. Codebooks hold the entries ([K, code_dim], no grad). rq-vae adds the MLPs and
// the input normalisation x_n = (x - input_mean) / input_scale the networks see.
struct ResidualQuantizer::Impl {
  std::string method;
  int64_t dim = 0, levels = 0, codebook_size = 0, code_dim = 0;
  std::vector<int64_t> hidden;
  nlohmann::json options = nlohmann::json::object();
  std::vector<torch::Tensor> codebooks;
  torch::Tensor input_mean, input_scale;  // rq-vae: [dim], [1]
  // forward() of a Sequential is not const; encode/decode only read the modules.
  mutable torch::nn::Sequential encoder{nullptr}, decoder{nullptr};
};

namespace {

using torch::Tensor;
constexpr int64_t kChunkRows = 8192;  // rows per distance block (fit and encode use the same blocks)
constexpr double kShiftTol = 1e-4;    // k-means stops when centres move less (see kmeans())

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Sets torch's intra-op threads for a scope (n > 0), restoring the previous count afterwards.
class ThreadScope {
 public:
  explicit ThreadScope(int64_t n) : old_(at::get_num_threads()) {
    if (n > 0 && n != old_) {
      at::set_num_threads(static_cast<int>(n));
      changed_ = true;
    }
  }
  ~ThreadScope() {
    if (changed_) at::set_num_threads(old_);
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int old_;
  bool changed_ = false;
};

void check_finite(const float* x, int64_t n, int64_t dim, const char* what) {
  const int64_t total = n * dim;
  for (int64_t i = 0; i < total; ++i) {
    if (!std::isfinite(x[i]))
      throw InvalidInput(std::string(what) + ": row " + std::to_string(i / dim) + " column " +
                         std::to_string(i % dim) + " is not a finite number");
  }
}

Tensor from_rows(const float* x, int64_t n, int64_t dim) {
  return torch::from_blob(const_cast<float*>(x), {n, dim}, torch::kFloat).clone();
}

// Distance buffers reused across calls: fresh multi-megabyte tensors cost a page fault per 4 KiB
// on every call (measured: more than the matrix product itself).
struct DistBuffer {
  Tensor dist;    // [rows, K] float
  Tensor minval;  // [rows] float
};

// ||c||² - 2 x·c for rows of x against every entry of c, written into `out` ([rows, K]): the
// squared distance less ||x||², enough to rank entries for one row.
void shifted_distances(const Tensor& x, const Tensor& c, const Tensor& c_norm, Tensor& out) {
  torch::addmm_out(out, c_norm.unsqueeze(0), x, c.t(), 1, -2);
}

Tensor& buffer(Tensor& t, int64_t rows, int64_t cols) {
  if (!t.defined() || t.size(0) != rows || t.size(1) != cols) t = torch::empty({rows, cols}, torch::kFloat);
  return t;
}

// Nearest entry per row (ties to the lower index), in fixed row blocks.
Tensor nearest(const Tensor& x, const Tensor& c, DistBuffer* buf = nullptr) {
  const int64_t n = x.size(0), K = c.size(0);
  DistBuffer local;
  DistBuffer& b = buf ? *buf : local;
  const int64_t rows = std::min(kChunkRows, n);
  Tensor& dist = buffer(b.dist, rows, K);
  if (!b.minval.defined() || b.minval.size(0) != rows) b.minval = torch::empty({rows}, torch::kFloat);
  Tensor c_norm = c.pow(2).sum(1);
  Tensor idx = torch::empty({n}, torch::kLong);
  for (int64_t s = 0; s < n; s += kChunkRows) {
    const int64_t len = std::min(kChunkRows, n - s);
    Tensor d = dist.narrow(0, 0, len);
    shifted_distances(x.narrow(0, s, len), c, c_norm, d);
    Tensor mv = b.minval.narrow(0, 0, len), mi = idx.narrow(0, s, len);
    torch::min_out(mv, mi, d, 1);
  }
  return idx;
}

// Capacity-constrained assignment: every cluster gets floor(n/K) or ceil(n/K) points. Global
// greedy on squared distance: (point, cluster) pairs are taken in increasing distance (ties: the
// lower point, then the lower cluster), skipping assigned points and full clusters; lazily,
// through a heap holding each unassigned point's best cluster not yet refused. A point's row is
// sorted only as far as its refusals need.
Tensor balanced_assign(const Tensor& x, const Tensor& c, DistBuffer& buf) {
  const int64_t n = x.size(0), K = c.size(0);
  Tensor& d = buffer(buf.dist, n, K);
  Tensor c_norm = c.pow(2).sum(1);
  for (int64_t s = 0; s < n; s += kChunkRows) {
    const int64_t len = std::min(kChunkRows, n - s);
    Tensor ds = d.narrow(0, s, len);
    shifted_distances(x.narrow(0, s, len), c, c_norm, ds);
  }
  Tensor x_norm = x.pow(2).sum(1).contiguous();
  const float* dv = d.data_ptr<float>();
  const float* xn = x_norm.data_ptr<float>();
  using Cand = std::pair<float, int32_t>;  // (squared distance, cluster)
  std::vector<std::vector<Cand>> rows(static_cast<size_t>(n));
  std::vector<int32_t> sorted_upto(static_cast<size_t>(n), 0);
  auto candidate = [&](int64_t p, int64_t k) -> Cand {
    auto& row = rows[static_cast<size_t>(p)];
    auto& upto = sorted_upto[static_cast<size_t>(p)];
    if (row.empty()) {
      row.reserve(static_cast<size_t>(K));
      for (int64_t j = 0; j < K; ++j) row.emplace_back(dv[p * K + j] + xn[p], static_cast<int32_t>(j));
    }
    if (k >= upto) {
      const int64_t want = std::min<int64_t>(K, std::max<int64_t>(8, 2 * (k + 1)));
      std::partial_sort(row.begin() + upto, row.begin() + want, row.end());
      upto = static_cast<int32_t>(want);
    }
    return row[static_cast<size_t>(k)];
  };
  const int64_t q = n / K, r = n % K;
  int64_t n_big = 0;  // clusters holding q + 1 points (at most r of them)
  std::vector<int64_t> size(static_cast<size_t>(K), 0), next(static_cast<size_t>(n), 0);
  Tensor out = torch::empty({n}, torch::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  using Entry = std::pair<float, int64_t>;  // (squared distance, point)
  std::vector<Entry> init;
  init.reserve(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    // The nearest cluster without building the row (most points are never refused).
    const float* row = dv + p * K;
    int64_t best = 0;
    for (int64_t j = 1; j < K; ++j)
      if (row[j] < row[best]) best = j;
    init.emplace_back(row[best] + xn[p], p);
    next[static_cast<size_t>(p)] = -1 - best;  // < 0: refused nothing yet, nearest = -1 - next
  }
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap(std::greater<Entry>(), std::move(init));
  while (!heap.empty()) {
    const int64_t p = heap.top().second;
    heap.pop();
    auto& k = next[static_cast<size_t>(p)];
    const int64_t cl = k < 0 ? -1 - k : candidate(p, k).second;
    auto& s = size[static_cast<size_t>(cl)];
    if (s < q || (s == q && n_big < r)) {
      o[p] = cl;
      if (++s == q + 1) ++n_big;
    } else {
      // Refused: continue down the sorted row from the entry after the refused one.
      if (k < 0) {
        k = 0;
        while (candidate(p, k).second != cl) ++k;  // the nearest (ties: lower cluster) sorts first
      }
      ++k;
      GENREC_ASSERT(k < K);
      heap.emplace(candidate(p, k).first, p);
    }
  }
  return out;
}

// k-means++ seeding: the first centre uniformly, each next one with probability proportional to
// the squared distance to the nearest centre so far (uniformly when every distance is 0).
Tensor kmeans_pp(const Tensor& x, int64_t K, std::mt19937_64& rng) {
  const int64_t n = x.size(0), dim = x.size(1);
  Tensor centers = torch::empty({K, dim}, torch::kFloat);
  Tensor x_norm = x.pow(2).sum(1);
  std::uniform_int_distribution<int64_t> uniform(0, n - 1);
  int64_t choice = uniform(rng);
  Tensor d2 = torch::empty({n}, torch::kFloat);
  std::vector<double> cum(static_cast<size_t>(n));
  for (int64_t k = 0; k < K; ++k) {
    if (k > 0) {
      const float* dp = d2.data_ptr<float>();
      double total = 0;
      for (int64_t i = 0; i < n; ++i) cum[static_cast<size_t>(i)] = total += dp[i];
      if (!(total > 0)) {
        choice = uniform(rng);
      } else {
        const double u = std::uniform_real_distribution<double>(0.0, total)(rng);
        choice = std::upper_bound(cum.begin(), cum.end(), u) - cum.begin();
        if (choice >= n) choice = n - 1;
        while (choice > 0 && dp[choice] <= 0) --choice;  // never a zero-weight point
      }
    }
    Tensor row = x[choice];
    centers[k].copy_(row);
    Tensor dk = (x_norm - 2 * torch::mv(x, row) + row.pow(2).sum()).clamp_min_(0);
    dk[choice] = 0;
    d2 = k == 0 ? dk : torch::minimum(d2, dk);
  }
  return centers;
}

struct KMeansOut {
  Tensor centers;  // [K, dim]
  Tensor assign;   // [n] int64
  int64_t iterations = 0;
  bool converged = false;
  int64_t reseeded = 0;
};

// k-means on the rows of x: k-means++, then Lloyd iterations until no assignment changes or the
// centres move less than kShiftTol of the data's mean per-dimension variance (sum of squared
// shifts; as scikit-learn), at most `iters` centroid updates. Empty clusters take the points
// farthest from their centroids.
// The returned assignment is the one for the returned centres (nearest, or balanced).
KMeansOut kmeans(const Tensor& x, int64_t K, int64_t iters, bool balanced, std::mt19937_64& rng,
                 const std::function<void()>& on_iteration) {
  const int64_t n = x.size(0), dim = x.size(1);
  KMeansOut out;
  out.centers = kmeans_pp(x, K, rng);
  DistBuffer buf;
  auto assign_step = [&](const Tensor& c) { return balanced ? balanced_assign(x, c, buf) : nearest(x, c, &buf); };
  Tensor assign = assign_step(out.centers);
  const double shift_tol = kShiftTol * x.to(torch::kDouble).var(0, /*unbiased=*/false).mean().item<double>();
  for (int64_t it = 0; it < iters; ++it) {
    const Tensor old_centers = out.centers;
    Tensor sums = torch::zeros({K, dim}, torch::kFloat).index_add_(0, assign, x);
    Tensor counts = torch::bincount(assign, {}, K).to(torch::kFloat);
    Tensor nonempty = counts > 0;
    Tensor means = sums / counts.clamp_min(1).unsqueeze(1);
    out.centers = torch::where(nonempty.unsqueeze(1), means, out.centers);
    const int64_t n_empty = K - nonempty.sum().item<int64_t>();
    if (n_empty > 0) {
      // Squared distance of each point to its (old) centroid, exact; farthest first.
      Tensor dist = (x - out.centers.index_select(0, assign)).pow(2).sum(1);
      Tensor order = std::get<1>(dist.sort(/*stable=*/true, 0, /*descending=*/true));
      const auto* em = nonempty.data_ptr<bool>();
      const int64_t* op = order.data_ptr<int64_t>();
      const float* dp = dist.data_ptr<float>();
      int64_t next = 0;
      for (int64_t k = 0; k < K; ++k) {
        if (em[k]) continue;
        if (next >= n || !(dp[op[next]] > 0)) break;  // every remaining point sits on its centroid
        out.centers[k].copy_(x[op[next++]]);
        ++out.reseeded;
      }
    }
    ++out.iterations;
    if (on_iteration) on_iteration();
    const double shift = (out.centers - old_centers).to(torch::kDouble).pow(2).sum().item<double>();
    Tensor fresh = assign_step(out.centers);
    const bool same = fresh.equal(assign);
    assign = fresh;
    if (same || shift <= shift_tol) {
      out.converged = true;
      break;
    }
  }
  out.assign = assign;
  return out;
}

struct ErrorStats {
  double sse = 0;
  double mse = 0;
  double relative = 0;
};

// Sum of squares of `diff` against the total sum of squares `sst`.
ErrorStats error_stats(const Tensor& diff, double sst) {
  ErrorStats e;
  e.sse = diff.to(torch::kDouble).pow(2).sum().item<double>();
  e.mse = diff.numel() > 0 ? e.sse / static_cast<double>(diff.numel()) : 0.0;
  e.relative = sst > 0 ? e.sse / sst : (e.sse > 0 ? 1.0 : 0.0);
  return e;
}

double total_sum_of_squares(const Tensor& x) {
  Tensor xd = x.to(torch::kDouble);
  return (xd - xd.mean(0, true)).pow(2).sum().item<double>();
}

nlohmann::json usage_json(const Tensor& idx, int64_t K) {
  Tensor counts = torch::bincount(idx, {}, K);
  const int64_t used = (counts > 0).sum().item<int64_t>();
  return {{"used_codes", used},
          {"usage", static_cast<double>(used) / static_cast<double>(K)},
          {"cluster_size_min", counts.min().item<int64_t>()},
          {"cluster_size_max", counts.max().item<int64_t>()}};
}

torch::nn::Sequential make_mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t out) {
  torch::nn::Sequential s;
  int64_t prev = in;
  for (int64_t h : hidden) {
    s->push_back(torch::nn::Linear(prev, h));
    s->push_back(torch::nn::ReLU());
    prev = h;
  }
  s->push_back(torch::nn::Linear(prev, out));
  return s;
}

// Codes [n, levels] of latents / vectors z against the codebooks; also the sum of the chosen
// entries when `quantised` is given.
Tensor rq_codes(const Tensor& z, const std::vector<Tensor>& codebooks, Tensor* quantised = nullptr) {
  const int64_t n = z.size(0), L = static_cast<int64_t>(codebooks.size());
  Tensor codes = torch::empty({n, L}, torch::kLong);
  Tensor r = z;
  Tensor q = torch::zeros_like(z);
  DistBuffer buf;
  for (int64_t l = 0; l < L; ++l) {
    Tensor idx = nearest(r, codebooks[static_cast<size_t>(l)], &buf);
    codes.select(1, l).copy_(idx);
    Tensor e = codebooks[static_cast<size_t>(l)].index_select(0, idx);
    r = r - e;
    q = q + e;
  }
  if (quantised) *quantised = q;
  return codes;
}

Tensor encode_tensor(const ResidualQuantizer::Impl& m, const Tensor& x) {
  torch::NoGradGuard no_grad;
  if (m.method == "rq-vae") {
    Tensor xn = (x - m.input_mean) / m.input_scale;
    Tensor z = m.encoder->forward(xn);
    return rq_codes(z, m.codebooks);
  }
  return rq_codes(x, m.codebooks);
}

Tensor decode_tensor(const ResidualQuantizer::Impl& m, const Tensor& codes) {
  torch::NoGradGuard no_grad;
  Tensor q = torch::zeros({codes.size(0), m.code_dim}, torch::kFloat);
  for (int64_t l = 0; l < m.levels; ++l) q = q + m.codebooks[static_cast<size_t>(l)].index_select(0, codes.select(1, l));
  if (m.method == "rq-vae") return m.decoder->forward(q) * m.input_scale + m.input_mean;
  return q;
}

SemanticIds to_semantic_ids(const Tensor& codes, int64_t n, int64_t L, int64_t K) {
  SemanticIds sid;
  sid.n_items = static_cast<int32_t>(n);
  sid.levels = static_cast<int32_t>(L);
  sid.codebook_sizes.assign(static_cast<size_t>(L), static_cast<int32_t>(K));
  sid.codes.assign(static_cast<size_t>((n + 1) * L), 0);
  Tensor c = codes.to(torch::kInt).contiguous();
  std::copy(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + n * L, sid.codes.begin() + L);
  return sid;
}

// ---------------------------------------------------------------------------------------------
// RQ-k-means

RQResult fit_rq_kmeans(const Tensor& x, const RQOptions& o, const ProgressCallback& progress) {
  torch::NoGradGuard no_grad;
  const int64_t n = x.size(0), L = o.levels, K = o.codebook_size;
  std::mt19937_64 rng(o.seed);
  ProgressTracker tracker("rq-kmeans", L * std::max<int64_t>(o.kmeans_iters, 1), "iterations", progress);
  const double sst = total_sum_of_squares(x);
  auto impl = std::make_shared<ResidualQuantizer::Impl>();
  Tensor codes = torch::empty({n, L}, torch::kLong);
  nlohmann::json per_level = nlohmann::json::array();
  Tensor r = x;
  ErrorStats err;
  for (int64_t l = 0; l < L; ++l) {
    const auto t0 = std::chrono::steady_clock::now();
    KMeansOut km = kmeans(r, K, o.kmeans_iters, o.balanced, rng, [&] { tracker.advance(1); });
    tracker.set_done((l + 1) * std::max<int64_t>(o.kmeans_iters, 1));
    codes.select(1, l).copy_(km.assign);
    r = r - km.centers.index_select(0, km.assign);
    err = error_stats(r, sst);
    impl->codebooks.push_back(km.centers.contiguous());
    nlohmann::json lv = {{"level", l}, {"iterations", km.iterations}, {"converged", km.converged},
                         {"empty_reseeded", km.reseeded}, {"mse", err.mse}, {"relative_mse", err.relative},
                         {"seconds", seconds_since(t0)}};
    lv.update(usage_json(km.assign, K));
    GENREC_LOG_INFO("rq-kmeans level %lld: %lld/%lld codes used, relative mse %.4f, %lld iterations%s",
                    static_cast<long long>(l), static_cast<long long>(lv["used_codes"].get<int64_t>()),
                    static_cast<long long>(K), err.relative, static_cast<long long>(km.iterations),
                    km.converged ? " (converged)" : "");
    per_level.push_back(std::move(lv));
  }
  tracker.finish();
  impl->method = "rq-kmeans";
  impl->dim = x.size(1);
  impl->levels = L;
  impl->codebook_size = K;
  impl->code_dim = x.size(1);
  impl->options = o.to_json();
  RQResult res;
  res.sid = to_semantic_ids(codes, n, L, K);
  res.report = {{"mse", err.mse}, {"relative_mse", err.relative}, {"per_level", std::move(per_level)},
                {"balanced", o.balanced}};
  res.quantizer = ResidualQuantizer(std::move(impl));
  return res;
}

// ---------------------------------------------------------------------------------------------
// RQ-VAE

RQResult fit_rq_vae(const Tensor& x, const RQOptions& o, const ProgressCallback& progress) {
  const int64_t n = x.size(0), dim = x.size(1), L = o.levels, K = o.codebook_size, D = o.latent_dim;
  torch::manual_seed(o.seed);
  std::mt19937_64 rng(o.seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);

  auto impl = std::make_shared<ResidualQuantizer::Impl>();
  impl->method = "rq-vae";
  impl->dim = dim;
  impl->levels = L;
  impl->codebook_size = K;
  impl->code_dim = D;
  impl->hidden = o.hidden;
  impl->options = o.to_json();
  {
    Tensor xd = x.to(torch::kDouble);
    Tensor mean = xd.mean(0);
    double scale = std::sqrt((xd - mean).pow(2).mean().item<double>());
    if (!(scale > 0)) scale = 1.0;
    impl->input_mean = mean.to(torch::kFloat);
    impl->input_scale = torch::full({1}, scale, torch::kFloat);
  }
  const Tensor xn = (x - impl->input_mean) / impl->input_scale;

  torch::nn::Sequential encoder = make_mlp(dim, o.hidden, D);
  std::vector<int64_t> rev(o.hidden.rbegin(), o.hidden.rend());
  torch::nn::Sequential decoder = make_mlp(D, rev, dim);
  std::vector<Tensor> books;
  const auto t_init = std::chrono::steady_clock::now();
  if (o.kmeans_init) {
    torch::NoGradGuard no_grad;
    Tensor r = encoder->forward(xn);
    for (int64_t l = 0; l < L; ++l) {
      KMeansOut km = kmeans(r, K, o.kmeans_iters, false, rng, nullptr);
      r = r - km.centers.index_select(0, km.assign);
      books.push_back(km.centers.clone());
    }
  } else {
    for (int64_t l = 0; l < L; ++l)
      books.push_back(torch::empty({K, D}, torch::kFloat).uniform_(-1.0 / K, 1.0 / K, gen));
  }
  const double init_seconds = seconds_since(t_init);
  for (auto& b : books) b.set_requires_grad(true);

  std::vector<Tensor> params = encoder->parameters();
  for (const auto& p : decoder->parameters()) params.push_back(p);
  for (const auto& b : books) params.push_back(b);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));

  ProgressTracker tracker("rq-vae", o.epochs, "epochs", progress);
  std::vector<double> curve;
  double recon_last = 0, quant_last = 0;
  std::vector<int64_t> resets(static_cast<size_t>(L), 0);
  const int64_t B = std::min(o.batch_size, n);
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    Tensor perm = torch::randperm(n, gen, torch::kLong);
    std::vector<Tensor> used(static_cast<size_t>(L));
    for (auto& u : used) u = torch::zeros({K}, torch::kBool);
    std::vector<Tensor> last_res(static_cast<size_t>(L));
    double loss_sum = 0, recon_sum = 0, quant_sum = 0;
    for (int64_t s = 0; s < n; s += B) {
      const int64_t len = std::min(B, n - s);
      Tensor xb = xn.index_select(0, perm.narrow(0, s, len));
      Tensor z = encoder->forward(xb);
      Tensor r = z, q_sum = torch::zeros_like(z), quant = torch::zeros({}, torch::kFloat);
      for (int64_t l = 0; l < L; ++l) {
        Tensor book = books[static_cast<size_t>(l)];
        Tensor rd = r.detach();
        Tensor idx;
        {
          torch::NoGradGuard no_grad;
          idx = nearest(rd, book);
          used[static_cast<size_t>(l)].index_fill_(0, idx, true);
        }
        last_res[static_cast<size_t>(l)] = rd;
        Tensor e = book.index_select(0, idx);
        quant = quant + torch::mse_loss(e, rd) + o.beta * torch::mse_loss(r, e.detach());
        q_sum = q_sum + e;
        r = r - e.detach();
      }
      Tensor zq = z + (q_sum - z).detach();  // straight-through: the decoder's gradient goes to z
      Tensor recon = torch::mse_loss(decoder->forward(zq), xb);
      Tensor loss = recon + quant;
      opt.zero_grad();
      loss.backward();
      opt.step();
      const double w = static_cast<double>(len) / static_cast<double>(n);
      loss_sum += loss.item<double>() * w;
      recon_sum += recon.item<double>() * w;
      quant_sum += quant.item<double>() * w;
    }
    curve.push_back(loss_sum);
    recon_last = recon_sum;
    quant_last = quant_sum;
    int64_t reset_now = 0;
    if (o.reset_dead_codes && epoch + 1 < o.epochs) {
      torch::NoGradGuard no_grad;
      for (int64_t l = 0; l < L; ++l) {
        Tensor dead = torch::nonzero(~used[static_cast<size_t>(l)]).flatten();
        const int64_t nd = dead.size(0);
        if (nd == 0) continue;
        const Tensor& src = last_res[static_cast<size_t>(l)];
        std::uniform_int_distribution<int64_t> pick(0, src.size(0) - 1);
        std::vector<int64_t> rows(static_cast<size_t>(nd));
        for (auto& v : rows) v = pick(rng);
        Tensor ri = torch::tensor(rows, torch::kLong);
        books[static_cast<size_t>(l)].index_copy_(0, dead, src.index_select(0, ri));
        resets[static_cast<size_t>(l)] += nd;
        reset_now += nd;
      }
    }
    GENREC_LOG_DEBUG("rq-vae epoch %lld: loss %.5f (recon %.5f, quant %.5f), %lld dead codes reset",
                     static_cast<long long>(epoch + 1), loss_sum, recon_sum, quant_sum,
                     static_cast<long long>(reset_now));
    if ((epoch + 1) % 10 == 0 || epoch + 1 == o.epochs)
      GENREC_LOG_INFO("rq-vae epoch %lld/%lld: loss %.5f (recon %.5f, quant %.5f)", static_cast<long long>(epoch + 1),
                      static_cast<long long>(o.epochs), loss_sum, recon_sum, quant_sum);
    tracker.advance(1);
  }
  tracker.finish();

  encoder->eval();
  decoder->eval();
  for (auto& b : books) impl->codebooks.push_back(b.detach().clone());
  impl->encoder = encoder;
  impl->decoder = decoder;

  torch::NoGradGuard no_grad;
  const double sst = total_sum_of_squares(x);
  Tensor z = encoder->forward(xn);
  const double sst_z = total_sum_of_squares(z);
  Tensor codes = encode_tensor(*impl, x);
  Tensor recon = decode_tensor(*impl, codes);
  ErrorStats err = error_stats(recon - x, sst);
  Tensor ae = decoder->forward(z) * impl->input_scale + impl->input_mean;
  ErrorStats ae_err = error_stats(ae - x, sst);
  nlohmann::json per_level = nlohmann::json::array();
  Tensor r = z;
  for (int64_t l = 0; l < L; ++l) {
    Tensor idx = codes.select(1, l).contiguous();
    r = r - impl->codebooks[static_cast<size_t>(l)].index_select(0, idx);
    ErrorStats le = error_stats(r, sst_z);
    nlohmann::json lv = {{"level", l}, {"latent_relative_mse", le.relative},
                         {"dead_codes_reset", resets[static_cast<size_t>(l)]}};
    lv.update(usage_json(idx, K));
    per_level.push_back(std::move(lv));
  }
  nlohmann::json loss = {{"first", curve.empty() ? 0.0 : curve.front()},
                         {"last", curve.empty() ? 0.0 : curve.back()},
                         {"min", curve.empty() ? 0.0 : *std::min_element(curve.begin(), curve.end())},
                         {"recon_last", recon_last},
                         {"quant_last", quant_last}};
  nlohmann::json pts = nlohmann::json::array();
  const size_t P = std::min<size_t>(50, curve.size());
  for (size_t i = 0; i < P; ++i) {
    const size_t e = P == 1 ? curve.size() - 1 : (i * (curve.size() - 1) + (P - 1) / 2) / (P - 1);
    pts.push_back({{"epoch", e + 1}, {"loss", curve[e]}});
  }
  loss["curve"] = std::move(pts);
  int64_t total_resets = 0;
  for (auto v : resets) total_resets += v;
  GENREC_LOG_INFO("rq-vae: relative mse %.4f (autoencoder %.4f), %lld dead codes reset", err.relative,
                  ae_err.relative, static_cast<long long>(total_resets));
  RQResult res;
  res.sid = to_semantic_ids(codes, n, L, K);
  res.report = {{"latent_dim", D},
                {"mse", err.mse},
                {"relative_mse", err.relative},
                {"autoencoder_relative_mse", ae_err.relative},
                {"loss", std::move(loss)},
                {"dead_codes_reset", total_resets},
                {"kmeans_init_seconds", init_seconds},
                {"per_level", std::move(per_level)}};
  res.quantizer = ResidualQuantizer(std::move(impl));
  return res;
}

void check_int(const char* key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    throw InvalidInput(std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                       ", got " + std::to_string(v));
}

const ResidualQuantizer::Impl& need(const std::shared_ptr<const ResidualQuantizer::Impl>& p) {
  if (!p) throw InternalError("residual quantizer: not fitted");
  return *p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RQOptions

void RQOptions::validate() const {
  if (method != "rq-kmeans" && method != "rq-vae")
    throw InvalidInput("sid.method must be one of rq-kmeans, rq-vae, got '" + method + "'");
  check_int("sid.levels", levels, 1, 64);
  check_int("sid.codebook_size", codebook_size, 1, 1 << 20);
  check_int("sid.kmeans_iters", kmeans_iters, 0, 1000000);
  check_int("sid.threads", threads, 0, 4096);
  if (method == "rq-vae") {
    check_int("sid.latent_dim", latent_dim, 1, 1 << 16);
    for (size_t i = 0; i < hidden.size(); ++i) {
      if (hidden[i] < 1 || hidden[i] > (1 << 16))
        throw InvalidInput("sid.hidden[" + std::to_string(i) + "] must be between 1 and 65536, got " +
                           std::to_string(hidden[i]));
    }
    if (!(std::isfinite(beta) && beta >= 0)) throw InvalidInput("sid.beta must be a finite number >= 0, got " + std::to_string(beta));
    check_int("sid.epochs", epochs, 0, 10000000);
    check_int("sid.batch_size", batch_size, 1, 1 << 24);
    if (!(std::isfinite(lr) && lr > 0)) throw InvalidInput("sid.lr must be a finite number > 0, got " + std::to_string(lr));
  }
}

nlohmann::json RQOptions::to_json() const {
  nlohmann::json j = {{"method", method}, {"levels", levels}, {"codebook_size", codebook_size},
                      {"kmeans_iters", kmeans_iters}, {"seed", seed}, {"threads", threads}};
  if (method == "rq-vae") {
    j.update({{"latent_dim", latent_dim}, {"hidden", hidden}, {"beta", beta}, {"epochs", epochs},
              {"batch_size", batch_size}, {"lr", lr}, {"kmeans_init", kmeans_init},
              {"reset_dead_codes", reset_dead_codes}});
  } else {
    j["balanced"] = balanced;
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// fit

RQResult fit_residual_quantizer(const float* x, int64_t n, int64_t dim, const RQOptions& options,
                                const ProgressCallback& progress) {
  options.validate();
  if (n < 1) throw InvalidInput("residual quantizer: no items to quantise");
  if (dim < 1) throw InvalidInput("residual quantizer: item vectors have no dimensions");
  if (n >= std::numeric_limits<int32_t>::max()) throw InvalidInput("residual quantizer: too many items (" + std::to_string(n) + ")");
  GENREC_ASSERT(x != nullptr);
  check_finite(x, n, dim, "residual quantizer input");
  ThreadScope threads(options.threads);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor xt = from_rows(x, n, dim);
  RQResult res = options.method == "rq-vae" ? fit_rq_vae(xt, options, progress) : fit_rq_kmeans(xt, options, progress);
  nlohmann::json head = {{"method", options.method}, {"options", options.to_json()}, {"n_items", n}, {"dim", dim},
                         {"levels", options.levels}, {"codebook_size", options.codebook_size},
                         {"seconds", seconds_since(t0)}};
  head.update(res.report);
  res.report = std::move(head);
  GENREC_LOG_INFO("%s: %lld items x %lld dims -> %lld levels x %lld codes in %.2f s, relative mse %.4f",
                  options.method.c_str(), static_cast<long long>(n), static_cast<long long>(dim),
                  static_cast<long long>(options.levels), static_cast<long long>(options.codebook_size),
                  res.report["seconds"].get<double>(), res.report["relative_mse"].get<double>());
  return res;
}

// ---------------------------------------------------------------------------------------------
// ResidualQuantizer

ResidualQuantizer::ResidualQuantizer() = default;
ResidualQuantizer::ResidualQuantizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
ResidualQuantizer::~ResidualQuantizer() = default;
ResidualQuantizer::ResidualQuantizer(const ResidualQuantizer&) = default;
ResidualQuantizer& ResidualQuantizer::operator=(const ResidualQuantizer&) = default;
ResidualQuantizer::ResidualQuantizer(ResidualQuantizer&&) noexcept = default;
ResidualQuantizer& ResidualQuantizer::operator=(ResidualQuantizer&&) noexcept = default;

const std::string& ResidualQuantizer::method() const { return need(impl_).method; }
int64_t ResidualQuantizer::dim() const { return need(impl_).dim; }
int64_t ResidualQuantizer::levels() const { return need(impl_).levels; }
int64_t ResidualQuantizer::codebook_size() const { return need(impl_).codebook_size; }
int64_t ResidualQuantizer::code_dim() const { return need(impl_).code_dim; }

std::vector<float> ResidualQuantizer::codebook(int64_t level) const {
  const Impl& m = need(impl_);
  if (level < 0 || level >= m.levels)
    throw InvalidInput("residual quantizer: level " + std::to_string(level) + " out of range [0, " +
                       std::to_string(m.levels) + ")");
  Tensor c = m.codebooks[static_cast<size_t>(level)].contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<int32_t> ResidualQuantizer::encode(const float* x, int64_t n) const {
  const Impl& m = need(impl_);
  if (n < 0) throw InvalidInput("residual quantizer: negative row count");
  if (n == 0) return {};
  check_finite(x, n, m.dim, "residual quantizer encode");
  Tensor codes = encode_tensor(m, from_rows(x, n, m.dim)).to(torch::kInt).contiguous();
  return std::vector<int32_t>(codes.data_ptr<int32_t>(), codes.data_ptr<int32_t>() + codes.numel());
}

std::vector<float> ResidualQuantizer::decode(const int32_t* codes, int64_t n) const {
  const Impl& m = need(impl_);
  if (n < 0) throw InvalidInput("residual quantizer: negative row count");
  if (n == 0) return {};
  for (int64_t i = 0; i < n * m.levels; ++i) {
    if (codes[i] < 0 || codes[i] >= m.codebook_size)
      throw InvalidInput("residual quantizer decode: row " + std::to_string(i / m.levels) + " level " +
                         std::to_string(i % m.levels) + ": code " + std::to_string(codes[i]) +
                         " out of range [0, " + std::to_string(m.codebook_size) + ")");
  }
  Tensor c = torch::from_blob(const_cast<int32_t*>(codes), {n, m.levels}, torch::kInt).to(torch::kLong);
  Tensor out = decode_tensor(m, c).contiguous();
  return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
}

void ResidualQuantizer::save(const std::filesystem::path& path) const {
  const Impl& m = need(impl_);
  std::map<std::string, Tensor> tensors;
  for (int64_t l = 0; l < m.levels; ++l) tensors["codebook." + std::to_string(l)] = m.codebooks[static_cast<size_t>(l)];
  if (m.method == "rq-vae") {
    for (const auto& p : m.encoder->named_parameters()) tensors["encoder." + p.key()] = p.value().detach();
    for (const auto& p : m.decoder->named_parameters()) tensors["decoder." + p.key()] = p.value().detach();
    tensors["input_mean"] = m.input_mean;
    tensors["input_scale"] = m.input_scale;
  }
  std::map<std::string, std::string> meta = {{"format", "genrec-rq 1"},
                                             {"method", m.method},
                                             {"dim", std::to_string(m.dim)},
                                             {"levels", std::to_string(m.levels)},
                                             {"codebook_size", std::to_string(m.codebook_size)},
                                             {"code_dim", std::to_string(m.code_dim)},
                                             {"hidden", nlohmann::json(m.hidden).dump()},
                                             {"options", m.options.dump()}};
  write_safetensors_from_torch(path, tensors, meta);
}

ResidualQuantizer ResidualQuantizer::load(const std::filesystem::path& path) {
  const std::string where = path.string() + ": ";
  SafetensorsFile file(path);
  const auto& meta = file.metadata();
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) throw InvalidInput(where + "not a genrec residual quantizer (metadata '" + key + "' missing)");
    return it->second;
  };
  if (get("format") != "genrec-rq 1")
    throw InvalidInput(where + "unsupported residual quantizer format '" + get("format") + "'");
  auto get_int = [&](const std::string& key, int64_t lo) {
    const std::string& s = get(key);
    try {
      size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used != s.size() || v < lo) throw std::invalid_argument(s);
      return static_cast<int64_t>(v);
    } catch (const std::exception&) {
      throw InvalidInput(where + "metadata '" + key + "' is not a valid integer: '" + s + "'");
    }
  };
  auto impl = std::make_shared<Impl>();
  impl->method = get("method");
  if (impl->method != "rq-kmeans" && impl->method != "rq-vae") throw InvalidInput(where + "unknown method '" + impl->method + "'");
  impl->dim = get_int("dim", 1);
  impl->levels = get_int("levels", 1);
  impl->codebook_size = get_int("codebook_size", 1);
  impl->code_dim = get_int("code_dim", 1);
  try {
    impl->options = nlohmann::json::parse(get("options"));
    impl->hidden = nlohmann::json::parse(get("hidden")).get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidInput(where + "bad metadata: " + e.what());
  }
  auto tensor = [&](const std::string& name, const std::vector<int64_t>& shape) {
    Tensor t = to_torch(file, file.at(name));
    if (t.scalar_type() != torch::kFloat || t.sizes().vec() != shape)
      throw InvalidInput(where + "tensor " + name + " must be F32 of shape " + nlohmann::json(shape).dump());
    return t;
  };
  for (int64_t l = 0; l < impl->levels; ++l)
    impl->codebooks.push_back(tensor("codebook." + std::to_string(l), {impl->codebook_size, impl->code_dim}));
  if (impl->method == "rq-vae") {
    for (int64_t h : impl->hidden)
      if (h < 1) throw InvalidInput(where + "bad metadata: hidden widths must be >= 1");
    torch::NoGradGuard no_grad;
    impl->encoder = make_mlp(impl->dim, impl->hidden, impl->code_dim);
    std::vector<int64_t> rev(impl->hidden.rbegin(), impl->hidden.rend());
    impl->decoder = make_mlp(impl->code_dim, rev, impl->dim);
    for (auto* mlp : {&impl->encoder, &impl->decoder}) {
      const std::string prefix = mlp == &impl->encoder ? "encoder." : "decoder.";
      for (auto& p : (*mlp)->named_parameters()) p.value().copy_(tensor(prefix + p.key(), p.value().sizes().vec()));
      (*mlp)->eval();
    }
    impl->input_mean = tensor("input_mean", {impl->dim});
    impl->input_scale = tensor("input_scale", {1});
  } else if (impl->code_dim != impl->dim) {
    throw InvalidInput(where + "rq-kmeans codebooks must have the input's dimension");
  }
  return ResidualQuantizer(std::move(impl));
}

}  // namespace genrec
