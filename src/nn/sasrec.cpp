#include "genrec/nn/sasrec.h"

#include <cmath>

#include "genrec/core/error.h"

namespace genrec {

CausalSelfAttentionImpl::CausalSelfAttentionImpl(int64_t d_model, int64_t n_heads, double dropout)
    : d_model_(d_model), n_heads_(n_heads) {
  q_ = register_module("q", torch::nn::Linear(d_model, d_model));
  k_ = register_module("k", torch::nn::Linear(d_model, d_model));
  v_ = register_module("v", torch::nn::Linear(d_model, d_model));
  out_ = register_module("out", torch::nn::Linear(d_model, d_model));
  drop_ = register_module("drop", torch::nn::Dropout(dropout));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& key_value) {
  const int64_t B = query.size(0), T = query.size(1), H = n_heads_, dh = d_model_ / n_heads_;
  auto split = [&](const torch::Tensor& t) { return t.view({B, T, H, dh}).transpose(1, 2); };  // [B, H, T, dh]
  torch::Tensor q = split(q_(query)), k = split(k_(key_value)), v = split(v_(key_value));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));  // [B, H, T, T]
  torch::Tensor future = torch::ones({T, T}, torch::dtype(torch::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  torch::Tensor attn = drop_(torch::softmax(scores, -1));
  torch::Tensor ctx = torch::matmul(attn, v).transpose(1, 2).reshape({B, T, d_model_});
  return out_(ctx);
}

SASRecImpl::SASRecImpl(SASRecOptions options) : options_(options) { reset(); }

void SASRecImpl::reset() {
  const auto& o = options_;
  if (o.d_model() < 1 || o.max_len() < 1 || o.n_blocks() < 1 || o.n_heads() < 1)
    throw InvalidInput("sasrec: d_model, max_len, n_blocks and n_heads must be >= 1");
  if (o.d_model() % o.n_heads() != 0)
    throw InvalidInput("sasrec: model.d_model (" + std::to_string(o.d_model()) + ") must be divisible by model.n_heads (" +
                       std::to_string(o.n_heads()) + ")");
  if (!(o.dropout() >= 0 && o.dropout() < 1)) throw InvalidInput("sasrec: model.dropout must be in [0, 1)");
  positions_ = register_module("positions", torch::nn::Embedding(o.max_len(), o.d_model()));
  input_dropout_ = register_module("input_dropout", torch::nn::Dropout(o.dropout()));
  for (int64_t b = 0; b < o.n_blocks(); ++b) {
    std::string s = std::to_string(b);
    attn_norms_.push_back(register_module("attn_norm" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()}).eps(1e-8))));
    attns_.push_back(register_module("attn" + s, CausalSelfAttention(o.d_model(), o.n_heads(), o.dropout())));
    ffn_norms_.push_back(register_module("ffn_norm" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()}).eps(1e-8))));
    ffn1_.push_back(register_module("ffn1_" + s, torch::nn::Linear(o.d_model(), o.d_model())));
    ffn2_.push_back(register_module("ffn2_" + s, torch::nn::Linear(o.d_model(), o.d_model())));
    ffn_drop1_.push_back(register_module("ffn_drop1_" + s, torch::nn::Dropout(o.dropout())));
    ffn_drop2_.push_back(register_module("ffn_drop2_" + s, torch::nn::Dropout(o.dropout())));
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()}).eps(1e-8)));
}

void SASRecImpl::pretty_print(std::ostream& stream) const {
  stream << "genrec::SASRec(d_model=" << options_.d_model() << ", max_len=" << options_.max_len()
         << ", n_blocks=" << options_.n_blocks() << ", n_heads=" << options_.n_heads() << ", dropout=" << options_.dropout()
         << ")";
}

torch::Tensor SASRecImpl::forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor&,
                                  const torch::Tensor&) {
  const int64_t T = x.size(1);
  if (T > options_.max_len())
    throw InvalidInput("sasrec: sequence width " + std::to_string(T) + " exceeds max_len " + std::to_string(options_.max_len()));
  torch::Tensor pos = torch::arange(T, torch::kLong);
  torch::Tensor valid = (pos.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).to(x.dtype());  // [B, T, 1]
  torch::Tensor h = x * std::sqrt(static_cast<double>(options_.d_model())) + positions_(pos).unsqueeze(0);
  h = input_dropout_(h) * valid;
  for (size_t b = 0; b < attns_.size(); ++b) {
    torch::Tensor q = attn_norms_[b](h);
    h = q + attns_[b](q, h);
    h = ffn_norms_[b](h);
    h = h + ffn_drop2_[b](ffn2_[b](ffn_drop1_[b](torch::relu(ffn1_[b](h)))));
    h = h * valid;
  }
  return final_norm_(h);
}

}  // namespace genrec
