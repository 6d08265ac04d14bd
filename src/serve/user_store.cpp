// UserStore: durable per-user event log on RocksDB (see user_store.h for the layout).
#include "genrec/serve/user_store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <system_error>
#include <unordered_map>

#include "genrec/core/error.h"

namespace genrec::serve {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormatKey = "m/format";
constexpr const char* kFormatValue = "genrec-user-store 1";
constexpr const char* kEventPrefix = "e/";
constexpr size_t kSeqBytes = 8;
constexpr unsigned char kEventFormat = 1;  // first byte of every encoded event

// A user id as it appears in messages: printable ASCII kept, other bytes as \xNN.
std::string quote_user(const std::string& user) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  for (unsigned char c : user) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out + "'";
}

// "e/" + user + '\0': the prefix of all keys of one user.
std::string user_prefix(const std::string& user) {
  std::string k = kEventPrefix;
  k += user;
  k += '\0';
  return k;
}

std::string event_key(const std::string& user, uint64_t seq) {
  std::string k = user_prefix(user);
  for (int shift = 56; shift >= 0; shift -= 8) k += static_cast<char>((seq >> shift) & 0xff);
  return k;
}

uint64_t decode_seq(const char* p) {
  uint64_t seq = 0;
  for (size_t i = 0; i < kSeqBytes; ++i) seq = (seq << 8) | static_cast<unsigned char>(p[i]);
  return seq;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

bool get_varint(const char*& p, const char* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift <= 63 && p < end; shift += 7) {
    const unsigned char b = static_cast<unsigned char>(*p++);
    if (shift == 63 && b > 1) return false;  // more than 64 bits
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Event value: format byte, zigzag varint timestamp, varint length + item, varint length +
// action.
std::string encode_event(const StoredEvent& e) {
  std::string out;
  out.reserve(3 + 10 + e.item.size() + e.action.size());
  out += static_cast<char>(kEventFormat);
  const uint64_t ts = static_cast<uint64_t>(e.timestamp);
  put_varint(out, (ts << 1) ^ static_cast<uint64_t>(e.timestamp >> 63));
  put_varint(out, e.item.size());
  out += e.item;
  put_varint(out, e.action.size());
  out += e.action;
  return out;
}

// Decodes one value; returns an empty string on success, else what is wrong with it.
std::string decode_event(const rocksdb::Slice& value, StoredEvent& e) {
  const char* p = value.data();
  const char* end = p + value.size();
  if (p == end) return "empty value";
  if (static_cast<unsigned char>(*p) != kEventFormat)
    return "unknown event format " + std::to_string(static_cast<unsigned char>(*p));
  ++p;
  uint64_t zz = 0;
  if (!get_varint(p, end, zz)) return "truncated timestamp";
  e.timestamp = static_cast<int64_t>(zz >> 1) ^ -static_cast<int64_t>(zz & 1);
  uint64_t n = 0;
  if (!get_varint(p, end, n) || n > static_cast<uint64_t>(end - p)) return "truncated item";
  e.item.assign(p, n);
  p += n;
  if (!get_varint(p, end, n) || n > static_cast<uint64_t>(end - p)) return "truncated action";
  e.action.assign(p, n);
  p += n;
  if (p != end) return std::to_string(end - p) + " trailing bytes";
  if (e.item.empty()) return "empty item id";
  return "";
}

bool starts_with(const rocksdb::Slice& s, const std::string& prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

// Names RocksDB itself puts into a database directory (a database whose creation was cut short
// may hold some of these and no CURRENT yet).
bool is_rocksdb_file(const std::string& name) {
  auto ends_with = [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  auto begins = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
  return name == "CURRENT" || name == "IDENTITY" || name == "LOCK" || name == "LOG" ||
         begins("LOG.old.") || begins("MANIFEST-") || begins("OPTIONS-") || ends_with(".log") ||
         ends_with(".sst") || ends_with(".blob") || ends_with(".dbtmp");
}

}  // namespace

struct UserStore::Impl {
  Options options;
  std::string where;  // "user store <path>" for messages
  std::unique_ptr<rocksdb::DB> db;
  std::mutex append_mutex;
  std::unordered_map<std::string, uint64_t> next_seq;  // guarded by append_mutex
  std::atomic<uint64_t> n_users{0};
  std::atomic<uint64_t> n_events{0};

  [[noreturn]] void io_error(const std::string& what, const rocksdb::Status& s) const {
    throw IOError(where + ": " + what + ": " + s.ToString());
  }
  [[noreturn]] void corrupt(const std::string& user, const std::string& what) const {
    throw InvalidInput(where + ": user " + quote_user(user) + ": corrupt stored event: " + what);
  }

  // A new database gets the format key; an existing one must hold it.
  void check_format() {
    std::string value;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), kFormatKey, &value);
    if (s.ok()) {
      if (value != kFormatValue)
        throw InvalidInput(where + " is not a genrec user store (format key holds '" + value +
                           "', expected '" + kFormatValue + "')");
      return;
    }
    if (!s.IsNotFound()) io_error("reading the format key", s);
    // No format key: a new database (or one whose creation was cut short) is empty; a database
    // holding anything else is not ours.
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (!it->status().ok()) io_error("reading", it->status());
    if (it->Valid())
      throw InvalidInput(where + " is not a genrec user store (a RocksDB database without the '" +
                         kFormatKey + "' key)");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = db->Put(wo, kFormatKey, kFormatValue);
    if (!s.ok()) io_error("writing the format key", s);
  }

  // One forward seek per user to its first event, one reverse seek to its last.
  void count_events() {
    const std::string lo = kEventPrefix;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    uint64_t events = 0;
    it->Seek(lo);
    while (it->Valid() && starts_with(it->key(), lo)) {
      const rocksdb::Slice key = it->key();
      const char* begin = key.data() + lo.size();
      const char* sep = static_cast<const char*>(std::memchr(begin, '\0', key.data() + key.size() - begin));
      if (!sep) throw InvalidInput(where + ": corrupt event key without a user separator");
      const std::string user(begin, sep);
      const std::string prefix = user_prefix(user);
      if (key.size() != prefix.size() + kSeqBytes) corrupt(user, "bad key length");
      const uint64_t first = decode_seq(key.data() + prefix.size());
      if (first != 0) corrupt(user, "first sequence number is " + std::to_string(first) + ", not 0");
      it->SeekForPrev(prefix + std::string(kSeqBytes, '\xff'));
      if (!it->Valid() || !starts_with(it->key(), prefix) ||
          it->key().size() != prefix.size() + kSeqBytes)
        corrupt(user, "bad last key");
      const uint64_t last = decode_seq(it->key().data() + prefix.size());
      next_seq.emplace(user, last + 1);
      events += last + 1;
      std::string after = kEventPrefix;  // first key past this user's range
      after += user;
      after += '\x01';
      it->Seek(after);
    }
    if (!it->status().ok()) io_error("counting stored events", it->status());
    n_users = next_seq.size();
    n_events = events;
  }
};

UserStore::UserStore(const Options& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = options;
  m.where = "user store " + options.path.string();
  if (options.path.empty()) throw InvalidInput("user store: empty path");

  std::error_code ec;
  const bool exists = fs::exists(options.path, ec);
  if (!exists) {
    const fs::path parent = options.path.parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec) throw IOError(m.where + ": cannot create " + parent.string() + ": " + ec.message());
  } else if (fs::is_directory(options.path, ec) && !fs::exists(options.path / "CURRENT", ec)) {
    // RocksDB would create a database in any directory without one; refuse one that holds
    // other files (a mistyped path), so the store never scribbles over foreign data.
    for (const auto& entry : fs::directory_iterator(options.path, ec)) {
      const std::string name = entry.path().filename().string();
      if (!is_rocksdb_file(name))
        throw InvalidInput(m.where + " is not a genrec user store (the directory holds '" + name +
                           "' and no RocksDB database)");
    }
    if (ec) throw IOError(m.where + ": cannot list the directory: " + ec.message());
  }

  rocksdb::Options ro;
  ro.create_if_missing = true;
  ro.keep_log_file_num = 3;
  ro.max_manifest_file_size = 64 << 20;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(ro, options.path.string(), &raw);
  if (!s.ok()) throw IOError("cannot open " + m.where + ": " + s.ToString());
  m.db.reset(raw);

  m.check_format();
  m.count_events();
}

