#include "genrec/core/config.h"

#include <map>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "genrec/core/error.h"
#include "genrec/core/io.h"

namespace genrec {

struct Config::Impl {
  toml::table table;     // as read (file + overrides)
  toml::table resolved;  // table + defaults supplied by getters
  std::set<std::string> used;
  std::string source;
  std::map<std::string, std::string> overrides;  // key -> the "key=value" that set it last

  // Where a key's value came from, for errors: the --set that gave it, else the file.
  std::string where(const std::string& key) const {
    auto it = overrides.find(key);
    return it == overrides.end() ? source : "--set " + it->second + " (over " + source + ")";
  }
};

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : key) {
    if (c == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  parts.push_back(cur);
  for (const auto& p : parts)
    if (p.empty()) throw InvalidInput("config key '" + key + "': empty component");
  return parts;
}

// Returns the node at dotted `key`, or nullptr.
const toml::node* find_node(const toml::table& table, const std::string& key) {
  const toml::table* cur = &table;
  auto parts = split_key(key);
  for (size_t i = 0; i < parts.size(); ++i) {
    const toml::node* node = cur->get(parts[i]);
    if (!node) return nullptr;
    if (i + 1 == parts.size()) return node;
    cur = node->as_table();
    if (!cur) return nullptr;
  }
  return nullptr;
}

template <typename Node>
void set_node(toml::table& table, const std::string& key, Node&& value, const std::string& source) {
  toml::table* cur = &table;
  auto parts = split_key(key);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* node = cur->get(parts[i]);
    if (!node) {
      cur->insert(parts[i], toml::table{});
      node = cur->get(parts[i]);
    }
    cur = node->as_table();
    if (!cur) throw InvalidInput(source + ": key '" + key + "': '" + parts[i] + "' is not a table");
  }
  cur->insert_or_assign(parts.back(), std::forward<Node>(value));
}

void collect_leaves(const toml::table& table, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& [k, v] : table) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* t = v.as_table())
      collect_leaves(*t, key, out);
    else
      out.push_back(key);
  }
}

std::string type_error(const std::string& where, const std::string& key, const char* expected) {
  return where + ": key '" + key + "': expected " + expected;
}

}  // namespace

Config::Config() : impl_(std::make_unique<Impl>()) {}
Config::~Config() = default;
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;

Config Config::parse(const std::string& text, const std::string& source) {
  Config cfg;
  cfg.impl_->source = source;
  try {
    cfg.impl_->table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw InvalidInput(SourceLocation{source, static_cast<int64_t>(e.source().begin.line), ""},
                       std::string(e.description()));
  }
  cfg.impl_->resolved = cfg.impl_->table;
  return cfg;
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg = parse(read_file(path), path);
  for (const auto& o : overrides) cfg.set_override(o);
  return cfg;
}

void Config::set_override(const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InvalidInput("--set '" + assignment + "': expected key=value");
  std::string key = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  toml::table parsed;
  bool ok = true;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    ok = false;
  }
  auto apply = [&](toml::table& t) {
    if (ok)
      set_node(t, key, *parsed.get("v"), "--set");
    else
      set_node(t, key, toml::value<std::string>(value), "--set");
  };
  apply(impl_->table);
  apply(impl_->resolved);
  impl_->overrides[key] = assignment;
}

bool Config::has(const std::string& key) const { return find_node(impl_->table, key) != nullptr; }

std::string Config::get_string(const std::string& key, const std::string& fallback) {
  impl_->used.insert(key);
  const toml::node* n = find_node(impl_->table, key);
  if (!n) {
    set_node(impl_->resolved, key, toml::value<std::string>(fallback), impl_->source);
    return fallback;
  }
  if (auto v = n->value<std::string>()) return *v;
  throw InvalidInput(type_error(impl_->where(key), key, "a string"));
}

std::string Config::require_string(const std::string& key) {
  impl_->used.insert(key);
  const toml::node* n = find_node(impl_->table, key);
  if (!n) throw InvalidInput(impl_->source + ": missing required key '" + key + "'");
  if (auto v = n->value<std::string>()) return *v;
  throw InvalidInput(type_error(impl_->where(key), key, "a string"));
}

