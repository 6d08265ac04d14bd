// TIGER (Rajput et al., NeurIPS 2023, "Recommender Systems with Generative Retrieval"): items are
// semantic-ID code sequences (tokenizers/semantic_ids.h); an encoder-decoder transformer reads
// the codes of a user's last `max_items` items (plus, optionally, a hashed user token) and
// generates the next item's codes, one level per decoder step.
//
// Network (T5-like, pre-LayerNorm): one embedding table for all tokens (padding, the codes of
// every level — level l's code c is its own token —, the decoder's BOS, user buckets), learned
// absolute positions for the encoder and the decoder (encoder_input = "items": one encoder
// position per history item, the sum of its codes' embeddings; encoder_positions = "recency":
// encoder positions count back from the most recent item), `enc_layers` encoder blocks
// (self-attention + ReLU feed-forward), `dec_layers` decoder blocks (causal self-attention,
// cross-attention over the encoder output, feed-forward). Attention has n_heads heads of width
// d_kv (TIGER: 6 × 64 over d_model 128). The decoder's output at step l is scored against the
// embeddings of level l's codes (tied weights), so step l is a softmax over codebook l.
// Training: cross-entropy of the target item's L codes (teacher forcing), AdamW, warm-up,
// cosine or constant learning rate, early stopping on a validation metric, like the sequential
// models (models/sequential.h).
//
// Inference (decoding/beam_search in this file): beam search over the code trie: every step
// extends each beam only by codes that lead to at least one real item, so every result is a
// real item and all results are distinct; the decoder keeps a KV cache (self-attention keys and
// values of earlier steps; cross-attention keys and values of the encoder output, computed once).
// A sequence's score is the sum of its codes' log-probabilities (softmax over the whole codebook
// of each level). score() returns the top `beam` items' scores and -1e30 for every other item,
// so the full-ranking evaluator measures exactly TIGER's beam-search protocol.
#pragma once

#include <memory>

#include "genrec/models/recommender.h"
#include "genrec/tokenizers/rq.h"
#include "genrec/tokenizers/semantic_ids.h"

namespace genrec {

struct TigerOptions {
  std::string sid;                  // semantic-ID file (codes.bin or codes.json) — config model.sid
  int32_t levels = 0;               // from the semantic IDs
  std::vector<int32_t> codebook_sizes;
  int64_t d_model = 128;
  int64_t n_heads = 6;
  int64_t d_kv = 64;                // per-head width
  int64_t d_ff = 1024;
  int64_t enc_layers = 4;
  int64_t dec_layers = 4;
  double dropout = 0.1;
  int64_t max_items = 20;           // history items read by the encoder (the last ones)
  int64_t user_buckets = 0;         // hashed user-id token (TIGER: 2000); 0 = none
  // Encoder input: "codes" (TIGER: one token per code, L per history item) or "items" (one token
  // per history item, the sum of its L code embeddings: L times fewer encoder positions; an
  // item is still known only by its codes, so cold start works the same).
  std::string encoder_input = "codes";
  // Encoder positions: "start" (position 0 = the oldest history item read, then onwards) or
  // "recency" (position 0 = the most recent item, 1 the one before, ...: the item that predicts
  // the next one best always has the same position embedding, whatever the history length).
  // The user token, when there is one, keeps position 0 and the items count from 1.
  std::string encoder_positions = "start";
  // Warm start: a `genrec sid build` quantiser (rq.safetensors) whose codebooks initialise the
  // code embeddings before the first training step (level l's code c <- its centroid, scaled so
  // level 0's centroids have the random initialisation's mean norm, first min(code_dim, d_model)
  // dimensions; the rest keep a 0.1-scaled random start). The sum of an item's code embeddings
  // then starts as its content vector (e.g. collaborative SASRec embeddings). "" = random start.
  std::string code_init;
  // Each level's softmax over the codes that are valid after the codes before it (the trie's
  // children) instead of over the level's whole codebook: in the training loss and at inference
  // (beam search, exhaustive scoring, item probabilities), so an item's probability is a
  // distribution over real items. false = TIGER's softmax over the codebook.
  bool trie_softmax = false;
  int64_t beam = 20;                // beam width at inference (= items returned by score())
  // History bias (as HSTU's model.history_bias): when true, the score of an item already in the
  // history is offset by one scalar b, the maximum-likelihood value on the training transitions given the network
  // (an item-level distribution q(i) ∝ p(i) e^{b [i in history]}); b = -inf (history items never
  // returned) when no training target repeats an item of its history, as on Amazon data.
  // Re-estimated before every validation and after training; stored in the checkpoint.
  bool history_bias = false;
  // Cold start (TIGER's epsilon): the share of the beam's places open to items without training
  // events (set_cold_items), scored by their prefix; 0 = off. An inference option.
  double cold_fraction = 0.0;
  // Level weights of the beam score: sum over levels of w_l log p(code_l | codes before); empty =
  // all 1 (the joint log-probability). An inference option (genrec eval --set; measured on
  // Beauty in docs/semantic_ids.md: no gain over all 1). The history bias is fitted on the
  // unweighted probabilities.
  std::vector<double> level_weights;
  // training
  int64_t epochs = 100;
  // Label smoothing of each level's cross-entropy: the target distribution puts 1 - eps on the
  // true code and spreads eps evenly over the level's whole codebook; 0 = plain cross-entropy.
  double label_smoothing = 0.0;
  // Recency weights of the training examples: the target k places before a user's last training
  // target weighs 1 + recency_weight * 2^(-k / recency_halflife) (k = 0 for the last), weights
  // divided by their mean over the epoch; 0 = every example weighs 1.
  double recency_weight = 0.0;
  double recency_halflife = 1.0;
  int64_t batch_size = 256;
  bool jagged = true;               // length-bucketed batches, each padded to its longest history
  double lr = 1e-3;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  std::string lr_schedule = "cosine";
  double grad_clip = 1.0;
  int64_t eval_every = 2;
  int64_t patience = 5;
  std::string metric = "ndcg@10";
  int64_t eval_users = 0;           // validate on an evenly spaced subset of N users (0 = all)
  int64_t seed = 42;