UserStore::~UserStore() {
  if (impl_ && impl_->db) {
    impl_->db->Close().PermitUncheckedError();
    impl_->db.reset();
  }
}

void UserStore::append(const std::vector<std::pair<std::string, StoredEvent>>& events) {
  Impl& m = *impl_;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& [user, ev] = events[i];
    const std::string at = m.where + ": event " + std::to_string(i) + ": ";
    if (user.empty()) throw InvalidInput(at + "empty user id");
    if (user.find('\0') != std::string::npos)
      throw InvalidInput(at + "user id " + quote_user(user) + " contains a NUL byte");
    if (ev.item.empty()) throw InvalidInput(at + "user " + quote_user(user) + ": empty item id");
  }
  if (events.empty()) return;

  std::lock_guard<std::mutex> lock(m.append_mutex);
  // Sequence numbers are assigned on a copy, so a failed write leaves the counters as they were.
  std::unordered_map<std::string, uint64_t> assigned;
  rocksdb::WriteBatch batch;
  for (const auto& [user, ev] : events) {
    auto it = assigned.find(user);
    if (it == assigned.end()) {
      auto known = m.next_seq.find(user);
      it = assigned.emplace(user, known == m.next_seq.end() ? 0 : known->second).first;
    }
    rocksdb::Status s = batch.Put(event_key(user, it->second++), encode_event(ev));
    if (!s.ok()) m.io_error("building the write batch", s);
  }
  rocksdb::WriteOptions wo;
  wo.sync = m.options.sync;
  rocksdb::Status s = m.db->Write(wo, &batch);
  if (!s.ok()) m.io_error("appending " + std::to_string(events.size()) + " events", s);

  uint64_t new_users = 0;
  for (const auto& [user, next] : assigned) {
    auto [it, inserted] = m.next_seq.emplace(user, next);
    if (inserted) ++new_users;
    else it->second = next;
  }
  m.n_users += new_users;
  m.n_events += events.size();
}

