#include "genrec/train/runner.h"

#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/data/dataset.h"
#include "genrec/data/holdout.h"
#include "genrec/data/split.h"
#include "genrec/index/item_index.h"
#include "genrec/models/recommender.h"
#include "genrec/models/tiger.h"
#include "genrec/rank/ranker.h"

namespace genrec {

namespace fs = std::filesystem;

void set_threads(int64_t n) {
  if (n < 0) throw InvalidInput("train.threads must be >= 0 (0 = all cores), got " + std::to_string(n));
  if (n == 0) n = std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(n));
  // ATen parallelises across its own threads; an OpenBLAS that also starts one thread per core
  // inside each call oversubscribes the cores (measured 2-3x slower training steps on 2 cores).
  // Keep BLAS calls single-threaded when the BLAS is OpenBLAS (looked up at run time, so other
  // BLAS builds are left alone).
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(1);
}

namespace {

struct RunSettings {
  fs::path data_path;
  SplitOptions split;
  EvalOptions eval;
  int64_t seed = 42;
  int64_t threads = 0;
  fs::path init_from;  // train.init_from: a run directory or checkpoint whose weights start training
  bool keep_checkpoints = false;  // train.keep_checkpoints: also checkpoints/epoch-N.ckpt at every validation
  ItemIndexOptions index;
};

// checkpoints/epoch-N.ckpt, kept with train.keep_checkpoints.
fs::path epoch_checkpoint_path(const fs::path& run_dir, const nlohmann::json& log_line) {
  return run_dir / "checkpoints" / ("epoch-" + std::to_string(log_line.value("epoch", int64_t{0})) + ".ckpt");
}

// The [index] table. index.nlist is read only when present (its default depends on the
// catalogue size).
ItemIndexOptions read_index_options(Config& cfg) {
  ItemIndexOptions o;
  o.kind = cfg.get_string("index.kind", o.kind);
  if (cfg.has("index.nlist")) o.nlist = cfg.get_int("index.nlist", 0);
  o.nprobe = cfg.get_int("index.nprobe", o.nprobe);
  o.hnsw_m = cfg.get_int("index.hnsw_m", o.hnsw_m);
  o.ef_construction = cfg.get_int("index.ef_construction", o.ef_construction);
  o.ef_search = cfg.get_int("index.ef_search", o.ef_search);
  o.validate();
  return o;
}

// Reads data.*, eval.* and train.* keys (model.* is read by make_recommender).
RunSettings read_settings(Config& cfg) {
  RunSettings s;
  s.data_path = cfg.get_string("data.path", "");
  s.split.kind = cfg.get_string("data.split", "leave_one_out");
  s.split.valid_fraction = cfg.get_double("data.valid_fraction", 0.1);
  s.split.test_fraction = cfg.get_double("data.test_fraction", 0.1);
  s.split.train_on_valid = cfg.get_bool("data.train_on_valid", false);
  s.eval.ks = cfg.get_int_list("eval.ks", {5, 10, 20});
  s.eval.exclude_seen = cfg.get_bool("eval.exclude_seen", false);
  s.eval.batch_size = cfg.get_int("eval.batch_size", 256);
  s.eval.negatives = cfg.get_int("eval.negatives", 0);
  s.eval.negative_sampling = cfg.get_string("eval.negative_sampling", "uniform");
  s.eval.seed = static_cast<uint64_t>(cfg.get_int("eval.seed", 2024));
  s.seed = cfg.get_int("train.seed", 42);
  s.threads = cfg.get_int("train.threads", 0);
  s.init_from = cfg.get_string("train.init_from", "");
  s.keep_checkpoints = cfg.get_bool("train.keep_checkpoints", false);
  s.index = read_index_options(cfg);
  return s;
}

// A ranking run (genrank, din) or a retrieval one; the run's config says which (model.type's
// default is the markov retrieval baseline).
bool is_ranking_run(Config& cfg) { return is_ranker_type(cfg.get_string("model.type", "markov")); }

nlohmann::json with_time(const EvalResult& r) {
  nlohmann::json j = r.to_json();
  j["seconds"] = r.seconds;
  return j;
}

void append_line(const fs::path& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  if (!out) throw IOError(path.string() + ": cannot append");
}

Config load_run_config(const fs::path& run_dir, const std::vector<std::string>& overrides) {
  fs::path cfg_path = run_dir / "config.toml";
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) throw InvalidInput(SourceLocation{run_dir.string(), 0, ""}, "run directory not found");
  return Config::load(cfg_path.string(), overrides);
}

// The KEY of a --set KEY=VALUE.
std::string override_key(const std::string& assignment) { return assignment.substr(0, assignment.find('=')); }

// TIGER's inference options: a TIGER run's eval and recommend read them from the run's config
// and from --set, so they can be changed on a trained run.
const std::vector<std::string>& tiger_inference_keys() {
  static const std::vector<std::string> keys = {"model.beam", "model.cold_fraction", "model.level_weights",
                                                "model.history_bias"};
  return keys;
}

