// Residual quantisers: item vectors -> semantic IDs (TIGER, Rajput et al. 2023). Torch-free
// header (the implementation uses libtorch).
//
// A residual quantiser has `levels` codebooks of `codebook_size` vectors each. Encoding a vector
// picks, level by level, the codebook entry nearest to the running residual (what the earlier
// levels have not explained yet) and subtracts it; the chosen entries' indices are the item's
// codes, coarse to fine. Decoding sums the chosen entries.
//
// Methods (config key sid.method):
//   rq-kmeans  Level l runs k-means on the residuals left by levels 0..l-1: k-means++
//              initialisation, Lloyd iterations until no assignment changes or the centres
//              move by less than 1e-4 of the mean per-dimension variance (at most
//              sid.kmeans_iters), empty clusters re-seeded from the points farthest from their
//              centroid. The codebooks live in the input space: decode(codes) approximates x.
//              With sid.balanced every cluster gets floor(n/K) or ceil(n/K) items (assignment
//              by global greedy on distance under those capacities; the Lloyd updates stay
//              means), so codes spread evenly; encode() of new vectors is still nearest-entry.
//   rq-vae     An MLP encoder (dim -> hidden... -> latent_dim, ReLU) maps x to a latent z; the
//              residual quantiser runs on z (straight-through estimator), and an MLP decoder
//              maps the quantised latent back to dim. Loss = MSE(x, x̂) + sum over levels of
//              ||sg[r_l] - e_l||² + beta·||r_l - sg[e_l]||² (r_l: level-l residual, e_l: its
//              chosen entry, sg: stop-gradient; per-element means). Adam, shuffled mini-batches.
//              With kmeans_init the codebooks start as RQ-k-means of the untrained encoder's
//              latents of all items; with reset_dead_codes, entries no item chose during an
//              epoch are replaced by random residuals of the epoch's last batch (counted in the
//              report; not after the last epoch). The input is standardised inside (mean
//              vector, one scale) and the decoder's output mapped back, so any scale works. decode(codes) = decoder(sum of entries).
//
// Determinism: the same data, options (seed included) and torch thread count give the same
// codes. `threads` > 0 sets torch's intra-op threads for the duration of the call.
//
// Errors reported in the report (per level and overall), for codes c and decode(c) = x̂:
//   mse           mean over items and dimensions of (x - x̂)²
//   relative_mse  sum ||x - x̂||² / sum ||x - mean(x)||²  (the fraction of variance left; 1 for
//                 the mean alone). rq-kmeans reports it after each level; rq-vae reports it
//                 for the latent residuals per level ("latent_relative_mse") and for the
//                 decoded vectors ("relative_mse").
//
// Example:
//   RQOptions opt;                                  // rq-kmeans, 3 levels x 256 codes
//   RQResult r = fit_residual_quantizer(x, n, dim, opt);   // x: [n, dim], row i = item i + 1
//   r.sid.item_codes(1);                            // item 1's 3 codes (no disambiguation level)
//   std::vector<int32_t> codes = r.quantizer.encode(new_x, m);      // [m * 3]
//   std::vector<float> approx = r.quantizer.decode(codes.data(), m); // [m * dim]
//   r.quantizer.save("sid/rq.safetensors");
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/progress.h"
#include "genrec/tokenizers/semantic_ids.h"

namespace genrec {

// The [sid] tokenizer settings. validate() throws InvalidInput naming the key, e.g.
// "sid.levels must be >= 1, got 0".
struct RQOptions {
  std::string method = "rq-kmeans";   // sid.method: rq-kmeans | rq-vae
  int64_t levels = 3;                 // sid.levels: codebooks (code positions per item)
  int64_t codebook_size = 256;        // sid.codebook_size: entries per codebook (K)
  int64_t kmeans_iters = 50;          // sid.kmeans_iters: most Lloyd iterations per k-means
  bool balanced = false;              // sid.balanced (rq-kmeans): equal-size clusters
  uint64_t seed = 42;                 // sid.seed
  // rq-vae
  int64_t latent_dim = 32;                      // sid.latent_dim
  std::vector<int64_t> hidden = {512, 256, 128};  // sid.hidden: encoder widths (decoder reversed)
  double beta = 0.25;                           // sid.beta: commitment weight
  int64_t epochs = 100;                         // sid.epochs (0: k-means init only)
  int64_t batch_size = 1024;                    // sid.batch_size
  double lr = 1e-3;                             // sid.lr (Adam)
  bool kmeans_init = true;                      // sid.kmeans_init
  bool reset_dead_codes = true;                 // sid.reset_dead_codes
  int64_t threads = 0;                          // sid.threads: torch intra-op threads; 0 = leave as set

