#include "genrec/rank/ranker.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include "genrec/core/error.h"
#include "genrec/core/log.h"
#include "genrec/eval/ranking_metrics.h"
#include "genrec/models/recommender.h"
#include "genrec/rank/din.h"
#include "genrec/rank/genrank.h"
#include "../train/train_state.h"

namespace genrec {

bool is_ranker_type(const std::string& type) { return type == "genrank" || type == "din"; }

// ---------------------------------------------------------------------------------------------
// Options

nlohmann::json RankerOptions::to_json() const {
  return {{"type", type},         {"tasks", tasks},           {"task_weights", task_weights},
          {"like_threshold", like_threshold}, {"d_model", d_model}, {"max_len", max_len},
          {"n_blocks", n_blocks}, {"n_heads", n_heads},       {"dropout", dropout},
          {"layout", layout},     {"time_bias", time_bias},   {"attn_scale", attn_scale},
          {"micro_batch", micro_batch}, {"head_item", head_item}, {"output", output}, {"epochs", epochs},   {"batch_size", batch_size},
          {"lr", lr},             {"weight_decay", weight_decay}, {"grad_clip", grad_clip},
          {"eval_every", eval_every}, {"patience", patience}, {"metric", metric},
          {"train_mode", train_mode}, {"cold_weight", cold_weight}, {"train_context", train_context}, {"ema", ema}, {"prior_bias", prior_bias}, {"seed", seed},
          {"eval_history", eval_history}};
}

RankerOptions RankerOptions::from_json(const nlohmann::json& j) {
  RankerOptions o;
#define GENREC_OPT(name) o.name = j.value(#name, o.name)
  GENREC_OPT(type); GENREC_OPT(tasks); GENREC_OPT(task_weights); GENREC_OPT(like_threshold);
  GENREC_OPT(d_model); GENREC_OPT(max_len); GENREC_OPT(n_blocks); GENREC_OPT(n_heads); GENREC_OPT(dropout);
  GENREC_OPT(layout); GENREC_OPT(time_bias); GENREC_OPT(attn_scale); GENREC_OPT(micro_batch); GENREC_OPT(head_item);
  GENREC_OPT(output);
  GENREC_OPT(epochs); GENREC_OPT(batch_size); GENREC_OPT(lr); GENREC_OPT(weight_decay); GENREC_OPT(grad_clip);
  GENREC_OPT(eval_every); GENREC_OPT(patience); GENREC_OPT(metric); GENREC_OPT(train_mode); GENREC_OPT(cold_weight); GENREC_OPT(train_context); GENREC_OPT(ema); GENREC_OPT(prior_bias); GENREC_OPT(seed);
  GENREC_OPT(eval_history);
#undef GENREC_OPT
  return o;
}

RankerOptions RankerOptions::from_config(Config& cfg) {
  RankerOptions d, o;
  o.type = cfg.get_string("model.type", d.type);
  o.tasks = cfg.get_string_list("model.tasks", d.tasks);
  o.task_weights = cfg.get_double_list("model.task_weights", d.task_weights);
  o.like_threshold = cfg.get_double("model.like_threshold", d.like_threshold);
  o.d_model = cfg.get_int("model.d_model", d.d_model);
  o.max_len = cfg.get_int("model.max_len", o.type == "din" ? 50 : d.max_len);
  o.dropout = cfg.get_double("model.dropout", o.type == "din" ? 0.1 : d.dropout);
  o.output = cfg.get_string("model.output", d.output);
  if (o.type == "genrank") {
    o.n_blocks = cfg.get_int("model.n_blocks", d.n_blocks);
    o.n_heads = cfg.get_int("model.n_heads", d.n_heads);
    o.layout = cfg.get_string("model.layout", d.layout);
    o.time_bias = cfg.get_bool("model.time_bias", d.time_bias);
    o.attn_scale = cfg.get_string("model.attn_scale", d.attn_scale);
    o.micro_batch = cfg.get_int("model.micro_batch", d.micro_batch);
    o.head_item = cfg.get_bool("model.head_item", d.head_item);
  }
  o.epochs = cfg.get_int("train.epochs", d.epochs);
  o.batch_size = cfg.get_int("train.batch_size", d.batch_size);
  o.lr = cfg.get_double("train.lr", d.lr);
  o.weight_decay = cfg.get_double("train.weight_decay", d.weight_decay);
  o.grad_clip = cfg.get_double("train.grad_clip", d.grad_clip);
  o.eval_every = cfg.get_int("train.eval_every", d.eval_every);
  o.patience = cfg.get_int("train.patience", d.patience);
  o.metric = cfg.get_string("train.metric", d.metric);
  o.train_mode = cfg.get_string("train.mode", d.train_mode);
  o.cold_weight = cfg.get_double("train.cold_weight", d.cold_weight);
  if (o.type == "genrank") o.train_context = cfg.get_int("train.context", d.train_context);
  o.ema = cfg.get_double("train.ema", d.ema);
  o.prior_bias = cfg.get_bool("train.prior_bias", d.prior_bias);
  o.seed = cfg.get_int("train.seed", d.seed);
  o.eval_history = cfg.get_string("eval.history", d.eval_history);
  o.validate();
  return o;
}

namespace {
const std::vector<std::string>& metric_kinds() {
  static const std::vector<std::string> k{"auc", "gauc", "logloss", "rmse", "mae"};
  return k;
}
bool lower_is_better(const std::string& metric) {
  const std::string kind = metric.substr(metric.rfind('/') + 1);
  return kind == "logloss" || kind == "rmse" || kind == "mae";
}
}  // namespace

std::string RankerOptions::resolved_metric() const {
  if (!metric.empty()) return metric;
  if (tasks.empty()) return "";
  return tasks[0] + (tasks[0] == "rating" ? "/rmse" : "/auc");
}

void RankerOptions::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw InvalidInput(what);
  };
  need(is_ranker_type(type), "model.type must be genrank or din for a ranker, got '" + type + "'");
  need(!tasks.empty(), "model.tasks must name at least one task (like | rating | action:NAME)");
  need(task_weights.empty() || task_weights.size() == tasks.size(),
       "model.task_weights must have one weight per task (" + std::to_string(tasks.size()) + "), got " +
           std::to_string(task_weights.size()));
  for (double w : task_weights) need(w >= 0 && std::isfinite(w), "model.task_weights must be finite and >= 0");
  need(output == "tasks" || output == "feedback", "model.output must be tasks or feedback, got '" + output + "'");
  need(output == "tasks" || task_weights.empty(),
       "model.task_weights: with model.output = \"feedback\" one cross-entropy over the feedback tokens is trained, "
       "there are no per-task losses to weigh; remove model.task_weights");
  need(d_model >= 1 && max_len >= 1, "model.d_model and model.max_len must be >= 1");
  need(dropout >= 0 && dropout < 1, "model.dropout must be in [0, 1)");
  need(ema >= 0 && ema < 1, "train.ema must be in [0, 1) (0 = off), got " + std::to_string(ema));
  need(eval_history == "cut" || eval_history == "streaming",
       "eval.history must be cut or streaming, got '" + eval_history + "'");
  need(epochs >= 1 && batch_size >= 1, "train.epochs and train.batch_size must be >= 1");
  need(lr > 0, "train.lr must be > 0");
  need(weight_decay >= 0 && grad_clip >= 0, "train.weight_decay and train.grad_clip must be >= 0");
  need(eval_every >= 1 && patience >= 1, "train.eval_every and train.patience must be >= 1");
  need(train_mode == "sequence" || train_mode == "requests",
       "train.mode must be sequence or requests, got '" + train_mode + "'");
  need(cold_weight >= 0 && std::isfinite(cold_weight), "train.cold_weight must be a finite number >= 0");
  need(train_context >= 0 && train_context < max_len, "train.context must be >= 0 and < model.max_len");
  const std::string m = resolved_metric();
  const auto slash = m.rfind('/');
  bool ok = slash != std::string::npos &&
            std::find(tasks.begin(), tasks.end(), m.substr(0, slash)) != tasks.end() &&
            std::find(metric_kinds().begin(), metric_kinds().end(), m.substr(slash + 1)) != metric_kinds().end();
  need(ok, "train.metric must be TASK/KIND with TASK one of model.tasks and KIND auc | gauc | logloss | rmse | mae, got '" +
               m + "'");
}

