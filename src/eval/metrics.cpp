#include "genrec/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "genrec/core/error.h"

namespace genrec {

namespace {
// Sum of 1/(m) for m in [a, b], both >= 1. Exact loop for short ranges, asymptotic
// expansion of the harmonic numbers for long ones (error < 1e-12).
double harmonic_range(int64_t a, int64_t b) {
  if (b < a) return 0.0;
  if (b - a < 64) {
    double s = 0;
    for (int64_t m = a; m <= b; ++m) s += 1.0 / static_cast<double>(m);
    return s;
  }
  auto H = [](double n) {
    if (n < 64) {
      double s = 0;
      for (int64_t m = 1; m <= static_cast<int64_t>(n); ++m) s += 1.0 / static_cast<double>(m);
      return s;
    }
    return std::log(n) + 0.57721566490153286 + 1.0 / (2 * n) - 1.0 / (12 * n * n) + 1.0 / (120 * n * n * n * n);
  };
  return H(static_cast<double>(b)) - H(static_cast<double>(a - 1));
}
}  // namespace

double expected_recall_at(int64_t k, const RankInfo& r) {
  // Positions greater .. greater+ties are equally likely; count those < k.
  int64_t hits = std::min(r.ties + 1, k - r.greater);
  return hits <= 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(r.ties + 1);
}

double expected_ndcg_at(int64_t k, const RankInfo& r) {
  double s = 0;
  int64_t last = std::min(r.greater + r.ties, k - 1);
  for (int64_t pos = r.greater; pos <= last; ++pos) s += 1.0 / std::log2(static_cast<double>(pos) + 2.0);
  return s / static_cast<double>(r.ties + 1);
}

double expected_reciprocal_rank(const RankInfo& r) {
  return harmonic_range(r.greater + 1, r.greater + r.ties + 1) / static_cast<double>(r.ties + 1);
}

MetricAccumulator::MetricAccumulator(std::vector<int64_t> ks, int64_t n_items)
    : ks_(std::move(ks)), n_items_(n_items) {
  if (ks_.empty()) throw InvalidInput("metrics: need at least one cut-off K");
  for (auto k : ks_)
    if (k < 1) throw InvalidInput("metrics: cut-off K must be >= 1, got " + std::to_string(k));
  std::sort(ks_.begin(), ks_.end());
  ks_.erase(std::unique(ks_.begin(), ks_.end()), ks_.end());
  recall_sum_.assign(ks_.size(), 0.0);
  ndcg_sum_.assign(ks_.size(), 0.0);
  if (n_items_ > 0) covered_.assign(ks_.size(), std::vector<uint8_t>(static_cast<size_t>(n_items_) + 1, 0));
}

void MetricAccumulator::add(const RankInfo& r) {
  GENREC_ASSERT(r.greater >= 0 && r.ties >= 0);
  ++n_;
  for (size_t i = 0; i < ks_.size(); ++i) {
    recall_sum_[i] += expected_recall_at(ks_[i], r);
    ndcg_sum_[i] += expected_ndcg_at(ks_[i], r);
  }
  mrr_sum_ += expected_reciprocal_rank(r);
}

void MetricAccumulator::add_top_list(const int32_t* items, int64_t n) {
  if (covered_.empty()) return;
  for (size_t i = 0; i < ks_.size(); ++i) {
    int64_t m = std::min(n, ks_[i]);
    for (int64_t p = 0; p < m; ++p) {
      int32_t it = items[p];
      GENREC_ASSERT(it >= 1 && it <= n_items_);
      covered_[i][static_cast<size_t>(it)] = 1;
    }
  }
}

std::map<std::string, double> MetricAccumulator::result() const {
  std::map<std::string, double> out;
  double n = n_ > 0 ? static_cast<double>(n_) : 1.0;
  for (size_t i = 0; i < ks_.size(); ++i) {
    std::string k = std::to_string(ks_[i]);
    out["recall@" + k] = recall_sum_[i] / n;
    out["ndcg@" + k] = ndcg_sum_[i] / n;
    if (!covered_.empty()) {
      int64_t c = 0;
      for (auto f : covered_[i]) c += f;
      out["coverage@" + k] = static_cast<double>(c) / static_cast<double>(n_items_);
    }
  }
  out["mrr"] = mrr_sum_ / n;
  return out;
}

}  // namespace genrec
