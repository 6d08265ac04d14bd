// The serving engine and its KV cache: incremental HSTU encoding equals a full recompute, the
// engine's recommendations equal `recommend_run` (what `genrec recommend` prints) for the same
// history, events are reflected at once, and bad requests are rejected.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <atomic>
#include <future>
#include <thread>

#include "genrec/core/error.h"
#include "genrec/data/dataset.h"
#include "genrec/data/generator.h"
#include "genrec/models/sequential.h"
#include "genrec/nn/hstu.h"
#include "genrec/serve/engine.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;
namespace fs = std::filesystem;

namespace {

HSTU random_hstu(bool time_bias, const std::string& scale, bool input_stage, int64_t max_len) {
  torch::manual_seed(5);
  HSTU enc(HSTUOptions(16, max_len).n_blocks(2).n_heads(2).dropout(0.3).use_time_bias(time_bias).attn_scale(scale)
               .input_stage(input_stage).n_time_buckets(32));
  enc->eval();
  return enc;
}

}  // namespace

TEST(HSTUCache, ExtendInChunksEqualsTheFullForward) {
  torch::NoGradGuard ng;
  for (bool time_bias : {false, true})
    for (const char* scale : {"max_len", "count"})
      for (bool input_stage : {false, true}) {
        SCOPED_TRACE(std::string("time_bias=") + (time_bias ? "1" : "0") + " scale=" + scale +
                     " input_stage=" + (input_stage ? "1" : "0"));
        HSTU enc = random_hstu(time_bias, scale, input_stage, 20);
        const int64_t T = 13;
        torch::Tensor x = torch::randn({1, T, 16});
        torch::Tensor ts = (torch::rand({1, T}) * 1e6).to(torch::kLong).cumsum(1);
        torch::Tensor qt = torch::cat({ts.narrow(1, 1, T - 1), ts.narrow(1, T - 1, 1) + 5000}, 1);  // "next" times
        torch::Tensor full = enc->forward(x, torch::tensor({T}), ts, qt)[0];                       // [T, D]
        HSTUCache cache;
        std::vector<torch::Tensor> parts;
        for (auto [from, to] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 6}, {6, 7}, {7, 13}}) {
          // An uncommitted pass first must leave the cache untouched.
          enc->extend(cache, x[0].slice(0, from, to), ts[0].slice(0, from, to), qt[0].slice(0, from, to), false);
          EXPECT_EQ(cache.length, from);
          parts.push_back(enc->extend(cache, x[0].slice(0, from, to), ts[0].slice(0, from, to),
                                      qt[0].slice(0, from, to), true));
          EXPECT_EQ(cache.length, to);
        }
        torch::Tensor inc = torch::cat(parts);
        EXPECT_TRUE(torch::allclose(inc, full, 1e-4, 1e-5)) << (inc - full).abs().max().item<float>();
        EXPECT_EQ(cache.keys.size(), 2u);
        EXPECT_EQ(cache.keys[0].size(1), T);
        EXPECT_EQ(cache.times.defined(), time_bias);
      }
}

TEST(HSTUCache, RejectsMixingTimedAndUntimedPositions) {
  torch::NoGradGuard ng;
  HSTU enc = random_hstu(true, "max_len", true, 10);
  HSTUCache cache;
  enc->extend(cache, torch::randn({3, 16}), torch::tensor({1, 2, 3}, torch::kLong), torch::Tensor(), true);
  EXPECT_THROW(enc->extend(cache, torch::randn({1, 16}), torch::Tensor(), torch::Tensor(), true), c10::Error);
  EXPECT_THROW(enc->extend(cache, torch::randn({1, 8}), torch::tensor({4}, torch::kLong), torch::Tensor(), true),
               c10::Error);
}

