// The start-up choice of OpenBLAS kernels (core/blas.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "genrec/core/blas.h"

namespace {

// The test binary selects its kernels as the CLI does, before any test runs; whether the user
// had set OPENBLAS_CORETYPE is remembered for the checks below.
const bool g_user_set_coretype = std::getenv("OPENBLAS_CORETYPE") != nullptr;
const std::string g_blas_note = genrec::select_blas_kernels();

TEST(Blas, OnlyTheGenericFallbackIsReplacedAndOnlyByKernelsTheCpuHas) {
  genrec::CpuVectorFeatures none, avx2, avx512;
  avx2.avx2_fma = true;
  avx512.avx2_fma = true;
  avx512.avx512 = true;
  EXPECT_EQ(genrec::openblas_core_to_force("Prescott", avx512), "SkylakeX");
  EXPECT_EQ(genrec::openblas_core_to_force("prescott", avx512), "SkylakeX");
  EXPECT_EQ(genrec::openblas_core_to_force("Prescott", avx2), "Haswell");
  EXPECT_EQ(genrec::openblas_core_to_force("Prescott", none), "");
  // A core OpenBLAS recognised stays, even where the CPU could run wider kernels.
  EXPECT_EQ(genrec::openblas_core_to_force("Haswell", avx512), "");
  EXPECT_EQ(genrec::openblas_core_to_force("Zen", avx2), "");
  EXPECT_EQ(genrec::openblas_core_to_force("SkylakeX", avx512), "");
  EXPECT_EQ(genrec::openblas_core_to_force("", avx512), "");
}

TEST(Blas, SelectionLeavesNoGenericKernelsOnACpuWithAvx2) {
  const std::string core = genrec::openblas_core();
  if (core.empty()) GTEST_SKIP() << "the BLAS is not a DYNAMIC_ARCH OpenBLAS";
  if (g_user_set_coretype) GTEST_SKIP() << "OPENBLAS_CORETYPE was set by the user: " << std::getenv("OPENBLAS_CORETYPE");
  if (!genrec::detect_cpu_vector_features().avx2_fma) GTEST_SKIP() << "the CPU has no AVX2/FMA";
  EXPECT_STRNE(core.c_str(), "Prescott") << g_blas_note;
  if (!g_blas_note.empty()) {
    // A switch happened: it is recorded for child processes and not repeated.
    ASSERT_NE(std::getenv("OPENBLAS_CORETYPE"), nullptr);
    EXPECT_EQ(core, std::getenv("OPENBLAS_CORETYPE"));
    EXPECT_NE(g_blas_note.find(core), std::string::npos) << g_blas_note;
  }
  EXPECT_EQ(genrec::select_blas_kernels(), "");
}

// The kernels in use (switched or not) multiply correctly: float32 products in each transpose
// layout against a double-precision loop.
TEST(Blas, MatrixProductsMatchAPlainLoop) {
  torch::manual_seed(3);
  const int64_t m = 67, k = 131, n = 45;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      torch::Tensor a = ta ? torch::randn({k, m}).t() : torch::randn({m, k});
      torch::Tensor b = tb ? torch::randn({n, k}).t() : torch::randn({k, n});
      torch::Tensor c = torch::mm(a, b);
      auto A = a.contiguous(), B = b.contiguous();
      auto pa = A.accessor<float, 2>(), pb = B.accessor<float, 2>(), pc = c.accessor<float, 2>();
      double worst = 0;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t l = 0; l < k; ++l) s += static_cast<double>(pa[i][l]) * pb[l][j];
          worst = std::max(worst, std::abs(s - pc[i][j]));
        }
      EXPECT_LT(worst, 1e-4) << "transposed a " << ta << ", b " << tb;
    }
  }
}

}  // namespace
