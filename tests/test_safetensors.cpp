// Safetensors reader/writer (core/safetensors.h), its torch bridge and `genrec export`
// (models/export.h): round trips, a hand-computed byte layout, every malformed-file path, and the
// export of tiny trained runs checked against their checkpoints.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/safetensors.h"
#include "genrec/data/dataset.h"
#include "genrec/data/generator.h"
#include "genrec/models/export.h"
#include "genrec/models/recommender.h"
#include "genrec/models/safetensors_torch.h"
#include "genrec/rank/ranker.h"
#include "genrec/train/runner.h"
#include "test_util.h"

using namespace genrec;
using genrec::test::read_text;
using genrec::test::run_cli;
using genrec::test::TempDir;
using genrec::test::write_text;
namespace fs = std::filesystem;

namespace {

std::string le64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// A file with a given header text and data buffer (no padding: readers must not need it).
std::string raw_file(const std::string& header, const std::string& buffer = "") {
  return le64(header.size()) + header + buffer;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// Opening `path` must throw InvalidInput whose message names the file and contains every needle.
void expect_rejected(const fs::path& path, const std::vector<std::string>& needles) {
  const std::string msg = genrec::test::invalid_message([&] { SafetensorsFile file(path); });
  EXPECT_NE(msg.find(path.string()), std::string::npos) << "message does not name the file: " << msg;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
}

// The checkpoint's "model/..." tensors, read independently of the exporter: name without the
// "model/" prefix and the "param/" / "buffer/" level -> tensor.
std::map<std::string, torch::Tensor> checkpoint_model_tensors(const fs::path& ckpt, std::vector<std::string>* all_keys = nullptr) {
  std::string data = read_text(ckpt);
  torch::serialize::InputArchive archive;
  archive.load_from(data.data() + 24, data.size() - 24);  // header: magic, version, crc, size
  std::map<std::string, torch::Tensor> out;
  for (const auto& key : archive.keys()) {
    if (all_keys) all_keys->push_back(key);
    std::string name;
    if (key.rfind("model/param/", 0) == 0) name = key.substr(12);
    else if (key.rfind("model/buffer/", 0) == 0) name = key.substr(13);
    else if (key.rfind("model/", 0) == 0) name = key.substr(6);
    else continue;
    c10::IValue v;
    archive.read(key, v);
    if (v.isTensor()) out[name] = v.toTensor();
  }
  return out;
}

void make_tiny_dataset(const fs::path& dir) {
  GeneratorOptions g;
  g.n_users = 120;
  g.n_items = 50;
  g.n_clusters = 5;
  g.seed = 3;
  save_dataset(generate_dataset(g), dir);
}

// `model_table`: the [model] table; `train_keys`: extra lines for [train].
fs::path train_tiny(const fs::path& data, const fs::path& out, const std::string& model_table,
                    const std::string& train_keys = "") {
  TrainRequest req;
  req.config_text = model_table + "\n[train]\nthreads = 1\nseed = 7\n" + train_keys + "\n[eval]\nks = [10]\n";
  req.data = data;
  req.out = out;
  train_run(req);
  return out;
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  TempDir tmp;
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {3}, {2, 3}, {2, 0, 4}, {1, 1, 1, 5}};
  std::vector<std::string> storage;
  std::vector<SafetensorsTensor> tensors;
  storage.reserve(safetensors_dtypes().size() * shapes.size());
  for (const auto& dtype : safetensors_dtypes()) {
    size_t elem = safetensors_dtype_size(dtype);
    ASSERT_GT(elem, 0u) << dtype;
    for (size_t s = 0; s < shapes.size(); ++s) {
      int64_t numel = 1;
      for (auto d : shapes[s]) numel *= d;
      std::string bytes(static_cast<size_t>(numel) * elem, '\0');
      for (size_t i = 0; i < bytes.size(); ++i)
        bytes[i] = static_cast<char>(dtype == "BOOL" ? (i * 7 + s) % 2 : (i * 37 + s * 11 + elem) & 0xff);
      storage.push_back(bytes);
      tensors.push_back({dtype + "_" + std::to_string(s), dtype, shapes[s], storage.back().data(), storage.back().size()});
    }
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"empty", ""}, {"unicode", "Grüße ✓ 推荐"}, {"escapes", "a\"b\\c\nd\te"}};
  const fs::path path = tmp / "all.safetensors";
  write_safetensors(path, tensors, metadata);

