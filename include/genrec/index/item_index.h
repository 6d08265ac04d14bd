// Top-K item search by inner product (maximum inner product search) over a catalogue of item
// vectors, exact or approximate through FAISS. Serves two-tower models
// (models/recommender.h: score == query_embeddings · item_embeddings()ᵀ) and stays torch-free:
// it takes raw float32 row-major matrices.
//
// Kinds (config key index.kind):
//   exact  blocked inner products over every item, no FAISS; the reference. Ties go to the
//          lower item id.
//   flat   faiss::IndexFlatIP: also exhaustive (BLAS for batches), same results up to float
//          rounding.
//   ivf    faiss::IndexIVFFlat, inner product: k-means (nlist centroids, trained on the items
//          themselves) partitions the items; a query scans the nprobe nearest lists.
//   hnsw   faiss::IndexHNSWFlat, inner product: a graph with hnsw_m links per node, built with
//          ef_construction and searched with ef_search candidates.
// Approximate kinds may miss true top-K items; nprobe = nlist (ivf) is exhaustive.
//
// Example:
//   ItemIndexOptions opt;
//   opt.kind = "hnsw";
//   ItemIndex index(items, n_items, dim, opt);  // items: [n_items, dim], row r = item id r + 1
//   SearchResult top = index.search(queries, n_queries, 10, {seen_by_query_0, ...});
//   int32_t best = top.id(0, 0);                // item id of query 0's best item
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace genrec {

// The kinds ItemIndex accepts: exact, flat, ivf, hnsw.
const std::vector<std::string>& item_index_kinds();

// Index settings; the [index] table of a run config. validate() throws InvalidInput naming the
// key (e.g. "index.nlist must be >= 1, got 0").
struct ItemIndexOptions {
  std::string kind = "exact";     // index.kind: exact | flat | ivf | hnsw
  std::optional<int64_t> nlist;   // index.nlist (ivf): inverted lists; unset = 4·sqrt(N), at most N / 39
                                  // (FAISS wants >= 39 training points per centroid), at least 1
  int64_t nprobe = 16;            // index.nprobe (ivf): lists scanned per query (capped at nlist)
  int64_t hnsw_m = 32;            // index.hnsw_m (hnsw): graph links per node
  int64_t ef_construction = 40;   // index.ef_construction (hnsw): candidate list while building
  int64_t ef_search = 128;        // index.ef_search (hnsw): candidate list while searching (>= k is used)

  void validate() const;
  // The settings that apply to `kind` for n_items items (nlist resolved), e.g.
  // {"kind": "ivf", "nlist": 440, "nprobe": 16}.
  nlohmann::json to_json(int64_t n_items) const;
  // nlist for n_items items: the set value, or the default above.
  int64_t resolved_nlist(int64_t n_items) const;
};

// Top-k per query, best first. Rows that found fewer than k items (small catalogue, exclusions,
// an ivf probe that reached too few items) are padded with id 0 and score -inf.
struct SearchResult {
  int64_t n_queries = 0;
  int64_t k = 0;
  std::vector<int32_t> ids;   // [n_queries, k] item ids 1..N
  std::vector<float> scores;  // [n_queries, k] inner products

  int32_t id(int64_t query, int64_t rank) const { return ids[static_cast<size_t>(query * k + rank)]; }
  float score(int64_t query, int64_t rank) const { return scores[static_cast<size_t>(query * k + rank)]; }
};

class ItemIndex {
 public:
  // items: [n_items, dim] float32, row-major; row r is item id r + 1 (pass item_embeddings()
  // from row 1, leaving out the padding row). The data is copied. Throws InvalidInput for bad
  // options, an empty catalogue or non-finite values.
  ItemIndex(const float* items, int64_t n_items, int64_t dim, const ItemIndexOptions& options);
  ~ItemIndex();
  ItemIndex(ItemIndex&&) noexcept;
  ItemIndex& operator=(ItemIndex&&) noexcept;

  // queries: [n_queries, dim] float32, row-major. exclude: empty, or one list of item ids per
  // query that must not be returned (e.g. the items a user has seen; ids outside 1..N are
  // ignored). Approximate kinds search k + |exclude| and filter. Thread-safe (const).
  SearchResult search(const float* queries, int64_t n_queries, int64_t k,
                      const std::vector<std::vector<int32_t>>& exclude = {}) const;

  const std::string& kind() const;
  int64_t n_items() const;
  int64_t dim() const;
  const ItemIndexOptions& options() const;
  // Seconds the constructor took (copy, training, adding).
  double build_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// OpenMP threads used by searches (FAISS and the exact kind share the OpenMP runtime with
// libtorch, so torch's set_num_threads changes this too). n >= 1.
void set_index_threads(int n);
int index_threads();

}  // namespace genrec
