// Tests of the interaction log readers (read_interactions and helpers) and item side information
// readers (read_item_info).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "genrec/core/error.h"
#include "genrec/data/import.h"
#include "test_expect.h"

namespace fs = std::filesystem;
using genrec::IdKind;
using genrec::InvalidInput;
using genrec::RawLog;
using genrec::ReaderOptions;
using genrec::SideInfo;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("genrec_readers_") + (info ? info->test_suite_name() : "x") + "_" +
                       (info ? info->name() : "y") + "_" + std::to_string(::getpid()) + "_" +
                       std::to_string(counter++);
    path_ = fs::temp_directory_path() / name;
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path write(const std::string& name, const std::string& content) const {
    fs::path p = path_ / name;
    std::ofstream out(p, std::ios::binary);
    out << content;
    return p;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

ReaderOptions opts(const std::string& format) {
  ReaderOptions o;
  o.format = format;
  o.ids = genrec::default_id_kind(format);
  return o;
}

// Rows as "user item" strings in log order.
std::vector<std::string> rows(const RawLog& log) {
  std::vector<std::string> out;
  for (int64_t r = 0; r < log.n_rows(); ++r)
    out.push_back(log.users.raw(log.row_user[r]) + " " + log.items.raw(log.row_item[r]));
  return out;
}

std::vector<std::string> actions(const RawLog& log) {
  std::vector<std::string> out;
  for (int32_t a : log.row_action) out.push_back(log.actions.raw(a));
  return out;
}

using genrec::test::invalid_message;

RawLog read(const fs::path& p, const ReaderOptions& o) {
  RawLog log;
  genrec::read_interactions(p, o, log);
  return log;
}

std::string read_error(const fs::path& p, const ReaderOptions& o) {
  return invalid_message([&] { read(p, o); });
}

const char* kNumericReason = " is not a non-negative integer (ids are declared numeric; use --ids string)";

// The shared public data folder, or empty when absent.
fs::path shared_data_dir() {
  if (const char* env = std::getenv("GENREC_SHARED_DATA"); env && *env) {
    if (fs::is_directory(env)) return env;
  }
#ifdef GENREC_SOURCE_DIR
  {
    fs::path p = fs::path(GENREC_SOURCE_DIR "/../shared/data");
    if (fs::is_directory(p)) return p;
  }
#endif
  std::error_code ec;
  for (fs::path d = fs::current_path(ec); !d.empty(); d = d.parent_path()) {
    if (fs::is_directory(d / "shared" / "data")) return d / "shared" / "data";
    if (d == d.parent_path()) break;
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Helpers: ids, timestamps, formats

TEST(ReadersIds, DefaultKindsAndFormats) {
  EXPECT_EQ(genrec::default_id_kind("s3rec"), IdKind::Numeric);
  EXPECT_EQ(genrec::default_id_kind("sasrec"), IdKind::Numeric);
  EXPECT_EQ(genrec::default_id_kind("movielens"), IdKind::Numeric);
  EXPECT_EQ(genrec::default_id_kind("ml-100k"), IdKind::Numeric);
  EXPECT_EQ(genrec::default_id_kind("csv"), IdKind::String);
  EXPECT_EQ(genrec::default_id_kind("tsv"), IdKind::String);
  EXPECT_EQ(genrec::default_id_kind("jsonl"), IdKind::String);
  const std::vector<std::string> expected = {"s3rec", "sasrec", "movielens", "ml-100k", "csv", "tsv", "jsonl"};
  EXPECT_EQ(genrec::interaction_formats(), expected);
}

TEST(ReadersIds, CheckIdField) {
  genrec::SourceLocation at{"f.txt", 3, "item"};
  EXPECT_EQ(genrec::check_id_field("007", IdKind::Numeric, at), "7");
  EXPECT_EQ(genrec::check_id_field("0", IdKind::Numeric, at), "0");
  EXPECT_EQ(genrec::check_id_field("000", IdKind::Numeric, at), "0");
  EXPECT_EQ(genrec::check_id_field("120", IdKind::Numeric, at), "120");
  EXPECT_EQ(genrec::check_id_field("007", IdKind::String, at), "007");
  EXPECT_EQ(genrec::check_id_field("B00 x\xC3\xA9", IdKind::String, at), "B00 x\xC3\xA9");

  auto err = [&](std::string_view f, IdKind k) { return invalid_message([&] { genrec::check_id_field(f, k, at); }); };
  EXPECT_EQ(err("abc", IdKind::Numeric), std::string("f.txt:3: field item: 'abc'") + kNumericReason);
  EXPECT_EQ(err("-1", IdKind::Numeric), std::string("f.txt:3: field item: '-1'") + kNumericReason);
  EXPECT_EQ(err("1.5", IdKind::Numeric), std::string("f.txt:3: field item: '1.5'") + kNumericReason);
  EXPECT_EQ(err("", IdKind::String), "f.txt:3: field item: empty id");
  EXPECT_EQ(err("", IdKind::Numeric), "f.txt:3: field item: empty id");
  EXPECT_EQ(err("ab\xFFz", IdKind::String), "f.txt:3: field item: invalid UTF-8 at byte 2");
  EXPECT_EQ(err("\xC3", IdKind::Numeric), "f.txt:3: field item: invalid UTF-8 at byte 0");
  EXPECT_EQ(err("a\tb", IdKind::String), "f.txt:3: field item: id 'a\\tb' contains a tab or a line break");
  EXPECT_EQ(err("a\nb", IdKind::String), "f.txt:3: field item: id 'a\\nb' contains a tab or a line break");
  EXPECT_EQ(err("a\rb", IdKind::String), "f.txt:3: field item: id 'a\\rb' contains a tab or a line break");
}

TEST(ReadersTimestamp, ParsesEpochAndIso8601) {
  int64_t t = -1;
  EXPECT_TRUE(genrec::parse_timestamp("978300760", t));
  EXPECT_EQ(t, 978300760);
  EXPECT_TRUE(genrec::parse_timestamp("0", t));
  EXPECT_EQ(t, 0);
  EXPECT_TRUE(genrec::parse_timestamp("-86400", t));
  EXPECT_EQ(t, -86400);
  EXPECT_TRUE(genrec::parse_timestamp("1520164800.987", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("1.5e9", t));
  EXPECT_EQ(t, 1500000000);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04", t));
  EXPECT_EQ(t, 1520121600);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04T12:00:00", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04T12:00:00Z", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04 12:00:00", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04T12:00:00.750Z", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("2018-03-04T14:00:00+02:00", t));
  EXPECT_EQ(t, 1520164800);
  EXPECT_TRUE(genrec::parse_timestamp("1970-01-01T00:00:00Z", t));
  EXPECT_EQ(t, 0);
  EXPECT_TRUE(genrec::parse_timestamp("2000-02-29", t));
  EXPECT_EQ(t, 951782400);

  for (const char* bad : {"", "x", "12abc", "2018-13-01", "2018-02-30", "2019-02-29", "2018-03-04T25:00:00",
                          "2018-03-04T12", "2018/03/04", "nan", "inf", "1e400", "99999999999999999999",
                          "2018-03-04T12:00:00Q"}) {
    int64_t v = 42;
    EXPECT_FALSE(genrec::parse_timestamp(bad, v)) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Line formats

TEST(ReadersS3Rec, HappyPath) {
  TempDir dir;
  auto p = dir.write("Beauty.txt", "1 10 11 12\n2 11\n\n   \n003 010 7  \n");
  RawLog log = read(p, opts("s3rec"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 10", "1 11", "1 12", "2 11", "3 10", "3 7"}));
  EXPECT_EQ(log.users.size(), 3);
  EXPECT_EQ(log.items.size(), 4);
  EXPECT_FALSE(log.has_timestamps);
  EXPECT_FALSE(log.has_ratings);
  EXPECT_FALSE(log.has_actions);
  EXPECT_TRUE(log.row_timestamp.empty());
  EXPECT_TRUE(log.row_rating.empty());
  EXPECT_TRUE(log.row_action.empty());
  EXPECT_EQ(log.rows_skipped, 0);
}

TEST(ReadersS3Rec, Errors) {
  TempDir dir;
  auto p = dir.write("a.txt", "1 2 3\n2 4 abc 5\n");
  EXPECT_EQ(read_error(p, opts("s3rec")), p.string() + ":2: field item: 'abc'" + kNumericReason);
  auto q = dir.write("b.txt", "1 2 3\n\n7\n");
  EXPECT_EQ(read_error(q, opts("s3rec")), q.string() + ":3: expected a user and at least one item, found 1 field");
  auto r = dir.write("c.txt", "x1 2 3\n");
  EXPECT_EQ(read_error(r, opts("s3rec")), r.string() + ":1: field user: 'x1'" + kNumericReason);
  // With string ids the same file reads.
  ReaderOptions o = opts("s3rec");
  o.ids = IdKind::String;
  EXPECT_EQ(rows(read(r, o)), (std::vector<std::string>{"x1 2", "x1 3"}));
}

TEST(ReadersS3Rec, SkipBadRowsIsAllOrNothing) {
  TempDir dir;
  auto p = dir.write("a.txt", "1 2 3\n2 4 abc 5\n3 6\n4\n5 x\n");
  ReaderOptions o = opts("s3rec");
  o.skip_bad_rows = true;
  o.max_skip_examples = 2;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 2", "1 3", "3 6"}));
  EXPECT_EQ(log.rows_skipped, 3);
  ASSERT_EQ(log.skip_examples.size(), 2u);
  EXPECT_EQ(log.skip_examples[0], p.string() + ":2: field item: 'abc'" + kNumericReason);
  EXPECT_EQ(log.skip_examples[1], p.string() + ":4: expected a user and at least one item, found 1 field");
  // A skipped row leaves no trace: user 2 and items 4, 5 were never interned.
  EXPECT_FALSE(log.users.find("2").has_value());
  EXPECT_FALSE(log.items.find("4").has_value());
  EXPECT_FALSE(log.items.find("5").has_value());
}

TEST(ReadersSasrec, HappyPathAndFieldCount) {
  TempDir dir;
  auto p = dir.write("a.txt", "1 5\n1 6\r\n2\t5\n\n1 05\n");
  RawLog log = read(p, opts("sasrec"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 5", "1 6", "2 5", "1 5"}));
  EXPECT_EQ(log.items.size(), 2);
  EXPECT_FALSE(log.has_timestamps);

  auto q = dir.write("b.txt", "1 5\n1 6 7\n");
  EXPECT_EQ(read_error(q, opts("sasrec")), q.string() + ":2: expected 2 fields, found 3");
}

TEST(ReadersMovieLens, HappyPath) {
  TempDir dir;
  auto p = dir.write("ratings.dat", "1::1193::5::978300760\n1::661::3.5::978302109\n\n2::1193::4::978298413\n");
  RawLog log = read(p, opts("movielens"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 1193", "1 661", "2 1193"}));
  EXPECT_TRUE(log.has_timestamps);
  EXPECT_TRUE(log.has_ratings);
  EXPECT_FALSE(log.has_actions);
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{978300760, 978302109, 978298413}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{5.0f, 3.5f, 4.0f}));
  EXPECT_TRUE(log.row_action.empty());
}

TEST(ReadersMovieLens, Errors) {
  TempDir dir;
  auto p = dir.write("a.dat", "1::2::3::4\n1::2::3\n");
  EXPECT_EQ(read_error(p, opts("movielens")), p.string() + ":2: expected 4 fields, found 3");
  auto q = dir.write("b.dat", "1::2::3::4::5\n");
  EXPECT_EQ(read_error(q, opts("movielens")), q.string() + ":1: expected 4 fields, found 5");
  auto r = dir.write("c.dat", "1::2::3::4\n\n1::2::good::4\n");
  EXPECT_EQ(read_error(r, opts("movielens")), r.string() + ":3: field rating: 'good' is not a number");
  auto s = dir.write("d.dat", "1::2::nan::4\n");
  EXPECT_EQ(read_error(s, opts("movielens")), s.string() + ":1: field rating: 'nan' is not a number");
}

TEST(ReadersMl100k, HappyPath) {
  TempDir dir;
  auto p = dir.write("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n");
  RawLog log = read(p, opts("ml-100k"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"196 242", "186 302", "196 377"}));
  EXPECT_EQ(log.users.size(), 2);
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{881250949, 891717742, 878887116}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{3.0f, 3.0f, 1.0f}));
}

TEST(ReadersMl100k, Errors) {
  TempDir dir;
  auto p = dir.write("u.data", "196\t242\t3\t881250949\n186\t302\t3\tyesterday\n");
  EXPECT_EQ(read_error(p, opts("ml-100k")), p.string() + ":2: field timestamp: 'yesterday' is not a timestamp");
  auto q = dir.write("v.data", "196 242 3 881250949\n");
  EXPECT_EQ(read_error(q, opts("ml-100k")), q.string() + ":1: expected 4 fields, found 1");
  auto r = dir.write("w.data", "196\t242\tfive\t881250949\n");
  EXPECT_EQ(read_error(r, opts("ml-100k")), r.string() + ":1: field rating: 'five' is not a number");
}

// ---------------------------------------------------------------------------------------------
// CSV / TSV

TEST(ReadersCsv, HappyPathWithHeader) {
  TempDir dir;
  auto p = dir.write("log.csv",
                     "user_id,item_id,timestamp,rating,action\n"
                     "u1,B001,100,4.5,view\n"
                     "u2,B002,2018-03-04,1,buy\n"
                     "u1,B002,300.9,0,view\n");
  RawLog log = read(p, opts("csv"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u1 B001", "u2 B002", "u1 B002"}));
  EXPECT_TRUE(log.has_timestamps);
  EXPECT_TRUE(log.has_ratings);
  EXPECT_TRUE(log.has_actions);
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{100, 1520121600, 300}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{4.5f, 1.0f, 0.0f}));
  EXPECT_EQ(actions(log), (std::vector<std::string>{"view", "buy", "view"}));
  EXPECT_EQ(log.actions.size(), 2);
}

TEST(ReadersCsv, QuotingDelimiterDoubledQuotesAndNewlines) {
  TempDir dir;
  auto p = dir.write("q.csv",
                     "user_id,title,item_id\r\n"
                     "\"u,1\",\"A \"\"quoted\"\" title\",\"i1\"\r\n"
                     "u2,\"two\nline\ntitle\",\"i\"\"2\"\r\n"
                     "u3,\"\",i3\r\n"
                     "u4,plain,\"\"\r\n");
  // The last record has an empty item id; it starts on physical line 7 (the second record
  // spans lines 3-5).
  EXPECT_EQ(read_error(p, opts("csv")), p.string() + ":7: field item_id: empty id");

  ReaderOptions o = opts("csv");
  o.skip_bad_rows = true;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u,1 i1", "u2 i\"2", "u3 i3"}));
  EXPECT_EQ(log.rows_skipped, 1);
  EXPECT_FALSE(log.has_timestamps);
}

TEST(ReadersCsv, NewlineInsideIdIsRejected) {
  TempDir dir;
  auto p = dir.write("q.csv", "user_id,item_id\nu1,\"a\nb\"\nu2,c\n");
  EXPECT_EQ(read_error(p, opts("csv")), p.string() + ":2: field item_id: id 'a\\nb' contains a tab or a line break");
}

TEST(ReadersCsv, LineNumbersAfterMultiLineField) {
  TempDir dir;
  auto p = dir.write("m.csv",
                     "user_id,item_id,timestamp,note\n"
                     "a,1,10,\"x\ny\nz\"\n"
                     "b,2,20,\"\"\"\n\"\"\"\n"
                     "c,3,soon,n\n");
  EXPECT_EQ(read_error(p, opts("csv")), p.string() + ":7: field timestamp: 'soon' is not a timestamp");
}

TEST(ReadersCsv, ExplicitColumnNames) {
  TempDir dir;
  auto p = dir.write("e.csv", "when,iid,score,uid,kind\n5,x,2,A,click\n6,y,3,B,cart\n");
  ReaderOptions o = opts("csv");
  o.user_col = "uid";
  o.item_col = "iid";
  o.time_col = "when";
  o.explicit_time_col = true;
  o.rating_col = "score";
  o.explicit_rating_col = true;
  o.action_col = "kind";
  o.explicit_action_col = true;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"A x", "B y"}));
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{2.0f, 3.0f}));
  EXPECT_EQ(actions(log), (std::vector<std::string>{"click", "cart"}));
}

