#include "genrec/tokenizers/semantic_ids.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

#include "genrec/core/error.h"
#include "genrec/core/io.h"

namespace genrec {

namespace {

constexpr const char* kJsonFormat = "genrec-sid 1";
constexpr char kBinMagic[8] = {'G', 'R', 'E', 'C', 'S', 'I', 'D', '1'};
// Sanity limits for files (a corrupted header must not make us allocate terabytes).
constexpr uint32_t kMaxLevels = 1u << 16;

std::string seq_string(const int32_t* c, int32_t levels) {
  std::string out = "(";
  for (int32_t l = 0; l < levels; ++l) out += (l ? ", " : "") + std::to_string(c[l]);
  return out + ")";
}

// "items in groups of size > 1" over the first `prefix` levels, and the number of distinct
// sequences. Items are compared by their code rows.
struct Groups {
  int64_t collided = 0;
  int64_t distinct = 0;
  int64_t largest = 0;
};

// Item ids 1..n sorted by their first `prefix` codes (ties by item id).
std::vector<int32_t> sorted_items(const SemanticIds& sid, int32_t prefix) {
  std::vector<int32_t> order(static_cast<size_t>(sid.n_items));
  std::iota(order.begin(), order.end(), 1);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const int32_t* ca = sid.item_codes(a);
    const int32_t* cb = sid.item_codes(b);
    return std::lexicographical_compare(ca, ca + prefix, cb, cb + prefix);
  });
  return order;
}

bool same_prefix(const SemanticIds& sid, int32_t a, int32_t b, int32_t prefix) {
  return std::equal(sid.item_codes(a), sid.item_codes(a) + prefix, sid.item_codes(b));
}

Groups count_groups(const SemanticIds& sid, int32_t prefix) {
  Groups g;
  std::vector<int32_t> order = sorted_items(sid, prefix);
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i + 1;
    while (j < order.size() && same_prefix(sid, order[i], order[j], prefix)) ++j;
    const int64_t size = static_cast<int64_t>(j - i);
    ++g.distinct;
    if (size > 1) g.collided += size;
    g.largest = std::max(g.largest, size);
    i = j;
  }
  return g;
}

double rate(int64_t num, int64_t den) { return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : 0.0; }

// ---- binary helpers (little-endian hosts; the format is the in-memory layout) ----

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

template <typename T>
T get(const std::string& data, size_t& pos) {
  T v;
  std::memcpy(&v, data.data() + pos, sizeof(T));
  pos += sizeof(T);
  return v;
}

// ---- JSON helpers ----

// Parses a JSON file, rejecting duplicate keys in the object reached by `path_keys` from the root
// (empty: the root object itself). nlohmann keeps the last of duplicate keys silently; a parse
// callback sees every key. Returns the parsed document.
nlohmann::json parse_json_file(const std::filesystem::path& path, const std::string& text,
                               const std::vector<std::string>& path_keys, const std::string& what) {
  const std::string file = path.string();
  if (const void* nul = std::memchr(text.data(), 0, text.size()))
    throw InvalidInput(SourceLocation{file, line_of_offset(text, static_cast<size_t>(static_cast<const char*>(nul) - text.data())), ""},
                       "holds a NUL byte (not valid JSON)");
  struct Frame {
    bool object = false;
    bool checked = false;  // an object at `path_keys`: its keys must be unique
    std::set<std::string> keys;
  };
  std::vector<Frame> frames;
  std::vector<std::string> names;  // key (or "[]" inside arrays) of each open container but the root
  std::string pending_key;
  auto on_event = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start || event == E::array_start) {
      if (!frames.empty()) names.push_back(frames.back().object ? pending_key : std::string("[]"));
      Frame f;
      f.object = event == E::object_start;
      f.checked = f.object && names == path_keys;
      frames.push_back(std::move(f));
    } else if (event == E::object_end || event == E::array_end) {
      if (!frames.empty()) frames.pop_back();
      if (!names.empty()) names.pop_back();
    } else if (event == E::key) {
      std::string key = parsed.get<std::string>();
      if (!frames.empty() && frames.back().checked && !frames.back().keys.insert(key).second)
        throw InvalidInput(SourceLocation{file, 0, path_keys.empty() ? key : path_keys.back() + "." + key},
                           what + " \"" + key + "\" appears more than once");
      pending_key = std::move(key);
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), on_event);
  } catch (const nlohmann::json::parse_error& e) {
    std::string msg = e.what();
    if (!msg.empty() && msg[0] == '[') {
      size_t close = msg.find("] ");
      if (close != std::string::npos) msg = msg.substr(close + 2);
    }
    throw InvalidInput(SourceLocation{file, line_of_offset(text, e.byte > 0 ? e.byte - 1 : 0), ""}, "invalid JSON: " + msg);
  }
}