namespace {

SequentialOptions tiny_hstu(const std::string& query_time) {
  SequentialOptions o;
  o.encoder = "hstu";
  o.d_model = 16;
  o.max_len = 8;
  o.n_blocks = 2;
  o.n_heads = 2;
  o.dropout = 0.3;
  o.query_time = query_time;
  o.l2_norm = query_time == "next";  // covers the normalised query path too
  o.epochs = 1;
  o.batch_size = 16;
  o.seed = 11;
  return o;
}

}  // namespace

TEST(HSTUCache, IncrementalQueryEqualsFullRecomputeAsEventsArrive) {
  TempDir tmp;
  GeneratorOptions g;
  g.n_users = 40;
  g.n_items = 30;
  g.mean_len = 8;
  g.max_len = 14;
  Dataset ds = generate_dataset(g);
  ASSERT_TRUE(ds.has_timestamps());
  Split split = make_split(ds, SplitOptions{});
  for (const char* query_time : {"own", "next"}) {
    SCOPED_TRACE(query_time);
    auto model = std::make_unique<SequentialRecommender>(ds.n_items(), tiny_hstu(query_time));
    model->fit(TrainContext{ds, split, nullptr, nullptr, nullptr});  // one epoch: real weights, has_timestamps set
    // A growing history that passes max_len (8): the window slides after 8 events.
    std::vector<int32_t> items;
    std::vector<int64_t> times;
    IncrementalCache cache;
    int64_t t = 1000000;
    for (int step = 0; step < 12; ++step) {
      items.push_back(1 + (step * 7) % ds.n_items());
      times.push_back(t += 3600 * (1 + step % 5));
      History h{0, items.data(), times.data(), static_cast<int64_t>(items.size()), t + 600};
      int64_t computed = -1;
      torch::Tensor inc = model->query_embedding_incremental(h, cache, &computed);
      torch::Tensor full = model->query_embeddings({h})[0];
      EXPECT_TRUE(torch::allclose(inc, full, 1e-4, 1e-5)) << "step " << step << " max diff "
                                                          << (inc - full).abs().max().item<float>();
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(items.size()), 8);
      if (step == 0 || static_cast<int64_t>(items.size()) > 8) {
        EXPECT_EQ(computed, n) << "step " << step;  // first call, or the window slid: the whole window
      } else if (std::string(query_time) == "own") {
        EXPECT_EQ(computed, 1) << "step " << step;  // only the new event
      } else {
        EXPECT_EQ(computed, 2) << "step " << step;  // the previous last position (now final) + the new one
      }
      // Asking again without a new event: own reuses everything, next re-encodes the last position.
      torch::Tensor again = model->query_embedding_incremental(h, cache, &computed);
      EXPECT_EQ(computed, std::string(query_time) == "own" ? 0 : 1);
      EXPECT_TRUE(torch::allclose(again, full, 1e-4, 1e-5));
    }
    // A different history than the cached one is detected and rebuilt.
    std::vector<int32_t> other = {5, 6, 7};
    std::vector<int64_t> other_t = {10, 20, 30};
    History h2{0, other.data(), other_t.data(), 3, -1};
    int64_t computed = 0;
    torch::Tensor inc = model->query_embedding_incremental(h2, cache, &computed);
    EXPECT_EQ(computed, 3);
    EXPECT_TRUE(torch::allclose(inc, model->query_embeddings({h2})[0], 1e-4, 1e-5));
  }
}

// ---------------------------------------------------------------------------------------------
// The engine on a small trained HSTU run.

namespace {

struct ServeFixture {
  TempDir tmp;
  fs::path run;
  Dataset ds;
  explicit ServeFixture(const std::string& query_time = "next", bool history_bias = false) {
    GeneratorOptions g;
    g.n_users = 120;
    g.n_items = 60;
    g.mean_len = 8;
    g.max_len = 16;
    ds = generate_dataset(g);
    save_dataset(ds, tmp / "data");
    TrainRequest req;
    req.config_text = R"(
[model]
type = "hstu"
d_model = 16
max_len = 10
n_blocks = 2
n_heads = 2
query_time = ")" + query_time + R"("
history_bias = )" + (history_bias ? "true" : "false") + R"(
[train]
epochs = 2
batch_size = 32
threads = 1
)";
    req.data = tmp / "data";
    req.out = tmp / "run";
    train_run(req);
    run = tmp / "run";
  }
};