TEST(ReadersCsv, NoHeaderNumericColumns) {
  TempDir dir;
  auto p = dir.write("n.csv", "10,u1,1000,3\n11,u2,1001,4\n10,u2,1002,5\n");
  ReaderOptions o = opts("csv");
  o.header = false;
  o.user_col = "2";
  o.item_col = "1";
  o.time_col = "3";
  o.explicit_time_col = true;
  RawLog log = read(p, o);  // the first line is data
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u1 10", "u2 11", "u2 10"}));
  EXPECT_TRUE(log.has_timestamps);
  EXPECT_FALSE(log.has_ratings);  // default rating column name is not a number: unused
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{1000, 1001, 1002}));

  o.rating_col = "4";
  o.explicit_rating_col = true;
  RawLog log2 = read(p, o);
  EXPECT_EQ(log2.row_rating, (std::vector<float>{3.0f, 4.0f, 5.0f}));

  o.rating_col = "9";
  EXPECT_EQ(read_error(p, o), p.string() + ":1: field 9: column 9 does not exist (the first row has 4 fields)");

  ReaderOptions bad = opts("csv");
  bad.header = false;  // user_col "user_id" is not a column number
  EXPECT_EQ(read_error(p, bad),
            p.string() +
                ":1: field user_id: user_col must be a 1-based column number when the file has no header, got "
                "'user_id'");

  auto q = dir.write("n2.csv", "10,u1,x\n11,u2,1001\n");
  ReaderOptions r = opts("csv");
  r.header = false;
  r.user_col = "2";
  r.item_col = "1";
  r.time_col = "3";
  r.explicit_time_col = true;
  EXPECT_EQ(read_error(q, r), q.string() + ":1: field column 3: 'x' is not a timestamp");
}

