#include "genrec/nn/hstu.h"

#include <torch/nn/init.h>

#include <cmath>
#include <string>
#include <vector>

#include "genrec/core/error.h"

namespace genrec {

namespace {

[[noreturn]] void invalid_option(const std::string& message) { throw InvalidInput("hstu: " + message); }

std::string str(int64_t v) { return std::to_string(v); }

}  // namespace

void HSTUOptions::validate() const {
  if (d_model_ < 1) invalid_option("model.d_model must be >= 1, got " + str(d_model_));
  if (max_len_ < 1) invalid_option("model.max_len must be >= 1, got " + str(max_len_));
  if (n_blocks_ < 1) invalid_option("model.n_blocks must be >= 1, got " + str(n_blocks_));
  if (n_heads_ < 1) invalid_option("model.n_heads must be >= 1, got " + str(n_heads_));
  if (d_qk_ < 0) invalid_option("model.d_qk must be >= 0 (0 = d_model / n_heads), got " + str(d_qk_));
  if (d_v_ < 0) invalid_option("model.d_v must be >= 0 (0 = d_model / n_heads), got " + str(d_v_));
  if ((d_qk_ == 0 || d_v_ == 0) && d_model_ % n_heads_ != 0)
    invalid_option("model.d_model (" + str(d_model_) + ") must be divisible by model.n_heads (" + str(n_heads_) +
                   ") when model." + (d_qk_ == 0 ? "d_qk" : "d_v") + " = 0");
  if (!(dropout_ >= 0 && dropout_ < 1)) invalid_option("model.dropout must be in [0, 1), got " + std::to_string(dropout_));
  if (attn_scale_ != "max_len" && attn_scale_ != "count")
    invalid_option("model.attn_scale must be max_len or count, got '" + attn_scale_ + "'");
  if (n_time_buckets_ < 1) invalid_option("model.n_time_buckets must be >= 1, got " + str(n_time_buckets_));
  if (!(time_bucket_base_ > 1 && std::isfinite(time_bucket_base_)))
    invalid_option("model.time_bucket_base must be a finite number > 1, got " + std::to_string(time_bucket_base_));
}

torch::Tensor hstu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& rab, int64_t max_len, bool per_query_count) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes(), "hstu_attention: q and k must be [B, H, T, d_qk], got ",
              q.sizes(), " and ", k.sizes());
  TORCH_CHECK(v.dim() == 4 && v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "hstu_attention: v must be [B, H, T, d_v], got ", v.sizes());
  TORCH_CHECK(max_len >= 1, "hstu_attention: max_len must be >= 1, got ", max_len);
  const int64_t T = q.size(2);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1));  // [B, H, T, T]
  if (rab.defined()) {
    TORCH_CHECK(rab.dim() == 4 && rab.size(2) == T && rab.size(3) == T,
                "hstu_attention: rab must be [B or 1, H or 1, T, T], got ", rab.sizes());
    scores = scores + rab;
  }
  // No softmax: pointwise SiLU, the causal mask as exact zeros (a select rather than a product,
  // so that even a non-finite score above the diagonal cannot leak), then the constant scale.
  torch::Tensor causal = torch::ones({T, T}, q.options().dtype(torch::kBool)).tril();  // [T, T]
  torch::Tensor attn = torch::where(causal, torch::silu(scores), torch::zeros({}, scores.options()));  // [B, H, T, T]
  if (per_query_count)  // row i has i + 1 keys
    attn = attn / torch::arange(1, T + 1, scores.options()).unsqueeze(1);
  else
    attn = attn / static_cast<double>(max_len);
  return torch::matmul(attn, v);                     // [B, H, T, d_v]
}

