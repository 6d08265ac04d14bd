#include "genrec/models/tiger.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "genrec/core/error.h"
#include "genrec/core/log.h"
#include "genrec/data/split.h"
#include "genrec/train/schedule.h"
#include "../train/train_state.h"

namespace genrec {

// ---------------------------------------------------------------------------------------------
// Options

nlohmann::json TigerOptions::to_json() const {
  return {{"sid", sid},           {"levels", levels},         {"codebook_sizes", codebook_sizes},
          {"d_model", d_model},   {"n_heads", n_heads},       {"d_kv", d_kv},
          {"d_ff", d_ff},         {"enc_layers", enc_layers}, {"dec_layers", dec_layers},
          {"dropout", dropout},   {"max_items", max_items},   {"user_buckets", user_buckets}, {"encoder_input", encoder_input},
          {"encoder_positions", encoder_positions}, {"code_init", code_init}, {"trie_softmax", trie_softmax},
          {"beam", beam},         {"epochs", epochs},         {"label_smoothing", label_smoothing},
          {"recency_weight", recency_weight}, {"recency_halflife", recency_halflife}, {"batch_size", batch_size},
          {"lr", lr},             {"weight_decay", weight_decay}, {"jagged", jagged}, {"warmup_steps", warmup_steps},
          {"lr_schedule", lr_schedule}, {"grad_clip", grad_clip}, {"eval_every", eval_every},
          {"patience", patience}, {"metric", metric},         {"eval_users", eval_users},
          {"cold_fraction", cold_fraction}, {"history_bias", history_bias}, {"seed", seed},
          {"level_weights", level_weights}};
}

TigerOptions TigerOptions::from_json(const nlohmann::json& j) {
  TigerOptions o;
  o.sid = j.value("sid", o.sid);
  o.levels = j.value("levels", o.levels);
  o.codebook_sizes = j.value("codebook_sizes", o.codebook_sizes);
  o.d_model = j.value("d_model", o.d_model);
  o.n_heads = j.value("n_heads", o.n_heads);
  o.d_kv = j.value("d_kv", o.d_kv);
  o.d_ff = j.value("d_ff", o.d_ff);
  o.enc_layers = j.value("enc_layers", o.enc_layers);
  o.dec_layers = j.value("dec_layers", o.dec_layers);
  o.dropout = j.value("dropout", o.dropout);
  o.max_items = j.value("max_items", o.max_items);
  o.user_buckets = j.value("user_buckets", o.user_buckets);
  o.encoder_input = j.value("encoder_input", o.encoder_input);
  o.encoder_positions = j.value("encoder_positions", std::string("start"));  // checkpoints from before the option
  o.code_init = j.value("code_init", o.code_init);
  o.trie_softmax = j.value("trie_softmax", false);  // checkpoints from before the option
  o.beam = j.value("beam", o.beam);
  o.epochs = j.value("epochs", o.epochs);
  o.label_smoothing = j.value("label_smoothing", o.label_smoothing);
  o.recency_weight = j.value("recency_weight", o.recency_weight);
  o.recency_halflife = j.value("recency_halflife", o.recency_halflife);
  o.batch_size = j.value("batch_size", o.batch_size);
  o.lr = j.value("lr", o.lr);
  o.jagged = j.value("jagged", false);  // checkpoints from before the option trained without it
  o.weight_decay = j.value("weight_decay", o.weight_decay);
  o.warmup_steps = j.value("warmup_steps", o.warmup_steps);
  o.lr_schedule = j.value("lr_schedule", o.lr_schedule);
  o.grad_clip = j.value("grad_clip", o.grad_clip);
  o.eval_every = j.value("eval_every", o.eval_every);
  o.patience = j.value("patience", o.patience);
  o.metric = j.value("metric", o.metric);
  o.eval_users = j.value("eval_users", o.eval_users);
  o.cold_fraction = j.value("cold_fraction", o.cold_fraction);
  o.history_bias = j.value("history_bias", false);  // checkpoints from before the option
  o.level_weights = j.value("level_weights", std::vector<double>{});
  o.seed = j.value("seed", o.seed);
  return o;
}

void TigerOptions::validate() const {
  auto bad = [](const std::string& key, const std::string& why) { throw InvalidInput("tiger: model." + key + " " + why); };
  if (d_model < 1) bad("d_model", "must be >= 1");
  if (n_heads < 1) bad("n_heads", "must be >= 1");
  if (d_kv < 1) bad("d_kv", "must be >= 1");
  if (d_ff < 1) bad("d_ff", "must be >= 1");
  if (enc_layers < 1) bad("enc_layers", "must be >= 1");
  if (dec_layers < 1) bad("dec_layers", "must be >= 1");
  if (!(dropout >= 0 && dropout < 1)) bad("dropout", "must be in [0, 1)");
  if (max_items < 1) bad("max_items", "must be >= 1");
  if (user_buckets < 0) bad("user_buckets", "must be >= 0");
  if (encoder_input != "codes" && encoder_input != "items")
    bad("encoder_input", "must be codes or items, got '" + encoder_input + "'");
  if (encoder_positions != "start" && encoder_positions != "recency")
    bad("encoder_positions", "must be start or recency, got '" + encoder_positions + "'");
  if (beam < 1) bad("beam", "must be >= 1");
  if (!(cold_fraction >= 0.0 && cold_fraction <= 1.0)) bad("cold_fraction", "must be in [0, 1]");
  if (!level_weights.empty() && static_cast<int64_t>(level_weights.size()) != levels)
    bad("level_weights", "needs one weight per code level (" + std::to_string(levels) + "), got " +
                             std::to_string(level_weights.size()));
  for (double w : level_weights)
    if (!(w >= 0.0 && std::isfinite(w))) bad("level_weights", "must be finite and >= 0, got " + std::to_string(w));
  if (epochs < 0) bad("epochs", "must be >= 0");
  if (!(label_smoothing >= 0.0 && label_smoothing < 1.0))
    throw InvalidInput("tiger: train.label_smoothing must be in [0, 1)");
  if (!(recency_weight >= 0.0 && std::isfinite(recency_weight)))
    throw InvalidInput("tiger: train.recency_weight must be finite and >= 0, got " + std::to_string(recency_weight));
  if (!(recency_halflife > 0.0 && std::isfinite(recency_halflife)))
    throw InvalidInput("tiger: train.recency_halflife must be finite and > 0, got " + std::to_string(recency_halflife));
  if (batch_size < 1) bad("batch_size", "must be >= 1");
  if (!(lr > 0)) bad("lr", "must be > 0");
  if (lr_schedule != "constant" && lr_schedule != "cosine") bad("lr_schedule", "must be constant or cosine");
  if (eval_every < 1) bad("eval_every", "must be >= 1");
  if (patience < 1) bad("patience", "must be >= 1");
  if (eval_users < 0) bad("eval_users", "must be >= 0");
}

torch::Tensor tiger_level_loss(const torch::Tensor& log_probs, const torch::Tensor& target, double label_smoothing,
                               const torch::Tensor& weights, const torch::Tensor& valid) {
  // Cross-entropy against (1 - eps) one-hot + eps uniform over the codebook (over the valid
  // codes when given: the others have log-probability -inf).
  if (!weights.defined() && !valid.defined()) {
    torch::Tensor nll = torch::nll_loss(log_probs, target);
    if (label_smoothing == 0.0) return nll;
    return (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1).mean();
  }
  torch::Tensor rows = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1);  // [N]
  if (label_smoothing != 0.0) {
    const torch::Tensor mean_lp = valid.defined()
                                      ? torch::where(valid, log_probs, torch::zeros_like(log_probs)).sum(-1) / valid.sum(-1)
                                      : log_probs.mean(-1);
    rows = (1.0 - label_smoothing) * rows - label_smoothing * mean_lp;
  }
  return weights.defined() ? (rows * weights).mean() : rows.mean();
}

