// Item content vectors (tokenizers/item_features.h) and `genrec sid build` (tokenizers/sid_build.h).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/safetensors.h"
#include "genrec/data/dataset.h"
#include "genrec/data/generator.h"
#include "genrec/models/recommender.h"
#include "genrec/tokenizers/item_features.h"
#include "genrec/tokenizers/semantic_ids.h"
#include "genrec/tokenizers/sid_build.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
namespace fs = std::filesystem;
using genrec::test::TempDir;
using genrec::test::run_cli;
using genrec::test::write_text;

namespace {

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

Dataset small_dataset(int64_t items = 60, uint64_t seed = 11) {
  GeneratorOptions g;
  g.n_users = 150;
  g.n_items = items;
  g.n_clusters = 6;
  g.seed = seed;
  return generate_dataset(g);
}

std::vector<float> row_of(const ItemFeatures& f, int32_t item) {
  return std::vector<float>(f.row(item), f.row(item) + f.dim);
}

double norm_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

using genrec::test::invalid_message;

std::string npy_bytes(const std::string& descr, const std::string& fortran, const std::string& shape,
                      const std::vector<float>& data) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

std::vector<float> iota_matrix(int64_t rows, int64_t cols) {
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 17) + 0.5f;
  return v;
}

}  // namespace

TEST(ItemFeatures, ParsesSpecs) {
  ItemFeatureSource s = parse_feature_spec("text");
  EXPECT_EQ(s.kind, "text");
  EXPECT_EQ(s.dim, 64);
  EXPECT_EQ(s.weight, 1.0);
  s = parse_feature_spec("attributes:16:0.5");
  EXPECT_EQ(s.kind, "attributes");
  EXPECT_EQ(s.dim, 16);
  EXPECT_EQ(s.weight, 0.5);
  EXPECT_EQ(parse_feature_spec("attributes").dim, 32);
  s = parse_feature_spec("matrix:/tmp/a:b/emb.npy:2");
  EXPECT_EQ(s.path, "/tmp/a:b/emb.npy");
  EXPECT_EQ(s.weight, 2.0);
  s = parse_feature_spec("matrix:emb.safetensors:tensor=items.weight:normalize=false");
  EXPECT_EQ(s.path, "emb.safetensors");
  EXPECT_EQ(s.tensor, "items.weight");
  EXPECT_FALSE(s.normalize);
  s = parse_feature_spec("run:runs/sasrec:0.25");
  EXPECT_EQ(s.kind, "run");
  EXPECT_EQ(s.path, "runs/sasrec");
  EXPECT_EQ(s.weight, 0.25);
  s = parse_feature_spec("text:8:reduce=random");
  EXPECT_EQ(s.reduce, "random");
  for (const char* bad : {"bogus:3", "text:abc", "text:0", "text:8:-1", "text:8:1:2", "matrix", "matrix:",
                          "run:dir:1:2", "text:8:reduce=pca", "text:8:tensor=x", "attributes:4:colour=red"}) {
    std::string msg = invalid_message([&] { parse_feature_spec(bad); });
    EXPECT_NE(msg.find(std::string("--features ") + bad), std::string::npos) << bad << " -> " << msg;
  }
}

