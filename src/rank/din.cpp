#include "genrec/rank/din.h"

#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "genrec/core/error.h"

namespace genrec {

namespace {

[[noreturn]] void invalid_option(const std::string& message) { throw InvalidInput("din: " + message); }

std::string str(int64_t v) { return std::to_string(v); }

// Per-channel PReLU over the last dimension (torch's prelu puts channels at dim 1).
torch::Tensor apply_prelu(torch::nn::PReLU& act, const torch::Tensor& x) {
  return act(x.reshape({-1, x.size(-1)})).view(x.sizes());
}

void check_lengths(const torch::Tensor& lengths, int64_t B, int64_t T, const char* what) {
  TORCH_CHECK(lengths.defined() && lengths.dim() == 1 && lengths.size(0) == B, "din: ", what, " lengths must be [", B,
              "], got ", lengths.defined() ? lengths.sizes() : torch::IntArrayRef{});
  if (B > 0) {
    TORCH_CHECK(lengths.min().item<int64_t>() >= 0 && lengths.max().item<int64_t>() <= T, "din: ", what,
                " lengths must be in [0, ", T, "]");
  }
}

// Exclusive prefix sums of events [B, T, D] in double: [B, T + 1, D], row k = Σ_{j < k} e_j.
torch::Tensor prefix_sums(const torch::Tensor& events) {
  const int64_t B = events.size(0), D = events.size(2);
  return torch::cat({torch::zeros({B, 1, D}, events.options().dtype(torch::kDouble)), events.to(torch::kDouble).cumsum(1)}, 1);
}

// Mean of events [lo, hi) of each row from its prefix sums [B, T + 1, D]; lo <= hi: [B, Q] int64.
// Returns [B, Q, D] (0 for an empty range). The same prefix rows give bit-identical means, so
// forward_sequence and forward_candidates agree exactly here.
torch::Tensor window_mean(const torch::Tensor& prefix, const torch::Tensor& lo, const torch::Tensor& hi,
                          torch::ScalarType dtype) {
  const int64_t B = lo.size(0), Q = lo.size(1), D = prefix.size(2);
  auto at = [&](const torch::Tensor& i) { return prefix.gather(1, i.unsqueeze(-1).expand({B, Q, D})); };
  torch::Tensor count = (hi - lo).clamp_min(1).unsqueeze(-1).to(torch::kDouble);
  return ((at(hi) - at(lo)) / count).to(dtype);
}

// The attention unit and weighted pooling of one chunk, as a pure function of its inputs:
//   in = {ec [B, Q, D], events [B, T, D], proj [B, T, H1], idx, mask, W_0, b_0, ..., W_n, b_n}
// (the attention Linears). idx [Q, L] gathers the same positions for every row (forward_sequence);
// idx [B, L] with shared = true gathers one window per row for all its Q targets
// (forward_candidates). Returns pooled [B, Q, D].
torch::Tensor window_pool(const std::vector<torch::Tensor>& in, bool shared) {
  namespace F = torch::nn::functional;
  const torch::Tensor &ec = in[0], &events = in[1], &proj = in[2], &idx = in[3], &mask = in[4];
  const int64_t B = events.size(0), T = events.size(1), D = events.size(2), H1 = proj.size(2);
  // Rows of the flattened [B * T, ...] tables: [B, Q, L] or [B, 1, L].
  torch::Tensor base = torch::arange(B, idx.options()).mul(T).view({B, 1, 1});
  torch::Tensor rows = shared ? idx.unsqueeze(1) + base : idx.unsqueeze(0) + base;
  std::vector<int64_t> shape = rows.sizes().vec();
  torch::Tensor flat = rows.reshape({-1});
  shape.push_back(D);
  torch::Tensor win_e = events.reshape({B * T, D}).index_select(0, flat).view(shape);  // [B, Q|1, L, D]
  shape.back() = H1;
  torch::Tensor win_p = proj.reshape({B * T, H1}).index_select(0, flat).view(shape);   // [B, Q|1, L, H1]
  // DIN's activation unit on [e_c, e_j, e_c - e_j, e_c ⊙ e_j], the first layer in parts:
  //   (W_c + W_d) e_c + (W_j - W_d) e_j + W_p (e_c ⊙ e_j) + b    ((W_j - W_d) e_j = proj, per event)
  std::vector<torch::Tensor> w = in[5].split(D, 1);  // W_c, W_j, W_d, W_p: [H1, D] each
  torch::Tensor target = F::linear(ec, w[0] + w[2], in[6]);            // [B, Q, H1]
  torch::Tensor h = F::linear(ec.unsqueeze(2) * win_e, w[3]);            // [B, Q, L, H1]
  h.add_(win_p).add_(target.unsqueeze(2));
  // SiLU as x · σ(x): libtorch 1.13's CPU silu kernel runs ~20x slower than sigmoid and mul here.
  for (size_t i = 7; i + 1 < in.size(); i += 2) h = F::linear(h * torch::sigmoid(h), in[i], in[i + 1]);
  torch::Tensor score = h.squeeze(-1);  // [B, Q, L]
  // Exact zeros outside the window (a select, so nothing there can leak); no softmax.
  torch::Tensor weight = torch::where(mask, score, torch::zeros({}, score.options()));
  return (weight.unsqueeze(-1) * win_e).sum(-2);  // [B, Q, D]
}

// window_pool with activation checkpointing: forward keeps only the inputs, backward recomputes
// the chunk with autograd on and differentiates it.
class WindowPoolFunction : public torch::autograd::Function<WindowPoolFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs, bool shared) {
    std::vector<torch::Tensor> in(inputs.begin(), inputs.end());
    ctx->save_for_backward(in);
    ctx->saved_data["shared"] = shared;
    return window_pool(in, shared);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<torch::Tensor> saved = ctx->get_saved_variables();
    const bool shared = ctx->saved_data["shared"].toBool();
    // One slot per input tensor, then one (undefined) for the bool.
    torch::autograd::variable_list result(saved.size() + 1);
    std::vector<torch::Tensor> in, diff_in;
    std::vector<size_t> diff_at;
    for (size_t i = 0; i < saved.size(); ++i) {
      torch::Tensor t = saved[i].detach();
      if (saved[i].requires_grad()) {
        t.requires_grad_(true);
        diff_in.push_back(t);
        diff_at.push_back(i);
      }
      in.push_back(t);
    }
    if (diff_in.empty() || !grad_outputs[0].defined()) return result;
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      out = window_pool(in, shared);
    }
    std::vector<torch::Tensor> g = torch::autograd::grad({out}, diff_in, {grad_outputs[0]}, /*retain_graph=*/false,
                                                         /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < diff_at.size(); ++k) result[diff_at[k]] = g[k];
    return result;
  }
};

}  // namespace