// ---------------------------------------------------------------------------------------------
// Batches

namespace {

// Right-padded sequences of the events [begin, end) of each range; labels [B, T, K] (NaN = none,
// also before label_from[r] when given: context events that are read but not predicted).
RankSeq make_seq(const Dataset& ds, const RankData& rd, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                 bool with_time, torch::Tensor* labels, const std::vector<int64_t>* label_from = nullptr) {
  const auto B = static_cast<int64_t>(ranges.size());
  int64_t T = 0;
  for (auto [b, e] : ranges) T = std::max(T, e - b);
  const auto K = static_cast<int64_t>(rd.n_tasks());
  std::vector<int64_t> items(static_cast<size_t>(B * T), 0), fb(items.size(), 0), times, lens(static_cast<size_t>(B));
  std::vector<float> lab;
  if (with_time) times.assign(items.size(), 0);
  if (labels) lab.assign(items.size() * static_cast<size_t>(K), std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < B; ++r) {
    auto [begin, end] = ranges[static_cast<size_t>(r)];
    lens[static_cast<size_t>(r)] = end - begin;
    for (int64_t e = begin; e < end; ++e) {
      const auto dst = static_cast<size_t>(r * T + (e - begin));
      items[dst] = ds.event_items[static_cast<size_t>(e)];
      fb[dst] = rd.feedback[static_cast<size_t>(e)];
      if (with_time) times[dst] = ds.event_timestamps[static_cast<size_t>(e)];
      if (labels && (!label_from || e >= (*label_from)[static_cast<size_t>(r)]))
        for (int64_t k = 0; k < K; ++k) lab[dst * static_cast<size_t>(K) + static_cast<size_t>(k)] = rd.label(e, static_cast<size_t>(k));
    }
  }
  RankSeq s;
  s.items = torch::tensor(items, torch::kLong).view({B, T});
  s.feedback = torch::tensor(fb, torch::kLong).view({B, T});
  if (with_time) s.times = torch::tensor(times, torch::kLong).view({B, T});
  s.lengths = torch::tensor(lens, torch::kLong);
  if (labels) *labels = torch::tensor(lab).view({B, T, K});
  return s;
}

// Per-task weighted loss over the defined labels: BCE with logits (binary), MSE (regression).
torch::Tensor rank_loss(const torch::Tensor& out, const torch::Tensor& labels, const std::vector<RankTask>& tasks,
                        const std::vector<double>& weights, std::vector<double>* per_task) {
  torch::Tensor total = torch::zeros({}, out.options());
  for (size_t k = 0; k < tasks.size(); ++k) {
    torch::Tensor y = labels.select(-1, static_cast<int64_t>(k));
    torch::Tensor mask = torch::isfinite(y);
    if (mask.sum().item<int64_t>() == 0) continue;
    torch::Tensor o = out.select(-1, static_cast<int64_t>(k)).index({mask});
    torch::Tensor t = y.index({mask});
    torch::Tensor l = tasks[k].binary ? torch::binary_cross_entropy_with_logits(o, t) : torch::mse_loss(o, t);
    if (per_task) (*per_task)[k] += l.item<double>();
    total = total + (weights.empty() ? 1.0 : weights[k]) * l;
  }
  return total;
}

// model.output = "feedback": cross-entropy of the feedback-token logits out [..., F] against
// the targets' tokens (1..F), over the targets that have labels (context events have none).
torch::Tensor feedback_loss(const torch::Tensor& out, const torch::Tensor& labels, const torch::Tensor& feedback) {
  torch::Tensor mask = torch::isfinite(labels).any(-1) & (feedback > 0);
  if (mask.sum().item<int64_t>() == 0) return torch::zeros({}, out.options());
  return torch::nn::functional::cross_entropy(out.index({mask}), feedback.index({mask}) - 1);
}

// model.output = "feedback" needs every task to be a function of the feedback token.
void check_readable(const RankerOptions& o, const RankData& rd) {
  if (o.output != "feedback") return;
  if (rd.readout.size() != rd.n_tasks() * static_cast<size_t>(rd.n_feedback) || rd.readable.size() != rd.n_tasks())
    throw InternalError("ranker: rank data without a task readout");
  for (size_t k = 0; k < rd.n_tasks(); ++k)
    if (!rd.readable[k])
      throw InvalidInput("model.output = \"feedback\": task '" + rd.tasks[k].name +
                         "' is not determined by the feedback tokens (" + std::to_string(rd.n_feedback) +
                         ": the dataset's actions, or its rating levels when it has no actions); use model.output = "
                         "\"tasks\" or tasks of the feedback's kind");
}

// Task outputs [..., K] (logits for binary tasks, values for regression) read off feedback-token
// logits [..., F]: a binary task's logit is log P(label 1) - log P(label 0), a regression task's
// value the expectation of its label under the softmax.
torch::Tensor read_tasks(const torch::Tensor& logits, const RankData& rd) {
  const int64_t F = rd.n_feedback;
  TORCH_CHECK(logits.size(-1) == F, "ranker: ", logits.size(-1), " feedback logits for ", F, " feedback tokens");
  torch::Tensor lp = torch::log_softmax(logits, -1);
  torch::Tensor readout = torch::tensor(rd.readout, logits.options()).view({static_cast<int64_t>(rd.n_tasks()), F});
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<torch::Tensor> outs;
  for (size_t k = 0; k < rd.n_tasks(); ++k) {
    torch::Tensor w = readout[static_cast<int64_t>(k)];  // [F]
    if (!rd.tasks[k].binary) {
      outs.push_back((lp.exp() * w).sum(-1));
      continue;
    }
    torch::Tensor positive = w > 0.5f;
    torch::Tensor pos = torch::logsumexp(lp.masked_fill(positive.logical_not(), -inf), -1);
    torch::Tensor neg = torch::logsumexp(lp.masked_fill(positive, -inf), -1);
    outs.push_back((pos - neg).clamp(-30.0, 30.0));
  }
  return torch::stack(outs, -1);
}

}  // namespace

