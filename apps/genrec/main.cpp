// genrec command-line interface: parses arguments, calls the library, maps errors to exit codes
// (0 success, 1 operation failed, 2 bad usage or bad input).
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "genrec/core/blas.h"
#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/data/dataset.h"
#include "genrec/data/generator.h"
#include "genrec/data/holdout.h"
#include "genrec/data/import.h"
#include "genrec/data/stats.h"
#include "genrec/index/item_index.h"
#include "genrec/models/export.h"
#include "genrec/serve/engine.h"
#include "genrec/tokenizers/sid_build.h"
#include "genrec/train/runner.h"
#include "http_server.h"
#include "progress_bar.h"

namespace fs = std::filesystem;
using namespace genrec;

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitBadInput = 2;

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, ','))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

// Built-in configurations used by `genrec demo` (same keys as files in configs/).
const char* kDemoPop = R"(# most-popular baseline
[model]
type = "pop"
[eval]
ks = [5, 10, 20]
)";
const char* kDemoMarkov = R"(# first-order item-to-item transitions
[model]
type = "markov"
window = 2
decay = 0.3
[eval]
ks = [5, 10, 20]
)";

const char* kDemoSasrec = R"(# SASRec: causal self-attention over item ids, full softmax, early stopping
[model]
type = "sasrec"
d_model = 32
max_len = 50
n_blocks = 2
n_heads = 1
dropout = 0.2
[train]
epochs = 30
batch_size = 128
lr = 0.002
eval_every = 2
patience = 3
[eval]
ks = [5, 10, 20]
)";

struct DemoArgs {
  fs::path out = "genrec-demo";
  int64_t users = 2000, items = 1000;
  uint64_t seed = 42;
};

int run_demo(const DemoArgs& a, const ProgressCallback& progress) {
  const fs::path marker = a.out / ".genrec-demo";
  std::error_code ec;
  if (fs::exists(a.out, ec)) {
    if (!fs::exists(marker, ec) && !fs::is_empty(a.out, ec))
      throw InvalidInput(a.out.string() + ": exists and was not made by `genrec demo`; choose another --out");
    fs::remove_all(a.out, ec);
  }
  fs::create_directories(a.out, ec);
  write_file_atomic(marker, "made by genrec demo; safe to delete\n");

  std::cerr << "== 1/4 generate: " << a.users << " users, " << a.items << " items (seed " << a.seed << ")\n";
  GeneratorOptions g;
  g.n_users = a.users;
  g.n_items = a.items;
  g.seed = a.seed;
  g.n_clusters = std::max<int64_t>(1, std::min<int64_t>(20, a.items / 10));
  save_dataset(generate_dataset(g, progress), a.out / "data");
  nlohmann::json stats = dataset_stats(load_dataset(a.out / "data"));
  std::cerr << "   " << stats["users"] << " users, " << stats["items"] << " items, " << stats["interactions"]
            << " interactions -> " << (a.out / "data").string() << "\n";

  std::cerr << "== 2/4 train + evaluate (leave-one-out, full ranking)\n";
  nlohmann::json table = nlohmann::json::object();
  for (auto [name, text] :
       {std::pair{"pop", kDemoPop}, std::pair{"markov", kDemoMarkov}, std::pair{"sasrec", kDemoSasrec}}) {
    TrainRequest req;
    req.config_text = text;
    req.data = a.out / "data";
    req.out = a.out / "runs" / name;
    TrainResult r = train_run(req, progress);
    table[name] = r.test.metrics;
    std::fprintf(stderr, "   %-7s test recall@10 %.4f  ndcg@10 %.4f  mrr %.4f  (%lld users, fit %.2fs)\n", name,
                 r.test.metrics.at("recall@10"), r.test.metrics.at("ndcg@10"), r.test.metrics.at("mrr"),
                 static_cast<long long>(r.test.n_users), r.train_seconds);
  }
  std::cerr << "== 3/4 eval from the saved run (genrec eval --run " << (a.out / "runs" / "sasrec").string() << ")\n";
  EvalResult again = eval_run(a.out / "runs" / "sasrec", SplitPart::Test, {}, progress);
  std::fprintf(stderr, "   sasrec  test recall@10 %.4f (reloaded best checkpoint)\n", again.metrics.at("recall@10"));

  std::cerr << "== 4/4 recommend for user 1 (genrec recommend --run ... --user 1 --k 5)\n";
  RecommendRequest rr;
  rr.user = "1";
  rr.k = 5;
  rr.exclude_seen = true;
  nlohmann::json rec = recommend_run(a.out / "runs" / "sasrec", rr);

  nlohmann::json summary = {{"dataset", (a.out / "data").string()},
                            {"runs",
                             {(a.out / "runs" / "pop").string(), (a.out / "runs" / "markov").string(),
                              (a.out / "runs" / "sasrec").string()}},
                            {"test_metrics", table},
                            {"markov_over_pop_recall@10",
                             table["pop"]["recall@10"].get<double>() > 0
                                 ? nlohmann::json(table["markov"]["recall@10"].get<double>() / table["pop"]["recall@10"].get<double>())
                                 : nlohmann::json(nullptr)},
                            {"recommend_user_1", rec}};
  print_json(summary);
  return kExitOk;
}

