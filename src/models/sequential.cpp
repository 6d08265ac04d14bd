#include "genrec/models/sequential.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "genrec/core/error.h"
#include "genrec/core/log.h"
#include "genrec/nn/hstu.h"
#include "genrec/nn/sasrec.h"
#include "genrec/train/losses.h"
#include "genrec/train/schedule.h"
#include "../train/train_state.h"

namespace genrec {

// ---------------------------------------------------------------------------------------------
// Options

nlohmann::json SequentialOptions::to_json() const {
  return {{"encoder", encoder}, {"d_model", d_model},   {"max_len", max_len},       {"n_blocks", n_blocks},
          {"n_heads", n_heads}, {"dropout", dropout},   {"d_qk", d_qk},             {"d_v", d_v},
          {"time_bias", time_bias}, {"query_time", query_time}, {"loss", loss},     {"negatives", negatives},   {"in_batch", in_batch},
          {"temperature", temperature}, {"l2_norm", l2_norm}, {"history_bias", history_bias}, {"input_stage", input_stage}, {"attn_scale", attn_scale}, {"epochs", epochs},   {"batch_size", batch_size}, {"jagged", jagged},
          {"lr", lr},           {"weight_decay", weight_decay}, {"warmup_steps", warmup_steps},
          {"lr_schedule", lr_schedule}, {"grad_clip", grad_clip}, {"eval_every", eval_every},
          {"patience", patience}, {"metric", metric},  {"seed", seed}};
}

SequentialOptions SequentialOptions::from_json(const nlohmann::json& j) {
  SequentialOptions o;
#define GENREC_OPT(name) o.name = j.value(#name, o.name)
  GENREC_OPT(encoder); GENREC_OPT(d_model); GENREC_OPT(max_len); GENREC_OPT(n_blocks); GENREC_OPT(n_heads);
  GENREC_OPT(dropout); GENREC_OPT(d_qk); GENREC_OPT(d_v); GENREC_OPT(time_bias); GENREC_OPT(query_time); GENREC_OPT(loss);
  GENREC_OPT(negatives); GENREC_OPT(in_batch); GENREC_OPT(temperature); GENREC_OPT(l2_norm); GENREC_OPT(history_bias); GENREC_OPT(input_stage); GENREC_OPT(attn_scale); GENREC_OPT(epochs);
  GENREC_OPT(batch_size); GENREC_OPT(jagged); GENREC_OPT(lr); GENREC_OPT(weight_decay); GENREC_OPT(warmup_steps);
  GENREC_OPT(lr_schedule); GENREC_OPT(grad_clip); GENREC_OPT(eval_every); GENREC_OPT(patience); GENREC_OPT(metric);
  GENREC_OPT(seed);
#undef GENREC_OPT
  return o;
}

void SequentialOptions::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw InvalidInput(what);
  };
  need(encoder == "sasrec" || encoder == "hstu", "model.type must be sasrec or hstu, got '" + encoder + "'");
  need(loss == "softmax" || loss == "sampled_softmax" || loss == "bce",
       "model.loss must be softmax, sampled_softmax or bce, got '" + loss + "'");
  need(d_model >= 1 && max_len >= 1 && n_blocks >= 1 && n_heads >= 1, "model.d_model, max_len, n_blocks, n_heads must be >= 1");
  need(loss != "sampled_softmax" || negatives >= 1 || in_batch, "model.negatives must be >= 1 (or set model.in_batch)");
  need(temperature > 0, "model.temperature must be > 0");
  need(!history_bias || loss == "softmax", "model.history_bias needs model.loss = softmax, got '" + loss + "'");
  need(query_time == "own" || query_time == "next", "model.query_time must be own or next, got '" + query_time + "'");
  need(epochs >= 1 && batch_size >= 1, "train.epochs and train.batch_size must be >= 1");
  need(lr > 0, "train.lr must be > 0, got " + std::to_string(lr));
  need(weight_decay >= 0 && warmup_steps >= 0 && grad_clip >= 0, "train.weight_decay, warmup_steps, grad_clip must be >= 0");
  need(lr_schedule == "constant" || lr_schedule == "cosine", "train.lr_schedule must be constant or cosine");
  need(eval_every >= 1 && patience >= 1, "train.eval_every and train.patience must be >= 1");
}

