#include "genrec/index/item_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "genrec/core/error.h"

namespace genrec {

namespace {

// The exact kind packs items in blocks of kLanes items, dimension-major inside a block
// ([n_blocks, dim, kLanes]), so that the inner loop runs over independent items and vectorises
// without reassociating any sum: each score is sum_d q[d] * x[d] in order of d, as a plain loop.
constexpr int kLanes = 8;
constexpr int64_t kChunkBlocks = 128;  // items scanned per pass over a query group (1,024)
constexpr int kQueryTile = 4;          // queries sharing one load of an item block
constexpr int64_t kQueryGroup = 32;    // queries per parallel task

struct Candidate {
  float score;
  int32_t id;
};
// Higher score first, ties to the lower id.
inline bool better(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Sorted, de-duplicated ids of 1..n_items (other ids cannot be returned anyway).
std::vector<int32_t> clean_exclusions(const std::vector<int32_t>& ids, int64_t n_items) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 1 && id <= n_items) out.push_back(id);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

inline bool contains(const std::vector<int32_t>& sorted, int32_t id) {
  return !sorted.empty() && std::binary_search(sorted.begin(), sorted.end(), id);
}

// The best k of the candidates offered, in a heap whose front is the worst kept.
class TopK {
 public:
  TopK(int64_t k, const std::vector<int32_t>* exclude) : k_(static_cast<size_t>(k)), exclude_(exclude) {
    heap_.reserve(k_);
  }
  // Cheap pre-check for the scan loop: can a candidate with this score enter? Items are
  // offered in increasing id order, so an equal score never beats a kept one.
  bool may_enter(float score) const { return heap_.size() < k_ || score > heap_.front().score; }
  void offer(float score, int32_t id) {
    Candidate c{score, id};
    if (heap_.size() == k_ && !better(c, heap_.front())) return;
    if (exclude_ && contains(*exclude_, id)) return;
    if (heap_.size() == k_) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = c;
    } else {
      heap_.push_back(c);
    }
    std::push_heap(heap_.begin(), heap_.end(), better);
  }
  // Best first.
  std::vector<Candidate> sorted() const {
    std::vector<Candidate> out = heap_;
    std::sort(out.begin(), out.end(), better);
    return out;
  }

 private:
  size_t k_;
  const std::vector<int32_t>* exclude_;
  std::vector<Candidate> heap_;
};

// kLanes floats as one GCC vector: 1 AVX register, or 2 SSE registers in the baseline build.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

// out[qi][j * kLanes + l] = sum_d queries[qi][d] * block_j[d][l] for Q queries (rows `dim`
// apart) and NB consecutive packed blocks: Q * NB independent accumulators, so that one query
// (Q = 1) still keeps several additions in flight.
template <int Q, int NB>
__attribute__((always_inline)) inline void block_dots(const float* queries, const float* blocks, int64_t dim,
                                                      float (&out)[Q][NB * kLanes]) {
  Lanes acc[Q][NB];
  for (int qi = 0; qi < Q; ++qi)
    for (int j = 0; j < NB; ++j) acc[qi][j] = Lanes{};
  const int64_t stride = dim * kLanes;
  for (int64_t d = 0; d < dim; ++d) {
    Lanes x[NB];
    for (int j = 0; j < NB; ++j) std::memcpy(&x[j], blocks + j * stride + d * kLanes, sizeof(Lanes));
    for (int qi = 0; qi < Q; ++qi) {
      const Lanes qv = Lanes{} + queries[qi * dim + d];  // broadcast
      for (int j = 0; j < NB; ++j) acc[qi][j] += qv * x[j];
    }
  }
  for (int qi = 0; qi < Q; ++qi)
    for (int j = 0; j < NB; ++j) std::memcpy(&out[qi][j * kLanes], &acc[qi][j], sizeof(Lanes));
}

// Offers blocks [block_begin, block_end) to the Q queries' top-k, NB blocks at a time.
template <int Q, int NB>
__attribute__((always_inline)) inline void scan_blocks(const float* queries, const float* packed, int64_t dim,
                                                       int64_t n_items, int64_t block_begin, int64_t block_end,
                                                       TopK* tops) {
  auto offer = [&](const float* dots, int qi, int64_t b, int n_blocks) {
    const int64_t first_id = b * kLanes + 1;
    const int lanes = static_cast<int>(std::min<int64_t>(n_blocks * kLanes, n_items - b * kLanes));
    for (int l = 0; l < lanes; ++l)
      if (tops[qi].may_enter(dots[l])) tops[qi].offer(dots[l], static_cast<int32_t>(first_id + l));
  };
  int64_t b = block_begin;
  float dots[Q][NB * kLanes];
  for (; b + NB <= block_end; b += NB) {
    block_dots<Q, NB>(queries, packed + b * dim * kLanes, dim, dots);
    for (int qi = 0; qi < Q; ++qi) offer(dots[qi], qi, b, NB);
  }
  float one[Q][kLanes];
  for (; b < block_end; ++b) {
    block_dots<Q, 1>(queries, packed + b * dim * kLanes, dim, one);
    for (int qi = 0; qi < Q; ++qi) offer(one[qi], qi, b, 1);
  }
}

// The scan compiled twice, for AVX2 and for the baseline, picked at load time (GCC function
// multi-versioning). Neither contracts a*b+c into an FMA (ISO C++ mode), so both give the
// same bits.
__attribute__((target_clones("avx2", "default"))) void scan_tile(const float* queries, const float* packed,
                                                                  int64_t dim, int64_t n_items, int64_t block_begin,
                                                                  int64_t block_end, TopK* tops) {
  scan_blocks<kQueryTile, 1>(queries, packed, dim, n_items, block_begin, block_end, tops);
}
__attribute__((target_clones("avx2", "default"))) void scan_one(const float* query, const float* packed, int64_t dim,
                                                                int64_t n_items, int64_t block_begin,
                                                                int64_t block_end, TopK* top) {
  scan_blocks<1, 2>(query, packed, dim, n_items, block_begin, block_end, top);
}

void check_finite(const float* x, int64_t rows, int64_t dim, const char* what) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < dim; ++d)
      if (!std::isfinite(x[r * dim + d]))
        throw InvalidInput(std::string("item index: ") + what + " " + std::to_string(r) +
                           " has a non-finite value (NaN or Inf) at dimension " + std::to_string(d));
}

}  // namespace

