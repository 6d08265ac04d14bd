// Metrics of ranking (CTR-style) predictions: per-event outputs of a ranking model against the
// events' task labels. Torch-free.
//
//   auc       P(score of a random positive > score of a random negative), ties counted half
//             (Mann-Whitney U, computed by sorting: O(n log n)). NaN when a class is missing.
//   gauc      per-user AUC averaged with weight = that user's number of labelled events, over the
//             users having both classes; NaN when no user has both. `users` counts those users.
//   logloss   mean of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] from the logit z,
//             computed as softplus(-z) or softplus(z) (log1p/exp form): finite for any finite z.
//   rmse, mae regression errors.
// Binary labels must be 0 or 1. A NaN score makes auc/gauc NaN (and logloss NaN). Empty input
// gives NaN for every mean.
//
// ranking_metrics() evaluates every task of a ranking model at once. outputs and labels are
// [N * n_tasks] row-major (row = one candidate event of user users[row]); outputs are raw (logits
// for binary tasks, predicted values for regression tasks); a NaN label means the task has no
// label on that row, and the row is skipped for that task. Keys, for a task named T:
//   binary:     "T/auc", "T/gauc", "T/gauc_users", "T/logloss", "T/positive_rate", "T/n"
//   regression: "T/rmse", "T/mae", "T/n"
// where n counts the labelled rows. Values may be NaN (see above; nlohmann::json writes null).
//
// Example:
//   auto m = ranking_metrics(rank_data.tasks, users, outputs, labels);
//   double auc = m["like/auc"];
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "genrec/rank/rank_data.h"

namespace genrec {

// Throws InvalidInput when sizes differ or a label is not 0/1.
double auc(const std::vector<float>& scores, const std::vector<float>& labels);

struct GaucResult {
  double gauc = 0;    // NaN when no user has both classes
  int64_t users = 0;  // users with both classes (those averaged)
};
// Throws InvalidInput when sizes differ or a label is not 0/1.
GaucResult gauc(const std::vector<int32_t>& users, const std::vector<float>& scores, const std::vector<float>& labels);

// -log P(label | logit) for a label 0 or 1, stable for any finite logit.
double log_loss_from_logit(double logit, double label);
// Mean log_loss_from_logit. Throws InvalidInput when sizes differ or a label is not 0/1.
double mean_log_loss(const std::vector<float>& logits, const std::vector<float>& labels);

// Throw InvalidInput when sizes differ.
double rmse(const std::vector<float>& predictions, const std::vector<float>& targets);
double mae(const std::vector<float>& predictions, const std::vector<float>& targets);

// Throws InvalidInput when tasks is empty, sizes mismatch (users N, outputs and labels
// N * tasks.size()) or a binary task's label is neither NaN, 0 nor 1.
std::map<std::string, double> ranking_metrics(const std::vector<RankTask>& tasks, const std::vector<int32_t>& users,
                                              const std::vector<float>& outputs, const std::vector<float>& labels);

}  // namespace genrec
