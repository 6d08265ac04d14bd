#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "genrec/core/error.h"
#include "genrec/rank/din.h"
#include "test_expect.h"

using namespace genrec;

namespace {

constexpr int64_t kItems = 40, kFeedback = 3, kTasks = 2;

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// A small network (fast tests) in eval mode, with max_len = 50 unless told.
DIN small_din(int64_t max_len = 50) {
  torch::manual_seed(7);
  DIN net(DINOptions(kItems, kFeedback, kTasks).d_model(16).max_len(max_len).attn_hidden({24, 12}).mlp_hidden({32, 16}));
  net->eval();
  return net;
}

// Right-padded random sequences; padding holds random (valid) ids and feedback too, so that a
// network reading padding would be caught.
RankSeq random_seq(const std::vector<int64_t>& lengths, int64_t T) {
  const int64_t B = static_cast<int64_t>(lengths.size());
  RankSeq s;
  s.items = torch::randint(1, kItems + 1, {B, T}, torch::kLong);
  s.feedback = torch::randint(1, kFeedback + 1, {B, T}, torch::kLong);
  s.lengths = torch::tensor(lengths, torch::kLong);
  return s;
}

RankCandidates random_candidates(const std::vector<int64_t>& counts, int64_t M) {
  RankCandidates c;
  c.items = torch::randint(1, kItems + 1, {static_cast<int64_t>(counts.size()), M}, torch::kLong);
  c.counts = torch::tensor(counts, torch::kLong);
  return c;
}

// Checks forward_candidates(hist, cands)[b, m] == forward_sequence(hist_b followed by cand m)[len_b]
// for every valid (b, m); all the sequences go in one padded batch (rows of different lengths).
void expect_contract(DIN& net, const RankSeq& hist, const RankCandidates& cands, double tol = 1e-5) {
  torch::NoGradGuard no_grad;
  torch::Tensor scores = net->forward_candidates(hist, cands);
  const int64_t B = hist.items.size(0), M = cands.items.size(1), T = hist.items.size(1);
  ASSERT_EQ(scores.sizes(), (std::vector<int64_t>{B, M, kTasks}));
  ASSERT_TRUE(torch::isfinite(scores).all().item<bool>());
  std::vector<int64_t> rows_b, rows_m;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < cands.counts[b].item<int64_t>(); ++m) rows_b.push_back(b), rows_m.push_back(m);
  const int64_t R = static_cast<int64_t>(rows_b.size());
  ASSERT_GT(R, 0);
  const int64_t W = T + 3;  // wider than needed: padding width must not matter
  RankSeq seq;
  seq.items = torch::randint(1, kItems + 1, {R, W}, torch::kLong);
  seq.feedback = torch::randint(1, kFeedback + 1, {R, W}, torch::kLong);  // the candidate's feedback: any
  seq.lengths = torch::empty({R}, torch::kLong);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t b = rows_b[r], len = hist.lengths[b].item<int64_t>();
    seq.items[r].slice(0, 0, len).copy_(hist.items[b].slice(0, 0, len));
    seq.feedback[r].slice(0, 0, len).copy_(hist.feedback[b].slice(0, 0, len));
    seq.items[r][len].copy_(cands.items[b][rows_m[r]]);
    seq.lengths[r].fill_(len + 1);
  }
  torch::Tensor out = net->forward_sequence(seq);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{R, W, kTasks}));
  for (int64_t r = 0; r < R; ++r) {
    const int64_t b = rows_b[r], m = rows_m[r], len = hist.lengths[b].item<int64_t>();
    EXPECT_LT(max_abs_diff(out[r][len], scores[b][m]), tol) << "row " << b << " (history length " << len << "), candidate " << m;
  }
}

}  // namespace