TEST(ReadersCsv, OptionalColumnsAbsentOrRequested) {
  TempDir dir;
  auto p = dir.write("o.csv", "user_id,item_id\na,1\nb,2\n");
  RawLog log = read(p, opts("csv"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"a 1", "b 2"}));
  EXPECT_FALSE(log.has_timestamps);
  EXPECT_FALSE(log.has_ratings);
  EXPECT_FALSE(log.has_actions);

  ReaderOptions o = opts("csv");
  o.explicit_time_col = true;  // the default name, but asked for explicitly
  EXPECT_EQ(read_error(p, o),
            p.string() + ":1: field timestamp: no column 'timestamp' in the header (columns: user_id, item_id)");
  o = opts("csv");
  o.rating_col = "stars";
  o.explicit_rating_col = true;
  EXPECT_EQ(read_error(p, o),
            p.string() + ":1: field stars: no column 'stars' in the header (columns: user_id, item_id)");
  o = opts("csv");
  o.action_col = "event";
  o.explicit_action_col = true;
  EXPECT_EQ(read_error(p, o),
            p.string() + ":1: field event: no column 'event' in the header (columns: user_id, item_id)");
  o = opts("csv");
  o.item_col = "asin";
  EXPECT_EQ(read_error(p, o),
            p.string() + ":1: field asin: no column 'asin' in the header (columns: user_id, item_id)");
  // A bad header stays fatal with skip_bad_rows.
  o.skip_bad_rows = true;
  EXPECT_NE(read_error(p, o), genrec::test::kNoInvalidInput);
}