struct Ranker::State {
  std::shared_ptr<RankNetImpl> net;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  TrainMeta meta;
  std::vector<torch::Tensor> best;
  std::vector<torch::Tensor> ema;  // train.ema > 0: exponential moving average of the parameters
  // With train.ema, the raw weights training continues from while the averaged ones stand in the
  // net: during a validation callback (so checkpoints carry them), and after load() of such a
  // checkpoint until fit() takes them back.
  std::vector<torch::Tensor> raw;
};

Ranker::Ranker(RankerOptions options, int32_t n_items, int64_t n_feedback)
    : options_(std::move(options)), n_items_(n_items), n_feedback_(n_feedback), state_(std::make_unique<State>()) {
  options_.validate();
  torch::manual_seed(static_cast<uint64_t>(options_.seed));
  const auto& o = options_;
  // model.output = "feedback": one output per feedback token (the softmax's logits).
  const auto K = o.output == "feedback" ? n_feedback : static_cast<int64_t>(o.tasks.size());
  if (o.type == "genrank") {
    state_->net = std::make_shared<GenRankImpl>(GenRankOptions(n_items, n_feedback, K)
                                                    .d_model(o.d_model)
                                                    .max_len(o.max_len)
                                                    .n_blocks(o.n_blocks)
                                                    .n_heads(o.n_heads)
                                                    .dropout(o.dropout)
                                                    .layout(o.layout)
                                                    .time_bias(o.time_bias)
                                                    .attn_scale(o.attn_scale)
                                                    .micro_batch(o.micro_batch)
                                                    .head_item(o.head_item));
  } else {
    state_->net = std::make_shared<DINImpl>(
        DINOptions(n_items, n_feedback, K).d_model(o.d_model).max_len(o.max_len).dropout(o.dropout));
  }
}

Ranker::~Ranker() = default;

RankNetImpl& Ranker::net() { return *state_->net; }

void Ranker::set_eval_history(const std::string& history) {
  RankerOptions o = options_;
  o.eval_history = history;
  o.validate();
  options_ = o;
}