std::string comma_list(const std::vector<std::string>& keys) {
  std::string out;
  for (const std::string& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

bool is_tiger_run(Config& cfg) { return cfg.get_string("model.type", "markov") == "tiger"; }

// Sets a TIGER model's inference options from `cfg` (the run's config with any --set overrides;
// a key it lacks keeps the checkpoint's value): the beam, cold start over the items without
// events in the training part of `split` (model.cold_fraction), the per-level weights, and the
// history bias (switched on against the run's training, b is estimated from `split`'s training
// transitions). Returns the beam.
int64_t apply_tiger_inference(TigerRecommender& tiger, Config& cfg, const Dataset& ds, const Split& split) {
  const nlohmann::json saved = tiger.options();
  const int64_t beam = cfg.get_int("model.beam", saved.value("beam", int64_t{20}));
  tiger.set_beam(beam);
  tiger.set_cold_items(train_item_counts(ds, split));
  tiger.set_cold_fraction(cfg.get_double("model.cold_fraction", saved.value("cold_fraction", 0.0)));
  tiger.set_level_weights(cfg.get_double_list("model.level_weights", saved.value("level_weights", std::vector<double>{})));
  const bool trained_bias = saved.value("history_bias", false);
  const bool bias = cfg.get_bool("model.history_bias", trained_bias);
  if (bias != trained_bias) {
    tiger.set_history_bias(bias, 0.0);
    tiger.estimate_history_bias(ds, split);
  }
  return beam;
}

// recommend / index-eval: the run's [index] settings, --set index.* overrides, then --index.
// recommend also takes TIGER's inference keys for a TIGER run (tiger_keys_too).
ItemIndexOptions index_options_for(const fs::path& run_dir, const std::vector<std::string>& overrides,
                                   const std::optional<std::string>& kind, const char* command, RunSettings& s,
                                   bool tiger_keys_too = false) {
  static const std::vector<std::string> keys = {"index.kind",   "index.nlist",           "index.nprobe",
                                                "index.hnsw_m", "index.ef_construction", "index.ef_search"};
  Config cfg = load_run_config(run_dir, {});
  const bool tiger = tiger_keys_too && is_tiger_run(cfg);
  for (const auto& o : overrides) {
    const std::string key = override_key(o);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
    const auto& tk = tiger_inference_keys();
    if (tiger && std::find(tk.begin(), tk.end(), key) != tk.end()) continue;
    throw InvalidInput(std::string(command) + ": --set takes index.* keys only (" + comma_list(keys) + ")" +
                       (tiger_keys_too ? ", and for a TIGER run " + comma_list(tk) : std::string()) + "; got '" + o +
                       "'" + (tiger_keys_too && !tiger && key.rfind("model.", 0) == 0 ? " (" + run_dir.string() +
                       " is a " + cfg.get_string("model.type", "markov") + " run)" : std::string()));
  }
  if (!overrides.empty()) cfg = load_run_config(run_dir, overrides);
  s = read_settings(cfg);
  ItemIndexOptions o = s.index;
  if (kind) o.kind = *kind;
  o.validate();
  return o;
}

// A two-tower model's item vectors [n_items + 1, D] as float32 on the CPU; InvalidInput when
// the model has none.
torch::Tensor item_vectors(Recommender& model, const std::string& kind, const char* command) {
  torch::Tensor table = model.item_embeddings();
  if (!table.defined())
    throw InvalidInput(std::string(command) + ": index '" + kind + "' searches item vectors, and model '" + model.type() +
                       "' has none (only two-tower models have them: sasrec, hstu); use --index exact");
  table = table.to(torch::kCPU, torch::kFloat).contiguous();
  GENREC_ASSERT(table.dim() == 2 && table.size(0) == model.n_items() + 1);
  return table;
}

}  // namespace

// A new run directory (refuses to clobber unless asked) with config.toml and an empty log.
void prepare_run_dir(const TrainRequest& req, const Config& cfg) {
  std::error_code ec;
  if (fs::exists(req.out, ec)) {
    if (!req.overwrite && !fs::is_empty(req.out, ec))
      throw InvalidInput(req.out.string() + ": run directory exists and is not empty (use --force to replace it, or --resume)");
    if (req.overwrite) fs::remove_all(req.out, ec);
  }
  fs::create_directories(req.out / "checkpoints", ec);
  if (ec) throw IOError(req.out.string() + ": cannot create run directory: " + ec.message());
  write_file_atomic(req.out / "config.toml", cfg.resolved_toml());
  write_file_atomic(req.out / "train_log.jsonl", "");
}

Dataset load_run_dataset(const fs::path& path, const std::string& stage) {
  try {
    return load_dataset(path);
  } catch (...) {
    rethrow_with_stage(stage);
  }
}

namespace {

// --resume: keeps the train_log.jsonl lines of the epochs up to `done` (what the last checkpoint
// has seen); later ones are redone. done < 0 clears the log.
void keep_log_until(const fs::path& log_path, int64_t done) {
  std::error_code ec;
  std::string kept, text = fs::exists(log_path, ec) ? read_file(log_path) : "";
  LineReader lines(text);
  std::string_view line;
  while (lines.next(line))
    if (done >= 0 && !line.empty() && nlohmann::json::parse(line).value("epoch", int64_t{0}) <= done)
      kept += std::string(line) + "\n";
  write_file_atomic(log_path, kept);
}

// The epoch and elapsed_seconds of the last "best" line of a train_log.jsonl (0, 0 without one).
std::pair<int64_t, double> best_in_log(const fs::path& log_path) {
  std::pair<int64_t, double> out{0, 0.0};
  std::string text = read_file(log_path);
  LineReader all(text);
  std::string_view line;
  while (all.next(line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j.value("best", false)) out = {j.value("epoch", int64_t{0}), j.value("elapsed_seconds", 0.0)};
  }
  return out;
}

// The epoch a run's last.ckpt was written after (its meta "extra"), for --resume.
int64_t checkpoint_epoch(const nlohmann::json& meta) {
  return meta.value("extra", nlohmann::json::object()).value("epoch", int64_t{0});
}

// The ranking family (genrank, din): same run directory layout, ranking metrics.
TrainResult rank_train_run(Config& cfg, const RunSettings& s, const TrainRequest& req, const ProgressCallback& progress) {
  set_threads(s.threads);
  torch::manual_seed(static_cast<uint64_t>(s.seed));
  Dataset ds = load_run_dataset(s.data_path, "loading dataset");
  RankerOptions ro = RankerOptions::from_config(cfg);
  cfg.check_unused();
  Split split = make_split(ds, s.split);
  RankData rd = make_rank_data(ds, ro.data_options());
  const fs::path log_path = req.out / "train_log.jsonl";
  const fs::path best_path = req.out / "checkpoints" / "best.ckpt", last_path = req.out / "checkpoints" / "last.ckpt";
  std::unique_ptr<Ranker> ranker;
  if (req.resume) {
    std::error_code ec;
    if (!fs::exists(last_path, ec)) throw InvalidInput(last_path.string() + ": no checkpoint to resume from");
    LoadedRanker last = load_ranker_checkpoint(last_path);
    if (last.items.size() != ds.n_items() || last.ranker->n_feedback() != rd.n_feedback)
      throw InvalidInput(last_path.string() + ": checkpoint and dataset disagree on the item or feedback count");
    if (!last.ranker->has_train_state())
      throw InvalidInput(last_path.string() +
                         ": written by a genrec version whose rankers did not save their training state; "
                         "start again with --force");
    const int64_t done = checkpoint_epoch(last.meta);
    keep_log_until(log_path, done);
    ranker = std::move(last.ranker);
    GENREC_LOG_INFO("resuming %s from epoch %lld", ro.type.c_str(), static_cast<long long>(done));
  } else {
    ranker = std::make_unique<Ranker>(ro, ds.n_items(), rd.n_feedback);
    if (!s.init_from.empty()) {
      init_ranker_from_checkpoint(*ranker, s.init_from, ds.items);
      GENREC_LOG_INFO("starting from the weights of %s", s.init_from.string().c_str());
      if (ro.prior_bias) GENREC_LOG_WARN("train.prior_bias: not applied, the output biases come from train.init_from");
    } else if (ro.prior_bias) {
      std::string values;
      for (double b : ranker->set_prior_bias(ds, rd, split)) values += (values.empty() ? "" : ", ") + std::to_string(b);
      GENREC_LOG_INFO("output biases set to the training targets' prior: %s", values.c_str());
    }
    prepare_run_dir(req, cfg);
  }
  GENREC_LOG_INFO("training %s on %s: %d users, %d items, %lld events, %zu tasks", ro.type.c_str(),
                  s.data_path.string().c_str(), ds.n_users(), ds.n_items(), static_cast<long long>(ds.n_events()),
                  rd.n_tasks());
  auto t0 = std::chrono::steady_clock::now();
  RankTrainContext ctx{ds, rd, split, progress, nullptr};
  // Log line first, then checkpoints: a run killed in between redoes that epoch on resume.
  ctx.on_validation = [&](const nlohmann::json& line, bool is_best) {
    append_line(log_path, line.dump());
    nlohmann::json meta = {{"dataset", s.data_path.string()}, {"epoch", line.value("epoch", int64_t{0})}};
    if (is_best) save_ranker_checkpoint(best_path, *ranker, ds.items, rd, meta);
    if (s.keep_checkpoints) save_ranker_checkpoint(epoch_checkpoint_path(req.out, line), *ranker, ds.items, rd, meta);
    save_ranker_checkpoint(last_path, *ranker, ds.items, rd, meta);
  };
  ranker->fit(ctx);
  TrainResult result;
  result.run_dir = req.out;
  result.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // With data.train_on_valid the validation period was trained on: nothing to validate.
  if (!s.split.train_on_valid) result.valid = ranker->evaluate(ds, rd, split, SplitPart::Valid, progress);
  result.test = ranker->evaluate(ds, rd, split, SplitPart::Test, progress);
  const auto [best_epoch, seconds_to_best] = best_in_log(log_path);
  nlohmann::json metrics = result.test.to_json();
  metrics["model"] = ro.type;
  metrics["best_epoch"] = best_epoch;
  metrics["train_seconds"] = result.train_seconds;
  metrics["seconds_to_best"] = seconds_to_best;
  metrics["valid"] = result.valid.metrics;
  write_file_atomic(req.out / "metrics.json", metrics.dump(2) + "\n");
  const std::string metric = ro.resolved_metric();
  GENREC_LOG_INFO("%s: test %s %.4f (%lld users)", ro.type.c_str(), metric.c_str(),
                  result.test.metrics.count(metric) ? result.test.metrics.at(metric) : -1.0,
                  static_cast<long long>(result.test.n_users));
  return result;
}

}  // namespace

TrainResult train_run(const TrainRequest& req, const ProgressCallback& progress) {
  // A resumed run takes its configuration from the run directory.
  Config cfg = req.resume ? load_run_config(req.out, {})
               : req.config_path.empty() ? Config::parse(req.config_text, "<built-in config>")
                                         : Config::load(req.config_path.string(), req.overrides);
  if (req.resume && (!req.overrides.empty() || req.data))
    throw InvalidInput("--resume continues a run with its saved config; --set and --data are not allowed with it");
  if (req.config_path.empty() && !req.resume)
    for (const auto& o : req.overrides) cfg.set_override(o);
  if (req.data) cfg.set_override("data.path=\"" + fs::absolute(*req.data).lexically_normal().string() + "\"");
  RunSettings s = read_settings(cfg);
  if (s.data_path.empty()) throw InvalidInput(cfg.source() + ": no dataset: set data.path or pass --data");
  // Absolute data path in the saved config, so eval/recommend work from any directory.
  s.data_path = fs::absolute(s.data_path).lexically_normal();
  cfg.set_override("data.path=\"" + s.data_path.string() + "\"");
  if (!s.init_from.empty()) {  // absolute too, for the saved config
    s.init_from = fs::absolute(s.init_from).lexically_normal();
    cfg.set_override("train.init_from=\"" + s.init_from.string() + "\"");
  }
  if (is_ranking_run(cfg)) return rank_train_run(cfg, s, req, progress);

  set_threads(s.threads);
  torch::manual_seed(static_cast<uint64_t>(s.seed));

  Dataset ds;
  try {
    ds = load_dataset(s.data_path);
  } catch (...) {
    rethrow_with_stage("loading dataset");
  }
  Split split = make_split(ds, s.split);
  auto model = make_recommender(cfg, ds.n_items());
  cfg.check_unused();  // every key of the file is known by now
  if ((split.n_targets(SplitPart::Valid) == 0 && !s.split.train_on_valid) || split.n_targets(SplitPart::Test) == 0)
    throw InvalidInput(s.data_path.string() + ": the split leaves no validation or test users");
  if (s.split.train_on_valid)
    GENREC_LOG_INFO("data.train_on_valid: the validation events are trained on; no validation, the last epoch is kept");
  if (!req.resume && !s.init_from.empty()) {
    if (!model->iterative())
      throw InvalidInput(cfg.source() + ": train.init_from: model '" + model->type() +
                         "' is fitted in one pass; only sasrec, hstu and tiger start from saved weights");
    if (!model->options().value("code_init", std::string()).empty())
      throw InvalidInput(cfg.source() + ": train.init_from and model.code_init both set the starting weights; keep one");
    init_from_checkpoint(*model, s.init_from, ds.items);
    GENREC_LOG_INFO("starting from the weights of %s", s.init_from.string().c_str());
  }

  const fs::path log_path = req.out / "train_log.jsonl";
  const fs::path last_path = req.out / "checkpoints" / "last.ckpt";
  const fs::path best_path = req.out / "checkpoints" / "best.ckpt";
  std::error_code ec;
  if (req.resume) {
    if (!fs::exists(last_path, ec))
      throw InvalidInput(last_path.string() + ": no checkpoint to resume from");
    LoadedCheckpoint last = load_checkpoint(last_path);
    if (last.items.size() != ds.n_items())
      throw InvalidInput(last_path.string() + ": checkpoint and dataset disagree on the item count");
    model = std::move(last.model);
    const int64_t done = checkpoint_epoch(last.meta);
    keep_log_until(log_path, model->iterative() ? done : -1);  // a one-shot fit is simply redone
    GENREC_LOG_INFO("resuming %s from epoch %lld", model->type().c_str(), static_cast<long long>(done));
  } else {
    prepare_run_dir(req, cfg);
  }

  GENREC_LOG_INFO("training %s on %s: %d users, %d items, %lld train events", model->type().c_str(),
                  s.data_path.string().c_str(), ds.n_users(), ds.n_items(),
                  static_cast<long long>(split.n_train_events()));
  auto t0 = std::chrono::steady_clock::now();
  TrainContext ctx{ds, split, progress, &s.eval, nullptr};
  // Log line first, then checkpoints: a run killed in between redoes that epoch on resume.
  ctx.on_validation = [&](const Recommender& m, const nlohmann::json& line, bool is_best) {
    append_line(log_path, line.dump());
    nlohmann::json meta = {{"dataset", s.data_path.string()}, {"epoch", line.value("epoch", int64_t{0})}};
    if (is_best) save_checkpoint(best_path, m, ds.items, meta);
    if (s.keep_checkpoints) save_checkpoint(epoch_checkpoint_path(req.out, line), m, ds.items, meta);
    save_checkpoint(last_path, m, ds.items, meta);
  };
  model->fit(ctx);
  double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  TrainResult result;
  result.run_dir = req.out;
  result.train_seconds = train_s;
  // The model now holds its best weights (with data.train_on_valid: its last; no validation).
  if (!s.split.train_on_valid) result.valid = evaluate(*model, ds, split, SplitPart::Valid, s.eval, progress);
  int64_t best_epoch = 0;
  double seconds_to_best = train_s;  // non-iterative models: the whole fit
  if (!model->iterative()) {
    nlohmann::json meta = {{"dataset", s.data_path.string()}, {"epoch", 0}};
    nlohmann::json line = {{"epoch", 0}, {"train_seconds", train_s}};
    if (!s.split.train_on_valid) line["valid"] = with_time(result.valid);
    append_line(log_path, line.dump());
    // Non-iterative models have one candidate checkpoint: it is both best and last.
    save_checkpoint(last_path, *model, ds.items, meta);
    save_checkpoint(best_path, *model, ds.items, meta);
  } else {
    std::tie(best_epoch, seconds_to_best) = best_in_log(log_path);
  }

  result.test = evaluate(*model, ds, split, SplitPart::Test, s.eval, progress);
  nlohmann::json metrics = result.test.to_json();
  metrics["model"] = model->type();
  metrics["best_epoch"] = best_epoch;
  metrics["train_seconds"] = train_s;
  metrics["seconds_to_best"] = seconds_to_best;  // training + validation wall time until the best checkpoint
  metrics["valid"] = result.valid.metrics;  // {} with data.train_on_valid
  write_file_atomic(req.out / "metrics.json", metrics.dump(2) + "\n");
  GENREC_LOG_INFO("%s: test recall@10 %.4f ndcg@10 %.4f (%lld users)", model->type().c_str(),
                  result.test.metrics.count("recall@10") ? result.test.metrics.at("recall@10") : -1.0,
                  result.test.metrics.count("ndcg@10") ? result.test.metrics.at("ndcg@10") : -1.0,
                  static_cast<long long>(result.test.n_users));
  return result;
}

namespace {
// eval --predictions: the TSV eval_run's comment (runner.h) describes.
void write_rank_predictions(const fs::path& path, const Dataset& ds, const RankData& rd,
                            const std::vector<RankPrediction>& predictions) {
  std::string out = "user\titem\ttimestamp\thas_history";
  for (const auto& t : rd.tasks) out += "\t" + t.name + "\t" + t.name + "_label";
  out += "\n";
  char buf[64];
  for (const auto& p : predictions) {
    out += ds.users.raw(p.user) + "\t" + ds.items.raw(ds.event_items[static_cast<size_t>(p.event)]) + "\t";
    if (ds.has_timestamps()) out += std::to_string(ds.event_timestamps[static_cast<size_t>(p.event)]);
    out += p.has_history ? "\t1" : "\t0";
    for (size_t k = 0; k < p.scores.size(); ++k) {
      std::snprintf(buf, sizeof buf, "\t%.9g\t", p.scores[k]);
      out += buf;
      if (!std::isnan(p.labels[k])) {
        std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(p.labels[k]));
        out += buf;
      }
    }
    out += "\n";
  }
  write_file_atomic(path, out);
}
}  // namespace

