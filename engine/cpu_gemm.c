/* cpu_gemm.c: the one way the CPU backend calls OpenBLAS (see the threading model in cpu_ops.h). */
#include "cpu_ops.h"

#include <cblas.h>
#include <omp.h>

/* Slices narrower than this (columns) make OpenBLAS' kernels inefficient; below 2 * this we split M. */
#define MIN_SLICE_N 48

static void
sgemm1 (gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
        float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  cblas_sgemm (CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
               1.0f, A, lda, B, ldb, beta, C, ldc);
}

void
cpu_sgemm_part (int part, int n_parts, gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  if (n_parts <= 1)
    {
      sgemm1 (trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
      return;
    }
  if (N >= 2 * MIN_SLICE_N || N >= M)
    {
      /* Column slices rounded to 16 so each starts on a cache line. */
      int n0 = (int) ((int64_t) N * part / n_parts) & ~15;
      int n1 = part == n_parts - 1 ? N : (int) ((int64_t) N * (part + 1) / n_parts) & ~15;
      const float *b = trans_b ? B + (size_t) n0 * ldb : B + n0;
      sgemm1 (trans_a, trans_b, M, n1 - n0, K, A, lda, b, ldb, beta, C + n0, ldc);
    }
  else
    {
      int m0 = (int) ((int64_t) M * part / n_parts), m1 = (int) ((int64_t) M * (part + 1) / n_parts);
      const float *a = trans_a ? A + m0 : A + (size_t) m0 * lda;
      sgemm1 (trans_a, trans_b, m1 - m0, N, K, a, lda, B, ldb, beta, C + (size_t) m0 * ldc, ldc);
    }
}

void
cpu_sgemm (gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A, int lda, const float *B,
           int ldb, float beta, float *C, int ldc)
{
  int nt = omp_in_parallel () ? 1 : omp_get_max_threads ();
  if (nt <= 1 || 2.0 * M * N * K < 2e6)
    {
      sgemm1 (trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
      return;
    }
#pragma omp parallel num_threads (nt)
  cpu_sgemm_part (omp_get_thread_num (), omp_get_num_threads (), trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C,
                  ldc);
}
