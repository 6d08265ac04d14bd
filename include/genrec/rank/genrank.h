// The generative ranker: an HSTU stack over a user's (item, feedback) events with one head per
// task, implementing RankNetImpl (rank_net.h). Candidates are scored with M-FALCON.
//
// Layouts (model.layout):
//   "action"      (GenRank's action-oriented layout, T tokens for T events): token t is
//                 E_item(item_t) + E_prev(item_{t-1}) + E_fb(feedback_{t-1}) (a begin token for
//                 t = 0): it carries the whole previous event, item and feedback paired, and
//                 its own item, so position t knows every earlier event and predicts its own
//                 feedback.
//   "interleaved" (HSTU's layout, 2T tokens): item_0, fb_0, item_1, fb_1, ...; the prediction for
//                 event t is read at the item token 2t. Twice the sequence, the same information.
// A candidate is one more item token after the history: E_item(c) + E_prev(last item) +
// E_fb(last feedback) in the action layout, E_item(c) in the interleaved one. Heads: per task Linear(D, D) → SiLU →
// Linear(D, 1) on the token's final hidden state h (with head_item: Linear(2D, D) on [h, e],
// e = E_head(scored item) from a separate table, as DIN-style rankers feed the target item to
// their MLP).
//
// Example:
//   GenRank net(GenRankOptions(n_items, n_feedback, n_tasks).layout("action"));
//   torch::Tensor y = net->forward_candidates(history, candidates);   // [B, M, n_tasks]
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include "genrec/nn/hstu.h"
#include "genrec/rank/rank_net.h"

namespace genrec {

struct GenRankOptions {
  GenRankOptions(int64_t n_items, int64_t n_feedback, int64_t n_tasks)
      : n_items_(n_items), n_feedback_(n_feedback), n_tasks_(n_tasks) {}
  void validate() const;  // throws InvalidInput naming the option
  TORCH_ARG(int64_t, n_items);
  TORCH_ARG(int64_t, n_feedback);
  TORCH_ARG(int64_t, n_tasks);
  TORCH_ARG(int64_t, d_model) = 64;
  TORCH_ARG(int64_t, max_len) = 200;  // events of history the model reads (plus one candidate)
  TORCH_ARG(int64_t, n_blocks) = 2;
  TORCH_ARG(int64_t, n_heads) = 2;
  TORCH_ARG(double, dropout) = 0.2;
  TORCH_ARG(std::string, layout) = "action";  // action | interleaved
  TORCH_ARG(bool, time_bias) = true;
  TORCH_ARG(std::string, attn_scale) = "max_len";  // max_len | count (see HSTUOptions)
  TORCH_ARG(int64_t, micro_batch) = 256;        // M-FALCON candidates per pass
  // Heads also read the scored item's own embedding e (a separate table): [h, e] instead of the
  // token's hidden state h alone, as DIN-style rankers do with the target item.
  TORCH_ARG(bool, head_item) = false;
};

class GenRankImpl : public RankNetImpl {
 public:
  explicit GenRankImpl(GenRankOptions options);
  torch::Tensor forward_sequence(const RankSeq& seq) override;
  torch::Tensor forward_candidates(const RankSeq& history, const RankCandidates& candidates) override;
  std::vector<torch::Tensor> output_biases() override;  // each head's last bias
  // The same scores as forward_candidates, one forward pass per candidate over history +
  // candidate (the slow reference M-FALCON is tested and benchmarked against).
  torch::Tensor forward_candidates_naive(const RankSeq& history, const RankCandidates& candidates);
  const GenRankOptions& options() const { return options_; }

 private:
  struct Tokens {
    torch::Tensor x, times, lengths;  // [B, L, D], [B, L] or undefined, [B]
  };
  Tokens history_tokens(const RankSeq& seq);
  // h [..., D], items [...] (the scored items) -> [..., n_tasks]
  torch::Tensor heads(const torch::Tensor& h, const torch::Tensor& items);

  GenRankOptions options_;
  torch::nn::Embedding items_{nullptr}, feedback_{nullptr};  // feedback: 0 pad, 1..F, F + 1 = begin
  torch::nn::Embedding prev_items_{nullptr};                 // action layout: the previous event's item
  torch::nn::Embedding head_items_{nullptr};                 // head_item: the scored item, read by the heads
  HSTU encoder_{nullptr};
  torch::nn::ModuleList heads_{nullptr};
};
TORCH_MODULE(GenRank);

}  // namespace genrec