torch::Tensor hstu_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& rab, int64_t max_len, bool per_query_count) {
  TORCH_CHECK(q.dim() == 2 && k.sizes() == q.sizes() && v.dim() == 2 && v.size(0) == q.size(0),
              "hstu_attention_reference: q, k must be [T, d_qk] and v [T, d_v]");
  TORCH_CHECK(rab.dim() == 2 && rab.size(0) == q.size(0) && rab.size(1) == q.size(0),
              "hstu_attention_reference: rab must be [T, T]");
  const int64_t T = q.size(0), d_qk = q.size(1), d_v = v.size(1);
  torch::Tensor qd = q.to(torch::kDouble).contiguous(), kd = k.to(torch::kDouble).contiguous();
  torch::Tensor vd = v.to(torch::kDouble).contiguous(), rd = rab.to(torch::kDouble).contiguous();
  auto qa = qd.accessor<double, 2>(), ka = kd.accessor<double, 2>(), va = vd.accessor<double, 2>();
  auto ra = rd.accessor<double, 2>();
  torch::Tensor out = torch::zeros({T, d_v}, torch::kDouble);
  auto oa = out.accessor<double, 2>();
  for (int64_t query_idx = 0; query_idx < T; ++query_idx) {
    for (int64_t key_idx = 0; key_idx <= query_idx; ++key_idx) {
      double score = ra[query_idx][key_idx];
      for (int64_t c = 0; c < d_qk; ++c) score += qa[query_idx][c] * ka[key_idx][c];
      const double scale = per_query_count ? static_cast<double>(query_idx + 1) : static_cast<double>(max_len);
      const double weight = score / (1.0 + std::exp(-score)) / scale;  // SiLU / (max_len or i + 1)
      for (int64_t c = 0; c < d_v; ++c) oa[query_idx][c] += weight * va[key_idx][c];
    }
  }
  return out.to(torch::kFloat);
}

torch::Tensor hstu_time_buckets(const torch::Tensor& timestamps, const torch::Tensor& lengths, int64_t n_buckets,
                                double base, const torch::Tensor& query_times) {
  TORCH_CHECK(timestamps.dim() == 2, "hstu: timestamps must be [B, T], got ", timestamps.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == timestamps.size(0), "hstu: lengths must be [B], got ",
              lengths.sizes());
  TORCH_CHECK(!query_times.defined() || query_times.sizes() == timestamps.sizes(),
              "hstu: query_times must be shaped like timestamps ", timestamps.sizes(), ", got ", query_times.sizes());
  const int64_t T = timestamps.size(1);
  torch::Tensor len = lengths.to(torch::kLong);
  torch::Tensor valid = torch::arange(T, len.options()).unsqueeze(0) < len.unsqueeze(1);   // [B, T]
  // Differences in double: int64 seconds fit exactly up to 2^53 and cannot overflow.
  auto clean = [&](const torch::Tensor& t) {
    torch::Tensor d = t.to(torch::kDouble);                                                // [B, T]
    return torch::where(valid, d, d.gather(1, (len - 1).clamp(0, T - 1).unsqueeze(1)));
  };
  torch::Tensor ts = clean(timestamps);
  torch::Tensor qs = query_times.defined() ? clean(query_times) : ts;
  torch::Tensor dt = (qs.unsqueeze(2) - ts.unsqueeze(1)).abs().clamp_min(1.0);             // [B, T, T]
  torch::Tensor bucket = torch::floor(torch::log(dt) / std::log(base));
  return bucket.clamp(0, static_cast<double>(n_buckets - 1)).to(torch::kLong);             // [B, T, T]
}

// ---------------------------------------------------------------------------------------------
// HSTUBlock

HSTUBlockImpl::HSTUBlockImpl(const HSTUOptions& options) : options_(options) { reset(); }