std::string json_quoted(const std::string& s) { return nlohmann::json(s).dump(); }

// A non-negative decimal integer (digits only, no sign, fits in int32); false otherwise.
bool parse_code(const std::string& s, int32_t& out) {
  if (s.empty() || s.size() > 10) return false;
  int64_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  if (v > std::numeric_limits<int32_t>::max() - 1) return false;  // max code + 1 must fit
  out = static_cast<int32_t>(v);
  return true;
}

// A code given as a JSON integer, a token "<a_12>" (the integer after the last '_' before '>')
// or a plain "12". False when it is none of these.
bool code_of_json(const nlohmann::json& v, int32_t& out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int32_t>::max() - 1)) return false;
    out = static_cast<int32_t>(u);
    return true;
  }
  if (v.is_number_integer()) return false;  // negative
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  if (!s.empty() && s.back() == '>') {
    size_t us = s.rfind('_');
    if (us == std::string::npos || s.front() != '<') return false;
    return parse_code(s.substr(us + 1, s.size() - 1 - (us + 1)), out);
  }
  return parse_code(s, out);
}

// Signed decimal integer key (optional leading '-'); false otherwise.
bool parse_int_key(const std::string& s, int64_t& out) {
  size_t i = 0;
  bool neg = false;
  if (!s.empty() && s[0] == '-') {
    neg = true;
    i = 1;
  }
  if (i >= s.size() || s.size() - i > 18) return false;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = neg ? -v : v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void SemanticIds::validate() const {
  if (n_items < 0 || levels < 0)
    throw InternalError("SemanticIds: negative n_items (" + std::to_string(n_items) + ") or levels (" +
                        std::to_string(levels) + ")");
  if (codebook_sizes.size() != static_cast<size_t>(levels))
    throw InternalError("SemanticIds: " + std::to_string(codebook_sizes.size()) + " codebook sizes for " +
                        std::to_string(levels) + " levels");
  if (codes.size() != (static_cast<size_t>(n_items) + 1) * static_cast<size_t>(levels))
    throw InternalError("SemanticIds: " + std::to_string(codes.size()) + " codes, expected (n_items + 1) * levels = " +
                        std::to_string((static_cast<size_t>(n_items) + 1) * static_cast<size_t>(levels)));
  if (disambiguation_level && levels < 1) throw InternalError("SemanticIds: disambiguation level without levels");
  for (int32_t l = 0; l < levels; ++l)
    if (codebook_sizes[static_cast<size_t>(l)] < 1)
      throw InternalError("SemanticIds: codebook size of level " + std::to_string(l) + " is " +
                          std::to_string(codebook_sizes[static_cast<size_t>(l)]));
  for (int32_t item = 1; item <= n_items; ++item) {
    const int32_t* c = item_codes(item);
    for (int32_t l = 0; l < levels; ++l)
      if (c[l] < 0 || c[l] >= codebook_sizes[static_cast<size_t>(l)])
        throw InternalError("SemanticIds: item " + std::to_string(item) + " level " + std::to_string(l) + " code " +
                            std::to_string(c[l]) + " is outside [0, " +
                            std::to_string(codebook_sizes[static_cast<size_t>(l)]) + ")");
  }
}

double resolve_collisions(SemanticIds& sid, bool always) {
  sid.validate();
  const int32_t L = sid.levels;
  std::vector<int32_t> order = sorted_items(sid, L);  // stable: ties in item-id order
  std::vector<int32_t> rank(static_cast<size_t>(sid.n_items) + 1, 0);
  int64_t collided = 0, largest = sid.n_items > 0 ? 1 : 0;
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i + 1;
    while (j < order.size() && same_prefix(sid, order[i], order[j], L)) ++j;
    const int64_t size = static_cast<int64_t>(j - i);
    if (size > 1) collided += size;
    largest = std::max(largest, size);
    for (size_t k = i; k < j; ++k) rank[static_cast<size_t>(order[k])] = static_cast<int32_t>(k - i);
    i = j;
  }
  const double before = rate(collided, sid.n_items);
  if (collided == 0 && !always) return before;

  const int32_t L2 = L + 1;
  std::vector<int32_t> codes((static_cast<size_t>(sid.n_items) + 1) * static_cast<size_t>(L2), 0);
  for (int32_t item = 1; item <= sid.n_items; ++item) {
    int32_t* dst = codes.data() + static_cast<size_t>(item) * L2;
    std::copy(sid.item_codes(item), sid.item_codes(item) + L, dst);
    dst[L] = rank[static_cast<size_t>(item)];
  }
  sid.codes = std::move(codes);
  sid.levels = L2;
  sid.codebook_sizes.push_back(static_cast<int32_t>(std::max<int64_t>(largest, 1)));
  sid.disambiguation_level = true;
  return before;
}

