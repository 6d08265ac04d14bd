// Choice of the BLAS kernels that libtorch's float32 matrix products run on.
//
// Debian's libtorch calls the system BLAS, usually OpenBLAS built with DYNAMIC_ARCH: at load
// time OpenBLAS picks its kernels by CPU model number. A CPU newer than the OpenBLAS release
// (Debian 12 ships 0.3.21, which does not know e.g. Intel's Sapphire/Emerald Rapids models)
// gets its generic SSE3 "Prescott" kernels, about half the training speed of its AVX2/AVX-512
// kernels on such a machine. select_blas_kernels() repairs exactly that case at start-up.
#pragma once

#include <string>

namespace genrec {

// What the CPU offers, as far as the choice below needs it.
struct CpuVectorFeatures {
  bool avx2_fma = false;  // AVX2 and FMA3 (OpenBLAS's Haswell kernels)
  bool avx512 = false;    // AVX-512 F, CD, BW, DQ and VL (OpenBLAS's SkylakeX kernels)
};

CpuVectorFeatures detect_cpu_vector_features();

// The OpenBLAS core type to switch to, or "" to leave OpenBLAS's own choice. Only the generic
// fallback ("Prescott", what OpenBLAS picks for a CPU model it does not know) is replaced, by
// the best kernels the CPU's features allow; a core OpenBLAS recognised is never changed.
std::string openblas_core_to_force(const std::string& current_core, const CpuVectorFeatures& cpu);

// The core type OpenBLAS runs on ("" when the BLAS is not a DYNAMIC_ARCH OpenBLAS).
std::string openblas_core();

// Re-runs OpenBLAS's kernel selection with OPENBLAS_CORETYPE = core (overwriting it) and returns
// the core now in use ("" when the BLAS is not a DYNAMIC_ARCH OpenBLAS; then nothing changes).
// The caller checks the CPU supports the core (detect_cpu_vector_features); for benchmarks and
// select_blas_kernels, at start-up or between measurements, never while BLAS calls run.
std::string force_openblas_core(const std::string& core);

// When the process's BLAS is OpenBLAS with DYNAMIC_ARCH, OPENBLAS_CORETYPE is not set and
// openblas_core_to_force() names a better core: sets OPENBLAS_CORETYPE to it (child processes
// inherit it) and re-runs OpenBLAS's kernel selection. Returns a one-line account of the switch,
// or "" when nothing was changed. A user-set OPENBLAS_CORETYPE always wins. Call once at the
// start of a program, before any tensor work (the CLI, the benchmarks and the tests do).
std::string select_blas_kernels();

}  // namespace genrec
