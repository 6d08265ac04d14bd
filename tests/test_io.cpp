#include <gtest/gtest.h>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/progress.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::TempDir;

TEST(Io, Crc32MatchesKnownValue) {
  // The standard check value of CRC-32 (IEEE) for "123456789".
  EXPECT_EQ(crc32_of("123456789"), 0xCBF43926u);
  EXPECT_EQ(crc32_hex(0xCBF43926u), "cbf43926");
  EXPECT_EQ(crc32_of(""), 0u);
}

TEST(Io, Utf8Validation) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9"), std::string_view::npos);      // é
  EXPECT_EQ(find_invalid_utf8("\xF0\x9F\x98\x80"), std::string_view::npos);  // emoji
  EXPECT_EQ(find_invalid_utf8("ab\xE9z"), 2u);        // Latin-1 byte
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);       // overlong
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);  // surrogate
  EXPECT_EQ(find_invalid_utf8("abc\xE2\x82"), 3u);    // truncated sequence
}

TEST(Io, Latin1ToUtf8) {
  EXPECT_EQ(latin1_to_utf8("Caf\xE9"), "Caf\xC3\xA9");
  EXPECT_EQ(latin1_to_utf8("abc"), "abc");
  EXPECT_EQ(find_invalid_utf8(latin1_to_utf8(std::string("\x80\xFF\xA0", 3))), std::string_view::npos);
}

TEST(Io, LineOfOffsetAndLineReader) {
  std::string text = "a\nbb\r\n\nccc";
  EXPECT_EQ(line_of_offset(text, 0), 1);
  EXPECT_EQ(line_of_offset(text, 2), 2);
  EXPECT_EQ(line_of_offset(text, 7), 4);
  LineReader r(text);
  std::string_view line;
  std::vector<std::string> lines;
  while (r.next(line)) lines.emplace_back(line);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1], "bb");  // '\r' stripped
  EXPECT_EQ(lines[2], "");
  EXPECT_EQ(lines[3], "ccc");
  EXPECT_EQ(r.line_number(), 4);
}

TEST(Io, ReadFileErrorsNameTheFile) {
  TempDir tmp;
  EXPECT_INVALID(read_file(tmp / "missing.txt"), "missing.txt", "not found");
  EXPECT_THROW(read_file(tmp.path()), InvalidInput);  // a directory
}

TEST(Io, AtomicWriteReplacesAndLeavesNoTemporaries) {
  TempDir tmp;
  write_file_atomic(tmp / "f.txt", "one");
  write_file_atomic(tmp / "f.txt", "two");
  EXPECT_EQ(read_file(tmp / "f.txt"), "two");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(tmp.path())) ++n, (void)e;
  EXPECT_EQ(n, 1);
  EXPECT_THROW(write_file_atomic(tmp / "no_such_dir" / "f.txt", "x"), IOError);
}

TEST(Io, StagingDirCommitsOrLeavesNothing) {
  TempDir tmp;
  {
    StagingDir stage(tmp / "out", false);
    write_file_atomic(stage.path() / "a", "1");
    // destroyed without commit
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "out"));
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(tmp.path())) ++n, (void)e;
  EXPECT_EQ(n, 0) << "temporary directory left behind";
  {
    StagingDir stage(tmp / "out", false);
    write_file_atomic(stage.path() / "a", "1");
    stage.commit();
  }
  EXPECT_EQ(read_file(tmp / "out" / "a"), "1");
  EXPECT_THROW(StagingDir(tmp / "out", false), InvalidInput);
  {
    StagingDir stage(tmp / "out", true);
    write_file_atomic(stage.path() / "b", "2");
    stage.commit();
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "out" / "a"));
  EXPECT_EQ(read_file(tmp / "out" / "b"), "2");
}

TEST(Io, ErrorMessagesAndStages) {
  InvalidInput e(SourceLocation{"f.csv", 3, "item_id"}, "bad");
  EXPECT_STREQ(e.what(), "f.csv:3: field item_id: bad");
  EXPECT_EQ(e.where().line, 3);
  try {
    try {
      throw InvalidInput("inner");
    } catch (...) {
      rethrow_with_stage("loading");
    }
  } catch (const InvalidInput& e2) {
    EXPECT_STREQ(e2.what(), "loading: inner");
  }
}

TEST(Progress, ReportsRateEtaAndCancels) {
  std::vector<ProgressEvent> events;
  ProgressTracker t("work", 10, "items", [&](const ProgressEvent& e) {
    events.push_back(e);
    return true;
  }, 0.0);
  t.advance(4);
  t.advance(6);
  t.finish();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().done, 4);
  EXPECT_EQ(events.back().done, 10);
  EXPECT_TRUE(events.back().finished);
  EXPECT_EQ(events.back().stage, "work");

  ProgressTracker c("cancel me", 10, "items", [](const ProgressEvent&) { return false; }, 0.0);
  EXPECT_THROW(c.advance(1), Cancelled);
}
