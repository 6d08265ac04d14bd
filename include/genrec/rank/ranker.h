// Ranking models end to end: options from a run config, training on a temporal split's
// training windows, evaluation of valid/test requests (AUC, GAUC, log-loss, RMSE), scoring of
// ad-hoc requests, checkpoints.
//
// A Ranker owns a RankNet (genrank: the HSTU generative ranker; din: the DIN baseline). Training
// is teacher-forced: every event of a training window is a target predicted from the events
// before it and its own item (rank_net.h). Evaluation scores each request's candidates in one
// pass (M-FALCON for genrank) after the history before the cut, or, with eval.history =
// "streaming", each candidate after the user's events before its own timestamp (rank_data.h).
//
//   Ranker r(options, n_items, rank_data.n_feedback);
//   r.fit(RankTrainContext{ds, rd, split, progress, on_validation});
//   EvalResult test = r.evaluate(ds, rd, split, SplitPart::Test);
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/serialize/archive.h>

#include "genrec/core/config.h"
#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"
#include "genrec/data/split.h"
#include "genrec/eval/eval_result.h"
#include "genrec/rank/rank_data.h"
#include "genrec/rank/rank_net.h"

namespace genrec {

struct CheckpointHeader;  // models/recommender.h

// Model names the ranking family registers.
bool is_ranker_type(const std::string& type);  // genrank | din

// One candidate scored by Ranker::evaluate: the request's user (dense id), the candidate's event
// (global index into the dataset's events), whether the request had a history, and per task
// (rd.tasks order) the score as a user reads it (task_value) and the label (NaN: undefined).
struct RankPrediction {
  int32_t user = 0;
  int64_t event = 0;
  bool has_history = false;
  std::vector<double> scores;
  std::vector<float> labels;
};
// A task's score as a user reads it: the probability sigmoid(output) for binary tasks, the
// output itself for regression tasks.
double task_value(const RankTask& task, double output);

struct RankerOptions {
  std::string type = "genrank";
  // tasks
  std::vector<std::string> tasks = {"like", "rating"};
  std::vector<double> task_weights;  // empty = 1 for every task
  double like_threshold = 4.0;
  // network
  int64_t d_model = 64;
  int64_t max_len = 200;      // history events read (din: its attention window)
  int64_t n_blocks = 2;       // genrank
  int64_t n_heads = 2;        // genrank
  double dropout = 0.2;
  std::string layout = "action";     // genrank: action | interleaved
  bool time_bias = true;             // genrank, when the data has timestamps
  std::string attn_scale = "max_len";  // genrank
  int64_t micro_batch = 256;         // genrank: M-FALCON candidates per pass
  bool head_item = false;            // genrank: heads also read the scored item's embedding
  // "tasks": one output per task, each with its own loss (BCE / MSE, weighted by task_weights).
  // "feedback": the network predicts the event's feedback token (rating level or action) with a
  // softmax trained by cross-entropy, as a generative ranker generates the action; every task is
  // read off that distribution (like = P(level >= like_threshold), rating = its expectation,
  // action:NAME = P(NAME)). Needs tasks that the feedback tokens determine (rank_data.h).
  std::string output = "tasks";
  // training
  int64_t epochs = 50;
  int64_t batch_size = 32;  // training windows per step
  double lr = 1e-3;
  double weight_decay = 0.0;
  double grad_clip = 5.0;
  int64_t eval_every = 1;
  int64_t patience = 5;
  std::string metric;  // validation metric for early stopping; empty = first task's auc (binary) or rmse
  // sequence: teacher forcing, every event of a window predicted from the events before it;
  // requests: per window a random cut, candidates = the events from the cut on, each seeing
  // only the history before the cut (how evaluation and serving ask), scored in one pass.
  std::string train_mode = "sequence";
  // > 0: every training target is also scored as a candidate after an empty history (a user
  // seen for the first time), and that loss is added with this weight: the model's prior for
  // users without history learns from every event, not only from users' first events.
  double cold_weight = 0.0;
  // genrank, train.mode = sequence: training windows hold max_len - train_context targets, read
  // after up to train_context earlier (unlabelled) events of the user; 0 = windows of max_len
  // targets whose first events are read without history.
  int64_t train_context = 0;
  // > 0: an exponential moving average of the weights (this decay per step) is what validation,
  // early stopping and the checkpoints use; 0 = the raw weights.
  double ema = 0.0;
  // true: before the first step of a fresh run, each output's bias is set to the training
  // targets' prior — a binary task's log-odds, a regression task's mean, with model.output =
  // "feedback" each token's log-frequency — so that training starts from the base rates instead
  // of spending its first steps reaching them; false: the initialiser's bias.
  bool prior_bias = false;
  int64_t seed = 42;
  // evaluation (eval.history): "cut" = every candidate of a period read after the user's history
  // before the period's cut; "streaming" = each candidate read after the user's events before its
  // own timestamp, including the period's earlier events (rank_data.h).
  std::string eval_history = "cut";

