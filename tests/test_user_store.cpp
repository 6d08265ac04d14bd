// UserStore: round trips, persistence, validation, foreign directories, concurrency and
// durability across kill -9.
#include <gtest/gtest.h>
#include <poll.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "genrec/core/error.h"
#include "genrec/serve/user_store.h"
#include "test_util.h"

namespace genrec::serve {
namespace {

using test::TempDir;
using Batch = std::vector<std::pair<std::string, StoredEvent>>;

UserStore::Options opts(const std::filesystem::path& p, bool sync = true) {
  UserStore::Options o;
  o.path = p;
  o.sync = sync;
  return o;
}

std::string crash_item(int i) { return "i" + std::to_string(i); }
std::string crash_user(int i) { return "u" + std::to_string(i % 3); }

// Writes raw key/values into a fresh RocksDB database at `path`.
void write_raw(const std::filesystem::path& path,
               const std::vector<std::pair<std::string, std::string>>& kv) {
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(o, path.string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  for (const auto& [k, v] : kv) ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), k, v).ok());
  ASSERT_TRUE(db->Close().ok());
}

// Runs first, before any test of this file has started a thread: a forked child appends
// events one call at a time and acknowledges each through a pipe; the parent kills it with
// SIGKILL part-way and checks that every acknowledged event is in the reopened store, in order.
TEST(UserStoreCrash, AcknowledgedEventsSurviveKill9) {
  TempDir tmp;
  const auto path = tmp / "store";
  const int kTotal = 1000000;  // far more than the child gets through before it is killed
  const int kKillAfter = 40;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    try {
      UserStore store(opts(path));
      for (int i = 0; i < kTotal; ++i) {
        store.append({{crash_user(i), StoredEvent{crash_item(i), i, i % 2 ? "click" : ""}}});
        const char ack = 'a';
        if (write(fds[1], &ack, 1) != 1) _exit(4);  // the parent is gone
      }
      _exit(0);
    } catch (...) {
      _exit(3);
    }
  }
  close(fds[1]);
  // Kills and reaps the child on every way out of this test.
  struct Reaper {
    pid_t pid;
    int status = 0;
    bool reaped = false;
    void reap() {
      if (reaped) return;
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      reaped = true;
    }
    ~Reaper() { reap(); }
  } reaper{pid};

  int acked = 0;
  bool killed = false;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int r = poll(&p, 1, 60000);
    if (r < 0 && errno == EINTR) continue;
    ASSERT_EQ(r, 1) << "the child stopped acknowledging (after " << acked << " events)";
    char buf[256];
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GE(n, 0);
    if (n == 0) break;  // EOF: the child is dead; every acknowledgement has been read
    acked += static_cast<int>(n);
    if (!killed && acked >= kKillAfter) {
      ASSERT_EQ(kill(pid, SIGKILL), 0);
      killed = true;
    }
  }
  close(fds[0]);
  reaper.reap();
  ASSERT_TRUE(WIFSIGNALED(reaper.status) && WTERMSIG(reaper.status) == SIGKILL)
      << "child exit status " << reaper.status;
  ASSERT_GE(acked, kKillAfter);

  UserStore store(opts(path));
  // At most one append (the one in flight when the child died) may be stored unacknowledged.
  const int stored = static_cast<int>(store.n_events());
  EXPECT_GE(stored, acked);
  EXPECT_LE(stored, acked + 1);
  EXPECT_EQ(store.n_users(), 3u);
  std::vector<int> next = {0, 1, 2};
  for (int u = 0; u < 3; ++u) {
    const auto ev = store.events("u" + std::to_string(u));
    for (const auto& e : ev) {
      ASSERT_EQ(e.item, crash_item(next[u])) << "user u" << u;
      EXPECT_EQ(e.timestamp, next[u]);
      EXPECT_EQ(e.action, next[u] % 2 ? "click" : "");
      next[u] += 3;
    }
  }
  for (int u = 0; u < 3; ++u) EXPECT_GE(next[u], stored) << "user u" << u << " misses events";

  // Appending continues the sequences after the recovered events.
  store.append({{"u0", StoredEvent{"after", 1, ""}}});
  EXPECT_EQ(store.events("u0").back().item, "after");
  EXPECT_EQ(store.n_events(), static_cast<uint64_t>(stored) + 1);
}