TEST(ReadersCsv, WrongColumnCountAndUnterminatedQuote) {
  TempDir dir;
  auto p = dir.write("w.csv", "user_id,item_id,rating\na,1,5\nb,2\n");
  EXPECT_EQ(read_error(p, opts("csv")), p.string() + ":3: expected 3 fields, found 2");
  auto q = dir.write("u.csv", "user_id,item_id\na,1\nb,\"2\nc,3\n\n");
  EXPECT_EQ(read_error(q, opts("csv")), q.string() + ":3: field item_id: unterminated quoted field");
  auto r = dir.write("v.csv", "user_id,item_id\na,1\nb,2\n\"c\n");
  EXPECT_EQ(read_error(r, opts("csv")), r.string() + ":4: field user_id: unterminated quoted field");
  // The good rows before the unterminated quote are kept when skipping.
  ReaderOptions o = opts("csv");
  o.skip_bad_rows = true;
  RawLog log = read(q, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"a 1"}));
  EXPECT_EQ(log.rows_skipped, 1);
}

TEST(ReadersCsv, BadUtf8InIdAndBadRating) {
  TempDir dir;
  auto p = dir.write("b.csv", "user_id,item_id\nok,1\nu\xC3(x,2\n");
  EXPECT_EQ(read_error(p, opts("csv")), p.string() + ":3: field user_id: invalid UTF-8 at byte 1");
  auto q = dir.write("r.csv", "user_id,item_id,rating\na,1,4\na,2,\n");
  EXPECT_EQ(read_error(q, opts("csv")), q.string() + ":3: field rating: '' is not a number");
}

TEST(ReadersCsv, NumericIdsDeclared) {
  TempDir dir;
  auto p = dir.write("n.csv", "user_id,item_id\n01,002\n1,x7\n");
  ReaderOptions o = opts("csv");
  o.ids = IdKind::Numeric;
  EXPECT_EQ(read_error(p, o), p.string() + ":3: field item_id: 'x7'" + kNumericReason);
  o.skip_bad_rows = true;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 2"}));
}

TEST(ReadersCsv, CustomDelimiterAndBom) {
  TempDir dir;
  auto p = dir.write("s.csv", "\xEF\xBB\xBFuser_id;item_id;timestamp\na;\"x;y\";1\n");
  ReaderOptions o = opts("csv");
  o.delimiter = ';';
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"a x;y"}));
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{1}));
}

TEST(ReadersTsv, HappyPath) {
  TempDir dir;
  auto p = dir.write("log.tsv",
                     "user_id\titem_id\trating\n"
                     "u1\tit,em 1\t5\n"
                     "u2\t\"quoted\titem\"\t2.5\n");
  ReaderOptions o = opts("tsv");
  // A tab inside a quoted TSV id is rejected as an id.
  EXPECT_EQ(read_error(p, o), p.string() + ":3: field item_id: id 'quoted\\titem' contains a tab or a line break");
  o.skip_bad_rows = true;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u1 it,em 1"}));
  EXPECT_EQ(log.rows_skipped, 1);
  EXPECT_EQ(log.row_rating, (std::vector<float>{5.0f}));

  auto q = dir.write("ok.tsv", "user_id\titem_id\trating\nu1\ti1\t5\nu2\ti2\t2.5\n");
  log = read(q, opts("tsv"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u1 i1", "u2 i2"}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{5.0f, 2.5f}));
  EXPECT_FALSE(log.has_timestamps);
}

TEST(ReadersCsv, HistoryReconstruction) {
  TempDir dir;
  auto p = dir.write("valid.csv",
                     "user_id,history_item_title,item_title,history_item_id,item_id\n"
                     "A1,\"['t1']\",t2,[3112],114\n"
                     "A2,\"['a', 'b, c']\",t,\"[3437, 642, 642, 2520]\",1128\n"
                     "A2,\"['a']\",t,\"[3437, 642, 642, 2520, 1128]\",2540\n"
                     "A3,[],t,\"['x1', \"\"x2\"\"]\",x3\n"
                     "A4,[],t,[],77\n");
  ReaderOptions o = opts("csv");
  o.history_col = "history_item_id";
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"A1 3112", "A1 114", "A2 3437", "A2 642", "A2 642", "A2 2520",
                                                 "A2 1128", "A2 2540", "A3 x1", "A3 x2", "A3 x3", "A4 77"}));
  EXPECT_FALSE(log.has_timestamps);

  o.history_col = "nope";
  EXPECT_EQ(read_error(p, o),
            p.string() +
                ":1: field nope: no column 'nope' in the header (columns: user_id, history_item_title, item_title, "
                "history_item_id, item_id)");
}

TEST(ReadersCsv, HistoryWithTimestampsRatingsAndErrors) {
  TempDir dir;
  auto p = dir.write("h.csv",
                     "user_id,hist,item_id,timestamp,rating,action\n"
                     "9,\"[1, 2]\",3,50,5,buy\n"
                     "9,\"[1, 2, 3]\",4,60,4,view\n");
  ReaderOptions o = opts("csv");
  o.history_col = "hist";
  o.ids = IdKind::Numeric;
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"9 1", "9 2", "9 3", "9 4"}));
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{50, 50, 50, 60}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{0.0f, 0.0f, 5.0f, 4.0f}));
  EXPECT_EQ(actions(log), (std::vector<std::string>{"buy", "buy", "buy", "view"}));

  auto q = dir.write("bad.csv", "user_id,hist,item_id\n9,\"[1, x]\",3\n");
  EXPECT_EQ(read_error(q, o), q.string() + ":2: field hist: 'x'" + kNumericReason);
  auto r = dir.write("bad2.csv", "user_id,hist,item_id\n9,oops,3\n");
  EXPECT_EQ(read_error(r, o), r.string() + ":2: field hist: 'oops' is not a list (expected e.g. [1, 2, 3])");
}