  SafetensorsFile file(path);
  EXPECT_TRUE(file.memory_mapped());
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_EQ(file.header_bytes() % 8, 0u);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const SafetensorsView& v = file.at(t.name);
    EXPECT_EQ(v.dtype, t.dtype);
    EXPECT_EQ(v.shape, t.shape);
    EXPECT_EQ(v.nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(v.data, t.data, t.nbytes), 0) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % safetensors_dtype_size(t.dtype), 0u) << t.name << " is unaligned";
    total += t.nbytes;
  }
  EXPECT_EQ(file.file_bytes(), 8 + file.header_bytes() + total);
  for (size_t i = 1; i < file.tensors().size(); ++i) EXPECT_LT(file.tensors()[i - 1].name, file.tensors()[i].name);
  EXPECT_EQ(file.find("nope"), nullptr);
  EXPECT_THROW(file.at("nope"), InvalidInput);

  // Views stay valid when the file object moves.
  const void* before = file.at("F32_3").data;
  SafetensorsFile moved = std::move(file);
  EXPECT_EQ(moved.at("F32_3").data, before);

  // Torch: every dtype libtorch 1.13 has, with the same bytes; scalars are 0-dimensional.
  SafetensorsFile subset_src(path);
  std::map<std::string, torch::Tensor> torch_tensors;
  for (const auto& v : subset_src.tensors()) {
    if (v.dtype == "U16" || v.dtype == "U32" || v.dtype == "U64" || v.dtype.rfind("F8_", 0) == 0) {
      EXPECT_THROW(to_torch(subset_src, v), InvalidInput) << v.dtype;
      continue;
    }
    torch::Tensor t = to_torch(subset_src, v);
    EXPECT_EQ(safetensors_dtype_of(t.scalar_type()), v.dtype);
    EXPECT_EQ(t.sizes().vec(), v.shape);
    EXPECT_EQ(std::memcmp(t.data_ptr(), v.data, v.nbytes), 0) << v.name;
    torch_tensors[v.name] = t;
  }
  EXPECT_EQ(torch_tensors.at("F64_0").dim(), 0);
  // ... and back through the torch writer, bit for bit.
  write_safetensors_from_torch(tmp / "torch.safetensors", torch_tensors, metadata);
  auto again = read_safetensors_to_torch(tmp / "torch.safetensors");
  ASSERT_EQ(again.size(), torch_tensors.size());
  for (const auto& [name, t] : torch_tensors) {
    EXPECT_EQ(again.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(again.at(name), t) || t.numel() == 0 || t.is_floating_point()) << name;
    EXPECT_EQ(std::memcmp(again.at(name).data_ptr(), t.data_ptr(), t.numel() * t.element_size()), 0) << name;
  }
  // Non-contiguous input is written as its logical (row-major) contents.
  torch::Tensor m = torch::arange(6, torch::kFloat).reshape({2, 3});
  write_safetensors_from_torch(tmp / "t.safetensors", {{"mt", m.t()}});
  EXPECT_TRUE(torch::equal(read_safetensors_to_torch(tmp / "t.safetensors").at("mt"), m.t()));

  // No tensors at all, no metadata: "{}" padded to 8 bytes.
  write_safetensors(tmp / "empty.safetensors", {});
  EXPECT_EQ(read_text(tmp / "empty.safetensors"), le64(8) + "{}      ");
  SafetensorsFile empty(tmp / "empty.safetensors");
  EXPECT_TRUE(empty.tensors().empty());
  EXPECT_TRUE(empty.metadata().empty());
}