nlohmann::json codebook_report(const SemanticIds& sid) {
  sid.validate();
  nlohmann::json levels = nlohmann::json::array();
  for (int32_t l = 0; l < sid.levels; ++l) {
    const int32_t K = sid.codebook_sizes[static_cast<size_t>(l)];
    std::vector<char> seen(static_cast<size_t>(K), 0);
    int64_t used = 0;
    for (int32_t item = 1; item <= sid.n_items; ++item) {
      char& s = seen[static_cast<size_t>(sid.item_codes(item)[l])];
      if (!s) {
        s = 1;
        ++used;
      }
    }
    levels.push_back({{"level", l}, {"codebook_size", K}, {"used", used}, {"usage", rate(used, K)}});
  }
  Groups g = count_groups(sid, sid.levels);
  nlohmann::json out = {{"levels", std::move(levels)},
                        {"collision_rate", rate(g.collided, sid.n_items)},
                        {"distinct_sequences", g.distinct},
                        {"largest_group", g.largest},
                        {"n_items", sid.n_items},
                        {"disambiguation_level", sid.disambiguation_level}};
  if (sid.disambiguation_level) {
    Groups p = count_groups(sid, sid.levels - 1);
    out["collision_rate_before_disambiguation"] = rate(p.collided, sid.n_items);
    out["distinct_sequences_before_disambiguation"] = p.distinct;
  }
  return out;
}

// ---- JSON file ----

void write_semantic_ids_json(const std::filesystem::path& path, const SemanticIds& sid, const Vocabulary& items) {
  sid.validate();
  if (items.size() != sid.n_items)
    throw InternalError("write_semantic_ids_json: vocabulary has " + std::to_string(items.size()) +
                        " items, semantic IDs " + std::to_string(sid.n_items));
  // Written by hand so that each item is one line, in dense-id order.
  std::string out = "{\n";
  out += "  \"format\": " + json_quoted(kJsonFormat) + ",\n";
  out += "  \"levels\": " + std::to_string(sid.levels) + ",\n";
  out += "  \"codebook_sizes\": " + nlohmann::json(sid.codebook_sizes).dump() + ",\n";
  out += std::string("  \"disambiguation_level\": ") + (sid.disambiguation_level ? "true" : "false") + ",\n";
  out += "  \"items\": {";
  for (int32_t item = 1; item <= sid.n_items; ++item) {
    out += item == 1 ? "\n    " : ",\n    ";
    out += json_quoted(items.raw(item)) + ": [";
    const int32_t* c = sid.item_codes(item);
    for (int32_t l = 0; l < sid.levels; ++l) {
      if (l) out += ", ";
      out += std::to_string(c[l]);
    }
    out += "]";
  }
  out += sid.n_items > 0 ? "\n  },\n" : "},\n";
  std::string report = (sid.report.is_null() ? nlohmann::json::object() : sid.report).dump(2);
  std::string indented;
  for (char ch : report) {
    indented += ch;
    if (ch == '\n') indented += "  ";  // JSON strings never hold a raw newline
  }
  out += "  \"report\": " + indented + "\n}\n";
  write_file_atomic(path, out);
}

