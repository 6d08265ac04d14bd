#include "genrec/serve/engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "genrec/core/log.h"
#include "genrec/data/dataset.h"
#include "genrec/eval/evaluator.h"
#include "genrec/models/recommender.h"
#include "genrec/models/sequential.h"
#include "genrec/models/tiger.h"
#include "genrec/rank/rank_data.h"
#include "genrec/rank/ranker.h"
#include "genrec/serve/user_store.h"
#include "genrec/train/runner.h"

namespace genrec::serve {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxK = 1000;
constexpr size_t kMaxCandidates = 10000;

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The loaded retrieval run.
struct Retrieval {
  fs::path run_dir;
  int64_t generation = 0;
  LoadedCheckpoint ckpt;
  Dataset ds;                            // offline histories
  SequentialRecommender* seq = nullptr;  // set when the model encodes incrementally (hstu)
  torch::Tensor item_table;              // [n_items + 1, D] for two-tower models
  std::vector<int32_t> popular;          // fallback: items by dataset frequency, most popular first
  std::vector<double> counts;            // [n_items + 1]
  std::string loaded_at;
  std::mutex score_mu;                   // the model scores one batch at a time
  TigerRecommender* tiger = nullptr;     // set for TIGER runs: the beam follows each batch's k
  int64_t tiger_beam = 0;                // the run's model.beam
};

// The loaded ranking run (optional).
struct Ranking {
  fs::path run_dir;
  LoadedRanker r;
  Dataset ds;
  RankData rd;
  std::string loaded_at;
  std::mutex mu;
};

std::shared_ptr<Retrieval> load_retrieval(const fs::path& run_dir, int64_t generation, int64_t fallback_items) {
  auto m = std::make_shared<Retrieval>();
  m->run_dir = run_dir;
  m->generation = generation;
  RunInfo info = read_run_info(run_dir);
  m->ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt");
  m->ckpt.model->reset_training_state();  // weights only, as for rankers (load_ranking)
  try {
    m->ds = load_dataset(info.data_path, LoadOptions{false, true});
  } catch (const Error& e) {
    throw InvalidInput("loading dataset of run " + run_dir.string() + ": " + e.what());
  }
  if (m->ds.n_items() != m->ckpt.items.size())
    throw InvalidInput(run_dir.string() + ": checkpoint has " + std::to_string(m->ckpt.items.size()) +
                       " items but dataset " + info.data_path.string() + " has " + std::to_string(m->ds.n_items()));
  // TIGER: the run's cold start; its beam is widened per batch (score_batch).
  m->tiger_beam = prepare_tiger_inference(run_dir, *m->ckpt.model, m->ds);
  m->tiger = dynamic_cast<TigerRecommender*>(m->ckpt.model.get());
  auto* seq = dynamic_cast<SequentialRecommender*>(m->ckpt.model.get());
  if (seq && seq->supports_incremental()) m->seq = seq;
  torch::Tensor table = m->ckpt.model->item_embeddings();
  if (table.defined()) m->item_table = table.to(torch::kCPU, torch::kFloat).contiguous();
  const int32_t n = m->ds.n_items();
  m->counts.assign(static_cast<size_t>(n) + 1, 0.0);
  for (int32_t it : m->ds.event_items) m->counts[static_cast<size_t>(it)] += 1;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i + 1;
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return m->counts[static_cast<size_t>(a)] > m->counts[static_cast<size_t>(b)];
  });
  ids.resize(std::min<size_t>(ids.size(), static_cast<size_t>(std::max<int64_t>(fallback_items, kMaxK))));
  m->popular = std::move(ids);
  m->loaded_at = iso_now();
  return m;
}

std::shared_ptr<Ranking> load_ranking(const fs::path& run_dir) {
  auto m = std::make_shared<Ranking>();
  m->run_dir = run_dir;
  RunInfo info = read_run_info(run_dir);
  m->r = load_ranker_checkpoint(run_dir / "checkpoints" / "best.ckpt");
  // Serving keeps the weights only: the checkpoint's training state (optimizer moments, a copy
  // of the best weights, with train.ema the raw weights) would otherwise stay in memory too.
  m->r.ranker->reset_training_state();
  try {
    m->ds = load_dataset(info.data_path, LoadOptions{false, true});
  } catch (const Error& e) {
    throw InvalidInput("loading dataset of ranking run " + run_dir.string() + ": " + e.what());
  }
  if (m->ds.n_items() != m->r.items.size())
    throw InvalidInput(run_dir.string() + ": ranking checkpoint and dataset " + info.data_path.string() +
                       " disagree on the item count");
  m->rd = make_rank_data(m->ds, m->r.ranker->options().data_options());
  m->loaded_at = iso_now();
  return m;
}

