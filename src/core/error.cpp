#include "genrec/core/error.h"

namespace genrec {

std::string SourceLocation::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!field.empty()) out += "field " + field + ": ";
  return out;
}

void rethrow_with_stage(const std::string& stage) {
  const std::string prefix = stage + ": ";
  try {
    throw;
  } catch (const InvalidInput& e) {
    throw InvalidInput(prefix + e.what());
  } catch (const IOError& e) {
    throw IOError(prefix + e.what());
  } catch (const Cancelled& e) {
    throw Cancelled(prefix + e.what());
  } catch (const InternalError& e) {
    throw InternalError(prefix + e.what());
  } catch (const Error& e) {
    throw Error(prefix + e.what());
  } catch (const std::exception& e) {
    throw Error(prefix + e.what());
  }
}

}  // namespace genrec