TEST(DINOptions, Defaults) {
  DINOptions o(100, 5, 3);
  EXPECT_EQ(o.d_model(), 64);
  EXPECT_EQ(o.max_len(), 50);
  EXPECT_EQ(o.attn_hidden(), (std::vector<int64_t>{80, 40}));
  EXPECT_EQ(o.mlp_hidden(), (std::vector<int64_t>{200, 80}));
  EXPECT_DOUBLE_EQ(o.dropout(), 0.1);
  EXPECT_EQ(o.pair_chunk_bytes(), int64_t{16} << 20);
  EXPECT_NO_THROW(o.validate());
}

TEST(DINOptions, ValidationNamesTheOption) {
  EXPECT_INVALID(DIN(DINOptions(0, 3, 1)), "n_items");
  EXPECT_INVALID(DIN(DINOptions(10, 0, 1)), "n_feedback");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 0)), "n_tasks");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).d_model(0)), "model.d_model");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).max_len(0)), "model.max_len");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).attn_hidden({8, 0})), "model.attn_hidden");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).mlp_hidden({-1})), "model.mlp_hidden");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).dropout(1.0)), "model.dropout");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).dropout(-0.1)), "model.dropout");
  EXPECT_INVALID(DIN(DINOptions(10, 3, 1).pair_chunk_bytes(0)), "pair_chunk_bytes");
  // Empty hidden lists are allowed (a linear attention unit / heads on the features).
  EXPECT_NO_THROW(DIN(DINOptions(10, 3, 1).attn_hidden({}).mlp_hidden({})));
}