// ---------------------------------------------------------------------------------------------
// JSON lines

TEST(ReadersJsonl, HappyPath) {
  TempDir dir;
  auto p = dir.write("log.jsonl",
                     "{\"user_id\": \"u1\", \"item_id\": 5, \"timestamp\": 100, \"rating\": 4.5, \"action\": \"view\"}\n"
                     "\n"
                     "{\"user_id\": 7, \"item_id\": \"B0\", \"timestamp\": \"2018-03-04T12:00:00Z\", \"rating\": "
                     "\"3\", \"action\": 2, \"extra\": [1]}\n"
                     "{\"item_id\": \"B0\", \"user_id\": \"u1\", \"timestamp\": 1.9e2, \"rating\": 1, \"action\": "
                     "\"view\"}\n");
  RawLog log = read(p, opts("jsonl"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u1 5", "7 B0", "u1 B0"}));
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{100, 1520164800, 190}));
  EXPECT_EQ(log.row_rating, (std::vector<float>{4.5f, 3.0f, 1.0f}));
  EXPECT_EQ(actions(log), (std::vector<std::string>{"view", "2", "view"}));
}

TEST(ReadersJsonl, OptionalKeysFollowTheFirstObject) {
  TempDir dir;
  auto p = dir.write("a.jsonl", "{\"user_id\": \"a\", \"item_id\": \"x\"}\n{\"user_id\": \"b\", \"item_id\": \"y\", "
                                "\"timestamp\": 5}\n");
  RawLog log = read(p, opts("jsonl"));
  EXPECT_EQ(rows(log), (std::vector<std::string>{"a x", "b y"}));
  EXPECT_FALSE(log.has_timestamps);
  EXPECT_TRUE(log.row_timestamp.empty());

  auto q = dir.write("b.jsonl", "{\"user_id\": \"a\", \"item_id\": \"x\", \"timestamp\": 5}\n{\"user_id\": \"b\", "
                                "\"item_id\": \"y\"}\n");
  EXPECT_EQ(read_error(q, opts("jsonl")), q.string() + ":2: field timestamp: missing key 'timestamp'");

  ReaderOptions o = opts("jsonl");
  o.rating_col = "stars";
  o.explicit_rating_col = true;
  EXPECT_EQ(read_error(p, o), p.string() + ":1: field stars: key 'stars' not found in the first object");
}

TEST(ReadersJsonl, Errors) {
  TempDir dir;
  auto p = dir.write("m.jsonl", "{\"user_id\": \"a\", \"item_id\": \"x\"}\n{\"user_id\": \"b\", \"item_id\": }\n");
  const std::string err = read_error(p, opts("jsonl"));
  EXPECT_EQ(err.rfind(p.string() + ":2: malformed JSON: ", 0), 0u) << err;

  auto q = dir.write("k.jsonl", "{\"user_id\": \"a\", \"item_id\": \"x\"}\n{\"user\": \"b\", \"item_id\": \"y\"}\n");
  EXPECT_EQ(read_error(q, opts("jsonl")), q.string() + ":2: field user_id: missing key 'user_id'");

  auto r = dir.write("t.jsonl", "{\"user_id\": \"a\", \"item_id\": \"x\", \"timestamp\": \"later\"}\n");
  EXPECT_EQ(read_error(r, opts("jsonl")), r.string() + ":1: field timestamp: 'later' is not a timestamp");

  auto s = dir.write("f.jsonl", "{\"user_id\": 1.5, \"item_id\": \"x\"}\n");
  EXPECT_EQ(read_error(s, opts("jsonl")), s.string() + ":1: field user_id: expected a string or an integer, got number '1.5'");

  auto t = dir.write("n.jsonl", "[1, 2]\n");
  EXPECT_EQ(read_error(t, opts("jsonl")), t.string() + ":1: expected a JSON object, got array");

  ReaderOptions o = opts("jsonl");
  o.ids = IdKind::Numeric;
  auto u = dir.write("neg.jsonl", "{\"user_id\": -3, \"item_id\": 1}\n");
  EXPECT_EQ(read_error(u, o), u.string() + ":1: field user_id: '-3'" + kNumericReason);

  // Skipping: the malformed line and the one missing a key are counted, the rest is kept.
  o = opts("jsonl");
  o.skip_bad_rows = true;
  auto v = dir.write("mix.jsonl",
                     "{\"user_id\": \"a\", \"item_id\": \"x\"}\n{bad\n{\"user_id\": \"b\"}\n{\"user_id\": \"c\", "
                     "\"item_id\": \"z\"}\n");
  RawLog log = read(v, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"a x", "c z"}));
  EXPECT_EQ(log.rows_skipped, 2);
  ASSERT_EQ(log.skip_examples.size(), 2u);
  EXPECT_EQ(log.skip_examples[0].rfind(v.string() + ":2: malformed JSON: ", 0), 0u);
  EXPECT_EQ(log.skip_examples[1], v.string() + ":3: field item_id: missing key 'item_id'");
}

TEST(ReadersJsonl, History) {
  TempDir dir;
  auto p = dir.write("h.jsonl",
                     "{\"user_id\": \"u\", \"item_id\": 3, \"history\": [1, \"2\"]}\n"
                     "{\"user_id\": \"u\", \"item_id\": 4, \"history\": [1, 2, 3]}\n"
                     "{\"user_id\": \"v\", \"item_id\": 9, \"history\": \"[7, 8]\"}\n");
  ReaderOptions o = opts("jsonl");
  o.history_col = "history";
  RawLog log = read(p, o);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"u 1", "u 2", "u 3", "u 4", "v 7", "v 8", "v 9"}));
}

// ---------------------------------------------------------------------------------------------
// Files, progress, several inputs

