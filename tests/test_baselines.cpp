#include <gtest/gtest.h>

#include <torch/torch.h>

#include "genrec/core/config.h"
#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/data/generator.h"
#include "genrec/data/import.h"
#include "genrec/models/baselines.h"
#include "genrec/rank/ranker.h"
#include "test_expect.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;

namespace {
// u1: 1 2 3 1 2 | u2: 2 3 1 | u3: 3 1 2 1  (items are numbers)
Dataset tiny() { return genrec::test::dataset_from_sequences({{1, 2, 3, 1, 2}, {2, 3, 1}, {3, 1, 2, 1}}); }
}  // namespace

TEST(Baselines, PopCountsTrainingEventsOnly) {
  Dataset ds = tiny();
  Split split = make_split(ds, SplitOptions{});
  // Training prefixes: u1: 1 2 3 ; u2: 2 ; u3: 3 1  -> counts 1:2, 2:2, 3:2
  PopRecommender pop(ds.n_items());
  pop.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  UserEvents ev = ds.user(1);
  torch::Tensor s = pop.score({History{1, ev.items, nullptr, 2}});
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{1, 4}));
  EXPECT_FLOAT_EQ(s[0][1].item<float>(), 2.f);
  EXPECT_FLOAT_EQ(s[0][2].item<float>(), 2.f);
  EXPECT_FLOAT_EQ(s[0][3].item<float>(), 2.f);
}

TEST(Baselines, MarkovTransitionsHandComputed) {
  Dataset ds = tiny();
  Split split = make_split(ds, SplitOptions{});
  // Training transitions: u1: 1->2, 2->3 ; u3: 3->1.  So P(.|1) = {2: 1}, P(.|2) = {3: 1}, P(.|3) = {1: 1}.
  MarkovOptions o;
  o.window = 2;
  o.decay = 0.5;
  o.pop_weight = 0.0;
  MarkovRecommender m(ds.n_items(), o);
  m.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  std::vector<int32_t> hist = {3, 1};  // last item 1 (weight 1), then 3 (weight 0.5)
  torch::Tensor s = m.score({History{0, hist.data(), nullptr, 2}});
  EXPECT_FLOAT_EQ(s[0][2].item<float>(), 1.0f);  // from 1
  EXPECT_FLOAT_EQ(s[0][1].item<float>(), 0.5f);  // from 3
  EXPECT_FLOAT_EQ(s[0][3].item<float>(), 0.0f);
  // Empty history: only the popularity back-off.
  o.pop_weight = 0.1;
  MarkovRecommender mp(ds.n_items(), o);
  mp.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  torch::Tensor e = mp.score({History{0, nullptr, nullptr, 0}});
  EXPECT_FLOAT_EQ(e[0][1].item<float>(), 0.1f);  // count 2 / max 2
  EXPECT_THROW(MarkovRecommender(3, MarkovOptions{0, 0.5, 0.0}), InvalidInput);
}