// A cached user: the whole serving history (dense ids) and the model's KV cache over it.
struct UserEntry {
  std::mutex mu;
  int64_t generation = 0;
  std::vector<int32_t> items;
  std::vector<int64_t> times;
  bool has_times = true;   // false: a dataset user of a dataset without timestamps
  bool known = false;      // in the dataset or with stored events
  IncrementalCache kv;
  std::list<std::string>::iterator lru;
};

// A recommend request resolved in the caller's thread, waiting for the batcher.
struct Job {
  std::shared_ptr<Retrieval> model;
  RecommendQuery query;
  std::vector<int32_t> items;  // ad-hoc history (dense)
  std::vector<int64_t> times;
  std::vector<std::string> ignored;
  std::promise<RecommendReply> promise;
};

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<UserStore> store;

  mutable std::shared_mutex model_mu;  // guards the two pointers below
  std::shared_ptr<Retrieval> retrieval;
  std::shared_ptr<Ranking> ranking;
  int64_t generation = 1;

  // KV cache: user -> entry, least recently used at the back.
  std::mutex writer_mu;  // serialises event appends with cache misses (loads from the store)
  std::mutex map_mu;
  std::unordered_map<std::string, std::shared_ptr<UserEntry>> users;
  std::list<std::string> lru;

  // Micro-batcher.
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::unique_ptr<Job>> queue;
  bool stopping = false;
  std::thread batcher;

  std::atomic<int64_t> cache_hits{0}, cache_misses{0}, batches{0}, batched_requests{0}, reloads{0},
      positions_encoded{0}, fallbacks{0};

  std::shared_ptr<Retrieval> current_retrieval() const {
    std::shared_lock lock(model_mu);
    return retrieval;
  }
  std::shared_ptr<Ranking> current_ranking() const {
    std::shared_lock lock(model_mu);
    return ranking;
  }

  // Builds a user's serving history from a dataset and the store (caller holds writer_mu).
  void load_history(const Dataset& ds, const Vocabulary& vocab, const std::string& user, UserEntry& e) const {
    e.items.clear();
    e.times.clear();
    e.has_times = true;
    e.known = false;
    if (auto u = ds.users.find(user)) {
      UserEvents ev = ds.user(*u);
      e.items.assign(ev.items, ev.items + ev.size);
      if (ev.timestamps) e.times.assign(ev.timestamps, ev.timestamps + ev.size);
      e.has_times = ev.timestamps != nullptr;
      e.known = true;
    }
    std::vector<StoredEvent> stored = store->events(user);
    if (!stored.empty()) e.known = true;
    for (const auto& s : stored) {
      auto id = vocab.find(s.item);
      if (!id) continue;  // an item of another run's catalogue (after a reload): not servable here
      e.items.push_back(*id);
      e.times.push_back(s.timestamp);
    }
    if (!e.has_times) e.times.clear();
  }

  // The cached entry of a user for the given model, loaded on a miss. hit: whether it was cached.
  std::shared_ptr<UserEntry> user_entry(const Retrieval& m, const std::string& user, bool& hit) {
    if (options.cache_users > 0) {
      std::lock_guard lock(map_mu);
      auto it = users.find(user);
      if (it != users.end() && it->second->generation == m.generation) {
        lru.splice(lru.begin(), lru, it->second->lru);
        hit = true;
        return it->second;
      }
    }
    hit = false;
    auto e = std::make_shared<UserEntry>();
    e->generation = m.generation;
    std::lock_guard writer(writer_mu);
    load_history(m.ds, m.ckpt.items, user, *e);
    if (options.cache_users > 0) {
      std::lock_guard lock(map_mu);
      auto it = users.find(user);
      if (it != users.end()) {
        lru.erase(it->second->lru);
        users.erase(it);
      }
      lru.push_front(user);
      e->lru = lru.begin();
      users.emplace(user, e);
      while (static_cast<int64_t>(users.size()) > options.cache_users) {
        users.erase(lru.back());
        lru.pop_back();
      }
    }
    return e;
  }

  void run_batcher() {
    for (;;) {
      std::vector<std::unique_ptr<Job>> batch;
      {
        std::unique_lock lock(queue_mu);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping and drained
        // Optionally wait for more requests, unless the batch is full already. Without a wait,
        // requests that arrive while a batch is scored form the next batch.
        if (options.max_wait_us > 0) {
          const auto until = Clock::now() + std::chrono::microseconds(options.max_wait_us);
          while (!stopping && static_cast<int64_t>(queue.size()) < options.max_batch &&
                 queue_cv.wait_until(lock, until) != std::cv_status::timeout) {
          }
        }
        while (!queue.empty() && static_cast<int64_t>(batch.size()) < options.max_batch) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      // Requests resolved against different models (a reload in between) are scored apart.
      while (!batch.empty()) {
        auto model = batch.front()->model;
        std::vector<std::unique_ptr<Job>> same, rest;
        for (auto& j : batch) (j->model == model ? same : rest).push_back(std::move(j));
        score_batch(*model, same);
        batch = std::move(rest);
      }
    }
  }

  void score_batch(Retrieval& m, std::vector<std::unique_ptr<Job>>& jobs) {
    torch::NoGradGuard no_grad;
    // The model's modules switch to eval mode while they score: one caller at a time.
    std::lock_guard model_lock(m.score_mu);
    batches += 1;
    batched_requests += static_cast<int64_t>(jobs.size());
    struct Row {
      Job* job;
      RecommendReply reply;
      std::vector<int32_t> seen;
      torch::Tensor query;  // [D] (two-tower)
      std::vector<std::pair<int32_t, float>> offsets;  // the model's history offsets (two-tower)
      // Non-two-tower models: the history to score.
      std::vector<int32_t> items;
      std::vector<int64_t> times;
    };
    std::vector<Row> rows;
    for (auto& jp : jobs) {
      Job& j = *jp;
      try {
        if (j.query.deadline && Clock::now() > *j.query.deadline)
          throw DeadlineExceeded("recommend: the request timed out before it was scored");
        Row r{&j, {}, {}, {}, {}, {}, {}};
        r.reply.model = m.ckpt.model->type();
        r.reply.ignored_items = j.ignored;
        History h;
        std::shared_ptr<UserEntry> entry;
        std::unique_lock<std::mutex> entry_lock;
        if (j.query.history.user) {
          bool hit = false;
          entry = user_entry(m, *j.query.history.user, hit);
          entry_lock = std::unique_lock<std::mutex>(entry->mu);
          (hit ? cache_hits : cache_misses) += 1;
          r.reply.cache_hit = hit;
          if (!entry->known) {
            r.reply.fallback = true;
            r.reply.fallback_reason = "unknown_user";
          }
          h.items = entry->items.data();
          h.timestamps = entry->has_times && !entry->times.empty() ? entry->times.data() : nullptr;
          h.size = static_cast<int64_t>(entry->items.size());
        } else {
          h.items = j.items.data();
          h.timestamps = j.times.empty() ? nullptr : j.times.data();
          h.size = static_cast<int64_t>(j.items.size());
        }
        h.request_time = j.query.at;
        r.reply.history_length = h.size;
        if (h.size == 0 && !r.reply.fallback) {
          r.reply.fallback = true;
          r.reply.fallback_reason = "empty_history";
        }
        if (!r.reply.fallback) {
          if (j.query.exclude_seen) r.seen.assign(h.items, h.items + h.size);
          if (m.item_table.defined()) {
            if (m.seq && entry && options.cache_users > 0) {
              int64_t computed = 0;
              r.query = m.seq->query_embedding_incremental(h, entry->kv, &computed);
              positions_encoded += computed;
            } else {
              r.query = m.ckpt.model->query_embeddings({h})[0];
              positions_encoded += h.size;
            }
            r.offsets = m.ckpt.model->history_offsets(h);
          } else {
            r.items.assign(h.items, h.items + h.size);
            if (h.timestamps) r.times.assign(h.timestamps, h.timestamps + h.size);
          }
        }
        rows.push_back(std::move(r));
      } catch (...) {
        j.promise.set_exception(std::current_exception());
      }
    }
    if (rows.empty()) return;

    // Scores of the whole catalogue for the rows that need the model, in one product.
    std::vector<size_t> model_rows;
    for (size_t i = 0; i < rows.size(); ++i)
      if (!rows[i].reply.fallback) model_rows.push_back(i);
    torch::Tensor scores;
    try {
      if (!model_rows.empty()) {
        if (m.item_table.defined()) {
          std::vector<torch::Tensor> qs;
          for (size_t i : model_rows) qs.push_back(rows[i].query);
          scores = torch::matmul(torch::stack(qs).to(torch::kFloat), m.item_table.t()).contiguous();
        } else {
          std::vector<History> hs;
          if (m.tiger) {
            // TIGER scores only its beam's items: the beam must hold the largest k of the batch,
            // plus that request's distinct history items when those are left out.
            int64_t need = m.tiger_beam;
            for (size_t i : model_rows)
              need = std::max(need, tiger_request_beam(rows[i].job->query.k, rows[i].seen, rows[i].job->query.exclude_seen));
            m.tiger->set_beam(need);
          }
          for (size_t i : model_rows) {
            const Row& r = rows[i];
            History h;
            h.items = r.items.data();
            h.timestamps = r.times.empty() ? nullptr : r.times.data();
            h.size = static_cast<int64_t>(r.items.size());
            h.request_time = r.job->query.at;
            hs.push_back(h);
          }
          scores = m.ckpt.model->score(hs).to(torch::kCPU, torch::kFloat).contiguous();
        }
      }
    } catch (...) {
      for (size_t i : model_rows) rows[i].job->promise.set_exception(std::current_exception());
      for (size_t i = 0; i < rows.size(); ++i)
        if (rows[i].reply.fallback) finish_fallback(m, rows[i].job, rows[i].reply, rows.size());
      return;
    }
    const int32_t n_items = m.ds.n_items();
    std::vector<uint8_t> exclude;
    for (size_t b = 0; b < model_rows.size(); ++b) {
      Row& r = rows[model_rows[b]];
      float* row = scores.data_ptr<float>() + static_cast<int64_t>(b) * (n_items + 1);
      for (const auto& [item, off] : r.offsets) row[item] += off;  // as the model's own score()
      const uint8_t* ex = nullptr;
      if (!r.seen.empty()) {
        exclude.assign(static_cast<size_t>(n_items) + 1, 0);
        for (int32_t it : r.seen) exclude[static_cast<size_t>(it)] = 1;
        ex = exclude.data();
      }
      for (int32_t it : top_k_items(row, n_items, r.job->query.k, ex))
        if (row[it] > TigerRecommender::kNotReturned)  // TIGER scores only its beam's items
          r.reply.items.push_back(ScoredItem{m.ckpt.items.raw(it), row[it]});
      r.reply.batch_size = static_cast<int64_t>(rows.size());
      r.job->promise.set_value(std::move(r.reply));
    }
    for (auto& r : rows)
      if (r.reply.fallback) finish_fallback(m, r.job, r.reply, rows.size());
  }

  void finish_fallback(const Retrieval& m, Job* job, RecommendReply& reply, size_t batch_size) {
    fallbacks += 1;
    reply.batch_size = static_cast<int64_t>(batch_size);
    for (int32_t it : m.popular) {
      if (static_cast<int64_t>(reply.items.size()) >= job->query.k) break;
      reply.items.push_back(ScoredItem{m.ckpt.items.raw(it), m.counts[static_cast<size_t>(it)]});
    }
    job->promise.set_value(std::move(reply));
  }
};

