// Item content -> dense vectors (see include/genrec/tokenizers/item_features.h).
#include "genrec/tokenizers/item_features.h"

#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/core/safetensors.h"
#include "genrec/models/recommender.h"

namespace genrec {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr int kHashBits = 18;
constexpr uint64_t kHashBuckets = uint64_t{1} << kHashBits;

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

bool parse_double(std::string_view s, double& out) {
  if (s.empty()) return false;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (*b == '+') ++b;
  auto r = std::from_chars(b, e, out);
  return r.ec == std::errc() && r.ptr == e;
}

bool parse_int(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// ---- sparse rows ----

// CSR over rows 0..n_items (row 0 empty), columns compacted to the ones that occur.
struct Csr {
  int64_t n_rows = 0, n_cols = 0;
  std::vector<int64_t> ptr;  // [n_rows + 1]
  std::vector<int32_t> col;
  std::vector<float> val;
};

Csr transpose(const Csr& a) {
  Csr t;
  t.n_rows = a.n_cols;
  t.n_cols = a.n_rows;
  t.ptr.assign(static_cast<size_t>(t.n_rows) + 1, 0);
  for (int32_t c : a.col) ++t.ptr[static_cast<size_t>(c) + 1];
  for (int64_t r = 0; r < t.n_rows; ++r) t.ptr[r + 1] += t.ptr[r];
  t.col.resize(a.col.size());
  t.val.resize(a.val.size());
  std::vector<int64_t> pos(t.ptr.begin(), t.ptr.end() - 1);
  for (int64_t r = 0; r < a.n_rows; ++r)
    for (int64_t k = a.ptr[r]; k < a.ptr[r + 1]; ++k) {
      int64_t p = pos[static_cast<size_t>(a.col[k])]++;
      t.col[p] = static_cast<int32_t>(r);
      t.val[p] = a.val[k];
    }
  return t;
}

// out [a.n_rows, l] = A · D, D [a.n_cols, l] contiguous float. Rows are independent, so the result
// does not depend on the thread count and identical rows give identical outputs.
torch::Tensor sparse_mm(const Csr& a, const torch::Tensor& d_in) {
  torch::Tensor d = d_in.to(torch::kFloat).contiguous();
  const int64_t l = d.size(1);
  torch::Tensor out = torch::zeros({a.n_rows, l}, torch::kFloat);
  const float* dp = d.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, a.n_rows, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* o = op + r * l;
      for (int64_t k = a.ptr[r]; k < a.ptr[r + 1]; ++k) {
        const float v = a.val[k];
        const float* row = dp + static_cast<int64_t>(a.col[k]) * l;
        for (int64_t j = 0; j < l; ++j) o[j] += v * row[j];
      }
    }
  });
  return out;
}

// TF-IDF from per-row term counts (columns already compacted), then L2 per row.
void tfidf_l2(Csr& a, bool sublinear_tf) {
  std::vector<int64_t> df(static_cast<size_t>(a.n_cols), 0);
  int64_t docs = 0;
  for (int64_t r = 0; r < a.n_rows; ++r) {
    if (a.ptr[r + 1] > a.ptr[r]) ++docs;
    for (int64_t k = a.ptr[r]; k < a.ptr[r + 1]; ++k) ++df[static_cast<size_t>(a.col[k])];
  }
  for (int64_t r = 0; r < a.n_rows; ++r) {
    double norm = 0;
    for (int64_t k = a.ptr[r]; k < a.ptr[r + 1]; ++k) {
      double tf = sublinear_tf ? 1.0 + std::log(static_cast<double>(a.val[k])) : 1.0;
      double idf = std::log((1.0 + docs) / (1.0 + static_cast<double>(df[static_cast<size_t>(a.col[k])]))) + 1.0;
      a.val[k] = static_cast<float>(tf * idf);
      norm += static_cast<double>(a.val[k]) * a.val[k];
    }
    if (norm > 0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(norm));
      for (int64_t k = a.ptr[r]; k < a.ptr[r + 1]; ++k) a.val[k] *= inv;
    }
  }
}

// Builds a CSR from per-row sorted (key, count) lists, compacting keys to column ids in order of
// first use by key value (so the layout does not depend on row order).
Csr csr_from_rows(const std::vector<std::vector<std::pair<uint64_t, float>>>& rows) {
  std::vector<uint64_t> keys;
  for (const auto& r : rows)
    for (const auto& kv : r) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  Csr a;
  a.n_rows = static_cast<int64_t>(rows.size());
  a.n_cols = static_cast<int64_t>(keys.size());
  a.ptr.assign(rows.size() + 1, 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (const auto& kv : rows[r]) {
      a.col.push_back(static_cast<int32_t>(std::lower_bound(keys.begin(), keys.end(), kv.first) - keys.begin()));
      a.val.push_back(kv.second);
    }
    a.ptr[r + 1] = static_cast<int64_t>(a.col.size());
  }
  return a;
}

