// Interaction log readers: s3rec, sasrec, movielens, ml-100k, csv, tsv, jsonl.
//
// Every reader reads the whole file, validates one record at a time and appends it to the
// RawLog only when the whole record is valid (a bad record never leaves a partial row behind).
// Errors are InvalidInput with "file:line: field F: reason"; line is the 1-based physical line
// where the record starts.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/progress.h"
#include "genrec/data/import.h"
#include "text_util.h"

namespace genrec {

namespace {

using namespace detail;

constexpr int64_t kProgressEvery = 65536;  // records between progress updates

// ---------------------------------------------------------------------------------------------
// Field checks without building a SourceLocation (hot path); reasons are built only on failure.

enum class IdErr { None, Empty, Utf8, Control, NotNumeric };

IdErr classify_id(std::string_view f, IdKind kind, std::string_view& canon, size_t& bad_byte) {
  if (f.empty()) return IdErr::Empty;
  if (kind == IdKind::Numeric && all_digits(f)) {
    size_t z = 0;
    while (z + 1 < f.size() && f[z] == '0') ++z;
    canon = f.substr(z);
    return IdErr::None;
  }
  bool ascii = true;
  for (char c : f) {
    if (static_cast<unsigned char>(c) >= 0x80) ascii = false;
  }
  if (!ascii) {
    size_t bad = find_invalid_utf8(f);
    if (bad != std::string_view::npos) {
      bad_byte = bad;
      return IdErr::Utf8;
    }
  }
  for (char c : f)
    if (c == '\t' || c == '\n' || c == '\r') return IdErr::Control;
  if (kind == IdKind::Numeric) return IdErr::NotNumeric;
  canon = f;
  return IdErr::None;
}

std::string id_reason(IdErr err, std::string_view f, size_t bad_byte) {
  switch (err) {
    case IdErr::Empty: return "empty id";
    case IdErr::Utf8: return "invalid UTF-8 at byte " + std::to_string(bad_byte);
    case IdErr::Control: return "id " + quote_value(f) + " contains a tab or a line break";
    case IdErr::NotNumeric:
      return quote_value(f) + " is not a non-negative integer (ids are declared numeric; use --ids string)";
    case IdErr::None: break;
  }
  return "invalid id";
}

bool parse_rating_value(std::string_view s, float& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  double d = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), d);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || !std::isfinite(d)) return false;
  float f = static_cast<float>(d);
  if (!std::isfinite(f)) return false;
  out = f;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool read_digits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  out = v;
  return true;
}

bool parse_iso8601(std::string_view s, int64_t& out) {
  size_t p = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!read_digits(s, p, 4, year) || p >= s.size() || s[p++] != '-') return false;
  if (!read_digits(s, p, 2, month) || p >= s.size() || s[p++] != '-') return false;
  if (!read_digits(s, p, 2, day)) return false;
  if (month < 1 || month > 12 || day < 1) return false;
  static const int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int mdays = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
  if (day > mdays) return false;
  int64_t offset_s = 0;
  if (p < s.size()) {
    if (s[p] != 'T' && s[p] != 't' && s[p] != ' ') return false;
    ++p;
    if (!read_digits(s, p, 2, hour) || p >= s.size() || s[p++] != ':') return false;
    if (!read_digits(s, p, 2, minute)) return false;
    if (p < s.size() && s[p] == ':') {
      ++p;
      if (!read_digits(s, p, 2, second)) return false;
      if (p < s.size() && (s[p] == '.' || s[p] == ',')) {  // fractional seconds: truncated
        ++p;
        size_t start = p;
        while (p < s.size() && s[p] >= '0' && s[p] <= '9') ++p;
        if (p == start) return false;
      }
    }
    if (hour > 23 || minute > 59 || second > 60) return false;
    if (p < s.size()) {
      if (s[p] == 'Z' || s[p] == 'z') {
        ++p;
      } else if (s[p] == '+' || s[p] == '-') {
        const int sign = s[p] == '-' ? -1 : 1;
        ++p;
        int oh = 0, om = 0;
        if (!read_digits(s, p, 2, oh)) return false;
        if (p < s.size() && s[p] == ':') ++p;
        if (p < s.size() && !read_digits(s, p, 2, om)) return false;
        if (oh > 23 || om > 59) return false;
        offset_s = sign * (oh * 3600 + om * 60);
      } else {
        return false;
      }
    }
    if (p != s.size()) return false;
  }
  out = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  return true;
}