int64_t Ranker::history_limit() const {
  // genrank trains on windows of max_len events (positions 0..max_len - 1); a candidate goes at
  // position len, so histories keep max_len - 1 events and the candidate a trained position.
  return options_.type == "genrank" ? std::max<int64_t>(1, options_.max_len - 1) : options_.max_len;
}

std::vector<RankTrainSeq> Ranker::train_sequences(const Dataset& ds, const Split& split) const {
  const auto& o = options_;
  // genrank with train.context C: windows of max_len - C targets, each read after up to C
  // earlier events of the user (unlabelled), so that no target but a user's first events is
  // predicted without history; the whole sequence still fits max_len.
  const int64_t gen_context = o.type == "genrank" && o.train_mode == "sequence" ? o.train_context : 0;
  // DIN reads a sliding window of max_len events before each target: give its training windows
  // the max_len events before them as unlabelled context, so that a window's first targets see
  // as much history as later ones (genrank reads whole windows, as HSTU trains).
  const int64_t reach = o.type == "din" || o.train_mode == "requests" ? history_limit() : gen_context;
  std::vector<RankWindow> windows = rank_train_windows(ds, split, o.max_len - gen_context);
  if (windows.empty())
    throw InvalidInput(std::string("ranker: no training events before the ") +
                       (split.train_on_valid ? "test" : "validation") + " cut");
  std::stable_sort(windows.begin(), windows.end(),
                   [](const RankWindow& a, const RankWindow& b) { return a.end - a.begin < b.end - b.begin; });
  std::vector<RankTrainSeq> out;
  out.reserve(windows.size());
  for (const RankWindow& w : windows) {
    const int64_t first = ds.user_offsets[static_cast<size_t>(w.user)];
    out.push_back(RankTrainSeq{w.user, std::max(first, w.begin - reach), w.begin, w.end});
  }
  return out;
}