TEST(DIN, OutputShapes) {
  torch::manual_seed(1);
  DIN net(DINOptions(kItems, kFeedback, 3));  // default sizes
  net->eval();
  torch::NoGradGuard no_grad;
  RankSeq seq = random_seq({7, 3, 0}, 7);
  torch::Tensor out = net->forward_sequence(seq);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 7, 3}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  torch::Tensor scores = net->forward_candidates(seq, random_candidates({4, 0, 2}, 4));
  EXPECT_EQ(scores.sizes(), (std::vector<int64_t>{3, 4, 3}));
  EXPECT_TRUE(torch::isfinite(scores).all().item<bool>());
  // Degenerate widths.
  EXPECT_EQ(net->forward_sequence(random_seq({0, 0}, 0)).sizes(), (std::vector<int64_t>{2, 0, 3}));
  EXPECT_EQ(net->forward_candidates(random_seq({0, 0}, 0), random_candidates({2, 1}, 2)).sizes(),
            (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(net->forward_candidates(seq, random_candidates({0, 0, 0}, 0)).sizes(), (std::vector<int64_t>{3, 0, 3}));
  std::ostringstream printed;
  printed << *net;
  EXPECT_NE(printed.str().find("genrec::DIN(n_items=40"), std::string::npos) << printed.str();
}

TEST(DIN, CandidatesMatchNextEventOfSequence) {
  DIN net = small_din(50);
  torch::manual_seed(11);
  // Lengths 0, 1, 5 and 60 (> max_len) in one padded batch; several candidate counts.
  RankSeq hist = random_seq({0, 1, 5, 60, 50, 51}, 60);
  expect_contract(net, hist, random_candidates({3, 1, 4, 2, 1, 5}, 5));
  expect_contract(net, hist, random_candidates({1, 1, 1, 1, 1, 1}, 1));
  // Every history empty (a zero-width history tensor).
  expect_contract(net, random_seq({0, 0}, 0), random_candidates({2, 1}, 3));
  // Outputs are not trivially constant.
  torch::NoGradGuard no_grad;
  torch::Tensor s = net->forward_candidates(hist, random_candidates({5, 5, 5, 5, 5, 5}, 5));
  EXPECT_GT(s.std().item<double>(), 1e-3);
}

TEST(DIN, MatchesNaiveReferenceWithGradients) {
  // The decomposed first layer, the gathered windows and the checkpointed backward against a
  // per-target implementation of the formula (explicit [e_c, e_j, e_c - e_j, e_c * e_j]).
  DIN net = small_din(5);
  torch::manual_seed(23);
  RankSeq seq = random_seq({12, 4, 0}, 12);
  RankCandidates cands = random_candidates({3, 1, 2}, 3);
  const int64_t B = 3, T = 12;
  torch::Tensor seq_coef = torch::randn({B, T, kTasks}), cand_coef = torch::randn({B, 3, kTasks});
  torch::Tensor seq_valid = (torch::arange(T).unsqueeze(0) < seq.lengths.unsqueeze(1)).unsqueeze(-1).to(torch::kFloat);
  torch::Tensor cand_valid = (torch::arange(3).unsqueeze(0) < cands.counts.unsqueeze(1)).unsqueeze(-1).to(torch::kFloat);
  auto loss_of = [&](const torch::Tensor& out_seq, const torch::Tensor& out_cand) {
    return (out_seq * seq_valid * seq_coef).sum() + (out_cand * cand_valid * cand_coef).sum();
  };
  auto grads = [&]() {
    std::vector<torch::Tensor> g;
    for (auto& p : net->parameters()) {
      g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      p.mutable_grad() = torch::Tensor();
    }
    return g;
  };

  torch::Tensor out_seq = net->forward_sequence(seq), out_cand = net->forward_candidates(seq, cands);
  loss_of(out_seq, out_cand).backward();
  std::vector<torch::Tensor> g_net = grads();

  // Reference.
  auto P = net->named_parameters();
  const auto& o = net->options();
  const int64_t n_attn = static_cast<int64_t>(o.attn_hidden().size()), n_mlp = static_cast<int64_t>(o.mlp_hidden().size());
  auto prelu = [](const torch::Tensor& x, const torch::Tensor& a) { return torch::where(x >= 0, x, a * x); };
  auto lin = [&](const torch::Tensor& x, const std::string& name) {
    return torch::nn::functional::linear(x, P[name + ".weight"], P[name + ".bias"]);
  };
  auto reference = [&](int64_t b, int64_t target_item, int64_t from, int64_t to) {  // events [from, to) of row b
    const int64_t D = o.d_model();
    torch::Tensor ec = P["items.weight"][target_item];
    torch::Tensor pooled = torch::zeros({D}), mean = torch::zeros({D});
    if (to > from) {
      torch::Tensor ej = P["items.weight"].index_select(0, seq.items[b].slice(0, from, to)) +
                         P["feedback.weight"].index_select(0, seq.feedback[b].slice(0, from, to));
      torch::Tensor ecx = ec.unsqueeze(0).expand_as(ej);
      torch::Tensor x = torch::cat({ecx, ej, ecx - ej, ecx * ej}, 1);
      for (int64_t i = 0; i < n_attn; ++i) x = torch::silu(lin(x, "attn_layers." + std::to_string(i)));
      torch::Tensor w = lin(x, "attn_layers." + std::to_string(n_attn));  // [n, 1]
      pooled = (w * ej).sum(0);
      mean = ej.mean(0);
    }
    torch::Tensor z = torch::cat({pooled, mean, ec});
    for (int64_t i = 0; i < n_mlp; ++i)
      z = prelu(lin(z, "mlp_layers." + std::to_string(i)), P["mlp_acts." + std::to_string(i) + ".weight"]);
    return lin(z, "heads");
  };
  const int64_t L = o.max_len();
  torch::Tensor ref_seq = torch::zeros({B, T, kTasks}), ref_cand = torch::zeros({B, 3, kTasks});
  std::vector<torch::Tensor> rows_seq, rows_cand;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = seq.lengths[b].item<int64_t>();
    std::vector<torch::Tensor> r_seq, r_cand;
    for (int64_t t = 0; t < T; ++t)
      r_seq.push_back(t < len ? reference(b, seq.items[b][t].item<int64_t>(), std::max<int64_t>(0, t - L), t)
                              : torch::zeros({kTasks}));
    for (int64_t m = 0; m < 3; ++m)
      r_cand.push_back(m < cands.counts[b].item<int64_t>()
                           ? reference(b, cands.items[b][m].item<int64_t>(), std::max<int64_t>(0, len - L), len)
                           : torch::zeros({kTasks}));
    rows_seq.push_back(torch::stack(r_seq));
    rows_cand.push_back(torch::stack(r_cand));
  }
  ref_seq = torch::stack(rows_seq);
  ref_cand = torch::stack(rows_cand);
  EXPECT_LT(max_abs_diff(out_seq.detach() * seq_valid, ref_seq.detach() * seq_valid), 1e-5);
  EXPECT_LT(max_abs_diff(out_cand.detach() * cand_valid, ref_cand.detach() * cand_valid), 1e-5);
  loss_of(ref_seq, ref_cand).backward();
  std::vector<torch::Tensor> g_ref = grads();
  auto names = net->named_parameters().keys();
  for (size_t i = 0; i < g_net.size(); ++i) {
    const double scale = std::max(1.0, g_ref[i].abs().max().item<double>());
    EXPECT_LT(max_abs_diff(g_net[i], g_ref[i]) / scale, 1e-4) << names[i];
  }
}

