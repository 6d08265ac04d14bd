#include "genrec/rank/genrank.h"

#include <torch/torch.h>

#include <cmath>

#include "genrec/core/error.h"

namespace genrec {

void GenRankOptions::validate() const {
  auto need = [](bool ok, const std::string& message) {
    if (!ok) throw InvalidInput("genrank: " + message);
  };
  need(n_items_ >= 1, "needs at least one item");
  need(n_feedback_ >= 1, "needs at least one feedback token");
  need(n_tasks_ >= 1, "model.tasks must name at least one task");
  need(layout_ == "action" || layout_ == "interleaved",
       "model.layout must be action or interleaved, got '" + layout_ + "'");
  need(max_len_ >= 1, "model.max_len must be >= 1, got " + std::to_string(max_len_));
  need(micro_batch_ >= 1, "model.micro_batch must be >= 1, got " + std::to_string(micro_batch_));
}

GenRankImpl::GenRankImpl(GenRankOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  o.validate();
  const int64_t D = o.d_model();
  items_ = register_module("items", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_items() + 1, D).padding_idx(0)));
  feedback_ = register_module("feedback",
                              torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_feedback() + 2, D).padding_idx(0)));
  if (o.layout() == "action")
    prev_items_ = register_module("prev_items",
                                  torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_items() + 1, D).padding_idx(0)));
  if (o.head_item())
    head_items_ = register_module("head_items",
                                  torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_items() + 1, D).padding_idx(0)));
  {
    torch::NoGradGuard ng;
    for (auto* table : {&items_, &feedback_, &prev_items_, &head_items_}) {
      if (!*table) continue;
      (*table)->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(D)));
      (*table)->weight[0].zero_();
    }
  }
  const int64_t tokens = o.layout() == "action" ? o.max_len() + 1 : 2 * o.max_len() + 1;
  encoder_ = register_module("encoder", HSTU(HSTUOptions(D, tokens)
                                                 .n_blocks(o.n_blocks())
                                                 .n_heads(o.n_heads())
                                                 .dropout(o.dropout())
                                                 .use_time_bias(o.time_bias())
                                                 .attn_scale(o.attn_scale())));
  heads_ = register_module("heads", torch::nn::ModuleList());
  for (int64_t t = 0; t < o.n_tasks(); ++t)
    heads_->push_back(torch::nn::Sequential(torch::nn::Linear(o.head_item() ? 2 * D : D, D), torch::nn::SiLU(),
                                            torch::nn::Linear(D, 1)));
}

GenRankImpl::Tokens GenRankImpl::history_tokens(const RankSeq& seq) {
  TORCH_CHECK(seq.items.dim() == 2 && seq.feedback.sizes() == seq.items.sizes(),
              "genrank: items and feedback must be [B, T], got ", seq.items.sizes(), " and ", seq.feedback.sizes());
  const int64_t B = seq.items.size(0), T = seq.items.size(1), D = options_.d_model();
  const bool with_time = options_.time_bias() && seq.times.defined();
  Tokens out;
  torch::Tensor len = seq.lengths.to(torch::kLong);
  if (options_.layout() == "action") {
    // Token t = item t + (item, feedback) of event t - 1: each token carries one whole earlier
    // event, correctly paired, and the item whose feedback it predicts.
    torch::Tensor begin = torch::full({B, 1}, options_.n_feedback() + 1, seq.feedback.options());
    torch::Tensor prev_fb = torch::cat({begin, seq.feedback.narrow(1, 0, std::max<int64_t>(T - 1, 0))}, 1).narrow(1, 0, T);
    torch::Tensor none = torch::zeros({B, 1}, seq.items.options());
    torch::Tensor prev_item = torch::cat({none, seq.items.narrow(1, 0, std::max<int64_t>(T - 1, 0))}, 1).narrow(1, 0, T);
    out.x = items_(seq.items) + prev_items_(prev_item) + feedback_(prev_fb);  // [B, T, D]
    out.lengths = len;
    if (with_time) out.times = seq.times;
  } else {
    out.x = torch::stack({items_(seq.items), feedback_(seq.feedback)}, 2).reshape({B, 2 * T, D});
    out.lengths = 2 * len;
    if (with_time) out.times = torch::stack({seq.times, seq.times}, 2).reshape({B, 2 * T});
  }
  return out;
}