namespace {

// Maps raw ids to dense ones; unknown ids are collected (and dropped) in `unknown`.
std::vector<int32_t> map_items(const Vocabulary& vocab, const std::vector<std::string>& raw, std::vector<std::string>& unknown,
                               std::vector<size_t>* kept = nullptr) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (auto id = vocab.find(raw[i])) {
      out.push_back(*id);
      if (kept) kept->push_back(i);
    } else {
      unknown.push_back(raw[i]);
    }
  }
  return out;
}

void check_history_spec(const HistorySpec& h, const char* what) {
  if (h.user.has_value() == h.items.has_value())
    throw InvalidInput(std::string(what) + ": give exactly one of user_id and history");
  if (h.user && h.user->empty()) throw InvalidInput(std::string(what) + ": user_id must not be empty");
  if (h.times && !h.items) throw InvalidInput(std::string(what) + ": history_times needs history");
  if (h.times && h.times->size() != h.items->size())
    throw InvalidInput(std::string(what) + ": history_times has " + std::to_string(h.times->size()) +
                       " entries but history has " + std::to_string(h.items->size()));
}

}  // namespace

Engine::Engine(EngineOptions options) : impl_(std::make_unique<Impl>()) {
  auto& I = *impl_;
  if (options.max_batch < 1) throw InvalidInput("serve: --max-batch must be >= 1");
  if (options.max_wait_us < 0) throw InvalidInput("serve: --max-wait-us must be >= 0");
  if (options.cache_users < 0) throw InvalidInput("serve: --cache-users must be >= 0");
  if (options.state_dir.empty()) options.state_dir = options.run_dir / "serve_state";
  I.options = options;
  RunInfo info = read_run_info(options.run_dir);
  set_threads(options.threads > 0 ? options.threads : info.threads);
  I.retrieval = load_retrieval(options.run_dir, I.generation, options.fallback_items);
  if (!options.rank_run.empty()) I.ranking = load_ranking(options.rank_run);
  I.store = std::make_unique<UserStore>(UserStore::Options{options.state_dir, options.sync_writes});
  GENREC_LOG_INFO("serve: loaded %s from %s (%d items, %d users); user state in %s (%llu users, %llu events)",
                  I.retrieval->ckpt.model->type().c_str(), options.run_dir.c_str(), I.retrieval->ds.n_items(),
                  I.retrieval->ds.n_users(), options.state_dir.c_str(),
                  static_cast<unsigned long long>(I.store->n_users()), static_cast<unsigned long long>(I.store->n_events()));
  I.batcher = std::thread([this] { impl_->run_batcher(); });
}

