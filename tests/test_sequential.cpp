// SASRec encoder, next-item losses, and the sequential recommender (training, checkpoints,
// resume).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/data/generator.h"
#include "genrec/models/sequential.h"
#include "genrec/nn/sasrec.h"
#include "genrec/train/losses.h"
#include "genrec/train/runner.h"
#include "genrec/train/schedule.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;

namespace {
struct Seeded : ::testing::Test {
  void SetUp() override { torch::manual_seed(0); }
};
using SASRecTest = Seeded;
using LossTest = Seeded;
}  // namespace

TEST_F(SASRecTest, CausalLaterInputsDoNotChangeEarlierOutputs) {
  SASRec enc(SASRecOptions(16, 10).n_blocks(2).n_heads(2).dropout(0.3));
  enc->eval();
  torch::Tensor x = torch::randn({2, 8, 16});
  torch::Tensor lengths = torch::tensor({8, 8}, torch::kLong);
  torch::Tensor a = enc->forward(x, lengths, {});
  torch::Tensor x2 = x.clone();
  x2.index_put_({torch::indexing::Slice(), 5}, torch::randn({2, 16}));
  torch::Tensor b = enc->forward(x2, lengths, {});
  using torch::indexing::Slice;
  EXPECT_TRUE(torch::allclose(a.index({Slice(), Slice(0, 5)}), b.index({Slice(), Slice(0, 5)}), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(a.index({Slice(), 5}), b.index({Slice(), 5})));
}

TEST_F(SASRecTest, JaggedEqualsPadded) {
  SASRec enc(SASRecOptions(8, 12).n_blocks(2).n_heads(1).dropout(0.0));
  enc->eval();
  std::vector<int64_t> lens = {3, 7, 5};
  torch::Tensor padded = torch::zeros({3, 10, 8});
  std::vector<torch::Tensor> rows;
  for (size_t b = 0; b < lens.size(); ++b) {
    rows.push_back(torch::randn({1, lens[b], 8}));
    padded.index_put_({static_cast<int64_t>(b), torch::indexing::Slice(0, lens[b])}, rows.back()[0]);
  }
  torch::Tensor out = enc->forward(padded, torch::tensor(lens, torch::kLong), {});
  for (size_t b = 0; b < lens.size(); ++b) {
    torch::Tensor alone = enc->forward(rows[b], torch::tensor({lens[b]}, torch::kLong), {});
    EXPECT_TRUE(torch::allclose(out[static_cast<int64_t>(b)].slice(0, 0, lens[b]), alone[0], 1e-5, 1e-5)) << "row " << b;
  }
  EXPECT_THROW(SASRec(SASRecOptions(10, 5).n_heads(3)), InvalidInput);
}

TEST_F(LossTest, FullSoftmaxMatchesDirectCrossEntropy) {
  torch::Tensor h = torch::randn({4, 5}), table = torch::randn({7, 5});
  torch::Tensor targets = torch::tensor({1, 6, 3, 3}, torch::kLong);
  double direct = 0;
  for (int64_t n = 0; n < 4; ++n) {
    torch::Tensor logits = torch::mv(table.slice(0, 1), h[n]) / 0.5;  // items 1..6
    direct += (torch::logsumexp(logits, 0) - logits[targets[n].item<int64_t>() - 1]).item<double>();
  }
  EXPECT_NEAR(full_softmax_loss(h, table, targets, 0.5).item<double>(), direct / 4, 1e-5);
}

TEST_F(LossTest, ChunkedFullSoftmaxGradientMatchesAutograd) {
  // Enough items that the loss runs in several chunks.
  const int64_t V = 3000, N = 700, D = 8;
  torch::Tensor h = torch::randn({N, D}, torch::requires_grad());
  torch::Tensor table = torch::randn({V + 1, D}, torch::requires_grad());
  torch::Tensor targets = torch::randint(1, V + 1, {N}, torch::kLong);
  torch::Tensor loss = full_softmax_loss(h, table, targets, 0.3);
  loss.backward();
  torch::Tensor h2 = h.detach().clone().requires_grad_(true), t2 = table.detach().clone().requires_grad_(true);
  torch::Tensor logits = torch::mm(h2, t2.slice(0, 1).t()) / 0.3;
  torch::Tensor ref = torch::nn::functional::cross_entropy(logits, targets - 1);
  ref.backward();
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-4);
  EXPECT_TRUE(torch::allclose(h.grad(), h2.grad(), 1e-4, 1e-6));
  EXPECT_TRUE(torch::allclose(table.grad(), t2.grad(), 1e-4, 1e-6));
  EXPECT_EQ(table.grad()[0].abs().sum().item<float>(), 0.0f);  // padding row gets no gradient
}