void HSTUBlockImpl::reset() {
  const auto& o = options_;
  o.validate();
  d_qk_ = o.resolved_d_qk();
  d_v_ = o.resolved_d_v();
  const int64_t H = o.n_heads();
  input_norm_ = register_module("input_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()}).eps(1e-6)));
  uvqk_ = register_module("uvqk", torch::nn::Linear(o.d_model(), H * (2 * d_v_ + 2 * d_qk_)));
  attn_norm_ = register_module("attn_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({H * d_v_}).eps(1e-6)));
  out_ = register_module("out", torch::nn::Linear(H * d_v_, o.d_model()));
  dropout_ = register_module("dropout", torch::nn::Dropout(o.dropout()));
  pos_bias_ = register_parameter("pos_bias", torch::empty({H, o.max_len()}));
  time_bias_ = torch::Tensor();
  if (o.use_time_bias()) time_bias_ = register_parameter("time_bias", torch::empty({H, o.n_time_buckets()}));

  torch::NoGradGuard no_grad;
  for (auto* linear : {&uvqk_, &out_}) {
    torch::nn::init::xavier_uniform_((*linear)->weight);
    torch::nn::init::zeros_((*linear)->bias);
  }
  // Small random relative biases, as Meta's code (normal, std 0.02).
  pos_bias_.normal_(0.0, 0.02);
  if (time_bias_.defined()) time_bias_.normal_(0.0, 0.02);
}

HSTUBlockImpl::Projection HSTUBlockImpl::project(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), H = options_.n_heads();
  torch::Tensor uvqk = torch::silu(uvqk_(input_norm_(x)));  // [B, T, H * (2 d_v + 2 d_qk)]
  std::vector<torch::Tensor> parts = uvqk.split_with_sizes({H * d_v_, H * d_v_, H * d_qk_, H * d_qk_}, -1);
  auto heads = [&](const torch::Tensor& t, int64_t d) { return t.reshape({B, T, H, d}).transpose(1, 2); };
  return Projection{parts[0], heads(parts[1], d_v_), heads(parts[2], d_qk_), heads(parts[3], d_qk_)};
}

torch::Tensor HSTUBlockImpl::relative_bias(const torch::Tensor& distance, const torch::Tensor& time_buckets) const {
  const int64_t H = options_.n_heads();
  std::vector<int64_t> shape{H};
  for (int64_t s : distance.sizes()) shape.push_back(s);
  torch::Tensor d = distance.clamp(0, options_.max_len() - 1).reshape({-1});
  torch::Tensor bias = pos_bias_.index_select(1, d).view(shape);
  if (time_bias_.defined() && time_buckets.defined()) {
    TORCH_CHECK(time_buckets.sizes() == distance.sizes(), "hstu: time buckets ", time_buckets.sizes(),
                " must be shaped like the distances ", distance.sizes());
    bias = bias + time_bias_.index_select(1, time_buckets.reshape({-1})).view(shape);
  }
  return bias;  // [H, ...]
}

torch::Tensor HSTUBlockImpl::combine(const torch::Tensor& x, const torch::Tensor& attn, const torch::Tensor& u) {
  return x + out_(dropout_(attn_norm_(attn) * u));
}

torch::Tensor HSTUBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& time_buckets) {
  const int64_t B = x.size(0), T = x.size(1), H = options_.n_heads();
  Projection p = project(x);  // v, q, k [B, H, T, d]
  // Relative attention bias: position distance i - j (clamped; j > i is masked anyway) plus
  // the bucketed time distance.
  torch::Tensor pos = torch::arange(T, x.options().dtype(torch::kLong));
  torch::Tensor distance = pos.unsqueeze(1) - pos.unsqueeze(0);  // [T, T]
  torch::Tensor rab = relative_bias(distance, torch::Tensor()).unsqueeze(0);  // [1, H, T, T]
  if (time_bias_.defined() && time_buckets.defined())
    rab = rab + time_bias_.index_select(1, time_buckets.reshape({-1})).view({H, B, T, T}).transpose(0, 1);

  torch::Tensor attn = hstu_attention(p.q, p.k, p.v, rab, options_.max_len(), options_.attn_scale() == "count");  // [B, H, T, d_v]
  attn = attn.transpose(1, 2).reshape({B, T, H * d_v_});
  return combine(x, attn, p.u);  // [B, T, D]
}

