#include "progress_bar.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

namespace genrec::cli {

namespace {

std::string human(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof(buf), "%.1fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof(buf), "%.1fM", v / 1e6);
  else if (v >= 1e4) std::snprintf(buf, sizeof(buf), "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

std::string duration(double s) {
  char buf[32];
  if (s < 0) return "?";
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(s) / 3600, (static_cast<int>(s) / 60) % 60);
  return buf;
}

std::string describe(const ProgressEvent& e) {
  std::string s = e.stage + ": " + human(static_cast<double>(e.done));
  if (e.total > 0) s += "/" + human(static_cast<double>(e.total));
  s += " " + e.unit + ", " + human(e.rate) + " " + e.unit + "/s";
  if (e.finished) s += ", " + duration(e.elapsed_s);
  else if (e.eta_s >= 0) s += ", ETA " + duration(e.eta_s);
  return s;
}

}  // namespace

ProgressCallback make_progress_bar(bool quiet) {
  if (quiet) return nullptr;
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto last_line = std::make_shared<double>(0.0);
  return [tty, last_line](const ProgressEvent& e) {
    if (tty) {
      const int width = 24;
      std::string bar;
      if (e.total > 0) {
        int filled = static_cast<int>(std::lround(width * std::min(1.0, static_cast<double>(e.done) / e.total)));
        bar = "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.') + "] ";
      }
      std::fprintf(stderr, "\r\033[K%s%s", bar.c_str(), describe(e).c_str());
      if (e.finished) std::fprintf(stderr, "\n");
      std::fflush(stderr);
    } else if (e.finished || e.elapsed_s - *last_line >= 10.0) {
      *last_line = e.finished ? 0.0 : e.elapsed_s;
      std::fprintf(stderr, "%s\n", describe(e).c_str());
    }
    return true;
  };
}

}  // namespace genrec::cli