// Sorted (key, count) of a bag of keys.
std::vector<std::pair<uint64_t, float>> count_keys(std::vector<uint64_t> keys) {
  std::sort(keys.begin(), keys.end());
  std::vector<std::pair<uint64_t, float>> out;
  for (size_t i = 0; i < keys.size();) {
    size_t j = i;
    while (j < keys.size() && keys[j] == keys[i]) ++j;
    out.emplace_back(keys[i], static_cast<float>(j - i));
    i = j;
  }
  return out;
}

// Makes the largest-magnitude entry of every column of v positive (SVD sign ambiguity).
void fix_signs(torch::Tensor& v) {
  if (v.size(0) == 0) return;
  torch::Tensor idx = v.abs().argmax(0);
  torch::Tensor s = v.gather(0, idx.unsqueeze(0)).sign();
  s = torch::where(s == 0, torch::ones_like(s), s);
  v = v * s;
}

// Reduces the rows of `a` to `dim` columns. Returns [n_rows, dim] float.
torch::Tensor reduce_rows(const Csr& a, int64_t dim, const std::string& method, uint64_t seed, nlohmann::json& info) {
  torch::Tensor out = torch::zeros({a.n_rows, dim}, torch::kFloat);
  int64_t nonempty = 0;
  for (int64_t r = 0; r < a.n_rows; ++r) nonempty += a.ptr[r + 1] > a.ptr[r];
  info["vocabulary"] = a.n_cols;
  info["nonzeros"] = static_cast<int64_t>(a.val.size());
  info["reduce"] = method;
  if (nonempty == 0 || a.n_cols == 0) return out;

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (method == "random") {
    // Gaussian random projection, entries N(0, 1/dim).
    torch::Tensor omega = torch::empty({a.n_cols, dim}, torch::kFloat);
    float* p = omega.data_ptr<float>();
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    for (int64_t i = 0; i < a.n_cols * dim; ++i) p[i] = normal(rng) * scale;
    return sparse_mm(a, omega);
  }

  // Randomised truncated SVD (Halko et al. 2011) with two power iterations. The item vectors are
  // A · V_k (= U_k Σ_k), computed row by row so identical rows give identical vectors.
  const int64_t k = std::min<int64_t>({dim, nonempty, a.n_cols});
  const int64_t l = std::min<int64_t>({k + 10, nonempty, a.n_cols});
  Csr at = transpose(a);
  torch::Tensor omega = torch::empty({a.n_cols, l}, torch::kFloat);
  {
    float* p = omega.data_ptr<float>();
    for (int64_t i = 0; i < a.n_cols * l; ++i) p[i] = normal(rng);
  }
  auto orth = [](const torch::Tensor& y) {
    return std::get<0>(torch::linalg_qr(y.to(torch::kDouble))).to(torch::kFloat).contiguous();
  };
  torch::Tensor q = orth(sparse_mm(a, omega));
  for (int it = 0; it < 2; ++it) {
    torch::Tensor z = orth(sparse_mm(at, q));
    q = orth(sparse_mm(a, z));
  }
  torch::Tensor z = sparse_mm(at, q).to(torch::kDouble);  // Aᵀ Q = Bᵀ  [n_cols, l]
  torch::Tensor g = torch::matmul(z.t(), z);               // B Bᵀ = U_B Σ² U_Bᵀ
  auto [evals, evecs] = torch::linalg_eigh(g, "L");        // ascending
  evals = evals.flip(0).clamp_min(0).slice(0, 0, k);
  evecs = evecs.flip(1).slice(1, 0, k);
  torch::Tensor s = evals.sqrt();
  const double s_max = s[0].item<double>();
  torch::Tensor inv = torch::where(s > s_max * 1e-6, 1.0 / s.clamp_min(1e-300), torch::zeros_like(s));
  torch::Tensor v = torch::matmul(z, evecs) * inv.unsqueeze(0);  // V_k [n_cols, k]
  fix_signs(v);
  torch::Tensor y = sparse_mm(a, v.to(torch::kFloat));
  out.slice(1, 0, k).copy_(y);
  double total = 0;
  for (float x : a.val) total += static_cast<double>(x) * x;
  info["explained_energy"] = total > 0 ? evals.sum().item<double>() / total : 0.0;
  info["rank"] = k;
  return out;
}

void l2_rows(std::vector<float>& x, int64_t dim) {
  const size_t n = dim > 0 ? x.size() / static_cast<size_t>(dim) : 0;
  for (size_t r = 0; r < n; ++r) {
    float* p = x.data() + r * static_cast<size_t>(dim);
    double s = 0;
    for (int64_t j = 0; j < dim; ++j) s += static_cast<double>(p[j]) * p[j];
    if (s > 0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(s));
      for (int64_t j = 0; j < dim; ++j) p[j] *= inv;
    }
  }
}

