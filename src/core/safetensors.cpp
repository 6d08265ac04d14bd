#include "genrec/core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "genrec/core/error.h"
#include "genrec/core/io.h"

namespace genrec {

namespace {

struct DtypeInfo {
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {{"F64", 8}, {"F32", 4},  {"F16", 2},     {"BF16", 2},    {"I64", 8},
                                 {"I32", 4}, {"I16", 2},  {"I8", 1},      {"U8", 1},      {"BOOL", 1},
                                 {"U64", 8}, {"U32", 4},  {"U16", 2},     {"F8_E4M3", 1}, {"F8_E5M2", 1}};

std::string known_dtypes() {
  std::string out;
  for (const auto& d : kDtypes) out += (out.empty() ? "" : " ") + std::string(d.name);
  return out;
}

// product(shape) * elem_size without overflow; false when it does not fit in 64 bits.
bool byte_size(const std::vector<int64_t>& shape, size_t elem_size, uint64_t& out) {
  uint64_t n = elem_size;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  out = n;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void append_le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

size_t safetensors_dtype_size(std::string_view dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.name) return d.size;
  return 0;
}

const std::vector<std::string>& safetensors_dtypes() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& d : kDtypes) v.emplace_back(d.name);
    return v;
  }();
  return names;
}

int64_t SafetensorsView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Writer

std::string safetensors_bytes(const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto bad = [](const std::string& field, const std::string& reason) {
    return InvalidInput(SourceLocation{"safetensors writer", 0, field}, reason);
  };
  std::vector<const SafetensorsTensor*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.name == "__metadata__") throw bad(t.name, "'__metadata__' is reserved and cannot name a tensor");
    if (find_invalid_utf8(t.name) != std::string_view::npos) throw bad(t.name, "tensor name is not valid UTF-8");
    size_t elem = safetensors_dtype_size(t.dtype);
    if (elem == 0) throw bad(t.name, "dtype '" + t.dtype + "' is not a safetensors dtype (known: " + known_dtypes() + ")");
    uint64_t expect = 0;
    for (int64_t d : t.shape)
      if (d < 0) throw bad(t.name, "negative dimension in shape " + shape_string(t.shape));
    if (!byte_size(t.shape, elem, expect)) throw bad(t.name, "shape " + shape_string(t.shape) + " is too large");
    if (expect != t.nbytes)
      throw bad(t.name, "shape " + shape_string(t.shape) + " of " + t.dtype + " needs " + std::to_string(expect) +
                            " bytes, got " + std::to_string(t.nbytes));
    if (t.nbytes > 0 && t.data == nullptr) throw bad(t.name, "no data");
    order.push_back(&t);
  }
  // Larger elements first, then by name: with the header padded to 8 bytes every tensor starts
  // at a multiple of its element size (as the reference writer arranges it), so a mapped file
  // can be used in place.
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    size_t sa = safetensors_dtype_size(a->dtype), sb = safetensors_dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->name == order[i - 1]->name) throw bad(order[i]->name, "duplicate tensor name");
  for (const auto& [key, value] : metadata)
    if (find_invalid_utf8(key) != std::string_view::npos || find_invalid_utf8(value) != std::string_view::npos)
      throw bad("__metadata__." + key, "metadata is not valid UTF-8");

  // Compact JSON, "__metadata__" first, then tensors in buffer order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto* t : order) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = t->dtype;
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->nbytes};
    header[t->name] = std::move(entry);
    offset += t->nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kSafetensorsMaxHeaderBytes)
    throw bad("header", "the header would be " + std::to_string(text.size()) + " bytes; readers refuse more than " +
                            std::to_string(kSafetensorsMaxHeaderBytes));

  std::string out;
  out.reserve(8 + text.size() + offset);
  append_le64(out, text.size());
  out += text;
  for (const auto* t : order)
    if (t->nbytes > 0) out.append(static_cast<const char*>(t->data), t->nbytes);
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::string bytes;
  try {
    bytes = safetensors_bytes(tensors, metadata);
  } catch (const InvalidInput& e) {
    // Name the destination instead of "safetensors writer".
    throw InvalidInput(SourceLocation{path.string(), 0, e.where().field}, e.reason());
  }
  write_file_atomic(path, bytes);
}