TEST(DIN, ChunkingDoesNotChangeOutputsOrGradients) {
  // The same parameters with one chunk and with chunks of 2 targets (pair_chunk_bytes counts
  // 4 * d_model floats per pair): outputs, the candidate contract and gradients agree.
  const int64_t L = 10, B = 3, T = 23, M = 7;
  auto make = [&](int64_t chunk_bytes) {
    torch::manual_seed(31);
    DIN net(DINOptions(kItems, kFeedback, kTasks).d_model(16).max_len(L).attn_hidden({24, 12}).mlp_hidden({32, 16}).pair_chunk_bytes(chunk_bytes));
    net->eval();
    return net;
  };
  DIN whole = make(int64_t{64} << 20), chunked = make(2 * B * L * 4 * 16 * 4);
  torch::manual_seed(37);
  RankSeq seq = random_seq({23, 11, 0}, T);
  RankCandidates cands = random_candidates({7, 3, 5}, M);
  torch::Tensor coef_seq = torch::randn({B, T, kTasks}) *
                           (torch::arange(T).unsqueeze(0) < seq.lengths.unsqueeze(1)).unsqueeze(-1).to(torch::kFloat);
  torch::Tensor coef_cand = torch::randn({B, M, kTasks}) *
                            (torch::arange(M).unsqueeze(0) < cands.counts.unsqueeze(1)).unsqueeze(-1).to(torch::kFloat);
  std::vector<std::vector<torch::Tensor>> grads;
  std::vector<torch::Tensor> outs;
  for (DIN* net : {&whole, &chunked}) {
    torch::Tensor out_seq = (*net)->forward_sequence(seq), out_cand = (*net)->forward_candidates(seq, cands);
    ((out_seq * coef_seq).sum() + (out_cand * coef_cand).sum()).backward();
    outs.push_back(out_seq.detach() * coef_seq.ne(0)), outs.push_back(out_cand.detach() * coef_cand.ne(0));
    std::vector<torch::Tensor> g;
    for (auto& p : (*net)->parameters()) g.push_back(p.grad().clone());
    grads.push_back(g);
  }
  EXPECT_LT(max_abs_diff(outs[0], outs[2]), 1e-5);
  EXPECT_LT(max_abs_diff(outs[1], outs[3]), 1e-5);
  auto names = whole->named_parameters().keys();
  for (size_t i = 0; i < grads[0].size(); ++i) {
    const double scale = std::max(1.0, grads[0][i].abs().max().item<double>());
    EXPECT_LT(max_abs_diff(grads[0][i], grads[1][i]) / scale, 1e-5) << names[i];
  }
  expect_contract(chunked, seq, cands);
}

