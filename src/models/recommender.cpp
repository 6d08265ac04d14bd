#include "genrec/models/recommender.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <set>
#include <sstream>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/models/baselines.h"
#include "genrec/models/sequential.h"
#include "genrec/models/tiger.h"

namespace genrec {

namespace {
constexpr char kCkptMagic[8] = {'G', 'R', 'E', 'C', 'C', 'K', 'P', '1'};
constexpr uint32_t kCkptVersion = 1;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8;
}  // namespace

const std::vector<std::string>& recommender_types() {
  static const std::vector<std::string> types = {"pop", "markov", "sasrec", "hstu", "tiger"};
  return types;
}

std::unique_ptr<Recommender> make_recommender(Config& cfg, int32_t n_items) {
  std::string type = cfg.get_string("model.type", "markov");
  nlohmann::json options = nlohmann::json::object();
  if (type == "markov") {
    options["window"] = cfg.get_int("model.window", 1);
    options["decay"] = cfg.get_double("model.decay", 0.5);
    options["pop_weight"] = cfg.get_double("model.pop_weight", 1e-3);
  } else if (type == "sasrec" || type == "hstu") {
    SequentialOptions d;
    d.encoder = type;
    options = d.to_json();
    options["d_model"] = cfg.get_int("model.d_model", d.d_model);
    options["max_len"] = cfg.get_int("model.max_len", d.max_len);
    options["n_blocks"] = cfg.get_int("model.n_blocks", d.n_blocks);
    options["n_heads"] = cfg.get_int("model.n_heads", d.n_heads);
    options["dropout"] = cfg.get_double("model.dropout", d.dropout);
    if (type == "hstu") {
      options["d_qk"] = cfg.get_int("model.d_qk", d.d_qk);
      options["d_v"] = cfg.get_int("model.d_v", d.d_v);
      options["time_bias"] = cfg.get_bool("model.time_bias", d.time_bias);
      options["query_time"] = cfg.get_string("model.query_time", d.query_time);
      options["input_stage"] = cfg.get_bool("model.input_stage", d.input_stage);
      options["attn_scale"] = cfg.get_string("model.attn_scale", d.attn_scale);
    }
    options["loss"] = cfg.get_string("model.loss", d.loss);
    options["negatives"] = cfg.get_int("model.negatives", d.negatives);
    options["in_batch"] = cfg.get_bool("model.in_batch", d.in_batch);
    options["temperature"] = cfg.get_double("model.temperature", d.temperature);
    options["l2_norm"] = cfg.get_bool("model.l2_norm", d.l2_norm);
    options["history_bias"] = cfg.get_bool("model.history_bias", d.history_bias);
    options["epochs"] = cfg.get_int("train.epochs", d.epochs);
    options["batch_size"] = cfg.get_int("train.batch_size", d.batch_size);
    options["jagged"] = cfg.get_bool("train.jagged", d.jagged);
    options["lr"] = cfg.get_double("train.lr", d.lr);
    options["weight_decay"] = cfg.get_double("train.weight_decay", d.weight_decay);
    options["warmup_steps"] = cfg.get_int("train.warmup_steps", d.warmup_steps);
    options["lr_schedule"] = cfg.get_string("train.lr_schedule", d.lr_schedule);
    options["grad_clip"] = cfg.get_double("train.grad_clip", d.grad_clip);
    options["eval_every"] = cfg.get_int("train.eval_every", d.eval_every);
    options["patience"] = cfg.get_int("train.patience", d.patience);
    options["metric"] = cfg.get_string("train.metric", d.metric);
    options["seed"] = cfg.get_int("train.seed", d.seed);
  } else if (type == "tiger") {
    TigerOptions d;
    d.sid = cfg.get_string("model.sid", "");
    if (d.sid.empty()) throw InvalidInput("model.sid: tiger needs the semantic-ID file (codes.bin of `genrec sid build`)");
    d.d_model = cfg.get_int("model.d_model", d.d_model);
    d.n_heads = cfg.get_int("model.n_heads", d.n_heads);
    d.d_kv = cfg.get_int("model.d_kv", d.d_kv);
    d.d_ff = cfg.get_int("model.d_ff", d.d_ff);
    d.enc_layers = cfg.get_int("model.enc_layers", d.enc_layers);
    d.dec_layers = cfg.get_int("model.dec_layers", d.dec_layers);
    d.dropout = cfg.get_double("model.dropout", d.dropout);
    d.max_items = cfg.get_int("model.max_items", d.max_items);
    d.user_buckets = cfg.get_int("model.user_buckets", d.user_buckets);
    d.encoder_input = cfg.get_string("model.encoder_input", d.encoder_input);
    d.encoder_positions = cfg.get_string("model.encoder_positions", d.encoder_positions);
    d.history_bias = cfg.get_bool("model.history_bias", d.history_bias);
    d.code_init = cfg.get_string("model.code_init", d.code_init);
    d.trie_softmax = cfg.get_bool("model.trie_softmax", d.trie_softmax);
    d.beam = cfg.get_int("model.beam", d.beam);
    d.cold_fraction = cfg.get_double("model.cold_fraction", d.cold_fraction);
    d.level_weights = cfg.get_double_list("model.level_weights", d.level_weights);
    d.epochs = cfg.get_int("train.epochs", d.epochs);
    d.label_smoothing = cfg.get_double("train.label_smoothing", d.label_smoothing);
    d.recency_weight = cfg.get_double("train.recency_weight", d.recency_weight);
    d.recency_halflife = cfg.get_double("train.recency_halflife", d.recency_halflife);
    d.batch_size = cfg.get_int("train.batch_size", d.batch_size);
    d.jagged = cfg.get_bool("train.jagged", d.jagged);
    d.lr = cfg.get_double("train.lr", d.lr);
    d.weight_decay = cfg.get_double("train.weight_decay", d.weight_decay);
    d.warmup_steps = cfg.get_int("train.warmup_steps", d.warmup_steps);
    d.lr_schedule = cfg.get_string("train.lr_schedule", d.lr_schedule);
    d.grad_clip = cfg.get_double("train.grad_clip", d.grad_clip);
    d.eval_every = cfg.get_int("train.eval_every", d.eval_every);
    d.patience = cfg.get_int("train.patience", d.patience);
    d.metric = cfg.get_string("train.metric", d.metric);
    d.eval_users = cfg.get_int("train.eval_users", d.eval_users);
    d.seed = cfg.get_int("train.seed", d.seed);
    SemanticIds sid = read_semantic_ids_bin(d.sid);
    return std::make_unique<TigerRecommender>(n_items, d, std::move(sid));
  }
  return make_recommender(type, options, n_items);
}

std::unique_ptr<Recommender> make_recommender(const std::string& type, const nlohmann::json& options,
                                              int32_t n_items) {
  if (n_items < 1) throw InvalidInput("model: the dataset has no items");
  if (type == "pop") return std::make_unique<PopRecommender>(n_items);
  if (type == "markov") {
    MarkovOptions o;
    o.window = options.value("window", o.window);
    o.decay = options.value("decay", o.decay);
    o.pop_weight = options.value("pop_weight", o.pop_weight);
    return std::make_unique<MarkovRecommender>(n_items, o);
  }
  if (type == "tiger") {
    // From a checkpoint: the semantic IDs come from the archive (TigerRecommender::load).
    TigerOptions o = TigerOptions::from_json(options);
    SemanticIds placeholder;
    placeholder.n_items = n_items;
    placeholder.levels = o.levels;
    placeholder.codebook_sizes = o.codebook_sizes;
    return std::make_unique<TigerRecommender>(n_items, o, std::move(placeholder));
  }
  if (type == "sasrec" || type == "hstu") {
    SequentialOptions o = SequentialOptions::from_json(options);
    o.encoder = type;
    return std::make_unique<SequentialRecommender>(n_items, o);
  }
  std::string known;
  for (const auto& t : recommender_types()) known += (known.empty() ? "" : ", ") + t;
  throw InvalidInput("model.type: unknown model '" + type + "' (known: " + known + ")");
}

void save_checkpoint(const std::filesystem::path& path, const Recommender& model, const Vocabulary& items,
                     const nlohmann::json& extra_meta) {
  torch::serialize::OutputArchive archive;
  nlohmann::json meta = {{"type", model.type()},
                         {"options", model.options()},
                         {"n_items", model.n_items()},
                         {"genrec_version", GENREC_VERSION},
                         {"extra", extra_meta}};
  write_checkpoint_header(archive, meta, items);
  model.save(archive);
  write_checkpoint_archive(path, archive);
}

void write_checkpoint_header(torch::serialize::OutputArchive& archive, const nlohmann::json& meta,
                             const Vocabulary& items) {
  archive.write("genrec/meta", c10::IValue(meta.dump()));
  archive.write("genrec/items", c10::IValue(items.serialize()));
}

CheckpointHeader read_checkpoint_header(const std::filesystem::path& path, torch::serialize::InputArchive& archive) {
  std::string payload = read_checkpoint_payload(path);
  CheckpointHeader out;
  try {
    archive.load_from(payload.data(), payload.size());
    c10::IValue meta_v, items_v;
    archive.read("genrec/meta", meta_v);
    archive.read("genrec/items", items_v);
    out.meta = nlohmann::json::parse(meta_v.toStringRef());
    if (!out.meta.is_object() || !out.meta.contains("type") || !out.meta["type"].is_string())
      throw InvalidInput(SourceLocation{path.string(), 0, "genrec/meta"}, "checkpoint meta has no model type");
    out.items = Vocabulary::deserialize(items_v.toStringRef(), path.string() + " (item vocabulary)");
  } catch (const InvalidInput&) {
    throw;
  } catch (const std::exception& e) {
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "cannot read checkpoint: " + exception_text(e));
  }
  return out;
}