  nlohmann::json to_json() const;
  static RankerOptions from_json(const nlohmann::json& j);
  static RankerOptions from_config(Config& cfg);  // model.*, train.* and eval.history keys
  void validate() const;
  std::string resolved_metric() const;
  RankDataOptions data_options() const { return RankDataOptions{tasks, like_threshold}; }
};

struct RankTrainContext {
  const Dataset& ds;
  const RankData& rd;
  const Split& split;
  ProgressCallback progress;
  // Called after each validation with the train_log line; is_best when the metric improved.
  std::function<void(const nlohmann::json& log_line, bool is_best)> on_validation;
};

struct RankTrainSeq {
  int32_t user = 0;
  int64_t read_begin = 0, label_begin = 0, end = 0;  // global event indices
};

class Ranker {
 public:
  Ranker(RankerOptions options, int32_t n_items, int64_t n_feedback);
  ~Ranker();
  const RankerOptions& options() const { return options_; }
  // eval.history of later evaluate() calls: "cut" | "streaming" (InvalidInput otherwise).
  void set_eval_history(const std::string& history);
  int32_t n_items() const { return n_items_; }
  int64_t n_feedback() const { return n_feedback_; }
  RankNetImpl& net();
  // Events of history a request keeps: max_len (din), max_len - 1 (genrank: the candidate then
  // takes position max_len - 1 at most, a position training has used).
  int64_t history_limit() const;
  // What one epoch trains on, shortest first: events [read_begin, end) of `user` are read,
  // [label_begin, end) are targets; every training event is a target exactly once.
  std::vector<RankTrainSeq> train_sequences(const Dataset& ds, const Split& split) const;

  // Trains; at the end the net holds the best validation weights.
  void fit(const RankTrainContext& ctx);
  // Metrics per task (ranking_metrics.h keys) on the part's requests. With `predictions`, also
  // every scored candidate in request order (genrec eval --predictions).
  EvalResult evaluate(const Dataset& ds, const RankData& rd, const Split& split, SplitPart part,
                      const ProgressCallback& progress = nullptr, std::vector<RankPrediction>* predictions = nullptr);
  // Outputs [n_candidates, n_tasks] for one history (events given by item, feedback, time):
  // logits for binary tasks, values for regression tasks. `rd` is the rank data the ranker was
  // trained with (its tasks and, with model.output = "feedback", how they read the tokens).
  // With model.output = "feedback" and `feedback_probs` given, *feedback_probs is set to the
  // predicted distribution over the feedback tokens [n_candidates, n_feedback] (column f = token
  // f + 1, named rd.feedback_names[f]); otherwise it is left undefined.
  torch::Tensor score(const RankData& rd, const std::vector<int32_t>& items, const std::vector<int32_t>& feedback,
                      const std::vector<int64_t>& times, const std::vector<int32_t>& candidates,
                      int64_t request_time = -1, torch::Tensor* feedback_probs = nullptr);

  // The weights and the training state (optimizer, early stopping, best and EMA weights), so
  // that fit() continues a loaded ranker where it stopped (genrec train --resume).
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);
  // Whether the ranker has trained (or was loaded from a checkpoint written during training):
  // false for checkpoints of genrec versions whose rankers did not save their training state.
  bool has_train_state() const;
  // Keep the weights (the averaged ones with train.ema), forget the optimizer, schedule, early
  // stopping and best weights: fit() then starts afresh from them (train.init_from).
  void reset_training_state();
  // train.prior_bias: sets the network's output biases to the prior of the training targets
  // (train_sequences' labelled events): per binary task log((pos + 0.5) / (neg + 0.5)), per
  // regression task the mean label (0 without labels), with model.output = "feedback" per token
  // f log((count_f + 1) / (n + n_feedback)). Returns them, in output order.
  std::vector<double> set_prior_bias(const Dataset& ds, const RankData& rd, const Split& split);

 private:
  struct State;
  RankerOptions options_;
  int32_t n_items_;
  int64_t n_feedback_;
  std::unique_ptr<State> state_;
};

// One candidate's scores as a user reads them (genrec rank, /v1/rank): task name -> probability
// (binary tasks: the sigmoid of score()'s logit) or value (regression tasks), and, when score()
// set feedback_probs (model.output = "feedback"), feedback name -> predicted probability.
struct CandidateScores {
  std::map<std::string, double> tasks;
  std::map<std::string, double> feedback;  // empty without feedback_probs
};
// Ranker::score's outputs [M, tasks] and feedback_probs [M, F] (undefined: no distribution) for
// M candidates, in candidate order; an undefined `out` (no candidates scored) gives none.
std::vector<CandidateScores> read_candidate_scores(const RankData& rd, const torch::Tensor& out,
                                                   const torch::Tensor& feedback_probs);

// Checkpoints of rankers: the framing of recommender checkpoints, meta type = options.type.
void save_ranker_checkpoint(const std::filesystem::path& path, const Ranker& ranker, const Vocabulary& items,
                            const RankData& rd, const nlohmann::json& extra_meta = nlohmann::json::object());
struct LoadedRanker {
  std::unique_ptr<Ranker> ranker;
  Vocabulary items;
  nlohmann::json meta;
};
LoadedRanker load_ranker_checkpoint(const std::filesystem::path& path);
// The same after read_checkpoint_header(path, archive) (models/recommender.h).
LoadedRanker load_ranker_checkpoint(const std::filesystem::path& path, torch::serialize::InputArchive& archive,
                                    CheckpointHeader header);
// train.init_from for rankers: the weights of the checkpoint `path` names (a run directory: its
// best.ckpt) copied into `ranker`, whose training then starts afresh. InvalidInput naming the
// file when it holds another model type, item vocabulary, feedback vocabulary or shapes.
void init_ranker_from_checkpoint(Ranker& ranker, const std::filesystem::path& path, const Vocabulary& items);

}  // namespace genrec
