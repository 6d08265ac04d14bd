#include "genrec/core/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <strings.h>

namespace genrec {

CpuVectorFeatures detect_cpu_vector_features() {
  CpuVectorFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  // libgcc's checks include the operating system's support for the wider register state.
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
#endif
  return f;
}

std::string openblas_core_to_force(const std::string& current_core, const CpuVectorFeatures& cpu) {
  if (strcasecmp(current_core.c_str(), "Prescott") != 0) return "";
  if (cpu.avx512) return "SkylakeX";
  if (cpu.avx2_fma) return "Haswell";
  return "";
}

namespace {
using CoreName = char* (*)();
using Hook = void (*)();

CoreName core_name_fn() { return reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename")); }

// Both hooks exist only in DYNAMIC_ARCH builds: gotoblas_dynamic_quit forgets the kernel
// table, gotoblas_dynamic_init selects one again, reading OPENBLAS_CORETYPE first.
struct DynamicArchHooks {
  Hook quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  Hook init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  bool available() const { return quit != nullptr && init != nullptr && core_name_fn() != nullptr; }
};
}  // namespace

std::string openblas_core() {
  CoreName name = core_name_fn();
  if (name == nullptr) return "";
  const char* s = name();
  return s != nullptr ? std::string(s) : std::string();
}

std::string force_openblas_core(const std::string& core) {
  DynamicArchHooks hooks;
  if (!hooks.available()) return "";
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  hooks.quit();
  hooks.init();
  return openblas_core();
}

std::string select_blas_kernels() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !DynamicArchHooks().available()) return "";
  const std::string before = openblas_core();
  const std::string target = openblas_core_to_force(before, detect_cpu_vector_features());
  if (target.empty()) return "";
  const std::string now = force_openblas_core(target);
  return "OpenBLAS does not know this CPU model and chose its generic " + before + " kernels; switched to its " +
         now + " kernels, which the CPU supports (set OPENBLAS_CORETYPE to choose yourself)";
}

}  // namespace genrec
