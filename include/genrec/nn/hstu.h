// HSTU encoder (Zhai et al., ICML 2024, "Actions Speak Louder than Words"): stacked
// Hierarchical Sequential Transduction Units. Each block is, as published,
//
//   U, V, Q, K = split(SiLU(W1 · LN(x)))                      U, V: H·d_v   Q, K: H·d_qk
//   A_h        = SiLU(Q_h K_hᵀ + rab_h) ⊙ causal / max_len    no softmax; masked entries are 0
//   y          = x + W_o(Dropout(LN(A·V) ⊙ U))                no feed-forward network
//
// with rab = a learned bias over the position distance i - j (one table of max_len entries per
// block and head; longer distances share the last entry) plus, when use_time_bias is set and
// timestamps are given, a learned bias over the bucketed time distance q_i - t_j (one table of
// n_time_buckets entries per block and head). Time buckets follow Meta's
// generative-recommenders code (log(|Δt|) / 0.301):
//
//   bucket(Δt) = min(n_time_buckets - 1, floor(ln(max(1, |Δt|)) / ln(time_bucket_base)))
//
// with Δt in seconds and time_bucket_base = e^0.301 ≈ 1.351 by default (so 1 s and 0 s fall in
// bucket 0, one hour in 27, one day in 37, one year in 57). The query time of position i is
// its own event time t_i unless the caller passes query times: SequentialRecommender with
// model.query_time = "next" passes the next event's time in training and the request time at
// inference (the held-out event's time in evaluation), as Meta's code does.
//
// Before the first block (input_stage, the default), the input is scaled by sqrt(d_model), a
// learned absolute position embedding is added and dropout applied, as in Meta's code and SASRec.
//
// Dividing by the constant max_len (not the batch width) and the 0/1 causal mask make the
// outputs at valid positions independent of the padding width. A final LayerNorm follows the
// last block, as in common HSTU implementations. Dropout (before W_o, as in Meta's code) is the
// only stochastic part and is inactive in eval().
//
// Example:
//   HSTU enc(HSTUOptions(64, 200).n_blocks(2).n_heads(2).dropout(0.2));
//   torch::Tensor h = enc->forward(x, lengths, timestamps);   // x [B, T, 64] -> h [B, T, 64]
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <string>
#include <vector>

#include "genrec/nn/encoder.h"

namespace genrec {

struct HSTUOptions {
  HSTUOptions(int64_t d_model, int64_t max_len) : d_model_(d_model), max_len_(max_len) {}
  // Throws InvalidInput naming the offending option.
  void validate() const;
  // d_qk / d_v with 0 resolved to d_model / n_heads.
  int64_t resolved_d_qk() const { return d_qk_ > 0 ? d_qk_ : d_model_ / n_heads_; }
  int64_t resolved_d_v() const { return d_v_ > 0 ? d_v_ : d_model_ / n_heads_; }

  // Width of the input embeddings and hidden states.
  TORCH_ARG(int64_t, d_model);
  // Attention normaliser (A = SiLU(...) / max_len) and size of the position-distance bias table.
  TORCH_ARG(int64_t, max_len);
  TORCH_ARG(int64_t, n_blocks) = 2;
  TORCH_ARG(int64_t, n_heads) = 1;
  // Per-head query/key width; 0 = d_model / n_heads.
  TORCH_ARG(int64_t, d_qk) = 0;
  // Per-head value (and gate U) width; 0 = d_model / n_heads.
  TORCH_ARG(int64_t, d_v) = 0;
  // Dropout probability on the gated attention output, before W_o.
  TORCH_ARG(double, dropout) = 0.2;
  // Add the learned time-distance bias when timestamps are given.
  TORCH_ARG(bool, use_time_bias) = true;
  TORCH_ARG(int64_t, n_time_buckets) = 128;
  // Logarithm base of the time buckets (> 1); e^0.301 as in Meta's code.
  TORCH_ARG(double, time_bucket_base) = std::exp(0.301);
  // Input stage as Meta's code: x·sqrt(d_model) + a learned absolute position embedding
  // (position 0 = the oldest item of the window), then dropout. Off: the blocks read x as is.
  TORCH_ARG(bool, input_stage) = true;
  // Attention normaliser: "max_len" (A / max_len, as published) or "count" (row i divided by
  // its i + 1 keys: a causal mean, which keeps short sequences' attention from vanishing).
  TORCH_ARG(std::string, attn_scale) = "max_len";
};

// HSTU attention, vectorised (the module's kernel):
//   out[b, h, i] = Σ_{j <= i} SiLU(q[b, h, i] · k[b, h, j] + rab[b, h, i, j]) / max_len · v[b, h, j]
// q, k: [B, H, T, d_qk]; v: [B, H, T, d_v]; rab: [B or 1, H or 1, T, T] or undefined (no bias).
// Returns [B, H, T, d_v].
// per_query_count: divide row i by its number of keys, i + 1, instead of max_len.
torch::Tensor hstu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& rab, int64_t max_len, bool per_query_count = false);

// Naive per-position reference of hstu_attention for tests: plain loops over scalars.
// q, k: [T, d_qk]; v: [T, d_v]; rab: [T, T]. Returns [T, d_v] (float).
torch::Tensor hstu_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& rab, int64_t max_len, bool per_query_count = false);

