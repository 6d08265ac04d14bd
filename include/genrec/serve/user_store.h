// Durable per-user event log for serving (RocksDB), torch-free.
//
// The server keeps, for every user it has seen events for, the events that arrived online
// (POST /v1/events); the dataset of the served run holds the offline history. A user's serving
// history is the dataset history followed by the stored events, in arrival order.
//
// Durability: append() returns only after the events are in RocksDB's write-ahead log with
// fsync (WriteOptions::sync), all events of one call in one atomic WriteBatch, so an event
// that was acknowledged survives a crash or `kill -9` of the server. Appends from concurrent
// threads are serialised; reads may run concurrently with them.
//
// On-disk layout (one RocksDB database in a directory):
//   key "m/format"                       -> "genrec-user-store 1"
//   key "e/" + user + '\0' + seq (8 bytes big-endian)  -> one encoded event
// so a user's events are one prefix range in arrival order (user ids may hold any byte but
// '\0'); seq runs 0, 1, 2, ... per user. On open, one forward seek per user to its first key and
// one reverse seek to its last give the user's next sequence number and event count (cached in
// memory afterwards), so opening costs O(users), not O(events).
// An encoded event is: format byte 1, timestamp (zigzag varint), item (varint length + bytes),
// action (varint length + bytes). A value that does not decode throws InvalidInput naming the
// store path and the user.
//
// Example:
//   UserStore store(UserStore::Options{std::filesystem::path("run/serve_state")});
//   store.append({{"u1", StoredEvent{"item42", 1700000000, "click"}}});
//   std::vector<StoredEvent> ev = store.events("u1");
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace genrec::serve {

struct StoredEvent {
  std::string item;        // raw item id
  int64_t timestamp = 0;   // seconds
  std::string action;      // free-form action name ("" = none)
  bool operator==(const StoredEvent& o) const {
    return item == o.item && timestamp == o.timestamp && action == o.action;
  }
};

class UserStore {
 public:
  struct Options {
    std::filesystem::path path;  // database directory (created when missing)
    bool sync = true;            // fsync the WAL on every append (false only for benchmarks)
  };
  // Opens or creates the database. Throws IOError naming the path when RocksDB cannot open it
  // (e.g. locked by another UserStore of this or another process: the message names LOCK, or a
  // damaged database), InvalidInput when it is not a genrec user store: a RocksDB database
  // without the format key or with another format, or an existing directory that holds other
  // files and no database (never written into).
  explicit UserStore(const Options& options);
  ~UserStore();
  UserStore(const UserStore&) = delete;
  UserStore& operator=(const UserStore&) = delete;

  // Appends events (user raw id, event) atomically and durably, in the given order.
  // Throws InvalidInput for an empty user or item id or a user id containing '\0' (checked for
  // every event before anything is written); IOError when the write fails.
  void append(const std::vector<std::pair<std::string, StoredEvent>>& events);
  // The stored events of one user, oldest first (empty for an unknown user). Safe to call
  // concurrently with append(); sees each append whole or not at all.
  std::vector<StoredEvent> events(const std::string& user) const;
  // Number of users with stored events and of stored events (kept in memory, O(1)).
  uint64_t n_users() const;
  uint64_t n_events() const;
  const std::filesystem::path& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace genrec::serve