TEST(Safetensors, ByteExactLayoutOfAHandComputedFile) {
  TempDir tmp;
  const int16_t a = 258;                   // 0x0102 -> bytes 02 01
  const float b[2] = {1.0f, -2.0f};        // 00 00 80 3f, 00 00 00 c0
  std::vector<SafetensorsTensor> tensors = {{"b", "F32", {2}, b, sizeof(b)}, {"a", "I16", {}, &a, sizeof(a)}};
  // Larger elements first (alignment), then by name: b at [0, 8), a at [8, 10).
  // The JSON is 132 bytes; padded with 4 spaces to 136 = 0x88.
  const std::string json =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"I16","shape":[],"data_offsets":[8,10]}})";
  ASSERT_EQ(json.size(), 132u);
  const std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + json + "    " +
                               std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8) + std::string("\x02\x01", 2);
  ASSERT_EQ(expected.size(), 154u);
  EXPECT_EQ(safetensors_bytes(tensors, {{"k", "v"}}), expected);
  write_safetensors(tmp / "tiny.safetensors", tensors, {{"k", "v"}});
  EXPECT_EQ(read_text(tmp / "tiny.safetensors"), expected);

  SafetensorsFile file(tmp / "tiny.safetensors");
  EXPECT_EQ(file.header_bytes(), 136u);
  EXPECT_EQ(file.at("b").offset, 0u);
  EXPECT_EQ(file.at("a").offset, 8u);
  EXPECT_EQ(file.at("a").numel(), 1);
  float back[2];
  std::memcpy(back, file.at("b").data, sizeof(back));
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -2.0f);
  auto t = read_safetensors_to_torch(tmp / "tiny.safetensors");
  EXPECT_EQ(t.at("a").item<int16_t>(), 258);
  EXPECT_TRUE(torch::equal(t.at("b"), torch::tensor({1.0f, -2.0f})));

  // An unpadded header from another writer, and tensors out of name order in the buffer, are fine.
  write_text(tmp / "other.safetensors",
             raw_file(R"({"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                      "abc"));
  SafetensorsFile other(tmp / "other.safetensors");
  EXPECT_EQ(std::string(static_cast<const char*>(other.at("y").data), 2), "bc");
  EXPECT_EQ(other.tensors().front().name, "y");
}

