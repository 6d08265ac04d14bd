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

// A wrong value given with --set is reported as that --set, not as a line of the file it overrides.
TEST(Config, WrongTypeFromAnOverrideNamesTheOverride) {
  Config cfg = Config::parse("[model]\nbeam = 20\nweights = [1, 2]\n", "runs/r/config.toml");
  cfg.set_override("model.beam=wide");
  cfg.set_override("model.weights=[1,x]");
  EXPECT_INVALID(cfg.get_int("model.beam", 1), "--set model.beam=wide", "runs/r/config.toml", "an integer");
  EXPECT_INVALID(cfg.get_double_list("model.weights", {}), "--set model.weights=[1,x]", "an array of numbers");
  Config file_only = Config::parse("[model]\nbeam = \"wide\"\n", "runs/r/config.toml");
  const std::string msg = test::invalid_message([&] { file_only.get_int("model.beam", 1); });
  EXPECT_NE(msg.find("runs/r/config.toml: key 'model.beam'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--set"), std::string::npos) << msg;
  Config unknown = Config::parse("[model]\ntype = \"pop\"\n", "t.toml");
  unknown.set_override("model.beem=3");
  unknown.get_string("model.type", "");
  EXPECT_INVALID(unknown.check_unused(), "model.beem (from --set)");
}

TEST(Config, ParseErrorNamesFileAndLine) {
  EXPECT_INVALID(Config::parse("[model]\ntype = = 1\n", "bad.toml"), "bad.toml:2");
  EXPECT_THROW(Config::load("/nonexistent/config.toml"), InvalidInput);
}