double tiger_recency_weight(int64_t from_last, double weight, double halflife) {
  return 1.0 + weight * std::exp2(-static_cast<double>(from_last) / halflife);
}

// ---------------------------------------------------------------------------------------------
// Network

torch::Tensor tiger_encoder_positions(const torch::Tensor& keep, int64_t user_slots, int64_t group, bool recency) {
  const int64_t S = keep.size(1);
  torch::Tensor s = torch::arange(S, torch::kLong).unsqueeze(0);  // [1, S]
  if (!recency) return s;
  torch::Tensor n_items = (keep.sum(1, /*keepdim=*/true) - user_slots).div(group, "floor").clamp_min(0);  // [B, 1]
  torch::Tensor rel = (s - user_slots).clamp_min(0);
  torch::Tensor item = rel.div(group, "floor"), within = rel.remainder(group);
  torch::Tensor pos = user_slots + (n_items - 1 - item) * group + within;
  pos = torch::where(s < user_slots, s, pos);
  return torch::where(keep, pos, torch::zeros_like(pos));
}

namespace {

// Multi-head attention with n_heads heads of width d_kv; keys/values can be projected once and
// reused (cross-attention over the encoder output, the decoder's self-attention cache).
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t d_model, int64_t heads, int64_t d_kv) : heads(heads), d_kv(d_kv) {
    q = register_module("q", torch::nn::Linear(torch::nn::LinearOptions(d_model, heads * d_kv).bias(false)));
    k = register_module("k", torch::nn::Linear(torch::nn::LinearOptions(d_model, heads * d_kv).bias(false)));
    v = register_module("v", torch::nn::Linear(torch::nn::LinearOptions(d_model, heads * d_kv).bias(false)));
    o = register_module("o", torch::nn::Linear(torch::nn::LinearOptions(heads * d_kv, d_model).bias(false)));
  }
  torch::Tensor split(const torch::Tensor& x) const {  // [B, T, H d] -> [B, H, T, d]
    return x.view({x.size(0), x.size(1), heads, d_kv}).transpose(1, 2);
  }
  std::pair<torch::Tensor, torch::Tensor> project_kv(const torch::Tensor& x) { return {split(k(x)), split(v(x))}; }
  // x [B, Tq, D] attends to keys/values [B, H, Tk, d]; keep [B or 1, 1, Tq or 1, Tk] bool or undefined.
  torch::Tensor attend(const torch::Tensor& x, const torch::Tensor& keys, const torch::Tensor& values,
                       const torch::Tensor& keep) {
    torch::Tensor qh = split(q(x));                                                       // [B, H, Tq, d]
    torch::Tensor s = torch::matmul(qh, keys.transpose(-2, -1)) / std::sqrt(static_cast<double>(d_kv));
    if (keep.defined()) s = s.masked_fill(keep.logical_not(), -1e9);
    torch::Tensor a = torch::softmax(s, -1);
    torch::Tensor out = torch::matmul(a, values).transpose(1, 2).reshape({x.size(0), x.size(1), heads * d_kv});
    return o(out);
  }
  int64_t heads, d_kv;
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
};
TORCH_MODULE(Attention);

struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(int64_t d_model, int64_t d_ff, double dropout) {
    in = register_module("in", torch::nn::Linear(d_model, d_ff));
    out = register_module("out", torch::nn::Linear(d_ff, d_model));
    drop = register_module("drop", torch::nn::Dropout(dropout));
  }
  torch::Tensor forward(const torch::Tensor& x) { return out(drop(torch::relu(in(x)))); }
  torch::nn::Linear in{nullptr}, out{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(FeedForward);

torch::nn::LayerNorm layer_norm(int64_t d) { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(1e-6)); }