std::vector<StoredEvent> UserStore::events(const std::string& user) const {
  const Impl& m = *impl_;
  std::vector<StoredEvent> out;
  if (user.empty() || user.find('\0') != std::string::npos) return out;  // never stored
  const std::string prefix = user_prefix(user);
  std::string upper = kEventPrefix;
  upper += user;
  upper += '\x01';
  const rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(m.db->NewIterator(ro));
  uint64_t expect = 0;
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    if (key.size() != prefix.size() + kSeqBytes || !starts_with(key, prefix))
      m.corrupt(user, "bad key length");
    const uint64_t seq = decode_seq(key.data() + prefix.size());
    if (seq != expect)
      m.corrupt(user, "sequence number " + std::to_string(seq) + " where " +
                          std::to_string(expect) + " was expected");
    ++expect;
    StoredEvent e;
    const std::string why = decode_event(it->value(), e);
    if (!why.empty()) m.corrupt(user, "event " + std::to_string(seq) + ": " + why);
    out.push_back(std::move(e));
  }
  if (!it->status().ok()) m.io_error("reading events of user " + quote_user(user), it->status());
  return out;
}

uint64_t UserStore::n_users() const { return impl_->n_users.load(); }
uint64_t UserStore::n_events() const { return impl_->n_events.load(); }
const std::filesystem::path& UserStore::path() const { return impl_->options.path; }

}  // namespace genrec::serve