void DINOptions::validate() const {
  if (n_items_ < 1) invalid_option("n_items (the catalogue size) must be >= 1, got " + str(n_items_));
  if (n_feedback_ < 1) invalid_option("n_feedback (the number of feedback tokens) must be >= 1, got " + str(n_feedback_));
  if (n_tasks_ < 1) invalid_option("n_tasks (model.tasks) must name at least one task, got " + str(n_tasks_));
  if (d_model_ < 1) invalid_option("model.d_model must be >= 1, got " + str(d_model_));
  if (max_len_ < 1) invalid_option("model.max_len must be >= 1, got " + str(max_len_));
  for (size_t i = 0; i < attn_hidden_.size(); ++i)
    if (attn_hidden_[i] < 1)
      invalid_option("model.attn_hidden[" + str(static_cast<int64_t>(i)) + "] must be >= 1, got " + str(attn_hidden_[i]));
  for (size_t i = 0; i < mlp_hidden_.size(); ++i)
    if (mlp_hidden_[i] < 1)
      invalid_option("model.mlp_hidden[" + str(static_cast<int64_t>(i)) + "] must be >= 1, got " + str(mlp_hidden_[i]));
  if (!(dropout_ >= 0 && dropout_ < 1)) invalid_option("model.dropout must be in [0, 1), got " + std::to_string(dropout_));
  if (pair_chunk_bytes_ < 1) invalid_option("pair_chunk_bytes must be >= 1, got " + str(pair_chunk_bytes_));
}

DINImpl::DINImpl(DINOptions options) : options_(std::move(options)) { reset(); }