const std::vector<std::string>& item_index_kinds() {
  static const std::vector<std::string> kinds = {"exact", "flat", "ivf", "hnsw"};
  return kinds;
}

void ItemIndexOptions::validate() const {
  const auto& kinds = item_index_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
    throw InvalidInput("index.kind must be one of exact, flat, ivf, hnsw, got '" + kind + "'");
  auto at_least = [](const char* key, int64_t value, int64_t min) {
    if (value < min)
      throw InvalidInput(std::string(key) + " must be >= " + std::to_string(min) + ", got " + std::to_string(value));
  };
  if (nlist) at_least("index.nlist", *nlist, 1);
  at_least("index.nprobe", nprobe, 1);
  at_least("index.hnsw_m", hnsw_m, 2);
  at_least("index.ef_construction", ef_construction, 1);
  at_least("index.ef_search", ef_search, 1);
}

int64_t ItemIndexOptions::resolved_nlist(int64_t n_items) const {
  if (nlist) return *nlist;
  const auto by_sqrt = static_cast<int64_t>(std::lround(4.0 * std::sqrt(static_cast<double>(n_items))));
  return std::max<int64_t>(1, std::min(by_sqrt, n_items / 39));
}

nlohmann::json ItemIndexOptions::to_json(int64_t n_items) const {
  nlohmann::json j = {{"kind", kind}};
  if (kind == "ivf") {
    const int64_t lists = resolved_nlist(n_items);
    j["nlist"] = lists;
    j["nprobe"] = std::min(nprobe, lists);
  } else if (kind == "hnsw") {
    j["hnsw_m"] = hnsw_m;
    j["ef_construction"] = ef_construction;
    j["ef_search"] = ef_search;
  }
  return j;
}

struct ItemIndex::Impl {
  ItemIndexOptions options;
  int64_t n_items = 0, dim = 0;
  double build_seconds = 0;
  std::vector<float> packed;             // exact: [n_blocks, dim, kLanes], zero-padded
  std::unique_ptr<faiss::Index> faiss;  // flat, ivf, hnsw
  int64_t nlist = 0;                     // ivf

  SearchResult search_exact(const float* queries, int64_t n_queries, int64_t k,
                            const std::vector<std::vector<int32_t>>& exclude) const;
  SearchResult search_faiss(const float* queries, int64_t n_queries, int64_t k,
                            const std::vector<std::vector<int32_t>>& exclude) const;
};