nlohmann::json cli_recommend(const fs::path& run, const std::vector<std::string>& history, int64_t k, bool exclude,
                             int64_t at = -1) {
  RecommendRequest r;
  r.history = history;
  r.k = k;
  r.exclude_seen = exclude;
  r.request_time = at;
  return recommend_run(run, r);
}

void expect_same_items(const serve::RecommendReply& got, const nlohmann::json& want) {
  ASSERT_EQ(got.items.size(), want["items"].size());
  for (size_t i = 0; i < got.items.size(); ++i) {
    EXPECT_EQ(got.items[i].item, want["items"][i]["item"].get<std::string>()) << "rank " << i + 1;
    EXPECT_NEAR(got.items[i].score, want["items"][i]["score"].get<double>(), 1e-4) << "rank " << i + 1;
  }
}

}  // namespace

TEST(ServeEngine, RecommendAfterEventsEqualsRecommendWithTheExtendedHistory) {
  ServeFixture f;
  for (int64_t cache_users : {100, 0}) {  // KV cache on, and off (full recompute every request)
    SCOPED_TRACE("cache_users=" + std::to_string(cache_users));
    serve::EngineOptions o;
    o.run_dir = f.run;
    o.state_dir = f.tmp / ("state" + std::to_string(cache_users));
    o.cache_users = cache_users;
    serve::Engine engine(o);
    // A dataset user: history = its dataset events, then posted ones.
    const std::string user = f.ds.users.raw(7);
    UserEvents ev = f.ds.user(7);
    std::vector<std::string> hist;
    for (int64_t i = 0; i < ev.size; ++i)
      hist.push_back(f.ds.items.raw(ev.items[i]) + "@" + std::to_string(ev.timestamps[i]));
    serve::RecommendQuery q;
    q.history.user = user;
    q.k = 10;
    q.at = ev.timestamps[ev.size - 1] + 100;
    serve::RecommendReply r0 = engine.recommend(q);
    EXPECT_FALSE(r0.fallback);
    EXPECT_EQ(r0.history_length, ev.size);
    expect_same_items(r0, cli_recommend(f.run, hist, 10, true, q.at));
    int64_t t = ev.timestamps[ev.size - 1];
    for (int step = 0; step < 4; ++step) {
      const std::string item = f.ds.items.raw(1 + (step * 13) % f.ds.n_items());
      t += 3600;
      engine.add_events({serve::Event{user, item, t, "click"}});
      hist.push_back(item + "@" + std::to_string(t));
      q.at = t + 60;
      serve::RecommendReply r = engine.recommend(q);
      EXPECT_EQ(r.history_length, static_cast<int64_t>(hist.size()));
      EXPECT_EQ(r.cache_hit, cache_users > 0);
      expect_same_items(r, cli_recommend(f.run, hist, 10, true, q.at));
    }
    // A new user made by events alone.
    engine.add_events({serve::Event{"new-user", f.ds.items.raw(3), 5000, ""},
                       serve::Event{"new-user", f.ds.items.raw(4), 9000, ""}});
    serve::RecommendQuery qn;
    qn.history.user = "new-user";
    qn.exclude_seen = false;
    serve::RecommendReply rn = engine.recommend(qn);
    EXPECT_FALSE(rn.fallback);
    expect_same_items(rn, cli_recommend(f.run, {f.ds.items.raw(3) + "@5000", f.ds.items.raw(4) + "@9000"}, 10, false));
    nlohmann::json stats = engine.stats();
    EXPECT_EQ(stats["events_stored"], 6);
    EXPECT_EQ(stats["users_stored"], 2);
  }
}