namespace {

// eval --set: a model.* or train.* key that evaluation does not read is fixed when the run is
// trained, so overriding it would change nothing; it is refused rather than silently ignored.
void check_eval_overrides(Config& cfg, const std::vector<std::string>& overrides) {
  const auto& tiger_keys = tiger_inference_keys();
  const bool tiger = is_tiger_run(cfg);
  for (const std::string& o : overrides) {
    const std::string key = override_key(o);
    if (key.rfind("model.", 0) != 0 && key.rfind("train.", 0) != 0) continue;  // data.*, eval.*, index.*: read
    if (key == "train.threads") continue;
    if (tiger && std::find(tiger_keys.begin(), tiger_keys.end(), key) != tiger_keys.end()) continue;
    throw InvalidInput("eval: --set " + o + ": " + key +
                       " is fixed when the run is trained and evaluation does not read it (evaluation reads data.*, "
                       "eval.*, train.threads and, for TIGER runs, " + comma_list(tiger_keys) + ")");
  }
}

}  // namespace

EvalResult eval_run(const fs::path& run_dir, SplitPart part, const std::vector<std::string>& overrides,
                    const ProgressCallback& progress, const fs::path& target_items, const fs::path& predictions,
                    const fs::path& checkpoint) {
  if (!predictions.empty()) {  // before any work: a bad path would otherwise surface after evaluating
    const fs::path dir = predictions.parent_path().empty() ? fs::path(".") : predictions.parent_path();
    if (!fs::is_directory(dir))
      throw InvalidInput("eval: --predictions " + predictions.string() + ": no such directory " + dir.string());
    if (fs::is_directory(predictions)) throw InvalidInput("eval: --predictions " + predictions.string() + " is a directory");
  }
  // The checkpoint is resolved before any work: a wrong path fails at once.
  const bool in_run = checkpoint.empty() || checkpoint == "best" || checkpoint == "last";
  const fs::path best = !in_run ? checkpoint : run_dir / "checkpoints" / (checkpoint == "last" ? "last.ckpt" : "best.ckpt");
  if (!fs::is_regular_file(best))
    throw InvalidInput("eval: " + best.string() + ": no such checkpoint file" +
                       (in_run ? " (is " + run_dir.string() + " a finished run directory?)" : ""));
  Config cfg = load_run_config(run_dir, overrides);
  check_eval_overrides(cfg, overrides);
  RunSettings s = read_settings(cfg);
  if (part == SplitPart::Valid && s.split.train_on_valid)
    throw InvalidInput("eval: " + run_dir.string() +
                       " trained on its validation events (data.train_on_valid = true): only --split test measures it");
  set_threads(s.threads);
  Dataset ds;
  try {
    ds = load_dataset(s.data_path, LoadOptions{false, true});
  } catch (...) {
    rethrow_with_stage("loading dataset of run " + run_dir.string());
  }
  // The run's config names the model family (as for train_run), so the checkpoint is read once;
  // a checkpoint of the other family is refused by its loader, naming the file.
  if (is_ranking_run(cfg)) {
    if (!target_items.empty())
      throw InvalidInput("eval: --target-items applies to retrieval runs; " + run_dir.string() +
                         " is a ranking run (its temporal requests have many candidates, not one target)");
    LoadedRanker r = load_ranker_checkpoint(best);
    if (r.items.size() != ds.n_items())
      throw InvalidInput(best.string() + ": checkpoint has " + std::to_string(r.items.size()) +
                         " items but dataset " + s.data_path.string() + " has " + std::to_string(ds.n_items()));
    // The protocol is overridable here: --set eval.history=cut|streaming.
    r.ranker->set_eval_history(cfg.get_string("eval.history", r.ranker->options().eval_history));
    RankData rd = make_rank_data(ds, r.ranker->options().data_options());
    if (predictions.empty()) return r.ranker->evaluate(ds, rd, make_split(ds, s.split), part, progress);
    std::vector<RankPrediction> scored;
    EvalResult result = r.ranker->evaluate(ds, rd, make_split(ds, s.split), part, progress, &scored);
    write_rank_predictions(predictions, ds, rd, scored);
    return result;
  }
  if (!predictions.empty())
    throw InvalidInput("eval: --predictions applies to ranking runs; " + run_dir.string() +
                       " is a retrieval run (its metrics come from full rankings, not per-candidate scores)");
  LoadedCheckpoint ckpt = load_checkpoint(best);
  if (ckpt.items.size() != ds.n_items())
    throw InvalidInput(best.string() + ": checkpoint has " + std::to_string(ckpt.items.size()) +
                       " items but dataset " + s.data_path.string() + " has " + std::to_string(ds.n_items()));
  Split split = make_split(ds, s.split);
  // TIGER's inference options, overridable here with --set (model.beam, model.cold_fraction, ...).
  if (auto* tiger = dynamic_cast<TigerRecommender*>(ckpt.model.get())) apply_tiger_inference(*tiger, cfg, ds, split);
  if (target_items.empty()) return evaluate(*ckpt.model, ds, split, part, s.eval, progress);

  // Only users whose target of `part` is a listed item (e.g. held-out cold-start items).
  const std::vector<int32_t> listed = read_item_list(target_items, ds);
  std::vector<uint8_t> is_listed(static_cast<size_t>(ds.n_items()) + 1, 0);
  for (int32_t it : listed) is_listed[static_cast<size_t>(it)] = 1;
  std::vector<int64_t>& targets = split.targets(part);
  const int64_t before = split.n_targets(part);
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    int64_t& t = targets[static_cast<size_t>(u)];
    if (t >= 0 && !is_listed[static_cast<size_t>(ds.user(u).items[t])]) t = -1;
  }
  const int64_t kept = split.n_targets(part);
  const char* part_name = split_part_name(part);
  if (kept == 0)
    throw InvalidInput(std::string("eval: no ") + part_name + " target is among the " + std::to_string(listed.size()) +
                       " items listed in " + target_items.string());
  GENREC_LOG_INFO("%lld of %lld %s targets are among the %zu items listed in %s", static_cast<long long>(kept),
                  static_cast<long long>(before), part_name, listed.size(), target_items.string().c_str());
  EvalResult r = evaluate(*ckpt.model, ds, split, part, s.eval, progress);
  r.protocol += "; targets restricted to " + std::to_string(listed.size()) + " items listed in " + target_items.string() +
                " (" + std::to_string(r.n_users) + " users)";
  return r;
}

