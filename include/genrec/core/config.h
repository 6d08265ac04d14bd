// Run configuration: a TOML file plus `key=value` overrides, read through typed getters that
// record defaults, so the resolved configuration (file + overrides + defaults) can be saved.
// Keys that no getter asked for are reported as errors (typo protection).
//
// Example:
//   Config cfg = Config::load("configs/beauty/pop.toml", {"eval.ks=[5,10]"});
//   int64_t seed = cfg.get_int("train.seed", 42);
//   cfg.check_unused();                      // throws InvalidInput naming unknown keys
//   write_file_atomic(run / "config.toml", cfg.resolved_toml());
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace genrec {

class Config {
 public:
  Config();
  ~Config();
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;

  // Parses TOML text; `source` names it in errors.
  static Config parse(const std::string& text, const std::string& source);
  static Config load(const std::string& path, const std::vector<std::string>& overrides = {});
  // Applies "a.b.c=value": value is parsed as a TOML value (number, bool, array, quoted
  // string) and taken as a bare string when it is none of these.
  void set_override(const std::string& assignment);

  bool has(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& fallback);  // integers accepted
  std::vector<std::string> get_string_list(const std::string& key, const std::vector<std::string>& fallback);
  // Required keys: throw InvalidInput when absent.
  std::string require_string(const std::string& key);

  // Throws InvalidInput listing keys present in the file/overrides that no getter read.
  void check_unused() const;
  // The configuration as read, with every default that a getter supplied filled in.
  std::string resolved_toml() const;
  const std::string& source() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace genrec
