// Exporting checkpoints for use outside genrec (e.g. from Python): `genrec export`.
// Torch-free, so the CLI can include it; the torch side of safetensors is in
// models/safetensors_torch.h.
//
// A safetensors export holds the model's tensors under the model's own names (for sasrec/hstu
// the network's parameters and buffers, e.g. "items.weight" [n_items + 1, D] with row 0 the
// padding item, "encoder.blocks.0..."; for pop "counts"; for markov "indptr", "indices",
// "values", "pop"; for the rankers genrank/din their network's parameters, e.g. "items.weight",
// "heads.0.0.weight") — the checkpoint's "model/..." entries without that prefix and without the
// "param/" / "buffer/" level; training state ("train/...": optimizer, best-weights copy) is left
// out. String metadata ("__metadata__"):
//   format           "pt"
//   genrec_version   version that wrote the export
//   model_type       "pop" | "markov" | "sasrec" | "hstu" | "tiger" | "genrank" | "din"
//   options          the model options, JSON object
//   n_items          catalogue size (dense ids 1..n_items; 0 is padding)
//   items            item vocabulary, JSON array of raw ids: element k-1 is dense id k, i.e. row k
//                    of "items.weight"
//   checkpoint       "best" | "last" (or the checkpoint file's name)
//   checkpoint_meta  what the checkpoint recorded about itself (epoch, dataset), JSON object
//   state            non-tensor model state, JSON object (e.g. {"has_timestamps": true});
//                    present only when the model has some
//   n_feedback       rankers: feedback tokens 1..n_feedback (0 is padding)
//   feedback_names   rankers: JSON array, element k-1 = token k's action name or rating value
//                    (checkpoints written before genrec recorded it export without it)
//
// Example:
//   ExportSummary s = export_safetensors("runs/beauty-sasrec", "sasrec.safetensors");
//   // Python: from safetensors.torch import load_file; load_file("sasrec.safetensors")["items.weight"]
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace genrec {

struct ExportSummary {
  std::filesystem::path out;
  std::filesystem::path checkpoint;  // the checkpoint file that was exported
  std::string model_type;
  int64_t n_tensors = 0;
  int64_t n_parameters = 0;  // elements over all tensors
  uint64_t bytes = 0;        // file size

  nlohmann::json to_json() const;
};

// Exports a checkpoint to a safetensors file at `out` (parent folders are created; an existing
// file is replaced atomically). `run_or_checkpoint` is a run directory (then
// checkpoints/<which>.ckpt is used, `which` = "best" or "last") or a checkpoint file.
// Throws InvalidInput for a missing run or checkpoint, a bad `which` or a corrupted checkpoint.
ExportSummary export_safetensors(const std::filesystem::path& run_or_checkpoint, const std::filesystem::path& out,
                                 const std::string& which = "best");

// What `genrec export` asks for.
struct ExportRequest {
  std::filesystem::path run;            // run directory (or a checkpoint file)
  std::string checkpoint = "best";      // best | last
  std::string format = "safetensors";   // the only format so far
  std::filesystem::path out;            // file to write
  bool overwrite = false;               // replace an existing `out`
};

// `genrec export`: checks the request (format, existing output without overwrite, missing run:
// InvalidInput, before any work), exports and logs one line.
ExportSummary export_run(const ExportRequest& request);

// Formats export_run() accepts.
const std::vector<std::string>& export_formats();

}  // namespace genrec
