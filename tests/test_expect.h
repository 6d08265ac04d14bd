// Expectations on the errors users can hit, shared by test files:
//   EXPECT_INVALID(load_checkpoint(path), path.string(), "checksum");
// passes when the expression throws InvalidInput whose message contains every fragment.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "genrec/core/error.h"

namespace genrec::test {

// What invalid_message returns when nothing is thrown.
inline constexpr const char* kNoInvalidInput = "<no InvalidInput thrown>";

// The message of the InvalidInput that f() throws; kNoInvalidInput when it throws none (another
// exception propagates, failing the test).
template <class F>
std::string invalid_message(F&& f) {
  try {
    f();
  } catch (const ::genrec::InvalidInput& e) {
    return e.what();
  }
  return kNoInvalidInput;
}

}  // namespace genrec::test

#define EXPECT_INVALID(expr, ...)                                                            \
  do {                                                                                       \
    const std::string msg_ = ::genrec::test::invalid_message([&] { (void)(expr); });         \
    for (const std::string& fragment_ : std::initializer_list<std::string>{__VA_ARGS__})     \
      EXPECT_NE(msg_.find(fragment_), std::string::npos)                                     \
          << #expr << ": message '" << msg_ << "' lacks '" << fragment_ << "'";              \
  } while (0)
