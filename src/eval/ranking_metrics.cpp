#include "genrec/eval/ranking_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "genrec/core/error.h"

namespace genrec {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_sizes(const char* what, size_t a, size_t b) {
  if (a != b)
    throw InvalidInput(std::string(what) + ": sizes differ (" + std::to_string(a) + " vs " + std::to_string(b) + ")");
}

void check_binary(const char* what, const std::vector<float>& labels) {
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] != 0.0f && labels[i] != 1.0f)
      throw InvalidInput(std::string(what) + ": label " + std::to_string(labels[i]) + " at " + std::to_string(i) +
                         " is not 0 or 1");
}

// AUC over idx[begin, end), which must be sorted by score ascending. NaN when a class is missing.
double auc_sorted(const std::vector<size_t>& idx, size_t begin, size_t end, const std::vector<float>& scores,
                  const std::vector<float>& labels) {
  double pos = 0, neg = 0, wins = 0;  // wins: positive-over-negative pairs, ties counted half
  for (size_t i = begin; i < end;) {
    size_t j = i;
    double pos_g = 0, neg_g = 0;
    for (; j < end && scores[idx[j]] == scores[idx[i]]; ++j) (labels[idx[j]] == 1.0f ? pos_g : neg_g) += 1;
    wins += pos_g * (neg + 0.5 * neg_g);
    pos += pos_g;
    neg += neg_g;
    i = j;
  }
  return pos > 0 && neg > 0 ? wins / (pos * neg) : kNaN;
}

bool any_nan(const std::vector<float>& v) {
  return std::any_of(v.begin(), v.end(), [](float x) { return std::isnan(x); });
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

std::string fmt_size(size_t n) { return std::to_string(n); }

}  // namespace

double auc(const std::vector<float>& scores, const std::vector<float>& labels) {
  check_sizes("auc", scores.size(), labels.size());
  check_binary("auc", labels);
  if (any_nan(scores)) return kNaN;
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  return auc_sorted(idx, 0, idx.size(), scores, labels);
}

GaucResult gauc(const std::vector<int32_t>& users, const std::vector<float>& scores, const std::vector<float>& labels) {
  check_sizes("gauc", users.size(), scores.size());
  check_sizes("gauc", scores.size(), labels.size());
  check_binary("gauc", labels);
  GaucResult r;
  if (any_nan(scores)) {
    r.gauc = kNaN;
    return r;
  }
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return users[a] != users[b] ? users[a] < users[b] : scores[a] < scores[b];
  });
  double weighted = 0, weight = 0;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j < idx.size() && users[idx[j]] == users[idx[i]]) ++j;
    double a = auc_sorted(idx, i, j, scores, labels);
    if (!std::isnan(a)) {
      weighted += a * static_cast<double>(j - i);
      weight += static_cast<double>(j - i);
      ++r.users;
    }
    i = j;
  }
  r.gauc = r.users > 0 ? weighted / weight : kNaN;
  return r;
}

double log_loss_from_logit(double logit, double label) {
  // -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z).
  return label == 1.0 ? softplus(-logit) : softplus(logit);
}

double mean_log_loss(const std::vector<float>& logits, const std::vector<float>& labels) {
  check_sizes("logloss", logits.size(), labels.size());
  check_binary("logloss", labels);
  if (logits.empty()) return kNaN;
  double s = 0;
  for (size_t i = 0; i < logits.size(); ++i) s += log_loss_from_logit(logits[i], labels[i]);
  return s / static_cast<double>(logits.size());
}

double rmse(const std::vector<float>& predictions, const std::vector<float>& targets) {
  check_sizes("rmse", predictions.size(), targets.size());
  if (predictions.empty()) return kNaN;
  double s = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    double d = static_cast<double>(predictions[i]) - static_cast<double>(targets[i]);
    s += d * d;
  }
  return std::sqrt(s / static_cast<double>(predictions.size()));
}

double mae(const std::vector<float>& predictions, const std::vector<float>& targets) {
  check_sizes("mae", predictions.size(), targets.size());
  if (predictions.empty()) return kNaN;
  double s = 0;
  for (size_t i = 0; i < predictions.size(); ++i)
    s += std::fabs(static_cast<double>(predictions[i]) - static_cast<double>(targets[i]));
  return s / static_cast<double>(predictions.size());
}

std::map<std::string, double> ranking_metrics(const std::vector<RankTask>& tasks, const std::vector<int32_t>& users,
                                              const std::vector<float>& outputs, const std::vector<float>& labels) {
  if (tasks.empty()) throw InvalidInput("ranking metrics: no tasks");
  const size_t nt = tasks.size(), n = users.size();
  if (outputs.size() != n * nt)
    throw InvalidInput("ranking metrics: outputs has " + fmt_size(outputs.size()) + " values, expected " +
                       fmt_size(n) + " rows * " + fmt_size(nt) + " tasks");
  if (labels.size() != n * nt)
    throw InvalidInput("ranking metrics: labels has " + fmt_size(labels.size()) + " values, expected " + fmt_size(n) +
                       " rows * " + fmt_size(nt) + " tasks");
  std::map<std::string, double> out;
  std::vector<int32_t> u;
  std::vector<float> z, y;
  for (size_t t = 0; t < nt; ++t) {
    const std::string& T = tasks[t].name;
    u.clear();
    z.clear();
    y.clear();
    for (size_t row = 0; row < n; ++row) {
      float label = labels[row * nt + t];
      if (std::isnan(label)) continue;
      if (tasks[t].binary && label != 0.0f && label != 1.0f)
        throw InvalidInput("ranking metrics: task '" + T + "': label " + std::to_string(label) + " at row " +
                           fmt_size(row) + " is not 0 or 1");
      u.push_back(users[row]);
      z.push_back(outputs[row * nt + t]);
      y.push_back(label);
    }
    out[T + "/n"] = static_cast<double>(y.size());
    if (tasks[t].binary) {
      double positives = static_cast<double>(std::count(y.begin(), y.end(), 1.0f));
      GaucResult g = gauc(u, z, y);
      out[T + "/auc"] = auc(z, y);
      out[T + "/gauc"] = g.gauc;
      out[T + "/gauc_users"] = static_cast<double>(g.users);
      out[T + "/logloss"] = mean_log_loss(z, y);
      out[T + "/positive_rate"] = y.empty() ? kNaN : positives / static_cast<double>(y.size());
    } else {
      out[T + "/rmse"] = rmse(z, y);
      out[T + "/mae"] = mae(z, y);
    }
  }
  return out;
}

}  // namespace genrec