torch::Tensor GenRankImpl::heads(const torch::Tensor& h, const torch::Tensor& items) {
  torch::Tensor x = options_.head_item() ? torch::cat({h, head_items_(items)}, -1) : h;
  std::vector<torch::Tensor> outs;
  for (const auto& head : *heads_) outs.push_back(head->as<torch::nn::SequentialImpl>()->forward(x));
  return torch::cat(outs, -1);
}

std::vector<torch::Tensor> GenRankImpl::output_biases() {
  std::vector<torch::Tensor> out;
  for (const auto& head : *heads_) {
    auto& layers = *head->as<torch::nn::SequentialImpl>();
    out.push_back(layers.ptr(layers.size() - 1)->as<torch::nn::LinearImpl>()->bias);
  }
  return out;
}

torch::Tensor GenRankImpl::forward_sequence(const RankSeq& seq) {
  Tokens t = history_tokens(seq);
  const int64_t T = seq.items.size(1);
  torch::Tensor h = encoder_->forward(t.x, t.lengths.clamp_min(1), t.times);  // [B, L, D]
  if (options_.layout() == "interleaved")
    h = h.view({h.size(0), T, 2, options_.d_model()}).select(2, 0);  // item tokens
  return heads(h, seq.items);                                        // [B, T, n_tasks]
}

torch::Tensor GenRankImpl::forward_candidates(const RankSeq& history, const RankCandidates& candidates) {
  TORCH_CHECK(candidates.items.dim() == 2 && candidates.items.size(0) == history.items.size(0),
              "genrank: candidate items must be [B, M], got ", candidates.items.sizes());
  Tokens t = history_tokens(history);
  torch::Tensor c = items_(candidates.items);  // [B, M, D]
  if (options_.layout() == "action") {
    // The candidate follows the last history event: it reads that event's feedback.
    torch::Tensor len = history.lengths.to(torch::kLong);
    const int64_t T = history.items.size(1);
    torch::Tensor last = torch::full({history.items.size(0)}, options_.n_feedback() + 1, history.feedback.options());
    torch::Tensor last_item = torch::zeros({history.items.size(0)}, history.items.options());
    if (T > 0) {
      torch::Tensor at = (len - 1).clamp(0, T - 1).unsqueeze(1);
      last = torch::where(len > 0, history.feedback.gather(1, at).squeeze(1), last);
      last_item = torch::where(len > 0, history.items.gather(1, at).squeeze(1), last_item);
    }
    c = c + (prev_items_(last_item) + feedback_(last)).unsqueeze(1);
  }
  torch::Tensor cand_times = options_.time_bias() ? candidates.times : torch::Tensor();
  torch::Tensor h = encoder_->forward_candidates(t.x, t.lengths, t.times, c, cand_times, options_.micro_batch());
  return heads(h, candidates.items);  // [B, M, n_tasks]
}

torch::Tensor GenRankImpl::forward_candidates_naive(const RankSeq& history, const RankCandidates& candidates) {
  const int64_t B = history.items.size(0), T = history.items.size(1), M = candidates.items.size(1);
  torch::Tensor len = history.lengths.to(torch::kLong);
  torch::Tensor rows = torch::arange(B, len.options());
  std::vector<torch::Tensor> outs;
  for (int64_t m = 0; m < M; ++m) {
    // history_b followed by candidate m at position len_b (its feedback: padding, unread).
    RankSeq seq;
    seq.items = torch::cat({history.items, torch::zeros({B, 1}, history.items.options())}, 1);
    seq.items.index_put_({rows, len}, candidates.items.select(1, m));
    seq.feedback = torch::cat({history.feedback, torch::zeros({B, 1}, history.feedback.options())}, 1);
    if (history.times.defined()) {
      seq.times = torch::cat({history.times, torch::zeros({B, 1}, history.times.options())}, 1);
      torch::Tensor ct;
      if (candidates.times.defined()) {
        ct = candidates.times.select(1, m);
      } else {
        ct = T > 0 ? history.times.gather(1, (len - 1).clamp(0, T - 1).unsqueeze(1)).squeeze(1)
                   : torch::zeros({B}, history.times.options());
        ct = torch::where(len > 0, ct, torch::zeros_like(ct));
      }
      seq.times.index_put_({rows, len}, ct);
    }
    seq.lengths = len + 1;
    torch::Tensor out = forward_sequence(seq);  // [B, T + 1, n_tasks]
    outs.push_back(out.index({rows, len}));     // [B, n_tasks]
  }
  if (outs.empty()) return torch::zeros({B, 0, options_.n_tasks()});
  return torch::stack(outs, 1);  // [B, M, n_tasks]
}

}  // namespace genrec