TEST_F(LossTest, FullSoftmaxWithOffsetsMatchesDenseCrossEntropy) {
  // Enough items for several chunks; each row has 3 slots, one masked, row 0's target in a slot.
  const int64_t V = 2500, N = 40, D = 6;
  const double temp = 0.4;
  torch::Tensor h = torch::randn({N, D}, torch::requires_grad());
  torch::Tensor table = torch::randn({V + 1, D}, torch::requires_grad());
  torch::Tensor targets = torch::randint(1, V + 1, {N}, torch::kLong);
  torch::Tensor slots = torch::stack({torch::arange(1, N + 1), torch::arange(N + 1, 2 * N + 1),
                                      torch::arange(2 * N + 1, 3 * N + 1)}, 1);  // distinct items
  targets[0] = slots[0][1].item<int64_t>();
  torch::Tensor mask = torch::ones({N, 3}, torch::kBool);
  mask.select(1, 2).fill_(false);
  torch::Tensor bias = torch::tensor({-3.0f, 1.5f, 0.7f}, torch::requires_grad());  // one per slot column
  torch::Tensor offsets = bias.unsqueeze(0).expand({N, 3}) * mask.to(torch::kFloat);
  torch::Tensor dots = (h.unsqueeze(1) * table.index({slots})).sum(2);
  torch::Tensor target_offset = (offsets * ((slots == targets.unsqueeze(1)) & mask).to(torch::kFloat)).sum(1);
  torch::Tensor loss = full_softmax_loss_with_offsets(h, table, targets, temp, dots, offsets, mask, target_offset);
  auto grads = torch::autograd::grad({loss}, {h, table, bias}, {}, /*retain_graph=*/true);

  torch::Tensor logits = torch::mm(h, table.slice(0, 1).t()) / temp;  // [N, V], column j = item j + 1
  torch::Tensor dense = torch::zeros({N, V});
  dense = dense.scatter_add(1, slots - 1, offsets);
  torch::Tensor ref = torch::nn::functional::cross_entropy(logits + dense, targets - 1);
  auto ref_grads = torch::autograd::grad({ref}, {h, table, bias});
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-4);
  EXPECT_NE(loss.item<double>(), full_softmax_loss(h, table, targets, temp).item<double>());  // offsets matter
  for (size_t i = 0; i < grads.size(); ++i)
    EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], 1e-4, 1e-5)) << "gradient " << i;
}

TEST_F(LossTest, SampledSoftmaxLossAndGradientMatchDirectComputation) {
  torch::Tensor h = torch::randn({3, 4}, torch::requires_grad()), table = torch::randn({9, 4});
  torch::Tensor targets = torch::tensor({2, 5, 7}, torch::kLong);
  torch::Tensor neg_ids = torch::tensor({5, 1, 8}, torch::kLong);  // 5 is row 1's target: masked there
  torch::Tensor logq_neg = torch::tensor({-1.0f, -2.0f, -0.5f}), logq_pos = torch::tensor({-1.5f, -1.0f, -3.0f});
  const double temp = 0.7;
  torch::Tensor loss = sampled_softmax_loss(h, table.index({targets}), table.index({neg_ids}), neg_ids, targets,
                                            logq_neg, logq_pos, temp);
  torch::Tensor h2 = h.detach().clone().requires_grad_(true);
  torch::Tensor direct = torch::zeros({});
  for (int64_t n = 0; n < 3; ++n) {
    std::vector<torch::Tensor> logits = {torch::dot(h2[n], table[targets[n]]) / temp - logq_pos[n]};
    for (int64_t m = 0; m < 3; ++m) {
      if (neg_ids[m].item<int64_t>() == targets[n].item<int64_t>()) continue;
      logits.push_back(torch::dot(h2[n], table[neg_ids[m]]) / temp - logq_neg[m]);
    }
    torch::Tensor l = torch::stack(logits);
    direct = direct + torch::logsumexp(l, 0) - l[0];
  }
  direct = direct / 3;
  EXPECT_NEAR(loss.item<double>(), direct.item<double>(), 1e-5);
  loss.backward();
  direct.backward();
  EXPECT_TRUE(torch::allclose(h.grad(), h2.grad(), 1e-5, 1e-6));
}

