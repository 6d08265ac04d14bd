// `genrec sid build`: dataset -> item content vectors -> residual quantiser -> semantic IDs.
// Torch-free header (the CLI includes it).
//
// Steps: load the dataset (with side information); build item vectors from the feature specs
// (tokenizers/item_features.h: "text:64", "attributes:32:0.5", "matrix:FILE[:W]", "run:DIR[:W]");
// fit the residual quantiser (tokenizers/rq.h) and encode every item; add a disambiguation level
// where items collide (resolve_collisions); write, into a staging directory renamed into place at
// the end (a failure leaves nothing at OUT):
//   OUT/codes.json      item -> codes by raw item id (tokenizers/semantic_ids.h), with the report
//   OUT/codes.bin       the binary form (semantic_ids.h)
//   OUT/rq.safetensors  the fitted quantiser (encodes new items; not written for --import)
//   OUT/report.json     the report below
// With `import_codes`, the codes come from a code map file instead (import_code_map: LETTER /
// MiniOneRec-style {"ITEM": [codes]} or {"ITEM": ["<a_1>", ...]}), no features are built.
//
// Report: {"format": "genrec-sid-report 1", "data", "out", "items", "method",
//   "features": build_item_features' report (absent for --import),
//   "quantizer": fit_residual_quantizer's report (absent for --import),
//   "import": {"path", "id_offset"} (for --import),
//   "collision_rate_before_resolution", "disambiguation_level", "levels" (with disambiguation),
//   "codebook": codebook_report(sid), "seconds": {"load", "features", "fit", "write", "total"},
//   "peak_rss_mb" (VmHWM of /proc/self/status; -1 when unknown)}
//
// Example:
//   SidBuildRequest req;
//   req.data = "data/beauty";  req.out = "sid/beauty";  req.features = {"attributes:64"};
//   nlohmann::json report = sid_build_run(req);
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/progress.h"

namespace genrec {

struct SidBuildRequest {
  std::filesystem::path data;              // dataset directory
  std::filesystem::path out;               // output directory to create
  bool overwrite = false;                  // replace an existing OUT
  // Feature specs (item_features.h). Empty = "text:64" when the dataset has item text, else
  // "attributes:32" when it has attributes, else an error.
  std::vector<std::string> features;
  // Quantiser (tokenizers/rq.h RQOptions); unset optionals keep RQOptions' defaults.
  std::string method = "rq-kmeans";        // rq-kmeans | rq-vae
  int64_t levels = 3;
  int64_t codebook_size = 256;
  bool balanced = false;
  uint64_t seed = 42;
  std::optional<int64_t> kmeans_iters;
  std::optional<int64_t> epochs;           // rq-vae
  std::optional<int64_t> latent_dim;       // rq-vae
  int64_t threads = 0;                     // torch intra-op threads; 0 = leave as set
  // Import a code map instead of fitting.
  std::optional<std::filesystem::path> import_codes;
  int64_t id_offset = 0;                   // added to numeric keys of the imported map
};

nlohmann::json sid_build_run(const SidBuildRequest& request, const ProgressCallback& progress = nullptr);

// `genrec sid stats`: codebook_report of a codes file (.bin or .json) for a dataset's items, plus
// {"path", "items", "levels", "codebook_sizes", "disambiguation_level"}.
nlohmann::json sid_stats_run(const std::filesystem::path& codes, const std::filesystem::path& data);

}  // namespace genrec
