// Checkpoint export (models/export.h) and the libtorch side of safetensors
// (models/safetensors_torch.h).
#include "genrec/models/export.h"

#include <algorithm>
#include <cstring>
#include <map>

#include <torch/serialize/input-archive.h>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/models/recommender.h"
#include "genrec/models/safetensors_torch.h"
#include "genrec/rank/ranker.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; add byte swapping");

namespace genrec {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// safetensors <-> torch

std::string safetensors_dtype_of(torch::ScalarType type) {
  switch (type) {
    case torch::kDouble: return "F64";
    case torch::kFloat: return "F32";
    case torch::kHalf: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kLong: return "I64";
    case torch::kInt: return "I32";
    case torch::kShort: return "I16";
    case torch::kChar: return "I8";
    case torch::kByte: return "U8";
    case torch::kBool: return "BOOL";
    default: throw InvalidInput(std::string("safetensors: no dtype for torch type ") + c10::toString(type));
  }
}

torch::ScalarType torch_dtype_of(std::string_view dtype) {
  static const std::pair<const char*, torch::ScalarType> table[] = {
      {"F64", torch::kDouble}, {"F32", torch::kFloat}, {"F16", torch::kHalf}, {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},   {"I32", torch::kInt},   {"I16", torch::kShort}, {"I8", torch::kChar},
      {"U8", torch::kByte},    {"BOOL", torch::kBool}};
  for (const auto& [name, type] : table)
    if (dtype == name) return type;
  throw InvalidInput("safetensors: dtype '" + std::string(dtype) + "' has no libtorch 1.13 equivalent");
}

torch::Tensor to_torch(const SafetensorsFile& file, const SafetensorsView& view) {
  torch::ScalarType type;
  try {
    type = torch_dtype_of(view.dtype);
  } catch (const InvalidInput& e) {
    throw InvalidInput(SourceLocation{file.path().string(), 0, view.name}, e.what());
  }
  if (type == torch::kBool) {
    const auto* p = static_cast<const unsigned char*>(view.data);
    for (size_t i = 0; i < view.nbytes; ++i)
      if (p[i] > 1)
        throw InvalidInput(SourceLocation{file.path().string(), 0, view.name},
                           "BOOL byte " + std::to_string(i) + " is " + std::to_string(p[i]) + ", expected 0 or 1");
  }
  torch::Tensor t = torch::empty(view.shape, torch::TensorOptions().dtype(type));
  if (view.nbytes > 0) std::memcpy(t.data_ptr(), view.data, view.nbytes);
  return t;
}

std::map<std::string, torch::Tensor> read_safetensors_to_torch(const fs::path& path) {
  SafetensorsFile file(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& view : file.tensors()) out.emplace(view.name, to_torch(file, view));
  return out;
}

void write_safetensors_from_torch(const fs::path& path, const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous CPU copies (or the tensors themselves) kept alive
  std::vector<SafetensorsTensor> views;
  keep.reserve(tensors.size());
  views.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) throw InvalidInput(SourceLocation{path.string(), 0, name}, "undefined tensor");
    std::string dtype;
    try {
      dtype = safetensors_dtype_of(tensor.scalar_type());
    } catch (const InvalidInput& e) {
      throw InvalidInput(SourceLocation{path.string(), 0, name}, e.what());
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    keep.push_back(t);
    views.push_back(SafetensorsTensor{name, dtype, t.sizes().vec(), t.data_ptr(),
                                      static_cast<size_t>(t.numel()) * t.element_size()});
  }
  write_safetensors(path, views, metadata);
}

// ---------------------------------------------------------------------------------------------
// export

nlohmann::json ExportSummary::to_json() const {
  return {{"out", out.string()},     {"checkpoint", checkpoint.string()}, {"model", model_type},
          {"tensors", n_tensors},    {"parameters", n_parameters},         {"bytes", bytes}};
}

const std::vector<std::string>& export_formats() {
  static const std::vector<std::string> formats = {"safetensors"};
  return formats;
}

namespace {

void check_which(const std::string& which) {
  if (which != "best" && which != "last")
    throw InvalidInput("export: checkpoint must be 'best' or 'last', got '" + which + "'");
}

// run directory -> checkpoints/<which>.ckpt; a file is taken as the checkpoint itself.
fs::path resolve_checkpoint(const fs::path& run_or_checkpoint, const std::string& which) {
  std::error_code ec;
  if (!fs::exists(run_or_checkpoint, ec))
    throw InvalidInput(SourceLocation{run_or_checkpoint.string(), 0, ""}, "no such run directory or checkpoint");
  if (!fs::is_directory(run_or_checkpoint, ec)) return run_or_checkpoint;
  check_which(which);
  fs::path ckpt = run_or_checkpoint / "checkpoints" / (which + ".ckpt");
  if (!fs::exists(ckpt, ec))
    throw InvalidInput(SourceLocation{run_or_checkpoint.string(), 0, ""},
                       "not a genrec run directory (no checkpoints/" + which + ".ckpt)");
  return ckpt;
}

}  // namespace

