// The interface shared by ranking networks (the HSTU generative ranker, the DIN baseline).
//
// A ranking network predicts, for an event of a user, that event's task labels (P(like),
// rating, one action type, ...) from the user's earlier events and the event's own item: the
// item is known when a candidate is scored, the user's feedback on it is not. Two entry points:
//
//   forward_sequence(seq)          teacher forcing: out[b, t] predicts event t of row b from
//                                  events < t (items and feedback) and item t. Used to train on
//                                  every event of a window at once.
//   forward_candidates(hist, c)    ranking: out[b, m] predicts candidate m of row b after the
//                                  whole history of row b; candidates never see each other.
//
// Both return raw outputs [B, *, n_tasks]: logits for binary tasks, values for regression
// tasks (with model.output = "feedback" the Ranker builds the net with one output per feedback
// token instead, the softmax's logits, and reads the tasks off them: ranker.h). Consistency
// contract (tests check it for every network): forward_candidates(hist, {c}) equals
// forward_sequence(hist followed by c, with any feedback)[b, len_b] — a candidate is scored
// exactly as if it were the next event.
//
// Feedback tokens are ints in 1..n_feedback (the event's action, or its rating level); 0 is
// padding. Item ids are dense (1..n_items), 0 is padding. Timestamps are optional.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace genrec {

// Right-padded event sequences.
struct RankSeq {
  torch::Tensor items;     // [B, T] int64, 0 = padding
  torch::Tensor feedback;  // [B, T] int64 in 0..n_feedback, 0 = padding
  torch::Tensor times;     // [B, T] int64 seconds, or undefined when the data has none
  torch::Tensor lengths;   // [B] int64 in 0..T (0 = empty history, allowed for candidates)
};

// Right-padded candidate sets, one per history row.
struct RankCandidates {
  torch::Tensor items;   // [B, M] int64, 0 = padding
  torch::Tensor times;   // [B, M] int64 request/impression times, or undefined
  torch::Tensor counts;  // [B] int64 in 0..M
};

class RankNetImpl : public torch::nn::Module {
 public:
  // [B, T, n_tasks]; rows t >= lengths[b] are unspecified (finite).
  virtual torch::Tensor forward_sequence(const RankSeq& seq) = 0;
  // [B, M, n_tasks]; entries m >= counts[b] are unspecified (finite).
  virtual torch::Tensor forward_candidates(const RankSeq& history, const RankCandidates& candidates) = 0;
  // The bias parameters added last to the outputs, in output order: their concatenation is one
  // value per output column (train.prior_bias sets them to the training labels' prior).
  virtual std::vector<torch::Tensor> output_biases() = 0;
};

}  // namespace genrec