TEST_F(LossTest, BceHandComputed) {
  torch::Tensor h = torch::tensor({{1.0f, 0.0f}}), pos = torch::tensor({{2.0f, 5.0f}}), neg = torch::tensor({{-1.0f, 3.0f}});
  // -log sigmoid(2) - log(1 - sigmoid(-1))
  double expect = -std::log(1 / (1 + std::exp(-2.0))) - std::log(1 - 1 / (1 + std::exp(1.0)));
  EXPECT_NEAR(bce_loss(h, pos, neg).item<double>(), expect, 1e-6);
}

namespace {
Dataset tiny_generated() {
  GeneratorOptions g;
  g.n_users = 150;
  g.n_items = 60;
  g.n_clusters = 4;
  g.mean_len = 10;
  g.max_len = 20;
  return generate_dataset(g);
}

SequentialOptions small_options(const std::string& encoder, const std::string& loss) {
  SequentialOptions o;
  o.encoder = encoder;
  o.d_model = 16;
  o.max_len = 12;
  o.n_blocks = 1;
  o.n_heads = 2;
  o.dropout = 0.1;
  o.loss = loss;
  o.negatives = 16;
  o.in_batch = loss == "sampled_softmax";
  o.epochs = 2;
  o.batch_size = 32;
  o.seed = 3;
  return o;
}
}  // namespace

// train.warmup_steps / train.lr_schedule, hand-computed: lr 0.01, 4 warm-up steps of 12.
TEST(Sequential, LearningRateScheduleWarmsUpThenHoldsOrDecays) {
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 4, "cosine", 1, 12), 0.0025);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 4, "cosine", 3, 12), 0.0075);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 4, "cosine", 4, 12), 0.01);       // end of the warm-up
  EXPECT_NEAR(scheduled_lr(0.01, 4, "cosine", 6, 12), 0.005 * (1 + std::sqrt(0.5)), 1e-15);  // a quarter of the decay
  EXPECT_NEAR(scheduled_lr(0.01, 4, "cosine", 8, 12), 0.005, 1e-15);   // half way
  EXPECT_NEAR(scheduled_lr(0.01, 4, "cosine", 12, 12), 0.0, 1e-15);    // the last step
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 4, "constant", 2, 12), 0.005);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 4, "constant", 9, 12), 0.01);
  EXPECT_DOUBLE_EQ(scheduled_lr(0.01, 0, "constant", 1, 12), 0.01);   // no warm-up
  EXPECT_NEAR(scheduled_lr(0.01, 0, "cosine", 6, 12), 0.005, 1e-15);
}

TEST(Sequential, EveryEncoderAndLossTrainsAndRoundTrips) {
  Dataset ds = tiny_generated();
  Split split = make_split(ds, SplitOptions{});
  TempDir tmp;
  for (const std::string encoder : {"sasrec", "hstu"})
    for (const std::string variant : {"softmax", "softmax+history_bias", "sampled_softmax", "bce"}) {
      const std::string loss = variant.substr(0, variant.find('+'));
      SequentialOptions o = small_options(encoder, loss);
      o.history_bias = variant != loss;
      SequentialRecommender m(ds.n_items(), o);
      int validations = 0;
      EvalOptions eval;
      TrainContext ctx{ds, split, nullptr, &eval, [&](const Recommender&, const nlohmann::json& line, bool) {
                         ++validations;
                         EXPECT_TRUE(std::isfinite(line["loss"].get<double>()));
                       }};
      m.fit(ctx);
      EXPECT_EQ(validations, 2) << encoder << "/" << loss;
      std::vector<History> batch;
      for (int32_t u = 1; u <= 10; ++u) {
        UserEvents ev = ds.user(u);
        batch.push_back(History{u, ev.items, ev.timestamps, ev.size});
      }
      torch::Tensor s = m.score(batch);
      ASSERT_EQ(s.sizes(), (std::vector<int64_t>{10, ds.n_items() + 1}));
      save_checkpoint(tmp / "m.ckpt", m, ds.items);
      LoadedCheckpoint back = load_checkpoint(tmp / "m.ckpt");
      EXPECT_EQ(back.model->type(), encoder);
      EXPECT_TRUE(torch::equal(s, back.model->score(batch))) << encoder << "/" << loss;
    }
}

