// DIN ranking network (Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate
// Prediction"): the baseline that the generative ranker is compared against.
//
//   e_j    = E_item(item_j) + E_fb(feedback_j)        a past event (item and the user's feedback)
//   e_c    = E_item(item_c)                           the target / candidate (feedback unknown)
//   w_j    = MLP_att([e_c, e_j, e_c - e_j, e_c ⊙ e_j])  DIN's activation unit: a scalar per event,
//                                                     SiLU hidden layers, no softmax
//   pooled = Σ_j w_j e_j,   mean = (1/n) Σ_j e_j      over the window's n valid events (0 if n = 0)
//   out    = Heads(MLP([pooled, mean, e_c]))          PReLU + dropout hidden layers, then one
//                                                     Linear with n_tasks outputs (one per task)
//
// The activation unit uses SiLU rather than DIN's PReLU/Dice: it runs on every (target, event)
// pair, and libtorch 1.13's PReLU kernels cost several times SiLU's there. The output MLP, which
// runs once per target, keeps PReLU (one slope per unit).
//
// The window of a prediction is the last max_len events before it: forward_sequence's out[b, t]
// reads events [max(0, t - max_len), t) of row b and item t; forward_candidates' candidates read
// the last min(len_b, max_len) history events of row b. Time stamps are not used.
//
// Memory and work are proportional to (targets × max_len), never (T × T): each target's window
// is gathered (max_len events) and targets are processed in chunks whose per-pair tensors stay
// near pair_chunk_bytes (16 MB). In training, a chunk's attention unit is recomputed in backward
// (activation checkpointing; first-order gradients only), so one chunk's per-pair activations
// are held at a time. The first attention layer, a Linear over the 4·D concatenation, is
// evaluated in parts (W_c e_c + W_j e_j + W_d (e_c - e_j) + W_p (e_c ⊙ e_j), the e_j part once
// per event): the same function, without materialising the concatenation. The window mean
// comes from prefix sums (in double).
//
// Example:
//   DIN net(DINOptions(n_items, n_feedback, 2).d_model(64).max_len(50));
//   torch::Tensor logits = net->forward_sequence(seq);                 // [B, T, 2]
//   torch::Tensor scores = net->forward_candidates(history, cands);    // [B, M, 2]
#pragma once

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "genrec/rank/rank_net.h"

namespace genrec {

struct DINOptions {
  DINOptions(int64_t n_items, int64_t n_feedback, int64_t n_tasks)
      : n_items_(n_items), n_feedback_(n_feedback), n_tasks_(n_tasks) {}
  // Throws InvalidInput naming the offending option.
  void validate() const;

  // Item ids 1..n_items (0 = padding).
  TORCH_ARG(int64_t, n_items);
  // Feedback tokens 1..n_feedback (0 = padding).
  TORCH_ARG(int64_t, n_feedback);
  // Outputs per prediction (raw logits / values).
  TORCH_ARG(int64_t, n_tasks);
  // Embedding width D.
  TORCH_ARG(int64_t, d_model) = 64;
  // History window: a prediction reads at most the last max_len events before it.
  TORCH_ARG(int64_t, max_len) = 50;
  // Hidden widths of the attention unit (then a Linear to one scalar); may be empty.
  TORCH_ARG(std::vector<int64_t>, attn_hidden) = std::vector<int64_t>{80, 40};
  // Hidden widths of the output MLP (then the task heads); may be empty.
  TORCH_ARG(std::vector<int64_t>, mlp_hidden) = std::vector<int64_t>{200, 80};
  // Dropout after each hidden layer of the output MLP.
  TORCH_ARG(double, dropout) = 0.1;
  // Memory bound: targets are processed in chunks whose per-pair tensors hold at most about
  // this many bytes (counted at max(4·D, widest attention layer) floats per target-event pair).
  // Outputs do not depend on it beyond float rounding. 16 MB keeps a training chunk's whole
  // working set near 100 MB, which the allocator reuses from chunk to chunk.
  TORCH_ARG(int64_t, pair_chunk_bytes) = int64_t{16} << 20;
};

class DINImpl : public RankNetImpl {
 public:
  explicit DINImpl(DINOptions options);
  void reset();
  void pretty_print(std::ostream& stream) const override;

  // [B, T, n_tasks]: out[b, t] from events [max(0, t - max_len), t) of row b and item t.
  torch::Tensor forward_sequence(const RankSeq& seq) override;
  // [B, M, n_tasks]: candidate m of row b after the last min(len_b, max_len) events of row b.
  torch::Tensor forward_candidates(const RankSeq& history, const RankCandidates& candidates) override;
  std::vector<torch::Tensor> output_biases() override;  // the output layer's bias

  const DINOptions& options() const { return options_; }

 private:
  // Event embeddings e_j [B, T, D] of a sequence.
  torch::Tensor embed_events(const RankSeq& seq);
  // The event part of the first attention layer, (W_j - W_d) e_j: [B, T, D] -> [B, T, H1].
  torch::Tensor event_projection(const torch::Tensor& events);
  // pooled = Σ_j w_j e_j [B, Q, D] of targets ec [B, Q, D] over windows gathered from events
  // [B, T, D] and proj = event_projection(events) at positions idx in 0..T-1: [Q, L] (the same
  // positions for every row; shared = false) or [B, L] (one window per row for all its Q
  // targets; shared = true); valid mask [B, Q or 1, L] (bool). Recomputed in backward
  // (activation checkpointing), so training holds one chunk's per-pair activations at a time.
  torch::Tensor pool_windows(const torch::Tensor& ec, const torch::Tensor& events, const torch::Tensor& proj,
                             const torch::Tensor& idx, const torch::Tensor& mask, bool shared);
  // Output MLP and heads: [B, Q, n_tasks] from ec, pooled, mean [B, Q, D].
  torch::Tensor predict(const torch::Tensor& ec, const torch::Tensor& pooled, const torch::Tensor& mean);
  // Targets per chunk when each target has `rows` batch rows of max_len pairs.
  int64_t chunk_targets(int64_t rows) const;

  DINOptions options_;
  torch::nn::Embedding items_{nullptr}, feedback_{nullptr};
  // Registered as ModuleLists (parameter names attn_layers.0.weight, ...); typed handles here.
  torch::nn::ModuleList attn_list_{nullptr}, mlp_list_{nullptr}, mlp_act_list_{nullptr};
  std::vector<torch::nn::Linear> attn_layers_;  // Linear(4D, h1), ..., Linear(h_last, 1); SiLU between
  std::vector<torch::nn::Linear> mlp_layers_;   // Linear(3D, m1), ..., Linear(m_{k-1}, m_k)
  std::vector<torch::nn::PReLU> mlp_acts_;      // per-channel PReLU after each MLP hidden layer
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear heads_{nullptr};            // Linear(m_k or 3D, n_tasks)
};
TORCH_MODULE(DIN);

}  // namespace genrec