std::vector<uint8_t> nonzero_rows(const std::vector<float>& x, int64_t dim, int64_t n_rows) {
  std::vector<uint8_t> has(static_cast<size_t>(n_rows), 0);
  for (int64_t r = 1; r < n_rows; ++r) {
    const float* p = x.data() + r * dim;
    for (int64_t j = 0; j < dim; ++j)
      if (p[j] != 0.0f) {
        has[static_cast<size_t>(r)] = 1;
        break;
      }
  }
  return has;
}

ItemFeatures from_tensor(const torch::Tensor& t_in) {
  torch::Tensor t = t_in.to(torch::kFloat).contiguous();
  ItemFeatures f;
  f.dim = t.size(1);
  f.x.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  std::fill(f.x.begin(), f.x.begin() + f.dim, 0.0f);  // row 0 = padding
  return f;
}

// ---- text / attributes ----

void add_field_tokens(std::string_view s, std::vector<std::string>& out) {
  std::vector<std::string> words;
  std::string cur;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c >= 0x80) {
      cur.push_back(static_cast<char>(c < 0x80 ? std::tolower(c) : c));
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  for (size_t i = 0; i < words.size(); ++i) {
    out.push_back(words[i]);
    if (i + 1 < words.size()) out.push_back(words[i] + " " + words[i + 1]);
  }
}

ItemFeatures text_block(const Dataset& ds, const ItemFeatureSource& src, uint64_t seed, nlohmann::json& info) {
  const int32_t n = ds.n_items();
  if (ds.n_items_with_text() == 0)
    throw InvalidInput("feature source text: the dataset has no item text (import item text with `genrec data import "
                       "--items FILE`, or use attributes / matrix / run)");
  std::vector<std::vector<std::pair<uint64_t, float>>> rows(static_cast<size_t>(n) + 1);
  int64_t tokens = 0;
  for (int32_t i = 1; i <= n; ++i) {
    if (static_cast<size_t>(i) >= ds.has_item_text.size() || !ds.has_item_text[static_cast<size_t>(i)]) continue;
    std::vector<std::string> toks = item_text_tokens(ds.item_text[static_cast<size_t>(i)]);
    tokens += static_cast<int64_t>(toks.size());
    std::vector<uint64_t> keys;
    keys.reserve(toks.size());
    for (const auto& t : toks) keys.push_back(fnv1a(t) & (kHashBuckets - 1));
    rows[static_cast<size_t>(i)] = count_keys(std::move(keys));
  }
  Csr a = csr_from_rows(rows);
  tfidf_l2(a, /*sublinear_tf=*/true);
  info["hash_buckets"] = kHashBuckets;
  info["tokens"] = tokens;
  return from_tensor(reduce_rows(a, src.dim, src.reduce, seed, info));
}

ItemFeatures attributes_block(const Dataset& ds, const ItemFeatureSource& src, uint64_t seed, nlohmann::json& info) {
  const int32_t n = ds.n_items();
  if (!ds.has_attributes() || ds.attribute_values.empty())
    throw InvalidInput("feature source attributes: the dataset has no item attributes (import an item2attributes "
                       "file with `genrec data import --items FILE`, or use text / matrix / run)");
  std::vector<std::vector<std::pair<uint64_t, float>>> rows(static_cast<size_t>(n) + 1);
  for (int32_t i = 1; i <= n; ++i) {
    std::vector<uint64_t> keys;
    for (int64_t k = ds.attribute_offsets[static_cast<size_t>(i)]; k < ds.attribute_offsets[static_cast<size_t>(i) + 1]; ++k)
      keys.push_back(static_cast<uint64_t>(ds.attribute_values[static_cast<size_t>(k)]));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    rows[static_cast<size_t>(i)] = count_keys(std::move(keys));
  }
  Csr a = csr_from_rows(rows);
  tfidf_l2(a, /*sublinear_tf=*/false);
  info["attributes"] = ds.attributes.size();
  return from_tensor(reduce_rows(a, src.dim, src.reduce, seed, info));
}

// ---- matrices ----