Engine::~Engine() {
  {
    std::lock_guard lock(impl_->queue_mu);
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  if (impl_->batcher.joinable()) impl_->batcher.join();
}

RecommendReply Engine::recommend(const RecommendQuery& query) {
  auto& I = *impl_;
  check_history_spec(query.history, "recommend");
  if (query.k < 1 || query.k > kMaxK)
    throw InvalidInput("recommend: k must be in [1, " + std::to_string(kMaxK) + "], got " + std::to_string(query.k));
  auto job = std::make_unique<Job>();
  job->model = I.current_retrieval();
  job->query = query;
  if (query.history.items) {
    std::vector<std::string> unknown;
    std::vector<size_t> kept;
    job->items = map_items(job->model->ckpt.items, *query.history.items, unknown, &kept);
    if (!unknown.empty() && !query.ignore_unknown_items)
      throw InvalidInput("recommend: unknown item id(s) in history: " + join(unknown));
    job->ignored = unknown;
    if (query.history.times)
      for (size_t i : kept) job->times.push_back((*query.history.times)[i]);
  }
  std::future<RecommendReply> result = job->promise.get_future();
  {
    std::lock_guard lock(I.queue_mu);
    if (I.stopping) throw Error("recommend: the server is shutting down");
    I.queue.push_back(std::move(job));
  }
  I.queue_cv.notify_one();
  return result.get();
}

RankReply Engine::rank(const RankQuery& query) {
  auto& I = *impl_;
  check_history_spec(query.history, "rank");
  if (query.candidates.empty() || query.candidates.size() > kMaxCandidates)
    throw InvalidInput("rank: candidates must list 1 to " + std::to_string(kMaxCandidates) + " items, got " +
                       std::to_string(query.candidates.size()));
  if (query.deadline && Clock::now() > *query.deadline) throw DeadlineExceeded("rank: the request timed out");
  RankReply reply;
  std::vector<std::string> unknown;
  std::vector<size_t> kept_cands;
  auto ranking = I.current_ranking();
  auto retrieval = I.current_retrieval();
  const Vocabulary& vocab = ranking ? ranking->r.items : retrieval->ckpt.items;
  std::vector<int32_t> cands = map_items(vocab, query.candidates, unknown, &kept_cands);
  std::vector<int32_t> items, feedback;
  std::vector<int64_t> times;
  if (query.history.items) {
    std::vector<size_t> kept;
    items = map_items(vocab, *query.history.items, unknown, &kept);
    feedback.assign(items.size(), 1);
    if (query.history.times)
      for (size_t i : kept) times.push_back((*query.history.times)[i]);
  }
  if (!unknown.empty() && !query.ignore_unknown_items) throw InvalidInput("rank: unknown item id(s): " + join(unknown));
  reply.ignored_items = unknown;
  bool known_user = true;
  if (query.history.user) {
    const std::string& user = *query.history.user;
    const Dataset& ds = ranking ? ranking->ds : retrieval->ds;
    known_user = false;
    bool has_times = true;
    if (auto u = ds.users.find(user)) {
      known_user = true;
      has_times = ds.has_timestamps();
      if (ranking) {
        append_user_history(ds, ranking->rd, *u, items, feedback, times);
      } else {
        UserEvents ev = ds.user(*u);
        items.assign(ev.items, ev.items + ev.size);
        feedback.assign(items.size(), 1);
        if (ev.timestamps) times.assign(ev.timestamps, ev.timestamps + ev.size);
      }
    }
    std::vector<StoredEvent> stored;
    {
      std::lock_guard writer(I.writer_mu);
      stored = I.store->events(user);
    }
    for (const auto& s : stored) {
      auto id = vocab.find(s.item);
      if (!id) continue;
      known_user = true;
      items.push_back(*id);
      int32_t fb = 1;
      if (ranking) fb = std::max(1, feedback_token(ranking->rd, s.action));  // unknown action: token 1
      feedback.push_back(fb);
      if (has_times) times.push_back(s.timestamp);
    }
    if (!has_times) times.clear();
    if (!known_user) {
      reply.fallback = true;
      reply.fallback_reason = "unknown_user";
    }
  }
  if (items.empty() && !reply.fallback) {
    reply.fallback = true;
    reply.fallback_reason = "empty_history";
  }
  std::vector<std::string> cand_raw;
  for (size_t i : kept_cands) cand_raw.push_back(query.candidates[i]);
  torch::NoGradGuard no_grad;
  if (ranking) {
    const RankData& rd = ranking->rd;
    for (const auto& t : rd.tasks) reply.tasks.push_back(t.name);
    reply.model = ranking->r.ranker->options().type;
    reply.m_falcon = reply.model == "genrank";
    torch::Tensor out, probs;
    if (!cands.empty()) {
      std::lock_guard lock(ranking->mu);
      out = ranking->r.ranker->score(rd, items, feedback, times, cands, query.at, &probs);
    }
    std::vector<CandidateScores> scored = read_candidate_scores(rd, out, probs);
    for (size_t m = 0; m < scored.size(); ++m)
      reply.candidates.push_back(RankedCandidate{cand_raw[m], std::move(scored[m].tasks), std::move(scored[m].feedback)});
  } else {
    // No ranking run: the retrieval model's scores of the candidates.
    reply.tasks = {"score"};
    reply.model = retrieval->ckpt.model->type();
    History h;
    h.items = items.data();
    h.timestamps = times.empty() ? nullptr : times.data();
    h.size = static_cast<int64_t>(items.size());
    h.request_time = query.at;
    torch::Tensor scores;
    {
      std::lock_guard lock(retrieval->score_mu);
      scores = retrieval->ckpt.model->score({h}).to(torch::kCPU, torch::kFloat).contiguous();
    }
    const float* row = scores.data_ptr<float>();
    for (size_t m = 0; m < cands.size(); ++m)
      reply.candidates.push_back(RankedCandidate{cand_raw[m], {{"score", row[cands[m]]}}, {}});
  }
  return reply;
}

EventsReply Engine::add_events(const std::vector<Event>& events, bool ignore_unknown_items) {
  auto& I = *impl_;
  if (events.empty()) throw InvalidInput("events: no events given");
  auto model = I.current_retrieval();
  EventsReply reply;
  std::vector<std::string> unknown;
  std::vector<std::pair<std::string, StoredEvent>> batch;
  std::vector<int32_t> dense;
  const int64_t now = now_seconds();
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    const std::string where = events.size() > 1 ? "events[" + std::to_string(i) + "]: " : "events: ";
    if (e.user.empty()) throw InvalidInput(where + "user_id must not be empty");
    if (e.user.find('\0') != std::string::npos) throw InvalidInput(where + "user_id must not contain NUL");
    if (e.item.empty()) throw InvalidInput(where + "item_id must not be empty");
    if (e.timestamp < -1) throw InvalidInput(where + "timestamp must be >= 0 (seconds) or -1 (now), got " + std::to_string(e.timestamp));
    auto id = model->ckpt.items.find(e.item);
    if (!id) {
      unknown.push_back(e.item);
      continue;
    }
    batch.push_back({e.user, StoredEvent{e.item, e.timestamp < 0 ? now : e.timestamp, e.action}});
    dense.push_back(*id);
  }
  if (!unknown.empty() && !ignore_unknown_items)
    throw InvalidInput("events: unknown item id(s): " + join(unknown) + " (nothing stored)");
  reply.ignored_items = unknown;
  if (batch.empty()) return reply;
  std::lock_guard writer(I.writer_mu);
  I.store->append(batch);  // durable from here on
  reply.accepted = static_cast<int64_t>(batch.size());
  // Cached users see the events at once (their KV cache extends on the next request).
  for (size_t i = 0; i < batch.size(); ++i) {
    std::shared_ptr<UserEntry> entry;
    {
      std::lock_guard lock(I.map_mu);
      auto it = I.users.find(batch[i].first);
      if (it == I.users.end()) continue;
      entry = it->second;
    }
    std::lock_guard lock(entry->mu);
    if (entry->generation != model->generation) continue;  // stale: reloaded on its next miss
    entry->items.push_back(dense[i]);
    if (entry->has_times) entry->times.push_back(batch[i].second.timestamp);
    entry->known = true;
  }
  return reply;
}