TEST(ReadersErrors, EmptyMissingAndUnknown) {
  TempDir dir;
  auto e = dir.write("empty.txt", "");
  EXPECT_EQ(read_error(e, opts("s3rec")), e.string() + ": file is empty");
  auto w = dir.write("blank.csv", "  \n\n\t\n");
  EXPECT_EQ(read_error(w, opts("csv")), w.string() + ": file is empty");
  EXPECT_EQ(read_error(w, opts("jsonl")), w.string() + ": file is empty");
  ReaderOptions skip = opts("movielens");
  skip.skip_bad_rows = true;
  EXPECT_EQ(read_error(e, skip), e.string() + ": file is empty");

  const fs::path missing = dir.path() / "nope.txt";
  const std::string err = read_error(missing, opts("s3rec"));
  EXPECT_NE(err.find(missing.string()), std::string::npos) << err;
  EXPECT_NE(err, genrec::test::kNoInvalidInput);

  auto p = dir.write("a.txt", "1 2\n");
  EXPECT_EQ(read_error(p, opts("parquet")),
            "unknown interaction format 'parquet' (expected one of: s3rec, sasrec, movielens, ml-100k, csv, tsv, jsonl)");
}

TEST(ReadersMulti, AppendsFilesAndChecksColumns) {
  TempDir dir;
  auto a = dir.write("a.data", "1\t10\t5\t100\n2\t11\t4\t200\n");
  auto b = dir.write("b.data", "2\t10\t3\t300\n");
  RawLog log;
  genrec::read_interactions(a, opts("ml-100k"), log);
  genrec::read_interactions(b, opts("ml-100k"), log);
  EXPECT_EQ(rows(log), (std::vector<std::string>{"1 10", "2 11", "2 10"}));
  EXPECT_EQ(log.row_timestamp, (std::vector<int64_t>{100, 200, 300}));
  EXPECT_EQ(log.row_rating.size(), 3u);

  auto c = dir.write("c.txt", "3 10\n");
  EXPECT_EQ(invalid_message([&] { genrec::read_interactions(c, opts("sasrec"), log); }),
            c.string() + ": has no timestamp column but earlier inputs do");
  EXPECT_EQ(log.n_rows(), 3);

  RawLog log2;
  genrec::read_interactions(c, opts("sasrec"), log2);
  EXPECT_EQ(invalid_message([&] { genrec::read_interactions(a, opts("ml-100k"), log2); }),
            a.string() + ": has a timestamp column but earlier inputs do not");
  EXPECT_EQ(log2.n_rows(), 1);
}

TEST(ReadersProgress, ReportsBytes) {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 70000; ++i) content += std::to_string(i % 100) + " " + std::to_string(i) + "\n";
  auto p = dir.write("big.txt", content);
  std::vector<genrec::ProgressEvent> events;
  RawLog log;
  genrec::read_interactions(p, opts("sasrec"), log, [&](const genrec::ProgressEvent& e) {
    events.push_back(e);
    return true;
  });
  EXPECT_EQ(log.n_rows(), 70000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().stage, "read big.txt");
  EXPECT_EQ(events.back().unit, "bytes");
  EXPECT_EQ(events.back().total, static_cast<int64_t>(content.size()));
  EXPECT_EQ(events.back().done, static_cast<int64_t>(content.size()));
  EXPECT_TRUE(events.back().finished);

  RawLog log2;
  EXPECT_THROW(genrec::read_interactions(p, opts("sasrec"), log2, [](const genrec::ProgressEvent&) { return false; }),
               genrec::Cancelled);
}

// ---------------------------------------------------------------------------------------------
// Item side information

namespace {
SideInfo read_items(const fs::path& p, const std::string& format, IdKind ids = IdKind::Numeric) {
  SideInfo out;
  ReaderOptions o;
  o.ids = ids;
  genrec::read_item_info(p, format, o, out);
  return out;
}
std::string items_error(const fs::path& p, const std::string& format, IdKind ids = IdKind::Numeric) {
  return invalid_message([&] { read_items(p, format, ids); });
}
using Tokens = std::vector<std::string>;
}  // namespace

TEST(ItemInfoAttributes, ReadsInFileOrder) {
  TempDir dir;
  auto p = dir.write("Beauty_item2attributes.json", "{\"4\": [1, 2, 3], \"10\": [\"brand_x\", 8], \"2\": [], \"007\": [5]}");
  SideInfo s = read_items(p, "attributes");
  ASSERT_EQ(s.attributes.size(), 4u);
  EXPECT_EQ(s.attributes[0].first, "4");
  EXPECT_EQ(s.attributes[0].second, (Tokens{"1", "2", "3"}));
  EXPECT_EQ(s.attributes[1].first, "10");
  EXPECT_EQ(s.attributes[1].second, (Tokens{"brand_x", "8"}));
  EXPECT_EQ(s.attributes[2].first, "2");
  EXPECT_TRUE(s.attributes[2].second.empty());
  EXPECT_EQ(s.attributes[3].first, "7");  // numeric ids are canonical
  EXPECT_TRUE(s.text.empty());
  EXPECT_EQ(s.sources, (Tokens{p.string()}));

  // Auto detection: first value is a list.
  SideInfo a = read_items(p, "auto");
  EXPECT_EQ(a.attributes.size(), 4u);
  EXPECT_TRUE(a.text.empty());
}

TEST(ItemInfoAttributes, Errors) {
  TempDir dir;
  auto p = dir.write("a.json", "{\"1\": [1],\n \"2\": [1.5]}");
  EXPECT_EQ(items_error(p, "attributes"), p.string() + ":2: field 2: attributes must be strings or integers, got number 1.5");
  auto q = dir.write("b.json", "{\"1\": [1],\n\n \"x\": [2]}");
  EXPECT_EQ(items_error(q, "attributes"), q.string() + ":3: field x: 'x'" + kNumericReason);
  EXPECT_EQ(read_items(q, "attributes", IdKind::String).attributes.size(), 2u);
  auto r = dir.write("c.json", "{\"1\": [1],\n \"2\": {\"title\": \"t\"}}");
  EXPECT_EQ(items_error(r, "attributes"), r.string() + ":2: field 2: expected a list of attributes, got object");
  auto s = dir.write("d.json", "{\"1\": [1],\n \"2\": [2,\n}");
  const std::string err = items_error(s, "attributes");
  EXPECT_EQ(err.rfind(s.string() + ":3: invalid JSON: ", 0), 0u) << err;
  auto t = dir.write("e.json", "[1, 2]");
  EXPECT_EQ(items_error(t, "attributes"),
            t.string() + ": expected a JSON object mapping item ids to attribute lists, got array");
}

