#include "genrec/core/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace genrec {
namespace {
std::mutex g_sink_mutex;
LogSink g_sink;
std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = std::move(sink);
}

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "?";
}

void log_message(LogLevel level, const char* func, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load()) return;
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  if (!g_sink) return;
  char buf[2048];
  int n = std::snprintf(buf, sizeof(buf), "%s: ", func);
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf + n, sizeof(buf) - static_cast<size_t>(n), fmt, args);
  va_end(args);
  g_sink(level, buf);
}

}  // namespace genrec