void DINImpl::reset() {
  const auto& o = options_;
  o.validate();
  const int64_t D = o.d_model();
  items_ = register_module("items", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_items() + 1, D).padding_idx(0)));
  feedback_ = register_module("feedback",
                              torch::nn::Embedding(torch::nn::EmbeddingOptions(o.n_feedback() + 1, D).padding_idx(0)));

  attn_list_ = register_module("attn_layers", torch::nn::ModuleList());
  attn_layers_.clear();
  int64_t in = 4 * D;
  for (int64_t h : o.attn_hidden()) {
    attn_layers_.push_back(torch::nn::Linear(in, h));
    attn_list_->push_back(attn_layers_.back());
    in = h;
  }
  attn_layers_.push_back(torch::nn::Linear(in, 1));
  attn_list_->push_back(attn_layers_.back());

  mlp_list_ = register_module("mlp_layers", torch::nn::ModuleList());
  mlp_act_list_ = register_module("mlp_acts", torch::nn::ModuleList());
  mlp_layers_.clear();
  mlp_acts_.clear();
  in = 3 * D;
  for (int64_t h : o.mlp_hidden()) {
    mlp_layers_.push_back(torch::nn::Linear(in, h));
    mlp_acts_.push_back(torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(h)));
    mlp_list_->push_back(mlp_layers_.back());
    mlp_act_list_->push_back(mlp_acts_.back());
    in = h;
  }
  dropout_ = register_module("dropout", torch::nn::Dropout(o.dropout()));
  heads_ = register_module("heads", torch::nn::Linear(in, o.n_tasks()));

  torch::NoGradGuard no_grad;
  for (auto* table : {&items_, &feedback_}) {
    torch::nn::init::normal_((*table)->weight, 0.0, 1.0 / std::sqrt(static_cast<double>(D)));
    (*table)->weight[0].zero_();
  }
}

void DINImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options_;
  auto list = [&](const std::vector<int64_t>& v) {
    stream << "{";
    for (size_t i = 0; i < v.size(); ++i) stream << (i ? ", " : "") << v[i];
    stream << "}";
  };
  stream << "genrec::DIN(n_items=" << o.n_items() << ", n_feedback=" << o.n_feedback() << ", n_tasks=" << o.n_tasks()
         << ", d_model=" << o.d_model() << ", max_len=" << o.max_len() << ", attn_hidden=";
  list(o.attn_hidden());
  stream << ", mlp_hidden=";
  list(o.mlp_hidden());
  stream << ", dropout=" << o.dropout() << ")";
}

int64_t DINImpl::chunk_targets(int64_t rows) const {
  int64_t width = 4 * options_.d_model();
  for (int64_t h : options_.attn_hidden()) width = std::max(width, h);
  const int64_t pair_bytes = width * static_cast<int64_t>(sizeof(float));
  const int64_t pairs = std::max<int64_t>(1, options_.pair_chunk_bytes() / pair_bytes);
  return std::max<int64_t>(1, pairs / (std::max<int64_t>(1, rows) * options_.max_len()));
}

torch::Tensor DINImpl::embed_events(const RankSeq& seq) { return items_(seq.items) + feedback_(seq.feedback); }

torch::Tensor DINImpl::event_projection(const torch::Tensor& events) {
  const int64_t D = options_.d_model();
  std::vector<torch::Tensor> w = attn_layers_[0]->weight.split(D, 1);  // W_c, W_j, W_d, W_p: [H1, D] each
  return torch::nn::functional::linear(events, w[1] - w[2]);
}

torch::Tensor DINImpl::pool_windows(const torch::Tensor& ec, const torch::Tensor& events, const torch::Tensor& proj,
                                    const torch::Tensor& idx, const torch::Tensor& mask, bool shared) {
  std::vector<torch::Tensor> in{ec, events, proj, idx, mask};
  for (auto& layer : attn_layers_) in.push_back(layer->weight), in.push_back(layer->bias);
  if (!torch::GradMode::is_enabled()) return window_pool(in, shared);
  return WindowPoolFunction::apply(at::TensorList(in), shared);
}

torch::Tensor DINImpl::predict(const torch::Tensor& ec, const torch::Tensor& pooled, const torch::Tensor& mean) {
  torch::Tensor x = torch::cat({pooled, mean, ec}, -1);  // [B, Q, 3D]
  for (size_t i = 0; i < mlp_layers_.size(); ++i) x = dropout_(apply_prelu(mlp_acts_[i], mlp_layers_[i](x)));
  return heads_(x);  // [B, Q, n_tasks]
}