TEST(ItemInfoText, ReadsFieldsAndFlattensCategories) {
  TempDir dir;
  auto p = dir.write("items.json",
                     "{\n"
                     "  \"0\": {\"title\": \"Relay Kit\", \"description\": \"['desc']\", \"brand\": \"Supco\", "
                     "\"categories\": \"\"},\n"
                     "  \"1\": {\"title\": \"Caf\xC3\xA9\", \"categories\": \"Tools\"},\n"
                     "  \"2\": {\"categories\": [\"A\", \"B\"], \"brand\": null},\n"
                     "  \"3\": {\"categories\": [[\"Beauty\", \"Makeup\"], [\"Beauty\", \"Skin\"]], \"other\": 1}\n"
                     "}\n");
  SideInfo s = read_items(p, "text");
  ASSERT_EQ(s.text.size(), 4u);
  EXPECT_EQ(s.text[0].first, "0");
  EXPECT_EQ(s.text[0].second.title, "Relay Kit");
  EXPECT_EQ(s.text[0].second.description, "['desc']");
  EXPECT_EQ(s.text[0].second.brand, "Supco");
  EXPECT_TRUE(s.text[0].second.categories.empty());
  EXPECT_EQ(s.text[1].first, "1");
  EXPECT_EQ(s.text[1].second.title, "Caf\xC3\xA9");
  EXPECT_EQ(s.text[1].second.categories, (Tokens{"Tools"}));
  EXPECT_EQ(s.text[2].second.title, "");
  EXPECT_EQ(s.text[2].second.brand, "");
  EXPECT_EQ(s.text[2].second.categories, (Tokens{"A", "B"}));
  EXPECT_EQ(s.text[3].second.categories, (Tokens{"Beauty", "Makeup", "Skin"}));
  EXPECT_TRUE(s.attributes.empty());

  SideInfo a = read_items(p, "auto");
  EXPECT_EQ(a.text.size(), 4u);
  EXPECT_TRUE(a.attributes.empty());
}

TEST(ItemInfoText, Errors) {
  TempDir dir;
  auto p = dir.write("u.json", "{\n\"1\": {\"title\": \"ok\"},\n\"2\": {\"title\": \"bad \xFF byte\"}\n}\n");
  const std::string err = items_error(p, "text");
  EXPECT_EQ(err.rfind(p.string() + ":3: invalid JSON: ", 0), 0u) << err;
  EXPECT_NE(err.find("UTF-8"), std::string::npos) << err;

  auto q = dir.write("s.json", "{\n\"1\": {\"title\": \"ok\"},\n\"2\": \"just a string\"\n}\n");
  EXPECT_EQ(items_error(q, "text"),
            q.string() + ":3: field 2: expected an object with title/description/brand/categories, got string");
  auto r = dir.write("t.json", "{\n\"1\": {\"title\": 5}\n}\n");
  EXPECT_EQ(items_error(r, "text"), r.string() + ":2: field 1: 'title' must be a string, got number");
  auto s = dir.write("c.json", "{\n\"1\": {\"categories\": [1]}\n}\n");
  EXPECT_EQ(items_error(s, "text"), s.string() + ":2: field 1: 'categories' must hold strings, got number");
  auto t = dir.write("auto.json", "{\"1\": 5}");
  EXPECT_EQ(items_error(t, "auto"),
            t.string() +
                ":1: field 1: cannot tell the item file's format: the first value is a number (expected a list of "
                "attributes or a text object)");
  auto e = dir.write("empty.json", "\n");
  EXPECT_EQ(items_error(e, "auto"), e.string() + ": file is empty");
  EXPECT_NE(items_error(dir.path() / "missing.json", "auto").find("missing.json"), std::string::npos);
  EXPECT_EQ(items_error(q, "xml"), "unknown item format 'xml' (expected one of: auto, attributes, text, movies, u.item)");

  // A failed read leaves the output untouched.
  SideInfo out;
  ReaderOptions o;
  o.ids = IdKind::Numeric;
  EXPECT_THROW(genrec::read_item_info(q, "text", o, out), InvalidInput);
  EXPECT_TRUE(out.text.empty());
  EXPECT_TRUE(out.sources.empty());
}

TEST(ItemInfoMovies, Latin1AndGenres) {
  TempDir dir;
  auto p = dir.write("movies.dat",
                     "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                     "2::Caf\xE9 au lait (1993)::Drama\n"
                     "\n"
                     "3::Untitled::(no genres listed)\n");
  SideInfo s = read_items(p, "movies");
  ASSERT_EQ(s.text.size(), 3u);
  ASSERT_EQ(s.attributes.size(), 3u);
  EXPECT_EQ(s.text[0].first, "1");
  EXPECT_EQ(s.text[0].second.title, "Toy Story (1995)");
  EXPECT_EQ(s.text[0].second.categories, (Tokens{"Animation", "Children's", "Comedy"}));
  EXPECT_EQ(s.attributes[0].first, "1");
  EXPECT_EQ(s.attributes[0].second, (Tokens{"Animation", "Children's", "Comedy"}));
  EXPECT_EQ(s.text[1].second.title, "Caf\xC3\xA9 au lait (1993)");
  EXPECT_EQ(s.attributes[1].second, (Tokens{"Drama"}));
  EXPECT_TRUE(s.text[2].second.categories.empty());

  SideInfo a = read_items(p, "auto");  // by file name
  EXPECT_EQ(a.text.size(), 3u);
  EXPECT_EQ(a.text[1].second.title, "Caf\xC3\xA9 au lait (1993)");

  auto q = dir.write("bad.dat", "1::Toy Story (1995)::Animation\nx::Title::Drama\n");
  EXPECT_EQ(items_error(q, "movies"), q.string() + ":2: field movie_id: 'x'" + kNumericReason);
  auto r = dir.write("bad2.dat", "1::Toy Story (1995)\n");
  EXPECT_EQ(items_error(r, "movies"), r.string() + ":1: expected 3 fields (id::title::genres), found 2");
}

