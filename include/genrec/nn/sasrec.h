// SASRec encoder (Kang & McAuley, ICDM 2018): learned absolute position embeddings, causal
// multi-head self-attention blocks with a point-wise feed-forward network, pre-LayerNorm on
// the query as in the authors' code, and a final LayerNorm.
//
// Example:
//   SASRec enc(SASRecOptions(64, 50).n_blocks(2).n_heads(1).dropout(0.2));
//   torch::Tensor h = enc->forward(x, lengths, {});   // x [B, T, 64] -> h [B, T, 64]
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "genrec/nn/encoder.h"

namespace genrec {

struct SASRecOptions {
  SASRecOptions(int64_t d_model, int64_t max_len) : d_model_(d_model), max_len_(max_len) {}
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, max_len);
  TORCH_ARG(int64_t, n_blocks) = 2;
  TORCH_ARG(int64_t, n_heads) = 1;
  TORCH_ARG(double, dropout) = 0.2;
};

// Causal multi-head self-attention: position t attends to positions <= t.
class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(int64_t d_model, int64_t n_heads, double dropout);
  // query [B, T, D], key_value [B, T, D] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key_value);

 private:
  int64_t d_model_, n_heads_;
  torch::nn::Linear q_{nullptr}, k_{nullptr}, v_{nullptr}, out_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

class SASRecImpl : public SequenceEncoderImpl {
 public:
  explicit SASRecImpl(SASRecOptions options);
  void reset();
  void pretty_print(std::ostream& stream) const override;
  using SequenceEncoderImpl::forward;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor& timestamps,
                        const torch::Tensor& query_times) override;
  const SASRecOptions& options() const { return options_; }

 private:
  SASRecOptions options_;
  torch::nn::Embedding positions_{nullptr};
  torch::nn::Dropout input_dropout_{nullptr};
  std::vector<torch::nn::LayerNorm> attn_norms_, ffn_norms_;
  std::vector<CausalSelfAttention> attns_;
  std::vector<torch::nn::Linear> ffn1_, ffn2_;
  std::vector<torch::nn::Dropout> ffn_drop1_, ffn_drop2_;
  torch::nn::LayerNorm final_norm_{nullptr};
};
TORCH_MODULE(SASRec);

}  // namespace genrec