TEST(Sequential, JaggedTrainingStepEqualsPaddedStep) {
  // One batch holding every user: length-bucketed (jagged) and padded-to-max_len batches then
  // hold the same sequences, so one optimiser step must give the same weights.
  Dataset ds = tiny_generated();
  Split split = make_split(ds, SplitOptions{});
  std::vector<History> batch;
  for (int32_t u = 1; u <= 12; ++u) {
    UserEvents ev = ds.user(u);
    batch.push_back(History{u, ev.items, ev.timestamps, ev.size});
  }
  for (const std::string variant : {"sasrec", "hstu", "hstu-next", "sasrec-history"}) {
    const std::string encoder = variant.substr(0, variant.find('-'));
    torch::Tensor scores[2];
    for (bool jagged : {true, false}) {
      SequentialOptions o = small_options(encoder, "softmax");
      if (variant == "hstu-next") o.query_time = "next";
      o.history_bias = variant == "sasrec-history";
      o.dropout = 0;
      o.epochs = 1;
      o.batch_size = ds.n_users();
      o.jagged = jagged;
      SequentialRecommender m(ds.n_items(), o);
      EvalOptions eval;
      m.fit(TrainContext{ds, split, nullptr, &eval, nullptr});
      scores[jagged ? 0 : 1] = m.score(batch);
    }
    EXPECT_LT((scores[0] - scores[1]).abs().max().item<double>(), 1e-4) << variant;
  }
}

TEST(Sequential, ScoresAreQueryTimesItemEmbeddings) {
  Dataset ds = tiny_generated();
  for (bool l2 : {false, true}) {
    SequentialOptions o = small_options("hstu", "softmax");
    o.l2_norm = l2;
    SequentialRecommender m(ds.n_items(), o);
    std::vector<History> batch;
    for (int32_t u = 1; u <= 5; ++u) {
      UserEvents ev = ds.user(u);
      batch.push_back(History{u, ev.items, ev.timestamps, ev.size});
    }
    torch::Tensor q = m.query_embeddings(batch), items = m.item_embeddings();
    ASSERT_EQ(q.sizes(), (std::vector<int64_t>{5, o.d_model}));
    ASSERT_EQ(items.sizes(), (std::vector<int64_t>{ds.n_items() + 1, o.d_model}));
    EXPECT_LT((m.score(batch) - torch::matmul(q, items.t())).abs().max().item<double>(), 1e-6);
    if (l2) {
      EXPECT_LT((q.norm(2, 1) - 1).abs().max().item<double>(), 1e-5);
    }
  }
}

TEST(Sequential, HistoryBiasAddsLearnedOffsetsByRecency) {
  Dataset ds = tiny_generated();
  Split split = make_split(ds, SplitOptions{});
  SequentialOptions o = small_options("sasrec", "softmax");
  o.history_bias = true;
  o.temperature = 0.5;
  o.max_len = 5;
  SequentialRecommender m(ds.n_items(), o);
  EvalOptions eval;
  m.fit(TrainContext{ds, split, nullptr, &eval, nullptr});
  // The offset of an item last seen d positions before the query (d = 0: the last item).
  auto offset_at = [&](int d) {
    std::vector<int32_t> items(static_cast<size_t>(d + 1));
    for (int i = 0; i <= d; ++i) items[static_cast<size_t>(i)] = 10 + i;  // distinct; item 10 is d back
    auto offs = m.history_offsets(History{0, items.data(), nullptr, d + 1});
    EXPECT_EQ(offs.size(), static_cast<size_t>(d + 1));
    for (const auto& [item, off] : offs)
      if (item == 10) return off;
    ADD_FAILURE() << "item 10 has no offset";
    return 0.0f;
  };
  const float o0 = offset_at(0), o1 = offset_at(1), o2 = offset_at(2), o3 = offset_at(3);
  EXPECT_EQ(o2, o3);  // distances 2 and 3 share a bucket
  EXPECT_NE(o0, o1);  // trained apart
  // Repeats count once, at their latest position; positions before the window (max_len 5) none.
  const std::vector<int32_t> hist = {9, 3, 4, 3, 5, 6, 7};  // window: 4 3 5 6 7
  auto offs = m.history_offsets(History{0, hist.data(), nullptr, static_cast<int64_t>(hist.size())});
  std::map<int32_t, float> got(offs.begin(), offs.end());
  EXPECT_EQ(got, (std::map<int32_t, float>{{7, o0}, {6, o1}, {5, o2}, {3, o3}, {4, offset_at(4)}}));
  // score() = query · itemsᵀ + the offsets, nothing else.
  History h{0, hist.data(), nullptr, static_cast<int64_t>(hist.size())};
  torch::Tensor diff = m.score({h})[0] - torch::mv(m.item_embeddings(), m.query_embeddings({h})[0]);
  for (int32_t j = 0; j <= ds.n_items(); ++j)
    EXPECT_NEAR(diff[j].item<float>(), got.count(j) ? got[j] : 0.0f, 1e-5) << "item " << j;
}

