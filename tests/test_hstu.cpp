#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "genrec/core/error.h"
#include "genrec/nn/hstu.h"
#include "test_expect.h"

using namespace genrec;

namespace {

// Largest absolute difference, for readable failure messages.
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Strictly increasing timestamps (seconds) with gaps from seconds to weeks.
torch::Tensor random_timestamps(int64_t B, int64_t T) {
  torch::Tensor gaps = torch::randint(0, 7 * 86400, {B, T}, torch::kLong);
  return torch::cumsum(gaps, 1) + 1600000000;
}

// Makes the (small at init) relative biases large enough that their effect is unmistakable.
void randomize_biases(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    const std::string& name = p.key();
    if (name.find("pos_bias") != std::string::npos || name.find("time_bias") != std::string::npos) p.value().normal_(0.0, 1.0);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Attention kernel

TEST(HSTUAttention, MatchesNaiveReference) {
  torch::manual_seed(0);
  const int64_t B = 2, H = 3, T = 9, d_qk = 5, d_v = 4, max_len = 12;
  torch::Tensor q = torch::randn({B, H, T, d_qk}), k = torch::randn({B, H, T, d_qk});
  torch::Tensor v = torch::randn({B, H, T, d_v}), rab = torch::randn({B, H, T, T});
  for (bool per_query_count : {false, true}) {
    torch::Tensor out = hstu_attention(q, k, v, rab, max_len, per_query_count);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{B, H, T, d_v}));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        torch::Tensor ref = hstu_attention_reference(q[b][h], k[b][h], v[b][h], rab[b][h], max_len, per_query_count);
        EXPECT_LT(max_abs_diff(out[b][h], ref), 1e-5) << "b=" << b << " h=" << h << " count " << per_query_count;
      }
  }
}

TEST(HSTUAttention, CountScaleDividesRowByItsKeys) {
  // With per_query_count, row i is the max_len-scaled row times max_len / (i + 1).
  torch::manual_seed(8);
  const int64_t T = 6, d = 3, max_len = 10;
  torch::Tensor q = torch::randn({1, 1, T, d}), k = torch::randn({1, 1, T, d}), v = torch::randn({1, 1, T, d});
  torch::Tensor by_len = hstu_attention(q, k, v, torch::Tensor(), max_len, false);
  torch::Tensor by_count = hstu_attention(q, k, v, torch::Tensor(), max_len, true);
  for (int64_t i = 0; i < T; ++i)
    EXPECT_LT(max_abs_diff(by_count[0][0][i], by_len[0][0][i] * (static_cast<double>(max_len) / (i + 1))), 1e-5) << i;
}

TEST(HSTUAttention, BroadcastsBiasAndAcceptsNone) {
  torch::manual_seed(1);
  const int64_t B = 3, H = 2, T = 6, d = 4, max_len = 6;
  torch::Tensor q = torch::randn({B, H, T, d}), k = torch::randn({B, H, T, d}), v = torch::randn({B, H, T, d});
  torch::Tensor rab = torch::randn({1, 1, T, T});
  torch::Tensor with_bias = hstu_attention(q, k, v, rab, max_len);
  torch::Tensor without = hstu_attention(q, k, v, torch::Tensor(), max_len);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      EXPECT_LT(max_abs_diff(with_bias[b][h], hstu_attention_reference(q[b][h], k[b][h], v[b][h], rab[0][0], max_len)), 1e-5);
      EXPECT_LT(max_abs_diff(without[b][h], hstu_attention_reference(q[b][h], k[b][h], v[b][h], torch::zeros({T, T}), max_len)),
                1e-5);
    }
}

