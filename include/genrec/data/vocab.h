// Vocabulary: raw ids from the user's files <-> dense ids used inside genrec.
// Dense id 0 is padding and has no raw id; real ids are 1..size().
//
// Example:
//   Vocabulary items;
//   int32_t a = items.add("B00123");   // 1
//   items.find("B00123");              // std::optional<int32_t>(1)
//   items.raw(1);                      // "B00123"
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace genrec {

class Vocabulary {
 public:
  Vocabulary();
  // Adds `raw` if new; returns its dense id either way.
  int32_t add(std::string_view raw);
  std::optional<int32_t> find(std::string_view raw) const;
  // Raw id of dense id `id` (1..size()). Throws std::out_of_range otherwise.
  const std::string& raw(int32_t id) const;
  // Number of real ids (padding not counted).
  int32_t size() const { return static_cast<int32_t>(raw_.size()) - 1; }

  // One raw id per line, line k holding dense id k.
  std::string serialize() const;
  // Parses serialize()'s output; `source` names the file in errors.
  static Vocabulary deserialize(std::string_view text, const std::string& source);

 private:
  std::vector<std::string> raw_;
  std::unordered_map<std::string, int32_t> index_;
};

}  // namespace genrec