TEST(Sequential, NextQueryTimeReadsTheRequestTime) {
  // With query_time = next, HSTU's last position is queried at History::request_time; with
  // own (or without the time bias) the request time is ignored.
  Dataset ds = tiny_generated();
  ASSERT_TRUE(ds.has_timestamps());
  Split split = make_split(ds, SplitOptions{});
  std::vector<History> now, later;
  for (int32_t u = 1; u <= 6; ++u) {
    UserEvents ev = ds.user(u);
    History h{u, ev.items, ev.timestamps, ev.size - 1, ev.timestamps[ev.size - 2]};
    now.push_back(h);
    h.request_time += 400 * 86400;
    later.push_back(h);
  }
  for (const std::string query_time : {"own", "next"})
    for (bool time_bias : {true, false}) {
      SequentialOptions o = small_options("hstu", "softmax");
      o.query_time = query_time;
      o.time_bias = time_bias;
      o.epochs = 1;
      SequentialRecommender m(ds.n_items(), o);
      EvalOptions eval;
      m.fit(TrainContext{ds, split, nullptr, &eval, nullptr});  // learns non-zero time biases
      const double diff = (m.score(now) - m.score(later)).abs().max().item<double>();
      if (query_time == "next" && time_bias) {
        EXPECT_GT(diff, 1e-4);
      } else {
        EXPECT_EQ(diff, 0.0) << query_time << " time_bias=" << time_bias;
      }
    }
  SequentialOptions o;
  o.query_time = "target";
  EXPECT_THROW(SequentialRecommender(10, o), InvalidInput);
}

TEST(Sequential, LearnsTheGeneratedTransitions) {
  GeneratorOptions g;
  g.n_users = 400;
  g.n_items = 100;
  g.n_clusters = 5;
  Dataset ds = generate_dataset(g);
  Split split = make_split(ds, SplitOptions{});
  SequentialOptions o = small_options("sasrec", "softmax");
  o.d_model = 32;
  o.epochs = 8;
  o.lr = 5e-3;
  SequentialRecommender m(ds.n_items(), o);
  EvalOptions eval;
  m.fit(TrainContext{ds, split, nullptr, &eval, nullptr});
  double r = evaluate(m, ds, split, SplitPart::Test, eval).metrics.at("recall@10");
  EXPECT_GT(r, 0.3) << "random would be 0.1";
}

namespace {

// The runs of the resume and init_from tests: a 120-user, 50-item generated dataset and a
// one-block SASRec trained for `epochs` epochs on one thread (`model_extra`: more [model] lines).
GeneratorOptions small_generator() {
  GeneratorOptions g;
  g.n_users = 120;
  g.n_items = 50;
  return g;
}

std::string small_sasrec_config(int epochs, const std::string& model_extra = "") {
  return "[model]\ntype = \"sasrec\"\nd_model = 16\nmax_len = 10\nn_blocks = 1\n" + model_extra +
         "[train]\nepochs = " + std::to_string(epochs) + "\nbatch_size = 16\nthreads = 1\nseed = 7\n";
}

// A small din or genrank on the temporal split, validated every epoch.
std::string small_ranker_config(const std::string& type, int epochs, const std::string& train_extra = "") {
  return "[model]\ntype = \"" + type + "\"\nd_model = 8\nmax_len = 20\n[data]\nsplit = \"temporal\"\n[train]\nepochs = " +
         std::to_string(epochs) + "\neval_every = 1\n" + train_extra;
}

// A run's checkpoints/epoch-N.ckpt (train.keep_checkpoints), and the best epoch its metrics.json names.
std::filesystem::path epoch_checkpoint(const std::filesystem::path& run, int64_t epoch) {
  return run / "checkpoints" / ("epoch-" + std::to_string(epoch) + ".ckpt");
}
int64_t best_epoch_of(const std::filesystem::path& run) {
  return nlohmann::json::parse(genrec::test::read_text(run / "metrics.json")).at("best_epoch");
}

}  // namespace