nlohmann::json rank_cli_run(const fs::path& run_dir, const RankCliRequest& req) {
  if (req.user.has_value() == req.history.has_value()) throw InvalidInput("rank: give exactly one of --user and --history");
  if (req.candidates.empty()) throw InvalidInput("rank: --candidates must list at least one item");
  Config cfg = load_run_config(run_dir, {});
  RunSettings s = read_settings(cfg);
  set_threads(s.threads);
  LoadedRanker r = load_ranker_checkpoint(run_dir / "checkpoints" / "best.ckpt");
  Dataset ds = load_run_dataset(s.data_path, "loading dataset of run " + run_dir.string());
  if (r.items.size() != ds.n_items())
    throw InvalidInput(run_dir.string() + ": checkpoint and dataset " + s.data_path.string() + " disagree on the item count");
  RankData rd = make_rank_data(ds, r.ranker->options().data_options());
  std::vector<int32_t> items, feedback, cands;
  std::vector<int64_t> times;
  std::string unknown;
  auto item_id = [&](const std::string& raw) -> int32_t {
    auto id = r.items.find(raw);
    if (!id) unknown += (unknown.empty() ? "" : ", ") + raw;
    return id ? *id : 0;
  };
  if (req.user) {
    auto u = ds.users.find(*req.user);
    if (!u) throw InvalidInput("rank: unknown user '" + *req.user + "' in dataset " + s.data_path.string());
    append_user_history(ds, rd, *u, items, feedback, times);
  } else {
    for (const auto& entry : *req.history) {
      const auto colon = entry.rfind(':');
      const std::string raw = colon == std::string::npos ? entry : entry.substr(0, colon);
      int32_t fb = 1;
      if (colon != std::string::npos) {
        const std::string name = entry.substr(colon + 1);
        fb = feedback_token(rd, name);
        if (fb == 0) {
          std::string known;
          for (const auto& n : rd.feedback_names) known += (known.empty() ? "" : ", ") + n;
          throw InvalidInput("rank: --history entry '" + entry + "': unknown feedback '" + name + "' (known: " + known + ")");
        }
      }
      items.push_back(item_id(raw));
      feedback.push_back(fb);
    }
  }
  for (const auto& raw : req.candidates) cands.push_back(item_id(raw));
  if (!unknown.empty()) throw InvalidInput("rank: unknown item id(s): " + unknown);
  torch::Tensor probs;
  torch::Tensor out = r.ranker->score(rd, items, feedback, times, cands, req.request_time, &probs);
  const std::vector<CandidateScores> scored = read_candidate_scores(rd, out, probs);
  nlohmann::json list = nlohmann::json::array();
  for (size_t m = 0; m < cands.size(); ++m) {
    nlohmann::json entry = {{"item", req.candidates[m]}, {"scores", scored[m].tasks}};
    if (probs.defined()) entry["feedback"] = scored[m].feedback;
    list.push_back(std::move(entry));
  }
  return {{"user", req.user ? nlohmann::json(*req.user) : nlohmann::json()},
          {"model", r.ranker->options().type},
          {"history_length", items.size()},
          {"candidates", list}};
}

