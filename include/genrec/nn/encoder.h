// The interface shared by causal sequence encoders (SASRec, HSTU, ...).
//
// An encoder maps input embeddings of right-padded sequences to hidden states, causally:
// the output at position t depends only on inputs at positions <= t of the same row, and never
// on the padding after a row's length. That makes a batch padded to any width (or split into
// length buckets) give the same outputs at the valid positions.
//
// Example:
//   torch::Tensor h = encoder->forward(x, lengths, timestamps);   // [B, T, D]
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

namespace genrec {

class SequenceEncoderImpl : public torch::nn::Module {
 public:
  // x:          [B, T, D] float input embeddings, right-padded (rows past a length are ignored)
  // lengths:    [B] int64, number of valid positions per row (1..T)
  // timestamps: [B, T] int64 event times in seconds, or an undefined tensor when the data has none
  // Returns [B, T, D]; values at positions >= length are unspecified.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths,
                                const torch::Tensor& timestamps) = 0;
};

}  // namespace genrec