// ---------------------------------------------------------------------------------------------
// Reader

struct SafetensorsFile::Storage {
  void* map = nullptr;                 // mmap'ed file, or
  std::unique_ptr<unsigned char[]> heap;  // the file read into memory when mapping failed
  size_t size = 0;

  const unsigned char* data() const { return map ? static_cast<const unsigned char*>(map) : heap.get(); }
  ~Storage() {
    if (map) ::munmap(map, size);
  }
};

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

bool SafetensorsFile::memory_mapped() const { return storage_ && storage_->map != nullptr; }

const SafetensorsView* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const SafetensorsView& v, std::string_view n) { return v.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const SafetensorsView& SafetensorsFile::at(std::string_view name) const {
  if (const SafetensorsView* v = find(name)) return *v;
  throw InvalidInput(SourceLocation{path_.string(), 0, std::string(name)}, "no such tensor in the file");
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string file = path.string();
  auto bad = [&](const std::string& field, const std::string& reason) {
    return InvalidInput(SourceLocation{file, 0, field}, reason);
  };

  // --- open and map ---
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw bad("", "file not found");
    throw bad("", std::string("cannot open: ") + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    throw IOError(file + ": cannot stat: " + err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw bad("", S_ISDIR(st.st_mode) ? "is a directory, expected a safetensors file" : "not a regular file");
  }
  file_bytes_ = static_cast<uint64_t>(st.st_size);
  if (file_bytes_ < 8) {
    ::close(fd);
    throw bad("header length", "file is " + std::to_string(file_bytes_) +
                                   " bytes, too short for the 8-byte header length (not a safetensors file)");
  }
  storage_ = std::make_unique<Storage>();
  storage_->size = file_bytes_;
  void* map = ::mmap(nullptr, file_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map != MAP_FAILED) {
    storage_->map = map;
  } else {
    // Some file systems cannot map files: read the whole file instead.
    storage_->heap.reset(new unsigned char[file_bytes_]);
    size_t done = 0;
    while (done < file_bytes_) {
      ssize_t n = ::pread(fd, storage_->heap.get() + done, file_bytes_ - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::string err = n < 0 ? std::strerror(errno) : "unexpected end of file";
        ::close(fd);
        throw IOError(file + ": read failed: " + err);
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  const unsigned char* base = storage_->data();

  // --- header ---
  header_bytes_ = read_le64(base);
  if (header_bytes_ > file_bytes_ - 8)
    throw bad("header length", "header length " + std::to_string(header_bytes_) + " is beyond the end of the file (" +
                                   std::to_string(file_bytes_) + " bytes; not a safetensors file, or truncated)");
  if (header_bytes_ > kSafetensorsMaxHeaderBytes)
    throw bad("header length", "header length " + std::to_string(header_bytes_) + " exceeds the limit of " +
                                   std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (header_bytes_ == 0) throw bad("header", "empty header (expected a JSON object)");
  const char* text = reinterpret_cast<const char*>(base + 8);
  // JSON text never holds a raw NUL, but nlohmann's parser stops at one as if the input ended.
  if (const void* nul = std::memchr(text, 0, header_bytes_))
    throw bad("header", "header holds a NUL byte at offset " +
                            std::to_string(static_cast<const char*>(nul) - text) + " (not valid JSON)");
  const uint64_t buffer_bytes = file_bytes_ - 8 - header_bytes_;
  const unsigned char* buffer = base + 8 + header_bytes_;

  // nlohmann keeps the last of duplicate keys silently; a parse callback sees every key.
  struct Level {
    std::set<std::string> keys;
    std::string name;  // key of this object in its parent
  };
  std::vector<Level> levels;
  std::string pending_key;
  auto on_event = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      levels.push_back(Level{{}, pending_key});
    } else if (event == E::object_end) {
      if (!levels.empty()) levels.pop_back();
    } else if (event == E::key) {
      std::string key = parsed.get<std::string>();
      if (!levels.empty() && !levels.back().keys.insert(key).second) {
        if (levels.size() == 1)
          throw bad(key, key == "__metadata__" ? "duplicate \"__metadata__\" entry" : "duplicate tensor name");
        throw bad(levels.back().name, "duplicate key \"" + key + "\"");
      }
      pending_key = std::move(key);
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + header_bytes_, on_event);
  } catch (const nlohmann::json::exception& e) {
    throw bad("header", std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw bad("header", std::string("header is a JSON ") + header.type_name() + ", expected an object");

  auto get_uint = [&](const nlohmann::json& j, const std::string& name, const char* what, uint64_t limit) {
    if (!j.is_number_unsigned() || j.get<uint64_t>() > limit)
      throw bad(name, std::string(what) + " " + j.dump() + " is not a non-negative integer" +
                          (j.is_number_unsigned() ? " in range" : ""));
    return j.get<uint64_t>();
  };

  tensors_.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) throw bad(name, std::string("is a JSON ") + entry.type_name() + ", expected an object of strings");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          throw bad("__metadata__." + m.key(), std::string("metadata value is a JSON ") + m.value().type_name() +
                                                   ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) throw bad(name, std::string("tensor entry is a JSON ") + entry.type_name() + ", expected an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(key)) throw bad(name, std::string("missing \"") + key + "\"");
    SafetensorsView v;
    v.name = name;
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string()) throw bad(name, "dtype " + dtype.dump() + " is not a string");
    v.dtype = dtype.get<std::string>();
    size_t elem = safetensors_dtype_size(v.dtype);
    if (elem == 0) throw bad(name, "unknown dtype '" + v.dtype + "' (known: " + known_dtypes() + ")");
    const auto& shape = entry["shape"];
    if (!shape.is_array()) throw bad(name, "shape " + shape.dump() + " is not an array");
    for (const auto& d : shape)
      v.shape.push_back(static_cast<int64_t>(get_uint(d, name, "shape dimension", INT64_MAX)));
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      throw bad(name, "data_offsets " + offsets.dump() + " is not an array [begin, end]");
    uint64_t begin = get_uint(offsets[0], name, "data_offsets begin", UINT64_MAX);
    uint64_t end = get_uint(offsets[1], name, "data_offsets end", UINT64_MAX);
    if (begin > end) throw bad(name, "data_offsets " + offsets.dump() + ": begin is after end");
    if (end > buffer_bytes)
      throw bad(name, "data_offsets " + offsets.dump() + " reach beyond the data buffer (" + std::to_string(buffer_bytes) +
                          " bytes)");
    uint64_t expect = 0;
    if (!byte_size(v.shape, elem, expect))
      throw bad(name, "shape " + shape_string(v.shape) + " of " + v.dtype + " is too large");
    if (expect != end - begin)
      throw bad(name, "data_offsets " + offsets.dump() + " span " + std::to_string(end - begin) + " bytes, but shape " +
                          shape_string(v.shape) + " of " + v.dtype + " needs " + std::to_string(expect));
    v.offset = begin;
    v.nbytes = end - begin;
    v.data = buffer + begin;
    tensors_.push_back(std::move(v));
  }

  // The tensors must tile the buffer: sorted by offset, each starts where the previous ends.
  std::vector<const SafetensorsView*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& v : tensors_) by_offset.push_back(&v);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  uint64_t pos = 0;
  const SafetensorsView* prev = nullptr;
  for (const auto* v : by_offset) {
    if (v->offset < pos)
      throw bad(v->name, "data_offsets [" + std::to_string(v->offset) + ", " + std::to_string(v->offset + v->nbytes) +
                             "] overlap tensor '" + prev->name + "' (ending at " + std::to_string(pos) + ")");
    if (v->offset > pos)
      throw bad(v->name, "data_offsets [" + std::to_string(v->offset) + ", " + std::to_string(v->offset + v->nbytes) +
                             "] leave a gap of " + std::to_string(v->offset - pos) + " bytes after " +
                             (prev ? "tensor '" + prev->name + "'" : std::string("the start of the buffer")));
    pos = v->offset + v->nbytes;
    prev = v;
  }
  if (pos != buffer_bytes)
    throw bad("data", "the data buffer has " + std::to_string(buffer_bytes - pos) + " bytes after the last tensor" +
                          (prev ? " ('" + prev->name + "')" : std::string()) + " that no tensor covers");
  // nlohmann's object iteration is sorted by key, so tensors_ is sorted by name already.
}

}  // namespace genrec