// ---------------------------------------------------------------------------------------------
// HSTU

HSTUImpl::HSTUImpl(HSTUOptions options) : options_(options) { reset(); }

void HSTUImpl::reset() {
  options_.validate();
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t b = 0; b < options_.n_blocks(); ++b) blocks_->push_back(HSTUBlock(options_));
  final_norm_ = register_module("final_norm",
                                torch::nn::LayerNorm(torch::nn::LayerNormOptions({options_.d_model()}).eps(1e-6)));
  if (options_.input_stage()) {
    positions_ = register_module("positions", torch::nn::Embedding(options_.max_len(), options_.d_model()));
    input_dropout_ = register_module("input_dropout", torch::nn::Dropout(options_.dropout()));
  }
}

void HSTUImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options_;
  stream << "genrec::HSTU(d_model=" << o.d_model() << ", max_len=" << o.max_len() << ", n_blocks=" << o.n_blocks()
         << ", n_heads=" << o.n_heads() << ", d_qk=" << o.resolved_d_qk() << ", d_v=" << o.resolved_d_v()
         << ", dropout=" << o.dropout() << ", use_time_bias=" << (o.use_time_bias() ? "true" : "false")
         << ", n_time_buckets=" << o.n_time_buckets() << ", time_bucket_base=" << o.time_bucket_base()
         << ", input_stage=" << (o.input_stage() ? "true" : "false") << ", attn_scale=" << o.attn_scale() << ")";
}

torch::Tensor HSTUImpl::forward(const torch::Tensor& x, const torch::Tensor& lengths, const torch::Tensor& timestamps,
                                const torch::Tensor& query_times) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options_.d_model(), "hstu: x must be [B, T, ", options_.d_model(),
              "], got ", x.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0), "hstu: lengths must be [", x.size(0), "], got ",
              lengths.sizes());
  const int64_t T = x.size(1);
  TORCH_CHECK(!timestamps.defined() || (timestamps.dim() == 2 && timestamps.size(0) == x.size(0) &&
                                        timestamps.size(1) == T),
              "hstu: timestamps must be [B, T] = [", x.size(0), ", ", T, "], got ", timestamps.sizes());
  // Zero the padding so that nothing non-finite there can reach valid positions through A·V
  // (the causal weights there are exact zeros, but 0 · NaN is NaN).
  torch::Tensor len = lengths.to(x.device(), torch::kLong);
  torch::Tensor valid = (torch::arange(T, len.options()).unsqueeze(0) < len.unsqueeze(1)).unsqueeze(-1);  // [B, T, 1]
  torch::Tensor h = embed_input(x, torch::arange(T, len.options()).unsqueeze(0));
  h = torch::where(valid, h, torch::zeros({}, x.options()));  // [B, T, D]
  torch::Tensor buckets;  // [B, T, T], shared by the blocks
  if (options_.use_time_bias() && timestamps.defined())
    buckets = hstu_time_buckets(timestamps.to(x.device()), len, options_.n_time_buckets(), options_.time_bucket_base(),
                                query_times.defined() ? query_times.to(x.device()) : query_times);
  for (const auto& block : *blocks_) h = block->as<HSTUBlockImpl>()->forward(h, buckets);
  return final_norm_(h);
}

torch::Tensor HSTUImpl::embed_input(const torch::Tensor& x, const torch::Tensor& positions) {
  if (!options_.input_stage()) return x;
  // Positions beyond max_len share the last embedding, as distances share the last bias entry.
  torch::Tensor pos = positions.clamp_max(options_.max_len() - 1);
  return input_dropout_(x * std::sqrt(static_cast<double>(options_.d_model())) + positions_(pos));
}