// Places `rows` x `cols` values (row-major) into items: rows == n (row r = item r + 1) or n + 1.
ItemFeatures place_rows(const std::string& file, const float* data, int64_t rows, int64_t cols, int32_t n_items) {
  if (cols <= 0) throw InvalidInput(SourceLocation{file, 0, "shape"}, "the matrix has no columns");
  int64_t offset;
  if (rows == n_items) offset = 1;
  else if (rows == static_cast<int64_t>(n_items) + 1) offset = 0;
  else
    throw InvalidInput(SourceLocation{file, 0, "shape"},
                       "the matrix has " + std::to_string(rows) + " rows; expected n_items = " + std::to_string(n_items) +
                           " (row i = dense item i + 1) or n_items + 1 = " + std::to_string(n_items + 1) +
                           " (row 0 = padding) in the dataset's items.vocab order");
  ItemFeatures f;
  f.dim = cols;
  f.x.assign(static_cast<size_t>(n_items + 1) * static_cast<size_t>(cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t item = r + offset;
    if (item == 0) continue;
    const float* src = data + r * cols;
    for (int64_t j = 0; j < cols; ++j)
      if (!std::isfinite(src[j]))
        throw InvalidInput(SourceLocation{file, 0, "row " + std::to_string(r)},
                           "value " + std::to_string(j) + " is not finite");
    std::memcpy(f.x.data() + item * cols, src, static_cast<size_t>(cols) * sizeof(float));
  }
  f.has_content = nonzero_rows(f.x, cols, n_items + 1);
  return f;
}

// Value of key `key` in a numpy header dict literal, as raw text (up to the next top-level ',' or '}').
std::string npy_header_value(const std::string& header, const std::string& key, const std::string& file) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) k = header.find("\"" + key + "\"");
  if (k == std::string::npos) throw InvalidInput(SourceLocation{file, 0, "header"}, "the .npy header has no '" + key + "'");
  size_t p = header.find(':', k);
  if (p == std::string::npos) throw InvalidInput(SourceLocation{file, 0, "header"}, "malformed .npy header");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  size_t e = p;
  if (p < header.size() && header[p] == '(') {
    e = header.find(')', p);
    if (e == std::string::npos) throw InvalidInput(SourceLocation{file, 0, "header"}, "malformed shape in the .npy header");
    return header.substr(p, e - p + 1);
  }
  if (p < header.size() && (header[p] == '\'' || header[p] == '"')) {
    e = header.find(header[p], p + 1);
    if (e == std::string::npos) throw InvalidInput(SourceLocation{file, 0, "header"}, "malformed .npy header");
    return header.substr(p + 1, e - p - 1);
  }
  while (e < header.size() && header[e] != ',' && header[e] != '}') ++e;
  std::string v = header.substr(p, e - p);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