ItemIndex::ItemIndex(const float* items, int64_t n_items, int64_t dim, const ItemIndexOptions& options)
    : impl_(std::make_unique<Impl>()) {
  options.validate();
  if (n_items < 1) throw InvalidInput("item index: the catalogue is empty");
  if (dim < 1) throw InvalidInput("item index: item vectors have no dimensions");
  if (n_items > std::numeric_limits<int32_t>::max() - kLanes)
    throw InvalidInput("item index: too many items (" + std::to_string(n_items) + ")");
  check_finite(items, n_items, dim, "item row");
  const auto t0 = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  m.options = options;
  m.n_items = n_items;
  m.dim = dim;
  const auto d = static_cast<int>(dim);
  try {
    if (options.kind == "exact") {
      const int64_t n_blocks = (n_items + kLanes - 1) / kLanes;
      m.packed.assign(static_cast<size_t>(n_blocks * dim * kLanes), 0.0f);
      for (int64_t r = 0; r < n_items; ++r) {
        float* block = m.packed.data() + (r / kLanes) * dim * kLanes;
        for (int64_t j = 0; j < dim; ++j) block[j * kLanes + r % kLanes] = items[r * dim + j];
      }
    } else if (options.kind == "flat") {
      m.faiss = std::make_unique<faiss::IndexFlatIP>(d);
      m.faiss->add(n_items, items);
    } else if (options.kind == "ivf") {
      m.nlist = options.resolved_nlist(n_items);
      if (m.nlist > n_items)
        throw InvalidInput("index.nlist must be <= the number of items (" + std::to_string(n_items) + "), got " +
                           std::to_string(m.nlist));
      auto ivf = std::make_unique<faiss::IndexIVFFlat>(new faiss::IndexFlatIP(d), d, static_cast<size_t>(m.nlist),
                                                       faiss::METRIC_INNER_PRODUCT);
      ivf->own_fields = true;
      ivf->cp.verbose = false;
      // FAISS warns on stderr below 39 points per centroid; the library never prints, and a
      // small nlist chosen by the user is allowed.
      ivf->cp.min_points_per_centroid = 1;
      ivf->train(n_items, items);
      ivf->add(n_items, items);
      m.faiss = std::move(ivf);
    } else {  // hnsw
      auto hnsw = std::make_unique<faiss::IndexHNSWFlat>(d, static_cast<int>(options.hnsw_m), faiss::METRIC_INNER_PRODUCT);
      hnsw->hnsw.efConstruction = static_cast<int>(options.ef_construction);
      hnsw->hnsw.efSearch = static_cast<int>(options.ef_search);
      hnsw->add(n_items, items);
      m.faiss = std::move(hnsw);
    }
  } catch (const faiss::FaissException& e) {
    throw Error("item index: building the " + options.kind + " index failed in FAISS: " + e.what());
  }
  m.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

ItemIndex::~ItemIndex() = default;
ItemIndex::ItemIndex(ItemIndex&&) noexcept = default;
ItemIndex& ItemIndex::operator=(ItemIndex&&) noexcept = default;

const std::string& ItemIndex::kind() const { return impl_->options.kind; }
int64_t ItemIndex::n_items() const { return impl_->n_items; }
int64_t ItemIndex::dim() const { return impl_->dim; }
const ItemIndexOptions& ItemIndex::options() const { return impl_->options; }
double ItemIndex::build_seconds() const { return impl_->build_seconds; }

SearchResult ItemIndex::search(const float* queries, int64_t n_queries, int64_t k,
                               const std::vector<std::vector<int32_t>>& exclude) const {
  if (k < 1) throw InvalidInput("item index: k must be >= 1, got " + std::to_string(k));
  if (n_queries < 0) throw InvalidInput("item index: negative query count");
  if (!exclude.empty() && static_cast<int64_t>(exclude.size()) != n_queries)
    throw InvalidInput("item index: " + std::to_string(exclude.size()) + " exclusion lists for " +
                       std::to_string(n_queries) + " queries");
  check_finite(queries, n_queries, impl_->dim, "query");
  if (impl_->options.kind == "exact") return impl_->search_exact(queries, n_queries, k, exclude);
  try {
    return impl_->search_faiss(queries, n_queries, k, exclude);
  } catch (const faiss::FaissException& e) {
    throw Error(std::string("item index: FAISS search failed: ") + e.what());
  }
}

namespace {
SearchResult empty_result(int64_t n_queries, int64_t k) {
  SearchResult r;
  r.n_queries = n_queries;
  r.k = k;
  r.ids.assign(static_cast<size_t>(n_queries * k), 0);
  r.scores.assign(static_cast<size_t>(n_queries * k), -std::numeric_limits<float>::infinity());
  return r;
}
}  // namespace

SearchResult ItemIndex::Impl::search_exact(const float* queries, int64_t n_queries, int64_t k,
                                           const std::vector<std::vector<int32_t>>& exclude) const {
  SearchResult result = empty_result(n_queries, k);
  const int64_t n_blocks = (n_items + kLanes - 1) / kLanes;
  const int64_t n_groups = (n_queries + kQueryGroup - 1) / kQueryGroup;
#pragma omp parallel for schedule(dynamic, 1) if (n_groups > 1)
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t q0 = g * kQueryGroup, q1 = std::min(n_queries, q0 + kQueryGroup);
    std::vector<std::vector<int32_t>> excl(static_cast<size_t>(q1 - q0));
    std::vector<TopK> tops;
    tops.reserve(static_cast<size_t>(q1 - q0));
    for (int64_t q = q0; q < q1; ++q) {
      const bool has_excl = !exclude.empty() && !exclude[static_cast<size_t>(q)].empty();
      if (has_excl) excl[static_cast<size_t>(q - q0)] = clean_exclusions(exclude[static_cast<size_t>(q)], n_items);
      tops.emplace_back(k, has_excl ? &excl[static_cast<size_t>(q - q0)] : nullptr);
    }
    // Item chunks outside, queries inside: a chunk stays in cache while the group reads it.
    for (int64_t b0 = 0; b0 < n_blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(n_blocks, b0 + kChunkBlocks);
      int64_t q = q0;
      for (; q + kQueryTile <= q1; q += kQueryTile)
        scan_tile(queries + q * dim, packed.data(), dim, n_items, b0, b1, &tops[static_cast<size_t>(q - q0)]);
      for (; q < q1; ++q) scan_one(queries + q * dim, packed.data(), dim, n_items, b0, b1, &tops[static_cast<size_t>(q - q0)]);
    }
    for (int64_t q = q0; q < q1; ++q) {
      std::vector<Candidate> best = tops[static_cast<size_t>(q - q0)].sorted();
      for (size_t r = 0; r < best.size(); ++r) {
        result.ids[static_cast<size_t>(q * k) + r] = best[r].id;
        result.scores[static_cast<size_t>(q * k) + r] = best[r].score;
      }
    }
  }
  return result;
}