torch::Tensor HSTUImpl::forward_candidates(const torch::Tensor& hist_x, const torch::Tensor& hist_lengths,
                                           const torch::Tensor& hist_times, const torch::Tensor& cand_x,
                                           const torch::Tensor& cand_times, int64_t micro_batch) {
  const auto& o = options_;
  TORCH_CHECK(hist_x.dim() == 3 && hist_x.size(2) == o.d_model(), "hstu: hist_x must be [B, T, ", o.d_model(),
              "], got ", hist_x.sizes());
  TORCH_CHECK(cand_x.dim() == 3 && cand_x.size(0) == hist_x.size(0) && cand_x.size(2) == o.d_model(),
              "hstu: cand_x must be [B, M, ", o.d_model(), "], got ", cand_x.sizes());
  TORCH_CHECK(micro_batch >= 1, "hstu: micro_batch must be >= 1, got ", micro_batch);
  const int64_t B = hist_x.size(0), T = hist_x.size(1), M = cand_x.size(1), H = o.n_heads();
  const bool with_time = o.use_time_bias() && hist_times.defined();
  TORCH_CHECK(!with_time || (hist_times.dim() == 2 && hist_times.size(0) == B && hist_times.size(1) == T),
              "hstu: hist_times must be [B, T], got ", hist_times.sizes());
  TORCH_CHECK(!with_time || !cand_times.defined() || cand_times.sizes() == cand_x.sizes().slice(0, 2),
              "hstu: cand_times must be [B, M], got ", cand_times.sizes());
  torch::Tensor len = hist_lengths.to(hist_x.device(), torch::kLong);                         // [B]
  torch::Tensor j = torch::arange(T, len.options());                                           // [T]
  torch::Tensor hist_valid = j.unsqueeze(0) < len.unsqueeze(1);                                // [B, T]

  // History: the ordinary causal pass, keeping each block's keys and values.
  torch::Tensor h = torch::where(hist_valid.unsqueeze(-1), embed_input(hist_x, j.unsqueeze(0)),
                                 torch::zeros({}, hist_x.options()));
  torch::Tensor ts, hist_buckets;
  if (with_time && T > 0) {
    // Padding takes the row's last valid time (none: 0), as hstu_time_buckets does.
    torch::Tensor t = hist_times.to(hist_x.device(), torch::kLong);
    torch::Tensor last = t.gather(1, (len - 1).clamp_min(0).clamp_max(std::max<int64_t>(T - 1, 0)).unsqueeze(1));
    last = torch::where(len.unsqueeze(1) > 0, last, torch::zeros_like(last));
    ts = torch::where(hist_valid, t, last);                                                    // [B, T]
    hist_buckets = hstu_time_buckets(ts, len.clamp_min(1), o.n_time_buckets(), o.time_bucket_base());
  }
  std::vector<torch::Tensor> keys, values;
  for (const auto& module : *blocks_) {
    auto* block = module->as<HSTUBlockImpl>();
    HSTUBlockImpl::Projection p = block->project(h);
    keys.push_back(p.k);
    values.push_back(p.v);
    if (T > 0) h = block->forward(h, hist_buckets);
  }

  // Candidates, micro_batch at a time: position len_b, keys = history of row b + itself.
  torch::Tensor cand_pos = len.unsqueeze(1).expand({B, M});                                   // [B, M]
  torch::Tensor distance = (len.unsqueeze(1) - j.unsqueeze(0));                                // [B, T]
  torch::Tensor qtime;
  if (with_time) {
    torch::Tensor fallback = T > 0 ? ts.gather(1, (len - 1).clamp_min(0).clamp_max(T - 1).unsqueeze(1))
                                   : torch::zeros({B, 1}, len.options());
    qtime = cand_times.defined() ? cand_times.to(hist_x.device(), torch::kLong) : fallback.expand({B, M});
  }
  const double scale_const = static_cast<double>(o.max_len());
  torch::Tensor scale = o.attn_scale() == "count" ? (len + 1).to(hist_x.scalar_type()).view({B, 1, 1, 1})
                                                  : torch::full({}, scale_const, hist_x.options());
  std::vector<torch::Tensor> outs;
  for (int64_t m0 = 0; m0 < M; m0 += micro_batch) {
    const int64_t mb = std::min(micro_batch, M - m0);
    torch::Tensor c = embed_input(cand_x.narrow(1, m0, mb), cand_pos.narrow(1, m0, mb));      // [B, mb, D]
    torch::Tensor buckets_hist, buckets_self;
    if (with_time) {
      torch::Tensor qt = qtime.narrow(1, m0, mb).to(torch::kDouble);                           // [B, mb]
      if (T > 0) {
        torch::Tensor dt = (qt.unsqueeze(2) - ts.to(torch::kDouble).unsqueeze(1)).abs().clamp_min(1.0);
        buckets_hist = torch::floor(torch::log(dt) / std::log(o.time_bucket_base()))
                           .clamp(0, static_cast<double>(o.n_time_buckets() - 1))
                           .to(torch::kLong);                                                   // [B, mb, T]
      }
      buckets_self = torch::zeros({B, mb}, len.options());                                      // |Δt| = 0
    }
    for (size_t l = 0; l < keys.size(); ++l) {
      auto* block = (*blocks_)[l]->as<HSTUBlockImpl>();
      HSTUBlockImpl::Projection p = block->project(c);                                          // q, k, v [B, H, mb, d]
      torch::Tensor self_bias = block->relative_bias(torch::zeros({B, mb}, len.options()), buckets_self);  // [H, B, mb]
      torch::Tensor self_w = torch::silu((p.q * p.k).sum(-1) + self_bias.transpose(0, 1));     // [B, H, mb]
      torch::Tensor attn = self_w.unsqueeze(-1) * p.v;                                          // [B, H, mb, d_v]
      if (T > 0) {
        torch::Tensor dist = distance.unsqueeze(1).expand({B, mb, T});
        torch::Tensor rab = block->relative_bias(dist, buckets_hist).transpose(0, 1);           // [B, H, mb, T]
        torch::Tensor s = torch::matmul(p.q, keys[l].transpose(-2, -1)) + rab;                  // [B, H, mb, T]
        torch::Tensor w = torch::where(hist_valid.view({B, 1, 1, T}), torch::silu(s), torch::zeros({}, s.options()));
        attn = attn + torch::matmul(w, values[l]);
      }
      attn = (attn / scale).transpose(1, 2).reshape({B, mb, H * p.v.size(-1)});
      c = block->combine(c, attn, p.u);
    }
    outs.push_back(final_norm_(c));
  }
  if (outs.empty()) return torch::zeros({B, 0, o.d_model()}, hist_x.options());
  return torch::cat(outs, 1);
}