void Engine::reload(const fs::path& run_dir) {
  auto& I = *impl_;
  int64_t generation;
  {
    std::shared_lock lock(I.model_mu);
    generation = I.generation + 1;
  }
  auto fresh = load_retrieval(run_dir, generation, I.options.fallback_items);  // throws: the old model stays
  {
    std::unique_lock lock(I.model_mu);
    I.retrieval = fresh;
    I.generation = generation;
  }
  {
    std::lock_guard lock(I.map_mu);
    I.users.clear();
    I.lru.clear();
  }
  I.reloads += 1;
  GENREC_LOG_INFO("serve: reloaded %s from %s", fresh->ckpt.model->type().c_str(), run_dir.c_str());
}

nlohmann::json Engine::models() const {
  auto& I = *impl_;
  auto r = I.current_retrieval();
  auto k = I.current_ranking();
  nlohmann::json out;
  out["retrieval"] = {{"run", r->run_dir.string()},
                      {"type", r->ckpt.model->type()},
                      {"genrec_version", r->ckpt.meta.value("genrec_version", "")},
                      {"generation", r->generation},
                      {"n_items", r->ds.n_items()},
                      {"n_users", r->ds.n_users()},
                      {"loaded_at", r->loaded_at},
                      {"kv_cache", r->seq != nullptr && I.options.cache_users > 0}};
  if (k)
    out["ranking"] = {{"run", k->run_dir.string()},
                      {"type", k->r.ranker->options().type},
                      {"n_items", k->ds.n_items()},
                      {"loaded_at", k->loaded_at},
                      {"m_falcon", k->r.ranker->options().type == "genrank"}};
  else
    out["ranking"] = nullptr;
  return out;
}

nlohmann::json Engine::stats() const {
  auto& I = *impl_;
  int64_t cached = 0;
  {
    std::lock_guard lock(I.map_mu);
    cached = static_cast<int64_t>(I.users.size());
  }
  return {{"cache_hits", I.cache_hits.load()},
          {"cache_misses", I.cache_misses.load()},
          {"cache_users", cached},
          {"batches", I.batches.load()},
          {"batched_requests", I.batched_requests.load()},
          {"positions_encoded", I.positions_encoded.load()},
          {"fallbacks", I.fallbacks.load()},
          {"events_stored", static_cast<int64_t>(I.store->n_events())},
          {"users_stored", static_cast<int64_t>(I.store->n_users())},
          {"reloads", I.reloads.load()}};
}

}  // namespace genrec::serve
