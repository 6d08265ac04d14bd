#include "genrec/data/vocab.h"

#include <stdexcept>

#include "genrec/core/error.h"
#include "genrec/core/io.h"

namespace genrec {

Vocabulary::Vocabulary() { raw_.emplace_back(); }

int32_t Vocabulary::add(std::string_view raw) {
  auto it = index_.find(std::string(raw));
  if (it != index_.end()) return it->second;
  auto id = static_cast<int32_t>(raw_.size());
  raw_.emplace_back(raw);
  index_.emplace(raw_.back(), id);
  return id;
}

std::optional<int32_t> Vocabulary::find(std::string_view raw) const {
  auto it = index_.find(std::string(raw));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

const std::string& Vocabulary::raw(int32_t id) const {
  if (id <= 0 || id >= static_cast<int32_t>(raw_.size()))
    throw std::out_of_range("vocabulary id " + std::to_string(id) + " out of range 1.." +
                            std::to_string(size()));
  return raw_[static_cast<size_t>(id)];
}

std::string Vocabulary::serialize() const {
  std::string out;
  size_t total = 0;
  for (const auto& r : raw_) total += r.size() + 1;
  out.reserve(total);
  for (size_t i = 1; i < raw_.size(); ++i) {
    out += raw_[i];
    out += '\n';
  }
  return out;
}

Vocabulary Vocabulary::deserialize(std::string_view text, const std::string& source) {
  Vocabulary v;
  LineReader reader(text);
  std::string_view line;
  while (reader.next(line)) {
    if (line.empty()) throw InvalidInput(SourceLocation{source, reader.line_number(), ""}, "empty id");
    auto before = v.size();
    v.add(line);
    if (v.size() == before)
      throw InvalidInput(SourceLocation{source, reader.line_number(), ""},
                         "duplicate id '" + std::string(line) + "'");
  }
  if (!text.empty() && text.back() != '\n')
    throw InvalidInput(SourceLocation{source, reader.line_number(), ""}, "truncated (no final newline)");
  return v;
}

}  // namespace genrec