TEST(ItemFeatures, TextRowsEqualForIdenticalTextAndDifferOtherwise) {
  Dataset ds = small_dataset();
  ds.item_text[2] = ds.item_text[1];
  ds.item_text[3].title = "a completely different title";
  ds.item_text[3].description = "with a description, brand and categories";
  ds.has_item_text[5] = 0;  // no text: zero row
  for (const std::string reduce : {"svd", "random"}) {
    ItemFeatureSource src = parse_feature_spec("text:16:reduce=" + reduce);
    ItemFeatures f = build_item_feature_block(ds, src, 7);
    ASSERT_EQ(f.dim, 16);
    ASSERT_EQ(f.x.size(), static_cast<size_t>(ds.n_items() + 1) * 16);
    EXPECT_EQ(norm_of(row_of(f, 0)), 0.0);
    EXPECT_EQ(row_of(f, 1), row_of(f, 2)) << reduce;
    EXPECT_NE(row_of(f, 1), row_of(f, 3)) << reduce;
    EXPECT_NE(row_of(f, 1), row_of(f, 4)) << reduce;
    EXPECT_EQ(norm_of(row_of(f, 5)), 0.0);
    EXPECT_EQ(f.has_content[5], 0);
    EXPECT_EQ(f.has_content[1], 1);
    EXPECT_NEAR(norm_of(row_of(f, 1)), 1.0, 1e-5);
    EXPECT_EQ(f.report["items_with_content"], ds.n_items() - 1);
    // Deterministic for a seed.
    ItemFeatures again = build_item_feature_block(ds, src, 7);
    EXPECT_EQ(again.x, f.x);
  }
  // Items of the same category are closer than items of different categories.
  ItemFeatures f = build_item_feature_block(ds, parse_feature_spec("text:32"), 7);
  double same = 0, diff = 0;
  int64_t n_same = 0, n_diff = 0;
  for (int32_t a = 6; a <= ds.n_items(); ++a)
    for (int32_t b = a + 1; b <= ds.n_items(); ++b) {
      double dot = 0;
      for (int64_t j = 0; j < f.dim; ++j) dot += f.row(a)[j] * f.row(b)[j];
      if (ds.item_text[a].categories == ds.item_text[b].categories) same += dot, ++n_same;
      else diff += dot, ++n_diff;
    }
  ASSERT_GT(n_same, 0);
  ASSERT_GT(n_diff, 0);
  EXPECT_GT(same / n_same, diff / n_diff + 0.1);
  EXPECT_GT(f.report.value("explained_energy", 0.0), 0.0);

  EXPECT_EQ((std::vector<std::string>{"item", "item 3", "3", "3 of", "of", "of x", "x", "b1", "x"}),
            item_text_tokens(ItemText{"Item 3 of x", "", "B1", {"X"}}));

  Dataset no_text = ds;
  no_text.item_text.clear();
  no_text.has_item_text.clear();
  EXPECT_NE(invalid_message([&] { build_item_feature_block(no_text, parse_feature_spec("text"), 1); })
                .find("no item text"),
            std::string::npos);
}

TEST(ItemFeatures, AttributeRowsFollowAttributeSets) {
  Dataset ds = small_dataset();
  // Item i has attributes {a(i % 4), b(i % 3)}: items with equal i % 12 share their set.
  ds.attributes = Vocabulary();
  for (int k = 0; k < 4; ++k) ds.attributes.add("a" + std::to_string(k));
  for (int k = 0; k < 3; ++k) ds.attributes.add("b" + std::to_string(k));
  ds.attribute_offsets.assign(static_cast<size_t>(ds.n_items()) + 2, 0);
  ds.attribute_values.clear();
  for (int32_t i = 1; i <= ds.n_items(); ++i) {
    if (i != 7) {  // item 7 has none
      ds.attribute_values.push_back(1 + i % 4);
      ds.attribute_values.push_back(5 + i % 3);
    }
    ds.attribute_offsets[static_cast<size_t>(i) + 1] = static_cast<int64_t>(ds.attribute_values.size());
  }
  ItemFeatures f = build_item_feature_block(ds, parse_feature_spec("attributes:8"), 3);
  ASSERT_EQ(f.dim, 8);
  for (int32_t i = 1; i + 12 <= ds.n_items(); ++i) {
    if (i == 7 || i + 12 == 7) continue;
    for (int32_t j = i + 1; j <= ds.n_items(); ++j) {
      if (j == 7) continue;
      if ((j - i) % 12 == 0) EXPECT_EQ(row_of(f, i), row_of(f, j)) << i << " " << j;
      else EXPECT_NE(row_of(f, i), row_of(f, j)) << i << " " << j;
    }
  }
  EXPECT_EQ(f.has_content[7], 0);
  EXPECT_EQ(norm_of(row_of(f, 7)), 0.0);
  // Sharing one attribute is closer than sharing none: items 1 {a1,b1}, 5 {a1,b2}, 2 {a2,b2}.
  auto dot = [&](int32_t a, int32_t b) {
    double s = 0;
    for (int64_t j = 0; j < f.dim; ++j) s += f.row(a)[j] * f.row(b)[j];
    return s;
  };
  EXPECT_GT(dot(1, 5), dot(1, 2) + 0.1);

  Dataset none = ds;
  none.attribute_offsets.clear();
  none.attribute_values.clear();
  EXPECT_NE(invalid_message([&] { build_item_feature_block(none, parse_feature_spec("attributes"), 1); })
                .find("no item attributes"),
            std::string::npos);
}

