#include "genrec/models/baselines.h"

#include <algorithm>
#include <map>

#include "genrec/core/error.h"

namespace genrec {

namespace {
void check_fitted(const torch::Tensor& t, const char* model) {
  if (!t.defined()) throw InternalError(std::string(model) + ": score() called before fit() or load()");
}
}  // namespace

PopRecommender::PopRecommender(int32_t n_items) : n_items_(n_items) {}

void PopRecommender::fit(const TrainContext& ctx) {
  auto counts = train_item_counts(ctx.ds, ctx.split);
  counts_ = torch::tensor(std::vector<float>(counts.begin(), counts.end()), torch::kFloat);
}

torch::Tensor PopRecommender::score(const std::vector<History>& batch) {
  check_fitted(counts_, "pop");
  return counts_.unsqueeze(0).expand({static_cast<int64_t>(batch.size()), n_items_ + 1}).contiguous();
}

void PopRecommender::save(torch::serialize::OutputArchive& archive) const { archive.write("model/counts", counts_); }

void PopRecommender::load(torch::serialize::InputArchive& archive) {
  archive.read("model/counts", counts_);
  if (counts_.dim() != 1 || counts_.size(0) != n_items_ + 1) throw InvalidInput("pop checkpoint: counts have the wrong shape");
}

MarkovRecommender::MarkovRecommender(int32_t n_items, MarkovOptions options) : n_items_(n_items), opt_(options) {
  if (opt_.window < 1) throw InvalidInput("model.window must be >= 1, got " + std::to_string(opt_.window));
  if (!(opt_.decay > 0 && opt_.decay <= 1)) throw InvalidInput("model.decay must be in (0, 1], got " + std::to_string(opt_.decay));
  if (opt_.pop_weight < 0) throw InvalidInput("model.pop_weight must be >= 0");
}

nlohmann::json MarkovRecommender::options() const {
  return {{"window", opt_.window}, {"decay", opt_.decay}, {"pop_weight", opt_.pop_weight}};
}

void MarkovRecommender::fit(const TrainContext& ctx) {
  auto counts = train_item_counts(ctx.ds, ctx.split);
  double max_count = std::max(1.0, *std::max_element(counts.begin(), counts.end()));
  std::vector<float> pop(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) pop[i] = static_cast<float>(counts[i] / max_count);

  // Transition counts per source item, gathered as (source, target) pairs then sorted.
  std::vector<std::pair<int32_t, int32_t>> pairs;
  for (int32_t u = 1; u <= ctx.ds.n_users(); ++u) {
    UserEvents ev = ctx.ds.user(u);
    int64_t end = ctx.split.train_end[static_cast<size_t>(u)];
    for (int64_t k = 1; k < end; ++k) pairs.emplace_back(ev.items[k - 1], ev.items[k]);
  }
  std::sort(pairs.begin(), pairs.end());
  std::vector<int64_t> indptr(static_cast<size_t>(n_items_) + 2, 0);
  std::vector<int32_t> indices;
  std::vector<float> values;
  size_t p = 0;
  for (int32_t src = 0; src <= n_items_; ++src) {
    size_t row_begin = indices.size();
    double row_total = 0;
    while (p < pairs.size() && pairs[p].first == src) {
      int32_t dst = pairs[p].second;
      int64_t c = 0;
      while (p < pairs.size() && pairs[p].first == src && pairs[p].second == dst) {
        ++c;
        ++p;
      }
      indices.push_back(dst);
      values.push_back(static_cast<float>(c));
      row_total += static_cast<double>(c);
    }
    for (size_t q = row_begin; q < values.size(); ++q) values[q] = static_cast<float>(values[q] / row_total);
    indptr[static_cast<size_t>(src) + 1] = static_cast<int64_t>(indices.size());
  }
  indptr_ = torch::tensor(indptr, torch::kLong);
  indices_ = torch::tensor(indices, torch::kInt);
  values_ = torch::tensor(values, torch::kFloat);
  pop_ = torch::tensor(pop, torch::kFloat);
}

torch::Tensor MarkovRecommender::score(const std::vector<History>& batch) {
  check_fitted(pop_, "markov");
  const auto B = static_cast<int64_t>(batch.size());
  torch::Tensor out = (pop_ * static_cast<float>(opt_.pop_weight)).unsqueeze(0).repeat({B, 1});
  float* o = out.data_ptr<float>();
  const int64_t* ip = indptr_.data_ptr<int64_t>();
  const int32_t* ix = indices_.data_ptr<int32_t>();
  const float* vx = values_.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const History& h = batch[static_cast<size_t>(b)];
    float* row = o + b * (n_items_ + 1);
    double w = 1.0;
    for (int64_t k = 0; k < opt_.window && k < h.size; ++k, w *= opt_.decay) {
      int32_t src = h.items[h.size - 1 - k];
      if (src < 1 || src > n_items_) throw InvalidInput("markov: history item id " + std::to_string(src) + " out of range");
      for (int64_t q = ip[src]; q < ip[src + 1]; ++q) row[ix[q]] += static_cast<float>(w) * vx[q];
    }
  }
  return out;
}

void MarkovRecommender::save(torch::serialize::OutputArchive& archive) const {
  archive.write("model/indptr", indptr_);
  archive.write("model/indices", indices_);
  archive.write("model/values", values_);
  archive.write("model/pop", pop_);
}

void MarkovRecommender::load(torch::serialize::InputArchive& archive) {
  archive.read("model/indptr", indptr_);
  archive.read("model/indices", indices_);
  archive.read("model/values", values_);
  archive.read("model/pop", pop_);
  if (indptr_.numel() != n_items_ + 2 || pop_.numel() != n_items_ + 1 || indices_.numel() != values_.numel() ||
      indptr_[-1].item<int64_t>() != indices_.numel())
    throw InvalidInput("markov checkpoint: tensors have inconsistent shapes");
  if (indices_.numel() > 0 && (indices_.min().item<int32_t>() < 1 || indices_.max().item<int32_t>() > n_items_))
    throw InvalidInput("markov checkpoint: item ids out of range");
}

}  // namespace genrec