TEST(Safetensors, MalformedFilesAreRejectedNamingFileAndField) {
  TempDir tmp;
  auto f32 = [](const std::string& name, const std::string& shape, const std::string& offsets) {
    return "\"" + name + R"(":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
  };
  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"short", "abc", {"too short"}},
      {"beyond", le64(1000) + "{}", {"header length", "beyond the end of the file"}},
      {"huge_length", le64(uint64_t{1} << 62) + "{}", {"header length", "beyond the end"}},
      {"empty_header", le64(0), {"empty header"}},
      {"bad_json", raw_file(R"({"w": )"), {"field header", "not valid JSON"}},
      {"trailing_garbage", raw_file("{}x"), {"not valid JSON"}},
      {"nul_padding", raw_file(std::string("{}\0\0", 4)), {"NUL byte at offset 2"}},
      {"not_object", raw_file("[1,2]"), {"header is a JSON array"}},
      {"bad_utf8", raw_file("{\"\xff\":1}"), {"not valid JSON"}},
      {"unknown_dtype", raw_file(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, 'x')),
       {"field w", "unknown dtype 'F128'"}},
      {"dtype_not_string", raw_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "xxxx"), {"field w", "dtype 4"}},
      {"missing_shape", raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "xxxx"), {"field w", "missing \"shape\""}},
      {"missing_offsets", raw_file(R"({"w":{"dtype":"F32","shape":[1]}})", "xxxx"), {"field w", "missing \"data_offsets\""}},
      {"shape_not_array", raw_file("{" + f32("w", "4", "[0,16]") + "}", std::string(16, 'x')), {"field w", "shape 4"}},
      {"negative_dim", raw_file("{" + f32("w", "[-1]", "[0,4]") + "}", "xxxx"), {"field w", "shape dimension -1"}},
      {"fractional_dim", raw_file("{" + f32("w", "[1.5]", "[0,4]") + "}", "xxxx"), {"field w", "shape dimension 1.5"}},
      {"offsets_arity", raw_file("{" + f32("w", "[1]", "[0]") + "}", "xxxx"), {"field w", "data_offsets [0]"}},
      {"offsets_huge", raw_file("{" + f32("w", "[1]", "[0,1e30]") + "}", "xxxx"), {"field w", "data_offsets end"}},
      {"begin_after_end", raw_file("{" + f32("w", "[1]", "[4,0]") + "}", "xxxx"), {"field w", "begin is after end"}},
      {"beyond_buffer", raw_file("{" + f32("w", "[2]", "[0,8]") + "}", "xxxx"),
       {"field w", "beyond the data buffer (4 bytes)"}},
      {"size_mismatch", raw_file("{" + f32("w", "[3]", "[0,8]") + "}", "xxxxxxxx"), {"field w", "span 8 bytes", "needs 12"}},
      {"numel_overflow", raw_file("{" + f32("w", "[4294967296,4294967296]", "[0,0]") + "}"), {"field w", "too large"}},
      {"overlap", raw_file("{" + f32("a", "[2]", "[0,8]") + "," + f32("b", "[2]", "[4,12]") + "}", std::string(12, 'x')),
       {"field b", "overlap tensor 'a'"}},
      {"gap", raw_file("{" + f32("a", "[1]", "[0,4]") + "," + f32("b", "[1]", "[8,12]") + "}", std::string(12, 'x')),
       {"field b", "gap of 4 bytes after tensor 'a'"}},
      {"gap_at_start", raw_file("{" + f32("a", "[1]", "[4,8]") + "}", std::string(8, 'x')),
       {"field a", "gap of 4 bytes after the start"}},
      {"trailing_bytes", raw_file("{" + f32("a", "[1]", "[0,4]") + "}", std::string(8, 'x')),
       {"field data", "4 bytes after the last tensor ('a')"}},
      {"trailing_bytes_no_tensors", raw_file("{}", "xx"), {"2 bytes after the last tensor"}},
      {"duplicate_name", raw_file("{" + f32("w", "[1]", "[0,4]") + "," + f32("w", "[1]", "[4,8]") + "}", std::string(8, 'x')),
       {"field w", "duplicate tensor name"}},
      {"duplicate_field", raw_file(R"({"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})", "xxxx"),
       {"field w", "duplicate key \"dtype\""}},
      {"duplicate_metadata", raw_file(R"({"__metadata__":{"k":"a","k":"b"}})"), {"field __metadata__", "duplicate key \"k\""}},
      {"metadata_not_string", raw_file(R"({"__metadata__":{"k":1}})"), {"field __metadata__.k", "expected a string"}},
      {"metadata_not_object", raw_file(R"({"__metadata__":["k"]})"), {"field __metadata__", "expected an object"}},
      {"entry_not_object", raw_file(R"({"w":3})"), {"field w", "tensor entry is a JSON number"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path p = write_text(tmp / (c.name + ".safetensors"), c.bytes);
    expect_rejected(p, c.needles);
  }
  expect_rejected(tmp / "missing.safetensors", {"file not found"});
  fs::create_directories(tmp / "dir.safetensors");
  expect_rejected(tmp / "dir.safetensors", {"is a directory"});

  // BOOL bytes other than 0/1 are refused when converting to torch.
  write_text(tmp / "bool.safetensors", raw_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x02"));
  SafetensorsFile bools(tmp / "bool.safetensors");
  EXPECT_INVALID(to_torch(bools, bools.at("m")), "field m: BOOL byte 1 is 2");
}

TEST(Safetensors, WriterRejectsBadTensorsAndWritesAtomically) {
  TempDir tmp;
  const float x[2] = {1, 2};
  const fs::path out = tmp / "w.safetensors";
  auto rejected = [&](const std::vector<SafetensorsTensor>& t, const std::string& needle,
                      const std::map<std::string, std::string>& meta = {}) {
    EXPECT_INVALID(write_safetensors(out, t, meta), out.string(), needle);
    EXPECT_FALSE(fs::exists(out));
  };
  rejected({{"w", "F24", {2}, x, 8}}, "field w: dtype 'F24' is not a safetensors dtype");
  rejected({{"w", "F32", {3}, x, 8}}, "field w: shape [3] of F32 needs 12 bytes, got 8");
  rejected({{"w", "F32", {-2}, x, 8}}, "field w: negative dimension");
  rejected({{"w", "F32", {2}, x, 8}, {"w", "F32", {2}, x, 8}}, "field w: duplicate tensor name");
  rejected({{"__metadata__", "F32", {2}, x, 8}}, "reserved");
  rejected({{"w", "F32", {2}, nullptr, 8}}, "field w: no data");
  rejected({{"\xff", "F32", {2}, x, 8}}, "not valid UTF-8");
  rejected({}, "field __metadata__.k: metadata is not valid UTF-8", {{"k", "\xc3"}});

  // Replacing an existing file leaves only the new one (no temporary files).
  write_text(out, "old contents");
  write_safetensors(out, {{"w", "F32", {2}, x, 8}});
  EXPECT_EQ(SafetensorsFile(out).at("w").nbytes, 8u);
  int n_files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) n_files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(n_files, 1);
}

