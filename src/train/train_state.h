// Training bookkeeping shared by the training loops (models/sequential.cpp, models/tiger.cpp,
// rank/ranker.cpp): progress and early-stopping state, the optimizer step, and how parameters, optimizer state and
// the best weights are laid out in a checkpoint archive ("model/param/NAME" (recommenders),
// "train/meta", "train/optimizer", "train/best/I"). Internal to src/.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/models/recommender.h"

namespace genrec {

struct TrainMeta {
  int64_t epoch = 0;  // epochs completed
  int64_t step = 0;
  double best_metric = -1;  // meaningful once best_epoch > 0
  int64_t best_epoch = 0;    // 0 = no evaluation point yet
  int64_t bad_evals = 0;
  bool stopped = false;
  double elapsed_seconds = 0;       // training + validation wall time so far (all sessions)
  double best_elapsed_seconds = 0;  // elapsed_seconds when the best checkpoint was taken
  nlohmann::json to_json() const {
    return {{"epoch", epoch}, {"step", step}, {"best_metric", best_metric}, {"best_epoch", best_epoch},
            {"bad_evals", bad_evals}, {"stopped", stopped}, {"elapsed_seconds", elapsed_seconds},
            {"best_elapsed_seconds", best_elapsed_seconds}};
  }
  static TrainMeta from_json(const nlohmann::json& j) {
    TrainMeta m;
    m.epoch = j.at("epoch");
    m.step = j.at("step");
    m.best_metric = j.at("best_metric");
    m.best_epoch = j.at("best_epoch");
    m.bad_evals = j.at("bad_evals");
    m.stopped = j.at("stopped");
    m.elapsed_seconds = j.value("elapsed_seconds", 0.0);
    m.best_elapsed_seconds = j.value("best_elapsed_seconds", 0.0);
    return m;
  }
};

// The checkpoint decision at an evaluation point; true when these weights are the new best.
// With a validation metric: the first evaluation point, or better than the best so far (higher,
// or lower with lower_is_better: log-loss, RMSE), else one more evaluation without gain
// (training stops after `patience` of them). Without one (data.train_on_valid: no validation
// targets) every evaluation point is the new best, so training ends with its last weights.
inline bool update_best(TrainMeta& meta, std::optional<double> metric, int64_t epoch, int64_t patience,
                        bool lower_is_better = false) {
  const bool best = !metric || meta.best_epoch == 0 ||
                    (lower_is_better ? *metric < meta.best_metric : *metric > meta.best_metric);
  if (best) {
    if (metric) meta.best_metric = *metric;
    meta.best_epoch = epoch;
    meta.bad_evals = 0;
    meta.best_elapsed_seconds = meta.elapsed_seconds;
  } else if (++meta.bad_evals >= patience) {
    meta.stopped = true;
  }
  return best;
}

// The validation at an evaluation point: evaluates `model` on ctx's validation split into `r`,
// adds its time to meta.elapsed_seconds and returns the checkpoint metric `metric` (train.metric;
// InvalidInput when it was not evaluated). Nothing, and no evaluation, when the split has no
// validation targets (data.train_on_valid).
inline std::optional<double> validation_metric(Recommender& model, const TrainContext& ctx, const EvalOptions& options,
                                               const std::string& metric, TrainMeta& meta, EvalResult& r) {
  if (ctx.split.n_targets(SplitPart::Valid) == 0) return std::nullopt;
  r = evaluate(model, ctx.ds, ctx.split, SplitPart::Valid, options, ctx.progress);
  meta.elapsed_seconds += r.seconds;
  auto m = r.metrics.find(metric);
  if (m == r.metrics.end()) throw InvalidInput("train.metric '" + metric + "' is not among the evaluated metrics");
  return m->second;
}

inline std::vector<torch::Tensor> clone_params(torch::nn::Module& net) {
  std::vector<torch::Tensor> out;
  for (auto& p : net.parameters()) out.push_back(p.detach().clone());
  return out;
}

inline void copy_params(torch::nn::Module& net, const std::vector<torch::Tensor>& src) {
  torch::NoGradGuard ng;
  auto params = net.parameters();
  GENREC_ASSERT(params.size() == src.size());
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(src[i]);
}

// Parameters are stored under prefix + NAME: "model/param/" for the recommenders, "model/" for
// the rankers (their layout since the first ranker checkpoints).
inline void write_params(torch::serialize::OutputArchive& archive, const torch::nn::Module& net,
                         const std::string& prefix = "model/param/") {
  for (const auto& p : net.named_parameters()) archive.write(prefix + p.key(), p.value());
}

// Throws InvalidInput when a parameter is missing or has the wrong shape (naming both shapes).
inline void read_params(torch::serialize::InputArchive& archive, torch::nn::Module& net,
                        const std::string& prefix = "model/param/") {
  torch::NoGradGuard ng;
  for (auto& p : net.named_parameters()) {
    torch::Tensor t;
    if (!archive.try_read(prefix + p.key(), t)) throw InvalidInput("the checkpoint has no parameter " + p.key() + " (a model with other model.* keys?)");
    if (t.sizes() != p.value().sizes())
      throw InvalidInput("checkpoint parameter " + p.key() + " has the wrong shape: " + c10::str(t.sizes()) +
                         " in the checkpoint, " + c10::str(p.value().sizes()) + " in the model");
    p.value().copy_(t);
  }
}

// A list of tensors as prefix + "0", prefix + "1", ... (e.g. "train/best/"), and reading it back
// (empty when the archive has none).
inline void write_tensor_list(torch::serialize::OutputArchive& archive, const std::string& prefix,
                              const std::vector<torch::Tensor>& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) archive.write(prefix + std::to_string(i), tensors[i]);
}
inline std::vector<torch::Tensor> read_tensor_list(torch::serialize::InputArchive& archive, const std::string& prefix) {
  std::vector<torch::Tensor> out;
  for (size_t i = 0;; ++i) {
    torch::Tensor t;
    if (!archive.try_read(prefix + std::to_string(i), t)) break;
    out.push_back(t);
  }
  return out;
}

