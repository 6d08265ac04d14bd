#include "genrec/train/losses.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace genrec {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per chunk so that one chunk of logits stays near 4 MB: small allocations are reused by
// the allocator, while [N, V] logits would be fresh pages (page faults) on every step.
int64_t chunk_rows(int64_t n_cols) { return std::max<int64_t>(16, (int64_t{1} << 20) / std::max<int64_t>(1, n_cols)); }

// The chunked backward of the functions below: per chunk of rows [b, e), p = softmax(hs·itemsᵀ)
// from the saved log-sum-exp, turned into d loss / d logits by adjust(p, b, e) (in place), then
// d loss / d h = (p · items) / temperature and d loss / d items += pᵀ · hs (hs = h / temperature).
// Returns {grad_h, grad_table}; the padding row of the table gets no gradient.
template <typename Adjust>
std::pair<torch::Tensor, torch::Tensor> chunked_softmax_backward(const torch::Tensor& hs, const torch::Tensor& table,
                                                                 const torch::Tensor& lse, double temperature,
                                                                 Adjust adjust) {
  const int64_t N = hs.size(0), chunk = chunk_rows(table.size(0));
  torch::Tensor items = table.slice(0, 1);
  torch::Tensor grad_h = torch::empty_like(hs), grad_table = torch::zeros_like(table);
  torch::Tensor grad_items = grad_table.slice(0, 1);
  for (int64_t b = 0; b < N; b += chunk) {
    const int64_t e = std::min(N, b + chunk);
    torch::Tensor hc = hs.slice(0, b, e);
    torch::Tensor p = torch::mm(hc, items.t());
    p.sub_(lse.slice(0, b, e).unsqueeze(1)).exp_();  // softmax
    adjust(p, b, e);
    grad_h.slice(0, b, e).copy_(torch::mm(p, items)).div_(temperature);
    grad_items.addmm_(p.t(), hc);
  }
  return {grad_h, grad_table};
}

// Softmax cross-entropy over the whole table, computed chunk by chunk in forward and
// recomputed chunk by chunk in backward: never more than one chunk of logits in memory.
struct ChunkedSoftmaxCE : public torch::autograd::Function<ChunkedSoftmaxCE> {
  // Items are rows 1..V of the table (row 0 is padding and never a candidate); the temperature
  // is folded into h so that one matrix product yields the logits.
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& table,
                               const torch::Tensor& targets, double temperature) {
    const int64_t N = h.size(0), chunk = chunk_rows(table.size(0));
    torch::Tensor hs = h / temperature;
    torch::Tensor items = table.slice(0, 1);  // [V, D]
    torch::Tensor cols = (targets - 1).unsqueeze(1);
    torch::Tensor lse = torch::empty({N}, h.options());
    torch::Tensor total = torch::zeros({}, h.options().dtype(torch::kDouble));
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t e = std::min(N, b + chunk);
      torch::Tensor logits = torch::mm(hs.slice(0, b, e), items.t());
      torch::Tensor l = torch::logsumexp(logits, 1);
      lse.slice(0, b, e).copy_(l);
      total += (l - logits.gather(1, cols.slice(0, b, e)).squeeze(1)).sum().to(torch::kDouble);
    }
    ctx->save_for_backward({hs, table, targets, lse});
    ctx->saved_data["temperature"] = temperature;
    return {(total / static_cast<double>(N)).to(h.scalar_type())};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &hs = saved[0], &table = saved[1], &targets = saved[2], &lse = saved[3];
    const double scale = grad_out[0].item<double>() / static_cast<double>(hs.size(0));
    torch::Tensor cols = (targets - 1).unsqueeze(1);
    auto [grad_h, grad_table] = chunked_softmax_backward(
        hs, table, lse, ctx->saved_data["temperature"].toDouble(), [&](torch::Tensor& p, int64_t b, int64_t e) {
          p.scatter_add_(1, cols.slice(0, b, e), torch::full({e - b, 1}, -1.0, p.options()));
          p.mul_(scale);
        });
    return {grad_h, grad_table, torch::Tensor(), torch::Tensor()};
  }
};