RunInfo read_run_info(const fs::path& run_dir) {
  Config cfg = load_run_config(run_dir, {});
  RunSettings s = read_settings(cfg);
  return RunInfo{s.data_path, s.threads};
}

int64_t prepare_tiger_inference(const fs::path& run_dir, Recommender& model, const Dataset& ds,
                                const std::vector<std::string>& overrides) {
  auto* tiger = dynamic_cast<TigerRecommender*>(&model);
  if (!tiger) return 0;
  Config cfg = load_run_config(run_dir, overrides);
  RunSettings s = read_settings(cfg);
  return apply_tiger_inference(*tiger, cfg, ds, make_split(ds, s.split));
}

int64_t tiger_request_beam(int64_t k, const std::vector<int32_t>& history, bool exclude_seen) {
  if (!exclude_seen) return k;
  std::vector<int32_t> seen = history;
  std::sort(seen.begin(), seen.end());
  return k + (std::unique(seen.begin(), seen.end()) - seen.begin());
}

nlohmann::json recommend_run(const fs::path& run_dir, const RecommendRequest& req) {
  if (req.user.has_value() == req.history.has_value())
    throw InvalidInput("recommend: give exactly one of --user and --history");
  if (req.k < 1) throw InvalidInput("recommend: --k must be >= 1");
  RunSettings s;
  const ItemIndexOptions index_options = index_options_for(run_dir, req.overrides, req.index, "recommend", s, true);
  set_threads(s.threads);
  LoadedCheckpoint ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt");
  const Vocabulary& items = ckpt.items;

  std::vector<int32_t> hist_items;
  std::vector<int64_t> hist_ts;
  History h;
  Dataset ds;
  if (req.user) {
    ds = load_dataset(s.data_path, LoadOptions{false, true});
    auto u = ds.users.find(*req.user);
    if (!u) throw InvalidInput("recommend: unknown user '" + *req.user + "' in dataset " + s.data_path.string());
    UserEvents ev = ds.user(*u);
    hist_items.assign(ev.items, ev.items + ev.size);
    if (ev.timestamps) hist_ts.assign(ev.timestamps, ev.timestamps + ev.size);
    h.user = *u;
  } else {
    // Entries are ITEM or ITEM@TIMESTAMP (seconds); either every entry has a time or none.
    std::string unknown;
    size_t timed = 0;
    for (const auto& entry : *req.history) {
      std::string raw = entry;
      const auto at = entry.rfind('@');
      if (at != std::string::npos && at + 1 < entry.size() &&
          entry.find_first_not_of("0123456789", at + 1) == std::string::npos) {
        raw = entry.substr(0, at);
        try {
          hist_ts.push_back(std::stoll(entry.substr(at + 1)));
        } catch (const std::exception&) {
          throw InvalidInput("recommend: --history entry '" + entry + "': timestamp out of range");
        }
        ++timed;
      }
      auto id = items.find(raw);
      if (!id) {
        unknown += (unknown.empty() ? "" : ", ") + raw;
        continue;
      }
      hist_items.push_back(*id);
    }
    if (!unknown.empty()) throw InvalidInput("recommend: unknown item id(s) in --history: " + unknown);
    if (timed != 0 && timed != req.history->size())
      throw InvalidInput("recommend: --history: give a timestamp (ITEM@SECONDS) for every entry or for none");
  }
  h.items = hist_items.data();
  h.timestamps = hist_ts.empty() ? nullptr : hist_ts.data();
  h.size = static_cast<int64_t>(hist_items.size());
  h.request_time = req.request_time;

  if (auto* tiger = dynamic_cast<TigerRecommender*>(ckpt.model.get())) {
    // TIGER scores only its beam's items: the beam must hold k items, plus the history's items
    // when those are left out. Its inference options (cold start, ...) as the run was configured,
    // or as --set overrides them; cold start needs the run's training events.
    if (!req.user) ds = load_dataset(s.data_path, LoadOptions{false, true});
    tiger->set_beam(std::max(prepare_tiger_inference(run_dir, *tiger, ds, req.overrides),
                             tiger_request_beam(req.k, hist_items, req.exclude_seen)));
  }

  nlohmann::json list = nlohmann::json::array();
  if (index_options.kind == "exact") {
    // The model's own scores over the whole catalogue (any model).
    torch::Tensor scores = ckpt.model->score({h}).to(torch::kCPU, torch::kFloat).contiguous();
    std::vector<uint8_t> exclude;
    if (req.exclude_seen) {
      exclude.assign(static_cast<size_t>(items.size()) + 1, 0);
      for (int32_t it : hist_items) exclude[static_cast<size_t>(it)] = 1;
    }
    const float* row = scores.data_ptr<float>();
    auto top = top_k_items(row, items.size(), req.k, exclude.empty() ? nullptr : exclude.data());
    for (size_t r = 0; r < top.size(); ++r)
      list.push_back({{"rank", r + 1}, {"item", items.raw(top[r])}, {"score", row[top[r]]}});
  } else {
    // Query vector · item vectors through the index (built here, per call).
    torch::Tensor table = item_vectors(*ckpt.model, index_options.kind, "recommend");
    const int64_t dim = table.size(1);
    ItemIndex index(table.data_ptr<float>() + dim, items.size(), dim, index_options);
    torch::Tensor query = ckpt.model->query_embeddings({h}).to(torch::kCPU, torch::kFloat).contiguous();  // [1, D]
    std::vector<std::vector<int32_t>> exclude;
    if (req.exclude_seen) exclude.push_back(hist_items);
    // A model with history offsets (score = q·e + offset for history items): search deep enough
    // that re-ranking the returned items with their offsets, next to every offset item scored
    // exactly, gives the model's own top k over what the index finds.
    const std::vector<std::pair<int32_t, float>> offsets = ckpt.model->history_offsets(h);
    SearchResult top = index.search(query.data_ptr<float>(), 1, req.k + static_cast<int64_t>(offsets.size()), exclude);
    std::unordered_map<int32_t, float> off(offsets.begin(), offsets.end());
    std::vector<std::pair<float, int32_t>> ranked;
    for (int64_t r = 0; r < top.k && top.id(0, r) != 0; ++r) {
      auto f = off.find(top.id(0, r));
      ranked.emplace_back(top.score(0, r) + (f == off.end() ? 0.0f : f->second), top.id(0, r));
      if (f != off.end()) off.erase(f);
    }
    const float* q = query.data_ptr<float>();
    for (const auto& [item, o] : off) {
      if (req.exclude_seen) continue;  // every offset item is a seen item
      const float* e = table.data_ptr<float>() + static_cast<int64_t>(item) * dim;
      float dot = 0;
      for (int64_t d = 0; d < dim; ++d) dot += q[d] * e[d];
      ranked.emplace_back(dot + o, item);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t r = 0; r < ranked.size() && static_cast<int64_t>(r) < req.k; ++r)
      list.push_back({{"rank", r + 1}, {"item", items.raw(ranked[r].second)}, {"score", ranked[r].first}});
  }
  nlohmann::json out;
  out["user"] = req.user ? nlohmann::json(*req.user) : nlohmann::json(nullptr);
  out["history_length"] = h.size;
  out["model"] = ckpt.meta.value("type", "");
  out["index"] = index_options.kind;
  out["exclude_seen"] = req.exclude_seen;
  out["items"] = list;
  return out;
}