inline void write_train_state(torch::serialize::OutputArchive& archive, const TrainMeta& meta,
                              const torch::optim::AdamW* optimizer, const std::vector<torch::Tensor>& best) {
  archive.write("train/meta", c10::IValue(meta.to_json().dump()));
  if (optimizer) {
    torch::serialize::OutputArchive opt;
    optimizer->save(opt);
    archive.write("train/optimizer", opt);
  }
  write_tensor_list(archive, "train/best/", best);
}

// One AdamW update from `loss` at learning rate `lr` (set on every parameter group; nullopt
// keeps the optimizer's own): gradients cleared, back-propagated, clipped to a total norm of
// `grad_clip` (0 = no clipping), applied.
inline void optimizer_step(torch::optim::AdamW& optimizer, torch::nn::Module& net, const torch::Tensor& loss,
                           double grad_clip, std::optional<double> lr = std::nullopt) {
  if (lr)
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(*lr);
  optimizer.zero_grad();
  loss.backward();
  if (grad_clip > 0) torch::nn::utils::clip_grad_norm_(net.parameters(), grad_clip);
  optimizer.step();
}

// train.init_from: keep the weights, start the schedule, optimizer and early stopping afresh.
inline void clear_train_state(TrainMeta& meta, std::unique_ptr<torch::optim::AdamW>& optimizer,
                              std::vector<torch::Tensor>& best) {
  meta = TrainMeta{};
  optimizer.reset();
  best.clear();
}

// Reads what write_train_state wrote (each part optional); the optimizer is rebuilt over net's
// parameters with `options` before its state is loaded.
inline void read_train_state(torch::serialize::InputArchive& archive, torch::nn::Module& net,
                             const torch::optim::AdamWOptions& options, TrainMeta& meta,
                             std::unique_ptr<torch::optim::AdamW>& optimizer, std::vector<torch::Tensor>& best) {
  c10::IValue v;
  if (archive.try_read("train/meta", v)) meta = TrainMeta::from_json(nlohmann::json::parse(v.toStringRef()));
  torch::serialize::InputArchive opt;
  if (archive.try_read("train/optimizer", opt)) {
    optimizer = std::make_unique<torch::optim::AdamW>(net.parameters(), options);
    optimizer->load(opt);
  }
  best = read_tensor_list(archive, "train/best/");
}

}  // namespace genrec
