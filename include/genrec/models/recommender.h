// The interface every model implements, its factory, and checkpoint files.
//
// A Recommender is a Scorer (eval/evaluator.h) that can be fitted on a split's training events
// and saved. Models are created by name from the [model] table of a run config:
//   auto model = make_recommender(cfg, ds.n_items());     // reads model.type and model.*
//   model->fit(TrainContext{ds, split, progress});
//   save_checkpoint(run / "checkpoints/best.ckpt", *model, ds.items, meta);
//
// Checkpoint file: "GRECCKP1", uint32 version, uint32 CRC-32 of the payload, uint64 payload
// size, then a libtorch archive holding "genrec/meta" (JSON: type, options, genrec version,
// extra metadata), "genrec/items" (the item vocabulary, one raw id per line) and the model's
// tensors under "model/...". Written atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/serialize/archive.h>

#include "genrec/core/config.h"
#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"
#include "genrec/data/split.h"
#include "genrec/eval/evaluator.h"

namespace genrec {

class Recommender;

// What fit() gets. Iterative models evaluate on the validation split every few epochs with
// `eval` and report each evaluation through `on_validation` (the runner writes train_log.jsonl
// and the best / last checkpoints there).
struct TrainContext {
  const Dataset& ds;
  const Split& split;
  ProgressCallback progress;
  const EvalOptions* eval = nullptr;
  std::function<void(const Recommender& model, const nlohmann::json& log_line, bool is_best)> on_validation;
};

class Recommender : public Scorer {
 public:
  // Registered name, e.g. "pop".
  virtual std::string type() const = 0;
  // The options the model was built with (saved with checkpoints).
  virtual nlohmann::json options() const = 0;
  // Learns from each user's training events only (split.train_end). A model loaded from a
  // checkpoint that holds training state (see save()) continues where it stopped; at the end the
  // model holds its best weights.
  virtual void fit(const TrainContext& ctx) = 0;
  // Whether fit() iterates with validation (then best and last checkpoints differ).
  virtual bool iterative() const { return false; }
  virtual void save(torch::serialize::OutputArchive& archive) const = 0;
  virtual void load(torch::serialize::InputArchive& archive) = 0;

  // Two-tower view, for approximate nearest-neighbour search: a model whose score(batch) is the
  // inner product of a per-history query vector and a per-item vector returns both (then
  // score(batch) == query_embeddings(batch) · item_embeddings()ᵀ). Other models return
  // undefined tensors.
  virtual torch::Tensor query_embeddings(const std::vector<History>& batch) { (void)batch; return {}; }  // [B, D]
  virtual torch::Tensor item_embeddings() const { return {}; }  // [n_items + 1, D], row 0 = padding
  // Score offsets of items of the history (a learned repeat bias): when non-empty, score(batch)
  // row b == query_embeddings · item_embeddings()ᵀ plus these (item, offset) pairs, so a search
  // over the vectors must add them (search k + |offsets|, then re-rank).
  virtual std::vector<std::pair<int32_t, float>> history_offsets(const History& h) const {
    (void)h;
    return {};
  }
  // Forgets the training state a load() brought (epoch, step, optimizer, early stopping, best
  // weights) and keeps the weights: the next fit() starts a new schedule from them.
  virtual void reset_training_state() {}
};

// Model names make_recommender() accepts.
const std::vector<std::string>& recommender_types();

// Builds the model named by cfg "model.type", reading its "model.*" options.
std::unique_ptr<Recommender> make_recommender(Config& cfg, int32_t n_items);
// Rebuilds a model from saved options (checkpoint loading).
std::unique_ptr<Recommender> make_recommender(const std::string& type, const nlohmann::json& options,
                                              int32_t n_items);

void save_checkpoint(const std::filesystem::path& path, const Recommender& model, const Vocabulary& items,
                     const nlohmann::json& extra_meta = nlohmann::json::object());

// The file framing shared by every checkpoint kind (recommenders, rankers): header with magic,
// version, CRC-32 and size around a libtorch archive, written atomically.
void write_checkpoint_archive(const std::filesystem::path& path, torch::serialize::OutputArchive& archive);
// Reads and validates the framing (InvalidInput naming the file); returns the archive bytes.
std::string read_checkpoint_payload(const std::filesystem::path& path);
// What every checkpoint archive holds besides the model: meta JSON (type, options, n_items, ...)
// and the item vocabulary the model was trained on.
struct CheckpointHeader {
  nlohmann::json meta;
  Vocabulary items;
};
void write_checkpoint_header(torch::serialize::OutputArchive& archive, const nlohmann::json& meta,
                             const Vocabulary& items);
// Validates the file's framing, loads its payload into `archive` and reads the header;
// InvalidInput naming the file on any failure. The model's tensors are then read from `archive`.
CheckpointHeader read_checkpoint_header(const std::filesystem::path& path, torch::serialize::InputArchive& archive);
// The "type" in a checkpoint's meta, without building its model.
std::string checkpoint_type(const std::filesystem::path& path);

struct LoadedCheckpoint {
  std::unique_ptr<Recommender> model;
  Vocabulary items;
  nlohmann::json meta;
};
// Throws InvalidInput naming the file when it is missing, truncated or fails its checksum.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& path);
// The same after read_checkpoint_header(path, archive) (a caller that reads more of the archive
// or dispatches on the header's type): builds the model from `header`, reads it from `archive`.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& path, torch::serialize::InputArchive& archive,
                                 CheckpointHeader header);

// train.init_from: `path` is a checkpoint file or a run directory (its checkpoints/best.ckpt).
// Copies that checkpoint's weights into `model`, which starts training afresh from them (new
// optimizer and schedule). InvalidInput naming the file when the checkpoint is of another model
// type, another item vocabulary, other tensors (more or fewer layers), other parameter shapes or
// (tiger) other semantic IDs.
void init_from_checkpoint(Recommender& model, const std::filesystem::path& path, const Vocabulary& items);
// The same for any model family (rankers too): opens the checkpoint `path` names, checks that it
// holds a `type` model trained on `items` and the same tensors under "model/" as the config's
// model, which `save_fresh` writes (a model built with other model.* keys, e.g. more or fewer
// layers, is refused with the names of the tensors that differ), then hands its archive and
// header to `load` (which copies the weights and drops the training state). Every InvalidInput
// names the file and train.init_from.
void init_from_checkpoint_file(
    const std::filesystem::path& path, const std::string& type, const Vocabulary& items,
    const std::function<void(torch::serialize::OutputArchive& archive)>& save_fresh,
    const std::function<void(torch::serialize::InputArchive& archive, const CheckpointHeader& header)>& load);

// An exception's message for a user-facing error: libtorch's errors without their C++ backtrace.
std::string exception_text(const std::exception& e);

}  // namespace genrec
