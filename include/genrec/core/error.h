// Error types of genrec. The library throws these; programs translate them at the edge
// (the CLI maps them to exit codes: InvalidInput/Usage -> 2, everything else -> 1).
//
// Example:
//   throw InvalidInput(SourceLocation{"ratings.csv", 17, "item_id"}, "'abc' is not an integer");
//   // what(): "ratings.csv:17: field item_id: 'abc' is not an integer"
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace genrec {

// Where in a user's input a problem sits. line is 1-based; 0 means "the whole file".
struct SourceLocation {
  std::string file;
  int64_t line = 0;
  std::string field;  // column / key name, or empty

  std::string to_string() const;
};

// Base class of every genrec error.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// The user's input (a file, a flag value, a config key) is invalid. Exit code 2.
class InvalidInput : public Error {
 public:
  explicit InvalidInput(const std::string& message) : Error(message) {}
  InvalidInput(const SourceLocation& where, const std::string& reason)
      : Error(where.to_string() + reason), where_(where), reason_(reason) {}
  const SourceLocation& where() const { return where_; }
  const std::string& reason() const { return reason_; }

 private:
  SourceLocation where_;
  std::string reason_;
};

// Reading or writing a file failed for a reason outside the input's content
// (permissions, disk full). Exit code 1.
class IOError : public Error {
 public:
  explicit IOError(const std::string& message) : Error(message) {}
};

// Work was cancelled through a progress callback. Exit code 1.
class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& message) : Error(message) {}
};

// A bug in genrec: an invariant that should hold did not. Exit code 1.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message) : Error(message) {}
};

// Rethrows the exception in flight with `stage` prepended to its message, keeping its type.
// Use inside a catch block: catch (...) { rethrow_with_stage("loading dataset"); }
[[noreturn]] void rethrow_with_stage(const std::string& stage);

}  // namespace genrec

#define GENREC_ASSERT(cond)                                                           \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw ::genrec::InternalError(std::string("assertion failed: " #cond " at ") + \
                                    __FILE__ + ":" + std::to_string(__LINE__));      \
  } while (0)