ItemFeatures read_npy(const std::filesystem::path& path, const Vocabulary& items) {
  const std::string file = path.string();
  std::string bytes = read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    throw InvalidInput(SourceLocation{file, 0, "header"}, "not a .npy file (missing the \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, data_off;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    data_off = 10 + header_len;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw InvalidInput(SourceLocation{file, 0, "header"}, "truncated .npy header");
    header_len = 0;
    for (int b = 0; b < 4; ++b) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + b])) << (8 * b);
    data_off = 12 + header_len;
  } else {
    throw InvalidInput(SourceLocation{file, 0, "header"}, "unsupported .npy version " + std::to_string(major));
  }
  if (data_off > bytes.size()) throw InvalidInput(SourceLocation{file, 0, "header"}, "truncated .npy header");
  const std::string header = bytes.substr(data_off - header_len, header_len);
  const std::string descr = npy_header_value(header, "descr", file);
  if (descr != "<f4")
    throw InvalidInput(SourceLocation{file, 0, "descr"},
                       "dtype '" + descr + "' is not supported; save little-endian float32 ('<f4'), e.g. "
                       "np.save(path, x.astype(np.float32))");
  const std::string fortran = npy_header_value(header, "fortran_order", file);
  if (fortran != "False")
    throw InvalidInput(SourceLocation{file, 0, "fortran_order"},
                       "Fortran-ordered arrays are not supported; save a C-ordered array (np.ascontiguousarray)");
  std::string shape = npy_header_value(header, "shape", file);
  std::vector<int64_t> dims;
  {
    std::string inner = shape.substr(1, shape.size() - 2);
    size_t p = 0;
    while (p <= inner.size()) {
      size_t e = inner.find(',', p);
      if (e == std::string::npos) e = inner.size();
      std::string t = inner.substr(p, e - p);
      t.erase(std::remove(t.begin(), t.end(), ' '), t.end());
      if (t.size() > 1 && t.back() == 'L') t.pop_back();
      if (!t.empty()) {
        int64_t v;
        if (!parse_int(t, v) || v < 0)
          throw InvalidInput(SourceLocation{file, 0, "shape"}, "malformed shape " + shape);
        dims.push_back(v);
      }
      p = e + 1;
    }
  }
  if (dims.size() != 2)
    throw InvalidInput(SourceLocation{file, 0, "shape"},
                       "expected a 2-D array (items x dims), got shape " + shape);
  const size_t want = static_cast<size_t>(dims[0]) * static_cast<size_t>(dims[1]) * sizeof(float);
  if (bytes.size() - data_off != want)
    throw InvalidInput(SourceLocation{file, 0, "data"},
                       "the data has " + std::to_string(bytes.size() - data_off) + " bytes; shape " + shape +
                           " of float32 needs " + std::to_string(want));
  std::vector<float> data(static_cast<size_t>(dims[0] * dims[1]));
  if (!data.empty()) std::memcpy(data.data(), bytes.data() + data_off, want);
  return place_rows(file, data.data(), dims[0], dims[1], items.size());
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) bits = sign;
    else {
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

ItemFeatures read_safetensors_matrix(const std::filesystem::path& path, const Vocabulary& items, const std::string& name) {
  const std::string file = path.string();
  SafetensorsFile st(path);
  auto is_float = [](const std::string& d) { return d == "F32" || d == "F64" || d == "F16" || d == "BF16"; };
  const SafetensorsView* v = nullptr;
  if (!name.empty()) {
    v = &st.at(name);
  } else {
    std::vector<const SafetensorsView*> cands;
    for (const auto& t : st.tensors())
      if (t.shape.size() == 2 && is_float(t.dtype)) cands.push_back(&t);
    if (cands.size() != 1) {
      std::string names;
      for (const auto* c : cands) names += (names.empty() ? "" : ", ") + c->name;
      throw InvalidInput(SourceLocation{file, 0, "tensor"},
                         cands.empty() ? std::string("no 2-D float tensor in the file")
                                       : "several 2-D float tensors (" + names +
                                             "); pick one with tensor=NAME (e.g. matrix:FILE:tensor=NAME)");
    }
    v = cands[0];
  }
  if (v->shape.size() != 2)
    throw InvalidInput(SourceLocation{file, 0, v->name}, "expected a 2-D tensor (items x dims), got " +
                                                             std::to_string(v->shape.size()) + " dimensions");
  if (!is_float(v->dtype))
    throw InvalidInput(SourceLocation{file, 0, v->name},
                       "dtype " + v->dtype + " is not supported (use F32, F64, F16 or BF16)");
  const int64_t n = v->numel();
  std::vector<float> data(static_cast<size_t>(n));
  const char* p = static_cast<const char*>(v->data);
  for (int64_t i = 0; i < n; ++i) {
    if (v->dtype == "F32") {
      std::memcpy(&data[static_cast<size_t>(i)], p + i * 4, 4);
    } else if (v->dtype == "F64") {
      double d;
      std::memcpy(&d, p + i * 8, 8);
      data[static_cast<size_t>(i)] = static_cast<float>(d);
    } else {
      uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      if (v->dtype == "F16") {
        data[static_cast<size_t>(i)] = half_to_float(h);
      } else {
        uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&data[static_cast<size_t>(i)], &bits, 4);
      }
    }
  }
  return place_rows(file, data.data(), v->shape[0], v->shape[1], items.size());
}

ItemFeatures read_tsv_matrix(const std::filesystem::path& path, const Vocabulary& items) {
  const std::string file = path.string();
  const std::string text = read_file(path);
  const int32_t n = items.size();
  LineReader reader(text);
  std::string_view line;
  ItemFeatures f;
  std::vector<float> vals;
  std::vector<int64_t> seen_line(static_cast<size_t>(n) + 1, 0);
  int64_t rows = 0;
  while (reader.next(line)) {
    const int64_t ln = reader.line_number();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string_view> cells;
    size_t p = 0;
    while (true) {
      size_t e = line.find('\t', p);
      cells.push_back(line.substr(p, e == std::string_view::npos ? std::string_view::npos : e - p));
      if (e == std::string_view::npos) break;
      p = e + 1;
    }
    if (cells.size() < 2)
      throw InvalidInput(SourceLocation{file, ln, ""}, "expected RAW_ITEM_ID<TAB>v1<TAB>v2...; found no TAB");
    const int64_t cols = static_cast<int64_t>(cells.size()) - 1;
    if (f.dim == 0) {
      f.dim = cols;
      f.x.assign(static_cast<size_t>(n + 1) * static_cast<size_t>(cols), 0.0f);
    } else if (cols != f.dim) {
      throw InvalidInput(SourceLocation{file, ln, ""}, "has " + std::to_string(cols) + " values; earlier lines have " +
                                                           std::to_string(f.dim));
    }
    std::optional<int32_t> item = items.find(cells[0]);
    if (!item)
      throw InvalidInput(SourceLocation{file, ln, "item"},
                         "unknown item id '" + std::string(cells[0]) + "' (not in the dataset's items.vocab)");
    if (seen_line[static_cast<size_t>(*item)])
      throw InvalidInput(SourceLocation{file, ln, "item"}, "item '" + std::string(cells[0]) +
                                                               "' already appeared on line " +
                                                               std::to_string(seen_line[static_cast<size_t>(*item)]));
    seen_line[static_cast<size_t>(*item)] = ln;
    float* out = f.x.data() + static_cast<size_t>(*item) * static_cast<size_t>(f.dim);
    for (int64_t j = 0; j < cols; ++j) {
      std::string_view c = cells[static_cast<size_t>(j) + 1];
      while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
      while (!c.empty() && c.back() == ' ') c.remove_suffix(1);
      double d;
      if (!parse_double(c, d) || !std::isfinite(d))
        throw InvalidInput(SourceLocation{file, ln, "column " + std::to_string(j + 2)},
                           "'" + std::string(c) + "' is not a finite number");
      out[j] = static_cast<float>(d);
    }
    ++rows;
  }
  if (rows == 0) throw InvalidInput(SourceLocation{file, 0, ""}, "no rows (expected RAW_ITEM_ID<TAB>v1<TAB>v2... lines)");
  f.has_content = nonzero_rows(f.x, f.dim, n + 1);
  return f;
}

