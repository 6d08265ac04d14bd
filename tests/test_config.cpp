#include <gtest/gtest.h>

#include "genrec/core/config.h"
#include "genrec/core/error.h"
#include "test_util.h"

using namespace genrec;

TEST(Config, TypedGettersDefaultsAndResolved) {
  Config cfg = Config::parse("[model]\ntype = \"pop\"\n[eval]\nks = [5, 10]\n", "t.toml");
  EXPECT_EQ(cfg.get_string("model.type", "x"), "pop");
  EXPECT_EQ(cfg.get_int_list("eval.ks", {1}), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(cfg.get_int("train.seed", 42), 42);
  EXPECT_DOUBLE_EQ(cfg.get_double("train.lr", 0.5), 0.5);
  EXPECT_FALSE(cfg.get_bool("eval.exclude_seen", false));
  cfg.check_unused();
  Config back = Config::parse(cfg.resolved_toml(), "resolved");
  EXPECT_EQ(back.get_int("train.seed", 0), 42);  // the default was written out
  EXPECT_EQ(back.get_string("model.type", ""), "pop");
}

TEST(Config, OverridesParseTomlValuesOrStrings) {
  Config cfg = Config::parse("[model]\ntype = \"pop\"\n", "t.toml");
  cfg.set_override("model.type=markov");  // bare string
  cfg.set_override("model.window=3");
  cfg.set_override("eval.ks=[1,2]");
  cfg.set_override("eval.exclude_seen=true");
  cfg.set_override("data.path=\"/x y/z\"");
  EXPECT_EQ(cfg.get_string("model.type", ""), "markov");
  EXPECT_EQ(cfg.get_int("model.window", 0), 3);
  EXPECT_EQ(cfg.get_int_list("eval.ks", {}), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(cfg.get_bool("eval.exclude_seen", false));
  EXPECT_EQ(cfg.get_string("data.path", ""), "/x y/z");
  EXPECT_THROW(cfg.set_override("novalue"), InvalidInput);
}

TEST(Config, UnknownKeysAndWrongTypesAreErrors) {
  Config cfg = Config::parse("[model]\ntype = \"pop\"\nwindw = 3\n", "t.toml");
  cfg.get_string("model.type", "");
  EXPECT_INVALID(cfg.check_unused(), "model.windw");
  Config typed = Config::parse("[train]\nseed = \"abc\"\n", "t.toml");
  EXPECT_THROW(typed.get_int("train.seed", 1), InvalidInput);
}

TEST(Config, ParseErrorNamesFileAndLine) {
  EXPECT_INVALID(Config::parse("[model]\ntype = = 1\n", "bad.toml"), "bad.toml:2");
  EXPECT_THROW(Config::load("/nonexistent/config.toml"), InvalidInput);
}