TEST(ItemInfoUItem, Latin1AndGenreFlags) {
  TempDir dir;
  auto p = dir.write("u.item",
                     "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
                     "|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                     "2|Ma vie en rose (1997)|01-Jan-1997||url|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
                     "3|Cit\xE9 (1995)|01-Jan-1995||url|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0|1\n");
  SideInfo s = read_items(p, "auto");  // by file name
  ASSERT_EQ(s.text.size(), 3u);
  ASSERT_EQ(s.attributes.size(), 3u);
  EXPECT_EQ(s.text[0].first, "1");
  EXPECT_EQ(s.text[0].second.title, "Toy Story (1995)");
  EXPECT_EQ(s.text[0].second.categories, (Tokens{"Animation", "Children's", "Comedy"}));
  EXPECT_EQ(s.attributes[0].second, (Tokens{"Animation", "Children's", "Comedy"}));
  EXPECT_EQ(s.attributes[1].second, (Tokens{"Drama"}));
  EXPECT_EQ(s.text[2].second.title, "Cit\xC3\xA9 (1995)");
  EXPECT_EQ(s.text[2].second.categories, (Tokens{"unknown", "Sci-Fi", "Western"}));

  auto q = dir.write("short.item", "1|Toy Story (1995)|01-Jan-1995||url|0|0\n");
  EXPECT_EQ(items_error(q, "u.item"), q.string() + ":1: expected 24 fields, found 7");
  auto r = dir.write("flag.item", "1|T|d||url|0|0|0|0|0|0|0|0|2|0|0|0|0|0|0|0|0|0|0\n");
  EXPECT_EQ(items_error(r, "u.item"), r.string() + ":1: field Drama: genre flag must be 0 or 1, got '2'");
}

// ---------------------------------------------------------------------------------------------
// Real data (skipped when ../shared/data is absent)

TEST(ReadersSharedData, BeautyS3Rec) {
  const fs::path dir = shared_data_dir();
  if (dir.empty() || !fs::exists(dir / "amazon2014_s3rec" / "Beauty.txt"))
    GTEST_SKIP() << "shared data not found (set GENREC_SHARED_DATA); skipping";
  RawLog log = read(dir / "amazon2014_s3rec" / "Beauty.txt", opts("s3rec"));
  EXPECT_EQ(log.users.size(), 22363);
  EXPECT_EQ(log.items.size(), 12101);
  EXPECT_EQ(log.n_rows(), 198502);
  EXPECT_FALSE(log.has_timestamps);
  EXPECT_EQ(log.rows_skipped, 0);
}

TEST(ReadersSharedData, Ml100k) {
  const fs::path dir = shared_data_dir();
  const fs::path p = dir / "movielens" / "ml-100k" / "u.data";
  if (dir.empty() || !fs::exists(p)) GTEST_SKIP() << "shared data not found (set GENREC_SHARED_DATA); skipping";
  RawLog log = read(p, opts("ml-100k"));
  EXPECT_EQ(log.users.size(), 943);
  EXPECT_EQ(log.items.size(), 1682);
  EXPECT_EQ(log.n_rows(), 100000);
  EXPECT_TRUE(log.has_timestamps);
  EXPECT_TRUE(log.has_ratings);
  EXPECT_EQ(log.row_timestamp.size(), 100000u);
  EXPECT_EQ(log.row_rating.size(), 100000u);
  // First line of u.data: 196 242 3 881250949.
  EXPECT_EQ(log.users.raw(log.row_user[0]), "196");
  EXPECT_EQ(log.items.raw(log.row_item[0]), "242");
  EXPECT_EQ(log.row_rating[0], 3.0f);
  EXPECT_EQ(log.row_timestamp[0], 881250949);
}

TEST(ReadersSharedData, MiniOneRecValidHistory) {
  const fs::path dir = shared_data_dir();
  const fs::path p = dir / "amazon2018_minionerec" / "Industrial_and_Scientific.valid.csv";
  if (dir.empty() || !fs::exists(p)) GTEST_SKIP() << "shared data not found (set GENREC_SHARED_DATA); skipping";
  ReaderOptions o = opts("csv");
  o.history_col = "history_item_id";
  RawLog log = read(p, o);
  EXPECT_EQ(log.rows_skipped, 0);
  EXPECT_GT(log.n_rows(), 4532);
  // Line 2: A4042 with history [3112] and item 114.
  EXPECT_EQ(log.users.raw(log.row_user[0]), "A4042");
  EXPECT_EQ(log.items.raw(log.row_item[0]), "3112");
  EXPECT_EQ(log.items.raw(log.row_item[1]), "114");
  // Lines 3-4: A5382 with history [3437, 642, 642, 2520] + 1128, then 2540.
  std::vector<std::string> a5382;
  for (int64_t r = 0; r < log.n_rows(); ++r)
    if (log.users.raw(log.row_user[r]) == "A5382") a5382.push_back(log.items.raw(log.row_item[r]));
  ASSERT_GE(a5382.size(), 6u);
  EXPECT_EQ(std::vector<std::string>(a5382.begin(), a5382.begin() + 6),
            (std::vector<std::string>{"3437", "642", "642", "2520", "1128", "2540"}));
}

TEST(ItemInfoSharedData, RealFiles) {
  const fs::path dir = shared_data_dir();
  if (dir.empty() || !fs::exists(dir / "movielens" / "ml-1m" / "movies.dat"))
    GTEST_SKIP() << "shared data not found (set GENREC_SHARED_DATA); skipping";
  SideInfo movies = read_items(dir / "movielens" / "ml-1m" / "movies.dat", "auto");
  EXPECT_EQ(movies.text.size(), 3883u);
  EXPECT_EQ(movies.text[0].second.title, "Toy Story (1995)");
  SideInfo uitem = read_items(dir / "movielens" / "ml-100k" / "u.item", "auto");
  EXPECT_EQ(uitem.text.size(), 1682u);
  SideInfo attrs = read_items(dir / "amazon2014_s3rec" / "Beauty_item2attributes.json", "auto");
  EXPECT_GT(attrs.attributes.size(), 12000u);
  EXPECT_TRUE(attrs.text.empty());
  SideInfo text = read_items(dir / "amazon2018_minionerec" / "Industrial_and_Scientific.item.json", "auto",
                             IdKind::String);
  EXPECT_EQ(text.text.size(), 3686u);
  EXPECT_TRUE(text.attributes.empty());
}
