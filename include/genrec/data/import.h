// Importing interaction logs and item side information into a Dataset.
//
// Flow: read_interactions() (one call per input file) appends rows to a RawLog;
// read_item_info() collects side information; build_dataset() cleans (dedup, rating filter,
// k-core, minimum length), assigns dense ids, sorts each user's events chronologically
// (stable: ties keep input order) and attaches side information. import_dataset() runs the
// whole chain from ImportOptions. Everything is deterministic.
//
// Example:
//   ImportOptions opt;
//   opt.reader.format = "s3rec";
//   opt.inputs = {"Beauty.txt"};
//   opt.item_files = {"Beauty_item2attributes.json"};
//   Dataset ds = import_dataset(opt);
//   save_dataset(ds, "data/beauty");
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/progress.h"
#include "genrec/data/dataset.h"
#include "genrec/data/vocab.h"

namespace genrec {

// Rows read from interaction logs, with raw ids interned in order of first appearance.
struct RawLog {
  Vocabulary users;
  Vocabulary items;
  Vocabulary actions;
  std::vector<int32_t> row_user;       // [n_rows] interned user id
  std::vector<int32_t> row_item;       // [n_rows] interned item id
  std::vector<int64_t> row_timestamp;  // [n_rows] when has_timestamps
  std::vector<float> row_rating;       // [n_rows] when has_ratings
  std::vector<int32_t> row_action;     // [n_rows] interned action id when has_actions
  bool has_timestamps = false;
  bool has_ratings = false;
  bool has_actions = false;

  int64_t rows_skipped = 0;                 // with skip_bad_rows
  std::vector<std::string> skip_examples;   // first few reasons, "file:line: ..."

  int64_t n_rows() const { return static_cast<int64_t>(row_user.size()); }
};

enum class IdKind { Numeric, String };

// How to read an interaction log.
struct ReaderOptions {
  // s3rec | sasrec | movielens | ml-100k | csv | tsv | jsonl
  std::string format;
  // Numeric ids must be non-negative integers. Default: numeric for s3rec, sasrec, movielens,
  // ml-100k; string for csv, tsv, jsonl (see default_id_kind()).
  IdKind ids = IdKind::String;
  // Column mapping for csv / tsv (header names, or 1-based column numbers when !header) and
  // key names for jsonl. An empty name means "no such column". The time, rating and action
  // columns are optional: when their default name is absent from the header they are skipped;
  // a name the user gave explicitly must exist.
  std::string user_col = "user_id";
  std::string item_col = "item_id";
  std::string time_col = "timestamp";
  std::string rating_col = "rating";
  std::string action_col = "action";
  // Optional column holding the items seen before this row's item (a JSON or Python list
  // literal, e.g. "[3, 17]"), for sliding-window sample files. A user's history items are
  // used only while the user has no rows yet (they precede the row's item).
  std::string history_col;
  bool explicit_time_col = false, explicit_rating_col = false, explicit_action_col = false;
  bool header = true;    // csv / tsv: first line names the columns
  char delimiter = ',';  // csv: ','; tsv: '\t' (set by the reader from format)
  bool skip_bad_rows = false;  // count and report bad rows instead of failing
  int max_skip_examples = 5;
};

IdKind default_id_kind(const std::string& format);
// Formats accepted by read_interactions().
const std::vector<std::string>& interaction_formats();

// Appends the rows of `path` to `log`. Throws InvalidInput ("file:line: field F: reason") on the
// first bad row unless options.skip_bad_rows; an empty or missing file is always an error.
void read_interactions(const std::filesystem::path& path, const ReaderOptions& options, RawLog& log,
                       const ProgressCallback& progress = nullptr);

// Item side information keyed by raw item id, in file order.
struct SideInfo {
  std::vector<std::pair<std::string, std::vector<std::string>>> attributes;  // raw item -> tokens
  std::vector<std::pair<std::string, ItemText>> text;                         // raw item -> text
  std::vector<std::string> sources;                                           // file paths read
};

// auto | attributes | text | movies | u.item
//  attributes: {"item": [attribute, ...]}   (S3-Rec *_item2attributes.json)
//  text:       {"item": {"title", "description", "brand", "categories"}}
//  movies:     ML-1M movies.dat (id::title::genres, ISO-8859-1)
//  u.item:     ML-100K u.item (id|title|date|video date|url|19 genre flags, ISO-8859-1)
//  auto picks by file name (movies.dat, u.item) and otherwise by the first JSON value's type.
void read_item_info(const std::filesystem::path& path, const std::string& item_format,
                    const ReaderOptions& options, SideInfo& out);

struct CleaningOptions {
  std::string dedup = "none";  // none | consecutive (repeat of the previous item) | all (first per user-item)
  double min_rating = -1e300;  // drop rows rated below (only when the log has ratings)
  int64_t k_core_users = 0;    // iterate until every user has >= this many events ...
  int64_t k_core_items = 0;    // ... and every item >= this many (0 = off)
  int64_t min_seq_len = 0;     // then drop users with fewer events
  bool include_cold_items = false;  // items with side information but no events join the vocabulary
};

// Builds the dataset: cleaning, dense ids (numeric ids sorted by value, string ids
// lexicographically), chronological order, side information. `report` receives counts of
// what cleaning removed and how much side information matched.
Dataset build_dataset(RawLog&& log, const SideInfo& side, const CleaningOptions& cleaning, IdKind ids,
                      nlohmann::json& report);

struct ImportOptions {
  ReaderOptions reader;
  std::vector<std::filesystem::path> inputs;      // read in order, as one log
  std::vector<std::filesystem::path> item_files;  // side information
  std::string item_format = "auto";
  CleaningOptions cleaning;
};

// read_interactions + read_item_info + build_dataset, with provenance recorded in the dataset.
Dataset import_dataset(const ImportOptions& options, const ProgressCallback& progress = nullptr);

// Parses an id field per `kind`; throws InvalidInput at `where` when numeric is declared and
// the field is not a non-negative integer, or when it is empty / not UTF-8 / holds a tab or newline.
std::string_view check_id_field(std::string_view field, IdKind kind, const SourceLocation& where);
// Integer or decimal epoch seconds (fractions truncated), or ISO-8601 date / date-time
// ("2018-03-04", "2018-03-04T12:00:00", optional "Z"), as UTC epoch seconds.
bool parse_timestamp(std::string_view text, int64_t& out);

}  // namespace genrec