TEST(ServeEngine, HistoryBiasScoresEqualTheModelsOwn) {
  // The engine scores query · items itself: it must add the model's history offsets as
  // score() does (seen items kept, so the offsets decide ranks).
  ServeFixture f("own", true);
  for (int64_t cache_users : {100, 0}) {
    serve::EngineOptions o;
    o.run_dir = f.run;
    o.state_dir = f.tmp / ("state" + std::to_string(cache_users));
    o.cache_users = cache_users;
    serve::Engine engine(o);
    for (int32_t u : {3, 7, 11}) {
      UserEvents ev = f.ds.user(u);
      std::vector<std::string> hist;
      for (int64_t i = 0; i < ev.size; ++i)
        hist.push_back(f.ds.items.raw(ev.items[i]) + "@" + std::to_string(ev.timestamps[i]));
      serve::RecommendQuery q;
      q.history.user = f.ds.users.raw(u);
      q.k = 15;
      q.exclude_seen = false;
      expect_same_items(engine.recommend(q), cli_recommend(f.run, hist, 15, false));
    }
  }
}

TEST(ServeEngine, AdHocHistoriesFallbacksAndBadRequests) {
  ServeFixture f("own");
  serve::EngineOptions o;
  o.run_dir = f.run;
  o.state_dir = f.tmp / "state";
  serve::Engine engine(o);
  const std::string a = f.ds.items.raw(2), b = f.ds.items.raw(9);
  serve::RecommendQuery q;
  q.history.items = std::vector<std::string>{a, b};
  q.k = 5;
  expect_same_items(engine.recommend(q), cli_recommend(f.run, {a, b}, 5, true));
  q.history.times = std::vector<int64_t>{100, 200};
  expect_same_items(engine.recommend(q), cli_recommend(f.run, {a + "@100", b + "@200"}, 5, true));

  // Unknown items: an error naming them, or dropped on request.
  q.history.items = std::vector<std::string>{a, "nope-1", "nope-2"};
  q.history.times.reset();
  EXPECT_INVALID(engine.recommend(q), "nope-1, nope-2");
  q.ignore_unknown_items = true;
  serve::RecommendReply ri = engine.recommend(q);
  EXPECT_EQ(ri.ignored_items, (std::vector<std::string>{"nope-1", "nope-2"}));
  EXPECT_EQ(ri.history_length, 1);

  // Unknown user and empty history: the popular-items fallback, flagged.
  serve::RecommendQuery qu;
  qu.history.user = "nobody";
  qu.k = 3;
  serve::RecommendReply ru = engine.recommend(qu);
  EXPECT_TRUE(ru.fallback);
  EXPECT_EQ(ru.fallback_reason, "unknown_user");
  ASSERT_EQ(ru.items.size(), 3u);
  EXPECT_GE(ru.items[0].score, ru.items[2].score);
  serve::RecommendQuery qe;
  qe.history.items = std::vector<std::string>{};
  serve::RecommendReply re = engine.recommend(qe);
  EXPECT_TRUE(re.fallback);
  EXPECT_EQ(re.fallback_reason, "empty_history");

  // Bad requests.
  serve::RecommendQuery bad;
  EXPECT_THROW(engine.recommend(bad), InvalidInput);  // neither user nor history
  bad.history.user = "x";
  bad.k = 0;
  EXPECT_THROW(engine.recommend(bad), InvalidInput);
  bad.k = 10;
  bad.history.items = std::vector<std::string>{a};
  EXPECT_THROW(engine.recommend(bad), InvalidInput);  // both
  serve::RecommendQuery late;
  late.history.items = std::vector<std::string>{a};
  late.deadline = serve::Clock::now() - std::chrono::seconds(1);
  EXPECT_THROW(engine.recommend(late), serve::DeadlineExceeded);

  // Events with an unknown item store nothing.
  EXPECT_THROW(engine.add_events({serve::Event{"u", a, 1, ""}, serve::Event{"u", "nope", 2, ""}}), InvalidInput);
  EXPECT_EQ(engine.stats()["events_stored"], 0);
  serve::EventsReply er = engine.add_events({serve::Event{"u", a, 1, ""}, serve::Event{"u", "nope", 2, ""}}, true);
  EXPECT_EQ(er.accepted, 1);
  EXPECT_EQ(er.ignored_items, std::vector<std::string>{"nope"});
  EXPECT_THROW(engine.add_events({serve::Event{"", a, 1, ""}}), InvalidInput);
  EXPECT_THROW(engine.add_events({}), InvalidInput);

  // rank without a ranking run: the retrieval model's scores of the candidates.
  serve::RankQuery rq;
  rq.history.items = std::vector<std::string>{a, b};
  rq.candidates = {f.ds.items.raw(1), f.ds.items.raw(5)};
  serve::RankReply rr = engine.rank(rq);
  ASSERT_EQ(rr.candidates.size(), 2u);
  EXPECT_EQ(rr.tasks, std::vector<std::string>{"score"});
  nlohmann::json all = cli_recommend(f.run, {a, b}, f.ds.n_items(), false);
  bool found = false;
  for (const auto& it : all["items"]) {
    if (it["item"] != rr.candidates[0].item) continue;
    EXPECT_NEAR(rr.candidates[0].scores.at("score"), it["score"].get<double>(), 1e-4);
    found = true;
  }
  EXPECT_TRUE(found);

  nlohmann::json models = engine.models();
  EXPECT_EQ(models["retrieval"]["type"], "hstu");
  EXPECT_TRUE(models["retrieval"]["kv_cache"].get<bool>());
  EXPECT_TRUE(models["ranking"].is_null());
  // Reload: a bad run directory keeps the old model; the same run reloads.
  EXPECT_THROW(engine.reload(f.tmp / "no-such-run"), InvalidInput);
  engine.reload(f.run);
  EXPECT_EQ(engine.models()["retrieval"]["generation"], 2);
  expect_same_items(engine.recommend(q), cli_recommend(f.run, {a}, q.k, true));
}