int64_t Config::get_int(const std::string& key, int64_t fallback) {
  impl_->used.insert(key);
  const toml::node* n = find_node(impl_->table, key);
  if (!n) {
    set_node(impl_->resolved, key, toml::value<int64_t>(fallback), impl_->source);
    return fallback;
  }
  if (n->is_integer()) return *n->value<int64_t>();
  throw InvalidInput(type_error(impl_->where(key), key, "an integer"));
}

double Config::get_double(const std::string& key, double fallback) {
  impl_->used.insert(key);
  const toml::node* n = find_node(impl_->table, key);
  if (!n) {
    set_node(impl_->resolved, key, toml::value<double>(fallback), impl_->source);
    return fallback;
  }
  if (n->is_floating_point()) return *n->value<double>();
  if (n->is_integer()) return static_cast<double>(*n->value<int64_t>());
  throw InvalidInput(type_error(impl_->where(key), key, "a number"));
}

bool Config::get_bool(const std::string& key, bool fallback) {
  impl_->used.insert(key);
  const toml::node* n = find_node(impl_->table, key);
  if (!n) {
    set_node(impl_->resolved, key, toml::value<bool>(fallback), impl_->source);
    return fallback;
  }
  if (n->is_boolean()) return *n->value<bool>();
  throw InvalidInput(type_error(impl_->where(key), key, "true or false"));
}

// Shared by the list getters: records the key, resolves the fallback, and converts each element
// with `take` (which returns false for an element of the wrong type); `where()` names the
// value's origin in an error.
template <typename T, typename Where, typename Take>
std::vector<T> get_list(const Where& where, toml::table& table, toml::table& resolved, const std::string& source,
                        const std::string& key, const std::vector<T>& fallback, const char* what, Take take) {
  const toml::node* n = find_node(table, key);
  if (!n) {
    toml::array arr;
    for (const auto& v : fallback) arr.push_back(v);
    set_node(resolved, key, std::move(arr), source);
    return fallback;
  }
  const toml::array* arr = n->as_array();
  if (!arr) throw InvalidInput(type_error(where(), key, what));
  std::vector<T> out;
  for (const auto& el : *arr) {
    T v{};
    if (!take(el, v)) throw InvalidInput(type_error(where(), key, what));
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<int64_t> Config::get_int_list(const std::string& key, const std::vector<int64_t>& fallback) {
  impl_->used.insert(key);
  return get_list<int64_t>([&] { return impl_->where(key); }, impl_->table, impl_->resolved, impl_->source, key,
                  fallback,
                  "an array of integers",
                  [](const toml::node& el, int64_t& v) {
                    if (!el.is_integer()) return false;
                    v = *el.value<int64_t>();
                    return true;
                  });
}

std::vector<double> Config::get_double_list(const std::string& key, const std::vector<double>& fallback) {
  impl_->used.insert(key);
  return get_list<double>([&] { return impl_->where(key); }, impl_->table, impl_->resolved, impl_->source, key,
                  fallback,
                  "an array of numbers",
                  [](const toml::node& el, double& v) {
                    if (el.is_integer()) v = static_cast<double>(*el.value<int64_t>());
                    else if (el.is_floating_point()) v = *el.value<double>();
                    else return false;
                    return true;
                  });
}

std::vector<std::string> Config::get_string_list(const std::string& key, const std::vector<std::string>& fallback) {
  impl_->used.insert(key);
  return get_list<std::string>([&] { return impl_->where(key); }, impl_->table, impl_->resolved, impl_->source, key,
                  fallback,
                  "an array of strings",
                  [](const toml::node& el, std::string& v) {
                    if (!el.is_string()) return false;
                    v = *el.value<std::string>();
                    return true;
                  });
}

void Config::check_unused() const {
  std::vector<std::string> leaves;
  collect_leaves(impl_->table, "", leaves);
  std::string unknown;
  for (const auto& k : leaves) {
    if (impl_->used.count(k)) continue;
    if (!unknown.empty()) unknown += ", ";
    unknown += k;
    if (impl_->overrides.count(k)) unknown += " (from --set)";
  }
  if (!unknown.empty()) throw InvalidInput(impl_->source + ": unknown config key(s): " + unknown);
}

std::string Config::resolved_toml() const {
  std::ostringstream os;
  os << impl_->resolved << "\n";
  return os.str();
}

const std::string& Config::source() const { return impl_->source; }

}  // namespace genrec