namespace {
// Nearest-rank percentile of unsorted samples (p in [0, 1]).
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

nlohmann::json index_eval_run(const fs::path& run_dir, const IndexEvalRequest& req) {
  constexpr int64_t k = 10;
  if (req.users < 0) throw InvalidInput("index-eval: --users must be >= 0 (0 = all test users), got " + std::to_string(req.users));
  RunSettings s;
  const ItemIndexOptions index_options = index_options_for(run_dir, req.overrides, req.index, "index-eval", s);
  set_threads(s.threads);
  LoadedCheckpoint ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt");
  torch::Tensor table = item_vectors(*ckpt.model, index_options.kind, "index-eval");
  Dataset ds;
  try {
    ds = load_dataset(s.data_path, LoadOptions{false, true});
  } catch (...) {
    rethrow_with_stage("loading dataset of run " + run_dir.string());
  }
  if (ckpt.items.size() != ds.n_items())
    throw InvalidInput(run_dir.string() + ": checkpoint has " + std::to_string(ckpt.items.size()) +
                       " items but dataset " + s.data_path.string() + " has " + std::to_string(ds.n_items()));
  Split split = make_split(ds, s.split);

  // Queries: each test user's history before its target, as evaluation scores it.
  std::vector<History> histories;
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    const int64_t t = split.test_index[static_cast<size_t>(u)];
    if (t < 0) continue;
    UserEvents ev = ds.user(u);
    histories.push_back(History{u, ev.items, ev.timestamps, t, ev.timestamps ? ev.timestamps[t] : -1});
    if (req.users > 0 && static_cast<int64_t>(histories.size()) == req.users) break;
  }
  if (histories.empty()) throw InvalidInput("index-eval: the run's split has no test users");
  const auto n_queries = static_cast<int64_t>(histories.size());
  const int64_t dim = table.size(1);
  std::vector<float> queries(static_cast<size_t>(n_queries * dim));
  auto t0 = std::chrono::steady_clock::now();
  const int64_t batch = std::max<int64_t>(1, s.eval.batch_size);
  for (int64_t b0 = 0; b0 < n_queries; b0 += batch) {
    std::vector<History> part(histories.begin() + b0, histories.begin() + std::min(n_queries, b0 + batch));
    torch::Tensor q = ckpt.model->query_embeddings(part).to(torch::kCPU, torch::kFloat).contiguous();
    std::copy(q.data_ptr<float>(), q.data_ptr<float>() + q.numel(), queries.begin() + b0 * dim);
  }
  const double encode_s = seconds_since(t0);