// ---- serve ----
struct ServeArgs {
  serve::EngineOptions engine;
  server::HttpOptions http;
  std::string token_file;
  bool no_sync = false;
};

// The running server, for the signal handler (which only sets a flag and writes to a pipe).
std::atomic<server::HttpServer*> g_serving{nullptr};

extern "C" void on_stop_signal(int) {
  if (server::HttpServer* s = g_serving.load()) s->request_stop();
}

std::string read_token(const ServeArgs& a) {
  std::string token;
  if (!a.token_file.empty()) {
    token = read_file(a.token_file);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front()))) token.erase(token.begin());
    if (token.empty()) throw InvalidInput(a.token_file + ": --token-file is empty");
  } else if (const char* env = std::getenv("GENREC_SERVE_TOKEN")) {
    token = env;
  }
  for (char c : token)
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      throw InvalidInput("the serving token must not contain spaces or control characters");
  return token;
}

int run_serve(ServeArgs a) {
  a.engine.sync_writes = !a.no_sync;
  a.http.token = read_token(a);
  GENREC_LOG_INFO("serve: loading %s%s%s", a.engine.run_dir.string().c_str(), a.engine.rank_run.empty() ? "" : " + ranking run ",
                  a.engine.rank_run.string().c_str());
  serve::Engine engine(a.engine);
  server::HttpServer http(engine, a.http);
  http.bind();

  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  g_serving.store(&http);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const std::string host = a.http.host.find(':') != std::string::npos ? "[" + a.http.host + "]" : a.http.host;
  nlohmann::json ready = {{"listening", "http://" + host + ":" + std::to_string(http.port())},
                          {"port", http.port()},
                          {"pid", static_cast<int64_t>(::getpid())},
                          {"run", a.engine.run_dir.string()},
                          {"workers", a.http.workers},
                          {"auth", !a.http.token.empty()}};
  std::cout << ready.dump() << std::endl;  // one line, flushed: scripts and tests wait for it
  if (a.http.token.empty() && a.http.host != "127.0.0.1" && a.http.host != "localhost" && a.http.host != "::1")
    GENREC_LOG_WARN("serve: no token (--token-file or GENREC_SERVE_TOKEN): /v1/events and /v1/reload are open to %s",
                    a.http.host.c_str());
  GENREC_LOG_INFO("serve: listening on http://%s:%d (%d workers); SIGINT/SIGTERM stops", host.c_str(), http.port(),
                  a.http.workers);

  const bool drained = http.run();
  if (!drained) {
    // Worker threads still hold the engine: leave without destructors (acknowledged events are
    // already durable).
    std::fprintf(stderr, "error: shutdown: in-flight requests did not finish in time\n");
    std::fflush(stderr);
    std::_Exit(kExitFailure);
  }
  g_serving.store(nullptr);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  configure_allocator_for_tensors();
  const std::string blas_note = select_blas_kernels();  // before any tensor work (core/blas.h)
  CLI::App app{"genrec: generative recommendation engine (import data, train, evaluate and recommend with sequence models)", "genrec"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("genrec ") + GENREC_VERSION);
  std::string log_level = "info";
  bool quiet = false;
  app.add_option("--log-level", log_level, "Log level: debug, info, warn, error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "No progress output and no info logs");

  // ---- data ----
  auto* data = app.add_subcommand("data", "Import, inspect and generate datasets");
  data->require_subcommand(1);

  ImportOptions imp;
  std::vector<std::string> inputs, item_files;
  std::string ids = "auto", out_dir;
  bool force = false, no_header = false;
  int64_t k_core = 0;
  auto* import = data->add_subcommand("import", "Import an interaction log (and item side information) into a dataset directory");
  import->add_option("--format", imp.reader.format, "Input format: s3rec, sasrec, movielens, ml-100k, csv, tsv, jsonl")
      ->required()
      ->check(CLI::IsMember(interaction_formats()));
  import->add_option("--input", inputs, "Interaction file (repeat to concatenate several, read in order)")->required();
  import->add_option("--items", item_files, "Item side information file (repeatable): *_item2attributes.json, item text JSON, movies.dat, u.item");
  import->add_option("--items-format", imp.item_format, "Side information format: auto, attributes, text, movies, u.item")
      ->check(CLI::IsMember({"auto", "attributes", "text", "movies", "u.item"}))
      ->capture_default_str();
  import->add_option("--out", out_dir, "Dataset directory to create")->required();
  import->add_option("--ids", ids, "Id kind: numeric (non-negative integers, sorted by value) or string; auto = numeric for s3rec/sasrec/movielens/ml-100k, string otherwise")
      ->check(CLI::IsMember({"auto", "numeric", "string"}))
      ->capture_default_str();
  auto* user_col = import->add_option("--user-col", imp.reader.user_col, "csv/tsv/jsonl: user column (name, or 1-based number with --no-header, default 1 then)")->capture_default_str();
  auto* item_col = import->add_option("--item-col", imp.reader.item_col, "csv/tsv/jsonl: item column (default 2 with --no-header)")->capture_default_str();
  auto* time_col = import->add_option("--time-col", imp.reader.time_col, "csv/tsv/jsonl: timestamp column (epoch seconds or ISO-8601); optional")->capture_default_str();
  auto* rating_col = import->add_option("--rating-col", imp.reader.rating_col, "csv/tsv/jsonl: rating column; optional")->capture_default_str();
  auto* action_col = import->add_option("--action-col", imp.reader.action_col, "csv/tsv/jsonl: action column; optional")->capture_default_str();
  import->add_option("--history-col", imp.reader.history_col, "csv/tsv/jsonl: column with the items before this row's item (list literal), for sliding-window sample files");
  import->add_flag("--no-header", no_header, "csv/tsv: the first line is data, columns are named by number");
  import->add_option("--dedup", imp.cleaning.dedup, "Drop repeated interactions: none, consecutive, all")
      ->check(CLI::IsMember({"none", "consecutive", "all"}))
      ->capture_default_str();
  import->add_option("--min-rating", imp.cleaning.min_rating, "Drop rows rated below this value");
  import->add_option("--k-core", k_core, "Keep the k-core: every user and item with at least k interactions");
  import->add_option("--k-core-users", imp.cleaning.k_core_users, "k-core threshold for users only");
  import->add_option("--k-core-items", imp.cleaning.k_core_items, "k-core threshold for items only");
  import->add_option("--min-seq-len", imp.cleaning.min_seq_len, "Drop users with fewer events (after k-core)");
  import->add_flag("--cold-items", imp.cleaning.include_cold_items, "Items that have side information but no interactions join the catalogue");
  import->add_flag("--skip-bad-rows", imp.reader.skip_bad_rows, "Skip malformed rows (counted and reported) instead of failing");
  import->add_flag("--force", force, "Replace an existing output directory");

  std::string stats_dir;
  auto* stats = data->add_subcommand("stats", "Print dataset statistics as JSON");
  stats->add_option("dir", stats_dir, "Dataset directory")->required();

  GeneratorOptions gen;
  std::string gen_out;
  auto* generate = data->add_subcommand("generate", "Generate a synthetic dataset with interest clusters, item-to-item transitions and popularity skew");
  generate->add_option("--out", gen_out, "Dataset directory to create")->required();
  generate->add_option("--users", gen.n_users, "Users")->capture_default_str();
  generate->add_option("--items", gen.n_items, "Items")->capture_default_str();
  generate->add_option("--seed", gen.seed, "Random seed")->capture_default_str();
  generate->add_option("--clusters", gen.n_clusters, "Interest clusters")->capture_default_str();
  generate->add_option("--mean-len", gen.mean_len, "Mean sequence length")->capture_default_str();
  generate->add_option("--max-len", gen.max_len, "Longest sequence")->capture_default_str();
  generate->add_option("--p-transition", gen.p_transition, "Chance the next item follows the transition graph")->capture_default_str();
  generate->add_option("--actions", gen.n_action_types,
                       "Action types per event with a known ground truth (0 = none; skip, click, like, share, ...)")
      ->capture_default_str();
  generate->add_flag("--ratings", gen.ratings, "Ratings 1..5 driven by user-item affinity (ground truth for ranking)");
  generate->add_flag("--force", force, "Replace an existing output directory");

  std::string ho_data, ho_out;
  double ho_fraction = 0.05;
  uint64_t ho_seed = 1;
  bool ho_overwrite = false;
  auto* holdout = data->add_subcommand(
      "holdout-items",
      "Cold-start evaluation: copy a dataset with a random share of items held out of training (kept only as "
      "users' last, test, events); writes OUT/holdout_items.txt; JSON summary on stdout");
  holdout->add_option("--data", ho_data, "Source dataset directory")->required();
  holdout->add_option("--fraction", ho_fraction, "Share of items to hold out, in (0, 1)")->capture_default_str();
  holdout->add_option("--seed", ho_seed, "Random seed (the same seed picks the same items)")->capture_default_str();
  holdout->add_option("--out", ho_out, "Dataset directory to create")->required();
  holdout->add_flag("--overwrite", ho_overwrite, "Replace an existing output directory");

  // ---- train / eval / recommend ----
  TrainRequest train_req;
  std::string train_config, train_data, train_out;
  auto* train = app.add_subcommand("train", "Train a model from a TOML config; writes a run directory");
  auto* train_config_opt = train->add_option("--config", train_config, "TOML config (see configs/); not with --resume")->check(CLI::ExistingFile);
  train->add_option("--data", train_data, "Dataset directory (overrides data.path)");
  train->add_option("--set", train_req.overrides, "Override a config key: key=value (repeatable)");
  train->add_option("--out", train_out, "Run directory to create")->required();
  train->add_flag("--force", train_req.overwrite, "Replace an existing run directory");
  train->add_flag("--resume", train_req.resume, "Continue the run in --out from its last checkpoint, with its saved config");

  std::string eval_run_dir, eval_split = "test";
  std::vector<std::string> eval_overrides;
  auto* eval = app.add_subcommand("eval", "Evaluate a run's best (or another) checkpoint; JSON on stdout (the metrics.json shape)");
  eval->add_option("--run", eval_run_dir, "Run directory")->required();
  eval->add_option("--split", eval_split, "valid or test")->check(CLI::IsMember({"valid", "test"}))->capture_default_str();
  eval->add_option("--set", eval_overrides, "Override an eval key, e.g. eval.exclude_seen=true, a TIGER run's model.beam / model.cold_fraction / model.history_bias=true|false / model.level_weights=[w,...], or a ranking run's eval.history=cut|streaming; data.* and train.threads too; other model.* / train.* keys are fixed at training and refused (repeatable)");
  std::string eval_target_items;
  eval->add_option("--target-items", eval_target_items,
                   "Evaluate only users whose target is one of these items (file of raw ids, one per line, '#' "
                   "comments; e.g. OUT/holdout_items.txt of data holdout-items); retrieval runs only");
  std::string eval_predictions;
  eval->add_option("--predictions", eval_predictions,
                   "Also write every scored candidate to this TSV file: user, item, timestamp, has_history, then "
                   "per task its score and label; ranking runs only");
  std::string eval_checkpoint;
  eval->add_option("--checkpoint", eval_checkpoint,
                   "best (default), last (the weights after the run's last finished epoch), or a checkpoint file of "
                   "this run's model and items; named in the output when given");

  std::string rec_run, rec_user, rec_history;
  RecommendRequest rec_req;
  auto* recommend = app.add_subcommand("recommend", "Top-K items for a user or an ad-hoc history; JSON on stdout");
  recommend->add_option("--run", rec_run, "Run directory")->required();
  auto* opt_user = recommend->add_option("--user", rec_user, "Raw user id: recommend after its whole history");
  auto* opt_hist = recommend->add_option("--history", rec_history, "Raw item ids, oldest first, comma-separated; ITEM@SECONDS entries (all or none) carry timestamps");
  opt_user->excludes(opt_hist);
  recommend->add_option("--k", rec_req.k, "Number of items")->capture_default_str();
  recommend->add_flag("--exclude-seen", rec_req.exclude_seen, "Leave out items already in the history");
  recommend->add_option("--at", rec_req.request_time,
                        "Request time, Unix seconds (read by hstu with model.query_time = next; default: the time of "
                        "the user's last event)");
  std::string rec_index;
  auto* opt_rec_index = recommend->add_option("--index", rec_index,
                          "Search: exact (the model's own scores, any model; default unless the run's index.kind says "
                          "otherwise), or flat, ivf, hnsw (FAISS over query and item vectors; sasrec/hstu only)")
                          ->check(CLI::IsMember(item_index_kinds()));
  recommend->add_option("--set", rec_req.overrides, "Override an index key, e.g. index.nprobe=32, or a TIGER run's model.beam / model.cold_fraction / model.history_bias=true|false / model.level_weights=[w,...] (repeatable; other keys are refused)");

  std::string ie_run, ie_index;
  IndexEvalRequest ie_req;
  auto* index_eval = app.add_subcommand(
      "index-eval", "Measure a search index against exact search on a sasrec/hstu run: recall@10, build time, latency; JSON on stdout");
  index_eval->add_option("--run", ie_run, "Run directory")->required();
  auto* opt_ie_index = index_eval->add_option("--index", ie_index, "Index to measure: exact, flat, ivf, hnsw (default: the run's index.kind)")
                           ->check(CLI::IsMember(item_index_kinds()));
  index_eval->add_option("--set", ie_req.overrides, "Override an index key, e.g. index.nprobe=32 (repeatable; index.* only)");
  index_eval->add_option("--users", ie_req.users, "Query with the first N test users' histories (0 = all test users)")
      ->capture_default_str();

  RankCliRequest rank_req;
  std::string rank_run_dir, rank_user, rank_history, rank_candidates;
  auto* rank = app.add_subcommand(
      "rank", "Per-candidate, per-task scores of a ranking run (genrank, din) for a user or an ad-hoc history, and with "
      "model.output = \"feedback\" each candidate's predicted feedback distribution; JSON on stdout");
  rank->add_option("--run", rank_run_dir, "Run directory of a ranking model")->required();
  auto* opt_rank_user = rank->add_option("--user", rank_user, "Raw user id: rank after its whole history");
  auto* opt_rank_hist = rank->add_option(
      "--history", rank_history,
      "Comma-separated raw item ids, oldest first, each optionally ITEM:FEEDBACK (an action name or rating value)");
  opt_rank_user->excludes(opt_rank_hist);
  rank->add_option("--candidates", rank_candidates, "Comma-separated raw item ids to score")->required();
  rank->add_option("--at", rank_req.request_time,
                   "Request time, Unix seconds (genrank's time bias; default: the last history event's time)");

  ExportRequest export_req;
  std::string export_run_dir, export_out;
  auto* export_cmd = app.add_subcommand(
      "export", "Export a run's checkpoint for use outside genrec (safetensors: the model's tensors, options and item vocabulary); JSON summary on stdout");
  export_cmd->add_option("--run", export_run_dir, "Run directory (or a checkpoint file)")->required();
  export_cmd->add_option("--checkpoint", export_req.checkpoint, "Which checkpoint of the run: best or last")
      ->check(CLI::IsMember({"best", "last"}))
      ->capture_default_str();
  export_cmd->add_option("--format", export_req.format, "Output format: safetensors")->capture_default_str();
  export_cmd->add_option("--out", export_out, "File to write, e.g. model.safetensors")->required();
  export_cmd->add_flag("--force", export_req.overwrite, "Replace an existing output file");

  // ---- sid (semantic IDs) ----
  auto* sid_cmd = app.add_subcommand("sid", "Semantic IDs: item content vectors -> residual quantiser -> item codes (see docs/semantic_ids.md)");
  sid_cmd->require_subcommand(1);
  SidBuildRequest sid_req;
  std::string sid_data, sid_out, sid_import;
  int64_t sid_iters = 0, sid_epochs = 0;
  auto* sid_build = sid_cmd->add_subcommand(
      "build", "Build semantic IDs for a dataset's items: writes OUT/codes.json, codes.bin, rq.safetensors, report.json; report JSON on stdout");
  sid_build->add_option("--data", sid_data, "Dataset directory")->required();
  sid_build->add_option("--out", sid_out, "Output directory to create")->required();
  sid_build->add_option("--features", sid_req.features,
                        "Item content (repeatable, concatenated): text[:DIM[:W]], attributes[:DIM[:W]], matrix:FILE[:W] "
                        "(.npy, .safetensors, .tsv), run:DIR[:W]; default text:64, else attributes:32");
  sid_build->add_option("--method", sid_req.method, "Quantiser: rq-kmeans or rq-vae")
      ->check(CLI::IsMember({"rq-kmeans", "rq-vae"}))
      ->capture_default_str();
  sid_build->add_option("--levels", sid_req.levels, "Code levels (before disambiguation)")->capture_default_str();
  sid_build->add_option("--codebook", sid_req.codebook_size, "Codes per level")->capture_default_str();
  sid_build->add_flag("--balanced", sid_req.balanced, "rq-kmeans: equal-size clusters");
  sid_build->add_option("--seed", sid_req.seed, "Random seed")->capture_default_str();
  auto* opt_sid_iters = sid_build->add_option("--iters", sid_iters, "rq-kmeans: most Lloyd iterations per level");
  auto* opt_sid_epochs = sid_build->add_option("--epochs", sid_epochs, "rq-vae: training epochs");
  sid_build->add_option("--threads", sid_req.threads, "Torch threads (0 = default)")->capture_default_str();
  auto* opt_sid_import = sid_build->add_option("--import", sid_import,
                                               "Import a code map {ITEM: [codes]} (LETTER / MiniOneRec style) instead of fitting");
  auto* opt_sid_offset = sid_build->add_option("--id-offset", sid_req.id_offset, "--import: added to numeric item keys (e.g. 1 for 0-based keys)");
  opt_sid_offset->needs(opt_sid_import);
  sid_build->add_flag("--force", sid_req.overwrite, "Replace an existing output directory");
  std::string sid_stats_codes, sid_stats_data;
  auto* sid_stats = sid_cmd->add_subcommand("stats", "Codebook use and collision rate of a codes file; JSON on stdout");
  sid_stats->add_option("--codes", sid_stats_codes, "codes.bin or codes.json")->required();
  sid_stats->add_option("--data", sid_stats_data, "Dataset directory the codes belong to")->required();

  DemoArgs demo_args;
  std::string demo_out = demo_args.out.string();
  auto* demo = app.add_subcommand("demo", "Generate data, train and evaluate pop, markov and SASRec, and recommend, in one go");
  demo->add_option("--out", demo_out, "Folder for the demo's dataset and runs (replaced if made by a previous demo)")->capture_default_str();
  demo->add_option("--users", demo_args.users, "Users to generate")->capture_default_str();
  demo->add_option("--items", demo_args.items, "Items to generate")->capture_default_str();
  demo->add_option("--seed", demo_args.seed, "Random seed")->capture_default_str();

  ServeArgs serve_args;
  std::string serve_run, serve_rank_run, serve_state;
  auto* serve_cmd = app.add_subcommand(
      "serve", "Serve recommend/rank/events over HTTP/JSON (see docs/serving.md); prints one JSON line when listening");
  serve_cmd->add_option("--run", serve_run, "Retrieval run directory (sasrec, hstu, markov, pop)")->required();
  serve_cmd->add_option("--rank-run", serve_rank_run, "Ranking run directory (genrank, din) for /v1/rank");
  serve_cmd->add_option("--host", serve_args.http.host, "Address to listen on")->capture_default_str();
  serve_cmd->add_option("--port", serve_args.http.port, "Port (0 = any free port; the JSON line names it)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  serve_cmd->add_option("--state", serve_state, "User-state directory (RocksDB; default RUN/serve_state)");
  serve_cmd->add_option("--workers", serve_args.http.workers, "HTTP worker threads (each open connection holds one)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  serve_cmd->add_option("--max-batch", serve_args.engine.max_batch, "Most recommend requests scored together")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  serve_cmd->add_option("--max-wait-us", serve_args.engine.max_wait_us, "Longest wait for a micro-batch to fill (microseconds; 0 = score what is queued at once)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
      ->capture_default_str();
  serve_cmd->add_option("--cache-users", serve_args.engine.cache_users, "KV-cache capacity in users (0 = off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  serve_cmd->add_option("--max-body-bytes", serve_args.http.max_body_bytes, "Largest request body (bigger: 413)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 34))
      ->capture_default_str();
  serve_cmd->add_option("--timeout-ms", serve_args.http.request_timeout_ms,
                        "Read/write timeout and per-request deadline (milliseconds; past it: 503)")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}))
      ->capture_default_str();
  serve_cmd->add_option("--threads", serve_args.engine.threads, "Torch intra-op threads (0 = the run's setting)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  serve_cmd->add_option("--token-file", serve_args.token_file,
                        "File holding the bearer token for /v1/events and /v1/reload (else $GENREC_SERVE_TOKEN; "
                        "neither = no auth)")
      ->check(CLI::ExistingFile);
  serve_cmd->add_flag("--no-sync", serve_args.no_sync, "Do not fsync event appends (benchmarks only: not durable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  if (quiet) log_level = "warn";
  set_log_level(log_level == "debug" ? LogLevel::Debug
                : log_level == "warn" ? LogLevel::Warn
                : log_level == "error" ? LogLevel::Error
                                       : LogLevel::Info);
  set_log_sink([](LogLevel lvl, const std::string& msg) { std::fprintf(stderr, "[%s] %s\n", log_level_name(lvl), msg.c_str()); });
  if (!blas_note.empty()) GENREC_LOG_DEBUG("%s", blas_note.c_str());
  ProgressCallback progress = cli::make_progress_bar(quiet);

  try {
    if (*import) {
      if (ids == "auto") imp.reader.ids = default_id_kind(imp.reader.format);
      else imp.reader.ids = ids == "numeric" ? IdKind::Numeric : IdKind::String;
      imp.reader.explicit_time_col = time_col->count() > 0;
      imp.reader.explicit_rating_col = rating_col->count() > 0;
      imp.reader.explicit_action_col = action_col->count() > 0;
      imp.reader.header = !no_header;
      if (no_header) {
        // Without a header, columns are numbered; default to user in column 1, item in 2.
        if (user_col->count() == 0) imp.reader.user_col = "1";
        if (item_col->count() == 0) imp.reader.item_col = "2";
      }
      if (k_core > 0) {
        imp.cleaning.k_core_users = std::max(imp.cleaning.k_core_users, k_core);
        imp.cleaning.k_core_items = std::max(imp.cleaning.k_core_items, k_core);
      }
      for (const auto& p : inputs) imp.inputs.emplace_back(p);
      for (const auto& p : item_files) imp.item_files.emplace_back(p);
      // Check the destination before reading anything.
      std::error_code ec;
      if (fs::exists(out_dir, ec) && !force) throw InvalidInput(out_dir + ": already exists (use --force to replace it)");
      Dataset ds = import_dataset(imp, progress);
      save_dataset(ds, out_dir, force);
      nlohmann::json summary = dataset_stats(ds);
      summary["dataset"] = out_dir;
      summary["import"] = ds.provenance["report"];
      print_json(summary);
    } else if (*stats) {
      print_json(dataset_stats(load_dataset(stats_dir)));
    } else if (*generate) {
      std::error_code ec;
      if (fs::exists(gen_out, ec) && !force) throw InvalidInput(gen_out + ": already exists (use --force to replace it)");
      Dataset ds = generate_dataset(gen, progress);
      save_dataset(ds, gen_out, force);
      nlohmann::json summary = dataset_stats(ds);
      summary["dataset"] = gen_out;
      print_json(summary);
    } else if (*holdout) {
      print_json(holdout_items_run(ho_data, ho_fraction, ho_seed, ho_out, ho_overwrite));
    } else if (*train) {
      if (train_req.resume == (train_config_opt->count() > 0))
        throw InvalidInput("train: give --config for a new run, or --resume to continue one (not both)");
      train_req.config_path = train_config;
      if (!train_data.empty()) train_req.data = fs::path(train_data);
      train_req.out = train_out;
      TrainResult r = train_run(train_req, progress);
      nlohmann::json j = r.test.to_json();
      j["run"] = r.run_dir.string();
      j["valid"] = r.valid.metrics;
      print_json(j);
    } else if (*eval) {
      nlohmann::json j = eval_run(eval_run_dir, parse_split_part(eval_split), eval_overrides, progress,
                                  eval_target_items, eval_predictions, eval_checkpoint)
                             .to_json();
      if (!eval_checkpoint.empty()) j["checkpoint"] = eval_checkpoint;
      print_json(j);
    } else if (*recommend) {
      if (opt_user->count() > 0) rec_req.user = rec_user;
      if (opt_hist->count() > 0) rec_req.history = split_commas(rec_history);
      if (!rec_req.user && !rec_req.history) throw InvalidInput("recommend: give --user or --history");
      if (opt_rec_index->count() > 0) rec_req.index = rec_index;
      print_json(recommend_run(rec_run, rec_req));
    } else if (*index_eval) {
      if (opt_ie_index->count() > 0) ie_req.index = ie_index;
      print_json(index_eval_run(ie_run, ie_req));
    } else if (*rank) {
      if (opt_rank_user->count() > 0) rank_req.user = rank_user;
      if (opt_rank_hist->count() > 0) rank_req.history = split_commas(rank_history);
      if (!rank_req.user && !rank_req.history) throw InvalidInput("rank: give --user or --history");
      rank_req.candidates = split_commas(rank_candidates);
      print_json(rank_cli_run(rank_run_dir, rank_req));
    } else if (*export_cmd) {
      export_req.run = export_run_dir;
      export_req.out = export_out;
      print_json(export_run(export_req).to_json());
    } else if (*sid_build) {
      sid_req.data = sid_data;
      sid_req.out = sid_out;
      if (opt_sid_iters->count() > 0) sid_req.kmeans_iters = sid_iters;
      if (opt_sid_epochs->count() > 0) sid_req.epochs = sid_epochs;
      if (opt_sid_import->count() > 0) sid_req.import_codes = fs::path(sid_import);
      print_json(sid_build_run(sid_req, progress));
    } else if (*sid_stats) {
      print_json(sid_stats_run(sid_stats_codes, sid_stats_data));
    } else if (*demo) {
      demo_args.out = demo_out;
      return run_demo(demo_args, progress);
    } else if (*serve_cmd) {
      serve_args.engine.run_dir = serve_run;
      serve_args.engine.rank_run = serve_rank_run;
      serve_args.engine.state_dir = serve_state;
      return run_serve(serve_args);
    }
  } catch (const InvalidInput& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  }
  return kExitOk;
}