torch::Tensor DINImpl::forward_sequence(const RankSeq& seq) {
  TORCH_CHECK(seq.items.defined() && seq.items.dim() == 2, "din: sequence items must be [B, T]");
  TORCH_CHECK(seq.feedback.defined() && seq.feedback.sizes() == seq.items.sizes(),
              "din: sequence feedback must be shaped like items ", seq.items.sizes());
  const int64_t B = seq.items.size(0), T = seq.items.size(1), L = options_.max_len();
  check_lengths(seq.lengths, B, T, "sequence");
  const auto long_opts = seq.items.options().dtype(torch::kLong);
  if (B == 0 || T == 0) return torch::zeros({B, T, options_.n_tasks()}, items_->weight.options());

  torch::Tensor events = embed_events(seq);             // [B, T, D]
  torch::Tensor targets = items_(seq.items);            // [B, T, D]
  torch::Tensor proj = event_projection(events);        // [B, T, H1]
  torch::Tensor len = seq.lengths.to(long_opts).view({B, 1});
  // Window of position t: events [lo, hi) with hi = min(t, len), lo = min(max(0, t - L), hi).
  torch::Tensor pos = torch::arange(T, long_opts).unsqueeze(0);                             // [1, T]
  torch::Tensor hi = torch::minimum(pos, len), lo = torch::minimum((pos - L).clamp_min(0), hi);  // [B, T]
  torch::Tensor mean = window_mean(prefix_sums(events), lo, hi, events.scalar_type());     // [B, T, D]
  torch::Tensor offsets = torch::arange(L, long_opts).unsqueeze(0) - L;  // [1, L]: slot k holds event t - L + k

  const int64_t step = chunk_targets(B);
  std::vector<torch::Tensor> outs;
  for (int64_t t0 = 0; t0 < T; t0 += step) {
    const int64_t t1 = std::min(T, t0 + step);
    torch::Tensor idx = torch::arange(t0, t1, long_opts).unsqueeze(1) + offsets;        // [Q, L]
    torch::Tensor mask = (idx >= 0).unsqueeze(0) & (idx.unsqueeze(0) < len.unsqueeze(2));  // [B, Q, L]
    torch::Tensor ec = targets.slice(1, t0, t1);
    torch::Tensor pooled = pool_windows(ec, events, proj, idx.clamp(0, T - 1), mask, /*shared=*/false);
    outs.push_back(predict(ec, pooled, mean.slice(1, t0, t1)));
  }
  return outs.size() == 1 ? outs[0] : torch::cat(outs, 1);
}

std::vector<torch::Tensor> DINImpl::output_biases() { return {heads_->bias}; }

torch::Tensor DINImpl::forward_candidates(const RankSeq& history, const RankCandidates& candidates) {
  TORCH_CHECK(history.items.defined() && history.items.dim() == 2, "din: history items must be [B, T]");
  TORCH_CHECK(history.feedback.defined() && history.feedback.sizes() == history.items.sizes(),
              "din: history feedback must be shaped like items ", history.items.sizes());
  const int64_t B = history.items.size(0), L = options_.max_len();
  TORCH_CHECK(candidates.items.defined() && candidates.items.dim() == 2 && candidates.items.size(0) == B,
              "din: candidate items must be [", B, ", M]");
  check_lengths(history.lengths, B, history.items.size(1), "history");
  const int64_t M = candidates.items.size(1);
  const auto long_opts = history.items.options().dtype(torch::kLong);
  if (B == 0 || M == 0) return torch::zeros({B, M, options_.n_tasks()}, items_->weight.options());

  // An empty history tensor (every row of length 0) gets one padding column to gather from.
  RankSeq hist = history;
  if (hist.items.size(1) == 0) {
    hist.items = torch::zeros({B, 1}, long_opts);
    hist.feedback = torch::zeros({B, 1}, long_opts);
  }
  const int64_t T = hist.items.size(1);
  torch::Tensor events = embed_events(hist);       // [B, T, D]
  torch::Tensor proj = event_projection(events);   // [B, T, H1]
  torch::Tensor len = history.lengths.to(long_opts).view({B, 1});
  // The window of forward_sequence at t = len_b: events [max(0, len_b - L), len_b), slot k
  // holding event len_b - L + k.
  torch::Tensor mean = window_mean(prefix_sums(events), (len - L).clamp_min(0), len, events.scalar_type());  // [B, 1, D]
  torch::Tensor idx = len + torch::arange(L, long_opts).unsqueeze(0) - L;               // [B, L]
  torch::Tensor mask = (idx >= 0).unsqueeze(1);                                          // [B, 1, L]
  idx = idx.clamp(0, T - 1);
  torch::Tensor targets = items_(candidates.items);                                      // [B, M, D]

  const int64_t step = chunk_targets(B);
  std::vector<torch::Tensor> outs;
  for (int64_t m0 = 0; m0 < M; m0 += step) {
    torch::Tensor ec = targets.slice(1, m0, std::min(M, m0 + step));
    torch::Tensor pooled = pool_windows(ec, events, proj, idx, mask, /*shared=*/true);
    outs.push_back(predict(ec, pooled, mean.expand_as(pooled)));
  }
  return outs.size() == 1 ? outs[0] : torch::cat(outs, 1);
}

}  // namespace genrec