  void validate() const;
  // Every key above under its sid.* name without the prefix, e.g. {"method": "rq-kmeans", ...}.
  nlohmann::json to_json() const;
};

// A fitted quantiser: encodes vectors into codes and decodes codes into vectors. Immutable;
// copies share the fitted tensors. encode/decode may run concurrently.
class ResidualQuantizer {
 public:
  struct Impl;

  ResidualQuantizer();  // empty (fitted() == false); encode/decode throw InternalError
  explicit ResidualQuantizer(std::shared_ptr<const Impl> impl);
  ~ResidualQuantizer();
  ResidualQuantizer(const ResidualQuantizer&);
  ResidualQuantizer& operator=(const ResidualQuantizer&);
  ResidualQuantizer(ResidualQuantizer&&) noexcept;
  ResidualQuantizer& operator=(ResidualQuantizer&&) noexcept;

  bool fitted() const { return impl_ != nullptr; }
  const std::string& method() const;
  int64_t dim() const;            // input vector size
  int64_t levels() const;
  int64_t codebook_size() const;
  int64_t code_dim() const;       // codebook entry size: dim (rq-kmeans) or latent_dim (rq-vae)
  // Level l's codebook, [codebook_size, code_dim] row-major.
  std::vector<float> codebook(int64_t level) const;

  // x: [n, dim] row-major -> codes [n, levels] row-major (nearest entry per level on the running
  // residual). Throws InvalidInput for non-finite values.
  std::vector<int32_t> encode(const float* x, int64_t n) const;
  // codes: [n, levels] row-major -> vectors [n, dim]. Throws InvalidInput for a code out of range.
  std::vector<float> decode(const int32_t* codes, int64_t n) const;

  // A safetensors file: codebook.L [K, code_dim] (and encoder.* / decoder.* for rq-vae), F32,
  // with metadata {"format": "genrec-rq 1", "method", "dim", "levels", "codebook_size",
  // "code_dim", "options" (JSON)}. Written atomically.
  void save(const std::filesystem::path& path) const;
  // Throws InvalidInput naming the file when it is not such a file or the tensors disagree.
  static ResidualQuantizer load(const std::filesystem::path& path);

  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

struct RQResult {
  // Items 1..n, levels = options.levels, codebook_sizes = codebook_size each, no disambiguation
  // level (see resolve_collisions); sid.report is left empty.
  SemanticIds sid;
  // {"method", "options", "n_items", "dim", "levels", "codebook_size", "seconds",
  //  "mse", "relative_mse", "per_level": [{"level", "used_codes", "usage", ...}, ...]}
  // rq-kmeans per level: iterations, converged, empty_reseeded, cluster_size_min/max, mse and
  //   relative_mse after the level.
  // rq-vae adds "latent_dim", "autoencoder_relative_mse" (decoder(encoder(x)), unquantised),
  //   "loss": {"first", "last", "min", "recon_last", "quant_last", "curve" (<= 50 points,
  //   epoch-mean loss)}, "dead_codes_reset" (total) and per level "dead_codes_reset",
  //   "latent_relative_mse".
  nlohmann::json report = nlohmann::json::object();
  ResidualQuantizer quantizer;
};

// Fits a residual quantiser on x ([n, dim] float32 row-major; row i is item i + 1) and encodes
// every item. Throws InvalidInput for bad options, n < 1, dim < 1 or non-finite values;
// Cancelled when `progress` returns false. Progress stages: "rq-kmeans" (levels x iterations) or
// "rq-vae" (epochs).
RQResult fit_residual_quantizer(const float* x, int64_t n, int64_t dim, const RQOptions& options,
                                const ProgressCallback& progress = nullptr);

}  // namespace genrec