TEST(ItemFeatures, NpyMatrixRowsAndErrors) {
  TempDir tmp;
  Vocabulary items;
  for (int i = 0; i < 5; ++i) items.add("it" + std::to_string(i));
  std::vector<float> m = iota_matrix(5, 3);
  fs::path p = write_text(tmp / "a.npy", npy_bytes("<f4", "False", "(5, 3)", m));
  ItemFeatures f = read_item_matrix(p, items);
  ASSERT_EQ(f.dim, 3);
  for (int32_t i = 1; i <= 5; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(f.row(i)[j], m[static_cast<size_t>((i - 1) * 3 + j)]);
  EXPECT_EQ(norm_of(row_of(f, 0)), 0.0);
  // n_items + 1 rows: row 0 is padding, ignored.
  std::vector<float> m6 = iota_matrix(6, 3);
  p = write_text(tmp / "b.npy", npy_bytes("<f4", "False", "(6, 3)", m6));
  f = read_item_matrix(p, items);
  for (int32_t i = 0; i <= 5; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(f.row(i)[j], i == 0 ? 0.0f : m6[static_cast<size_t>(i * 3 + j)]);

  struct Bad {
    std::string name, bytes, expect;
  };
  std::vector<Bad> bads = {
      {"magic.npy", "NOTNUMPY and more bytes", "field header: not a .npy file"},
      {"dtype.npy", npy_bytes("<f8", "False", "(5, 3)", iota_matrix(10, 3)), "field descr: dtype '<f8'"},
      {"fortran.npy", npy_bytes("<f4", "True", "(5, 3)", m), "field fortran_order"},
      {"ndim.npy", npy_bytes("<f4", "False", "(15,)", m), "field shape: expected a 2-D array"},
      {"rows.npy", npy_bytes("<f4", "False", "(3, 5)", m), "field shape: the matrix has 3 rows"},
      {"short.npy", npy_bytes("<f4", "False", "(5, 3)", iota_matrix(4, 3)), "field data"},
      {"nodescr.npy", npy_bytes("<f4", "False", "(5, 3)", m).replace(10, 7, "{'xxxxx"), "field header"},
  };
  for (const auto& b : bads) {
    fs::path bp = write_text(tmp / b.name, b.bytes);
    std::string msg = invalid_message([&] { read_item_matrix(bp, items); });
    EXPECT_NE(msg.find(bp.string() + ": " + b.expect), std::string::npos) << b.name << " -> " << msg;
  }
  std::vector<float> nan = m;
  nan[4] = std::nanf("");
  fs::path np = write_text(tmp / "nan.npy", npy_bytes("<f4", "False", "(5, 3)", nan));
  EXPECT_NE(invalid_message([&] { read_item_matrix(np, items); }).find("field row 1: value 1 is not finite"),
            std::string::npos);
  EXPECT_NE(invalid_message([&] { read_item_matrix(tmp / "missing.npy", items); }).find("missing.npy"),
            std::string::npos);
  EXPECT_NE(invalid_message([&] { read_item_matrix(write_text(tmp / "x.csv", "a,b\n"), items); })
                .find("unknown matrix format"),
            std::string::npos);
}

TEST(ItemFeatures, SafetensorsMatrixRowsAndErrors) {
  TempDir tmp;
  Vocabulary items;
  for (int i = 0; i < 4; ++i) items.add("it" + std::to_string(i));
  std::vector<float> a = iota_matrix(4, 2), b = iota_matrix(5, 3), v = {1, 2, 3};
  std::vector<double> d = {1, 2, 3, 4, 5, 6, 7, 8};
  fs::path one = tmp / "one.safetensors";
  write_safetensors(one, {{"emb", "F32", {4, 2}, a.data(), a.size() * 4}, {"bias", "F32", {3}, v.data(), 12}});
  ItemFeatures f = read_item_matrix(one, items);
  ASSERT_EQ(f.dim, 2);
  EXPECT_EQ(f.row(1)[0], a[0]);
  EXPECT_EQ(f.row(4)[1], a[7]);

  fs::path two = tmp / "two.safetensors";
  write_safetensors(two, {{"emb", "F32", {4, 2}, a.data(), a.size() * 4},
                          {"items.weight", "F32", {5, 3}, b.data(), b.size() * 4},
                          {"f64", "F64", {4, 2}, d.data(), d.size() * 8},
                          {"bias", "F32", {3}, v.data(), 12}});
  std::string msg = invalid_message([&] { read_item_matrix(two, items); });
  EXPECT_NE(msg.find(two.string() + ": field tensor: several 2-D float tensors"), std::string::npos) << msg;
  f = read_item_matrix(two, items, "items.weight");
  ASSERT_EQ(f.dim, 3);
  EXPECT_EQ(f.row(1)[0], b[3]);  // row 0 = padding
  f = read_item_matrix(two, items, "f64");
  EXPECT_EQ(f.row(2)[1], 4.0f);
  msg = invalid_message([&] { read_item_matrix(two, items, "bias"); });
  EXPECT_NE(msg.find("field bias: expected a 2-D tensor"), std::string::npos) << msg;
  msg = invalid_message([&] { read_item_matrix(two, items, "nope"); });
  EXPECT_NE(msg.find("nope"), std::string::npos) << msg;
  fs::path rows = tmp / "rows.safetensors";
  write_safetensors(rows, {{"emb", "F32", {3, 2}, a.data(), 24}});
  msg = invalid_message([&] { read_item_matrix(rows, items); });
  EXPECT_NE(msg.find(rows.string() + ": field shape: the matrix has 3 rows"), std::string::npos) << msg;
  fs::path ints = tmp / "ints.safetensors";
  std::vector<int32_t> iv(8, 1);
  write_safetensors(ints, {{"emb", "I32", {4, 2}, iv.data(), 32}});
  msg = invalid_message([&] { read_item_matrix(ints, items); });
  EXPECT_NE(msg.find("no 2-D float tensor"), std::string::npos) << msg;
  msg = invalid_message([&] { read_item_matrix(ints, items, "emb"); });
  EXPECT_NE(msg.find("field emb: dtype I32 is not supported"), std::string::npos) << msg;
  fs::path garbage = write_text(tmp / "garbage.safetensors", "xx");
  msg = invalid_message([&] { read_item_matrix(garbage, items); });
  EXPECT_NE(msg.find("garbage.safetensors"), std::string::npos) << msg;
  msg = invalid_message([&] { read_item_matrix(tmp / "a.npy", items, "emb"); });
  EXPECT_NE(msg.find("tensor=NAME applies to .safetensors"), std::string::npos) << msg;
}

TEST(ItemFeatures, TsvMatrixMatchesRawIdsAndReportsLines) {
  TempDir tmp;
  Vocabulary items;
  for (const char* r : {"B01", "B02", "B03", "B04"}) items.add(r);
  fs::path p = write_text(tmp / "emb.tsv", "# comment\nB03\t1\t2\n\nB01\t-0.5\t1e-1\r\n");
  ItemFeatures f = read_item_matrix(p, items);
  ASSERT_EQ(f.dim, 2);
  EXPECT_EQ(row_of(f, 3), (std::vector<float>{1, 2}));
  EXPECT_EQ(row_of(f, 1), (std::vector<float>{-0.5f, 0.1f}));
  EXPECT_EQ(row_of(f, 2), (std::vector<float>{0, 0}));
  EXPECT_EQ(f.has_content, (std::vector<uint8_t>{0, 1, 0, 1, 0}));

  struct Bad {
    std::string name, text, expect;
  };
  std::vector<Bad> bads = {
      {"unknown.tsv", "B01\t1\t2\nB02\t1\t2\nZZZ\t1\t2\n", ":3: field item: unknown item id 'ZZZ'"},
      {"cols.tsv", "B01\t1\t2\nB02\t1\n", ":2: has 1 values; earlier lines have 2"},
      {"num.tsv", "B01\t1\tx\n", ":1: field column 3: 'x' is not a finite number"},
      {"inf.tsv", "B01\t1\tinf\n", ":1: field column 3: 'inf' is not a finite number"},
      {"dup.tsv", "B01\t1\nB02\t1\nB01\t2\n", ":3: field item: item 'B01' already appeared on line 1"},
      {"notab.tsv", "B01 1 2\n", ":1: expected RAW_ITEM_ID<TAB>"},
      {"empty.tsv", "# nothing\n", ": no rows"},
  };
  for (const auto& b : bads) {
    fs::path bp = write_text(tmp / b.name, b.text);
    std::string msg = invalid_message([&] { read_item_matrix(bp, items); });
    EXPECT_NE(msg.find(bp.string() + b.expect), std::string::npos) << b.name << " -> " << msg;
  }
}

TEST(ItemFeatures, WeightsScaleConcatenatedBlocks) {
  TempDir tmp;
  Dataset ds = small_dataset(40);
  // A TSV source covering half the items.
  std::string tsv;
  for (int32_t i = 1; i <= ds.n_items(); i += 2) tsv += ds.items.raw(i) + "\t" + std::to_string(i) + "\t1\t-2\n";
  fs::path mp = write_text(tmp / "m.tsv", tsv);
  ItemFeatureOptions opt;
  opt.sources = {parse_feature_spec("text:8"), parse_feature_spec("attributes:4:2.5"),
                 parse_feature_spec("matrix:" + mp.string() + ":0.5")};
  ItemFeatures all = build_item_features(ds, opt, 9);
  ASSERT_EQ(all.dim, 8 + 4 + 3);
  ItemFeatures t = build_item_feature_block(ds, opt.sources[0], 9);
  ItemFeatures a = build_item_feature_block(ds, opt.sources[1], 9 + 1000003ull);
  ItemFeatures m = build_item_feature_block(ds, opt.sources[2], 0);
  for (int32_t i = 0; i <= ds.n_items(); ++i) {
    for (int64_t j = 0; j < 8; ++j) EXPECT_FLOAT_EQ(all.row(i)[j], t.row(i)[j]);
    for (int64_t j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(all.row(i)[8 + j], 2.5f * a.row(i)[j]);
    for (int64_t j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(all.row(i)[12 + j], 0.5f * m.row(i)[j]);
  }
  // Blocks are normalised before weighting: the block norms are the weights.
  EXPECT_NEAR(norm_of(std::vector<float>(all.row(3) + 8, all.row(3) + 12)), 2.5, 1e-5);
  EXPECT_NEAR(norm_of(std::vector<float>(all.row(3) + 12, all.row(3) + 15)), 0.5, 1e-5);
  EXPECT_EQ(norm_of(std::vector<float>(all.row(2) + 12, all.row(2) + 15)), 0.0);  // not in the TSV
  EXPECT_EQ(all.has_content[2], 1);  // text still covers it
  ASSERT_EQ(all.report["sources"].size(), 3u);
  EXPECT_EQ(all.report["sources"][2]["items_with_content"], (ds.n_items() + 1) / 2);
  EXPECT_EQ(all.report["sources"][1]["columns"], (nlohmann::json{8, 12}));
  EXPECT_EQ(all.report["items_without_content"], 0);
  // A source error names its position.
  ItemFeatureOptions bad;
  bad.sources = {parse_feature_spec("text:8"), parse_feature_spec("matrix:" + (tmp / "nope.npy").string())};
  std::string msg = invalid_message([&] { build_item_features(ds, bad, 1); });
  EXPECT_NE(msg.find("feature source 2 (matrix)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nope.npy"), std::string::npos) << msg;
}

TEST(ItemFeatures, RunSourceTakesTheCheckpointsItemEmbeddings) {
  TempDir tmp;
  Dataset ds = small_dataset(50, 3);
  save_dataset(ds, tmp / "data");
  TrainRequest req;
  req.config_text =
      "[model]\ntype = \"sasrec\"\nd_model = 8\nmax_len = 10\nn_blocks = 1\nn_heads = 1\n"
      "[train]\nepochs = 1\nbatch_size = 64\nthreads = 1\n[eval]\nks = [10]\n";
  req.data = tmp / "data";
  req.out = tmp / "sasrec";
  train_run(req);
  ItemFeatureSource src = parse_feature_spec("run:" + (tmp / "sasrec").string() + ":normalize=false");
  ItemFeatures f = build_item_feature_block(ds, src, 1);
  LoadedCheckpoint ck = load_checkpoint(tmp / "sasrec" / "checkpoints" / "best.ckpt");
  torch::Tensor table = ck.model->item_embeddings().contiguous();
  ASSERT_EQ(f.dim, table.size(1));
  for (int32_t i = 1; i <= ds.n_items(); ++i) {
    int32_t r = *ck.items.find(ds.items.raw(i));
    for (int64_t j = 0; j < f.dim; ++j) ASSERT_FLOAT_EQ(f.row(i)[j], table[r][j].item<float>());
  }
  EXPECT_EQ(f.report["model"], "sasrec");
  ItemFeatures normed = build_item_feature_block(ds, parse_feature_spec("run:" + (tmp / "sasrec").string()), 1);
  EXPECT_NEAR(norm_of(row_of(normed, 1)), 1.0, 1e-5);

  TrainRequest pop = req;
  pop.config_text = "[model]\ntype = \"pop\"\n[train]\nthreads = 1\n";
  pop.out = tmp / "pop";
  train_run(pop);
  std::string msg = invalid_message(
      [&] { build_item_feature_block(ds, parse_feature_spec("run:" + (tmp / "pop").string()), 1); });
  EXPECT_NE(msg.find("model type 'pop' has no item embeddings"), std::string::npos) << msg;
  msg = invalid_message([&] { build_item_feature_block(ds, parse_feature_spec("run:" + (tmp / "data").string()), 1); });
  EXPECT_NE(msg.find("not a run directory"), std::string::npos) << msg;
}

TEST(SidBuild, LibraryRunWritesCodesAndFailureLeavesNothing) {
  TempDir tmp;
  Dataset ds = small_dataset(60);
  save_dataset(ds, tmp / "data");
  SidBuildRequest req;
  req.data = tmp / "data";
  req.out = tmp / "sid";
  req.features = {"text:16", "attributes:8:0.5"};
  req.levels = 2;
  req.codebook_size = 8;
  req.threads = 1;
  nlohmann::json r = sid_build_run(req);
  for (const char* f : {"codes.json", "codes.bin", "report.json", "rq.safetensors"})
    EXPECT_TRUE(fs::exists(tmp / "sid" / f)) << f;
  EXPECT_EQ(r["items"], 60);
  EXPECT_EQ(r["features"]["dim"], 24);
  EXPECT_TRUE(r.contains("quantizer"));
  EXPECT_TRUE(r.contains("codebook"));
  EXPECT_TRUE(r.contains("collision_rate_before_resolution"));
  EXPECT_GT(r["peak_rss_mb"].get<double>(), 0.0);
  EXPECT_EQ(nlohmann::json::parse(genrec::test::read_text(tmp / "sid" / "report.json")), r);
  SemanticIds sid = read_semantic_ids(tmp / "sid" / "codes.bin", ds.items);
  EXPECT_EQ(sid.n_items, 60);
  std::set<std::vector<int32_t>> uniq;
  for (int32_t i = 1; i <= sid.n_items; ++i) uniq.insert(std::vector<int32_t>(sid.item_codes(i), sid.item_codes(i) + sid.levels));
  EXPECT_EQ(uniq.size(), 60u);
  SemanticIds js = read_semantic_ids(tmp / "sid" / "codes.json", ds.items);
  EXPECT_EQ(js.codes, sid.codes);

  // Same request again: the output exists.
  EXPECT_NE(invalid_message([&] { sid_build_run(req); }).find("already exists"), std::string::npos);
  // A bad source fails before anything is written.
  req.out = tmp / "sid_bad";
  req.features = {"text:16", "matrix:" + write_text(tmp / "bad.tsv", "nope\t1\n").string()};
  EXPECT_NE(invalid_message([&] { sid_build_run(req); }).find("bad.tsv:1: field item"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "sid_bad"));
  for (const auto& e : fs::directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename().string().find("sid_bad"), std::string::npos) << e.path();

  // Import the codes back (JSON map keyed by raw id).
  nlohmann::json map = nlohmann::json::object();
  for (int32_t i = 1; i <= sid.n_items; ++i)
    map[ds.items.raw(i)] = std::vector<int32_t>(sid.item_codes(i), sid.item_codes(i) + sid.levels);
  fs::path mp = write_text(tmp / "map.json", map.dump());
  SidBuildRequest imp;
  imp.data = tmp / "data";
  imp.out = tmp / "sid_import";
  imp.import_codes = mp;
  nlohmann::json ir = sid_build_run(imp);
  EXPECT_EQ(ir["method"], "import");
  EXPECT_EQ(ir["collision_rate_before_resolution"], 0.0);
  EXPECT_EQ(read_semantic_ids(tmp / "sid_import" / "codes.bin", ds.items).codes, sid.codes);
  EXPECT_FALSE(fs::exists(tmp / "sid_import" / "rq.safetensors"));
  nlohmann::json st = sid_stats_run(tmp / "sid_import" / "codes.json", tmp / "data");
  EXPECT_EQ(st["items"], 60);
}

TEST(SidBuild, CliEndToEnd) {
  TempDir tmp;
  auto g = run_cli("-q data generate --out " + q(tmp / "data") + " --users 200 --items 80 --seed 4 --clusters 8");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  auto r = run_cli("-q sid build --data " + q(tmp / "data") + " --out " + q(tmp / "sid") +
                   " --features text:16 --features attributes:8:0.5 --levels 2 --codebook 8 --seed 3 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["items"], 80);
  EXPECT_EQ(j["method"], "rq-kmeans");
  EXPECT_EQ(j["features"]["sources"].size(), 2u);
  for (const char* f : {"codes.json", "codes.bin", "report.json"}) EXPECT_TRUE(fs::exists(tmp / "sid" / f)) << f;
  auto st = run_cli("sid stats --codes " + q(tmp / "sid" / "codes.bin") + " --data " + q(tmp / "data"));
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(nlohmann::json::parse(st.out)["items"], 80);

  // Bad input: exit 2 and nothing written.
  auto bad = run_cli("-q sid build --data " + q(tmp / "data") + " --out " + q(tmp / "sid2") + " --features bogus:3");
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("unknown kind 'bogus'"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(tmp / "sid2"));
  auto again = run_cli("-q sid build --data " + q(tmp / "data") + " --out " + q(tmp / "sid"));
  EXPECT_EQ(again.exit_code, 2) << again.err;
  auto nodata = run_cli("-q sid build --data " + q(tmp / "nodata") + " --out " + q(tmp / "sid3"));
  EXPECT_EQ(nodata.exit_code, 2) << nodata.err;
  EXPECT_FALSE(fs::exists(tmp / "sid3"));
}
