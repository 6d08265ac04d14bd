// Item side information readers: S3-Rec attributes JSON, item text JSON, ML-1M movies.dat and
// ML-100K u.item.
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/data/import.h"
#include "text_util.h"

namespace genrec {

namespace {

using namespace detail;

using json = nlohmann::json;

std::string_view skip_json_string(std::string_view s, size_t& p) {
  size_t start = ++p;
  while (p < s.size() && s[p] != '"') {
    if (s[p] == '\\') ++p;
    ++p;
  }
  std::string_view raw = s.substr(start, std::min(p, s.size()) - start);
  if (p < s.size()) ++p;
  return raw;
}

// The top-level member keys of an already validated JSON object text, in file order, with
// the byte offset of each key (first occurrence of duplicates only).
struct KeyAt {
  std::string key;
  size_t offset;
};
std::vector<KeyAt> top_level_keys(std::string_view text) {
  std::vector<KeyAt> keys;
  std::unordered_set<std::string> seen;
  size_t p = 0;
  int depth = 0;
  bool expect_key = false;
  while (p < text.size()) {
    char c = text[p];
    if (c == '"') {
      size_t at = p;
      std::string_view raw = skip_json_string(text, p);
      if (depth == 1 && expect_key) {
        std::string key;
        if (raw.find('\\') == std::string_view::npos) {
          key.assign(raw);
        } else {
          key = nlohmann::json::parse(text.substr(at, p - at)).get<std::string>();
        }
        if (seen.insert(key).second) keys.push_back(KeyAt{std::move(key), at});
        expect_key = false;
      }
      continue;
    }
    if (c == '{' || c == '[') {
      ++depth;
      if (depth == 1 && c == '{') expect_key = true;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
    ++p;
  }
  return keys;
}

class ItemReader {
 public:
  ItemReader(const std::filesystem::path& path, const ReaderOptions& options, SideInfo& out)
      : path_(path), file_(path.string()), opt_(options), out_(out) {}

  void run(const std::string& item_format);

 private:
  [[noreturn]] void fail(int64_t line, const std::string& field, const std::string& reason) const {
    throw InvalidInput(SourceLocation{file_, line, field}, reason);
  }
  std::string item_id(std::string_view raw, int64_t line, const std::string& field) const {
    return std::string(check_id_field(raw, opt_.ids, SourceLocation{file_, line, field}));
  }

  json parse_json();
  void read_attributes(const json& doc, const std::vector<KeyAt>& keys);
  void read_text(const json& doc, const std::vector<KeyAt>& keys);
  void read_movies();
  void read_u_item();
  std::string key_text(const KeyAt& k) const;

  const std::filesystem::path& path_;
  std::string file_;
  const ReaderOptions& opt_;
  SideInfo& out_;
  std::string data_;
  std::string_view text_;
};

json ItemReader::parse_json() {
  try {
    return json::parse(text_.begin(), text_.end());
  } catch (const nlohmann::json::parse_error& e) {
    const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    fail(line_of_offset(text_, offset), "", "invalid JSON: " + strip_json_prefix(e.what()));
  }
}

std::string ItemReader::key_text(const KeyAt& k) const {
  try {
    return std::string(check_id_field(k.key, opt_.ids, SourceLocation{file_, 0, k.key}));
  } catch (const InvalidInput& e) {
    fail(line_of_offset(text_, k.offset), k.key, e.reason());
  }
}

void ItemReader::read_attributes(const json& doc, const std::vector<KeyAt>& keys) {
  out_.attributes.reserve(keys.size());
  for (const KeyAt& k : keys) {
    const std::string& key = k.key;
    const json& v = doc.at(key);
    auto bad = [&](const std::string& reason) { fail(line_of_offset(text_, k.offset), key, reason); };
    if (!v.is_array()) bad(std::string("expected a list of attributes, got ") + v.type_name());
    std::vector<std::string> tokens;
    tokens.reserve(v.size());
    for (const auto& e : v) {
      if (e.is_string()) {
        const std::string& s = e.get_ref<const std::string&>();
        if (s.empty()) bad("empty attribute");
        if (s.find_first_of("\t\n\r") != std::string::npos) bad("attribute contains a tab or a line break");
        tokens.push_back(s);
      } else if (e.is_number_integer()) {
        tokens.push_back(e.dump());
      } else {
        bad(std::string("attributes must be strings or integers, got ") + e.type_name() + " " + e.dump());
      }
    }
    out_.attributes.emplace_back(key_text(k), std::move(tokens));
  }
}

void ItemReader::read_text(const json& doc, const std::vector<KeyAt>& keys) {
  out_.text.reserve(keys.size());
  for (const KeyAt& k : keys) {
    const std::string& key = k.key;
    const json& v = doc.at(key);
    auto bad = [&](const std::string& reason) { fail(line_of_offset(text_, k.offset), key, reason); };
    if (!v.is_object()) bad(std::string("expected an object with title/description/brand/categories, got ") +
                            v.type_name());
    ItemText t;
    auto str = [&](const char* name, std::string& dst) {
      auto f = v.find(name);
      if (f == v.end() || f->is_null()) return;
      if (!f->is_string()) bad(std::string("'") + name + "' must be a string, got " + f->type_name());
      dst = f->get<std::string>();
    };
    str("title", t.title);
    str("description", t.description);
    str("brand", t.brand);
    auto c = v.find("categories");
    if (c != v.end() && !c->is_null()) {
      std::unordered_set<std::string> seen;
      auto add = [&](const json& s) {
        if (!s.is_string()) bad(std::string("'categories' must hold strings, got ") + s.type_name());
        const std::string& cat = s.get_ref<const std::string&>();
        if (!cat.empty() && seen.insert(cat).second) t.categories.push_back(cat);
      };
      if (c->is_string()) {
        add(*c);
      } else if (c->is_array()) {
        for (const auto& e : *c) {
          if (e.is_array()) {
            for (const auto& s : e) add(s);
          } else {
            add(e);
          }
        }
      } else {
        bad(std::string("'categories' must be a string or a list, got ") + c->type_name());
      }
    }
    out_.text.emplace_back(key_text(k), std::move(t));
  }
}

// ML-1M movies.dat: id::title::genres (genres separated by '|').
void ItemReader::read_movies() {
  LineReader lines(text_);
  std::string_view line;
  while (lines.next(line)) {
    if (is_blank(line)) continue;
    const int64_t ln = lines.line_number();
    const size_t a = line.find("::");
    const size_t b = line.rfind("::");
    if (a == std::string_view::npos || a == b) {
      const size_t n = a == std::string_view::npos ? 1 : 2;
      fail(ln, "", "expected 3 fields (id::title::genres), found " + std::to_string(n));
    }
    std::string id = item_id(line.substr(0, a), ln, "movie_id");
    ItemText t;
    t.title = std::string(line.substr(a + 2, b - a - 2));
    std::string_view genres = line.substr(b + 2);
    std::vector<std::string> tokens;
    size_t p = 0;
    while (p <= genres.size()) {
      size_t q = genres.find('|', p);
      if (q == std::string_view::npos) q = genres.size();
      std::string_view g = genres.substr(p, q - p);
      while (!g.empty() && is_space(g.back())) g.remove_suffix(1);
      if (!g.empty() && g != "(no genres listed)" &&
          std::find(tokens.begin(), tokens.end(), g) == tokens.end())
        tokens.emplace_back(g);
      p = q + 1;
    }
    t.categories = tokens;
    out_.text.emplace_back(id, std::move(t));
    out_.attributes.emplace_back(std::move(id), std::move(tokens));
  }
}

// ML-100K u.item: id|title|release date|video release date|url|19 genre flags.
void ItemReader::read_u_item() {
  static const char* const kGenres[19] = {
      "unknown", "Action",    "Adventure", "Animation", "Children's", "Comedy",   "Crime",
      "Documentary", "Drama", "Fantasy",   "Film-Noir", "Horror",     "Musical",  "Mystery",
      "Romance", "Sci-Fi",    "Thriller",  "War",       "Western"};
  LineReader lines(text_);
  std::string_view line;
  std::vector<std::string_view> fields;
  while (lines.next(line)) {
    if (is_blank(line)) continue;
    const int64_t ln = lines.line_number();
    fields.clear();
    size_t p = 0;
    while (true) {
      size_t q = line.find('|', p);
      fields.push_back(line.substr(p, q == std::string_view::npos ? std::string_view::npos : q - p));
      if (q == std::string_view::npos) break;
      p = q + 1;
    }
    if (fields.size() != 24) fail(ln, "", "expected 24 fields, found " + std::to_string(fields.size()));
    std::string id = item_id(fields[0], ln, "movie_id");
    ItemText t;
    t.title = std::string(fields[1]);
    std::vector<std::string> tokens;
    for (int g = 0; g < 19; ++g) {
      std::string_view flag = fields[5 + g];
      while (!flag.empty() && is_space(flag.back())) flag.remove_suffix(1);
      if (flag == "1") {
        tokens.emplace_back(kGenres[g]);
      } else if (flag != "0") {
        fail(ln, kGenres[g], "genre flag must be 0 or 1, got '" + std::string(flag) + "'");
      }
    }
    t.categories = tokens;
    out_.text.emplace_back(id, std::move(t));
    out_.attributes.emplace_back(std::move(id), std::move(tokens));
  }
}

void ItemReader::run(const std::string& item_format) {
  static const char* const kFormats[] = {"auto", "attributes", "text", "movies", "u.item"};
  if (std::find_if(std::begin(kFormats), std::end(kFormats),
                   [&](const char* f) { return item_format == f; }) == std::end(kFormats))
    throw InvalidInput("unknown item format '" + item_format +
                       "' (expected one of: auto, attributes, text, movies, u.item)");
  data_ = read_file(path_);
  text_ = strip_bom(data_);
  if (is_blank(text_)) fail(0, "", "file is empty");

  std::string format = item_format;
  if (format == "auto") {
    const std::string name = path_.filename().string();
    if (name == "movies.dat") format = "movies";
    else if (name == "u.item") format = "u.item";
  }

  if (format == "movies" || format == "u.item") {
    // ISO-8859-1 files; a file that is already valid UTF-8 is taken as it is.
    if (find_invalid_utf8(text_) != std::string_view::npos) {
      data_ = latin1_to_utf8(text_);
      text_ = data_;
    }
    if (format == "movies") read_movies();
    else read_u_item();
  } else {
    json doc = parse_json();
    if (!doc.is_object())
      fail(0, "", std::string("expected a JSON object mapping item ids to ") +
                      (format == "text" ? "text objects" : format == "attributes" ? "attribute lists"
                                                                                   : "attribute lists or text objects") +
                      ", got " + doc.type_name());
    const std::vector<KeyAt> keys = top_level_keys(text_);
    if (format == "auto" && !keys.empty()) {
      const KeyAt& k = keys.front();
      const json& first = doc.at(k.key);
      if (first.is_array()) format = "attributes";
      else if (first.is_object()) format = "text";
      else
        fail(line_of_offset(text_, k.offset), k.key,
             std::string("cannot tell the item file's format: the first value is a ") + first.type_name() +
                 " (expected a list of attributes or a text object)");
    }
    if (format == "attributes") read_attributes(doc, keys);
    else if (format == "text") read_text(doc, keys);
  }
  out_.sources.push_back(file_);
}

}  // namespace

void read_item_info(const std::filesystem::path& path, const std::string& item_format,
                    const ReaderOptions& options, SideInfo& out) {
  // Read into a local SideInfo so that a failure leaves `out` untouched.
  SideInfo local;
  ItemReader reader(path, options, local);
  reader.run(item_format);
  for (auto& a : local.attributes) out.attributes.push_back(std::move(a));
  for (auto& t : local.text) out.text.push_back(std::move(t));
  for (auto& s : local.sources) out.sources.push_back(std::move(s));
}

}  // namespace genrec
