// Dataset directory I/O.
//
// events.bin byte layout (little-endian, no padding):
//   char[8]  magic "GRECEVT1"
//   uint32   format version (1)
//   uint32   flags: 1 = timestamps, 2 = ratings, 4 = actions
//   uint64   n_users, uint64 n_events
//   int64    user_offsets[n_users + 2]
//   int32    items[n_events]
//   int64    timestamps[n_events]   (flag 1)
//   float    ratings[n_events]      (flag 2)
//   int32    actions[n_events]      (flag 4)
// attributes.bin:
//   char[8] "GRECATT1", uint32 version (1), uint32 reserved, uint64 n_items, uint64 n_values,
//   int64 offsets[n_items + 2], int32 values[n_values]
#include "genrec/data/dataset.h"

#include <cstring>

#include "genrec/core/error.h"
#include "genrec/core/io.h"

namespace genrec {

namespace {

constexpr uint32_t kEventsVersion = 1;
constexpr uint32_t kManifestVersion = 1;
constexpr char kEventsMagic[8] = {'G', 'R', 'E', 'C', 'E', 'V', 'T', '1'};
constexpr char kAttrMagic[8] = {'G', 'R', 'E', 'C', 'A', 'T', 'T', '1'};
constexpr uint32_t kFlagTimestamps = 1, kFlagRatings = 2, kFlagActions = 4;

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void put_array(std::string& out, const std::vector<T>& v) {
  if (!v.empty()) out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Bounds-checked reader over a binary file; every failure names the file.
class BinReader {
 public:
  BinReader(std::string_view data, std::string file) : data_(data), file_(std::move(file)) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  template <typename T>
  void get_array(std::vector<T>& out, uint64_t n, const char* what) {
    if (n > (data_.size() - pos_) / sizeof(T)) fail(std::string("truncated while reading ") + what);
    out.resize(n);
    if (n) std::memcpy(out.data(), data_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
  }
  void expect_end() {
    if (pos_ != data_.size())
      fail(std::to_string(data_.size() - pos_) + " unexpected trailing bytes (corrupted file)");
  }
  [[noreturn]] void fail(const std::string& reason) const {
    throw InvalidInput(SourceLocation{file_, 0, ""}, reason);
  }

 private:
  void need(size_t n, const char* what) {
    if (data_.size() - pos_ < n) fail(std::string("truncated while reading ") + what);
  }
  std::string_view data_;
  std::string file_;
  size_t pos_ = 0;
};

void check_offsets(const std::vector<int64_t>& offsets, uint64_t n_values, const BinReader& r) {
  if (offsets.empty() || offsets[0] != 0 || offsets[1] != 0) r.fail("corrupted offsets (row 0 must be empty)");
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1]) r.fail("corrupted offsets (not monotonic at row " + std::to_string(i) + ")");
  if (static_cast<uint64_t>(offsets.back()) != n_values) r.fail("corrupted offsets (do not end at the value count)");
}

std::string item_text_jsonl(const Dataset& ds) {
  std::string out;
  for (int32_t i = 1; i <= ds.n_items(); ++i) {
    if (ds.item_text.empty() || !ds.has_item_text[static_cast<size_t>(i)]) continue;
    const ItemText& t = ds.item_text[static_cast<size_t>(i)];
    nlohmann::json j = {{"item", ds.items.raw(i)},
                        {"title", t.title},
                        {"description", t.description},
                        {"brand", t.brand},
                        {"categories", t.categories}};
    out += j.dump();
    out += '\n';
  }
  return out;
}

}  // namespace

int64_t Dataset::n_items_with_text() const {
  int64_t n = 0;
  for (auto f : has_item_text) n += f;
  return n;
}

UserEvents Dataset::user(int32_t user_id) const {
  GENREC_ASSERT(user_id >= 1 && user_id <= n_users());
  UserEvents ev;
  int64_t b = user_offsets[static_cast<size_t>(user_id)];
  int64_t e = user_offsets[static_cast<size_t>(user_id) + 1];
  ev.size = e - b;
  ev.items = event_items.data() + b;
  if (has_timestamps()) ev.timestamps = event_timestamps.data() + b;
  if (has_ratings()) ev.ratings = event_ratings.data() + b;
  if (has_actions()) ev.actions = event_actions.data() + b;
  return ev;
}

void Dataset::validate() const {
  auto nu = static_cast<size_t>(n_users());
  GENREC_ASSERT(user_offsets.size() == nu + 2);
  GENREC_ASSERT(user_offsets[0] == 0 && user_offsets[1] == 0);
  for (size_t i = 1; i < user_offsets.size(); ++i) GENREC_ASSERT(user_offsets[i] >= user_offsets[i - 1]);
  GENREC_ASSERT(user_offsets.back() == n_events());
  for (int32_t it : event_items) GENREC_ASSERT(it >= 1 && it <= n_items());
  GENREC_ASSERT(event_timestamps.empty() || static_cast<int64_t>(event_timestamps.size()) == n_events());
  GENREC_ASSERT(event_ratings.empty() || static_cast<int64_t>(event_ratings.size()) == n_events());
  GENREC_ASSERT(event_actions.empty() || static_cast<int64_t>(event_actions.size()) == n_events());
  for (int32_t a : event_actions) GENREC_ASSERT(a >= 1 && a <= actions.size());
  if (has_attributes()) {
    GENREC_ASSERT(attribute_offsets.size() == static_cast<size_t>(n_items()) + 2);
    GENREC_ASSERT(attribute_offsets.back() == static_cast<int64_t>(attribute_values.size()));
    for (int32_t a : attribute_values) GENREC_ASSERT(a >= 1 && a <= attributes.size());
  }
  if (!item_text.empty()) {
    GENREC_ASSERT(item_text.size() == static_cast<size_t>(n_items()) + 1);
    GENREC_ASSERT(has_item_text.size() == item_text.size());
  }
}

void save_dataset(const Dataset& ds, const fs::path& dir, bool overwrite) {
  ds.validate();
  StagingDir stage(dir, overwrite);
  nlohmann::json files = nlohmann::json::object();
  auto write = [&](const std::string& name, const std::string& data) {
    write_file_atomic(stage.path() / name, data);
    files[name] = {{"bytes", data.size()}, {"crc32", crc32_hex(crc32_of(data))}};
  };

  write("users.vocab", ds.users.serialize());
  write("items.vocab", ds.items.serialize());
  if (ds.has_actions()) write("actions.vocab", ds.actions.serialize());

  std::string ev;
  uint32_t flags = (ds.has_timestamps() ? kFlagTimestamps : 0) | (ds.has_ratings() ? kFlagRatings : 0) |
                   (ds.has_actions() ? kFlagActions : 0);
  ev.reserve(64 + ds.user_offsets.size() * 8 + static_cast<size_t>(ds.n_events()) * 20);
  ev.append(kEventsMagic, 8);
  put(ev, kEventsVersion);
  put(ev, flags);
  put(ev, static_cast<uint64_t>(ds.n_users()));
  put(ev, static_cast<uint64_t>(ds.n_events()));
  put_array(ev, ds.user_offsets);
  put_array(ev, ds.event_items);
  put_array(ev, ds.event_timestamps);
  put_array(ev, ds.event_ratings);
  put_array(ev, ds.event_actions);
  write("events.bin", ev);

  if (ds.has_attributes()) {
    std::string at;
    at.append(kAttrMagic, 8);
    put(at, uint32_t{1});
    put(at, uint32_t{0});
    put(at, static_cast<uint64_t>(ds.n_items()));
    put(at, static_cast<uint64_t>(ds.attribute_values.size()));
    put_array(at, ds.attribute_offsets);
    put_array(at, ds.attribute_values);
    write("attributes.bin", at);
    write("attributes.vocab", ds.attributes.serialize());
  }
  int64_t n_text = ds.n_items_with_text();
  if (n_text > 0) write("item_text.jsonl", item_text_jsonl(ds));

  nlohmann::json manifest = {
      {"genrec_dataset_version", kManifestVersion},
      {"counts",
       {{"users", ds.n_users()},
        {"items", ds.n_items()},
        {"interactions", ds.n_events()},
        {"actions", ds.actions.size()},
        {"attributes", ds.attributes.size()},
        {"items_with_attributes", ds.has_attributes() ? ds.n_items() : 0},
        {"items_with_text", n_text}}},
      {"has", {{"timestamps", ds.has_timestamps()}, {"ratings", ds.has_ratings()}, {"actions", ds.has_actions()}}},
      {"provenance", ds.provenance},
      {"files", files}};
  if (ds.has_attributes()) {
    int64_t with = 0;
    for (int32_t i = 1; i <= ds.n_items(); ++i)
      with += ds.attribute_offsets[static_cast<size_t>(i) + 1] > ds.attribute_offsets[static_cast<size_t>(i)];
    manifest["counts"]["items_with_attributes"] = with;
  }
  write_file_atomic(stage.path() / "manifest.json", manifest.dump(2) + "\n");
  stage.commit();
}

nlohmann::json read_manifest(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw InvalidInput(SourceLocation{dir.string(), 0, ""}, "not a dataset directory (missing or not a directory)");
  fs::path path = dir / "manifest.json";
  std::string text = read_file(path);
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InvalidInput(SourceLocation{path.string(), line_of_offset(text, e.byte), ""},
                       std::string("invalid JSON: ") + e.what());
  }
  if (!m.is_object() || !m.contains("genrec_dataset_version") || !m.contains("files") || !m["files"].is_object())
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "not a genrec dataset manifest");
  if (m["genrec_dataset_version"] != kManifestVersion)
    throw InvalidInput(SourceLocation{path.string(), 0, "genrec_dataset_version"},
                       "unsupported version " + m["genrec_dataset_version"].dump());
  return m;
}