// ---------------------------------------------------------------------------------------------
// Incremental encoding (KV cache)

int64_t HSTUCache::bytes() const {
  int64_t n = times.defined() ? static_cast<int64_t>(times.nbytes()) : 0;
  for (const auto& t : keys) n += static_cast<int64_t>(t.nbytes());
  for (const auto& t : values) n += static_cast<int64_t>(t.nbytes());
  return n;
}

torch::Tensor HSTUImpl::extend(HSTUCache& cache, const torch::Tensor& x, const torch::Tensor& times,
                               const torch::Tensor& query_times, bool commit) {
  const auto& o = options_;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == o.d_model(), "hstu extend: x must be [n, ", o.d_model(), "], got ", x.sizes());
  const int64_t P = cache.length, n = x.size(0), H = o.n_heads();
  const bool with_time = o.use_time_bias() && times.defined();
  TORCH_CHECK(P == 0 || with_time == cache.times.defined(),
              "hstu extend: timestamps must be given for every position or for none");
  TORCH_CHECK(!with_time || (times.dim() == 1 && times.size(0) == n), "hstu extend: times must be [", n, "]");
  TORCH_CHECK(!query_times.defined() || (query_times.dim() == 1 && query_times.size(0) == n),
              "hstu extend: query_times must be [", n, "]");
  TORCH_CHECK(P == 0 || static_cast<int64_t>(cache.keys.size()) == o.n_blocks(), "hstu extend: cache has ",
              cache.keys.size(), " blocks, the model ", o.n_blocks());
  if (n == 0) return torch::zeros({0, o.d_model()}, x.options());
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  torch::Tensor pos = torch::arange(P, P + n, lopt);                                   // [n]
  torch::Tensor key_pos = torch::arange(P + n, lopt);                                  // [P + n]
  torch::Tensor distance = pos.unsqueeze(1) - key_pos.unsqueeze(0);                    // [n, P + n]
  torch::Tensor causal = distance >= 0;                                                // [n, P + n]
  torch::Tensor new_times, buckets;
  if (with_time) {
    new_times = times.to(x.device(), torch::kLong);
    torch::Tensor kt = P > 0 ? torch::cat({cache.times, new_times}) : new_times;        // [P + n]
    torch::Tensor qt = query_times.defined() ? query_times.to(x.device(), torch::kLong) : new_times;
    // As hstu_time_buckets: differences in double, |dt| clamped to 1 s, log base, clamped.
    torch::Tensor dt = (qt.to(torch::kDouble).unsqueeze(1) - kt.to(torch::kDouble).unsqueeze(0)).abs().clamp_min(1.0);
    buckets = torch::floor(torch::log(dt) / std::log(o.time_bucket_base()))
                  .clamp(0, static_cast<double>(o.n_time_buckets() - 1))
                  .to(torch::kLong);                                                   // [n, P + n]
  }
  torch::Tensor scale = o.attn_scale() == "count" ? (pos + 1).to(x.scalar_type()).view({1, n, 1})
                                                  : torch::full({}, static_cast<double>(o.max_len()), x.options());
  torch::Tensor h = embed_input(x.unsqueeze(0), pos.unsqueeze(0));                       // [1, n, D]
  std::vector<torch::Tensor> new_keys, new_values;
  for (size_t l = 0; l < blocks_->size(); ++l) {
    auto* block = (*blocks_)[l]->as<HSTUBlockImpl>();
    HSTUBlockImpl::Projection p = block->project(h);                                   // q, k, v [1, H, n, d]
    torch::Tensor k = p.k[0], v = p.v[0];                                              // [H, n, d]
    if (P > 0) {
      k = torch::cat({cache.keys[l], k}, 1);                                           // [H, P + n, d]
      v = torch::cat({cache.values[l], v}, 1);
    }
    torch::Tensor rab = block->relative_bias(distance, buckets);                       // [H, n, P + n]
    torch::Tensor s = torch::matmul(p.q[0], k.transpose(-2, -1)) + rab;                // [H, n, P + n]
    torch::Tensor w = torch::where(causal.unsqueeze(0), torch::silu(s), torch::zeros({}, s.options()));
    torch::Tensor attn = torch::matmul(w, v).transpose(0, 1).reshape({1, n, -1}) / scale;  // [1, n, H d_v]
    if (commit) {
      new_keys.push_back(p.k[0]);
      new_values.push_back(p.v[0]);
    }
    h = block->combine(h, attn, p.u);
  }
  (void)H;
  if (commit) {
    if (P == 0) {
      cache.keys = std::move(new_keys);
      cache.values = std::move(new_values);
      cache.times = with_time ? new_times.clone() : torch::Tensor();
    } else {
      for (size_t l = 0; l < cache.keys.size(); ++l) {
        cache.keys[l] = torch::cat({cache.keys[l], new_keys[l]}, 1);
        cache.values[l] = torch::cat({cache.values[l], new_values[l]}, 1);
      }
      if (with_time) cache.times = torch::cat({cache.times, new_times});
    }
    cache.length = P + n;
  }
  return final_norm_(h)[0];
}

}  // namespace genrec