// ---------------------------------------------------------------------------------------------
// Network and training state

namespace {

// History bias: an item last seen d positions before the query position (d = 0: the query
// position's own item) gets the offset of bucket 0, 1 (d = 0, 1), else 1 + floor(log2 d), capped.
constexpr int64_t kHistoryBuckets = 8;
int64_t history_bucket(int64_t d) {
  if (d <= 1) return d;
  int64_t b = 1;
  while (d > 1) {
    d >>= 1;
    ++b;
  }
  return std::min<int64_t>(b, kHistoryBuckets - 1);
}

struct NetImpl : torch::nn::Module {
  NetImpl(int32_t n_items, const SequentialOptions& o) {
    items = register_module("items", torch::nn::Embedding(torch::nn::EmbeddingOptions(n_items + 1, o.d_model).padding_idx(0)));
    torch::nn::init::normal_(items->weight, 0.0, 1.0 / std::sqrt(static_cast<double>(o.d_model)));
    {
      torch::NoGradGuard ng;
      items->weight[0].zero_();
    }
    if (o.encoder == "sasrec") {
      encoder = register_module(
          "encoder", std::make_shared<SASRecImpl>(
                         SASRecOptions(o.d_model, o.max_len).n_blocks(o.n_blocks).n_heads(o.n_heads).dropout(o.dropout)));
    } else {
      encoder = register_module("encoder", std::make_shared<HSTUImpl>(HSTUOptions(o.d_model, o.max_len)
                                                                          .n_blocks(o.n_blocks)
                                                                          .n_heads(o.n_heads)
                                                                          .d_qk(o.d_qk)
                                                                          .d_v(o.d_v)
                                                                          .dropout(o.dropout)
                                                                          .use_time_bias(o.time_bias)
                                                                          .input_stage(o.input_stage)
                                                                          .attn_scale(o.attn_scale)));
    }
    if (o.history_bias) history_bias = register_parameter("history_bias", torch::zeros({kHistoryBuckets}));
  }
  torch::nn::Embedding items{nullptr};
  std::shared_ptr<SequenceEncoderImpl> encoder;
  torch::Tensor history_bias;  // [kHistoryBuckets] logit offsets (options.history_bias)
};
TORCH_MODULE(Net);

// Right-padded batch of sequences.
struct Batch {
  torch::Tensor items;       // [B, T] int64
  torch::Tensor targets;     // [B, T] int64 (training only)
  torch::Tensor lengths;     // [B] int64
  torch::Tensor timestamps;  // [B, T] int64 or undefined
  torch::Tensor query_times; // [B, T] int64 or undefined (query_time = own)
};

// The history-bias slots of a right-padded batch: query position t of row b sees slot j (the item
// at position j) when j <= t and the item does not occur again in (j, t] (one slot per distinct
// item, its latest position), with the offset of bucket history_bucket(t - j).
struct HistorySlots {
  torch::Tensor mask;           // [B, T, T] bool
  torch::Tensor offsets;        // [B, T, T] logit offsets (0 where masked)
  torch::Tensor target_offset;  // [B, T] offset of the position's target (0 when not in a slot)
};

HistorySlots history_slots(const torch::Tensor& items, const torch::Tensor& lengths, const torch::Tensor& targets,
                           const torch::Tensor& bias) {
  const int64_t B = items.size(0), T = items.size(1);
  auto it = items.accessor<int64_t, 2>();
  auto len = lengths.accessor<int64_t, 1>();
  std::vector<int64_t> bucket(static_cast<size_t>(B * T * T), -1), next(static_cast<size_t>(T));
  for (int64_t r = 0; r < B; ++r) {
    std::unordered_map<int64_t, int64_t> later;  // item -> its next position
    for (int64_t j = len[r] - 1; j >= 0; --j) {
      auto f = later.find(it[r][j]);
      next[static_cast<size_t>(j)] = f == later.end() ? T : f->second;
      later[it[r][j]] = j;
    }
    for (int64_t t = 0; t < len[r]; ++t)
      for (int64_t j = 0; j <= t; ++j)
        if (t < next[static_cast<size_t>(j)]) bucket[static_cast<size_t>((r * T + t) * T + j)] = history_bucket(t - j);
  }
  torch::Tensor bk = torch::tensor(bucket, torch::kLong).view({B, T, T});
  HistorySlots s;
  s.mask = bk >= 0;
  s.offsets = bias.index({bk.clamp_min(0)}) * s.mask.to(bias.scalar_type());
  if (targets.defined()) {
    torch::Tensor same = items.unsqueeze(1) == targets.unsqueeze(2);  // [B, T(query), T(slot)]
    s.target_offset = (s.offsets * (same & s.mask).to(bias.scalar_type())).sum(2);
  }
  return s;
}

}  // namespace

