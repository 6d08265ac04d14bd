// File helpers: whole-file reads, atomic writes, checksums, UTF-8 checks, staged directories.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace genrec {

namespace fs = std::filesystem;

// Reads a whole file. Throws InvalidInput when it is missing or unreadable (the user named it).
std::string read_file(const fs::path& path);

// Writes `data` to `path` atomically: a temporary file in the same folder, fsync, rename.
// Throws IOError on failure and leaves no temporary file behind.
void write_file_atomic(const fs::path& path, std::string_view data);

// CRC-32 (zlib polynomial) of a buffer, and as 8 lowercase hex digits.
uint32_t crc32_of(std::string_view data);
std::string crc32_hex(uint32_t crc);

// Returns the byte offset of the first invalid UTF-8 sequence, or npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);
// 1-based line number of byte `offset` in `text`.
int64_t line_of_offset(std::string_view text, size_t offset);
// Converts ISO-8859-1 (Latin-1) bytes to UTF-8.
std::string latin1_to_utf8(std::string_view s);

// A directory built under a temporary name next to its final place and moved there only by
// commit(). If the object dies uncommitted, the temporary directory is removed: a failed
// operation leaves nothing at the destination.
//
// Example:
//   StagingDir stage(out_dir, /*overwrite=*/false);   // throws if out_dir exists
//   write_file_atomic(stage.path() / "manifest.json", ...);
//   stage.commit();
class StagingDir {
 public:
  StagingDir(fs::path final_path, bool overwrite);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const fs::path& path() const { return tmp_path_; }
  const fs::path& final_path() const { return final_path_; }
  void commit();

 private:
  fs::path final_path_;
  fs::path tmp_path_;
  bool overwrite_;
  bool committed_ = false;
};

// Splits a text buffer into lines (without '\n' or a trailing '\r'), tracking 1-based numbers.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  // Returns false at the end of the text.
  bool next(std::string_view& line);
  int64_t line_number() const { return line_number_; }
  size_t offset() const { return pos_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_number_ = 0;
};

}  // namespace genrec

namespace genrec {
// Tunes glibc malloc for tensor workloads: large blocks are kept and reused instead of being
// returned to the OS and faulted in again on every training step (costly in VMs). Programs
// (the CLI, benchmarks) call this once at start-up; the library never does it behind their back.
void configure_allocator_for_tensors();
}  // namespace genrec