ItemFeatures run_block(const Dataset& ds, const ItemFeatureSource& src, nlohmann::json& info) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path ckpt = src.path;
  if (!fs::is_regular_file(ckpt, ec)) ckpt = src.path / "checkpoints" / "best.ckpt";
  if (!fs::is_regular_file(ckpt, ec))
    throw InvalidInput(SourceLocation{src.path.string(), 0, ""},
                       "not a run directory (no checkpoints/best.ckpt) nor a checkpoint file");
  LoadedCheckpoint loaded = load_checkpoint(ckpt);
  torch::Tensor table = loaded.model->item_embeddings();
  if (!table.defined())
    throw InvalidInput(SourceLocation{ckpt.string(), 0, ""},
                       "model type '" + loaded.model->type() +
                           "' has no item embeddings (use a two-tower run: sasrec or hstu)");
  table = table.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int32_t n = ds.n_items();
  if (table.dim() != 2 || table.size(0) != static_cast<int64_t>(loaded.items.size()) + 1)
    throw InvalidInput(SourceLocation{ckpt.string(), 0, ""}, "item embedding table does not match the checkpoint's vocabulary");
  ItemFeatures f;
  f.dim = table.size(1);
  f.x.assign(static_cast<size_t>(n + 1) * static_cast<size_t>(f.dim), 0.0f);
  const float* tp = table.data_ptr<float>();
  int64_t matched = 0;
  for (int32_t r = 1; r <= loaded.items.size(); ++r) {
    std::optional<int32_t> item = ds.items.find(loaded.items.raw(r));
    if (!item) continue;
    ++matched;
    std::memcpy(f.x.data() + static_cast<size_t>(*item) * static_cast<size_t>(f.dim), tp + static_cast<int64_t>(r) * f.dim,
                static_cast<size_t>(f.dim) * sizeof(float));
  }
  if (matched == 0)
    throw InvalidInput(SourceLocation{ckpt.string(), 0, ""},
                       "none of the checkpoint's items is in the dataset (a run of another dataset?)");
  info["model"] = loaded.model->type();
  info["checkpoint"] = ckpt.string();
  info["checkpoint_items"] = loaded.items.size();
  info["checkpoint_items_not_in_dataset"] = loaded.items.size() - matched;
  f.has_content = nonzero_rows(f.x, f.dim, n + 1);
  return f;
}

