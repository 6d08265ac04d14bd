// Item content -> dense vectors, the input of the semantic-ID tokenisers (`genrec sid build`).
// Torch-free header (the implementation uses libtorch for the SVD and for run checkpoints).
//
// Sources (one block each; blocks are concatenated, each multiplied by its weight):
//   text        title, description, brand and categories of each item: lowercase alphanumeric
//               words and word bigrams (within a field), hashed to 2^18 buckets, TF-IDF
//               (sublinear tf, smoothed log idf), L2, then reduced to `dim` (default 64) by a
//               randomised truncated SVD (default) or a seeded Gaussian random projection.
//   attributes  multi-hot of the item's attribute ids (item2attributes), TF-IDF, L2, same
//               reduction (default dim 32).
//   matrix      a user-supplied matrix: float32 .npy ('<f4', C order, 2-D), .safetensors (one 2-D
//               float tensor, or the one named by `tensor`) with rows = n_items (row i = dense item
//               i + 1) or n_items + 1 (row 0 = padding, ignored); or .tsv/.txt lines
//               "RAW_ITEM_ID<TAB>v1<TAB>v2..." matched by raw item id (items absent from the file
//               get zeros and has_content = 0; an unknown id is an error naming file:line).
//   run         the item embeddings of a trained two-tower run (sasrec, hstu):
//               RUN/checkpoints/best.ckpt (or a .ckpt file), rows matched by raw item id.
// Each block is L2-normalised per row when `normalize` (default), then multiplied by `weight`.
// Every bad input throws InvalidInput naming the file (and line / field where there is one).
//
// Spec strings (the CLI's --features, parse_feature_spec):
//   text[:DIM[:WEIGHT]]          e.g. "text", "text:64", "text:128:0.5"
//   attributes[:DIM[:WEIGHT]]    e.g. "attributes:32:0.5"
//   matrix:FILE[:WEIGHT]         e.g. "matrix:emb.npy", "matrix:clip.safetensors:2"
//   run:DIR[:WEIGHT]             e.g. "run:runs/sasrec:0.5"
// plus optional KEY=VALUE segments anywhere after the kind: dim=N, weight=W, tensor=NAME
// (safetensors), normalize=true|false, reduce=svd|random (text / attributes).
//
// Example:
//   ItemFeatureOptions opt;
//   opt.sources = {parse_feature_spec("text:64"), parse_feature_spec("attributes:32:0.5")};
//   ItemFeatures f = build_item_features(ds, opt, /*seed=*/42);
//   // f.x[(i * f.dim) .. (i * f.dim + f.dim)) is item i's vector (row 0 = zeros)
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"

namespace genrec {

struct ItemFeatureSource {
  std::string kind;              // "text" | "attributes" | "matrix" | "run"
  double weight = 1.0;           // the block is multiplied by this (after normalisation)
  int64_t dim = 0;               // text / attributes: output dim (0 = default: 64 / 32); others: unused
  std::filesystem::path path;    // matrix: the file; run: the run directory or a .ckpt file
  std::string tensor;            // matrix (.safetensors): tensor name; empty = the only 2-D float tensor
  bool normalize = true;         // L2-normalise each row of the block
  std::string reduce = "svd";    // text / attributes: "svd" (truncated SVD) | "random" (Gaussian projection)

  std::string to_string() const;  // the spec form, for reports
};

struct ItemFeatureOptions {
  std::vector<ItemFeatureSource> sources;
};

struct ItemFeatures {
  std::vector<float> x;               // [(n_items + 1) * dim], row 0 zeros
  int64_t dim = 0;
  std::vector<uint8_t> has_content;   // [n_items + 1]: 1 where some source gave the item a non-zero row
  nlohmann::json report = nlohmann::json::object();  // per source: kind, dim, weight, coverage, seconds, ...
  const float* row(int32_t item) const { return x.data() + static_cast<size_t>(item) * static_cast<size_t>(dim); }
};

// Parses one spec string (syntax above). Throws InvalidInput naming the spec and the bad part.
ItemFeatureSource parse_feature_spec(const std::string& spec);

// Builds all sources and concatenates them. `seed` drives the randomised SVD / projection.
ItemFeatures build_item_features(const Dataset& ds, const ItemFeatureOptions& options, uint64_t seed,
                                 const ProgressCallback& progress = nullptr);

// One block on its own (before weighting; normalised when source.normalize), for tests and tools.
ItemFeatures build_item_feature_block(const Dataset& ds, const ItemFeatureSource& source, uint64_t seed,
                                      const ProgressCallback& progress = nullptr);

// The tokens the text source hashes for one item (words and "w1 w2" bigrams, per field).
std::vector<std::string> item_text_tokens(const ItemText& text);

// Reads a user-supplied matrix (.npy, .safetensors, .tsv/.txt) into rows for items 1..n_items of
// `items` (raw values; no normalisation). `tensor`: safetensors tensor name or empty.
ItemFeatures read_item_matrix(const std::filesystem::path& path, const Vocabulary& items,
                              const std::string& tensor = "");

}  // namespace genrec