TEST(Sequential, ResumeGivesTheSameResultAsAnUninterruptedRun) {
  TempDir tmp;
  save_dataset(generate_dataset(small_generator()), tmp / "data");
  const std::string config = small_sasrec_config(4, "dropout = 0.2\n");
  TrainRequest full;
  full.config_text = config;
  full.data = tmp / "data";
  full.out = tmp / "full";
  TrainResult a = train_run(full);

  TrainRequest cut = full;
  cut.out = tmp / "cut";
  // Cancel when epoch 3 starts: epochs 1-2 are checkpointed.
  auto cancel = [](const ProgressEvent& e) { return e.stage != "train epoch 3"; };
  EXPECT_THROW(train_run(cut, cancel), Cancelled);
  TrainRequest resume;
  resume.out = tmp / "cut";
  resume.resume = true;
  TrainResult b = train_run(resume);
  EXPECT_EQ(a.test.metrics, b.test.metrics);
  EXPECT_EQ(genrec::test::read_text(tmp / "full" / "metrics.json").size() > 0, true);
  // Same validation history, line for line, apart from timings.
  EXPECT_EQ(genrec::test::train_log_without_timings(tmp / "full"), genrec::test::train_log_without_timings(tmp / "cut"));
}

TEST(Sequential, InitFromStartsANewScheduleFromTheSavedWeights) {
  TempDir tmp;
  GeneratorOptions g = small_generator();
  save_dataset(generate_dataset(g), tmp / "data");
  g.n_items = 60;
  save_dataset(generate_dataset(g), tmp / "other_data");
  const std::string config = small_sasrec_config(3);
  TrainRequest first;
  first.config_text = config;
  first.data = tmp / "data";
  first.out = tmp / "first";
  TrainResult a = train_run(first);

  // A second stage with a learning rate too small to move the weights: it starts from the first
  // run's best weights (same test metrics) with a fresh schedule (its log starts at epoch 1).
  TrainRequest second = first;
  second.out = tmp / "second";
  second.overrides = {"train.init_from=\"" + (tmp / "first").string() + "\"", "train.epochs=1", "train.lr=1e-20"};
  TrainResult b = train_run(second);
  EXPECT_EQ(a.test.metrics, b.test.metrics);
  auto log = nlohmann::json::parse(genrec::test::read_text(tmp / "second" / "train_log.jsonl"));
  EXPECT_EQ(log.at("epoch"), 1);
  EXPECT_NE(genrec::test::read_text(tmp / "second" / "config.toml").find("init_from"), std::string::npos);
  // The same without init_from starts from random weights: the check above can fail.
  TrainRequest scratch = second;
  scratch.out = tmp / "scratch";
  scratch.overrides = {"train.epochs=1", "train.lr=1e-20"};
  EXPECT_NE(train_run(scratch).test.metrics, a.test.metrics);
  // A checkpoint file works like its run directory.
  second.out = tmp / "from_file";
  second.overrides[0] = "train.init_from=\"" + (tmp / "first" / "checkpoints" / "best.ckpt").string() + "\"";
  EXPECT_EQ(train_run(second).test.metrics, a.test.metrics);

  // Each mismatch is refused before a run directory is made.
  auto refused = [&](std::vector<std::string> overrides, const std::filesystem::path& data, const std::string& needle,
                     const std::string& config_text = "") {
    TrainRequest r = first;
    if (!config_text.empty()) r.config_text = config_text;
    r.out = tmp / "refused";
    r.data = data;
    r.overrides = std::move(overrides);
    EXPECT_INVALID(train_run(r), needle);
    EXPECT_FALSE(std::filesystem::exists(tmp / "refused"));
  };
  const std::string from = "train.init_from=\"" + (tmp / "first").string() + "\"";
  refused({"train.init_from=\"" + (tmp / "nowhere").string() + "\""}, tmp / "data", "no such checkpoint");
  refused({from, "model.d_model=32"}, tmp / "data", "wrong shape");
  refused({from, "model.d_model=32"}, tmp / "data", "16] in the checkpoint");
  refused({from, "model.type=\"hstu\""}, tmp / "data", "holds a 'sasrec' model");
  // A model with more or fewer blocks than the checkpoint's is refused with the tensors that
  // differ (a shallower one would otherwise take part of the checkpoint).
  refused({from, "model.n_blocks=2"}, tmp / "data", "the checkpoint has no parameter ");
  TrainRequest deep = first;
  deep.out = tmp / "deep";
  deep.overrides = {"model.n_blocks=2", "train.epochs=1"};
  train_run(deep);
  refused({"train.init_from=\"" + (tmp / "deep").string() + "\""}, tmp / "data",
          "the config's model has no model/param/");
  refused({from}, tmp / "other_data", "another item vocabulary");
  refused({from}, tmp / "data", "one pass", "[model]\ntype = \"pop\"\n");
}