TEST(Baselines, CheckpointRoundTripGivesIdenticalScores) {
  TempDir tmp;
  GeneratorOptions g;
  g.n_users = 200;
  g.n_items = 100;
  Dataset ds = generate_dataset(g);
  Split split = make_split(ds, SplitOptions{});
  MarkovRecommender m(ds.n_items(), MarkovOptions{2, 0.3, 1e-3});
  m.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  save_checkpoint(tmp / "m.ckpt", m, ds.items, {{"note", "test"}});
  LoadedCheckpoint back = load_checkpoint(tmp / "m.ckpt");
  EXPECT_EQ(back.model->type(), "markov");
  EXPECT_EQ(back.meta["options"]["window"], 2);
  EXPECT_EQ(back.meta["extra"]["note"], "test");
  EXPECT_EQ(back.items.serialize(), ds.items.serialize());
  std::vector<History> batch;
  for (int32_t u = 1; u <= 20; ++u) {
    UserEvents ev = ds.user(u);
    batch.push_back(History{u, ev.items, ev.timestamps, ev.size});
  }
  EXPECT_TRUE(torch::equal(m.score(batch), back.model->score(batch)));

  // Corruption and truncation are caught by the checksum / size header.
  std::string bytes = read_file(tmp / "m.ckpt");
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x11;
  genrec::test::write_text(tmp / "bad.ckpt", flipped);
  EXPECT_INVALID(load_checkpoint(tmp / "bad.ckpt"), "checksum");
  genrec::test::write_text(tmp / "short.ckpt", bytes.substr(0, bytes.size() - 100));
  EXPECT_THROW(load_checkpoint(tmp / "short.ckpt"), InvalidInput);
  genrec::test::write_text(tmp / "junk.ckpt", "hello");
  EXPECT_THROW(load_checkpoint(tmp / "junk.ckpt"), InvalidInput);

  // Valid framing around a payload that is not a genrec archive, or whose meta has no model
  // type: InvalidInput naming the file, from every reader of checkpoints.
  {
    torch::serialize::OutputArchive empty;
    write_checkpoint_archive(tmp / "empty.ckpt", empty);
  }
  const std::string empty = (tmp / "empty.ckpt").string();
  EXPECT_INVALID(load_checkpoint(empty), empty, "cannot read checkpoint");
  EXPECT_INVALID(checkpoint_type(empty), empty, "cannot read checkpoint");
  EXPECT_INVALID(load_ranker_checkpoint(empty), empty, "cannot read checkpoint");
  // libtorch's message without its C++ backtrace.
  EXPECT_EQ(genrec::test::invalid_message([&] { load_checkpoint(empty); }).find("Exception raised from"),
            std::string::npos);
  {
    torch::serialize::OutputArchive untyped;
    write_checkpoint_header(untyped, {{"options", nlohmann::json::object()}}, ds.items);
    write_checkpoint_archive(tmp / "untyped.ckpt", untyped);
  }
  const std::string untyped = (tmp / "untyped.ckpt").string();
  EXPECT_INVALID(load_checkpoint(untyped), untyped, "no model type");
  // A recommender checkpoint is not a ranker checkpoint.
  const std::string markov = (tmp / "m.ckpt").string();
  EXPECT_INVALID(load_ranker_checkpoint(markov), markov, "not a ranking model checkpoint (type markov)");
  EXPECT_EQ(checkpoint_type(markov), "markov");
}

TEST(Baselines, FactoryReadsConfigAndRejectsUnknownModels) {
  Config cfg = Config::parse("[model]\ntype = \"markov\"\nwindow = 3\n", "t.toml");
  auto m = make_recommender(cfg, 10);
  EXPECT_EQ(m->type(), "markov");
  EXPECT_EQ(m->options()["window"], 3);
  cfg.check_unused();
  Config bad = Config::parse("[model]\ntype = \"nope\"\n", "t.toml");
  EXPECT_THROW(make_recommender(bad, 10), InvalidInput);
}

TEST(Baselines, MarkovBeatsPopOnGeneratedData) {
  GeneratorOptions g;
  g.n_users = 600;
  g.n_items = 300;
  Dataset ds = generate_dataset(g);
  Split split = make_split(ds, SplitOptions{});
  PopRecommender pop(ds.n_items());
  MarkovRecommender markov(ds.n_items(), MarkovOptions{});
  pop.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  markov.fit(TrainContext{ds, split, nullptr, nullptr, nullptr});
  double r_pop = evaluate(pop, ds, split, SplitPart::Test, EvalOptions{}).metrics.at("recall@10");
  double r_markov = evaluate(markov, ds, split, SplitPart::Test, EvalOptions{}).metrics.at("recall@10");
  EXPECT_GT(r_pop, 10.0 / 300 * 1.5);     // popularity beats random
  EXPECT_GT(r_markov, 2.0 * r_pop);       // sequence structure beats popularity clearly
}