TEST(HSTUAttention, FutureEntriesAreExactlyZero) {
  // A non-finite score or value above the diagonal must not reach earlier positions.
  torch::manual_seed(2);
  const int64_t T = 5, d = 3;
  torch::Tensor q = torch::randn({1, 1, T, d}), k = torch::randn({1, 1, T, d}), v = torch::randn({1, 1, T, d});
  torch::Tensor rab = torch::zeros({1, 1, T, T});
  rab[0][0][1][3] = std::numeric_limits<float>::infinity();
  rab[0][0][0][4] = std::numeric_limits<float>::quiet_NaN();
  torch::Tensor out = hstu_attention(q, k, v, rab, T);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  // Position 0 sees only itself: silu(q0·k0) / max_len · v0.
  double s = (q[0][0][0] * k[0][0][0]).sum().item<double>();
  torch::Tensor expect = v[0][0][0] * (s / (1 + std::exp(-s)) / T);
  EXPECT_LT(max_abs_diff(out[0][0][0], expect), 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Time buckets

TEST(HSTUTimeBuckets, LogarithmicAndClamped) {
  // One row: times 0, 0, 1, 3600, 86400+3600, 1e15 (clamped to the last bucket).
  torch::Tensor ts = torch::tensor({int64_t{0}, int64_t{0}, int64_t{1}, int64_t{3600}, int64_t{90000},
                                    int64_t{1000000000000000}})
                         .view({1, 6});
  torch::Tensor buckets = hstu_time_buckets(ts, torch::tensor({int64_t{6}}), 64, std::exp(0.301));
  ASSERT_EQ(buckets.sizes(), (std::vector<int64_t>{1, 6, 6}));
  auto b = buckets.accessor<int64_t, 3>();
  EXPECT_EQ(b[0][1][0], 0);   // 0 s
  EXPECT_EQ(b[0][2][0], 0);   // 1 s
  EXPECT_EQ(b[0][3][0], 27);  // 1 hour: floor(ln 3600 / 0.301)
  EXPECT_EQ(b[0][4][3], 37);  // 1 day: floor(ln 86400 / 0.301)
  EXPECT_EQ(b[0][5][0], 63);  // clamped to n_buckets - 1
  EXPECT_EQ(b[0][0][3], b[0][3][0]);  // |Δt|
}

TEST(HSTUTimeBuckets, PaddingIsNeutralised) {
  // Garbage after the row's length becomes the last valid time, so it cannot overflow.
  torch::Tensor ts = torch::tensor({int64_t{100}, int64_t{200}, std::numeric_limits<int64_t>::min(),
                                    std::numeric_limits<int64_t>::max()})
                         .view({1, 4});
  torch::Tensor buckets = hstu_time_buckets(ts, torch::tensor({int64_t{2}}), 128, std::exp(0.301));
  EXPECT_EQ(buckets[0][2][1].item<int64_t>(), 0);
  EXPECT_EQ(buckets[0][3][2].item<int64_t>(), 0);
  EXPECT_EQ(buckets[0][1][0].item<int64_t>(), static_cast<int64_t>(std::floor(std::log(100.0) / 0.301)));
}

TEST(HSTUTimeBuckets, QueryTimesReplaceTheQuerySide) {
  // Keys at 0, 100, 3600; queries at 100, 3600, 90000 (each query asks about the next event).
  torch::Tensor ts = torch::tensor({int64_t{0}, int64_t{100}, int64_t{3600}}).view({1, 3});
  torch::Tensor qs = torch::tensor({int64_t{100}, int64_t{3600}, int64_t{90000}}).view({1, 3});
  torch::Tensor len = torch::tensor({int64_t{3}});
  auto bucket = [](double dt) { return static_cast<int64_t>(std::floor(std::log(dt) / 0.301)); };
  auto b = hstu_time_buckets(ts, len, 128, std::exp(0.301), qs);
  auto a = b.accessor<int64_t, 3>();
  EXPECT_EQ(a[0][0][0], bucket(100));           // q0 - t0
  EXPECT_EQ(a[0][1][0], bucket(3600));          // q1 - t0
  EXPECT_EQ(a[0][1][1], bucket(3500));          // q1 - t1
  EXPECT_EQ(a[0][2][2], bucket(90000 - 3600));  // q2 - t2
  // Passing the timestamps themselves as query times is the default.
  EXPECT_TRUE(torch::equal(hstu_time_buckets(ts, len, 128, std::exp(0.301), ts),
                           hstu_time_buckets(ts, len, 128, std::exp(0.301))));
  EXPECT_THROW(hstu_time_buckets(ts, len, 128, std::exp(0.301), qs.view({3, 1})), c10::Error);
}

// ---------------------------------------------------------------------------------------------
// Encoder

TEST(HSTUEncoder, ShapesAndFiniteGradients) {
  torch::manual_seed(3);
  const int64_t B = 3, T = 7, D = 12;
  HSTU enc(HSTUOptions(D, 10).n_blocks(2).n_heads(2).d_qk(5).d_v(3).dropout(0.1));
  enc->train();
  torch::Tensor x = torch::randn({B, T, D}, torch::requires_grad());
  torch::Tensor lengths = torch::tensor({int64_t{7}, int64_t{3}, int64_t{1}});
  torch::Tensor out = enc->forward(x, lengths, random_timestamps(B, T));
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{B, T, D}));
  (out * torch::randn_like(out)).sum().backward();
  ASSERT_FALSE(enc->named_parameters().is_empty());
  for (const auto& p : enc->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  for (const char* name : {"blocks.0.uvqk.weight", "blocks.1.out.weight", "blocks.0.pos_bias", "blocks.1.time_bias",
                           "final_norm.weight", "positions.weight"}) {
    const torch::Tensor* p = enc->named_parameters().find(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_GT(p->grad().abs().sum().item<double>(), 0.0) << name;
  }
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  // Widths beyond max_len are allowed: position distances share the last bias entry.
  torch::Tensor wide = enc->forward(torch::randn({1, 13, D}), torch::tensor({int64_t{13}}), torch::Tensor());
  EXPECT_EQ(wide.sizes(), (std::vector<int64_t>{1, 13, D}));
  EXPECT_TRUE(torch::isfinite(wide).all().item<bool>());
}

TEST(HSTUEncoder, CausalWithAndWithoutTimestamps) {
  torch::manual_seed(4);
  const int64_t B = 2, T = 8, D = 16, changed = 5;
  HSTU enc(HSTUOptions(D, 8).n_blocks(2).n_heads(2));
  randomize_biases(*enc);
  enc->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({B, T, D}), lengths = torch::full({B}, T, torch::kLong);
  torch::Tensor ts = random_timestamps(B, T);
  torch::Tensor x2 = x.clone();
  x2.select(1, changed).normal_();
  torch::Tensor ts2 = ts.clone();
  ts2.select(1, changed).add_(123456);
  for (bool with_ts : {false, true}) {
    torch::Tensor t1 = with_ts ? ts : torch::Tensor(), t2 = with_ts ? ts2 : torch::Tensor();
    torch::Tensor a = enc->forward(x, lengths, t1), b = enc->forward(x2, lengths, t2);
    EXPECT_LT(max_abs_diff(a.narrow(1, 0, changed), b.narrow(1, 0, changed)), 1e-6) << "timestamps " << with_ts;
    EXPECT_GT(max_abs_diff(a.narrow(1, changed, T - changed), b.narrow(1, changed, T - changed)), 1e-3)
        << "timestamps " << with_ts;
  }
}

TEST(HSTUEncoder, JaggedEqualsPadded) {
  torch::manual_seed(5);
  const int64_t D = 8, T = 7, wide_T = 12;
  const std::vector<int64_t> lens = {5, 2, 7, 1};
  const int64_t B = static_cast<int64_t>(lens.size());
  for (const char* scale : {"max_len", "count"})
  for (bool input_stage : {true, false}) {
  SCOPED_TRACE(std::string("attn_scale ") + scale + (input_stage ? ", input stage" : ", no input stage"));
  HSTU enc(HSTUOptions(D, 16).n_blocks(3).n_heads(2).attn_scale(scale).input_stage(input_stage));
  randomize_biases(*enc);
  enc->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> xs, tss;
  for (int64_t len : lens) {
    xs.push_back(torch::randn({len, D}));
    tss.push_back(random_timestamps(1, len)[0]);
  }
  // Pads to `width` with garbage: random embeddings (a NaN in one row), absurd timestamps.
  auto pad = [&](int64_t width) {
    torch::Tensor x = torch::randn({B, width, D}) * 100;
    torch::Tensor ts = torch::randint(-1000000000, 1000000000, {B, width}, torch::kLong) * 1000000000;
    for (int64_t b = 0; b < B; ++b) {
      x[b].narrow(0, 0, lens[b]).copy_(xs[b]);
      ts[b].narrow(0, 0, lens[b]).copy_(tss[b]);
    }
    x[1][width - 1][0] = std::numeric_limits<float>::quiet_NaN();
    return std::make_pair(x, ts);
  };
  torch::Tensor lengths = torch::tensor(lens);
  for (bool with_ts : {true, false}) {
    auto [x, ts] = pad(T);
    auto [x_wide, ts_wide] = pad(wide_T);
    torch::Tensor out = enc->forward(x, lengths, with_ts ? ts : torch::Tensor());
    torch::Tensor out_wide = enc->forward(x_wide, lengths, with_ts ? ts_wide : torch::Tensor());
    for (int64_t b = 0; b < B; ++b) {
      torch::Tensor alone = enc->forward(xs[b].unsqueeze(0), torch::tensor({lens[b]}),
                                         with_ts ? tss[b].unsqueeze(0) : torch::Tensor())[0];
      torch::Tensor padded = out[b].narrow(0, 0, lens[b]), padded_wide = out_wide[b].narrow(0, 0, lens[b]);
      EXPECT_TRUE(torch::isfinite(padded).all().item<bool>()) << "row " << b;
      EXPECT_LT(max_abs_diff(padded, alone), 1e-5) << "row " << b << " timestamps " << with_ts;
      EXPECT_LT(max_abs_diff(padded_wide, alone), 1e-5) << "row " << b << " timestamps " << with_ts;
    }
  }
  }
}

TEST(HSTUEncoder, InputStageIsOptional) {
  HSTU with(HSTUOptions(8, 5));
  HSTU without(HSTUOptions(8, 5).input_stage(false));
  EXPECT_NE(with->named_parameters().find("positions.weight"), nullptr);
  EXPECT_EQ(without->named_parameters().find("positions.weight"), nullptr);
  EXPECT_THROW(HSTU(HSTUOptions(8, 5).attn_scale("softmax")), InvalidInput);
}

TEST(HSTUEncoder, DropoutOnlyInTraining) {
  torch::manual_seed(6);
  const int64_t D = 8;
  HSTU enc(HSTUOptions(D, 6).dropout(0.5));
  torch::Tensor x = torch::randn({2, 6, D}), lengths = torch::tensor({int64_t{6}, int64_t{4}});
  enc->eval();
  torch::Tensor a = enc->forward(x, lengths, torch::Tensor()), b = enc->forward(x, lengths, torch::Tensor());
  EXPECT_TRUE(torch::equal(a, b));
  enc->train();
  torch::Tensor c = enc->forward(x, lengths, torch::Tensor()), d = enc->forward(x, lengths, torch::Tensor());
  EXPECT_FALSE(torch::allclose(c, d));
}

TEST(HSTUEncoder, PrettyPrintShowsResolvedOptions) {
  HSTU enc(HSTUOptions(8, 5).n_heads(2));
  std::ostringstream os;
  enc->pretty_print(os);
  EXPECT_NE(os.str().find("genrec::HSTU(d_model=8, max_len=5, n_blocks=2, n_heads=2, d_qk=4, d_v=4"), std::string::npos)
      << os.str();
}

// ---------------------------------------------------------------------------------------------
// Time bias

TEST(HSTUTimeBias, TimestampsMatterOnlyWithTimeBias) {
  torch::manual_seed(7);
  const int64_t B = 2, T = 6, D = 8;
  torch::Tensor x = torch::randn({B, T, D}), lengths = torch::tensor({int64_t{6}, int64_t{4}});
  torch::Tensor ts = random_timestamps(B, T);
  torch::Tensor ts2 = ts.clone();
  ts2.narrow(1, 1, T - 1).mul_(3);  // stretches every gap after the first event

  HSTU with_bias(HSTUOptions(D, 8).use_time_bias(true));
  randomize_biases(*with_bias);
  with_bias->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor a = with_bias->forward(x, lengths, ts), b = with_bias->forward(x, lengths, ts2);
  torch::Tensor none = with_bias->forward(x, lengths, torch::Tensor());
  EXPECT_GT(max_abs_diff(a.narrow(1, 1, 3), b.narrow(1, 1, 3)), 1e-3);
  EXPECT_TRUE(torch::isfinite(none).all().item<bool>());
  EXPECT_GT(max_abs_diff(a.narrow(1, 1, 3), none.narrow(1, 1, 3)), 1e-3);

  HSTU without(HSTUOptions(D, 8).use_time_bias(false));
  randomize_biases(*without);
  without->eval();
  EXPECT_EQ(without->named_parameters().find("blocks.0.time_bias"), nullptr);
  torch::Tensor c = without->forward(x, lengths, ts), d = without->forward(x, lengths, ts2);
  torch::Tensor e = without->forward(x, lengths, torch::Tensor());
  EXPECT_TRUE(torch::equal(c, d));
  EXPECT_TRUE(torch::equal(c, e));
}

TEST(HSTUTimeBias, QueryTimeOfAPositionOnlyChangesThatPositionAndLater) {
  torch::manual_seed(8);
  const int64_t B = 2, T = 6, D = 8;
  torch::Tensor x = torch::randn({B, T, D}), lengths = torch::tensor({int64_t{6}, int64_t{5}});
  torch::Tensor ts = random_timestamps(B, T);
  HSTU enc(HSTUOptions(D, 8).n_blocks(2).use_time_bias(true));
  randomize_biases(*enc);
  enc->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor own = enc->forward(x, lengths, ts);
  EXPECT_TRUE(torch::equal(own, enc->forward(x, lengths, ts, ts)));
  torch::Tensor qs = ts.clone();
  qs.select(1, 3).add_(int64_t{1000000});  // position 3 asks about a much later time
  torch::Tensor moved = enc->forward(x, lengths, ts, qs);
  EXPECT_TRUE(torch::equal(own.narrow(1, 0, 3), moved.narrow(1, 0, 3)));
  EXPECT_GT(max_abs_diff(own.select(1, 3), moved.select(1, 3)), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// Options

TEST(HSTUOptions, ValidationNamesTheOption) {
  auto expect_invalid = [](const HSTUOptions& o, const std::string& needle) { EXPECT_INVALID(HSTU(o), needle); };
  expect_invalid(HSTUOptions(10, 5).n_heads(3), "n_heads");
  expect_invalid(HSTUOptions(10, 5).n_heads(3).d_qk(4), "d_v");
  expect_invalid(HSTUOptions(0, 5), "d_model");
  expect_invalid(HSTUOptions(8, 0), "max_len");
  expect_invalid(HSTUOptions(8, 5).n_blocks(0), "n_blocks");
  expect_invalid(HSTUOptions(8, 5).d_qk(-1), "d_qk");
  expect_invalid(HSTUOptions(8, 5).dropout(1.0), "dropout");
  expect_invalid(HSTUOptions(8, 5).n_time_buckets(0), "n_time_buckets");
  expect_invalid(HSTUOptions(8, 5).time_bucket_base(1.0), "time_bucket_base");
  // Explicit head widths make d_model's divisibility irrelevant.
  EXPECT_NO_THROW({ HSTU enc(HSTUOptions(10, 5).n_heads(3).d_qk(4).d_v(2)); });
}