Dataset load_dataset(const fs::path& dir, const LoadOptions& options) {
  nlohmann::json manifest = read_manifest(dir);
  const nlohmann::json& files = manifest["files"];
  auto load = [&](const std::string& name) -> std::string {
    fs::path path = dir / name;
    if (!files.contains(name))
      throw InvalidInput(SourceLocation{(dir / "manifest.json").string(), 0, "files"}, "does not list " + name);
    std::string data = read_file(path);
    const auto& entry = files[name];
    if (entry.value("bytes", uint64_t{0}) != data.size())
      throw InvalidInput(SourceLocation{path.string(), 0, ""},
                         "size " + std::to_string(data.size()) + " bytes differs from the manifest's " +
                             entry.value("bytes", nlohmann::json()).dump() + " (truncated or replaced file)");
    if (options.verify_checksums) {
      std::string crc = crc32_hex(crc32_of(data));
      if (entry.value("crc32", std::string()) != crc)
        throw InvalidInput(SourceLocation{path.string(), 0, ""},
                           "checksum mismatch: manifest says crc32 " + entry.value("crc32", std::string("?")) +
                               ", file has " + crc + " (corrupted file)");
    }
    return data;
  };

  Dataset ds;
  ds.users = Vocabulary::deserialize(load("users.vocab"), (dir / "users.vocab").string());
  ds.items = Vocabulary::deserialize(load("items.vocab"), (dir / "items.vocab").string());
  if (files.contains("actions.vocab"))
    ds.actions = Vocabulary::deserialize(load("actions.vocab"), (dir / "actions.vocab").string());
  ds.provenance = manifest.value("provenance", nlohmann::json::object());

  {
    std::string data = load("events.bin");
    BinReader r(data, (dir / "events.bin").string());
    char magic[8];
    for (char& c : magic) c = r.get<char>("magic");
    if (std::memcmp(magic, kEventsMagic, 8) != 0) r.fail("not a genrec events file (bad magic)");
    auto version = r.get<uint32_t>("version");
    if (version != kEventsVersion) r.fail("unsupported events version " + std::to_string(version));
    auto flags = r.get<uint32_t>("flags");
    auto n_users = r.get<uint64_t>("user count");
    auto n_events = r.get<uint64_t>("event count");
    if (n_users != static_cast<uint64_t>(ds.n_users()))
      r.fail("user count " + std::to_string(n_users) + " differs from users.vocab's " + std::to_string(ds.n_users()));
    r.get_array(ds.user_offsets, n_users + 2, "user offsets");
    r.get_array(ds.event_items, n_events, "items");
    if (flags & kFlagTimestamps) r.get_array(ds.event_timestamps, n_events, "timestamps");
    if (flags & kFlagRatings) r.get_array(ds.event_ratings, n_events, "ratings");
    if (flags & kFlagActions) r.get_array(ds.event_actions, n_events, "actions");
    r.expect_end();
    check_offsets(ds.user_offsets, n_events, r);
    const int32_t n_items = ds.n_items();
    for (int32_t it : ds.event_items)
      if (it < 1 || it > n_items) r.fail("item id " + std::to_string(it) + " out of range (corrupted file)");
    const int32_t n_actions = ds.actions.size();
    for (int32_t a : ds.event_actions)
      if (a < 1 || a > n_actions) r.fail("action id " + std::to_string(a) + " out of range (corrupted file)");
  }

  if (options.load_side_info) {
    if (files.contains("attributes.bin")) {
      ds.attributes = Vocabulary::deserialize(load("attributes.vocab"), (dir / "attributes.vocab").string());
      std::string data = load("attributes.bin");
      BinReader r(data, (dir / "attributes.bin").string());
      char magic[8];
      for (char& c : magic) c = r.get<char>("magic");
      if (std::memcmp(magic, kAttrMagic, 8) != 0) r.fail("not a genrec attributes file (bad magic)");
      if (r.get<uint32_t>("version") != 1) r.fail("unsupported attributes version");
      r.get<uint32_t>("reserved");
      auto n_items = r.get<uint64_t>("item count");
      auto n_values = r.get<uint64_t>("value count");
      if (n_items != static_cast<uint64_t>(ds.n_items())) r.fail("item count differs from items.vocab");
      r.get_array(ds.attribute_offsets, n_items + 2, "offsets");
      r.get_array(ds.attribute_values, n_values, "values");
      r.expect_end();
      check_offsets(ds.attribute_offsets, n_values, r);
      for (int32_t a : ds.attribute_values)
        if (a < 1 || a > ds.attributes.size()) r.fail("attribute id out of range (corrupted file)");
    }
    if (files.contains("item_text.jsonl")) {
      fs::path path = dir / "item_text.jsonl";
      std::string data = load("item_text.jsonl");
      ds.item_text.assign(static_cast<size_t>(ds.n_items()) + 1, ItemText{});
      ds.has_item_text.assign(static_cast<size_t>(ds.n_items()) + 1, 0);
      LineReader lines(data);
      std::string_view line;
      while (lines.next(line)) {
        SourceLocation where{path.string(), lines.line_number(), ""};
        try {
          auto j = nlohmann::json::parse(line);
          auto id = ds.items.find(j.at("item").get<std::string>());
          if (!id) throw InvalidInput(where, "unknown item '" + j.at("item").get<std::string>() + "'");
          ItemText& t = ds.item_text[static_cast<size_t>(*id)];
          t.title = j.at("title").get<std::string>();
          t.description = j.at("description").get<std::string>();
          t.brand = j.at("brand").get<std::string>();
          t.categories = j.at("categories").get<std::vector<std::string>>();
          ds.has_item_text[static_cast<size_t>(*id)] = 1;
        } catch (const nlohmann::json::exception& e) {
          throw InvalidInput(where, e.what());
        }
      }
    }
  }
  return ds;
}

}  // namespace genrec