std::string format_weight(double w) {
  std::string s = std::to_string(w);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

std::vector<std::string> item_text_tokens(const ItemText& text) {
  std::vector<std::string> out;
  add_field_tokens(text.title, out);
  add_field_tokens(text.description, out);
  add_field_tokens(text.brand, out);
  for (const auto& c : text.categories) add_field_tokens(c, out);
  return out;
}

std::string ItemFeatureSource::to_string() const {
  std::string s = kind;
  if (kind == "text" || kind == "attributes") s += ":" + std::to_string(dim);
  else s += ":" + path.string();
  s += ":" + format_weight(weight);
  if (!tensor.empty()) s += ":tensor=" + tensor;
  if (!normalize) s += ":normalize=false";
  if ((kind == "text" || kind == "attributes") && reduce != "svd") s += ":reduce=" + reduce;
  return s;
}

ItemFeatureSource parse_feature_spec(const std::string& spec) {
  const SourceLocation where{"--features " + spec, 0, ""};
  std::vector<std::string> parts;
  {
    size_t p = 0;
    while (true) {
      size_t e = spec.find(':', p);
      parts.push_back(spec.substr(p, e == std::string::npos ? std::string::npos : e - p));
      if (e == std::string::npos) break;
      p = e + 1;
    }
  }
  ItemFeatureSource s;
  s.kind = parts[0];
  if (s.kind != "text" && s.kind != "attributes" && s.kind != "matrix" && s.kind != "run")
    throw InvalidInput(where, "unknown kind '" + s.kind + "' (text, attributes, matrix, run)");
  const bool reduced = s.kind == "text" || s.kind == "attributes";
  std::vector<std::string> positional;
  auto parse_bool = [&](const std::string& key, const std::string& v) {
    if (v == "true" || v == "1") return true;
    if (v == "false" || v == "0") return false;
    throw InvalidInput(SourceLocation{where.file, 0, key}, "'" + v + "' is not true or false");
  };
  auto parse_weight = [&](const std::string& v) {
    double w;
    if (!parse_double(v, w) || !std::isfinite(w) || w < 0)
      throw InvalidInput(SourceLocation{where.file, 0, "weight"}, "'" + v + "' is not a non-negative number");
    return w;
  };
  auto parse_dim = [&](const std::string& v) {
    int64_t d;
    if (!parse_int(v, d) || d < 1 || d > 65536)
      throw InvalidInput(SourceLocation{where.file, 0, "dim"}, "'" + v + "' is not an integer in 1..65536");
    return d;
  };
  // Trailing segments that are numbers or KEY=VALUE belong to the spec; for matrix / run the rest
  // (which may itself contain ':') is the path.
  size_t end = parts.size();
  std::vector<std::string> tail;
  if (!reduced) {
    while (end > 2) {
      const std::string& t = parts[end - 1];
      double d;
      if (t.find('=') != std::string::npos || parse_double(t, d)) {
        tail.insert(tail.begin(), t);
        --end;
      } else {
        break;
      }
    }
    std::string path;
    for (size_t i = 1; i < end; ++i) path += (i > 1 ? ":" : "") + parts[i];
    if (path.empty())
      throw InvalidInput(SourceLocation{where.file, 0, "path"},
                         "give a " + std::string(s.kind == "run" ? "run directory" : "file") + ": " + s.kind +
                             (s.kind == "run" ? ":DIR[:WEIGHT]" : ":FILE[:WEIGHT]"));
    s.path = path;
  } else {
    tail.assign(parts.begin() + 1, parts.end());
  }
  for (const std::string& t : tail) {
    size_t eq = t.find('=');
    if (eq == std::string::npos) {
      positional.push_back(t);
      continue;
    }
    const std::string key = t.substr(0, eq), v = t.substr(eq + 1);
    if (key == "weight") s.weight = parse_weight(v);
    else if (key == "dim" && reduced) s.dim = parse_dim(v);
    else if (key == "normalize") s.normalize = parse_bool(key, v);
    else if (key == "tensor" && s.kind == "matrix") s.tensor = v;
    else if (key == "reduce" && reduced) {
      if (v != "svd" && v != "random")
        throw InvalidInput(SourceLocation{where.file, 0, "reduce"}, "'" + v + "' is not svd or random");
      s.reduce = v;
    } else {
      throw InvalidInput(SourceLocation{where.file, 0, key}, "unknown option for " + s.kind);
    }
  }
  if (reduced) {
    if (positional.size() > 2)
      throw InvalidInput(where, "too many parts; expected " + s.kind + "[:DIM[:WEIGHT]]");
    if (positional.size() >= 1 && !positional[0].empty()) s.dim = parse_dim(positional[0]);
    if (positional.size() >= 2) s.weight = parse_weight(positional[1]);
  } else {
    if (positional.size() > 1)
      throw InvalidInput(where, "too many parts; expected " + s.kind + (s.kind == "run" ? ":DIR[:WEIGHT]" : ":FILE[:WEIGHT]"));
    if (positional.size() == 1) s.weight = parse_weight(positional[0]);
  }
  if (reduced && s.dim == 0) s.dim = s.kind == "text" ? 64 : 32;
  return s;
}

ItemFeatures read_item_matrix(const std::filesystem::path& path, const Vocabulary& items, const std::string& tensor) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!tensor.empty() && ext != ".safetensors")
    throw InvalidInput(SourceLocation{path.string(), 0, "tensor"}, "tensor=NAME applies to .safetensors files only");
  if (ext == ".npy") return read_npy(path, items);
  if (ext == ".safetensors") return read_safetensors_matrix(path, items, tensor);
  if (ext == ".tsv" || ext == ".txt") return read_tsv_matrix(path, items);
  throw InvalidInput(SourceLocation{path.string(), 0, ""},
                     "unknown matrix format '" + ext + "' (use .npy, .safetensors, or .tsv/.txt with raw item ids)");
}