void write_checkpoint_archive(const std::filesystem::path& path, torch::serialize::OutputArchive& archive) {
  std::ostringstream payload_stream;
  archive.save_to(payload_stream);
  std::string payload = payload_stream.str();
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  out.append(kCkptMagic, 8);
  uint32_t version = kCkptVersion, crc = crc32_of(payload);
  uint64_t size = payload.size();
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&crc), 4);
  out.append(reinterpret_cast<const char*>(&size), 8);
  out += payload;
  std::filesystem::create_directories(path.parent_path());
  write_file_atomic(path, out);
}

std::string read_checkpoint_payload(const std::filesystem::path& path) {
  std::string data = read_file(path);
  SourceLocation where{path.string(), 0, ""};
  if (data.size() < kHeaderSize || std::memcmp(data.data(), kCkptMagic, 8) != 0)
    throw InvalidInput(where, "not a genrec checkpoint (bad header)");
  uint32_t version, crc;
  uint64_t size;
  std::memcpy(&version, data.data() + 8, 4);
  std::memcpy(&crc, data.data() + 12, 4);
  std::memcpy(&size, data.data() + 16, 8);
  if (version != kCkptVersion) throw InvalidInput(where, "unsupported checkpoint version " + std::to_string(version));
  if (data.size() - kHeaderSize != size)
    throw InvalidInput(where, "truncated checkpoint (" + std::to_string(data.size() - kHeaderSize) + " of " +
                                  std::to_string(size) + " payload bytes)");
  std::string_view payload(data.data() + kHeaderSize, size);
  if (crc32_of(payload) != crc) throw InvalidInput(where, "checkpoint checksum mismatch (corrupted file)");
  return std::string(payload);
}