  nlohmann::json to_json() const;
  static TigerOptions from_json(const nlohmann::json& j);
  void validate() const;
};

// One beam-search result per history: items best first, with their log-probabilities.
struct BeamResult {
  std::vector<int32_t> items;
  std::vector<float> scores;
};

// One level's training loss: mean cross-entropy of log_probs [N, K] against target [N], with
// label smoothing eps (train.label_smoothing): (1 - eps) * NLL + eps * mean over codes of -log p.
// weights [N] (optional): the mean of weight * cross-entropy over the rows;
// valid [N, K] (optional, model.trie_softmax): log_probs are -inf outside it, and the smoothing
// spreads eps over the valid codes only.
torch::Tensor tiger_level_loss(const torch::Tensor& log_probs, const torch::Tensor& target, double label_smoothing,
                               const torch::Tensor& weights = {}, const torch::Tensor& valid = {});

// The loss weight of a training target `from_last` targets before the user's last training
// target (0 = the last): 1 + weight * 2^(-from_last / halflife), before division by the mean.
double tiger_recency_weight(int64_t from_last, double weight, double halflife);

// Encoder position ids [B, S] (or [1, S] when they do not depend on the row). keep [B, S] bool
// marks the real slots, which come first in each row: `user_slots` slots of the user token, then
// the history items oldest first, `group` slots each (their L codes, or 1 with one position per
// item). recency = false: the slot index. recency = true: user slots keep their index; item
// slots count from the most recent item (its codes in order: user_slots + r * group + level for
// the item r places before the last); padding gets 0.
torch::Tensor tiger_encoder_positions(const torch::Tensor& keep, int64_t user_slots, int64_t group, bool recency);

class TigerRecommender : public Recommender {
 public:
  // score() gives every item outside the beam this value.
  static constexpr float kNotReturned = -1e30f;
  // codes: the items' semantic IDs (n_items must match); options.levels / codebook_sizes are
  // taken from it.
  TigerRecommender(int32_t n_items, TigerOptions options, SemanticIds codes);
  ~TigerRecommender() override;
  std::string type() const override { return "tiger"; }
  nlohmann::json options() const override { return options_.to_json(); }
  int32_t n_items() const override { return n_items_; }
  bool iterative() const override { return true; }
  void fit(const TrainContext& ctx) override;
  torch::Tensor score(const std::vector<History>& batch) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
  void reset_training_state() override;

  // Items with no training event (train_counts[i] == 0; size n_items + 1, the split's
  // train_item_counts) are "cold" for cold_fraction. fit() sets them from its split.
  void set_cold_items(const std::vector<double>& train_counts);
  void set_cold_fraction(double fraction);  // throws InvalidInput outside [0, 1]
  void set_beam(int64_t beam);              // the inference beam width; throws InvalidInput below 1
  void set_level_weights(const std::vector<double>& w);  // empty = all 1; throws InvalidInput unless
                                                         // one finite weight >= 0 per level
  // The warm start of model.code_init (fit() applies it before the first step of a fresh run).
  // Throws InvalidInput when the quantiser's levels or codebook sizes do not match the codes'.
  void init_code_embeddings(const ResidualQuantizer& rq);
  // Level l's code embeddings [codebook_size_l, d_model] (a copy).
  torch::Tensor code_embeddings(int64_t level) const;

  // model.history_bias = true: b from the training transitions of `split` (up to
  // `max_examples` of them, evenly spaced, when some target repeats a history item; with none,
  // b = -inf without reading the network). Sets and returns b. Without the option returns 0.
  double estimate_history_bias(const Dataset& ds, const Split& split, int64_t max_examples = 1024);
  double history_bias() const;            // the b in use (0 = none)
  void set_history_bias(bool on, double b);  // the option and its b (0 when off)
  // log p(item | history) of given items under the network (teacher forcing; no bias): one row
  // per history, items[b] of it.
  std::vector<std::vector<double>> item_log_probs(const std::vector<History>& batch,
                                                  const std::vector<std::vector<int32_t>>& items);

  // Trie-constrained beam search with a KV cache: the top `beam` items per history. cold_slots:
  // the places open to cold items (-1 = cold_fraction of beam; used only with cold items set).
  std::vector<BeamResult> beam_search(const std::vector<History>& batch, int64_t beam, int64_t cold_slots = -1);
  // Reference for tests: the log-probability of every item's full code sequence (teacher
  // forcing over all items at once; each level's term times its model.level_weights weight, as
  // in the beam), [B, n_items + 1] (column 0 = -inf).
  torch::Tensor exhaustive_log_probs(const std::vector<History>& batch);
  const SemanticIds& codes() const;

 private:
  float level_weight(int64_t level) const {
    return options_.level_weights.empty() ? 1.0f : static_cast<float>(options_.level_weights[static_cast<size_t>(level)]);
  }
  struct State;
  int32_t n_items_;
  TigerOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace genrec