ItemFeatures build_item_feature_block(const Dataset& ds, const ItemFeatureSource& src_in, uint64_t seed,
                                      const ProgressCallback& progress) {
  (void)progress;
  ItemFeatureSource src = src_in;
  if ((src.kind == "text" || src.kind == "attributes") && src.dim <= 0) src.dim = src.kind == "text" ? 64 : 32;
  if (src.reduce != "svd" && src.reduce != "random")
    throw InvalidInput(SourceLocation{src.to_string(), 0, "reduce"}, "'" + src.reduce + "' is not svd or random");
  const auto t0 = Clock::now();
  nlohmann::json info = {{"kind", src.kind}, {"spec", src.to_string()}};
  ItemFeatures f;
  if (src.kind == "text") {
    f = text_block(ds, src, seed, info);
  } else if (src.kind == "attributes") {
    f = attributes_block(ds, src, seed, info);
  } else if (src.kind == "matrix") {
    if (src.path.empty()) throw InvalidInput("feature source matrix: no file given (matrix:FILE)");
    f = read_item_matrix(src.path, ds.items, src.tensor);
    info["path"] = src.path.string();
  } else if (src.kind == "run") {
    if (src.path.empty()) throw InvalidInput("feature source run: no run directory given (run:DIR)");
    f = run_block(ds, src, info);
    info["path"] = src.path.string();
  } else {
    throw InvalidInput("unknown feature source kind '" + src.kind + "' (text, attributes, matrix, run)");
  }
  const int32_t n = ds.n_items();
  std::fill(f.x.begin(), f.x.begin() + f.dim, 0.0f);
  if (src.normalize) l2_rows(f.x, f.dim);
  f.has_content = nonzero_rows(f.x, f.dim, n + 1);
  int64_t covered = 0;
  for (int32_t i = 1; i <= n; ++i) covered += f.has_content[static_cast<size_t>(i)];
  info["dim"] = f.dim;
  info["weight"] = src.weight;
  info["normalize"] = src.normalize;
  info["items_with_content"] = covered;
  info["coverage"] = n > 0 ? static_cast<double>(covered) / n : 0.0;
  info["seconds"] = seconds_since(t0);
  f.report = info;
  return f;
}

ItemFeatures build_item_features(const Dataset& ds, const ItemFeatureOptions& options, uint64_t seed,
                                 const ProgressCallback& progress) {
  if (options.sources.empty()) throw InvalidInput("no item feature sources given (e.g. --features text:64)");
  const int32_t n = ds.n_items();
  const auto t0 = Clock::now();
  std::vector<ItemFeatures> blocks;
  ProgressTracker tracker("item features", static_cast<int64_t>(options.sources.size()), "sources", progress);
  for (size_t s = 0; s < options.sources.size(); ++s) {
    const ItemFeatureSource& src = options.sources[s];
    GENREC_LOG_INFO("item features: %s", src.to_string().c_str());
    try {
      blocks.push_back(build_item_feature_block(ds, src, seed + 1000003ull * s, progress));
    } catch (...) {
      rethrow_with_stage("feature source " + std::to_string(s + 1) + " (" + src.kind + ")");
    }
    tracker.advance();
  }
  tracker.finish();
  ItemFeatures out;
  for (const auto& b : blocks) out.dim += b.dim;
  out.x.assign(static_cast<size_t>(n + 1) * static_cast<size_t>(out.dim), 0.0f);
  out.has_content.assign(static_cast<size_t>(n) + 1, 0);
  nlohmann::json sources = nlohmann::json::array();
  int64_t col = 0;
  for (size_t s = 0; s < blocks.size(); ++s) {
    const ItemFeatures& b = blocks[s];
    const float w = static_cast<float>(options.sources[s].weight);
    for (int32_t i = 1; i <= n; ++i) {
      const float* src = b.row(i);
      float* dst = out.x.data() + static_cast<size_t>(i) * static_cast<size_t>(out.dim) + static_cast<size_t>(col);
      for (int64_t j = 0; j < b.dim; ++j) dst[j] = src[j] * w;
      if (w != 0.0f && b.has_content[static_cast<size_t>(i)]) out.has_content[static_cast<size_t>(i)] = 1;
    }
    nlohmann::json r = b.report;
    r["columns"] = {col, col + b.dim};
    sources.push_back(r);
    col += b.dim;
  }
  int64_t covered = 0;
  for (int32_t i = 1; i <= n; ++i) covered += out.has_content[static_cast<size_t>(i)];
  out.report = {{"items", n},
                {"dim", out.dim},
                {"sources", sources},
                {"items_with_content", covered},
                {"items_without_content", n - covered},
                {"seconds", seconds_since(t0)}};
  if (covered < n)
    GENREC_LOG_WARN("item features: %lld of %d items have no content (zero vectors)",
                    static_cast<long long>(n - covered), n);
  return out;
}

}  // namespace genrec