TEST(ServeEngine, ConcurrentRequestsAreBatchedAndAnsweredIndividually) {
  ServeFixture f("own");
  serve::EngineOptions o;
  o.run_dir = f.run;
  o.state_dir = f.tmp / "state";
  o.max_batch = 16;
  o.max_wait_us = 20000;
  serve::Engine engine(o);
  std::vector<std::future<serve::RecommendReply>> replies;
  for (int32_t u = 1; u <= 24; ++u)
    replies.push_back(std::async(std::launch::async, [&, u] {
      serve::RecommendQuery q;
      q.history.user = f.ds.users.raw(u);
      q.k = 4;
      return engine.recommend(q);
    }));
  int64_t largest = 0;
  for (int32_t u = 1; u <= 24; ++u) {
    serve::RecommendReply r = replies[static_cast<size_t>(u - 1)].get();
    largest = std::max(largest, r.batch_size);
    RecommendRequest cli;
    cli.user = f.ds.users.raw(u);
    cli.k = 4;
    cli.exclude_seen = true;
    expect_same_items(r, recommend_run(f.run, cli));
  }
  EXPECT_GT(largest, 1);  // 24 concurrent requests with a 20 ms window share batches
  EXPECT_GT(engine.stats()["batches"].get<int64_t>(), 0);
}

TEST(ServeEngine, ReloadUnderLoadDropsNoRequest) {
  ServeFixture f("own");
  serve::EngineOptions o;
  o.run_dir = f.run;
  o.state_dir = f.tmp / "state";
  serve::Engine engine(o);
  std::atomic<bool> done{false};
  std::atomic<int64_t> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      for (int32_t u = 1 + c; !done.load(); u = u % 100 + 1) {
        try {
          serve::RecommendQuery q;
          q.history.user = f.ds.users.raw(u);
          q.k = 5;
          if (engine.recommend(q).items.size() == 5u) ok += 1;
          else failed += 1;
        } catch (...) {
          failed += 1;
        }
      }
    });
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    engine.reload(f.run);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  done = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(engine.models()["retrieval"]["generation"], 4);
}