struct SequentialRecommender::State {
  Net net{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  TrainMeta meta;
  std::vector<torch::Tensor> best;  // best parameters so far (empty before the first validation)
  torch::Tensor log_pop;            // [n_items + 1] log of training frequency, for in-batch log-Q
  bool has_timestamps = false;
};

SequentialRecommender::SequentialRecommender(int32_t n_items, SequentialOptions options)
    : n_items_(n_items), options_(std::move(options)), state_(std::make_unique<State>()) {
  options_.validate();
  torch::manual_seed(static_cast<uint64_t>(options_.seed));
  state_->net = Net(n_items_, options_);
}

SequentialRecommender::~SequentialRecommender() = default;

int64_t SequentialRecommender::epochs_done() const { return state_->meta.epoch; }

torch::Tensor SequentialRecommender::encode(const torch::Tensor& items, const torch::Tensor& lengths,
                                            const torch::Tensor& timestamps, const torch::Tensor& query_times) {
  torch::Tensor x = state_->net->items(items);
  return state_->net->encoder->forward(x, lengths, timestamps, query_times);
}

namespace {

// Builds a right-padded batch from (items, timestamps) spans; the last max_len items of each.
// pad_to > 0 pads every row to that width instead of the batch's longest row.
// next_time: also fill query_times with the time of the event each position predicts.
Batch make_batch(const std::vector<History>& hs, int64_t max_len, bool with_time, bool with_targets,
                 int64_t pad_to = 0, bool next_time = false) {
  const auto B = static_cast<int64_t>(hs.size());
  int64_t T = std::max<int64_t>(1, pad_to);
  std::vector<int64_t> lens(hs.size());
  for (size_t b = 0; b < hs.size(); ++b) {
    int64_t n = std::min(hs[b].size - (with_targets ? 1 : 0), max_len);
    lens[b] = std::max<int64_t>(n, 0);
    T = std::max(T, lens[b]);
  }
  Batch out;
  next_time = next_time && with_time;
  std::vector<int64_t> items(static_cast<size_t>(B * T), 0), targets, times, query_times;
  if (with_targets) targets.assign(items.size(), 0);
  if (with_time) times.assign(items.size(), 0);
  if (next_time) query_times.assign(items.size(), 0);
  for (size_t b = 0; b < hs.size(); ++b) {
    const History& h = hs[b];
    const int64_t n = lens[b];
    const int64_t end = with_targets ? h.size - 1 : h.size;  // inputs are [end - n, end)
    for (int64_t t = 0; t < n; ++t) {
      const int64_t src = end - n + t;
      const auto dst = static_cast<size_t>(static_cast<int64_t>(b) * T + t);
      items[dst] = h.items[src];
      if (with_targets) targets[dst] = h.items[src + 1];
      if (with_time && h.timestamps) times[dst] = h.timestamps[src];
      if (next_time && h.timestamps) {
        // The predicted event is src + 1: in training it exists; at inference the last
        // position predicts the requested one, at request_time when known.
        if (src + 1 < h.size) query_times[dst] = h.timestamps[src + 1];
        else query_times[dst] = h.request_time >= 0 ? h.request_time : h.timestamps[src];
      }
    }
  }
  out.items = torch::tensor(items, torch::kLong).view({B, T});
  if (with_targets) out.targets = torch::tensor(targets, torch::kLong).view({B, T});
  if (with_time) out.timestamps = torch::tensor(times, torch::kLong).view({B, T});
  if (next_time) out.query_times = torch::tensor(query_times, torch::kLong).view({B, T});
  out.lengths = torch::tensor(lens, torch::kLong);
  return out;
}

}  // namespace

torch::Tensor SequentialRecommender::finish_query(const torch::Tensor& hidden) const {
  if (!options_.l2_norm) return hidden;
  return torch::nn::functional::normalize(hidden, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor SequentialRecommender::query_embeddings(const std::vector<History>& batch) {
  torch::NoGradGuard ng;
  auto& net = state_->net;
  bool was_training = net->is_training();
  net->eval();
  std::vector<History> hs = batch;
  // An empty history scores from the padding embedding only; give it one padding position.
  static const int32_t kPad = 0;
  for (auto& h : hs)
    if (h.size == 0) h = History{h.user, &kPad, nullptr, 1};
  const bool with_time = state_->has_timestamps && options_.encoder == "hstu" && options_.time_bias &&
                         std::all_of(hs.begin(), hs.end(), [](const History& h) { return h.timestamps != nullptr; });
  Batch b = make_batch(hs, options_.max_len, with_time, false, 0, options_.query_time == "next");
  torch::Tensor h = encode(b.items, b.lengths, b.timestamps, b.query_times);  // [B, T, D]
  torch::Tensor last = h.index({torch::arange(h.size(0)), b.lengths - 1});  // [B, D]
  last = finish_query(last);
  if (was_training) net->train();
  return last;
}

int64_t IncrementalCache::bytes() const {
  return kv.bytes() + static_cast<int64_t>(items.size() * sizeof(int32_t) + times.size() * sizeof(int64_t)) +
         (last.defined() ? static_cast<int64_t>(last.nbytes()) : 0);
}

torch::Tensor SequentialRecommender::query_embedding_incremental(const History& h, IncrementalCache& cache,
                                                                 int64_t* computed) {
  if (!supports_incremental()) throw InvalidInput("incremental encoding needs an hstu model, not " + options_.encoder);
  if (computed) *computed = 0;
  if (h.size == 0) return query_embeddings({h})[0];  // the padding position: nothing to cache
  torch::NoGradGuard ng;
  auto& net = state_->net;
  const bool was_training = net->is_training();
  net->eval();
  struct Restore {
    Net& net;
    bool training;
    ~Restore() { if (training) net->train(); }
  } restore{net, was_training};
  auto* hstu = dynamic_cast<HSTUImpl*>(net->encoder.get());
  GENREC_ASSERT(hstu != nullptr);
  const bool with_time = state_->has_timestamps && options_.time_bias && h.timestamps != nullptr;
  const bool next = with_time && options_.query_time == "next";
  const int64_t w = std::max<int64_t>(0, h.size - options_.max_len), n = h.size - w;

  // Reuse the cache when it holds a prefix of this window, else start over.
  bool reuse = cache.window_start == w && cache.with_time == with_time && cache.kv.length <= n;
  for (int64_t t = 0; reuse && t < cache.kv.length; ++t)
    reuse = cache.items[static_cast<size_t>(t)] == h.items[w + t] &&
            (!with_time || cache.times[static_cast<size_t>(t)] == h.timestamps[w + t]);
  if (!reuse) cache = IncrementalCache{HSTUCache{}, w, with_time, {}, {}, torch::Tensor()};
  if (!next && cache.kv.length == n && cache.last.defined()) return finish_query(cache.last);

  // Positions [from, n): committed up to `commit_end` (own: all; next: all but the last, whose
  // query time is the request time until the next event arrives).
  auto encode_range = [&](int64_t from, int64_t to, bool commit) {
    std::vector<int64_t> ids, times, qtimes;
    for (int64_t t = from; t < to; ++t) {
      const int64_t src = w + t;
      ids.push_back(h.items[src]);
      if (with_time) {
        times.push_back(h.timestamps[src]);
        if (next)
          qtimes.push_back(src + 1 < h.size ? h.timestamps[src + 1] : (h.request_time >= 0 ? h.request_time : h.timestamps[src]));
      }
    }
    torch::Tensor x = net->items(torch::tensor(ids, torch::kLong));
    torch::Tensor out = hstu->extend(cache.kv, x, with_time ? torch::tensor(times, torch::kLong) : torch::Tensor(),
                                     next ? torch::tensor(qtimes, torch::kLong) : torch::Tensor(), commit);
    if (commit)
      for (int64_t t = from; t < to; ++t) {
        cache.items.push_back(h.items[w + t]);
        if (with_time) cache.times.push_back(h.timestamps[w + t]);
      }
    if (computed) *computed += to - from;
    return out;
  };
  const int64_t commit_end = next ? n - 1 : n;
  torch::Tensor last;
  if (cache.kv.length < commit_end) {
    torch::Tensor out = encode_range(cache.kv.length, commit_end, true);
    last = out[out.size(0) - 1];
  }
  if (next) last = encode_range(n - 1, n, false)[0];
  else cache.last = last;
  return finish_query(last);
}

torch::Tensor SequentialRecommender::item_embeddings() const {
  torch::NoGradGuard ng;
  torch::Tensor table = state_->net->items->weight.detach();
  if (options_.l2_norm)
    table = torch::nn::functional::normalize(table, torch::nn::functional::NormalizeFuncOptions().dim(-1));
  return table;
}

std::vector<std::pair<int32_t, float>> SequentialRecommender::history_offsets(const History& h) const {
  std::vector<std::pair<int32_t, float>> out;
  if (!options_.history_bias) return out;
  torch::Tensor bias = state_->net->history_bias.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const float* b = bias.data_ptr<float>();
  // The query is the last position of the window; scores are logits · temperature.
  const int64_t w = std::max<int64_t>(0, h.size - options_.max_len);
  std::unordered_set<int32_t> done;
  for (int64_t j = h.size - 1; j >= w; --j)
    if (h.items[j] > 0 && done.insert(h.items[j]).second)
      out.emplace_back(h.items[j], b[history_bucket(h.size - 1 - j)] * static_cast<float>(options_.temperature));
  return out;
}

torch::Tensor SequentialRecommender::score(const std::vector<History>& batch) {
  torch::Tensor q = query_embeddings(batch);  // [B, D]
  torch::NoGradGuard ng;
  torch::Tensor s = torch::matmul(q, item_embeddings().t());
  if (options_.history_bias) {
    std::vector<int64_t> rows, cols;
    std::vector<float> vals;
    for (size_t r = 0; r < batch.size(); ++r)
      for (const auto& [item, off] : history_offsets(batch[r])) {
        rows.push_back(static_cast<int64_t>(r));
        cols.push_back(item);
        vals.push_back(off);
      }
    if (!rows.empty())
      s.index_put_({torch::tensor(rows, torch::kLong), torch::tensor(cols, torch::kLong)},
                   torch::tensor(vals, torch::kFloat).to(s.scalar_type()), /*accumulate=*/true);
  }
  return s;
}

void SequentialRecommender::fit(const TrainContext& ctx) {
  const Dataset& ds = ctx.ds;
  const Split& split = ctx.split;
  auto& st = *state_;
  auto& net = st.net;
  const auto& o = options_;
  st.has_timestamps = ds.has_timestamps();
  if (st.meta.stopped || st.meta.epoch >= o.epochs) {
    if (!st.best.empty()) copy_params(*net, st.best);
    return;
  }
  if (!st.optimizer)
    st.optimizer = std::make_unique<torch::optim::AdamW>(net->parameters(),
                                                         torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));

  // Training sequences: users with at least two training events, sorted by length for bucketing.
  std::vector<History> seqs;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    UserEvents ev = ds.user(u);
    int64_t end = split.train_end[static_cast<size_t>(u)];
    if (end < 2) continue;
    int64_t begin = std::max<int64_t>(0, end - (o.max_len + 1));
    seqs.push_back(History{u, ev.items + begin, ev.timestamps ? ev.timestamps + begin : nullptr, end - begin});
  }
  if (seqs.empty()) throw InvalidInput("fit: no user has two or more training events");
  if (o.jagged)
    std::stable_sort(seqs.begin(), seqs.end(), [](const History& a, const History& b) { return a.size < b.size; });
  std::vector<std::pair<size_t, size_t>> buckets;
  for (size_t b = 0; b < seqs.size(); b += static_cast<size_t>(o.batch_size))
    buckets.emplace_back(b, std::min(seqs.size(), b + static_cast<size_t>(o.batch_size)));
  {
    std::vector<double> counts = train_item_counts(ds, split);
    double total = 0;
    for (double c : counts) total += c;
    std::vector<float> lp(counts.size());
    for (size_t i = 0; i < counts.size(); ++i) lp[i] = static_cast<float>(std::log((counts[i] + 1.0) / (total + counts.size())));
    st.log_pop = torch::tensor(lp);
  }
  const bool with_time = ds.has_timestamps() && o.encoder == "hstu" && o.time_bias;
  const int64_t steps_per_epoch = static_cast<int64_t>(buckets.size());
  const int64_t total_steps = steps_per_epoch * o.epochs;
  EvalOptions eval_opt = ctx.eval ? *ctx.eval : EvalOptions{};
  if (std::find(eval_opt.ks.begin(), eval_opt.ks.end(), 10) == eval_opt.ks.end()) eval_opt.ks.push_back(10);

  GENREC_LOG_INFO("%s: %zu training sequences, %lld batches/epoch, %lld parameters", o.encoder.c_str(), seqs.size(),
                  static_cast<long long>(steps_per_epoch), static_cast<long long>([&] {
                    int64_t n = 0;
                    for (auto& p : net->parameters()) n += p.numel();
                    return n;
                  }()));

  while (st.meta.epoch < o.epochs && !st.meta.stopped) {
    const int64_t epoch = st.meta.epoch + 1;
    // Everything random in an epoch derives from (seed, epoch): resume reproduces it.
    torch::manual_seed(static_cast<uint64_t>(o.seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) * 7919ULL + static_cast<uint64_t>(epoch));
    std::vector<size_t> order(buckets.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);

    net->train();
    auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t n_positions = 0, n_seqs = 0;
    ProgressTracker tracker("train epoch " + std::to_string(epoch), static_cast<int64_t>(seqs.size()), "seqs", ctx.progress);
    for (size_t bi : order) {
      auto [lo, hi] = buckets[bi];
      std::vector<History> hs(seqs.begin() + static_cast<long>(lo), seqs.begin() + static_cast<long>(hi));
      Batch b = make_batch(hs, o.max_len, with_time, true, o.jagged ? 0 : o.max_len, o.query_time == "next");
      torch::Tensor h = encode(b.items, b.lengths, b.timestamps, b.query_times);  // [B, T, D]
      torch::Tensor valid = torch::arange(b.items.size(1)).unsqueeze(0) < b.lengths.unsqueeze(1);  // [B, T]
      torch::Tensor hv = h.index({valid});                 // [N, D]
      torch::Tensor targets = b.targets.index({valid});    // [N]
      torch::Tensor table = net->items->weight;
      if (o.l2_norm) {
        namespace F = torch::nn::functional;
        hv = F::normalize(hv, F::NormalizeFuncOptions().dim(-1));
        table = F::normalize(table, F::NormalizeFuncOptions().dim(-1));
      }
      torch::Tensor loss;
      if (o.loss == "softmax" && o.history_bias) {
        torch::Tensor hn = h;
        if (o.l2_norm) hn = torch::nn::functional::normalize(h, torch::nn::functional::NormalizeFuncOptions().dim(-1));
        HistorySlots s = history_slots(b.items, b.lengths, b.targets, net->history_bias);
        torch::Tensor dots = torch::bmm(hn, table.index({b.items}).transpose(1, 2));  // [B, T(query), T(slot)]
        loss = full_softmax_loss_with_offsets(hv, table, targets, o.temperature, dots.index({valid}),
                                              s.offsets.index({valid}), s.mask.index({valid}),
                                              s.target_offset.index({valid}));
      } else if (o.loss == "softmax") {
        loss = full_softmax_loss(hv, table, targets, o.temperature);
      } else if (o.loss == "sampled_softmax") {
        std::vector<torch::Tensor> ids, logq;
        if (o.negatives > 0) {
          torch::Tensor u = torch::randint(1, n_items_ + 1, {o.negatives}, torch::kLong);
          ids.push_back(u);
          logq.push_back(torch::full({o.negatives}, static_cast<float>(-std::log(static_cast<double>(n_items_)))));
        }
        torch::Tensor logq_pos;
        if (o.in_batch) {
          torch::Tensor u = std::get<0>(torch::_unique(targets));
          ids.push_back(u);
          logq.push_back(st.log_pop.index({u}));
          logq_pos = st.log_pop.index({targets});
        }
        torch::Tensor neg_ids = torch::cat(ids);
        // Uniform negatives have a constant log Q: correcting them matters only beside in-batch ones.
        torch::Tensor logq_neg = o.in_batch ? torch::cat(logq) : torch::Tensor();
        loss = sampled_softmax_loss(hv, table.index({targets}), table.index({neg_ids}), neg_ids, targets, logq_neg,
                                    logq_pos, o.temperature);
      } else {
        torch::Tensor neg = torch::randint(1, n_items_ + 1, {targets.size(0)}, torch::kLong);
        loss = bce_loss(hv, table.index({targets}), table.index({neg}));
      }
      const int64_t step = st.meta.step + 1;
      optimizer_step(*st.optimizer, *net, loss, o.grad_clip,
                     scheduled_lr(o.lr, o.warmup_steps, o.lr_schedule, step, total_steps));
      {
        torch::NoGradGuard ng;
        net->items->weight[0].zero_();  // padding stays zero
      }
      st.meta.step = step;
      double l = loss.item<double>();
      if (!std::isfinite(l)) throw Error("training diverged: loss is " + std::to_string(l) + " at epoch " + std::to_string(epoch));
      loss_sum += l * static_cast<double>(targets.size(0));
      n_positions += targets.size(0);
      n_seqs += static_cast<int64_t>(hs.size());
      tracker.advance(static_cast<int64_t>(hs.size()));
    }
    tracker.finish();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.meta.epoch = epoch;
    st.meta.elapsed_seconds += secs;

    if (epoch % o.eval_every == 0 || epoch == o.epochs) {
      EvalResult r;
      const std::optional<double> value = validation_metric(*this, ctx, eval_opt, o.metric, st.meta, r);
      const bool validate = value.has_value();
      const bool best = update_best(st.meta, value, epoch, o.patience);
      if (best) st.best = clone_params(*net);
      nlohmann::json line = {{"epoch", epoch},
                             {"step", st.meta.step},
                             {"loss", loss_sum / static_cast<double>(std::max<int64_t>(1, n_positions))},
                             {"epoch_seconds", secs},
                             {"seqs_per_second", static_cast<double>(n_seqs) / secs},
                             {"tokens_per_second", static_cast<double>(n_positions) / secs},
                             {"elapsed_seconds", st.meta.elapsed_seconds},
                             {"best_epoch", st.meta.best_epoch},
                             {"best", best}};
      if (validate) {
        line["valid"] = r.metrics;
        line["valid_seconds"] = r.seconds;
        GENREC_LOG_INFO("epoch %lld: loss %.4f, %.0f seqs/s, valid %s %.4f%s", static_cast<long long>(epoch),
                        line["loss"].get<double>(), line["seqs_per_second"].get<double>(), o.metric.c_str(), *value,
                        best ? " (best)" : "");
      } else {
        GENREC_LOG_INFO("epoch %lld: loss %.4f, %.0f seqs/s (no validation: the validation events are trained on)",
                        static_cast<long long>(epoch), line["loss"].get<double>(), line["seqs_per_second"].get<double>());
      }
      if (ctx.on_validation) ctx.on_validation(*this, line, best);
    }
  }
  if (!st.best.empty()) copy_params(*net, st.best);
}

void SequentialRecommender::save(torch::serialize::OutputArchive& archive) const {
  auto& st = *state_;
  write_params(archive, *st.net);
  for (const auto& p : st.net->named_buffers()) archive.write("model/buffer/" + p.key(), p.value(), true);
  archive.write("model/has_timestamps", c10::IValue(st.has_timestamps));
  write_train_state(archive, st.meta, st.optimizer.get(), st.best);
}

void SequentialRecommender::load(torch::serialize::InputArchive& archive) {
  auto& st = *state_;
  torch::NoGradGuard ng;
  read_params(archive, *st.net);
  for (auto& p : st.net->named_buffers()) {
    torch::Tensor t;
    archive.read("model/buffer/" + p.key(), t, true);
    p.value().copy_(t);
  }
  c10::IValue v;
  if (archive.try_read("model/has_timestamps", v)) st.has_timestamps = v.toBool();
  read_train_state(archive, *st.net, torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay), st.meta,
                   st.optimizer, st.best);
}

void SequentialRecommender::reset_training_state() {
  auto& st = *state_;
  clear_train_state(st.meta, st.optimizer, st.best);
}

}  // namespace genrec
