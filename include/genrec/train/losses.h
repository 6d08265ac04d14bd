// Next-item losses over hidden states and an item embedding table. Every loss is a mean over
// the N positions given (callers pass only valid positions: no padding enters a loss).
//
//  full softmax: cross-entropy over the whole catalogue, logits = h·Eᵀ / temperature, padding
//                column excluded.
//  sampled softmax: the target against M shared negatives, logits corrected by -log Q(neg)
//                (pass log_q for in-batch / popularity-sampled negatives, or an undefined tensor
//                for uniform negatives, whose correction is a constant); a negative equal to the
//                position's target is masked out (accidental hit).
//  bce: SASRec's original: -log σ(h·e_pos) - log(1 - σ(h·e_neg)), one negative per position.
#pragma once

#include <torch/types.h>

namespace genrec {

// h [N, D], table [V + 1, D] (row 0 = padding), targets [N] int64 in 1..V -> scalar
torch::Tensor full_softmax_loss(const torch::Tensor& h, const torch::Tensor& table, const torch::Tensor& targets,
                                double temperature);

// Full softmax where K "slot" items per row carry an additive logit offset (the history bias of
// sequential models): logit(n, j) = h_n·e_j / temperature + offset(n, j). Per row n and slot k:
// slot_dots [N, K] = h_n·e_item(n,k) (no temperature), slot_offsets [N, K] in logit units,
// slot_mask [N, K] bool (the slots of one row name distinct items; masked slots are ignored),
// target_offset [N] = the offset of the row's target (0 when the target is in no slot).
// Equals the cross-entropy over dense logits with the offsets added, without them in memory.
torch::Tensor full_softmax_loss_with_offsets(const torch::Tensor& h, const torch::Tensor& table,
                                             const torch::Tensor& targets, double temperature,
                                             const torch::Tensor& slot_dots, const torch::Tensor& slot_offsets,
                                             const torch::Tensor& slot_mask, const torch::Tensor& target_offset);

// h [N, D], pos [N, D] target embeddings, neg [M, D], neg_ids [M], targets [N];
// log_q_neg [M] and log_q_pos [N]: log sampling probabilities, or undefined (no correction)
torch::Tensor sampled_softmax_loss(const torch::Tensor& h, const torch::Tensor& pos, const torch::Tensor& neg,
                                   const torch::Tensor& neg_ids, const torch::Tensor& targets,
                                   const torch::Tensor& log_q_neg, const torch::Tensor& log_q_pos,
                                   double temperature);

// h [N, D], pos [N, D], neg [N, D] -> scalar
torch::Tensor bce_loss(const torch::Tensor& h, const torch::Tensor& pos, const torch::Tensor& neg);

}  // namespace genrec
