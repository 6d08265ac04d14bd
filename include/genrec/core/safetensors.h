// Safetensors files (the Hugging Face tensor format), torch-free: a writer and a validating,
// memory-mapped reader.
//
// Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {"key": "value", ...},            (optional, string values only)
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then the data buffer. Offsets are relative to the start
// of the buffer; tensors are little-endian, row-major, and cover the buffer exactly (no overlap,
// no gap, nothing after the last one). dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL, and
// U64 U32 U16 F8_E4M3 F8_E5M2 (read and written as bytes; not every consumer supports them).
//
// Example:
//   std::vector<float> w = {1, 2, 3, 4, 5, 6};
//   write_safetensors("model.safetensors",
//                     {{"w", "F32", {2, 3}, w.data(), w.size() * sizeof(float)}},
//                     {{"format", "pt"}});
//   SafetensorsFile file("model.safetensors");        // validates the whole header
//   const SafetensorsView& v = file.at("w");          // v.shape == {2, 3}, v.nbytes == 24
//   std::vector<float> back(v.numel());
//   std::memcpy(back.data(), v.data, v.nbytes);       // v.data may be unaligned: copy, don't cast
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace genrec {

// Readers (the reference implementation included) refuse headers larger than this.
constexpr size_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Element size in bytes of a dtype name ("F32" -> 4), or 0 when the name is not a known dtype.
size_t safetensors_dtype_size(std::string_view dtype);
// Every dtype name the reader and writer accept.
const std::vector<std::string>& safetensors_dtypes();

// One tensor for the writer. `data` points to `nbytes` bytes, little-endian, row-major;
// nbytes must equal product(shape) * dtype size. An empty shape is a scalar (one element).
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file atomically (temporary file + fsync + rename; see core/io.h).
// Tensors are laid out by element size, largest first, and by name (byte-wise) within a size,
// so that every tensor is aligned to its element size in the file (the header is padded with
// spaces to a multiple of 8 bytes, as the reference writer does); header keys follow the buffer
// order after "__metadata__" (omitted when `metadata` is empty). For files of one dtype the
// order is simply by name. Throws InvalidInput naming the tensor for a bad tensor (unknown dtype,
// negative dimension, nbytes not matching the shape, duplicate or reserved name, invalid
// UTF-8) or a header over kSafetensorsMaxHeaderBytes, IOError when writing fails.
void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The same file as bytes in memory (what write_safetensors writes).
std::string safetensors_bytes(const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// One tensor of an open file. `data` points into the file's mapping: valid while the
// SafetensorsFile that returned it lives (moving the file object keeps it valid), read-only,
// and not necessarily aligned to the element size.
struct SafetensorsView : SafetensorsTensor {
  size_t offset = 0;  // data_offsets[0]: position in the data buffer

  int64_t numel() const;
};

// An open safetensors file: memory-mapped read-only (read into memory where mapping is not
// possible), header fully validated on construction. Nothing is copied: views point into the
// mapping. Do not truncate or rewrite the file in place while it is open (write_safetensors
// replaces files by rename, which is safe).
//
// Construction throws InvalidInput naming the file and the tensor or field at fault when the file
// is missing, shorter than its header length field says, has a header that is not a JSON object
// of valid entries (unknown dtype, bad shape, data_offsets out of range, overlapping, leaving a
// gap or not matching shape x dtype size, duplicate names, non-string metadata), or bytes after
// the last tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Tensors sorted by name.
  const std::vector<SafetensorsView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const SafetensorsView* find(std::string_view name) const;
  // Throws InvalidInput naming the file and the tensor when absent.
  const SafetensorsView& at(std::string_view name) const;
  // The "__metadata__" table (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_bytes() const { return header_bytes_; }  // N, the JSON header with its padding
  uint64_t file_bytes() const { return file_bytes_; }
  bool memory_mapped() const;

 private:
  struct Storage;
  std::filesystem::path path_;
  std::unique_ptr<Storage> storage_;
  std::vector<SafetensorsView> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t header_bytes_ = 0;
  uint64_t file_bytes_ = 0;
};

}  // namespace genrec