  const float* item_rows = table.data_ptr<float>() + dim;  // skip the padding row
  const int32_t n_items = ds.n_items();
  ItemIndexOptions exact_options;
  ItemIndex exact(item_rows, n_items, dim, exact_options);
  ItemIndex index(item_rows, n_items, dim, index_options);
  SearchResult reference = exact.search(queries.data(), n_queries, k);
  t0 = std::chrono::steady_clock::now();
  SearchResult found = index.search(queries.data(), n_queries, k);
  const double batch_s = seconds_since(t0);

  // One query per call, on one thread: what a request in a serving loop pays.
  const int threads = index_threads();
  set_index_threads(1);
  std::vector<double> latency_ms, exact_latency_ms;
  for (int64_t q = 0; q < n_queries; ++q) {
    t0 = std::chrono::steady_clock::now();
    index.search(queries.data() + q * dim, 1, k);
    latency_ms.push_back(seconds_since(t0) * 1e3);
    t0 = std::chrono::steady_clock::now();
    exact.search(queries.data() + q * dim, 1, k);
    exact_latency_ms.push_back(seconds_since(t0) * 1e3);
  }
  set_index_threads(threads);

  double recall_sum = 0;
  for (int64_t q = 0; q < n_queries; ++q) {
    int64_t relevant = 0, hit = 0;
    for (int64_t r = 0; r < k; ++r) {
      const int32_t id = reference.id(q, r);
      if (id == 0) continue;
      ++relevant;
      for (int64_t j = 0; j < k; ++j) hit += found.id(q, j) == id;
    }
    recall_sum += relevant > 0 ? static_cast<double>(hit) / static_cast<double>(relevant) : 1.0;
  }
  nlohmann::json out;
  out["run"] = run_dir.string();
  out["model"] = ckpt.meta.value("type", "");
  out["index"] = index_options.to_json(n_items);
  out["n_items"] = n_items;
  out["dim"] = dim;
  out["users"] = n_queries;
  out["recall_at_10_vs_exact"] = recall_sum / static_cast<double>(n_queries);
  out["build_seconds"] = index.build_seconds();
  out["latency_ms"] = {{"p50", percentile(latency_ms, 0.5)}, {"p99", percentile(latency_ms, 0.99)}};
  out["exact_latency_ms"] = {{"p50", percentile(exact_latency_ms, 0.5)}, {"p99", percentile(exact_latency_ms, 0.99)}};
  out["latency_threads"] = 1;
  out["batch_queries_per_second"] = batch_s > 0 ? static_cast<double>(n_queries) / batch_s : 0.0;
  out["batch_threads"] = threads;
  out["encode_seconds"] = encode_s;
  return out;
}

}  // namespace genrec