void Ranker::fit(const RankTrainContext& ctx) {
  auto& st = *state_;
  auto& net = *st.net;
  const auto& o = options_;
  const Dataset& ds = ctx.ds;
  const RankData& rd = ctx.rd;
  if (rd.n_tasks() != o.tasks.size()) throw InternalError("ranker: rank data and options disagree on the tasks");
  check_readable(o, rd);
  if (!st.optimizer)
    st.optimizer = std::make_unique<torch::optim::AdamW>(net.parameters(),
                                                         torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  if (!st.raw.empty()) {  // resumed with train.ema: the loaded net is the average
    st.ema = clone_params(net);
    copy_params(net, st.raw);
    st.raw.clear();
  }
  const std::vector<RankTrainSeq> seqs = train_sequences(ds, ctx.split);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> batches;
  std::vector<std::vector<int64_t>> label_from;
  for (size_t i = 0; i < seqs.size(); i += static_cast<size_t>(o.batch_size)) {
    std::vector<std::pair<int64_t, int64_t>> b;
    std::vector<int64_t> from;
    for (size_t j = i; j < std::min(seqs.size(), i + static_cast<size_t>(o.batch_size)); ++j) {
      b.emplace_back(seqs[j].read_begin, seqs[j].end);
      from.push_back(seqs[j].label_begin);
    }
    batches.push_back(std::move(b));
    label_from.push_back(std::move(from));
  }
  const bool with_time = ds.has_timestamps() && o.type == "genrank" && o.time_bias;
  const std::string metric = o.resolved_metric();
  const bool lower = lower_is_better(metric);
  int64_t n_targets = 0;
  for (const auto& q : seqs) n_targets += q.end - q.label_begin;
  // data.train_on_valid: the validation period is trained on, so nothing validates; every
  // evaluation point counts as the best and training ends with its last weights.
  const bool validate = !ctx.split.train_on_valid;
  GENREC_LOG_INFO("%s: %zu training windows (%lld events), %zu batches/epoch, %s", o.type.c_str(), seqs.size(),
                  static_cast<long long>(n_targets), batches.size(),
                  validate ? ("early stopping on valid " + metric).c_str()
                           : "validation events trained on (no validation, the last epoch is kept)");

  // The training objective: per-task losses, or (model.output = "feedback") the feedback token's
  // cross-entropy, with the per-task losses of the read-off outputs logged beside it.
  auto objective = [&](const torch::Tensor& y, const torch::Tensor& lab, const torch::Tensor& fb,
                       std::vector<double>* per_task, double* fb_loss) {
    if (o.output != "feedback") return rank_loss(y, lab, rd.tasks, o.task_weights, per_task);
    torch::Tensor l = feedback_loss(y, lab, fb);
    if (per_task) {
      torch::NoGradGuard ng;
      rank_loss(read_tasks(y.detach(), rd), lab, rd.tasks, {}, per_task);
      *fb_loss += l.item<double>();
    }
    return l;
  };

  while (st.meta.epoch < o.epochs && !st.meta.stopped) {
    const int64_t epoch = st.meta.epoch + 1;
    torch::manual_seed(static_cast<uint64_t>(o.seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) * 7919ULL + static_cast<uint64_t>(epoch));
    std::vector<size_t> order(batches.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    net.train();
    auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    std::vector<double> task_loss(o.tasks.size(), 0.0);
    double feedback_loss_sum = 0;
    ProgressTracker tracker("train epoch " + std::to_string(epoch), static_cast<int64_t>(seqs.size()), "windows",
                            ctx.progress);
    for (size_t bi : order) {
      torch::Tensor labels, out, targets_fb;
      if (o.train_mode == "requests") {
        // As evaluation asks: a random cut in each window, the events before it (up to the
        // history limit, reaching back before the window) as history, the window's events
        // from the cut on as candidates, scored in one pass.
        std::vector<std::pair<int64_t, int64_t>> hist, cand;
        for (size_t j = 0; j < batches[bi].size(); ++j) {
          const int64_t b = label_from[bi][j], e = batches[bi][j].second;
          const int64_t first = batches[bi][j].first;  // earliest event this window may read
          const int64_t cut = e - b >= 2 ? b + 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(e - b - 1)) : b;
          hist.emplace_back(std::max(first, cut - history_limit()), cut);
          cand.emplace_back(cut, e);
        }
        RankSeq h = make_seq(ds, rd, hist, with_time, nullptr);
        RankSeq c = make_seq(ds, rd, cand, with_time, &labels);
        out = net.forward_candidates(h, RankCandidates{c.items, c.times, c.lengths});
        targets_fb = c.feedback;
      } else {
        RankSeq seq = make_seq(ds, rd, batches[bi], with_time, &labels, &label_from[bi]);
        out = net.forward_sequence(seq);
        targets_fb = seq.feedback;
      }
      torch::Tensor loss = objective(out, labels, targets_fb, &task_loss, &feedback_loss_sum);
      if (o.cold_weight > 0) {
        // The same targets as candidates of an empty history (context events stay unlabelled).
        std::vector<std::pair<int64_t, int64_t>> none, targets;
        for (size_t j = 0; j < batches[bi].size(); ++j) {
          none.emplace_back(label_from[bi][j], label_from[bi][j]);
          targets.emplace_back(label_from[bi][j], batches[bi][j].second);
        }
        torch::Tensor cold_labels;
        RankSeq h = make_seq(ds, rd, none, with_time, nullptr);
        RankSeq c = make_seq(ds, rd, targets, with_time, &cold_labels);
        torch::Tensor cold_out = net.forward_candidates(h, RankCandidates{c.items, c.times, c.lengths});
        loss = loss + o.cold_weight * objective(cold_out, cold_labels, c.feedback, nullptr, nullptr);
      }
      optimizer_step(*st.optimizer, net, loss, o.grad_clip);
      loss_sum += loss.item<double>();
      ++st.meta.step;
      if (o.ema > 0) {
        // Polyak averaging; the decay ramps up over the first steps so that early weights fade.
        torch::NoGradGuard ng;
        const double d = std::min(o.ema, (1.0 + static_cast<double>(st.meta.step)) / (10.0 + static_cast<double>(st.meta.step)));
        if (st.ema.empty()) {
          st.ema = clone_params(net);
        } else {
          auto params = net.parameters();
          for (size_t i = 0; i < params.size(); ++i) st.ema[i].mul_(d).add_(params[i].detach(), 1.0 - d);
        }
      }
      tracker.advance(static_cast<int64_t>(batches[bi].size()));
    }
    tracker.finish();
    const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.meta.epoch = epoch;
    st.meta.elapsed_seconds += train_s;
    if (epoch % o.eval_every != 0 && epoch != o.epochs) continue;

    auto v0 = std::chrono::steady_clock::now();
    // With train.ema, validation, the best snapshot and the checkpoints see the averaged weights;
    // training continues from the raw ones.
    std::vector<torch::Tensor> raw;
    if (!st.ema.empty()) {
      raw = clone_params(net);
      copy_params(net, st.ema);
    }
    EvalResult valid;
    double value = std::numeric_limits<double>::quiet_NaN();
    if (validate) {
      valid = evaluate(ds, rd, ctx.split, SplitPart::Valid, ctx.progress);
      auto it = valid.metrics.find(metric);
      if (it != valid.metrics.end()) value = it->second;
      if (std::isnan(value))
        throw InvalidInput("ranker: validation metric " + metric + " is undefined on this split (no labels, or one class only)");
    }
    net.train();
    const double valid_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    st.meta.elapsed_seconds += valid_s;
    const bool best = update_best(st.meta, validate ? std::optional<double>(value) : std::nullopt, epoch, o.patience, lower);
    if (best) st.best = clone_params(net);
    nlohmann::json tl = nlohmann::json::object();
    for (size_t k = 0; k < o.tasks.size(); ++k) tl[o.tasks[k]] = task_loss[k] / static_cast<double>(batches.size());
    if (o.output == "feedback") tl["feedback"] = feedback_loss_sum / static_cast<double>(batches.size());
    nlohmann::json line = {{"epoch", epoch},
                           {"step", st.meta.step},
                           {"loss", loss_sum / static_cast<double>(batches.size())},
                           {"task_loss", tl},
                           {"epoch_seconds", train_s},
                           {"valid_seconds", valid_s},
                           {"elapsed_seconds", st.meta.elapsed_seconds},
                           {"windows_per_second", static_cast<double>(seqs.size()) / std::max(train_s, 1e-9)},
                           {"best", best},
                           {"best_epoch", st.meta.best_epoch}};
    if (validate) {
      line["valid"] = valid.metrics;
      GENREC_LOG_INFO("%s epoch %lld: loss %.4f, valid %s %.4f%s", o.type.c_str(), static_cast<long long>(epoch),
                      line["loss"].get<double>(), metric.c_str(), value, best ? " (best)" : "");
    } else {
      GENREC_LOG_INFO("%s epoch %lld: loss %.4f", o.type.c_str(), static_cast<long long>(epoch), line["loss"].get<double>());
    }
    st.raw = std::move(raw);
    if (ctx.on_validation) ctx.on_validation(line, best);
    if (!st.raw.empty()) copy_params(net, st.raw);
    st.raw.clear();
  }
  if (!st.best.empty()) copy_params(net, st.best);
}

double task_value(const RankTask& task, double output) { return task.binary ? 1.0 / (1.0 + std::exp(-output)) : output; }

EvalResult Ranker::evaluate(const Dataset& ds, const RankData& rd, const Split& split, SplitPart part,
                            const ProgressCallback& progress, std::vector<RankPrediction>* predictions) {
  auto t0 = std::chrono::steady_clock::now();
  auto& net = *state_->net;
  const auto& o = options_;
  const bool streaming = o.eval_history == "streaming";
  check_readable(o, rd);
  std::vector<RankRequest> reqs = rank_requests(ds, split, part, history_limit(), streaming);
  const bool with_time = ds.has_timestamps() && o.type == "genrank" && o.time_bias;
  const auto K = static_cast<int64_t>(rd.n_tasks());
  torch::NoGradGuard ng;
  const bool was_training = net.is_training();
  net.eval();
  std::vector<int32_t> users;
  std::vector<float> outputs, labels;
  std::vector<uint8_t> has_history;  // per candidate row
  ProgressTracker tracker(std::string("eval ") + split_part_name(part), static_cast<int64_t>(reqs.size()),
                          streaming ? "requests" : "users", progress);
  // Requests in groups bounded by their candidate and request counts, so memory stays flat.
  const int64_t max_candidates = 4096;
  const size_t max_requests = 512;
  for (size_t r0 = 0; r0 < reqs.size();) {
    size_t r1 = r0;
    int64_t m = 0;
    while (r1 < reqs.size() &&
           (r1 == r0 || (m + (reqs[r1].cand_end - reqs[r1].cand_begin) <= max_candidates && r1 - r0 < max_requests))) {
      m += reqs[r1].cand_end - reqs[r1].cand_begin;
      ++r1;
    }
    std::vector<std::pair<int64_t, int64_t>> hist, cand;
    for (size_t r = r0; r < r1; ++r) {
      hist.emplace_back(reqs[r].hist_begin, reqs[r].hist_end);
      cand.emplace_back(reqs[r].cand_begin, reqs[r].cand_end);
    }
    RankSeq h = make_seq(ds, rd, hist, with_time, nullptr);
    torch::Tensor cand_labels;
    RankSeq c = make_seq(ds, rd, cand, with_time, &cand_labels);
    RankCandidates cands{c.items, c.times, c.lengths};
    torch::Tensor out = net.forward_candidates(h, cands);
    if (o.output == "feedback") out = read_tasks(out, rd);
    out = out.contiguous();  // [B, M, K]
    auto oa = out.accessor<float, 3>();
    auto la = cand_labels.accessor<float, 3>();
    for (size_t r = r0; r < r1; ++r) {
      const auto b = static_cast<int64_t>(r - r0);
      for (int64_t j = 0; j < reqs[r].cand_end - reqs[r].cand_begin; ++j) {
        users.push_back(reqs[r].user);
        has_history.push_back(reqs[r].hist_end > reqs[r].hist_begin ? 1 : 0);
        for (int64_t k = 0; k < K; ++k) {
          outputs.push_back(oa[b][j][k]);
          labels.push_back(la[b][j][k]);
        }
        if (predictions) {
          RankPrediction p{reqs[r].user, reqs[r].cand_begin + j, has_history.back() != 0, {}, {}};
          for (int64_t k = 0; k < K; ++k) {
            p.scores.push_back(task_value(rd.tasks[static_cast<size_t>(k)], oa[b][j][k]));
            p.labels.push_back(la[b][j][k]);
          }
          predictions->push_back(std::move(p));
        }
      }
    }
    tracker.advance(static_cast<int64_t>(r1 - r0));
    r0 = r1;
  }
  tracker.finish();
  if (was_training) net.train();
  EvalResult result;
  result.part = part;
  result.protocol = "temporal split; candidates = the user's events in the " + std::string(split_part_name(part)) +
                    " period; history = the user's last " + std::to_string(history_limit()) +
                    (streaming ? " events before each candidate's timestamp (streaming)" : " events before the cut") +
                    "; candidates of one request scored in one pass; per task AUC, GAUC (per-user AUC weighted by "
                    "events), log-loss, RMSE";
  if (split.train_on_valid) result.protocol += "; validation events trained on (data.train_on_valid)";
  {
    std::vector<int32_t> distinct;
    for (const auto& r : reqs) distinct.push_back(r.user);
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());  // requests are listed by user
    result.n_users = static_cast<int64_t>(distinct.size());
  }
  result.metrics = ranking_metrics(rd.tasks, users, outputs, labels);
  result.metrics["requests"] = static_cast<double>(reqs.size());
  result.metrics["candidates"] = static_cast<double>(users.size());
  // The same metrics over the candidates of users without any event before the cut (new users:
  // only the candidate itself informs the score) and of users with a history.
  for (const uint8_t with : {uint8_t{0}, uint8_t{1}}) {
    std::vector<int32_t> su;
    std::vector<float> so, sl;
    for (size_t i = 0; i < users.size(); ++i) {
      if (has_history[i] != with) continue;
      su.push_back(users[i]);
      so.insert(so.end(), outputs.begin() + static_cast<long>(i * K), outputs.begin() + static_cast<long>((i + 1) * K));
      sl.insert(sl.end(), labels.begin() + static_cast<long>(i * K), labels.begin() + static_cast<long>((i + 1) * K));
    }
    const std::string prefix = with ? "with_history/" : "no_history/";
    result.metrics[prefix + "candidates"] = static_cast<double>(su.size());
    if (su.empty()) continue;
    for (const auto& [key, value] : ranking_metrics(rd.tasks, su, so, sl)) result.metrics[prefix + key] = value;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

torch::Tensor Ranker::score(const RankData& rd, const std::vector<int32_t>& items, const std::vector<int32_t>& feedback,
                            const std::vector<int64_t>& times, const std::vector<int32_t>& candidates,
                            int64_t request_time, torch::Tensor* feedback_probs) {
  GENREC_ASSERT(items.size() == feedback.size());
  if (feedback_probs) *feedback_probs = torch::Tensor();
  check_readable(options_, rd);
  auto& net = *state_->net;
  torch::NoGradGuard ng;
  const bool was_training = net.is_training();
  net.eval();
  const size_t keep = std::min(items.size(), static_cast<size_t>(history_limit()));
  const size_t from = items.size() - keep;
  const auto T = static_cast<int64_t>(keep), M = static_cast<int64_t>(candidates.size());
  std::vector<int64_t> it(items.begin() + static_cast<long>(from), items.end());
  std::vector<int64_t> fb(feedback.begin() + static_cast<long>(from), feedback.end());
  RankSeq h;
  h.items = torch::tensor(it, torch::kLong).view({1, T});
  h.feedback = torch::tensor(fb, torch::kLong).view({1, T});
  h.lengths = torch::tensor({T});
  RankCandidates c;
  c.items = torch::tensor(std::vector<int64_t>(candidates.begin(), candidates.end()), torch::kLong).view({1, M});
  c.counts = torch::tensor({M});
  // Times are read when given, or for an empty history with a request time (a new user of a
  // dataset with timestamps: evaluation then also gives the candidate its time).
  const bool timed = !times.empty() || (items.empty() && request_time >= 0);
  if (timed && options_.type == "genrank" && options_.time_bias) {
    GENREC_ASSERT(times.size() == items.size());
    h.times = torch::tensor(std::vector<int64_t>(times.begin() + static_cast<long>(from), times.end()), torch::kLong).view({1, T});
    const int64_t at = request_time >= 0 ? request_time : (times.empty() ? 0 : times.back());
    c.times = torch::full({1, M}, at, torch::kLong);
  }
  torch::Tensor out = net.forward_candidates(h, c).squeeze(0);
  if (options_.output == "feedback") {
    if (feedback_probs) *feedback_probs = torch::softmax(out, -1).contiguous();  // [M, F]
    out = read_tasks(out, rd);                                                   // [M, K]
  }
  if (was_training) net.train();
  return out;
}

std::vector<CandidateScores> read_candidate_scores(const RankData& rd, const torch::Tensor& out,
                                                   const torch::Tensor& feedback_probs) {
  std::vector<CandidateScores> list;
  if (!out.defined()) return list;
  GENREC_ASSERT(out.dim() == 2 && out.size(1) == static_cast<int64_t>(rd.tasks.size()));
  torch::Tensor o = out.to(torch::kCPU, torch::kDouble).contiguous();
  auto a = o.accessor<double, 2>();
  const size_t F = rd.feedback_names.size();
  torch::Tensor p;
  if (feedback_probs.defined()) {
    GENREC_ASSERT(feedback_probs.size(0) == out.size(0) && feedback_probs.size(1) == static_cast<int64_t>(F));
    p = feedback_probs.to(torch::kCPU, torch::kDouble).contiguous();
  }
  for (int64_t m = 0; m < o.size(0); ++m) {
    CandidateScores c;
    for (size_t k = 0; k < rd.tasks.size(); ++k) c.tasks[rd.tasks[k].name] = task_value(rd.tasks[k], a[m][static_cast<int64_t>(k)]);
    if (p.defined()) {
      const double* row = p.data_ptr<double>() + static_cast<size_t>(m) * F;
      for (size_t f = 0; f < F; ++f) c.feedback[rd.feedback_names[f]] = row[f];
    }
    list.push_back(std::move(c));
  }
  return list;
}

// Layout: "model/NAME" (the net's parameters, the averaged ones with train.ema), then the
// training state of train_state.h ("train/meta", "train/optimizer", "train/best/I") and, with
// train.ema, "train/raw/I" (the raw weights training continues from).
void Ranker::save(torch::serialize::OutputArchive& archive) const {
  const State& st = *state_;
  write_params(archive, *st.net, "model/");
  write_train_state(archive, st.meta, st.optimizer.get(), st.best);
  write_tensor_list(archive, "train/raw/", st.raw);
}

void Ranker::load(torch::serialize::InputArchive& archive) {
  State& st = *state_;
  read_params(archive, *st.net, "model/");
  // Checkpoints before resumable rankers hold no training state: they load for inference only.
  read_train_state(archive, *st.net, torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay),
                   st.meta, st.optimizer, st.best);
  std::vector<torch::Tensor> raw = read_tensor_list(archive, "train/raw/");
  // Saved during training with train.ema: the net holds the average (what inference uses); fit()
  // continues from the raw weights.
  if (!raw.empty() && raw.size() != st.net->parameters().size())
    throw InvalidInput("ranker checkpoint: train/raw holds " + std::to_string(raw.size()) + " tensors, the model has " +
                       std::to_string(st.net->parameters().size()) + " parameters");
  st.ema.clear();
  st.raw = std::move(raw);
}

bool Ranker::has_train_state() const { return state_->meta.epoch > 0; }

void Ranker::reset_training_state() {
  State& st = *state_;
  clear_train_state(st.meta, st.optimizer, st.best);
  st.ema.clear();
  st.raw.clear();
}

std::vector<double> Ranker::set_prior_bias(const Dataset& ds, const RankData& rd, const Split& split) {
  const bool tokens = options_.output == "feedback";
  const size_t K = rd.n_tasks(), F = static_cast<size_t>(rd.n_feedback);
  std::vector<double> sum(tokens ? F : K, 0.0), count(tokens ? F : K, 0.0);
  double n_events = 0;
  for (const RankTrainSeq& q : train_sequences(ds, split))
    for (int64_t e = q.label_begin; e < q.end; ++e) {
      n_events += 1;
      if (tokens) {
        const int32_t f = rd.feedback[static_cast<size_t>(e)];
        if (f >= 1 && static_cast<size_t>(f) <= F) count[static_cast<size_t>(f - 1)] += 1;
        continue;
      }
      for (size_t k = 0; k < K; ++k) {
        const float y = rd.label(e, k);
        if (std::isnan(y)) continue;
        sum[k] += y;
        count[k] += 1;
      }
    }
  std::vector<double> bias(sum.size());
  for (size_t j = 0; j < bias.size(); ++j) {
    if (tokens) bias[j] = std::log((count[j] + 1.0) / (n_events + static_cast<double>(F)));
    else if (rd.tasks[j].binary) bias[j] = std::log((sum[j] + 0.5) / (count[j] - sum[j] + 0.5));
    else bias[j] = count[j] > 0 ? sum[j] / count[j] : 0.0;
  }
  std::vector<torch::Tensor> params = net().output_biases();
  torch::NoGradGuard ng;
  size_t j = 0;
  for (torch::Tensor& p : params) {
    for (int64_t i = 0; i < p.numel(); ++i) {
      if (j >= bias.size()) throw InternalError("ranker: the network has more output biases than outputs");
      p[i].fill_(bias[j++]);
    }
  }
  if (j != bias.size()) throw InternalError("ranker: the network has fewer output biases than outputs");
  return bias;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

void save_ranker_checkpoint(const std::filesystem::path& path, const Ranker& ranker, const Vocabulary& items,
                            const RankData& rd, const nlohmann::json& extra_meta) {
  torch::serialize::OutputArchive archive;
  nlohmann::json meta = {{"type", ranker.options().type}, {"options", ranker.options().to_json()},
                         {"n_items", ranker.n_items()},   {"n_feedback", ranker.n_feedback()},
                         {"n_tasks", rd.n_tasks()},       {"feedback_names", rd.feedback_names},
                         {"genrec_version", GENREC_VERSION},
                         {"extra", extra_meta}};
  write_checkpoint_header(archive, meta, items);
  ranker.save(archive);
  write_checkpoint_archive(path, archive);
}

LoadedRanker load_ranker_checkpoint(const std::filesystem::path& path) {
  torch::serialize::InputArchive archive;
  CheckpointHeader header = read_checkpoint_header(path, archive);
  return load_ranker_checkpoint(path, archive, std::move(header));
}

LoadedRanker load_ranker_checkpoint(const std::filesystem::path& path, torch::serialize::InputArchive& archive,
                                    CheckpointHeader header) {
  const std::string type = header.meta["type"].get<std::string>();
  if (!is_ranker_type(type))
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "not a ranking model checkpoint (type " + type + ")");
  LoadedRanker out;
  out.meta = std::move(header.meta);
  out.items = std::move(header.items);
  try {
    out.ranker = std::make_unique<Ranker>(RankerOptions::from_json(out.meta.at("options")), out.items.size(),
                                          out.meta.at("n_feedback").get<int64_t>());
    out.ranker->load(archive);
  } catch (const InvalidInput&) {
    throw;
  } catch (const std::exception& e) {
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "cannot read ranker checkpoint: " + exception_text(e));
  }
  return out;
}

void init_ranker_from_checkpoint(Ranker& ranker, const std::filesystem::path& path, const Vocabulary& items) {
  init_from_checkpoint_file(path, ranker.options().type, items,
                            [&](torch::serialize::OutputArchive& archive) { ranker.save(archive); },
                            [&](torch::serialize::InputArchive& archive, const CheckpointHeader& header) {
                              const int64_t n_feedback = header.meta.value("n_feedback", int64_t{-1});
                              if (n_feedback != ranker.n_feedback())
                                throw InvalidInput("the checkpoint has " + std::to_string(n_feedback) +
                                                   " feedback tokens, this dataset and config give " +
                                                   std::to_string(ranker.n_feedback()));
                              const auto tasks = header.meta.value("options", nlohmann::json::object())
                                                     .value("tasks", std::vector<std::string>{});
                              if (tasks != ranker.options().tasks)
                                throw InvalidInput("the checkpoint predicts tasks " + nlohmann::json(tasks).dump() +
                                                   ", the config " + nlohmann::json(ranker.options().tasks).dump());
                              ranker.load(archive);
                              ranker.reset_training_state();
                            });
}

}  // namespace genrec