// eval --checkpoint: best (the default), last, or a file; each names what it reads when it cannot.
TEST(Sequential, EvalReadsTheBestTheLastOrAGivenCheckpoint) {
  namespace fs = std::filesystem;
  TempDir tmp;
  GeneratorOptions g = small_generator();
  save_dataset(generate_dataset(g), tmp / "data");
  g.n_items = 60;
  save_dataset(generate_dataset(g), tmp / "other_data");
  TrainRequest first;
  first.config_text = small_sasrec_config(2);
  first.data = tmp / "data";
  first.out = tmp / "first";
  TrainResult a = train_run(first);
  TrainRequest scratch = first;  // random weights: other metrics than `first`
  scratch.out = tmp / "scratch";
  scratch.overrides = {"train.epochs=1", "train.lr=1e-20"};
  TrainResult b = train_run(scratch);
  ASSERT_NE(a.test.metrics, b.test.metrics);

  EXPECT_EQ(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, "best").metrics, a.test.metrics);
  const fs::path other_ckpt = scratch.out / "checkpoints" / "best.ckpt";
  EXPECT_EQ(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, other_ckpt).metrics, b.test.metrics);
  // "last" reads checkpoints/last.ckpt: replaced by the scratch weights, it gives their metrics.
  fs::copy_file(other_ckpt, first.out / "checkpoints" / "last.ckpt", fs::copy_options::overwrite_existing);
  EXPECT_EQ(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, "last").metrics, b.test.metrics);
  EXPECT_EQ(eval_run(first.out, SplitPart::Test).metrics, a.test.metrics);  // the default is still best
  // --set of a key that evaluation does not read is refused, not ignored: model.* and train.*
  // keys are fixed at training (train.threads excepted), TIGER's inference keys belong to TIGER.
  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {"model.d_model=8"}), "model.d_model", "fixed when the run is trained");
  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {"train.lr=0.5"}), "train.lr");
  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {"model.beam=5"}), "model.beam");
  EXPECT_EQ(eval_run(first.out, SplitPart::Test, {"train.threads=1", "eval.batch_size=7"}).metrics, a.test.metrics);

  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, tmp / "nowhere.ckpt"),
                 (tmp / "nowhere.ckpt").string(), "no such checkpoint file");
  fs::remove(first.out / "checkpoints" / "last.ckpt");
  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, "last"), "last.ckpt",
                 "no such checkpoint file", "finished run directory");
  TrainRequest other = first;  // a checkpoint over another item vocabulary
  other.data = tmp / "other_data";
  other.out = tmp / "other";
  other.overrides = {"train.epochs=1"};
  train_run(other);
  EXPECT_INVALID(eval_run(first.out, SplitPart::Test, {}, nullptr, {}, {}, other.out / "checkpoints" / "best.ckpt"),
                 (other.out / "checkpoints" / "best.ckpt").string(), "checkpoint has");
}