TEST(DIN, CandidatesDoNotSeeEachOther) {
  DIN net = small_din(50);
  torch::manual_seed(5);
  torch::NoGradGuard no_grad;
  RankSeq hist = random_seq({12, 0, 55}, 55);
  RankCandidates c = random_candidates({4, 4, 4}, 4);
  torch::Tensor base = net->forward_candidates(hist, c);
  RankCandidates other = c;
  other.items = c.items.clone();
  other.items.slice(1, 1, 4).copy_(c.items.slice(1, 1, 4) % kItems + 1);
  torch::Tensor changed = net->forward_candidates(hist, other);
  EXPECT_LT(max_abs_diff(base.select(1, 0), changed.select(1, 0)), 1e-6);
  // Padding the candidate set wider changes nothing either.
  RankCandidates wider;
  wider.items = torch::cat({c.items, torch::randint(1, kItems + 1, {3, 6}, torch::kLong)}, 1);
  wider.counts = c.counts;
  EXPECT_LT(max_abs_diff(net->forward_candidates(hist, wider).slice(1, 0, 4), base), 1e-6);
  // A candidate alone gives the same output as among others.
  RankCandidates alone;
  alone.items = c.items.slice(1, 2, 3).contiguous();
  alone.counts = torch::ones({3}, torch::kLong);
  EXPECT_LT(max_abs_diff(net->forward_candidates(hist, alone).select(1, 0), base.select(1, 2)), 1e-6);
}

TEST(DIN, SequenceIsCausal) {
  DIN net = small_din(50);
  torch::manual_seed(9);
  torch::NoGradGuard no_grad;
  const int64_t T = 70, t = 30;
  RankSeq seq = random_seq({70, 45}, T);
  torch::Tensor base = net->forward_sequence(seq);
  auto changed_at = [&](const std::function<void(RankSeq&)>& edit) {
    RankSeq s = seq;
    s.items = seq.items.clone();
    s.feedback = seq.feedback.clone();
    edit(s);
    return net->forward_sequence(s);
  };
  // Future items and feedback, and the feedback of the target event itself: no effect.
  torch::Tensor future = changed_at([&](RankSeq& s) {
    s.items.slice(1, t + 1, T).copy_(seq.items.slice(1, t + 1, T) % kItems + 1);  // certainly different
    s.feedback.slice(1, t, T).copy_(seq.feedback.slice(1, t, T) % kFeedback + 1);
  });
  EXPECT_LT(max_abs_diff(future.slice(1, 0, t + 1), base.slice(1, 0, t + 1)), 1e-6);
  // The target item changes the prediction.
  torch::Tensor item = changed_at([&](RankSeq& s) { s.items.select(1, t).copy_(seq.items.select(1, t) % kItems + 1); });
  EXPECT_GT(max_abs_diff(item.select(1, t), base.select(1, t)), 1e-6);
  EXPECT_LT(max_abs_diff(item.slice(1, 0, t), base.slice(1, 0, t)), 1e-6);
  // A past event changes it.
  torch::Tensor past = changed_at([&](RankSeq& s) { s.feedback.select(1, t - 1).copy_(seq.feedback.select(1, t - 1) % kFeedback + 1); });
  EXPECT_GT(max_abs_diff(past.select(1, t), base.select(1, t)), 1e-6);
}