TEST(Safetensors, ExportOfATrainedSasrecRunMatchesItsCheckpoint) {
  TempDir tmp;
  make_tiny_dataset(tmp / "data");
  const fs::path run = train_tiny(tmp / "data", tmp / "run", R"(
[model]
type = "sasrec"
d_model = 16
max_len = 10
n_blocks = 1
)",
                                "epochs = 2\nbatch_size = 16\n");
  const fs::path out = tmp / "export" / "sasrec.safetensors";
  ExportSummary s = export_safetensors(run, out);
  EXPECT_EQ(s.model_type, "sasrec");
  EXPECT_EQ(s.checkpoint, run / "checkpoints" / "best.ckpt");
  EXPECT_EQ(s.bytes, fs::file_size(out));

  // Tensors: exactly the checkpoint's model tensors, bit for bit, no training state.
  std::vector<std::string> keys;
  auto expected = checkpoint_model_tensors(run / "checkpoints" / "best.ckpt", &keys);
  bool has_train_state = false;
  for (const auto& k : keys) has_train_state |= k.rfind("train/", 0) == 0;
  EXPECT_TRUE(has_train_state) << "the checkpoint should hold training state that the export leaves out";
  auto got = read_safetensors_to_torch(out);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(s.n_tensors, static_cast<int64_t>(expected.size()));
  int64_t n_params = 0;
  for (const auto& [name, t] : expected) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_EQ(got.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(got.at(name), t)) << name;
    n_params += t.numel();
  }
  EXPECT_EQ(s.n_parameters, n_params);
  ASSERT_TRUE(got.count("items.weight"));
  EXPECT_EQ(got.at("items.weight").sizes().vec(), (std::vector<int64_t>{51, 16}));
  bool has_encoder = false;
  for (const auto& [name, t] : got) has_encoder |= name.rfind("encoder.", 0) == 0;
  EXPECT_TRUE(has_encoder);

  // Independent check of the layout with a plain JSON parser.
  const std::string bytes = read_text(out);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  LoadedCheckpoint ckpt = load_checkpoint(run / "checkpoints" / "best.ckpt");
  const auto& meta = header.at("__metadata__");
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("model_type"), "sasrec");
  EXPECT_EQ(meta.at("genrec_version"), GENREC_VERSION);
  EXPECT_EQ(meta.at("n_items"), "50");
  EXPECT_EQ(meta.at("checkpoint"), "best");
  EXPECT_EQ(nlohmann::json::parse(meta.at("options").get<std::string>()), ckpt.meta.at("options"));
  EXPECT_EQ(nlohmann::json::parse(meta.at("checkpoint_meta").get<std::string>()).at("epoch"),
            ckpt.meta.at("extra").at("epoch"));
  EXPECT_EQ(nlohmann::json::parse(meta.at("state").get<std::string>()).at("has_timestamps"), true);
  nlohmann::json items = nlohmann::json::parse(meta.at("items").get<std::string>());
  ASSERT_EQ(items.size(), 50u);
  for (int32_t id = 1; id <= 50; ++id) EXPECT_EQ(items[id - 1], ckpt.items.raw(id));
  uint64_t pos = 0;
  for (const auto& [name, entry] : header.items()) {  // by name; all F32, so that is the buffer order too
    if (name == "__metadata__") continue;
    const auto& off = entry.at("data_offsets");
    EXPECT_EQ(off[0].get<uint64_t>(), pos) << name;
    pos = off[1].get<uint64_t>();
    EXPECT_EQ(entry.at("dtype"), "F32") << name;
    EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), expected.at(name).sizes().vec()) << name;
    const torch::Tensor& t = expected.at(name);
    EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + off[0].get<uint64_t>(), t.contiguous().data_ptr(), t.numel() * 4), 0)
        << name;
  }
  EXPECT_EQ(8 + n + pos, bytes.size());

  // The last checkpoint, and a checkpoint file given directly.
  ExportSummary last = export_safetensors(run, tmp / "last.safetensors", "last");
  EXPECT_EQ(last.checkpoint, run / "checkpoints" / "last.ckpt");
  EXPECT_EQ(SafetensorsFile(tmp / "last.safetensors").metadata().at("checkpoint"), "last");
  export_safetensors(run / "checkpoints" / "best.ckpt", tmp / "file.safetensors");
  EXPECT_EQ(SafetensorsFile(tmp / "file.safetensors").metadata().at("checkpoint"), "best.ckpt");
  EXPECT_THROW(export_safetensors(run, tmp / "x.safetensors", "middle"), InvalidInput);
  EXPECT_THROW(export_safetensors(tmp / "no_run", tmp / "x.safetensors"), InvalidInput);
  EXPECT_THROW(export_safetensors(tmp / "data", tmp / "x.safetensors"), InvalidInput);  // not a run
  write_text(tmp / "junk.ckpt", "not a checkpoint");
  EXPECT_THROW(export_safetensors(tmp / "junk.ckpt", tmp / "x.safetensors"), InvalidInput);
  EXPECT_FALSE(fs::exists(tmp / "x.safetensors"));
}