struct EncoderBlockImpl : torch::nn::Module {
  EncoderBlockImpl(const TigerOptions& o) {
    n1 = register_module("n1", layer_norm(o.d_model));
    n2 = register_module("n2", layer_norm(o.d_model));
    attn = register_module("attn", Attention(o.d_model, o.n_heads, o.d_kv));
    ff = register_module("ff", FeedForward(o.d_model, o.d_ff, o.dropout));
    drop = register_module("drop", torch::nn::Dropout(o.dropout));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& keep) {
    torch::Tensor h = n1(x);
    auto [k, v] = attn->project_kv(h);
    x = x + drop(attn->attend(h, k, v, keep));
    return x + drop(ff(n2(x)));
  }
  torch::nn::LayerNorm n1{nullptr}, n2{nullptr};
  Attention attn{nullptr};
  FeedForward ff{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(EncoderBlock);

// Per decoder block: self-attention keys/values of the steps so far (one row per beam) and the
// cross-attention keys/values of the encoder output (one row per user, shared by its beams).
struct DecoderCache {
  std::vector<torch::Tensor> self_k, self_v, cross_k, cross_v;
  torch::Tensor enc_keep;  // [B, 1, 1, S]
  void select(const torch::Tensor& rows) {  // reorder the beams' self-attention caches
    for (auto* list : {&self_k, &self_v})
      for (auto& t : *list)
        if (t.defined()) t = t.index_select(0, rows);
  }
};

struct DecoderBlockImpl : torch::nn::Module {
  DecoderBlockImpl(const TigerOptions& o) {
    n1 = register_module("n1", layer_norm(o.d_model));
    n2 = register_module("n2", layer_norm(o.d_model));
    n3 = register_module("n3", layer_norm(o.d_model));
    self_attn = register_module("self_attn", Attention(o.d_model, o.n_heads, o.d_kv));
    cross_attn = register_module("cross_attn", Attention(o.d_model, o.n_heads, o.d_kv));
    ff = register_module("ff", FeedForward(o.d_model, o.d_ff, o.dropout));
    drop = register_module("drop", torch::nn::Dropout(o.dropout));
  }
  // Teacher forcing over all steps: x [B, T, D], causal self-attention; enc [B or 1, S, D].
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& enc, const torch::Tensor& enc_keep) {
    const int64_t T = x.size(1);
    torch::Tensor causal = torch::ones({T, T}, torch::kBool).tril().view({1, 1, T, T});
    torch::Tensor h = n1(x);
    auto [k, v] = self_attn->project_kv(h);
    x = x + drop(self_attn->attend(h, k, v, causal));
    auto [ck, cv] = cross_attn->project_kv(enc);
    torch::Tensor q = n2(x);
    if (enc.size(0) == 1 && x.size(0) > 1)  // one encoder output shared by every row
      x = x + drop(cross_attn->attend(q.reshape({1, -1, q.size(2)}), ck, cv, enc_keep).view(x.sizes()));
    else
      x = x + drop(cross_attn->attend(q, ck, cv, enc_keep));
    return x + drop(ff(n3(x)));
  }
  // One step for W beams of each of B users: x [B W, 1, D]; the beams' self keys/values are
  // appended to the cache; cross keys/values [B, H, S, d] are shared by a user's beams.
  torch::Tensor step(torch::Tensor x, int64_t B, int64_t W, torch::Tensor& self_k, torch::Tensor& self_v,
                     const torch::Tensor& cross_k, const torch::Tensor& cross_v, const torch::Tensor& enc_keep) {
    const int64_t D = x.size(2);
    torch::Tensor h = n1(x);
    auto [k, v] = self_attn->project_kv(h);
    self_k = self_k.defined() ? torch::cat({self_k, k}, 2) : k;
    self_v = self_v.defined() ? torch::cat({self_v, v}, 2) : v;
    x = x + drop(self_attn->attend(h, self_k, self_v, torch::Tensor()));
    torch::Tensor c = cross_attn->attend(n2(x).view({B, W, D}), cross_k, cross_v, enc_keep);  // [B, W, D]
    x = x + drop(c.view({B * W, 1, D}));
    return x + drop(ff(n3(x)));
  }
  torch::nn::LayerNorm n1{nullptr}, n2{nullptr}, n3{nullptr};
  Attention self_attn{nullptr}, cross_attn{nullptr};
  FeedForward ff{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(DecoderBlock);

struct TigerNetImpl : torch::nn::Module {
  TigerNetImpl(const TigerOptions& o)
      : levels(o.levels), user_slots(o.user_buckets > 0 ? 1 : 0), recency(o.encoder_positions == "recency") {
    int64_t total = 0;
    for (int32_t k : o.codebook_sizes) {
      offsets.push_back(1 + total);
      total += k;
    }
    sizes.assign(o.codebook_sizes.begin(), o.codebook_sizes.end());
    bos = 1 + total;
    user0 = bos + 1;
    tokens = register_module("tokens", torch::nn::Embedding(torch::nn::EmbeddingOptions(user0 + o.user_buckets, o.d_model).padding_idx(0)));
    torch::nn::init::normal_(tokens->weight, 0.0, 1.0 / std::sqrt(static_cast<double>(o.d_model)));
    {
      torch::NoGradGuard ng;
      tokens->weight[0].zero_();
    }
    enc_pos = register_module("enc_pos", torch::nn::Embedding(o.max_items * o.levels + 1, o.d_model));
    dec_pos = register_module("dec_pos", torch::nn::Embedding(o.levels, o.d_model));
    for (auto* e : {&enc_pos, &dec_pos}) torch::nn::init::normal_((*e)->weight, 0.0, 0.02);
    enc = register_module("enc", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.enc_layers; ++i) enc->push_back(EncoderBlock(o));
    dec = register_module("dec", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.dec_layers; ++i) dec->push_back(DecoderBlock(o));
    enc_norm = register_module("enc_norm", layer_norm(o.d_model));
    dec_norm = register_module("dec_norm", layer_norm(o.d_model));
    drop = register_module("drop", torch::nn::Dropout(o.dropout));
  }
  // tokens [B, S] (0 = padding, left-aligned) -> [B, S, D] and keep mask [B, 1, 1, S]; or
  // [B, S, L] (one position per item: the sum of its tokens' embeddings; a position is padding
  // when its first token is).
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& ids) {
    const int64_t S = ids.size(1);
    const bool per_item = ids.dim() == 3;
    torch::Tensor keep = ((per_item ? ids.select(2, 0) : ids) != 0).view({ids.size(0), 1, 1, S});
    torch::Tensor emb = per_item ? tokens(ids).sum(2) : tokens(ids);
    torch::Tensor x = drop(emb + enc_pos(tiger_encoder_positions(keep.view({ids.size(0), S}), user_slots, per_item ? 1 : levels, recency)));
    for (const auto& m : *enc) x = m->as<EncoderBlockImpl>()->forward(x, keep);
    return {enc_norm(x), keep};
  }
  // Decoder input at step t: BOS (t = 0) or the token of level t - 1's code.
  torch::Tensor decoder_input(const torch::Tensor& ids, int64_t first_step) {
    torch::Tensor pos = torch::arange(first_step, first_step + ids.size(1), torch::kLong);
    return drop(tokens(ids) + dec_pos(pos).unsqueeze(0));
  }
  // Log-probabilities over level l's codebook from decoder states h [..., D]; with `valid`
  // [..., K_l] (model.trie_softmax) over the valid codes only (the others get -inf).
  torch::Tensor level_log_probs(const torch::Tensor& h, int64_t l, const torch::Tensor& valid = {}) {
    torch::Tensor table = tokens->weight.narrow(0, offsets[static_cast<size_t>(l)], sizes[static_cast<size_t>(l)]);
    torch::Tensor logits = torch::matmul(h, table.t());
    if (valid.defined()) logits = logits.masked_fill(valid.logical_not(), -std::numeric_limits<float>::infinity());
    return torch::log_softmax(logits, -1);
  }
  int64_t levels, user_slots;
  bool recency;
  std::vector<int64_t> offsets, sizes;
  int64_t bos = 0, user0 = 0;
  torch::nn::Embedding tokens{nullptr}, enc_pos{nullptr}, dec_pos{nullptr};
  torch::nn::ModuleList enc{nullptr}, dec{nullptr};
  torch::nn::LayerNorm enc_norm{nullptr}, dec_norm{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(TigerNet);

// The W final places from warm and cold candidates (each sorted best first): cold ones take up
// to n_cold_slots places and any that warm ones leave empty; warm ones fill the rest.
template <class T>
void share_places(std::vector<T>& warm, std::vector<T>& cold, size_t W, size_t n_cold_slots) {
  const size_t n_cold = std::min(cold.size(), std::max(n_cold_slots, W - std::min(warm.size(), W)));
  cold.resize(n_cold);
  warm.resize(std::min(warm.size(), W - n_cold));
}

// The distinct items of items[0, n), sorted.
std::vector<int32_t> distinct_items(const int32_t* items, int64_t n) {
  std::vector<int32_t> out(items, items + n);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

uint64_t hash_user(int32_t user) {
  uint64_t x = static_cast<uint64_t>(user) + 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

struct TigerRecommender::State {
  TigerNet net{nullptr};
  SemanticIds sid;
  std::unique_ptr<CodeTrie> trie;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  TrainMeta meta;
  std::vector<torch::Tensor> best;
  std::vector<uint8_t> cold;  // [n_items + 1]: 1 = no training event (empty = none)
  double history_bias = 0.0;  // b of model.history_bias (0 = none, -inf = history items excluded)

  // Encoder tokens of histories: [user token] + codes of the last max_items items, left-aligned,
  // padded to the batch's longest row (padding is masked and sits after every real token, so a
  // row's encoding does not depend on the rest of the batch). [B, S] with encoder_input =
  // "codes"; [B, S, L] with "items" (the user token is a position of its own, its other L - 1
  // slots padding).
  torch::Tensor encoder_tokens(const std::vector<History>& batch, const TigerOptions& o) const {
    const int64_t L = sid.levels;
    const bool per_item = o.encoder_input == "items";
    int64_t longest = 0;
    for (const History& h : batch) longest = std::max(longest, std::min<int64_t>(h.size, o.max_items));
    const int64_t user = net->user_slots;
    const int64_t positions = std::max<int64_t>(1, longest + user);
    const int64_t width = per_item ? positions * L : std::max<int64_t>(1, longest * L + user);
    std::vector<int64_t> ids(batch.size() * static_cast<size_t>(width), 0);
    for (size_t b = 0; b < batch.size(); ++b) {
      const History& h = batch[b];
      int64_t* row = ids.data() + b * static_cast<size_t>(width);
      int64_t p = 0;
      if (o.user_buckets > 0) {
        row[p] = net->user0 + static_cast<int64_t>(hash_user(h.user) % static_cast<uint64_t>(o.user_buckets));
        p += per_item ? L : 1;
      }
      const int64_t begin = std::max<int64_t>(0, h.size - o.max_items);
      for (int64_t i = begin; i < h.size; ++i) {
        const int32_t* c = sid.item_codes(h.items[i]);
        for (int64_t l = 0; l < L; ++l) row[p++] = net->offsets[static_cast<size_t>(l)] + c[l];
      }
    }
    torch::Tensor t = torch::tensor(ids, torch::kLong);
    const auto B = static_cast<int64_t>(batch.size());
    return per_item ? t.view({B, positions, L}) : t.view({B, width});
  }
  // Decoder inputs [N, L] (BOS, codes of levels 0..L-2) and targets [N, L] (codes) of items.
  std::pair<torch::Tensor, torch::Tensor> decoder_io(const std::vector<int32_t>& items) const {
    const int64_t L = sid.levels, N = static_cast<int64_t>(items.size());
    std::vector<int64_t> in(static_cast<size_t>(N * L)), out(static_cast<size_t>(N * L));
    for (int64_t n = 0; n < N; ++n) {
      const int32_t* c = sid.item_codes(items[static_cast<size_t>(n)]);
      for (int64_t l = 0; l < L; ++l) {
        in[static_cast<size_t>(n * L + l)] = l == 0 ? net->bos : net->offsets[static_cast<size_t>(l - 1)] + c[l - 1];
        out[static_cast<size_t>(n * L + l)] = c[l];
      }
    }
    return {torch::tensor(in, torch::kLong).view({N, L}), torch::tensor(out, torch::kLong).view({N, L})};
  }
  // Per level l, [N, K_l] bool: the codes that are valid after the first l codes of each item
  // (its trie node's children). For model.trie_softmax; empty when it is off.
  std::vector<torch::Tensor> valid_codes(const std::vector<int32_t>& items, bool on) const {
    std::vector<torch::Tensor> out;
    if (!on) return out;
    const int64_t L = sid.levels, N = static_cast<int64_t>(items.size());
    std::vector<int32_t> node(static_cast<size_t>(N), trie->root());
    for (int64_t l = 0; l < L; ++l) {
      torch::Tensor m = torch::zeros({N, static_cast<int64_t>(sid.codebook_sizes[static_cast<size_t>(l)])}, torch::kBool);
      bool* mp = m.data_ptr<bool>();
      const int64_t K = m.size(1);
      for (int64_t n = 0; n < N; ++n) {
        int32_t& nd = node[static_cast<size_t>(n)];
        for (int32_t c : trie->child_codes(nd)) mp[n * K + c] = true;
        nd = trie->child(nd, sid.item_codes(items[static_cast<size_t>(n)])[l]);
      }
      out.push_back(m);
    }
    return out;
  }
  static torch::Tensor level_of(const std::vector<torch::Tensor>& valid, int64_t l) {
    return valid.empty() ? torch::Tensor() : valid[static_cast<size_t>(l)];
  }
  // Teacher-forced decoder states [N, L, D].
  torch::Tensor decode(const torch::Tensor& in, const torch::Tensor& enc, const torch::Tensor& keep) {
    torch::Tensor x = net->decoder_input(in, 0);
    for (const auto& m : *net->dec) x = m->as<DecoderBlockImpl>()->forward(x, enc, keep);
    return net->dec_norm(x);
  }
};

TigerRecommender::TigerRecommender(int32_t n_items, TigerOptions options, SemanticIds codes)
    : n_items_(n_items), options_(std::move(options)), state_(std::make_unique<State>()) {
  if (codes.n_items != n_items)
    throw InvalidInput("tiger: the semantic IDs cover " + std::to_string(codes.n_items) + " items, the dataset has " +
                       std::to_string(n_items));
  if (codes.levels < 1) throw InvalidInput("tiger: the semantic IDs have no levels");
  options_.levels = codes.levels;
  options_.codebook_sizes = codes.codebook_sizes;
  options_.validate();
  torch::manual_seed(static_cast<uint64_t>(options_.seed));
  // Without codes (a model rebuilt from a checkpoint's options) load() supplies them.
  if (!codes.codes.empty()) {
    codes.validate();
    state_->trie = std::make_unique<CodeTrie>(codes);
  }
  state_->sid = std::move(codes);
  state_->net = TigerNet(options_);
}

TigerRecommender::~TigerRecommender() = default;

const SemanticIds& TigerRecommender::codes() const { return state_->sid; }

void TigerRecommender::set_cold_items(const std::vector<double>& train_counts) {
  if (train_counts.size() != static_cast<size_t>(n_items_) + 1)
    throw InvalidInput("tiger: set_cold_items needs n_items + 1 counts, got " + std::to_string(train_counts.size()));
  state_->cold.assign(train_counts.size(), 0);
  for (size_t i = 1; i < train_counts.size(); ++i) state_->cold[i] = train_counts[i] <= 0.0 ? 1 : 0;
}

namespace {
// The inference setters change a validated copy, so a refused value leaves the model as it was.
template <typename Change>
void set_validated(TigerOptions& options, Change change) {
  TigerOptions o = options;
  change(o);
  o.validate();
  options = std::move(o);
}
}  // namespace

void TigerRecommender::set_cold_fraction(double fraction) {
  set_validated(options_, [&](TigerOptions& o) { o.cold_fraction = fraction; });
}

void TigerRecommender::set_level_weights(const std::vector<double>& w) {
  set_validated(options_, [&](TigerOptions& o) { o.level_weights = w; });
}

void TigerRecommender::set_beam(int64_t beam) {
  set_validated(options_, [&](TigerOptions& o) { o.beam = beam; });
}

torch::Tensor TigerRecommender::code_embeddings(int64_t level) const {
  auto& net = state_->net;
  if (level < 0 || level >= state_->sid.levels) throw InvalidInput("tiger: no code level " + std::to_string(level));
  return net->tokens->weight.narrow(0, net->offsets[static_cast<size_t>(level)], net->sizes[static_cast<size_t>(level)])
      .detach()
      .clone();
}

void TigerRecommender::init_code_embeddings(const ResidualQuantizer& rq) {
  auto& st = *state_;
  auto& net = st.net;
  // The disambiguation level (if any) has no codebook; every other level must match.
  const int64_t content_levels = st.sid.levels - (st.sid.disambiguation_level ? 1 : 0);
  if (!rq.fitted() || rq.levels() != content_levels)
    throw InvalidInput("tiger: model.code_init has " + std::to_string(rq.fitted() ? rq.levels() : 0) +
                       " codebooks, the semantic IDs have " + std::to_string(content_levels) + " content levels");
  const int64_t D = options_.d_model, C = rq.code_dim(), K = rq.codebook_size(), used = std::min(C, D);
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> books;
  for (int64_t l = 0; l < content_levels; ++l) {
    if (K != net->sizes[static_cast<size_t>(l)])
      throw InvalidInput("tiger: model.code_init codebook " + std::to_string(l) + " has " + std::to_string(K) +
                         " entries, the semantic IDs' level has " + std::to_string(net->sizes[static_cast<size_t>(l)]));
    books.push_back(torch::from_blob(rq.codebook(l).data(), {K, C}, torch::kFloat).clone());
  }
  // Level 0's centroids get the random initialisation's mean row norm; deeper levels keep their
  // (smaller) norms relative to it, so an item's summed code embeddings start as its scaled
  // content vector.
  const double target = net->tokens->weight.narrow(0, net->offsets[0], K).norm(2, {1}).mean().item<double>();
  const double have = books[0].narrow(1, 0, used).norm(2, {1}).mean().item<double>();
  const double scale = have > 0 ? target / have : 1.0;
  for (int64_t l = 0; l < content_levels; ++l) {
    torch::Tensor rows = net->tokens->weight.narrow(0, net->offsets[static_cast<size_t>(l)], K);
    rows.mul_(0.1);
    rows.narrow(1, 0, used).copy_(books[static_cast<size_t>(l)].narrow(1, 0, used) * scale);
  }
  GENREC_LOG_INFO("tiger: code embeddings of %lld levels initialised from the quantiser's codebooks (%lld of %lld dims, scale %.3g)",
                  static_cast<long long>(content_levels), static_cast<long long>(used), static_cast<long long>(C), scale);
}

std::vector<BeamResult> TigerRecommender::beam_search(const std::vector<History>& batch, int64_t beam, int64_t cold_slots) {
  if (beam < 1) throw InvalidInput("tiger: beam must be >= 1");
  torch::NoGradGuard ng;
  auto& st = *state_;
  auto& net = st.net;
  const bool was_training = net->is_training();
  net->eval();
  const int64_t B = static_cast<int64_t>(batch.size()), L = st.sid.levels;
  const CodeTrie& trie = *st.trie;
  auto [enc, keep] = net->encode(st.encoder_tokens(batch, options_));
  DecoderCache cache;
  const size_t n_dec = net->dec->size();
  cache.self_k.resize(n_dec);
  cache.self_v.resize(n_dec);
  for (size_t i = 0; i < n_dec; ++i) {
    auto [k, v] = (*net->dec)[i]->as<DecoderBlockImpl>()->cross_attn->project_kv(enc);
    cache.cross_k.push_back(k);
    cache.cross_v.push_back(v);
  }
  cache.enc_keep = keep;
  // Beams: row b W + w is beam w of user b: its trie node (-1 = none), score and last token.
  const int64_t W = beam;
  std::vector<int64_t> beam_node(static_cast<size_t>(B * W), -1);
  std::vector<float> beam_score(static_cast<size_t>(B * W), 0.0f);
  std::vector<int64_t> next_token(static_cast<size_t>(B * W), net->bos);
  for (int64_t b = 0; b < B; ++b) beam_node[static_cast<size_t>(b * W)] = trie.root();
  struct Cand {
    float score;
    int64_t row;
    int32_t code;
  };
  std::vector<Cand> cands;
  const auto n_cold_slots =
      st.cold.empty() ? int64_t{0}
      : cold_slots >= 0 ? std::min(cold_slots, W)
                        : static_cast<int64_t>(std::floor(options_.cold_fraction * static_cast<double>(W)));
  auto is_cold = [&st](int32_t item) { return st.cold[static_cast<size_t>(item)] != 0; };
  for (int64_t l = 0; l < L; ++l) {
    torch::Tensor x = net->decoder_input(torch::tensor(next_token, torch::kLong).view({B * W, 1}), l);
    for (size_t i = 0; i < n_dec; ++i)
      x = (*net->dec)[i]->as<DecoderBlockImpl>()->step(x, B, W, cache.self_k[i], cache.self_v[i], cache.cross_k[i],
                                                        cache.cross_v[i], cache.enc_keep);
    torch::Tensor lp = net->level_log_probs(net->dec_norm(x).squeeze(1), l).contiguous();  // [B W, K_l]
    const int64_t K = lp.size(1);
    const float* lpp = lp.data_ptr<float>();
    const float wl = level_weight(l);
    std::vector<int64_t> rows(static_cast<size_t>(B * W)), nodes(static_cast<size_t>(B * W), -1);
    std::vector<int64_t> tokens(static_cast<size_t>(B * W), net->bos);
    std::vector<float> scores(static_cast<size_t>(B * W), 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      // Candidates of user b: valid children of its live beams.
      cands.clear();
      for (int64_t r = b * W; r < (b + 1) * W; ++r) {
        const int64_t node = beam_node[static_cast<size_t>(r)];
        if (node < 0) continue;
        const std::vector<int32_t>& children = trie.child_codes(static_cast<int32_t>(node));
        // model.trie_softmax: the level's distribution over the valid children only.
        float norm = 0.0f;
        if (options_.trie_softmax) {
          float top = -std::numeric_limits<float>::infinity();
          for (int32_t c : children) top = std::max(top, lpp[r * K + c]);
          double sum = 0;
          for (int32_t c : children) sum += std::exp(static_cast<double>(lpp[r * K + c] - top));
          norm = top + static_cast<float>(std::log(sum));
        }
        for (int32_t c : children)
          cands.push_back(Cand{beam_score[static_cast<size_t>(r)] + wl * (lpp[r * K + c] - norm), r, c});
      }
      auto better = [](const Cand& a, const Cand& c) {
        if (a.score != c.score) return a.score > c.score;
        if (a.row != c.row) return a.row < c.row;
        return a.code < c.code;
      };
      if (l == L - 1 && n_cold_slots > 0) {
        // Cold start (TIGER's epsilon): items without training events never were targets, so
        // their last code's learned probability means nothing; they get their prefix's score
        // plus log(1 / siblings) and up to n_cold_slots of the W places; warm items fill the
        // rest by their full score.
        std::vector<Cand> cold_c, warm_c;
        for (const Cand& cd : cands) {
          const int64_t node = beam_node[static_cast<size_t>(cd.row)];
          const int32_t item = trie.item(trie.child(static_cast<int32_t>(node), cd.code));
          if (is_cold(item)) {
            const auto siblings = static_cast<float>(trie.child_codes(static_cast<int32_t>(node)).size());
            cold_c.push_back(Cand{beam_score[static_cast<size_t>(cd.row)] - std::log(siblings), cd.row, cd.code});
          } else {
            warm_c.push_back(cd);
          }
        }
        std::sort(cold_c.begin(), cold_c.end(), better);
        std::sort(warm_c.begin(), warm_c.end(), better);
        share_places(warm_c, cold_c, static_cast<size_t>(W), static_cast<size_t>(n_cold_slots));
        cands = std::move(warm_c);
        cands.insert(cands.end(), cold_c.begin(), cold_c.end());
      }
      const size_t keep_n = std::min<size_t>(cands.size(), static_cast<size_t>(W));
      // Best first; ties to the earlier row, then the lower code (deterministic).
      std::partial_sort(cands.begin(), cands.begin() + static_cast<long>(keep_n), cands.end(), better);
      for (int64_t w = 0; w < W; ++w) {
        const size_t r = static_cast<size_t>(b * W + w);
        if (static_cast<size_t>(w) >= keep_n) {
          rows[r] = b * W;  // an empty slot: any row of the user, never read
          continue;
        }
        const Cand& cd = cands[static_cast<size_t>(w)];
        rows[r] = cd.row;
        nodes[r] = trie.child(static_cast<int32_t>(beam_node[static_cast<size_t>(cd.row)]), cd.code);
        tokens[r] = net->offsets[static_cast<size_t>(l)] + cd.code;
        scores[r] = cd.score;
      }
    }
    cache.select(torch::tensor(rows, torch::kLong));
    beam_node = std::move(nodes);
    beam_score = std::move(scores);
    next_token = std::move(tokens);
  }
  std::vector<BeamResult> out(static_cast<size_t>(B));
  for (size_t r = 0; r < beam_node.size(); ++r) {
    if (beam_node[r] < 0) continue;
    BeamResult& br = out[r / static_cast<size_t>(W)];
    br.items.push_back(trie.item(static_cast<int32_t>(beam_node[r])));
    br.scores.push_back(beam_score[r]);
  }
  if (was_training) net->train();
  return out;
}

torch::Tensor TigerRecommender::exhaustive_log_probs(const std::vector<History>& batch) {
  torch::NoGradGuard ng;
  auto& st = *state_;
  auto& net = st.net;
  const bool was_training = net->is_training();
  net->eval();
  std::vector<int32_t> all(static_cast<size_t>(n_items_));
  for (int32_t i = 0; i < n_items_; ++i) all[static_cast<size_t>(i)] = i + 1;
  auto [in, target] = st.decoder_io(all);  // [N, L]
  const std::vector<torch::Tensor> valid = st.valid_codes(all, options_.trie_softmax);
  const int64_t B = static_cast<int64_t>(batch.size()), N = n_items_, L = st.sid.levels;
  auto [enc, keep] = net->encode(st.encoder_tokens(batch, options_));
  torch::Tensor out = torch::full({B, N + 1}, -std::numeric_limits<float>::infinity());
  for (int64_t b = 0; b < B; ++b) {
    torch::Tensor h = st.decode(in, enc[b].unsqueeze(0), keep[b].unsqueeze(0));  // [N, L, D]
    torch::Tensor total = torch::zeros({N});
    for (int64_t l = 0; l < L; ++l)
      total += level_weight(l) *
               net->level_log_probs(h.select(1, l), l, State::level_of(valid, l))
                   .gather(1, target.select(1, l).unsqueeze(1))
                   .squeeze(1);
    out[b].narrow(0, 1, N).copy_(total);
  }
  if (was_training) net->train();
  return out;
}

std::vector<std::vector<double>> TigerRecommender::item_log_probs(const std::vector<History>& batch,
                                                                  const std::vector<std::vector<int32_t>>& items) {
  if (items.size() != batch.size())
    throw InvalidInput("tiger: item_log_probs needs one item list per history, got " + std::to_string(items.size()) +
                       " for " + std::to_string(batch.size()));
  torch::NoGradGuard ng;
  auto& st = *state_;
  auto& net = st.net;
  std::vector<std::vector<double>> out(batch.size());
  std::vector<int64_t> rows;
  std::vector<int32_t> flat;
  for (size_t b = 0; b < items.size(); ++b)
    for (int32_t it : items[b]) {
      if (it < 1 || it > n_items_) throw InvalidInput("tiger: item_log_probs: item " + std::to_string(it) + " is not in 1.." + std::to_string(n_items_));
      rows.push_back(static_cast<int64_t>(b));
      flat.push_back(it);
    }
  if (flat.empty()) return out;
  const bool was_training = net->is_training();
  net->eval();
  auto [enc, keep] = net->encode(st.encoder_tokens(batch, options_));
  auto [in, target] = st.decoder_io(flat);  // [N, L]
  const std::vector<torch::Tensor> valid = st.valid_codes(flat, options_.trie_softmax);
  torch::Tensor r = torch::tensor(rows, torch::kLong);
  torch::Tensor h = st.decode(in, enc.index_select(0, r), keep.index_select(0, r));  // [N, L, D]
  torch::Tensor total = torch::zeros({static_cast<int64_t>(flat.size())});
  for (int64_t l = 0; l < st.sid.levels; ++l)
    total += net->level_log_probs(h.select(1, l), l, State::level_of(valid, l))
                 .gather(1, target.select(1, l).unsqueeze(1))
                 .squeeze(1);
  auto a = total.accessor<float, 1>();
  for (size_t n = 0; n < flat.size(); ++n) out[static_cast<size_t>(rows[n])].push_back(a[static_cast<int64_t>(n)]);
  if (was_training) net->train();
  return out;
}

double TigerRecommender::history_bias() const { return state_->history_bias; }

void TigerRecommender::set_history_bias(bool on, double b) {
  options_.history_bias = on;
  state_->history_bias = on ? b : 0.0;
}

double TigerRecommender::estimate_history_bias(const Dataset& ds, const Split& split, int64_t max_examples) {
  auto& st = *state_;
  if (!options_.history_bias) return st.history_bias = 0.0;
  // Training transitions: target = event t (t >= 1) of a user's training prefix, history = the
  // events before it; h = 1 when the target is one of them.
  int64_t n = 0, repeats = 0;
  std::vector<uint8_t> in_history(static_cast<size_t>(n_items_) + 1, 0);
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const UserEvents ev = ds.user(u);
    const int64_t end = std::min<int64_t>(split.train_end[static_cast<size_t>(u)], ev.size);
    for (int64_t t = 0; t < end; ++t) {
      if (t >= 1) {
        ++n;
        repeats += in_history[static_cast<size_t>(ev.items[t])];
      }
      in_history[static_cast<size_t>(ev.items[t])] = 1;
    }
    for (int64_t t = 0; t < end; ++t) in_history[static_cast<size_t>(ev.items[t])] = 0;
  }
  if (n == 0) return st.history_bias = 0.0;
  if (repeats == 0) {
    // The likelihood of every transition grows as b falls: its maximum is at -inf.
    GENREC_LOG_INFO("tiger: history bias -inf (none of %lld training targets repeats an item of its history)",
                    static_cast<long long>(n));
    return st.history_bias = -std::numeric_limits<double>::infinity();
  }
  // Evenly spaced transitions; P = the network's probability of the history's distinct items.
  const int64_t want = std::max<int64_t>(1, std::min(n, max_examples));
  std::vector<std::pair<int32_t, int64_t>> picked;
  int64_t k = 0, next = 0, idx = 0;
  for (int32_t u = 1; u <= ds.n_users() && k < want; ++u) {
    const int64_t end = std::min<int64_t>(split.train_end[static_cast<size_t>(u)], ds.user(u).size);
    for (int64_t t = 1; t < end && k < want; ++t, ++idx)
      if (idx == next) {
        picked.emplace_back(u, t);
        next = (++k) * n / want;
      }
  }
  std::vector<double> prob, hit;
  const size_t chunk = 64;
  for (size_t lo = 0; lo < picked.size(); lo += chunk) {
    std::vector<History> hs;
    std::vector<std::vector<int32_t>> items;
    for (size_t i = lo; i < std::min(picked.size(), lo + chunk); ++i) {
      const UserEvents ev = ds.user(picked[i].first);
      const int64_t t = picked[i].second;
      hs.push_back(History{picked[i].first, ev.items, ev.timestamps, t});
      std::vector<int32_t> seen = distinct_items(ev.items, t);
      hit.push_back(std::binary_search(seen.begin(), seen.end(), ev.items[t]) ? 1.0 : 0.0);
      items.push_back(std::move(seen));
    }
    for (const auto& lps : item_log_probs(hs, items)) {
      double p = 0;
      for (double lp : lps) p += std::exp(lp);
      prob.push_back(std::min(p, 1.0 - 1e-12));
    }
  }
  // Maximise sum_n [b h_n - log(1 - P_n + e^b P_n)] (concave in b): its derivative
  // sum_n h_n - sum_n e^b P_n / (1 - P_n + e^b P_n) falls with b; bisection on [-30, 30].
  auto slope = [&](double b) {
    double g = 0;
    for (size_t i = 0; i < prob.size(); ++i) {
      const double p = prob[i];
      g += hit[i] - (p > 0 ? 1.0 / (1.0 + (1.0 - p) * std::exp(-b) / p) : 0.0);
    }
    return g;
  };
  double lo_b = -30, hi_b = 30;
  for (int it = 0; it < 100; ++it) {
    const double mid = 0.5 * (lo_b + hi_b);
    (slope(mid) > 0 ? lo_b : hi_b) = mid;
  }
  st.history_bias = 0.5 * (lo_b + hi_b);
  GENREC_LOG_INFO("tiger: history bias %.4f (%lld of %lld training targets repeat a history item; fitted on %zu)",
                  st.history_bias, static_cast<long long>(repeats), static_cast<long long>(n), prob.size());
  return st.history_bias;
}

torch::Tensor TigerRecommender::score(const std::vector<History>& batch) {
  auto& st = *state_;
  const auto B = static_cast<int64_t>(batch.size());
  torch::Tensor out = torch::full({B, n_items_ + 1}, TigerRecommender::kNotReturned);
  auto a = out.accessor<float, 2>();
  const double bias = options_.history_bias ? st.history_bias : 0.0;
  if (bias == 0.0) {
    std::vector<BeamResult> res = beam_search(batch, options_.beam);
    for (size_t b = 0; b < res.size(); ++b)
      for (size_t i = 0; i < res[b].items.size(); ++i) a[static_cast<int64_t>(b)][res[b].items[i]] = res[b].scores[i];
    return out;
  }
  // History items get score + b (dropped at -inf). A row's beam is widened by its distinct
  // history items (rounded up to a power of two) so that `beam` results remain, and its cold
  // places by the cold ones among them, so cold items keep the places cold_fraction gives them
  // out of `beam`; rows of equal width are searched together (a row's results do not depend on
  // its batch).
  const size_t W = static_cast<size_t>(options_.beam);
  const auto n_cold_slots =
      st.cold.empty() ? size_t{0} : static_cast<size_t>(std::floor(options_.cold_fraction * static_cast<double>(W)));
  std::vector<std::vector<int32_t>> seen(batch.size());
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_width;  // (width, cold places) -> rows
  for (size_t b = 0; b < batch.size(); ++b) {
    seen[b] = distinct_items(batch[b].items, batch[b].size);
    int64_t extra = 0, cold_seen = 0;
    while (extra < static_cast<int64_t>(seen[b].size())) extra = extra == 0 ? 1 : 2 * extra;
    if (n_cold_slots > 0)
      for (int32_t i : seen[b]) cold_seen += st.cold[static_cast<size_t>(i)];
    by_width[{options_.beam + extra, n_cold_slots > 0 ? static_cast<int64_t>(n_cold_slots) + cold_seen : 0}].push_back(b);
  }
  for (const auto& [width, rows] : by_width) {
    std::vector<History> sub;
    for (size_t b : rows) sub.push_back(batch[b]);
    std::vector<BeamResult> res = beam_search(sub, width.first, width.second);
    for (size_t j = 0; j < rows.size(); ++j) {
      const std::vector<int32_t>& h = seen[rows[j]];
      std::vector<std::pair<double, int32_t>> warm, cold;
      for (size_t i = 0; i < res[j].items.size(); ++i) {
        const int32_t item = res[j].items[i];
        double s = res[j].scores[i];
        if (std::binary_search(h.begin(), h.end(), item)) {
          if (std::isinf(bias)) continue;
          s += bias;
        }
        (n_cold_slots > 0 && st.cold[static_cast<size_t>(item)] ? cold : warm).emplace_back(s, item);
      }
      auto by_score = [](const auto& x, const auto& y) { return x.first > y.first; };
      std::stable_sort(warm.begin(), warm.end(), by_score);
      std::stable_sort(cold.begin(), cold.end(), by_score);
      share_places(warm, cold, W, n_cold_slots);
      for (const auto* kept : {&warm, &cold})
        for (const auto& [s, item] : *kept) a[static_cast<int64_t>(rows[j])][item] = static_cast<float>(s);
    }
  }
  return out;
}

void TigerRecommender::fit(const TrainContext& ctx) {
  const Dataset& ds = ctx.ds;
  const Split& split = ctx.split;
  auto& st = *state_;
  auto& net = st.net;
  const auto& o = options_;
  set_cold_items(train_item_counts(ds, split));
  if (st.meta.stopped || st.meta.epoch >= o.epochs) {
    if (!st.best.empty()) copy_params(*net, st.best);
    if (o.history_bias) estimate_history_bias(ds, split);
    return;
  }
  if (st.meta.step == 0 && !o.code_init.empty()) init_code_embeddings(ResidualQuantizer::load(o.code_init));
  if (!st.optimizer)
    st.optimizer = std::make_unique<torch::optim::AdamW>(net->parameters(),
                                                         torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  // Examples: every training event after the first, with the events before it as history.
  // Each has a loss weight (train.recency_weight: a user's most recent training targets weigh
  // more), divided by the mean weight so that the loss scale, and with it the learning rate,
  // stays that of the unweighted loss.
  struct Example {
    int32_t user;
    int64_t end;  // target = events[end]; history = events[.. end)
    float weight;
  };
  std::vector<Example> examples;
  double weight_sum = 0;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const int64_t end = split.train_end[static_cast<size_t>(u)];
    for (int64_t t = 1; t < end; ++t) {
      const double w = tiger_recency_weight(end - 1 - t, o.recency_weight, o.recency_halflife);
      examples.push_back(Example{u, t, static_cast<float>(w)});
      weight_sum += w;
    }
  }
  if (examples.empty()) throw InvalidInput("tiger: no user has two or more training events");
  const double weight_mean = weight_sum / static_cast<double>(examples.size());
  for (Example& e : examples) e.weight = static_cast<float>(e.weight / weight_mean);
  const bool weighted = o.recency_weight > 0.0;
  auto history_len = [&o](const Example& e) { return std::min<int64_t>(e.end, o.max_items); };
  const int64_t steps_per_epoch = (static_cast<int64_t>(examples.size()) + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  EvalOptions eval_opt = ctx.eval ? *ctx.eval : EvalOptions{};
  if (std::find(eval_opt.ks.begin(), eval_opt.ks.end(), 10) == eval_opt.ks.end()) eval_opt.ks.push_back(10);
  if (o.eval_users > 0) eval_opt.max_users = o.eval_users;
  int64_t n_params = 0;
  for (auto& p : net->parameters()) n_params += p.numel();
  GENREC_LOG_INFO("tiger: %zu training examples, %lld batches/epoch, %lld parameters, %d levels", examples.size(),
                  static_cast<long long>(steps_per_epoch), static_cast<long long>(n_params), st.sid.levels);

  while (st.meta.epoch < o.epochs && !st.meta.stopped) {
    const int64_t epoch = st.meta.epoch + 1;
    torch::manual_seed(static_cast<uint64_t>(o.seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) * 7919ULL + static_cast<uint64_t>(epoch));
    std::vector<Example> order = examples;
    std::shuffle(order.begin(), order.end(), rng);
    // Length-bucketed batches (jagged): examples grouped by history length (random within a
    // length), cut into batches, batches in random order; each batch is padded only to its own
    // longest history, which on short-sequence data like Amazon roughly halves the encoder work.
    std::vector<std::pair<size_t, size_t>> batches;
    if (o.jagged)
      std::stable_sort(order.begin(), order.end(),
                       [&](const Example& a, const Example& b) { return history_len(a) < history_len(b); });
    for (size_t lo = 0; lo < order.size(); lo += static_cast<size_t>(o.batch_size))
      batches.emplace_back(lo, std::min(order.size(), lo + static_cast<size_t>(o.batch_size)));
    if (o.jagged) std::shuffle(batches.begin(), batches.end(), rng);
    net->train();
    auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t n_seen = 0;
    ProgressTracker tracker("train epoch " + std::to_string(epoch), static_cast<int64_t>(order.size()), "examples",
                            ctx.progress);
    for (auto [lo, hi] : batches) {
      std::vector<History> hs;
      std::vector<int32_t> targets;
      std::vector<float> weights;
      for (size_t i = lo; i < hi; ++i) {
        UserEvents ev = ds.user(order[i].user);
        hs.push_back(History{order[i].user, ev.items, nullptr, order[i].end});
        targets.push_back(ev.items[order[i].end]);
        weights.push_back(order[i].weight);
      }
      const torch::Tensor w = weighted ? torch::tensor(weights) : torch::Tensor();
      auto [enc, keep] = net->encode(st.encoder_tokens(hs, o));
      auto [in, target] = st.decoder_io(targets);
      const std::vector<torch::Tensor> valid = st.valid_codes(targets, o.trie_softmax);
      torch::Tensor h = st.decode(in, enc, keep);  // [N, L, D]
      torch::Tensor loss = torch::zeros({});
      for (int64_t l = 0; l < st.sid.levels; ++l) {
        const torch::Tensor v = State::level_of(valid, l);
        loss = loss + tiger_level_loss(net->level_log_probs(h.select(1, l), l, v), target.select(1, l), o.label_smoothing, w, v);
      }
      loss = loss / static_cast<double>(st.sid.levels);
      const int64_t step = st.meta.step + 1;
      optimizer_step(*st.optimizer, *net, loss, o.grad_clip,
                     scheduled_lr(o.lr, o.warmup_steps, o.lr_schedule, step, total_steps));
      {
        torch::NoGradGuard ng;
        net->tokens->weight[0].zero_();
      }
      st.meta.step = step;
      const double lv = loss.item<double>();
      if (!std::isfinite(lv)) throw Error("tiger: training diverged: loss is " + std::to_string(lv) + " at epoch " + std::to_string(epoch));
      loss_sum += lv * static_cast<double>(hi - lo);
      n_seen += static_cast<int64_t>(hi - lo);
      tracker.advance(static_cast<int64_t>(hi - lo));
    }
    tracker.finish();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.meta.epoch = epoch;
    st.meta.elapsed_seconds += secs;
    if (epoch % o.eval_every == 0 || epoch == o.epochs) {
      if (o.history_bias) estimate_history_bias(ds, split);
      EvalResult r;
      const std::optional<double> value = validation_metric(*this, ctx, eval_opt, o.metric, st.meta, r);
      const bool validate = value.has_value();
      const bool best = update_best(st.meta, value, epoch, o.patience);
      if (best) st.best = clone_params(*net);
      nlohmann::json line = {{"epoch", epoch},
                             {"step", st.meta.step},
                             {"loss", loss_sum / static_cast<double>(std::max<int64_t>(1, n_seen))},
                             {"epoch_seconds", secs},
                             {"examples_per_second", static_cast<double>(n_seen) / secs},
                             {"elapsed_seconds", st.meta.elapsed_seconds},
                             {"best_epoch", st.meta.best_epoch},
                             {"best", best}};
      if (validate) {
        line["valid"] = r.metrics;
        line["valid_seconds"] = r.seconds;
      }
      // JSON has no infinity: b = -inf is written as the string "-inf".
      if (o.history_bias)
        line["history_bias"] = std::isfinite(st.history_bias) ? nlohmann::json(st.history_bias) : nlohmann::json("-inf");
      if (validate)
        GENREC_LOG_INFO("epoch %lld: loss %.4f, valid %s %.4f%s", static_cast<long long>(epoch), line["loss"].get<double>(),
                        o.metric.c_str(), *value, best ? " (best)" : "");
      else
        GENREC_LOG_INFO("epoch %lld: loss %.4f (no validation: the validation events are trained on)",
                        static_cast<long long>(epoch), line["loss"].get<double>());
      if (ctx.on_validation) ctx.on_validation(*this, line, best);
    }
  }
  if (!st.best.empty()) copy_params(*net, st.best);
  if (o.history_bias) estimate_history_bias(ds, split);  // b of the best weights
}

void TigerRecommender::save(torch::serialize::OutputArchive& archive) const {
  auto& st = *state_;
  write_params(archive, *st.net);
  const auto& s = st.sid;
  archive.write("model/sid/codes", torch::tensor(s.codes, torch::kInt));
  archive.write("model/sid/codebook_sizes", torch::tensor(s.codebook_sizes, torch::kInt));
  archive.write("model/sid/disambiguation_level", c10::IValue(s.disambiguation_level));
  archive.write("model/history_bias", torch::tensor({st.history_bias}, torch::kDouble));
  write_train_state(archive, st.meta, st.optimizer.get(), st.best);
}

void TigerRecommender::load(torch::serialize::InputArchive& archive) {
  auto& st = *state_;
  torch::NoGradGuard ng;
  torch::Tensor codes, sizes;
  archive.read("model/sid/codes", codes);
  archive.read("model/sid/codebook_sizes", sizes);
  c10::IValue v;
  SemanticIds s;
  s.n_items = n_items_;
  s.levels = static_cast<int32_t>(sizes.numel());
  s.codebook_sizes.assign(sizes.data_ptr<int32_t>(), sizes.data_ptr<int32_t>() + sizes.numel());
  s.codes.assign(codes.data_ptr<int32_t>(), codes.data_ptr<int32_t>() + codes.numel());
  if (archive.try_read("model/sid/disambiguation_level", v)) s.disambiguation_level = v.toBool();
  torch::Tensor hb;  // absent in checkpoints from before model.history_bias
  st.history_bias = archive.try_read("model/history_bias", hb) && options_.history_bias ? hb.item<double>() : 0.0;
  if (s.levels != options_.levels || s.codebook_sizes != options_.codebook_sizes)
    throw InvalidInput("tiger checkpoint: semantic IDs disagree with the model options");
  // A model built with codes (train.init_from) takes weights only from a checkpoint with the same codes.
  if (!st.sid.codes.empty() && st.sid.codes != s.codes)
    throw InvalidInput("tiger checkpoint: its semantic IDs differ from model.sid's");
  s.validate();
  st.sid = std::move(s);
  st.trie = std::make_unique<CodeTrie>(st.sid);
  read_params(archive, *st.net);
  read_train_state(archive, *st.net, torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay), st.meta,
                   st.optimizer, st.best);
}

void TigerRecommender::reset_training_state() {
  auto& st = *state_;
  clear_train_state(st.meta, st.optimizer, st.best);
}

}  // namespace genrec