TEST(DIN, SequenceRespectsWindow) {
  const int64_t L = 10;
  DIN net = small_din(L);
  torch::manual_seed(13);
  torch::NoGradGuard no_grad;
  const int64_t T = 40, t = 25;
  RankSeq seq = random_seq({40, 40}, T);
  torch::Tensor base = net->forward_sequence(seq);
  // Events older than max_len before t (positions < t - L): no effect on out[t].
  RankSeq old = seq;
  old.items = seq.items.clone();
  old.feedback = seq.feedback.clone();
  old.items.slice(1, 0, t - L).copy_(seq.items.slice(1, 0, t - L) % kItems + 1);
  old.feedback.slice(1, 0, t - L).copy_(seq.feedback.slice(1, 0, t - L) % kFeedback + 1);
  torch::Tensor out_old = net->forward_sequence(old);
  EXPECT_LT(max_abs_diff(out_old.slice(1, t, t + 1), base.slice(1, t, t + 1)), 1e-6);
  // The oldest event inside the window (t - L) does matter.
  RankSeq inside = seq;
  inside.items = seq.items.clone();
  inside.items.select(1, t - L).copy_(seq.items.select(1, t - L) % kItems + 1);
  EXPECT_GT(max_abs_diff(net->forward_sequence(inside).select(1, t), base.select(1, t)), 1e-6);
  // Candidates read the last max_len events only.
  RankCandidates c = random_candidates({2, 2}, 2);
  torch::Tensor s1 = net->forward_candidates(seq, c), s2 = net->forward_candidates(old, c);
  EXPECT_LT(max_abs_diff(s1, s2), 1e-6);  // old edits are at positions < t - L <= T - L
}

TEST(DIN, GradientsAreFinite) {
  torch::manual_seed(17);
  DIN net(DINOptions(kItems, kFeedback, kTasks).d_model(16).max_len(8).attn_hidden({12, 6}).mlp_hidden({20, 10}));
  net->train();
  RankSeq seq = random_seq({20, 3, 0}, 20);
  torch::Tensor out = net->forward_sequence(seq);
  torch::Tensor valid = (torch::arange(20).unsqueeze(0) < seq.lengths.unsqueeze(1)).unsqueeze(-1).to(torch::kFloat);
  torch::Tensor scores = net->forward_candidates(seq, random_candidates({2, 1, 3}, 3));
  torch::Tensor loss = (out * valid).pow(2).sum() + scores.slice(1, 0, 1).sum();
  loss.backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  // The padding rows of the embedding tables get no gradient.
  EXPECT_EQ(net->named_parameters()["items.weight"].grad()[0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(net->named_parameters()["feedback.weight"].grad()[0].abs().sum().item<double>(), 0.0);
}

TEST(DIN, LearnsParityOfHistory) {
  // Label = 1 iff the candidate's item id has the parity of most of the history's items: needs
  // the history (through pooling) and the candidate together.
  torch::manual_seed(21);
  const int64_t n_items = 20, H = 7, batch = 64;
  DIN net(DINOptions(n_items, 2, 1).d_model(16).max_len(10).attn_hidden({16}).mlp_hidden({32}).dropout(0.0));
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  auto make_batch = [&](int64_t n, RankSeq& hist, RankCandidates& cand, torch::Tensor& label) {
    hist.items = torch::randint(1, n_items + 1, {n, H}, torch::kLong);
    hist.feedback = torch::randint(1, 3, {n, H}, torch::kLong);
    hist.lengths = torch::full({n}, H, torch::kLong);
    cand.items = torch::randint(1, n_items + 1, {n, 1}, torch::kLong);
    cand.counts = torch::ones({n}, torch::kLong);
    torch::Tensor odd_majority = (hist.items % 2).sum(1) * 2 > H;
    label = (odd_majority == (cand.items.squeeze(1) % 2 == 1)).to(torch::kFloat);
  };
  net->train();
  for (int step = 0; step < 300; ++step) {
    RankSeq hist;
    RankCandidates cand;
    torch::Tensor label;
    make_batch(batch, hist, cand, label);
    torch::Tensor logit = net->forward_candidates(hist, cand).view({-1});
    torch::Tensor loss = torch::binary_cross_entropy_with_logits(logit, label);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  net->eval();
  torch::NoGradGuard no_grad;
  RankSeq hist;
  RankCandidates cand;
  torch::Tensor label;
  make_batch(1000, hist, cand, label);
  torch::Tensor pred = (net->forward_candidates(hist, cand).view({-1}) > 0).to(torch::kFloat);
  const double accuracy = (pred == label).to(torch::kFloat).mean().item<double>();
  EXPECT_GT(accuracy, 0.8);
}