SemanticIds read_semantic_ids_json(const std::filesystem::path& path, const Vocabulary& items) {
  const std::string file = path.string();
  const std::string text = read_file(path);
  nlohmann::json j = parse_json_file(path, text, {"items"}, "item");
  auto bad = [&](const std::string& field, const std::string& reason) {
    return InvalidInput(SourceLocation{file, 0, field}, reason);
  };
  if (!j.is_object()) throw bad("", std::string("is a JSON ") + j.type_name() + ", expected a semantic-ID object");
  if (!j.contains("format") || j["format"] != kJsonFormat)
    throw bad("format", std::string("expected \"") + kJsonFormat + "\", found " +
                            (j.contains("format") ? j["format"].dump() : std::string("nothing")) +
                            " (not a genrec semantic-ID file)");
  for (const char* key : {"levels", "codebook_sizes", "disambiguation_level", "items"})
    if (!j.contains(key)) throw bad(key, "missing");
  const nlohmann::json& jl = j["levels"];
  if (!jl.is_number_unsigned() || jl.get<uint64_t>() < 1 || jl.get<uint64_t>() > kMaxLevels)
    throw bad("levels", jl.dump() + " is not a positive integer (at most " + std::to_string(kMaxLevels) + ")");
  SemanticIds sid;
  sid.levels = static_cast<int32_t>(jl.get<uint64_t>());
  const nlohmann::json& jk = j["codebook_sizes"];
  if (!jk.is_array() || jk.size() != static_cast<size_t>(sid.levels))
    throw bad("codebook_sizes", "expected an array of " + std::to_string(sid.levels) + " sizes, found " + jk.dump());
  for (const auto& k : jk) {
    if (!k.is_number_unsigned() || k.get<uint64_t>() < 1 ||
        k.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
      throw bad("codebook_sizes", k.dump() + " is not a positive codebook size");
    sid.codebook_sizes.push_back(static_cast<int32_t>(k.get<uint64_t>()));
  }
  if (!j["disambiguation_level"].is_boolean())
    throw bad("disambiguation_level", j["disambiguation_level"].dump() + " is not true or false");
  sid.disambiguation_level = j["disambiguation_level"].get<bool>();
  const nlohmann::json& ji = j["items"];
  if (!ji.is_object()) throw bad("items", std::string("is a JSON ") + ji.type_name() + ", expected an object");

  sid.n_items = items.size();
  sid.codes.assign((static_cast<size_t>(sid.n_items) + 1) * static_cast<size_t>(sid.levels), 0);
  std::vector<char> present(static_cast<size_t>(sid.n_items) + 1, 0);
  for (auto it = ji.begin(); it != ji.end(); ++it) {
    const std::string field = "items." + it.key();
    std::optional<int32_t> id = items.find(it.key());
    if (!id) throw bad(field, "item " + json_quoted(it.key()) + " is not in the item vocabulary");
    const nlohmann::json& v = it.value();
    if (!v.is_array() || v.size() != static_cast<size_t>(sid.levels))
      throw bad(field, "item " + json_quoted(it.key()) + ": expected an array of " + std::to_string(sid.levels) +
                           " codes, found " + v.dump());
    int32_t* dst = sid.codes.data() + static_cast<size_t>(*id) * static_cast<size_t>(sid.levels);
    for (int32_t l = 0; l < sid.levels; ++l) {
      const nlohmann::json& c = v[static_cast<size_t>(l)];
      const int32_t K = sid.codebook_sizes[static_cast<size_t>(l)];
      if (!c.is_number_integer() || c.get<int64_t>() < 0 || c.get<int64_t>() >= K)
        throw bad(field, "item " + json_quoted(it.key()) + ": code " + c.dump() + " of level " + std::to_string(l) +
                             " is outside [0, " + std::to_string(K) + ")");
      dst[l] = static_cast<int32_t>(c.get<int64_t>());
    }
    present[static_cast<size_t>(*id)] = 1;
  }
  for (int32_t item = 1; item <= sid.n_items; ++item)
    if (!present[static_cast<size_t>(item)])
      throw bad("items", "item " + json_quoted(items.raw(item)) + " of the vocabulary has no codes (" +
                             std::to_string(ji.size()) + " of " + std::to_string(sid.n_items) + " items listed)");
  if (j.contains("report")) {
    if (!j["report"].is_object()) throw bad("report", std::string("is a JSON ") + j["report"].type_name() + ", expected an object");
    sid.report = j["report"];
  }
  return sid;
}

// ---- binary file ----

void write_semantic_ids_bin(const std::filesystem::path& path, const SemanticIds& sid) {
  sid.validate();
  std::string out;
  out.reserve(8 + 9 + 4 * sid.codebook_sizes.size() + 4 * sid.codes.size() + 4);
  out.append(kBinMagic, sizeof(kBinMagic));
  put<uint32_t>(out, static_cast<uint32_t>(sid.levels));
  put<uint32_t>(out, static_cast<uint32_t>(sid.n_items));
  for (int32_t k : sid.codebook_sizes) put<uint32_t>(out, static_cast<uint32_t>(k));
  put<uint8_t>(out, sid.disambiguation_level ? 1 : 0);
  out.append(reinterpret_cast<const char*>(sid.codes.data()), sid.codes.size() * sizeof(int32_t));
  put<uint32_t>(out, crc32_of(out));
  write_file_atomic(path, out);
}

SemanticIds read_semantic_ids_bin(const std::filesystem::path& path) {
  const std::string file = path.string();
  const std::string data = read_file(path);
  auto bad = [&](const std::string& field, const std::string& reason) {
    return InvalidInput(SourceLocation{file, 0, field}, reason);
  };
  if (data.size() < sizeof(kBinMagic) || std::memcmp(data.data(), kBinMagic, sizeof(kBinMagic)) != 0)
    throw bad("", "bad magic (not a genrec semantic-ID file; expected it to start with \"GRECSID1\")");
  const uint64_t fixed = sizeof(kBinMagic) + 4 + 4;
  if (data.size() < fixed) throw bad("", "truncated: " + std::to_string(data.size()) + " bytes, shorter than the header");
  size_t pos = sizeof(kBinMagic);
  const uint32_t levels = get<uint32_t>(data, pos);
  const uint32_t n_items = get<uint32_t>(data, pos);
  if (levels < 1 || levels > kMaxLevels)
    throw bad("levels", std::to_string(levels) + " levels (expected 1.." + std::to_string(kMaxLevels) + ")");
  if (n_items > static_cast<uint32_t>(std::numeric_limits<int32_t>::max() - 1))
    throw bad("n_items", std::to_string(n_items) + " items is out of range");
  const uint64_t expected = fixed + 4ull * levels + 1 + 4ull * (static_cast<uint64_t>(n_items) + 1) * levels + 4;
  if (data.size() != expected)
    throw bad("", "size " + std::to_string(data.size()) + " bytes, expected " + std::to_string(expected) + " for " +
                      std::to_string(levels) + " levels and " + std::to_string(n_items) + " items (" +
                      (data.size() < expected ? "truncated file)" : "trailing bytes)"));
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data.data() + data.size() - 4, 4);
  const uint32_t crc = crc32_of(std::string_view(data.data(), data.size() - 4));
  if (crc != stored_crc)
    throw bad("", "checksum mismatch: file says crc32 " + crc32_hex(stored_crc) + ", content has " + crc32_hex(crc) +
                      " (corrupted file)");
  SemanticIds sid;
  sid.levels = static_cast<int32_t>(levels);
  sid.n_items = static_cast<int32_t>(n_items);
  for (uint32_t l = 0; l < levels; ++l) {
    const uint32_t k = get<uint32_t>(data, pos);
    if (k < 1 || k > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
      throw bad("codebook_sizes", "codebook size " + std::to_string(k) + " of level " + std::to_string(l) + " is invalid");
    sid.codebook_sizes.push_back(static_cast<int32_t>(k));
  }
  const uint8_t dis = get<uint8_t>(data, pos);
  if (dis > 1) throw bad("disambiguation", "flag byte is " + std::to_string(dis) + ", expected 0 or 1");
  sid.disambiguation_level = dis == 1;
  sid.codes.resize((static_cast<size_t>(n_items) + 1) * levels);
  std::memcpy(sid.codes.data(), data.data() + pos, sid.codes.size() * sizeof(int32_t));
  for (uint32_t l = 0; l < levels; ++l)
    if (sid.codes[l] != 0) throw bad("codes", "row 0 (padding) is not all zeros");
  for (int32_t item = 1; item <= sid.n_items; ++item) {
    const int32_t* c = sid.item_codes(item);
    for (int32_t l = 0; l < sid.levels; ++l)
      if (c[l] < 0 || c[l] >= sid.codebook_sizes[static_cast<size_t>(l)])
        throw bad("codes", "item " + std::to_string(item) + ": code " + std::to_string(c[l]) + " of level " +
                               std::to_string(l) + " is outside [0, " +
                               std::to_string(sid.codebook_sizes[static_cast<size_t>(l)]) + ")");
  }
  return sid;
}

SemanticIds read_semantic_ids(const std::filesystem::path& path, const Vocabulary& items) {
  if (path.extension() == ".bin") {
    SemanticIds sid = read_semantic_ids_bin(path);
    if (sid.n_items != items.size())
      throw InvalidInput(SourceLocation{path.string(), 0, "n_items"},
                         "holds codes for " + std::to_string(sid.n_items) + " items, the item vocabulary has " +
                             std::to_string(items.size()) + " (codes of another dataset?)");
    return sid;
  }
  return read_semantic_ids_json(path, items);
}

// ---- import ----

SemanticIds import_code_map(const std::filesystem::path& path, const Vocabulary& items, int64_t id_offset) {
  const std::string file = path.string();
  const std::string text = read_file(path);
  nlohmann::json j = parse_json_file(path, text, {}, "item key");
  auto bad = [&](const std::string& field, const std::string& reason) {
    return InvalidInput(SourceLocation{file, 0, field}, reason);
  };
  if (!j.is_object())
    throw bad("", std::string("is a JSON ") + j.type_name() + ", expected an object {\"ITEM\": [codes...], ...}");
  if (j.empty()) throw bad("", "the code map is empty");

  SemanticIds sid;
  sid.n_items = items.size();
  int32_t L = -1;
  std::vector<int32_t> codes;  // filled once L is known
  std::vector<std::string> key_of(static_cast<size_t>(sid.n_items) + 1);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const std::string field = key;
    std::string raw = key;
    if (id_offset != 0) {
      int64_t k = 0;
      if (!parse_int_key(key, k))
        throw bad(field, "item key " + json_quoted(key) + " is not an integer, but an id offset of " +
                             std::to_string(id_offset) + " was given");
      raw = std::to_string(k + id_offset);
    }
    std::optional<int32_t> id = items.find(raw);
    if (!id)
      throw bad(field, "item " + json_quoted(raw) +
                           (id_offset != 0 ? " (key " + json_quoted(key) + " + offset " + std::to_string(id_offset) + ")" : "") +
                           " is not in the item vocabulary");
    if (!key_of[static_cast<size_t>(*id)].empty())
      throw bad(field, "keys " + json_quoted(key_of[static_cast<size_t>(*id)]) + " and " + json_quoted(key) + " both name item " +
                           json_quoted(raw));
    key_of[static_cast<size_t>(*id)] = key;
    const nlohmann::json& v = it.value();
    if (!v.is_array() || v.empty())
      throw bad(field, "expected a non-empty array of codes, found " + v.dump());
    if (L < 0) {
      if (v.size() > kMaxLevels) throw bad(field, std::to_string(v.size()) + " codes is too many levels");
      L = static_cast<int32_t>(v.size());
      sid.levels = L;
      sid.codebook_sizes.assign(static_cast<size_t>(L), 0);
      codes.assign((static_cast<size_t>(sid.n_items) + 1) * static_cast<size_t>(L), 0);
    } else if (v.size() != static_cast<size_t>(L)) {
      throw bad(field, "has " + std::to_string(v.size()) + " codes, but other items have " + std::to_string(L) +
                           " (every item needs the same number of levels)");
    }
    int32_t* dst = codes.data() + static_cast<size_t>(*id) * static_cast<size_t>(L);
    for (int32_t l = 0; l < L; ++l) {
      int32_t c = 0;
      if (!code_of_json(v[static_cast<size_t>(l)], c))
        throw bad(field, "code " + v[static_cast<size_t>(l)].dump() + " of level " + std::to_string(l) +
                             " is neither a non-negative integer nor a token like \"<a_12>\"");
      dst[l] = c;
      sid.codebook_sizes[static_cast<size_t>(l)] = std::max(sid.codebook_sizes[static_cast<size_t>(l)], c + 1);
    }
  }
  for (int32_t item = 1; item <= sid.n_items; ++item)
    if (key_of[static_cast<size_t>(item)].empty())
      throw bad("", "item " + json_quoted(items.raw(item)) + " of the vocabulary is missing" +
                        (id_offset != 0 ? " (expected key = raw id - " + std::to_string(id_offset) + ")" : "") + " (" +
                        std::to_string(j.size()) + " keys for " + std::to_string(sid.n_items) + " items)");
  sid.codes = std::move(codes);
  sid.report = {{"source", file}, {"id_offset", id_offset}};
  sid.validate();
  return sid;
}

