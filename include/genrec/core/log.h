// Logging through a replaceable sink. The library never writes to stdout/stderr itself.
//
// Example:
//   genrec::set_log_sink([](LogLevel lvl, const std::string& msg) { ... });
//   GENREC_LOG_INFO("imported %lld rows", (long long)n);
#pragma once

#include <functional>
#include <string>

namespace genrec {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

using LogSink = std::function<void(LogLevel, const std::string&)>;

// Replaces the sink (nullptr restores the default, which drops everything).
void set_log_sink(LogSink sink);
// Messages below this level are dropped before formatting. Default: Info.
void set_log_level(LogLevel level);
LogLevel log_level();

void log_message(LogLevel level, const char* func, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char* log_level_name(LogLevel level);

}  // namespace genrec

#define GENREC_LOG_DEBUG(...) ::genrec::log_message(::genrec::LogLevel::Debug, __func__, __VA_ARGS__)
#define GENREC_LOG_INFO(...) ::genrec::log_message(::genrec::LogLevel::Info, __func__, __VA_ARGS__)
#define GENREC_LOG_WARN(...) ::genrec::log_message(::genrec::LogLevel::Warn, __func__, __VA_ARGS__)
#define GENREC_LOG_ERROR(...) ::genrec::log_message(::genrec::LogLevel::Error, __func__, __VA_ARGS__)
