#include "genrec/core/io.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "genrec/core/error.h"

namespace genrec {

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InvalidInput(SourceLocation{path.string(), 0, ""}, "file not found");
  if (fs::is_directory(path, ec))
    throw InvalidInput(SourceLocation{path.string(), 0, ""}, "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidInput(SourceLocation{path.string(), 0, ""}, std::string("cannot open: ") + std::strerror(errno));
  std::string data;
  in.seekg(0, std::ios::end);
  auto size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size > 0) {
    data.resize(static_cast<size_t>(size));
    in.read(data.data(), size);
    if (in.gcount() != size) throw IOError(path.string() + ": short read");
  }
  return data;
}

namespace {
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  std::ostringstream os;
  os << ".tmp." << getpid() << "." << counter++ << "." << (rd() & 0xffff);
  return os.str();
}
}  // namespace

void write_file_atomic(const fs::path& path, std::string_view data) {
  fs::path tmp = path;
  tmp += unique_suffix();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IOError(path.string() + ": cannot create: " + std::strerror(errno));
  size_t written = 0;
  while (written < data.size()) {
    ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IOError(path.string() + ": write failed: " + err);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IOError(path.string() + ": flush failed: " + err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IOError(path.string() + ": rename failed: " + err);
  }
}

uint32_t crc32_of(std::string_view data) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  size_t left = data.size();
  while (left > 0) {
    uInt chunk = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = ::crc32(crc, p, chunk);
    p += chunk;
    left -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string crc32_hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", crc);
  return buf;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong encodings, surrogates and out-of-range code points are invalid.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

int64_t line_of_offset(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  int64_t line = 1;
  for (size_t i = 0; i < offset; ++i)
    if (text[i] == '\n') ++line;
  return line;
}

std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

StagingDir::StagingDir(fs::path final_path, bool overwrite)
    : final_path_(std::move(final_path)), overwrite_(overwrite) {
  std::error_code ec;
  if (final_path_.empty()) throw InvalidInput("output directory: empty path");
  if (fs::exists(final_path_, ec) && !overwrite_)
    throw InvalidInput(final_path_.string() + ": already exists (use --force to replace it)");
  fs::path parent = final_path_.parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) throw IOError(parent.string() + ": cannot create directory: " + ec.message());
  }
  fs::path name = final_path_.filename();
  if (name.empty() || name == "." || name == "..")
    throw InvalidInput(final_path_.string() + ": not a usable output directory name");
  tmp_path_ = final_path_;
  tmp_path_ += unique_suffix();
  fs::create_directory(tmp_path_, ec);
  if (ec) throw IOError(tmp_path_.string() + ": cannot create directory: " + ec.message());
}

StagingDir::~StagingDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_path_, ec);
  }
}

void StagingDir::commit() {
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_path_, ec)) {
    if (!overwrite_) throw InvalidInput(final_path_.string() + ": already exists (use --force to replace it)");
    old = final_path_;
    old += unique_suffix() + ".old";
    fs::rename(final_path_, old, ec);
    if (ec) throw IOError(final_path_.string() + ": cannot move the old directory away: " + ec.message());
  }
  fs::rename(tmp_path_, final_path_, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, final_path_, ec);
    throw IOError(final_path_.string() + ": cannot move the new directory in place: " + ec.message());
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

bool LineReader::next(std::string_view& line) {
  if (pos_ >= text_.size()) return false;
  size_t end = text_.find('\n', pos_);
  if (end == std::string_view::npos) end = text_.size();
  line = text_.substr(pos_, end - pos_);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  pos_ = end + 1;
  ++line_number_;
  return true;
}

}  // namespace genrec

#include <malloc.h>

namespace genrec {
void configure_allocator_for_tensors() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // glibc's maximum: blocks below it come from the heap
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
  mallopt(M_TOP_PAD, 64 * 1024 * 1024);
}
}  // namespace genrec