TEST(UserStore, RoundTripSeveralUsersInOrder) {
  TempDir tmp;
  UserStore store(opts(tmp / "store"));
  EXPECT_EQ(store.path(), tmp / "store");
  EXPECT_EQ(store.n_users(), 0u);
  EXPECT_EQ(store.n_events(), 0u);
  EXPECT_TRUE(store.events("u1").empty());

  store.append({{"u1", StoredEvent{"a", 10, "click"}}});
  store.append({{"u2", StoredEvent{"b", 5, ""}}});
  store.append({{"u1", StoredEvent{"c", 3, "buy"}}});  // arrival order, not time order
  // Users whose ids are prefixes of one another keep separate ranges.
  store.append({{"u", StoredEvent{"d", 1, ""}}, {"u1x", StoredEvent{"e", 2, ""}}});

  EXPECT_EQ(store.events("u1"),
            (std::vector<StoredEvent>{{"a", 10, "click"}, {"c", 3, "buy"}}));
  EXPECT_EQ(store.events("u2"), (std::vector<StoredEvent>{{"b", 5, ""}}));
  EXPECT_EQ(store.events("u"), (std::vector<StoredEvent>{{"d", 1, ""}}));
  EXPECT_EQ(store.events("u1x"), (std::vector<StoredEvent>{{"e", 2, ""}}));
  EXPECT_TRUE(store.events("u3").empty());
  EXPECT_TRUE(store.events("").empty());
  EXPECT_EQ(store.n_users(), 4u);
  EXPECT_EQ(store.n_events(), 5u);
}

TEST(UserStore, PersistsAcrossReopenWithCounts) {
  TempDir tmp;
  const auto path = tmp / "nested" / "store";  // missing parents are created
  {
    UserStore store(opts(path));
    for (int i = 0; i < 300; ++i)
      store.append({{"user" + std::to_string(i % 7), StoredEvent{"it" + std::to_string(i), i, ""}}});
  }
  {
    UserStore store(opts(path));
    EXPECT_EQ(store.n_users(), 7u);
    EXPECT_EQ(store.n_events(), 300u);
    const auto ev = store.events("user3");
    ASSERT_EQ(ev.size(), 43u);
    for (size_t k = 0; k < ev.size(); ++k) EXPECT_EQ(ev[k].timestamp, static_cast<int64_t>(3 + 7 * k));
    // New events go after the old ones; a new user is counted once.
    store.append({{"user3", StoredEvent{"new", 1000, "x"}}, {"fresh", StoredEvent{"n", 1, ""}}});
    EXPECT_EQ(store.n_users(), 8u);
    EXPECT_EQ(store.n_events(), 302u);
  }
  UserStore store(opts(path));
  EXPECT_EQ(store.n_users(), 8u);
  EXPECT_EQ(store.n_events(), 302u);
  const auto ev = store.events("user3");
  ASSERT_EQ(ev.size(), 44u);
  EXPECT_EQ(ev.back(), (StoredEvent{"new", 1000, "x"}));
}

TEST(UserStore, BatchOfMixedUsersAndUnusualValues) {
  TempDir tmp;
  UserStore store(opts(tmp / "store", /*sync=*/false));
  const std::string binary_user = std::string("\x01\xff", 2) + "é";
  const std::string long_item(100000, 'x');
  store.append({
      {"a", StoredEvent{"1", -5, ""}},
      {"b", StoredEvent{"2", INT64_MIN, "view"}},
      {"a", StoredEvent{"3", INT64_MAX, std::string("\0act", 4)}},
      {binary_user, StoredEvent{long_item, 0, ""}},
      {"b", StoredEvent{"4", 1700000000, "click"}},
      {"a", StoredEvent{"1", -5, ""}},  // duplicates are stored as given
  });
  EXPECT_EQ(store.events("a"), (std::vector<StoredEvent>{{"1", -5, ""},
                                                         {"3", INT64_MAX, std::string("\0act", 4)},
                                                         {"1", -5, ""}}));
  EXPECT_EQ(store.events("b"),
            (std::vector<StoredEvent>{{"2", INT64_MIN, "view"}, {"4", 1700000000, "click"}}));
  EXPECT_EQ(store.events(binary_user), (std::vector<StoredEvent>{{long_item, 0, ""}}));
  EXPECT_EQ(store.n_users(), 3u);
  EXPECT_EQ(store.n_events(), 6u);
  store.append({});  // no-op
  EXPECT_EQ(store.n_events(), 6u);
}

TEST(UserStore, InvalidEventsRejectedAndNothingStored) {
  TempDir tmp;
  UserStore store(opts(tmp / "store"));
  store.append({{"u", StoredEvent{"a", 1, ""}}});
  EXPECT_THROW(store.append({{"u", StoredEvent{"b", 2, ""}}, {"v", StoredEvent{"", 3, ""}}}),
               InvalidInput);
  EXPECT_THROW(store.append({{"u", StoredEvent{"b", 2, ""}}, {"", StoredEvent{"c", 3, ""}}}),
               InvalidInput);
  EXPECT_INVALID(store.append({{"v", StoredEvent{"x", 1, ""}}, {"w", StoredEvent{"", 1, ""}}}), "empty item");
  EXPECT_EQ(store.events("u"), (std::vector<StoredEvent>{{"a", 1, ""}}));
  EXPECT_TRUE(store.events("v").empty());
  EXPECT_EQ(store.n_users(), 1u);
  EXPECT_EQ(store.n_events(), 1u);
}