// ---- trie ----

CodeTrie::CodeTrie(const SemanticIds& sid) {
  sid.validate();
  if (sid.levels < 1) throw InternalError("CodeTrie: semantic IDs without levels");
  levels_ = sid.levels;
  const int32_t L = sid.levels;
  std::vector<int32_t> order = sorted_items(sid, L);
  auto add_node = [&](int32_t depth) {
    child_codes_.emplace_back();
    child_nodes_.emplace_back();
    items_.push_back(0);
    depth_.push_back(depth);
    return static_cast<int32_t>(items_.size() - 1);
  };
  add_node(0);
  std::vector<int32_t> path(static_cast<size_t>(L) + 1, 0);  // path[d] = node at depth d of the previous item
  int32_t prev = 0;
  for (int32_t item : order) {
    const int32_t* c = sid.item_codes(item);
    int32_t common = 0;
    if (prev != 0) {
      const int32_t* p = sid.item_codes(prev);
      while (common < L && p[common] == c[common]) ++common;
      if (common == L)
        throw InvalidInput("semantic IDs: items " + std::to_string(prev) + " and " + std::to_string(item) +
                           " share the code sequence " + seq_string(c, L) +
                           "; resolve collisions first (add a disambiguation level)");
    }
    for (int32_t d = common; d < L; ++d) {
      const int32_t parent = path[static_cast<size_t>(d)];
      const int32_t node = add_node(d + 1);
      child_codes_[static_cast<size_t>(parent)].push_back(c[d]);  // ascending: items are sorted
      child_nodes_[static_cast<size_t>(parent)].push_back(node);
      path[static_cast<size_t>(d) + 1] = node;
    }
    items_[static_cast<size_t>(path[static_cast<size_t>(L)])] = item;
    prev = item;
  }
}

int32_t CodeTrie::child(int32_t node, int32_t code) const {
  if (node < 0 || static_cast<size_t>(node) >= items_.size())
    throw std::out_of_range("CodeTrie::child: node " + std::to_string(node) + " out of range");
  const auto& cc = child_codes_[static_cast<size_t>(node)];
  auto it = std::lower_bound(cc.begin(), cc.end(), code);
  if (it == cc.end() || *it != code) return -1;
  return child_nodes_[static_cast<size_t>(node)][static_cast<size_t>(it - cc.begin())];
}

}  // namespace genrec