// Row-wise log-sum-exp of h·Eᵀ / temperature over items 1..V of the table, chunk by chunk (as
// ChunkedSoftmaxCE); differentiable in h and the table for any upstream gradient.
struct ChunkedLogSumExp : public torch::autograd::Function<ChunkedLogSumExp> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& table,
                               double temperature) {
    const int64_t N = h.size(0), chunk = chunk_rows(table.size(0));
    torch::Tensor hs = h / temperature;
    torch::Tensor items = table.slice(0, 1);
    torch::Tensor lse = torch::empty({N}, h.options());
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t e = std::min(N, b + chunk);
      lse.slice(0, b, e).copy_(torch::logsumexp(torch::mm(hs.slice(0, b, e), items.t()), 1));
    }
    ctx->save_for_backward({hs, table, lse});
    ctx->saved_data["temperature"] = temperature;
    return {lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &hs = saved[0], &table = saved[1], &lse = saved[2];
    const torch::Tensor& g = grad_out[0];
    auto [grad_h, grad_table] = chunked_softmax_backward(
        hs, table, lse, ctx->saved_data["temperature"].toDouble(),
        [&](torch::Tensor& p, int64_t b, int64_t e) { p.mul_(g.slice(0, b, e).unsqueeze(1)); });
    return {grad_h, grad_table, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor full_softmax_loss_with_offsets(const torch::Tensor& h, const torch::Tensor& table,
                                             const torch::Tensor& targets, double temperature,
                                             const torch::Tensor& slot_dots, const torch::Tensor& slot_offsets,
                                             const torch::Tensor& slot_mask, const torch::Tensor& target_offset) {
  torch::Tensor lse = ChunkedLogSumExp::apply(h, table, temperature)[0];  // [N], without offsets
  torch::Tensor target_logit = (h * table.index({targets})).sum(1) / temperature + target_offset;
  // Offsets move the mass of the slot items: Z' = Z + sum_k exp(s_k) (exp(o_k) - 1), so
  // log Z' = log Z + log1p(sum_k softmax_k · expm1(o_k)); the sum is > -1 (softmax_k sum <= 1).
  torch::Tensor p = torch::exp(slot_dots / temperature - lse.unsqueeze(1)) * slot_mask.to(h.scalar_type());
  torch::Tensor shift = torch::log1p((p * torch::expm1(slot_offsets)).sum(1).clamp_min(-1.0 + 1e-6));
  return (lse + shift - target_logit).mean();
}

torch::Tensor full_softmax_loss(const torch::Tensor& h, const torch::Tensor& table, const torch::Tensor& targets,
                                double temperature) {
  return ChunkedSoftmaxCE::apply(h, table, targets, temperature)[0];
}

torch::Tensor sampled_softmax_loss(const torch::Tensor& h, const torch::Tensor& pos, const torch::Tensor& neg,
                                   const torch::Tensor& neg_ids, const torch::Tensor& targets,
                                   const torch::Tensor& log_q_neg, const torch::Tensor& log_q_pos,
                                   double temperature) {
  torch::Tensor pos_logit = (h * pos).sum(-1, true) / temperature;  // [N, 1]
  torch::Tensor neg_logits = torch::matmul(h, neg.t()) / temperature;  // [N, M]
  if (log_q_neg.defined()) neg_logits = neg_logits - log_q_neg.unsqueeze(0);
  if (log_q_pos.defined()) pos_logit = pos_logit - log_q_pos.unsqueeze(1);
  torch::Tensor hit = targets.unsqueeze(1) == neg_ids.unsqueeze(0);  // accidental hits
  neg_logits = neg_logits.masked_fill(hit, -std::numeric_limits<float>::infinity());
  torch::Tensor logits = torch::cat({pos_logit, neg_logits}, 1);
  return (torch::logsumexp(logits, 1) - logits.select(1, 0)).mean();
}

torch::Tensor bce_loss(const torch::Tensor& h, const torch::Tensor& pos, const torch::Tensor& neg) {
  torch::Tensor p = (h * pos).sum(-1), n = (h * neg).sum(-1);
  return (torch::nn::functional::softplus(-p) + torch::nn::functional::softplus(n)).mean();
}

}  // namespace genrec