ExportSummary export_safetensors(const fs::path& run_or_checkpoint, const fs::path& out, const std::string& which) {
  const fs::path ckpt_path = resolve_checkpoint(run_or_checkpoint, which);
  // One read of the file; loading validates the header, checksum, meta, vocabulary and the
  // tensors' shapes, and the tensors are then taken from the same archive.
  torch::serialize::InputArchive archive;
  CheckpointHeader header = read_checkpoint_header(ckpt_path, archive);
  std::string model_type;
  nlohmann::json options, meta;
  Vocabulary vocabulary;
  std::map<std::string, std::string> metadata;
  if (is_ranker_type(header.meta.value("type", std::string()))) {
    LoadedRanker r = load_ranker_checkpoint(ckpt_path, archive, std::move(header));
    model_type = r.ranker->options().type;
    options = r.ranker->options().to_json();
    meta = std::move(r.meta);
    vocabulary = std::move(r.items);
    metadata["n_feedback"] = std::to_string(r.ranker->n_feedback());
    if (meta.contains("feedback_names")) metadata["feedback_names"] = meta["feedback_names"].dump();
  } else {
    LoadedCheckpoint ckpt = load_checkpoint(ckpt_path, archive, std::move(header));
    model_type = ckpt.model->type();
    options = ckpt.model->options();
    meta = std::move(ckpt.meta);
    vocabulary = std::move(ckpt.items);
  }
  const std::string file = ckpt_path.string();

  // The tensors exactly as the checkpoint stores them under "model/...".
  std::map<std::string, torch::Tensor> tensors;
  nlohmann::json state = nlohmann::json::object();
  try {
    for (const std::string& key : archive.keys()) {
      if (key.rfind("model/", 0) != 0) continue;  // genrec/meta, genrec/items, train/...
      std::string name = key.substr(6);
      for (const char* level : {"param/", "buffer/"})
        if (name.rfind(level, 0) == 0) {
          name = name.substr(std::strlen(level));
          break;
        }
      c10::IValue value;
      if (!archive.try_read(key, value)) continue;
      if (value.isTensor()) {
        if (!tensors.emplace(name, value.toTensor()).second)
          throw InvalidInput(SourceLocation{file, 0, key}, "two checkpoint entries export as tensor '" + name + "'");
      } else if (value.isBool()) {
        state[name] = value.toBool();
      } else if (value.isInt()) {
        state[name] = value.toInt();
      } else if (value.isDouble()) {
        state[name] = value.toDouble();
      } else if (value.isString()) {
        state[name] = value.toStringRef();
      } else {
        GENREC_LOG_WARN("%s: skipping checkpoint entry %s (%s): not a tensor or scalar", file.c_str(), key.c_str(),
                        value.tagKind().c_str());
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw InvalidInput(SourceLocation{file, 0, ""}, "cannot read checkpoint: " + exception_text(e));
  }
  if (tensors.empty()) throw InvalidInput(SourceLocation{file, 0, ""}, "the checkpoint holds no model tensors");

  nlohmann::json items = nlohmann::json::array();
  for (int32_t id = 1; id <= vocabulary.size(); ++id) items.push_back(vocabulary.raw(id));
  metadata.insert({{"format", "pt"},
                   {"genrec_version", GENREC_VERSION},
                   {"model_type", model_type},
                   {"options", options.dump()},
                   {"n_items", std::to_string(vocabulary.size())},
                   {"items", items.dump()},
                   {"checkpoint", fs::is_directory(run_or_checkpoint) ? which : ckpt_path.filename().string()},
                   {"checkpoint_meta", meta.value("extra", nlohmann::json::object()).dump()}});
  if (!state.empty()) metadata["state"] = state.dump();

  std::error_code ec;
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);
  if (ec) throw IOError(out.string() + ": cannot create the folder: " + ec.message());
  write_safetensors_from_torch(out, tensors, metadata);

  ExportSummary s;
  s.out = out;
  s.checkpoint = ckpt_path;
  s.model_type = model_type;
  s.n_tensors = static_cast<int64_t>(tensors.size());
  for (const auto& [name, t] : tensors) s.n_parameters += t.numel();
  s.bytes = fs::file_size(out, ec);
  return s;
}

ExportSummary export_run(const ExportRequest& request) {
  const auto& formats = export_formats();
  if (std::find(formats.begin(), formats.end(), request.format) == formats.end())
    throw InvalidInput("export: unknown format '" + request.format + "' (known: safetensors)");
  check_which(request.checkpoint);
  if (request.out.empty()) throw InvalidInput("export: no output file given (--out)");
  std::error_code ec;
  if (!fs::exists(request.run, ec))
    throw InvalidInput(SourceLocation{request.run.string(), 0, ""}, "no such run directory or checkpoint");
  if (fs::is_directory(request.out, ec))
    throw InvalidInput(SourceLocation{request.out.string(), 0, ""}, "is a directory; --out names the file to write");
  if (fs::exists(request.out, ec) && !request.overwrite)
    throw InvalidInput(SourceLocation{request.out.string(), 0, ""}, "already exists (use --force to replace it)");
  ExportSummary s = export_safetensors(request.run, request.out, request.checkpoint);
  GENREC_LOG_INFO("exported %s (%s) to %s: %lld tensors, %lld parameters, %llu bytes", s.model_type.c_str(),
                  s.checkpoint.string().c_str(), s.out.string().c_str(), static_cast<long long>(s.n_tensors),
                  static_cast<long long>(s.n_parameters), static_cast<unsigned long long>(s.bytes));
  return s;
}

}  // namespace genrec