// Time-distance buckets: bucket(q_i - t_j) as documented above, for every pair of positions,
// with q = query_times when given, else q = timestamps.
// timestamps, query_times: [B, T] (seconds, any numeric dtype); lengths: [B]. Padded entries
// (positions >= length) are replaced by the row's last valid one first, so garbage there cannot
// overflow. Returns [B, T, T] int64 in [0, n_buckets).
torch::Tensor hstu_time_buckets(const torch::Tensor& timestamps, const torch::Tensor& lengths, int64_t n_buckets,
                                double base, const torch::Tensor& query_times = torch::Tensor());

// One HSTU block (see the top of this file).
class HSTUBlockImpl : public torch::nn::Cloneable<HSTUBlockImpl> {
 public:
  explicit HSTUBlockImpl(const HSTUOptions& options);
  void reset() override;
  // x [B, T, D]; time_buckets [B, T, T] int64 or undefined (no time bias). Returns [B, T, D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& time_buckets);

  // The block's stages, for callers that attend over cached keys (M-FALCON):
  // U [B, T, H d_v] and V, Q, K [B, H, T, d] of x [B, T, D] (SiLU(W·LN(x)), split into heads).
  struct Projection {
    torch::Tensor u, v, q, k;
  };
  Projection project(const torch::Tensor& x);
  // Learned bias [H, ...] for position distances [...] (clamped to [0, max_len - 1]) plus, when
  // the block has a time bias and time_buckets is defined (same shape), the time bias.
  torch::Tensor relative_bias(const torch::Tensor& distance, const torch::Tensor& time_buckets) const;
  // x + W_o(Dropout(LN(attn) ⊙ u)); attn [B, T, H d_v] (heads merged), u as from project().
  torch::Tensor combine(const torch::Tensor& x, const torch::Tensor& attn, const torch::Tensor& u);

 private:
  HSTUOptions options_;
  int64_t d_qk_ = 0, d_v_ = 0;
  torch::nn::LayerNorm input_norm_{nullptr}, attn_norm_{nullptr};
  torch::nn::Linear uvqk_{nullptr}, out_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::Tensor pos_bias_;   // [H, max_len], indexed by i - j
  torch::Tensor time_bias_;  // [H, n_time_buckets]; only when use_time_bias
};
TORCH_MODULE(HSTUBlock);

// Keys and values of the first `length` positions of one sequence, per block, for incremental
// encoding (the serving KV cache): keys[l] [H, length, d_qk], values[l] [H, length, d_v],
// times [length] int64 (defined only when the sequence is encoded with timestamps).
struct HSTUCache {
  std::vector<torch::Tensor> keys, values;
  torch::Tensor times;
  int64_t length = 0;
  // Bytes held by the tensors.
  int64_t bytes() const;
};

class HSTUImpl : public SequenceEncoderImpl {
 public:
  explicit HSTUImpl(HSTUOptions options);
  void reset();
  void pretty_print(std::ostream& stream) const override;
  // x [B, T, D] float, lengths [B] int64 (1..T), timestamps [B, T] int64 seconds or undefined,
  // query_times [B, T] int64 seconds or undefined (= timestamps): the time bias of query i and
  // key j buckets query_times[i] - timestamps[j].
  // Returns [B, T, D]; positions >= length hold unspecified (finite) values.
  using SequenceEncoderImpl::forward;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor& timestamps,
                        const torch::Tensor& query_times) override;

  // M-FALCON (HSTU paper, §3.4): scores M candidates appended to each history in one pass.
  // Candidate m of row b is placed at position len_b, after the whole history of row b; it
  // attends to that history and to itself, never to another candidate. Every block's history
  // keys and values are computed once and reused by all candidates, taken micro_batch at a time.
  //   hist_x [B, T, D], hist_lengths [B] (0..T), hist_times [B, T] or undefined,
  //   cand_x [B, M, D], cand_times [B, M] or undefined (each candidate's query time: its
  //   request/impression time; without it, the row's last history time).
  // Returns [B, M, D]: for every candidate exactly what forward() gives at position len_b of the
  // sequence history_b + candidate (with query_times = timestamps, the candidate's time last).
  torch::Tensor forward_candidates(const torch::Tensor& hist_x, const torch::Tensor& hist_lengths,
                                   const torch::Tensor& hist_times, const torch::Tensor& cand_x,
                                   const torch::Tensor& cand_times, int64_t micro_batch = 256);

  // Incremental encoding of one sequence: positions cache.length .. cache.length + n - 1, with
  // inputs x [n, D], event times [n] int64 (undefined: no time bias; must match how the cache
  // was built) and query times [n] (undefined = the event times). The new positions attend to
  // the cached keys/values and causally to each other, so the result [n, D] equals forward()
  // on the whole sequence at those positions (exactly, up to float summation order). commit:
  // append the new positions' keys, values and times to the cache; a caller whose last query
  // time is provisional (query_time = next, the request time) encodes that position with
  // commit = false and again once the next event is known.
  torch::Tensor extend(HSTUCache& cache, const torch::Tensor& x, const torch::Tensor& times,
                       const torch::Tensor& query_times, bool commit);
  const HSTUOptions& options() const { return options_; }

 private:
  // The input stage at the given positions (clamped to max_len - 1): x·√d + positions + dropout.
  torch::Tensor embed_input(const torch::Tensor& x, const torch::Tensor& positions);

  HSTUOptions options_;
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Embedding positions_{nullptr};  // [max_len, D]; only with input_stage
  torch::nn::Dropout input_dropout_{nullptr};
};
TORCH_MODULE(HSTU);

}  // namespace genrec