// Parses a list literal: JSON or Python, elements integers / bare tokens or quoted strings.
bool parse_list_literal(std::string_view s, std::vector<std::string>& out, std::string& reason) {
  out.clear();
  s = trim(s);
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') {
    reason = quote_value(s) + " is not a list (expected e.g. [1, 2, 3])";
    return false;
  }
  s = s.substr(1, s.size() - 2);
  size_t p = 0;
  auto skip_ws = [&] {
    while (p < s.size() && is_space(s[p])) ++p;
  };
  while (true) {
    skip_ws();
    if (p >= s.size()) break;
    std::string elem;
    if (s[p] == '\'' || s[p] == '"') {
      const char q = s[p++];
      bool closed = false;
      while (p < s.size()) {
        char c = s[p++];
        if (c == q) {
          closed = true;
          break;
        }
        if (c == '\\' && p < s.size()) {
          char e = s[p++];
          switch (e) {
            case 'n': elem += '\n'; break;
            case 't': elem += '\t'; break;
            case 'r': elem += '\r'; break;
            default: elem += e; break;
          }
        } else {
          elem += c;
        }
      }
      if (!closed) {
        reason = "unterminated string in list " + quote_value(s);
        return false;
      }
    } else {
      if (s[p] == '[' || s[p] == '{') {
        reason = "nested lists are not supported in " + quote_value(s);
        return false;
      }
      size_t start = p;
      while (p < s.size() && s[p] != ',') ++p;
      std::string_view tok = trim(s.substr(start, p - start));
      if (tok.empty()) {
        reason = "empty element in list";
        return false;
      }
      elem.assign(tok);
    }
    out.push_back(std::move(elem));
    skip_ws();
    if (p >= s.size()) break;
    if (s[p] != ',') {
      reason = "expected ',' between list elements";
      return false;
    }
    ++p;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Interning numeric ids without hashing: a digit-only id without leading zeros (the canonical form
// of a numeric id) below kMaxSlot maps straight to its vocabulary id. Vocabulary ids never change,
// so the cache stays valid while the file is read.

class InternCache {
 public:
  int32_t add(Vocabulary& vocab, std::string_view id) {
    if (!id.empty() && id.size() <= 7 && (id[0] != '0' || id.size() == 1)) {
      uint32_t v = 0;
      bool digits = true;
      for (char c : id) {
        if (c < '0' || c > '9') {
          digits = false;
          break;
        }
        v = v * 10 + static_cast<uint32_t>(c - '0');
      }
      if (digits && v < kMaxSlot) {
        if (v >= slots_.size())
          slots_.resize(std::min<size_t>(kMaxSlot, std::max<size_t>({v + 1, slots_.size() * 2, 1024})), 0);
        int32_t& slot = slots_[v];
        if (slot == 0) slot = vocab.add(id);
        return slot;
      }
    }
    return vocab.add(id);
  }

 private:
  static constexpr uint32_t kMaxSlot = 10000000;
  std::vector<int32_t> slots_;
};

// ---------------------------------------------------------------------------------------------
// One file's reading context.

struct PendingRow {
  std::string_view user;
  std::vector<std::string_view> items;  // history items first, then the row's item(s)
  size_t n_history = 0;                 // how many of `items` come from the history column
  int64_t timestamp = 0;
  float rating = 0;
  std::string_view action;

  void clear() {
    items.clear();
    n_history = 0;
    timestamp = 0;
    rating = 0;
    action = {};
  }
};

class FileReader {
 public:
  FileReader(const std::filesystem::path& path, const ReaderOptions& options, RawLog& log,
             const ProgressCallback& progress)
      : path_(path), file_(path.string()), opt_(options), log_(log), progress_(progress) {}

  void run();

 private:
  [[noreturn]] void fail(int64_t line, std::string_view field, const std::string& reason) const {
    throw InvalidInput(SourceLocation{file_, line, std::string(field)}, reason);
  }

  std::string_view id(std::string_view f, IdKind kind, int64_t line, std::string_view field) const {
    std::string_view canon;
    size_t bad = 0;
    IdErr err = classify_id(f, kind, canon, bad);
    if (err != IdErr::None) fail(line, field, id_reason(err, f, bad));
    return canon;
  }
  int64_t timestamp(std::string_view f, int64_t line, std::string_view field) const {
    int64_t t = 0;
    if (!parse_timestamp(f, t)) fail(line, field, quote_value(f) + " is not a timestamp");
    return t;
  }
  float rating(std::string_view f, int64_t line, std::string_view field) const {
    float r = 0;
    if (!parse_rating_value(f, r)) fail(line, field, quote_value(f) + " is not a number");
    return r;
  }
  std::string_view action(std::string_view f, int64_t line, std::string_view field) const {
    if (f.empty()) fail(line, field, "empty action");
    std::string_view canon;
    size_t bad = 0;
    IdErr err = classify_id(f, IdKind::String, canon, bad);
    if (err == IdErr::Utf8) fail(line, field, "invalid UTF-8 at byte " + std::to_string(bad));
    if (err == IdErr::Control) fail(line, field, "action " + quote_value(f) + " contains a tab or a line break");
    return f;
  }

  // Records which optional columns this file has; checks them against earlier inputs.
  void set_columns(bool ts, bool rating, bool action);
  void commit(const PendingRow& row);
  bool user_is_new(std::string_view user) const { return !log_.users.find(user).has_value(); }

  // Runs one record's processing, turning InvalidInput into a skipped row when asked to.
  template <class F>
  void guarded(F&& f) {
    if (!opt_.skip_bad_rows) {
      f();
      return;
    }
    try {
      f();
    } catch (const InvalidInput& e) {
      skip(e.what());
    }
  }
  void skip(const std::string& message) {
    ++log_.rows_skipped;
    if (static_cast<int64_t>(log_.skip_examples.size()) < std::max(0, opt_.max_skip_examples))
      log_.skip_examples.push_back(message);
  }
  void tick(size_t pos) {
    if (tracker_ && ++records_ % kProgressEvery == 0) tracker_->set_done(static_cast<int64_t>(pos));
  }

  void read_whitespace_lines(bool s3rec);
  void read_separated_lines(std::string_view sep);
  void read_delimited(char delim);
  void read_jsonl();

  // Next physical line from pos_: false at the end. Strips '\n' and a trailing '\r'.
  bool next_line(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    const char* base = text_.data();
    const void* nl = std::memchr(base + pos_, '\n', text_.size() - pos_);
    size_t end = nl ? static_cast<size_t>(static_cast<const char*>(nl) - base) : text_.size();
    line = std::string_view(base + pos_, end - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = nl ? end + 1 : end;
    ++line_;
    return true;
  }

  const std::filesystem::path& path_;
  std::string file_;
  const ReaderOptions& opt_;
  RawLog& log_;
  const ProgressCallback& progress_;
  std::optional<ProgressTracker> tracker_;
  int64_t records_ = 0;
  InternCache user_cache_, item_cache_;
  size_t reserve_rows_ = 0;  // expected rows of this file (its line count), for reserve()

  std::string data_;
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_ = 0;  // number of the last line returned by next_line()
  bool has_ts_ = false, has_rating_ = false, has_action_ = false;
};

void FileReader::set_columns(bool ts, bool rating, bool action) {
  has_ts_ = ts;
  has_rating_ = rating;
  has_action_ = action;
  if (reserve_rows_ > 0) {
    // Grow geometrically so that many small files do not reallocate once each.
    const size_t need = log_.row_user.size() + reserve_rows_;
    auto grow = [need](auto& v) {
      if (need > v.capacity()) v.reserve(std::max(need, v.capacity() * 3 / 2));
    };
    grow(log_.row_user);
    grow(log_.row_item);
    if (ts) grow(log_.row_timestamp);
    if (rating) grow(log_.row_rating);
    if (action) grow(log_.row_action);
  }
  if (log_.n_rows() == 0) {
    log_.has_timestamps = ts;
    log_.has_ratings = rating;
    log_.has_actions = action;
    log_.row_timestamp.clear();
    log_.row_rating.clear();
    log_.row_action.clear();
    return;
  }
  auto check = [&](bool mine, bool earlier, const char* what) {
    if (mine == earlier) return;
    if (earlier)
      fail(0, "", std::string("has no ") + what + " column but earlier inputs do");
    else
      fail(0, "", std::string("has a ") + what + " column but earlier inputs do not");
  };
  check(ts, log_.has_timestamps, "timestamp");
  check(rating, log_.has_ratings, "rating");
  check(action, log_.has_actions, "action");
}

void FileReader::commit(const PendingRow& row) {
  const int32_t u = user_cache_.add(log_.users, row.user);
  int32_t a = 0;
  if (has_action_) a = log_.actions.add(row.action);
  for (size_t i = 0; i < row.items.size(); ++i) {
    log_.row_user.push_back(u);
    log_.row_item.push_back(item_cache_.add(log_.items, row.items[i]));
    if (has_ts_) log_.row_timestamp.push_back(row.timestamp);
    if (has_rating_) log_.row_rating.push_back(i < row.n_history ? 0.0f : row.rating);
    if (has_action_) log_.row_action.push_back(a);
  }
}

void FileReader::run() {
  const std::string& format = opt_.format;
  const auto& formats = interaction_formats();
  if (std::find(formats.begin(), formats.end(), format) == formats.end()) {
    std::string list;
    for (const auto& f : formats) list += (list.empty() ? "" : ", ") + f;
    throw InvalidInput("unknown interaction format '" + format + "' (expected one of: " + list + ")");
  }
  data_ = read_file(path_);
  text_ = data_;
  if (text_.size() >= 3 && std::memcmp(text_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;  // BOM
  if (is_blank(text_.substr(pos_))) fail(0, "", "file is empty");
  if (format != "s3rec") {  // one row per line at most (s3rec lines hold many rows)
    const char* p = text_.data() + pos_;
    const char* end = text_.data() + text_.size();
    size_t lines = 1;
    while (const void* nl = std::memchr(p, '\n', static_cast<size_t>(end - p))) {
      ++lines;
      p = static_cast<const char*>(nl) + 1;
    }
    reserve_rows_ = lines;
  }
  if (progress_)
    tracker_.emplace("read " + path_.filename().string(), static_cast<int64_t>(text_.size()), "bytes",
                     progress_);

  if (format == "s3rec") {
    read_whitespace_lines(true);
  } else if (format == "sasrec") {
    read_whitespace_lines(false);
  } else if (format == "movielens") {
    read_separated_lines("::");
  } else if (format == "ml-100k") {
    read_separated_lines("\t");
  } else if (format == "csv") {
    read_delimited(opt_.delimiter);
  } else if (format == "tsv") {
    read_delimited('\t');
  } else {
    read_jsonl();
  }

  if (tracker_) {
    tracker_->set_done(static_cast<int64_t>(text_.size()));
    tracker_->finish();
  }
}

// s3rec: "user item item ..."; sasrec: "user item". Whitespace separated, numeric by default.
void FileReader::read_whitespace_lines(bool s3rec) {
  set_columns(false, false, false);
  std::vector<std::string_view> tokens;
  PendingRow row;
  std::string_view line;
  while (next_line(line)) {
    tokens.clear();
    size_t p = 0;
    while (p < line.size()) {
      while (p < line.size() && is_space(line[p])) ++p;
      if (p >= line.size()) break;
      size_t start = p;
      while (p < line.size() && !is_space(line[p])) ++p;
      tokens.push_back(line.substr(start, p - start));
    }
    if (tokens.empty()) continue;  // blank line
    const int64_t ln = line_;
    guarded([&] {
      if (s3rec && tokens.size() < 2)
        fail(ln, "", "expected a user and at least one item, found 1 field");
      if (!s3rec && tokens.size() != 2)
        fail(ln, "", "expected 2 fields, found " + std::to_string(tokens.size()));
      row.clear();
      row.user = id(tokens[0], opt_.ids, ln, "user");
      for (size_t i = 1; i < tokens.size(); ++i) row.items.push_back(id(tokens[i], opt_.ids, ln, "item"));
      commit(row);
    });
    tick(pos_);
  }
}

// movielens "u::i::rating::ts" and ml-100k "u\ti\trating\tts".
void FileReader::read_separated_lines(std::string_view sep) {
  set_columns(true, true, false);
  PendingRow row;
  std::string_view fields[4];
  std::string_view line;
  while (next_line(line)) {
    if (is_blank(line)) continue;
    // Trailing spaces (not the separator) are tolerated.
    while (!line.empty() && line.back() == ' ') line.remove_suffix(1);
    const int64_t ln = line_;
    guarded([&] {
      size_t n = 0, p = 0;
      while (true) {
        size_t q = line.find(sep, p);
        std::string_view f = line.substr(p, q == std::string_view::npos ? std::string_view::npos : q - p);
        if (n < 4) fields[n] = f;
        ++n;
        if (q == std::string_view::npos) break;
        p = q + sep.size();
      }
      if (n != 4) fail(ln, "", "expected 4 fields, found " + std::to_string(n));
      row.clear();
      row.user = id(fields[0], opt_.ids, ln, "user");
      row.items.push_back(id(fields[1], opt_.ids, ln, "item"));
      row.rating = rating(fields[2], ln, "rating");
      row.timestamp = timestamp(fields[3], ln, "timestamp");
      commit(row);
    });
    tick(pos_);
  }
}

// ---------------------------------------------------------------------------------------------
// CSV / TSV with RFC-4180 quoting.

struct CsvField {
  std::string_view value;
  int storage = -1;  // index into the unescape storage when the value needed unescaping
};

class CsvScanner {
 public:
  CsvScanner(std::string_view text, size_t pos, char delim) : text_(text), pos_(pos), delim_(delim) {}

  // Reads the next non-blank record. Returns false at the end of the text. On a malformed
  // record returns true with `error` set (and error_line the line to report); the scanner has
  // then moved past the bad record.
  bool next(std::vector<CsvField>& fields, int64_t& start_line, std::string& error, int64_t& error_line) {
    fields.clear();
    error.clear();
    n_storage_ = 0;
    // Skip blank lines.
    while (true) {
      if (pos_ >= text_.size()) return false;
      size_t p = pos_;
      while (p < text_.size() && text_[p] != '\n' && is_space(text_[p])) ++p;
      if (p >= text_.size()) {
        pos_ = p;
        return false;
      }
      if (text_[p] == '\n') {
        pos_ = p + 1;
        ++line_;
        continue;
      }
      break;
    }
    start_line = line_;
    const char* base = text_.data();
    const size_t n = text_.size();
    while (true) {
      CsvField field;
      if (pos_ < n && text_[pos_] == '"') {
        const int64_t field_line = line_;
        size_t p = pos_ + 1;
        size_t seg_start = p;
        bool escaped = false;
        std::string* store = nullptr;
        while (true) {
          const void* q = p < n ? std::memchr(base + p, '"', n - p) : nullptr;
          if (!q) {
            for (size_t i = p; i < n; ++i)
              if (text_[i] == '\n') ++line_;
            pos_ = n;
            error = "unterminated quoted field";
            error_line = field_line;
            error_field_ = fields.size();
            return true;
          }
          size_t qp = static_cast<size_t>(static_cast<const char*>(q) - base);
          for (size_t i = p; i < qp; ++i)
            if (text_[i] == '\n') ++line_;
          if (qp + 1 < n && text_[qp + 1] == '"') {  // doubled quote
            if (!escaped) {
              escaped = true;
              store = &storage(n_storage_);
              store->clear();
            }
            store->append(base + seg_start, qp + 1 - seg_start);  // keep one quote
            p = qp + 2;
            seg_start = p;
            continue;
          }
          if (escaped) {
            store->append(base + seg_start, qp - seg_start);
            field.storage = static_cast<int>(n_storage_++);
          } else {
            field.value = std::string_view(base + seg_start, qp - seg_start);
          }
          pos_ = qp + 1;
          break;
        }
        // After the closing quote: a delimiter, the end of the line or the end of the text.
        if (pos_ < n && text_[pos_] == '\r' && (pos_ + 1 >= n || text_[pos_ + 1] == '\n')) ++pos_;
        if (pos_ < n && text_[pos_] != delim_ && text_[pos_] != '\n') {
          error = "unexpected text after a closing quote";
          error_line = line_;
          error_field_ = fields.size();
          skip_rest_of_line();
          return true;
        }
      } else {
        size_t p = pos_;
        while (p < n && text_[p] != delim_ && text_[p] != '\n') ++p;
        size_t e = p;
        if (e > pos_ && (p >= n || text_[p] == '\n') && text_[e - 1] == '\r') --e;
        field.value = std::string_view(base + pos_, e - pos_);
        pos_ = p;
      }
      fields.push_back(field);
      if (pos_ >= n) break;
      if (text_[pos_] == '\n') {
        ++pos_;
        ++line_;
        break;
      }
      ++pos_;  // delimiter
      if (pos_ >= n) {  // trailing delimiter at the end of the text: one more empty field
        fields.push_back(CsvField{});
        break;
      }
    }
    for (auto& f : fields)
      if (f.storage >= 0) f.value = storage_[static_cast<size_t>(f.storage)];
    return true;
  }

  size_t pos() const { return pos_; }
  size_t error_field() const { return error_field_; }

 private:
  std::string& storage(size_t i) {
    if (storage_.size() <= i) storage_.resize(i + 1);
    return storage_[i];
  }
  void skip_rest_of_line() {
    while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
    if (pos_ < text_.size()) {
      ++pos_;
      ++line_;
    }
  }

  std::string_view text_;
  size_t pos_;
  char delim_;
  int64_t line_ = 1;
  std::vector<std::string> storage_;
  size_t n_storage_ = 0;
  size_t error_field_ = 0;
};

void FileReader::read_delimited(char delim) {
  if (delim == '"' || delim == '\n' || delim == '\r')
    throw InvalidInput("invalid csv delimiter '" + std::string(1, delim) + "'");
  CsvScanner scanner(text_, pos_, delim);
  std::vector<CsvField> fields;
  std::string error;
  int64_t start_line = 0, error_line = 0;

  // The first record: the header, or (without one) the record that fixes the column count.
  if (!scanner.next(fields, start_line, error, error_line)) fail(0, "", "file is empty");
  if (!error.empty()) fail(error_line, "", error);
  const size_t ncols = fields.size();
  std::vector<std::string> names(ncols);
  for (size_t i = 0; i < ncols; ++i)
    names[i] = opt_.header ? std::string(trim(fields[i].value)) : "column " + std::to_string(i + 1);
  const int64_t header_line = start_line;

  auto list_columns = [&] {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  // Column index for an option, or -1 when the optional column is not used.
  auto resolve = [&](const std::string& name, bool required, const char* option) -> int {
    if (name.empty()) {
      if (required) fail(header_line, "", std::string(option) + " is empty");
      return -1;
    }
    if (opt_.header) {
      for (size_t i = 0; i < ncols; ++i)
        if (names[i] == name) return static_cast<int>(i);
      if (required) fail(header_line, name, "no column '" + name + "' in the header (columns: " + list_columns() + ")");
      return -1;
    }
    if (!all_digits(name) || name.size() > 9) {
      if (required)
        fail(header_line, name,
             std::string(option) + " must be a 1-based column number when the file has no header, got '" +
                 name + "'");
      return -1;
    }
    const long k = std::stol(name);
    if (k < 1 || static_cast<size_t>(k) > ncols) {
      if (required)
        fail(header_line, name,
             "column " + name + " does not exist (the first row has " + std::to_string(ncols) + " fields)");
      return -1;
    }
    return static_cast<int>(k - 1);
  };
  const int c_user = resolve(opt_.user_col, true, "user_col");
  const int c_item = resolve(opt_.item_col, true, "item_col");
  const int c_time = resolve(opt_.time_col, opt_.explicit_time_col, "time_col");
  const int c_rating = resolve(opt_.rating_col, opt_.explicit_rating_col, "rating_col");
  const int c_action = resolve(opt_.action_col, opt_.explicit_action_col, "action_col");
  const int c_history = opt_.history_col.empty() ? -1 : resolve(opt_.history_col, true, "history_col");
  set_columns(c_time >= 0, c_rating >= 0, c_action >= 0);

  PendingRow row;
  std::vector<std::string> history;
  auto process = [&](int64_t ln) {
    if (fields.size() != ncols)
      fail(ln, "", "expected " + std::to_string(ncols) + " fields, found " + std::to_string(fields.size()));
    row.clear();
    row.user = id(fields[c_user].value, opt_.ids, ln, names[c_user]);
    if (c_time >= 0) row.timestamp = timestamp(fields[c_time].value, ln, names[c_time]);
    if (c_rating >= 0) row.rating = rating(fields[c_rating].value, ln, names[c_rating]);
    if (c_action >= 0) row.action = action(fields[c_action].value, ln, names[c_action]);
    if (c_history >= 0 && user_is_new(row.user)) {
      std::string reason;
      if (!parse_list_literal(fields[c_history].value, history, reason)) fail(ln, names[c_history], reason);
      for (const auto& h : history) row.items.push_back(id(h, opt_.ids, ln, names[c_history]));
      row.n_history = row.items.size();
    }
    row.items.push_back(id(fields[c_item].value, opt_.ids, ln, names[c_item]));
    commit(row);
  };

  if (!opt_.header) guarded([&] { process(start_line); });
  while (scanner.next(fields, start_line, error, error_line)) {
    if (!error.empty()) {
      const size_t fi = scanner.error_field();
      const std::string field = fi < ncols ? names[fi] : std::string();
      guarded([&] { fail(error_line, field, error); });
    } else {
      guarded([&] { process(start_line); });
    }
    tick(scanner.pos());
  }
}

// ---------------------------------------------------------------------------------------------
// JSON lines.

void FileReader::read_jsonl() {
  const std::string& ucol = opt_.user_col;
  const std::string& icol = opt_.item_col;
  if (ucol.empty() || icol.empty()) throw InvalidInput("jsonl needs user and item key names");
  bool columns_known = false;
  std::string tcol, rcol, acol;
  const std::string& hcol = opt_.history_col;

  PendingRow row;
  std::string user_buf, item_buf, action_buf;
  std::vector<std::string> history;

  // A JSON id (string or integer) as text in `buf` (or a view of the JSON string).
  auto id_text = [&](const nlohmann::json& v, std::string& buf, int64_t ln, const std::string& key) {
    if (v.is_string()) return std::string_view(v.get_ref<const std::string&>());
    if (v.is_number_unsigned()) {
      buf = std::to_string(v.get<uint64_t>());
      return std::string_view(buf);
    }
    if (v.is_number_integer()) {
      buf = std::to_string(v.get<int64_t>());
      return std::string_view(buf);
    }
    fail(ln, key, std::string("expected a string or an integer, got ") + v.type_name() + " " + quote_value(v.dump()));
  };
  auto get = [&](const nlohmann::json& obj, const std::string& key, int64_t ln) -> const nlohmann::json& {
    auto it = obj.find(key);
    if (it == obj.end()) fail(ln, key, "missing key '" + key + "'");
    return *it;
  };

  std::string_view line;
  while (next_line(line)) {
    if (is_blank(line)) continue;
    const int64_t ln = line_;
    nlohmann::json obj;
    bool parsed = false;
    guarded([&] {
      try {
        obj = nlohmann::json::parse(line.begin(), line.end());
      } catch (const nlohmann::json::parse_error& e) {
        fail(ln, "", "malformed JSON: " + strip_json_prefix(e.what()));
      }
      if (!obj.is_object()) fail(ln, "", std::string("expected a JSON object, got ") + obj.type_name());
      parsed = true;
    });
    if (!parsed) {
      tick(pos_);
      continue;
    }
    if (!columns_known) {
      // The first object decides which optional keys the file has.
      auto optional_key = [&](const std::string& key, bool explicit_key) -> std::string {
        if (key.empty()) return {};
        if (obj.contains(key)) return key;
        if (explicit_key) fail(ln, key, "key '" + key + "' not found in the first object");
        return {};
      };
      tcol = optional_key(opt_.time_col, opt_.explicit_time_col);
      rcol = optional_key(opt_.rating_col, opt_.explicit_rating_col);
      acol = optional_key(opt_.action_col, opt_.explicit_action_col);
      set_columns(!tcol.empty(), !rcol.empty(), !acol.empty());
      columns_known = true;
    }
    guarded([&] {
      row.clear();
      row.user = id(id_text(get(obj, ucol, ln), user_buf, ln, ucol), opt_.ids, ln, ucol);
      if (!tcol.empty()) {
        const auto& v = get(obj, tcol, ln);
        if (v.is_number_integer()) {
          row.timestamp = v.get<int64_t>();
        } else if (v.is_number_unsigned()) {
          uint64_t u = v.get<uint64_t>();
          if (u > static_cast<uint64_t>(INT64_MAX)) fail(ln, tcol, quote_value(v.dump()) + " is not a timestamp");
          row.timestamp = static_cast<int64_t>(u);
        } else if (v.is_number_float()) {
          double d = v.get<double>();
          if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) fail(ln, tcol, quote_value(v.dump()) + " is not a timestamp");
          row.timestamp = static_cast<int64_t>(d);
        } else if (v.is_string()) {
          row.timestamp = timestamp(v.get_ref<const std::string&>(), ln, tcol);
        } else {
          fail(ln, tcol, quote_value(v.dump()) + " is not a timestamp");
        }
      }
      if (!rcol.empty()) {
        const auto& v = get(obj, rcol, ln);
        if (v.is_number()) {
          double d = v.get<double>();
          float f = static_cast<float>(d);
          if (!std::isfinite(f)) fail(ln, rcol, quote_value(v.dump()) + " is not a number");
          row.rating = f;
        } else if (v.is_string()) {
          row.rating = rating(v.get_ref<const std::string&>(), ln, rcol);
        } else {
          fail(ln, rcol, quote_value(v.dump()) + " is not a number");
        }
      }
      if (!acol.empty()) {
        const auto& v = get(obj, acol, ln);
        if (v.is_string()) {
          row.action = action(v.get_ref<const std::string&>(), ln, acol);
        } else if (v.is_number()) {
          action_buf = v.dump();
          row.action = action_buf;
        } else {
          fail(ln, acol, std::string("expected a string or a number, got ") + v.type_name());
        }
      }
      if (!hcol.empty() && user_is_new(row.user)) {
        const auto& v = get(obj, hcol, ln);
        history.clear();
        if (v.is_array()) {
          std::string buf;
          for (const auto& e : v) {
            std::string_view t = id_text(e, buf, ln, hcol);
            history.emplace_back(t);
          }
        } else if (v.is_string()) {
          std::string reason;
          if (!parse_list_literal(v.get_ref<const std::string&>(), history, reason)) fail(ln, hcol, reason);
        } else if (!v.is_null()) {
          fail(ln, hcol, std::string("expected a list, got ") + v.type_name());
        }
        for (const auto& h : history) row.items.push_back(id(h, opt_.ids, ln, hcol));
        row.n_history = row.items.size();
      }
      row.items.push_back(id(id_text(get(obj, icol, ln), item_buf, ln, icol), opt_.ids, ln, icol));
      commit(row);
    });
    tick(pos_);
  }
  if (!columns_known) set_columns(false, false, false);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

IdKind default_id_kind(const std::string& format) {
  if (format == "s3rec" || format == "sasrec" || format == "movielens" || format == "ml-100k")
    return IdKind::Numeric;
  return IdKind::String;
}

const std::vector<std::string>& interaction_formats() {
  static const std::vector<std::string> formats = {"s3rec", "sasrec", "movielens", "ml-100k",
                                                   "csv",   "tsv",    "jsonl"};
  return formats;
}

std::string_view check_id_field(std::string_view field, IdKind kind, const SourceLocation& where) {
  std::string_view canon;
  size_t bad = 0;
  IdErr err = classify_id(field, kind, canon, bad);
  if (err != IdErr::None) throw InvalidInput(where, id_reason(err, field, bad));
  return canon;
}

bool parse_timestamp(std::string_view text, int64_t& out) {
  if (text.empty()) return false;
  const char* b = text.data();
  const char* e = b + text.size();
  {
    std::string_view digits = text;
    if (digits[0] == '+') digits.remove_prefix(1);
    int64_t v = 0;
    auto res = std::from_chars(digits.data(), e, v);
    if (!digits.empty() && res.ec == std::errc() && res.ptr == e) {
      out = v;
      return true;
    }
  }
  // Decimal epoch seconds (fraction truncated toward zero).
  if ((text[0] >= '0' && text[0] <= '9') || text[0] == '-' || text[0] == '+' || text[0] == '.') {
    const char* s = text[0] == '+' ? b + 1 : b;
    double d = 0;
    auto res = std::from_chars(s, e, d);
    if (s != e && res.ec == std::errc() && res.ptr == e) {
      if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return false;
      out = static_cast<int64_t>(d);
      return true;
    }
  }
  return parse_iso8601(text, out);
}

void read_interactions(const std::filesystem::path& path, const ReaderOptions& options, RawLog& log,
                       const ProgressCallback& progress) {
  FileReader reader(path, options, log, progress);
  reader.run();
}

}  // namespace genrec