TEST(UserStore, UserWithNulByteRejected) {
  TempDir tmp;
  UserStore store(opts(tmp / "store"));
  const std::string nul_user("u\0x", 3);
  EXPECT_THROW(store.append({{"ok", StoredEvent{"a", 1, ""}}, {nul_user, StoredEvent{"b", 1, ""}}}),
               InvalidInput);
  EXPECT_EQ(store.n_events(), 0u);
  EXPECT_TRUE(store.events(nul_user).empty());
  EXPECT_TRUE(store.events("ok").empty());
  store.append({{"u", StoredEvent{"a", 1, ""}}});
  EXPECT_TRUE(store.events(nul_user).empty());  // not confused with user "u"
}

TEST(UserStore, NotAStoreDirectoryRejected) {
  TempDir tmp;
  // A directory with other files: refused, nothing written into it.
  const auto foreign = tmp / "run";
  test::write_text(foreign / "manifest.json", "{}");
  EXPECT_INVALID(UserStore(opts(foreign)), foreign.string());
  EXPECT_FALSE(std::filesystem::exists(foreign / "CURRENT"));

  // A RocksDB database of someone else, or of another format version.
  write_raw(tmp / "other_db", {{"key", "value"}});
  EXPECT_THROW(UserStore(opts(tmp / "other_db")), InvalidInput);
  write_raw(tmp / "future", {{"m/format", "genrec-user-store 2"}});
  EXPECT_INVALID(UserStore(opts(tmp / "future")), "is not a genrec user store");

  // What RocksDB cannot open at all: IOError naming the path.
  test::write_text(tmp / "bad" / "CURRENT", "garbage\n");
  try {
    UserStore store(opts(tmp / "bad"));
    FAIL() << "expected IOError";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find((tmp / "bad").string()), std::string::npos) << e.what();
  }
  test::write_text(tmp / "file", "not a directory");
  EXPECT_THROW(UserStore(opts(tmp / "file")), IOError);
}

TEST(UserStore, CorruptValueThrowsInvalidInputNamingPathAndUser) {
  TempDir tmp;
  const auto path = tmp / "store";
  {
    UserStore store(opts(path));
    store.append({{"alice", StoredEvent{"a", 1, ""}}});
  }
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), path.string(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    const std::string key = std::string("e/alice\0", 8) + std::string(7, '\0') + '\1';
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, std::string("\x01\x02\x05" "ab", 5)).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  UserStore store(opts(path));
  EXPECT_EQ(store.n_events(), 2u);
  EXPECT_INVALID(store.events("alice"), path.string(), "alice");
}

TEST(UserStore, SecondOpenOfSamePathFailsOnLock) {
  TempDir tmp;
  UserStore first(opts(tmp / "store"));
  try {
    UserStore second(opts(tmp / "store"));
    FAIL() << "expected IOError";
  } catch (const IOError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("LOCK"), std::string::npos) << what;
    EXPECT_NE(what.find((tmp / "store").string()), std::string::npos) << what;
  }
  first.append({{"u", StoredEvent{"a", 1, ""}}});  // the first store is unaffected
  EXPECT_EQ(first.events("u").size(), 1u);
}

TEST(UserStore, ConcurrentAppendsAllPresentOnceInOrder) {
  TempDir tmp;
  UserStore store(opts(tmp / "store"));
  const int kThreads = 4, kAppends = 50;
  std::atomic<bool> done{false};
  std::atomic<bool> reader_saw_gap{false};
  // A reader alongside: every read of the shared user holds each thread's events 0, 1, ... k.
  std::thread reader([&] {
    while (!done) {
      std::vector<int> seen(kThreads, 0);
      for (const auto& e : store.events("shared"))
        if (e.timestamp != seen[e.action[1] - '0']++) reader_saw_gap = true;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      const std::string own = "t" + std::to_string(t);
      for (int k = 0; k < kAppends; ++k) {
        const std::string item = own + "-" + std::to_string(k);
        store.append({{"shared", StoredEvent{item, k, own}}, {own, StoredEvent{item, k, ""}}});
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_FALSE(reader_saw_gap);

  EXPECT_EQ(store.n_users(), static_cast<uint64_t>(kThreads + 1));
  EXPECT_EQ(store.n_events(), static_cast<uint64_t>(2 * kThreads * kAppends));
  std::vector<int> next(kThreads, 0);
  const auto shared = store.events("shared");
  ASSERT_EQ(shared.size(), static_cast<size_t>(kThreads * kAppends));
  for (const auto& e : shared) {
    const int t = e.action[1] - '0';
    ASSERT_EQ(e.timestamp, next[t]) << "thread " << t << " out of order or duplicated";
    ++next[t];
  }
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(next[t], kAppends);
    const auto own = store.events("t" + std::to_string(t));
    ASSERT_EQ(own.size(), static_cast<size_t>(kAppends));
    for (int k = 0; k < kAppends; ++k) EXPECT_EQ(own[k].timestamp, k);
  }
}

}  // namespace
}  // namespace genrec::serve
