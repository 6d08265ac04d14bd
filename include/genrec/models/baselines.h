// Non-neural baselines.
//  pop:    scores every item by its number of training events (most popular first).
//  markov: first-order item-to-item transitions. For a history ending in items
//          h_{-1}, h_{-2}, ..., score(i) = sum_{k<window} decay^k P(i | h_{-1-k}) + pop_weight * pop(i),
//          where P(i | j) is the share of j's training successors that were i and pop(i) is the
//          item's count divided by the largest count (a small back-off that orders items the
//          transitions do not reach).
#pragma once

#include "genrec/models/recommender.h"

namespace genrec {

class PopRecommender : public Recommender {
 public:
  explicit PopRecommender(int32_t n_items);
  std::string type() const override { return "pop"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  int32_t n_items() const override { return n_items_; }
  void fit(const TrainContext& ctx) override;
  torch::Tensor score(const std::vector<History>& batch) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int32_t n_items_;
  torch::Tensor counts_;  // [n_items + 1] float
};

struct MarkovOptions {
  int64_t window = 1;        // how many of the last history items vote
  double decay = 0.5;        // weight of the k-th last item: decay^k
  double pop_weight = 1e-3;  // popularity back-off
};

class MarkovRecommender : public Recommender {
 public:
  MarkovRecommender(int32_t n_items, MarkovOptions options);
  std::string type() const override { return "markov"; }
  nlohmann::json options() const override;
  int32_t n_items() const override { return n_items_; }
  void fit(const TrainContext& ctx) override;
  torch::Tensor score(const std::vector<History>& batch) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int32_t n_items_;
  MarkovOptions opt_;
  // Row-normalised transitions in CSR over source items: row j = P(. | j).
  torch::Tensor indptr_;   // [n_items + 2] int64
  torch::Tensor indices_;  // [nnz] int32
  torch::Tensor values_;   // [nnz] float
  torch::Tensor pop_;      // [n_items + 1] float, count / max count
};

}  // namespace genrec