std::string checkpoint_type(const std::filesystem::path& path) {
  torch::serialize::InputArchive archive;
  return read_checkpoint_header(path, archive).meta["type"].get<std::string>();
}

LoadedCheckpoint load_checkpoint(const std::filesystem::path& path) {
  torch::serialize::InputArchive archive;
  CheckpointHeader header = read_checkpoint_header(path, archive);
  return load_checkpoint(path, archive, std::move(header));
}

LoadedCheckpoint load_checkpoint(const std::filesystem::path& path, torch::serialize::InputArchive& archive,
                                 CheckpointHeader header) {
  LoadedCheckpoint out;
  out.meta = std::move(header.meta);
  out.items = std::move(header.items);
  try {
    out.model = make_recommender(out.meta.at("type").get<std::string>(), out.meta.at("options"), out.items.size());
    out.model->load(archive);
  } catch (const InvalidInput&) {
    throw;
  } catch (const std::exception& e) {
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "cannot read checkpoint: " + exception_text(e));
  }
  return out;
}

std::string exception_text(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

namespace {

// The tensors and values a model writes under "model/" (its parameters, buffers, codes).
std::set<std::string> model_keys(torch::serialize::InputArchive& archive) {
  std::set<std::string> out;
  for (const auto& key : archive.keys())
    if (key.rfind("model/", 0) == 0) out.insert(key);
  return out;
}

// "A, B and 3 more" for the first few names of a set.
std::string some_names(const std::vector<std::string>& names) {
  std::string out;
  const size_t shown = std::min<size_t>(names.size(), 3);
  for (size_t i = 0; i < shown; ++i) out += (i == 0 ? "" : ", ") + names[i];
  if (names.size() > shown) out += " and " + std::to_string(names.size() - shown) + " more";
  return out;
}

// Empty when the checkpoint holds exactly the tensors under "model/" the config's model writes;
// else which ones differ, so that a second stage built with other model.* keys (more or fewer
// layers) is refused instead of loading part of the checkpoint.
std::string model_key_difference(torch::serialize::InputArchive& checkpoint,
                                 const std::function<void(torch::serialize::OutputArchive&)>& save_fresh) {
  std::ostringstream bytes;
  {
    torch::serialize::OutputArchive out;
    save_fresh(out);
    out.save_to(bytes);
  }
  const std::string payload = bytes.str();
  torch::serialize::InputArchive fresh;
  fresh.load_from(payload.data(), payload.size());
  const std::set<std::string> have = model_keys(checkpoint), want = model_keys(fresh);
  std::vector<std::string> missing, extra;
  std::set_difference(want.begin(), want.end(), have.begin(), have.end(), std::back_inserter(missing));
  std::set_difference(have.begin(), have.end(), want.begin(), want.end(), std::back_inserter(extra));
  if (missing.empty() && extra.empty()) return "";
  std::string out = "the config builds another model than the checkpoint's:";
  if (!missing.empty()) out += " the checkpoint has no " + some_names(missing) + ";";
  if (!extra.empty()) out += " the config's model has no " + some_names(extra) + ";";
  return out + " set the model.* keys as in the config.toml of the checkpoint's run";
}

}  // namespace

void init_from_checkpoint_file(
    const std::filesystem::path& path_in, const std::string& type, const Vocabulary& items,
    const std::function<void(torch::serialize::OutputArchive& archive)>& save_fresh,
    const std::function<void(torch::serialize::InputArchive& archive, const CheckpointHeader& header)>& load) {
  std::error_code ec;
  const std::filesystem::path path =
      std::filesystem::is_directory(path_in, ec) ? path_in / "checkpoints" / "best.ckpt" : path_in;
  if (!std::filesystem::exists(path, ec))
    throw InvalidInput("train.init_from: " + path.string() + ": no such checkpoint (give a run directory or a .ckpt file)");
  SourceLocation where{path.string(), 0, "train.init_from"};
  try {
    torch::serialize::InputArchive archive;
    const CheckpointHeader header = read_checkpoint_header(path, archive);
    const std::string saved_type = header.meta["type"].get<std::string>();
    if (saved_type != type)
      throw InvalidInput(where, "the checkpoint holds a '" + saved_type + "' model, the config builds '" + type + "'");
    const Vocabulary& saved = header.items;
    bool same = saved.size() == items.size();
    for (int32_t i = 1; same && i <= items.size(); ++i) same = saved.raw(i) == items.raw(i);
    if (!same)
      throw InvalidInput(where, "the checkpoint was trained on another item vocabulary (" + std::to_string(saved.size()) +
                                    " items, the dataset has " + std::to_string(items.size()) + ")");
    // load's own checks (tasks, semantic IDs, a missing parameter, a shape) name the difference
    // best; a checkpoint with tensors the model lacks may load without error, or fail in libtorch.
    const std::string differs = model_key_difference(archive, save_fresh);
    try {
      load(archive, header);
    } catch (const InvalidInput&) {
      throw;
    } catch (const std::exception&) {
      if (differs.empty()) throw;
    }
    if (!differs.empty()) throw InvalidInput(where, differs);
  } catch (const InvalidInput& e) {
    if (std::string(e.what()).find(path.string()) != std::string::npos) throw;
    throw InvalidInput(where, e.what());
  } catch (const std::exception& e) {
    throw InvalidInput(where, "cannot initialise from checkpoint: " + exception_text(e));
  }
}

void init_from_checkpoint(Recommender& model, const std::filesystem::path& path, const Vocabulary& items) {
  init_from_checkpoint_file(
      path, model.type(), items, [&](torch::serialize::OutputArchive& archive) { model.save(archive); },
      [&](torch::serialize::InputArchive& archive, const CheckpointHeader&) {
        model.load(archive);
        model.reset_training_state();
      });
}

}  // namespace genrec
