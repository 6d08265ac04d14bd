// Sequential next-item recommenders over item-ID tokens: an item embedding table (the item
// encoder, kept separate so content features can replace or complement it) feeding a causal
// sequence encoder (SASRec or HSTU), scored by inner product with the item table.
//
// Training (fit): each user's training prefix, truncated to its last max_len + 1 items, gives
// max_len next-item targets. Batches are built from users of similar length (length
// bucketing: a batch is padded to its own longest row, never to max_len) and the loss sees only
// valid positions. Losses: full softmax, sampled softmax (uniform and/or in-batch negatives
// with log-Q correction), BCE with one negative. AdamW with linear warm-up and optional cosine
// decay, gradient clipping, validation every eval_every epochs, early stopping on
// valid ndcg@10 (or train.metric) after `patience` evaluations without improvement.
// Deterministic for a seed and thread count: batch order and dropout are seeded per epoch,
// so a run resumed from its last checkpoint ends where an uninterrupted one would.
#pragma once

#include <memory>

#include "genrec/models/recommender.h"
#include "genrec/nn/encoder.h"
#include "genrec/nn/hstu.h"

namespace genrec {

struct SequentialOptions {
  std::string encoder = "sasrec";  // sasrec | hstu
  int64_t d_model = 64;            // embedding and hidden size
  int64_t max_len = 50;            // longest history the model reads
  int64_t n_blocks = 2;
  int64_t n_heads = 1;
  double dropout = 0.2;
  int64_t d_qk = 0, d_v = 0;       // hstu: per-head sizes (0 = d_model / n_heads)
  bool time_bias = true;           // hstu: bucketed time-distance bias when the data has timestamps
  std::string query_time = "own";  // hstu time bias: query time of a position is its own event's
                                   // time (own) or the time of the event it predicts (next:
                                   // the target's time in training, History::request_time at
                                   // inference, else the last event's time)
  bool input_stage = true;         // hstu: x·sqrt(d) + absolute positions + dropout before the blocks
  std::string attn_scale = "max_len";  // hstu: attention normaliser, max_len | count (keys per query)
  std::string loss = "softmax";    // softmax | sampled_softmax | bce
  int64_t negatives = 128;         // sampled_softmax: uniform negatives shared by the batch
  bool in_batch = false;           // sampled_softmax: also the batch's targets, log-Q corrected
  double temperature = 1.0;        // logits / temperature
  bool l2_norm = false;            // L2-normalise hidden states and item embeddings
  bool history_bias = false;       // learned logit offset for items already in the history, by
                                   // recency bucket (how likely a repeat is; softmax loss only)
  // training
  int64_t epochs = 200;
  int64_t batch_size = 128;
  bool jagged = true;              // length-bucketed batches padded to their own longest row;
                                   // false: batches of random users padded to max_len (reference)
  double lr = 1e-3;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  std::string lr_schedule = "constant";  // constant | cosine (to 0 at the last epoch)
  double grad_clip = 5.0;          // max gradient norm (0 = off)
  int64_t eval_every = 1;          // epochs between validations
  int64_t patience = 10;           // validations without improvement before stopping
  std::string metric = "ndcg@10";  // validation metric for early stopping
  int64_t seed = 42;

  nlohmann::json to_json() const;
  static SequentialOptions from_json(const nlohmann::json& j);
  void validate() const;
};

// The serving KV cache of one user (HSTU): keys/values of the encoded positions of the user's
// current history window, and what they were computed from (to detect a changed history).
struct IncrementalCache {
  HSTUCache kv;
  int64_t window_start = -1;   // history index of window position 0 (-1 = empty cache)
  bool with_time = false;
  std::vector<int32_t> items;  // items of the cached positions
  std::vector<int64_t> times;  // their times (with_time)
  torch::Tensor last;          // query_time = own: the hidden state of the last cached position
  int64_t bytes() const;
};

class SequentialRecommender : public Recommender {
 public:
  SequentialRecommender(int32_t n_items, SequentialOptions options);
  ~SequentialRecommender() override;
  std::string type() const override { return options_.encoder; }
  nlohmann::json options() const override { return options_.to_json(); }
  int32_t n_items() const override { return n_items_; }
  bool iterative() const override { return true; }
  void fit(const TrainContext& ctx) override;
  torch::Tensor score(const std::vector<History>& batch) override;
  torch::Tensor query_embeddings(const std::vector<History>& batch) override;
  torch::Tensor item_embeddings() const override;
  std::vector<std::pair<int32_t, float>> history_offsets(const History& h) const override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
  void reset_training_state() override;

  // Incremental query embedding (serving; HSTU only): equals query_embeddings({h})[0] (up to
  // float summation order), reusing the positions of h's window already in `cache` and encoding
  // only the new ones, then updating the cache. A cache built for another history (or after the
  // window slid past max_len) is rebuilt. With query_time = next the last position depends on
  // the request time, so it is encoded on every call and committed once the next event arrives.
  // computed (optional) receives the number of positions encoded by this call.
  bool supports_incremental() const { return options_.encoder == "hstu"; }
  torch::Tensor query_embedding_incremental(const History& h, IncrementalCache& cache, int64_t* computed = nullptr);

  // The network (for tests): hidden states [B, T, D] for right-padded items [B, T].
  torch::Tensor encode(const torch::Tensor& items, const torch::Tensor& lengths, const torch::Tensor& timestamps,
                       const torch::Tensor& query_times);
  int64_t epochs_done() const;

 private:
  // The query vector from the last hidden state(s): L2-normalised when options_.l2_norm.
  torch::Tensor finish_query(const torch::Tensor& hidden) const;
  struct State;
  int32_t n_items_;
  SequentialOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace genrec