TEST(Safetensors, ExportCommandLine) {
  TempDir tmp;
  make_tiny_dataset(tmp / "data");
  const fs::path run = train_tiny(tmp / "data", tmp / "run",
                                  "[model]\ntype = \"sasrec\"\nd_model = 8\nmax_len = 5\nn_blocks = 1\n", "epochs = 1\n");
  // The CLI: JSON summary, exit 2 on bad input, no overwrite without --force.
  const fs::path cli_out = tmp / "cli.safetensors";
  auto r = run_cli("export --run " + q(run) + " --format safetensors --out " + q(cli_out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("exported sasrec"), std::string::npos) << r.err;  // the log line
  nlohmann::json summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["model"], "sasrec");
  EXPECT_EQ(summary["tensors"], export_safetensors(run, tmp / "lib.safetensors").n_tensors);
  EXPECT_EQ(read_text(cli_out), read_text(tmp / "lib.safetensors"));  // same bytes as the library call
  auto again = run_cli("-q export --run " + q(run) + " --format safetensors --out " + q(cli_out));
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(read_text(cli_out), read_text(tmp / "lib.safetensors"));  // untouched
  auto forced = run_cli("-q export --run " + q(run) + " --checkpoint last --format safetensors --out " + q(cli_out) + " --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(SafetensorsFile(cli_out).metadata().at("checkpoint"), "last");
  auto format = run_cli("-q export --run " + q(run) + " --format onnx --out " + q(tmp / "y.onnx"));
  EXPECT_EQ(format.exit_code, 2);
  EXPECT_NE(format.err.find("unknown format 'onnx'"), std::string::npos) << format.err;
  auto missing = run_cli("-q export --run " + q(tmp / "no_run") + " --out " + q(tmp / "y.safetensors"));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no_run"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(tmp / "y.onnx"));
  EXPECT_FALSE(fs::exists(tmp / "y.safetensors"));
  auto help = run_cli("export --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* opt : {"--run", "--checkpoint", "--format", "--out", "--force"})
    EXPECT_NE(help.out.find(opt), std::string::npos) << opt;
}

TEST(Safetensors, ExportOfBaselinesHoldsTheirTables) {
  TempDir tmp;
  make_tiny_dataset(tmp / "data");
  const std::map<std::string, std::vector<std::string>> expect_names = {
      {"pop", {"counts"}}, {"markov", {"indices", "indptr", "pop", "values"}}};
  for (const auto& [type, names] : expect_names) {
    SCOPED_TRACE(type);
    const fs::path run = train_tiny(tmp / "data", tmp / type, "[model]\ntype = \"" + type + "\"\n");
    export_safetensors(run, tmp / (type + ".safetensors"));
    auto got = read_safetensors_to_torch(tmp / (type + ".safetensors"));
    auto expected = checkpoint_model_tensors(run / "checkpoints" / "best.ckpt");
    std::vector<std::string> got_names;
    for (const auto& [name, t] : got) got_names.push_back(name);
    EXPECT_EQ(got_names, names);
    for (const auto& [name, t] : expected) EXPECT_TRUE(torch::equal(got.at(name), t)) << name;
    SafetensorsFile file(tmp / (type + ".safetensors"));
    EXPECT_EQ(file.metadata().at("model_type"), type);
    EXPECT_EQ(file.metadata().count("state"), 0u);
  }
}

TEST(Safetensors, ExportOfRankersHoldsTheirNetworkAndFeedbackVocabulary) {
  TempDir tmp;
  GeneratorOptions g;
  g.n_users = 80;
  g.n_items = 30;
  g.ratings = true;
  g.seed = 4;
  save_dataset(generate_dataset(g), tmp / "data");
  for (const std::string type : {"genrank", "din"}) {
    SCOPED_TRACE(type);
    TrainRequest req;
    req.config_text = "[data]\nsplit = \"temporal\"\n[model]\ntype = \"" + type +
                      "\"\nd_model = 8\nmax_len = 12\n[train]\nepochs = 2\nthreads = 1\n";
    req.data = tmp / "data";
    req.out = tmp / type;
    train_run(req);
    const fs::path out = tmp / (type + ".safetensors");
    ExportSummary s = export_safetensors(req.out, out);
    EXPECT_EQ(s.model_type, type);
    // The network's parameters as the best checkpoint loads them, bit for bit, and nothing of
    // the training state (the checkpoint holds optimizer state and a best-weights copy).
    LoadedRanker r = load_ranker_checkpoint(req.out / "checkpoints" / "best.ckpt");
    auto got = read_safetensors_to_torch(out);
    const auto params = r.ranker->net().named_parameters();
    ASSERT_EQ(got.size(), params.size());
    for (const auto& p : params) {
      ASSERT_TRUE(got.count(p.key())) << p.key();
      EXPECT_TRUE(torch::equal(got.at(p.key()), p.value())) << p.key();
    }
    std::vector<std::string> keys;
    checkpoint_model_tensors(req.out / "checkpoints" / "best.ckpt", &keys);
    EXPECT_NE(std::find(keys.begin(), keys.end(), "train/meta"), keys.end());
    ASSERT_TRUE(got.count("items.weight"));
    EXPECT_EQ(got.at("items.weight").size(0), 31);
    SafetensorsFile file(out);
    const auto& meta = file.metadata();
    EXPECT_EQ(meta.at("model_type"), type);
    EXPECT_EQ(nlohmann::json::parse(meta.at("options")).at("tasks"), (std::vector<std::string>{"like", "rating"}));
    // Rating levels 1-5 are the feedback tokens 1-5.
    EXPECT_EQ(meta.at("n_feedback"), "5");
    EXPECT_EQ(nlohmann::json::parse(meta.at("feedback_names")), (std::vector<std::string>{"1", "2", "3", "4", "5"}));
  }
}
