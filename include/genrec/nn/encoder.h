// The interface shared by causal sequence encoders (SASRec, HSTU, ...).
//
// An encoder maps input embeddings of right-padded sequences to hidden states, causally:
// the output at position t depends only on inputs at positions <= t of the same row, and never
// on the padding after a row's length. That makes a batch padded to any width (or split into
// length buckets) give the same outputs at the valid positions.
//
// Example:
//   torch::Tensor h = encoder->forward(x, lengths, timestamps);   // [B, T, D]
//   torch::Tensor h = encoder->forward(x, lengths, timestamps, query_times);
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

namespace genrec {

class SequenceEncoderImpl : public torch::nn::Module {
 public:
  // x:          [B, T, D] float input embeddings, right-padded (rows past a length are ignored)
  // lengths:    [B] int64, number of valid positions per row (1..T)
  // timestamps: [B, T] int64 event times in seconds, or an undefined tensor when the data has none
  // query_times: [B, T] int64 or undefined: the time at which the prediction made at each
  //             position is wanted (the next event's time in training, the request time at
  //             inference). Undefined means each position's own event time. Encoders without a
  //             time feature ignore both.
  // Returns [B, T, D]; values at positions >= length are unspecified.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor& timestamps,
                                const torch::Tensor& query_times) = 0;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor& timestamps) {
    return forward(x, lengths, timestamps, torch::Tensor());
  }
};

}  // namespace genrec