// train.keep_checkpoints: one checkpoint per validation besides best and last, for both model
// families; the best epoch's file holds the best weights and the last one's the last weights.
TEST(Sequential, KeepCheckpointsWritesOnePerValidation) {
  namespace fs = std::filesystem;
  TempDir tmp;
  save_dataset(generate_dataset(small_generator()), tmp / "data");
  TrainRequest req;
  req.config_text = small_sasrec_config(3) + "eval_every = 1\n";
  req.data = tmp / "data";
  req.out = tmp / "kept";
  req.overrides = {"train.keep_checkpoints=true"};
  TrainResult r = train_run(req);
  for (int e = 1; e <= 3; ++e) EXPECT_TRUE(fs::is_regular_file(epoch_checkpoint(req.out, e))) << e;
  EXPECT_EQ(eval_run(req.out, SplitPart::Test, {}, nullptr, {}, {}, epoch_checkpoint(req.out, best_epoch_of(req.out))).metrics,
            r.test.metrics);
  EXPECT_EQ(eval_run(req.out, SplitPart::Test, {}, nullptr, {}, {}, epoch_checkpoint(req.out, 3)).metrics,
            eval_run(req.out, SplitPart::Test, {}, nullptr, {}, {}, "last").metrics);
  TrainRequest plain = req;  // off by default
  plain.out = tmp / "plain";
  plain.overrides.clear();
  train_run(plain);
  EXPECT_FALSE(fs::exists(epoch_checkpoint(plain.out, 1)));
  TrainRequest din = req;
  din.out = tmp / "din";
  din.config_text = small_ranker_config("din", 2);
  TrainResult d = train_run(din);
  EXPECT_TRUE(fs::is_regular_file(epoch_checkpoint(din.out, 1)));
  EXPECT_EQ(eval_run(din.out, SplitPart::Test, {}, nullptr, {}, {}, epoch_checkpoint(din.out, 2)).metrics,
            eval_run(din.out, SplitPart::Test, {}, nullptr, {}, {}, "last").metrics);
  EXPECT_EQ(eval_run(din.out, SplitPart::Test, {}, nullptr, {}, {}, epoch_checkpoint(din.out, best_epoch_of(din.out))).metrics,
            d.test.metrics);
}

// data.train_on_valid (the fit before serving): the validation events are trained on, nothing is
// validated, and early stopping cannot end the run (patience 1 would stop a validated one that
// fails to improve); the last epoch's weights are kept. It changes what is trained on. The same
// for the rankers (temporal split: the validation period joins training).
TEST(Sequential, TrainOnValidKeepsTheLastEpoch) {
  TempDir tmp;
  save_dataset(generate_dataset(small_generator()), tmp / "data");
  TrainRequest req;
  req.config_text = small_sasrec_config(3) + "eval_every = 1\npatience = 1\n";
  req.data = tmp / "data";
  req.out = tmp / "run";
  req.overrides = {"data.train_on_valid=true"};
  TrainResult r = train_run(req);
  genrec::test::expect_trained_on_valid(tmp / "run", 3, r.test);
  TrainRequest plain = req;
  plain.out = tmp / "plain";
  plain.overrides = {"train.patience=3"};
  EXPECT_NE(train_run(plain).test.metrics, r.test.metrics);
  // A one-pass model (markov) fits on the same events; its log line has no validation either.
  TrainRequest markov = req;
  markov.out = tmp / "markov";
  markov.config_text = "[model]\ntype = \"markov\"\n";
  TrainResult m = train_run(markov);
  EXPECT_TRUE(m.valid.metrics.empty());
  EXPECT_FALSE(nlohmann::json::parse(genrec::test::read_text(tmp / "markov" / "train_log.jsonl")).contains("valid"));
  EXPECT_EQ(eval_run(tmp / "markov", SplitPart::Test).metrics, m.test.metrics);
  // The rankers likewise: trained up to the test cut, no validation, the last epoch kept
  // (patience 1 would otherwise be able to stop them), and trained on more than a plain run.
  for (const std::string type : {"din", "genrank"}) {
    TrainRequest ranker = req;
    ranker.out = tmp / ("ranker-" + type);
    ranker.config_text = small_ranker_config(type, 3, "patience = 1\n");
    TrainResult rr = train_run(ranker);
    genrec::test::expect_trained_on_valid(ranker.out, 3, rr.test);
    TrainRequest plain_ranker = ranker;
    plain_ranker.out = tmp / ("plain-ranker-" + type);
    plain_ranker.overrides = {"train.patience=3"};
    EXPECT_NE(train_run(plain_ranker).test.metrics, rr.test.metrics) << type;
  }
}

TEST(Sequential, BadOptionsAreRejected) {
  SequentialOptions o;
  o.loss = "hinge";
  EXPECT_THROW(SequentialRecommender(10, o), InvalidInput);
  o = SequentialOptions{};
  o.lr = -1;
  EXPECT_THROW(SequentialRecommender(10, o), InvalidInput);
  o = SequentialOptions{};
  o.d_model = 10;
  o.n_heads = 3;
  EXPECT_THROW(SequentialRecommender(10, o), InvalidInput);
  o = SequentialOptions{};
  o.history_bias = true;
  o.loss = "bce";
  EXPECT_INVALID(SequentialRecommender(10, o), "model.history_bias needs model.loss = softmax");
}