SearchResult ItemIndex::Impl::search_faiss(const float* queries, int64_t n_queries, int64_t k,
                                           const std::vector<std::vector<int32_t>>& exclude) const {
  SearchResult result = empty_result(n_queries, k);
  if (n_queries == 0) return result;
  std::vector<std::vector<int32_t>> excl(exclude.size());
  size_t most_excluded = 0;
  for (size_t q = 0; q < exclude.size(); ++q) {
    excl[q] = clean_exclusions(exclude[q], n_items);
    most_excluded = std::max(most_excluded, excl[q].size());
  }
  // Ask for enough neighbours that k remain after dropping the excluded ones.
  const int64_t k_search = std::min<int64_t>(n_items, k + static_cast<int64_t>(most_excluded));
  std::vector<float> distances(static_cast<size_t>(n_queries * k_search));
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(n_queries * k_search));
  faiss::SearchParametersIVF ivf_params;
  faiss::SearchParametersHNSW hnsw_params;
  const faiss::SearchParameters* params = nullptr;
  if (options.kind == "ivf") {
    ivf_params.nprobe = static_cast<size_t>(std::min(options.nprobe, nlist));
    params = &ivf_params;
  } else if (options.kind == "hnsw") {
    hnsw_params.efSearch = static_cast<int>(std::max(options.ef_search, k_search));
    params = &hnsw_params;
  }
  faiss->search(n_queries, queries, k_search, distances.data(), labels.data(), params);
  std::vector<Candidate> found;
  for (int64_t q = 0; q < n_queries; ++q) {
    found.clear();
    const std::vector<int32_t>* ex = excl.empty() ? nullptr : &excl[static_cast<size_t>(q)];
    for (int64_t j = 0; j < k_search; ++j) {
      const faiss::Index::idx_t label = labels[static_cast<size_t>(q * k_search + j)];
      if (label < 0) continue;  // fewer neighbours reached than asked for
      const auto id = static_cast<int32_t>(label + 1);
      if (ex && contains(*ex, id)) continue;
      found.push_back({distances[static_cast<size_t>(q * k_search + j)], id});
    }
    std::sort(found.begin(), found.end(), better);
    const size_t n = std::min(found.size(), static_cast<size_t>(k));
    for (size_t r = 0; r < n; ++r) {
      result.ids[static_cast<size_t>(q * k) + r] = found[r].id;
      result.scores[static_cast<size_t>(q * k) + r] = found[r].score;
    }
  }
  return result;
}

void set_index_threads(int n) {
  if (n < 1) throw InvalidInput("index threads must be >= 1, got " + std::to_string(n));
  omp_set_num_threads(n);
}

int index_threads() { return omp_get_max_threads(); }

}  // namespace genrec
